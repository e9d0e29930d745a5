"""Answers -> predictions: vote counts, the positive-vote share and named reducers (pure functions).

Knows no task: the task supplies its answer codes (code ``i`` < number of classes means class ``i``;
higher codes abstain, like "no glioma"), its positive class and its column names. ``None`` (or NaN) is
an unparsed answer. Abstaining and unparsed answers do not vote.

- share = positive votes / class votes, None when there are none (BraTS grading calls it GLDR); None for
  a task of more than two classes (no positive class).
- ``majority`` (the study's rule): the class with most votes; a tie between non-zero vote counts goes
  to ``tie_break``. Score = share.
- ``mean_prob`` (log-prob scoring): mean class probabilities over the answers that have them; pred by
  the larger mean (ties as above). Score = mean P(positive).
- No evidence, no prediction: a unit without a single class vote (``majority``) or without class
  probabilities (``mean_prob``) abstains: ``pred`` and ``score`` None, counted as abstained.
- "combined" (patient unit): all slices of all orientations of a patient pooled, then the same reducer.
- More than two classes (K > 2): ``majority`` is the plurality vote over the K classes and ``mean_prob``
  the largest mean probability; a tie among the top classes goes to ``tie_break`` when it is one of them,
  else to the lowest label among them (``--tie-break CLASS`` names it; by default the first class, so a
  tie goes to the lowest label among the tied). ``score`` and the share column are None (no positive
  class) and ``Vote.probs``
  holds the K class scores (vote shares, or mean probabilities), written as the task's per-class
  probability columns in units.csv/patients.csv and predictions.csv (:func:`class_score_columns`).

>>> majority([1, 1, 0, 2, None])
Vote(pred=1, score=0.6666666666666666)
>>> majority([0, 1])  # a tie breaks to the positive class by default
Vote(pred=1, score=0.5)
>>> majority([0, 1], tie_break=0).pred
0
>>> majority([2, None])  # no class vote: an abstention, never a guess
Vote(pred=None, score=None)
>>> vote_share(0, 0) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medvlm.registry import Registry

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

COMBINED = "combined"


@dataclass(frozen=True)
class Vote:
    """A prediction: ``pred`` (a label; None = abstained) and ``score`` (P or share of the positive class;
    None if undefined); ``probs``: the K class scores of a task with more than two classes (else None;
    not part of equality)."""

    pred: int | None
    score: float | None
    probs: tuple[float, ...] | None = field(default=None, compare=False, repr=False)


def _is_missing(value) -> bool:
    if value is None or type(value).__name__ == "NAType":
        return True
    return isinstance(value, float) and math.isnan(value)


def vote_counts(choices: Sequence[int | None], n_codes: int = 3) -> tuple[int, ...]:
    """Count answers per code ``0..n_codes-1``, then the unparsed ones (None or NaN).

    >>> vote_counts([0, 1, 1, 2, None])
    (1, 2, 1, 1)
    """
    n = [0] * (n_codes + 1)
    for c in choices:
        if _is_missing(c):
            n[-1] += 1
        elif 0 <= int(c) < n_codes and int(c) == c:
            n[int(c)] += 1
        else:
            raise ValueError(f"answer {c!r} is not one of 0..{n_codes - 1} or None")
    return tuple(n)


def vote_share(n_negative: int, n_positive: int) -> float | None:
    """n_positive / (n_negative + n_positive); None when both are 0.

    >>> vote_share(1, 3)
    0.75
    """
    total = n_negative + n_positive
    return None if total == 0 else n_positive / total


def _decide(values: Sequence[float], tie_break: int) -> int:
    """The label with the largest value; a tie among the largest goes to ``tie_break``."""
    if not 0 <= tie_break < len(values):
        raise ValueError(f"tie_break must be a label 0..{len(values) - 1}")
    top = max(values)
    best = [i for i, v in enumerate(values) if v == top]
    return best[0] if len(best) == 1 else tie_break if tie_break in best else best[0]


def majority(choices: Sequence[int | None], probs: Sequence | None = None, *, tie_break: int = 1,
             n_classes: int = 2, positive: int = 1) -> Vote:
    """The study's vote over class answers (codes >= ``n_classes`` abstain); score = positive share.
    K > 2 classes: the plurality, score None, ``probs`` = each class's share of the class votes.

    >>> v = majority([0, 2, 2, 1, 3, None], n_classes=3, tie_break=0)
    >>> v.pred, v.score, v.probs
    (2, None, (0.25, 0.25, 0.5))
    >>> majority([0, 1, 1, 2, 2], n_classes=3, tie_break=0).pred  # tie_break 0 not among the tied: lowest
    1
    """
    counts = vote_counts([c if _is_missing(c) or int(c) < n_classes else None for c in choices], n_classes)
    votes = counts[:n_classes]
    if sum(votes) == 0:
        return Vote(None, None)
    if n_classes > 2:
        return Vote(_decide(votes, tie_break), None, tuple(v / sum(votes) for v in votes))
    share = vote_share(sum(votes) - votes[positive], votes[positive])
    return Vote(_decide(votes, tie_break), share)


def mean_prob(choices: Sequence[int | None], probs: Sequence | None = None, *, tie_break: int = 1,
              n_classes: int = 2, positive: int = 1) -> Vote:
    """Mean class probabilities over answers with probabilities (``probs`` rows, one value per answer
    code, or None); pred = the larger mean; score = mean P(positive), rounded to 12 decimals so that
    units given the same probabilities get the same score whatever their number of answers (float sums
    differ in the last digits, and an AUC would rank that noise: a no-image control scored 0.9 without
    it); no probabilities -> abstained.

    >>> mean_prob([None] * 3, [(0.3051373661949819, 0.4133778463394049, 0.28)] * 3).score
    0.413377846339
    >>> v = mean_prob([None] * 2, [(0.2, 0.3, 0.5), (0.2, 0.5, 0.3)], n_classes=3, tie_break=0)
    >>> v.pred, v.score, v.probs  # K > 2: no score; a tie of classes 1 and 2 goes to the lower
    (1, None, (0.2, 0.4, 0.4))

    >>> mean_prob([None, None], [(0.2, 0.7, 0.1), (0.4, 0.5, 0.1)])
    Vote(pred=1, score=0.6)
    """
    rows = [p for p in (probs or []) if p is not None and not any(_is_missing(v) for v in p)]
    if not rows:
        return Vote(None, None)
    means = [sum(float(p[i]) for p in rows) / len(rows) for i in range(n_classes)]
    rounded = [round(m, 12) for m in means]
    if n_classes > 2:  # no positive class: no score, the K mean probabilities instead
        return Vote(_decide(rounded, tie_break), None, tuple(rounded))
    return Vote(_decide(rounded, tie_break), round(means[positive], 12))


REDUCERS = Registry("reducer")
REDUCERS.register("majority", majority)
REDUCERS.register("mean_prob", mean_prob)


def class_score_columns(task: Task) -> list[str]:
    """The per-class score columns of a unit table and predictions.csv: the task's probability columns of
    its classes when it has more than two (``Vote.probs``), else none (binary: ``score``)."""
    return list(task.prob_columns[:task.n_classes]) if task.n_classes > 2 else []


def unit_columns(task: Task, keys: Sequence[str]) -> list[str]:
    """Columns of patients.csv (``keys`` = patient_id, orientation) or of a slice unit's table."""
    return [*keys, "label", *task.count_columns, "n_unparsed", task.share_column, "score", "pred",
            *class_score_columns(task)]


