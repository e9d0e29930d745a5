"""MedMNIST ``.npz`` files as a YAML task's source (``source: {kind: medmnist, npz: FLAG_SIZE.npz}``).

A MedMNIST file (``{flag}_{size}.npz``, e.g. ``pneumoniamnist_224.npz``) holds
``{train,val,test}_{images,labels}``: images uint8 ``(N, H, W)`` (2D), ``(N, H, W, 3)`` (colour) or
``(N, D, H, W)`` (3D sets); labels ``(N, 1)`` class indices. A channel axis of 1 (``(N, H, W, 1)``,
``(N, 1, H, W)``) is dropped with a note; 2 or 4 channels, channels first and splits of different
image sizes are refused (:func:`image_layout`). It is read with numpy alone (never the
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


def read_npz(path: str | Path, n_classes: int, *, notes: list[str] | None = None,
             label_column: int | None = None
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of a MedMNIST file; labels as int64 ``(N,)``.

    Anything but a readable ``.npz`` archive (a ``.npy`` array, a truncated or garbage file, arrays that
    need pickle: ``allow_pickle`` stays False) -> one-line :class:`DataError`; so do labels that are
    not whole numbers (``0.5``, NaN) or lie beyond the task's classes, images of a shape
    :func:`image_layout` refuses, and splits whose image sizes differ. ``notes``: where to add a line
    when a channel axis of 1 was dropped. ``label_column``: of a
    multi-label file (ChestMNIST, labels ``(N, 14)``), the one column read as the label."""
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
            return _read_parts(npz, path, n_classes, notes, label_column)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz archive ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_parts(npz, path: Path, n_classes: int, notes: list[str] | None = None,
                label_column: int | None = None
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    expected = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in expected if k not in npz.files]
    if missing:
        raise DataError(f"{path}: not a MedMNIST file: missing key(s) {missing} (expected "
                        "{train,val,test}_{images,labels})")
    out, dropped = {}, []
    for split in SPLITS:
        images, labels = npz[f"{split}_images"], np.asarray(npz[f"{split}_labels"])
        if label_column is not None:
            if labels.ndim != 2 or label_column >= labels.shape[1]:
                raise DataError(f"{path}: {split}_labels has shape {labels.shape}: no label column "
                                f"{label_column} (label_column counts from 0)")
            labels = labels[:, label_column]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(f"{path}: {split}_labels has shape {labels.shape}: a multi-label MedMNIST set "
                            f"(one 0/1 column per finding) is not one single-label task; pick one column "
                            f"with label_column: K (0..{labels.shape[-1] - 1}) in the task's source, a "
                            "binary task of that finding")
        if len(labels) != len(images):
            raise DataError(f"{path}: {split}_images has {len(images)} images, {split}_labels "
                            f"{len(labels)} labels")
        raw_shape = images.shape
        images = image_layout(images, path, split)
        if images.ndim < len(raw_shape):
            dropped.append(f"{split} {raw_shape}")
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
    if dropped and notes is not None:
        notes.append(f"{path}: a channel axis of 1 dropped ({', '.join(dropped)}): read as "
                     f"{out[SPLITS[0]][0].shape[1:]} images")
    shapes = [(split, tuple(out[split][0].shape[1:])) for split in SPLITS if len(out[split][0])]
    other = next(((k, v) for k, v in shapes if v != shapes[0][1]), None)
    if other is not None:
        raise DataError(f"{path}: {shapes[0][0]}_images hold images of shape {shapes[0][1]}, "
                        f"{other[0]}_images {other[1]}; every split of a MedMNIST file has one image size")
    return out


#: what :func:`image_layout` accepts: the shape of one split's array
LAYOUTS = "(N, H, W), (N, H, W, 1), (N, H, W, 3), (N, 1, H, W) or (N, D, H, W)"


def image_layout(images: np.ndarray, path: Path, split: str) -> np.ndarray:
    """One split's images in a prepared layout: ``(N, H, W)`` (a channel axis of 1, last or after N,
    is dropped), ``(N, H, W, 3)`` (colour) or ``(N, D, H, W)`` (3D). Refused (:class:`DataError`, one
    line): 2 or 4 channels last (e.g. RGBA: keep ``images[..., :3]``), 2 to 4 channels first
    (``(N, C, H, W)`` with square ``H == W`` images larger than ``C``: a 3D set of 2 to 4 square planes
    is taken for one and refused too; store it as ``np.moveaxis(images, 1, -1)``), any other number
    of axes.

    >>> image_layout(np.zeros((2, 5, 6, 1), np.uint8), Path("f.npz"), "train").shape
    (2, 5, 6)
    """
    shape = images.shape
    if images.ndim == 4 and shape[-1] == 1:
        return images[..., 0]
    if images.ndim == 4 and shape[1] == 1:
        return images[:, 0]
    if images.ndim == 4 and shape[-1] in (2, 4):
        raise DataError(f"{path}: {split}_images has shape {shape}: {shape[-1]} channels; expected "
                        f"{LAYOUTS} (RGBA: keep images[..., :3])")
    if images.ndim == 4 and shape[1] in (2, 3, 4) and shape[2] == shape[3] > shape[1]:
        raise DataError(f"{path}: {split}_images has shape {shape}: channels first (N, C, H, W); expected "
                        f"{LAYOUTS} (store np.moveaxis(images, 1, -1))")
    if images.ndim not in (3, 4):
        raise DataError(f"{path}: {split}_images has shape {shape}; expected {LAYOUTS}")
    return images


def prepare_medmnist(path: str | Path, out: str | Path, classes: tuple[str, ...], *, progress: bool = False,
                     label_column: int | None = None):
    """Prepare every image of a MedMNIST file into ``WORK``
    (:func:`medvlm.data.image_prepare.prepare_samples`;
    stored as uint8 when the file is, float32 in [0, 1] otherwise).

    The file is read once, here: its images need no decoding, so they are prepared in this process (no
    ``workers``). A rerun with the same file reuses every prepared image; a changed file (size or
    modification time) prepares them all again."""
    import warnings

    from medvlm.data.image_prepare import ImageSample, class_notes, prepare_samples

    notes: list[str] = []
    parts = read_npz(path, len(classes), notes=notes, label_column=label_column)
    samples, arrays = [], {}
    for split, (images, labels) in parts.items():
        for i, label in enumerate(labels):
            image_id = f"{split}-{i:05d}"
            samples.append(ImageSample(image_id, image_id, int(label), f"npz:{split}:{i}", split))
            arrays[image_id] = (images, i)

    def load(sample):
        images, i = arrays[sample.id]
        return npz_pixels(images[i])

    for note in [*notes, *class_notes(samples, classes, path)]:
        warnings.warn(note, UserWarning, stacklevel=2)
    layout = {"layout": "channel axis of 1 dropped"} if notes else {}  # images of earlier versions: again
    return prepare_samples(samples, out, load, options={"source": "medmnist", **layout},
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
