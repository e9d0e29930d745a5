"""`--limit N` on eval-vlm and consistency: the first N patients of the cohort, in the cohort's order
(splits.json), recorded in run.json (as lmms-eval's --limit)."""

from __future__ import annotations

import csv
import json

import pytest
from tests.vlm.conftest import write_tiny_work

from medvlm.cli import invoke


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = write_tiny_work(tmp_path_factory.mktemp("limit"))
    splits = json.loads((work / "splits.json").read_text())
    splits["test"] = ["P003", "P001", "P000", "P002"]  # the cohort's order is not the sorted order
    (work / "splits.json").write_text(json.dumps(splits))
    return work


def _column(path, name):
    with open(path, newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def test_eval_vlm_limit_takes_the_first_patients_of_the_cohort(work, tmp_path):
    run = tmp_path / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "mock",
                   "--limit", "2", "--bootstrap", "0", "--no-progress"]) == 0
    assert _column(run / "predictions.csv", "patient_id") == ["P003", "P001"]
    assert set(_column(run / "slices.csv", "patient_id")) == {"P003", "P001"}
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["limit"] == 2 and info["config"]["n_patients"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_patients"] == 2


def test_eval_vlm_without_limit_asks_about_every_patient(work, tmp_path):
    run = tmp_path / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "mock",
                   "--bootstrap", "0", "--no-progress"]) == 0
    assert _column(run / "predictions.csv", "patient_id") == ["P003", "P001", "P000", "P002"]
    assert "limit" not in json.loads((run / "run.json").read_text())["config"]  # as before --limit existed


def test_a_limit_above_the_cohort_size_keeps_the_whole_cohort(work, tmp_path):
    run = tmp_path / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "mock",
                   "--limit", "50", "--orientations", "axial", "--bootstrap", "0", "--no-progress"]) == 0
    assert _column(run / "predictions.csv", "patient_id") == ["P003", "P001", "P000", "P002"]


def test_consistency_limit_takes_the_first_patients_of_the_cohort(work, tmp_path):
    run = tmp_path / "c"
    assert invoke(["consistency", str(work), "--out", str(run), "--backend", "mock", "--model", "mock",
                   "--repeats", "2", "--limit", "1", "--no-progress"]) == 0
    assert _column(run / "consistency.csv", "patient_id") == ["P003", "P003"]
    assert json.loads((run / "run.json").read_text())["config"]["limit"] == 1


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_limit_below_one_is_one_line(work, tmp_path, capsys, value):
    assert invoke(["eval-vlm", str(work), "--out", str(tmp_path / "r"), "--backend", "mock", "--model",
                   "mock", "--limit", value]) == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "Traceback" not in err
