"""The CNN on a task with K > 2 classes (MedMNIST-style sets: labels 0..K-1).

How it differs from the binary network (K = 2, unchanged: one logit, ``sigmoid`` = P(label 1), BCE):

- the network has K outputs (:func:`n_outputs`), ``softmax`` gives the class probabilities, and it
  trains with the K-class cross-entropy (:mod:`medvlm.cnn.loop`); ``--oversample`` draws every class
  equally often (:class:`~medvlm.cnn.data.EpochSampler` weights ``1 / count(class)``), as for two;
- predictions.csv has the columns of a multi-class VLM run (:func:`prediction_columns`): ``pred`` =
  the argmax of the class probabilities (the first class on an exact tie), ``score`` = P(the task's
  positive label; the last class where none is named, as the VLM runs write it), then one probability
  column per class, the task's ``prob_columns`` (``p_<class slug>``), before ``fold``; so ``medvlm
  metrics``, the report and the K x K confusion matrix read it as they read a VLM run;
- the per-epoch validation metrics (history.csv keeps its columns; :func:`epoch_metrics`):
  ``val_accuracy``, ``val_auc`` = the macro one-vs-rest ROC AUC (None when a class is absent from the
  validation cohort: the epoch is then chosen by the lowest validation loss, the tie-breaker),
  ``val_balanced_accuracy``, ``val_f1`` = the macro F1, ``val_mcc`` = the K-class Matthews correlation
  (Gorodkin's R_K, as ``sklearn.metrics.matthews_corrcoef``). The default ``--select-metric val_auc``
  therefore selects by the macro one-vs-rest AUC;
- the fold ensemble on the test cohort (``--fold all``, :func:`ensemble`): the mean of the folds'
  class probabilities, ``pred`` its argmax.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

#: decimals of the probabilities written to predictions.csv (as the binary ``score``)
DECIMALS = 6


def n_outputs(n_classes: int) -> int:
    """Logits of the network: 1 for a binary task (sigmoid), K for K > 2 classes (softmax).

    >>> n_outputs(2), n_outputs(3)
    (1, 3)
    """
    return 1 if n_classes <= 2 else int(n_classes)


def mcc(confusion: Any) -> float | None:
    """The K-class Matthews correlation coefficient (Gorodkin 2004) of a K x K confusion matrix (rows
    true, columns predicted); None where undefined (every row in one true or one predicted class).

    >>> mcc([[2, 0, 0], [0, 2, 0], [0, 0, 2]]), round(mcc([[1, 1, 0], [0, 2, 0], [0, 1, 1]]), 4)
    (1.0, 0.5774)
    """
    cm = np.asarray(confusion, dtype=np.float64)
    n, correct = cm.sum(), np.trace(cm)
    predicted, true = cm.sum(axis=0), cm.sum(axis=1)
    den = math.sqrt((n * n - float(predicted @ predicted)) * (n * n - float(true @ true)))
    return None if den == 0 else float((correct * n - float(predicted @ true)) / den)


def epoch_metrics(labels: Any, probs: Any) -> dict[str, Any]:
    """The validation metrics of one epoch, warnings silenced: ``accuracy, auc, balanced_accuracy, f1,
    mcc`` (None where undefined). ``probs``: shape (n,) = P(label 1) of a binary task
    (:func:`medvlm.metrics.binary_metrics`, ``pred = P >= 0.5``), or (n, K) class probabilities (the
    module docstring's K-class definitions, ``pred`` = argmax).
    """
    from medvlm.metrics import binary_metrics
    from medvlm.metrics_multiclass import multiclass_metrics

    probs = np.asarray(probs, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if probs.ndim == 1:
            return binary_metrics(labels, (probs >= 0.5).astype(int), probs)
        k = probs.shape[1]
        m = multiclass_metrics(np.asarray(labels, dtype=np.int64), probs.argmax(axis=1), probs, classes=k)
    return {"accuracy": m["accuracy"], "auc": m["auc"], "balanced_accuracy": m["balanced_accuracy"],
            "f1": m["macro_f1"], "mcc": mcc(m["confusion"]) if m["n"] else None}


def prediction_columns(probs: Any, task: Any) -> dict[str, Any]:
    """``pred``, ``score`` and the per-class probability columns of predictions.csv from class
    probabilities ``probs`` (n, K): ``pred`` = argmax, ``score`` = P(``task.positive_label``), column
    ``task.prob_columns[i]`` = P(label i), rounded to :data:`DECIMALS`. A row with a non-finite
    probability (a diverged model) is an abstention: empty ``pred``, ``score`` and probabilities.

    >>> from types import SimpleNamespace
    >>> task = SimpleNamespace(n_classes=3, positive_label=2, prob_columns=["p_a", "p_b", "p_c"])
    >>> cols = prediction_columns([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], task)
    >>> list(cols), cols["pred"].tolist(), cols["score"].tolist()
    (['pred', 'score', 'p_a', 'p_b', 'p_c'], [1, 2], [0.3, 0.8])
    """
    from medvlm.predictions import answered_preds

    probs = np.asarray(probs, dtype=np.float64).reshape(-1, task.n_classes)
    finite = np.isfinite(probs).all(axis=1)
    shown = np.where(finite[:, None], np.round(probs, DECIMALS), np.nan)
    pred = answered_preds(np.nan_to_num(probs).argmax(axis=1), finite)
    columns = list(task.prob_columns[:task.n_classes])
    return {"pred": pred, "score": shown[:, task.positive_label],
            **{c: shown[:, i] for i, c in enumerate(columns)}}


def ensemble(df: Any, task: Any) -> Any:
    """One row per unit from the test rows of several folds (``fold`` column; units in the first fold's
    order): the mean of the folds' class probabilities (a fold that abstained on a unit left out of its
    mean; no fold answered: an abstention), ``pred`` its argmax, ``score`` its positive-class column,
    ``fold`` = ``"ensemble"``. Every fold must predict the same units (DataError).

    >>> import pandas as pd
    >>> from types import SimpleNamespace
    >>> task = SimpleNamespace(n_classes=3, positive_label=2, prob_columns=["p_a", "p_b", "p_c"])
    >>> df = pd.DataFrame({"patient_id": ["x", "x"], "label": [1, 1], "pred": [0, 1], "score": [0.1, 0.2],
    ...                    "p_a": [0.5, 0.1], "p_b": [0.4, 0.7], "p_c": [0.1, 0.2], "fold": ["0", "1"]})
    >>> ensemble(df, task)[["pred", "score", "p_a", "p_b", "fold"]].to_dict("records")
    [{'pred': 1, 'score': 0.15, 'p_a': 0.3, 'p_b': 0.55, 'fold': 'ensemble'}]
    """
    import pandas as pd

    from medvlm.predictions import aligned_folds

    columns = list(task.prob_columns[:task.n_classes])
    aligned = aligned_folds(df)
    values = np.array([p[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
                       for p in aligned])  # (folds, units, K)
    answered = np.isfinite(values).all(axis=2)  # (folds, units)
    total = np.where(answered[:, :, None], values, 0.0).sum(axis=0)
    count = answered.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count[:, None]  # NaN where no fold answered: an abstention
    out = aligned[0].drop(columns=["pred", "score", *columns, "fold"])
    for name, value in prediction_columns(mean, task).items():
        out[name] = value
    out["fold"] = "ensemble"
    return out.reset_index()
