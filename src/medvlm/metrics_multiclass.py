"""Multi-class metrics (K classes, labels 0..K-1) with patient-clustered bootstrap CIs (pure functions).

Conventions: class ``i`` of a task has label ``i`` (:mod:`medvlm.tasks.base`); ``preds`` are hard labels
0..K-1; ``probs`` is an optional (n, K) array whose column ``i`` is the score of class ``i`` (a
probability, or the share of votes for class ``i``: higher means "more of class i"), used only for the
one-vs-rest ROC AUC. A binary task keeps :mod:`medvlm.metrics`; :func:`medvlm.predictions.
predictions_metrics` sends a table here when its task has more than two classes or its labels or
predictions go beyond 0/1.

**predictions.csv of a multi-class task.** ``patient_id[,unit keys],cohort,label,pred,score`` as for a
binary task, plus one probability column per class: class ``i``'s column is the task's
``answers[i].prob_column`` (:func:`class_prob_columns`; ``p_<class name as a slug>`` for the built-in
and YAML tasks, e.g. ``p_normal, p_pneumonia``); without a task (``medvlm metrics`` on a file without
the run's run.json) the columns ``p_0 .. p_<K-1>``. The AUC is computed when every class has its column;
a row with an empty probability is left out of the AUC only.

Definitions (equal to scikit-learn's, tested): ``accuracy`` = correct / n; ``balanced_accuracy`` = the
mean recall over the classes present among the labels (``balanced_accuracy_score``); ``macro_f1`` = the
mean F1 over the classes present among the labels or predictions (``f1_score(average="macro")``);
``auc`` = the mean over classes of the one-vs-rest ROC AUC (``roc_auc_score(multi_class="ovr",
average="macro")``), defined only when every one of the K classes is among the labels. Per class
(``per_class``, one dict per class in label order): ``precision`` = tp / predicted, ``recall``
(sensitivity) = tp / support, ``specificity`` = tn / (tn + fp), ``f1`` = 2tp / (2tp + fp + fn),
``support`` (rows of that label), ``auc`` (one-vs-rest); None where a denominator is 0. ``confusion``:
K x K counts, rows the true class, columns the predicted class. ``notes``: a class that is never a
label is left out of ``balanced_accuracy``, and of ``macro_f1`` too unless it is predicted (then its F1
is 0); each such case is a line of ``notes`` naming the classes an average covers
(:func:`coverage_notes`), so an average over fewer than K classes is never silent.

>>> m = multiclass_metrics([0, 1, 2, 2], [0, 2, 2, 2], classes=["a", "b", "c"])
>>> m["accuracy"], m["balanced_accuracy"], m["confusion"]
(0.75, 0.6666666666666666, [[1, 0, 0], [0, 0, 1], [0, 0, 2]])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medvlm.errors import ConfigError, DataError
from medvlm.intervals import bca_interval, clip_metric_ci, percentile_interval
from medvlm.metrics import (
    MetricWarning,
    _none_if_nan,
    auc_score,
    check_bootstrap,
    cluster_groups,
)

#: metrics of a multi-class table that get a bootstrap confidence interval (``<metric>_ci``)
MULTICLASS_CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
#: keys of one ``per_class`` entry, in this order
PER_CLASS_KEYS = ("class", "label", "support", "precision", "recall", "specificity", "f1", "auc")
#: the probability column of class ``i`` when no task names it
INDEX_PROB_PREFIX = "p_"


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ClassSpec:
    """Class names in label order and their probability columns: what :func:`medvlm.predictions.
    predictions_metrics` reads from a :class:`~medvlm.tasks.base.Task` (``classes``, ``n_classes``,
    ``prob_columns``), for a task known only from a run's run.json."""

    classes: tuple[str, ...]
    prob_columns: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ClassSpec:
        """Names with the columns the tasks give them: ``p_<slug of the name>``.

        >>> ClassSpec.from_names(["normal", "Pleural effusion"]).prob_columns
        ('p_normal', 'p_pleural_effusion')
        """
        from medvlm.tasks.base import slug

        return cls(tuple(names), tuple(f"{INDEX_PROB_PREFIX}{slug(n)}" for n in names))


