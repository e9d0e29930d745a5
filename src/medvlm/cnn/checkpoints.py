"""Checkpoints of the CNN training: ``fold<k>/last.pt`` (resume) and ``fold<k>/best.pt`` (weights).

Checkpoints hold plain tensors and types only, so :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)``; the RNG states go in as tensors and ints (:func:`get_rng_state`).
Writes are atomic (:func:`save_checkpoint`): a crash never leaves half a file.

A checkpoint that cannot be used -- random bytes, a truncated file, a zip that is not a torch file,
objects other than tensors, a torch file with the wrong keys, types or tensor shapes, a folder where the
file belongs -- is a one-line :class:`~medvlm.errors.DataError` naming the file and what to do (exit
status 2). It is *not* moved aside or replaced silently: a damaged ``last.pt`` means the user deletes it
to restart that fold (the message says so), a damaged ``best.pt`` that they delete the fold's folder to
train it again; nothing else of the run is touched.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from medvlm._io import atomic_path
from medvlm.cnn.config import CNNConfig
from medvlm.errors import ConfigError, DataError, failure_reason

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


#: what each kind of checkpoint must hold: key -> type (``model`` and ``optimizer``: state dicts)
_REQUIRED = {
    "last": {"model": dict, "optimizer": dict, "history": list, "epoch": int, "rng": dict},
    "best": {"model": dict},
}


def _advice(path: Path, kind: str) -> str:
    if kind == "last":
        return "delete it (or move it aside) to restart this fold"
    return f"delete the folder {path.parent} to train this fold again"


def _layout_problem(ckpt: Any, kind: str) -> str | None:
    """What is wrong with a loaded checkpoint's layout, or None."""
    import torch

    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a dict"
    for key, kind_type in _REQUIRED[kind].items():
        if key not in ckpt:
            return f"no {key!r} entry"
        value = ckpt[key]
        if not isinstance(value, kind_type) or isinstance(value, bool):
            return f"{key!r} is of type {type(value).__name__}, not {kind_type.__name__}"
    if not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        return "'model' holds values that are not tensors"
    if kind == "last" and not all(isinstance(row, dict) for row in ckpt["history"]):
        return "'history' holds rows that are not dicts"
    if kind == "last" and not (ckpt.get("best_epoch") is None or isinstance(ckpt["best_epoch"], int)):
        return "'best_epoch' is not an epoch number"
    if not isinstance(ckpt.get("config", {}), dict):
        return "'config' is not a dict"
    shape = ckpt.get("input_shape", [])
    if not isinstance(shape, list | tuple) or not all(isinstance(n, int) for n in shape):
        return "'input_shape' is not a list of sizes"
    return None


def load_checkpoint(path: Path, kind: str | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU, checked to hold what a ``kind`` (``"last"``: the
    resume state; ``"best"``: weights; default: ``"best"`` for a file named ``best.pt``, else
    ``"last"``) checkpoint holds; anything else is a one-line DataError naming it."""
    import torch

    kind = kind or ("best" if Path(path).name == "best.pt" else "last")

    if path.is_dir():
        raise DataError(f"{path}: a folder where a checkpoint file belongs; {_advice(path, kind)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DataError(f"{path}: unreadable checkpoint ({failure_reason(exc)}); "
                        f"{_advice(path, kind)}") from None
    problem = _layout_problem(ckpt, kind)
    if problem:
        raise DataError(f"{path}: not a medvlm CNN checkpoint ({problem}); {_advice(path, kind)}")
    return ckpt


def check_checkpoint_paths(run: Path, folds: list[int]) -> None:
    """A DataError when a fold's ``last.pt`` or ``best.pt`` exists but is not a file (before training)."""
    for fold in folds:
        for name, kind in (("last.pt", "last"), ("best.pt", "best")):
            path = run / f"fold{fold}" / name
            if path.exists() and not path.is_file():
                raise DataError(f"{path}: not a checkpoint file; {_advice(path, kind)}")


def load_weights(model: Any, ckpt: dict[str, Any], path: Path, kind: str = "best") -> None:
    """``model.load_state_dict(ckpt["model"])``; keys or shapes of another network are a DataError."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: its weights do not fit this run's network ({first}); "
                        f"{_advice(path, kind)}") from None


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


def restore_training(ckpt: dict[str, Any], *, model: Any, optimizer: Any, scheduler: Any, scaler: Any,
                     path: Path | None = None) -> tuple[list[dict[str, Any]], int | None, int]:
    """Load a ``last.pt`` payload into the training objects and restore the global RNG states.

    Returns ``(history, best_epoch, epoch)``: the epochs finished so far and the best of them. A payload
    that does not fit (another network, optimiser or RNG layout) is a DataError naming ``path``.
    """
    where = path or Path("last.pt")
    load_weights(model, ckpt, where, kind="last")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history, best_epoch, epoch = list(ckpt["history"]), ckpt.get("best_epoch"), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise DataError(f"{where}: its training state does not fit this run ({type(exc).__name__}: {first}); "
                        f"{_advice(where, 'last')}") from None
    if not 0 <= epoch == len(history) or not (best_epoch is None or 1 <= best_epoch <= epoch):
        raise DataError(f"{where}: inconsistent training state (epoch {epoch}, {len(history)} history rows, "
                        f"best epoch {best_epoch}); {_advice(where, 'last')}")
    return history, best_epoch, epoch
