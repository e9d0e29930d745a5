"""``--merge``: the base model with the adapter merged in, as a full model folder (``ADAPTER/merged``).

vLLM cannot serve LoRA adapters on Llama-3.2-Vision, so serving a fine-tuned model needs the merged
weights. The base model is loaded unquantised (also for QLoRA adapters) so the merge is exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def merge_adapter(adapter: str | Path, *, base_model: str, out: str | Path | None = None) -> Path:
    """Write ``base_model`` + the LoRA adapter in ``adapter`` merged into ``out`` (default
    ``adapter/merged``), with the processor; returns ``out``. The folder is swapped in atomically."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter = Path(adapter)
    out = Path(out) if out is not None else adapter / "merged"
    device_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    from medvlm.errors import BackendError, first_line

    try:
        base = AutoModelForImageTextToText.from_pretrained(base_model, dtype=device_dtype)
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways (SafetensorError, ...)
        raise BackendError(f"--base-model {base_model}: cannot load the model ({first_line(exc)})") from None
    try:
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"{adapter}: cannot load the adapter to merge ({first_line(exc)})") from None
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    AutoProcessor.from_pretrained(str(adapter)).save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
