"""Few-shot prompting (``eval-vlm --shots K``, ``consistency --shots K``): before each question, K labelled
examples from the *training* cohort of ``--fold`` as earlier chat turns (user: the example's image and the
same prompt; assistant: its true answer).

- :func:`draw_examples` (pure): K class-balanced examples of one view, seeded per question;
- :func:`answer_text`: an example's assistant turn, as the prompt asks for the answer (``Choice: 1``, or
  a JSON object), with the answer code of the prompt (a prompt with swapped codes writes them swapped);
- :func:`training_pool`: every candidate example of the training cohort, per orientation, with its label
  (the patient's for a patient-level task, the slice's for a slice-level one);
- :func:`make_sampler`: checks the request (never a patient of the evaluated cohort, K not above the
  smallest class of any view: one-line :class:`~medvlm.errors.ConfigError`) and returns a
  :class:`ShotSampler`, which draws (memoised per question, the same for every repeat), renders the
  examples exactly as the questions are rendered and hands out :class:`~medvlm.vlm.types.Shot` tuples.

Examples are named ``patient_id:orientation:slice_index`` (a 2D image task's: ``patient_id:image_id``,
:mod:`medvlm.vlm.fewshot_images`); ``slices.csv`` lists a call's examples in its
``shots`` column joined by ``;`` (:data:`SHOT_SEPARATOR`). Labels as the task defines them (label i is
class i, written with answer code i of the prompt).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import ConfigError
from medvlm.vlm.types import Shot

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from medvlm.tasks.base import Task

#: joins the examples of one call in ``slices.csv``'s ``shots`` column
SHOT_SEPARATOR = ";"
#: the ``slices.csv`` column that lists a call's examples (only when K > 0)
SHOTS_COLUMN = "shots"
#: rendered example images kept in memory besides the sampler's files (the most recently used)
_IMAGE_CACHE_SIZE = 256


@dataclass(frozen=True)
class Example:
    """A candidate example: one slice of a training patient and its label (class index); for a 2D image
    task one whole image (``image_id`` set, orientation ``"image"``, slice index 0)."""

    patient_id: str
    orientation: str
    slice_index: int
    label: int
    image_id: str = ""

    @property
    def id(self) -> str:
        """``patient_id:orientation:slice_index``, or ``patient_id:image_id`` for an image (the contract's
        forms in ``slices.csv``)."""
        if self.image_id:
            return f"{self.patient_id}:{self.image_id}"
        return f"{self.patient_id}:{self.orientation}:{self.slice_index}"


def class_counts(k: int, n_classes: int, seed: int) -> list[int]:
    """How many examples of each class: ``k // n_classes`` each, and the ``k % n_classes`` left over one
    each to classes drawn at random (seeded).

    >>> class_counts(4, 2, seed=0), class_counts(0, 3, seed=0), sum(class_counts(5, 3, seed=1))
    ([2, 2], [0, 0, 0], 5)
    """
    import numpy as np

    base, extra = divmod(int(k), int(n_classes))
    counts = [base] * n_classes
    if extra:
        for c in np.random.default_rng(seed).choice(n_classes, size=extra, replace=False):
            counts[int(c)] += 1
    return counts


def draw_examples(pool: Mapping[int, Sequence[Example]], k: int, *, n_classes: int, seed: int
                  ) -> list[Example]:
    """K class-balanced examples from ``pool`` (label -> candidates of one view): :func:`class_counts` of
    each class, drawn without replacement within the class, then shuffled so that their order says
    nothing about the classes. Pure: the same pool, K and seed give the same examples.

    ConfigError when a class has fewer candidates than it needs (:func:`make_sampler` checks before).

    >>> pool = {0: [Example("A", "axial", i, 0) for i in range(3)],
    ...         1: [Example("B", "axial", i, 1) for i in range(3)]}
    >>> drawn = draw_examples(pool, 4, n_classes=2, seed=7)
    >>> sorted(e.label for e in drawn), len({e.id for e in drawn})
    ([0, 0, 1, 1], 4)
    >>> drawn == draw_examples(pool, 4, n_classes=2, seed=7)
    True
    """
    import numpy as np

    from medvlm.data.controls import derived_seed

    counts = class_counts(k, n_classes, derived_seed("shot-classes", seed))
    rng = np.random.default_rng(seed)
    out: list[Example] = []
    for label, n in enumerate(counts):
        candidates = list(pool.get(label, ()))
        if n > len(candidates):
            raise ConfigError(f"--shots {k}: class {label} has only {len(candidates)} training example(s)")
        if n:
            out += [candidates[int(i)] for i in rng.choice(len(candidates), size=n, replace=False)]
    return [out[int(i)] for i in rng.permutation(len(out))]


def wants_json(prompt_text: str, structured: str = "none") -> bool:
    """Whether the prompt's answer format is a JSON object (``--structured json``, or a prompt that asks
    for ``{"choice": ...}``) rather than ``<prefix> <code>``."""
    return structured == "json" or '"choice"' in prompt_text


def answer_text(task: Task, label: int, *, json_answer: bool = False) -> str:
    """The assistant turn of an example of class ``label``: the task's answer prefix and the prompt's code
    for that class (``"Choice: 1"``; a prompt with swapped codes -- ``task.for_prompt(prompt)`` --
    writes its own digit), or ``{"choice": 1, "reasoning": ""}`` for a JSON answer format.

    >>> from medvlm.tasks import get_task
    >>> task = get_task("brats-grading")
    >>> answer_text(task, 1), answer_text(task.with_answer_codes(("1", "0", "2")), 1)
    ('Choice: 1', 'Choice: 0')
    >>> answer_text(task, 0, json_answer=True)
    '{"choice": 0, "reasoning": ""}'
    """
    code = task.codes[int(label)]
    if json_answer:
        return json.dumps({"choice": int(code) if code.isdigit() else code, "reasoning": ""})
    return f"{task.answer_prefix} {code}".strip()


# ------------------------------------------------------------------------------------ the training pool
def _axis_size(row: Any, orientation: str, modality: str) -> int:
    """Slices along ``orientation``: from the manifest's ``orig_shape`` when it has one, else the volume."""
    from medvlm.data.slices import AXIS, load_canonical

    axis = AXIS[orientation]
    try:
        return int(str(row["orig_shape"]).split("x")[axis])
    except (KeyError, IndexError, ValueError):
        return int(load_canonical(row[modality], str(row["patient_id"]))[0].shape[axis])


