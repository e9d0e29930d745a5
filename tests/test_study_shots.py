"""A shots sweep in `medvlm run`: ``shots: [0, 2]`` is one run per K, fingerprinted like any run, reported
as a few-shot arm with paired tests against the zero-shot run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.experiment import parse_experiment

BASE = {"data": {"synthetic": {"patients": 12, "lgg_fraction": 0.5, "seed": 0, "size": "small"}},
        "split": {"test_fraction": 0.25, "folds": 2}}
VLM = {"name": "vlm", "backend": "mock", "model": "hash", "slices": "central:2", "orientations": ["axial"],
       "bootstrap": 0}


def test_shots_list_is_one_run_per_k():
    config = parse_experiment({**BASE, "vlm": [{**VLM, "shots": [0, 2]}, {**VLM, "name": "other"}],
                               "consistency": [{"name": "c", "backend": "mock", "model": "hash",
                                                "shots": [1, 3]}],
                               "calibrate": [{"name": "cal", "run": "vlm-shots2"}]})
    assert [(r.name, r.shots) for r in config.vlm] == [("vlm-shots0", 0), ("vlm-shots2", 2), ("other", 0)]
    assert [(r.name, r.shots) for r in config.consistency] == [("c-shots1", 1), ("c-shots3", 3)]
    assert config.vlm[1].slices == "central:2" and config.vlm[1].backend == "mock"  # the rest as given


@pytest.mark.parametrize("shots", [[], [2, 2], [-1], ["two"], [1.5], [True]])
def test_bad_shots_sweeps_are_refused(shots):
    with pytest.raises(ConfigError, match=r"vlm\.0\.shots: a number of examples or a list of distinct"):
        parse_experiment({**BASE, "vlm": [{**VLM, "shots": shots}]})


def test_bad_single_shots_and_name_clash_are_refused():
    with pytest.raises(ConfigError, match=r"vlm\.0\.shots"):
        parse_experiment({**BASE, "vlm": [{**VLM, "shots": -1}]})
    with pytest.raises(ConfigError, match=r"run names must be unique; repeated: \['vlm-shots0'\]"):
        parse_experiment({**BASE, "vlm": [{**VLM, "shots": [0, 1]}, {**VLM, "name": "vlm-shots0"}]})


def test_zero_shot_fingerprints_stay_as_they_were():
    from medvlm.study import _Paths, plan_stages

    def fingerprints(vlm: dict) -> dict[str, str]:
        config = parse_experiment({**BASE, "vlm": [vlm]})
        paths = _Paths(config, Path("/nonexistent/out"), Path("/nonexistent"))
        stages = plan_stages(config, paths, progress=False)
        return {s.name: s.fingerprint for s in stages if s.name != "report"}

    omitted = fingerprints(VLM)
    assert fingerprints({**VLM, "shots": 0}) == omitted  # explicit K=0 is the run it always was
    assert fingerprints({**VLM, "shots": 2})["vlm"] != omitted["vlm"]


@pytest.mark.slow
def test_run_sweeps_shots_and_reports_the_few_shot_arm(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "shots", "out": "out", "prepare": {"shape": [8, 12, 12]},
                                    "vlm": [{**VLM, "shots": [0, 2]}]}))
    assert invoke(["run", str(path)]) == 0
    out = tmp_path / "out"
    stages = json.loads((out / "experiment.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["data", "prepare", "split", "vlm-shots0", "vlm-shots2", "report"]
    zero, few = out / "runs" / "vlm-shots0", out / "runs" / "vlm-shots2"
    assert json.loads((zero / "run.json").read_text())["config"]["shots"] == 0
    assert json.loads((few / "run.json").read_text())["config"]["shots"] == 2
    assert "shots" not in pd.read_csv(zero / "slices.csv").columns
    splits = json.loads((out / "work" / "splits.json").read_text())
    train = set(splits["folds"][0]["train"])
    shown = {i.split(":")[0] for ids in pd.read_csv(few / "slices.csv")["shots"] for i in ids.split(";")}
    assert shown and shown <= train
    from medvlm.report.html import load_run
    from medvlm.report.summary import paired_tests

    [pair] = paired_tests([load_run(zero), load_run(few)])
    assert pair["key"] and pair["comparison"] == "few-shot VLM vs general VLM"  # a key comparison
    assert (pair["a"], pair["b"]) == ("vlm-shots2", "vlm-shots0") and 0 <= pair["mcnemar_p"] <= 1
    html = (out / "report.html").read_text()
    assert '<tr class="key"><td class="l cmp">few-shot VLM vs general VLM</td>' in html
    assert "Labelled examples in the prompt (vlm-shots2 vs vlm-shots0)" in html
    assert "few-shot (no adapter)" in html
    capsys.readouterr()
    assert invoke(["run", str(path)]) == 0  # a rerun reuses both runs
    again = {s["name"]: s["status"] for s in json.loads((out / "experiment.json").read_text())["stages"]}
    assert again["vlm-shots0"] == again["vlm-shots2"] == "reused"


def test_expand_shots_sweeps_directly():
    from medvlm.vlm.fewshot import expand_shots_sweeps

    data = {"vlm": {"not": "a list"},
            "consistency": ["as is", {"name": "a"}, {"name": "c", "shots": [1, 0]}],
            "other": [{"name": "x", "shots": [1]}]}
    assert expand_shots_sweeps(data) == {
        "vlm": {"not": "a list"},  # a section that is not a list: left as it is, the next one still read
        "consistency": ["as is", {"name": "a"}, {"name": "c-shots1", "shots": 1},
                        {"name": "c-shots0", "shots": 0}],
        "other": [{"name": "x", "shots": [1]}]}  # not a section with runs
    assert data["consistency"][2] == {"name": "c", "shots": [1, 0]}  # the input is not changed
    assert expand_shots_sweeps(["not", "a dict"]) == ["not", "a dict"]
    assert expand_shots_sweeps({"vlm": [{"name": "v", "shots": [2]}]}, sections=("consistency",)) == {
        "vlm": [{"name": "v", "shots": [2]}]}
    with pytest.raises(ValueError, match=r"^consistency\.1\.name: Field required$"):
        expand_shots_sweeps({"consistency": [{"name": "a"}, {"shots": [1]}]})
    with pytest.raises(ValueError, match=r"^vlm\.0\.shots: a number of examples or a list of distinct "
                                         r"numbers >= 0 \(a sweep\); got \[1, 1\]$"):
        expand_shots_sweeps({"vlm": [{"name": "v", "shots": [1, 1]}]})
