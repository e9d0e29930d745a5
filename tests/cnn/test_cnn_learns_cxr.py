"""A 2D CNN learns a separable synthetic image cohort (``medvlm synth --task cxr``), scored as it is
trained: in evaluation mode, with BatchNorm statistics re-estimated on the training images after each
epoch (:func:`medvlm.cnn.images.recalibrate_batch_norm`). Before that, 3 epochs gave near-constant
scores (0.79-0.81) whatever the network had learnt in training mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medvlm.data.synth_cxr import synth_cxr


def _cohort(folder, patients: int, seed: int):
    """The synthetic cohort's images (``synth --task cxr``, 64 px PNGs) at 32 px (2x2 means, to keep
    the test short), as float32 ``(N, 1, 32, 32)`` in [0, 1], and labels (N,) (lesion = 1)."""
    from PIL import Image

    images = synth_cxr(folder, patients=patients, size="small", seed=seed, dicom=False)
    x = np.stack([np.asarray(Image.open(folder / i.path), np.float32) / 255 for i in images])
    x = x.reshape(len(x), 32, 2, 32, 2).mean((2, 4))[:, None]
    return torch.from_numpy(x), torch.tensor([float(i.label) for i in images])


@pytest.mark.slow
def test_resnet2d_learns_the_synthetic_lesion(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from medvlm.cnn.images import recalibrate_batch_norm
    from medvlm.cnn.loop import predict, train_one_epoch
    from medvlm.cnn.models import build_model

    torch.manual_seed(0)
    x, y = _cohort(tmp_path / "train", 50, seed=0)
    x_val, y_val = _cohort(tmp_path / "val", 20, seed=1)
    model = build_model("resnet2d", (1, 32, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    items = TensorDataset(x, y, torch.arange(len(y)))
    train = DataLoader(items, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    for _ in range(4):
        train_one_epoch(model, train, optimizer, cpu, dtype=None, scaler=scaler)
        recalibrate_batch_norm(model, DataLoader(items, batch_size=8), cpu)
    for images, labels in ((x, y), (x_val, y_val)):
        scores, _ = predict(model, DataLoader(TensorDataset(images, labels, torch.arange(len(labels))),
                                              batch_size=8), cpu)
        assert roc_auc_score(labels.numpy(), scores) > 0.8
        assert scores.std() > 0.1  # not near-constant


def test_recalibration_sets_the_running_statistics_of_the_training_images():
    from medvlm.cnn.images import recalibrate_batch_norm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    model.eval()
    x = torch.randn(12, 1, 4, 4) * 3 + 5
    loader = [(x[:8], None, None), (x[8:], None, None)]
    assert recalibrate_batch_norm(model, loader, torch.device("cpu")) == 1
    bn = model[1]
    with torch.no_grad():
        h = model[0](x)
    batch_means = [h[:8].mean((0, 2, 3)), h[8:].mean((0, 2, 3))]
    batch_vars = [h[:8].var((0, 2, 3)), h[8:].var((0, 2, 3))]  # unbiased, as BatchNorm keeps them
    np.testing.assert_allclose(bn.running_mean, (batch_means[0] + batch_means[1]) / 2, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, (batch_vars[0] + batch_vars[1]) / 2, rtol=1e-5)
    assert bn.momentum == 0.1 and not model.training  # left as it was
    assert recalibrate_batch_norm(torch.nn.Linear(2, 1), loader, torch.device("cpu")) == 0
