"""`--limit N` above the cohort's size is never silent: one line on stderr ("--limit 50: the test cohort
has 4 patients; all used"), kept in run.json's notes and shown in the report; an image task gives its
images too. A limit that limits (or none) adds nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.vlm.conftest import write_tiny_work

from medvlm.cli import invoke
from medvlm.vlm.limit import limit_note

MOCK = ["--backend", "mock", "--model", "mock", "--no-progress"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return write_tiny_work(tmp_path_factory.mktemp("limitnote"))  # 4 test patients P000..P003


def _notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("medvlm: note:")]


def test_eval_vlm_says_a_limit_above_the_cohort_uses_all(work, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["eval-vlm", str(work), "--out", str(run), *MOCK, "--limit", "50", "--orientations", "axial",
            "--bootstrap", "0"]
    assert invoke(argv) == 0
    note = "--limit 50: the test cohort has 4 patients; all used"
    assert _notes(capsys) == [f"medvlm: note: {note}"]
    info = json.loads((run / "run.json").read_text())
    assert info["notes"] == [note] and info["config"]["limit"] == 50 and info["config"]["n_patients"] == 4
    assert invoke(argv) == 0  # a resumed run writes run.json anew: the note is kept once
    assert json.loads((run / "run.json").read_text())["notes"] == [note]
    from medvlm.report.runs import load_run

    assert note in load_run(run).notes  # the report shows it in the run's section


@pytest.mark.parametrize("limit", [None, "2", "4"])
def test_a_limit_that_limits_or_none_adds_nothing(work, tmp_path, capsys, limit):
    run = tmp_path / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), *MOCK, "--orientations", "axial",
                   "--bootstrap", "0", *(["--limit", limit] if limit else [])]) == 0
    assert _notes(capsys) == [] and "notes" not in json.loads((run / "run.json").read_text())


def test_consistency_says_it_too(work, tmp_path, capsys):
    run = tmp_path / "c"
    assert invoke(["consistency", str(work), "--out", str(run), *MOCK, "--repeats", "2", "--limit", "9"]) == 0
    note = "--limit 9: the test cohort has 4 patients; all used"
    assert _notes(capsys) == [f"medvlm: note: {note}"]
    assert json.loads((run / "run.json").read_text())["notes"] == [note]
    run2 = tmp_path / "c2"
    assert invoke(["consistency", str(work), "--out", str(run2), *MOCK, "--repeats", "2", "--limit", "3",
                   "--patient", "P001", "--patient", "P002"]) == 0
    assert _notes(capsys) == ["medvlm: note: --limit 3: --patient gives 2 patients; all used"]


def test_an_image_task_counts_images_too(tmp_path, capsys):
    root = tmp_path
    assert invoke(["synth", str(root / "data"), "--task", "cxr", "--patients", "8", "--size", "small",
                   "--seed", "5"]) == 0
    work = root / "work"
    assert invoke(["prepare", str(root / "data"), "--out", str(work), "--task",
                   str(root / "data" / "cxr.yaml")]) == 0
    assert invoke(["split", str(work), "--folds", "2", "--test-fraction", "0.3"]) == 0
    capsys.readouterr()
    manifest = pd.read_csv(work / "manifest.csv", dtype=str).set_index("id")
    test_ids = json.loads((work / "splits.json").read_text())["test"]
    n_patients = manifest.loc[test_ids, "patient_id"].nunique()
    run = root / "run"
    assert invoke(["eval-vlm", str(work), "--out", str(run), "--backend", "mock", "--model", "always:1",
                   "--bootstrap", "0", "--limit", "50"]) == 0
    note = limit_note(50, n_patients, what="the test cohort has", n_images=len(test_ids))
    assert note == (f"--limit 50: the test cohort has {n_patients} patient{'s' * (n_patients != 1)} "
                    f"({len(test_ids)} images); all used")
    assert _notes(capsys) == [f"medvlm: note: {note}"]
    assert json.loads((run / "run.json").read_text())["notes"] == [note]
    assert len(pd.read_csv(run / "predictions.csv")) == len(test_ids)  # all used, indeed


def test_a_study_run_says_it_too(work, tmp_path, capsys):
    """`medvlm run`: the vlm stage with `limit: 50` prints the note (named by its run) and keeps it."""
    from types import SimpleNamespace

    from medvlm.study import _stage_vlm

    paths = SimpleNamespace(work=work, run=lambda name: tmp_path / "runs" / name, model=lambda m: m,
                            prompt=lambda x: x)  # study_paths._Paths, as far as the stage uses it
    fields = {"backend": "mock", "model": "mock", "orientations": ["axial"], "n_boot": 0, "limit": 50}
    record = _stage_vlm(paths, "v", fields, progress=False)
    note = "--limit 50: the test cohort has 4 patients; all used"
    assert _notes(capsys) == [f"medvlm: note: v: {note}"]
    assert record.summary["note"] == note
    assert json.loads((tmp_path / "runs" / "v" / "run.json").read_text())["notes"] == [note]
