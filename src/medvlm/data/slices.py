"""2D slices for a VLM: rendered from the *original* NIfTI volumes, as the study showed them.

Each source volume is reoriented with ``nibabel.as_closest_canonical`` (RAS+: x left->right,
y posterior->anterior, z inferior->superior). Axial slices are taken along z, coronal along y, sagittal
along x; slice indices are canonical voxel indices (the manifest's ``tumour_*`` columns use the same).

Rendering (deterministic: same volume, same PNG bytes):

- intensities windowed by robust percentiles (0.5 and 99.5 of the non-zero voxels of the *whole*
  volume, so all slices of a patient share one window) and mapped linearly to 8-bit;
- radiological display orientation: axial and coronal with the patient's right on the left of the
  image, anterior (axial) / superior (coronal, sagittal) at the top; sagittal with anterior on the left;
- non-square voxels resampled to square pixels;
- one modality -> one greyscale PNG; several (``modalities=("flair", "t1ce", "t2", "t1")``) -> one
  labelled 2x2 montage, in the order given, empty cells black.

Controls (``eval-vlm --image``, ``--artifact``; :mod:`medvlm.data.controls`): no image, a blank or
noise image of the slice's size, the tumour filled with the brain's median, or a TorchIO MRI artifact
applied to each volume before slicing.

Slice selection: ``"tumour"`` (the study: every slice whose plane holds tumour, from the manifest's
inclusive ``tumour_*_min..max``), ``"all"`` (every slice along the axis), ``"central:K"`` (the K
slices at the centre of the tumour range; the whole range when it has fewer than K).
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvlm.data.controls import (
    Artifact,
    apply_artifact,
    blank_pixels,
    check_controls,
    derived_seed,
    fill_tumour,
    noise_pixels,
)
from medvlm.errors import ConfigError, DataError
from medvlm.registry import check_choice

ORIENTATIONS = ("axial", "coronal", "sagittal")
MODALITY_NAMES = ("t1", "t1ce", "t2", "flair")
MODALITY_LABELS = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
#: canonical axis each orientation slices along (0 = x, 1 = y, 2 = z)
AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
_AXIS_LETTER = {0: "x", 1: "y", 2: "z"}
WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class SliceImage:
    """One rendered slice: patient, orientation, canonical slice index and the PNG bytes (8-bit)."""

    patient_id: str
    orientation: str
    slice_index: int
    png: bytes


def parse_selection(selection: str) -> tuple[str, int | None]:
    """``"all"``, ``"tumour"`` or ``"central:K"`` (K >= 1) -> (kind, K).

    >>> parse_selection("central:5")
    ('central', 5)
    >>> parse_selection("tumour")
    ('tumour', None)
    """
    match = re.fullmatch(r"central:(\d+)", selection)
    if match:
        k = int(match.group(1))
        if k < 1:
            raise ConfigError(f"--slices {selection!r}: K must be at least 1")
        return "central", k
    if selection in ("all", "tumour"):
        return selection, None
    raise ConfigError(f"--slices must be one of 'all', 'tumour', 'central:K'. Got {selection!r} instead.")


def parse_modalities(modalities: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"flair,t1ce"`` or a sequence -> validated tuple (1 to 4 distinct names of t1, t1ce, t2, flair)."""
    raw = modalities.split(",") if isinstance(modalities, str) else modalities
    items = [m.strip().lower() for m in raw]
    items = [m for m in items if m]
    if not items or len(items) > 4 or len(set(items)) != len(items):
        raise ConfigError(f"--modalities: give 1 to 4 distinct names of {list(MODALITY_NAMES)}; got {items}")
    for m in items:
        check_choice("modalities", m, MODALITY_NAMES)
    return tuple(items)


# --------------------------------------------------------------------------- volume loading (cached)
_CACHE: OrderedDict[str, tuple[np.ndarray, tuple[float, float, float], tuple[float, float]]] = OrderedDict()
_CACHE_SIZE = 8


def _field(row: Any, name: str) -> Any:
    try:
        value = row[name]
    except (KeyError, IndexError) as exc:
        raise DataError(f"manifest row of patient {_pid(row)}: no column {name!r}") from exc
    return value


def _pid(row: Any) -> str:
    try:
        return str(row["patient_id"])
    except (KeyError, IndexError):
        return "?"


