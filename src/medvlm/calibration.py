"""Calibration, thresholds and selective prediction of scored predictions (pure functions).

Conventions: ``labels`` 0/1 (1 = the positive class), ``scores`` P(label 1) in [0, 1], ``preds`` 0/1.

- how calibrated: :func:`brier_score` (mean (score - label)^2), :func:`expected_calibration_error`
  (:data:`N_BINS` equal-width bins on [0, 1], the last closed: sum over bins of n_b/n * |mean score -
  mean label|), :func:`log_loss_score`, :func:`reliability_bins` (the diagram's points, with counts);
- calibrators, fitted on one set of predictions and applied to another (:func:`fit_calibrator`,
  :func:`apply_calibrator`): ``temperature`` (score' = sigmoid(logit(score) / T), T minimising the log
  loss), ``platt`` (sigmoid(a * logit(score) + b), logistic regression), ``isotonic`` (a non-decreasing
  step map; ties it creates can change the AUC, the strictly monotone ones never do), ``none``;
- thresholds (:func:`fit_threshold`): ``youden`` (max sensitivity + specificity - 1), ``balanced``
  (sensitivity closest to specificity), or a number; ``pred = score >= threshold``;
- selective prediction: :func:`confidence` (the probability of the predicted class),
  :func:`risk_coverage` and :func:`aurc` (area under the risk-coverage curve, lower is better).

Multi-class (labels 0..K-1, probabilities (n, K)): :func:`top_label_ece` and temperature scaling of
log-probabilities with :func:`fit_temperature_multiclass`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medvlm.errors import ConfigError, DataError

N_BINS = 10
#: scores are kept this far from 0 and 1 before a logit (a score of exactly 0 or 1 has no finite logit)
EPS = 1e-12
CALIBRATION_METHODS = ("temperature", "platt", "isotonic", "none")
THRESHOLD_RULES = ("youden", "balanced")

ArrayLike = Sequence[float] | np.ndarray


def _arrays(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if s.size and (np.isnan(s).any() or s.min() < 0 or s.max() > 1):
        raise DataError("scores must be probabilities in [0, 1] without gaps")
    return y, s


# ------------------------------------------------------------------------------------ how calibrated
def brier_score(labels: ArrayLike, scores: ArrayLike) -> float:
    """Mean squared difference between score and label (scikit-learn's ``brier_score_loss``).

    >>> round(brier_score([1, 0, 1], [0.8, 0.4, 1.0]), 12)  # (0.04 + 0.16 + 0) / 3
    0.066666666667
    """
    from sklearn.metrics import brier_score_loss

    y, s = _arrays(labels, scores)
    return float(brier_score_loss(y, s, pos_label=1)) if y.size else math.nan


def log_loss_score(labels: ArrayLike, scores: ArrayLike) -> float:
    """Mean negative log-likelihood of the labels (scikit-learn's ``log_loss``; scores clipped to
    [EPS, 1 - EPS], so a confident wrong score costs about 27.6, not infinity).

    >>> round(log_loss_score([1, 0], [0.5, 0.5]), 6)
    0.693147
    """
    from sklearn.metrics import log_loss

    y, s = _arrays(labels, scores)
    if not y.size:
        return math.nan
    return float(log_loss(y, np.clip(s, EPS, 1 - EPS), labels=[0, 1]))


def bin_index(scores: ArrayLike, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each score: ``floor(score * n_bins)``, 1.0 in the last bin (so 0.3 is in [0.3, 0.4)).

    >>> bin_index([0.0, 0.09, 0.1, 0.3, 0.7, 0.99, 1.0]).tolist()
    [0, 0, 1, 3, 7, 9, 9]
    """
    s = np.asarray(scores, dtype=np.float64)
    return np.minimum(np.floor(s * n_bins).astype(np.int64), n_bins - 1)


def reliability_bins(labels: ArrayLike, scores: ArrayLike, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """The reliability diagram's bins: ``{"low", "high", "n", "mean_score", "mean_label"}`` for each of
    ``n_bins`` equal-width bins (means None in an empty bin).

    >>> [b["n"] for b in reliability_bins([1, 0, 1], [0.95, 0.05, 1.0])]
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    """
    y, s = _arrays(labels, scores)
    idx = bin_index(s, n_bins)
    out = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        out.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": n,
                    "mean_score": float(s[mask].mean()) if n else None,
                    "mean_label": float(y[mask].mean()) if n else None})
    return out


