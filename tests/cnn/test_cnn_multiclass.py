"""train-cnn on a task with three classes: K outputs, cross-entropy, one probability column per class in
predictions.csv (as a VLM run writes them), multi-class metrics through the shared path, resume, and the
fold ensemble of class probabilities.

The cohort: a tiny MedMNIST-style file whose three classes differ in intensity only (means 40, 125, 210
of 255), separable by any network that sees the mean. The network is a test-only 2D CNN without
BatchNorm (conv 3x3 -> ReLU -> global average -> linear), so three epochs take seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medvlm.cli import invoke

TASK = """name: tiny-three
classes: [low, mid, high]
source: {kind: medmnist, npz: three.npz}
prompt: "low (0), mid (1) or high (2)? Choice:"
"""
PROBS = ["p_low", "p_mid", "p_high"]
TRAIN = ["--model", "tiny2d", "--batch-size", "6", "--lr", "0.05", "--workers", "0", "--bootstrap", "0",
         "--no-progress"]


def tiny2d(input_shape, n_outputs=1):  # noqa: ANN001, ANN201 - a MODELS factory
    from torch import nn

    return nn.Sequential(nn.Conv2d(int(input_shape[0]), 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, n_outputs))


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory):
    from medvlm.cnn.models import MODELS

    root = tmp_path_factory.mktemp("k3")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 12), ("test", 12)):
        labels = np.arange(n) % 3
        images = rng.normal(0, 12, (n, 20, 20)) + 40 + 85 * labels[:, None, None]
        arrays[f"{split}_images"] = images.clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(n, 1)
    np.savez(root / "three.npz", **arrays)
    (root / "task.yaml").write_text(TASK)
    work = root / "w"
    assert invoke(["prepare", str(root), "--out", str(work), "--task", str(root / "task.yaml")]) == 0
    assert invoke(["split", str(work)]) == 0
    MODELS._entries["tiny2d"] = tiny2d  # test-only network
    run = root / "run"
    assert invoke(["train-cnn", str(work), "--out", str(run), "--epochs", "3", *TRAIN]) == 0
    yield work, run
    MODELS._entries.pop("tiny2d", None)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str, "image_id": str, "fold": str})


def test_predictions_have_one_probability_per_class(three_class) -> None:
    _, run = three_class
    preds = read(run / "predictions.csv")
    columns = ["patient_id", "image_id", "cohort", "label", "pred", "score", *PROBS, "fold"]
    assert list(preds.columns) == columns
    assert sorted(preds["cohort"].unique()) == ["test", "train", "val"]
    p = preds[PROBS].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=5e-6)  # softmax, rounded to 6 decimals
    assert (preds["pred"].to_numpy() == p.argmax(axis=1)).all()
    assert (preds["score"] == preds["p_high"]).all()  # no positive class named: the last, as a VLM run
    assert set(preds["label"]) == {0, 1, 2}
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["task"]["classes"] == ["low", "mid", "high"]


def test_learns_the_three_classes_and_the_metrics_follow_the_file(three_class) -> None:
    _, run = three_class
    preds = read(run / "predictions.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    for cohort in ("val", "test"):
        rows = preds[preds["cohort"] == cohort]
        auc = roc_auc_score(rows["label"], rows[PROBS].to_numpy(), multi_class="ovr", average="macro")
        leaf = metrics["test"] if cohort == "test" else metrics["folds"]["0"]["val"]
        assert leaf["auc"] == pytest.approx(auc, abs=1e-12)
        assert leaf["auc"] > 0.8
        assert leaf["accuracy"] == pytest.approx(float((rows["label"] == rows["pred"]).mean()), abs=1e-12)
        assert leaf["confusion"] == pd.crosstab(rows["label"], rows["pred"]).reindex(
            index=range(3), columns=range(3), fill_value=0).to_numpy().tolist()
        assert [c["class"] for c in leaf["per_class"]] == ["low", "mid", "high"]
    assert set(metrics["cv"]["val"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auc"}


def test_history_selects_by_macro_auc(three_class) -> None:
    from medvlm.cnn.train import HISTORY_COLUMNS

    _, run = three_class
    history = pd.read_csv(run / "history.csv")
    assert tuple(history.columns) == HISTORY_COLUMNS
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["training"]["0"]["best_epoch"]
    row = history[history["epoch"] == best].iloc[0]
    assert metrics["training"]["0"]["best_value"] == row["val_auc"]
    assert row["val_auc"] == history["val_auc"].max()
    # the best epoch's checkpoint scored the val cohort: its macro AUC is the history's (6-decimal rounding)
    assert metrics["folds"]["0"]["val"]["auc"] == pytest.approx(row["val_auc"], abs=1e-6)


def test_metrics_command_reads_the_run_like_a_vlm_run(three_class, capsys: pytest.CaptureFixture) -> None:
    _, run = three_class
    capsys.readouterr()
    assert invoke(["metrics", str(run / "predictions.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    test = json.loads((run / "metrics.json").read_text())["test"]
    for key in ("n", "accuracy", "balanced_accuracy", "macro_f1", "auc", "confusion", "classes"):
        assert out[key] == test[key], key


def test_resume_reproduces_an_uninterrupted_run(three_class, tmp_path: Path) -> None:
    work, run = three_class
    resumed = tmp_path / "resumed"
    assert invoke(["train-cnn", str(work), "--out", str(resumed), "--epochs", "2", *TRAIN]) == 0
    assert len(pd.read_csv(resumed / "history.csv")) == 2
    assert invoke(["train-cnn", str(work), "--out", str(resumed), "--epochs", "3", *TRAIN]) == 0
    straight, again = pd.read_csv(run / "history.csv"), pd.read_csv(resumed / "history.csv")
    pd.testing.assert_frame_equal(straight.drop(columns="seconds"), again.drop(columns="seconds"))
    assert (run / "predictions.csv").read_bytes() == (resumed / "predictions.csv").read_bytes()


def test_fold_ensemble_is_the_mean_of_class_probabilities(three_class, tmp_path: Path) -> None:
    import shutil

    work, _ = three_class
    two = tmp_path / "w2"
    shutil.copytree(work, two)
    splits = json.loads((two / "splits.json").read_text())
    fold = splits["folds"][0]
    pool = fold["train"] + fold["val"]
    splits["folds"] = [{"train": pool[12:], "val": pool[:12]}, {"train": pool[:30], "val": pool[30:]}]
    (two / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "all"
    assert invoke(["train-cnn", str(two), "--out", str(out), "--epochs", "1", "--fold", "all", *TRAIN]) == 0
    preds = read(out / "predictions.csv")
    test = preds[preds["cohort"] == "test"].set_index("image_id")
    assert set(test["fold"]) == {"ensemble"} and len(test) == 12
    folds = [read(out / f"fold{k}" / "predictions.csv") for k in (0, 1)]
    mean = sum(f[f["cohort"] == "test"].set_index("image_id")[PROBS] for f in folds) / 2
    np.testing.assert_allclose(test[PROBS].to_numpy(), mean.loc[test.index].to_numpy(), atol=1e-6)
    assert (test["pred"].to_numpy() == mean.loc[test.index].to_numpy().argmax(axis=1)).all()
    assert sorted(preds.loc[preds["cohort"] == "val", "fold"].unique()) == ["0", "1"]  # out-of-fold rows
    assert "oof_val" in json.loads((out / "metrics.json").read_text())


def test_ensemble_leaves_out_a_fold_that_abstained() -> None:
    from types import SimpleNamespace

    from medvlm.cnn.multiclass import ensemble

    task = SimpleNamespace(n_classes=3, positive_label=2, prob_columns=["p_a", "p_b", "p_c", "p_x"])
    df = pd.DataFrame({"patient_id": ["u", "v", "u", "v"], "label": [0, 2, 0, 2], "pred": [0, None, 1, None],
                       "score": [0.2, None, 0.1, None], "p_a": [0.6, None, 0.2, None],
                       "p_b": [0.2, None, 0.7, None], "p_c": [0.2, None, 0.1, None],
                       "fold": ["0", "0", "1", "1"]})
    out = ensemble(df, task)
    assert out["patient_id"].tolist() == ["u", "v"]
    assert out.loc[0, ["p_a", "p_b", "p_c"]].tolist() == pytest.approx([0.4, 0.45, 0.15])
    assert out.loc[0, "pred"] == 1 and out.loc[0, "score"] == pytest.approx(0.15)
    assert pd.isna(out.loc[1, "pred"]) and pd.isna(out.loc[1, "p_a"])  # no fold answered: an abstention


def test_epoch_metrics_of_class_probabilities() -> None:
    from medvlm.cnn.multiclass import epoch_metrics

    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7]])
    m = epoch_metrics([0, 1, 2, 2], probs)  # preds 0, 1, 1, 2
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["auc"] == pytest.approx(roc_auc_score([0, 1, 2, 2], probs, multi_class="ovr"))
    from sklearn.metrics import matthews_corrcoef

    assert m["mcc"] == pytest.approx(matthews_corrcoef([0, 1, 2, 2], [0, 1, 1, 2]))
    binary = epoch_metrics([0, 1, 1], np.array([0.2, 0.6, 0.4]))
    assert binary["accuracy"] == pytest.approx(2 / 3) and binary["auc"] == 1.0


def test_models_take_the_number_of_classes() -> None:
    import torch

    from medvlm.cnn.models import build_model, check_input_shape

    assert check_input_shape("resnet2d", (1, 32, 32), 3) == (1, 32, 32)
    torch.manual_seed(0)
    net = build_model("small3d", (4, 8, 8, 8), 3)
    assert tuple(net(torch.zeros(2, 4, 8, 8, 8)).shape) == (2, 3)
    torch.manual_seed(0)
    one = build_model("small3d", (4, 8, 8, 8))
    assert tuple(one(torch.zeros(2, 4, 8, 8, 8)).shape) == (2, 1)


def test_oversampling_weighs_every_class_equally() -> None:
    from medvlm.cnn.data import EpochSampler

    labels = [0] * 10 + [1] * 4 + [2] * 2
    sampler = EpochSampler(labels, oversample=True, seed=0)
    weights = np.array(sampler.weights())
    assert [weights[np.array(labels) == c].sum() for c in range(3)] == pytest.approx([1.0, 1.0, 1.0])
    drawn = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        drawn += [labels[i] for i in sampler.indices()]
    assert np.bincount(drawn, minlength=3).min() > 0.25 * len(drawn)  # about a third each, not 10/16
