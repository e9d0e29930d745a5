"""Synthetic BraTS cohort: layout, determinism, labels, grade-typical appearance."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvlm.data.brats import MAPPING_HEADER, TRAINING_FOLDER
from medvlm.data.synth import SIZES, assign_grades, make_patient, nifti_bytes, synth_cohort
from medvlm.errors import ConfigError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_mapping(synth_dir):
    training = synth_dir / TRAINING_FOLDER
    folders = sorted(p.name for p in training.iterdir() if p.is_dir())
    assert folders == [f"BraTS20_Training_{i:03d}" for i in range(1, 13)]
    for pid in folders:
        names = sorted(p.name for p in (training / pid).iterdir())
        assert names == sorted(f"{pid}_{k}.nii.gz" for k in ("t1", "t1ce", "t2", "flair", "seg"))
    with open(training / "name_mapping.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == MAPPING_HEADER
    assert [r[5] for r in rows[1:]] == folders
    grades = [r[0] for r in rows[1:]]
    assert grades.count("LGG") == 3 and grades.count("HGG") == 9


def test_files_look_like_brats(synth_dir):
    folder = synth_dir / TRAINING_FOLDER / "BraTS20_Training_001"
    img = nib.load(folder / "BraTS20_Training_001_t1.nii.gz")
    assert img.shape == SIZES["small"][0]
    assert img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # stored like BraTS: x and y flipped
    assert img.header.get_zooms() == (5.0, 5.0, 5.0)
    seg = np.asarray(nib.load(folder / "BraTS20_Training_001_seg.nii.gz").dataobj)
    assert seg.dtype == np.uint8
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).any()
    t1 = np.asarray(img.dataobj)
    assert (t1[seg > 0] > 0).all()  # tumour inside the brain
    assert (t1 == 0).mean() > 0.4  # skull-stripped background


def test_same_seed_same_bytes_and_gzip_mtime_zero(tmp_path):
    synth_cohort(tmp_path / "a", patients=2, lgg_fraction=0.5, seed=3, size="small", progress=False)
    synth_cohort(tmp_path / "b", patients=2, lgg_fraction=0.5, seed=3, size="small", progress=False)
    synth_cohort(tmp_path / "c", patients=2, lgg_fraction=0.5, seed=4, size="small", progress=False)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db and len(da) == 12  # 2 x 5 NIfTI, name_mapping.csv, survival_info.csv
    assert da != dc
    folder = tmp_path / "a" / TRAINING_FOLDER / "BraTS20_Training_001"
    gz = (folder / "BraTS20_Training_001_t1.nii.gz").read_bytes()
    assert gz[:2] == b"\x1f\x8b" and gz[4:8] == b"\0\0\0\0"  # gzip header mtime field


def test_no_gzip_writes_nii(tmp_path):
    synth_cohort(tmp_path, patients=1, lgg_fraction=0.0, size="small", gzip_files=False, progress=False)
    files = sorted(p.name for p in (tmp_path / TRAINING_FOLDER / "BraTS20_Training_001").iterdir())
    assert all(f.endswith(".nii") for f in files) and len(files) == 5


def test_grades_assigned_by_fraction():
    assert assign_grades(12, 0.25, 0).count("LGG") == 3
    assert assign_grades(10, 0.0, 0) == ["HGG"] * 10
    assert assign_grades(12, 0.25, 0) == assign_grades(12, 0.25, 0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": "huge"}, r"The '--size' parameter must be one of \[.*'small'.*\]. Got 'huge' instead."),
    ({"patients": 0}, "--patients must be at least 1, got 0"),
    ({"lgg_fraction": 1.5}, r"--lgg-fraction must be within \[0, 1\], got 1.5"),
    ({"lgg_fraction": -0.1}, r"--lgg-fraction must be within \[0, 1\], got -0.1"),
])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        synth_cohort(tmp_path, **{"patients": 1, **kwargs}, progress=False)
    assert not (tmp_path / TRAINING_FOLDER).exists()  # refused before anything is written


def test_hgg_and_lgg_differ_on_average_but_overlap():
    """HGG: more enhancement (label 4), bigger oedema, brighter T1ce rim; not perfectly separable."""
    stats = {"HGG": [], "LGG": []}
    for i in range(1, 25):
        grade = "HGG" if i % 2 else "LGG"
        vols, info = make_patient(i, grade, seed=11, size="small")
        seg = vols["seg"]
        stats[grade].append(((seg == 4).sum(), (seg == 2).sum(), info.aggressiveness))
    hgg, lgg = np.array(stats["HGG"], float), np.array(stats["LGG"], float)
    assert hgg[:, 0].mean() > 2 * max(lgg[:, 0].mean(), 1)  # enhancing voxels
    assert hgg[:, 1].mean() > 1.5 * lgg[:, 1].mean()  # oedema voxels
    assert (lgg[:, 0] == 0).sum() >= 6  # most LGG do not enhance
    assert hgg[:, 2].min() < lgg[:, 2].max()  # latent aggressiveness overlaps


def test_ring_enhancement_on_t1ce():
    """An aggressive HGG: enhancing rim brighter on T1ce than necrotic core and than white matter."""
    for i in range(1, 40):
        vols, info = make_patient(i, "HGG", seed=0, size="medium")
        seg = vols["seg"]
        if info.aggressiveness > 0.7 and (seg == 4).sum() > 50 and (seg == 1).sum() > 20:
            break
    t1ce, t2 = vols["t1ce"].astype(float), vols["t2"].astype(float)
    assert t1ce[seg == 4].mean() > 1.3 * t1ce[seg == 1].mean()
    assert t1ce[seg == 4].mean() > np.percentile(t1ce[(seg == 0) & (t1ce > 0)], 90)
    assert t2[seg == 2].mean() > np.median(t2[(seg == 0) & (t2 > 0)])  # oedema T2-hyperintense


@pytest.mark.slow
def test_full_size_geometry():
    vols, _ = make_patient(1, "LGG", seed=0, size="full")
    assert vols["t1"].shape == (240, 240, 155)
    img = nib.Nifti1Image.from_bytes(nifti_bytes(vols["seg"], "full", gz=False))
    assert img.shape == (240, 240, 155) and img.header.get_zooms() == (1.0, 1.0, 1.0)
    assert img.affine[1, 3] == 239.0
    canonical = np.asarray(nib.as_closest_canonical(img).dataobj)
    assert np.array_equal(canonical, vols["seg"])  # as_closest_canonical gives back the RAS grid
