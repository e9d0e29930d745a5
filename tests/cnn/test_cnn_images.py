"""The CNN on a 2D image task: the items it sees, and train-cnn end to end on a tiny MedMNIST file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke

TASK = """name: tiny-images
classes: [a, b]
positive: b
source: {kind: medmnist, npz: tiny.npz}
prompt: "a (0) or b (1)? Choice:"
"""


@pytest.fixture()
def image_work(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, (n, 20, 20), dtype=np.uint8)
        images[labels == 1, 5:15, 5:15] = 250  # class b: a bright square
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(n, 1)
    np.savez(tmp_path / "tiny.npz", **arrays)
    (tmp_path / "task.yaml").write_text(TASK)
    work = tmp_path / "w"
    assert invoke(["prepare", str(tmp_path), "--out", str(work), "--task", str(tmp_path / "task.yaml")]) == 0
    assert invoke(["split", str(work)]) == 0
    return work, arrays


def test_items_are_the_prepared_images(image_work):
    from medvlm.cnn.folds import fold_cohorts
    from medvlm.cnn.images import ImageCohort, ImageDataset, image_input_shape

    work, arrays = image_work
    assert image_input_shape(work) == (1, 32, 32)  # 20 px images, at least 32 (the 2D networks' minimum)
    cohorts = fold_cohorts(work, 0)
    assert all(isinstance(c, ImageCohort) for c in cohorts.values())
    test = cohorts["test"]
    assert test.image_ids == [f"test-{i:05d}" for i in range(6)] and test.labels == [0, 1, 0, 1, 0, 1]
    x, y, index = ImageDataset(work, test)[3]
    assert tuple(x.shape) == (1, 32, 32) and float(y) == 1.0 and index == 3
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x[0, 16, 16]) == pytest.approx(250 / 255, abs=1e-6)  # the square's centre, resized


@pytest.mark.slow
def test_train_cnn_on_images(image_work, tmp_path):
    work, _ = image_work
    out = tmp_path / "cnn"
    assert invoke(["train-cnn", str(work), "--out", str(out), "--model", "resnet2d", "--epochs", "1",
                   "--fold", "0", "--batch-size", "6", "--workers", "0", "--bootstrap", "0",
                   "--no-augment", "--no-progress"]) == 0
    preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str, "image_id": str})
    assert list(preds.columns) == ["patient_id", "image_id", "cohort", "label", "pred", "score", "fold"]
    assert sorted(preds.loc[preds["cohort"] == "test", "image_id"]) == [f"test-{i:05d}" for i in range(6)]
    assert json.loads((out / "run.json").read_text())["config"]["model"] == "resnet2d"


def test_3d_medmnist_images_are_volumes_for_a_3d_network(tmp_path):
    from medvlm.cnn.folds import fold_cohorts
    from medvlm.cnn.images import ImageDataset, image_input_shape
    from medvlm.cnn.models import check_input_shape
    from medvlm.tasks import work_task

    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 6), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "tiny.npz", **arrays)
    (tmp_path / "task.yaml").write_text(TASK)
    work = tmp_path / "w"
    assert invoke(["prepare", str(tmp_path), "--out", str(work), "--task", str(tmp_path / "task.yaml")]) == 0
    assert invoke(["split", str(work)]) == 0
    task = work_task(work)
    assert (task.cnn_model, task.cnn_spatial_dims) == ("small3d", 3)  # the task's default network
    assert image_input_shape(work) == (1, 28, 28, 28)
    assert check_input_shape("small3d", image_input_shape(work)) == (1, 28, 28, 28)
    x, y, _ = ImageDataset(work, fold_cohorts(work, 0)["test"])[1]
    assert tuple(x.shape) == (1, 28, 28, 28) and float(y) == 1.0
    np.testing.assert_allclose(x[0].numpy(), arrays["test_images"][1] / 255.0, atol=1e-6)  # same size: as is