def check_inferred_classes(df: Any, source: str) -> int:
    """K of a predictions frame read without its task (``read_predictions(path, n_classes=None)``): the
    largest label + 1 (2 for 0/1 labels: the binary file, to be read as one). With K > 2 every label
    0..K-1 must occur (a lone label 3 is a typo, not a fourth class) and no prediction may reach K;
    DataError naming ``source``, the row and the column otherwise."""
    labels = df["label"].to_numpy(dtype=np.int64)
    k = max(2, int(labels.max()) + 1) if labels.size else 2
    if k == 2:
        return k
    missing = sorted(set(range(k)) - set(labels.tolist()))
    if missing:
        row = int(np.flatnonzero(labels == k - 1)[0])
        raise DataError(f"{source}: row {row + 1}, column 'label': {k - 1} is not 0 or 1, and as a class "
                        f"label of a {k}-class file the labels 0..{k - 1} would all occur ({missing[0]} "
                        "does not); fix the value, or keep the file in its run folder (run.json names "
                        "the task)")
    preds = df["pred"].astype("Float64").fillna(-1).to_numpy(dtype=np.float64)
    if (preds >= k).any():
        row = int(np.flatnonzero(preds >= k)[0])
        raise DataError(f"{source}: row {row + 1}, column 'pred': {int(preds[row])} is not a class label "
                        f"0..{k - 1} (the labels name {k} classes)")
    return k


def class_prob_columns(classes: Sequence[str] | int, task: Any = None) -> list[str]:
    """The per-class probability columns of predictions.csv: the task's (``prob_columns`` of its classes:
    ``answers[i].prob_column``; a :class:`ClassSpec` too), else ``p_0 .. p_<K-1>`` (``classes``: names
    or K).

    >>> class_prob_columns(3)
    ['p_0', 'p_1', 'p_2']
    """
    if task is not None:
        return list(task.prob_columns[:task.n_classes])
    k = classes if isinstance(classes, int) else len(classes)
    return [f"{INDEX_PROB_PREFIX}{i}" for i in range(k)]


