"""The epoch loop of the CNN training: device, optimiser, scheduler, mixed precision, DataLoaders,
one training pass (:func:`train_one_epoch`) and one scoring pass (:func:`predict`).

Labels 0/1 (1 the positive class); the network outputs one logit per item and ``sigmoid(logit)`` =
P(label 1); the loss is binary cross-entropy. A task with K > 2 classes (``n_classes``; labels 0..K-1):
K logits per item, ``softmax`` = the class probabilities, the loss is the K-class cross-entropy (the
training stream is balanced by oversampling, as in the binary case; no per-class loss weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.cnn.config import CNNConfig
from medvlm.cnn.distributed import all_reduce_sums
from medvlm.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Worker processes ``--workers auto`` uses on CUDA.
CUDA_WORKERS = 2
#: Batches each worker loads ahead (PyTorch's default; 2 x workers batches in flight).
PREFETCH_FACTOR = 2


# ------------------------------------------------------------------------------------------- building
def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: CNNConfig) -> torch.optim.Optimizer:
    """Adam, as in the study (``weight_decay`` 0 by default)."""
    import torch

    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: CNNConfig) -> Any:
    """None (constant lr, the study) or ReduceLROnPlateau on the validation loss (factor 0.5, patience 3)."""
    import torch

    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
    return None


def autocast_dtype(device: torch.device, config: CNNConfig) -> torch.dtype | None:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); None on CPU or with amp off."""
    import torch

    if device.type != "cuda" or not config.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_workers(workers: int | str, device: torch.device) -> int:
    """DataLoader worker processes: ``auto`` -> 0 on CPU, :data:`CUDA_WORKERS` on CUDA; an int as is.

    On CPU the volumes are memory-mapped ``.npy`` files, so loading one is a memory copy and worker
    processes only compete with torch's compute threads for the cores; on CUDA they overlap loading
    (and augmentation) with the GPU's work.
    """
    if workers == "auto":
        return CUDA_WORKERS if device.type == "cuda" else 0
    return int(workers)


def make_loader(dataset: Any, config: CNNConfig, device: torch.device, *, sampler: Any = None,
                drop_last: bool = False, seed: int = 0, persistent: bool = True
                ) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`resolve_workers` workers; ``sampler`` None -> the dataset's order.

    With workers, ``persistent`` (the default, for loaders iterated every epoch) keeps the worker
    processes alive between epochs instead of forking new ones for each pass; pass False for a loader
    iterated once. Persistent workers hold copies of the dataset made when they started, so anything
    that changes per epoch must come through the sampler (:class:`~medvlm.cnn.data.ItemKey`).
    """
    import torch

    workers = resolve_workers(config.workers, device)
    extra: dict[str, Any] = {}
    if workers:
        extra = {"persistent_workers": persistent, "prefetch_factor": PREFETCH_FACTOR}
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
        num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed), **extra,
    )


# ------------------------------------------------------------------------------------------ one epoch
def _loss_fn(n_classes: int) -> Any:
    """Summed BCE-with-logits (one logit, K = 2) or K-class cross-entropy (K logits, integer targets)."""
    import torch

    if n_classes > 2:
        return torch.nn.CrossEntropyLoss(reduction="sum")
    return torch.nn.BCEWithLogitsLoss(reduction="sum")


def _outputs(model: nn.Module, x: Any, y: Any, n_classes: int) -> tuple[Any, Any]:
    """(logits, targets): ``(B,)`` and float labels for K = 2, ``(B, K)`` and int64 labels for K > 2."""
    import torch

    if n_classes > 2:
        return model(x), y.to(torch.int64)
    return model(x).squeeze(1), y


def train_one_epoch(model: nn.Module, loader: Any, optimizer: Any, device: torch.device, *,
                    dtype: torch.dtype | None, scaler: Any, progress: Callable[[], None] | None = None,
                    n_classes: int = 2) -> tuple[float, float]:
    """One pass over ``loader`` with BCE-with-logits (cross-entropy for ``n_classes`` > 2); returns (mean
    loss, accuracy) over the items seen.

    Data-parallel: the loss and accuracy are over every rank's items (all-reduced).
    """
    import torch

    model.train()
    loss_fn = _loss_fn(n_classes)
    total, correct, seen = 0.0, 0, 0
    for x, y, _ in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits, y = _outputs(model, x, y, n_classes)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss / len(y)).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach())
        if n_classes > 2:
            correct += int((logits.detach().argmax(dim=1) == y).sum())
        else:
            correct += int(((logits.detach() >= 0).float() == y).sum())
        seen += len(y)
        if progress is not None:
            progress()
    sums = all_reduce_sums([total, float(correct), float(seen)], device)
    total, correct, seen = float(sums[0]), int(sums[1]), int(sums[2])
    return total / max(seen, 1), correct / max(seen, 1)


def predict(model: nn.Module, loader: Any, device: torch.device, *, dtype: torch.dtype | None = None,
            progress: Callable[[], None] | None = None, n_classes: int = 2) -> tuple[np.ndarray, float]:
    """P(label 1) of every item of ``loader`` in order, shape (n,), and the mean BCE loss; for
    ``n_classes`` K > 2 the class probabilities (softmax), shape (n, K), column ``i`` = P(label i), and the
    mean cross-entropy."""
    import torch

    model.eval()
    loss_fn = _loss_fn(n_classes)
    probs, total, seen = [], 0.0, 0
    with torch.no_grad():
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits, y = _outputs(model, x, y, n_classes)
            logits = logits.float()
            total += float(loss_fn(logits, y))
            seen += len(y)
            out = torch.softmax(logits, dim=1) if n_classes > 2 else torch.sigmoid(logits)
            probs.append(out.cpu().numpy())
            if progress is not None:
                progress()
    empty = np.zeros((0, n_classes)) if n_classes > 2 else np.zeros(0)
    return (np.concatenate(probs).astype(np.float64) if probs else empty), total / max(seen, 1)
