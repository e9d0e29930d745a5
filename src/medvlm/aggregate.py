"""Slice answers -> patient predictions: vote counts, GLDR and named reducers (pure functions).

Conventions: patient labels LGG = 0, HGG = 1 (HGG positive); VLM answers 0 LGG, 1 HGG, 2 no glioma,
``None`` unparsed. "No glioma" and unparsed answers do not vote.

- GLDR (glioma-level detection ratio) = n_hgg / (n_lgg + n_hgg), None when both are 0.
- ``majority`` (the study's rule): pred 1 where n_hgg > n_lgg, 0 where n_lgg > n_hgg. **Ties break to
  HGG (1)** by default (``tie_break=1``; the prior of BraTS, 80 % HGG) -- including a patient with no
  LGG/HGG vote at all, whose score stays None. Score = GLDR.
- ``mean_prob`` (log-prob scoring): mean P(LGG) and mean P(HGG) over the slices that have class
  probabilities; pred 1 where mean P(HGG) > mean P(LGG), 0 where less, ties as above. Score = mean P(HGG).
- "combined": all slices of all orientations of a patient pooled, then the same reducer.

>>> majority([1, 1, 0, 2, None])
Vote(pred=1, score=0.6666666666666666)
>>> majority([0, 1])  # a tie breaks to HGG
Vote(pred=1, score=0.5)
>>> majority([0, 1], tie_break=0).pred
0
>>> gldr(0, 0) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from medvlm.registry import Registry

COMBINED = "combined"
PATIENT_COLUMNS = ["patient_id", "orientation", "label", "n_lgg", "n_hgg", "n_ng", "n_unparsed", "gldr",
                   "score", "pred"]


@dataclass(frozen=True)
class Counts:
    """Answers of one patient/orientation: LGG, HGG, no-glioma and unparsed counts."""

    n_lgg: int
    n_hgg: int
    n_ng: int
    n_unparsed: int


@dataclass(frozen=True)
class Vote:
    """A patient prediction: ``pred`` (0 LGG, 1 HGG) and ``score`` (higher = more HGG; None if undefined)."""

    pred: int
    score: float | None


def _is_missing(value) -> bool:
    if value is None or type(value).__name__ == "NAType":
        return True
    return isinstance(value, float) and math.isnan(value)


def vote_counts(choices: Sequence[int | None]) -> Counts:
    """Count answers (0, 1, 2; None or NaN = unparsed).

    >>> vote_counts([0, 1, 1, 2, None])
    Counts(n_lgg=1, n_hgg=2, n_ng=1, n_unparsed=1)
    """
    n = [0, 0, 0, 0]
    for c in choices:
        if _is_missing(c):
            n[3] += 1
        elif int(c) in (0, 1, 2):
            n[int(c)] += 1
        else:
            raise ValueError(f"answer {c!r} is not 0, 1, 2 or None")
    return Counts(*n)


def gldr(n_lgg: int, n_hgg: int) -> float | None:
    """n_hgg / (n_lgg + n_hgg); None when both are 0.

    >>> gldr(1, 3)
    0.75
    """
    total = n_lgg + n_hgg
    return None if total == 0 else n_hgg / total


def _decide(hgg: float, lgg: float, tie_break: int) -> int:
    if tie_break not in (0, 1):
        raise ValueError("tie_break must be 0 (LGG) or 1 (HGG)")
    return 1 if hgg > lgg else 0 if lgg > hgg else tie_break


def majority(choices: Sequence[int | None], probs: Sequence | None = None, *, tie_break: int = 1) -> Vote:
    """The study's vote: LGG vs HGG answers; ties (and no votes) -> ``tie_break``; score = GLDR."""
    counts = vote_counts(choices)
    return Vote(_decide(counts.n_hgg, counts.n_lgg, tie_break), gldr(counts.n_lgg, counts.n_hgg))


def mean_prob(choices: Sequence[int | None], probs: Sequence | None = None, *, tie_break: int = 1) -> Vote:
    """Mean class probabilities over slices with probabilities (``probs`` rows ``(p_lgg, p_hgg, p_ng)``
    or None); pred by mean P(HGG) vs mean P(LGG); score = mean P(HGG); no probabilities -> (tie, None).

    >>> mean_prob([None, None], [(0.2, 0.7, 0.1), (0.4, 0.5, 0.1)])
    Vote(pred=1, score=0.6)
    """
    rows = [p for p in (probs or []) if p is not None and not any(_is_missing(v) for v in p)]
    if not rows:
        return Vote(tie_break, None)
    p_lgg = sum(float(p[0]) for p in rows) / len(rows)
    p_hgg = sum(float(p[1]) for p in rows) / len(rows)
    return Vote(_decide(round(p_hgg, 12), round(p_lgg, 12), tie_break), p_hgg)


REDUCERS = Registry("reducer")
REDUCERS.register("majority", majority)
REDUCERS.register("mean_prob", mean_prob)


def patient_rows(slices, labels: dict[str, int], *, reducer: str = "majority", tie_break: int = 1,
                 orientations: Sequence[str] | None = None, combined: bool = True):
    """``patients.csv`` rows from ``slices.csv`` rows (a DataFrame).

    ``slices`` has ``patient_id, orientation, choice`` (NaN = unparsed) and, for ``mean_prob``,
    ``p_lgg, p_hgg, p_ng``. Returns a DataFrame with :data:`PATIENT_COLUMNS`: one row per patient and
    orientation (in ``orientations`` order; patients in ``labels`` order, those without slices get zero
    counts) plus, with ``combined``, one ``"combined"`` row per patient over all its slices.
    """
    import pandas as pd

    fn = REDUCERS.get(reducer)
    if orientations is None:
        orientations = list(dict.fromkeys(slices["orientation"])) if len(slices) else []
    groups = {key: g for key, g in slices.groupby(["patient_id", "orientation"], sort=False)} if len(slices) \
        else {}
    has_probs = all(c in slices.columns for c in ("p_lgg", "p_hgg", "p_ng"))
    empty = slices.iloc[0:0]

    def row(pid: str, name: str, frame) -> dict:
        choices = [None if _is_missing(c) else int(c) for c in frame["choice"]] if len(frame) else []
        probs = (list(zip(frame["p_lgg"], frame["p_hgg"], frame["p_ng"], strict=True))
                 if has_probs and len(frame) else [])
        counts = vote_counts(choices)
        vote = fn(choices, probs, tie_break=tie_break)
        return {"patient_id": pid, "orientation": name, "label": labels[pid], "n_lgg": counts.n_lgg,
                "n_hgg": counts.n_hgg, "n_ng": counts.n_ng, "n_unparsed": counts.n_unparsed,
                "gldr": gldr(counts.n_lgg, counts.n_hgg), "score": vote.score, "pred": vote.pred}

    out = []
    for name in orientations:
        for pid in labels:
            out.append(row(pid, name, groups.get((pid, name), empty)))
    if combined and orientations:
        for pid in labels:
            frames = [groups[(pid, name)] for name in orientations if (pid, name) in groups]
            out.append(row(pid, COMBINED, pd.concat(frames) if frames else empty))
    return pd.DataFrame(out, columns=PATIENT_COLUMNS)
