"""The report's comparison tables: summary rows per run, test-cohort predictions and paired tests.

:func:`summary_rows` gives the rows of the summary table (per fold and cohort for a CNN run, per
orientation for a VLM run); :func:`test_cohort_predictions` the one-row-per-patient test predictions
of a classifier run; :func:`paired_tests` McNemar and DeLong between every pair of classifier runs.
Classifier runs are the kinds in :data:`CLASSIFIER_KINDS`: CNN, VLM and calibrated runs (``medvlm
calibrate``, one row on its APPLY cohort).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.intervals import clip_metric_ci
from medvlm.report.format import _ci_text, _p, fmt
from medvlm.report.roles import _model_name, calibration_source, role_badge, vlm_role
from medvlm.report.runs import RunData, _read_csv, _read_json, _valid_predictions, run_task
from medvlm.report.sample_notes import paired_class_counts, paired_verdicts
from medvlm.report.work import different_work, same_folder

#: the summary table's metric columns, the answer first: AUC and MCC lead, the rest follow
SUMMARY_METRICS = (
    ("auc", "AUC"),
    ("mcc", "MCC"),
    ("balanced_accuracy", "Bal. acc."),
    ("recall", "Sensitivity"),
    ("specificity", "Specificity"),
    ("accuracy", "Accuracy"),
    ("precision", "Precision"),
    ("f1", "F1"),
    ("ece", "ECE"),
    ("brier", "Brier"),
)
#: the summary table's columns when every run's task has more than two classes (no positive class: no
#: sensitivity, specificity, precision, score calibration or TP/FP/TN/FN; per class: each run's section)
SUMMARY_METRICS_MULTICLASS = (
    ("auc", "AUC (one vs rest)"),
    ("macro_f1", "Macro F1"),
    ("balanced_accuracy", "Bal. acc."),
    ("accuracy", "Accuracy"),
)
CLASSIFIER_KINDS = ("cnn", "vlm", "calibrated")
ORIENTATION_ORDER = ("axial", "coronal", "sagittal", "combined")
COHORT_ORDER = ("train", "val", "test")
# A of "A vs B" is the role ranked first: a calibrated arm before its raw run, the CNN before the VLMs, a
# general VLM with a calibrated threshold before the fine-tuned VLM (does the threshold do what
# fine-tuning does?); "calibrated" alone: a calibrated run whose raw run is unknown.
ROLE_RANK = {"calibrated-cnn": 0, "cnn": 1, "calibrated-fine-tuned": 2, "calibrated-few-shot": 3,
             "calibrated-general": 4, "fine-tuned": 5, "few-shot": 6, "general": 7, "calibrated": 8}
ROLE_NAME = {"cnn": "CNN", "fine-tuned": "fine-tuned VLM", "general": "general VLM",
             "calibrated-cnn": "CNN + calibrated threshold",
             "calibrated-fine-tuned": "fine-tuned VLM + calibrated threshold",
             "calibrated-general": "general VLM + calibrated threshold", "calibrated": "calibrated run",
             "few-shot": "few-shot VLM", "calibrated-few-shot": "few-shot VLM + calibrated threshold"}
#: the comparisons the study is about, in the order the report lists them; a calibrated arm against a
#: raw run of its own role counts only when it calibrates that very run
KEY_COMPARISONS = (
    ("fine-tuned", "general"),
    ("few-shot", "general"),  # zero-shot vs few-shot vs fine-tuned: do examples help, as much as training?
    ("fine-tuned", "few-shot"),
    ("cnn", "general"),
    ("cnn", "fine-tuned"),
    ("cnn", "few-shot"),
    ("calibrated-general", "general"),
    ("calibrated-general", "fine-tuned"),
    ("calibrated-fine-tuned", "fine-tuned"),
    ("calibrated-few-shot", "few-shot"),
    ("calibrated-cnn", "cnn"),
)


# ------------------------------------------------------------------------------------------ metric rows
def _cell(key: str, value: Any, ci: Any) -> dict[str, str]:
    """A metric cell: the estimate, and below it its CI (kept inside the metric's possible range, also
    for a metrics.json written before intervals were clipped), or the ± SD of a mean over folds."""
    if isinstance(value, Mapping) and "mean" in value:
        sd = value.get("std", value.get("sd"))
        return {"value": fmt(value["mean"]), "ci": f"± {fmt(sd)}" if sd is not None else ""}
    return {"value": fmt(value), "ci": _ci_text(clip_metric_ci(key, ci))}


def _metric_cells(m: Mapping[str, Any]) -> list[dict[str, str]]:
    return [_cell(key, m.get(key), m.get(f"{key}_ci")) for key, _ in SUMMARY_METRICS]


def _row(run: RunData, subset: str, m: Mapping[str, Any], source: str, *, lead: bool = True,
         parsed: str = "") -> dict[str, Any]:
    """One row of the summary table; ``lead``: in the table itself (False: folded away with the per-fold
    rows); ``parsed``: the share of the VLM's answers that could be parsed ("" for other kinds)."""
    n = m.get("n")
    counts = "/".join(fmt(m.get(k)) for k in ("tp", "fp", "tn", "fn")) if "tp" in m else ""
    return {
        "run": run.name,
        "kind": run.kind,
        "role": role_badge(vlm_role(run)),
        "model": _model_name(run),
        "model_short": Path(_model_name(run)).name if "/" in _model_name(run) else _model_name(run),
        "subset": subset,
        "n": fmt(n),
        "n_note": (f"+{m['n_abstained']} abstained, coverage {fmt(m.get('coverage'), 2)}"
                   if m.get("n_abstained") else ""),
        "counts": counts,
        "cells": _metric_cells(m),
        "cells_multiclass": [_cell(key, m.get(key), m.get(f"{key}_ci"))
                             for key, _ in SUMMARY_METRICS_MULTICLASS],
        "source": source,
        "lead": lead,
        "parsed": parsed,
    }


