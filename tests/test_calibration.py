"""medvlm.calibration: hand-computed calibration metrics, calibrators against direct fits, thresholds,
selective prediction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medvlm import calibration as cal


# ------------------------------------------------------------------ metrics, by hand
def test_brier_ece_log_loss_by_hand_with_a_score_of_exactly_one():
    labels = [1, 0, 1, 1, 0]
    scores = [1.0, 0.05, 0.3, 0.65, 0.35]
    # brier: (0 + 0.0025 + 0.49 + 0.1225 + 0.1225) / 5
    assert cal.brier_score(labels, scores) == pytest.approx(0.7375 / 5, abs=1e-15)
    # bins: 1.0 -> 9 (label 1, gap 0); 0.05 -> 0 (gap 0.05); 0.3 -> 3 and 0.35 -> 3 (mean 0.325 vs 0.5:
    # 2 * 0.175 = 0.35); 0.65 -> 6 (gap 0.35). ECE = (0 + 0.05 + 0.35 + 0.35) / 5
    assert cal.expected_calibration_error(labels, scores) == pytest.approx(0.75 / 5, abs=1e-15)
    logs = [math.log(1 - 1e-12), math.log(0.95), math.log(0.3), math.log(0.65), math.log(0.65)]
    expected_loss = -sum(logs) / 5
    assert cal.log_loss_score(labels, scores) == pytest.approx(expected_loss, rel=1e-12)
    bins = cal.reliability_bins(labels, scores)
    assert [b["n"] for b in bins] == [1, 0, 0, 2, 0, 0, 1, 0, 0, 1]
    assert bins[3]["mean_score"] == pytest.approx(0.325) and bins[3]["mean_label"] == 0.5
    assert bins[9]["low"] == 0.9 and bins[9]["high"] == 1.0 and bins[1]["mean_score"] is None


@pytest.mark.parametrize("score, bin_", [(0.0, 0), (0.1, 1), (0.3, 3), (0.7, 7), (0.8999, 8), (0.9, 9),
                                         (1.0, 9)])
def test_bin_edges_are_closed_on_the_left_and_the_last_bin_is_closed(score, bin_):
    assert cal.bin_index([score]).tolist() == [bin_]


def test_the_numpy_bootstrap_vector_equals_the_scikit_learn_values():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    s = np.clip(rng.random(200) * 0.8 + 0.2 * y, 0, 1)
    s[:3] = [0.0, 1.0, 0.5]
    brier, ece, loss = cal.calibration_vector(y, s)
    assert brier == pytest.approx(cal.brier_score(y, s), rel=1e-12)
    assert ece == pytest.approx(cal.expected_calibration_error(y, s), rel=1e-12)
    assert loss == pytest.approx(cal.log_loss_score(y, s), rel=1e-9)


# ------------------------------------------------------------------ calibrators
FIT_Y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
FIT_S = np.array([0.99, 0.95, 0.97, 0.9, 0.6, 0.85, 0.8, 0.7, 0.92, 0.55, 0.75, 0.88])


def test_temperature_matches_a_direct_minimisation():
    T = cal.fit_temperature(FIT_Y, FIT_S)
    z = cal.logit(FIT_S)
    grid = np.exp(np.linspace(math.log(0.01), math.log(100), 200001))
    losses = [cal.log_loss_score(FIT_Y, cal.sigmoid(z / t)) for t in grid[::50]]
    coarse = grid[::50][int(np.argmin(losses))]
    fine = grid[(grid > coarse / 1.01) & (grid < coarse * 1.01)]
    best = fine[int(np.argmin([cal.log_loss_score(FIT_Y, cal.sigmoid(z / t)) for t in fine]))]
    assert pytest.approx(best, rel=1e-4) == T
    assert cal.log_loss_score(FIT_Y, cal.sigmoid(z / T)) <= cal.log_loss_score(FIT_Y, FIT_S)


@pytest.mark.parametrize("method", ["temperature", "platt", "none"])
def test_a_strictly_monotone_calibration_never_changes_the_auc(method):
    from sklearn.metrics import roc_auc_score

    params = cal.fit_calibrator(FIT_Y, FIT_S, method)
    rng = np.random.default_rng(1)
    apply_s = rng.random(40)
    apply_y = (rng.random(40) < apply_s).astype(int)
    out = cal.apply_calibrator(apply_s, method, params)
    assert roc_auc_score(apply_y, out) == pytest.approx(roc_auc_score(apply_y, apply_s), abs=1e-15)
    assert np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_calibrators_round_trip_through_json(method):
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    params = json.loads(json.dumps(cal.fit_calibrator(FIT_Y, FIT_S, method)))
    probe = np.array([0.0, 0.3, 0.56, 0.77, 0.9, 0.999, 1.0, np.nan])
    got = cal.apply_calibrator(probe, method, params)
    assert np.isnan(got[-1])
    if method == "isotonic":
        ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(FIT_S, FIT_Y).predict(probe[:-1])
    elif method == "platt":
        lr = LogisticRegression(C=np.inf, max_iter=1000).fit(cal.logit(FIT_S).reshape(-1, 1), FIT_Y)
        ref = lr.predict_proba(cal.logit(probe[:-1]).reshape(-1, 1))[:, 1]
    elif method == "temperature":
        ref = cal.sigmoid(cal.logit(probe[:-1]) / params["temperature"])
    else:
        ref = probe[:-1]
    np.testing.assert_allclose(got[:-1], ref, rtol=1e-7, atol=1e-12)


def test_unknown_method_and_bad_scores_are_refused():
    from medvlm.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="--method must be one of temperature, platt, isotonic, none"):
        cal.fit_calibrator([0, 1], [0.2, 0.8], "beta")
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        cal.fit_calibrator([0, 1], [0.2, 1.8], "temperature")


# ------------------------------------------------------------------ thresholds
def _j(y, s, t):
    se, sp = cal.sens_spec(y, s, t)
    return se + sp - 1


def test_youden_reaches_the_best_j_on_fit():
    t = cal.fit_threshold(FIT_Y, FIT_S, "youden")
    best = max(_j(FIT_Y, FIT_S, c) for c in np.r_[FIT_S, 0.0, 1.01])  # every cut the data allow
    assert _j(FIT_Y, FIT_S, t) == pytest.approx(best)
    # by hand: LGG scores 0.55 0.7 0.8 0.88 0.92; HGG 0.6 0.75 0.85 0.9 0.95 0.97 0.99: cutting between
    # 0.88 and 0.9 gives J = 4/7 + 4/5 - 1 = 0.371; between 0.92 and 0.95, J = 3/7 + 5/5 - 1 = 0.429 (best)
    assert best == pytest.approx(3 / 7)
    assert t == pytest.approx((0.92 + 0.95) / 2)


def test_balanced_threshold_equalises_sensitivity_and_specificity():
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.6, 0.7, 0.5, 0.65, 0.8, 0.9]
    t = cal.fit_threshold(y, s, "balanced")
    se, sp = cal.sens_spec(y, s, t)
    assert se == sp == 0.75
    assert cal.fit_threshold(y, s, 0.3) == 0.3


@pytest.mark.parametrize("rule", ["youden", "balanced"])
def test_a_threshold_rule_on_one_class_is_refused(rule):
    from medvlm.errors import DataError

    with pytest.raises(DataError, match="needs both classes among the fitted rows"):
        cal.fit_threshold([1, 1, 1], [0.2, 0.5, 0.9], rule)
    with pytest.raises(DataError, match=f"a {rule} threshold needs both classes"):
        cal.fit_threshold([0, 0], [0.2, 0.5], rule)


@pytest.mark.parametrize("bad", [1.5, -0.1, "median"])
def test_bad_thresholds_are_refused(bad):
    from medvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="--threshold must be youden, balanced or a number in"):
        cal.fit_threshold([0, 1], [0.2, 0.8], bad)


# ------------------------------------------------------------------ selective prediction
def test_risk_coverage_and_aurc_by_hand_with_ties():
    labels = [1, 0, 1, 0, 1]
    preds = [1, 1, 1, 0, 0]
    scores = [0.9, 0.9, 0.8, 0.3, 0.45]  # confidences 0.9, 0.9, 0.8, 0.7, 0.55
    cov, risk = cal.risk_coverage(labels, preds, scores)
    assert cov.tolist() == [0.4, 0.6, 0.8, 1.0]  # the two 0.9s are kept together
    assert risk.tolist() == pytest.approx([0.5, 1 / 3, 0.25, 0.4])
    assert cal.aurc(labels, preds, scores) == pytest.approx(0.4 * 0.5 + 0.2 * (1 / 3 + 0.25 + 0.4))


def test_a_perfect_ranking_of_errors_has_the_smallest_aurc():
    labels = [1, 1, 0, 0]
    good = cal.aurc(labels, [1, 1, 1, 0], [0.9, 0.8, 0.6, 0.15])  # the one error is the least confident
    bad = cal.aurc(labels, [1, 1, 1, 0], [0.7, 0.8, 0.95, 0.15])  # the error is the most confident
    assert good < bad
    assert good == pytest.approx((0 + 0 + 0 + 1 / 4) / 4)  # confidences 0.9, 0.85, 0.8, 0.6 (the error)
    assert bad == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # confidences 0.95 (error), 0.85, 0.8, 0.7


def test_abstain_below_keeps_the_confident_rows():
    keep = cal.abstain_below([1, 0, 1, 0], [0.9, 0.45, 0.55, np.nan], 0.6)
    assert keep.tolist() == [True, False, False, True]
    from medvlm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"confidence in \[0.5, 1\]"):
        cal.abstain_below([1], [0.9], 0.2)


# ------------------------------------------------------------------ multi-class
def test_top_label_ece_and_multiclass_temperature():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    labels = [0, 1, 2, 2]
    # top: 0.9 right (bin 9), 0.7 right (bin 7), 0.5 wrong (bin 5), 0.8 right (bin 8): (0.1+0.3+0.5+0.2)/4
    assert cal.top_label_ece(labels, probs) == pytest.approx(1.1 / 4)
    from scipy.special import log_softmax

    logp = np.log(probs)
    T = cal.fit_temperature_multiclass(labels, logp)
    grid = np.exp(np.linspace(math.log(0.01), math.log(100), 40001))
    loss = [-np.mean(log_softmax(logp / t, axis=1)[np.arange(4), labels]) for t in grid]
    assert pytest.approx(grid[int(np.argmin(loss))], rel=1e-3) == T
