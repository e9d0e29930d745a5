"""``medvlm prepare``: BraTS NIfTI files -> ``WORK/manifest.csv`` + ``WORK/volumes/<id>.npy``.

Per patient (as in the study): reorient every file to RAS+ (``nibabel.as_closest_canonical``), z-score
each modality inside the brain (voxels non-zero in any modality; background 0), crop the tumour's
bounding box (seg > 0) plus a margin, resize trilinearly to ``shape`` (D, H, W) = (z, y, x) and stack
t1, t1ce, t2, flair -> float32 ``(4, D, H, W)``.

A patient that cannot be used is never dropped: it gets a ``skipped`` manifest row whose ``reason``
names the file and the problem (:mod:`medvlm.data.quality`: unreadable, all-zero or blank images, a
mask that is really an image, ...). Each finished patient is journalled at once
(:mod:`medvlm.data.prepare_state`): a rerun, after a crash too, reuses a volume only when the options,
the source files and the volume itself are unchanged, and prepares the others again, saying why.
Labels: LGG = 0, HGG = 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvlm._io import save_npy_atomic, write_csv_atomic, write_json_atomic
from medvlm.data import quality
from medvlm.data.brats import FILE_KINDS, GRADE_LABELS, MODALITIES, PatientFiles, discover
from medvlm.data.prepare_state import Journal, inputs_stamp, options_stamp, stale_reason
from medvlm.data.volume_ops import (
    bounding_box,
    brain_mask,
    brain_stats,
    crop_box,
    resize_trilinear,
    zscore_in_brain,
)
from medvlm.errors import ConfigError, DataError

MANIFEST_COLUMNS = (
    "patient_id", "grade", "label", "status", "reason", "note",
    "t1", "t1ce", "t2", "flair", "seg", "orig_shape",
    "tumour_x_min", "tumour_x_max", "tumour_y_min", "tumour_y_max", "tumour_z_min", "tumour_z_max",
    "crop_x_min", "crop_x_max", "crop_y_min", "crop_y_max", "crop_z_min", "crop_z_max",
    "volume", "source", "age",
)
DEFAULT_SHAPE = (95, 128, 128)
DEFAULT_MARGIN_MM = 10.0
#: the largest prepared volume per channel (512^3 voxels: 2 GiB of float32 for the 4 channels)
MAX_VOXELS = 512**3


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare`: the manifest rows (in ``patient_id`` order) and counts."""

    work: Path
    rows: list[dict[str, str]]
    n_reused: int
    #: why previously finished patients were prepared again (one entry per patient)
    rebuilt: list[str] = field(default_factory=list)

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


