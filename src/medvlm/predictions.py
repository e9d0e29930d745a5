"""The one path from a predictions table to metrics, shared by eval-vlm, train-cnn, ``metrics``,
``compare``, the report and ``run``.

A predictions table has one row per prediction unit: ``patient_id`` plus the unit's key columns
(``orientation, slice_index`` for slice-level tasks, ``image_id`` for image-level ones), ``label``,
``pred`` and optionally ``score`` (P of the positive class, label 1), ``cohort`` and ``fold``.

- :func:`unit_keys` -- the columns that identify a row;
- :func:`select_cohort` -- the rows of one cohort (where a ``cohort`` column exists);
- :func:`fold_ensemble` -- several folds' predictions of the same units -> one row per unit: the mean
  score, ``pred = mean score >= 0.5`` (the majority of the folds' ``pred`` without scores, a tie to the
  positive class);
- :func:`abstain_below` -- selective prediction: the least confident rows become abstentions;
- :func:`predictions_metrics` -- metrics with bootstrap CIs on the answered rows; a row with an empty
  ``pred`` is an abstention (no evidence, no prediction), counted in ``n_abstained`` and ``coverage``;
  rows that share a patient (slices, images) are resampled by patient (the cluster bootstrap), never row
  by row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medvlm.errors import DataError

#: columns that, after ``patient_id``, identify a prediction unit smaller than a patient
UNIT_KEY_COLUMNS = ("orientation", "slice_index", "image_id")


def unit_keys(df: Any) -> list[str]:
    """``["patient_id"]`` for patient rows, plus the unit key columns present for slice or image rows
    (``orientation`` counts as a key only next to ``slice_index``).

    >>> import pandas as pd
    >>> unit_keys(pd.DataFrame(columns=["patient_id", "orientation", "slice_index", "label", "pred"]))
    ['patient_id', 'orientation', 'slice_index']
    >>> unit_keys(pd.DataFrame(columns=["patient_id", "orientation", "label", "pred"]))
    ['patient_id']
    """
    if "slice_index" in df.columns:
        return ["patient_id", *[c for c in ("orientation", "slice_index") if c in df.columns]]
    return ["patient_id", *[c for c in UNIT_KEY_COLUMNS[2:] if c in df.columns]]


def select_cohort(df: Any, cohort: str | None = "test", *, source: str = "predictions", hint: str = "",
                  required: bool = False) -> Any:
    """The rows of ``cohort`` when ``df`` has a ``cohort`` column (all rows otherwise, or with
    ``cohort=None``). DataError naming ``source`` and the cohorts present when there is none, for a row
    with an empty cohort, and (``required``: the user chose the cohort) for a file without the column."""
    if cohort is None:
        return df
    if "cohort" not in df.columns:
        if required:
            raise DataError(f"{source}: no cohort column, so --cohort {cohort} cannot choose rows "
                            "(--cohort all takes every row)")
        return df
    raw = df["cohort"]
    empty = raw.isna() | (raw.astype(str).str.strip() == "")
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: row {row + 1} has an empty cohort ({int(empty.sum())} such rows; train, "
                        "val or test expected)")
    cohorts = raw.astype(str).str.strip()
    if not (cohorts == cohort).any():
        found = ", ".join(sorted(set(cohorts)))
        raise DataError(f"{source}: no row of cohort {cohort!r} (cohorts found: {found}){hint}")
    return df[cohorts == cohort]


def answered_preds(pred: Any, answered: Any) -> Any:
    """The ``pred`` column of 0/1 predictions ``pred`` where ``answered`` (bool, same shape) and empty
    (an abstention) elsewhere: plain ints when every unit is answered, else pandas' nullable Int64.

    >>> answered_preds(np.array([1, 0, 1]), np.array([True, False, True])).tolist()
    [1, <NA>, 1]
    """
    import pandas as pd

    pred = np.asarray(pred).astype(int)
    answered = np.asarray(answered, dtype=bool)
    return pred if answered.all() else pd.array(np.where(answered, pred, None), dtype="Int64")


def aligned_folds(df: Any) -> list[Any]:
    """Each fold's rows of ``df``, indexed by :func:`unit_keys` and put in the first fold's unit order,
    for a fold ensemble; DataError when the folds do not predict the same units."""
    keys = unit_keys(df)
    parts = [part.set_index(keys) for _, part in df.groupby("fold", sort=False)]
    order = parts[0].index
    for part in parts[1:]:
        if len(part.index) != len(order) or not part.index.sort_values().equals(order.sort_values()):
            raise DataError("the folds do not predict the same units; a fold ensemble needs them all")
    return [part.loc[order] for part in parts]


def fold_ensemble(df: Any, *, decimals: int | None = None) -> Any:
    """One row per unit from the rows of several folds (``fold`` column), units in the first fold's
    order: mean ``score`` (rounded to ``decimals`` when given), ``pred`` = mean score >= 0.5, or without
    scores the folds' majority (a tie goes to 1); ``fold`` = ``"ensemble"``. A fold that abstained on a
    unit (empty score or pred) is left out of its mean; a unit no fold answered is an abstention. A frame
    with one fold (or no ``fold`` column) is returned as is. Every fold must predict the same units
    (DataError).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"patient_id": ["a", "b", "a", "b"], "label": [1, 0, 1, 0],
    ...                    "pred": [1, 0, 0, 0], "score": [0.75, 0.25, 0.35, 0.35], "fold": [0, 0, 1, 1]})
    >>> fold_ensemble(df)[["patient_id", "pred", "score", "fold"]].to_dict("list")
    {'patient_id': ['a', 'b'], 'pred': [1, 0], 'score': [0.55, 0.3], 'fold': ['ensemble', 'ensemble']}
    """
    if "fold" not in df.columns or df["fold"].nunique() <= 1:
        return df
    aligned = aligned_folds(df)
    out = aligned[0].drop(columns=[c for c in ("pred", "score", "fold") if c in aligned[0].columns])
    import pandas as pd

    scored = "score" in df.columns and any(p["score"].notna().any() for p in aligned)
    column = "score" if scored else "pred"
    values = np.array([pd.to_numeric(p[column], errors="coerce").to_numpy(dtype=float) for p in aligned])
    answered = ~np.isnan(values).all(axis=0)  # a unit no fold answered stays an abstention
    probs = np.full(values.shape[1], np.nan)
    probs[answered] = np.nanmean(values[:, answered], axis=0)  # the mean over the folds that answered
    pred = (np.nan_to_num(probs) >= 0.5).astype(int)
    out["pred"] = answered_preds(pred, answered)
    if scored:
        out["score"] = np.round(probs, decimals) if decimals is not None else probs
    out["fold"] = "ensemble"
    return out.reset_index()


def n_classes(df: Any, task: Any = None) -> int:
    """K of a predictions table: the task's number of classes, else the largest label or prediction + 1
    (at least 2: a table of 0/1 labels is binary).

    >>> import pandas as pd
    >>> n_classes(pd.DataFrame({"label": [0, 1], "pred": [2, None]})), n_classes(pd.DataFrame({"label": [1],
    ...                                                                                      "pred": [0]}))
    (3, 2)
    """
    import pandas as pd

    if task is not None:
        return int(task.n_classes)
    values = pd.to_numeric(pd.concat([df["label"], df["pred"]]), errors="coerce").dropna()
    return max(2, int(values.max()) + 1) if len(values) else 2


def check_one_row_per_unit(df: Any, source: str | None = None) -> None:
    """DataError naming ``source`` and the first unit (patient, or patient:orientation:slice...) with more
    than one row of ``df``; nothing when every unit has one row (or a key column is missing)."""
    keys = unit_keys(df)
    if all(k in df.columns for k in keys):
        repeated = df[keys].astype(str).agg(":".join, axis=1)
        dup = repeated[repeated.duplicated(keep=False)]
        if len(dup):
            what = "patient" if len(keys) == 1 else "unit"
            n = int((repeated == dup.iloc[0]).sum())
            where = f"{source}: " if source else ""
            raise DataError(f"{where}{what} {dup.iloc[0]} has {n} rows; one row per {what} is needed (choose "
                            "a cohort with --cohort, or one fold)")


def predictions_metrics(df: Any, *, n_boot: int = 0, seed: int = 0, method: str = "percentile",
                        source: str | None = None, task: Any = None) -> dict[str, Any]:
    """Metrics of a predictions table (:func:`medvlm.metrics.metrics_from_frame`) on its answered rows
    (an empty ``pred`` is an abstention; a row without a score is left out of the AUC only), with the
    bootstrap clustered by patient when rows are slices or images (``n_patients`` added then), plus
    ``n_abstained`` and ``coverage`` (answered share of the rows).

    More than two classes (``task`` with K > 2, or without a task labels or predictions beyond 0/1): the
    multi-class metrics (:func:`medvlm.metrics_multiclass.multiclass_frame_metrics`: ``accuracy,
    balanced_accuracy, macro_f1, auc`` (one-vs-rest, from the task's per-class probability columns),
    ``per_class``, ``confusion``), class names from ``task`` (indices without one).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [1, 0, 1, 0], "pred": [1, 0, None, None]})
    >>> m = predictions_metrics(df)
    >>> m["n"], m["accuracy"], m["n_abstained"], m["coverage"]
    (2, 1.0, 2, 0.5)
    """
    from medvlm.metrics import metrics_from_frame

    keys = unit_keys(df)
    check_one_row_per_unit(df, source)
    clusters = "patient_id" if len(keys) > 1 else None
    if clusters is not None and "patient_id" not in df.columns:
        raise DataError("rows are slices (a slice_index column) but there is no patient_id column: the "
                        "confidence intervals must resample patients, so every row needs its patient_id")
    answered = df[df["pred"].notna()].astype({"pred": "int64"})
    n_cls = n_classes(df, task)
    out: dict[str, Any]
    if n_cls > 2:
        from medvlm.metrics_multiclass import class_prob_columns, empty_multiclass, multiclass_frame_metrics

        classes = list(task.classes) if task is not None else n_cls
        if answered.empty:
            out = empty_multiclass(classes, n_boot)
        else:
            out = multiclass_frame_metrics(answered, classes=classes, n_boot=n_boot, seed=seed,
                                           prob_columns=class_prob_columns(n_cls, task), clusters=clusters,
                                           method=method, source=source or "predictions")
    elif answered.empty:
        from medvlm.metrics import CI_METRICS, METRIC_KEYS

        out = {k: None for k in METRIC_KEYS}
        out.update(n=0, tp=0, fp=0, tn=0, fn=0)
        if n_boot:
            out.update({f"{k}_ci": None for k in CI_METRICS})
    else:
        out = metrics_from_frame(answered, n_boot=n_boot, seed=seed, clusters=clusters, method=method)
    if clusters is not None:
        out["n_patients"] = int(answered["patient_id"].nunique())
    out["n_abstained"] = int(len(df) - len(answered))
    out["coverage"] = len(answered) / len(df) if len(df) else None
    return out


def abstain_below(df: Any, level: float, *, source: str = "predictions") -> Any:
    """A copy of ``df`` where rows whose confidence (the score of the predicted class,
    :func:`medvlm.calibration.confidence`) is below ``level`` are abstentions (``pred`` and ``score``
    emptied), so :func:`predictions_metrics` reports coverage and the metrics of the rest.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [1, 0, 1], "pred": [1, 0, 1], "score": [0.9, 0.45, 0.55]})
    >>> abstain_below(df, 0.6)["pred"].tolist()
    [1.0, nan, nan]
    """
    from medvlm.calibration import abstain_below as keep_mask
    from medvlm.metrics import has_scores

    if not has_scores(df):
        raise DataError(f"{source}: --abstain-below needs scores (a score column with P of the positive "
                        "class)")
    out = df.copy()
    answered = out["pred"].notna()
    keep = keep_mask(out["pred"].where(answered, 0).to_numpy(dtype=float), out["score"].to_numpy(dtype=float),
                     level)
    drop = answered & ~keep
    out["pred"] = out["pred"].astype("float64").mask(drop)
    out["score"] = out["score"].astype("float64").mask(drop)
    return out


def summarise_test_cohort(run: Any) -> dict[str, Any]:
    """Accuracy, specificity and AUC of a run folder's test-cohort predictions (``medvlm run``'s stage
    table); {} without them or when several folds predict the test cohort. Labels beyond 0/1 (a
    multi-class task): the accuracy of the answered rows, specificity and AUC None (they are per class)."""
    from pathlib import Path

    import pandas as pd

    from medvlm.metrics import binary_metrics

    path = Path(run) / "predictions.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype={"patient_id": str})
    if "cohort" in frame.columns:
        frame = frame[frame["cohort"] == "test"]
    if "fold" in frame.columns and frame["fold"].nunique() > 1:
        return {}
    if frame.empty:
        return {}
    import warnings

    answered = frame[frame["pred"].notna()]  # an abstention is no prediction (coverage is the run's table)
    scores = answered["score"] if "score" in answered.columns and answered["score"].notna().all() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_classes(frame) > 2:
            from medvlm.metrics_multiclass import multiclass_metrics

            m = multiclass_metrics(answered["label"].astype(int), answered["pred"].astype(int))
            m = {"accuracy": m["accuracy"], "specificity": None, "auc": None}
        else:
            m = binary_metrics(answered["label"].astype(int), answered["pred"].astype(int), scores)
    return {f"test_{k}": (round(m[k], 3) if m[k] is not None else None)
            for k in ("accuracy", "specificity", "auc")}
