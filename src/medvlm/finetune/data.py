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
                     names: tuple[str, ...] | list[str] = ("0", "1")) -> tuple[list[Example], dict[str, int]]:
    """Oversample every smaller class until each class has as many examples as the largest one.

    ``names``: the class names, label ``i`` = ``names[i]`` (K = their number; a binary task: 2). Each
    smaller class's examples are repeated ``n_largest // n_class`` times and a seeded random choice (without
    replacement) of them fills the remainder, class by class in label order from one seeded generator. A
    class without examples stays empty; with one class only, nothing changes. Returns ``(balanced,
    info)`` with ``info`` = counts before and after for every class, keyed by the class ``names``
    (``<name>`` for all classes, then ``<name>_balanced``).

    >>> ex = [Example("a", "axial", i, 0, b"") for i in range(2)] + [Example("b", "axial", i, 1, b"")
    ...                                                              for i in range(5)]
    >>> out, info = balance_examples(ex, names=("neg", "pos"))
    >>> info
    {'neg': 2, 'pos': 5, 'neg_balanced': 5, 'pos_balanced': 5}
    >>> three = ex + [Example("c", "axial", 0, 2, b"")]
    >>> balance_examples(three, names=("a", "b", "c"))[1]
    {'a': 2, 'b': 5, 'c': 1, 'a_balanced': 5, 'b_balanced': 5, 'c_balanced': 5}
    """
    k = max(len(names), max((e.label + 1 for e in examples), default=0))
    by_label = {i: [e for e in examples if e.label == i] for i in range(k)}
    counts = [len(by_label[i]) for i in range(k)]
    out = list(examples)
    present = [i for i in range(k) if counts[i]]
    n_target = max(counts, default=0)
    rng = random.Random(seed)
    if len(present) > 1:
        for minor in present:
            if counts[minor] == n_target:
                continue
            pool = by_label[minor]
            reps, rest = divmod(n_target, len(pool))
            out += pool * (reps - 1) + rng.sample(pool, rest)
    label_names = [str(names[i]) if i < len(names) else str(i) for i in range(k)]
    info = {name: counts[i] for i, name in enumerate(label_names)}
    info.update({f"{name}_balanced": sum(e.label == i for e in out) for i, name in enumerate(label_names)})
    return out, info


def examples_fingerprint(examples: list[Example]) -> str:
    """A short hash of the examples (ids, slices, labels and image bytes): a resumed run must see the same."""
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.patient_id}|{e.orientation}|{e.slice_index}|{e.label}|".encode())
        h.update(hashlib.sha256(e.png).digest())
    return h.hexdigest()[:16]
