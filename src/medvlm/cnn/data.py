"""Datasets and samplers over the prepared volume cache ``WORK/volumes/<patient_id>.npy``.

A volume is float32 ``(4, D, H, W)`` (the four prepared channels; see docs/internals.md), read
memory-mapped. Labels as the task defines them (patient-level: the patient's; slice-level tasks read
2D slices of the volumes, :class:`SliceDataset`).

Randomness is a pure function of ``(seed, epoch, position)``: :class:`EpochSampler` draws the epoch's
order (optionally oversampling the minority class with a
:class:`torch.utils.data.WeightedRandomSampler`) from a
generator seeded with ``(seed, epoch)``, and hands the dataset :class:`ItemKey` ``(epoch, key)``
pairs with ``key = position * n + index``, so each drawn item gets its own augmentation seed, derived
from the item key alone. The sampler runs in the main process, so the epoch reaches persistent
DataLoader workers (whose dataset copies never see a ``set_epoch`` made after they started). The
result does not depend on the number of DataLoader workers, nor on whether they persist, nor on
whether the run was interrupted and resumed. ``rank``/``world_size`` split an epoch's keys between
data-parallel processes (the DDP hook).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from medvlm.data.cohorts import Cohort, volume_path
from medvlm.errors import DataError


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (``numpy.random.SeedSequence``).

    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
    True
    """
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def check_volumes(work: str | Path, patient_ids: Sequence[str]) -> tuple[int, int, int, int]:
    """Check every volume exists, is 4-channel float, finite, and all share one shape; return that shape.

    Raises :class:`DataError` naming the patient and the file.
    """
    shape: tuple[int, ...] | None = None
    first = None
    for pid in patient_ids:
        path = volume_path(work, pid)
        if not path.is_file():
            raise DataError(f"{path}: volume of patient {pid} is missing; rerun `medvlm prepare`")
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy volume ({exc})") from exc
        if arr.ndim != 4 or arr.shape[0] != 4 or not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"{path}: expected a float (4, D, H, W) volume, got {arr.dtype} {arr.shape}")
        bad = next((c for c in range(arr.shape[0]) if not np.isfinite(arr[c]).all()), None)
        if bad is not None:  # one channel at a time: a real volume is read once, not copied whole
            raise DataError(f"{path}: volume of patient {pid} holds NaN or infinite values (channel {bad}); "
                            "rerun `medvlm prepare`, which skips such patients")
        if shape is None:
            shape, first = tuple(arr.shape), pid
        elif tuple(arr.shape) != shape:
            raise DataError(f"{path}: shape {tuple(arr.shape)} differs from {shape} of patient {first}; "
                            "all volumes must be prepared with the same --shape")
    if shape is None:
        raise DataError(f"{work}: no patient to train on")
    return shape  # type: ignore[return-value]


def default_augmentation(spatial_dims: int = 3) -> Any:
    """MONAI array transforms applied to a ``(4, D, H, W)`` volume (or a ``(4, H, W)`` slice, with
    ``spatial_dims=2``) during training.

    Left-right flip (the last axis, x, p 0.5), a small affine (rotation <= 0.1 rad, scale <= 10 %,
    p 0.3), intensity scale and shift (<= 10 %, p 0.3 each) and Gaussian noise (sd 0.05, p 0.2).
    """
    from monai.transforms import (
        Compose,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
        RandScaleIntensity,
        RandShiftIntensity,
    )

    return Compose([
        RandFlip(prob=0.5, spatial_axis=spatial_dims - 1),
        RandAffine(prob=0.3, rotate_range=(0.1,) * (1 if spatial_dims == 2 else 3),
                   scale_range=(0.1,) * spatial_dims, padding_mode="zeros"),
        RandScaleIntensity(factors=0.1, prob=0.3),
        RandShiftIntensity(offsets=0.1, prob=0.3),
        RandGaussianNoise(prob=0.2, std=0.05),
    ])


class ItemKey(NamedTuple):
    """What :class:`EpochSampler` yields and :class:`VolumeDataset` reads: ``key = position * n + index``
    drawn in epoch ``epoch`` (the augmentation seed is ``(dataset seed, epoch, key)``)."""

    epoch: int
    key: int


