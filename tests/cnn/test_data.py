"""Datasets over the volume cache and the epoch sampler (determinism, oversampling, DDP split)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medvlm.cnn.data import EpochSampler, ItemKey, VolumeDataset, check_volumes, derive_seed
from medvlm.data.cohorts import Cohort, load_cohort
from medvlm.errors import DataError


def test_dataset_items(tiny_work: Path) -> None:
    cohort = load_cohort(tiny_work, "train", fold=0)
    ds = VolumeDataset(tiny_work, cohort)
    x, y, index = ds[3]
    assert x.shape == (4, 16, 24, 24) and x.dtype == torch.float32
    assert float(y) == cohort.labels[3] and index == 3
    expected = np.load(tiny_work / "volumes" / f"{cohort.patient_ids[3]}.npy")
    assert np.array_equal(x.numpy(), expected)
    # a key draw * n + index reads the same patient
    assert ds[3 + 2 * len(ds)][2] == 3


def test_augmentation_is_seeded_per_epoch_and_key(tiny_work: Path) -> None:
    cohort = load_cohort(tiny_work, "train", fold=0)
    ds = VolumeDataset(tiny_work, cohort, augment=True, seed=1)
    plain = VolumeDataset(tiny_work, cohort)[0][0]
    ds.set_epoch(0)
    a = [ds[k][0] for k in (0, len(ds), 2 * len(ds), 3 * len(ds))]
    again = VolumeDataset(tiny_work, cohort, augment=True, seed=1)
    assert torch.equal(again[len(ds)][0], a[1])  # same (seed, epoch, key): same volume
    assert any(not torch.equal(v, plain) for v in a)  # something is augmented
    assert len({v.sum().item() for v in a}) > 1  # different draws of one patient differ
    ds.set_epoch(1)
    assert not torch.equal(ds[len(ds)][0], a[1])
    # an ItemKey carries its epoch: the dataset's own epoch (a stale worker copy's) does not matter
    assert torch.equal(ds[ItemKey(0, len(ds))][0], a[1])
    assert torch.equal(again[ItemKey(1, len(ds))][0], ds[len(ds)][0])
    assert a[0].shape == plain.shape and a[0].dtype == torch.float32


def test_epoch_sampler_oversamples_lgg() -> None:
    labels = [0] * 10 + [1] * 90
    counts: Counter[int] = Counter()
    for epoch in range(20):
        sampler = EpochSampler(labels, oversample=True, seed=0)
        sampler.set_epoch(epoch)
        counts.update(labels[k.key % 100] for k in sampler)
    assert sum(counts.values()) == 2000
    assert 0.4 < counts[0] / 2000 < 0.6  # ~balanced instead of 10 %


def test_epoch_sampler_permutation_and_determinism() -> None:
    labels = [0, 1] * 5
    s = EpochSampler(labels, oversample=False, seed=3)
    s.set_epoch(2)
    items = list(s)
    assert all(isinstance(item, ItemKey) and item.epoch == 2 for item in items)  # the epoch travels along
    keys = [item.key for item in items]
    assert keys == s.keys()
    assert sorted(k % 10 for k in keys) == list(range(10))
    assert [k // 10 for k in keys] == list(range(10))  # key = position * n + index
    s2 = EpochSampler(labels, oversample=False, seed=3)
    s2.set_epoch(2)
    assert list(s2) == items
    s2.set_epoch(3)
    assert [item.key for item in s2] != keys
    torch.manual_seed(123)  # global RNG state does not matter
    assert list(EpochSampler(labels, oversample=False, seed=3, rank=0)) == list(
        EpochSampler(labels, oversample=False, seed=3))


def test_epoch_sampler_ranks_partition_the_epoch() -> None:
    labels = [0, 1, 1, 1, 1, 0, 1]
    full = EpochSampler(labels, oversample=True, seed=0).keys()
    parts = [EpochSampler(labels, oversample=True, seed=0, rank=r, world_size=2).keys() for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 4
    assert set(parts[0] + parts[1]) == set(full)


def test_derive_seed() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert 0 <= derive_seed(5) < 2**63


def test_check_volumes(tiny_work: Path, tmp_path: Path) -> None:
    ids = load_cohort(tiny_work, "val", fold=0).patient_ids
    assert check_volumes(tiny_work, ids) == (4, 16, 24, 24)
    with pytest.raises(DataError, match="BraTS20_Training_999.*missing"):
        check_volumes(tiny_work, [*ids, "BraTS20_Training_999"])
    (tmp_path / "volumes").mkdir()
    np.save(tmp_path / "volumes" / "a.npy", np.zeros((4, 8, 8, 8), np.float32))
    np.save(tmp_path / "volumes" / "b.npy", np.zeros((4, 8, 8, 9), np.float32))
    np.save(tmp_path / "volumes" / "c.npy", np.zeros((3, 8, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"b\.npy: shape \(4, 8, 8, 9\) differs.*patient a"):
        check_volumes(tmp_path, ["a", "b"])
    with pytest.raises(DataError, match=r"c\.npy: expected a float \(4, D, H, W\)"):
        check_volumes(tmp_path, ["c"])
    with pytest.raises(DataError, match="no patient"):
        check_volumes(tmp_path, [])
    assert len(VolumeDataset(tmp_path, Cohort("x", ["a"], [0]))) == 1


@pytest.mark.slow
def test_persistent_workers_see_each_epoch(tiny_work: Path) -> None:
    """Workers started once (persistent) still augment epoch e with epoch e's seeds."""
    cohort = load_cohort(tiny_work, "train", fold=0)

    def epochs(workers: int) -> list[list[torch.Tensor]]:
        ds = VolumeDataset(tiny_work, cohort, augment=True, seed=4)
        sampler = EpochSampler(cohort.labels, oversample=True, seed=2)
        extra = {"persistent_workers": True} if workers else {}
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, **extra)
        out = []
        for epoch in range(3):
            sampler.set_epoch(epoch)  # no ds.set_epoch: the epoch comes with the keys
            out.append([x for x, _, _ in loader])
        return out

    plain, workers = epochs(0), epochs(2)
    for e in range(3):
        assert all(torch.equal(a, b) for a, b in zip(plain[e], workers[e], strict=True))
    assert not torch.equal(plain[0][0], plain[1][0])
