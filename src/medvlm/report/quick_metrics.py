"""The few metrics the controls and subgroup tables read, with their bootstrap CIs, fast.

:func:`frame_metrics` is :func:`medvlm.predictions.predictions_metrics` restricted to
:data:`READ_METRICS` (accuracy, sensitivity, specificity, AUC): the estimates come from
:func:`medvlm.metrics.binary_metrics`, the 95% intervals from :func:`bootstrap_cis`, which draws exactly
the resamples of :func:`medvlm.metrics.bootstrap_metrics` (the same seed, the same patients or clusters
drawn) but computes the four metrics of all resamples at once with numpy, so the intervals are the same
and a table of many subgroups costs milliseconds instead of seconds (tested against
``bootstrap_metrics``). Rules as there: percentile intervals, a resample on which a metric is undefined
(no positive drawn) left out for that metric, rows without a score left out of the AUC only.

>>> ci = bootstrap_cis([0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], n_boot=200, seed=1)
>>> from medvlm.metrics import bootstrap_metrics
>>> ci["accuracy_ci"] == bootstrap_metrics([0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], n_boot=200,
...                                        seed=1)["accuracy_ci"]
True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from medvlm.intervals import clip_metric_ci, percentile_interval

#: the metrics these tables show (``recall`` is the sensitivity)
READ_METRICS = ("accuracy", "recall", "specificity", "auc")


def bootstrap_cis(labels: Any, preds: Any, scores: Any = None, *, clusters: Any = None, n_boot: int = 1000,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, list[float] | None]:
    """``{"<metric>_ci": [low, high] or None}`` for :data:`READ_METRICS`, resampling rows (or whole
    ``clusters``, e.g. the patient of each slice) with replacement ``n_boot`` times.

    Args:
        labels, preds: shape (n,), 0/1 (1 the positive class).
        scores: optional shape (n,), P(label 1); NaN rows are left out of the AUC only.
        clusters: optional shape (n,), the cluster (patient) of each row.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    s = None if scores is None else np.asarray(scores, dtype=np.float64)
    if s is not None and np.isnan(s).all():
        s = None
    out: dict[str, list[float] | None] = {f"{m}_ci": None for m in READ_METRICS}
    if y.size == 0 or n_boot < 1:
        return out
    if clusters is None:
        inverse, k = np.arange(y.size), y.size
    else:
        _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
        k = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, k, size=(int(n_boot), k))  # the draws of bootstrap_metrics, in its order
    counts = np.zeros((int(n_boot), k))
    np.add.at(counts, (np.repeat(np.arange(int(n_boot)), k), pick.ravel()), 1.0)
    w = counts[:, inverse]  # (n_boot, n): how often each row is in each resample
    pos, neg = y == 1, y == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "accuracy": w @ (y == p) / w.sum(axis=1),
            "recall": w[:, pos] @ (p[pos] == 1) / w[:, pos].sum(axis=1),
            "specificity": w[:, neg] @ (p[neg] == 0) / w[:, neg].sum(axis=1),
        }
        if s is not None:
            scored = ~np.isnan(s)
            sp, sn = s[pos & scored], s[neg & scored]
            wins = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
            wp, wn = w[:, pos & scored], w[:, neg & scored]
            values["auc"] = np.einsum("bi,ij,bj->b", wp, wins, wn) / (wp.sum(axis=1) * wn.sum(axis=1))
    for m, v in values.items():
        finite = np.where(np.isfinite(v), v, np.nan)
        out[f"{m}_ci"] = clip_metric_ci(m, percentile_interval(finite, 1 - confidence))
    return out


def frame_metrics(df: Any, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:data:`READ_METRICS` (and ``n, tp, fp, tn, fn``) of a predictions frame (``label, pred[, score]``,
    one row per unit; rows of one patient are resampled together when there is a ``slice_index`` or
    ``orientation`` unit key) on its answered rows, with ``<metric>_ci`` when ``n_boot``, ``n_patients``
    and ``n_abstained``. Undefined metrics are None (no warning: the tables say why)."""
    from medvlm.metrics import binary_metrics
    from medvlm.predictions import unit_keys

    answered = df[df["pred"].notna()]
    y = answered["label"].to_numpy(dtype=np.int64)
    p = answered["pred"].to_numpy(dtype=np.int64)
    s = None
    if "score" in answered.columns and answered["score"].notna().any():
        s = answered["score"].to_numpy(dtype=np.float64)
    out: dict[str, Any] = {"n": int(y.size), "n_abstained": int(len(df) - len(answered))}
    if y.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = binary_metrics(y, p, s)
        out.update({k: m[k] for k in ("tp", "fp", "tn", "fn", *READ_METRICS)})
    else:
        out.update({k: None for k in READ_METRICS})
    clustered = len(unit_keys(df)) > 1 and "patient_id" in df.columns
    if "patient_id" in answered.columns:
        out["n_patients"] = int(answered["patient_id"].nunique())
    if n_boot and y.size:
        clusters = answered["patient_id"].astype(str).to_numpy() if clustered else None
        out.update(bootstrap_cis(y, p, s, n_boot=n_boot, seed=seed, clusters=clusters))
    return out


def test_metrics(run: Any, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:data:`READ_METRICS` with CIs of a classifier run on its test-cohort units
    (:func:`medvlm.report.summary.test_cohort_predictions`): the combined metrics of a VLM run's
    ``metrics.json`` when the run evaluated the test cohort (the numbers of the summary table), else
    :func:`frame_metrics` (``n_boot`` resamples). Raises :class:`~medvlm.errors.DataError` without
    test predictions."""
    from medvlm.report.runs import _read_json
    from medvlm.report.summary import test_cohort_predictions

    key = f"test_metrics:{n_boot}:{seed}"
    if key in run.cache:
        return run.cache[key]
    df = test_cohort_predictions(run)
    m = None
    metrics = _read_json(run, "metrics.json") if run.kind == "vlm" else None
    if isinstance(metrics, Mapping) and metrics.get("cohort") == "test":
        combined = (metrics.get("orientations") or {}).get("combined")
        if isinstance(combined, Mapping) and all(k in combined for k in READ_METRICS):
            m = dict(combined)
    if m is None:
        m = frame_metrics(df, n_boot=n_boot, seed=seed)
    run.cache[key] = m
    return m


__all__ = ["READ_METRICS", "bootstrap_cis", "frame_metrics", "test_metrics"]
