"""MedMNIST .npz sources read directly (medvlm.data.medmnist): exact messages, dtypes, splits, images.

Written for the mutation run of ``medmnist.py`` (benchmarks/MUTATION.md): every refusal with its whole
message, every accepted label layout and dtype, and the prepared rows and pixels of
:func:`prepare_medmnist` (called directly, no CLI).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from medvlm.data.medmnist import _reason, prepare_medmnist, read_npz
from medvlm.errors import DataError

SIZES = {"train": 3, "val": 2, "test": 2}
LABELS = {"train": [1, 0, 1], "val": [0, 1], "test": [1, 1]}


def _arrays(*, shape=(4, 5), dtype=np.uint8, labels=None):
    """A valid MedMNIST layout: images ``(n, *shape)`` of ``dtype`` (values 0..255, never constant)."""
    rng = np.random.default_rng(1)
    out = {}
    for split, n in SIZES.items():
        images = rng.integers(0, 256, (n, *shape)).astype(dtype)
        images.reshape(n, -1)[:, 0] = 0  # every image spans 0 .. its own maximum > 0
        images.reshape(n, -1)[:, 1] = 200 + np.arange(n)
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = np.array(LABELS[split], dtype=np.int64).reshape(n, 1)
    out.update(labels or {})
    return out


def _write(tmp_path, arrays, name="m.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _refused(path, n_classes=2):
    with pytest.raises(DataError) as info:
        read_npz(path, n_classes)
    return str(info.value)


# ------------------------------------------------------------------------------------- read_npz
def test_a_valid_file_gives_each_split_its_images_and_int64_labels(tmp_path):
    arrays = _arrays()
    parts = read_npz(str(_write(tmp_path, arrays)), 2)  # a str path is fine too
    assert list(parts) == ["train", "val", "test"]
    for split, (images, labels) in parts.items():
        assert np.array_equal(images, arrays[f"{split}_images"])
        assert labels.dtype == np.int64 and labels.shape == (SIZES[split],)
        assert labels.tolist() == LABELS[split]


@pytest.mark.parametrize("layout", [
    lambda v: np.array(v, dtype=np.int64),  # (N,): already flat
    lambda v: np.array(v, dtype=np.uint8).reshape(-1, 1),
    lambda v: np.array(v, dtype=bool).reshape(-1, 1),  # a binary set stored as booleans
    lambda v: np.array(v, dtype=np.float32).reshape(-1, 1),  # whole numbers as float32
    lambda v: np.array(v, dtype=np.float64),
])
def test_every_single_label_layout_gives_the_same_int64_labels(tmp_path, layout):
    path = _write(tmp_path, _arrays(labels={f"{s}_labels": layout(v) for s, v in LABELS.items()}))
    parts = read_npz(path, 2)
    for split, (_, labels) in parts.items():
        assert labels.dtype == np.int64 and labels.tolist() == LABELS[split]


def test_a_label_equal_to_the_number_of_classes_is_refused_with_the_whole_message(tmp_path):
    labels = {"val_labels": np.array([[0], [2]])}
    path = _write(tmp_path, _arrays(labels=labels))
    assert _refused(path) == f"{path}: val_labels holds label 2, but the task has 2 classes (0..1)"
    assert read_npz(path, 3)["val"][1].tolist() == [0, 2]  # fine for three classes


def test_a_negative_label_is_refused_and_the_first_bad_one_is_named(tmp_path):
    labels = {"test_labels": np.array([[-1], [5]])}
    path = _write(tmp_path, _arrays(labels=labels))
    assert _refused(path, 4) == f"{path}: test_labels holds label -1, but the task has 4 classes (0..3)"


def test_label_zero_is_a_class(tmp_path):
    zeros = {f"{s}_labels": np.zeros((n, 1), np.int64) for s, n in SIZES.items()}
    path = _write(tmp_path, _arrays(labels=zeros))
    assert all(labels.tolist() == [0] * SIZES[s] for s, (_, labels) in read_npz(path, 2).items())


def test_the_first_label_that_is_not_whole_is_named(tmp_path):
    labels = {"train_labels": np.array([[1.0], [0.25], [np.nan]])}
    path = _write(tmp_path, _arrays(labels=labels))
    assert _refused(path, 3) == (f"{path}: train_labels[1] is 0.25; labels must be whole class indices "
                                 "0..2")


def test_labels_that_are_not_numbers_are_refused(tmp_path):
    path = _write(tmp_path, _arrays(labels={"val_labels": np.array([["a"], ["b"]])}))
    assert _refused(path) == f"{path}: val_labels has dtype <U1; expected class indices"


def test_images_and_labels_of_different_lengths_are_refused(tmp_path):
    path = _write(tmp_path, _arrays(labels={"test_labels": np.array([[0], [1], [1]])}))
    assert _refused(path) == f"{path}: test_images has 2 images, test_labels 3 labels"


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 3)])  # (N, 3) or (N, 5 dims)
def test_images_of_the_wrong_rank_are_refused(tmp_path, shape):
    arrays = _arrays()
    arrays["val_images"] = np.zeros((2, *shape), np.uint8)
    path = _write(tmp_path, arrays)
    assert _refused(path) == (f"{path}: val_images has shape {(2, *shape)}; expected (N, H, W), "
                              "(N, H, W, 1), (N, H, W, 3), (N, 1, H, W) or (N, D, H, W)")


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (3, 4, 5)])  # 2D, colour, 3D
def test_images_of_rank_3_and_4_are_read(tmp_path, shape):
    arrays = _arrays(shape=shape)
    parts = read_npz(_write(tmp_path, arrays), 2)
    assert parts["test"][0].shape == (2, *shape)


def test_a_missing_key_is_named_with_the_whole_message(tmp_path):
    arrays = _arrays()
    del arrays["train_images"], arrays["test_labels"]
    path = _write(tmp_path, arrays)
    assert _refused(path) == (f"{path}: not a MedMNIST file: missing key(s) ['train_images', 'test_labels'] "
                              "(expected {train,val,test}_{images,labels})")


def test_a_single_npy_array_is_named_with_its_shape(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((3, 5, 5), np.uint8))
    assert _refused(path) == (f"{path}: not a .npz archive (a single .npy array of shape (3, 5, 5); "
                              "MedMNIST files are np.savez archives)")


def test_a_file_numpy_cannot_open_gives_numpys_reason_in_one_line(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"garbage, not a zip")
    with pytest.raises(ValueError) as numpy_says:
        np.load(path, allow_pickle=False)
    reason = " ".join(str(numpy_says.value).split())
    assert reason and len(reason) <= 200
    assert _refused(path) == f"{path}: not a readable .npz file (ValueError: {reason})"


def test_an_empty_file_gives_the_exception_name(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    message = _refused(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: not a readable \.npz file \(EOFError(: .+)?\)", message)


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    arrays = _arrays(labels={"val_labels": np.array([{"a": 1}, None], dtype=object)})
    path = _write(tmp_path, arrays)
    assert _refused(path) == (f"{path}: not a readable .npz archive (ValueError: Object arrays cannot be "
                              "loaded when allow_pickle=False)")


def test_the_reason_is_one_line_of_at_most_200_characters():
    long = ValueError("first  line\n\tsecond " + "x" * 300)
    text = _reason(long)
    assert text == "ValueError: " + ("first line second " + "x" * 300)[:200]
    assert len(text) == len("ValueError: ") + 200
    assert _reason(EOFError()) == "EOFError"  # no text: the name alone, no dangling colon
    assert _reason(OSError("disk")) == "OSError: disk"


# ------------------------------------------------------------------------------- prepare_medmnist
def _rows(result):
    return {r["id"]: r for r in result.rows}


def test_prepare_rows_name_each_image_its_split_label_and_source(tmp_path):
    arrays = _arrays()
    result = prepare_medmnist(_write(tmp_path, arrays), tmp_path / "w", ("normal", "sick"))
    rows = _rows(result)
    assert list(rows) == ["train-00000", "train-00001", "train-00002", "val-00000", "val-00001",
                          "test-00000", "test-00001"]
    for split, labels in LABELS.items():
        for i, label in enumerate(labels):
            row = rows[f"{split}-{i:05d}"]
            assert row["patient_id"] == f"{split}-{i:05d}" and row["label"] == label
            assert type(row["label"]) is int
            assert row["source"] == f"npz:{split}:{i}" and row["split"] == split
            assert row["status"] == "ok" and (row["height"], row["width"]) == (4, 5)
            saved = np.load(tmp_path / "w" / "images" / f"{split}-{i:05d}.npy")
            assert saved.dtype == np.uint8 and np.array_equal(saved, arrays[f"{split}_images"][i])


def test_prepare_refuses_a_label_beyond_the_classes(tmp_path):
    path = _write(tmp_path, _arrays(labels={"train_labels": np.array([[0], [1], [2]])}))
    message = r"train_labels holds label 2, but the task has 2 classes \(0\.\.1\)$"
    with pytest.raises(DataError, match=message):
        prepare_medmnist(path, tmp_path / "w", ("a", "b"))
    assert read_npz(path, 3)["train"][1].tolist() == [0, 1, 2]
    assert _rows(prepare_medmnist(path, tmp_path / "w", ("a", "b", "c")))["train-00002"]["label"] == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_images_that_are_not_uint8_are_mapped_to_0_1_as_float32(tmp_path, dtype):
    arrays = _arrays(shape=(2, 3), dtype=dtype)  # every split of a file has one image size
    arrays["val_images"] = np.array([[[-3, 1, 5]] * 2, [[10, 20, 50]] * 2], dtype=dtype)  # (2, 2, 3)
    prepare_medmnist(_write(tmp_path, arrays), tmp_path / "w", ("a", "b"))
    first = np.load(tmp_path / "w" / "images" / "val-00000.npy")
    second = np.load(tmp_path / "w" / "images" / "val-00001.npy")
    assert first.dtype == np.float32 and second.dtype == np.float32
    assert np.array_equal(first, np.array([[0.0, 0.5, 1.0]] * 2, dtype=np.float32))
    assert np.array_equal(second, np.array([[0.0, 0.25, 1.0]] * 2, dtype=np.float32))


def test_non_finite_and_constant_images_are_skipped_rows_the_others_kept(tmp_path):
    arrays = _arrays(dtype=np.float64)
    arrays["test_images"][0, 1, 1] = np.inf
    arrays["test_images"][1] = 7.0
    result = prepare_medmnist(_write(tmp_path, arrays), tmp_path / "w", ("a", "b"))
    rows = _rows(result)
    assert (rows["test-00000"]["status"], rows["test-00000"]["reason"]) == ("skipped",
                                                                            "image holds non-finite values")
    assert (rows["test-00001"]["status"], rows["test-00001"]["reason"]) == ("skipped",
                                                                            "constant image (every pixel 7)")
    assert result.skipped() == [("test-00000", "image holds non-finite values"),
                                ("test-00001", "constant image (every pixel 7)")]
    assert [r["status"] for r in result.rows].count("ok") == 5
    assert not (tmp_path / "w" / "images" / "test-00000.npy").exists()


def test_3d_volumes_are_kept_whole(tmp_path):
    arrays = _arrays(shape=(3, 4, 5))
    prepare_medmnist(_write(tmp_path, arrays), tmp_path / "w", ("a", "b"))
    saved = np.load(tmp_path / "w" / "images" / "test-00001.npy")
    assert saved.shape == (3, 4, 5) and np.array_equal(saved, arrays["test_images"][1])


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_a_multi_label_file_is_read_by_the_column_asked_for(tmp_path):
    """ChestMNIST-like labels (N, 3): ``label_column`` picks that column, not the first."""
    multi = {f"{s}_labels": np.array([[0, v, 1 - v] for v in LABELS[s]], dtype=np.int64)
             for s in SIZES}
    path = _write(tmp_path, _arrays(labels=multi))
    for column, want in ((1, LABELS), (2, {s: [1 - v for v in LABELS[s]] for s in SIZES})):
        parts = read_npz(path, 2, label_column=column)
        assert {s: labels.tolist() for s, (_, labels) in parts.items()} == want
    assert {s: labels.tolist() for s, (_, labels) in read_npz(path, 2, label_column=0).items()} == \
        {s: [0] * SIZES[s] for s in SIZES}