class VolumeDataset(Dataset):
    """Volumes and labels of one cohort; item ``key`` -> ``(x, y, index)``.

    ``x``: float32 tensor (4, D, H, W); ``y``: float32 scalar tensor (the label, 0. or 1.); ``index``:
    position of the patient in ``cohort``. The item is an :class:`ItemKey` ``(epoch, key)`` with
    ``key = draw * n + index`` (what :class:`EpochSampler` yields), or a plain int ``key`` (a plain
    index, ``draw`` 0, works too), read in the epoch last given to :meth:`set_epoch` (0 by default).
    With ``augment``, the augmentation of an item is seeded with ``(seed, epoch, key)`` only, so an
    :class:`ItemKey` gives the same volume in any process, whatever its dataset copy's ``epoch``.
    """

    def __init__(self, work: str | Path, cohort: Cohort, *, augment: bool = False, seed: int = 0) -> None:
        self.work = Path(work)
        self.patient_ids = list(cohort.patient_ids)
        self.labels = [int(v) for v in cohort.labels]
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.patient_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: ItemKey | tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if isinstance(item, tuple):
            epoch, key = int(item[0]), int(item[1])
        else:
            epoch, key = self.epoch, int(item)
        index = key % len(self.patient_ids)
        volume = np.load(volume_path(self.work, self.patient_ids[index]), mmap_mode="r")
        x = np.array(volume, dtype=np.float32, copy=True)
        if self.augment:
            if self._transform is None:
                self._transform = default_augmentation()
            self._transform.set_random_state(seed=derive_seed(self.seed, epoch, key) % (2**32))
            out = self._transform(x)
            x = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(float(self.labels[index])), index


