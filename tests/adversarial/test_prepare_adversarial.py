"""Adversarial inputs to ``medvlm prepare`` (issue 14, classes 1, 2, 7, 8, 10): stale reuse, unusable
images, non-finite volumes, a killed run, odd volumes and options. Each class is parametrised over
several instances; the oracle for reuse is a fresh prepare of the same data into a new folder."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medvlm.cli import invoke

SHAPE = ("--shape", "8", "12", "12")
N_PATIENTS = 4


@pytest.fixture(scope="module")
def base_cohort(tmp_path_factory) -> Path:
    from medvlm.data.synth import synth_cohort

    out = tmp_path_factory.mktemp("adv-synth")
    synth_cohort(out, patients=N_PATIENTS, lgg_fraction=0.25, seed=3, size="small", progress=False)
    return out


@pytest.fixture
def cohort(base_cohort, tmp_path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(base_cohort, dst)
    return dst


def _patient_file(cohort: Path, index: int, kind: str) -> Path:
    folder = sorted((cohort / "MICCAI_BraTS2020_TrainingData").glob("BraTS20_Training_*"))[index]
    return next(folder.glob(f"*_{kind}.nii*"))


def _rewrite(path: Path, fn) -> None:
    """Replace a NIfTI file's data by ``fn(data)`` (same affine)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = fn(np.asanyarray(img.dataobj))
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def _manifest(work: Path) -> dict[str, dict[str, str]]:
    with open(work / "manifest.csv", newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def _volumes(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "volumes").glob("*.npy"))}


def _prepare(cohort: Path, work: Path, *extra: str, capsys=None) -> int:
    return invoke(["prepare", str(cohort), "--out", str(work), *SHAPE, *extra])


# ------------------------------------------------------------------ 1. stale reuse
@pytest.mark.parametrize("first, second, why", [
    (("--margin", "10"), ("--margin", "0"), "options changed: margin_mm 10.0 -> 0.0"),
    (("--margin", "5"), ("--margin", "12.5"), "options changed: margin_mm 5.0 -> 12.5"),
    ((), ("--shape", "8", "12", "10"), "options changed: shape [8, 12, 12] -> [8, 12, 10]"),
])
def test_changed_options_rebuild_every_volume(cohort, tmp_path, capsys, first, second, why):
    work = tmp_path / "work"
    assert _prepare(cohort, work, *first) == 0
    capsys.readouterr()
    assert _prepare(cohort, work, *second) == 0
    out, err = capsys.readouterr()
    assert f"{N_PATIENTS} ok (0 reused)" in out
    assert f"prepared again: {N_PATIENTS} {why}" in err
    fresh = tmp_path / "fresh"
    assert _prepare(cohort, fresh, *second) == 0
    assert _volumes(work) == _volumes(fresh)  # byte-identical to a clean prepare with the new options


def _touch_newer(path: Path) -> None:
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", ["edit-image", "edit-mask", "touch", "replace-volume", "delete-volume"])
def test_changed_inputs_or_volumes_are_prepared_again(cohort, tmp_path, capsys, change):
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    pid = sorted(_manifest(work))[1]
    if change == "edit-image":
        _rewrite(_patient_file(cohort, 1, "flair"), lambda d: (d * 2).astype(d.dtype))
    elif change == "edit-mask":
        _rewrite(_patient_file(cohort, 1, "seg"), lambda d: np.where(d == 4, 1, d).astype(d.dtype))
    elif change == "touch":
        _touch_newer(_patient_file(cohort, 1, "t1"))
    elif change == "replace-volume":
        vol = work / "volumes" / f"{pid}.npy"
        np.save(vol, np.zeros((4, 8, 12, 12), np.float32))
    else:
        (work / "volumes" / f"{pid}.npy").unlink()
    capsys.readouterr()
    assert _prepare(cohort, work) == 0
    out, err = capsys.readouterr()
    assert f"{N_PATIENTS} ok ({N_PATIENTS - 1} reused)" in out
    if change != "delete-volume":
        assert "prepared again: 1 " in err
    fresh = tmp_path / "fresh"
    assert _prepare(cohort, fresh) == 0
    assert _volumes(work) == _volumes(fresh)


