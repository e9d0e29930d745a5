"""Folds and cohorts of a CNN run, and what is scored on them.

- which folds to train (:func:`resolve_folds`) and their cohorts (:func:`fold_cohorts`);
- one model's predictions on its cohorts (:func:`score_cohorts`);
- the run's ``predictions.csv`` over folds (:func:`combine_predictions`: the fold's own rows, or
  out-of-fold val rows plus the ensemble on test) and its metrics (:func:`fold_metrics`,
  :func:`cohort_metrics`, :func:`cv_summary`, :func:`run_metrics`).

The file formats are described in :mod:`medvlm.cnn.train`; a task with K > 2 classes in
:mod:`medvlm.cnn.multiclass` (the ``task`` these functions take; None or a binary task: one score per
row).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.cnn.config import CNNConfig
from medvlm.cnn.loop import make_loader, predict
from medvlm.cnn.progress import _Reporter
from medvlm.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from torch import nn


# ------------------------------------------------------------------------------------ folds, cohorts
def resolve_folds(work: str | Path, fold: int | str) -> list[int]:
    """Fold numbers to train: ``[k]`` or every fold of ``splits.json`` for ``"all"``."""
    from medvlm.data.cohorts import read_splits

    splits = read_splits(work)
    n = len(splits["folds"])
    if n == 0:
        raise DataError(f"{Path(work) / 'splits.json'}: the split has no fold; run `medvlm split --folds K`")
    if fold == "all":
        return list(range(n))
    if isinstance(fold, str):
        if not fold.isdigit():
            raise ConfigError(f"--fold must be a fold number or 'all', got {fold!r}")
        fold = int(fold)
    if not 0 <= fold < n:
        raise ConfigError(f"--fold {fold}: {Path(work) / 'splits.json'} has folds 0..{n - 1}")
    return [fold]


def fold_cohorts(work: Path, fold: int) -> dict[str, Any]:
    """The train, val and test cohorts of ``fold`` (test left out if empty), as prediction units of the
    work folder's task: :class:`~medvlm.data.cohorts.Cohort` (patients) or
    :class:`~medvlm.cnn.data.SliceCohort` (labelled slices).

    An empty train or val cohort, a fold out of range or a missing split raise :class:`DataError`.
    """
    from medvlm.cnn.data import unit_cohort
    from medvlm.data.cohorts import load_cohort
    from medvlm.tasks import work_task

    task = work_task(work)
    cohorts = {"train": load_cohort(work, "train", fold=fold), "val": load_cohort(work, "val", fold=fold)}
    try:
        cohorts["test"] = load_cohort(work, "test", fold=fold)
    except DataError as exc:
        if "has no patient" not in str(exc):
            raise
    return {name: unit_cohort(work, cohort, task) for name, cohort in cohorts.items()}


# ------------------------------------------------------------------------------------------- scoring
def _k(task: Any) -> int:
    """The number of classes of ``task`` (2 without one)."""
    return 2 if task is None else int(task.n_classes)


def score_cohorts(work: Path, model: nn.Module, cohorts: dict[str, Any], config: CNNConfig,
                  device: Any, *, fold: int, dtype: Any = None, reporter: _Reporter | None = None,
                  task: Any = None) -> pd.DataFrame:
    """``patient_id[,orientation,slice_index|image_id],cohort,label,pred,score,fold`` rows of ``model`` on
    each cohort (no augmentation; the unit key columns of slice- and image-level tasks after
    ``patient_id``; a ``task`` with K > 2 classes: its per-class probability columns after ``score``,
    :func:`medvlm.cnn.multiclass.prediction_columns`)."""
    import pandas as pd

    from medvlm.cnn.data import make_dataset
    from medvlm.cnn.multiclass import prediction_columns
    from medvlm.predictions import answered_preds

    reporter = reporter or _Reporter(False)
    frames = []
    for name, cohort in cohorts.items():
        loader = make_loader(make_dataset(work, cohort), config, device, seed=config.seed, persistent=False)
        with reporter.bar(f"fold {fold} scoring {name}", len(loader)) as advance:
            probs, _ = predict(model, loader, device, dtype=dtype, progress=advance, n_classes=_k(task))
        keys = cohort.keys() if hasattr(cohort, "keys") else {}
        if _k(task) > 2:
            columns = prediction_columns(probs, task)
        else:
            # a non-finite output (a diverged model) is no evidence: an abstention (empty pred and score)
            finite = np.isfinite(probs)
            columns = {"pred": answered_preds(np.nan_to_num(probs) >= 0.5, finite),
                       "score": np.where(finite, np.round(probs, 6), np.nan)}
        frames.append(pd.DataFrame({"patient_id": cohort.patient_ids, **keys, "cohort": name,
                                    "label": cohort.labels, **columns, "fold": str(fold)}))
    return pd.concat(frames, ignore_index=True)


def combine_predictions(results: dict[int, dict[str, Any]], folds: list[int], *,
                        positive: str = "positive class", task: Any = None) -> tuple[pd.DataFrame, str]:
    """The run's ``predictions.csv`` rows and where its test rows come from.

    One fold: that fold's rows. Several: every fold's val rows (out-of-fold) plus, when every fold has
    test rows, one row per test patient scored by the ensemble (mean P(label 1); ``fold`` = ``ensemble``;
    a ``task`` with K > 2 classes: the mean class probabilities, :func:`medvlm.cnn.multiclass.ensemble`).
    """
    import pandas as pd

    from medvlm.cnn.multiclass import ensemble
    from medvlm.predictions import fold_ensemble

    multiclass = _k(task) > 2

    if len(folds) == 1:
        predictions = results[folds[0]]["predictions"]
        test_source = f"fold {folds[0]} model ({results[folds[0]]['checkpoint']})"
    else:
        oof = pd.concat([r["predictions"][r["predictions"]["cohort"] == "val"] for r in results.values()],
                        ignore_index=True)
        tests = [r["predictions"][r["predictions"]["cohort"] == "test"] for r in results.values()]
        parts = [oof]
        if all(len(t) for t in tests):
            test = pd.concat(tests, ignore_index=True)
            parts.append(ensemble(test, task) if multiclass else fold_ensemble(test, decimals=6))
        predictions = pd.concat(parts, ignore_index=True)
        what = "the class probabilities" if multiclass else f"P({positive})"
        test_source = f"ensemble: mean {what} of the {len(folds)} fold models"
    keys = [c for c in ("orientation", "slice_index", "image_id") if c in predictions.columns]
    probs = list(task.prob_columns[:task.n_classes]) if multiclass else []
    return predictions[["patient_id", *keys, "cohort", "label", "pred", "score", *probs, "fold"]], test_source


# ------------------------------------------------------------------------------------------- metrics
def cohort_metrics(frame: pd.DataFrame, *, n_boot: int, seed: int, notes: list[str] | None = None,
                   where: str = "", task: Any = None) -> dict[str, Any]:
    """Metrics with bootstrap ``_ci`` keys of a predictions frame, through the one shared path
    (:func:`medvlm.predictions.predictions_metrics`; CIs resample patients when rows are slices; a
    ``task`` with K > 2 classes: the multi-class metrics with its class names and probability columns).

    Warnings about undefined metrics are appended to ``notes`` as ``"<where>: <message>"`` lines.
    """
    from medvlm.predictions import predictions_metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predictions_metrics(frame, n_boot=n_boot, seed=seed, task=task if _k(task) > 2 else None)
    if notes is not None:
        notes.extend(f"{where}: {w.message}" for w in caught)
    return out


def cv_summary(per_fold: dict[str, dict[str, dict[str, Any]]], names: Any = None) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; None for one fold) over folds, per cohort and metric
    (``names``; default the binary metrics with intervals, :data:`medvlm.metrics.CI_METRICS`).

    >>> s = cv_summary({"0": {"val": {"auc": 0.5}}, "1": {"val": {"auc": 0.7}}})
    >>> s["n_folds"], s["val"]["auc"]["mean"], round(s["val"]["auc"]["std"], 4), s["val"]["auc"]["n"]
    (2, 0.6, 0.1414, 2)
    """
    from medvlm.metrics import CI_METRICS

    out: dict[str, Any] = {"n_folds": len(per_fold), "folds": [int(k) for k in per_fold]}
    for cohort in ("val", "test"):
        summary = {}
        for metric in names or CI_METRICS:
            values = [float(m[cohort][metric]) for m in per_fold.values()
                      if cohort in m and m[cohort].get(metric) is not None]
            if not values and not any(cohort in m for m in per_fold.values()):
                continue
            summary[metric] = {
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "n": len(values),
            }
        if summary:
            out[cohort] = summary
    return out


