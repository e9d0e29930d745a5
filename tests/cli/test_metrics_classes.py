"""`medvlm metrics` on a predictions file without run.json: the class set is never guessed wrong. Labels
with a gap (0, 1, 3: a class absent from the file, or a typo?) ask for --classes or --task in one line;
gap-free labels beyond 1 are scored with a warning that the classes were inferred; --classes/--task name
them; a run.json's task wins over nothing and conflicts are refused."""

from __future__ import annotations

import json

import pytest

from medvlm.cli import invoke

GAP = "patient_id,label,pred\nP1,0,0\nP2,1,1\nP3,3,3\nP4,0,1\nP5,3,0\n"  # no label 2


def _write(tmp_path, text, name="preds.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _lines(capsys):
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err.strip().splitlines()


def test_a_gap_in_the_labels_asks_for_the_classes_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, GAP)
    assert invoke(["metrics", str(path), "--json"]) == 2
    out, err = _lines(capsys)
    assert out == "" and err == [
        f"medvlm: error: {path}: row 3, column 'label': 3 is not 0 or 1, and labels 0, 1, 3 leave out 2 "
        "with no run.json beside the file naming its task: a class absent from this file, or a wrong label? "
        "Name the classes: --classes 4 (or their names, comma-separated), or --task NAME"]


@pytest.mark.parametrize("spec, names", [("4", ["0", "1", "2", "3"]), ("a, b,c,d", ["a", "b", "c", "d"])])
def test_classes_score_the_file_with_the_absent_class_counted(tmp_path, capsys, spec, names):
    path = _write(tmp_path, GAP)
    assert invoke(["metrics", str(path), "--json", "--classes", spec]) == 0
    out, _ = _lines(capsys)
    m = json.loads(out)
    assert m["n_classes"] == 4 and m["classes"] == names
    # hand count: rows (label, pred) (0,0) (1,1) (3,3) (0,1) (3,0) -> 3 of 5 right
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    absent = m["per_class"][2]
    assert absent["support"] == 0 and absent["recall"] is None and absent["specificity"] == 1.0
    # balanced accuracy over the classes present (recall 0.5, 1, 0.5), macro F1 likewise
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_a_gap_free_multiclass_file_says_its_classes_were_inferred(tmp_path, capsys):
    path = _write(tmp_path, "patient_id,label,pred\nP1,0,0\nP2,1,1\nP3,2,2\nP4,0,1\n")
    assert invoke(["metrics", str(path), "--json"]) == 0
    out, err = _lines(capsys)
    assert json.loads(out)["n_classes"] == 3
    assert (f"medvlm: warning: {path}: no run.json beside the file names its task; 3 classes inferred from "
            "the labels seen (0..2); name them with --classes or --task if the task has others") in err


def test_a_binary_file_is_unchanged(tmp_path, capsys):
    path = _write(tmp_path, "patient_id,label,pred\nP1,0,0\nP2,1,1\nP3,1,0\n")
    assert invoke(["metrics", str(path), "--json"]) == 0
    out, err = _lines(capsys)
    assert json.loads(out)["tp"] == 1 and not any("inferred" in line for line in err)


@pytest.mark.parametrize("argv, message", [
    (["--classes", "1"], "--classes 1: a task has at least 2 classes"),
    (["--classes", "a,,b"], "--classes 'a,,b': give the number of classes"),
    (["--classes", "a,a,b"], "--classes 'a,a,b': a class name is given twice"),
    (["--classes", "3"], "row 3, column 'label': '3' is not a class label 0..2"),
    (["--classes", "4", "--task", "brats-grading"], "--classes and --task both name the classes; give one"),
    (["--task", "brats-grading"], "row 3, column 'label': '3' is not 0 or 1"),
    (["--task", "missing.yaml"], "--task missing.yaml: no such file"),
])
def test_bad_class_options_are_one_line(tmp_path, capsys, argv, message):
    path = _write(tmp_path, GAP)
    assert invoke(["metrics", str(path), *argv]) == 2
    _, err = _lines(capsys)
    assert len(err) == 1 and message in err[0]


def test_classes_that_contradict_the_run_json_are_refused(tmp_path, capsys):
    path = _write(tmp_path, "patient_id,label,pred\nP1,0,0\nP2,1,1\n")
    (tmp_path / "run.json").write_text(json.dumps(
        {"kind": "vlm", "config": {"task": {"name": "brats-grading", "classes": ["LGG", "HGG"]}}}))
    assert invoke(["metrics", str(path), "--classes", "3"]) == 2
    _, err = _lines(capsys)
    assert err == [f"medvlm: error: --classes 3: 3 classes, but the run.json beside {path} records 2 (LGG, "
                   "HGG); leave --classes out to use the run's task"]
    assert invoke(["metrics", str(path), "--json", "--task", "brats-grading"]) == 0  # agrees: fine
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_a_prediction_beyond_binary_labels_says_how_to_name_more_classes(tmp_path, capsys):
    path = _write(tmp_path, "patient_id,label,pred\nP1,0,0\nP2,1,2\nP3,1,1\n")
    assert invoke(["metrics", str(path)]) == 2
    _, err = _lines(capsys)
    assert err == [f"medvlm: error: {path}: row 2, column 'pred': '2' is not 0 or 1 (1 = the positive "
                   "class); with no run.json beside the file naming its task, labels 0 and 1 make it "
                   "binary: if the task has more classes, name them with --classes or --task"]
    assert invoke(["metrics", str(path), "--json", "--classes", "3"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]] and m["accuracy"] == pytest.approx(2 / 3)