def test_an_unchanged_rerun_reuses_everything_and_an_old_work_folder_is_rebuilt(cohort, tmp_path, capsys):
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    before = _volumes(work)
    capsys.readouterr()
    assert _prepare(cohort, work) == 0
    assert f"{N_PATIENTS} ok ({N_PATIENTS} reused)" in capsys.readouterr().out
    (work / "prepare-journal.jsonl").unlink()  # a folder from a medvlm without the journal
    assert _prepare(cohort, work) == 0
    out, err = capsys.readouterr()
    assert "(0 reused)" in out and "no record of the options" in err
    assert _volumes(work) == before


# ------------------------------------------------------------------ 8. killed half-way
def test_prepare_killed_half_way_keeps_the_finished_patients(cohort, tmp_path, capsys):
    work = tmp_path / "work"
    script = textwrap.dedent(f"""
        import os, signal
        from medvlm.data.prepare import prepare
        done = []
        def hook(row):
            done.append(row)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        prepare({str(cohort)!r}, {str(work)!r}, shape=(8, 12, 12), progress=False, on_patient=hook)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9
    assert not (work / "manifest.csv").exists()
    assert _prepare(cohort, work) == 0
    assert f"{N_PATIENTS} ok (2 reused)" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    assert _prepare(cohort, fresh) == 0
    assert _volumes(work) == _volumes(fresh)


# ------------------------------------------------------------------ 2, 7, 10. unusable images
def _rgb(data: np.ndarray) -> np.ndarray:
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(data, 0, 255)
    return rgb


BAD_IMAGES = {
    "all-zero patient": ({k: lambda d: np.zeros_like(d) for k in ("t1", "t1ce", "t2", "flair")},
                         "all four modalities are zero everywhere"),
    "all-zero t2": ({"t2": lambda d: np.zeros_like(d)},
                    "_t2.nii.gz: constant inside the brain (every voxel 0)"),
    "constant flair": ({"flair": lambda d: np.where(d != 0, 7, 0).astype(d.dtype)},
                       "_flair.nii.gz: constant inside the brain (every voxel 7)"),
    "image as seg": ({"seg": lambda d: d * 0 + np.arange(d.size).reshape(d.shape).astype(np.float32) % 97},
                     "_seg.nii.gz: not a label mask (97 distinct values"),
    "brain as seg": ({"seg": lambda d: np.ones_like(d)},
                     "_seg.nii.gz: the mask covers 100% of the brain"),
    "fractional seg": ({"seg": lambda d: d.astype(np.float32) * 0.5},
                       "_seg.nii.gz: not a label mask (non-integer values such as 0.5)"),
    "negative seg": ({"seg": lambda d: d.astype(np.int16) - 1}, "_seg.nii.gz: not a label mask (negative"),
    "NaN in t1": ({"t1": lambda d: np.where(d > 0, np.nan, 0).astype(np.float32)},
                  "_t1.nii.gz: holds NaN or infinite values"),
    "huge t1ce": ({"t1ce": lambda d: d.astype(np.float64) * 1e300},
                  "_t1ce.nii.gz: intensities too large to normalise"),
    "RGB flair": ({"flair": _rgb}, "_flair.nii.gz: voxels are not intensities (RGB or structured type)"),
    "complex t2": ({"t2": lambda d: d.astype(np.complex64)}, "_t2.nii.gz: voxels are complex numbers"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_unusable_images_are_skipped_with_the_reason(cohort, tmp_path, capsys, case):
    edits, reason = BAD_IMAGES[case]
    for kind, fn in edits.items():
        _rewrite(_patient_file(cohort, 2, kind), fn)
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    rows = _manifest(work)
    bad = sorted(rows)[2]
    assert rows[bad]["status"] == "skipped"
    assert reason in rows[bad]["reason"]
    assert not (work / "volumes" / f"{bad}.npy").exists()
    assert sum(r["status"] == "ok" for r in rows.values()) == N_PATIENTS - 1
    assert f"skipped {bad}: " in capsys.readouterr().err


@pytest.mark.parametrize("label", [3, 5])
def test_unknown_seg_labels_are_noted_and_kept(cohort, tmp_path, label):
    _rewrite(_patient_file(cohort, 0, "seg"), lambda d: np.where(d == 2, label, d).astype(d.dtype))
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[0]]
    assert row["status"] == "ok"
    assert row["note"] == f"mask holds labels outside 0/1/2/4: {label} (counted as tumour)"


@pytest.mark.parametrize("margin", ["nan", "inf", "-inf", "-1"])
def test_bad_margins_are_one_line_errors(cohort, tmp_path, capsys, margin):
    assert invoke(["prepare", str(cohort), "--out", str(tmp_path / "w"), "--margin", margin]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--margin must be a finite number of mm >= 0" in err


# ------------------------------------------------------------------ 7. a NaN volume never gets a score
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_train_cnn_refuses_a_non_finite_volume_naming_the_patient(prepared_work, tmp_path, capsys, value):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    victim = sorted((work / "volumes").glob("*.npy"))[4]
    vol = np.load(victim)
    vol[2, 3, 4, 5] = value
    np.save(victim, vol)
    code = invoke(["train-cnn", str(work), "--out", str(tmp_path / "run"), "--epochs", "1", "--fold", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert victim.stem in err and "NaN or infinite" in err


def test_fold_ensemble_never_scores_a_nan():
    import pandas as pd

    from medvlm.predictions import fold_ensemble, predictions_metrics

    df = pd.DataFrame({"patient_id": ["a", "b", "c"] * 2, "label": [1, 0, 1] * 2,
                       "pred": [1, 0, None, 0, None, None], "score": [0.8, 0.2, np.nan, 0.4, np.nan, np.nan],
                       "fold": [0, 0, 0, 1, 1, 1]})
    out = fold_ensemble(df)
    assert out["score"].iloc[0] == pytest.approx(0.6) and out["score"].iloc[1] == pytest.approx(0.2)
    assert out["pred"].iloc[0] == 1 and out["pred"].iloc[1] == 0
    assert pd.isna(out["pred"].iloc[2]) and pd.isna(out["score"].iloc[2])  # no fold answered: abstention
    m = predictions_metrics(out)
    assert (m["n"], m["n_abstained"]) == (2, 1)


# ------------------------------------------------------------------ second pass: more instances
def _reaffine(path: Path, fn) -> None:
    """Replace a NIfTI file's affine by ``fn(affine)`` (same data)."""
    import nibabel as nib

    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), fn(img.affine.copy())), str(path))


