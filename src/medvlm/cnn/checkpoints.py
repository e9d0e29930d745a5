"""Checkpoints of the CNN training: ``fold<k>/last.pt`` (resume) and ``fold<k>/best.pt`` (weights).

Checkpoints hold plain tensors and types only, so :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)``; the RNG states go in as tensors and ints (:func:`get_rng_state`).
Writes are atomic (:func:`save_checkpoint`): a crash never leaves half a file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from medvlm._io import atomic_path
from medvlm.cnn.config import CNNConfig
from medvlm.errors import ConfigError, DataError

#: Options that must be the same when a run resumes from its checkpoint.
RESUME_KEYS = ("model", "lr", "batch_size", "seed", "augment", "oversample", "weight_decay", "scheduler",
               "select_metric")
CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------------------------ RNG state
def get_rng_state() -> dict[str, Any]:
    """Global torch/CUDA/numpy/python RNG states as tensors and plain types (``weights_only`` safe)."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


# ----------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename (a crash never leaves half a file)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; a damaged file is a DataError naming it."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DataError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
                        "delete it to restart this fold") from exc


def check_same_options(where: Path, saved: dict[str, Any], config: CNNConfig) -> None:
    """A ConfigError naming ``where`` when an option of :data:`RESUME_KEYS` in ``saved`` (a checkpoint's
    or ``run.json``'s config) differs from ``config``."""
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(config, key):
            option = "--" + key.replace("_", "-")
            raise ConfigError(f"{where}: this run was trained with {option} {saved[key]!r}, not "
                              f"{getattr(config, key)!r}; rerun with the same options or use another --out")


def _check_resume(path: Path, ckpt: dict[str, Any], config: CNNConfig, input_shape: tuple[int, ...]) -> None:
    check_same_options(path, ckpt.get("config", {}), config)
    if tuple(ckpt.get("input_shape", input_shape)) != tuple(input_shape):
        raise ConfigError(f"{path}: trained on volumes of shape {tuple(ckpt['input_shape'])}, the work "
                          f"folder now has {tuple(input_shape)}; use another --out")


def restore_training(ckpt: dict[str, Any], *, model: Any, optimizer: Any, scheduler: Any, scaler: Any
                     ) -> tuple[list[dict[str, Any]], int | None, int]:
    """Load a ``last.pt`` payload into the training objects and restore the global RNG states.

    Returns ``(history, best_epoch, epoch)``: the epochs finished so far and the best of them.
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    history, best_epoch, epoch = list(ckpt["history"]), ckpt["best_epoch"], int(ckpt["epoch"])
    set_rng_state(ckpt["rng"])
    return history, best_epoch, epoch
