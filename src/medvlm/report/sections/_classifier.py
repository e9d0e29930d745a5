"""What the classifier kinds (cnn, vlm) share in their section: the test-cohort confusion matrix."""

from __future__ import annotations

from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _figure
from medvlm.report.runs import RunData, run_task
from medvlm.report.summary import test_cohort_predictions


def add_confusion_matrix(run: RunData, d: dict[str, Any]) -> None:
    """Append the confusion matrix on the test cohort to ``d["figures"]``; without usable test-cohort
    predictions, the reason becomes a note of the run (unless it is already one of its problems)."""
    from medvlm.report import figures as F

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