def _load(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Canonical (RAS+) array in its stored dtype, voxel sizes and canonical affine; _Skip naming the file
    on failure."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error, ValueError)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Skip(f"{path.name}: unreadable or truncated file ({msg[:160]})") from exc
    problem = quality.voxel_type_problem(data)
    if problem:
        raise _Skip(f"{path.name}: {problem}")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _Skip(f"{path.name}: expected a 3D volume, got shape {'x'.join(map(str, data.shape))}")
    problem = quality.size_problem(data.shape)
    if problem:
        raise _Skip(f"{path.name}: {problem}")
    return data, zooms, affine  # type: ignore[return-value]


Loaded = tuple[dict[str, np.ndarray], dict[str, tuple[float, float, float]], dict[str, np.ndarray]]


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
        if grade not in GRADE_LABELS:
            raise _Skip(f"grade {grade!r} of {patient.patient_id} in name_mapping.csv is not HGG or LGG")
        arrays: dict[str, np.ndarray] = {}
        zooms: dict[str, tuple[float, float, float]] = {}
        affines: dict[str, np.ndarray] = {}
        for kind in FILE_KINDS:
            arrays[kind], zooms[kind], affines[kind] = _load(patient.files[kind])
    except _Skip as exc:
        return exc
    return arrays, zooms, affines


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
        arrays, zooms, affines = loaded
        shapes = [arrays[k].shape for k in FILE_KINDS]
        ref = max(shapes, key=shapes.count)  # the majority shape; the odd file out is named
        for kind in FILE_KINDS:
            if arrays[kind].shape != ref:
                other = next(k for k in FILE_KINDS if arrays[k].shape == ref)
                raise _Skip(
                    f"{patient.files[kind].name}: shape mismatch ({'x'.join(map(str, arrays[kind].shape))} "
                    f"but {patient.files[other].name} is {'x'.join(map(str, ref))})"
                )
        agree = {k: sum(quality.affine_problem(affines[k], affines[o]) is None for o in FILE_KINDS)
                 for k in FILE_KINDS}
        other = max(FILE_KINDS, key=lambda k: agree[k])  # the grid most files share; the odd one is named
        for kind in FILE_KINDS:  # one grid in space: the mask must lie on the images
            problem = quality.affine_problem(affines[kind], affines[other])
            if problem:
                raise _Skip(f"{patient.files[kind].name}: not on the grid of {patient.files[other].name} "
                            f"({problem})")
        # NIfTI data is Fortran-ordered: the transposed canonical views, axes (z, y, x), are C-ordered, so
        # the mask, the brain gathers and the crop walk memory in order (and the crop comes out in the
        # volume's axis order). Bounding boxes are therefore (z, y, x) here; the manifest keeps x, y, z.
        arrays = {k: a.T for k, a in arrays.items()}
        seg = np.asarray(arrays.pop("seg"))
        mask, brain, stats, note = _checked(patient, seg, arrays)
        tumour_zyx = bounding_box(mask)
        margin_zyx = [int(np.ceil(margin_mm / max(z, 1e-6))) for z in reversed(zooms["seg"])]
        crop_zyx = (crop_box(tumour_zyx, mask.shape, margin_zyx) if crop == "tumour"
                    else bounding_box(brain | mask))
        sl = tuple(slice(lo, hi + 1) for lo, hi in crop_zyx)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below, per file
            channels = [zscore_in_brain(arrays[k], brain, region=sl, stats=stats[k]) for k in MODALITIES]
            volume = resize_trilinear(np.stack(channels), shape, scratch=True)  # (4, z, y, x), saved at once
        bad = [k for i, k in enumerate(MODALITIES) if not np.isfinite(volume[i]).all()]
        if bad:
            raise _Skip(f"{patient.files[bad[0]].name}: normalised intensities are not finite (values beyond "
                        "float32 range)")
        save_npy_atomic(work / "volumes" / f"{patient.patient_id}.npy", volume)
        tumour, box = tumour_zyx[::-1], crop_zyx[::-1]  # x, y, z
    except _Skip as exc:
        row["status"], row["reason"] = "skipped", str(exc)
        return row
    row.update(status="ok", orig_shape="x".join(map(str, ref)), volume=f"volumes/{patient.patient_id}.npy")
    if note:
        row["note"] = "; ".join(n for n in (row["note"], note) if n)
    for axis, (lo, hi), (clo, chi) in zip("xyz", tumour, box, strict=True):
        row.update({f"tumour_{axis}_min": str(lo), f"tumour_{axis}_max": str(hi),
                    f"crop_{axis}_min": str(clo), f"crop_{axis}_max": str(chi)})
    return row


def _checked(patient: PatientFiles, seg: np.ndarray, arrays: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[float, float]], str]:
    """The tumour mask, the brain, each modality's (mean, std) in the brain and a note, after the
    checks of :mod:`medvlm.data.quality`; :class:`_Skip` naming the file when the patient is unusable."""
    seg_name = patient.files["seg"].name
    if seg.dtype.kind == "f" and not np.isfinite(seg).all():
        raise _Skip(f"{seg_name}: mask holds NaN or infinite values")
    labels, problem = quality.mask_labels(seg)
    if problem:
        raise _Skip(f"{seg_name}: {problem}")
    mask = seg > 0
    if not mask.any():
        raise _Skip(f"{seg_name}: empty mask (no voxel > 0)")
    for kind in MODALITIES:
        data = arrays[kind]
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise _Skip(f"{patient.files[kind].name}: holds NaN or infinite values")
    brain = brain_mask([arrays[k] for k in MODALITIES])
    if not brain.any():
        raise _Skip("all four modalities are zero everywhere (no brain)")
    stats = {}
    n_brain = int(np.count_nonzero(brain))
    for kind in MODALITIES:
        stats[kind] = brain_stats(arrays[kind], brain)
        problem = (quality.modality_problem(*stats[kind])
                   or quality.coverage_problem(int(np.count_nonzero(arrays[kind])), n_brain))
        if problem:
            raise _Skip(f"{patient.files[kind].name}: {problem}")
    problem = quality.mask_share_problem(mask, brain)
    if problem:
        raise _Skip(f"{seg_name}: {problem}")
    return mask, brain, stats, quality.unknown_labels_note(labels)


def _base_row(patient: PatientFiles, grade: str | None) -> dict[str, str]:
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row["patient_id"] = patient.patient_id
    if grade is not None:
        row["grade"], row["label"] = grade, str(GRADE_LABELS[grade]) if grade in GRADE_LABELS else ""
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


