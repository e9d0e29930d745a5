"""``prepare``: discovery of the real layout and its quirks, bad inputs, preprocessing, manifest, rerun."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvlm.cli import main
from medvlm.data.brats import TRAINING_FOLDER, discover, discover_patient, file_kind, find_training_folder
from medvlm.data.cohorts import read_manifest
from medvlm.data.prepare import MANIFEST_COLUMNS, prepare
from medvlm.errors import ConfigError, DataError

SHAPE = (8, 12, 12)


@pytest.fixture
def cohort(synth_dir, tmp_path) -> Path:
    """A writable copy of the first 4 patients of ``synth_dir`` (training folder returned)."""
    src = synth_dir / TRAINING_FOLDER
    dst = tmp_path / "brats" / TRAINING_FOLDER
    dst.mkdir(parents=True)
    for i in range(1, 5):
        shutil.copytree(src / f"BraTS20_Training_{i:03d}", dst / f"BraTS20_Training_{i:03d}")
    lines = (src / "name_mapping.csv").read_text().splitlines()
    (dst / "name_mapping.csv").write_text("\n".join(lines[:5]) + "\n")
    return dst


def _file(cohort: Path, n: int, kind: str) -> Path:
    pid = f"BraTS20_Training_{n:03d}"
    return cohort / pid / f"{pid}_{kind}.nii.gz"


def _rows(work: Path) -> dict[str, dict[str, str]]:
    with open(work / "manifest.csv", newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def _gunzip(path: Path) -> Path:
    out = path.with_name(path.name[:-3])
    out.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return out


# --- discovery -----------------------------------------------------------------------------------------


def test_file_kind():
    assert [file_kind(Path(f"P_{k}.nii")) for k in ("t1", "t1ce", "t2", "flair", "seg")] == [
        "t1", "t1ce", "t2", "flair", "seg"]
    assert file_kind(Path("P_T1CE.NII.GZ")) == "t1ce"
    assert file_kind(Path("W39_1998.09.19_Segm.nii")) is None


def test_data_is_training_folder_or_its_parent(cohort):
    assert find_training_folder(cohort) == cohort.resolve()
    assert find_training_folder(cohort.parent) == cohort.resolve()
    _, mapping, patients = discover(cohort.parent)
    assert [p.patient_id for p in patients] == [f"BraTS20_Training_{i:03d}" for i in range(1, 5)]
    assert set(mapping.values()) <= {"HGG", "LGG"}


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_bad_data_path_raises(tmp_path, kind):
    target = tmp_path / "data"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty":
        (target / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=str(target)):
        prepare(target, tmp_path / "work", shape=SHAPE, progress=False)


def test_missing_mapping_raises(cohort, tmp_path):
    (cohort / "name_mapping.csv").unlink()
    with pytest.raises(DataError, match="name_mapping.csv"):
        prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)


def test_mapping_without_columns_raises(cohort, tmp_path):
    (cohort / "name_mapping.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="BraTS_2020_subject_ID"):
        prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)


def test_bad_options(cohort, tmp_path):
    with pytest.raises(ConfigError, match="--shape"):
        prepare(cohort, tmp_path / "w", shape=(8, 0, 8), progress=False)
    with pytest.raises(ConfigError, match="--workers"):
        prepare(cohort, tmp_path / "w", shape=SHAPE, workers=0, progress=False)


# --- quirks of the real release ---------------------------------------------------------------------


def test_uncompressed_nii_and_patient_355_mask_name(cohort, tmp_path):
    """The widely used copy ships .nii; patient 355's mask is W39_1998.09.19_Segm.nii."""
    for kind in ("t1", "t1ce", "t2", "flair", "seg"):
        _gunzip(_file(cohort, 2, kind))
    seg = _gunzip(_file(cohort, 3, "seg"))
    seg.rename(seg.with_name("W39_1998.09.19_Segm.nii"))
    p3 = discover_patient(cohort / "BraTS20_Training_003")
    assert p3.files["seg"].name == "W39_1998.09.19_Segm.nii" and not p3.problems
    result = prepare(cohort.parent, tmp_path / "work", shape=SHAPE, progress=False)
    rows = _rows(tmp_path / "work")
    assert result.n_ok == 4 and result.n_skipped == 0
    assert rows["BraTS20_Training_002"]["t1"].endswith("BraTS20_Training_002_t1.nii")
    assert rows["BraTS20_Training_003"]["note"] == "mask taken from non-standard file W39_1998.09.19_Segm.nii"
    assert rows["BraTS20_Training_003"]["seg"].endswith("W39_1998.09.19_Segm.nii")
    assert rows["BraTS20_Training_001"]["note"] == ""


