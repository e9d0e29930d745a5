"""Data-parallel plumbing of the CNN training: ranks, the process group, DDP, collectives.

Under ``torchrun --nproc-per-node N`` (env ``WORLD_SIZE`` > 1) :func:`medvlm.cnn.train.train_cnn`
joins a process group (:func:`process_group`) and trains a DistributedDataParallel copy of the model
(:func:`wrap_model`). Every helper here is a no-op in a plain process, so the training code calls them
unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); ``(0, 1, 0)`` in a plain process."""

    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        if not value.strip().isdigit():
            return default
        return int(value)

    world = max(read("WORLD_SIZE", 1), 1)
    if world == 1:
        return 0, 1, 0
    return read("RANK", 0), world, read("LOCAL_RANK", 0)


def active_env() -> tuple[int, int, int]:
    """:func:`distributed_env` inside an initialised process group of several ranks, else ``(0, 1, 0)``."""
    return distributed_env() if _dist_active() else (0, 1, 0)


def _dist_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _barrier() -> None:
    if _dist_active():
        import torch.distributed as dist

        dist.barrier()


def _broadcast(value: Any) -> Any:
    """``value`` of rank 0 on every rank (pickled through ``broadcast_object_list``); as is when alone."""
    if not _dist_active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Elementwise sums of ``values`` over every rank (float64); ``values`` as they are when alone."""
    if not _dist_active():
        return values
    import torch
    import torch.distributed as dist

    sums = torch.tensor(values, dtype=torch.float64, device=device)
    if device.type != "cuda" and dist.get_backend() == "nccl":  # pragma: no cover - nccl wants CUDA
        sums = sums.cuda()
    dist.all_reduce(sums)
    return [float(v) for v in sums]


@contextmanager
def process_group(device: torch.device, local_rank: int) -> Iterator[None]:
    """Join torchrun's process group for the block (``nccl`` on CUDA with device ``cuda:LOCAL_RANK``,
    ``gloo`` on CPU) and destroy it afterwards; a group that is already initialised is used as it is."""
    import datetime

    import torch
    import torch.distributed as dist

    started_here = not dist.is_initialized()
    if started_here:
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=1))
    try:
        yield
        if started_here and dist.is_initialized():
            dist.barrier()  # every rank done before any tears the group down (gloo aborts otherwise)
    finally:
        if started_here and dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """The network that trains: ``model`` itself, or its DistributedDataParallel wrapper (same parameters)
    when ``world_size`` > 1. Checkpoints, validation and scoring use ``model``, so their format does not
    depend on the world size."""
    if world_size <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