def training_pool(work: str | Path, *, task: Task, fold: int, orientations: Sequence[str], selection: str,
                  modalities: Sequence[str], manifest: pd.DataFrame | None = None
                  ) -> tuple[list[str], dict[str, dict[int, list[Example]]]]:
    """(training patient ids of ``fold``, ``{orientation: {label: [Example, ...]}}``).

    Patient-level task: every ``selection`` slice (``tumour``: the slices through the tumour) of every
    training patient, labelled with the patient's label (a patient without a tumour extent along an axis
    gives no example along it). Slice-level task: the training patients' labelled slices of
    ``WORK/units.csv``. Candidates are in cohort order, then slice index.
    """
    from medvlm.data.cohorts import cohort_units, load_cohort, read_manifest
    from medvlm.data.slices import slice_indices
    from medvlm.errors import DataError

    train = load_cohort(work, "train", fold=fold)
    pool: dict[str, dict[int, list[Example]]] = {o: {c: [] for c in range(task.n_classes)}
                                                 for o in orientations}
    if task.unit == "slice":
        units = cohort_units(work, train, unit="slice", orientations=list(orientations))
        for pid, o, index, label in zip(units["patient_id"], units["orientation"], units["slice_index"],
                                        units["label"], strict=True):
            if 0 <= int(label) < task.n_classes:
                pool[o][int(label)].append(Example(str(pid), str(o), int(index), int(label)))
        return list(train.patient_ids), pool
    if manifest is None:
        manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    for pid, label in zip(train.patient_ids, train.labels, strict=True):
        if not 0 <= int(label) < task.n_classes:
            continue
        row = manifest.loc[pid]
        for o in orientations:
            try:
                indices = slice_indices(row, o, selection, _axis_size(row, o, modalities[0]))
            except DataError:  # no tumour along this axis: no example from this patient here
                continue
            pool[o][int(label)] += [Example(str(pid), o, int(i), int(label)) for i in indices]
    return list(train.patient_ids), pool


