"""Paired comparisons of two models on the same patients: McNemar and DeLong (pure functions).

Conventions: labels 0 and 1 (1 the positive class); scores increase with class 1.

- :func:`mcnemar` compares the *correctness* of two sets of hard predictions. With ``b`` = patients
  model A gets right and B wrong and ``c`` = the reverse, the two-sided p-value is the **exact
  binomial** test of ``b ~ Binomial(b + c, 1/2)`` when ``b + c < 25`` (the usual rule, e.g. Fagerland
  et al. 2013 recommend the exact or mid-p test for small counts), else the **chi-square test with
  continuity correction** ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom (Edwards 1948).
  ``method="exact"`` or ``"chi2"`` forces one. The accuracy difference gets a Wald interval for
  paired proportions.
- :func:`delong_test` compares two correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson 1988) with
  the fast midrank algorithm of Sun & Xu (2014); it reproduces pROC's ``roc.test(method="delong")``.
- :func:`delong_ci` is the DeLong interval of one AUC (pROC's default ``ci.auc``).

Every interval is kept inside the possible range (:mod:`medvlm.intervals`). The agreement of two per-call
answer tables (slices.csv) is :mod:`medvlm.call_stats`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import ConfigError, DataError
from medvlm.intervals import DIFFERENCE_RANGE, UNIT_RANGE, clip_interval

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MCNEMAR_METHODS = ("auto", "exact", "chi2")
#: Below this many discordant pairs, ``method="auto"`` uses the exact binomial test.
EXACT_BELOW = 25


class StatsWarning(UserWarning):
    """A test statistic is undefined for this input (no discordant pairs, zero variance, ...)."""


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


# ---------------------------------------------------------------------------------------------- McNemar
def mcnemar(labels: Any, preds_a: Any, preds_b: Any, *, method: str = "auto",
            confidence: float = 0.95) -> dict[str, Any]:
    """McNemar's test of two models' hard predictions on the same patients.

    Args:
        labels, preds_a, preds_b: shape (n,), 0 or 1.
        method: ``"auto"`` (exact below :data:`EXACT_BELOW` discordant pairs, else chi-square with
            continuity correction), ``"exact"`` or ``"chi2"``.

    Returns:
        ``{"n", "b" (A right, B wrong), "c" (A wrong, B right), "statistic" (chi-square, None for
        exact), "p", "method", "accuracy_a", "accuracy_b", "accuracy_diff" (A - B),
        "accuracy_diff_ci"}``. With no discordant pair, p = 1.

    >>> r = mcnemar([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 1])
    >>> r["b"], r["c"], round(r["p"], 4), r["method"]
    (4, 0, 0.125, 'exact binomial')
    """
    from scipy.stats import binomtest, chi2

    if method not in MCNEMAR_METHODS:
        raise ConfigError(f"The 'method' parameter must be one of {MCNEMAR_METHODS}. Got {method!r} instead.")
    y = np.asarray(labels)
    a = np.asarray(preds_a)
    bb = np.asarray(preds_b)
    if not (y.shape == a.shape == bb.shape) or y.ndim != 1:
        raise DataError("labels and both predictions must have the same length "
                        f"({y.size}, {a.size}, {bb.size})")
    n = int(y.size)
    ra, rb = a == y, bb == y
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    use = method if method != "auto" else ("exact" if b + c < EXACT_BELOW else "chi2")
    statistic = None
    if b + c == 0:
        p = 1.0
    elif use == "exact":
        p = float(binomtest(b, b + c, 0.5).pvalue)
    else:
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p = float(chi2.sf(statistic, 1))
    acc_a = float(ra.mean()) if n else None
    acc_b = float(rb.mean()) if n else None
    diff = (b - c) / n if n else None
    ci = paired_difference_ci(b, c, n, confidence=confidence) if n else None
    return {"n": n, "b": b, "c": c, "statistic": statistic, "p": min(p, 1.0),
            "method": "exact binomial" if use == "exact" else "chi-square with continuity correction",
            "accuracy_a": acc_a, "accuracy_b": acc_b, "accuracy_diff": diff, "accuracy_diff_ci": ci}


def paired_difference_ci(b: int, c: int, n: int, *, confidence: float = 0.95) -> list[float]:
    """Bonett-Price adjusted Wald interval of the difference of two paired proportions (A right minus B
    right): with ``p12 = (b + 1) / (n + 2)``, ``p21 = (c + 1) / (n + 2)``, ``d = p12 - p21`` and
    ``var = (p12 + p21 - d^2) / (n + 2)``, ``d -/+ z sqrt(var)``, kept inside [-1, 1]. Unlike the plain
    Wald interval it is never empty or wider than the possible range at the edges (all agree, all
    discordant, n = 1).

    >>> paired_difference_ci(0, 0, 10)  # all agree: symmetric around 0
    [-0.2309..., 0.2309...]
    >>> paired_difference_ci(5, 0, 5)[1], paired_difference_ci(1, 0, 1)[0] >= -1
    (1.0, True)
    """
    p12, p21 = (b + 1) / (n + 2), (c + 1) / (n + 2)
    d = p12 - p21
    half = _z(confidence) * math.sqrt(max(p12 + p21 - d * d, 0.0) / (n + 2))
    return clip_interval([d - half, d + half], *DIFFERENCE_RANGE)


# ----------------------------------------------------------------------------------------------- DeLong
def _midrank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def _structural_components(labels: np.ndarray,
                           scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), V10 (k, m) and V01 (k, n) for score rows ``scores`` (k, N), Sun & Xu 2014."""
    pos = labels == 1
    x = scores[:, pos]
    yv = scores[:, ~pos]
    m, n = x.shape[1], yv.shape[1]
    k = scores.shape[0]
    aucs = np.empty(k)
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    for r in range(k):
        tz = _midrank(np.concatenate([x[r], yv[r]]))
        tx = _midrank(x[r])
        ty = _midrank(yv[r])
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    return aucs, v10, v01


