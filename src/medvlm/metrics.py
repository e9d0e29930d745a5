"""Binary classification metrics with bootstrap confidence intervals (pure functions).

Conventions: labels are 0 and 1, and 1 is the positive class (each task names its classes,
:mod:`medvlm.tasks`). ``preds`` are hard 0/1 predictions; ``scores`` are optional P(label 1) (or any score
where higher means "more of class 1", e.g. the share of positive votes), used only for the ROC AUC.

Undefined values (a zero denominator, one class only, no scores) are ``None`` in the result and a
:class:`MetricWarning` says why; nothing crashes on degenerate input.

>>> m = binary_metrics([0, 0, 1, 1], [0, 1, 1, 1], [0.1, 0.6, 0.7, 0.9])
>>> (m["tp"], m["fp"], m["tn"], m["fn"], m["accuracy"], m["auc"])
(2, 1, 1, 0, 0.75, 1.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import ConfigError, DataError
from medvlm.intervals import bca_interval, clip_metric_ci, percentile_interval

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Keys of :func:`binary_metrics`, in this order.
METRIC_KEYS = ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "specificity", "f1",
               "balanced_accuracy", "mcc", "auc", "brier", "ece", "log_loss", "aurc")
#: Metrics of the scores as probabilities (:mod:`medvlm.calibration`); None without scores.
SCORE_METRICS = ("brier", "ece", "log_loss", "aurc")
#: Metrics that get a bootstrap confidence interval (``<metric>_ci``).
CI_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "balanced_accuracy", "mcc", "auc",
              *SCORE_METRICS)
BOOTSTRAP_METHODS = ("percentile", "bca")
#: ``metrics``/``calibrate --bootstrap`` refuse fewer resamples than this (a 95% interval from 3 is noise)
MIN_RESAMPLES = 100


class MetricWarning(UserWarning):
    """A metric is undefined for this input (zero denominator, one class only, no scores)."""


ArrayLike = Sequence[float] | np.ndarray


# ----------------------------------------------------------------------------------------------- checks
def _as_binary(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.all(np.isin(arr, (0, 1))):
        bad = arr[~np.isin(arr, (0, 1))][0].item()  # a Python number: numpy 2 reprs as np.int64(2)
        raise DataError(f"{name} must contain only 0 and 1 (the positive class), found {bad!r}")
    return arr.astype(np.int64)


def _check_inputs(labels: Any, preds: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = _as_binary(labels, "labels")
    p = _as_binary(preds, "preds")
    if y.shape != p.shape:
        raise DataError(f"labels and preds differ in length ({y.size} vs {p.size})")
    s = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != y.shape:
            raise DataError(f"labels and scores differ in length ({y.size} vs {s.size})")
        if np.isnan(s).all():
            s = None
    return y, p, s


# ---------------------------------------------------------------------------------------------- formulas
def _div(num: float, den: float) -> float:
    return num / den if den else math.nan


def _from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Derived metrics from the four counts; NaN where undefined."""
    n = tp + fp + tn + fn
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    specificity = _div(tn, tn + fp)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    balanced = (recall + specificity) / 2  # NaN when either class is absent
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    mcc = (tp * tn - fp * fn) / math.sqrt(den) if den else math.nan
    return {"accuracy": _div(tp + tn, n), "precision": precision, "recall": recall,
            "specificity": specificity, "f1": f1, "balanced_accuracy": balanced, "mcc": mcc}


def auc_score(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half); NaN with one class only.

    Identical to :func:`sklearn.metrics.roc_auc_score` but fast enough for bootstrap loops. Rows whose
    score is NaN are left out.

    >>> auc_score([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9])
    0.875
    """
    from scipy.stats import rankdata

    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        y, s = y[~np.isnan(s)], s[~np.isnan(s)]
    n1 = int((y == 1).sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _metric_vector(y: np.ndarray, p: np.ndarray, s: np.ndarray | None) -> np.ndarray:
    """CI_METRICS as a float vector (NaN where undefined): the bootstrap's inner loop."""
    tp = int(np.sum((y == 1) & (p == 1)))
    fp = int(np.sum((y == 0) & (p == 1)))
    tn = int(np.sum((y == 0) & (p == 0)))
    fn = int(np.sum((y == 1) & (p == 0)))
    d = _from_counts(tp, fp, tn, fn)
    d["auc"] = auc_score(y, s) if s is not None else math.nan
    d.update(_score_metrics(y, p, s, fast=True))
    return np.array([d[k] for k in CI_METRICS], dtype=np.float64)


