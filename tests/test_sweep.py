"""`medvlm sweep`: folds x lrs as a submitit job array (local executor; Slurm via a fake sbatch)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cli import invoke as _run
from medvlm.sweep import SweepConfig, collect_sweep, lr_tag, plan_sweep, submit_sweep

CNN_OPTIONS = {"epochs": 1, "batch_size": 2, "workers": 0, "bootstrap": 0, "device": "cpu"}




def test_plan_names_and_validates_every_job(prepared_work, tmp_path):
    jobs = plan_sweep(prepared_work, tmp_path / "s", SweepConfig(what="cnn", folds="all", lrs=[1e-4, 3e-4],
                                                                  options=CNN_OPTIONS))
    assert [j["name"] for j in jobs] == ["cnn-fold0-lr1e-4", "cnn-fold0-lr3e-4", "cnn-fold1-lr1e-4",
                                         "cnn-fold1-lr3e-4"]
    assert jobs[3]["folder"] == str((tmp_path / "s" / "cnn-fold1-lr3e-4").resolve())
    assert lr_tag(0.0003) == "3e-4"


@pytest.mark.slow
def test_local_executor_runs_the_array_and_collects(prepared_work, tmp_path):
    sweep = tmp_path / "sweep"
    record = submit_sweep(prepared_work, sweep, SweepConfig(what="cnn", folds=[0], lrs=[1e-4, 3e-4],
                                                            options=CNN_OPTIONS, executor="local"),
                          wait=True)
    assert len(record["jobs"]) == 2 and all(j["job_id"] for j in record["jobs"])
    saved = json.loads((sweep / "sweep.json").read_text())
    assert [j["name"] for j in saved["jobs"]] == ["cnn-fold0-lr1e-4", "cnn-fold0-lr3e-4"]
    for job in saved["jobs"]:
        run = Path(job["folder"])
        assert (run / "metrics.json").is_file() and (run / "history.csv").is_file()
        info = json.loads((run / "run.json").read_text())
        assert info["config"]["lr"] == job["lr"] and info["config"]["fold"] == 0
        assert json.loads((run / "job.json").read_text())["metrics"]["epochs_trained"] == 1
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["state"]) == ["done", "done"]
    assert list(summary["lr"]) == [1e-4, 3e-4] and list(summary["fold"]) == [0, 0]
    assert summary["val_accuracy"].between(0, 1).all() and (summary["epochs_trained"] == 1).all()
    metrics = json.loads((Path(saved["jobs"][0]["folder"]) / "metrics.json").read_text())
    assert summary.loc[0, "val_accuracy"] == pytest.approx(metrics["folds"]["0"]["val"]["accuracy"])


@pytest.mark.slow
def test_failed_job_is_recorded_with_its_error(prepared_work, tmp_path):
    sweep = tmp_path / "ft"
    code = _run(["sweep", str(prepared_work), "--out", str(sweep), "--what", "finetune", "--folds", "1",
                 "--lr", "2e-4", "--executor", "local", "--wait",
                 "--option", f"base_model={tmp_path / 'no-such-model'}"])
    assert code == 0
    summary = pd.read_csv(sweep / "summary.csv", keep_default_na=False)
    assert list(summary["name"]) == ["finetune-fold1-lr2e-4"]
    assert summary.loc[0, "state"] == "failed" and "no-such-model" in summary.loc[0, "error"]
    # collecting again (the CLI step) gives the same table
    assert _run(["sweep", str(prepared_work), "--out", str(sweep), "--collect"]) == 0
    assert pd.read_csv(sweep / "summary.csv", keep_default_na=False).equals(summary)


def test_slurm_array_carries_partition_time_gpus(prepared_work, tmp_path, monkeypatch):
    """A fake sbatch/srun on PATH: the submitted script holds the cluster options and the array."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "sbatch_args.txt"
    for name, body in (("sbatch", f'echo "$@" >> {log}\necho "Submitted batch job 4242"\n'),
                       ("srun", "exit 0\n")):
        path = bindir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    sweep = tmp_path / "slurm"
    code = _run(["sweep", str(prepared_work), "--out", str(sweep), "--folds", "all", "--lr", "1e-4,3e-4",
                 "--partition", "gpu-h200", "--time", "90", "--gpus", "2", "--cpus", "8", "--mem", "64",
                 "--parallel", "3", "--slurm", "account=lab", "--option", "epochs=30"])
    assert code == 0
    record = json.loads((sweep / "sweep.json").read_text())
    assert [j["job_id"] for j in record["jobs"]] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert record["config"]["options"] == {"epochs": 30}
    script = next((sweep / "submitit").rglob("*submission.sh")).read_text()
    for line in ("#SBATCH --partition=gpu-h200", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --array=0-3%3",
                 "#SBATCH --account=lab"):
        assert line in script, line
    frame = collect_sweep(sweep)
    assert list(frame["state"]) == ["pending"] * 4


def test_bad_options_exit_2(prepared_work, tmp_path, capsys):
    base = ["sweep", str(prepared_work), "--out", str(tmp_path / "s"), "--executor", "local"]
    for extra, needle in ((["--folds", "7"], "--folds 7"), (["--folds", "x"], "--folds"),
                          (["--lr", "abc"], "--lr"), (["--lr", "-1"], "--lr"),
                          (["--what", "cnm"], "Did you mean 'cnn'"),
                          (["--option", "epochs=0"], "epochs"), (["--option", "nonsense"], "key=value"),
                          (["--option", "colour=red"], "colour")):
        assert _run([*base, *extra]) == 2, extra
        assert needle in capsys.readouterr().err, extra
    assert not (tmp_path / "s" / "sweep.json").exists()
    monkeypatch_path = os.environ["PATH"]
    os.environ["PATH"] = str(tmp_path)  # no sbatch anywhere
    try:
        assert _run(["sweep", str(prepared_work), "--out", str(tmp_path / "s")]) == 2
        assert "sbatch" in capsys.readouterr().err
    finally:
        os.environ["PATH"] = monkeypatch_path
    assert _run(["sweep", str(prepared_work), "--out", str(tmp_path / "none"), "--collect"]) == 2
    assert "sweep.json" in capsys.readouterr().err
