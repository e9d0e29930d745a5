"""Confidence intervals that stay inside what is possible (pure functions).

Every interval medvlm reports passes through :func:`clip_interval`: a proportion, an AUC, the ECE or
the Brier score lies in [0, 1], the MCC and every difference of two proportions or AUCs (``*_diff``) in
[-1, 1], the log loss in [0, inf). A normal-approximation interval on few patients (DeLong, Wald) can
reach past those limits; a bootstrap percentile interval cannot, but its interpolation can by a rounding
error, and a ``metrics.json`` written by an older version may hold either. The bootstrap intervals
themselves (:func:`percentile_interval`, :func:`bca_interval`) live here too.

>>> clip_interval([-0.25, 1.3], 0.0, 1.0)
[0.0, 1.0]
>>> metric_range("mcc"), metric_range("auc_diff"), metric_range("auc")
((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0))
>>> clip_metric_ci("auc", [0.62, 1.07]), clip_metric_ci("auc", None)
([0.62, 1.0], None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: metrics whose range is not [0, 1]; every name ending in ``_diff`` is a difference, in [-1, 1]
METRIC_RANGES: dict[str, tuple[float, float]] = {"mcc": (-1.0, 1.0), "log_loss": (0.0, math.inf)}
DIFFERENCE_RANGE = (-1.0, 1.0)
UNIT_RANGE = (0.0, 1.0)


def metric_range(name: str) -> tuple[float, float]:
    """The possible values of metric ``name`` (``accuracy``, ``auc``, ``mcc``, ``auc_diff``, ...)."""
    if name in METRIC_RANGES:
        return METRIC_RANGES[name]
    return DIFFERENCE_RANGE if name.endswith("_diff") else UNIT_RANGE


def clip_interval(ci: Any, low: float, high: float) -> list[float] | None:
    """``[max(low, ci[0]), min(high, ci[1])]`` as floats; None for anything that is not two finite
    numbers (an interval that is undefined stays undefined)."""
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    try:
        lo, hi = float(ci[0]), float(ci[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [min(max(lo, low), high), max(min(hi, high), low)]


def clip_metric_ci(name: str, ci: Any) -> list[float] | None:
    """:func:`clip_interval` to :func:`metric_range` of ``name``."""
    return clip_interval(ci, *metric_range(name))


def percentile_interval(values: np.ndarray, alpha: float) -> list[float] | None:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles of the finite ``values`` (shape (n_boot,)); None
    when none is finite."""
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return None
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def bca_interval(values: np.ndarray, estimate: float, jack: np.ndarray, alpha: float) -> list[float] | None:
    """Bias-corrected and accelerated interval (Efron 1987) from bootstrap ``values`` (n_boot,) and
    jackknife values ``jack`` (k,); falls back to :func:`percentile_interval` when degenerate."""
    from scipy.stats import norm

    ok = values[~np.isnan(values)]
    jk = jack[~np.isnan(jack)]
    if ok.size == 0:
        return None
    if math.isnan(estimate) or jk.size < 3:
        return percentile_interval(values, alpha)
    prop = (np.sum(ok < estimate) + 0.5 * np.sum(ok == estimate)) / ok.size
    if prop <= 0 or prop >= 1:
        return percentile_interval(values, alpha)
    z0 = norm.ppf(prop)
    d = jk.mean() - jk
    den = 6.0 * (np.sum(d**2) ** 1.5)
    a = float(np.sum(d**3) / den) if den > 0 else 0.0
    z = norm.ppf([alpha / 2, 1 - alpha / 2])
    adj = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    if not np.all(np.isfinite(adj)):
        return percentile_interval(values, alpha)
    lo, hi = np.quantile(ok, adj)
    return [float(lo), float(hi)]
