"""medvlm.report.figures: every figure builds, is labelled and embeds as a PNG data URI."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from medvlm.errors import DataError
from medvlm.report import answer_figures as AF
from medvlm.report import figures as F


def _png(fig) -> bytes:
    uri = F.figure_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _texts(fig) -> str:
    parts = [fig.get_suptitle()] if hasattr(fig, "get_suptitle") else []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        leg = ax.get_legend()
        if leg:
            parts += [t.get_text() for t in leg.get_texts()]
    return " | ".join(parts)


def test_roc_figure_several_models_and_degenerate():
    y = np.array([0, 0, 1, 1, 1, 0])
    fig = F.roc_figure(
        {"cnn": (y, [0.1, 0.2, 0.8, 0.9, 0.7, 0.3]), "vlm": (y, [0.5] * 6), "one-class": ([1, 1], [0.2, 0.4])}
    )
    text = _texts(fig)
    assert "cnn (AUC 1.000, n = 6)" in text and "vlm (AUC 0.500" in text and "one-class: not defined" in text
    assert "sensitivity" in text and "specificity" in text
    _png(fig)


def test_png_bytes_are_deterministic():
    y = [0, 1, 0, 1]
    a = F.figure_to_png(F.roc_figure({"m": (y, [0.1, 0.9, 0.4, 0.6])}))
    b = F.figure_to_png(F.roc_figure({"m": (y, [0.1, 0.9, 0.4, 0.6])}))
    assert a == b


def test_confusion_matrix_counts():
    fig = F.confusion_matrix_figure([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    cells = sorted(t.get_text() for t in fig.axes[0].texts)
    assert cells == sorted(["TN\n1\n50%", "FP\n1\n50%", "FN\n1\n33%", "TP\n2\n67%"])
    assert "n = 5" in fig.axes[0].get_title()


def test_learning_curve_figure_and_missing_column(tmp_path):
    h = pd.DataFrame(
        [
            {
                "fold": f,
                "epoch": e,
                "train_loss": 1 / e,
                "val_loss": 1.1 / e,
                "train_accuracy": 0.5 + e / 20,
                "val_accuracy": 0.5 + e / 25,
            }
            for f in (0, 1)
            for e in range(1, 5)
        ]
    )
    fig = F.learning_curve_figure(h)
    text = _texts(fig)
    assert "fold 1 val" in text and "epoch" in text and "Loss" in text and "Accuracy" in text
    path = F.save_figure(fig, tmp_path / "learning_curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="epoch"):
        F.learning_curve_figure(h.drop(columns="epoch"))


def test_vote_figure_orders_by_label_and_marks_outcomes():
    pats = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e"],
            "orientation": "axial",
            "label": [1, 0, 1, 0, 1],
            "gldr": [0.9, 0.8, 0.2, 0.1, None],
            "pred": [1, 1, 0, 0, 1],
        }
    )
    figs = AF.vote_figures(pd.concat([pats, pats.assign(orientation="coronal")]))
    assert list(figs) == ["axial", "coronal"]
    fig = figs["axial"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "d",
        "b",
        "c",
        "e",
        "a",
    ]  # LGG first, by GLDR (none: 0.5)
    text = _texts(fig)
    for key in ("TP", "FP", "TN", "FN"):
        assert f"{key}:" in text
    assert "(1)" in text and "no LGG/HGG vote (1)" in text and "0.5" in text and "axial" in ax.get_title()
    _png(fig)


def test_answer_distribution_counts_and_summary():
    c = pd.DataFrame(
        {
            "patient_id": "P",
            "orientation": "axial",
            "slice_index": 3,
            "repeat": range(6),
            "choice": [1, 1, 1, 0, 2, np.nan],
        }
    )
    assert AF.answer_counts(c) == {"0": 1, "1": 3, "2": 1, "unparsed": 1}
    fig = AF.answer_distribution_figure(c)
    assert "N = 6" in fig.axes[0].get_title()
    fig2 = AF.answer_distribution_figure(summary={"counts": {"0": 2, "1": 90, "2": 0, "unparsed": 3}})
    assert "N = 95" in fig2.axes[0].get_title()
    many = pd.concat([c, c.assign(patient_id="Q")])
    assert len(AF.answer_distribution_figure(many).axes) == 2
    with pytest.raises(DataError, match="needs consistency.csv rows or summary.json"):
        AF.answer_distribution_figure()


def test_loss_curve_figure():
    log = pd.DataFrame({"step": range(1, 31), "epoch": [1] * 15 + [2] * 15, "loss": np.linspace(2, 0.5, 30)})
    log["val_accuracy"] = np.nan
    log.loc[[14, 29], "val_accuracy"] = [0.6, 0.7]
    log["lr"] = np.linspace(1e-4, 0, 30)  # not drawn
    fig = F.loss_curve_figure(log.sample(frac=1, random_state=0), selected_epoch=2)  # rows in any order
    loss_ax, val_ax = fig.axes
    raw, smooth = loss_ax.get_lines()
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 31))  # every step, in step order
    np.testing.assert_allclose(raw.get_ydata(), np.linspace(2, 0.5, 30))
    window = 3  # max(30 // 20, 3)
    want = log["loss"].rolling(window, min_periods=1).mean()
    np.testing.assert_allclose(smooth.get_ydata(), want)
    assert smooth.get_label() == "moving mean (3 steps)"
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel(), loss_ax.get_title()) == (
        "optimizer step", "training loss", "Fine-tuning: training loss")
    val, selected = val_ax.get_lines()  # val_accuracy and the selected epoch; no lr
    assert val.get_label() == "val_accuracy" and val_ax.get_xlabel() == "epoch"
    assert val.get_xdata().tolist() == [1, 2] and val.get_ydata().tolist() == [0.6, 0.7]  # the epochs' ends
    assert selected.get_xdata()[0] == 2 and selected.get_label() == "selected epoch 2"
    assert "val_accuracy" in _texts(fig)
    short = F.loss_curve_figure(log.drop(columns=["val_accuracy", "lr"]).iloc[:9], title="LoRA")
    assert len(short.axes) == 1 and len(short.axes[0].get_lines()) == 1  # no moving mean under 10 steps
    assert short.axes[0].get_title() == "LoRA: training loss"
    with pytest.raises(DataError, match="loss"):
        F.loss_curve_figure(log.drop(columns="loss"))
