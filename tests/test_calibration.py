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


# ------------------------------------------------------------------ exact behaviour (issue 20)
# Each test below pins a promise of a docstring with hand-computed values; together they kill the mutants of
# calibration.py that the tests above let through (benchmarks/MUTATION.md).
def test_every_refusal_has_its_exact_message():
    from medvlm.errors import ConfigError, DataError

    with pytest.raises(DataError, match=r"^labels and scores differ in length \(3 vs 2\)$"):
        cal.brier_score([0, 1, 1], [0.2, 0.8])
    for bad in ([0.2, np.nan], [0.2, None], [-0.01, 0.5], [0.5, 1.01]):
        with pytest.raises(DataError, match=r"^scores must be probabilities in \[0, 1\] without gaps$"):
            cal.expected_calibration_error([0, 1], bad)
    with pytest.raises(ConfigError, match=r"^--method must be one of temperature, platt, isotonic, none, "
                                          r"got 'beta'$"):
        cal.fit_calibrator([0, 1], [0.2, 0.8], "beta")
    with pytest.raises(ConfigError, match=r"^unknown calibration method 'beta' "
                                          r"\(temperature, platt, isotonic, none\)$"):
        cal.apply_calibrator([0.2], "beta", {})
    with pytest.raises(ConfigError, match=r"^--threshold must be youden, balanced or a number in \[0, 1\], "
                                          r"got 1.5$"):
        cal.fit_threshold([0, 1], [0.2, 0.8], 1.5)
    with pytest.raises(ConfigError, match=r"^--threshold must be youden, balanced or a number in \[0, 1\], "
                                          r"got 'median'$"):
        cal.fit_threshold([0, 1], [0.2, 0.8], "median")
    with pytest.raises(DataError, match=r"^a balanced threshold needs both classes among the fitted rows$"):
        cal.fit_threshold([1, 1], [0.2, 0.8], "balanced")
    for level in (0.2, 0.4999, 1.5):
        with pytest.raises(ConfigError, match=rf"^--abstain-below takes a confidence in \[0.5, 1\], "
                                              rf"got {level}$"):
            cal.abstain_below([1], [0.9], level)


def test_no_rows_give_nan_not_an_error():
    assert math.isnan(cal.brier_score([], []))
    assert math.isnan(cal.log_loss_score([], []))
    assert math.isnan(cal.expected_calibration_error([], []))
    assert all(math.isnan(v) for v in cal.calibration_vector(np.zeros(0), np.zeros(0)))
    cov, risk = cal.risk_coverage([], [], [])
    assert cov.shape == (0,) and risk.shape == (0,)
    assert math.isnan(cal.aurc([], [], []))
    assert [b["n"] for b in cal.reliability_bins([], [])] == [0] * 10


def test_a_column_of_scores_is_read_as_a_flat_vector():
    column = np.array([[1.0], [0.05], [0.3], [0.65], [0.35]])  # e.g. one column of a DataFrame
    labels = [1, 0, 1, 1, 0]
    assert cal.brier_score(labels, column) == pytest.approx(0.7375 / 5, abs=1e-15)
    ece = cal.expected_calibration_error(np.array(labels)[:, None], column)
    assert ece == pytest.approx(0.75 / 5, abs=1e-15)


def test_empty_reliability_bins_have_no_means_and_n_bins_is_honoured():
    bins = cal.reliability_bins([1, 0, 1], [0.95, 0.05, 0.45], n_bins=5)
    assert [(b["low"], b["high"], b["n"]) for b in bins] == [
        (0.0, 0.2, 1), (0.2, 0.4, 0), (0.4, 0.6, 1), (0.6, 0.8, 0), (0.8, 1.0, 1)]
    assert bins[1]["mean_score"] is None and bins[1]["mean_label"] is None
    assert bins[2]["mean_score"] == 0.45 and bins[2]["mean_label"] == 1.0
    # 0.3 and 0.35 share a bin of 5 (gap |0.65 - 1|) but not of 20 (gaps 0.7 and 0.35)
    assert cal.expected_calibration_error([1, 0], [0.3, 0.35], n_bins=5) == pytest.approx(0.35 / 2)
    assert cal.expected_calibration_error([1, 0], [0.3, 0.35], n_bins=20) == pytest.approx(1.05 / 2)


