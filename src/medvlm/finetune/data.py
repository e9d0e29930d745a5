"""Training and validation examples: slices of a cohort, rendered as ``eval-vlm`` renders them.

An :class:`Example` is one slice image (PNG bytes, exactly the bytes ``eval-vlm`` sends) with its
unit's label as the answer: the patient's for a patient-level task (brats-grading), the slice's for a
slice-level one. A minority class (e.g. 76 of 369 patients in BraTS grading) is oversampled until the
classes are even (:func:`balance_examples`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task


@dataclass(frozen=True)
class Example:
    """One slice of one patient: ``png`` is the rendered image, ``label`` the class (the answer)."""

    patient_id: str
    orientation: str
    slice_index: int
    label: int
    png: bytes


def even_subset(items: list[Any], k: int | None) -> list[Any]:
    """``k`` items spread evenly over ``items`` (first and last kept), or all when ``k`` is None/large.

    >>> even_subset(list(range(10)), 3)
    [0, 4, 9]
    >>> even_subset([1, 2], 5)
    [1, 2]
    """
    if k is None or len(items) <= k:
        return list(items)
    if k == 1:
        return [items[len(items) // 2]]
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def cohort_examples(work: str | Path, cohort: Any, *, task: Task, orientations: list[str],
                    max_slices_per_patient: int | None = None, selection: str = "tumour",
                    modalities: tuple[str, ...] | list[str] | None = None) -> tuple[list[Example], list[str]]:
    """The slices of every patient of ``cohort`` (a :class:`medvlm.data.cohorts.Cohort`), per orientation.

    Rendering is ``medvlm.data.slices.patient_slices``, the function ``eval-vlm`` renders with (same
    options, same PNG bytes). Patient unit: the ``selection`` slices, labelled with the patient's label.
    Slice unit: the task's labelled slices (``WORK/units.csv``). Image unit: :func:`image_examples`.
    With ``max_slices_per_patient`` at most
    that many slices per patient and orientation (per class as well for a slice-level task, so every
    patient keeps both classes), spread evenly. Returns ``(examples, problems)``:
    ``problems`` has one line per patient/orientation without slices.
    """
    from medvlm.data.cohorts import cohort_units, read_manifest
    from medvlm.data.slices import patient_slices

    if task.unit == "image":
        return image_examples(work, cohort, max_images_per_patient=max_slices_per_patient), []
    manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    slice_labels: dict[tuple[str, str], dict[int, int]] = {}
    if task.unit == "slice":
        units = cohort_units(work, cohort, unit=task.unit, orientations=list(orientations))
        keyed = units[["patient_id", "orientation", "slice_index", "label"]]
        for pid, o, i, lab in keyed.itertuples(index=False):
            slice_labels.setdefault((pid, o), {})[int(i)] = int(lab)
    examples: list[Example] = []
    problems: list[str] = []
    for patient_id, label in zip(cohort.patient_ids, cohort.labels, strict=True):
        row = manifest.loc[patient_id]
        for orientation in orientations:
            labelled = slice_labels.get((patient_id, orientation), {})
            try:
                slices = patient_slices(row, orientation, selection=selection,
                                        modalities=tuple(modalities or task.default_modalities),
                                        indices=sorted(labelled) if task.unit == "slice" else None)
            except DataError as exc:
                problems.append(f"{patient_id} {orientation}: {exc}")
                continue
            if not slices:
                problems.append(f"{patient_id} {orientation}: no slice rendered")
                continue
            if task.unit == "slice":  # the cap holds per class, so that a patient keeps both classes
                groups = [[s for s in slices if labelled[s.slice_index] == c] for c in range(task.n_classes)]
                chosen = sorted((s for g in groups for s in even_subset(g, max_slices_per_patient)),
                                key=lambda s: s.slice_index)
            else:
                chosen = even_subset(list(slices), max_slices_per_patient)
            for s in chosen:
                answer = labelled[s.slice_index] if task.unit == "slice" else int(label)
                examples.append(Example(patient_id, orientation, int(s.slice_index), answer, s.png))
    return examples, problems


def image_examples(work: str | Path, cohort: Any, *, max_images_per_patient: int | None = None
                   ) -> list[Example]:
    """An image task's examples: each image of the cohort (at most ``max_images_per_patient`` per
    patient, spread evenly), as ``eval-vlm`` shows it (:func:`medvlm.data.images.image_png`), labelled
    with its own label; ``orientation`` ``"image"``, ``slice_index`` the image's number in the cohort."""
    from medvlm.data.cohorts import cohort_units
    from medvlm.data.images import IMAGE_ORIENTATION, image_png

    units = cohort_units(work, cohort, unit="image", orientations=[])
    rows = list(units[["patient_id", "image_id", "label"]].itertuples(index=False))
    by_patient: dict[str, list[tuple[int, Any]]] = {}
    for k, row in enumerate(rows):
        by_patient.setdefault(str(row.patient_id), []).append((k, row))
    return [Example(pid, IMAGE_ORIENTATION, k, int(row.label), image_png(work, str(row.image_id)))
            for pid, items in by_patient.items() for k, row in even_subset(items, max_images_per_patient)]


def balance_examples(examples: list[Example], *, seed: int = 0,
                     names: tuple[str, str] | list[str] = ("0", "1")) -> tuple[list[Example], dict[str, int]]:
    """Oversample the minority class until both classes have as many examples as the majority.

    Every minority example is repeated ``n_major // n_minor`` times and a seeded random choice (without
    replacement) of the minority examples fills the remainder. With one class only, nothing changes.
    Returns ``(balanced, info)`` with ``info`` = counts before and after, keyed by the class ``names``
    (``<name>`` and ``<name>_balanced``).

    >>> ex = [Example("a", "axial", i, 0, b"") for i in range(2)] + [Example("b", "axial", i, 1, b"")
    ...                                                              for i in range(5)]
    >>> out, info = balance_examples(ex, names=("neg", "pos"))
    >>> info
    {'neg': 2, 'pos': 5, 'neg_balanced': 5, 'pos_balanced': 5}
    """
    by_label = {0: [e for e in examples if e.label == 0], 1: [e for e in examples if e.label == 1]}
    n0, n1 = len(by_label[0]), len(by_label[1])
    out = list(examples)
    if n0 and n1 and n0 != n1:
        minor = 0 if n0 < n1 else 1
        pool, n_target = by_label[minor], max(n0, n1)
        reps, rest = divmod(n_target, len(pool))
        extra = pool * (reps - 1) + random.Random(seed).sample(pool, rest)
        out += extra
    info = {names[0]: n0, names[1]: n1, f"{names[0]}_balanced": sum(e.label == 0 for e in out),
            f"{names[1]}_balanced": sum(e.label == 1 for e in out)}
    return out, info


def examples_fingerprint(examples: list[Example]) -> str:
    """A short hash of the examples (ids, slices, labels and image bytes): a resumed run must see the same."""
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.patient_id}|{e.orientation}|{e.slice_index}|{e.label}|".encode())
        h.update(hashlib.sha256(e.png).digest())
    return h.hexdigest()[:16]
