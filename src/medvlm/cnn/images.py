"""The CNN on an image task (``train-cnn`` on a work folder prepared with ``--task FILE.yaml``).

Items are the prepared images ``WORK/images/<id>.npy`` (:mod:`medvlm.data.images`): float32
``(C, S, S)`` in [0, 1], ``C`` = 1 (greyscale) or 3 (colour MedMNIST), resized bilinearly (aspect not
kept) to ``S`` = the largest side among the work folder's images, clipped to
[:data:`MIN_SIZE`, :data:`MAX_SIZE`] (one input shape for every cohort of the folder). The network is
the task's ``cnn_model`` (``densenet2d``, MONAI ``DenseNet121(spatial_dims=2)``). A 3D MedMNIST set:
``(1, S, S, S)`` volumes (trilinear; ``S`` within [:data:`MIN_SIZE_3D`, :data:`MAX_SIZE_3D`]) for the
3D networks (the task's ``small3d``). Items, labels and augmentation seeding as in
:class:`~medvlm.cnn.data.SliceDataset`. After each training epoch the network's BatchNorm statistics are
re-estimated on the training images (:func:`recalibrate_batch_norm`), so that it is scored as it trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvlm.errors import DataError

#: the side of an image task's CNN input: the largest image side, within these bounds
MIN_SIZE, MAX_SIZE = 32, 224
#: the side of a 3D image task's CNN input (MedMNIST 3D: 28 or 64)
MIN_SIZE_3D, MAX_SIZE_3D = 16, 64


@dataclass(frozen=True)
class ImageCohort:
    """The images of one cohort (an image-level task): parallel lists, one entry per image (``patient_ids``
    repeat). Quacks like :class:`~medvlm.data.cohorts.Cohort`."""

    name: str
    patient_ids: list[str]
    labels: list[int]
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.patient_ids)

    def keys(self) -> dict[str, list]:
        """The unit key columns of a predictions frame."""
        return {"image_id": self.image_ids}


def image_cohort(work: str | Path, cohort: Any) -> ImageCohort:
    from medvlm.data.cohorts import cohort_units

    units = cohort_units(work, cohort, unit="image", orientations=[])
    return ImageCohort(cohort.name, units["patient_id"].tolist(), units["label"].astype(int).tolist(),
                       units["image_id"].tolist())


def image_input_shape(work: str | Path) -> tuple[int, ...]:
    """``(C, S, S)`` of every image of the work folder, ``(1, S, S, S)`` for 3D images (module docstring)."""
    from medvlm.data.cohorts import read_manifest
    from medvlm.data.images import image_path

    manifest = read_manifest(work, ok_only=True)
    if manifest.empty:
        raise DataError(f"{work}: no image to train on")
    first = np.load(image_path(work, str(manifest["id"].iloc[0])), mmap_mode="r")
    if first.ndim == 3 and first.shape[-1] != 3:  # (D, H, W)
        side = min(MAX_SIZE_3D, max(MIN_SIZE_3D, max(int(v) for v in first.shape)))
        return 1, side, side, side
    channels = 3 if first.ndim == 3 else 1
    sides = [int(v) for v in (*manifest["height"], *manifest["width"]) if str(v).strip()]
    side = min(MAX_SIZE, max(MIN_SIZE, max(sides, default=MIN_SIZE)))
    return channels, side, side


class ImageDataset(Dataset):
    """2D images of an :class:`ImageCohort`: item ``key`` -> ``(x, y, index)``, ``x`` float32 (C, S, S)."""

    def __init__(self, work: str | Path, cohort: ImageCohort, *, augment: bool = False,
                 seed: int = 0) -> None:
        self.work, self.cohort = Path(work), cohort
        self.shape = image_input_shape(work)
        self.labels = list(cohort.labels)
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.cohort)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image(self, index: int) -> np.ndarray:
        """The resized ``(C, S, S)`` float32 image of item ``index``."""
        import torch.nn.functional as F

        from medvlm.data.images import as_unit_float, image_path

        path = image_path(self.work, self.cohort.image_ids[index])
        try:
            pixels = as_unit_float(np.load(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable prepared image ({exc}); run `medvlm prepare` "
                            "again") from exc
        side = self.shape[-1]
        if len(self.shape) == 4:  # a 3D image (D, H, W)
            t = torch.from_numpy(np.ascontiguousarray(pixels))[None, None]
            return F.interpolate(t, size=(side,) * 3, mode="trilinear", align_corners=False)[0].numpy()
        t = torch.from_numpy(pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0).copy())
        return F.interpolate(t[None], size=(side, side), mode="bilinear", align_corners=False)[0].numpy()

    def __getitem__(self, item: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        from medvlm.cnn.data import default_augmentation, derive_seed

        epoch, key = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (self.epoch, int(item))
        index = key % len(self.cohort)
        x = self.image(index)
        if self.augment:
            if self._transform is None:
                self._transform = default_augmentation(spatial_dims=len(self.shape) - 1)
            self._transform.set_random_state(seed=derive_seed(self.seed, epoch, key) % (2**32))
            out = self._transform(x)
            x = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(float(self.labels[index])), index


def recalibrate_batch_norm(model: torch.nn.Module, loader: Any, device: torch.device, *,
                           dtype: torch.dtype | None = None) -> int:
    """Re-estimate every BatchNorm's running mean and variance from one pass over ``loader`` (the
    training images, not augmented) with the model's current weights ("precise BN"); returns how many
    BatchNorm layers were updated (0: none, nothing run). Weights are unchanged; the model is left in
    the mode it was in.

    Why (image tasks): their cohorts are small (tens of images, a few epochs: about ten optimiser steps),
    too few for BatchNorm's running statistics (momentum 0.1) to leave their initial mean 0 / variance 1
    and to follow weights that change every step. Scored with those statistics the 2D network's output
    was near-constant whatever it had learnt (``examples/demo-cxr.yaml`` before: validation scores within
    0.79-0.81 after 3 epochs, running variance 0.80 against 0.13 in the batches at the last BatchNorm).
    """
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass's batches
    model.train()
    try:
        with torch.no_grad():
            for x, _, _ in loader:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    model(x.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(training)
    return len(norms)
