"""``--engine unsloth``: Unsloth's vision fine-tuning (``FastVisionModel``), CUDA only.

Unsloth loads the model (4-bit for ``qlora``) and adds the LoRA adapter; training then runs in the
same PEFT loop, on the same batches, with the same checkpoints. ``check_engine`` refuses this engine
(one line, saying why) where no CUDA GPU or no ``unsloth`` package is present.
"""

from __future__ import annotations

from typing import Any


def load_unsloth(base_model: str, cfg: Any) -> Any:
    """The base model with Unsloth's LoRA (attention modules of the targeted towers), ready to train."""
    from unsloth import FastVisionModel  # noqa: I001  (unsloth patches transformers when imported)

    from medvlm.errors import BackendError, first_line

    try:
        model, _processor = FastVisionModel.from_pretrained(
            base_model, load_in_4bit=cfg.method == "qlora",
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False)
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways (SafetensorError, ...)
        raise BackendError(f"--base-model {base_model}: cannot load the model ({first_line(exc)})") from None
    model = FastVisionModel.get_peft_model(
        model, finetune_vision_layers=cfg.target in ("vision", "all"),
        finetune_language_layers=cfg.target in ("language", "all"), finetune_attention_modules=True,
        finetune_mlp_modules=False, r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
        random_state=cfg.seed)
    FastVisionModel.for_training(model)
    return model
