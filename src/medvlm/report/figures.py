"""Figures of the report (matplotlib, non-interactive Agg backend).

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot's global
state (safe in threads and servers); :func:`figure_to_data_uri` turns one into an inline
``data:image/png;base64,...`` URI and :func:`save_figure` writes a PNG. Class and answer names come from
the run's task (:mod:`medvlm.tasks`); label 1 is the positive class. The figures of the answers a VLM
gave (vote plots, answer distributions) are in :mod:`medvlm.report.answer_figures`.

>>> import pandas as pd
>>> h = pd.DataFrame({"fold": [0, 0], "epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.72, 0.6],
...                   "train_accuracy": [0.5, 0.7], "val_accuracy": [0.5, 0.6]})
>>> figure_to_data_uri(learning_curve_figure(h)).startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure


# Okabe-Ito colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _new_figure(width: float = 6.4, height: float = 4.4, *, ncols: int = 1) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def figure_to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig`` (no timestamp metadata, so the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure_to_data_uri(fig: Figure, *, dpi: int = 110) -> str:
    """``data:image/png;base64,...`` of ``fig``, for ``<img src=...>`` in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(figure_to_png(fig, dpi=dpi)).decode("ascii")


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (e.g. ``RUN/learning_curves.png``)."""
    from medvlm._io import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, figure_to_png(fig, dpi=dpi))
    return path


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#6b7280")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------- ROC
def roc_figure(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]] | Iterable[tuple[str, Any, Any]],
    *,
    title: str = "ROC curves (label 1 positive)",
) -> Figure:
    """ROC curves of several models on one axis, AUC in the legend.

    Args:
        curves: ``{name: (labels, scores)}`` or ``[(name, labels, scores), ...]``; labels 0/1 (1 the
            positive class), scores increasing with it. A curve with one class only or no finite score is
            listed in the
            legend as "not defined" instead of drawn.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    items = [(k, *v) for k, v in curves.items()] if isinstance(curves, Mapping) else list(curves)
    fig, ax = _new_figure(5.6, 5.0)
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9ca3af", label="chance (AUC 0.5)")
    for i, (name, labels, scores) in enumerate(items):
        y = np.asarray(labels)
        s = np.asarray(scores, dtype=float)
        keep = np.isfinite(s)
        y, s = y[keep], s[keep]
        if y.size == 0 or len(set(y.tolist())) < 2:
            ax.plot(
                [], [], color=PALETTE[i % len(PALETTE)], label=f"{name}: not defined (one class / no scores)"
            )
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = roc_auc_score(y, s)
        ax.plot(
            fpr,
            tpr,
            color=PALETTE[i % len(PALETTE)],
            linewidth=2,
            drawstyle="default",
            label=f"{name} (AUC {auc:.3f}, n = {y.size})",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    _style(ax)
    return fig


# ------------------------------------------------------------------------------------------- confusion
def confusion_matrix_figure(
    labels: Sequence[int],
    preds: Sequence[int],
    *,
    title: str = "Confusion matrix",
    class_names: tuple[str, ...] | None = None,
) -> Figure:
    """2x2 confusion matrix (rows: truth, columns: prediction), counts and row percentages."""
    class_names = tuple(class_names or ("class 0", "class 1"))
    y = np.asarray(labels)
    p = np.asarray(preds)
    cm = np.array([[np.sum((y == t) & (p == q)) for q in (0, 1)] for t in (0, 1)])
    fig, ax = _new_figure(4.2, 3.8)
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    names = {(0, 0): "TN", (0, 1): "FP", (1, 0): "FN", (1, 1): "TP"}
    for t in (0, 1):
        row = cm[t].sum()
        for q in (0, 1):
            share = f"{100 * cm[t, q] / row:.0f}%" if row else "-"
            dark = cm[t, q] > 0.6 * max(cm.max(), 1)
            ax.text(
                q,
                t,
                f"{names[t, q]}\n{cm[t, q]}\n{share}",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if dark else "#111827",
            )
    ax.set_xticks([0, 1], [f"pred {c}" for c in class_names])
    ax.set_yticks([0, 1], [f"true {c}" for c in class_names])
    ax.set_title(f"{title} (n = {int(cm.sum())})")
    return fig


# ------------------------------------------------------------------------------------- learning curves
HISTORY_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy")


def learning_curve_figure(history: pd.DataFrame, *, title: str = "Learning curves") -> Figure:
    """Loss and accuracy per epoch from a CNN ``history.csv``, one colour per fold.

    Args:
        history: columns ``fold, epoch, train_loss, val_loss, train_accuracy, val_accuracy`` (the
            contract's ``history.csv``; missing metric columns are left out of the plot).
    Train is drawn solid, validation dashed.
    """
    for col in ("fold", "epoch"):
        if col not in history.columns:
            raise DataError(f"history: missing column {col!r} (expected {', '.join(HISTORY_COLUMNS)})")
    fig, (ax_loss, ax_acc) = _new_figure(10, 4.0, ncols=2)
    folds = list(dict.fromkeys(history["fold"].tolist()))
    for i, fold in enumerate(folds):
        h = history[history["fold"] == fold].sort_values("epoch")
        color = PALETTE[i % len(PALETTE)]
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            for split, style in (("train", "-"), ("val", "--")):
                col = f"{split}_{metric}"
                if col in h.columns and h[col].notna().any():
                    ax.plot(
                        h["epoch"],
                        h[col],
                        style,
                        color=color,
                        linewidth=1.8,
                        marker="." if len(h) < 30 else None,
                        label=f"fold {fold} {split}",
                    )
    ax_loss.set_title("Loss")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.set_title("Accuracy")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        _style(ax)
    ncol = 2 if len(folds) > 2 else 1
    ax_acc.legend(fontsize=7, frameon=False, ncol=ncol, loc="lower right")
    fig.suptitle(f"{title} (solid: train, dashed: validation)")
    return fig


# ------------------------------------------------------------------------------------ fine-tune loss
def loss_curve_figure(
    train_log: pd.DataFrame, *, title: str = "Fine-tuning", selected_epoch: int | None = None
) -> Figure:
    """Training loss per step from ``train_log.csv`` (``step, epoch, loss`` and optional validation
    metric columns, e.g. ``val_loss``/``val_accuracy``, drawn per epoch on a second panel; ``lr`` is not
    drawn). ``selected_epoch``: a dashed vertical line on the validation panel marks it."""
    for col in ("step", "loss"):
        if col not in train_log.columns:
            raise DataError(f"train_log: missing column {col!r} (expected step, epoch, loss[, val_*])")
    extra = [
        c
        for c in train_log.columns
        if c not in ("step", "epoch", "loss", "lr")
        and train_log[c].notna().any()
        and np.issubdtype(train_log[c].dtype, np.number)
    ]
    fig, axes = _new_figure(10 if extra else 6, 4.0, ncols=2 if extra else 1)
    ax = axes[0] if extra else axes
    log = train_log.sort_values("step")
    loss = log[log["loss"].notna()]
    ax.plot(loss["step"], loss["loss"], color="#0072B2", linewidth=1, alpha=0.6, label="loss per step")
    if len(loss) >= 10:
        window = max(len(loss) // 20, 3)
        ax.plot(
            loss["step"],
            loss["loss"].rolling(window, min_periods=1).mean(),
            color="#0072B2",
            linewidth=2.2,
            label=f"moving mean ({window} steps)",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}: training loss")
    ax.legend(fontsize=8, frameon=False)
    _style(ax)
    if extra:
        ax2 = axes[1]
        for i, col in enumerate(extra):
            rows = log[log[col].notna()]
            xcol = "epoch" if "epoch" in rows.columns and rows["epoch"].notna().all() else "step"
            ax2.plot(rows[xcol], rows[col], marker="o", color=PALETTE[(i + 1) % len(PALETTE)], label=col)
        if selected_epoch is not None and xcol == "epoch":
            ax2.axvline(
                selected_epoch,
                color="#6b7280",
                linestyle="--",
                linewidth=1,
                label=f"selected epoch {selected_epoch}",
            )
            ax2.xaxis.get_major_locator().set_params(integer=True)
        ax2.set_xlabel(xcol)
        ax2.set_title("validation")
        ax2.legend(fontsize=8, frameon=False)
        _style(ax2)
    return fig


# ------------------------------------------------------------------------------------------ robustness
#: the metrics of the robustness figure's panels: (key, axis label)
ROBUSTNESS_METRICS = (("accuracy", "accuracy"), ("auc", "AUC"))


def robustness_figure(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str = "Robustness to MRI artifacts",
    floor: tuple[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Accuracy and AUC (one panel each) against the artifact's severity, one line per artifact kind.

    Args:
        curves: ``{kind: [{"severity", "accuracy", "accuracy_ci", "auc", "auc_ci"}, ...]}`` (see
            :func:`medvlm.report.controls.robustness_points`; severity 0 = the real image). A metric that
            is None is left out of its line; a CI of None draws no bar.
        floor: ``(label, {"accuracy": x, "auc": y})``: a dashed horizontal line per panel, e.g. the
            no-image control.

    Each line's ``gid`` is ``"<kind>:<metric>"`` (tests read the points back with ``get_xydata``).
    """
    fig, axes = _new_figure(10, 4.0, ncols=2)
    for ax, (key, name) in zip(axes, ROBUSTNESS_METRICS, strict=True):
        drawn = False
        for i, (kind, points) in enumerate(curves.items()):
            pts = [p for p in points if p.get(key) is not None]
            if not pts:
                continue
            x = np.array([float(p["severity"]) for p in pts])
            y = np.array([float(p[key]) for p in pts])
            cis = [p.get(f"{key}_ci") for p in pts]
            err = np.array([[v - ci[0] if ci else 0.0 for v, ci in zip(y, cis, strict=True)],
                            [ci[1] - v if ci else 0.0 for v, ci in zip(y, cis, strict=True)]])
            color = PALETTE[i % len(PALETTE)]
            ax.errorbar(x + 0.006 * (i - (len(curves) - 1) / 2), y, yerr=np.clip(err, 0, None), fmt="none",
                        ecolor=color, elinewidth=1, capsize=3, alpha=0.6)
            (line,) = ax.plot(x, y, "o-", color=color, linewidth=2, markersize=5, label=kind)
            line.set_gid(f"{kind}:{key}")
            drawn = True
        if floor is not None and floor[1].get(key) is not None:
            ax.axhline(float(floor[1][key]), color="#6b7280", linestyle="--", linewidth=1.2, label=floor[0])
        if key == "auc":
            ax.axhline(0.5, color="#9ca3af", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
        if not drawn:
            _empty(ax, f"no {name} (no scores)" if key == "auc" else f"no {name}")
            continue
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("artifact severity (0 = the real image)")
        ax.set_ylabel(f"{name} (test cohort)")
        ax.set_title(name)
        ax.legend(fontsize=8, frameon=False, loc="lower left")
        _style(ax)
    fig.suptitle(title)
    return fig