def load_canonical(path: str | Path, patient_id: str = "?") -> tuple[np.ndarray, tuple[float, float, float],
                                                                     tuple[float, float]]:
    """Canonical (RAS+) float32 array ``(X, Y, Z)``, voxel sizes (mm) and the robust window (lo, hi).

    The last few volumes are kept in memory (three orientations read each file once).
    """
    key = str(path)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    import zlib

    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.as_closest_canonical(nib.load(key))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, ValueError, EOFError, ImageFileError, zlib.error) as exc:  # not NIfTI, corrupt gzip
        raise DataError(f"patient {patient_id}: cannot read {key} ({exc})") from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"patient {patient_id}: {key} is not a 3D volume (shape {data.shape})")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    entry = (data, zooms, robust_window(data))  # type: ignore[assignment]
    _CACHE[key] = entry  # type: ignore[assignment]
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return entry  # type: ignore[return-value]


def robust_window(data: np.ndarray) -> tuple[float, float]:
    """(lo, hi): the 0.5 and 99.5 percentiles of the finite non-zero voxels ((0, 0) without any)."""
    nonzero = data[np.isfinite(data) & (data != 0)]
    if not nonzero.size:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(nonzero, WINDOW_PERCENTILES))
    return lo, hi


_ARTIFACT_CACHE: OrderedDict[tuple[str, str, int], tuple[np.ndarray, tuple[float, float, float],
                                                         tuple[float, float]]] = OrderedDict()


def load_view(path: str | Path, patient_id: str = "?", *, artifact: Artifact | None = None,
              seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float]]:
    """:func:`load_canonical`, with ``artifact`` applied to the volume (and the window taken from the
    corrupted volume); the draw is seeded by patient and ``seed`` (:mod:`medvlm.data.controls`)."""
    entry = load_canonical(path, patient_id)
    if artifact is None or artifact.severity == 0:
        return entry
    key = (str(path), artifact.spec, int(seed))
    if key in _ARTIFACT_CACHE:
        _ARTIFACT_CACHE.move_to_end(key)
        return _ARTIFACT_CACHE[key]
    data, zooms, _ = entry
    corrupted = apply_artifact(data, zooms, artifact,
                               seed=derived_seed("artifact", artifact.kind, patient_id, int(seed)))
    out = (corrupted, zooms, robust_window(corrupted))
    _ARTIFACT_CACHE[key] = out
    while len(_ARTIFACT_CACHE) > _CACHE_SIZE:
        _ARTIFACT_CACHE.popitem(last=False)
    return out