def _score_metrics(y: np.ndarray, p: np.ndarray, s: np.ndarray | None, *, fast: bool = False
                   ) -> dict[str, float]:
    """:data:`SCORE_METRICS` on the rows with a score (NaN without scores, or scores outside [0, 1]).
    ``fast``: plain numpy (the bootstrap loop), else scikit-learn (same values, tested)."""
    from medvlm import calibration as cal

    nan = dict.fromkeys(SCORE_METRICS, math.nan)
    if s is None:
        return nan
    keep = ~np.isnan(s)
    y, p, s = y[keep], p[keep], s[keep]
    if not s.size or s.min() < 0 or s.max() > 1:
        return nan
    if fast:
        brier, ece, loss = cal.calibration_vector(y, s)
    else:
        brier, ece = cal.brier_score(y, s), cal.expected_calibration_error(y, s)
        loss = cal.log_loss_score(y, s)
    return {"brier": brier, "ece": ece, "log_loss": loss, "aurc": cal.aurc(y, p, s)}


def _none_if_nan(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ----------------------------------------------------------------------------------------------- public
def binary_metrics(labels: ArrayLike, preds: ArrayLike, scores: ArrayLike | None = None) -> dict[str, Any]:
    """Confusion counts and metrics of hard predictions, plus ROC AUC from scores.

    Args:
        labels: shape (n,), true classes 0/1, 1 = the positive class.
        preds: shape (n,), predicted classes 0/1.
        scores: optional shape (n,), P(label 1) or any score increasing with it; all-NaN counts as absent,
            rows with a NaN score are left out of the AUC only (with a warning).

    Returns:
        dict with keys :data:`METRIC_KEYS`: ``n, tp, fp, tn, fn`` (int), ``accuracy, precision,
        recall`` (sensitivity), ``specificity, f1, balanced_accuracy, mcc, auc`` (float or None where
        undefined, with a :class:`MetricWarning`). MCC and AUC are computed with scikit-learn. With
        scores in [0, 1]: ``brier, ece, log_loss`` (:mod:`medvlm.calibration`) and ``aurc`` (area under
        the risk-coverage curve of ``preds`` ranked by confidence); None without scores.

    >>> m = binary_metrics([1, 1, 1, 0], [1, 1, 1, 1])
    >>> m["recall"], m["specificity"], m["auc"] is None
    (1.0, 0.0, True)
    """
    y, p, s = _check_inputs(labels, preds, scores)
    tp = int(np.sum((y == 1) & (p == 1)))
    fp = int(np.sum((y == 0) & (p == 1)))
    tn = int(np.sum((y == 0) & (p == 0)))
    fn = int(np.sum((y == 1) & (p == 0)))
    derived = _from_counts(tp, fp, tn, fn)
    if not math.isnan(derived["mcc"]):
        from sklearn.metrics import matthews_corrcoef

        derived["mcc"] = float(matthews_corrcoef(y, p))
    auc = math.nan
    undefined: list[str] = []
    if s is not None and np.isnan(s).any():
        keep = ~np.isnan(s)
        warnings.warn(f"auc computed on the {int(keep.sum())} of {s.size} rows that have a score "
                      f"({int((~keep).sum())} without one left out)", MetricWarning, stacklevel=2)
        ys, s_ok = y[keep], s[keep]
    else:
        ys, s_ok = y, s
    if s is None:
        undefined.append("auc (no scores)")
    elif len(set(ys.tolist())) < 2:
        undefined.append("auc (only one class among the labels)")
    else:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(ys, s_ok))
    out: dict[str, Any] = {"n": int(y.size), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for key in CI_METRICS[:CI_METRICS.index("auc")]:  # the metrics of the confusion counts
        value = _none_if_nan(derived[key])
        if value is None:
            undefined.append(key)
        out[key] = value
    out["auc"] = _none_if_nan(auc)
    for key, value in _score_metrics(y, p, s).items():
        out[key] = _none_if_nan(value)
    if s is not None and out["brier"] is None and not np.isnan(s).all():
        undefined.append("brier, ece, log_loss, aurc (scores outside [0, 1] are not probabilities)")
    quiet = {"auc (no scores)"}
    loud = [u for u in undefined if u not in quiet]
    if loud:
        warnings.warn(f"undefined metrics set to None (tp={tp}, fp={fp}, tn={tn}, fn={fn}): "
                      + ", ".join(loud), MetricWarning, stacklevel=2)
    return out


def cluster_groups(n: int, clusters: ArrayLike | None) -> list[np.ndarray]:
    """The row indices a bootstrap draws together: one group per row (``clusters`` None), else one group
    per distinct cluster id (e.g. the patient of each slice), groups in sorted id order, rows in order.

    >>> [g.tolist() for g in cluster_groups(4, ["b", "a", "b", "c"])]
    [[1], [0, 2], [3]]
    """
    if clusters is None:
        return [np.array([i]) for i in range(n)]
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise DataError(f"clusters and labels differ in length ({c.size} vs {n})")
    _, inverse = np.unique(c, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))
    return np.split(order, bounds[:-1])


