"""The images of a consistency run: one slice per patient (:func:`select_images`; by default the central
tumour slice, :func:`central_tumour_slice`), rendered exactly as ``eval-vlm`` renders it, with its truth
label as the work folder's task defines it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.consistency.config import ConsistencyConfig
    from medvlm.tasks.base import Task


@dataclass(frozen=True)
class ConsistencyImage:
    """One image asked N times: patient, orientation, canonical slice index, truth label, PNG bytes."""

    patient_id: str
    orientation: str
    slice_index: int
    label: int | None
    png: bytes = field(repr=False)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.patient_id, self.orientation, self.slice_index


def _row_label(row: Any) -> int | None:
    try:
        value = row["label"]
    except (KeyError, IndexError):
        return None
    try:
        return None if value is None or str(value) in ("", "<NA>", "nan") else int(value)
    except (TypeError, ValueError):
        return None


def select_images(work: str | Path, config: ConsistencyConfig, task: Task | None = None
                  ) -> list[ConsistencyImage]:
    """Render the images of the run: for each patient (``config.patients`` or the cohort), slice
    ``config.slice_index`` or the central tumour slice along ``config.orientation`` (a slice-level task:
    the central labelled slice of each class, so that both answers are asked for), exactly as
    ``eval-vlm`` renders it (:func:`medvlm.data.slices.patient_slices`). The truth label is the
    patient's for a patient-level task, the slice's (``WORK/units.csv``; None when the slice is not one
    of the task's units) for a slice-level one. ``config`` has the task's defaults filled in. An image
    task: :func:`medvlm.data.images.consistency_images` (``--slice`` numbers a patient's images).

    Raises :class:`DataError` for an unknown or skipped patient, a slice out of range or a patient
    without a tumour extent (one line naming the option and the patient).
    """
    from medvlm.data.cohorts import Cohort, cohort_units, load_cohort, read_manifest
    from medvlm.data.slices import AXIS, load_canonical, parse_modalities, patient_slices
    from medvlm.registry import did_you_mean
    from medvlm.tasks import get_task
    from medvlm.vlm.options import first_patients

    task = get_task(task)
    config = config.for_task(task)
    if task.unit == "image":
        from medvlm.data.images import consistency_images

        return [ConsistencyImage(*picked) for picked in consistency_images(work, config)]
    assert config.orientation is not None
    modalities = parse_modalities(config.modalities)
    work = Path(work)
    manifest = read_manifest(work)
    rows = {str(r["patient_id"]): r for r in manifest.to_dict("records")}
    if config.patients:
        ids = list(dict.fromkeys(config.patients))
        for pid in ids:
            if pid not in rows:
                raise DataError(f"--patient {pid!r}: no such patient in {work / 'manifest.csv'}."
                                + did_you_mean(pid, list(rows)))
            if rows[pid].get("status") != "ok":
                reason = rows[pid].get("reason") or "no reason given"
                raise DataError(f"--patient {pid}: skipped by prepare ({reason}); pick another patient")
    else:
        ids = load_cohort(work, config.cohort, fold=config.fold).patient_ids
    ids = first_patients(ids, config.limit)  # --limit N: the first N (None: all)
    axis = AXIS[config.orientation]
    letter = "xyz"[axis]
    unit_labels: dict[tuple[str, int], int] = {}
    if task.unit == "slice":
        units = cohort_units(work, Cohort("selected", list(ids), [0] * len(ids)), unit=task.unit,
                             orientations=[config.orientation])
        unit_labels = {(p, int(i)): int(lab) for p, i, lab in
                       zip(units["patient_id"], units["slice_index"], units["label"], strict=True)}
    images = []
    for pid in ids:
        row = dict(rows[pid])
        path = row.get(modalities[0])
        if not path or not Path(str(path)).is_file():
            raise DataError(f"patient {pid}: {modalities[0]} file {path!r} does not exist")
        size = load_canonical(path, pid)[0].shape[axis]
        if config.slice_index is not None:
            index = int(config.slice_index)
            if not 0 <= index < size:
                raise DataError(f"--slice {index}: out of range for patient {pid} along {config.orientation} "
                                f"(valid 0..{size - 1})")
            indices = [index]
        elif task.unit == "slice":  # the central labelled slice of each class: both answers are asked for
            indices = []
            for label in range(task.n_classes):
                own = sorted(i for (p, i), lab in unit_labels.items() if p == pid and lab == label)
                indices += [own[len(own) // 2]] if own else []
        else:
            indices = [central_tumour_slice(row, config.orientation, size)]
        for index in indices:
            # render exactly one slice with the engine's renderer: a one-slice "tumour" range at ``index``
            one = {**row, f"tumour_{letter}_min": index, f"tumour_{letter}_max": index}
            [image] = patient_slices(one, config.orientation, selection="tumour", modalities=modalities)
            label = _row_label(row) if task.unit == "patient" else unit_labels.get((pid, index))
            images.append(ConsistencyImage(pid, config.orientation, index, label, image.png))
    return images


def central_tumour_slice(row: Mapping[str, Any], orientation: str, size: int) -> int:
    """The central slice of the tumour's extent along ``orientation`` (the manifest's inclusive
    ``tumour_*_min..max``, clipped to the volume; ``(lo + hi) // 2``), the slice eval-vlm's
    ``--slices central:1`` picks.

    >>> central_tumour_slice({"patient_id": "P", "tumour_z_min": 3, "tumour_z_max": 6}, "axial", 10)
    4
    """
    from medvlm.data.slices import AXIS, slice_indices

    try:
        [index] = slice_indices(row, orientation, "central:1", size)
    except DataError as exc:
        letter = "xyz"[AXIS[orientation]]
        pid = row.get("patient_id", "?")
        raise DataError(f"patient {pid}: no usable tumour extent along {letter} in the manifest ({exc}); "
                        "give --slice N") from None
    return int(index)
