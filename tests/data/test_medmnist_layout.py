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


def _read(tmp_path, shapes, *, labels=None, notes=None, n_classes=2):
    arrays = _npz(tmp_path / "f.npz", shapes)
    if labels is not None:
        arrays = {**arrays, **labels}
        np.savez(tmp_path / "f.npz", **arrays)
    return read_npz(tmp_path / "f.npz", n_classes, notes=notes)


def test_the_channel_note_names_every_split_dropped_and_is_only_made_when_asked(tmp_path):
    notes = []
    parts = _read(tmp_path, {"train": (7, 5, 1), "val": (7, 5, 1), "test": (7, 5)}, notes=notes)
    assert notes == [f"{tmp_path / 'f.npz'}: a channel axis of 1 dropped (train (4, 7, 5, 1), "
                     "val (2, 7, 5, 1)): read as (7, 5) images"]
    assert {s: p[0].shape for s, p in parts.items()} == {"train": (4, 7, 5), "val": (2, 7, 5),
                                                         "test": (2, 7, 5)}
    assert _read(tmp_path, (7, 5, 1)) is not None  # notes=None: nothing to add to, no error
    clean = []
    _read(tmp_path, (7, 5), notes=clean)
    assert clean == []  # nothing dropped: no note


def test_the_note_gives_the_train_images_size(tmp_path):
    arrays = _npz(tmp_path / "f.npz", (7, 5, 1))
    arrays["val_images"] = np.zeros((0, 3, 3), np.uint8)  # an empty split of another size is not compared
    arrays["val_labels"] = np.zeros((0, 1), np.int64)
    np.savez(tmp_path / "f.npz", **arrays)
    notes = []
    read_npz(tmp_path / "f.npz", 2, notes=notes)
    assert notes[0].endswith("(train (4, 7, 5, 1), test (2, 7, 5, 1)): read as (7, 5) images")


def test_splits_of_different_sizes_are_named_in_the_message(tmp_path):
    path = tmp_path / "f.npz"
    with pytest.raises(DataError, match=rf"^{path}: train_images hold images of shape \(7, 5\), val_images "
                                        r"\(6, 6\); every split of a MedMNIST file has one image size$"):
        _read(tmp_path, {"train": (7, 5), "val": (6, 6), "test": (7, 5)})


def test_a_multi_label_array_of_three_axes_names_its_last_axis(tmp_path):
    labels = {f"{s}_labels": np.zeros((n, 2, 3), np.int64) for s, n in SIZES.items()}
    with pytest.raises(DataError, match=r"pick one column with label_column: K \(0\.\.2\) in the task"):
        _read(tmp_path, (7, 5), labels=labels)


@pytest.mark.parametrize(("shape", "refused"), [
    ((2, 5, 5), True), ((3, 5, 5), True), ((4, 5, 5), True),   # 2 to 4 square planes first: channels
    ((5, 5, 5), False), ((3, 5, 6), False),                    # 5 planes, or not square: a 3D set
    ((3, 3, 3), False),                                        # planes as large as the channels: colour
])
def test_channels_first_is_refused_for_two_to_four_smaller_square_planes(shape, refused):
    from pathlib import Path

    from medvlm.data.medmnist import image_layout

    images = np.zeros((2, *shape), np.uint8)
    if refused:
        with pytest.raises(DataError, match=rf"^f\.npz: train_images has shape \(2, {shape[0]}, 5, 5\): "
                                            r"channels first \(N, C, H, W\); expected .* "
                                            r"\(store np\.moveaxis\(images, 1, -1\)\)$"):
            image_layout(images, Path("f.npz"), "train")
    else:
        assert image_layout(images, Path("f.npz"), "train").shape == (2, *shape)


def test_prepare_medmnist_passes_its_options_on(tmp_path, monkeypatch):
    from medvlm.data import image_prepare
    from medvlm.data.medmnist import prepare_medmnist

    seen = {}

    def record(samples, out, load, **kwargs):
        seen.update(kwargs, n=len(samples), pixels=load(samples[0]))
        return "done"

    monkeypatch.setattr(image_prepare, "prepare_samples", record)
    arrays = _npz(tmp_path / "f.npz", (7, 5, 1))
    with pytest.warns(UserWarning, match="a channel axis of 1 dropped"):
        assert prepare_medmnist(tmp_path / "f.npz", tmp_path / "w", ("a", "b")) == "done"
    assert seen["progress"] is False  # no progress bar unless asked
    assert seen["options"] == {"source": "medmnist", "layout": "channel axis of 1 dropped"}
    assert seen["source_file"](None) == str(tmp_path / "f.npz") and seen["n"] == 8
    assert np.array_equal(seen["pixels"], arrays["train_images"][0][..., 0])
    _npz(tmp_path / "g.npz", (7, 5))
    prepare_medmnist(tmp_path / "g.npz", tmp_path / "w2", ("a", "b"), progress=True)
    assert seen["progress"] is True and seen["options"] == {"source": "medmnist"}


def test_prepare_medmnist_names_a_class_without_images_and_its_file(tmp_path, monkeypatch):
    import warnings

    from medvlm.data import image_prepare
    from medvlm.data.medmnist import prepare_medmnist

    monkeypatch.setattr(image_prepare, "prepare_samples", lambda *a, **k: None)
    _npz(tmp_path / "f.npz", (7, 5))  # labels 0 and 1 only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_medmnist(tmp_path / "f.npz", tmp_path / "w", ("a", "b", "c"))
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, f"{tmp_path / 'f.npz'}: class 'c' (label 2) has no image")]


def test_prepare_medmnist_warnings_point_at_the_caller(tmp_path, monkeypatch):
    import warnings

    from medvlm.data import image_prepare
    from medvlm.data.medmnist import prepare_medmnist

    if hasattr(prepare_medmnist, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    monkeypatch.setattr(image_prepare, "prepare_samples", lambda *a, **k: None)
    _npz(tmp_path / "f.npz", (7, 5, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_medmnist(tmp_path / "f.npz", tmp_path / "w", ("a", "b", "c"))
    assert len(caught) == 2 and {w.filename for w in caught} == {__file__}
