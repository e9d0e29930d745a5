"""Every command taking a RUN folder (config dump, report, calibrate) or a predictions CSV (metrics,
compare) says in one line what it was given instead: a file, a missing path, a folder without run.json,
a folder where a CSV belongs."""

from __future__ import annotations

import pytest

from medvlm.cli import invoke


@pytest.fixture()
def places(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "FILE.yaml").write_text("a: 1\n")
    run = tmp_path / "run-with-preds"
    run.mkdir()
    (run / "predictions.csv").write_text("patient_id,label,pred\nP1,0,0\nP2,1,1\n")
    return tmp_path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("arg, message", [
    ("FILE.yaml", "RUN must be a run folder (a folder with run.json), got a file: {}"),
    ("nope", "RUN must be a run folder (a folder with run.json): {} does not exist"),
    ("empty", "RUN must be a run folder (a folder with run.json): {} has no run.json (not a run folder, "
              "or the run never started)"),
])
def test_config_dump_names_what_it_got(places, capsys, arg, message):
    path = places / arg
    assert invoke(["config", "dump", str(path)]) == 2
    assert _error(capsys) == "medvlm: error: " + message.format(path)


@pytest.mark.parametrize("arg, why", [
    ("FILE.yaml", "a file, not a run folder (a folder with run.json)"),
    ("nope", "no such folder"),
    ("empty", "no run.json (not a run folder, or the run never started)"),
])
def test_report_names_what_it_got(places, capsys, arg, why):
    path = places / arg
    assert invoke(["report", str(path), "--out", str(places / "r.html")]) == 2
    assert _error(capsys) == f"medvlm: error: no finished run to report: {path}: {why}"
    assert not (places / "r.html").exists()


@pytest.mark.parametrize("argv, message", [
    (["metrics", "{empty}"], "PREDICTIONS must be a CSV file, got a folder: {empty}"),
    (["metrics", "{run}"], "PREDICTIONS must be a CSV file, got a folder: {run} (did you mean "
                           "{run}/predictions.csv?)"),
    (["compare", "{run}/predictions.csv", "{empty}"], "B must be a CSV file, got a folder: {empty}"),
    (["compare", "{run}", "{run}/predictions.csv"], "A must be a CSV file, got a folder: {run} (did you "
                                                    "mean {run}/predictions.csv?)"),
    (["calibrate", "{nope}", "{run}", "--out", "{out}"], "FIT {nope}: no such file or run folder (a "
                                                       "predictions.csv, or a run folder holding one)"),
    (["calibrate", "{run}", "{empty}", "--out", "{out}"], "APPLY {empty}: no predictions.csv in this run "
                                                         "folder"),
])
def test_csv_arguments_name_a_folder_or_a_missing_path(places, capsys, argv, message):
    names = {"empty": places / "empty", "run": places / "run-with-preds", "nope": places / "nope",
             "out": places / "out"}
    assert invoke([a.format(**names) for a in argv]) == 2
    assert _error(capsys) == "medvlm: error: " + message.format(**names)
