"""Data-parallel train-cnn under torchrun: 2 CPU processes (gloo) on the tiny separable cohort."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cnn.checkpoints import load_checkpoint
from medvlm.cnn.train import HISTORY_COLUMNS

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not (TORCHRUN.is_file() or shutil.which("torchrun")), reason="torchrun not installed")
def test_torchrun_two_processes_train_and_write_once(tiny_work: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    exe = str(TORCHRUN) if TORCHRUN.is_file() else str(shutil.which("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [exe, "--standalone", "--nproc-per-node", "2", "-m", "medvlm", "train-cnn", str(tiny_work),
            "--out", str(run), "--epochs", "2", "--lr", "1e-3", "--batch-size", "2", "--workers", "0",
            "--bootstrap", "0", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone reports
    assert proc.stderr.count("train-cnn: done") == 1
    assert proc.stdout.count("test accuracy") == 1
    assert "data-parallel over 2 processes" in proc.stderr

    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history[["fold", "epoch"]].values.tolist() == [[0, 1], [0, 2]]  # no duplicate rows
    assert history["train_loss"].notna().all() and history["val_loss"].notna().all()
    # train accuracy is all-reduced: a count over both ranks' items (10 each, padded) / 20
    assert all(abs(a * 20 - round(a * 20)) < 1e-9 for a in history["train_accuracy"])

    splits = json.loads((tiny_work / "splits.json").read_text())
    n = len(splits["folds"][0]["train"]) + len(splits["folds"][0]["val"]) + len(splits["test"])
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == n and not predictions.duplicated(["patient_id", "cohort"]).any()
    assert sorted(predictions["cohort"].unique()) == ["test", "train", "val"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["folds"]["0"]["val"]["accuracy"] is not None
    assert metrics["folds"]["0"]["val"]["auc"] is not None
    assert metrics["training"]["0"]["epochs_trained"] == 2
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "cnn" and info["config"]["world_size"] == 2
    ckpt = load_checkpoint(run / "fold0" / "last.pt")
    assert ckpt["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
    assert not list(run.rglob("*.tmp*"))

    # resume: every rank loads last.pt and extends the run by one epoch
    args[args.index("--epochs") + 1] = "3"
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("resuming after epoch 2") == 1
    resumed = pd.read_csv(run / "history.csv")
    assert resumed["epoch"].tolist() == [1, 2, 3]
    assert resumed.drop(columns="seconds").iloc[:2].equals(history.drop(columns="seconds"))