def test_ambiguous_mask_candidates_skip(cohort, tmp_path):
    seg = _file(cohort, 1, "seg")
    shutil.copy(seg, seg.with_name("mask_a.nii.gz"))
    seg.rename(seg.with_name("mask_b.nii.gz"))
    prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)
    row = _rows(tmp_path / "work")["BraTS20_Training_001"]
    assert row["status"] == "skipped"
    assert "ambiguous" in row["reason"]
    assert "mask_a.nii.gz" in row["reason"] and "mask_b.nii.gz" in row["reason"]


# --- every bad-input kind becomes a skipped row naming the file and the problem ------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _shape_mismatch(path: Path) -> None:
    img = nib.load(path)
    arr = np.asarray(img.dataobj)[:, :, :-3]
    nib.save(nib.Nifti1Image(arr, img.affine), path)


def _empty_mask(path: Path) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a nifti file at all")


@pytest.mark.parametrize(
    ("kind", "damage", "expected"),
    [
        ("flair", lambda p: p.unlink(), "missing flair file"),
        ("t2", _truncate, "BraTS20_Training_002_t2.nii.gz: unreadable or truncated"),
        ("t1ce", _garbage, "BraTS20_Training_002_t1ce.nii.gz: unreadable or truncated"),
        ("t1", _shape_mismatch, "BraTS20_Training_002_t1.nii.gz: shape mismatch (48x48x28 but"),
        ("seg", _empty_mask, "BraTS20_Training_002_seg.nii.gz: empty mask"),
        ("seg", lambda p: p.unlink(), "missing seg file"),
    ],
)
def test_bad_patient_is_skipped_with_reason(cohort, tmp_path, kind, damage, expected):
    damage(_file(cohort, 2, kind))
    result = prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)
    rows = _rows(tmp_path / "work")
    assert len(rows) == 4 and result.n_ok == 3 and result.n_skipped == 1
    row = rows["BraTS20_Training_002"]
    assert row["status"] == "skipped"
    assert expected in row["reason"]
    assert row["volume"] == "" and not (tmp_path / "work" / "volumes" / "BraTS20_Training_002.npy").exists()


def test_truncated_uncompressed_nii_is_skipped(cohort, tmp_path):
    _truncate(_gunzip(_file(cohort, 4, "t1")))
    prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)
    row = _rows(tmp_path / "work")["BraTS20_Training_004"]
    assert row["status"] == "skipped"
    assert "BraTS20_Training_004_t1.nii: unreadable or truncated" in row["reason"]


def test_empty_patient_folder_is_skipped_not_dropped(cohort, tmp_path):
    for f in (cohort / "BraTS20_Training_004").iterdir():
        f.unlink()
    prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)
    row = _rows(tmp_path / "work")["BraTS20_Training_004"]
    assert row["status"] == "skipped"
    assert "missing t1 file" in row["reason"] and "missing seg file" in row["reason"]


def test_no_grade_is_skipped(cohort, tmp_path):
    text = (cohort / "name_mapping.csv").read_text().splitlines()
    (cohort / "name_mapping.csv").write_text("\n".join(t for t in text if "Training_003" not in t) + "\n")
    prepare(cohort, tmp_path / "work", shape=SHAPE, progress=False)
    row = _rows(tmp_path / "work")["BraTS20_Training_003"]
    assert row["status"] == "skipped" and row["grade"] == "" and row["label"] == ""
    assert "no grade for BraTS20_Training_003 in name_mapping.csv" in row["reason"]


# --- preprocessing and manifest ------------------------------------------------------------------------