def test_sens_spec_predicts_positive_at_the_threshold_itself():
    # pred = score >= threshold: a score equal to the threshold is positive
    assert cal.sens_spec([1, 0], [0.5, 0.25], 0.5) == (1.0, 1.0)
    assert cal.sens_spec([1, 0], [0.5, 0.25], 0.25) == (1.0, 0.0)


def test_sens_spec_of_a_missing_class_is_nan_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" from numpy
        se, sp = cal.sens_spec([1, 1], [0.2, 0.8], 0.5)
        assert se == 0.5 and math.isnan(sp)
        se, sp = cal.sens_spec([0, 0, 0, 0], [0.2, 0.8, 0.6, 0.1], 0.5)
        assert math.isnan(se) and sp == 0.5


@pytest.mark.parametrize("value", [0.0, 1.0, 0.25])
def test_a_numeric_threshold_in_the_closed_interval_is_returned_as_is(value):
    assert cal.fit_threshold([1, 1], [0.2, 0.8], value) == value  # a number needs no second class


@pytest.mark.parametrize("rule", ["youden", "balanced"])
def test_thresholds_at_the_edges_of_the_candidates(rule):
    # two scores: the midpoint separates them (J = 1, sensitivity = specificity = 1)
    assert cal.fit_threshold([0, 1], [0.2, 0.8], rule) == 0.5
    # the first cut, not the lower score itself (0.4 is nearer 0.5 than 0.25 and has the same J)
    assert cal.fit_threshold([0, 1], [0.1, 0.4], rule) == 0.25
    # one distinct score: the candidates are the score (all positive) and just above it (all negative),
    # J = 0 both; the score itself is nearer 0.5
    assert cal.fit_threshold([0, 1], [0.7, 0.7], rule) == 0.7


def test_youden_can_predict_every_row_negative():
    # the one positive has the lowest score: every cut inside has J < 0; all-positive (0.1) and all-negative
    # (just above 0.45) both have J = 0, and just above 0.45 is nearer 0.5
    t = cal.fit_threshold([1, 0, 0], [0.1, 0.2, 0.45], "youden")
    assert t == np.nextafter(0.45, 1.0)
    assert cal.sens_spec([1, 0, 0], [0.1, 0.2, 0.45], t) == (0.0, 1.0)


# labels N P N P with a positive and a negative tied in the middle: two cuts, one with sensitivity 1 and
# specificity 0.5, one with sensitivity 0.5 and specificity 1 (J = 0.5 and |se - sp| = 0.5 both), nothing
# better; the rule keeps the one nearer 0.5, and of two as near, the lower.
TIED_Y = [0, 1, 0, 1]


@pytest.mark.parametrize("rule", ["youden", "balanced"])
@pytest.mark.parametrize("scores, expected", [
    ([0.125, 0.25, 0.25, 0.75], 0.5),  # cuts 0.1875 and 0.5: the higher is nearer
    ([0.25, 0.75, 0.75, 0.875], 0.5),  # cuts 0.5 and 0.8125: the lower is nearer
    ([0.125, 0.5, 0.5, 0.875], 0.3125),  # cuts 0.3125 and 0.6875, both 0.1875 away: the lower
])
def test_equal_j_goes_to_the_threshold_nearest_one_half(rule, scores, expected):
    assert cal.fit_threshold(TIED_Y, scores, rule) == expected