def _previous_ok(work: Path) -> set[str]:
    """Patients with an ``ok`` row in an existing manifest (to tell a rebuild from a first build)."""
    import csv

    try:
        with open(work / "manifest.csv", newline="", encoding="utf-8") as fh:
            return {r["patient_id"] for r in csv.DictReader(fh) if r.get("status") == "ok"}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return set()


def _reusable_shape(path: Path, shape: Sequence[int]) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return tuple(arr.shape) == (4, *tuple(int(s) for s in shape)) and arr.dtype == np.float32


def write_manifest(work: Path, rows: list[dict[str, str]]) -> Path:
    """Write ``WORK/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`) atomically."""
    return write_csv_atomic(work / "manifest.csv", MANIFEST_COLUMNS, rows)


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
    if math.prod(shape) > MAX_VOXELS:
        raise ConfigError(f"--shape {' '.join(map(str, shape))}: {math.prod(shape):,} voxels per channel is "
                          f"more than any MRI holds (at most {MAX_VOXELS:,}, e.g. 512 512 512)")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not math.isfinite(margin_mm) or margin_mm < 0:
        raise ConfigError(f"--margin must be a finite number of mm >= 0, got {margin_mm}")
    if crop not in ("tumour", "brain"):
        raise ConfigError(f"crop must be 'tumour' or 'brain', got {crop!r}")
    training, mapping, patients = discover(data)
    if not patients:  # pragma: no cover - discover raises first
        raise DataError(f"{data}: no patient folder found")
    work = Path(out).expanduser().resolve()
    if work.exists() and not work.is_dir():
        raise DataError(f"{work}: exists and is not a folder (--out is the work folder)")
    (work / "volumes").mkdir(parents=True, exist_ok=True)
    previous_ok = _previous_ok(work)
    journal = Journal(work, options_stamp(shape, margin_mm, crop))

    rows: dict[str, dict[str, str]] = {}
    inputs: dict[str, dict] = {}
    todo: list[tuple] = []
    rebuilt: list[str] = []
    for patient in patients:
        pid, grade = patient.patient_id, mapping.get(patient.patient_id)
        inputs[pid] = inputs_stamp(_base_row(patient, grade), FILE_KINDS)
        volume = work / "volumes" / f"{pid}.npy"
        entry = journal.entries.get(pid)
        why = stale_reason(entry, journal.options, inputs[pid], volume)
        if why is None and not patient.problems and grade in GRADE_LABELS and _reusable_shape(volume, shape):
            rows[pid] = {k: str(entry["row"].get(k, "")) for k in MANIFEST_COLUMNS}  # type: ignore[index]
            continue
        if why is not None and why != "not prepared" or (entry is None and pid in previous_ok):
            rebuilt.append(why if entry is not None else "no record of the options it was prepared with")
        todo.append((patient, grade, work, shape, margin_mm, crop))
    n_reused = len(rows)

    def finished(row: dict[str, str]) -> None:
        rows[row["patient_id"]] = row
        journal.record(row, inputs[row["patient_id"]])
        if on_patient:
            on_patient(row)

    from medvlm.data.synth import _progress

    with _progress(progress) as bar, closing(journal):
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
                    finished(process_patient(*args[:5], crop=crop, loaded=loaded))
                    bar.advance(task)
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=n_procs, mp_context=_pool_context()) as pool:
                futures = [pool.submit(_worker, args) for args in todo]
                for fut in as_completed(futures):
                    finished(fut.result())
                    bar.advance(task)

    ordered = [rows[p.patient_id] for p in patients]
    from medvlm.data.brats import find_name_mapping
    from medvlm.data.subgroups import fill_subgroups

    fill_subgroups(ordered, find_name_mapping(training, Path(data).expanduser()), training)  # subgroups
    write_manifest(work, ordered)
    journal.compact([p.patient_id for p in patients])
    result = PrepareResult(work, ordered, n_reused, rebuilt)
    write_json_atomic(work / "prepare.json", {
        "data": str(training), "shape": list(shape), "margin_mm": margin_mm,
        **({"crop": crop} if crop != "tumour" else {}),
        "channels": list(MODALITIES), "axes": ["channel", "z", "y", "x"],
        "n_patients": len(ordered), "n_ok": result.n_ok, "n_skipped": result.n_skipped,
        "n_reused": n_reused, "n_rebuilt": len(rebuilt), "workers": workers,
    })
    return result
