"""Adversarial inputs to the results commands and configs (issue 14, classes 3, 4, 5, 6, 13, 14, 15):
conflicting grades, pooled cohorts, impossible intervals, duplicate units, YAML bombs, duplicate keys and
non-UTF-8 configs. The expected numbers are hand-computed."""

from __future__ import annotations

import json
import time

import pytest

from medvlm.cli import invoke


def _csv(path, header: str, rows: list[str]):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


# ------------------------------------------------------------------ 3. conflicting grades
@pytest.mark.parametrize("rows", [
    ["HGG,BraTS20_Training_002", "LGG,BraTS20_Training_002"],
    ["hgg,BraTS20_Training_002", "LGG, BraTS20_Training_002 "],  # case and blanks do not hide it
    ["LGG,BraTS20_Training_002", "HGG,BraTS20_Training_003", "HGG,BraTS20_Training_002"],
])
def test_two_grades_for_one_patient_are_an_error_naming_it(tmp_path, capsys, rows):
    from medvlm.data.brats import MAPPING_HEADER

    path = tmp_path / "name_mapping.csv"
    lines = [",".join(MAPPING_HEADER)]
    for row in rows:
        grade, pid = row.split(",")
        lines.append(f"{grade},,,,,{pid}")
    path.write_text("\n".join(lines) + "\n")
    from medvlm.data.brats import read_name_mapping
    from medvlm.errors import DataError

    with pytest.raises(DataError, match="patient BraTS20_Training_002 has two grades"):
        read_name_mapping(path)


def test_the_same_grade_twice_is_accepted(tmp_path):
    from medvlm.data.brats import MAPPING_HEADER, read_name_mapping

    path = tmp_path / "name_mapping.csv"
    path.write_text(",".join(MAPPING_HEADER) + "\nHGG,,,,,P1\nHGG,,,,,P1\nLGG,,,,,P2\n")
    assert read_name_mapping(path) == {"P1": "HGG", "P2": "LGG"}


# ------------------------------------------------------------------ 4. metrics never pools cohorts
CNN_ROWS = ["p1,test,1,1,0.9", "p2,test,0,1,0.6", "p3,train,1,0,0.2", "p4,val,0,0,0.1", "p5,test,0,0,0.3"]


@pytest.mark.parametrize("cohort, n, accuracy", [
    (None, 3, 2 / 3),  # default: the test rows
    ("test", 3, 2 / 3), ("val", 1, 1.0), ("train", 1, 0.0), ("all", 5, 3 / 5),
])
def test_metrics_uses_the_chosen_cohort(tmp_path, capsys, cohort, n, accuracy):
    path = _csv(tmp_path / "predictions.csv", "patient_id,cohort,label,pred,score", CNN_ROWS)
    args = ["metrics", str(path), "--json", *(["--cohort", cohort] if cohort else [])]
    assert invoke(args) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == n and m["accuracy"] == pytest.approx(accuracy)


