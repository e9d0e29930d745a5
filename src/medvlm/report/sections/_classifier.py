"""What the classifier kinds (cnn, vlm, calibrated) share in their section: the test-cohort confusion
matrix, reliability diagram and risk-coverage curve."""

from __future__ import annotations

from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _figure, _safe_figure
from medvlm.report.runs import RunData, run_task
from medvlm.report.summary import test_cohort_predictions


def add_confusion_matrix(run: RunData, d: dict[str, Any]) -> None:
    """Append the confusion matrix on the test cohort to ``d["figures"]``; without usable test-cohort
    predictions, the reason becomes a note of the run (unless it is already one of its problems). A task
    with more than two classes gets its K x K matrix and per-class table (:mod:`medvlm.report.multiclass`)."""
    from medvlm.report import figures as F

    if run_task(run).n_classes > 2:
        from medvlm.report.multiclass import add_multiclass

        add_multiclass(run, d)
        return
    try:
        tp = test_cohort_predictions(run)
        tp = tp[tp["pred"].notna()]  # abstentions have no cell in a confusion matrix
        d["figures"].append(
            _figure(
                F.confusion_matrix_figure(tp["label"], tp["pred"], title=f"{run.name}: test cohort",
                                          class_names=run_task(run).classes),
                f"Confusion matrix of {run.name} on the test cohort.",
            )
        )
    except DataError as exc:
        if str(exc) not in run.problems:
            run.notes.append(str(exc))


def scored_test_rows(run: RunData) -> Any:
    """The answered test-cohort rows with a score in [0, 1] (``label, pred, score``), or None when the run
    has none (no scores, or scores that are not probabilities: then a note of the run says so)."""
    import pandas as pd

    try:
        tp = test_cohort_predictions(run)
    except DataError:
        return None  # add_confusion_matrix has noted why
    if "score" not in tp.columns:
        return None
    score = pd.to_numeric(tp["score"], errors="coerce")
    rows = tp[tp["pred"].notna() & score.notna()].assign(score=score)
    if rows.empty:
        return None
    if (rows["score"] < 0).any() or (rows["score"] > 1).any():
        note = "its scores are not probabilities in [0, 1]: no reliability diagram or risk-coverage curve"
        if note not in run.notes:
            run.notes.append(note)
        return None
    return rows.reset_index(drop=True)


def add_calibration_figures(run: RunData, d: dict[str, Any]) -> None:
    """Append the reliability diagram (10 bins, each bin's count on the figure) and the risk-coverage
    curve (AURC in the legend) of the run's scored test-cohort units, the units the paired tests use
    (binary tasks: the score is P of the positive class)."""
    from medvlm.report import calibration_figures as CF

    if run_task(run).n_classes > 2:
        task = run_task(run)
        note = (f"no reliability diagram or risk-coverage curve: they read the score of a positive class, "
                f"and {task.name} has {task.n_classes} classes (one-vs-rest ROC curves: Figures)")
        if note not in run.notes:
            run.notes.append(note)
        return
    rows = scored_test_rows(run)
    if rows is None:
        return
    task = run_task(run)
    positive = task.classes[task.positive_label]
    units = f"{task.unit}s"
    y, p, s = (rows[c].to_numpy(dtype=float) for c in ("label", "pred", "score"))
    for fig in (
        _safe_figure(run, "predictions.csv", lambda: (
            CF.reliability_figure(y, s, title=f"{run.name}: test cohort", positive=positive),
            f"Reliability diagram of {run.name} on the test cohort: {len(y)} scored {units} in 10 "
            f"equal-width score bins, the observed share of {positive} in each bin against its mean score "
            "(on the dotted diagonal, a score of 0.7 means 70%); the number above each bin is its count.")),
        _safe_figure(run, "predictions.csv", lambda: (
            CF.risk_coverage_figure([(run.name, y, p, s)], title=f"{run.name}: risk-coverage, test cohort"),
            f"Risk-coverage of {run.name}: the {units} kept most confident first (confidence = the score of "
            "the predicted class); the error rate among those kept against their share. AURC, the area "
            "under the curve, in the legend: lower is better.")),
    ):
        if fig:
            d["figures"].append(fig)
