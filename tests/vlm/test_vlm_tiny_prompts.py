"""make-tiny-vlm, prompts and the shared chat text."""

from __future__ import annotations

import pytest

from medvlm.errors import ConfigError
from medvlm.vlm.prompts import ANSWER_PREFIX, builtin_prompts, load_prompt

STUDY_PROMPT = (
    "Classify the brain scan as Low Grade Glioma (0), High Grade Glioma (1), or No Glioma (2). Respond only "
    "in the following format: Choice: <0, 1, or 2> Reasoning: <Provide concise reasoning using 10 keywords "
    "based on the scan's visual features>."
)


def test_seed_prompt_is_the_study_prompt_word_for_word(tmp_path):
    p = load_prompt("seed")
    assert p.text == STUDY_PROMPT
    assert {"seed", "json", "montage"} <= set(builtin_prompts())
    own = tmp_path / "mine.txt"
    own.write_text("Grade this.\n")
    mine = load_prompt(own)
    assert (mine.text, mine.name) == ("Grade this.", str(own))
    assert mine.sha != p.sha
    with pytest.raises(ConfigError, match="Did you mean 'seed'"):
        load_prompt("sed")
    assert ANSWER_PREFIX == "Choice:"


@pytest.mark.slow
def test_tiny_vlm_loads_and_is_deterministic(tiny_vlm, tmp_path):
    import io

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    from medvlm.vlm.hf import build_chat_text, encode_batch
    from medvlm.vlm.tiny import make_tiny_vlm

    model = MllamaForConditionalGeneration.from_pretrained(tiny_vlm).eval()
    proc = AutoProcessor.from_pretrained(tiny_vlm)
    again = MllamaForConditionalGeneration.from_pretrained(make_tiny_vlm(tmp_path / "again", seed=0)).eval()
    other = MllamaForConditionalGeneration.from_pretrained(make_tiny_vlm(tmp_path / "other", seed=1)).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).convert("RGB")
              for _ in range(2)]
    text = build_chat_text(proc, STUDY_PROMPT)
    assert text.endswith("assistant<|end_header_id|>\n\nChoice:")
    inputs = encode_batch(proc, images, [text, text])
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
        assert torch.equal(logits, again(**inputs).logits[:, -1])
        assert not torch.allclose(logits, other(**inputs).logits[:, -1])
    assert not torch.allclose(logits[0], logits[1])  # the cross-attention gates are open: images matter
    png = io.BytesIO()
    images[0].save(png, format="PNG")
    full = build_chat_text(proc, "Q", answer="Choice: 1 Reasoning: x")
    assert full.endswith("Choice: 1 Reasoning: x<|eot_id|>")


def test_make_tiny_vlm_cli(tiny_vlm, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoProcessor

    from medvlm.cli import invoke
    from medvlm.vlm.tiny import make_tiny_vlm

    out = tmp_path / "m"
    assert invoke(["make-tiny-vlm", str(out), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"tiny VLM written to {out} (load with from_pretrained)"
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "mllama"
    processor = AutoProcessor.from_pretrained(out)  # the tokenizer and processor load offline
    assert processor.tokenizer.convert_tokens_to_ids("<|image|>") == config.image_token_index
    weights = load_file(out / "model.safetensors")
    same_seed = load_file(make_tiny_vlm(tmp_path / "direct", seed=3) / "model.safetensors")
    seed_0 = load_file(tiny_vlm / "model.safetensors")
    assert weights.keys() == same_seed.keys() == seed_0.keys()
    assert all(torch.equal(weights[k], same_seed[k]) for k in weights)  # --seed 3 is make_tiny_vlm(seed=3)
    assert not all(torch.equal(weights[k], seed_0[k]) for k in weights)  # and not the default seed 0
    gates = [k for k in weights if k.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate"))]
    assert gates and all(bool((weights[k] == 1.0).all()) for k in gates)  # open: the images matter


@pytest.mark.slow
def test_transformers_none_sampling_follows_generation_config(tiny_vlm):
    from medvlm.vlm.backends import BackendConfig
    from medvlm.vlm.hf import TransformersBackend
    from medvlm.vlm.types import Decoding, VLMRequest

    def tiny_png(seed):
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
        return buf.getvalue()

    backend = TransformersBackend(BackendConfig(model=str(tiny_vlm), batch_size=4, device="cpu"))
    reqs = [VLMRequest(key=str(i), image=tiny_png(seed=i), prompt="Grade?", repeat=i, codes=("0", "1", "2"),
                       prefix="Choice:") for i in range(3)]
    default = Decoding(temperature=None, top_p=None, max_new_tokens=4)
    gen = backend.model.generation_config
    gen.do_sample = False
    assert not backend.samples(default)
    greedy = [r.raw for _, r in backend.answer(reqs, Decoding(temperature=0.0, max_new_tokens=4))]
    assert [r.raw for _, r in backend.answer(reqs, default)] == greedy  # the model's own: greedy
    gen.do_sample, gen.temperature, gen.top_p = True, 50.0, 1.0  # the model's own: hot sampling
    assert backend.samples(default) and not backend.samples(Decoding(temperature=0.0))
    one = [r.raw for _, r in backend.answer(reqs, default)]
    assert one == [r.raw for _, r in backend.answer(reqs, default)]  # seeded per repeat: reproducible
    assert one != greedy
    backend.close()