def _labels(values: Any, name: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size:
        f = arr.astype(np.float64)
        bad = ~((f >= 0) & (f < n_classes) & (f == np.floor(f)))
        if bad.any():
            raise DataError(f"{name} must be class labels 0..{n_classes - 1}, found {arr[bad][0].item()!r}")
    return arr.astype(np.int64)


def _check(labels: Any, preds: Any, probs: Any, n_classes: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if n_classes < 2:
        raise ConfigError(f"a classification task needs at least 2 classes, got {n_classes}")
    y = _labels(labels, "labels", n_classes)
    p = _labels(preds, "preds", n_classes)
    if y.shape != p.shape:
        raise DataError(f"labels and preds differ in length ({y.size} vs {p.size})")
    s = None
    if probs is not None:
        s = np.asarray(probs, dtype=np.float64)
        if s.shape != (y.size, n_classes):
            raise DataError(f"probs must have shape (n, K) = ({y.size}, {n_classes}), got {s.shape}")
        if np.isnan(s).all():
            s = None
    return y, p, s


def n_classes_of(classes: Sequence[str] | int | None, labels: Any, preds: Any) -> int:
    """K: the number of ``classes`` (names or a count), else the largest label or prediction + 1 (at
    least 2)."""
    if classes is not None:
        return classes if isinstance(classes, int) else len(classes)
    values = [int(v) for v in (*np.asarray(labels).tolist(), *np.asarray(preds).tolist())]
    return max([1, *values]) + 1


# ---------------------------------------------------------------------------------------------- formulas
def confusion_matrix(labels: Any, preds: Any, n_classes: int) -> np.ndarray:
    """K x K counts, ``[true, predicted]`` (as :func:`sklearn.metrics.confusion_matrix` with
    ``labels=range(K)``).

    >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3).tolist()
    [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    """
    y = _labels(labels, "labels", n_classes)
    p = _labels(preds, "preds", n_classes)
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, math.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class counts and rates (NaN where undefined) from a K x K confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    fp = predicted - tp
    fn = support - tp
    tn = cm.sum() - tp - fp - fn
    return {"support": support, "predicted": predicted, "precision": _ratio(tp, predicted),
            "recall": _ratio(tp, support), "specificity": _ratio(tn, tn + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def _summary(cm: np.ndarray, rates: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """(accuracy, balanced accuracy, macro F1), NaN where undefined (no rows)."""
    n = cm.sum()
    accuracy = float(np.trace(cm) / n) if n > 0 else math.nan
    present = rates["support"] > 0
    balanced = float(rates["recall"][present].mean()) if present.any() else math.nan
    seen = present | (rates["predicted"] > 0)
    macro_f1 = float(rates["f1"][seen].mean()) if seen.any() else math.nan
    return accuracy, balanced, macro_f1


def coverage_notes(names: Sequence[str], support: Any, predicted: Any) -> list[str]:
    """Which classes the macro averages cover, said whenever it is not all K (scikit-learn's semantics,
    which :func:`_summary` follows): ``balanced_accuracy`` averages the recall of the classes among the
    labels only; ``macro_f1`` averages the F1 of the classes among the labels or the predictions, so a
    class in neither is left out and a class predicted but never a label counts with F1 0. ``support``
    and ``predicted``: shape (K,), the rows of each label and the predictions of each class. [] for no
    rows (every metric is undefined then) and when every class is a label.

    >>> coverage_notes(["a", "b", "c"], [2, 0, 2], [2, 0, 2])  # doctest: +NORMALIZE_WHITESPACE
    ['balanced_accuracy: the mean recall of the 2 of 3 classes among the labels (a, c); never a label: b',
     'macro_f1: the mean F1 of the 2 of 3 classes among the labels or predictions (a, c); neither a label
     nor a prediction: b']
    """
    k = len(names)
    labelled = [i for i in range(k) if support[i] > 0]
    if not labelled or len(labelled) == k:
        return []

    def listed(idx: list[int]) -> str:
        return ", ".join(names[i] for i in idx)

    unlabelled = [i for i in range(k) if support[i] == 0]
    notes = [f"balanced_accuracy: the mean recall of the {len(labelled)} of {k} classes among the labels "
             f"({listed(labelled)}); never a label: {listed(unlabelled)}"]
    seen = [i for i in range(k) if support[i] > 0 or predicted[i] > 0]
    neither = [i for i in unlabelled if predicted[i] == 0]
    only_predicted = [i for i in unlabelled if predicted[i] > 0]
    if neither:
        notes.append(f"macro_f1: the mean F1 of the {len(seen)} of {k} classes among the labels or "
                     f"predictions ({listed(seen)}); neither a label nor a prediction: {listed(neither)}")
    if only_predicted:
        notes.append(f"macro_f1: counts with F1 0 the classes predicted but never a label: "
                     f"{listed(only_predicted)}")
    return notes


def ovr_auc(labels: Any, probs: Any, n_classes: int) -> tuple[float, np.ndarray]:
    """(macro one-vs-rest ROC AUC, per-class AUCs): class ``i`` against the rest ranked by ``probs[:, i]``
    (ties count one half); rows with any NaN probability are left out. The macro value is NaN unless every
    class is among the labels (scikit-learn refuses such input); a class AUC is NaN when its class is
    absent or is every row.

    >>> macro, per = ovr_auc([0, 1, 2], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], 3)
    >>> macro, per.tolist()
    (1.0, [1.0, 1.0, 1.0])
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(probs, dtype=np.float64)
    keep = ~np.isnan(s).any(axis=1)
    y, s = y[keep], s[keep]
    per = np.array([auc_score((y == i).astype(np.int64), s[:, i]) for i in range(n_classes)])
    return float(per.mean()), per  # NaN when a class is absent: its AUC is NaN


def _vector(y: np.ndarray, p: np.ndarray, s: np.ndarray | None, n_classes: int) -> np.ndarray:
    """:data:`MULTICLASS_CI_METRICS` as a float vector (NaN where undefined): the bootstrap's inner loop."""
    cm = np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    acc, bal, f1 = _summary(cm, _per_class(cm))
    auc = ovr_auc(y, s, n_classes)[0] if s is not None else math.nan
    return np.array([acc, bal, f1, auc])


# ----------------------------------------------------------------------------------------------- public
def multiclass_metrics(labels: Any, preds: Any, probs: Any = None, *,
                       classes: Sequence[str] | int | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, one-vs-rest macro AUC, the per-class table and the confusion
    matrix (definitions in the module docstring).

    Args:
        labels: shape (n,), true labels 0..K-1.
        preds: shape (n,), predicted labels 0..K-1 (answered rows only: abstentions are counted by
            :func:`medvlm.predictions.predictions_metrics`).
        probs: optional shape (n, K), column ``i`` the score of class ``i``; all-NaN counts as absent.
        classes: class names in label order (or K); None: K from the data, names ``"0".."K-1"``.

    Returns:
        ``{"n", "n_classes", "classes", "accuracy", "balanced_accuracy", "macro_f1", "auc", "per_class",
        "confusion", "notes"}``; undefined values are None, with a :class:`~medvlm.metrics.MetricWarning`
        (not for an AUC without probabilities). ``notes``: which classes a macro average covers when it
        is not all K (:func:`coverage_notes`), and why the AUC is undefined when probabilities were
        given; [] when every class is a label (and with no rows).
    """
    k = n_classes_of(classes, labels, preds)
    names = [str(i) for i in range(k)] if classes is None or isinstance(classes, int) else list(classes)
    y, p, s = _check(labels, preds, probs, k)
    cm = confusion_matrix(y, p, k)
    rates = _per_class(cm)
    accuracy, balanced, macro_f1 = _summary(cm, rates)
    auc, per_auc = (math.nan, np.full(k, math.nan))
    notes = coverage_notes(names, rates["support"], rates["predicted"])
    if s is not None:
        if np.isnan(s).any():
            kept = int((~np.isnan(s).any(axis=1)).sum())
            warnings.warn(f"auc computed on the {kept} of {y.size} rows that have every class probability",
                          MetricWarning, stacklevel=2)
        auc, per_auc = ovr_auc(y, s, k)
        if math.isnan(auc):
            absent = [names[i] for i in range(k) if not np.isin(i, y[~np.isnan(s).any(axis=1)])]
            warnings.warn(f"auc undefined: no row of class {', '.join(absent)} (one-vs-rest needs every "
                          "class)", MetricWarning, stacklevel=2)
            notes.append(f"auc: undefined, one-vs-rest needs every class among the labels (with "
                         f"probabilities); no row of class {', '.join(absent)}")
    if y.size == 0:
        warnings.warn("no rows: every metric is undefined", MetricWarning, stacklevel=2)
    per_class = []
    for i in range(k):
        row: dict[str, Any] = {"class": names[i], "label": i, "support": int(rates["support"][i])}
        for key in PER_CLASS_KEYS[3:7]:
            row[key] = _none_if_nan(float(rates[key][i]))
        row["auc"] = _none_if_nan(float(per_auc[i]))
        per_class.append(row)
    return {"n": int(y.size), "n_classes": k, "classes": names, "accuracy": _none_if_nan(accuracy),
            "balanced_accuracy": _none_if_nan(balanced), "macro_f1": _none_if_nan(macro_f1),
            "auc": _none_if_nan(auc), "per_class": per_class, "confusion": cm.tolist(), "notes": notes}


def bootstrap_multiclass(labels: Any, preds: Any, probs: Any = None, *, n_classes: int | None = None,
                         n_boot: int = 1000, seed: int = 0, clusters: Any = None, confidence: float = 0.95,
                         method: str = "percentile") -> dict[str, list[float] | None]:
    """Bootstrap CIs of :data:`MULTICLASS_CI_METRICS`, drawn as :func:`medvlm.metrics.bootstrap_metrics`
    draws them (same seed, same resamples): rows, or whole ``clusters`` (the patient of each row) with
    replacement; a resample where a metric is undefined is left out for it (a MetricWarning counts them).

    Returns ``{"<metric>_ci": [low, high] or None}`` (``auc_ci`` None without probabilities).
    """
    check_bootstrap(n_boot, confidence, method)
    k = n_classes_of(n_classes, labels, preds)
    y, p, s = _check(labels, preds, probs, k)
    groups = cluster_groups(y.size, clusters)
    out: dict[str, list[float] | None] = {f"{m}_ci": None for m in MULTICLASS_CI_METRICS}
    if not groups:
        return out
    rng = np.random.default_rng(seed)
    boot = np.empty((int(n_boot), len(MULTICLASS_CI_METRICS)))
    for b in range(int(n_boot)):
        pick = rng.integers(0, len(groups), size=len(groups))
        idx = np.concatenate([groups[i] for i in pick]) if clusters is not None else pick
        boot[b] = _vector(y[idx], p[idx], None if s is None else s[idx], k)
    if method == "bca":
        jack = np.empty((len(groups), len(MULTICLASS_CI_METRICS)))
        for i in range(len(groups)):
            rest = [g for j, g in enumerate(groups) if j != i]
            keep = np.concatenate(rest) if rest else np.array([], dtype=np.int64)
            jack[i] = _vector(y[keep], p[keep], None if s is None else s[keep], k)
        estimate = _vector(y, p, s, k)
    skipped = []
    alpha = 1 - confidence
    for j, m in enumerate(MULTICLASS_CI_METRICS):
        if m == "auc" and s is None:
            continue
        col = boot[:, j]
        n_nan = int(np.isnan(col).sum())
        if n_nan:
            skipped.append(f"{m}: {n_nan}")
        out[f"{m}_ci"] = clip_metric_ci(m, bca_interval(col, float(estimate[j]), jack[:, j], alpha)
                                        if method == "bca" else percentile_interval(col, alpha))
    if skipped:
        warnings.warn(f"bootstrap: resamples where a metric was undefined were left out ({', '.join(skipped)}"
                      f" of {int(n_boot)})", MetricWarning, stacklevel=2)
    return out


def multiclass_frame_metrics(df: Any, *, classes: Sequence[str] | int | None = None,
                             prob_columns: Sequence[str] | None = None, n_boot: int = 0, seed: int = 0,
                             clusters: str | None = None, method: str = "percentile",
                             source: str = "predictions") -> dict[str, Any]:
    """:func:`multiclass_metrics` (+ :func:`bootstrap_multiclass` with ``n_boot``) on the answered rows
    of a predictions frame (``label``, ``pred``; ``clusters``: a column name). ``prob_columns`` (default
    :func:`class_prob_columns`) are used when all are present; a value outside [0, 1] or not a number is a
    DataError naming ``source``, the row and the column."""
    import pandas as pd

    k = n_classes_of(classes, df["label"], df["pred"])
    columns = list(prob_columns) if prob_columns is not None else class_prob_columns(k)
    probs = None
    if columns and all(c in df.columns for c in columns):
        values = df[columns].apply(pd.to_numeric, errors="coerce")
        bad = (values.isna() & df[columns].notna()) | (values < 0) | (values > 1)
        if bad.to_numpy().any():
            row, col = (int(v[0]) for v in np.nonzero(bad.to_numpy()))
            raise DataError(f"{source}: row {row + 1}, column {columns[col]!r}: "
                            f"{str(df[columns[col]].iloc[row])!r} is not a probability in [0, 1]")
        probs = values.to_numpy(dtype=np.float64)
    y, p = df["label"].to_numpy(), df["pred"].to_numpy()
    names = classes if classes is not None else k
    out = multiclass_metrics(y, p, probs, classes=names)
    if n_boot:
        cl = df[clusters].to_numpy() if clusters else None
        out.update(bootstrap_multiclass(y, p, probs, n_classes=k, n_boot=n_boot, seed=seed, clusters=cl,
                                        method=method))
    return out


def empty_multiclass(classes: Sequence[str] | int, n_boot: int = 0) -> dict[str, Any]:
    """The result for a table with no answered row (every metric None, every count 0)."""
    k = classes if isinstance(classes, int) else len(classes)
    names = [str(i) for i in range(k)] if isinstance(classes, int) else list(classes)
    out: dict[str, Any] = {
        "n": 0, "n_classes": k, "classes": names, "accuracy": None, "balanced_accuracy": None,
        "macro_f1": None, "auc": None,
        "per_class": [{"class": names[i], "label": i, "support": 0,
                       **dict.fromkeys(PER_CLASS_KEYS[3:], None)} for i in range(k)],
        "confusion": [[0] * k for _ in range(k)], "notes": []}
    if n_boot:
        out.update({f"{m}_ci": None for m in MULTICLASS_CI_METRICS})
    return out