def expected_calibration_error(labels: ArrayLike, scores: ArrayLike, n_bins: int = N_BINS) -> float:
    """Sum over bins of n_b / n * |mean score - mean label| (:func:`bin_index` bins).

    >>> round(expected_calibration_error([1, 0, 1, 1], [0.95, 0.15, 0.25, 1.0]), 12)  # 1.0: last bin
    0.2375
    """
    y, s = _arrays(labels, scores)
    if not y.size:
        return math.nan
    idx = bin_index(s, n_bins)
    return float(_bin_gaps(idx, y, s, n_bins).sum() / y.size)


def _bin_gaps(idx: np.ndarray, y: np.ndarray, s: np.ndarray, n_bins: int) -> np.ndarray:
    """Per bin |sum of scores - sum of labels| (= n_b * |mean score - mean label|)."""
    return np.abs(np.bincount(idx, weights=s, minlength=n_bins)
                  - np.bincount(idx, weights=y, minlength=n_bins))  # sum_b n_b/n * |sum_s/n_b - sum_y/n_b|


def calibration_vector(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """(brier, ece, log_loss) in plain numpy: the bootstrap's inner loop (same values as the
    scikit-learn-based functions above, tested)."""
    if not y.size:
        return math.nan, math.nan, math.nan
    brier = float(np.mean((s - y) ** 2))
    gap = _bin_gaps(bin_index(s), y, s, N_BINS)
    c = np.clip(s, EPS, 1 - EPS)
    loss = float(-np.mean(y * np.log(c) + (1 - y) * np.log1p(-c)))
    return brier, float(gap.sum() / y.size), loss


# ------------------------------------------------------------------------------------ calibrators
def logit(scores: ArrayLike) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    return np.log(s) - np.log1p(-s)


def sigmoid(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def fit_temperature(labels: ArrayLike, scores: ArrayLike) -> float:
    """T > 0 minimising the log loss of sigmoid(logit(score) / T) (scipy, bounded search on log T in
    [log 0.01, log 100]).

    >>> T = fit_temperature([1, 0, 1, 0, 1, 1], [0.99, 0.02, 0.97, 0.6, 0.4, 0.999])
    >>> 1 < T < 100
    True
    """
    from scipy.optimize import minimize_scalar

    y, s = _arrays(labels, scores)
    z = logit(s)

    def loss(log_t: float) -> float:
        p = np.clip(sigmoid(z / math.exp(log_t)), EPS, 1 - EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))

    res = minimize_scalar(loss, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                          options={"xatol": 1e-10})
    return float(math.exp(res.x))


def fit_calibrator(labels: ArrayLike, scores: ArrayLike, method: str) -> dict[str, Any]:
    """Fit ``method`` (:data:`CALIBRATION_METHODS`) on (labels, scores); returns its JSON-able params.

    ``temperature`` -> ``{"temperature": T}``; ``platt`` -> ``{"a": a, "b": b}`` (unpenalised logistic
    regression on logit(score)); ``isotonic`` -> ``{"x": [...], "y": [...]}`` (the step map's knots,
    applied with linear interpolation and clipped outside, as scikit-learn does); ``none`` -> ``{}``.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    y, s = _arrays(labels, scores)
    if method == "none":
        return {}
    if method == "temperature":
        return {"temperature": fit_temperature(y, s)}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)  # unpenalised
        model.fit(logit(s).reshape(-1, 1), y.astype(int))
        return {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def apply_calibrator(scores: ArrayLike, method: str, params: dict[str, Any]) -> np.ndarray:
    """Calibrated scores, shape of ``scores`` (NaN stays NaN: no score, no calibrated score)."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, np.nan)
    ok = ~np.isnan(s)
    if method == "none":
        out[ok] = s[ok]
    elif method == "temperature":
        out[ok] = sigmoid(logit(s[ok]) / float(params["temperature"]))
    elif method == "platt":
        out[ok] = sigmoid(float(params["a"]) * logit(s[ok]) + float(params["b"]))
    elif method == "isotonic":
        out[ok] = np.interp(s[ok], np.asarray(params["x"], float), np.asarray(params["y"], float))
    else:
        raise ConfigError(f"unknown calibration method {method!r} ({', '.join(CALIBRATION_METHODS)})")
    return out


# ------------------------------------------------------------------------------------ thresholds
def _candidates(s: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: midpoints between consecutive distinct scores, and both extremes."""
    u = np.unique(s)
    mids = (u[:-1] + u[1:]) / 2 if u.size > 1 else np.array([])
    return np.concatenate([[u[0]], mids, [np.nextafter(u[-1], np.inf)]]) if u.size else np.array([0.5])


def sens_spec(labels: ArrayLike, scores: ArrayLike, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of ``pred = score >= threshold``."""
    y, s = _arrays(labels, scores)
    pred = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else math.nan
    return sens, float((~pred[neg]).mean()) if neg.any() else math.nan


def fit_threshold(labels: ArrayLike, scores: ArrayLike, rule: str | float) -> float:
    """The decision threshold of ``rule``: ``youden`` (max J = sensitivity + specificity - 1; among
    equal J the threshold nearest 0.5), ``balanced`` (min |sensitivity - specificity|, then max J), or a
    number in [0, 1] returned as is. Needs both classes for a rule.

    >>> round(fit_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.8], "youden"), 12)
    0.325
    """
    if not isinstance(rule, str):
        value = float(rule)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--threshold must be youden, balanced or a number in [0, 1], got {rule}")
        return value
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"--threshold must be youden, balanced or a number in [0, 1], got {rule!r}")
    y, s = _arrays(labels, scores)
    if len(set(y.tolist())) < 2:
        raise DataError(f"a {rule} threshold needs both classes among the fitted rows")
    best: tuple[float, ...] | None = None
    chosen = 0.5
    for t in _candidates(s):
        se, sp = sens_spec(y, s, t)
        j = se + sp - 1
        key = (j, -abs(t - 0.5)) if rule == "youden" else (-abs(se - sp), j, -abs(t - 0.5))
        if best is None or key > best:
            best, chosen = key, float(t)
    return chosen


# ------------------------------------------------------------------------------------ selective prediction
def confidence(preds: ArrayLike, scores: ArrayLike) -> np.ndarray:
    """The probability of the predicted class: ``score`` where pred is 1, ``1 - score`` where it is 0.

    >>> confidence([1, 0, 1], [0.9, 0.2, 0.55]).tolist()
    [0.9, 0.8, 0.55]
    """
    p = np.asarray(preds, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    return np.where(p == 1, s, 1 - s)


def risk_coverage(labels: ArrayLike, preds: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: keeping the most confident rows first, at each distinct confidence level
    the share of rows kept (coverage) and the error rate among them (risk). Rows of equal confidence are
    kept or left out together.

    >>> cov, risk = risk_coverage([1, 0, 1, 0], [1, 0, 0, 1], [0.9, 0.2, 0.4, 0.7])
    >>> cov.tolist(), risk.tolist()
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.3333333333333333, 0.5])
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64)
    conf = confidence(p, scores)
    if not y.size:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(y[order] != p[order])
    conf_sorted = conf[order]
    last = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])  # end of each confidence level
    kept = last + 1
    return kept / y.size, errors[last] / kept


