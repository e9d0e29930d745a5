"""Figures of a consistency run for the report, from ``summary.json``: :func:`agreement_figure` (answer
shares per image across a cohort; also the study's pair of one image per class) and
:func:`temperature_figure` (a temperature sweep). matplotlib is imported inside the functions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.consistency.config import format_temperature
from medvlm.consistency.stats import UNPARSED, answer_categories, truth_label
from medvlm.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from medvlm.tasks.base import Task

_ANSWER_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442")
_UNPARSED_COLOUR = "#9ca3af"


def _per_image_frame(per_image: Sequence[Mapping[str, Any]] | pd.DataFrame | Mapping[str, Any],
                     categories: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    if isinstance(per_image, Mapping):  # a whole summary.json
        if "per_image" not in per_image:
            raise DataError("summary.json has no 'per_image' list (written by an older medvlm?)")
        per_image = per_image["per_image"]
    df = pd.DataFrame(list(per_image)) if not isinstance(per_image, pd.DataFrame) else per_image.copy()
    if "counts" not in df.columns:
        raise DataError(f"per_image entries need 'counts' ({set(categories)})")
    for k in categories:
        df[f"n_{k}"] = [int((c or {}).get(k, 0)) for c in df["counts"]]
    return df


def agreement_figure(per_image: Sequence[Mapping[str, Any]] | pd.DataFrame | Mapping[str, Any], *,
                     title: str = "Answers per image over repeats", task: Task | str | None = None) -> Figure:
    """Answer shares per image across a cohort: one stacked bar per image (the share of each of the
    ``task``'s answers and of unparsed ones among its N repeats), images ordered by true label (0 first)
    then by the positive answer's share; a marker above each bar says whether the majority answer is
    right (green o) or wrong (red x).

    For the study's pair (one image per class) it is the answer distribution per image; for a cohort,
    agreement across it. Args: ``summary.json``'s ``per_image`` list (or the whole summary, or a
    DataFrame of it); entries of several prompts/temperatures are labelled with them.
    """
    import numpy as np
    from matplotlib.figure import Figure

    from medvlm.tasks import get_task

    t = get_task(task)
    categories = answer_categories(t.codes)
    answer_names = {**{c: f"{n} ({c})" for c, n in t.answer_names.items()}, UNPARSED: UNPARSED}
    colours = {**dict(zip(t.codes, _ANSWER_COLOURS, strict=False)), UNPARSED: _UNPARSED_COLOUR}
    positive = str(t.positive_label)
    df = _per_image_frame(per_image, categories)
    df["_n"] = df[[f"n_{k}" for k in categories]].sum(axis=1).clip(lower=1)
    df["_pos"] = df[f"n_{positive}"] / df["_n"]
    labels = df["label"] if "label" in df.columns else [None] * len(df)
    unknown = t.n_classes  # unknown truth last
    df["_lab"] = [unknown if truth_label(v) is None else truth_label(v) for v in labels]
    df = df.sort_values(["_lab", "_pos"], kind="stable").reset_index(drop=True)
    many_prompts = "prompt" in df.columns and df["prompt"].nunique() > 1
    many_t = "temperature" in df.columns and df["temperature"].astype(str).nunique() > 1

    def name(r: Any) -> str:
        parts = [str(r.get("patient_id", "?"))]
        if "slice_index" in r:
            parts[0] += f":{r['slice_index']}"
        if many_prompts:
            parts.append(Path(str(r["prompt"])).name)
        if many_t:
            parts.append(f"T={format_temperature(r['temperature'])}")
        return " ".join(parts)

    width = min(max(5.0, 0.28 * len(df) + 3.0), 18.0)
    fig = Figure(figsize=(width, 4.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(df))
    bottom = np.zeros(len(df))
    for k in categories:
        share = (df[f"n_{k}"] / df["_n"]).to_numpy(dtype=float)
        ax.bar(x, share, bottom=bottom, color=colours[k], width=0.8, label=answer_names[k])
        bottom += share
    right = df["consensus_correct"] if "consensus_correct" in df.columns else [None] * len(df)
    marks = [(xi, bool(ok)) for xi, ok in zip(x, right, strict=True)
             if not (ok is None or (isinstance(ok, float) and math.isnan(ok)))]
    for ok, marker, colour, text in ((True, "o", "#009E73", "majority right"),
                                     (False, "x", "#D55E00", "majority wrong")):
        xs = [xi for xi, good in marks if good is ok]
        if xs:
            ax.scatter(xs, [1.04] * len(xs), marker=marker, color=colour, s=30, zorder=3, clip_on=False,
                       label=f"{text} ({len(xs)})")
    n_first = int((df["_lab"] == 0).sum())
    if 0 < n_first < len(df):
        ax.axvline(n_first - 0.5, color="#374151", linewidth=1)
    for lab, text in enumerate(f"true {c}" for c in t.classes):
        idx = np.flatnonzero(df["_lab"].to_numpy() == lab)
        if idx.size:
            ax.text(idx.mean(), 1.1, f"{text} (n = {idx.size})", ha="center", fontsize=8, color="#111827")
    ax.axhline(0.5, color="#374151", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.16)
    ax.set_xlim(-0.6, max(len(df), 1) - 0.4)
    ax.set_ylabel("share of the repeats")
    if len(df) <= 60:
        ax.set_xticks(x, [name(r) for r in df.to_dict("records")], rotation=90 if len(df) > 4 else 0,
                      fontsize=7)
    else:
        ax.set_xticks([])
    agreement_mean = df["agreement"].mean() if "agreement" in df.columns and len(df) else float("nan")
    ax.set_title(f"{title} ({len(df)} image(s), mean agreement {agreement_mean:.2f})")
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def temperature_figure(per_temperature: Sequence[Mapping[str, Any]] | Mapping[str, Any], *,
                       title: str = "Temperature sweep") -> Figure:
    """Agreement, flip rate, entropy (bits, right axis) and consensus/expected accuracy against the
    sampling temperature, from ``summary.json``'s ``per_temperature`` list (or the whole summary; a
    server-default temperature is left out)."""
    from matplotlib.figure import Figure

    if isinstance(per_temperature, Mapping):
        if "per_temperature" not in per_temperature:
            raise DataError("summary.json has no 'per_temperature' list (the run had one temperature)")
        per_temperature = per_temperature["per_temperature"]
    rows = sorted((r for r in per_temperature if r.get("temperature") is not None),
                  key=lambda r: float(r["temperature"]))
    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    t = [float(r["temperature"]) for r in rows]
    styles = (("mean_agreement", "mean agreement", "#0072B2", "-o"),
              ("flip_rate", "flip rate", "#E69F00", "-s"),
              ("consensus_accuracy", "consensus accuracy", "#009E73", "--^"),
              ("expected_accuracy", "expected accuracy", "#CC79A7", "--v"))
    for key, label, colour, style in styles:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(t, [float("nan") if v is None else v for v in values], style, color=colour, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel("share")
    ax2 = ax.twinx()
    ax2.plot(t, [float("nan") if r.get("mean_entropy") is None else r["mean_entropy"] for r in rows], ":d",
             color="#6b7280", label="mean entropy (bits, right)")
    ax2.set_ylim(0, 2.05)
    ax2.set_ylabel("entropy (bits)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, frameon=False, loc="best")
    ax.set_title(title)
    ax.spines[["top"]].set_visible(False)
    return fig
