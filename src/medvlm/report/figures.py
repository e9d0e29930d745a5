"""Figures of the report (matplotlib, non-interactive Agg backend).

Every ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot's global
state (safe in threads and servers); :func:`figure_to_data_uri` turns one into an inline
``data:image/png;base64,...`` URI and :func:`save_figure` writes a PNG. Class and answer names come from
the run's task (:mod:`medvlm.tasks`; the study's when none is given); label 1 is the positive class.

>>> import pandas as pd
>>> h = pd.DataFrame({"fold": [0, 0], "epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.72, 0.6],
...                   "train_accuracy": [0.5, 0.7], "val_accuracy": [0.5, 0.6]})
>>> figure_to_data_uri(learning_curve_figure(h)).startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from medvlm.tasks.base import Task

# Okabe-Ito colour-blind-safe palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
OUTCOME_STYLE = {  # colour, marker, (truth, prediction) labels
    "TP": ("#009E73", "o", (1, 1)),
    "TN": ("#0072B2", "o", (0, 0)),
    "FP": ("#D55E00", "X", (0, 1)),
    "FN": ("#E69F00", "X", (1, 0)),
}
ANSWER_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442")
UNPARSED_COLOUR = "#9ca3af"


def _task(task: Task | str | None) -> Task:
    from medvlm.tasks import get_task

    return get_task(task)


def answer_names(task: Task | str | None = None) -> dict[str, str]:
    """``{"0": "<name> (0)", ..., "unparsed": "unparsed"}``: the task's answers as figures and tables name
    them."""
    t = _task(task)
    return {**{code: f"{name} ({code})" for code, name in t.answer_names.items()}, "unparsed": "unparsed"}


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
    class_names = tuple(class_names or _task(None).classes)
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


# -------------------------------------------------------------------------------------------- vote plot
def _outcome(label: int, pred: Any) -> str | None:
    if pred is None or (isinstance(pred, float) and math.isnan(pred)):
        return None
    pred = int(pred)
    return {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}[(int(label), pred)]


def vote_figure(
    patients: pd.DataFrame, *, orientation: str | None = None, title: str | None = None,
    task: Task | str | None = None,
) -> Figure:
    """The study's per-patient vote plot: the share of positive votes per patient (the task's
    ``share_column``, GLDR for brats-grading), negative patients first.

    Args:
        patients: rows of ``patients.csv`` (``patient_id, orientation, label, <share>, pred``, ...);
            with ``orientation`` given, only that orientation's rows are drawn.
    Patients are ordered by true label (0, then 1) and by share within each; the 0.5 line is the
    majority threshold; each point is marked TP/FP/TN/FN; a patient without a class vote (empty
    share) is drawn as a grey cross at 0.5 and counted in the legend.
    """
    t = _task(task)
    neg, pos = t.classes[0], t.classes[t.positive_label]
    share = t.share_column
    df = patients
    if orientation is not None and "orientation" in df.columns:
        df = df[df["orientation"].astype(str) == orientation]
    for col in ("label", share):
        if col not in df.columns:
            raise DataError(f"patients: missing column {col!r}")
    df = df.copy()
    df["_share"] = df[share].astype(float)
    df["_order"] = df["_share"].fillna(0.5)
    df = df.sort_values(["label", "_order"], kind="stable").reset_index(drop=True)
    width = min(max(6.0, 0.12 * len(df) + 3), 16)
    fig, ax = _new_figure(width, 4.2)
    n_neg = int((df["label"] == 0).sum())
    if len(df) == 0:
        _empty(ax, "no patients")
    if n_neg and n_neg < len(df):
        ax.axvspan(-0.5, n_neg - 0.5, color="#eff6ff", zorder=0)
        ax.text((n_neg - 1) / 2, 1.04, f"true {neg} (n = {n_neg})", ha="center", fontsize=8, color="#1e3a8a")
        ax.text(
            (n_neg + len(df) - 1) / 2,
            1.04,
            f"true {pos} (n = {len(df) - n_neg})",
            ha="center",
            fontsize=8,
            color="#7c2d12",
        )
    ax.axhline(0.5, color="#374151", linestyle="--", linewidth=1, label="0.5 (majority threshold)")
    x = np.arange(len(df))
    ax.vlines(x, 0, df["_order"], color="#d1d5db", linewidth=1, zorder=1)
    preds = df["pred"] if "pred" in df.columns else [None] * len(df)
    outcomes = [_outcome(lab, p) for lab, p in zip(df["label"], preds, strict=True)]
    for key, (color, marker, (truth, said)) in OUTCOME_STYLE.items():
        meaning = f"{key}: {t.classes[truth]} called {t.classes[said]}"
        sel = np.array([o == key for o in outcomes]) & df["_share"].notna().to_numpy()
        if sel.any():
            ax.scatter(
                x[sel],
                df.loc[sel, "_share"],
                color=color,
                marker=marker,
                s=42,
                zorder=3,
                label=f"{meaning} ({int(sel.sum())})",
            )
    none = df["_share"].isna().to_numpy()
    if none.any():
        ax.scatter(
            x[none],
            np.full(none.sum(), 0.5),
            color="#9ca3af",
            marker="x",
            s=36,
            zorder=3,
            label=f"no {neg}/{pos} vote ({int(none.sum())})",
        )
    ax.set_xlim(-0.5, max(len(df), 1) - 0.5)
    ax.set_ylim(-0.03, 1.1)
    ax.set_xlabel(f"patients (ordered by true label, then {t.share_label})")
    ax.set_ylabel(f"{t.share_label} = {pos} / ({pos} + {neg}) votes")
    if len(df) <= 40:
        ax.set_xticks(
            x, df["patient_id"].astype(str) if "patient_id" in df.columns else x, rotation=90, fontsize=6
        )
    else:
        ax.set_xticks([])
    ax.set_title(title or f"Per-patient votes{f' ({orientation})' if orientation else ''}")
    ax.legend(fontsize=7, frameon=True, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _style(ax)
    return fig


def vote_figures(patients: pd.DataFrame, *, task: Task | str | None = None) -> dict[str, Figure]:
    """:func:`vote_figure` for every orientation in ``patients.csv`` (key: orientation)."""
    if "orientation" not in patients.columns:
        return {"all": vote_figure(patients, task=task)}
    return {
        str(o): vote_figure(patients, orientation=str(o), task=task)
        for o in dict.fromkeys(patients["orientation"].astype(str))
    }


# ------------------------------------------------------------------------------------ answer distribution
def answer_counts(consistency: pd.DataFrame, *, task: Task | str | None = None) -> dict[str, int]:
    """Counts of each answer code and of unparsed answers in ``consistency.csv`` or ``slices.csv``
    (empty ``choice`` = unparsed)."""
    import pandas as pd

    choice = pd.to_numeric(consistency["choice"], errors="coerce")
    counts = {k: int((choice == int(k)).sum()) for k in _task(task).codes}
    counts["unparsed"] = int(choice.isna().sum())
    return counts


def answer_distribution_figure(
    consistency: pd.DataFrame | None = None,
    *,
    summary: Mapping[str, Any] | None = None,
    title: str = "Answer distribution over repeats",
    task: Task | str | None = None,
) -> Figure:
    """Histogram of the answers of a consistency run (each answer code of the task, unparsed).

    Args:
        consistency: ``consistency.csv`` rows (``patient_id, ..., repeat, choice``); when it holds more
            than one image (patient, orientation, slice), a second panel shows the distribution of the
            per-image agreement (share of the majority answer).
        summary: ``summary.json`` (``counts``), used when ``consistency`` is None.
    """
    if consistency is None and summary is None:
        raise DataError("answer_distribution_figure needs consistency.csv rows or summary.json")
    names = answer_names(task)
    counts = (
        answer_counts(consistency, task=task)
        if consistency is not None
        else {k: int((summary or {}).get("counts", {}).get(k, 0)) for k in names}
    )
    keys = ["patient_id", "orientation", "slice_index"]
    many = (
        consistency is not None
        and all(k in consistency.columns for k in keys)
        and len(consistency.groupby(keys, dropna=False)) > 1
    )
    fig, axes = _new_figure(10 if many else 5.6, 4.0, ncols=2 if many else 1)
    ax = axes[0] if many else axes
    total = sum(counts.values())
    colors = [*ANSWER_COLOURS[: len(names) - 1], UNPARSED_COLOUR]
    bars = ax.bar([names[k] for k in names], [counts[k] for k in names], color=colors)
    for bar, k in zip(bars, names, strict=True):
        share = f"{100 * counts[k] / total:.0f}%" if total else ""
        ax.annotate(
            f"{counts[k]}\n{share}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylabel("number of answers")
    ax.set_ylim(0, max(max(counts.values()), 1) * 1.25)
    ax.set_title(f"{title} (N = {total})")
    _style(ax)
    if many:
        import pandas as pd

        ax2 = axes[1]
        choice = pd.to_numeric(consistency["choice"], errors="coerce").fillna(-1)
        agreement = choice.groupby([consistency[k] for k in keys], dropna=False).agg(
            lambda c: c.value_counts().iloc[0] / len(c)
        )
        ax2.hist(agreement.to_numpy(), bins=np.linspace(0, 1, 21), color="#56B4E9", edgecolor="white")
        ax2.set_xlabel("agreement (share of the majority answer per image)")
        ax2.set_ylabel("images")
        from matplotlib.ticker import MaxNLocator

        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_title(f"Agreement over {len(agreement)} images")
        _style(ax2)
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