def aurc(labels: ArrayLike, preds: ArrayLike, scores: ArrayLike) -> float:
    """Area under the risk-coverage curve (the step curve of :func:`risk_coverage` integrated over
    coverage; equal to the mean of the risks at coverage 1/n, 2/n, ..., 1 when confidences differ).

    >>> aurc([1, 0, 1, 0], [1, 0, 0, 1], [0.9, 0.2, 0.4, 0.7])
    0.20833333333333331
    """
    cov, risk = risk_coverage(labels, preds, scores)
    if not cov.size:
        return math.nan
    widths = np.diff(np.r_[0.0, cov])
    return float(np.sum(widths * risk))


def abstain_below(preds: ArrayLike, scores: ArrayLike, level: float) -> np.ndarray:
    """Mask of rows to keep: confidence >= ``level`` (rows without a score are kept as they are)."""
    if not 0.5 <= level <= 1.0:
        raise ConfigError(f"--abstain-below takes a confidence in [0.5, 1], got {level}")
    s = np.asarray(scores, dtype=np.float64)
    conf = confidence(preds, s)
    return np.isnan(s) | (conf >= level)


# ------------------------------------------------------------------------------------ multi-class
def top_label_ece(labels: ArrayLike, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE of class probabilities ``probs`` (n, K): bins of the top probability, |mean top
    probability - accuracy of the top label| weighted by bin size.

    >>> round(top_label_ece([0, 1, 2], np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])), 12)
    0.3
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    top = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    return expected_calibration_error(correct, top, n_bins)


def fit_temperature_multiclass(labels: ArrayLike, log_probs: np.ndarray) -> float:
    """T minimising the cross-entropy of softmax(log_probs / T), shape (n, K) (bounded on log T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    y = np.asarray(labels, dtype=np.int64)
    z = np.asarray(log_probs, dtype=np.float64)

    def loss(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / math.exp(log_t), axis=1)[np.arange(y.size), y]))

    res = minimize_scalar(loss, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                          options={"xatol": 1e-10})
    return float(math.exp(res.x))
