"""MedMNIST .npz sources (a tiny file written here): images prepared, the file's own split kept."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvlm.cli import invoke
from medvlm.data.cohorts import cohort_units, load_cohort
from medvlm.data.images import image_png
from medvlm.data.medmnist import read_npz
from medvlm.errors import DataError

TASK = """name: tiny-mnist
classes: [normal, pneumonia]
positive: pneumonia
source: {kind: medmnist, npz: tiny_28.npz}
prompt: "0 or 1? Choice:"
"""
SIZES = {"train": 6, "val": 2, "test": 3}


def tiny_npz(path, *, shape=(5, 5), drop=None, labels_shape=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1) if labels_shape is None else \
            np.zeros((n, *labels_shape), dtype=np.int64)
    arrays["train_images"][4] = 17  # a constant image: a skipped row
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return arrays


def _prepare(tmp_path, capsys, **kwargs):
    arrays = tiny_npz(tmp_path / "tiny_28.npz", **kwargs)
    (tmp_path / "task.yaml").write_text(TASK)
    task_file = str(tmp_path / "task.yaml")
    code = invoke(["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", task_file])
    return code, arrays, capsys.readouterr()


def test_the_files_own_split_is_kept(tmp_path, capsys):
    code, arrays, _ = _prepare(tmp_path, capsys)
    assert code == 0
    work = tmp_path / "w"
    manifest = pd.read_csv(work / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 11 and list(manifest["id"][:2]) == ["train-00000", "train-00001"]
    assert list(manifest["split"]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    assert (manifest["id"] == manifest["patient_id"]).all()  # each image its own patient
    skipped = manifest[manifest["status"] == "skipped"]
    assert list(skipped["id"]) == ["train-00004"]
    assert skipped["reason"].iloc[0] == "constant image (every pixel 17)"
    assert np.array_equal(np.load(work / "images" / "val-00001.npy"), arrays["val_images"][1])
    assert invoke(["split", str(work), "--folds", "5", "--test-fraction", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "own train/val/test split is kept" in err
    split = json.loads((work / "splits.json").read_text())
    assert split["test"] == ["test-00000", "test-00001", "test-00002"]
    assert split["folds"] == [{"train": [f"train-0000{i}" for i in (0, 1, 2, 3, 5)],
                               "val": ["val-00000", "val-00001"]}]
    assert split["labels"]["test-00001"] == 1 and split["unit"] == "image"
    cohort = load_cohort(work, "test")
    assert cohort.patient_ids == split["test"] and cohort.labels == [0, 1, 0]
    units = cohort_units(work, cohort, unit="image", orientations=[])
    assert list(units.columns) == ["patient_id", "image_id", "label"] and list(units["label"]) == [0, 1, 0]
    png = np.asarray(Image.open(io.BytesIO(image_png(work, "test-00002"))))
    assert np.array_equal(png, arrays["test_images"][2])  # 8-bit in, the same 8 bits shown


def test_3d_sets_show_the_central_plane(tmp_path, capsys):
    code, arrays, _ = _prepare(tmp_path, capsys, shape=(4, 6, 5))
    assert code == 0
    assert np.load(tmp_path / "w" / "images" / "test-00000.npy").shape == (4, 6, 5)
    png = np.asarray(Image.open(io.BytesIO(image_png(tmp_path / "w", "test-00000"))))
    assert np.array_equal(png, arrays["test_images"][0][2])


@pytest.mark.parametrize("kwargs, message", [
    ({"drop": "val_labels"}, r"tiny_28\.npz: not a MedMNIST file: missing key\(s\) \['val_labels'\] "
                             r"\(expected \{train,val,test\}_\{images,labels\}\)$"),
    ({"labels_shape": (3,)}, r"train_labels has shape \(6, 3\): a multi-label MedMNIST set \(one 0/1 "
                             r"column per finding\) is not one single-label task; pick one column with "
                             r"label_column: K \(0\.\.2\) in the task's source, a binary task of that "
                             r"finding$"),
])
def test_a_bad_npz_is_one_line_exit_2(tmp_path, capsys, kwargs, message):
    code, _, out = _prepare(tmp_path, capsys, **kwargs)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert re.search(message, lines[0]), lines[0]


def test_labels_beyond_the_classes_are_refused(tmp_path):
    arrays = tiny_npz(tmp_path / "x.npz")
    arrays["test_labels"][1] = 4
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(DataError, match=r"x\.npz: test_labels holds label 4, but the task has 2 classes"):
        read_npz(tmp_path / "x.npz", 2)


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _write_task(tmp_path):
    (tmp_path / "task.yaml").write_text(TASK)
    return ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(tmp_path / "task.yaml")]


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(_npy_bytes(np.zeros((3, 5, 5), dtype=np.uint8))),  # np.save output, named .npz
     r"tiny_28\.npz: not a \.npz archive \(a single \.npy array of shape \(3, 5, 5\)"),
    (lambda p: p.write_bytes(b"garbage, not a zip"), r"tiny_28\.npz: not a readable \.npz file \("),
    (lambda p: (tiny_npz(p), p.write_bytes(p.read_bytes()[:300])),
     r"tiny_28\.npz: not a readable \.npz (file|archive) \("),
    (lambda p: np.savez(p, **{**{f"{s}_images": np.zeros((2, 5, 5), np.uint8) for s in SIZES},
                              **{f"{s}_labels": np.zeros((2, 1), np.int64) for s in SIZES},
                              "train_labels": np.array([{"a": 1}, None], dtype=object)}),
     r"tiny_28\.npz: not a readable \.npz archive \(ValueError: Object arrays cannot be loaded"),
])
def test_a_file_that_is_not_a_npz_archive_is_one_line_exit_2(tmp_path, capsys, write, message):
    write(tmp_path / "tiny_28.npz")
    code = invoke(_write_task(tmp_path))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("value, shown", [(0.5, "0.5"), (np.nan, "nan"), (np.inf, "inf")])
def test_labels_that_are_not_whole_numbers_are_refused(tmp_path, value, shown):
    arrays = tiny_npz(tmp_path / "x.npz")
    labels = arrays["val_labels"].astype(np.float64)
    labels[1, 0] = value
    np.savez(tmp_path / "x.npz", **{**arrays, "val_labels": labels})
    with pytest.raises(DataError, match=rf"x\.npz: val_labels\[1\] is {shown}; labels must "
                                        r"be whole class indices 0\.\.1$"):
        read_npz(tmp_path / "x.npz", 2)
    labels[1, 0] = 1.0  # whole numbers stored as floats are fine
    np.savez(tmp_path / "x.npz", **{**arrays, "val_labels": labels})
    assert read_npz(tmp_path / "x.npz", 2)["val"][1].tolist() == [0, 1]


def test_non_finite_and_constant_float_images_are_skipped_rows(tmp_path, capsys):
    arrays = tiny_npz(tmp_path / "tiny_28.npz")
    images = arrays["test_images"].astype(np.float32)
    images[0] = np.nan
    images[1, 2, 3] = np.inf
    images[2] = 0.0
    np.savez(tmp_path / "tiny_28.npz", **{**arrays, "test_images": images})
    assert invoke(_write_task(tmp_path)) == 0
    manifest = pd.read_csv(tmp_path / "w" / "manifest.csv", dtype=str, keep_default_na=False)
    test = manifest[manifest["split"] == "test"]
    assert list(test["status"]) == ["skipped"] * 3
    assert list(test["reason"]) == ["image holds non-finite values"] * 2 + ["constant image (every pixel 0)"]
    assert "skipped test-00000: image holds non-finite values" in capsys.readouterr().err


def test_split_warns_on_the_cli_about_options_and_an_empty_test_set(tmp_path, capsys):
    arrays = tiny_npz(tmp_path / "tiny_28.npz")
    arrays["test_images"][:] = 3  # every test image constant: the test set is empty
    np.savez(tmp_path / "tiny_28.npz", **arrays)
    assert invoke(_write_task(tmp_path)) == 0
    capsys.readouterr()
    assert invoke(["split", str(tmp_path / "w"), "--folds", "2"]) == 0
    out = capsys.readouterr()
    assert ("medvlm: warning: the source's own train/val/test split is kept (one fold); --test-fraction "
            "0.15 and --folds 2 do not apply") in out.err
    assert "medvlm: warning: the source's own test set holds no usable image: test 0" in out.err
    assert out.out.startswith("test 0, folds (train/val) 5/2")
