"""MedMNIST array layouts: a channel axis of 1 dropped, other channel layouts and mixed sizes refused,
and the CNN recorded in task.json agreeing with the images prepared (2D or 3D)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medvlm.cli import invoke
from medvlm.data.medmnist import read_npz
from medvlm.errors import DataError

TASK = """name: tiny-mnist
classes: [normal, pneumonia]
positive: pneumonia
source: {kind: medmnist, npz: tiny_28.npz}
prompt: "0 or 1? Choice:"
"""
SIZES = {"train": 4, "val": 2, "test": 2}


def _npz(path, shapes):
    """A tiny MedMNIST file; ``shapes``: one image shape, or ``{split: shape}``."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        shape = shapes[split] if isinstance(shapes, dict) else shapes
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(path, **arrays)
    return arrays


def _prepare(tmp_path, capsys, shapes):
    arrays = _npz(tmp_path / "tiny_28.npz", shapes)
    (tmp_path / "task.yaml").write_text(TASK)
    task = str(tmp_path / "task.yaml")
    code = invoke(["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", task])
    return code, arrays, capsys.readouterr()


@pytest.mark.parametrize("shape", [(7, 5, 1), (1, 7, 5)])
def test_a_channel_axis_of_one_is_dropped_with_a_note(tmp_path, capsys, shape):
    code, arrays, out = _prepare(tmp_path, capsys, shape)
    assert code == 0
    image = np.load(tmp_path / "w" / "images" / "test-00001.npy")
    assert image.shape == (7, 5)
    assert np.array_equal(image, arrays["test_images"][1].reshape(7, 5))
    manifest = (tmp_path / "w" / "manifest.csv").read_text().splitlines()
    assert manifest[1].endswith(",train,7,5")  # height 7, width 5 (not 1)
    notes = [ln for ln in out.err.splitlines() if "channel axis of 1 dropped" in ln]
    assert len(notes) == 1 and notes[0].endswith("read as (7, 5) images")
    assert json.loads((tmp_path / "w" / "task.json").read_text())["cnn_model"] == "densenet2d"


@pytest.mark.parametrize("shape, message", [
    ((7, 5, 4), r"train_images has shape \(4, 7, 5, 4\): 4 channels; expected .* "
                r"\(RGBA: keep images\[\.\.\., :3\]\)$"),
    ((7, 5, 2), r"train_images has shape \(4, 7, 5, 2\): 2 channels"),
    ((3, 7, 7), r"train_images has shape \(4, 3, 7, 7\): channels first \(N, C, H, W\); expected .* "
                r"\(store np\.moveaxis\(images, 1, -1\)\)$"),
    ((2, 3, 7, 5), r"train_images has shape \(4, 2, 3, 7, 5\); expected \(N, H, W\)"),
])
def test_other_channel_layouts_are_refused_in_one_line(tmp_path, shape, message):
    _npz(tmp_path / "f.npz", shape)
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "f.npz", 2)


def test_splits_of_different_image_sizes_are_refused(tmp_path, capsys):
    code, _, out = _prepare(tmp_path, capsys, {"train": (8, 8), "val": (8, 8), "test": (6, 6)})
    assert code == 2
    assert out.err.strip() == (f"medvlm: error: {tmp_path / 'tiny_28.npz'}: train_images hold images of "
                               "shape (8, 8), test_images (6, 6); every split of a MedMNIST file has one "
                               "image size")


def test_colour_stays_colour(tmp_path, capsys):
    code, arrays, _ = _prepare(tmp_path, capsys, (6, 5, 3))
    assert code == 0
    assert np.array_equal(np.load(tmp_path / "w" / "images" / "val-00000.npy"), arrays["val_images"][0])
    assert json.loads((tmp_path / "w" / "task.json").read_text())["cnn_model"] == "densenet2d"


def test_task_json_records_the_3d_cnn_the_runtime_uses(tmp_path, capsys):
    from medvlm.tasks import work_task

    code, _, _ = _prepare(tmp_path, capsys, (4, 6, 5))
    assert code == 0
    record = json.loads((tmp_path / "w" / "task.json").read_text())
    runtime = work_task(tmp_path / "w")
    assert record["cnn_model"] == runtime.cnn_model == "small3d" and runtime.cnn_spatial_dims == 3


def test_prepared_dims_do_not_depend_on_listing_order(tmp_path, monkeypatch):
    from pathlib import Path

    from medvlm.tasks.yaml_task import _prepared_dims

    (tmp_path / "images").mkdir()
    np.save(tmp_path / "images" / "a.npy", np.zeros((4, 5), np.uint8))
    np.save(tmp_path / "images" / "b.npy", np.zeros((3, 4, 5), np.uint8))
    real_glob = Path.glob
    for order in (sorted, lambda xs: sorted(xs, reverse=True)):
        monkeypatch.setattr(Path, "glob", lambda self, pattern, _o=order: iter(_o(real_glob(self, pattern))))
        assert _prepared_dims(tmp_path) == 2  # a.npy, the first by name
