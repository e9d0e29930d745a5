"""2D images of a YAML task: PNG, JPEG and DICOM files listed in a CSV, prepared into WORK.

Source ``image-csv`` (``source: {kind: image-csv, csv: labels.csv}``): columns ``path,label[,patient_id]``
(header names in any case; others ignored, a ``split`` column with a note: ``medvlm split`` splits an
image-csv cohort by patient); separated by commas, semicolons or tabs (:mod:`medvlm.data.image_csv`);
``path`` relative to the CSV (``\\`` read as ``/``), staying inside DATA (a CSV in ``DATA/meta/`` may
list ``../images/a.png``); ``label`` a class name (any case) or its index; ``patient_id`` optional:
empty or ``NA`` (:data:`~medvlm.data.image_csv.MISSING_PATIENT`) -> the image is its own patient,
counted in a note. An unknown label, a missing image file (or a folder), a path that leaves DATA (``..``
above it, an absolute path elsewhere, a symbolic link to a file or folder outside it: refused,
:func:`inside`), a missing column, a row with more fields than the header, a path listed twice or one
file under two names (``im/x.png``, ``im/./x.png``, a link to it) -> :class:`~medvlm.errors.DataError`
naming the CSV line. A declared class without images: a note at prepare.

Image ids: :func:`safe_id` of the path (less the folder every path shares), as before, for the first
path giving that id; a later path whose id is taken (``x.png`` and ``x.jpg``; ``IM.000001`` and
``IM.000002``; ``A.png`` and ``a.png``, as ids that differ in case only collide on some disks) gets its
whole path with the extension (``x.jpg``), never an id another path has
(:func:`~medvlm.data.image_csv.unique_ids`).

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
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.data.image_prepare import (  # noqa: F401 - re-exported: the image API lives here
    IMAGE_DIR,
    MANIFEST_COLUMNS,
    ImagePrepareResult,
    ImageSample,
    class_notes,
    image_path,
    prepare_samples,
    write_image_manifest,
)
from medvlm.data.image_read import (  # noqa: F401 - re-exported
    DICOM_SUFFIXES,
    MAX_SIDE,
    READER_VERSION,
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


def discover_csv(csv_path: str | Path, classes: tuple[str, ...], *, root: str | Path | None = None,
                 notes: list[str] | None = None) -> list[ImageSample]:
    """The images a ``path,label[,patient_id]`` CSV lists (see the module docstring).

    ``root``: the folder image paths must stay in (DATA; default the CSV's folder), so a CSV in
    ``DATA/meta/`` may list ``../images/a.png``. ``notes``: where to add what was read but not used
    (a ``split`` column; patient ids that are empty or ``NA``), one line each."""
    from medvlm.data.image_csv import is_missing_patient, read_table, unique_ids

    csv_path = Path(csv_path)
    folder = csv_path.parent
    root = Path(root) if root is not None else folder
    same = os.path.abspath(root) == os.path.abspath(folder)
    where_name = "the CSV's folder" if same else "the data folder"
    table = read_table(csv_path, ("path", "label"))
    if not table:
        raise DataError(f"{csv_path}: no image listed")
    has_patient = "patient_id" in table[0][1]
    real_root = os.path.realpath(root)
    rels = [str(row["path"]).strip().replace("\\", "/") for _, row in table]
    folders = [r.rsplit("/", 1)[0] if "/" in r else "" for r in rels if r]
    common = folders[0] if folders and len(set(folders)) == 1 else ""  # images/ of every path: not in ids
    seen_paths: dict[str, int] = {}
    seen_files: dict[Any, tuple[int, str]] = {}
    kept: list[tuple[int, str, int, str, str]] = []  # line, rel, label, file, patient
    no_patient: list[int] = []
    for (line, row), rel in zip(table, rels, strict=True):
        where = f"{csv_path}: line {line}"
        if not rel:
            raise DataError(f"{where}: empty path")
        if rel in seen_paths:
            raise DataError(f"{where}: image {rel} is listed twice (first on line {seen_paths[rel]})")
        seen_paths[rel] = line
        label = parse_label(row["label"], classes, where)
        full = rel if os.path.isabs(rel) else os.path.join(os.path.abspath(folder), rel)
        if not inside(root, full):
            raise DataError(f"{where}: image path {rel} leads outside {where_name} "
                            f"{root}; image paths must stay inside it")
        file = folder / rel
        real = os.path.realpath(file)  # a symbolic link may not lead out either (its target is what is read)
        if not inside(real_root, real):
            raise DataError(f"{where}: image path {rel} is a symbolic link (or lies in a linked folder) to "
                            f"{real}, outside {where_name} {root}; copy the image in, or "
                            "keep the CSV in the folder the link points to")
        if file.is_dir():
            raise DataError(f"{where}: {rel} is a folder, not an image file ({file})")
        if not file.is_file():
            raise DataError(f"{where}: image file {rel} does not exist (looked for {file})")
        stat = file.stat()
        key = (stat.st_dev, stat.st_ino)  # ./x.png, a link, another case on a case-blind disk: one file
        if key in seen_files:
            first_line, first_rel = seen_files[key]
            raise DataError(f"{where}: image {rel} is the file {first_rel} of line {first_line} (listed "
                            "twice under two names); list each image once")
        seen_files[key] = (line, rel)
        pid = str(row.get("patient_id", "") or "")
        if is_missing_patient(pid):
            if has_patient:
                no_patient.append(line)
            pid = ""
        kept.append((line, rel, label, str(file.resolve()), pid.strip()))
    ids = unique_ids([r.removeprefix(f"{common}/") if common else r for _, r, *_ in kept],
                     [ln for ln, *_ in kept], safe_id)
    if notes is not None:
        if "split" in table[0][1]:
            notes.append(f"{csv_path}: column 'split' is ignored (an image-csv cohort is split by "
                         "patient with `medvlm split`)")
        if no_patient:
            shown = ", ".join(map(str, no_patient[:5])) + (", ..." if len(no_patient) > 5 else "")
            notes.append(f"{csv_path}: {len(no_patient)} image(s) with an empty or NA patient_id (line "
                         f"{shown}): each is its own patient")
    return [ImageSample(image_id, pid or image_id, label, file)
            for image_id, (_, _, label, file, pid) in zip(ids, kept, strict=True)]


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

        return prepare_medmnist(source, out, task.classes, progress=progress,
                                label_column=task.spec.source.label_column)
    notes: list[str] = []
    samples = discover_csv(source, task.classes, root=data, notes=notes)
    for note in [*notes, *class_notes(samples, task.classes, source)]:
        warnings.warn(note, UserWarning, stacklevel=2)
    return prepare_samples(samples, out, partial(read_file_sample, max_side=max_side), workers=workers,
                           options={"source": "image-csv", "max_side": max_side, "reader": READER_VERSION},
                           progress=progress)


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
    from medvlm.vlm.options import first_patients

    ids = first_patients(ids, getattr(config, "limit", None))  # --limit N: the first N (None: all)
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
