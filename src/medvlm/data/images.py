"""2D images of a YAML task: PNG, JPEG and DICOM files listed in a CSV, prepared into WORK.

Source ``image-csv`` (``source: {kind: image-csv, csv: labels.csv}``): columns ``path,label[,patient_id]``
(others ignored); ``path`` relative to the CSV; ``label`` a class name (any case) or its index;
``patient_id`` optional (default: the image's id). An unknown label, a missing image file (or a folder),
a path that leaves the CSV's folder (``..`` above it, an absolute path elsewhere, a symbolic link to a
file or folder outside it: refused, :func:`inside`), a missing
column or a path listed twice -> :class:`~medvlm.errors.DataError` naming the CSV line.

Reading: :func:`read_image` (:mod:`medvlm.data.image_read`: grayscale; DICOM rescale, window and
MONOCHROME1; at most :data:`MAX_SIDE` pixels on a side).

Prepared (:func:`prepare_image_task`, ``medvlm prepare DATA --task FILE.yaml [--workers N|auto]``):
``WORK/images/<id>.npy`` and ``WORK/manifest.csv`` (:data:`MANIFEST_COLUMNS`, one row per image;
:mod:`medvlm.data.image_prepare`: journalled, so a rerun reuses finished images and an interrupted run
resumes). An unreadable or constant image is a ``skipped`` row with its reason, never dropped.
``split`` is the source's own cohort (MedMNIST's ``train``/``val``/``test``), empty for image-csv.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.data.image_prepare import (  # noqa: F401 - re-exported: the image API lives here
    IMAGE_DIR,
    MANIFEST_COLUMNS,
    ImagePrepareResult,
    ImageSample,
    image_path,
    prepare_samples,
    write_image_manifest,
)
from medvlm.data.image_read import (  # noqa: F401 - re-exported
    DICOM_SUFFIXES,
    MAX_SIDE,
    Unusable,
    as_unit_float,
    check_range,
    fit_size,
    is_dicom,
    plane_shape,
    read_image,
)
from medvlm.errors import DataError

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

# ------------------------------------------------------------------------------------ image-csv
def safe_id(text: str) -> str:
    """A file-safe image id from a relative path: ``"p1/a b.png"`` -> ``"p1_a_b"``.

    >>> safe_id("p10/s5/img 1.dcm")
    'p10_s5_img_1'
    """
    stem = re.sub(r"\.[A-Za-z0-9]{1,6}$", "", text.replace("\\", "/"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def inside(folder: str | Path, rel: str) -> bool:
    """Whether a path given in a data file stays inside ``folder``: ``folder / rel`` (an absolute
    ``rel`` as it is), normalised without following links, lies in ``folder`` (so ``..`` above it and
    absolute paths elsewhere are out; :func:`discover_csv` also refuses symbolic links that lead out).

    >>> [inside("/d", r) for r in ("p1/a.png", "p1/../a.png", "../a.png", "/etc/passwd", "/d/x.png")]
    [True, True, False, False, True]
    """
    import os

    base = os.path.abspath(os.path.expanduser(str(folder)))
    full = os.path.abspath(os.path.join(base, rel.replace("\\", "/")))
    return os.path.commonpath([base, full]) == base


def parse_label(value: str, classes: tuple[str, ...], where: str) -> int:
    """A class name (any case) or index -> the label; DataError naming ``where`` otherwise."""
    text = str(value).strip()
    names = [c.lower() for c in classes]
    if text.lower() in names:
        return names.index(text.lower())
    if re.fullmatch(r"\d+", text) and int(text) < len(classes):
        return int(text)
    from medvlm.registry import did_you_mean

    raise DataError(f"{where}: label {text!r} is neither a class of {list(classes)} nor an index "
                    f"0..{len(classes) - 1}." + did_you_mean(text.lower(), names))


def discover_csv(csv_path: str | Path, classes: tuple[str, ...]) -> list[ImageSample]:
    """The images a ``path,label[,patient_id]`` CSV lists (see the module docstring)."""
    import pandas as pd

    csv_path = Path(csv_path)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # BOM ok
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; expected path,label[,patient_id]")
    rels = [str(r).strip().replace("\\", "/") for r in table["path"]]
    folders = [r.rsplit("/", 1)[0] if "/" in r else "" for r in rels if r]
    common = folders[0] if folders and len(set(folders)) == 1 else ""  # images/ of every path: not in ids
    samples: list[ImageSample] = []
    seen_paths: dict[str, int] = {}
    seen_ids: set[str] = set()
    for i, row in enumerate(table.to_dict("records")):
        where = f"{csv_path}: line {i + 2}"
        rel = str(row["path"]).strip()
        if not rel:
            raise DataError(f"{where}: empty path")
        if rel in seen_paths:
            raise DataError(f"{where}: image {rel} is listed twice (first on line {seen_paths[rel]})")
        seen_paths[rel] = i + 2
        label = parse_label(row["label"], classes, where)
        if not inside(csv_path.parent, rel):
            raise DataError(f"{where}: image path {rel} leads outside the CSV's folder "
                            f"{csv_path.parent}; image paths must stay inside it")
        file = csv_path.parent / rel
        real = os.path.realpath(file)  # a symbolic link may not lead out either (its target is what is read)
        if not inside(os.path.realpath(csv_path.parent), real):
            raise DataError(f"{where}: image path {rel} is a symbolic link (or lies in a linked folder) to "
                            f"{real}, outside the CSV's folder {csv_path.parent}; copy the image in, or "
                            "keep the CSV in the folder the link points to")
        if file.is_dir():
            raise DataError(f"{where}: {rel} is a folder, not an image file ({file})")
        if not file.is_file():
            raise DataError(f"{where}: image file {rel} does not exist (looked for {file})")
        image_id = safe_id(rel.replace("\\", "/").removeprefix(f"{common}/") if common else rel)
        if image_id in seen_ids:
            image_id = f"{image_id}-{i + 2}"
        seen_ids.add(image_id)
        pid = str(row.get("patient_id", "") or "").strip() or image_id
        samples.append(ImageSample(image_id, pid, label, str(file.resolve())))
    if not samples:
        raise DataError(f"{csv_path}: no image listed")
    return samples


# -------------------------------------------------------------------------------------- prepare
def read_file_sample(sample: ImageSample, *, max_side: int = MAX_SIDE):
    """An image-csv sample's pixels (:func:`read_image` of its file); picklable for worker processes."""
    return read_image(sample.source, max_side=max_side)


