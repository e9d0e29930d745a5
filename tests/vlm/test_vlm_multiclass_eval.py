"""eval-vlm end to end on a three-class task built by hand (the synthetic BraTS slices relabelled 0, 1, 2 by
slice index): predictions.csv carries the task's per-class columns, metrics.json the multi-class metrics
through the one shared path, and ``medvlm metrics`` on the file gives the same numbers with the names."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.tasks import TASKS, get_task
from medvlm.tasks.base import AnswerCode
from medvlm.vlm.parsing import NameParser

CLASSES = ("normal", "pneumonia", "effusion")
NAME = "three-slices-test"


@pytest.fixture(scope="module")
def three_work(synth_dir, tmp_path_factory):
    """brats-tumour's prepared slices, relabelled into three classes, recorded as task NAME."""
    from medvlm.data.split import make_split
    from medvlm.tasks import prepare_work

    work = tmp_path_factory.mktemp("three") / "work"
    prepare_work(synth_dir, work, "brats-tumour", shape=(24, 32, 32), progress=False)
    make_split(work, test_fraction=0.25, folds=2, seed=0)
    units = pd.read_csv(work / "units.csv", dtype={"patient_id": str})
    units["label"] = units["slice_index"] % 3
    units.to_csv(work / "units.csv", index=False)
    record = json.loads((work / "task.json").read_text())
    (work / "task.json").write_text(json.dumps({**record, "name": NAME, "classes": list(CLASSES)}))
    return work


@pytest.fixture
def three_task(monkeypatch):
    answers = tuple(AnswerCode(c, f"p_{c}", f"n_{c}") for c in CLASSES)
    task = dataclasses.replace(get_task("brats-tumour"), name=NAME, classes=CLASSES, positive=None,
                               answers=answers, parser=NameParser(3, answer_names=CLASSES),
                               share_column="share", share_label="share")
    monkeypatch.setitem(TASKS._entries, NAME, task)
    return task


@pytest.fixture
def prompt(tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("Which class does this image show: normal (0), pneumonia (1) or effusion (2)?\n"
                    "Answer in the form 'Choice: N'.\n")
    return path


@pytest.mark.parametrize("scoring", ["logprobs", "generate"])
def test_eval_vlm_on_a_three_class_task(three_work, three_task, prompt, tmp_path, capsys, scoring):
    out = tmp_path / "vlm"
    assert invoke(["eval-vlm", str(three_work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--scoring", scoring, "--prompt", str(prompt), "--bootstrap", "100", "--repeats", "3",
                   "--temperature", "1", "--no-progress"]) == 0  # sampled: the three answers differ
    capsys.readouterr()
    preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert list(preds.columns) == ["patient_id", "orientation", "slice_index", "cohort", "label", "pred",
                                   "score", "p_normal", "p_pneumonia", "p_effusion"]
    assert set(preds["label"]) == {0, 1, 2} and set(preds["pred"].dropna().astype(int)) <= {0, 1, 2}
    probs = preds[["p_normal", "p_pneumonia", "p_effusion"]].to_numpy()
    answered = preds["pred"].notna().to_numpy()
    assert not np.isnan(probs[answered]).any()
    # pred is the class with the largest score; a tie goes to the lowest-numbered of the tied classes (the
    # default tie-break of a task naming no positive class is its first class; issue 18 #6)
    tied = np.isclose(probs[answered], probs[answered].max(axis=1, keepdims=True), rtol=0, atol=1e-9)
    expected = tied.argmax(axis=1)
    assert (preds["pred"][answered].astype(int).to_numpy() == expected).all()
    assert json.loads((out / "run.json").read_text())["config"]["tie_break"] == "normal"
    assert preds["score"].isna().all()  # no positive class: no score (the K columns hold the class scores)
    if scoring == "generate":  # the vote shares of three answers
        assert np.allclose(probs[answered].sum(axis=1), 1.0)
        assert set(np.round(probs[answered] * 3, 9).ravel()) <= {0.0, 1.0, 2.0, 3.0}
        assert (tied.sum(axis=1) == 3).any()  # three different answers: the tie rule decided some units
    metrics = json.loads((out / "metrics.json").read_text())
    combined = metrics["orientations"]["combined"]
    assert combined["classes"] == list(CLASSES) and combined["n"] == int(answered.sum())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "auc", "per_class", "confusion", "macro_f1_ci",
            "n_patients", "n_abstained", "coverage"} <= set(combined)
    assert "tp" not in combined and combined["auc"] is not None
    # `medvlm metrics` on the file: the same path, the names from the run's task
    assert invoke(["metrics", str(out / "predictions.csv"), "--json", "--bootstrap", "100"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("n", "classes", "accuracy", "balanced_accuracy", "macro_f1", "auc", "per_class", "confusion",
                "accuracy_ci", "macro_f1_ci", "auc_ci", "n_patients"):
        assert again[key] == combined[key], key
    table = pd.read_csv(out / "units.csv")
    assert {"n_normal", "n_pneumonia", "n_effusion", "p_normal", "p_pneumonia", "p_effusion"} <= set(
        table.columns)