def test_manifest_columns_and_volumes(prepared_work, synth_dir):
    header = (prepared_work / "manifest.csv").read_text().splitlines()[0]
    assert header == ",".join(MANIFEST_COLUMNS)
    manifest = read_manifest(prepared_work)
    assert len(manifest) == 12 and (manifest["status"] == "ok").all()
    with open(synth_dir / TRAINING_FOLDER / "name_mapping.csv", newline="") as fh:
        mapping = {r[5]: r[0] for r in csv.reader(fh)}
    for _, row in manifest.iterrows():
        assert row["grade"] == mapping[row["patient_id"]]
        assert int(row["label"]) == {"LGG": 0, "HGG": 1}[row["grade"]]
        assert row["volume"] == f"volumes/{row['patient_id']}.npy"
        assert row["orig_shape"] == "48x48x31"
        assert Path(row["t1"]).is_absolute() and Path(row["seg"]).is_file()
        vol = np.load(prepared_work / row["volume"], mmap_mode="r")
        assert vol.shape == (4, 24, 32, 32) and vol.dtype == np.float32


def test_tumour_extent_and_crop_in_canonical_indices(prepared_work):
    manifest = read_manifest(prepared_work)
    for _, row in manifest.iterrows():
        seg = np.asarray(nib.as_closest_canonical(nib.load(row["seg"])).dataobj)
        idx = np.nonzero(seg > 0)
        for axis, ax_idx in zip("xyz", idx, strict=True):
            lo, hi = int(row[f"tumour_{axis}_min"]), int(row[f"tumour_{axis}_max"])
            assert (lo, hi) == (ax_idx.min(), ax_idx.max())
            clo, chi = int(row[f"crop_{axis}_min"]), int(row[f"crop_{axis}_max"])
            n = seg.shape["xyz".index(axis)]
            assert clo == max(lo - 2, 0) and chi == min(hi + 2, n - 1)  # 10 mm margin at 5 mm voxels


def test_zscore_crop_and_resize_match_a_reference(prepared_work):
    """Rebuild one volume by hand (scipy zoom as reference) and compare with the cached one."""
    manifest = read_manifest(prepared_work)
    row = manifest.iloc[0]
    arrays = [np.asarray(nib.as_closest_canonical(nib.load(row[k])).dataobj).astype(np.float64)
              for k in ("t1", "t1ce", "t2", "flair")]
    brain = np.any([a != 0 for a in arrays], axis=0)
    box = tuple(slice(int(row[f"crop_{a}_min"]), int(row[f"crop_{a}_max"]) + 1) for a in "xyz")
    vol = np.load(prepared_work / row["volume"])
    for c, a in enumerate(arrays):
        z = np.where(brain, (a - a[brain].mean()) / a[brain].std(), 0)[box].transpose(2, 1, 0)
        # mean over the crop is preserved approximately by trilinear resizing
        assert abs(vol[c].mean() - z.mean()) < 0.15
        assert np.corrcoef(vol[c].ravel(), _resize_ref(z, vol.shape[1:]).ravel())[0, 1] > 0.9


def _resize_ref(z: np.ndarray, shape) -> np.ndarray:
    from scipy import ndimage

    return ndimage.zoom(z, [s / n for s, n in zip(shape, z.shape, strict=True)], order=1, grid_mode=True,
                        mode="nearest")


def test_rerun_reuses_and_retries(cohort, tmp_path):
    work = tmp_path / "work"
    _file(cohort, 1, "flair").rename(tmp_path / "flair_aside.nii.gz")
    first = prepare(cohort, work, shape=SHAPE, progress=False)
    assert first.n_ok == 3 and first.n_skipped == 1 and first.n_reused == 0
    mtime = (work / "volumes" / "BraTS20_Training_002.npy").stat().st_mtime_ns
    (tmp_path / "flair_aside.nii.gz").rename(_file(cohort, 1, "flair"))
    second = prepare(cohort, work, shape=SHAPE, progress=False)
    assert second.n_ok == 4 and second.n_reused == 3
    assert (work / "volumes" / "BraTS20_Training_002.npy").stat().st_mtime_ns == mtime
    third = prepare(cohort, work, shape=(6, 6, 6), progress=False)  # another shape: redone
    assert third.n_reused == 0
    assert np.load(work / "volumes" / "BraTS20_Training_002.npy").shape == (4, 6, 6, 6)
    assert not list((work / "volumes").glob(".*.tmp"))  # atomic writes leave no temporary file


