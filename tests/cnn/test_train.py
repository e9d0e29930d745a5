"""Training end to end on the tiny separable cohort: learning, files, resume, folds, errors."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from cnn_helpers import make_work

from medvlm.cli import main
from medvlm.cnn import train as train_mod
from medvlm.cnn.checkpoints import load_checkpoint
from medvlm.cnn.config import CNNConfig, make_config
from medvlm.cnn.loop import make_loader, resolve_workers
from medvlm.cnn.train import HISTORY_COLUMNS, _select_value, train_cnn
from medvlm.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def cfg(**kw: Any) -> CNNConfig:
    base: dict[str, Any] = {"epochs": 2, "lr": 1e-3, "batch_size": 4, "workers": 0, "bootstrap": 0,
                            "progress": False, "device": "cpu"}
    base.update(kw)
    return make_config(**base)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def read_history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv").drop(columns="seconds")


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained(tiny_work: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run = tmp_path_factory.mktemp("runs") / "learn"
    metrics = train_cnn(tiny_work, run, cfg(epochs=8, bootstrap=50))
    return run, metrics


def test_learns_separable_cohort(trained: tuple[Path, dict[str, Any]]) -> None:
    run, metrics = trained
    history = pd.read_csv(run / "history.csv")
    assert metrics["folds"]["0"]["val"]["auc"] >= 0.9
    assert history["val_auc"].max() >= 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    best = metrics["training"]["0"]["best_epoch"]
    assert history["val_auc"].iloc[best - 1] == history["val_auc"].max()  # best checkpoint = best val AUC


def test_run_files(trained: tuple[Path, dict[str, Any]], tiny_work: Path) -> None:
    run, metrics = trained
    history = pd.read_csv(run / "history.csv")
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert list(history["epoch"]) == list(range(1, 9)) and set(history["fold"]) == {0}

    pred = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str, "fold": str})
    assert list(pred.columns) == ["patient_id", "cohort", "label", "pred", "score", "fold"]
    splits = json.loads((tiny_work / "splits.json").read_text())
    for cohort, ids in (("train", splits["folds"][0]["train"]), ("val", splits["folds"][0]["val"]),
                        ("test", splits["test"])):
        assert list(pred.loc[pred["cohort"] == cohort, "patient_id"]) == ids
    assert ((pred["score"] >= 0) & (pred["score"] <= 1)).all()
    assert (pred["pred"] == (pred["score"] >= 0.5).astype(int)).all()
    manifest = pd.read_csv(tiny_work / "manifest.csv", dtype={"patient_id": str})
    labels = dict(zip(manifest["patient_id"], manifest["label"], strict=True))
    assert (pred["label"] == pred["patient_id"].map(labels)).all()

    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["model"] == "small3d"
    assert isinstance(on_disk["notes"], list) and all(isinstance(n, str) for n in on_disk["notes"])
    leaf = on_disk["folds"]["0"]["test"]
    for key in ("n", "tp", "fp", "tn", "fn", "accuracy", "auc", "auc_ci", "accuracy_ci"):
        assert key in leaf
    assert leaf["n"] == len(splits["test"])
    assert on_disk["test"]["accuracy"] == leaf["accuracy"]
    test_rows = pred[pred["cohort"] == "test"]
    assert math.isclose(leaf["accuracy"], float((test_rows["label"] == test_rows["pred"]).mean()))
    assert on_disk["cv"]["n_folds"] == 1 and on_disk["cv"]["val"]["auc"]["std"] is None
    assert on_disk["n_parameters"] == 16 * 4 * 6 * 6 * 128 + 128 + 129 + 4 * 8 * 27 + 8 + 8 * 16 * 27 + 16

    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "cnn" and info["config"]["model"] == "small3d" and info["config"]["epochs"] == 8
    last = torch.load(run / "fold0" / "last.pt", weights_only=True)
    assert last["epoch"] == 8 and len(last["history"]) == 8
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    best = torch.load(run / "fold0" / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["training"]["0"]["best_epoch"]
    assert (run / "fold0" / "predictions.csv").read_text() == (run / "predictions.csv").read_text()


def test_rerun_of_finished_run_trains_nothing(trained: tuple[Path, dict[str, Any]], tiny_work: Path) -> None:
    run, metrics = trained
    before = (run / "history.csv").read_text()
    again = train_cnn(tiny_work, run, cfg(epochs=8, bootstrap=50))
    assert (run / "history.csv").read_text() == before  # seconds column unchanged: no epoch ran
    assert again["folds"] == metrics["folds"]
    fewer = train_cnn(tiny_work, run, cfg(epochs=4, bootstrap=50))  # fewer epochs: score what is there
    assert (run / "history.csv").read_text() == before and fewer["folds"] == metrics["folds"]


def test_resume_matches_uninterrupted(tiny_work: Path, tmp_path: Path) -> None:
    options = {"augment": True, "scheduler": "plateau"}
    train_cnn(tiny_work, tmp_path / "straight", cfg(epochs=4, **options))
    train_cnn(tiny_work, tmp_path / "resumed", cfg(epochs=2, **options))
    assert len(read_history(tmp_path / "resumed")) == 2
    train_cnn(tiny_work, tmp_path / "resumed", cfg(epochs=4, **options))  # extends the finished run
    pd.testing.assert_frame_equal(read_history(tmp_path / "straight"), read_history(tmp_path / "resumed"),
                                  check_exact=True)
    for name in ("last.pt", "best.pt"):
        assert same_weights(tmp_path / "straight" / "fold0" / name, tmp_path / "resumed" / "fold0" / name)
    assert (tmp_path / "straight" / "predictions.csv").read_bytes() == (
        tmp_path / "resumed" / "predictions.csv").read_bytes()


def test_crash_mid_epoch_then_resume(tiny_work: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    train_cnn(tiny_work, tmp_path / "straight", cfg(epochs=3))
    real = train_mod.train_one_epoch
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed in epoch 3")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", crashing)
    with pytest.raises(KeyboardInterrupt, match="killed in epoch 3"):
        train_cnn(tiny_work, tmp_path / "crashed", cfg(epochs=3))
    assert load_checkpoint(tmp_path / "crashed" / "fold0" / "last.pt")["epoch"] == 2
    assert not list((tmp_path / "crashed" / "fold0").glob("*.tmp"))
    assert list(pd.read_csv(tmp_path / "crashed" / "history.csv")["epoch"]) == [1, 2]  # written each epoch
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    train_cnn(tiny_work, tmp_path / "crashed", cfg(epochs=3))
    pd.testing.assert_frame_equal(read_history(tmp_path / "straight"), read_history(tmp_path / "crashed"))
    assert same_weights(tmp_path / "straight" / "fold0" / "last.pt",
                        tmp_path / "crashed" / "fold0" / "last.pt")


@pytest.mark.slow
def test_workers_do_not_change_results(tiny_work: Path, tmp_path: Path) -> None:
    # persistent workers started once per fold still see each epoch (it travels with the sampler's keys)
    train_cnn(tiny_work, tmp_path / "w0", cfg(epochs=3, augment=True))
    train_cnn(tiny_work, tmp_path / "w2", cfg(epochs=3, augment=True, workers=2))
    pd.testing.assert_frame_equal(read_history(tmp_path / "w0"), read_history(tmp_path / "w2"),
                                  check_exact=True)
    assert same_weights(tmp_path / "w0" / "fold0" / "last.pt", tmp_path / "w2" / "fold0" / "last.pt")
    # and a workers-2 run resumed after epoch 1 (fresh workers) matches too
    train_cnn(tiny_work, tmp_path / "w2r", cfg(epochs=1, augment=True, workers=2))
    train_cnn(tiny_work, tmp_path / "w2r", cfg(epochs=3, augment=True, workers=2))
    pd.testing.assert_frame_equal(read_history(tmp_path / "w0"), read_history(tmp_path / "w2r"),
                                  check_exact=True)


def test_workers_auto_and_persistent_loaders(tiny_work: Path, tmp_path: Path) -> None:
    import torch

    from medvlm.cnn.data import VolumeDataset
    from medvlm.data.cohorts import load_cohort

    assert CNNConfig().workers == "auto"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_workers("auto", cpu) == 0 and resolve_workers("auto", cuda) == 2
    assert resolve_workers(3, cpu) == 3 and resolve_workers(0, cuda) == 0
    ds = VolumeDataset(tiny_work, load_cohort(tiny_work, "val", fold=0))
    auto = make_loader(ds, cfg(workers="auto"), cpu)
    assert auto.num_workers == 0 and not auto.persistent_workers
    two = make_loader(ds, cfg(workers=2), cpu)
    assert two.num_workers == 2 and two.persistent_workers and two.prefetch_factor == 2
    assert not make_loader(ds, cfg(workers=2), cpu, persistent=False).persistent_workers
    with pytest.raises(ConfigError, match="workers"):
        cfg(workers=-1)
    with pytest.raises(ConfigError, match="workers"):
        cfg(workers="many")
    train_cnn(tiny_work, tmp_path / "auto", cfg(epochs=1, workers="auto"))
    info = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert info["config"]["workers"] == "auto" and info["config"]["workers_resolved"] == 0


def test_fold_all(tiny_work: Path, tmp_path: Path) -> None:
    run = tmp_path / "cv"
    metrics = train_cnn(tiny_work, run, cfg(epochs=2, fold="all"))
    splits = json.loads((tiny_work / "splits.json").read_text())
    history = pd.read_csv(run / "history.csv")
    assert list(history["fold"]) == [0, 0, 1, 1, 2, 2]

    pred = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str, "fold": str})
    assert pred["patient_id"].is_unique
    non_test = [pid for fold in splits["folds"] for pid in fold["val"]]
    val = pred[pred["cohort"] == "val"]
    assert sorted(val["patient_id"]) == sorted(non_test)  # out-of-fold: every non-test patient once
    for k, fold in enumerate(splits["folds"]):
        assert set(val.loc[val["fold"] == str(k), "patient_id"]) == set(fold["val"])
    test = pred[pred["cohort"] == "test"].set_index("patient_id")
    assert set(test["fold"]) == {"ensemble"} and list(test.index) == splits["test"]
    per_fold = [pd.read_csv(run / f"fold{k}" / "predictions.csv", dtype={"patient_id": str})
                for k in range(3)]
    mean = np.mean([f[f["cohort"] == "test"].set_index("patient_id").loc[test.index, "score"]
                    for f in per_fold], axis=0)
    np.testing.assert_allclose(test["score"].to_numpy(), mean, atol=1e-6)

    assert set(metrics["folds"]) == {"0", "1", "2"}
    cv = metrics["cv"]
    assert cv["n_folds"] == 3
    accs = [metrics["folds"][k]["val"]["accuracy"] for k in "012"]
    assert math.isclose(cv["val"]["accuracy"]["mean"], float(np.mean(accs)))
    assert math.isclose(cv["val"]["accuracy"]["std"], float(np.std(accs, ddof=1)))
    assert metrics["oof_val"]["n"] == len(non_test)
    assert metrics["test"]["n"] == len(splits["test"]) and "ensemble" in metrics["test_predictions"]


def test_early_stopping(tiny_work: Path, tmp_path: Path) -> None:
    # a vanishing learning rate: val loss never improves strictly after epoch 1 ... up to float noise
    metrics = train_cnn(tiny_work, tmp_path / "es", cfg(epochs=10, lr=1e-30, early_stopping=2,
                                                     select_metric="val_auc"))
    training = metrics["training"]["0"]
    assert training["best_epoch"] == 1 and training["epochs_trained"] == 3 and training["stopped_early"]
    assert len(pd.read_csv(tmp_path / "es" / "history.csv")) == 3


def test_select_value_direction() -> None:
    assert _select_value({"val_loss": 0.2}, "val_loss") > _select_value({"val_loss": 0.3}, "val_loss")
    assert _select_value({"val_auc": 0.8}, "val_auc") > _select_value({"val_auc": 0.7}, "val_auc")
    assert _select_value({"val_auc": None}, "val_auc")[0] == -math.inf
    # a tie on the chosen metric goes to the lower validation loss
    assert (_select_value({"val_auc": 1.0, "val_loss": 0.1}, "val_auc")
            > _select_value({"val_auc": 1.0, "val_loss": 0.4}, "val_auc"))
    assert (_select_value({"val_auc": 0.9, "val_loss": 0.1}, "val_auc")
            < _select_value({"val_auc": 1.0, "val_loss": 0.4}, "val_auc"))


def test_resume_with_other_options_is_refused(tiny_work: Path, tmp_path: Path) -> None:
    train_cnn(tiny_work, tmp_path / "r", cfg(epochs=1))
    with pytest.raises(ConfigError, match="--lr 0.001, not 0.01"):
        train_cnn(tiny_work, tmp_path / "r", cfg(epochs=2, lr=0.01))
    with pytest.raises(ConfigError, match="--model"):
        train_cnn(tiny_work, tmp_path / "r", cfg(epochs=2, model="resnet18"))
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config"]["lr"] == 1e-3  # untouched


def test_learning_curve_figure(tiny_work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen: list[pd.DataFrame] = []

    def learning_curve_figure(history: pd.DataFrame) -> Any:
        seen.append(history)
        fig, ax = plt.subplots()
        ax.plot(history["epoch"], history["train_loss"])
        return fig

    fake = types.ModuleType("medvlm.report.figures")
    fake.learning_curve_figure = learning_curve_figure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medvlm.report.figures", fake)
    train_cnn(tiny_work, tmp_path / "fig", cfg(epochs=1))
    assert (tmp_path / "fig" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert list(seen[0].columns) == list(HISTORY_COLUMNS)

    def broken(history: pd.DataFrame) -> Any:
        raise RuntimeError("no figure today")

    fake.learning_curve_figure = broken  # type: ignore[attr-defined]
    train_cnn(tiny_work, tmp_path / "nofig", cfg(epochs=1))  # training still succeeds
    assert (tmp_path / "nofig" / "metrics.json").is_file()
    assert not (tmp_path / "nofig" / "learning_curve.png").exists()


# ------------------------------------------------------------------------------------------ bad inputs
def test_cli_trains(tiny_work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli(["train-cnn", str(tiny_work), "--out", str(tmp_path / "cli"), "--epochs", "1",
                       "--workers", "0", "--bootstrap", "0", "--no-progress", "--device", "cpu",
                       "--fold", "1"], capsys)
    assert code == 0
    assert set(pd.read_csv(tmp_path / "cli" / "history.csv")["fold"]) == {1}


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "smal3d"], "Did you mean 'small3d'"),
    (["--model", "densenet121"], "cannot take volumes of shape 4x16x24x24"),
    (["--fold", "3"], "has folds 0..2"),
    (["--fold", "x"], "--fold must be a fold number"),
    (["--select-metric", "auc"], "Did you mean 'val_auc'"),
    (["--epochs", "0"], "'epochs'"),
    (["--device", "gpu"], "'device' parameter"),
    (["--workers", "two"], "--workers must be a number of processes (0 or more) or 'auto', got 'two'"),
    (["--workers", "-1"], "--workers must be a number"),
])
def test_cli_bad_options(args: list[str], message: str, tiny_work: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train-cnn", str(tiny_work), "--out", str(tmp_path / "bad"), "--workers", "0",
                         *args], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("medvlm: error:")
    assert not (tmp_path / "bad").exists()  # nothing written before the check


def broken_work(root: Path, kind: str) -> Path:
    work = make_work(root, n=12, n_lgg=4, n_test=2, folds=2)
    splits = json.loads((work / "splits.json").read_text())
    if kind == "no split":
        (work / "splits.json").unlink()
    elif kind == "empty val":
        splits["folds"][0]["val"] = []
    elif kind == "missing volume":
        (work / "volumes" / f"{splits['test'][0]}.npy").unlink()
    elif kind == "no folds":
        splits["folds"] = []
    elif kind == "empty train":
        splits["folds"][0]["train"] = []
    (work / "splits.json").write_text(json.dumps(splits)) if kind != "no split" else None
    return work


@pytest.mark.parametrize(("kind", "message"), [
    ("no split", "splits.json: no split"),
    ("empty val", "cohort 'val' (fold 0) has no patient"),
    ("empty train", "cohort 'train' (fold 0) has no patient"),
    ("missing volume", "is missing"),
    ("no folds", "the split has no fold"),
])
def test_cli_bad_work(kind: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = broken_work(tmp_path / "work", kind)
    code, err = run_cli(["train-cnn", str(work), "--out", str(tmp_path / "run"), "--workers", "0"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_missing_work_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="work folder not found"):
        train_cnn(tmp_path / "nope", tmp_path / "run", cfg())


def test_empty_test_cohort_is_reported_not_fatal(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work", n=12, n_lgg=4, n_test=2, folds=2)
    splits = json.loads((work / "splits.json").read_text())
    splits["test"] = []
    (work / "splits.json").write_text(json.dumps(splits))
    metrics = train_cnn(work, tmp_path / "run", cfg(epochs=1))
    assert metrics["test"] is None and "test" not in metrics["folds"]["0"]
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert set(pred["cohort"]) == {"train", "val"}
