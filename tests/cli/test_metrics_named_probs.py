"""``medvlm metrics`` on a 3-class predictions.csv outside its run folder (issue 18 #10): class-named
probability columns (p_normal, ...) are read when the rows confirm their order, else a warning says they
were found and not read; the AUC is never silently null."""

from __future__ import annotations

import json

import pytest

from medvlm.cli import invoke

#: four answered rows and one abstention; each answered row's largest probability is its pred
ROWS = ("patient_id,label,pred,{a},{b},{c}\nA,0,0,0.7,0.2,0.1\nB,1,2,0.2,0.3,0.5\nC,2,2,0.1,0.1,0.8\n"
        "D,2,1,0.2,0.5,0.3\nE,1,,,,\n")
#: the one-vs-rest AUC of these rows, by hand (as for p_0 .. p_2): class 0 1, class 1 2/3, class 2 3/4
AUC = (1 + 2 / 3 + 3 / 4) / 3


def _write(tmp_path, a, b, c):
    path = tmp_path / "predictions.csv"
    path.write_text(ROWS.format(a=a, b=b, c=c))
    return path


def test_class_named_columns_are_read_in_file_order_when_the_rows_confirm_it(tmp_path, capsys):
    path = _write(tmp_path, "p_normal", "p_pneumonia", "p_effusion")
    assert invoke(["metrics", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["auc"] == pytest.approx(AUC, abs=1e-15)  # was null
    assert ("the probability columns are read in the file's order (p_normal = class 0, p_pneumonia = "
            "class 1, p_effusion = class 2)") in captured.err


def test_columns_in_another_order_are_named_and_not_read(tmp_path, capsys):
    path = _write(tmp_path, "p_effusion", "p_normal", "p_pneumonia")  # A: largest is column 0, pred 0 ...
    path.write_text(path.read_text().replace("A,0,0,0.7,0.2,0.1", "A,0,0,0.1,0.7,0.2"))  # ... now not
    assert invoke(["metrics", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["auc"] is None
    assert ("probability columns p_effusion, p_normal, p_pneumonia found but not read (their order does not "
            "match the pred column; no run.json beside it names the classes): no AUC") in captured.err


def test_index_columns_need_no_warning(tmp_path, capsys):
    path = _write(tmp_path, "p_0", "p_1", "p_2")
    assert invoke(["metrics", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["auc"] == pytest.approx(AUC, abs=1e-15)
    assert "probability columns" not in captured.err