def test_balanced_and_youden_differ_by_hand():
    # sorted labels N P N N P P (scores 0.125 ... 0.75): cutting at 0.4375 gives se = sp = 2/3 (J = 1/3);
    # at 0.5625, se = 2/3 and sp = 1 (J = 2/3, the best J, |se - sp| = 1/3)
    y, s = [0, 1, 0, 0, 1, 1], [0.125, 0.25, 0.375, 0.5, 0.625, 0.75]
    assert cal.fit_threshold(y, s, "balanced") == 0.4375
    assert cal.fit_threshold(y, s, "youden") == 0.5625


def test_balanced_breaks_a_tie_in_the_gap_by_the_larger_j():
    # sorted N P N P P P: at 0.5, se = 0.75 and sp = 0.5 (gap 0.25, J = 0.25); at 0.75, se = 0.75 and sp = 1
    # (gap 0.25, J = 0.75). 0.5 is nearer 0.5, but J decides first.
    y, s = [0, 1, 0, 1, 1, 1], [0.125, 0.375, 0.625, 0.875, 0.9375, 0.96875]
    assert cal.fit_threshold(y, s, "balanced") == 0.75


def test_abstain_below_keeps_a_confidence_equal_to_the_level_and_rows_without_a_score():
    # confidences 0.75 (pred 1, score 0.75), 0.75 (pred 0, score 0.25), 0.5; None and NaN: no score, kept
    keep = cal.abstain_below([1, 0, 1, 0, 1], [0.75, 0.25, 0.5, None, np.nan], 0.75)
    assert keep.tolist() == [True, True, False, True, True]
    assert cal.abstain_below([1, 0], [0.5, 0.5], 0.5).tolist() == [True, True]  # the lowest level keeps all
    assert cal.abstain_below([1, 0, 1], [1.0, 0.0, 0.99], 1.0).tolist() == [True, True, False]


def test_apply_calibrator_reads_none_as_no_score():
    got = cal.apply_calibrator([0.25, None, 0.75], "none", {})
    assert got[0] == 0.25 and math.isnan(got[1]) and got[2] == 0.75
    got = cal.apply_calibrator([None, 0.5], "temperature", {"temperature": 2.0})
    assert math.isnan(got[0]) and got[1] == 0.5


def test_method_none_fits_nothing():
    assert cal.fit_calibrator(FIT_Y, FIT_S, "none") == {}
    assert cal.fit_calibrator([1, 0], [0.9, 0.2], "none") == {}


def test_isotonic_knots_by_hand():
    # pool-adjacent-violators on labels sorted by score 0.2 -> 0, 0.4 -> 1, 0.6 -> 0, 0.8 -> 1: 0.4 and 0.6
    # pool to 0.5
    params = cal.fit_calibrator([1, 0, 0, 1], [0.4, 0.2, 0.6, 0.8], "isotonic")
    assert params == {"x": [0.2, 0.4, 0.6, 0.8], "y": [0.0, 0.5, 0.5, 1.0]}
    got = cal.apply_calibrator([0.0, 0.3, 0.5, 0.7, 1.0], "isotonic", params)
    assert got.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-15)  # linear, clipped outside


def _temperature_root(y, s):
    """T where the log loss of sigmoid(logit(s) / T) is flat: mean((y - p) * logit(s)) = 0 (its derivative
    is that over -T^2), solved by bisection to machine precision."""
    from scipy.optimize import brentq

    z = cal.logit(s)

    def slope(t):
        return np.mean((np.asarray(y) - cal.sigmoid(z / t)) * z)

    return brentq(slope, 0.01, 100, xtol=1e-15, rtol=1e-15)


def test_temperature_is_found_to_eight_digits():
    # the search's tolerance (xatol 1e-10 on log T) matters: scipy's default (1e-5) is off by about 1.5e-6
    assert cal.fit_temperature(FIT_Y, FIT_S) == pytest.approx(_temperature_root(FIT_Y, FIT_S), rel=2e-7)
    params = cal.fit_calibrator(FIT_Y, FIT_S, "temperature")
    assert params["temperature"] == pytest.approx(_temperature_root(FIT_Y, FIT_S), rel=2e-7)


