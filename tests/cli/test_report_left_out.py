"""`medvlm report` names each failed or unfinished run folder on stderr and leaves it out."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests.vlm.conftest import write_tiny_work

from medvlm.cli import invoke
from medvlm.cli._runs import finished_runs, unfinished_reason


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("left_out")
    work = write_tiny_work(root)
    run = root / "vlm-done"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "mock",
                   "--orientations", "axial", "--bootstrap", "0", "--no-progress"]) == 0
    return run


def _copy(run: Path, target: Path, *, drop: str | None = None, status: str | None = None) -> Path:
    shutil.copytree(run, target)
    if drop:
        (target / drop).unlink()
    if status:
        info = json.loads((target / "run.json").read_text())
        (target / "run.json").write_text(json.dumps({**info, "status": status}))
    return target


def test_unfinished_runs_are_named_and_left_out(finished, tmp_path, capsys):
    no_preds = _copy(finished, tmp_path / "no-preds", drop="predictions.csv")
    running = _copy(finished, tmp_path / "running", status="running")
    empty = tmp_path / "never-started"
    empty.mkdir()
    done = _copy(finished, tmp_path / "done", status="complete")
    report = tmp_path / "report.html"
    assert invoke(["report", str(finished), str(no_preds), str(running), str(empty), str(done),
                   "--out", str(report), "--bootstrap", "0"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "left out" in line]
    assert err == [
        f"medvlm: warning: left out of the report: {no_preds}: missing predictions.csv (the vlm run did not "
        "finish; rerun its command to resume)",
        f"medvlm: warning: left out of the report: {running}: run.json status is 'running', not complete",
        f"medvlm: warning: left out of the report: {empty}: no run.json (not a run folder, or the run never "
        "started)"]
    html = report.read_text()
    assert html.count('<section class="card run"') == 2
    assert "vlm-done" in html and "no-preds" not in html and "never-started" not in html


def test_nothing_finished_is_one_line_naming_each_run(finished, tmp_path, capsys):
    no_preds = _copy(finished, tmp_path / "no-preds", drop="predictions.csv")
    running = _copy(finished, tmp_path / "running", status="failed")
    assert invoke(["report", str(no_preds), str(running), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err == (f"medvlm: error: no finished run to report: {no_preds}: missing predictions.csv (the vlm "
                   f"run did not finish; rerun its command to resume); {running}: run.json status is "
                   "'failed', not complete\n")
    assert not (tmp_path / "r.html").exists()


def test_a_damaged_run_json_is_kept_for_the_report_to_explain(finished, tmp_path):
    damaged = _copy(finished, tmp_path / "damaged")
    (damaged / "run.json").write_bytes(b"\xff")
    wrong_kind = _copy(finished, tmp_path / "wrong-kind")
    (wrong_kind / "run.json").write_text(json.dumps({"kind": "consistency"}))  # its files: a vlm run's
    kept, left_out = finished_runs([damaged, wrong_kind, tmp_path / "absent"])
    assert kept == [damaged, wrong_kind]
    assert left_out == [(tmp_path / "absent", "no such folder")]
    assert unfinished_reason(finished) is None


@pytest.mark.parametrize("damage", ["run.json", "predictions-garbage", "predictions-empty"])
def test_a_broken_run_is_named_on_stderr_and_shown_with_its_problems(finished, tmp_path, capsys, damage):
    broken = _copy(finished, tmp_path / "broken")
    if damage == "run.json":
        (broken / "run.json").write_text("{not json")
    else:
        (broken / "predictions.csv").write_text("" if damage == "predictions-empty" else "\x00garbage;;\n1")
    report = tmp_path / "report.html"
    assert invoke(["report", str(finished), str(broken), "--out", str(report), "--bootstrap", "0"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if str(broken) in line]
    assert len(err) == 1, err
    assert err[0].startswith(f"medvlm: warning: {broken}: ") and err[0].endswith("; shown with its problems")
    word = "run.json" if damage == "run.json" else "predictions.csv"
    assert word in err[0]
    assert report.read_text().count('<section class="card run"') == 2


def test_a_run_given_twice_is_reported_once_with_a_warning(finished, tmp_path, capsys):
    report = tmp_path / "report.html"
    again = tmp_path / "link"
    again.symlink_to(finished)
    assert invoke(["report", str(finished), str(finished), str(again), "--out", str(report),
                   "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err.count(f"medvlm: warning: {finished}: the same run folder as {finished}, given twice; "
                     "reported once") == 1
    assert f"medvlm: warning: {again}: the same run folder as {finished}, given twice; reported once" in err
    html = report.read_text()
    assert html.count('<section class="card run"') == 1 and "vlm-done (2)" not in html


def test_a_run_of_a_yaml_task_whose_work_folder_is_gone_keeps_its_class_names(tmp_path, capsys):
    assert invoke(["synth", str(tmp_path / "data"), "--task", "cxr", "--patients", "12", "--size", "small",
                   "--seed", "1"]) == 0
    work = tmp_path / "work"
    assert invoke(["prepare", str(tmp_path / "data"), "--out", str(work), "--task",
                   str(tmp_path / "data" / "cxr.yaml")]) == 0
    assert invoke(["split", str(work), "--folds", "2", "--test-fraction", "0.5"]) == 0
    run = tmp_path / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "hash",
                   "--bootstrap", "0", "--no-progress"]) == 0
    classes = json.loads((run / "run.json").read_text())["config"]["task"]["classes"]
    shutil.rmtree(work)
    report = tmp_path / "report.html"
    assert invoke(["report", str(run), "--out", str(report), "--bootstrap", "0"]) == 0
    html = re.sub(r"data:[^\"']*", "", report.read_text())  # figures' base64 bytes may spell anything
    assert "LGG" not in html and "HGG" not in html
    assert all(name in html for name in classes) and f"sensitivity ({classes[1]})" in html
    # few units: an image task counts and names images, in the report and in `metrics`
    assert "images (fewer than 10 in a class)" in html and "rest on very few images" in html
    capsys.readouterr()
    assert invoke(["metrics", str(run / "predictions.csv")]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "fewer than 10" in x]
    assert "images (fewer than 10 in a class)" in line and "patient" not in line
