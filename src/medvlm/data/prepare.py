"""``medvlm prepare``: BraTS NIfTI files -> ``WORK/manifest.csv`` + ``WORK/volumes/<id>.npy``.

Per patient (as in the study): reorient every file to RAS+ (``nibabel.as_closest_canonical``), z-score
each modality inside the brain (voxels non-zero in any modality; background 0), crop the tumour's
bounding box (seg > 0) plus a margin, resize trilinearly to ``shape`` (D, H, W) = (z, y, x) and stack
t1, t1ce, t2, flair -> float32 ``(4, D, H, W)``.

A patient that cannot be used is never dropped: it gets a ``skipped`` manifest row whose ``reason``
names the file and the problem. Rerunning reuses patients whose volume already exists with the same
shape and the same source files. Labels: LGG = 0, HGG = 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvlm._io import save_npy_atomic, write_json_atomic, write_text_atomic
from medvlm.data.brats import FILE_KINDS, GRADE_LABELS, MODALITIES, PatientFiles, discover
from medvlm.errors import ConfigError, DataError

MANIFEST_COLUMNS = (
    "patient_id", "grade", "label", "status", "reason", "note",
    "t1", "t1ce", "t2", "flair", "seg", "orig_shape",
    "tumour_x_min", "tumour_x_max", "tumour_y_min", "tumour_y_max", "tumour_z_min", "tumour_z_max",
    "crop_x_min", "crop_x_max", "crop_y_min", "crop_y_max", "crop_z_min", "crop_z_max",
    "volume",
)
DEFAULT_SHAPE = (95, 128, 128)
DEFAULT_MARGIN_MM = 10.0


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare`: the manifest rows (in ``patient_id`` order) and counts."""

    work: Path
    rows: list[dict[str, str]]
    n_reused: int

    @property
    def n_ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def n_skipped(self) -> int:
        return sum(r["status"] == "skipped" for r in self.rows)

    def skipped(self) -> list[tuple[str, str]]:
        """``[(patient_id, reason), ...]`` of skipped patients."""
        return [(r["patient_id"], r["reason"]) for r in self.rows if r["status"] == "skipped"]


class _Skip(Exception):
    """A patient-level problem: becomes a ``skipped`` row (not an error of the whole run)."""


def _load(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Canonical (RAS+) array in its stored dtype and voxel sizes; _Skip naming the file on failure."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as exc:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error, ValueError)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Skip(f"{path.name}: unreadable or truncated file ({msg[:160]})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _Skip(f"{path.name}: expected a 3D volume, got shape {'x'.join(map(str, data.shape))}")
    return data, zooms  # type: ignore[return-value]


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1D linear resize ``n_in -> n_out`` (align_corners=False).

    The same arithmetic as torch's ``interpolate(mode="linear")`` on CPU (float32 scale, source index
    ``scale * (i + 0.5) - 0.5`` rounded once, clamped at 0), so the weights are bit-identical to torch's.
    Returns ``(i0, i1, w0, w1)``: output ``j`` is ``w0[j] * x[i0[j]] + w1[j] * x[i1[j]]``.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: Sequence[int]) -> np.ndarray:
    """A float32 work array of ``shape``, reused across calls in this process (fresh multi-MB arrays
    cost page faults that, in a loop over patients, take longer than the arithmetic on them)."""
    n = math.prod(shape)
    buf = _SCRATCH.get(name)
    if buf is None or buf.size < n:
        buf = _SCRATCH[name] = np.empty(n, np.float32)
    return buf[:n].reshape(shape)