def _delong_cov(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    aucs, v10, v01 = _structural_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def _check_scores(labels: Any, *scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64)
    s = np.vstack([np.asarray(v, dtype=np.float64) for v in scores])
    if s.shape[1] != y.size:
        raise DataError(f"labels and scores differ in length ({y.size} vs {s.shape[1]})")
    if np.isnan(s).any():
        raise DataError("scores contain missing values; DeLong needs a score for every patient")
    if not np.all(np.isin(y, (0, 1))):
        raise DataError("labels must contain only 0 and 1 (1 = the positive class)")
    if y.sum() == 0 or y.sum() == y.size:
        raise DataError("DeLong needs both classes among the labels (0 and 1)")
    return y, s


def delong_ci(labels: Any, scores: Any, *, confidence: float = 0.95) -> dict[str, Any]:
    """AUC of one score with its DeLong standard error and interval (clipped to [0, 1]).

    >>> r = delong_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> r["auc"]
    0.75
    """
    y, s = _check_scores(labels, scores)
    aucs, cov = _delong_cov(y, s)
    auc = float(aucs[0])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = _z(confidence)
    return {"auc": auc, "se": se, "ci": clip_interval([auc - z * se, auc + z * se], *UNIT_RANGE)}


def delong_test(labels: Any, scores_a: Any, scores_b: Any, *, confidence: float = 0.95) -> dict[str, Any]:
    """DeLong's test for two correlated ROC AUCs measured on the same patients.

    Args:
        labels: shape (n,), 0 or 1; both classes required.
        scores_a, scores_b: shape (n,), higher = more of class 1; no missing values.

    Returns:
        ``{"n", "auc_a", "auc_b", "auc_diff" (a - b), "se", "auc_diff_ci" ([low, high]), "z", "p"}``;
        ``z``/``p`` are None (with a :class:`StatsWarning`) when the variance of the difference is 0
        and the AUCs differ; identical AUCs with zero variance give z = 0, p = 1.

    >>> r = delong_test([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.1, 0.5, 0.3, 0.4, 0.2, 0.6])
    >>> round(r["auc_a"], 4), round(r["auc_b"], 4)
    (1.0, 0.6667)
    """
    from scipy.stats import norm

    y, s = _check_scores(labels, scores_a, scores_b)
    aucs, cov = _delong_cov(y, s)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    zq = _z(confidence)
    if se > 1e-15:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    elif abs(diff) < 1e-15:
        z, p = 0.0, 1.0
    else:
        warnings.warn("DeLong: the variance of the AUC difference is 0; z and p are undefined",
                      StatsWarning, stacklevel=2)
        z, p = None, None
    # a zero standard error is no certainty: the data cannot estimate the spread (no interval)
    ci = clip_interval([diff - zq * se, diff + zq * se], *DIFFERENCE_RANGE) if se > 1e-15 else None
    return {"n": int(y.size), "auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "auc_diff": diff, "se": se,
            "auc_diff_ci": ci, "z": z, "p": p}


# --------------------------------------------------------------------------------------- prediction files
def _prepare_side(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The test rows of one side, indexed by unit (the patient, or ``patient:orientation:slice`` for
    slice-level predictions)."""
    from medvlm.predictions import select_cohort, unit_keys

    if "patient_id" not in df.columns:
        raise DataError(f"{name}: no 'patient_id' column; a paired comparison joins the files on patient_id")
    df = select_cohort(df, "test", source=name)
    keys = unit_keys(df)
    unit = df["patient_id"].astype(str)
    for k in keys[1:]:
        unit = unit + ":" + df[k].astype(str)
    dup = unit.duplicated(keep=False)
    if dup.any():
        pid = unit[dup].iloc[0]
        what = "patient" if len(keys) == 1 else "unit"
        raise DataError(f"{name}: {what} {pid!r} appears {int((unit == pid).sum())} times; "
                        f"expected one row per {what}")
    return df.set_index(unit.rename("unit"))


def compare_predictions(a: pd.DataFrame, b: pd.DataFrame, *, name_a: str = "A", name_b: str = "B",
                        confidence: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two prediction frames (from :func:`medvlm.metrics.read_predictions`).

    Joins on ``patient_id`` (plus the slice keys for slice rows) after keeping only ``cohort == "test"``
    rows in a frame that has a cohort column, then pairs only the units both models answered (an empty
    ``pred`` is an abstention). Raises :class:`DataError` when a patient is in one frame only, when a
    patient's label differs between the frames, or when a patient_id repeats.

    Returns:
        the contract's keys ``n, auc_a, auc_b, auc_diff, auc_diff_ci, delong_z, delong_p, mcnemar_b,
        mcnemar_c, mcnemar_p`` plus ``accuracy_a, accuracy_b, accuracy_diff, accuracy_diff_ci,
        mcnemar_method, n_dropped_abstained`` (units left out because one model abstained). AUC keys
        are None when a side has no scores (or a patient has no score, with a :class:`StatsWarning`) or
        when the test cohort has one class only.
    """
    from medvlm.metrics import has_scores

    sa = _prepare_side(a, name_a)
    sb = _prepare_side(b, name_b)
    only_a = sorted(set(sa.index) - set(sb.index))
    only_b = sorted(set(sb.index) - set(sa.index))
    if only_a or only_b:
        parts = []
        for who, ids in ((name_a, only_a), (name_b, only_b)):
            if ids:
                shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
                parts.append(f"{len(ids)} only in {who} ({shown})")
        what = "units" if "slice_index" in sa.columns or "slice_index" in sb.columns else "patients"
        raise DataError(f"the two files do not cover the same {what} (same kind of rows? one row per "
                        "patient, or per slice, in both): " + "; ".join(parts))
    sb = sb.loc[sa.index]
    both = (sa["pred"].notna() & sb["pred"].notna()).to_numpy()  # units both models answered
    n_dropped = int((~both).sum())
    sa, sb = sa[both].astype({"pred": "int64"}), sb[both].astype({"pred": "int64"})
    if sa.empty:
        raise DataError(f"no unit answered by both {name_a} and {name_b} ({n_dropped} abstained in one "
                        "or both): nothing to compare")
    mismatch = sa["label"].to_numpy() != sb["label"].to_numpy()
    if mismatch.any():
        pid = sa.index[np.flatnonzero(mismatch)[0]]
        raise DataError(f"patient {pid!r} has label {sa.loc[pid, 'label']} in {name_a} but "
                        f"{sb.loc[pid, 'label']} in {name_b}")
    y = sa["label"].to_numpy()
    # rows of one patient (slices; images of a patient seen more than once) are not independent
    unit = "slice" if "slice_index" in sa.columns else "image" if "image_id" in sa.columns else None
    clustered = unit == "slice" or (unit == "image" and sa["patient_id"].nunique() < len(sa))
    mc = mcnemar(y, sa["pred"].to_numpy(), sb["pred"].to_numpy(), confidence=confidence)
    out: dict[str, Any] = {"n": int(y.size), "auc_a": None, "auc_b": None, "auc_diff": None,
                           "auc_diff_ci": None, "delong_z": None, "delong_p": None,
                           "mcnemar_b": mc["b"], "mcnemar_c": mc["c"], "mcnemar_p": mc["p"],
                           "mcnemar_method": mc["method"], "accuracy_a": mc["accuracy_a"],
                           "accuracy_b": mc["accuracy_b"], "accuracy_diff": mc["accuracy_diff"],
                           "accuracy_diff_ci": mc["accuracy_diff_ci"], "n_dropped_abstained": n_dropped}
    if clustered:  # rows of one patient are not independent: say so with the numbers
        out["unit"] = unit
        out["n_patients"] = int(sa["patient_id"].nunique())
        out["note"] = (f"{out['n']} {unit}s of {out['n_patients']} patients: McNemar and DeLong treat "
                       f"{unit}s as independent, so their p-values and intervals are optimistic")
        warnings.warn(out["note"], StatsWarning, stacklevel=2)
    if not (has_scores(sa) and has_scores(sb)):
        return out
    s_a, s_b = sa["score"].to_numpy(), sb["score"].to_numpy()
    if np.isnan(s_a).any() or np.isnan(s_b).any():
        warnings.warn(f"DeLong skipped: {int(np.isnan(s_a).sum())} patients in {name_a} and "
                      f"{int(np.isnan(s_b).sum())} in {name_b} have no score", StatsWarning, stacklevel=2)
        return out
    if y.min() == y.max():
        warnings.warn("DeLong skipped: the test cohort has one class only", StatsWarning, stacklevel=2)
        return out
    dl = delong_test(y, s_a, s_b, confidence=confidence)
    out.update(auc_a=dl["auc_a"], auc_b=dl["auc_b"], auc_diff=dl["auc_diff"], auc_diff_ci=dl["auc_diff_ci"],
               delong_z=dl["z"], delong_p=dl["p"])
    return out
