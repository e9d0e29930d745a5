"""MedMNIST ``.npz`` files as a YAML task's source (``source: {kind: medmnist, npz: FLAG_SIZE.npz}``).

A MedMNIST file (``{flag}_{size}.npz``, e.g. ``pneumoniamnist_224.npz``) holds
``{train,val,test}_{images,labels}``: images uint8 ``(N, H, W)`` (2D), ``(N, H, W, 3)`` (colour) or
``(N, D, H, W)`` (3D sets); labels ``(N, 1)`` class indices. It is read with numpy alone (never the
``medmnist`` package). Each image is its own patient (MedMNIST has no patient ids); its id is
``<split>-<index>`` (``test-00012``), and the file's own train/val/test is kept as the split
(``medvlm split`` writes it unchanged: one fold, its val the file's val). A file without those keys,
with multi-label labels or a label beyond the task's classes -> :class:`~medvlm.errors.DataError`.
A constant image is a ``skipped`` row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvlm.errors import DataError

SPLITS = ("train", "val", "test")


def read_npz(path: str | Path, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of a MedMNIST file; labels as int64 ``(N,)``."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    with npz:
        expected = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in expected if k not in npz.files]
        if missing:
            raise DataError(f"{path}: not a MedMNIST file: missing key(s) {missing} (expected "
                            "{train,val,test}_{images,labels})")
        out = {}
        for split in SPLITS:
            images, labels = npz[f"{split}_images"], np.asarray(npz[f"{split}_labels"])
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1:
                raise DataError(f"{path}: {split}_labels has shape {labels.shape}: multi-label MedMNIST "
                                "sets are not a single-label task")
            if len(labels) != len(images):
                raise DataError(f"{path}: {split}_images has {len(images)} images, {split}_labels "
                                f"{len(labels)} labels")
            if images.ndim not in (3, 4):
                raise DataError(f"{path}: {split}_images has shape {images.shape}; expected (N, H, W), "
                                "(N, H, W, 3) or (N, D, H, W)")
            bad = [int(v) for v in labels if not 0 <= int(v) < n_classes]
            if bad:
                raise DataError(f"{path}: {split}_labels holds label {bad[0]}, but the task has "
                                f"{n_classes} classes (0..{n_classes - 1})")
            out[split] = (images, labels.astype(np.int64))
    return out


def prepare_medmnist(path: str | Path, out: str | Path, classes: tuple[str, ...]):
    """Prepare every image of a MedMNIST file into ``WORK`` (:func:`medvlm.data.images.prepare_samples`;
    stored as uint8 when the file is, float32 in [0, 1] otherwise)."""
    from medvlm.data.images import ImageSample, Unusable, prepare_samples

    parts = read_npz(path, len(classes))
    samples, arrays = [], {}
    for split, (images, labels) in parts.items():
        for i, label in enumerate(labels):
            image_id = f"{split}-{i:05d}"
            samples.append(ImageSample(image_id, image_id, int(label), f"npz:{split}:{i}", split))
            arrays[image_id] = (images, i)

    def load(sample):
        images, i = arrays[sample.id]
        pixels = np.asarray(images[i])
        if pixels.max() == pixels.min():
            raise Unusable(f"constant image (every pixel {pixels.flat[0]})")
        if pixels.dtype == np.uint8:
            return pixels
        lo, hi = float(pixels.min()), float(pixels.max())
        return ((pixels.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)

    return prepare_samples(samples, out, load)
