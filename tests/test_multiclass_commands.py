"""Commands on the predictions of a task with three classes: ``calibrate`` (binary only) refuses them up
front with one line, ``compare`` pairs them with McNemar on correctness (DeLong is binary), and ``run
--check`` lists a ``calibrate:`` section of a 3-class task as a problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke

CLASSES = ["low", "mid", "high"]
LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2]
PREDS_A = [0, 1, 2, 0, 1, 1, 0, 2, 2]  # right on 7 of 9
PREDS_B = [0, 1, 1, 1, 1, 2, 2, 1, 2]  # right on 6 of 9
REFUSAL = ("calibrate fits a threshold on the positive-class score of a binary task and takes two-class "
           "tasks only")


def write_run(folder: Path, preds: list[int], *, task: bool = True, cohort: str = "test") -> Path:
    """A run folder of a 3-class task: predictions.csv in the VLM runs' columns, run.json naming the task."""
    folder.mkdir(parents=True)
    probs = np.full((len(preds), 3), 0.2)
    probs[np.arange(len(preds)), preds] = 0.6
    df = pd.DataFrame({"patient_id": [f"P{i}" for i in range(len(preds))], "cohort": cohort,
                       "label": LABELS, "pred": preds, "score": probs[:, 2],
                       **{f"p_{c}": probs[:, i] for i, c in enumerate(CLASSES)}})
    df.to_csv(folder / "predictions.csv", index=False)
    if task:
        (folder / "run.json").write_text(json.dumps({"kind": "vlm", "config": {"task": {
            "name": "tiny-three", "classes": CLASSES}}}))
    return folder


def binary_file(path: Path, cohort: str = "val") -> Path:
    df = pd.DataFrame({"patient_id": [f"Q{i}" for i in range(6)], "cohort": cohort, "label": [0, 1] * 3,
                       "pred": [0, 1, 1, 1, 0, 0], "score": [0.2, 0.8, 0.6, 0.7, 0.3, 0.4]})
    df.to_csv(path, index=False)
    return path


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


# --------------------------------------------------------------------------------------------- calibrate
def test_calibrate_refuses_a_three_class_run_up_front(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = write_run(tmp_path / "vlm3", PREDS_A, cohort="val")
    apply = write_run(tmp_path / "vlm3b", PREDS_B)
    out = tmp_path / "cal"
    assert invoke(["calibrate", str(run), str(apply), "--out", str(out)]) == 2
    assert error_line(capsys) == (f"medvlm: error: FIT {run}: predictions of a 3-class task (low, mid, "
                                  f"high); {REFUSAL}")
    assert not out.exists()


def test_calibrate_refuses_a_file_whose_labels_are_three_classes(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    apply = write_run(tmp_path / "plain", PREDS_B, task=False) / "predictions.csv"
    fit = binary_file(tmp_path / "fit.csv")
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(tmp_path / "cal")]) == 2
    assert error_line(capsys) == (f"medvlm: error: APPLY {apply}: predictions of a 3-class task (labels "
                                  f"0..2); {REFUSAL}")


def test_calibrate_still_names_the_row_of_a_stray_label(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    fit = binary_file(tmp_path / "fit.csv")
    df = pd.read_csv(fit)
    df.loc[3, "label"] = 3  # labels 0, 1, 3: not three classes, a wrong value
    df.to_csv(fit, index=False)
    apply = binary_file(tmp_path / "apply.csv", cohort="test")
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(tmp_path / "cal")]) == 2
    assert "row 4, column 'label': '3' is not 0 or 1" in error_line(capsys)


# ----------------------------------------------------------------------------------------------- compare
def test_compare_three_class_runs_with_mcnemar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = write_run(tmp_path / "a", PREDS_A), write_run(tmp_path / "b", PREDS_B)
    capsys.readouterr()
    assert invoke(["compare", str(a / "predictions.csv"), str(b / "predictions.csv"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # by hand: A right and B wrong on P2, P3, P6 (b = 3); A wrong and B right on P5, P7 (c = 2)
    right_a = np.array(PREDS_A) == np.array(LABELS)
    right_b = np.array(PREDS_B) == np.array(LABELS)
    assert (result["mcnemar_b"], result["mcnemar_c"]) == (int((right_a & ~right_b).sum()),
                                                          int((~right_a & right_b).sum())) == (3, 2)
    assert result["mcnemar_p"] == 1.0  # exact binomial, 3 vs 2
    assert (result["accuracy_a"], result["accuracy_b"]) == (7 / 9, 6 / 9)
    assert result["n"] == 9 and result["n_classes"] == 3
    assert result["auc_a"] is None and result["delong_p"] is None
    assert ("medvlm: warning: DeLong skipped: 3 classes; DeLong compares the ROC AUCs of a binary task "
            "(McNemar compares which predicted classes are right)") in captured.err


def test_compare_table_says_why_delong_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = write_run(tmp_path / "a", PREDS_A), write_run(tmp_path / "b", PREDS_B, task=False)
    assert invoke(["compare", str(a / "predictions.csv"), str(b / "predictions.csv")]) == 0
    out = capsys.readouterr().out
    assert "DeLong: n/a (3 classes; DeLong compares the ROC AUCs of a binary task)" in out
    assert "b = 3 (A right, B wrong)" in out


def test_compare_refuses_a_binary_file_against_a_three_class_run(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    a = write_run(tmp_path / "a", PREDS_A) / "predictions.csv"
    b = binary_file(tmp_path / "b.csv", cohort="test")
    assert invoke(["compare", str(a), str(b)]) == 2
    assert error_line(capsys) == (f"medvlm: error: A {a} is about 3 classes (low, mid, high) but B {b} about "
                                  "2 classes: a paired comparison needs two runs of the same task")


# ------------------------------------------------------------------------------------------ run --check
TASK = """name: tiny-three
classes: [low, mid, high]
source: {kind: medmnist, npz: three.npz}
prompt: "low (0), mid (1) or high (2)? Choice:"
"""


@pytest.mark.parametrize("classes", [3, 2])
def test_run_check_lists_a_calibrate_section_of_a_three_class_task(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture,
                                                                   classes: int) -> None:
    task = TASK if classes == 3 else TASK.replace("[low, mid, high]", "[low, high]").replace(
        "low (0), mid (1) or high (2)?", "low (0) or high (1)?")
    (tmp_path / "task.yaml").write_text(task)
    (tmp_path / "exp.yaml").write_text("name: three\ntask: task.yaml\ndata: {path: .}\n"
                                       "cnn:\n  - {name: cnn, epochs: 1}\n"
                                       "calibrate:\n  - {name: cal, run: cnn}\n")
    code = invoke(["run", str(tmp_path / "exp.yaml"), "--check"])
    err = capsys.readouterr().err
    line = (f"medvlm: error: calibrate.0 (cal): task tiny-three has 3 classes (low, mid, high); {REFUSAL}")
    if classes == 3:
        assert code == 2 and line in err.splitlines()
    else:
        assert "calibrate.0" not in err