def test_metrics_on_an_absent_cohort_is_one_line(tmp_path, capsys):
    path = _csv(tmp_path / "predictions.csv", "patient_id,cohort,label,pred", ["p1,train,1,1", "p2,val,0,0"])
    assert invoke(["metrics", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--cohort" in err


# ------------------------------------------------------------------ 5. intervals inside [-1, 1]
@pytest.mark.parametrize("a_preds, b_preds, labels", [
    ([1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]),  # all agree
    ([1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]),  # all discordant, A right every time
    ([1], [0], [1]),  # n = 1
    ([1, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 1]),  # the case: A far better
])
def test_compare_accuracy_difference_ci_stays_in_bounds(tmp_path, capsys, a_preds, b_preds, labels):
    header = "patient_id,cohort,label,pred"
    def rows(preds):
        return [f"p{i},test,{y},{p}" for i, (y, p) in enumerate(zip(labels, preds, strict=True))]

    a, b = _csv(tmp_path / "a.csv", header, rows(a_preds)), _csv(tmp_path / "b.csv", header, rows(b_preds))
    assert invoke(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    low, high = out["accuracy_diff_ci"]
    assert -1.0 <= low <= out["accuracy_diff"] <= high <= 1.0
    if a_preds == b_preds:
        assert out["accuracy_diff"] == 0 and low < 0 < high  # no evidence either way: the interval says so


# ------------------------------------------------------------------ 6. one row per unit
@pytest.mark.parametrize("rows", [
    ["p1,1,1", "p1,0,1", "p2,0,0"],  # one patient, two labels
    ["p1,1,1", "p1,1,1", "p2,0,0"],  # an exact duplicate is still counted twice: refused
])
@pytest.mark.parametrize("command", ["metrics", "compare"])
def test_duplicate_patient_rows_are_an_error_naming_the_patient(tmp_path, capsys, rows, command):
    dup = _csv(tmp_path / "dup.csv", "patient_id,label,pred", rows)
    ok = _csv(tmp_path / "ok.csv", "patient_id,label,pred", ["p1,1,1", "p2,0,0"])
    args = ["metrics", str(dup)] if command == "metrics" else ["compare", str(ok), str(dup)]
    assert invoke(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "patient p1 has 2 rows" in err or "patient 'p1' appears 2 times" in err


def test_duplicate_slice_rows_are_an_error_naming_the_unit(tmp_path, capsys):
    dup = _csv(tmp_path / "dup.csv", "patient_id,orientation,slice_index,label,pred",
               ["p1,axial,3,1,1", "p1,axial,3,1,0", "p1,axial,4,1,1"])
    assert invoke(["metrics", str(dup)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "p1" in err and "2 rows" in err


# ------------------------------------------------------------------ 13, 14, 15. configs
BASE = "name: x\ndata: {synthetic: {patients: 8}}\n"
BOMB = ('{a: &a [x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], '
        'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], '
        'e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d], f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e], '
        'g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]}')
BOMB_PLACES = {
    "vlm extra_body": BASE + f"vlm:\n  - {{name: v, model: tiny, extra_body: {BOMB}}}\n",
    "consistency extra_body": BASE + f"consistency:\n  - {{name: c, model: tiny, extra_body: {BOMB}}}\n",
    "finetune evaluate": BASE + f"finetune:\n  - {{name: f, base_model: tiny, evaluate: {BOMB}}}\n",
    "description": BASE + "description: &d big\nvlm: []\nname2: *d\n",
    "top level": f"bomb: {BOMB}\n" + BASE,
}


@pytest.mark.parametrize("place", list(BOMB_PLACES))
def test_a_yaml_bomb_anywhere_is_refused_at_once(tmp_path, capsys, place):
    path = tmp_path / "exp.yaml"
    path.write_text(BOMB_PLACES[place])
    start = time.perf_counter()
    assert invoke(["run", str(path), "--check"]) == 2
    assert time.perf_counter() - start < 30  # refused while parsing, never expanded (expansion: 9**7)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "anchors and aliases" in err and "line " in err


@pytest.mark.parametrize("text, line, key", [
    (BASE + "vlm: []\nvlm: []\n", 4, "vlm"),
    (BASE + "split: {folds: 3, folds: 5}\n", 3, "folds"),
    ("name: x\nname: y\ndata: {synthetic: {patients: 8}}\n", 2, "name"),
    (BASE + "vlm:\n  - name: v\n    model: tiny\n    model: other\n", 6, "model"),
])
def test_duplicate_keys_are_an_error_naming_key_and_line(tmp_path, capsys, text, line, key):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert invoke(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"line {line}: key {key!r} appears twice" in err


@pytest.mark.parametrize("data", [
    b"name: \xff\xfe\n",  # invalid UTF-8
    "name: caf\u00e9\n".encode("latin-1"),  # Latin-1 text
    "name: x\n".encode("utf-16"),  # UTF-16 with its BOM
])
def test_a_non_utf8_config_is_one_line(tmp_path, capsys, data):
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    assert invoke(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not UTF-8 text" in err


# ------------------------------------------------------------------ second pass: more instances
def test_an_explicit_cohort_needs_a_cohort_column(tmp_path, capsys):
    path = _csv(tmp_path / "p.csv", "patient_id,label,pred", ["a,1,1", "b,0,0"])
    assert invoke(["metrics", str(path), "--cohort", "val", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no cohort column, so --cohort val cannot choose rows" in err
    assert invoke(["metrics", str(path), "--json"]) == 0  # the default: every row of such a file
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_a_row_with_an_empty_cohort_is_an_error_naming_it(tmp_path, capsys):
    path = _csv(tmp_path / "p.csv", "patient_id,cohort,label,pred", ["a,val,1,1", "b,,0,0", "c,val,0,1"])
    assert invoke(["metrics", str(path), "--cohort", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "row 2 has an empty cohort" in err


@pytest.mark.parametrize("ids", [["p3", "p3 "], [" p3", "p3"], ["p3\t", "p3"]])
def test_padded_ids_do_not_hide_a_duplicate_and_the_file_is_named(tmp_path, capsys, ids):
    path = _csv(tmp_path / "dup.csv", "patient_id,label,pred", [f"{ids[0]},1,1", f"{ids[1]},1,0", "p4,0,0"])
    assert invoke(["metrics", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dup.csv" in err and "patient p3 has 2 rows" in err


@pytest.mark.parametrize("n", ["1", "3", "99"])
def test_too_few_bootstrap_resamples_are_refused(tmp_path, capsys, n):
    path = _csv(tmp_path / "p.csv", "patient_id,label,pred,score", ["a,1,1,0.9", "b,0,0,0.2", "c,1,0,0.4"])
    assert invoke(["metrics", str(path), "--bootstrap", n]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs at least 100 resamples" in err


@pytest.mark.parametrize("a_scores, b_scores", [
    ([0.9, 0.8, 0.2, 0.1], [0.1, 0.2, 0.8, 0.9]),  # perfect vs all wrong: no spread to estimate
    ([0.5, 0.5, 0.5, 0.5], [0.9, 0.8, 0.2, 0.1]),  # constant vs perfect
])
def test_compare_gives_no_zero_width_auc_interval(tmp_path, capsys, a_scores, b_scores):
    labels = [1, 1, 0, 0]
    header = "patient_id,label,pred,score"
    a = _csv(tmp_path / "a.csv", header, [f"p{i},{y},{int(s >= 0.5)},{s}" for i, (y, s) in
                                          enumerate(zip(labels, a_scores, strict=True))])
    b = _csv(tmp_path / "b.csv", header, [f"p{i},{y},{int(s >= 0.5)},{s}" for i, (y, s) in
                                          enumerate(zip(labels, b_scores, strict=True))])
    assert invoke(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ci = out["auc_diff_ci"]
    assert ci is None or ci[1] - ci[0] > 0


@pytest.mark.parametrize("text", [
    "name: x\ndata: {synthetic: {patients: 8}}\nvlm: [{name: v, model: tiny}]\nx: "
    + "[" * 5000 + "]" * 5000,
    "name: x\ndata: {synthetic: {patients: 8}}\nvlm: [{name: v, model: tiny}]\nx: " + "{a: " * 3000
    + "1" + "}" * 3000,
])
def test_a_config_nested_thousands_deep_is_one_line(tmp_path, capsys, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text + "\n")
    assert invoke(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nested too deeply" in err


def test_a_run_json_nested_thousands_deep_is_one_line(tmp_path, capsys):
    (tmp_path / "run.json").write_text('{"kind": "cnn", "config": ' + "[" * 100000 + "]" * 100000 + "}")
    assert invoke(["config", "dump", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("nested too deeply" in err or "not a readable run.json" in err)


def test_a_study_with_nothing_to_run_is_refused_by_check(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text("name: x\ndata: {synthetic: {patients: 8}}\nsplit: {folds: 2}\n")
    assert invoke(["run", str(path), "--check"]) == 2
    assert "nothing to run" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["fit", "apply"])
def test_calibrate_never_writes_into_its_input_folder(tmp_path, capsys, which):
    run = tmp_path / "run"
    run.mkdir()
    rows = [f"V{i},val,{i % 2},{i % 2},{0.3 + 0.4 * (i % 2) + i / 100}" for i in range(8)]
    rows += [f"T{i},test,{i % 2},1,{0.55 + 0.3 * (i % 2) + i / 100}" for i in range(8)]
    _csv(run / "predictions.csv", "patient_id,cohort,label,pred,score", rows)
    before = (run / "predictions.csv").read_bytes()
    assert invoke(["calibrate", str(run), str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is the folder of FIT" in err
    assert (run / "predictions.csv").read_bytes() == before


def test_calibration_that_saturates_scores_says_so(tmp_path, capsys):
    fit = _csv(tmp_path / "fit.csv", "patient_id,cohort,label,pred,score",
               ["F0,val,1,1,1.0", "F1,val,0,0,0.0", "F2,val,1,1,1.0", "F3,val,0,0,0.0"])
    apply = _csv(tmp_path / "apply.csv", "patient_id,cohort,label,pred,score",
                 ["A0,test,1,1,0.999999999", "A1,test,0,1,0.9999999999", "A2,test,1,0,0.1",
                  "A3,test,0,0,0.2"])
    assert invoke(["calibrate", str(fit), str(apply), "--out", str(tmp_path / "c")]) == 0
    cal = json.loads((tmp_path / "c" / "calibration.json").read_text())
    err = capsys.readouterr().err
    if cal["n_merged"]:
        assert "ties that can change the AUC" in err
    import pandas as pd

    written = pd.read_csv(tmp_path / "c" / "predictions.csv")
    raw = pd.read_csv(apply)
    assert written["score"].nunique() == raw["score"].nunique() - cal["n_merged"]


def test_a_folder_where_a_file_is_written_is_named(tmp_path, capsys):
    from medvlm._io import write_text_atomic
    from medvlm.errors import DataError

    (tmp_path / "predictions.csv").mkdir()
    with pytest.raises(DataError, match="a folder is where medvlm writes this file"):
        write_text_atomic(tmp_path / "predictions.csv", "x")
