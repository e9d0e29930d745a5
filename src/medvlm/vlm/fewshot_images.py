"""Few-shot examples of a 2D image task (``eval-vlm --shots K``, ``consistency --shots K`` on a task whose
unit is ``image``): K class-balanced whole images of the *training* cohort of ``--fold`` (never an image of
an evaluated patient), drawn per question (seeded by the question's patient and image), shown as the same
PNG bytes eval-vlm sends for that image (:func:`medvlm.data.images.image_png`, with the run's ``--image``
control). Examples are named ``patient_id:image_id`` in ``slices.csv``'s ``shots`` column.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.vlm.fewshot import (
    _IMAGE_CACHE_SIZE,
    SHOTS_COLUMN,
    Example,
    ShotSampler,
    check_cohort,
    check_shots,
    draw_examples,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from medvlm.tasks.base import Task


def image_pool(work: str | Path, *, task: Task, fold: int
               ) -> tuple[list[str], dict[str, dict[int, list[Example]]]]:
    """(training patient ids of ``fold``, ``{"image": {label: [Example, ...]}}``): every ok image of the
    training cohort with its own label, in cohort order then image id."""
    from medvlm.data.cohorts import image_units, load_cohort
    from medvlm.data.images import IMAGE_ORIENTATION

    train = load_cohort(work, "train", fold=fold)
    units = image_units(work, train)
    pool: dict[int, list[Example]] = {c: [] for c in range(task.n_classes)}
    for pid, image_id, label in zip(units["patient_id"], units["image_id"], units["label"], strict=True):
        if 0 <= int(label) < task.n_classes:
            pool[int(label)].append(Example(str(pid), IMAGE_ORIENTATION, 0, int(label),
                                            image_id=str(image_id)))
    return list(train.patient_ids), {IMAGE_ORIENTATION: pool}


class ImageShotSampler(ShotSampler):
    """:class:`~medvlm.vlm.fewshot.ShotSampler` of an image task. A question's key is the engine's meta
    ``(patient_id, image_id)`` (eval-vlm) or ``(patient_id, "image", number)`` (consistency); ``render``:
    ``image_id`` -> PNG bytes."""

    def __init__(self, pool: Mapping[str, Mapping[int, Sequence[Example]]], k: int, *, n_classes: int,
                 seed: int, render: Any) -> None:
        super().__init__(pool, k, n_classes=n_classes, seed=seed, render=render)
        [self._view] = list(pool)
        self._drawn_images: dict[tuple[Any, ...], list[Example]] = {}
        self._pngs: OrderedDict[str, bytes] = OrderedDict()

    def examples(self, patient_id: str, *rest: Any) -> list[Example]:  # type: ignore[override]
        """The examples shown before the question about ``(patient_id, *rest)``."""
        from medvlm.data.controls import derived_seed

        key = (str(patient_id), *(str(r) for r in rest))
        if key not in self._drawn_images:
            self._drawn_images[key] = draw_examples(self.pool[self._view], self.k, n_classes=self.n_classes,
                                                    seed=derived_seed("shots", *key, self.seed))
        return self._drawn_images[key]

    def image(self, example: Example) -> bytes:
        """The example's PNG bytes (the most recently used kept in memory)."""
        if example.image_id in self._pngs:
            self._pngs.move_to_end(example.image_id)
            return self._pngs[example.image_id]
        png = self.render(example.image_id)
        self.n_rendered += 1
        self._pngs[example.image_id] = png
        while len(self._pngs) > _IMAGE_CACHE_SIZE:
            self._pngs.popitem(last=False)
        return png

    def add_column(self, calls: pd.DataFrame) -> pd.DataFrame:
        """``calls`` (rows with ``patient_id, image_id``) with the ``shots`` column last."""
        calls = calls.copy()
        calls[SHOTS_COLUMN] = [self.ids((p, i)) for p, i in zip(calls["patient_id"], calls["image_id"],
                                                                 strict=True)]
        return calls


def make_image_sampler(work: str | Path, k: int, *, task: Task, cohort: str, fold: int,
                       evaluated: Sequence[str], image: str = "real", seed: int = 0) -> ImageShotSampler:
    """The sampler of an image task's run with ``k`` > 0 shots, after the checks of
    :func:`~medvlm.vlm.fewshot.make_sampler` (one-line ConfigError: no evaluated patient in the training
    cohort, ``k`` not above the smallest class's training images)."""
    from medvlm.data.images import image_png

    training, pool = image_pool(work, task=task, fold=fold)
    check_cohort(k, cohort=cohort, fold=fold, evaluated=evaluated, training=training, work=work)
    check_shots(k, pool, task=task, fold=fold, unit="image")
    folder = Path(work)

    def render(image_id: str) -> bytes:
        return image_png(folder, image_id, image=image, seed=seed)

    return ImageShotSampler(pool, k, n_classes=task.n_classes, seed=seed, render=render)
