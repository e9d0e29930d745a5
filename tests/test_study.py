"""``medvlm demo`` (today: synth -> prepare -> split) as a library call and a command."""

from __future__ import annotations

import json

import pytest

from medvlm.cli import main
from medvlm.data.cohorts import load_cohort
from medvlm.errors import ConfigError
from medvlm.study import DEMO_STAGES, DemoConfig, run_demo

TINY = DemoConfig(patients=8, lgg_fraction=0.25, size="small", shape=(8, 12, 12), test_fraction=0.25, folds=2)


def test_run_demo_stages_and_resume(tmp_path):
    result = run_demo(tmp_path, TINY)
    assert [s.name for s in result.stages] == [n for n, _ in DEMO_STAGES][:3] == ["synth", "prepare", "split"]
    assert result.stage("synth").summary["patients"] == 8 and result.stage("synth").summary["lgg"] == 2
    assert result.stage("prepare").summary["ok"] == 8
    assert len(load_cohort(tmp_path / "work", "test")) == 2
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["config"]["patients"] == 8 and [s["name"] for s in record["stages"]][:3] == [
        "synth", "prepare", "split"]
    again = run_demo(tmp_path, TINY)
    assert again.stage("synth").summary["reused"] is True
    assert again.stage("prepare").summary["reused"] == 8


def test_run_demo_only_and_unknown_stage(tmp_path):
    result = run_demo(tmp_path, TINY, only=["synth"])
    assert [s.name for s in result.stages] == ["synth"]
    with pytest.raises(ConfigError, match="unknown demo stage"):
        run_demo(tmp_path, TINY, only=["nope"])


def test_demo_config_forbids_typos():
    with pytest.raises(ValueError):
        DemoConfig(patiens=3)  # type: ignore[call-arg]


def test_cli_demo_bad_option_exit_2(tmp_path, capsys):
    try:
        main(["demo", "--out", str(tmp_path), "--size", "huge"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medvlm: error: --size")