def window_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to 0..255 (clipped; NaN -> 0); a flat window gives zeros.

    >>> window_to_uint8(np.array([0.0, 5.0, 10.0, 20.0]), 0.0, 10.0).tolist()
    [0, 128, 255, 255]
    """
    values = np.nan_to_num(values.astype(np.float64), nan=lo)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def display_slice(volume: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """The 2D plane ``index`` of a canonical ``(X, Y, Z)`` volume in radiological display orientation.

    Rows run top to bottom, columns left to right on screen: axial ``(Y, X)`` with anterior at the top
    and the patient's right on the left; coronal ``(Z, X)`` superior at the top, right on the left;
    sagittal ``(Z, Y)`` superior at the top, anterior on the left.

    >>> vol = np.zeros((3, 4, 5)); vol[2, 3, 1] = 1  # x=2 (rightmost), y=3 (most anterior), z=1
    >>> np.argwhere(display_slice(vol, "axial", 1)).tolist()  # top row, leftmost column
    [[0, 0]]
    """
    axis = AXIS[orientation]
    plane = np.take(volume, index, axis=axis)  # axial (X, Y), coronal (X, Z), sagittal (Y, Z)
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def _square_pixels(image: Any, orientation: str, zooms: tuple[float, float, float]) -> Any:
    from PIL import Image

    axes = [a for a in range(3) if a != AXIS[orientation]]  # (col axis, row axis) in display
    col_mm, row_mm = zooms[axes[0]], zooms[axes[1]]
    if abs(col_mm - row_mm) < 1e-3 or min(col_mm, row_mm) <= 0:
        return image
    base = min(col_mm, row_mm)
    width = max(1, round(image.width * col_mm / base))
    height = max(1, round(image.height * row_mm / base))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _montage(tiles: list[Any], labels: list[str]) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    width = max(t.width for t in tiles)
    height = max(t.height for t in tiles)
    canvas = Image.new("L", (2 * width, 2 * height), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        x0, y0 = (i % 2) * width, (i // 2) * height
        canvas.paste(tile, (x0 + (width - tile.width) // 2, y0 + (height - tile.height) // 2))
        draw.rectangle((x0 + 2, y0 + 2, x0 + 8 + 7 * len(label), y0 + 16), fill=0)
        draw.text((x0 + 5, y0 + 4), label, fill=255, font=font)
    return canvas


def _extent(row: Any, axis: int) -> tuple[int, int] | None:
    letter = _AXIS_LETTER[axis]
    lo, hi = _field(row, f"tumour_{letter}_min"), _field(row, f"tumour_{letter}_max")
    if any(v is None or str(v).strip() in ("", "nan", "<NA>") for v in (lo, hi)):
        return None
    try:
        return int(float(lo)), int(float(hi))
    except ValueError as exc:
        raise DataError(f"manifest row of patient {_pid(row)}: tumour_{letter}_min/max not integers") from exc


def slice_indices(row: Any, orientation: str, selection: str, size: int) -> list[int]:
    """Canonical slice indices to render for one patient/orientation (``size`` = slices along the axis)."""
    kind, k = parse_selection(selection)
    if kind == "all":
        return list(range(size))
    extent = _extent(row, AXIS[orientation])
    if extent is None:
        raise DataError(f"patient {_pid(row)}: manifest has no tumour extent along "
                        f"{_AXIS_LETTER[AXIS[orientation]]} (empty mask?); use --slices all")
    lo, hi = max(0, extent[0]), min(size - 1, extent[1])
    if hi < lo:
        raise DataError(f"patient {_pid(row)}: tumour extent {extent} outside the volume (size {size})")
    indices = list(range(lo, hi + 1))
    if kind == "central" and k is not None and len(indices) > k:
        start = (len(indices) - k) // 2
        indices = indices[start:start + k]
    return indices


def patient_slices(row: Any, orientation: str, *, selection: str = "tumour",
                   modalities: tuple[str, ...] | list[str] | str = ("flair",),
                   indices: list[int] | None = None, image: str = "real",
                   artifact: Artifact | str | None = None, seed: int = 0) -> list[SliceImage]:
    """Render one patient's slices along ``orientation`` (``axial``, ``coronal`` or ``sagittal``).

    ``row``: a manifest row (dict or pandas Series) with absolute NIfTI paths in ``t1..flair`` (and
    ``seg`` for ``image="tumour-masked"``) and the inclusive canonical tumour extents
    ``tumour_{x,y,z}_{min,max}``. Returns :class:`SliceImage` objects in increasing slice index
    (``indices``: exactly these, in this order, instead of ``selection``), each an 8-bit PNG
    (greyscale; a labelled 2x2 montage for several modalities).

    ``image``: the control shown instead of the real slice (:mod:`medvlm.data.controls`: ``real``,
    ``none`` -- empty ``png`` bytes --, ``blank``, ``noise``, ``tumour-masked``); ``artifact``
    (``"motion:0.5"`` or an :class:`~medvlm.data.controls.Artifact`) corrupts each volume before
    slicing; ``seed`` seeds the noise and the artifact.
    """
    from PIL import Image

    check_choice("orientation", orientation, ORIENTATIONS)
    image, parsed = check_controls(image, artifact.spec if isinstance(artifact, Artifact) else artifact)
    mods = parse_modalities(modalities)
    pid = _pid(row)
    volumes = []
    for m in mods:
        path = _field(row, m)
        if not path or not Path(str(path)).is_file():
            raise DataError(f"patient {pid}: {m} file {path!r} does not exist")
        volumes.append(load_view(path, pid, artifact=parsed, seed=seed))
    shapes = {v[0].shape for v in volumes}
    if len(shapes) != 1:
        raise DataError(f"patient {pid}: modalities {list(mods)} have different shapes {sorted(shapes)}")
    mask = _tumour_mask(row, pid, volumes[0][0].shape) if image == "tumour-masked" else None
    size = volumes[0][0].shape[AXIS[orientation]]
    out = []
    for index in (slice_indices(row, orientation, selection, size) if indices is None else indices):
        if not 0 <= index < size:
            raise DataError(f"patient {pid}: {orientation} slice {index} is outside 0..{size - 1}")
        if image == "none":
            out.append(SliceImage(pid, orientation, index, b""))
            continue
        tiles = []
        for data, zooms, (lo, hi) in volumes:
            pixels = window_to_uint8(display_slice(data, orientation, index), lo, hi)
            if mask is not None:
                pixels = fill_tumour(pixels, display_slice(mask, orientation, index))
            tiles.append(_square_pixels(Image.fromarray(pixels, mode="L"), orientation, zooms))
        picture = tiles[0] if len(tiles) == 1 else _montage(tiles, [MODALITY_LABELS[m] for m in mods])
        if image == "blank":
            picture = Image.fromarray(blank_pixels((picture.height, picture.width)), mode="L")
        elif image == "noise":
            noise_seed = derived_seed("noise", pid, orientation, int(index), int(seed))
            picture = Image.fromarray(noise_pixels((picture.height, picture.width), noise_seed), mode="L")
        out.append(SliceImage(pid, orientation, index, _png_bytes(picture)))
    return out


def _tumour_mask(row: Any, pid: str, shape: tuple[int, ...]) -> np.ndarray:
    """The canonical tumour mask (``seg > 0``) of the manifest's ``seg`` file, checked against ``shape``."""
    path = _field(row, "seg")
    if not path or not Path(str(path)).is_file():
        raise DataError(f"patient {pid}: seg file {path!r} does not exist (--image tumour-masked needs the "
                        "tumour mask)")
    seg = load_canonical(path, pid)[0]
    if seg.shape != shape:
        raise DataError(f"patient {pid}: seg {path} has shape {seg.shape}, the image {shape}")
    return seg > 0


