"""``--adapter FOLDER`` for the transformers backend: a PEFT adapter checked before and after loading.

:func:`read_adapter` runs before the base model loads: the folder exists, ``adapter_config.json`` is a
JSON object and the weights file (``adapter_model.safetensors``, else ``adapter_model.bin``) can be read.
:func:`attach_adapter` wraps the base model (``PeftModel.from_pretrained``) and checks that the file's
weights are exactly the adapter's parameters: PEFT itself loads an adapter of another model (other
keys) with only a warning and leaves its LoRA weights at their initial values. Every problem is a
one-line :class:`~medvlm.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.errors import DataError, failure_reason

_WHAT = "a PEFT adapter folder (adapter_config.json + adapter_model.safetensors, as `medvlm finetune` writes)"


def read_adapter(adapter: str) -> dict[str, Any]:
    """The adapter's weights (name -> tensor), after checking the folder; DataError naming what is wrong."""
    path = Path(adapter).expanduser()
    if not path.exists():
        raise DataError(f"--adapter {adapter}: no such folder; expected {_WHAT}")
    if not path.is_dir():
        raise DataError(f"--adapter {adapter}: a file, not a folder; expected {_WHAT}")
    config = path / "adapter_config.json"
    if not config.is_file():
        raise DataError(f"--adapter {adapter}: no adapter_config.json; expected {_WHAT}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{config}: unreadable ({failure_reason(exc)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{config}: a JSON {type(data).__name__}, not an object (a PEFT adapter config)")
    weights = path / "adapter_model.safetensors"
    try:
        if weights.exists():
            from safetensors.torch import load_file

            state = load_file(str(weights))
        elif (path / "adapter_model.bin").exists():
            import torch

            weights = path / "adapter_model.bin"
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"--adapter {adapter}: no adapter_model.safetensors; expected {_WHAT}")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, unpickling errors, OSError: unreadable
        raise DataError(f"{weights}: unreadable adapter weights ({failure_reason(exc)})") from None
    if not isinstance(state, dict) or not state:
        raise DataError(f"{weights}: holds no adapter weights")
    return state


def attach_adapter(model: Any, adapter: str, state: dict[str, Any]) -> Any:
    """``PeftModel.from_pretrained(model, adapter)``, checked against ``state`` (from :func:`read_adapter`):
    a config PEFT refuses, or weights of another model (keys, shapes), is a DataError."""
    import warnings

    from peft import PeftModel, get_peft_model_state_dict

    try:
        with warnings.catch_warnings():  # PEFT's warning about missing keys: checked below, in one line
            warnings.simplefilter("ignore", UserWarning)
            peft_model = PeftModel.from_pretrained(model, adapter)
    except Exception as exc:  # noqa: BLE001 - a bad config fails in many ways inside PEFT
        raise DataError(f"--adapter {adapter}: cannot load the PEFT adapter "
                        f"({failure_reason(exc)})") from None
    expected = set(get_peft_model_state_dict(peft_model))
    unknown, missing = sorted(set(state) - expected), sorted(expected - set(state))
    if unknown or missing:
        what = f"unexpected keys {unknown[:2]}" if unknown else f"missing keys {missing[:2]}"
        raise DataError(f"--adapter {adapter}: its weights belong to another model ({what}); give the "
                        "adapter fine-tuned from this --model")
    return peft_model