def prepare_image_task(data: str | Path, out: str | Path, *, task: Task, workers: int | str = 1,
                       progress: bool = True, max_side: int = MAX_SIDE, **_options: Any):
    """``medvlm prepare DATA --out WORK --task FILE.yaml``: the task's source, prepared (module docstring;
    :func:`~medvlm.data.image_prepare.prepare_samples`: rerun-safe, ``workers`` processes or ``auto``).

    ``_options`` (the BraTS preparation's shape and margin) do not apply to 2D images."""
    from functools import partial

    from medvlm.tasks.yaml_task import source_kind, spec_source_path

    source = spec_source_path(task, data)
    if source_kind(task) == "medmnist":
        from medvlm.data.medmnist import prepare_medmnist

        return prepare_medmnist(source, out, task.classes, progress=progress)
    samples = discover_csv(source, task.classes)
    return prepare_samples(samples, out, partial(read_file_sample, max_side=max_side), workers=workers,
                           options={"source": "image-csv", "max_side": max_side}, progress=progress)


# -------------------------------------------------------------------------------------- views
def image_png(work: str | Path, image_id: str, *, image: str = "real", seed: int = 0) -> bytes:
    """The PNG a VLM is shown for one prepared image (8-bit; greyscale, or RGB for colour MedMNIST; the
    central plane of a 3D MedMNIST volume). ``image``: the control (``real``, ``none`` -> ``b""``,
    ``blank``, ``noise`` seeded by image and ``seed``)."""
    from PIL import Image

    from medvlm.data.controls import blank_pixels, derived_seed, noise_pixels
    from medvlm.data.slices import _png_bytes

    if image == "none":
        return b""
    path = image_path(work, image_id)
    try:
        pixels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"image {image_id}: cannot read {path} ({exc}); run `medvlm prepare` again") from exc
    if pixels.ndim == 3 and pixels.shape[-1] != 3:  # (D, H, W): the central plane
        pixels = pixels[pixels.shape[0] // 2]
    eight = np.floor(as_unit_float(pixels) * 255.0 + 0.5).astype(np.uint8)
    if image == "blank":
        eight = blank_pixels(eight.shape[:2])
    elif image == "noise":
        eight = noise_pixels(eight.shape[:2], derived_seed("noise", image_id, int(seed)))
    return _png_bytes(Image.fromarray(eight, mode="RGB" if eight.ndim == 3 else "L"))


def image_unit_images(work: str | Path, units: Any, *, image: str = "real", seed: int = 0
                      ) -> tuple[int, Any]:
    """The images of an image-level cohort: ``units`` (``patient_id, image_id``) -> (their number, a lazy
    iterator of ``((patient_id, image_id), png)``)."""
    from medvlm.errors import ConfigError

    if image not in ("real", "none", "blank", "noise"):
        raise ConfigError(f"--image {image}: image tasks take real, none, blank or noise")
    plan = [(str(p), str(i)) for p, i in zip(units["patient_id"], units["image_id"], strict=True)]

    def images():
        for pid, image_id in plan:
            yield (pid, image_id), image_png(work, image_id, image=image, seed=seed)

    return len(plan), images()


#: the ``orientation`` of an image task's consistency rows (a whole 2D image)
IMAGE_ORIENTATION = "image"


def consistency_images(work: str | Path, config: Any) -> list[tuple[str, str, int, int, bytes]]:
    """``medvlm consistency`` on an image task: one image per patient (``config.patients`` or the
    cohort), the patient's image number ``config.slice_index`` (default 0) in image-id order, as
    ``(patient_id, "image", number, label, png)``."""
    from medvlm.data.cohorts import load_cohort, read_manifest
    from medvlm.registry import did_you_mean

    manifest = read_manifest(work)
    ok = manifest[manifest["status"] == "ok"].sort_values("id", kind="stable")
    if config.patients:
        ids = list(dict.fromkeys(config.patients))
        known = sorted(set(manifest["patient_id"]))
        for pid in ids:
            if pid not in known:
                raise DataError(f"--patient {pid!r}: no such patient in {Path(work) / 'manifest.csv'}."
                                + did_you_mean(pid, known))
    else:
        ids = load_cohort(work, config.cohort, fold=config.fold).patient_ids
    number = int(config.slice_index or 0)
    out = []
    for pid in ids:
        rows = ok[ok["patient_id"] == pid]
        if not 0 <= number < len(rows):
            raise DataError(f"--slice {number}: patient {pid} has {len(rows)} usable image(s) "
                            f"(valid 0..{len(rows) - 1})")
        row = rows.iloc[number]
        out.append((pid, IMAGE_ORIENTATION, number, int(row["label"]),
                    image_png(work, str(row["id"]), image="real")))
    return out
