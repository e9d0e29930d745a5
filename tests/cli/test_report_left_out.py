"""`medvlm report` names each failed or unfinished run folder on stderr and leaves it out."""

from __future__ import annotations

import json
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