def test_temperature_stays_in_its_bounds():
    # scores that carry no information (each score once HGG, once LGG): the loss falls as T grows, to the
    # upper bound 100
    assert cal.fit_temperature([0, 1, 0, 1], [0.7, 0.7, 0.3, 0.3]) == pytest.approx(100.0, rel=1e-6)
    # two scores close to 0.5, perfectly separated: the loss falls as T shrinks, to the lower bound 0.01
    assert cal.fit_temperature([0, 1], [0.499, 0.501]) == pytest.approx(0.01, rel=1e-6)


def test_multiclass_temperature_to_eight_digits_and_in_its_bounds():
    from scipy.optimize import brentq
    from scipy.special import softmax

    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1, 2, 2])
    z = np.log(probs)

    def slope(t):  # the cross-entropy's derivative in T, times T^2
        return np.mean(z[np.arange(4), labels] - (softmax(z / t, axis=1) * z).sum(axis=1))

    root = brentq(slope, 0.01, 100, xtol=1e-15, rtol=1e-15)
    assert cal.fit_temperature_multiclass(labels.tolist(), z.tolist()) == pytest.approx(root, rel=2e-7)
    flat = np.log([[0.6, 0.4], [0.6, 0.4], [0.4, 0.6], [0.4, 0.6]])  # each row once right, once wrong
    assert cal.fit_temperature_multiclass([0, 1, 1, 0], flat) == pytest.approx(100.0, rel=1e-6)
    close = np.log([[0.501, 0.499], [0.499, 0.501]])
    assert cal.fit_temperature_multiclass([0, 1], close) == pytest.approx(0.01, rel=1e-6)


def test_top_label_ece_honours_n_bins():
    probs = np.array([[0.3, 0.7], [0.65, 0.35]])  # top 0.7 right, 0.65 wrong
    # 5 bins: both in [0.6, 0.8): |0.675 - 0.5| * 2 / 2; 10 bins: 0.7 and 0.65 apart: (0.3 + 0.65) / 2
    assert cal.top_label_ece([1, 1], probs, n_bins=5) == pytest.approx(0.175)
    assert cal.top_label_ece([1, 1], probs) == pytest.approx(0.475)


def test_temperature_with_scores_of_exactly_zero_and_one_still_minimises_the_log_loss():
    # separable scores, two of them 0 and 1 (logit +-27.6 after clipping): the loss falls towards 0 as T
    # shrinks. Clipping sigmoid(z / T) to [EPS, 1 - EPS] keeps the loss finite where it saturates to 0 or 1
    # (0 * log 0 would be NaN and derail the search).
    y, s = [0, 1, 1], [0.0, 0.6, 1.0]
    T = cal.fit_temperature(y, s)
    z = cal.logit(s)
    grid = np.exp(np.linspace(math.log(0.01), math.log(100), 401))
    best = min(cal.log_loss_score(y, cal.sigmoid(z / t)) for t in grid)
    assert best < 1e-11
    assert cal.log_loss_score(y, cal.sigmoid(z / T)) <= best + 1e-12


def test_confidence_is_a_float_probability_even_of_hard_scores():
    conf = cal.confidence([1, 0, 1], [1, 0, 0])  # integer scores: pred 1 at score 0 has confidence 0
    assert conf.dtype == np.float64 and conf.tolist() == [1.0, 1.0, 0.0]


def test_multiclass_temperature_reads_float_labels_and_float32_log_probs_in_float64():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    T = cal.fit_temperature_multiclass([0, 1, 2, 2], np.log(probs))
    # labels from a float column (0.0, 1.0, ...) index the classes as integers
    assert cal.fit_temperature_multiclass(np.array([0.0, 1.0, 2.0, 2.0]), np.log(probs)) == T
    # a model's float32 log-probabilities: the loss is computed in float64, the same T as from float64 input
    logp32 = np.log(probs).astype(np.float32)
    assert cal.fit_temperature_multiclass([0, 1, 2, 2], logp32) == pytest.approx(
        cal.fit_temperature_multiclass([0, 1, 2, 2], logp32.astype(np.float64)), rel=1e-12)