def _resize(volume: np.ndarray, shape: Sequence[int], *, scratch: bool = False) -> np.ndarray:
    """Trilinear resize of ``(C, D, H, W)`` to ``(C, *shape)`` (align_corners=False), float32.

    Separable: one linear pass per axis (shrinking axes first, so later passes touch fewer voxels).
    Equal to ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` up to float32
    rounding (a few ulp) without importing torch, so prepare's worker processes start in well under a
    second. With ``scratch`` the result lives in a reused work array, valid until the next call.
    """
    out = np.ascontiguousarray(volume, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    flip = False
    for axis in sorted(range(3), key=lambda a: shape[a] / out.shape[a + 1]):
        n_in, n_out = out.shape[axis + 1], shape[axis]
        if n_in == n_out:
            continue
        i0, i1, w0, w1 = _linear_taps(n_in, n_out)
        new_shape = list(out.shape)
        new_shape[axis + 1] = n_out
        bshape = [1, 1, 1, 1]
        bshape[axis + 1] = n_out
        lo = _scratch("resize_a" if flip else "resize_b", new_shape)
        hi = _scratch("resize_hi", new_shape)
        np.take(out, i0, axis=axis + 1, out=lo, mode="clip")  # indices are in range; "clip" avoids a copy
        lo *= w0.reshape(bshape)
        np.take(out, i1, axis=axis + 1, out=hi, mode="clip")
        hi *= w1.reshape(bshape)
        lo += hi
        out, flip = lo, not flip
    return out if scratch else out.copy()


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(min, max)`` index per axis of the non-zero voxels of ``mask``.

    >>> m = np.zeros((4, 5, 6)); m[1, 2:4, 5] = 1
    >>> bounding_box(m)
    [(1, 1), (2, 3), (5, 5)]
    """
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        out.append((int(idx[0]), int(idx[-1])))
    return out


def crop_box(
    bbox: list[tuple[int, int]], shape: Sequence[int], margin: Sequence[int]
) -> list[tuple[int, int]]:
    """``bbox`` widened by ``margin`` voxels per axis and clipped to ``shape`` (inclusive bounds).

    >>> crop_box([(1, 1), (2, 3), (5, 5)], (4, 5, 6), (2, 2, 2))
    [(0, 3), (0, 4), (3, 5)]
    """
    return [(max(lo - m, 0), min(hi + m, n - 1)) for (lo, hi), n, m in zip(bbox, shape, margin, strict=True)]


def brain_mask(channels: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels non-zero in any of ``channels`` (all of one shape), as a bool array of that shape.

    Integer data takes one bitwise OR per channel (a voxel is non-zero in some channel exactly when the
    OR of the channels is non-zero), cheaper than a comparison per channel.

    >>> brain_mask([np.array([0, 2, 0]), np.array([0, 0, -1])]).tolist()
    [False, True, True]
    """
    dtype = np.result_type(*channels)
    if all(c.dtype.kind in "iu" for c in channels) and dtype.kind in "iu":
        acc = np.bitwise_or(channels[0], channels[1], dtype=dtype) if len(channels) > 1 \
            else np.array(channels[0], dtype=dtype)
        for c in channels[2:]:
            np.bitwise_or(acc, c, out=acc)
        return acc != 0
    brain = np.asarray(channels[0]) != 0
    for c in channels[1:]:
        brain |= c != 0
    return brain


def _brain_stats(channel: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of ``channel`` over ``brain``; ``(0, 0)`` for an empty brain.

    Integer data of up to 16 bits: exact integer sums (correctly rounded mean and variance); otherwise
    float64 as numpy's ``mean``/``std``.
    """
    values = channel[brain]
    n = int(values.size)
    if n == 0:
        return 0.0, 0.0
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        s1 = int(values.sum(dtype=np.int64))
        s2 = int(np.einsum("i,i->", values, values, dtype=np.int64))  # < n * 2**32: no overflow
        return s1 / n, math.sqrt((n * s2 - s1 * s1) / (n * n))
    values = values.astype(np.float64)
    return float(values.mean()), float(values.std())


def zscore_in_brain(channel: np.ndarray, brain: np.ndarray, *, region: tuple | None = None) -> np.ndarray:
    """``(x - mean) / std`` with mean and std over all brain voxels; 0 outside the brain (float32).

    With ``region`` (a tuple of slices) only that part is returned (statistics still over the whole
    brain), which saves normalising voxels that the crop throws away.

    >>> z = zscore_in_brain(np.array([0., 1., 3.]), np.array([False, True, True]))
    >>> z.tolist()
    [0.0, -1.0, 1.0]
    """
    mean, std = _brain_stats(channel, brain)
    if region is not None:
        channel, brain = channel[region], brain[region]
    out = (channel.astype(np.float32) - np.float32(mean)) / np.float32(std if std > 0 else 1.0)
    out[~brain] = 0.0
    return out


Loaded = tuple[dict[str, np.ndarray], dict[str, tuple[float, float, float]]]


def load_patient(patient: PatientFiles, grade: str | None) -> Loaded | _Skip:
    """Decode the five files of one patient (canonical arrays and voxel sizes), or the reason to skip.

    Returns the problem instead of raising it, so that the decode can run ahead in a thread (see
    :func:`prepare`) and the skip is reported in order.
    """
    try:
        if patient.problems:
            raise _Skip("; ".join(patient.problems))
        if grade is None:
            raise _Skip(f"no grade for {patient.patient_id} in name_mapping.csv (HGG or LGG expected)")
        arrays: dict[str, np.ndarray] = {}
        zooms: dict[str, tuple[float, float, float]] = {}
        for kind in FILE_KINDS:
            arrays[kind], zooms[kind] = _load(patient.files[kind])
    except _Skip as exc:
        return exc
    return arrays, zooms


def process_patient(
    patient: PatientFiles, grade: str | None, work: Path, shape: Sequence[int], margin_mm: float,
    *, loaded: Loaded | _Skip | None = None, crop: str = "tumour",
) -> dict[str, str]:
    """Prepare one patient: write ``work/volumes/<id>.npy`` and return its manifest row (ok or skipped).

    ``loaded``: the result of :func:`load_patient` when the files were decoded ahead of time.
    ``crop``: ``tumour`` (the tumour's box plus ``margin_mm``) or ``brain`` (the whole brain's box).
    """
    row = _base_row(patient, grade)
    try:
        if loaded is None:
            loaded = load_patient(patient, grade)
        if isinstance(loaded, _Skip):
            raise loaded
        arrays, zooms = loaded
        shapes = [arrays[k].shape for k in FILE_KINDS]
        ref = max(shapes, key=shapes.count)  # the majority shape; the odd file out is named
        for kind in FILE_KINDS:
            if arrays[kind].shape != ref:
                other = next(k for k in FILE_KINDS if arrays[k].shape == ref)
                raise _Skip(
                    f"{patient.files[kind].name}: shape mismatch ({'x'.join(map(str, arrays[kind].shape))} "
                    f"but {patient.files[other].name} is {'x'.join(map(str, ref))})"
                )
        # NIfTI data is Fortran-ordered: the transposed canonical views, axes (z, y, x), are C-ordered, so
        # the mask, the brain gathers and the crop walk memory in order (and the crop comes out in the
        # volume's axis order). Bounding boxes are therefore (z, y, x) here; the manifest keeps x, y, z.
        arrays = {k: a.T for k, a in arrays.items()}
        seg = np.asarray(arrays.pop("seg"))
        if seg.dtype.kind == "f" and not np.isfinite(seg).all():
            raise _Skip(f"{patient.files['seg'].name}: mask holds NaN or infinite values")
        mask = seg > 0
        if not mask.any():
            raise _Skip(f"{patient.files['seg'].name}: empty mask (no voxel > 0)")
        for kind in MODALITIES:
            data = arrays[kind]
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise _Skip(f"{patient.files[kind].name}: holds NaN or infinite values")
        brain = brain_mask([arrays[k] for k in MODALITIES])
        tumour_zyx = bounding_box(mask)
        margin_zyx = [int(np.ceil(margin_mm / max(z, 1e-6))) for z in reversed(zooms["seg"])]
        crop_zyx = (crop_box(tumour_zyx, mask.shape, margin_zyx) if crop == "tumour"
                    else bounding_box(brain | mask))
        sl = tuple(slice(lo, hi + 1) for lo, hi in crop_zyx)
        channels = [zscore_in_brain(arrays[kind], brain, region=sl) for kind in MODALITIES]
        volume = _resize(np.stack(channels), shape, scratch=True)  # (4, z, y, x), saved at once
        save_npy_atomic(work / "volumes" / f"{patient.patient_id}.npy", volume)
        tumour, box = tumour_zyx[::-1], crop_zyx[::-1]  # x, y, z
    except _Skip as exc:
        row["status"], row["reason"] = "skipped", str(exc)
        return row
    row.update(status="ok", orig_shape="x".join(map(str, ref)), volume=f"volumes/{patient.patient_id}.npy")
    for axis, (lo, hi), (clo, chi) in zip("xyz", tumour, box, strict=True):
        row.update({f"tumour_{axis}_min": str(lo), f"tumour_{axis}_max": str(hi),
                    f"crop_{axis}_min": str(clo), f"crop_{axis}_max": str(chi)})
    return row


def _base_row(patient: PatientFiles, grade: str | None) -> dict[str, str]:
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row["patient_id"] = patient.patient_id
    if grade is not None:
        row["grade"], row["label"] = grade, str(GRADE_LABELS[grade])
    row["note"] = patient.note
    for kind in FILE_KINDS:
        if kind in patient.files:
            row[kind] = str(patient.files[kind])
    return row


def _worker(args: tuple) -> dict[str, str]:
    """``args``: (patient, grade, work, shape, margin_mm, crop)."""
    *head, crop = args
    return process_patient(*head, crop=crop)


def _cpu_count() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)  # the CPUs this process may run on
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _pool_context():
    """``forkserver`` where available (workers fork from a server that imported this module once, so
    each starts in milliseconds and no worker inherits the parent's threads), else ``spawn``."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["medvlm.data.prepare"])  # ignored once the server runs
        return ctx
    return mp.get_context("spawn")  # pragma: no cover - Windows


def _previous_rows(work: Path) -> dict[str, dict[str, str]]:
    import csv

    path = work / "manifest.csv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as fh:
            return {r["patient_id"]: r for r in csv.DictReader(fh) if r.get("patient_id")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def _reusable(prev: dict[str, str] | None, fresh: dict[str, str], work: Path, shape: Sequence[int]) -> bool:
    if prev is None or prev.get("status") != "ok":
        return False
    if any(prev.get(k, "") != fresh[k] for k in (*FILE_KINDS, "grade", "label", "note")):
        return False
    path = work / "volumes" / f"{fresh['patient_id']}.npy"
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return tuple(arr.shape) == (4, *tuple(int(s) for s in shape)) and arr.dtype == np.float32


def write_manifest(work: Path, rows: list[dict[str, str]]) -> Path:
    """Write ``WORK/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`) atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in MANIFEST_COLUMNS})
    path = work / "manifest.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def prepare(
    data: str | Path,
    out: str | Path,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    workers: int = 1,
    margin_mm: float = DEFAULT_MARGIN_MM,
    crop: str = "tumour",
    progress: bool = True,
    on_patient: Callable[[dict[str, str]], None] | None = None,
) -> PrepareResult:
    """Prepare every patient of the BraTS training folder ``data`` (or its parent) into ``out``.

    Writes ``out/manifest.csv`` (one row per patient folder, ok or skipped with a reason),
    ``out/volumes/<patient_id>.npy`` (float32 ``(4, *shape)``, channels t1, t1ce, t2, flair, axes
    z, y, x of the canonical crop) and ``out/prepare.json`` (parameters and counts). ``crop``:
    ``tumour`` (the study: the tumour's box plus ``margin_mm``) or ``brain`` (the whole brain).
    Raises :class:`DataError` for a bad DATA path or no patient, :class:`ConfigError` for bad options.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--shape takes three positive integers D H W, got {list(shape)}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if margin_mm < 0:
        raise ConfigError(f"--margin must be >= 0 mm, got {margin_mm}")
    if crop not in ("tumour", "brain"):
        raise ConfigError(f"crop must be 'tumour' or 'brain', got {crop!r}")
    training, mapping, patients = discover(data)
    if not patients:  # pragma: no cover - discover raises first
        raise DataError(f"{data}: no patient folder found")
    work = Path(out).expanduser().resolve()
    if work.exists() and not work.is_dir():
        raise DataError(f"{work}: exists and is not a folder (--out is the work folder)")
    (work / "volumes").mkdir(parents=True, exist_ok=True)
    previous = _previous_rows(work)

    rows: dict[str, dict[str, str]] = {}
    todo: list[tuple] = []
    for patient in patients:
        grade = mapping.get(patient.patient_id)
        fresh = _base_row(patient, grade)
        prev = previous.get(patient.patient_id)
        if not patient.problems and grade is not None and _reusable(prev, fresh, work, shape):
            rows[patient.patient_id] = {k: prev.get(k, "") for k in MANIFEST_COLUMNS}  # type: ignore[union-attr]
        else:
            todo.append((patient, grade, work, shape, margin_mm, crop))
    n_reused = len(rows)

    from medvlm.data.synth import _progress

    with _progress(progress) as bar:
        task = bar.add_task("prepare", total=len(patients), completed=n_reused)
        n_procs = min(workers, len(todo), _cpu_count())  # more processes than CPUs only contend
        if n_procs <= 1:
            # One process: a thread decodes patient k+1 (zlib and file reads release the GIL) while
            # this one normalises, crops, resizes and saves patient k.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medvlm-decode") as reader:
                ahead = reader.submit(load_patient, todo[0][0], todo[0][1]) if todo else None
                for i, args in enumerate(todo):
                    loaded = ahead.result()  # type: ignore[union-attr]
                    ahead = reader.submit(load_patient, *todo[i + 1][:2]) if i + 1 < len(todo) else None
                    row = process_patient(*args[:5], crop=crop, loaded=loaded)
                    rows[row["patient_id"]] = row
                    if on_patient:
                        on_patient(row)
                    bar.advance(task)
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=n_procs, mp_context=_pool_context()) as pool:
                futures = [pool.submit(_worker, args) for args in todo]
                for fut in as_completed(futures):
                    row = fut.result()
                    rows[row["patient_id"]] = row
                    if on_patient:
                        on_patient(row)
                    bar.advance(task)

    ordered = [rows[p.patient_id] for p in patients]
    write_manifest(work, ordered)
    result = PrepareResult(work, ordered, n_reused)
    write_json_atomic(work / "prepare.json", {
        "data": str(training), "shape": list(shape), "margin_mm": margin_mm,
        **({"crop": crop} if crop != "tumour" else {}),
        "channels": list(MODALITIES), "axes": ["channel", "z", "y", "x"],
        "n_patients": len(ordered), "n_ok": result.n_ok, "n_skipped": result.n_skipped,
        "n_reused": n_reused, "workers": workers,
    })
    return result
