"""GPU benchmark: the full-size Llama-3.2-11B-Vision architecture with random weights (no download).

    python benchmarks/gpu_mllama.py --out gpu_mllama.json          # one CUDA GPU (H100/H200: ~3-5 min)
    python benchmarks/gpu_mllama.py --tiny --out /tmp/tiny.json    # the same code path, tiny config, CPU

Measures, in bf16 on one GPU:

1. log-prob scoring: slices per second (one forward pass per batch, P("0"/"1"/"2") at the last position);
2. generation: slices per second with ``--max-new-tokens`` (default 96, forced with ``min_new_tokens``
   so random weights cannot stop early) and generated tokens per second;
3. one QLoRA step (language-model linear layers in NF4 via bitsandbytes, LoRA r=16 on q/k/v/o of the
   language model, gradient checkpointing, AdamW): seconds per step and peak GPU memory.

Inputs are built as tensors (no tokenizer download): ``--prompt-tokens`` random text tokens after one
``<|image|>`` token, and one image of random pixels in the first of ``max_num_tiles`` tiles (a BraTS
slice fits one 560x560 tile; the vision encoder still runs all 4 tiles, as with the real processor).
The configuration below is the published one (``meta-llama/Llama-3.2-11B-Vision`` config.json); it was
checked against ``transformers.MllamaConfig`` (text defaults equal it; vision defaults differ only in
``image_size`` 448, the published model uses 560). Writes a JSON of results (``--out``) and exits 2
with a one-line message when no CUDA device is present (unless ``--tiny``). A phase that would run past
``--budget-s`` is skipped and recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Llama-3.2-11B-Vision, as published (config.json of meta-llama/Llama-3.2-11B-Vision[-Instruct]).
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 40, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336,
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128004,
}
VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1280, "num_hidden_layers": 32, "num_global_layers": 8, "attention_heads": 16,
    "image_size": 560, "patch_size": 14, "max_num_tiles": 4, "intermediate_size": 5120,
    "intermediate_layers_indices": [3, 7, 15, 23, 30], "vision_output_dim": 7680, "num_channels": 3,
    "norm_eps": 1e-5,
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
}
IMAGE_TOKEN_INDEX = 128256
# The tiny stand-in (same architecture, a few hundred thousand parameters) for --tiny on CPU.
TINY_TEXT = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "cross_attention_layers": [1],
             "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
TINY_VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_global_layers": 1, "attention_heads": 2,
               "intermediate_size": 64, "image_size": 56, "patch_size": 14, "max_num_tiles": 1,
               "supported_aspect_ratios": [[1, 1]], "intermediate_layers_indices": [0],
               "vision_output_dim": 64}
TINY_IMAGE_TOKEN_INDEX = 512
LORA_TARGET = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


def build_config(tiny: bool) -> Any:
    from transformers import MllamaConfig

    if tiny:
        return MllamaConfig(vision_config=dict(TINY_VISION), text_config=dict(TINY_TEXT),
                            image_token_index=TINY_IMAGE_TOKEN_INDEX)
    return MllamaConfig(vision_config=dict(VISION_CONFIG), text_config=dict(TEXT_CONFIG),
                        image_token_index=IMAGE_TOKEN_INDEX)


def build_model(config: Any, device: str, dtype: Any) -> Any:
    """Random ``MllamaForConditionalGeneration`` constructed directly on ``device`` in ``dtype``
    (no CPU copy of 21 GB); cross-attention gates opened (1.0) so the image path is exercised."""
    import torch
    from transformers import MllamaForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = MllamaForConditionalGeneration._from_config(config, dtype=dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model.eval()


def make_inputs(config: Any, batch: int, prompt_tokens: int, device: str, dtype: Any, *, seed: int = 0
                ) -> dict[str, Any]:
    """Processor-shaped tensors for ``batch`` one-image prompts of ``prompt_tokens`` tokens.

    ``input_ids`` (B, 1 + prompt_tokens): ``<|image|>`` then random ordinary tokens;
    ``pixel_values`` (B, 1, T, 3, S, S) with T = max_num_tiles, S = image_size; ``aspect_ratio_ids``
    (B, 1) = 1 (the [1, 1] layout); ``aspect_ratio_mask`` (B, 1, T) = first tile only;
    ``cross_attention_mask`` (B, L, 1, T): every text position sees the first tile.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    vc, tc = config.vision_config, config.text_config
    tiles, size = vc.max_num_tiles, vc.image_size
    ids = torch.randint(4, min(tc.vocab_size, 120000) - 1, (batch, prompt_tokens + 1), generator=g)
    ids[:, 0] = config.image_token_index
    pixel = torch.randn(batch, 1, tiles, 3, size, size, generator=g)
    pixel[:, :, 1:] = 0  # padding tiles, as the processor writes them
    ar_mask = torch.zeros(batch, 1, tiles, dtype=torch.long)
    ar_mask[:, :, 0] = 1
    xmask = torch.zeros(batch, prompt_tokens + 1, 1, tiles, dtype=torch.long)
    xmask[:, :, :, 0] = 1
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixel.to(device=device, dtype=dtype),
            "aspect_ratio_ids": torch.ones(batch, 1, dtype=torch.long).to(device),
            "aspect_ratio_mask": ar_mask.to(device), "cross_attention_mask": xmask.to(device)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def score_batches(model: Any, inputs: dict[str, Any], n_batches: int, device: str) -> dict[str, Any]:
    """Log-prob scoring: forward pass, softmax at the last position, P of three answer ids."""
    import torch

    answer_ids = [15, 16, 17]  # "0", "1", "2" in the Llama 3 tokenizer
    batch = inputs["input_ids"].shape[0]
    with torch.no_grad():
        model(**inputs, logits_to_keep=1)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(n_batches):
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)[:, answer_ids]
        _sync(device)
        elapsed = time.perf_counter() - start
    assert probs.shape == (batch, 3)
    return {"slices": batch * n_batches, "seconds": round(elapsed, 4),
            "slices_per_s": round(batch * n_batches / elapsed, 3)}