def check_shots(k: int, pool: Mapping[str, Mapping[int, Sequence[Example]]], *, task: Task, fold: int,
                unit: str = "slice") -> None:
    """ConfigError (one line) when some view cannot serve ``k`` class-balanced examples.

    :func:`class_counts` gives each class ``k // n_classes`` and the remainder to classes drawn at random
    per question, so every class of every view needs ``ceil(k / n_classes)`` candidates: ``k`` passes iff
    ``k <= smallest * n_classes`` (``smallest``: the smallest class over all views). The message names
    that class and view and the largest ``k`` every view can serve.
    """
    n = task.n_classes
    worst: tuple[int, str, int] | None = None  # (size, view, label) of the smallest class of all views
    for view, by_class in pool.items():
        for c in range(n):
            size = len(by_class.get(c, ()))
            if worst is None or size < worst[0]:
                worst = (size, view, c)
    if worst is None:
        return
    smallest, view, label = worst
    need = -(-int(k) // n)
    if need > smallest:
        what = unit if view == unit else f"{view} {unit}"  # an image task's one view is "image"
        raise ConfigError(f"--shots {k}: needs {need} example(s) of each class, but the training cohort of "
                          f"fold {fold} has only {smallest} {what}(s) of class {task.classes[label]}; "
                          f"use --shots {smallest * n} or fewer")


def check_cohort(k: int, *, cohort: str, fold: int, evaluated: Sequence[str], training: Sequence[str],
                 work: str | Path) -> None:
    """Refuse few-shot examples that could come from the evaluated cohort (one-line ConfigError)."""
    if cohort in ("train", "all"):
        what = "the very patients evaluated" if cohort == "train" else "which --cohort all includes"
        raise ConfigError(f"--shots {k} with --cohort {cohort}: the examples come from the training cohort "
                          f"of --fold {fold}, {what}; evaluate --cohort val or test")
    shared = sorted(set(evaluated) & set(training))
    if shared:
        raise ConfigError(f"--shots {k}: patient {shared[0]} is both evaluated and in the training cohort "
                          f"of --fold {fold} ({Path(work) / 'splits.json'}); the examples must come from "
                          "other patients")


# ----------------------------------------------------------------------------------------------- sampler
class ShotSampler:
    """Draws, renders and hands out the examples of each question (see the module docstring).

    ``pool``: :func:`training_pool`'s candidates; ``render``: ``(patient_id, orientation, slice indices)``
    -> ``{slice_index: PNG bytes}`` (rendered as the questions are); ``seed``: the run's seed (each
    question's draw is seeded by it and the question's patient, orientation and slice index, so a rerun
    draws the same examples).

    Examples are drawn at random from the whole training cohort, so one volume holds examples of many
    questions: the first time any candidate of a patient and orientation is needed, all of that group's
    candidates are rendered from one volume read and kept as files in a temporary folder (removed with
    the sampler), so each volume is read at most once per orientation in a run.
    """

    def __init__(self, pool: Mapping[str, Mapping[int, Sequence[Example]]], k: int, *, n_classes: int,
                 seed: int, render: Any) -> None:
        self.pool, self.k, self.n_classes, self.seed, self.render = pool, int(k), n_classes, int(seed), render
        self._drawn: dict[tuple[str, str, int], list[Example]] = {}
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._groups: dict[tuple[str, str], set[int]] = {}
        for orientation, by_class in pool.items():
            for candidates in by_class.values():
                for e in candidates:
                    self._groups.setdefault((e.patient_id, orientation), set()).add(e.slice_index)
        self._number = {group: i for i, group in enumerate(self._groups)}
        self._rendered: set[tuple[str, str]] = set()
        self._folder: Path | None = None
        self.n_rendered = 0  # volume groups rendered so far

    def examples(self, patient_id: str, orientation: str, slice_index: int) -> list[Example]:
        """The examples shown before the question about ``(patient_id, orientation, slice_index)``."""
        from medvlm.data.controls import derived_seed

        key = (str(patient_id), str(orientation), int(slice_index))
        if key not in self._drawn:
            self._drawn[key] = draw_examples(self.pool[orientation], self.k, n_classes=self.n_classes,
                                             seed=derived_seed("shots", *key, self.seed))
        return self._drawn[key]

    def _file(self, example: Example) -> Path:
        if self._folder is None:
            import shutil
            import tempfile
            import weakref

            self._folder = Path(tempfile.mkdtemp(prefix="medvlm-shots-"))
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        group = (example.patient_id, example.orientation)
        return self._folder / f"{self._number[group]}-{example.slice_index}.png"

    def image(self, example: Example) -> bytes:
        """The example's PNG bytes (see the class docstring for how they are kept)."""
        if example.id in self._images:
            self._images.move_to_end(example.id)
            return self._images[example.id]
        group = (example.patient_id, example.orientation)
        if group not in self._rendered:
            pngs = self.render(*group, sorted(self._groups[group]))
            for index, data in pngs.items():
                self._file(Example(*group, int(index), example.label)).write_bytes(data)
            self._rendered.add(group)
            self.n_rendered += 1
        png = self._file(example).read_bytes()
        self._images[example.id] = png
        while len(self._images) > _IMAGE_CACHE_SIZE:
            self._images.popitem(last=False)
        return png

    def shots(self, key: tuple[str, str, int], *, prompt_text: str, task: Task, json_answer: bool = False
              ) -> tuple[Shot, ...]:
        """The :class:`~medvlm.vlm.types.Shot` turns before the question ``key`` (patient, orientation,
        slice index), asked with ``prompt_text`` by ``task`` (its answer codes: ``task.for_prompt``)."""
        return tuple(Shot(id=e.id, image=self.image(e), prompt=prompt_text,
                          answer=answer_text(task, e.label, json_answer=json_answer))
                     for e in self.examples(*key))

    def for_prompt(self, prompt_text: str, task: Task, structured: str = "none", *,
                   key: Any = None) -> Any:
        """The engine's ``shots`` callable (meta -> shots) for one prompt: ``key`` turns a meta into the
        question's ``(patient, orientation, slice index)`` (None: the meta is that key)."""
        json_answer = wants_json(prompt_text, structured)

        def shots(meta: Any) -> tuple[Shot, ...]:
            return self.shots(meta if key is None else key(meta), prompt_text=prompt_text, task=task,
                              json_answer=json_answer)

        return shots

    def ids(self, key: tuple[str, str, int]) -> str:
        """The ``shots`` column of one question: its examples' ids joined by ``;``."""
        return SHOT_SEPARATOR.join(e.id for e in self.examples(*key))

    def add_column(self, calls: pd.DataFrame) -> pd.DataFrame:
        """``calls`` (rows with ``patient_id, orientation, slice_index``) with the ``shots`` column last."""
        calls = calls.copy()
        calls[SHOTS_COLUMN] = [self.ids((p, o, int(i))) for p, o, i in
                               zip(calls["patient_id"], calls["orientation"], calls["slice_index"],
                                   strict=True)]
        return calls


def make_sampler(work: str | Path, k: int, *, task: Task, cohort: str, fold: int, evaluated: Sequence[str],
                 orientations: Sequence[str], selection: str, modalities: Sequence[str], image: str = "real",
                 artifact: str | None = None, seed: int = 0, manifest: pd.DataFrame | None = None
                 ) -> ShotSampler | None:
    """The sampler of a run with ``k`` shots (None for ``k`` 0), after every check (one-line ConfigError):
    the task's unit has slices to show, the evaluated patients (``evaluated``, of ``cohort``) are not in
    the training cohort of ``fold``, and every view has at least ``k`` candidates of each class. Examples
    are rendered with the questions' ``modalities``, ``image`` control, ``artifact`` and ``seed``."""
    if not k:
        return None
    if task.unit == "image":
        from medvlm.vlm.fewshot_images import make_image_sampler

        return make_image_sampler(work, k, task=task, cohort=cohort, fold=fold, evaluated=evaluated,
                                  image=image, seed=seed)
    if task.unit not in ("patient", "slice"):
        raise ConfigError(f"--shots {k}: few-shot examples are drawn per orientation of slices; task "
                          f"{task.name} predicts per {task.unit}")
    from medvlm.data.cohorts import read_manifest
    from medvlm.data.slices import patient_slices

    if manifest is None:
        manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    training, pool = training_pool(work, task=task, fold=fold, orientations=orientations, selection=selection,
                                   modalities=modalities, manifest=manifest)
    check_cohort(k, cohort=cohort, fold=fold, evaluated=evaluated, training=training, work=work)
    check_shots(k, pool, task=task, fold=fold, unit="slice")
    frozen_manifest = manifest

    def render(patient_id: str, orientation: str, indices: list[int]) -> dict[int, bytes]:
        return {s.slice_index: s.png for s in patient_slices(
            frozen_manifest.loc[patient_id], orientation, selection=selection, modalities=tuple(modalities),
            indices=indices, image=image, artifact=artifact, seed=seed)}

    return ShotSampler(pool, k, n_classes=task.n_classes, seed=seed, render=render)


# ------------------------------------------------------------------------ a shots sweep in EXPERIMENT.yaml
def expand_shots_sweeps(data: Any, sections: Sequence[str] = ("vlm", "consistency")) -> Any:
    """EXPERIMENT.yaml's shots sweeps written out: a run of ``sections`` whose ``shots`` is a list (``shots:
    [0, 2, 4]``) becomes one run per K, named ``<name>-shots<K>``, each with ``shots: K``, in the order
    given; every other run as it is. ValueError (one line naming the run) for a sweep without a ``name``, or
    a list that is empty, holds something other than whole numbers >= 0, or repeats a K.

    >>> expand_shots_sweeps({"vlm": [{"name": "v", "shots": [0, 2]}, {"name": "w"}]})
    {'vlm': [{'name': 'v-shots0', 'shots': 0}, {'name': 'v-shots2', 'shots': 2}, {'name': 'w'}]}
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for section in sections:
        runs = out.get(section)
        if not isinstance(runs, list):
            continue
        expanded = []
        for i, run in enumerate(runs):
            values = run.get("shots") if isinstance(run, dict) else None
            if not isinstance(values, list):
                expanded.append(run)
                continue
            if not run.get("name"):  # the runs are named after it: as without a list
                raise ValueError(f"{section}.{i}.name: Field required")
            ok = all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in values)
            if not values or not ok or len(set(values)) != len(values):
                raise ValueError(f"{section}.{i}.shots: a number of examples or a list of distinct numbers "
                                 f">= 0 (a sweep); got {values!r}")
            expanded += [{**run, "name": f"{run.get('name')}-shots{k}", "shots": k} for k in values]
        out[section] = expanded
    return out