def check_bootstrap(n_boot: int, confidence: float, method: str) -> None:
    """The bootstrap's arguments, as :func:`bootstrap_metrics` and :func:`medvlm.metrics_multiclass.
    bootstrap_multiclass` take them: ConfigError (one line) unless ``method`` is one of
    :data:`BOOTSTRAP_METHODS`, ``n_boot`` >= 1 and 0 < ``confidence`` < 1 (checked in that order)."""
    if method not in BOOTSTRAP_METHODS:
        raise ConfigError(f"The 'method' parameter must be one of {BOOTSTRAP_METHODS}. "
                          f"Got {method!r} instead.")
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")


def bootstrap_metrics(labels: ArrayLike, preds: ArrayLike, scores: ArrayLike | None = None, *,
                      n_boot: int = 1000, seed: int = 0, clusters: ArrayLike | None = None,
                      confidence: float = 0.95, method: str = "percentile") -> dict[str, list[float] | None]:
    """Bootstrap confidence intervals of :data:`CI_METRICS`, resampling patients (or clusters).

    Each of ``n_boot`` resamples draws rows with replacement (seeded with ``numpy.random.
    default_rng(seed)``, so the same call gives the same intervals). With ``clusters`` (shape (n,),
    e.g. the patient id of each slice), whole clusters are drawn with replacement and all their rows
    kept: the cluster bootstrap for slice-level data. A resample on which a metric is undefined (e.g.
    no positive patient drawn) is left out for that metric only; a :class:`MetricWarning` reports how many.

    Args:
        labels, preds, scores: as for :func:`binary_metrics`.
        n_boot: number of resamples (>= 1).
        seed: random seed.
        clusters: optional cluster id per row.
        confidence: two-sided level, default 0.95.
        method: ``"percentile"`` (default) or ``"bca"`` (bias-corrected and accelerated, jackknife
            over rows or clusters).

    Returns:
        ``{"<metric>_ci": [low, high] or None}`` for every metric of :data:`CI_METRICS` (None when
        undefined on every resample, e.g. ``auc_ci`` without scores).

    >>> ci = bootstrap_metrics([0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], n_boot=200, seed=1)
    >>> lo, hi = ci["accuracy_ci"]; lo <= 4 / 6 <= hi
    True
    """
    check_bootstrap(n_boot, confidence, method)
    y, p, s = _check_inputs(labels, preds, scores)
    alpha = 1 - confidence
    rng = np.random.default_rng(seed)
    groups = cluster_groups(y.size, clusters)
    k = len(groups)
    out: dict[str, list[float] | None] = {f"{m}_ci": None for m in CI_METRICS}
    if k == 0:
        return out
    boot = np.empty((int(n_boot), len(CI_METRICS)))
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in range(int(n_boot)):
            pick = rng.integers(0, k, size=k)
            idx = np.concatenate([groups[i] for i in pick]) if clusters is not None else pick
            boot[b] = _metric_vector(y[idx], p[idx], None if s is None else s[idx])
        jack = None
        if method == "bca":
            jack = np.empty((k, len(CI_METRICS)))
            for i in range(k):
                rest = [g for j, g in enumerate(groups) if j != i]
                keep = np.concatenate(rest) if rest else np.array([], dtype=np.int64)
                jack[i] = _metric_vector(y[keep], p[keep], None if s is None else s[keep])
            estimate = _metric_vector(y, p, s)
    skipped = []
    for j, m in enumerate(CI_METRICS):
        col = boot[:, j]
        n_nan = int(np.isnan(col).sum())
        if (m == "auc" or m in SCORE_METRICS) and s is None:
            continue
        if n_nan > 0:
            skipped.append(f"{m}: {n_nan}")
        if method == "bca":
            out[f"{m}_ci"] = clip_metric_ci(m, bca_interval(col, float(estimate[j]), jack[:, j], alpha))
        else:
            out[f"{m}_ci"] = clip_metric_ci(m, percentile_interval(col, alpha))
    if skipped:
        warnings.warn(f"bootstrap: resamples where a metric was undefined were left out ({', '.join(skipped)}"
                      f" of {int(n_boot)})", MetricWarning, stacklevel=2)
    return out


