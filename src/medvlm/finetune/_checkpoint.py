"""Atomic training checkpoints: adapter weights + optimiser + step + RNG, swapped in as one folder.

Layout of ``ADAPTER/checkpoint/``: ``adapter_model.safetensors`` (LoRA weights), ``optimizer.pt`` and
``rng.pt`` (tensors only, read back with ``torch.load(weights_only=True)``) and ``state.json`` (step,
epoch, log rows, best epoch, config, data fingerprint). A new checkpoint is written to
``checkpoint.new/`` and swapped in by renames, so a crash leaves either the old or the new one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medvlm._io import write_json_atomic

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


def load_adapter_weights(model: Any, path: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"{path}: unexpected adapter keys {unexpected[:3]}")


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


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def load_checkpoint(folder: Path, *, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore adapter weights, optimiser and RNG from ``folder``; returns its ``state.json``."""
    import torch

    load_adapter_weights(model, folder / "adapter_model.safetensors")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
    rng = torch.load(folder / "rng.pt", weights_only=True, map_location="cpu")
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return read_state(folder)
