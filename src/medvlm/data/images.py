"""2D images of a YAML task: PNG, JPEG and DICOM files listed in a CSV, prepared into WORK.

Source ``image-csv`` (``source: {kind: image-csv, csv: labels.csv}``): columns ``path,label[,patient_id]``
(others ignored); ``path`` relative to the CSV; ``label`` a class name (any case) or its index;
``patient_id`` optional (default: the image's id). An unknown label, a missing image file (or a folder),
a path that leaves the CSV's folder (``..`` above it, an absolute path elsewhere, a symbolic link to a
file or folder outside it: refused, :func:`inside`), a missing
column or a path listed twice -> :class:`~medvlm.errors.DataError` naming the CSV line.

Reading (:func:`read_image`): grayscale (colour images by luminance). DICOM: ``RescaleSlope``/
``RescaleIntercept`` applied, the window ``WindowCenter``/``WindowWidth`` where present (DICOM's linear
function: ``c - 0.5 - (w - 1) / 2`` maps to 0, ``c - 0.5 + (w - 1) / 2`` to 1; else the image's own
minimum..maximum), ``MONOCHROME1`` inverted (so bright is dense, as in MONOCHROME2).
8-bit PNG/JPEG: 0..255; 16-bit PNG: the image's minimum..maximum. The result is float32 in [0, 1]
(16-bit precision kept); an 8-bit file is stored as it is (uint8). Images larger than
:data:`MAX_SIDE` pixels on a side are resized (bilinear) to fit.

Prepared (:func:`prepare_image_task`, ``medvlm prepare DATA --task FILE.yaml``): ``WORK/images/<id>.npy``
and ``WORK/manifest.csv`` (:data:`MANIFEST_COLUMNS`, one row per image). An unreadable or constant image
is a ``skipped`` row with its reason, never dropped. ``split`` is the source's own cohort (MedMNIST's
``train``/``val``/``test``), empty for image-csv.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm._io import save_npy_atomic
from medvlm.data.prepare import PrepareResult
from medvlm.errors import DataError

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

MANIFEST_COLUMNS = ("id", "patient_id", "label", "status", "reason", "source", "split", "height", "width")
IMAGE_DIR = "images"
#: prepared images are at most this many pixels on a side
MAX_SIDE = 1024
DICOM_SUFFIXES = (".dcm", ".dicom")


class Unusable(Exception):
    """An image that cannot be used (unreadable, constant): a ``skipped`` manifest row with this reason."""


@dataclass(frozen=True)
class ImageSample:
    """One image of a source: ``id`` (file-safe), ``patient_id``, ``label`` (class index), where it comes
    from (``source``: a file path, or ``npz:split:index``) and the source's own cohort ``split``."""

    id: str
    patient_id: str
    label: int
    source: str
    split: str = ""


# ------------------------------------------------------------------------------------------ reading
def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _first(value: Any) -> float | None:
    """A DICOM number that may be multi-valued (the first value) or absent (None)."""
    if value is None:
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise Unusable("DICOM needs pydicom: pip install 'medvlm[dicom]'") from exc
    try:
        ds = pydicom.dcmread(str(path))
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds; each becomes a skipped row
        raise Unusable(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) == 3 and pixels.ndim == 3:
        pixels = pixels @ np.array([0.299, 0.587, 0.114])
    if pixels.ndim != 2:
        raise Unusable(f"not a single 2D image (pixel array of shape {pixels.shape})")
    slope = _first(getattr(ds, "RescaleSlope", None))
    intercept = _first(getattr(ds, "RescaleIntercept", None))
    pixels = pixels * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    center = _first(getattr(ds, "WindowCenter", None))
    width = _first(getattr(ds, "WindowWidth", None))
    if center is not None and width is not None and width >= 1:  # DICOM PS3.3 C.11.2.1.2 (linear)
        lo = center - 0.5 - (width - 1) / 2
        hi = lo + max(width - 1, 1e-6)
    else:
        lo, hi = float(pixels.min()), float(pixels.max())
    check_range(pixels)
    out = _to_unit(pixels, lo, hi)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out


def check_range(pixels: np.ndarray) -> None:
    """:class:`Unusable` for an image holding NaN/inf or one value everywhere (a ``skipped`` row)."""
    if not np.isfinite(pixels).all():
        raise Unusable("image holds non-finite values")
    if pixels.max() == pixels.min():
        raise Unusable(f"constant image (every pixel {pixels.flat[0]:g})")


