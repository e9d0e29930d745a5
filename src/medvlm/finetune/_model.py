"""Loading the base model (full precision or 4-bit nf4) and wrapping it with LoRA."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from medvlm.errors import BackendError, ConfigError, DataError, first_line

#: LoRA targets: the attention projections (self- and cross-attention) of the language model, of the
#: vision tower, or of both. Regexes are matched against full module names by PEFT (``re.fullmatch``);
#: a bare list of names would also hit the vision tower.
TARGET_MODULES = {
    "language": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
    "vision": r".*vision_model.*\.(q_proj|k_proj|v_proj|o_proj)",
    "all": r".*(language_model|vision_model).*\.(q_proj|k_proj|v_proj|o_proj)",
}
#: Modules kept unquantised by QLoRA. transformers 5 matches these from the START of the module name
#: (or as a suffix), so a bare "vision_model" would not match "model.vision_model...": use regexes.
QLORA_SKIP_MODULES = [r".*vision_model", r".*multi_modal_projector", "lm_head"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_base_model(base_model: str) -> str:
    """Return ``base_model`` when it is a model folder (with ``config.json``) or a hub id; else DataError."""
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError(f"--base-model {base_model}: folder has no config.json (not a saved model)")
        return str(path)
    if path.exists():
        raise DataError(f"--base-model {base_model}: not a folder (expects a model saved by save_pretrained)")
    if _HUB_ID.fullmatch(base_model) and not base_model.startswith((".", "/", "~")):
        return base_model
    raise DataError(f"--base-model {base_model}: no such model folder")


def device_of(engine: str) -> str:
    """``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_engine(engine: str, method: str) -> None:
    """Refuse engines that cannot run here, saying why (one line)."""
    if engine == "unsloth":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--engine unsloth needs a CUDA GPU and none is visible here "
                              "(torch.cuda.is_available() is False); use --engine peft or --engine trl")
        if importlib.util.find_spec("unsloth") is None:
            raise ConfigError("--engine unsloth needs the package 'unsloth' (pip install unsloth on a "
                              "CUDA machine); use --engine peft or --engine trl")
    if engine == "trl" and importlib.util.find_spec("trl") is None:
        raise ConfigError("--engine trl needs the package 'trl': pip install 'medvlm[finetune]'")
    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--method qlora needs the package 'bitsandbytes': pip install 'medvlm[finetune]'")


def load_processor(base_model: str) -> Any:
    from transformers import AutoProcessor

    from medvlm.hub import check_model_source

    check_model_source(base_model, "--base-model")  # seconds, not minutes of Hub retries
    try:
        return AutoProcessor.from_pretrained(base_model)
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways
        raise BackendError(f"--base-model {base_model}: cannot load its processor "
                           f"({first_line(exc)})") from None


def load_base_model(base_model: str, *, method: str, device: str) -> Any:
    """The base model in float32 (``lora``; bfloat16 on a GPU) or with nf4 4-bit linear layers (``qlora``).

    QLoRA keeps the vision tower, the projector and ``lm_head`` unquantised (as measured on CPU with
    bitsandbytes 0.50) and prepares the model for k-bit training.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if device == "cuda" else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=device == "cuda",
            llm_int8_skip_modules=QLORA_SKIP_MODULES)
        kwargs["device_map"] = {"": 0} if device == "cuda" else "cpu"
        kwargs["dtype"] = compute
    else:
        kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        model = AutoModelForImageTextToText.from_pretrained(base_model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways (SafetensorError, ...)
        raise BackendError(f"--base-model {base_model}: cannot load the model ({first_line(exc)})") from None
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif device == "cuda":
        model = model.to(device)
    return model


def lora_config(*, target: str, rank: int, alpha: float, dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
                      target_modules=TARGET_MODULES[target])


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
