"""Atomic training checkpoints: adapter weights + optimiser + step + RNG, swapped in as one folder.

Layout of ``ADAPTER/checkpoint/``: ``adapter_model.safetensors`` (LoRA weights), ``optimizer.pt`` and
``rng.pt`` (tensors only, read back with ``torch.load(weights_only=True)``) and ``state.json`` (step,
epoch, log rows, best epoch, config, data fingerprint). A new checkpoint is written to
``checkpoint.new/`` and swapped in by renames, so a crash leaves either the old or the new one.

A checkpoint that cannot be used (a file of random bytes, truncated, empty or a folder; a ``state.json``
that is not the object written here; weights, optimiser or RNG state of another model) is a one-line
:class:`~medvlm.errors.DataError` naming the file, exit status 2. It is *not* moved aside: the message
says to move the checkpoint folder aside (or delete it) to start the fine-tuning again; the adapter and
logs already written stay as they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medvlm._io import write_json_atomic
from medvlm.errors import DataError, failure_reason

CHECKPOINT = "checkpoint"


def _dirs(out: Path) -> tuple[Path, Path, Path]:
    return out / CHECKPOINT, out / f"{CHECKPOINT}.new", out / f"{CHECKPOINT}.old"


def latest_checkpoint(out: str | Path) -> Path | None:
    """The last complete checkpoint folder of ``out``, or None."""
    current, _new, old = _dirs(Path(out))
    for folder in (current, old):
        if (folder / "state.json").is_file():
            return folder
    return None


def adapter_state_dict(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_adapter_weights(model: Any, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(adapter_state_dict(model), str(path))


def _advice(folder: Path) -> str:
    return f"move the folder {folder} aside (or delete it) to start this fine-tuning again"


def load_adapter_weights(model: Any, path: Path, *, advice: str | None = None) -> None:
    """Load LoRA weights saved by :func:`save_adapter_weights` into ``model``; a file that is not one, or
    holds another model's adapter (keys, shapes), is a DataError naming it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    advice = advice or _advice(path.parent)
    try:
        weights = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: an unreadable file
        raise DataError(f"{path}: unreadable adapter weights ({failure_reason(exc)}); {advice}") from None
    expected = set(adapter_state_dict(model))
    unknown, missing = sorted(set(weights) - expected), sorted(expected - set(weights))
    if unknown or missing:
        what = f"unexpected keys {unknown[:2]}" if unknown else f"missing keys {missing[:2]}"
        raise DataError(f"{path}: adapter weights of another model ({what}); {advice}")
    try:
        set_peft_model_state_dict(model, weights)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: adapter weights that do not fit this model ({failure_reason(exc)}); "
                        f"{advice}") from None


def save_checkpoint(out: str | Path, *, model: Any, optimizer: Any, state: dict[str, Any]) -> Path:
    """Write a complete checkpoint of the training state; returns its folder."""
    import torch

    current, new, old = _dirs(Path(out))
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_adapter_weights(model, new / "adapter_model.safetensors")
    torch.save(optimizer.state_dict(), new / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, new / "rng.pt")
    write_json_atomic(new / "state.json", state)
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        current.rename(old)
    new.rename(current)
    shutil.rmtree(old, ignore_errors=True)
    return current


#: what ``state.json`` holds: key -> type
_STATE_KEYS = {"step": int, "epoch": int, "log": list, "config": dict, "fingerprint": str}


def read_state(folder: Path) -> dict[str, Any]:
    """``folder/state.json``, checked to be the object :func:`save_checkpoint` wrote (DataError naming it
    otherwise)."""
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({failure_reason(exc)}); {_advice(folder)}") from None
    problem = None
    if not isinstance(state, dict):
        problem = f"a JSON {type(state).__name__}, not an object"
    else:
        for key, kind in _STATE_KEYS.items():
            if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
                problem = f"{key!r} is missing or not of type {kind.__name__}"
                break
        else:
            if state["step"] < 0 or state["epoch"] < 0:
                problem = "a negative step or epoch"
            elif not (state.get("best") is None or isinstance(state["best"], dict)):
                problem = "'best' is not an object"
    if problem:
        raise DataError(f"{path}: not a medvlm fine-tuning state ({problem}); {_advice(folder)}")
    return state


def _load_torch(path: Path, folder: Path) -> Any:
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DataError(f"{path}: unreadable ({failure_reason(exc)}); {_advice(folder)}") from None


def load_checkpoint(folder: Path, *, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore adapter weights, optimiser and RNG from ``folder``; returns its ``state.json``. Any file
    that does not fit is a DataError naming it (nothing is changed on disk)."""
    import torch

    state = read_state(folder)
    load_adapter_weights(model, folder / "adapter_model.safetensors")
    path = folder / "optimizer.pt"
    try:
        optimizer.load_state_dict(_load_torch(path, folder))
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: an optimiser state of another model ({failure_reason(exc)}); "
                        f"{_advice(folder)}") from None
    path = folder / "rng.pt"
    rng = _load_torch(path, folder)
    try:
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: not a random-number state ({failure_reason(exc)}); "
                        f"{_advice(folder)}") from None
    return state
