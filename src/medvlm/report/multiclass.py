"""The multi-class part of a classifier run's section (a task with more than two classes): the K x K
confusion matrix of the test cohort (a figure and a table, class names on both axes) and the per-class
table (support, precision, recall, specificity, F1, one-vs-rest AUC), class names from the run's task.

Pure table builders (:func:`confusion_table`, :func:`per_class_table`, for the template's
``{"title", "columns", "rows", "left", "note"}`` tables; names are autoescaped by the template) and
:func:`add_multiclass`, the hook :mod:`medvlm.report.sections._classifier` calls for such runs. Metrics
come from the one shared path, :func:`medvlm.predictions.predictions_metrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _safe_figure, fmt

#: the corner cell of the confusion table: rows are the true class, columns the predicted one
CORNER = "true \\ predicted"
#: (key of a per_class entry, column title) of the per-class table, after the class name
PER_CLASS_COLUMNS = (("support", "support"), ("precision", "precision"), ("recall", "recall (sensitivity)"),
                     ("specificity", "specificity"), ("f1", "F1"), ("auc", "ROC AUC (one vs rest)"))


def confusion_table(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str
                    ) -> dict[str, Any]:
    """The K x K confusion matrix as a table: one row per true class (its counts per predicted class, its
    total and its recall), then the column totals; correct cells (the diagonal) marked ``good``.

    >>> t = confusion_table([[2, 1], [0, 3]], ["a", "b"], title="m")
    >>> t["columns"], t["rows"][0], t["rows"][2]
    (['true \\\\ predicted', 'a', 'b', 'total', 'recall'], ['a', {'v': 2, 'cls': 'good'}, 1, 3, '0.667'], \
['total predicted', 2, 4, 6, ''])
    """
    k = len(classes)
    if len(confusion) != k or any(len(row) != k for row in confusion):
        raise DataError(f"a confusion matrix of {k} classes must be {k} x {k}")
    rows: list[list[Any]] = []
    for i, (name, counts) in enumerate(zip(classes, confusion, strict=True)):
        total = int(sum(counts))
        cells = [{"v": int(c), "cls": "good"} if j == i else int(c) for j, c in enumerate(counts)]
        rows.append([name, *cells, total, fmt(int(counts[i]) / total if total else None)])
    columns_total = [int(sum(row[j] for row in confusion)) for j in range(k)]
    rows.append(["total predicted", *columns_total, sum(columns_total), ""])
    return {"title": title, "columns": [CORNER, *classes, "total", "recall"], "rows": rows, "left": {0},
            "note": "rows: the true class; columns: the predicted class; the diagonal is correct"}


def per_class_table(m: Mapping[str, Any], *, title: str) -> dict[str, Any]:
    """One row per class of a multi-class metrics dict (``per_class``), and the averages in the note."""
    rows = [[entry["class"], *(fmt(entry.get(key)) for key, _ in PER_CLASS_COLUMNS)]
            for entry in m["per_class"]]
    note = (f"n = {m['n']}: accuracy {fmt(m.get('accuracy'))}, balanced accuracy "
            f"{fmt(m.get('balanced_accuracy'))}, macro F1 {fmt(m.get('macro_f1'))}, ROC AUC (one vs rest, "
            f"macro) {fmt(m.get('auc'))}; each class against the rest")
    if m.get("n_abstained"):
        note += f"; {m['n_abstained']} abstained (no prediction), coverage {fmt(m.get('coverage'))}"
    return {"title": title, "columns": ["class", *(name for _, name in PER_CLASS_COLUMNS)], "rows": rows,
            "left": {0}, "note": note}


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str) -> Any:
    """A K x K heat map of counts with the row share of each cell, class names on the axes."""
    import numpy as np

    from medvlm.report.figures import _new_figure

    cm = np.asarray(confusion, dtype=int)
    k = len(classes)
    size = 2.2 + 0.9 * k
    fig, ax = _new_figure(size + 0.6, size)
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    for t in range(k):
        row = cm[t].sum()
        for q in range(k):
            share = f"{100 * cm[t, q] / row:.0f}%" if row else "-"
            ax.text(q, t, f"{cm[t, q]}\n{share}", ha="center", va="center", fontsize=10,
                    color="white" if cm[t, q] > 0.6 * max(cm.max(), 1) else "#111827")
    ax.set_xticks(range(k), list(classes), rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {int(cm.sum())})")
    return fig


def add_multiclass(run: Any, d: dict[str, Any]) -> None:
    """The test cohort's confusion figure, confusion table and per-class table of a multi-class run, added
    to its section ``d``; without usable test-cohort predictions the reason becomes a note of the run."""
    from medvlm.predictions import predictions_metrics
    from medvlm.report.runs import run_task
    from medvlm.report.summary import test_cohort_predictions

    task = run_task(run)
    try:
        tp = test_cohort_predictions(run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = predictions_metrics(tp, task=task, source=f"{run.name}: predictions.csv")
    except DataError as exc:
        if str(exc) not in run.problems:
            run.notes.append(str(exc))
        return
    classes = list(task.classes)
    fig = _safe_figure(run, "predictions.csv", lambda: (
        confusion_figure(m["confusion"], classes, title=f"{run.name}: test cohort"),
        f"Confusion matrix of {run.name} on the test cohort: {m['n']} answered {task.unit}s, counts and the "
        "share of each true class (row) predicted as each class (column)."))
    if fig:
        d["figures"].append(fig)
    d["tables"].append(confusion_table(m["confusion"], classes, title="Confusion matrix (test cohort)"))
    d["tables"].append(per_class_table(m, title="Per class (test cohort)"))