def _shift(a):
    a[:3, 3] += 50
    return a


def _double_voxels(a):
    a[:3, :3] *= 2
    return a


def _flip_x(a):
    a[:3, 0] *= -1
    return a


@pytest.mark.parametrize("kind, fn, reason", [
    ("t1", _shift, "_t1.nii.gz: not on the grid of"),
    ("seg", _double_voxels, "_seg.nii.gz: not on the grid of"),
    ("flair", _flip_x, "_flair.nii.gz: not on the grid of"),
])
def test_files_not_on_one_grid_are_skipped_naming_the_odd_file(cohort, tmp_path, kind, fn, reason):
    _reaffine(_patient_file(cohort, 1, kind), fn)
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[1]]
    assert row["status"] == "skipped" and reason in row["reason"]


def _one_voxel(d):
    out = np.zeros_like(d)
    out[tuple(s // 2 for s in d.shape)] = 100
    return out


@pytest.mark.parametrize("kind, fn, reason", [
    ("flair", _one_voxel, "_flair.nii.gz: non-zero in only 1 voxels"),
    ("t2", lambda d: np.where(np.arange(d.size).reshape(d.shape) % 50 == 0, d, 0).astype(d.dtype),
     "_t2.nii.gz: non-zero in only"),
    ("t1", lambda d: (d.astype(np.int16) * 0 + 1).astype(np.int16) * np.int16(1),
     None),  # a constant but complete t1 is the constant-image class, covered above
])
def test_nearly_empty_modalities_are_skipped(cohort, tmp_path, kind, fn, reason):
    if reason is None:
        return
    _rewrite(_patient_file(cohort, 2, kind), fn)
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[2]]
    assert row["status"] == "skipped" and reason in row["reason"]


def test_a_volume_too_small_for_a_brain_is_skipped(cohort, tmp_path):
    import nibabel as nib

    for kind in ("t1", "t1ce", "t2", "flair", "seg"):
        path = _patient_file(cohort, 0, kind)
        data = np.full((4, 4, 4), 5, np.int16) if kind != "seg" else np.zeros((4, 4, 4), np.uint8)
        if kind == "seg":
            data[1:3, 1:3, 1:3] = 4
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[0]]
    assert row["status"] == "skipped" and "volume 4x4x4 is too small for a brain MRI" in row["reason"]


