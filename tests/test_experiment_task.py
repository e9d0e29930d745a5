"""A task YAML named by an experiment file (``task: FILE.yaml``) is read and checked when the file loads
(``medvlm run FILE`` and ``medvlm run FILE --check``): one line, exit 2, before any stage runs."""

from __future__ import annotations

import pytest
import yaml

from medvlm.cli import invoke
from medvlm.data.synth_cxr import synth_cxr
from medvlm.errors import ConfigError
from medvlm.experiment import load_experiment

GOOD_TASK = {"name": "my-task", "classes": ["normal", "pneumonia"], "positive": "pneumonia",
             "source": {"kind": "image-csv", "csv": "labels.csv"}, "prompt": "Answer 0 or 1."}
RUNS = {"vlm": [{"name": "v", "backend": "mock", "model": "hash"}]}

BAD_TASKS = [
    ({**GOOD_TASK, "clases": ["a", "b"]},
     r"task: .*bad\.yaml: unknown key 'clases'\. Did you mean 'classes'\?$"),
    ({**GOOD_TASK, "positive": "pneumonai"},
     r"task: .*bad\.yaml: positive 'pneumonai' is not among the classes \['normal', 'pneumonia'\]\. "
     r"Did you mean 'pneumonia'\?$"),
]


def _experiment(tmp_path, task: str = "bad.yaml", data: dict | None = None, runs: dict | None = None):
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "out": "study", "task": task,
                                    "data": data or {"path": "data"}, **(runs or RUNS)}))
    return path


@pytest.mark.parametrize(("spec", "message"), BAD_TASKS)
def test_a_bad_task_file_fails_at_config_load(tmp_path, spec, message):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    exp = _experiment(tmp_path)
    with pytest.raises(ConfigError, match=r"^" + str(exp).replace(".", r"\.") + ": " + message):
        load_experiment(exp)


@pytest.mark.parametrize(("spec", "message"), BAD_TASKS)
def test_run_and_run_check_report_it_in_one_line_before_any_stage(tmp_path, capsys, spec, message):
    import re

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    exp = _experiment(tmp_path)
    for argv in (["run", str(exp), "--check"], ["run", str(exp)]):
        assert invoke(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
        assert "Traceback" not in err[0]
    assert not (tmp_path / "study").exists()  # no stage ran


def test_a_missing_task_file_names_where_it_was_looked_for(tmp_path, capsys):
    exp = _experiment(tmp_path, task="nowhere.yaml")
    with pytest.raises(ConfigError, match=r"task: nowhere\.yaml: no such task file \(looked in the data "
                                          r"folder, then next to the experiment file: .*nowhere\.yaml\)$"):
        load_experiment(exp)
    assert invoke(["run", str(exp), "--check"]) == 2
    assert "nowhere.yaml: no such task file" in capsys.readouterr().err


def test_runs_are_checked_against_the_task_file(tmp_path):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD_TASK))
    runs = {"vlm": [{"name": "v", "backend": "mock", "model": "hash", "tie_break": "HGG"}]}
    with pytest.raises(ConfigError, match=r"exp\.yaml: task: The '--tie-break' parameter must be one of "
                                          r"\['normal', 'pneumonia'\]\. Got 'hgg' instead"):
        load_experiment(_experiment(tmp_path, task="good.yaml", runs=runs))
    runs = {"vlm": [{"name": "v", "backend": "mock", "model": "hash", "prompt": "seed"}]}
    with pytest.raises(ConfigError, match=r"task: --prompt seed: a built-in prompt of another task"):
        load_experiment(_experiment(tmp_path, task="good.yaml", runs=runs))


def test_the_task_file_in_the_data_folder_comes_first(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.yaml").write_text(yaml.safe_dump(GOOD_TASK))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**GOOD_TASK, "clases": []}))  # not read
    config, _ = load_experiment(_experiment(tmp_path, task="t.yaml"))
    assert config.task == "t.yaml"


def test_a_good_task_file_passes_run_check(tmp_path, capsys):
    synth_cxr(tmp_path / "data", patients=4, size="small", dicom=False)
    exp = _experiment(tmp_path, task="cxr.yaml")
    assert invoke(["run", str(exp), "--check"]) == 0, capsys.readouterr().err
    assert f"{exp}: valid" in capsys.readouterr().out


def test_run_check_names_a_missing_source_file_not_a_brats_layout(tmp_path, capsys):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD_TASK))
    assert invoke(["run", str(_experiment(tmp_path, task="good.yaml")), "--check"]) == 2
    err = capsys.readouterr().err
    assert "data.path: task my-task: source image-csv file" in err and "labels.csv does not exist" in err
    assert "BraTS" not in err


def test_the_synthetic_cohorts_own_task_file_needs_no_file_yet(tmp_path, capsys):
    exp = _experiment(tmp_path, task="cxr.yaml", data={"synthetic": {"kind": "cxr", "size": "small"}})
    config, _ = load_experiment(exp)
    assert config.task == "cxr.yaml"
    assert invoke(["run", str(exp), "--check"]) == 0, capsys.readouterr().err
    runs = {"vlm": [{"name": "v", "backend": "mock", "model": "hash", "tie_break": "pneumonia"}]}
    with pytest.raises(ConfigError, match=r"Got 'pneumonia' instead"):  # still checked against its classes
        load_experiment(_experiment(tmp_path, task="cxr.yaml", runs=runs,
                                    data={"synthetic": {"kind": "cxr", "size": "small"}}))