def _unit_row(frame, task: Task, fn, tie_break: int) -> dict:
    choices = [None if _is_missing(c) else int(c) for c in frame["choice"]] if len(frame) else []
    prob_cols = task.prob_columns
    has_probs = all(c in frame.columns for c in prob_cols)
    probs = list(zip(*(frame[c] for c in prob_cols), strict=True)) if has_probs and len(frame) else []
    counts = vote_counts(choices, len(task.answers))
    vote = fn(choices, probs, tie_break=tie_break, n_classes=task.n_classes, positive=task.positive_label)
    votes = counts[:task.n_classes]
    # K > 2: no positive class, so no positive share (each class's share is in its probability column)
    share = None if task.n_classes > 2 else vote_share(sum(votes) - votes[task.positive_label],
                                                       votes[task.positive_label])
    scores = class_score_columns(task)
    return {**dict(zip(task.count_columns, counts[:-1], strict=True)), "n_unparsed": counts[-1],
            task.share_column: share, "score": vote.score, "pred": vote.pred,
            **dict(zip(scores, vote.probs or [None] * len(scores), strict=True))}


def patient_rows(slices, labels: dict[str, int], *, task: Task, reducer: str = "majority",
                 tie_break: int = 1, orientations: Sequence[str] | None = None, combined: bool = True):
    """``patients.csv`` rows from per-call rows (a DataFrame), for a task whose unit is the patient.

    ``slices`` has ``patient_id, orientation, choice`` (NaN = unparsed) and, for ``mean_prob``, the
    task's probability columns. Returns a DataFrame with :func:`unit_columns`: one row per patient and
    orientation (in ``orientations`` order; patients in ``labels`` order, those without answers get zero
    counts) plus, with ``combined``, one ``"combined"`` row per patient over all its answers.
    """
    import pandas as pd

    fn = REDUCERS.get(reducer)
    if orientations is None:
        orientations = list(dict.fromkeys(slices["orientation"])) if len(slices) else []
    groups = {key: g for key, g in slices.groupby(["patient_id", "orientation"], sort=False)} if len(slices) \
        else {}
    empty = slices.iloc[0:0]

    def row(pid: str, name: str, frame) -> dict:
        return {"patient_id": pid, "orientation": name, "label": labels[pid],
                **_unit_row(frame, task, fn, tie_break)}

    out = []
    for name in orientations:
        for pid in labels:
            out.append(row(pid, name, groups.get((pid, name), empty)))
    if combined and orientations:
        for pid in labels:
            frames = [groups[(pid, name)] for name in orientations if (pid, name) in groups]
            out.append(row(pid, COMBINED, pd.concat(frames) if frames else empty))
    table = pd.DataFrame(out, columns=unit_columns(task, ["patient_id", "orientation"]))
    table["pred"] = table["pred"].astype("Int64")  # empty where abstained
    return table


def keyed_rows(calls, units, *, task: Task, keys: Sequence[str], reducer: str = "majority",
               tie_break: int = 1):
    """One row per unit of ``units`` (a DataFrame with ``keys`` and ``label``, in its order) from
    per-call rows (repeats of one unit are reduced together), for slice- and image-level tasks."""
    import pandas as pd

    fn = REDUCERS.get(reducer)
    keys = list(keys)
    groups = {k: g for k, g in calls.groupby(keys, sort=False)} if len(calls) else {}
    empty = calls.iloc[0:0]
    out = []
    for unit in units[[*keys, "label"]].itertuples(index=False):
        key = tuple(unit[:len(keys)])
        out.append({**dict(zip(keys, key, strict=True)), "label": int(unit[-1]),
                    **_unit_row(groups.get(key, empty), task, fn, tie_break)})  # tuple keys, even for one key
    table = pd.DataFrame(out, columns=unit_columns(task, keys))
    table["pred"] = table["pred"].astype("Int64")  # empty where abstained
    return table
