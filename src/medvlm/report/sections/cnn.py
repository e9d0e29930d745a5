"""The section of a CNN run: the learning curves (history.csv), then the test-cohort confusion matrix,
reliability diagram and risk-coverage curve."""

from __future__ import annotations

from typing import Any

from medvlm.report.format import _safe_figure
from medvlm.report.runs import RunData, _read_csv
from medvlm.report.sections._classifier import add_calibration_figures, add_confusion_matrix


def details(run: RunData, d: dict[str, Any]) -> None:
    """Learning curves first, then the confusion matrix, reliability diagram and risk-coverage curve on
    the test cohort."""
    from medvlm.report import figures as F

    add_confusion_matrix(run, d)
    add_calibration_figures(run, d)
    hist = _read_csv(run, "history.csv")
    if hist is not None:
        fig = _safe_figure(
            run,
            "history.csv",
            lambda: (
                F.learning_curve_figure(hist, title=run.name),
                f"Learning curves of {run.name} (history.csv).",
            ),
        )
        if fig:
            d["figures"].insert(0, fig)