def count_slices(row: Any, orientation: str, *, selection: str = "tumour") -> int | None:
    """Number of slices :func:`patient_slices` will render, from the manifest alone when it can tell
    (``tumour``/``central``: from the extents, clipped to ``orig_shape`` when present); None for ``all``
    without ``orig_shape``."""
    kind, k = parse_selection(selection)
    axis = AXIS[orientation]
    size = None
    try:
        shape = str(row["orig_shape"])
        size = int(shape.split("x")[axis])
    except (KeyError, IndexError, ValueError):
        size = None
    if kind == "all":
        return size
    extent = _extent(row, axis)
    if extent is None:
        return 0
    lo, hi = max(0, extent[0]), extent[1] if size is None else min(size - 1, extent[1])
    n = max(0, hi - lo + 1)
    return min(n, k) if kind == "central" and k is not None else n


def unit_images(manifest: Any, units: Any, *, orientations: list[str], selection: str,
                modalities: tuple[str, ...], unit: str, image: str = "real",
                artifact: Artifact | str | None = None, seed: int = 0) -> tuple[int | None, Any]:
    """The images a VLM is asked about for a cohort, and their number (None when unknown up front).

    ``units``: the cohort's prediction units (a DataFrame: ``patient_id`` for the patient unit, plus
    ``orientation, slice_index`` for the slice unit); ``manifest`` indexed by ``patient_id``. Patient
    unit: every ``selection`` slice of each patient in each orientation. Slice unit: exactly the
    units' slices. Yields ``((patient_id, orientation, slice_index), png)`` lazily. ``image``,
    ``artifact``, ``seed``: the image control (:func:`patient_slices`; ``png`` is ``b""`` for ``none``).
    """
    if unit == "slice":
        groups = units.groupby(["patient_id", "orientation"], sort=False)["slice_index"]
        plan = [(pid, o, [int(i) for i in idx]) for (pid, o), idx in groups]
        total: int | None = len(units)
    else:
        plan = [(pid, o, None) for pid in units["patient_id"] for o in orientations]
        counts = [count_slices(manifest.loc[pid], o, selection=selection) for pid, o, _ in plan]
        total = None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]

    def images():
        for pid, orientation, indices in plan:
            for s in patient_slices(manifest.loc[pid], orientation, selection=selection,
                                    modalities=modalities, indices=indices, image=image,
                                    artifact=artifact, seed=seed):
                yield (pid, orientation, s.slice_index), s.png

    return total, images()
