"""Data of the ``brats-tumour`` task: whole-brain volumes and labelled slices (does it show tumour?).

``prepare_tumour`` prepares the BraTS folder like the study (:func:`medvlm.data.prepare.prepare`) but
keeps the whole brain (crop = the brain's box, not the tumour's), then writes ``WORK/units.csv``: one
row per labelled slice, ``patient_id, orientation, slice_index, label, tumour_fraction``, slice indices
canonical (RAS+) as everywhere else.

Per patient and orientation (from the mask and the FLAIR volume):

- label 1: slices whose tumour (seg > 0) covers at least :data:`SLIVER_FRACTION` of the slice's brain;
- left out: slices with only a sliver of tumour (some, but less than that);
- label 0: a seeded draw of as many tumour-free slices as there are tumour slices (fewer when fewer
  exist), among slices holding at least :data:`MIN_BRAIN_SHARE` of the orientation's largest brain
  area (so that nearly empty edge slices are not the negatives) and at least :data:`NEGATIVE_MARGIN`
  slices away from any slice with tumour. The draw is seeded by ``seed``,
  patient and orientation: the same data give the same units.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvlm.data.slices import AXIS

UNIT_COLUMNS = ["patient_id", "orientation", "slice_index", "label", "tumour_fraction"]
#: a slice is a tumour slice when its tumour covers at least this share of its brain area
SLIVER_FRACTION = 0.01
#: a tumour-free slice may be a negative when its brain area is at least this share of the largest
MIN_BRAIN_SHARE = 0.25
#: ... and when it lies at least this many slices from any slice with tumour (so that a resized volume
#: never puts a negative and a positive slice on one plane, and a negative is clearly tumour-free)
NEGATIVE_MARGIN = 3


def slice_units(seg: np.ndarray, brain: np.ndarray, orientation: str, *, rng: np.random.Generator
                ) -> list[tuple[int, int, float]]:
    """``[(slice_index, label, tumour_fraction), ...]`` of one canonical volume along ``orientation``,
    in increasing slice index (see the module docstring for the rule).

    >>> seg = np.zeros((1, 1, 6), int); seg[0, 0, 1:3] = 1
    >>> brain = np.ones((1, 1, 6), bool)
    >>> [u[:2] for u in slice_units(seg, brain, "axial", rng=np.random.default_rng(0))]
    [(1, 1), (2, 1), (5, 0)]
    """
    axis = AXIS[orientation]
    other = tuple(a for a in range(3) if a != axis)
    tumour = (seg > 0).sum(axis=other).astype(np.int64)
    area = (brain | (seg > 0)).sum(axis=other).astype(np.int64)
    fraction = np.divide(tumour, area, out=np.zeros(len(area), dtype=np.float64), where=area > 0)
    positives = [int(i) for i in np.flatnonzero((tumour > 0) & (fraction >= SLIVER_FRACTION))]
    big_enough = area >= MIN_BRAIN_SHARE * max(int(area.max()), 1)
    with_tumour = np.flatnonzero(tumour > 0)
    index = np.arange(len(area))
    distance = (np.min(np.abs(index[:, None] - with_tumour[None, :]), axis=1) if len(with_tumour)
                else np.full(len(area), len(area)))
    candidates = np.flatnonzero((tumour == 0) & big_enough & (area > 0) & (distance >= NEGATIVE_MARGIN))
    n_neg = min(len(positives), len(candidates))
    negatives = sorted(int(i) for i in rng.choice(candidates, size=n_neg, replace=False)) if n_neg else []
    units = [(i, 1, float(fraction[i])) for i in positives] + [(i, 0, 0.0) for i in negatives]
    return sorted(units)


def _canonical(path: str) -> np.ndarray:
    import nibabel as nib

    data = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    return data[..., 0] if data.ndim == 4 else data


def patient_units(row: Any, *, seed: int, orientations: Sequence[str]) -> list[dict[str, Any]]:
    """The labelled slices of one manifest row (an ``ok`` patient), every orientation."""
    seg = _canonical(str(row["seg"]))
    brain = _canonical(str(row["flair"])) != 0
    out = []
    for orientation in orientations:
        rng = np.random.default_rng([seed, zlib.crc32(str(row["patient_id"]).encode()), AXIS[orientation]])
        for index, label, fraction in slice_units(seg, brain, orientation, rng=rng):
            out.append({"patient_id": row["patient_id"], "orientation": orientation, "slice_index": index,
                        "label": label, "tumour_fraction": round(fraction, 6)})
    return out


def prepare_tumour(data: str | Path, out: str | Path, *, seed: int = 0, **options: Any):
    """``prepare --task brats-tumour``: whole-brain volumes + ``WORK/units.csv`` (module docstring).

    ``options`` go to :func:`medvlm.data.prepare.prepare` (shape, workers, progress, ...)."""
    import pandas as pd

    from medvlm._io import write_text_atomic
    from medvlm.data.cohorts import UNITS_FILE
    from medvlm.data.prepare import prepare
    from medvlm.data.slices import ORIENTATIONS

    result = prepare(data, out, crop="brain", **options)
    rows = []
    for row in result.rows:
        if row["status"] == "ok":
            rows.extend(patient_units(row, seed=seed, orientations=ORIENTATIONS))
    frame = pd.DataFrame(rows, columns=UNIT_COLUMNS)
    write_text_atomic(Path(result.work) / UNITS_FILE, frame.to_csv(index=False))
    return result