def generate_batches(model: Any, inputs: dict[str, Any], n_batches: int, max_new_tokens: int, device: str
                     ) -> dict[str, Any]:
    """Greedy generation of exactly ``max_new_tokens`` per slice."""
    import torch

    batch, length = inputs["input_ids"].shape
    kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False}
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(n_batches):
            out = model.generate(**inputs, **kwargs)
        _sync(device)
        elapsed = time.perf_counter() - start
    new = out.shape[1] - length
    return {"slices": batch * n_batches, "seconds": round(elapsed, 4), "new_tokens_per_slice": int(new),
            "slices_per_s": round(batch * n_batches / elapsed, 3),
            "tokens_per_s": round(batch * n_batches * new / elapsed, 1)}


def quantize_language_model(model: Any, compute_dtype: Any) -> int:
    """Replace every ``nn.Linear`` of the language model (not ``lm_head``) by a bitsandbytes NF4
    ``Linear4bit`` (double quantisation), in place; returns how many were replaced."""
    import bitsandbytes as bnb
    import torch

    language = model.model.language_model
    replaced = 0
    for parent_name, parent in list(language.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            device = child.weight.device
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True,
                                  device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                         compress_statistics=True).to(device)
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, q)
            del child
            replaced += 1
        del parent_name
    return replaced


def qlora_step(model: Any, config: Any, batch: int, prompt_tokens: int, device: str, dtype: Any
               ) -> dict[str, Any]:
    """Quantize, wrap with LoRA, then time the second of two optimiser steps; peak memory of the steps."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    t0 = time.perf_counter()
    n_q = quantize_language_model(model, dtype)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGET,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    setup_s = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    inputs = make_inputs(config, batch, prompt_tokens, device, dtype, seed=1)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]  # the answer tokens only, as medvlm's fine-tuning does
    model.train()
    times, loss = [], None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=device.startswith("cuda")):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"linear_layers_nf4": n_q, "trainable_params": int(trainable), "setup_s": round(setup_s, 2),
            "batch": batch, "step_s": round(times[-1], 4), "first_step_s": round(times[0], 4),
            "loss": round(float(loss.detach()), 4),
            "peak_memory_gib": None if peak is None else round(peak, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (tests the code path)")
    parser.add_argument("--out", type=Path, default=Path("gpu_mllama.json"), help="JSON of results")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch (eval-vlm default 8)")
    parser.add_argument("--prompt-tokens", type=int, default=200, help="text tokens after <|image|>")
    parser.add_argument("--score-batches", type=int, default=6)
    parser.add_argument("--generate-batches", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--qlora-batch", type=int, default=4)
    parser.add_argument("--skip-qlora", action="store_true")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip phases that would start later")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("gpu_mllama: error: no CUDA device; this benchmark needs one GPU with >= 40 GB "
              "(run with --tiny to check the code path on CPU)", file=sys.stderr)
        return 2
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    result: dict[str, Any] = {
        "model": "tiny Mllama" if args.tiny else "Llama-3.2-11B-Vision architecture (random weights)",
        "device": "cpu" if args.tiny else torch.cuda.get_device_name(0), "dtype": str(dtype).split(".")[-1],
        "torch": torch.__version__, "python": platform.python_version(), "settings": vars(args) | {
            "out": str(args.out)}, "phases": {}}

    def phase(name: str, fn: Any) -> None:
        if time.perf_counter() - started > args.budget_s:
            result["phases"][name] = {"skipped": f"past --budget-s {args.budget_s:g}"}
            return
        t0 = time.perf_counter()
        result["phases"][name] = fn()
        result["phases"][name]["wall_s"] = round(time.perf_counter() - t0, 2)
        print(f"gpu_mllama: {name}: {result['phases'][name]}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive a timeout

    config = build_config(args.tiny)
    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        holder["model"] = build_model(config, device, dtype)
        n = sum(p.numel() for p in holder["model"].parameters())
        mem = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
        return {"parameters": n, "memory_gib": None if mem is None else round(mem, 2)}

    phase("build", build)
    inputs = make_inputs(config, args.batch_size, args.prompt_tokens, device, dtype)
    phase("logprobs", lambda: score_batches(holder["model"], inputs, args.score_batches, device))
    phase("generate", lambda: generate_batches(holder["model"], inputs, args.generate_batches,
                                               args.max_new_tokens, device))
    lp, gen = result["phases"].get("logprobs", {}), result["phases"].get("generate", {})
    if "slices_per_s" in lp and "slices_per_s" in gen:
        result["logprobs_vs_generate"] = round(lp["slices_per_s"] / gen["slices_per_s"], 2)
    if not args.skip_qlora:
        phase("qlora_step", lambda: qlora_step(holder.pop("model"), config, args.qlora_batch,
                                               args.prompt_tokens, device, dtype))
    result["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu_mllama: wrote {args.out} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