@pytest.mark.slow
def test_workers_give_the_same_volumes(cohort, tmp_path):
    one = prepare(cohort, tmp_path / "w1", shape=SHAPE, progress=False)
    two = prepare(cohort, tmp_path / "w2", shape=SHAPE, workers=2, progress=False)
    assert [r["patient_id"] for r in one.rows] == [r["patient_id"] for r in two.rows]
    assert one.rows == two.rows
    for r in one.rows:
        assert np.array_equal(np.load(tmp_path / "w1" / r["volume"]), np.load(tmp_path / "w2" / r["volume"]))


# --- CLI -----------------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_prepare_bad_path_exit_2(tmp_path, capsys):
    assert _run(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medvlm: error: ") and "nowhere" in err[0]


def test_cli_prepare_reports_skips(cohort, tmp_path, capsys):
    _file(cohort, 4, "t2").unlink()
    code = _run(["prepare", str(cohort.parent), "--out", str(tmp_path / "w"), "--shape", "8", "12", "12"])
    assert code == 0
    captured = capsys.readouterr()
    assert "3 ok" in captured.out and "1 skipped" in captured.out
    assert "skipped BraTS20_Training_004: missing t2 file" in captured.err


# --- building blocks (fast paths of process_patient) ----------------------------------------------------


@pytest.mark.parametrize("src", [(5, 7, 9), (12, 3, 20), (95, 128, 128), (1, 1, 4)])
def test_resize_matches_torch_trilinear(src):
    import torch

    from medvlm.data.volume_ops import resize_trilinear as _resize

    vol = np.random.default_rng(0).standard_normal((2, *src)).astype(np.float32)
    shape = (95, 128, 128) if src == (95, 128, 128) else (8, 6, 11)
    ref = torch.nn.functional.interpolate(torch.from_numpy(vol)[None], size=shape, mode="trilinear",
                                          align_corners=False)[0].numpy()
    got = _resize(vol, shape)
    assert got.shape == (2, *shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    assert got is not vol and not np.shares_memory(got, _resize(vol, shape, scratch=True))


def test_brain_mask_and_stats_match_the_plain_definitions():
    from medvlm.data.volume_ops import brain_mask
    from medvlm.data.volume_ops import brain_stats as _brain_stats

    rng = np.random.default_rng(1)
    chans = [np.where(rng.random((6, 7, 8)) < 0.5, 0, rng.integers(-300, 3000, (6, 7, 8))).astype(np.int16)
             for _ in range(3)]
    chans.append(chans[0].astype(np.uint8))  # mixed integer dtypes
    plain = np.any([c != 0 for c in chans], axis=0)
    assert np.array_equal(brain_mask(chans), plain)
    floats = [c.astype(np.float32) for c in chans]
    assert np.array_equal(brain_mask(floats), plain)
    for c in chans[:3]:
        mean, std = _brain_stats(c, plain)
        vals = c[plain].astype(np.float64)
        assert mean == vals.mean() and std == pytest.approx(vals.std(), rel=1e-14)
        assert _brain_stats(c.astype(np.float32), plain) == pytest.approx((mean, std), rel=1e-12)
    assert _brain_stats(chans[0], np.zeros_like(plain)) == (0.0, 0.0)


def test_two_grades_for_one_patient_is_an_error_naming_the_patient(tmp_path):
    from medvlm.data.brats import read_name_mapping
    from medvlm.errors import DataError

    path = tmp_path / "name_mapping.csv"
    path.write_text("Grade,BraTS_2020_subject_ID\nHGG,BraTS20_Training_001\nLGG,BraTS20_Training_001\n")
    with pytest.raises(DataError, match="patient BraTS20_Training_001 has two grades"):
        read_name_mapping(path)
    path.write_text("Grade,BraTS_2020_subject_ID\nHGG,BraTS20_Training_001\nHGG,BraTS20_Training_001\n")
    assert read_name_mapping(path) == {"BraTS20_Training_001": "HGG"}  # a repeated, agreeing row is fine
