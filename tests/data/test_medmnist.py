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
    ({"labels_shape": (3,)}, r"train_labels has shape \(6, 3\): multi-label MedMNIST sets are not a "
                             r"single-label task$"),
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
