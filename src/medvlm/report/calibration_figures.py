"""Figures of how well a run's scores are calibrated and how its errors fall with abstention.

:func:`reliability_figure` (the reliability diagram: 10 equal-width score bins of
:func:`medvlm.calibration.reliability_bins`, each bin's count written above it) and
:func:`risk_coverage_figure` (risk against coverage when the most confident units are kept first,
:func:`medvlm.calibration.risk_coverage`, AURC in the legend). Labels 0/1 (1 the positive class), scores
P(label 1) in [0, 1], preds 0/1. Built like :mod:`medvlm.report.figures` (no pyplot state).

>>> fig = reliability_figure([1, 0, 1, 1], [0.95, 0.15, 0.25, 1.0])
>>> [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "bin-count"]
['0', '1', '1', '0', '0', '0', '0', '0', '0', '2']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.report.figures import PALETTE, _new_figure, _style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: ``gid`` of the count texts above the bins (tests read them back from the figure)
COUNT_GID = "bin-count"


def reliability_figure(
    labels: Sequence[int],
    scores: Sequence[float],
    *,
    title: str = "Reliability diagram",
    n_bins: int | None = None,
    positive: str = "label 1",
) -> Figure:
    """The share of the positive class in each score bin against the bin's mean score; the diagonal is
    perfect calibration. Every bin's count is written above it (0 for an empty bin); the title gives ECE
    and the Brier score. Raises :class:`~medvlm.errors.DataError` for scores outside [0, 1] or missing."""
    from matplotlib.transforms import blended_transform_factory

    from medvlm import calibration as cal

    n_bins = n_bins or cal.N_BINS
    bins = cal.reliability_bins(labels, scores, n_bins)
    fig, ax = _new_figure(5.6, 5.0)
    ax.plot([0, 1], [0, 1], linestyle=":", color="#9ca3af", label="perfect calibration")
    full = [b for b in bins if b["n"]]
    width = 1 / n_bins
    ax.bar([b["low"] for b in full], [b["mean_label"] for b in full], width=width, align="edge",
           color=PALETTE[0], alpha=0.25, edgecolor=PALETTE[0], linewidth=0.8,
           label=f"share of {positive} per bin")
    ax.plot([b["mean_score"] for b in full], [b["mean_label"] for b in full], "o-", color=PALETTE[0],
            linewidth=1.5, markersize=5, label="bin: mean score, share")
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for b in bins:
        ax.text((b["low"] + b["high"]) / 2, 1.005, str(b["n"]), transform=top, ha="center", va="bottom",
                fontsize=8, color="#111827" if b["n"] else "#9ca3af", gid=COUNT_GID)
    n = sum(b["n"] for b in bins)
    if n:
        y = np.asarray(labels, dtype=float)
        s = np.asarray(scores, dtype=float)
        stats = (f"ECE {cal.expected_calibration_error(y, s, n_bins):.3f}, "
                 f"Brier {cal.brier_score(y, s):.3f}, n = {n}")
    else:
        stats = "no scored units"
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xticks(np.linspace(0, 1, n_bins + 1) if n_bins <= 10 else np.linspace(0, 1, 6))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(f"score (P of {positive}); count of units above each bin")
    ax.set_ylabel(f"observed share of {positive}")
    ax.set_title(f"{title}\n{stats}", fontsize=10, pad=16)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _style(ax)
    return fig


def risk_coverage_figure(
    curves: Iterable[tuple[str, Any, Any, Any]],
    *,
    title: str = "Risk-coverage",
) -> Figure:
    """Risk (error rate among the units kept) against coverage (share kept), keeping the most confident
    units first (confidence = the score of the predicted class), one step curve per ``(name, labels,
    preds, scores)``, AURC (area under the curve, lower is better) and n in the legend. A curve without
    units is listed as "not defined"."""
    from medvlm import calibration as cal

    fig, ax = _new_figure(5.6, 4.6)
    for i, (name, labels, preds, scores) in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        y = np.asarray(labels, dtype=float)
        if not y.size:
            ax.plot([], [], color=color, label=f"{name}: not defined (no scored unit)")
            continue
        cov, risk = cal.risk_coverage(y, preds, scores)
        area = cal.aurc(y, preds, scores)
        ax.step(np.r_[0.0, cov], np.r_[risk[0], risk], where="pre", color=color, linewidth=2,
                label=f"{name} (AURC {area:.3f}, n = {y.size})")
        ax.plot([1.0], [risk[-1]], "o", color=color, markersize=4)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("coverage (share of units kept, most confident first)")
    ax.set_ylabel("risk (error rate among the kept units)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _style(ax)
    return fig