def fold_metrics(results: dict[int, dict[str, Any]], config: CNNConfig, notes: list[str], *,
                 task: Any = None) -> dict[str, dict[str, Any]]:
    """``{"k": {"train", "val", "test"}}``: :func:`cohort_metrics` of each fold's own predictions."""
    per_fold: dict[str, dict[str, Any]] = {}
    for fold, res in results.items():
        frame = res["predictions"]
        per_fold[str(fold)] = {c: cohort_metrics(frame[frame["cohort"] == c], n_boot=config.bootstrap,
                                                 seed=config.seed, notes=notes, where=f"fold {fold} {c}",
                                                 task=task)
                               for c in ("train", "val", "test") if (frame["cohort"] == c).any()}
    return per_fold


def run_metrics(results: dict[int, dict[str, Any]], folds: list[int], per_fold: dict[str, dict[str, Any]],
                predictions: pd.DataFrame, test_source: str, config: CNNConfig, notes: list[str], *,
                task: Any = None) -> dict[str, Any]:
    """The content of ``metrics.json`` (see :mod:`medvlm.cnn.train`), ``notes`` included; a ``task``
    with K > 2 classes: the multi-class metrics (cv over :data:`~medvlm.metrics_multiclass.
    MULTICLASS_CI_METRICS`)."""
    from medvlm.metrics_multiclass import MULTICLASS_CI_METRICS

    test_rows = predictions[predictions["cohort"] == "test"]
    metrics: dict[str, Any] = {
        "model": config.model,
        "folds": per_fold,
        "cv": cv_summary(per_fold, MULTICLASS_CI_METRICS if _k(task) > 2 else None),
        "test": (None if not len(test_rows) else per_fold[str(folds[0])]["test"] if len(folds) == 1
                 else cohort_metrics(test_rows, n_boot=config.bootstrap, seed=config.seed, notes=notes,
                                     where="ensemble test", task=task)),
        "test_predictions": test_source,
        "selection": {"metric": config.select_metric, "checkpoint": config.checkpoint},
        "training": {str(f): {k: r[k] for k in ("best_epoch", "best_value", "epochs_trained", "stopped_early",
                                                "checkpoint")}
                     for f, r in results.items()},
        "input_shape": results[folds[0]]["input_shape"],
        "n_parameters": results[folds[0]]["n_parameters"],
    }
    if len(folds) > 1:
        oof_rows = predictions[predictions["cohort"] == "val"]
        metrics["oof_val"] = cohort_metrics(oof_rows, n_boot=config.bootstrap, seed=config.seed, notes=notes,
                                            where="out-of-fold val", task=task)
    metrics["notes"] = notes
    return metrics
