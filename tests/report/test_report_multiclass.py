"""The multi-class part of the report (K x K confusion matrix, per-class table) and ``medvlm metrics`` on
multi-class predictions, with a 3-class image task built by hand and registered for the test."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.errors import DataError
from medvlm.report.multiclass import CORNER, confusion_table, per_class_table
from medvlm.runinfo import write_run_info
from medvlm.tasks import TASKS
from medvlm.tasks.base import AnswerCode, Task
from medvlm.vlm.parsing import NameParser

CLASSES = ("normal", "pneumonia", "<b>effusion</b>")  # a name the page must escape


def chest_task() -> Task:
    answers = tuple(AnswerCode(c, f"p_{i}x", f"n_{i}x") for i, c in enumerate(CLASSES))
    return Task(name="chest3-test", description="three classes, one prediction per image", classes=CLASSES,
                positive=None, answers=answers, parser=NameParser(3, answer_names=CLASSES),
                parser_version="1", unit="image")


@pytest.fixture
def task(monkeypatch):
    """The task, registered under its name for the duration of a test (as a YAML task will be)."""
    t = chest_task()
    monkeypatch.setitem(TASKS._entries, t.name, t)
    return t


#: the test cohort: true [0, 0, 1, 1, 1, 2, 2, 2, 2], predicted [0, 1, 1, 1, 2, 2, 2, 0, -] (one abstained)
TEST_LABELS = [0, 0, 1, 1, 1, 2, 2, 2, 2]
TEST_PREDS = [0, 1, 1, 1, 2, 2, 2, 0, None]


def _predictions(task: Task) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = [0, 1, 2, *TEST_LABELS]
    preds = [0, 1, 2, *TEST_PREDS]
    probs = rng.dirichlet(np.ones(3), len(labels)).round(4)
    df = pd.DataFrame({"patient_id": [f"p{i // 2}" for i in range(len(labels))],
                       "image_id": [f"img{i}" for i in range(len(labels))],
                       "cohort": ["val"] * 3 + ["test"] * len(TEST_LABELS), "label": labels,
                       "pred": pd.array(preds, dtype="Int64"), "score": [np.nan] * len(labels)})
    for i, col in enumerate(task.prob_columns):
        df[col] = [np.nan if p is None else probs[r, i] for r, p in enumerate(preds)]
    return df


def _run(root, task: Task, kind: str = "vlm"):
    run = root / "chest-vlm"
    run.mkdir()
    _predictions(task).to_csv(run / "predictions.csv", index=False)
    write_run_info(run, kind=kind, config={"task": task.describe(), "model": "tiny", "backend": "openai"})
    return run


def test_confusion_table_by_hand():
    t = confusion_table([[1, 1, 0], [0, 2, 1], [1, 0, 2]], ["a", "b", "c"], title="T")
    assert t["columns"] == [CORNER, "a", "b", "c", "total", "recall"] and t["left"] == {0}
    assert t["rows"] == [
        ["a", {"v": 1, "cls": "good"}, 1, 0, 2, "0.500"],
        ["b", 0, {"v": 2, "cls": "good"}, 1, 3, "0.667"],
        ["c", 1, 0, {"v": 2, "cls": "good"}, 3, "0.667"],
        ["total predicted", 2, 3, 3, 8, ""],
    ]
    empty_row = confusion_table([[0, 0], [1, 1]], ["a", "b"], title="T")["rows"][0]
    assert empty_row == ["a", {"v": 0, "cls": "good"}, 0, 0, "–"]
    with pytest.raises(DataError, match=r"^a confusion matrix of 3 classes must be 3 x 3$"):
        confusion_table([[1, 0], [0, 1]], ["a", "b", "c"], title="T")


def test_per_class_table():
    m = {"n": 8, "accuracy": 0.625, "balanced_accuracy": 0.6111111, "macro_f1": 0.6, "auc": None,
         "n_abstained": 1, "coverage": 8 / 9,
         "per_class": [{"class": "a", "support": 2, "precision": 0.5, "recall": 0.5, "specificity": 5 / 6,
                        "f1": 0.5, "auc": 0.75},
                       {"class": "b", "support": 0, "precision": None, "recall": None, "specificity": 1.0,
                        "f1": None, "auc": None}]}
    t = per_class_table(m, title="P")
    assert t["columns"] == ["class", "support", "precision", "recall (sensitivity)", "specificity", "F1",
                            "ROC AUC (one vs rest)"]
    assert t["rows"] == [["a", "2", "0.500", "0.500", "0.833", "0.500", "0.750"],
                         ["b", "0", "–", "–", "1.000", "–", "–"]]
    assert t["note"] == ("n = 8: accuracy 0.625, balanced accuracy 0.611, macro F1 0.600, ROC AUC (one vs "
                         "rest, macro) –; each class against the rest; 1 abstained (no prediction), coverage "
                         "0.889")


def test_report_of_a_three_class_run(tmp_path, task):
    from medvlm.report.html import build_report

    run = _run(tmp_path, task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report([run], tmp_path / "report.html", n_boot=0).read_text()
    assert "Confusion matrix (test cohort)" in html and "Per class (test cohort)" in html
    assert "&lt;b&gt;effusion&lt;/b&gt;" in html and "<b>effusion</b>" not in html
    assert "true \\ predicted" in html and "total predicted" in html
    # the test cohort's matrix: rows true, columns predicted; image 9 abstained
    assert "n = 8: accuracy 0.625" in html  # 5 of 8 answered right
    assert "1 abstained (no prediction), coverage 0.889" in html
    assert "is not 0 or 1" not in html  # the report read the labels as the task's classes
    assert "Reliability diagram" not in html  # binary-only figures are left out


def test_metrics_cli_names_classes_from_the_run(tmp_path, capsys, task):
    run = _run(tmp_path, task)
    assert invoke(["metrics", str(run / "predictions.csv"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["classes"] == list(CLASSES) and m["n_classes"] == 3
    assert (m["n"], m["n_abstained"], m["accuracy"]) == (8, 1, 0.625)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert m["auc"] is not None  # the task's own probability columns (p_0x, ...)
    assert [r["support"] for r in m["per_class"]] == [2, 3, 3]
    assert invoke(["metrics", str(run / "predictions.csv"), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "balanced accuracy" in out and "macro F1" in out and "pneumonia" in out
    assert "true \\ predicted" in out


def test_metrics_cli_without_the_task(tmp_path, capsys):
    path = tmp_path / "predictions.csv"
    path.write_text("patient_id,label,pred,p_0,p_1,p_2\na,0,0,0.7,0.2,0.1\nb,1,2,0.2,0.3,0.5\n"
                    "c,2,2,0.1,0.1,0.8\nd,2,1,0.2,0.5,0.3\ne,1,,,,\n")
    assert invoke(["metrics", str(path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["classes"] == ["0", "1", "2"] and m["n_abstained"] == 1 and m["accuracy"] == 0.5
    # class 0: a above b, c, d; class 1: b above a and c, below d; class 2: c above a and b, d above a only
    assert m["auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3, abs=1e-15)
    assert invoke(["metrics", str(path), "--abstain-below", "0.5"]) == 2
    assert "has 3 classes" in capsys.readouterr().err
    path.write_text("label,pred\n1,1\n3,0\n0,0\n")
    assert invoke(["metrics", str(path)]) == 2
    err = capsys.readouterr().err
    assert "row 2, column 'label': 3 is not 0 or 1" in err and len(err.strip().splitlines()) == 1
    path.write_text("label,pred\n1,1\n0,2\n")  # a binary file keeps its binary message
    assert invoke(["metrics", str(path)]) == 2
    assert "row 2, column 'pred': '2' is not 0 or 1 (1 = the positive class)" in capsys.readouterr().err
    path.write_text("label,pred,score\n1,1,0.8\n0,0,0.3\n1,0,0.4\n")
    assert invoke(["metrics", str(path), "--json"]) == 0
    binary = json.loads(capsys.readouterr().out)
    assert binary["tp"] == 1 and "macro_f1" not in binary and binary["auc"] == 1.0


def test_report_of_two_three_class_runs_does_not_fail(tmp_path, task):
    from medvlm.report.html import build_report

    first = _run(tmp_path, task)
    second = tmp_path / "chest-vlm-2"
    first.rename(tmp_path / "keep")
    first = tmp_path / "keep"
    _run(tmp_path, task).rename(second)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report([first, second], tmp_path / "report.html", n_boot=0).read_text()
    assert html.count("Confusion matrix (test cohort)") == 2
    assert "labels: normal = 0, pneumonia = 1, &lt;b&gt;effusion&lt;/b&gt; = 2" in html
    assert "(&lt;b&gt;effusion&lt;/b&gt; positive)" not in html  # a multi-class task names no positive class
