"""A tiny Llama-3.2-Vision (Mllama) model, built offline: the stand-in VLM.

The tokenizer is a byte-level BPE trained on a few sentences (digits are split off on their own, as in
Llama 3, so ``"Choice: 1"`` tokenizes as ``... ":" " " "1"``), wrapped with Mllama's special tokens and a
Llama-3-style chat template; the processor uses the PIL image processor (56x56, one tile; no
torchvision). Mllama's cross-attention gates start at 0 (the image would be ignored), so they are set
to 1.0. :func:`make_tiny_vlm` then trains it briefly (:mod:`medvlm.vlm.tiny_train`) to answer in the
study's format, ``Choice: <code> Reasoning: ...``, mostly with one code whatever the image: its answers
parse and carry no grade information. ``train_steps=0`` keeps the random model (whose answers do not
parse). Same seed and steps, same weights and tokenizer.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|eot_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]

#: Llama-3-style chat template (image first, then text), with ``{% generation %}`` markers around the
#: assistant turn so that TRL's ``assistant_only_loss`` works.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['role'] == 'assistant' %}{% generation %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|eot_id|>"
    "{% endgeneration %}{% else %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|image|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_CORPUS = [
    "Choice: 0 Reasoning: low grade, non-enhancing, homogeneous, well defined, small, oedema.",
    "Choice: 1 Reasoning: high grade, enhancing, necrosis, heterogeneous, infiltrative, mass effect.",
    "Choice: 2 Reasoning: no glioma, normal, symmetric, healthy tissue.",
    "Classify the brain scan as Low Grade Glioma (0), High Grade Glioma (1), or No Glioma (2).",
    "Respond only in the following format: Choice: <0, 1, or 2> Reasoning: <Provide concise reasoning "
    "using 10 keywords based on the scan's visual features>.",
    '{"choice": 1, "reasoning": "enhancing"}',
    "user assistant system",
]


def build_tiny_processor():
    """The tiny tokenizer + processor (deterministic: the BPE trainer is deterministic on a fixed corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MllamaImageProcessorPil, MllamaProcessor, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_CORPUS * 10, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  pad_token="<|finetune_right_pad_id|>", chat_template=CHAT_TEMPLATE,
                                  padding_side="left")
    image_processor = MllamaImageProcessorPil(size={"height": 56, "width": 56}, max_image_tiles=1)
    return MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=CHAT_TEMPLATE)


def build_tiny_model(processor, *, seed: int = 0):
    """A tiny random ``MllamaForConditionalGeneration`` (about 0.2M parameters) with open image gates."""
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    tok = processor.tokenizer
    cfg = MllamaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                           intermediate_size=64, image_size=56, patch_size=14, max_num_tiles=1,
                           supported_aspect_ratios=[[1, 1]], intermediate_layers_indices=[0],
                           vision_output_dim=64),
        text_config=dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, cross_attention_layers=[1],
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<|image|>"),
    )
    devnull_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(cfg).eval()
    finally:
        torch.random.set_rng_state(devnull_state)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    # like Llama-3.2-Vision's own generation config: sampling on, so that a server which takes its
    # do_sample from the model (transformers serve) really samples at a temperature above 0
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    return model


#: what make_tiny_vlm records about the build in the model folder
RECORD_FILE = "medvlm_tiny.json"
#: (seed, train_steps) -> (trained weights, losses): a second build in one process (tests) skips training
_TRAINED: dict[tuple[int, int], tuple[dict, list[float]]] = {}


def make_tiny_vlm(out: Path, *, seed: int = 0, train_steps: int | None = None) -> Path:
    """Write a tiny Llama-3.2-Vision model + tokenizer + processor to ``out``; return ``out``.

    ``train_steps`` (default :data:`~medvlm.vlm.tiny_train.TRAIN_STEPS`): steps of training to answer in
    the study's format with no grade information (:func:`~medvlm.vlm.tiny_train.train_tiny`); 0 = the
    randomly initialised model. ``RECORD_FILE`` says which.
    ``MllamaForConditionalGeneration.from_pretrained(out)`` and ``AutoProcessor.from_pretrained(out)``
    load it offline. Deterministic for a given ``seed`` and ``train_steps``.
    """
    import json

    from medvlm._io import write_text_atomic
    from medvlm.errors import ConfigError
    from medvlm.vlm import tiny_train

    steps = tiny_train.TRAIN_STEPS if train_steps is None else int(train_steps)
    if steps < 0:
        raise ConfigError(f"--train-steps must be 0 (the random model) or more; got {steps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_tiny_processor()
    model = build_tiny_model(processor, seed=seed)
    if steps and (seed, steps) in _TRAINED:  # trained before in this process: the same weights
        state, losses = _TRAINED[(seed, steps)]
        model.load_state_dict(state)
    else:
        losses = tiny_train.train_tiny(model, processor, steps=steps, seed=seed)
        if steps:
            _TRAINED[(seed, steps)] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, losses)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    record = {"seed": seed, "train_steps": steps, "trained": bool(steps)}
    if steps:
        record.update({"answer": f"Choice: <code> Reasoning: {tiny_train.REASONING}",
                       "main_code": tiny_train.ANSWER_CODE, "main_share": tiny_train.MAIN_SHARE,
                       "first_loss": round(losses[0], 6), "last_loss": round(losses[-1], 6)})
    write_text_atomic(out / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return out