class EpochSampler(Sampler[ItemKey]):
    """Training order of one epoch as :class:`ItemKey` ``(epoch, position * n + index)`` items.

    ``oversample``: draw ``n`` items with replacement with weights ``1 / count(class)`` (a
    :class:`WeightedRandomSampler`), so every class (two, or the K of a multi-class task) is drawn
    equally often on average; else a
    permutation. The generator is seeded with ``(seed, epoch)``, so the order is reproducible and
    independent of global RNG state. ``rank``/``world_size``: this process's share for data-parallel
    training (padded by wrap-around to equal length, like ``DistributedSampler``). Call
    :meth:`set_epoch` in the main process before iterating; :meth:`keys` gives the plain int keys.
    """

    def __init__(self, labels: Sequence[int], *, oversample: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.labels = [int(v) for v in labels]
        self.oversample = oversample
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def weights(self) -> list[float]:
        counts = {c: self.labels.count(c) for c in set(self.labels)}
        return [1.0 / counts[c] for c in self.labels]

    def indices(self) -> list[int]:
        """Patient indices of the whole epoch (all ranks), in order."""
        n = len(self.labels)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        if self.oversample:
            return [int(i) for i in WeightedRandomSampler(self.weights(), n, replacement=True,
                                                          generator=generator)]
        return torch.randperm(n, generator=generator).tolist()

    def keys(self) -> list[int]:
        """This rank's keys ``position * n + index`` of the epoch, in order."""
        n = len(self.labels)
        keys = [pos * n + idx for pos, idx in enumerate(self.indices())]
        if self.world_size > 1 and keys:
            per_rank = -(-len(keys) // self.world_size)
            padded = [keys[i % len(keys)] for i in range(per_rank * self.world_size)]
            keys = padded[self.rank :: self.world_size]
        return keys

    def __iter__(self) -> Iterator[ItemKey]:
        epoch = self.epoch
        return iter([ItemKey(epoch, key) for key in self.keys()])

    def __len__(self) -> int:
        return -(-len(self.labels) // self.world_size)


# ------------------------------------------------------------------------------ slice-level tasks (2D)
@dataclass(frozen=True)
class SliceCohort:
    """The labelled slices of one cohort (a slice-level task): parallel lists, one entry per slice.

    ``patient_ids`` repeat (one per slice), ``labels`` are the slices' labels; ``orientations`` and
    ``slice_indices`` (canonical) locate each slice. Quacks like :class:`~medvlm.data.cohorts.Cohort`.
    """

    name: str
    patient_ids: list[str]
    labels: list[int]
    orientations: list[str]
    slice_indices: list[int]

    def __len__(self) -> int:
        return len(self.patient_ids)

    def keys(self) -> dict[str, list]:
        """The unit key columns of a predictions frame."""
        return {"orientation": self.orientations, "slice_index": self.slice_indices}


def unit_cohort(work: str | Path, cohort: Cohort, task: Any) -> Cohort | SliceCohort:
    """A cohort's prediction units: the cohort itself (patient unit) or its labelled slices in the
    task's default orientations (slice unit)."""
    from medvlm.data.cohorts import cohort_units

    if task.unit == "patient":
        return cohort
    if task.unit == "image":
        from medvlm.cnn.images import image_cohort

        return image_cohort(work, cohort)  # type: ignore[return-value]
    units = cohort_units(work, cohort, unit=task.unit, orientations=list(task.default_orientations))
    return SliceCohort(cohort.name, units["patient_id"].tolist(), units["label"].astype(int).tolist(),
                       units["orientation"].tolist(), units["slice_index"].astype(int).tolist())


def prepared_index(canonical: int, lo: int, hi: int, n_out: int) -> int:
    """The index along a resized axis of a canonical voxel index inside the crop ``lo..hi`` (inclusive).

    >>> prepared_index(10, 10, 19, 5), prepared_index(19, 10, 19, 5), prepared_index(14, 10, 19, 5)
    (0, 4, 2)
    """
    n_in = hi - lo + 1
    pos = (canonical - lo + 0.5) * n_out / n_in - 0.5
    return int(min(max(round(pos), 0), n_out - 1))


class SliceDataset(Dataset):
    """2D slices of prepared volumes: item ``key`` -> ``(x, y, index)``, ``x`` float32 (4, S, S).

    The slice at canonical index ``slice_indices[i]`` along ``orientations[i]`` is taken from the
    patient's prepared volume (axes z, y, x; its crop box from the manifest maps canonical to prepared
    indices) and resized bilinearly to ``S x S``. Items and augmentation seeding as in
    :class:`VolumeDataset`.
    """

    def __init__(self, work: str | Path, cohort: SliceCohort, *, size: int, augment: bool = False,
                 seed: int = 0) -> None:
        from medvlm.data.cohorts import read_manifest

        self.work, self.cohort, self.size = Path(work), cohort, int(size)
        self.labels = list(cohort.labels)
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self._transform: Any = None
        manifest = read_manifest(work, ok_only=True).set_index("patient_id")
        self._crops = {pid: {a: (int(manifest.loc[pid, f"crop_{a}_min"]),
                                 int(manifest.loc[pid, f"crop_{a}_max"])) for a in "xyz"}
                       for pid in dict.fromkeys(cohort.patient_ids)}

    def __len__(self) -> int:
        return len(self.cohort)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def slice(self, index: int) -> np.ndarray:
        """The resized ``(4, S, S)`` float32 slice of item ``index``."""
        import torch.nn.functional as F

        pid = self.cohort.patient_ids[index]
        volume = np.load(volume_path(self.work, pid), mmap_mode="r")  # (4, z, y, x)
        axis = {"axial": ("z", 1), "coronal": ("y", 2), "sagittal": ("x", 3)}[self.cohort.orientations[index]]
        lo, hi = self._crops[pid][axis[0]]
        i = prepared_index(self.cohort.slice_indices[index], lo, hi, volume.shape[axis[1]])
        plane = np.array(np.take(volume, i, axis=axis[1]), dtype=np.float32)
        t = torch.from_numpy(plane)[None]
        return F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)[0].numpy()

    def __getitem__(self, item: ItemKey | tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, key = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (self.epoch, int(item))
        index = key % len(self.cohort)
        x = self.slice(index)
        if self.augment:
            if self._transform is None:
                self._transform = default_augmentation(spatial_dims=2)
            self._transform.set_random_state(seed=derive_seed(self.seed, epoch, key) % (2**32))
            out = self._transform(x)
            x = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(float(self.labels[index])), index


def make_dataset(work: str | Path, cohort: Cohort | SliceCohort, *, augment: bool = False, seed: int = 0
                 ) -> Dataset:
    """The dataset of a cohort: volumes (patient unit), 2D slices (slice unit) or 2D images (image unit)."""
    from medvlm.cnn.images import ImageCohort, ImageDataset

    if isinstance(cohort, ImageCohort):
        return ImageDataset(work, cohort, augment=augment, seed=seed)
    if isinstance(cohort, SliceCohort):
        return SliceDataset(work, cohort, size=input_shape(work, cohort)[-1], augment=augment, seed=seed)
    return VolumeDataset(work, cohort, augment=augment, seed=seed)


def input_shape(work: str | Path, cohort: Cohort | SliceCohort) -> tuple[int, ...]:
    """What the network takes: ``(4, D, H, W)`` volumes, or ``(4, S, S)`` slices (S = the volumes' W), or
    ``(C, S, S)`` images (:func:`medvlm.cnn.images.image_input_shape`)."""
    from medvlm.cnn.images import ImageCohort, image_input_shape

    if isinstance(cohort, ImageCohort):
        return image_input_shape(work)
    shape = check_volumes(work, list(dict.fromkeys(cohort.patient_ids)))
    return (shape[0], shape[-1], shape[-1]) if isinstance(cohort, SliceCohort) else shape