def test_an_overflowing_scale_is_skipped_naming_the_file_without_numpy_noise(cohort, tmp_path, capsys):
    import nibabel as nib

    path = _patient_file(cohort, 3, "t1")
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.int16)
    out = nib.Nifti1Image(data, img.affine)
    out.header.set_slope_inter(1e38, 0)
    nib.save(out, str(path))
    work = tmp_path / "work"
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error", RuntimeWarning)  # no numpy overflow noise
        assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[3]]
    assert row["status"] == "skipped" and row["reason"].startswith(path.name)


@pytest.mark.parametrize("rows, message", [
    (["HGG,BraTS20_Training_001", "GBM,BraTS20_Training_001"], "has two grades (HGG and GBM)"),
    (["GBM,BraTS20_Training_001", "LGG,BraTS20_Training_001"], "has two grades (GBM and LGG)"),
])
def test_an_odd_grade_beside_a_real_one_is_a_conflict(tmp_path, rows, message):
    from medvlm.data.brats import MAPPING_HEADER, read_name_mapping
    from medvlm.errors import DataError

    path = tmp_path / "name_mapping.csv"
    path.write_text(",".join(MAPPING_HEADER) + "\n" + "".join(
        f"{g},,,,,{p}\n" for g, p in (r.split(",") for r in rows)))
    with pytest.raises(DataError, match=re.escape(message)):
        read_name_mapping(path)


def test_an_odd_grade_alone_is_skipped_naming_it(cohort, tmp_path):
    mapping = cohort / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv"
    text = mapping.read_text().splitlines()
    text[1] = "GBM" + text[1][3:]
    mapping.write_text("\n".join(text) + "\n")
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    row = _manifest(work)[sorted(_manifest(work))[0]]
    assert row["status"] == "skipped" and "grade 'GBM'" in row["reason"] and "not HGG or LGG" in row["reason"]


@pytest.mark.parametrize("shape", [("4000", "4000", "4000"), ("600", "600", "600")])
def test_a_shape_larger_than_any_mri_is_refused_at_once(cohort, tmp_path, capsys, shape):
    assert invoke(["prepare", str(cohort), "--out", str(tmp_path / "w"), "--shape", *shape]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "voxels per channel is more than any MRI holds" in err


def test_a_split_made_before_labels_changed_is_refused(tmp_path, capsys):
    from medvlm.data.synth import synth_cohort

    cohort = tmp_path / "cohort8"
    synth_cohort(cohort, patients=8, lgg_fraction=0.5, seed=3, size="small", progress=False)
    work = tmp_path / "work"
    assert _prepare(cohort, work) == 0
    assert invoke(["split", str(work), "--test-fraction", "0.25", "--folds", "2"]) == 0
    import json

    split = json.loads((work / "splits.json").read_text())
    victim = split["test"][0]
    mapping = cohort / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv"
    lines = mapping.read_text().splitlines()
    lines = [("LGG" + ln[3:] if ln.startswith("HGG") else "HGG" + ln[3:]) if ln.endswith(victim) else ln
             for ln in lines]
    mapping.write_text("\n".join(lines) + "\n")
    assert _prepare(cohort, work) == 0
    capsys.readouterr()
    from medvlm.data.cohorts import load_cohort
    from medvlm.errors import DataError

    with pytest.raises(DataError, match=f"made when patient {victim} had label .* rerun `medvlm split"):
        load_cohort(work, "test")
    assert invoke(["split", str(work), "--test-fraction", "0.25", "--folds", "2"]) == 0
    assert len(load_cohort(work, "test")) >= 1  # a fresh split is accepted


@pytest.mark.parametrize("lr", ["inf", "nan", "-1", "0"])
def test_a_learning_rate_that_cannot_train_is_refused(prepared_work, tmp_path, capsys, lr):
    code = invoke(["train-cnn", str(prepared_work), "--out", str(tmp_path / "run"), "--epochs", "1",
                   "--fold", "0", "--lr", lr])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "lr" in err


def test_diverged_training_stops_with_one_line_and_no_metrics(prepared_work, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    for path in (work / "volumes").glob("*.npy"):  # finite, but far beyond what float32 arithmetic survives
        vol = np.load(path)
        np.save(path, np.where(vol > 0, 3e38, -3e38).astype(np.float32))
    code = invoke(["train-cnn", str(work), "--out", str(tmp_path / "run"), "--epochs", "2", "--fold", "0",
                   "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "training diverged" in err[-1] and err[-1].startswith("medvlm: error: ")
    assert not (tmp_path / "run" / "metrics.json").exists()  # no accuracy from a NaN model
