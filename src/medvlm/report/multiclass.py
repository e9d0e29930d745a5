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


def ovr_roc_figure(run: Any, tp: Any) -> dict[str, str] | None:
    """The one-vs-rest ROC curves of a multi-class run's test cohort ``tp`` (one curve per class from its
    per-class probability column, AUC in the legend), as a report figure; None when the rows hold no
    per-class probabilities (an unscored run)."""
    import pandas as pd

    from medvlm.metrics_multiclass import class_prob_columns
    from medvlm.report import figures as F
    from medvlm.report.runs import run_task

    task = run_task(run)
    columns = class_prob_columns(task.n_classes, task)
    if not all(c in tp.columns for c in columns):
        return None
    probs = tp[columns].apply(pd.to_numeric, errors="coerce")
    if not probs.notna().to_numpy().any():
        return None
    labels = pd.to_numeric(tp["label"], errors="coerce").to_numpy()
    curves = [(f"{name} vs rest", (labels == k).astype(int), probs[col].to_numpy(dtype=float))
              for k, (name, col) in enumerate(zip(task.classes, columns, strict=True))]
    return _safe_figure(run, "predictions.csv", lambda: (
        F.roc_figure(curves, title=f"{run.name}: one-vs-rest ROC, test cohort"),
        f"One-vs-rest ROC curves of {run.name} on the test cohort: each class against the other "
        f"{task.n_classes - 1}, from its probability column ({', '.join(columns)}). A task with more than "
        "two classes has no positive class: no single ROC curve, reliability diagram or risk-coverage "
        "curve."))


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


# ------------------------------------------------------------------------- "What the numbers say" (K > 2)
def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def multiclass_line(name: str, m: Mapping[str, Any], task: Any, units: str) -> str:
    """One run's sentence of "What the numbers say" for a task with more than two classes: accuracy,
    balanced accuracy (the mean recall over classes), macro F1, one-vs-rest AUC and each class's recall.

    >>> m = {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.35, "auc": None, "n": 6,
    ...      "per_class": [{"class": "a", "recall": 1.0}, {"class": "b", "recall": 0.2},
    ...                    {"class": "c", "recall": None}]}
    >>> multiclass_line("r", m, None, "images")
    'r: accuracy 0.50, balanced accuracy 0.40, macro F1 0.35, AUC (one vs rest, macro) n/a on 6 test images; \
recall per class: a 1.00, b 0.20, c n/a.'
    """
    recalls = ", ".join(f"{c['class']} {_num(c.get('recall'))}" for c in m["per_class"])
    return (f"{name}: accuracy {_num(m['accuracy'])}, balanced accuracy {_num(m['balanced_accuracy'])}, "
            f"macro F1 {_num(m['macro_f1'])}, AUC (one vs rest, macro) {_num(m['auc'])} on {m['n']} test "
            f"{units}; recall per class: {recalls}.")


def majority_rate(df: Any, task: Any) -> str | None:
    """The baseline sentence of a multi-class test cohort ``df`` (answered rows, ``label`` 0..K-1):
    what predicting its most frequent class for everyone scores; None without rows."""
    if not len(df):
        return None
    counts = df["label"].astype(int).value_counts()
    top = int(counts.idxmax())
    return (f"For comparison, predicting {task.classes[top]} (the most frequent class) for everyone scores "
            f"accuracy {counts.max() / len(df):.2f} and balanced accuracy {1 / task.n_classes:.2f} on this "
            "test cohort: accuracy alone cannot separate a model from that rule, which is why balanced "
            "accuracy, macro F1 and the recall of each class are reported.")


def multiclass_comparisons(tuned: Sequence[tuple[str, Mapping[str, Any]]],
                           few_shot: Sequence[tuple[str, Mapping[str, Any]]],
                           general: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The fine-tuning and few-shot sentences of a multi-class study: balanced accuracy, macro F1 and
    AUC of each (fine-tuned or few-shot run, general run) pair."""
    lines = []
    for what, arm in (("Fine-tuning", tuned), ("Labelled examples in the prompt", few_shot)):
        for name_a, m_a in arm:
            for name_g, m_g in general:
                lines.append(
                    f"{what} ({name_a} vs {name_g}) moved balanced accuracy from "
                    f"{_num(m_g['balanced_accuracy'])} to {_num(m_a['balanced_accuracy'])}, macro F1 from "
                    f"{_num(m_g['macro_f1'])} to {_num(m_a['macro_f1'])} and AUC from {_num(m_g['auc'])} to "
                    f"{_num(m_a['auc'])}; the paired tests below say whether such a difference is more than "
                    "chance on this many patients.")
    return lines