def test_a_confident_wrong_score_costs_minus_log_eps():
    # scores are clipped to [1e-12, 1 - 1e-12]: about 27.63, not scikit-learn's clip (-log(2.2e-16), 36.04).
    # 1 - 1e-12 is not exact in binary: a score of 1 sits 1.0000889e-12 from 1 after the clip.
    top = 1 - (1 - 1e-12)
    assert cal.log_loss_score([0], [1.0]) == pytest.approx(-math.log(top), rel=1e-12)
    assert cal.log_loss_score([1], [0.0]) == pytest.approx(-math.log(1e-12), rel=1e-12)
    assert cal.log_loss_score([0, 1], [1.0, 1.0]) == pytest.approx(-(math.log(top) + math.log(1 - 1e-12)) / 2,
                                                                   rel=1e-12)


def test_logit_and_sigmoid_by_hand_in_float64():
    assert cal.logit([0.5, 0.8, 0.2]).tolist() == pytest.approx([0.0, math.log(4), -math.log(4)], abs=1e-15)
    edge = cal.logit([0, 1])  # clipped to [1e-12, 1 - 1e-12]
    top = 1 - (1 - 1e-12)  # the clipped score 1 sits this far from 1 (1 - 1e-12 is not exact in binary)
    assert edge.tolist() == pytest.approx([math.log(1e-12) - math.log(1 - 1e-12),
                                           math.log(1 - 1e-12) - math.log(top)], rel=1e-12)
    assert cal.sigmoid([0, math.log(4), -math.log(4)]).tolist() == pytest.approx([0.5, 0.8, 0.2], abs=1e-15)
    # float32 input (a model's output) is computed in float64, as the same values given as float64
    s32 = np.array([0.3, 0.7, 0.999], np.float32)
    assert cal.logit(s32).dtype == np.float64
    np.testing.assert_array_equal(cal.logit(s32), cal.logit(s32.astype(np.float64)))
    z32 = np.array([-3.1, 0.2, 7.5], np.float32)
    assert cal.sigmoid(z32).dtype == np.float64
    np.testing.assert_array_equal(cal.sigmoid(z32), cal.sigmoid(z32.astype(np.float64)))


def test_bin_index_bins_the_value_given_even_in_float32():
    # float32 0.7 and 0.9 are 0.69999999 and 0.89999998: bins 6 and 8 (in float32 arithmetic, 0.7f * 10
    # rounds up to 7.0 and would put them in bins 7 and 9)
    assert cal.bin_index(np.array([0.7, 0.9, 0.3], np.float32)).tolist() == [6, 8, 3]


def test_risk_coverage_keeps_a_tie_below_the_top_together():
    # confidences 0.9 (right), 0.8 (wrong), 0.8 (wrong), 0.7 (right): three levels, the two 0.8s together
    cov, risk = cal.risk_coverage([1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0.8, 0.2, 0.3])
    assert cov.tolist() == [0.25, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 2 / 3, 0.5], abs=1e-15)
    area = cal.aurc([1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0.8, 0.2, 0.3])
    assert area == pytest.approx(0.25 * 0 + 0.5 * 2 / 3 + 0.25 * 0.5)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_isotonic_is_non_decreasing_even_when_the_scores_are_backwards():
    """Scores that rank the classes backwards: the isotonic map may only flatten them (the pooled mean,
    0.5), never turn them around (a calibrator must not change which rows rank higher)."""
    params = cal.fit_calibrator([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], "isotonic")
    assert params == {"x": [0.1, 0.9], "y": [0.5, 0.5]}
    assert cal.apply_calibrator([0.1, 0.5, 0.9], "isotonic", params).tolist() == [0.5, 0.5, 0.5]