def _to_unit(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        raise Unusable(f"empty intensity window [{lo:g}, {hi:g}]")
    out = np.clip((pixels - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if out.max() == out.min():
        raise Unusable(f"constant after windowing to [{lo:g}, {hi:g}]")
    return out


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels = np.asarray(img, dtype=np.float64)
                eight_bit = False
            else:
                pixels = np.asarray(img.convert("L"))
                eight_bit = True
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise Unusable(f"unreadable image ({exc})") from exc
    check_range(pixels.astype(np.float64))
    if eight_bit:
        return pixels.astype(np.uint8)
    return _to_unit(pixels, float(pixels.min()), float(pixels.max()))


def read_image(path: str | Path) -> np.ndarray:
    """One 2D image, grayscale: uint8 (an 8-bit PNG/JPEG as it is) or float32 in [0, 1] (DICOM after
    rescale, window and MONOCHROME1 inversion; 16-bit PNG), shape ``(H, W)``, at most
    :data:`MAX_SIDE` on a side. :class:`Unusable` with the reason when it cannot be used."""
    path = Path(path)
    pixels = _read_dicom(path) if is_dicom(path) else _read_picture(path)
    return fit_size(pixels)


def fit_size(pixels: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``pixels`` resized (bilinear, aspect kept) to at most ``max_side`` on a side; dtype kept."""
    from PIL import Image

    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize(
        size, Image.Resampling.BILINEAR))
    if pixels.dtype == np.uint8:
        return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def plane_shape(pixels: np.ndarray) -> tuple[int, int]:
    """(height, width) of a prepared image: ``(H, W)``, ``(H, W, 3)`` or ``(D, H, W)``."""
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        return int(pixels.shape[1]), int(pixels.shape[2])
    return int(pixels.shape[0]), int(pixels.shape[1])


def as_unit_float(pixels: np.ndarray) -> np.ndarray:
    """A prepared image as float32 in [0, 1] (uint8 / 255)."""
    return pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)


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
def image_path(work: str | Path, image_id: str) -> Path:
    """A prepared image: ``WORK/images/<id>.npy`` (uint8, or float32 in [0, 1]; ``(H, W)``, ``(H, W, 3)``
    or ``(D, H, W)`` for a MedMNIST 3D set)."""
    return Path(work) / IMAGE_DIR / f"{image_id}.npy"


def write_image_manifest(work: Path, rows: list[dict[str, Any]]) -> Path:
    from medvlm._io import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})
    path = work / "manifest.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def prepare_samples(samples: list[ImageSample], out: str | Path, load: Any):
    """Prepare each sample (``load(sample) -> array`` or :class:`Unusable`) into ``WORK/images/`` and
    write the manifest; returns a :class:`ImagePrepareResult`."""
    work = Path(out).expanduser()
    (work / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    rows = []
    for s in samples:
        row = {"id": s.id, "patient_id": s.patient_id, "label": s.label, "status": "ok", "reason": "",
               "source": s.source, "split": s.split}
        try:
            pixels = load(s)
        except Unusable as exc:
            row.update(status="skipped", reason=str(exc))
        else:
            save_npy_atomic(image_path(work, s.id), pixels)
            height, width = plane_shape(pixels)
            row.update(height=height, width=width)
        rows.append(row)
    write_image_manifest(work, rows)
    return ImagePrepareResult(work=work, rows=rows, n_reused=0)


def prepare_image_task(data: str | Path, out: str | Path, *, task: Task, **_options: Any):
    """``medvlm prepare DATA --out WORK --task FILE.yaml``: the task's source, prepared (module docstring).

    ``_options`` (the BraTS preparation's shape, margin, workers) do not apply to 2D images."""
    from medvlm.tasks.yaml_task import source_kind, spec_source_path

    source = spec_source_path(task, data)
    if source_kind(task) == "medmnist":
        from medvlm.data.medmnist import prepare_medmnist

        return prepare_medmnist(source, out, task.classes)
    samples = discover_csv(source, task.classes)
    return prepare_samples(samples, out, lambda s: read_image(s.source))


class ImagePrepareResult(PrepareResult):
    """:class:`~medvlm.data.prepare.PrepareResult` of an image task: rows are images."""

    def skipped(self) -> list[tuple[str, str]]:
        """``[(image id, reason), ...]`` of skipped images."""
        return [(str(r["id"]), str(r["reason"])) for r in self.rows if r["status"] == "skipped"]


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