def metrics_with_ci(labels: ArrayLike, preds: ArrayLike, scores: ArrayLike | None = None, *,
                    n_boot: int = 1000, seed: int = 0, clusters: ArrayLike | None = None,
                    method: str = "percentile") -> dict[str, Any]:
    """:func:`binary_metrics` merged with :func:`bootstrap_metrics` (``n_boot=0``: no CIs)."""
    out = binary_metrics(labels, preds, scores)
    if n_boot:
        out.update(bootstrap_metrics(labels, preds, scores, n_boot=n_boot, seed=seed, clusters=clusters,
                                     method=method))
    return out


# ---------------------------------------------------------------------------------------------- reading
def read_predictions(path: str | Path, *, n_classes: int | None = 2) -> pd.DataFrame:
    """Read and validate a predictions CSV (``label,pred`` required; ``score``, ``patient_id``, ...).

    ``n_classes``: K of a multi-class task (labels 0..K-1), or None for any K (``medvlm metrics`` on a
    file without its task; :mod:`medvlm.metrics_multiclass`). The default, 2, is the binary case:
    ``label`` must be 0 or 1 on every row, ``pred`` 0, 1 or empty (an abstention: the model gave no
    answer to decide on), ``score`` empty or within [0, 1] (an all-empty
    ``score`` column counts as no scores; an empty score, e.g. a VLM patient without votes, is left out
    of the AUC only). ``patient_id`` and ``cohort`` are read as strings. Any
    violation raises :class:`DataError` naming the file, the row (1-based data row, as a spreadsheet
    shows it after the header) and the column.

    Returns:
        DataFrame with ``label`` as int64, ``pred`` as nullable Int64 (empty = abstained), ``score`` as
        float64 (when present), others as read.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "cohort": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("label", "pred") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (columns found: {', '.join(df.columns)}; "
                        "need at least label,pred)")
    if df.empty:
        raise DataError(f"{path}: no data rows")
    for col in ("label", "pred"):
        values = pd.to_numeric(df[col], errors="coerce")
        if n_classes == 2:
            bad = ~values.isin([0, 1])
        else:
            bad = values.isna() | (values < 0) | (values != values.round())
            if n_classes is not None:
                bad |= values >= n_classes
        if col == "pred":
            bad &= df[col].notna()  # an empty pred is an abstention
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raw = df[col].iloc[row]
            shown = "empty" if pd.isna(raw) else repr(str(raw))
            what = ("0 or 1 (1 = the positive class)" if n_classes == 2 else "a class label 0, 1, ..."
                    if n_classes is None else f"a class label 0..{n_classes - 1}")
            raise DataError(f"{path}: row {row + 1}, column {col!r}: {shown} is not {what}")
        df[col] = values.astype(np.int64) if col == "label" else values.astype("Int64")
    if "score" in df.columns:
        values = pd.to_numeric(df["score"], errors="coerce")
        nonnum = values.isna() & df["score"].notna()
        out_of_range = values.notna() & ((values < 0) | (values > 1))
        bad = nonnum | out_of_range
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row + 1}, column 'score': {str(df['score'].iloc[row])!r} is not a "
                            "probability in [0, 1]")
        df["score"] = values.astype(np.float64)
    if "patient_id" in df.columns:
        df["patient_id"] = df["patient_id"].str.strip()  # "p3 " is p3: a padded id must not hide a duplicate
        empty = df["patient_id"].isna() | (df["patient_id"] == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{path}: row {row + 1}, column 'patient_id' is empty")
    return df


def has_scores(df: pd.DataFrame) -> bool:
    """Whether a predictions frame carries a usable ``score`` column."""
    return "score" in df.columns and bool(df["score"].notna().any())


def metrics_from_frame(df: pd.DataFrame, *, n_boot: int = 0, seed: int = 0,
                       clusters: str | None = None, method: str = "percentile") -> dict[str, Any]:
    """:func:`metrics_with_ci` on a frame from :func:`read_predictions` (``clusters``: column name)."""
    scores = df["score"].to_numpy() if has_scores(df) else None
    cl = df[clusters].to_numpy() if clusters else None
    return metrics_with_ci(df["label"].to_numpy(), df["pred"].to_numpy(), scores, n_boot=n_boot, seed=seed,
                           clusters=cl, method=method)
