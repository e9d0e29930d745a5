"""MedMNIST ``.npz`` files as a YAML task's source (``source: {kind: medmnist, npz: FLAG_SIZE.npz}``).

A MedMNIST file (``{flag}_{size}.npz``, e.g. ``pneumoniamnist_224.npz``) holds
``{train,val,test}_{images,labels}``: images uint8 ``(N, H, W)`` (2D), ``(N, H, W, 3)`` (colour) or
``(N, D, H, W)`` (3D sets); labels ``(N, 1)`` class indices. It is read with numpy alone (never the
``medmnist`` package). Each image is its own patient (MedMNIST has no patient ids); its id is
``<split>-<index>`` (``test-00012``), and the file's own train/val/test is kept as the split
(``medvlm split`` writes it unchanged: one fold, its val the file's val). A file without those keys,
with multi-label labels or a label beyond the task's classes -> :class:`~medvlm.errors.DataError`.
An image holding NaN/inf or a constant image is a ``skipped`` row
(:func:`medvlm.data.image_read.check_range`, as for image-csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvlm.errors import DataError

SPLITS = ("train", "val", "test")


def read_npz(path: str | Path, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of a MedMNIST file; labels as int64 ``(N,)``.

    Anything but a readable ``.npz`` archive (a ``.npy`` array, a truncated or garbage file, arrays that
    need pickle: ``allow_pickle`` stays False) -> one-line :class:`DataError`; so do labels that are
    not whole numbers (``0.5``, NaN) or lie beyond the task's classes."""
    import zipfile

    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_reason(exc)})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a .npz archive (a single .npy array of shape "
                        f"{getattr(npz, 'shape', '?')}; MedMNIST files are np.savez archives)")
    with npz:
        try:
            return _read_parts(npz, path, n_classes)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz archive ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_parts(npz, path: Path, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
        if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)):
            if not np.issubdtype(labels.dtype, np.floating):
                raise DataError(f"{path}: {split}_labels has dtype {labels.dtype}; expected class indices")
            whole = np.isfinite(labels) & (labels == np.round(labels))
            if not whole.all():
                i = int(np.flatnonzero(~whole)[0])
                raise DataError(f"{path}: {split}_labels[{i}] is {float(labels[i])}; labels must be whole "
                                f"class indices 0..{n_classes - 1}")
        bad = [int(v) for v in labels if not 0 <= int(v) < n_classes]
        if bad:
            raise DataError(f"{path}: {split}_labels holds label {bad[0]}, but the task has "
                            f"{n_classes} classes (0..{n_classes - 1})")
        out[split] = (images, labels.astype(np.int64))
    return out


def prepare_medmnist(path: str | Path, out: str | Path, classes: tuple[str, ...], *, progress: bool = False):
    """Prepare every image of a MedMNIST file into ``WORK``
    (:func:`medvlm.data.image_prepare.prepare_samples`;
    stored as uint8 when the file is, float32 in [0, 1] otherwise).

    The file is read once, here: its images need no decoding, so they are prepared in this process (no
    ``workers``). A rerun with the same file reuses every prepared image; a changed file (size or
    modification time) prepares them all again."""
    from medvlm.data.image_prepare import ImageSample, prepare_samples

    parts = read_npz(path, len(classes))
    samples, arrays = [], {}
    for split, (images, labels) in parts.items():
        for i, label in enumerate(labels):
            image_id = f"{split}-{i:05d}"
            samples.append(ImageSample(image_id, image_id, int(label), f"npz:{split}:{i}", split))
            arrays[image_id] = (images, i)

    def load(sample):
        images, i = arrays[sample.id]
        return npz_pixels(images[i])

    return prepare_samples(samples, out, load, options={"source": "medmnist"},
                           source_file=lambda _sample: str(Path(path)), progress=progress)


def npz_pixels(image: np.ndarray) -> np.ndarray:
    """One MedMNIST image as prepared: uint8 as it is, anything else float32 in [0, 1] (its own
    minimum..maximum); :class:`~medvlm.data.image_read.Unusable` when non-finite or constant."""
    from medvlm.data.image_read import check_range

    pixels = np.asarray(image)
    check_range(pixels.astype(np.float64))  # non-finite or constant: a skipped row
    if pixels.dtype == np.uint8:
        return pixels
    lo, hi = float(pixels.min()), float(pixels.max())
    return ((pixels.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
