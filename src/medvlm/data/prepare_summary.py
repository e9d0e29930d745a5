"""What ``medvlm prepare`` (and the study's prepare stage) did, in a few numbers: :func:`prepare_summary`.

A BraTS task (patient or slice unit) prepares volumes to ``--shape``: ``ok``, ``skipped``, ``reused``,
``shape`` (D x H x W), ``skipped_reasons``. An image task (a task YAML, unit ``image``) has no volume
shape: ``images`` (prepared), ``skipped``, ``reused``, ``size`` (of the prepared images, read back from
``WORK/manifest.csv`` and one ``.npy``), ``classes`` (prepared images per class, in label order),
``skipped_reasons``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def prepare_summary(result: Any, task: Any, *, shape: Sequence[int]) -> dict[str, Any]:
    """The summary of one prepare ``result`` (a :class:`~medvlm.data.prepare.PrepareResult`) for ``task``
    (a :class:`~medvlm.tasks.base.Task`); ``shape``: the ``--shape`` given, used by volume tasks only.

    Keys in the order the run's summary table prints them (module docstring)."""
    reasons = dict(result.skipped())
    if task.unit != "image":
        return {"ok": result.n_ok, "skipped": result.n_skipped, "reused": result.n_reused,
                "shape": "x".join(map(str, shape)), "skipped_reasons": reasons}
    return {"images": result.n_ok, "skipped": result.n_skipped, "reused": result.n_reused,
            "size": image_size(result.work), "classes": class_counts(result.work, task.classes),
            "skipped_reasons": reasons}


def class_counts(work: str | Path, classes: Sequence[str]) -> str:
    """Prepared (``ok``) images per class, in label order: ``"no-lesion 24, lesion 29"``."""
    from medvlm.data.cohorts import read_manifest

    labels = read_manifest(work, ok_only=True)["label"]
    return ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(classes))


def image_size(work: str | Path) -> str:
    """The prepared images' size: ``"64x64"`` (greyscale), ``"28x28 RGB"``, ``"64x64x64"`` (3D, D x H x W);
    ``"28x28 to 512x512"`` when they differ (smallest and largest by area); ``"none"`` without images."""
    import numpy as np

    from medvlm.data.cohorts import read_manifest
    from medvlm.data.images import image_path

    manifest = read_manifest(work, ok_only=True)
    if manifest.empty:
        return "none"
    first = np.load(image_path(work, str(manifest["id"].iloc[0])), mmap_mode="r").shape
    if len(first) == 3 and first[-1] != 3:  # a 3D image (D, H, W): every image of the set has its shape
        return "x".join(map(str, first))
    sides = sorted({(int(h), int(w)) for h, w in zip(manifest["height"], manifest["width"], strict=True)},
                   key=lambda hw: (hw[0] * hw[1], hw))
    text = " to ".join(f"{h}x{w}" for h, w in dict.fromkeys([sides[0], sides[-1]]))
    return f"{text} RGB" if len(first) == 3 else text