def _looks_like_metrics(d: Any) -> bool:
    return isinstance(d, Mapping) and any(k in d for k in ("accuracy", "auc", "tp", "n"))


def _frame_metrics(df: Any, n_boot: int, seed: int) -> dict[str, Any]:
    from medvlm.predictions import predictions_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predictions_metrics(df, n_boot=n_boot, seed=seed)


def summary_rows(run: RunData, *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of the summary table for a CNN (per fold and cohort), VLM (per orientation) or calibrated run
    (one row, its APPLY cohort).

    ``metrics.json`` is used as the run wrote it (with its CIs); without it, metrics are computed from
    ``predictions.csv`` / ``patients.csv`` with ``n_boot`` bootstrap resamples.
    """
    rows = _summary_rows(run, n_boot=n_boot, seed=seed)
    metrics = run.cache.get("file:metrics.json")
    if run.kind in ("cnn", "vlm") and isinstance(metrics, Mapping) and not any(
            r.get("source") == "metrics.json" for r in rows):
        run.problems.append("metrics.json holds no metrics the report can use (no 'folds' / 'orientations' "
                            "with metric objects)" + ("; computed from the predictions" if rows else ""))
    return rows


def _cnn_test_row(run: RunData, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CNN's test-cohort row from ``metrics.json``'s ``test`` (the figure ``train-cnn`` prints and the
    paired tests use: with several folds, the ensemble of the fold models), or None."""
    test = metrics.get("test")
    if not _looks_like_metrics(test):
        return None
    folds = metrics.get("folds")
    k = len(folds) if isinstance(folds, Mapping) else 0
    subset = f"test · ensemble of {k} folds" if k > 1 else "test"
    return _row(run, subset, test, "metrics.json")


def _cnn_rows(run: RunData, metrics: Any, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The CNN's test-cohort row first, then the cross-validation rows; each fold's own rows (train, val,
    test) folded away (``lead`` False)."""
    rows: list[dict[str, Any]] = []
    if isinstance(metrics, Mapping) and isinstance(metrics.get("folds"), Mapping):
        test_row = _cnn_test_row(run, metrics)
        for fold, cohorts in metrics["folds"].items():
            if not isinstance(cohorts, Mapping):
                continue
            for cohort in sorted(cohorts, key=lambda c: (COHORT_ORDER + (c,)).index(c)):
                if _looks_like_metrics(cohorts[cohort]):
                    label = cohort if len(metrics["folds"]) == 1 else f"fold {fold} · {cohort}"
                    rows.append(_row(run, label, cohorts[cohort], "metrics.json", lead=test_row is None))
        cv = metrics.get("cv")
        if _looks_like_metrics(cv):
            rows.append(_row(run, "cross-validation", cv, "metrics.json"))
        elif isinstance(cv, Mapping):
            for key, val in cv.items():
                if _looks_like_metrics(val):
                    rows.append(_row(run, f"cross-validation · {key}", val, "metrics.json"))
        if rows or test_row is not None:
            return ([test_row] if test_row is not None else []) + rows
    df = _valid_predictions(run)
    if df is None:
        return rows
    keys = [c for c in ("fold", "cohort") if c in df.columns]
    groups = df.groupby(keys, sort=False) if keys else [((), df)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        values = dict(zip(keys, key, strict=True))
        label = " · ".join(f"fold {v}" if k == "fold" else str(v) for k, v in values.items())
        lead = str(values.get("cohort", "test")) == "test"
        metrics = _frame_metrics(part, n_boot, seed)
        rows.append(_row(run, label or "all", metrics, "predictions.csv", lead=lead))
    rows.sort(key=lambda r: not r["lead"])  # stable: the test cohort first
    return rows


def parsed_shares(run: RunData) -> dict[str, str]:
    """``{orientation: "97%"}`` (and ``combined``: all calls): the share of the VLM's calls whose answer
    could be parsed, from slices.csv (or metrics.json's ``n_calls``/``n_unparsed`` for ``combined``)."""
    slices = _read_csv(run, "slices.csv")
    out: dict[str, str] = {}
    if slices is not None and "choice" in slices.columns and len(slices):
        parsed = slices["choice"].notna()
        if "orientation" in slices.columns:
            for o, part in parsed.groupby(slices["orientation"].astype(str), sort=False):
                out[str(o)] = f"{100 * part.mean():.0f}%"
        out["combined"] = f"{100 * parsed.mean():.0f}%"
        return out
    metrics = _read_json(run, "metrics.json")
    if isinstance(metrics, Mapping):
        calls, unparsed = metrics.get("n_calls"), metrics.get("n_unparsed")
        if isinstance(calls, int) and isinstance(unparsed, int) and calls > 0:
            out["combined"] = f"{100 * (calls - unparsed) / calls:.0f}%"
    return out


def _vlm_rows(run: RunData, metrics: Any, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The VLM's patient-level (``combined``) row first, then one per orientation, each with its parsed
    share."""
    rows: list[dict[str, Any]] = []
    parsed = parsed_shares(run)
    order = ("combined",) + tuple(o for o in ORIENTATION_ORDER if o != "combined")
    if isinstance(metrics, Mapping) and isinstance(metrics.get("orientations"), Mapping):
        ors = metrics["orientations"]
        for o in sorted(ors, key=lambda o: (order + (o,)).index(o)):
            if _looks_like_metrics(ors[o]):
                rows.append(_row(run, o, ors[o], "metrics.json", parsed=parsed.get(o, "")))
        if rows:
            return rows
    pats = _read_csv(run, "patients.csv")
    if pats is not None and {"orientation", "label", "pred"} <= set(pats.columns):
        for o, part in pats.groupby("orientation", sort=False):
            part = part[part["pred"].notna()]
            if len(part):
                rows.append(_row(run, str(o), _frame_metrics(part, n_boot, seed), "patients.csv",
                                 parsed=parsed.get(str(o), "")))
    df = _valid_predictions(run)
    if df is not None and not any(r["subset"] == "combined" for r in rows):
        subset = "combined" if rows else "all"
        rows.insert(0, _row(run, subset, _frame_metrics(df, n_boot, seed), "predictions.csv",
                            parsed=parsed.get("combined", "")))
    return rows


def _summary_rows(run: RunData, *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    metrics = _read_json(run, "metrics.json")
    if run.kind == "cnn":
        return _cnn_rows(run, metrics, n_boot, seed)
    if run.kind == "vlm":
        return _vlm_rows(run, metrics, n_boot, seed)
    if run.kind == "calibrated":
        cfg = run.info.get("config") if isinstance(run.info.get("config"), Mapping) else {}
        cohort = str(cfg.get("apply_cohort") or "test")
        if _looks_like_metrics(metrics):
            return [_row(run, cohort, metrics, "metrics.json")]
        df = _valid_predictions(run)
        if df is not None:
            if "cohort" in df.columns:
                df = df[df["cohort"].astype(str) == cohort]
            return [_row(run, cohort, _frame_metrics(df, n_boot, seed), "predictions.csv")] if len(df) else []
    return []


# ------------------------------------------------------------------------------------------ paired tests
def test_cohort_predictions(run: RunData) -> Any:
    """One row per test-cohort unit (``patient_id[,unit keys],label,pred[,score]``) for the paired tests.

    VLM predictions with an ``orientation`` column but no unit keys use the ``combined`` rows; CNN
    predictions with a ``fold`` column and several folds on the test cohort become the fold ensemble
    (:func:`medvlm.predictions.fold_ensemble`), noted in the run's section. Raises :class:`DataError`
    when the run has no usable test-cohort predictions.
    """
    from medvlm.predictions import fold_ensemble, select_cohort, unit_keys

    key = "test_cohort_predictions"
    if key in run.cache:
        if isinstance(run.cache[key], DataError):
            raise run.cache[key]
        return run.cache[key]
    try:
        df = _valid_predictions(run)
        if df is None:
            raise DataError(f"{run.name}: no valid predictions.csv")
        if "orientation" in df.columns and len(unit_keys(df)) == 1:
            comb = df[df["orientation"].astype(str) == "combined"]
            if comb.empty:
                raise DataError(
                    f"{run.name}: predictions.csv has an orientation column but no 'combined' rows"
                )
            df = comb
        df = select_cohort(df, "test", source=f"{run.name}: predictions.csv")
        if "patient_id" not in df.columns:
            raise DataError(f"{run.name}: predictions.csv has no patient_id column")
        if "fold" in df.columns and df["fold"].nunique() > 1:
            k = df["fold"].nunique()
            df = fold_ensemble(df).drop(columns="fold")
            run.notes.append(f"paired tests and ROC use the ensemble of the {k} folds on the test cohort "
                             "(mean score)")
        run.cache[key] = df.reset_index(drop=True)
        return run.cache[key]
    except DataError as exc:
        run.cache[key] = exc
        raise


def paired_tests(runs: Sequence[RunData], *, controls: Mapping[str, str] | None = None
                 ) -> list[dict[str, Any]]:
    """McNemar and DeLong (:func:`medvlm.stats.compare_predictions`) for every pair of classifier runs
    on the test cohort; a pair that cannot be compared gets a row with the reason. The pairs of
    :data:`KEY_COMPARISONS` come first (``key`` True), in that order; the rest after, in run order. A pair
    with a control run (a name in ``controls``: :func:`medvlm.report.controls.control_names`) is never a
    key comparison: a no-image run is no general VLM arm of the study."""
    from medvlm.stats import compare_predictions

    classifiers = [r for r in runs if r.kind in CLASSIFIER_KINDS]
    order = {pair: i for i, pair in enumerate(KEY_COMPARISONS)}
    rows = []
    for i, first in enumerate(classifiers):
        for second in classifiers[i + 1 :]:
            a, b = first, second
            ra, rb = vlm_role(a) or "calibrated", vlm_role(b) or "calibrated"
            if ROLE_RANK[rb] < ROLE_RANK[ra]:  # A is the role ranked first (ROLE_RANK)
                a, b, ra, rb = b, a, rb, ra
            key = (ra, rb) in order and a.name not in (controls or {}) and b.name not in (controls or {})
            if key and ra == f"calibrated-{rb}":  # a calibrated arm against a run it does not calibrate
                source = calibration_source(a)
                key = source is not None and same_folder(source.path, b.path)
            row: dict[str, Any] = {
                "a": a.name,
                "b": b.name,
                "role_a": ra,
                "role_b": rb,
                "key": key,
                "comparison": f"{ROLE_NAME[ra]} vs {ROLE_NAME[rb]}",
                "order": (0, order[ra, rb]) if key else (1, 0),
            }
            apart = different_work(a, b)
            if apart is not None:  # two work folders: never paired, whatever their patient ids
                row["error"] = apart
                rows.append(row)
                continue
            try:
                ta, tb = test_cohort_predictions(a), test_cohort_predictions(b)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = compare_predictions(ta, tb, name_a=a.name, name_b=b.name)
            except DataError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            row.update(res)
            row.update(paired_verdicts(res, paired_class_counts(ta, tb), run_task(a).classes))
            row["fmt"] = {
                "n": (fmt(res["n"]) if "n_patients" not in res
                      else f"{res['n']} {res.get('unit', 'slice')}s of {res['n_patients']} patients (not "
                           "independent: p optimistic)"),
                "acc_a": fmt(res["accuracy_a"]),
                "acc_b": fmt(res["accuracy_b"]),
                "acc_diff": fmt(res["accuracy_diff"]),
                "acc_ci": _ci_text(res["accuracy_diff_ci"]),
                "b": fmt(res["mcnemar_b"]),
                "c": fmt(res["mcnemar_c"]),
                "mcnemar_p": _p(res["mcnemar_p"]),
                "mcnemar_method": res["mcnemar_method"],
                "auc_a": fmt(res["auc_a"]),
                "auc_b": fmt(res["auc_b"]),
                "auc_diff": fmt(res["auc_diff"]),
                "auc_ci": _ci_text(res["auc_diff_ci"]),
                "z": fmt(res["delong_z"], 2),
                "delong_p": _p(res["delong_p"]),
            }
            rows.append(row)
    rows.sort(key=lambda r: r["order"])  # stable: run order within each comparison
    return rows
