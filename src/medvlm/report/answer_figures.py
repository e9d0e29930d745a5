"""Figures of what a VLM answered, named by the run's task: the study's per-patient vote plot
(:func:`vote_figure`) and the answer distribution of a consistency run (:func:`answer_distribution_figure`).
Each returns a matplotlib ``Figure`` (Agg, no pyplot state); :mod:`medvlm.report.figures` turns it into a
PNG. Class and answer names come from the task (the default task's when none is given)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import DataError
from medvlm.report.figures import _empty, _new_figure, _style

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from medvlm.tasks.base import Task

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
