"""Reading one 2D image (PNG, JPEG, DICOM) into a grayscale array (:func:`read_image`).

Grayscale (colour images by luminance). PNG/JPEG: the EXIF orientation applied (as a viewer shows it);
a transparent (alpha) image composited on black first. DICOM: ``RescaleSlope``/``RescaleIntercept``
applied, the window ``WindowCenter``/``WindowWidth`` where present (the first window when several are
given) by ``VOILUTFunction``: ``LINEAR`` (the default; ``c - 0.5 - (w - 1) / 2`` maps to 0,
``c - 0.5 + (w - 1) / 2`` to 1), ``LINEAR_EXACT`` (``c - w/2`` .. ``c + w/2``) or ``SIGMOID``
(``1 / (1 + exp(-4 (x - c) / w))``), PS3.3 C.11.2.1.2-3; without a window the image's own
minimum..maximum (a VOI LUT Sequence is not applied). ``MONOCHROME1`` inverted (so bright is dense, as
in MONOCHROME2). 8-bit PNG/JPEG: 0..255; 16-bit PNG: the image's
minimum..maximum. The result is float32 in [0, 1] (16-bit precision kept); an 8-bit file is stored as
it is (uint8). Images larger than :data:`MAX_SIDE` pixels on a side are resized (bilinear) to fit.
An image that cannot be used (unreadable, non-finite, constant) raises :class:`Unusable` with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: prepared images are at most this many pixels on a side
MAX_SIDE = 1024
DICOM_SUFFIXES = (".dcm", ".dicom")
#: bump when reading a file changes what it gives (2: EXIF orientation, transparency on black, DICOM
#: VOILUTFunction): images prepared by an earlier reader are prepared again
READER_VERSION = 2


class Unusable(Exception):
    """An image that cannot be used (unreadable, constant): a ``skipped`` manifest row with this reason.

    ``lasting`` False: the reason lies in this environment, not the file (pydicom missing), so a rerun
    tries the image again instead of reusing the skip."""

    def __init__(self, reason: str, *, lasting: bool = True) -> None:
        super().__init__(reason)
        self.lasting = lasting


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
        raise Unusable("DICOM needs pydicom: pip install 'medvlm[dicom]'", lasting=False) from exc
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
    function = str(getattr(ds, "VOILUTFunction", "") or "LINEAR").strip().upper()
    check_range(pixels)
    if center is not None and width is not None and width > 0 and function == "SIGMOID":
        out = (1.0 / (1.0 + np.exp(-4.0 * (pixels - center) / width))).astype(np.float32)  # C.11.2.1.3.1
        if out.max() == out.min():
            raise Unusable(f"constant after the sigmoid window (center {center:g}, width {width:g})")
    else:
        if center is not None and width is not None and function == "LINEAR_EXACT" and width > 0:
            lo, hi = center - width / 2, center + width / 2  # C.11.2.1.3.2
        elif center is not None and width is not None and width >= 1:  # C.11.2.1.2 (linear)
            lo = center - 0.5 - (width - 1) / 2
            hi = lo + max(width - 1, 1e-6)
        else:
            lo, hi = float(pixels.min()), float(pixels.max())
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
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)  # the orientation a viewer shows
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")  # transparent pixels: composited on black
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
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


def read_image(path: str | Path, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """One 2D image, grayscale: uint8 (an 8-bit PNG/JPEG as it is) or float32 in [0, 1] (DICOM after
    rescale, window and MONOCHROME1 inversion; 16-bit PNG), shape ``(H, W)``, at most ``max_side``
    on a side. :class:`Unusable` with the reason when it cannot be used."""
    path = Path(path)
    pixels = _read_dicom(path) if is_dicom(path) else _read_picture(path)
    return fit_size(pixels, max_side)


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
