"""medvlm.stats: McNemar and DeLong against independent computations and pROC's published values."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medvlm.cli import main
from medvlm.errors import ConfigError, DataError
from medvlm.stats import StatsWarning, compare_predictions, delong_ci, delong_test, mcnemar

# The aSAH data (113 patients; outcome Poor = 1) as distributed with the R package pROC (Robin et al.,
# BMC Bioinformatics 2011; Turck et al. 2010), embedded so the test runs on a clean checkout; when
# /work/shared/data/asah.csv exists the fixture checks the copy against it.
_OUTCOME = (
    "000011010010110010111010000000001001101100000000011000100010100111011011110001101000000100000000"
    "00001111110001000"
)
_WFNS = (
    "111132541252551252252111121211342145414255112411255212512221511252145244141214212324214511542211"
    "13125225552445111"
)
_S100B = (
    "0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 "
    "0.09 0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 "
    "0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06 0.13 2.07 0.1 0.14 0.15 "
    "0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27 0.71 0.08 0.26 0.08 0.16 0.09 "
    "0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07 0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 "
    "0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74 0.15 0.47 0.17 0.44 0.15 0.5 0.48"
)
_NDKA = (
    "3.01 8.54 8.09 10.42 17.4 12.75 6 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6 16.11 "
    "32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85 18.21 5.03 14.04 "
    "21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06 12.59 13.56 3.87 9.44 7.66 12.98 "
    "419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39 11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57 "
    "8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61 21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37 "
    "11.97 7.75 9.83 10.55 28.49 8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61 "
    "11.67 24.58 10.33 13.87 15.89 22.43 6.79 13.45"
)


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    df = pd.DataFrame({"y": [int(c) for c in _OUTCOME], "wfns": [int(c) for c in _WFNS],
                       "s100b": [float(v) for v in _S100B.split()],
                       "ndka": [float(v) for v in _NDKA.split()]})
    shared = Path("/work/shared/data/asah.csv")
    if shared.is_file():
        ref = pd.read_csv(shared)
        assert (ref["outcome"] == "Poor").astype(int).tolist() == df["y"].tolist()
        for col in ("wfns", "s100b", "ndka"):
            assert np.allclose(ref[col], df[col])
    return df


def _naive_delong(y, sa, sb):
    """The textbook O(m*n) DeLong: placement values from the psi kernel (independent of the midranks)."""
    y = np.asarray(y)
    out = []
    for s in (np.asarray(sa, float), np.asarray(sb, float)):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (a1, v10a, v01a), (a2, v10b, v01b) = out
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (a1 - a2) / math.sqrt(var)
    return a1, a2, z, 2 * sps.norm.sf(abs(z))


def test_asah_aucs_match_proc(asah):
    # pROC: auc(aSAH$outcome, aSAH$s100b) = 0.7314, wfns 0.8237, ndka 0.6120
    for col, expected in (("s100b", 0.7314), ("wfns", 0.8237), ("ndka", 0.6120)):
        assert delong_ci(asah["y"], asah[col])["auc"] == pytest.approx(expected, abs=5e-5)
    # pROC: ci.auc(s100b) 95% CI: 0.6301-0.8326 (DeLong)
    lo, hi = delong_ci(asah["y"], asah["s100b"])["ci"]
    assert (round(lo, 4), round(hi, 4)) == (0.6301, 0.8326)


def test_asah_delong_matches_proc_and_naive(asah):
    r = delong_test(asah["y"], asah["wfns"], asah["s100b"])
    # pROC: roc.test(roc1 = wfns, roc2 = s100b): Z = 2.209, p-value = 0.02718
    assert r["z"] == pytest.approx(2.209, abs=5e-4)
    assert r["p"] == pytest.approx(0.02718, abs=5e-6)
    assert r["auc_diff"] == pytest.approx(0.8236789 - 0.7313686, abs=1e-6)
    lo, hi = r["auc_diff_ci"]
    assert lo < r["auc_diff"] < hi and lo > 0  # significant at 5%: the CI excludes 0
    a1, a2, z, p = _naive_delong(asah["y"], asah["wfns"], asah["s100b"])
    assert (r["auc_a"], r["auc_b"], r["z"], r["p"]) == pytest.approx((a1, a2, z, p), rel=1e-10)
    # antisymmetric in the order of the models
    s = delong_test(asah["y"], asah["s100b"], asah["wfns"])
    assert s["z"] == pytest.approx(-r["z"]) and s["p"] == pytest.approx(r["p"])


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_naive_on_random_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    sa = rng.integers(0, 5, 60) + y
    sb = rng.integers(0, 3, 60) + y * rng.integers(0, 2, 60)
    r = delong_test(y, sa, sb)
    assert (r["auc_a"], r["auc_b"], r["z"], r["p"]) == pytest.approx(_naive_delong(y, sa, sb), rel=1e-9)


def test_delong_identical_scores():
    r = delong_test([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.2], [0.1, 0.9, 0.3, 0.2])
    assert r["auc_diff"] == 0 and r["z"] == 0 and r["p"] == 1


def test_delong_needs_both_classes():
    with pytest.raises(DataError, match="both classes"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_mcnemar_exact_small_counts():
    # b = 5 (A right, B wrong), c = 1 -> exact two-sided p = 2 * P(X <= 1 | 6, 1/2) = 2 * 7/64
    y = [1] * 10
    a = [1] * 5 + [0] + [1] * 4
    b = [0] * 5 + [1] + [1] * 4
    r = mcnemar(y, a, b)
    assert (r["b"], r["c"]) == (5, 1)
    assert r["p"] == pytest.approx(14 / 64) and r["method"] == "exact binomial" and r["statistic"] is None
    assert r["accuracy_diff"] == pytest.approx(0.4)
    assert r["accuracy_a"] == 0.9 and r["accuracy_b"] == 0.5


def test_mcnemar_chi2_large_counts():
    # b = 30, c = 12 -> chi2 = (|30 - 12| - 1)^2 / 42 = 289/42
    y = np.ones(100, int)
    a = np.r_[np.ones(30), np.zeros(12), np.ones(58)].astype(int)
    b = np.r_[np.zeros(30), np.ones(12), np.ones(58)].astype(int)
    r = mcnemar(y, a, b)
    assert r["statistic"] == pytest.approx(289 / 42)
    assert r["p"] == pytest.approx(sps.chi2.sf(289 / 42, 1))
    assert r["method"].startswith("chi-square")
    exact = mcnemar(y, a, b, method="exact")
    assert exact["p"] == pytest.approx(sps.binomtest(30, 42, 0.5).pvalue)
    lo, hi = r["accuracy_diff_ci"]
    assert lo < 0.18 < hi


def test_mcnemar_no_discordant_pairs():
    assert mcnemar([0, 1], [0, 1], [0, 1])["p"] == 1.0


# --------------------------------------------------------------------------------------- files and CLI
def _frames(asah, tmp_path):
    ids = [f"P{i:03d}" for i in range(len(asah))]
    paths = []
    for col, th in (("wfns", 2), ("s100b", 0.2)):
        s = asah[col]
        df = pd.DataFrame({"patient_id": ids, "cohort": "test", "label": asah["y"],
                           "pred": (s > th).astype(int), "score": (s - s.min()) / (s.max() - s.min())})
        # extra train rows must be ignored by the comparison
        extra = pd.DataFrame({"patient_id": ["T1", "T2"], "cohort": "train", "label": [0, 1], "pred": [1, 1],
                              "score": [0.5, 0.5]})
        path = tmp_path / f"{col}.csv"
        pd.concat([df, extra] if col == "wfns" else [df]).to_csv(path, index=False)
        paths.append(path)
    return paths


def test_compare_cli_json(asah, tmp_path, capsys):
    a, b = _frames(asah, tmp_path)
    with pytest.raises(SystemExit, match="^0?$") as exc:  # 0 or None: success
        main(["compare", str(a), str(b), "--json"])
    assert exc.value.code in (0, None)
    obj = json.loads(capsys.readouterr().out)
    for key in ("n", "auc_a", "auc_b", "auc_diff", "auc_diff_ci", "delong_z", "delong_p", "mcnemar_b",
                "mcnemar_c", "mcnemar_p"):
        assert key in obj
    assert obj["n"] == 113
    assert obj["delong_z"] == pytest.approx(2.209, abs=5e-4)  # min-max scaling keeps the ranks
    assert obj["delong_p"] == pytest.approx(0.02718, abs=5e-6)
    wf, sb = asah["wfns"] > 2, asah["s100b"] > 0.2
    y = asah["y"].astype(bool)
    assert obj["mcnemar_b"] == int(((wf == y) & (sb != y)).sum())
    assert obj["mcnemar_c"] == int(((wf != y) & (sb == y)).sum())


def test_compare_cli_table(asah, tmp_path, capsys):
    a, b = _frames(asah, tmp_path)
    with pytest.raises(SystemExit, match="^0?$") as exc:  # 0 or None: success
        main(["compare", str(a), str(b)])
    assert exc.value.code in (0, None)
    out = re.sub(r"\s+", " ", capsys.readouterr().out)  # rich wraps long lines at the console width
    # the numbers of test_compare_cli_json (pROC's DeLong z; McNemar's b and c counted from the data),
    # rounded as the table shows them: A = WFNS > 2, B = S100B > 0.2, each right on 84 of 113
    assert ": 113 patients" in out
    assert "│ ROC AUC │ 0.824 │ 0.731 │ 0.092 [0.010, 0.174] │" in out
    assert "│ accuracy │ 0.743 │ 0.743 │ 0.000 [-0.072, 0.072] │" in out
    assert "DeLong (AUC): z = 2.209, p = 0.0272" in out
    assert ("McNemar (accuracy, exact binomial): b = 8 (A right, B wrong), c = 8 (A wrong, B right), "
            "p = 1.0000") in out


def test_compare_patients_in_one_file_only_exit_2(asah, tmp_path, capsys):
    a, b = _frames(asah, tmp_path)
    short = tmp_path / "short.csv"
    pd.read_csv(b).iloc[:-3].to_csv(short, index=False)
    with pytest.raises(SystemExit, match="^2$") as exc:
        main(["compare", str(a), str(short)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "3 only in" in err and "P112" in err and len(err.strip().splitlines()) == 1


def test_compare_label_mismatch_and_missing_id(tmp_path):
    a = pd.DataFrame({"patient_id": ["1", "2"], "label": [0, 1], "pred": [0, 1]})
    b = pd.DataFrame({"patient_id": ["1", "2"], "label": [1, 1], "pred": [0, 1]})
    with pytest.raises(DataError, match="patient '1' has label 0"):
        compare_predictions(a, b)
    with pytest.raises(DataError, match="patient_id"):
        compare_predictions(a.drop(columns="patient_id"), b)
    r = compare_predictions(a, a)
    assert r["auc_a"] is None and r["mcnemar_p"] == 1.0


@pytest.mark.parametrize(("b", "c", "n"), [(0, 0, 10), (10, 0, 10), (0, 10, 10), (1, 0, 1), (0, 1, 1),
                                           (0, 0, 1), (3, 2, 6), (30, 0, 31)])
def test_paired_difference_intervals_stay_inside_the_possible_range(b, c, n):
    from medvlm.stats import paired_difference_ci

    low, high = paired_difference_ci(b, c, n)
    assert -1.0 <= low <= high <= 1.0
    assert low <= (b - c) / n + 1e-12 or b - c == n  # covers the estimate (or sits at the bound)


def test_compare_accuracy_ci_is_bounded_where_wald_was_not():
    import pandas as pd

    from medvlm.stats import compare_predictions

    # A right on all 3, B wrong on all 3: Wald gave [1, 1]; the difference can never exceed 1
    a = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "label": [1, 0, 1], "pred": [1, 0, 1]})
    b = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "label": [1, 0, 1], "pred": [0, 1, 0]})
    low, high = compare_predictions(a, b)["accuracy_diff_ci"]
    assert -1 <= low < high <= 1


# ------------------------------------------------------------------------------ McNemar, by hand
def test_mcnemar_returns_every_key_by_hand():
    # A right on 7 of 10, B on 5; b = 3 (A right, B wrong), c = 1 (A wrong, B right)
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    a = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1]
    assert mcnemar(y, a, b) == {
        "n": 10, "b": 3, "c": 1, "statistic": None, "p": 0.625, "method": "exact binomial",
        "accuracy_a": 0.7, "accuracy_b": 0.5, "accuracy_diff": pytest.approx(0.2),
        "accuracy_diff_ci": pytest.approx([-0.2221372922, 0.5554706255])}
    ninety = mcnemar(y, a, b, confidence=0.9)["accuracy_diff_ci"]
    assert ninety == pytest.approx([-0.1596279015, 0.4929612348])
    chi = mcnemar(y, a, b, method="chi2")  # (|3 - 1| - 1)^2 / 4 = 0.25
    assert (chi["statistic"], chi["method"]) == (0.25, "chi-square with continuity correction")
    assert chi["p"] == pytest.approx(sps.chi2.sf(0.25, 1))


def test_mcnemar_equal_discordant_counts_are_tested_and_no_patient_is_defined():
    y = [1] * 6
    a = [1, 1, 1, 0, 0, 0]
    b = [0, 0, 0, 1, 1, 1]  # b = c = 3: (|0| - 1)^2 / 6
    r = mcnemar(y, a, b, method="chi2")
    assert r["statistic"] == pytest.approx(1 / 6) and r["p"] == pytest.approx(0.6830913983096086)
    assert mcnemar([], [], []) == {"n": 0, "b": 0, "c": 0, "statistic": None, "p": 1.0,
                                   "method": "exact binomial", "accuracy_a": None, "accuracy_b": None,
                                   "accuracy_diff": None, "accuracy_diff_ci": None}


@pytest.mark.parametrize(("discordant", "method"), [(24, "exact binomial"),
                                                    (25, "chi-square with continuity correction")])
def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs(discordant, method):
    y = [1] * discordant
    a = [1] * (discordant - 5) + [0] * 5
    b = [0] * (discordant - 5) + [1] * 5
    assert mcnemar(y, a, b)["method"] == method


def test_mcnemar_bad_input_messages():
    with pytest.raises(ConfigError, match=r"^The 'method' parameter must be one of \('auto', 'exact', "
                                          r"'chi2'\). Got 'fisher' instead.$"):
        mcnemar([0, 1], [0, 1], [0, 1], method="fisher")
    for args in (([0, 1], [0, 1], [0]), ([[0, 1]], [[0, 1]], [[0, 1]])):
        with pytest.raises(DataError, match=r"^labels and both predictions must have the same length "):
            mcnemar(*args)


def test_paired_difference_interval_by_hand():
    from medvlm.stats import paired_difference_ci

    # p12 = 4/12, p21 = 2/12, d = 1/6, var = (1/2 - 1/36) / 12, half = 1.959964 * sqrt(var)
    assert paired_difference_ci(3, 1, 10) == pytest.approx([-0.2221372922, 0.5554706255])
    assert paired_difference_ci(1, 3, 10) == pytest.approx([-0.5554706255, 0.2221372922])
    assert paired_difference_ci(0, 0, 4) == pytest.approx([-0.4619679414, 0.4619679414])  # 1.96 sqrt(1/18)


# ------------------------------------------------------------------------------------ DeLong
def _placement_delong(y, scores):
    """DeLong et al. (1988) with placement values, O(m n): an independent check of the midrank algorithm."""
    y = np.asarray(y)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = s[:, y == 1], s[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (k, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = pos.shape[1], neg.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(s), len(s)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(s), len(s)))
    return psi.mean(axis=(1, 2)), s10 / m + s01 / n


@pytest.mark.parametrize("seed", range(4))
def test_delong_matches_the_placement_value_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 30))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    y[2] = 1 if seed % 2 else 0  # also one or two patients of a class
    a = np.round(rng.random(n) + 0.4 * y, 1)  # ties
    b = np.round(rng.random(n) + 0.2 * y, 1)
    aucs, cov = _placement_delong(y, [a, b])
    r = delong_test(y, a, b)
    assert (r["auc_a"], r["auc_b"]) == (pytest.approx(aucs[0]), pytest.approx(aucs[1]))
    assert r["se"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    one = delong_ci(y, a)
    assert one["se"] == pytest.approx(math.sqrt(cov[0, 0]))


def test_delong_with_two_patients_of_a_class_matches_the_placement_value_formula():
    y = [0, 0, 0, 1, 1]  # two positives: their placement values have a variance
    a, b = [0.1, 0.6, 0.3, 0.5, 0.9], [0.2, 0.1, 0.4, 0.3, 0.5]
    aucs, cov = _placement_delong(y, [a, b])
    assert delong_test(y, a, b)["se"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    assert delong_ci(y, a)["se"] == pytest.approx(math.sqrt(cov[0, 0]))
    assert delong_ci([1, 1, 1, 0, 0], a)["se"] == pytest.approx(math.sqrt(_placement_delong([1, 1, 1, 0, 0],
                                                                                            [a])[1][0, 0]))


@pytest.mark.parametrize(("labels", "scores"), [([0, 0, 0, 1], [0.1, 0.6, 0.3, 0.5]),   # one positive
                                                 ([0, 1, 1, 1], [0.5, 0.2, 0.6, 0.9])])  # one negative
def test_delong_ci_with_one_patient_of_a_class_by_hand(labels, scores):
    # AUC 2/3; the class with one patient adds no variance, the other's placements 1, 0, 1 (variance 1/3)
    # give se = sqrt(1/3 / 3) = 1/3; the interval is clipped at 1
    assert delong_ci(labels, scores) == {"auc": pytest.approx(2 / 3), "se": pytest.approx(1 / 3),
                                         "ci": [pytest.approx(2 / 3 - 1.959964 / 3), 1.0]}


def test_delong_test_edges():
    y = [0, 0, 1, 1, 1]
    a = [0.1, 0.4, 0.2, 0.3, 0.5]  # AUC 2/3
    b = [0.1, 0.2, 0.3, 0.4, 0.5]  # AUC 1
    r = delong_test(y, a, b)
    assert r == {"n": 5, "auc_a": pytest.approx(2 / 3), "auc_b": 1.0, "auc_diff": pytest.approx(-1 / 3),
                 "se": pytest.approx(math.sqrt(5 / 36)), "auc_diff_ci": [-1.0, pytest.approx(0.3971021171)],
                 "z": pytest.approx(-0.894427191), "p": pytest.approx(0.3710933695)}  # clipped at -1
    assert delong_test(y, b, a)["auc_diff_ci"] == [pytest.approx(-0.3971021171), 1.0]
    assert delong_test(y, a, b, confidence=0.9)["auc_diff_ci"][1] == pytest.approx(
        -1 / 3 + 1.644854 * math.sqrt(5 / 36))
    same = delong_test(y, b, b)  # identical scores: no variance and no difference
    assert (same["se"], same["z"], same["p"]) == (0.0, 0.0, 1.0)
    with pytest.warns(StatsWarning) as record:  # perfect and perfectly reversed: no variance, a difference
        apart = delong_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
    assert (apart["auc_diff"], apart["se"], apart["z"], apart["p"]) == (1.0, 0.0, None, None)
    assert [str(w.message) for w in record] == [
        "DeLong: the variance of the AUC difference is 0; z and p are undefined"]


@pytest.mark.parametrize(("labels", "scores", "message"), [
    ([0, 1, 1], [0.1, 0.2], r"^labels and scores differ in length \(3 vs 2\)$"),
    ([0, 1], [0.1, None], "^scores contain missing values; DeLong needs a score for every patient$"),
    ([0, 1], [0.1, np.nan], "^scores contain missing values; DeLong needs a score for every patient$"),
    ([0, 2], [0.1, 0.2], r"^labels must contain only 0 and 1 \(1 = the positive class\)$"),
    ([1, 1], [0.1, 0.2], r"^DeLong needs both classes among the labels \(0 and 1\)$"),
    ([0, 0], [0.1, 0.2], r"^DeLong needs both classes among the labels \(0 and 1\)$"),
])
def test_delong_bad_input_messages(labels, scores, message):
    with pytest.raises(DataError, match=message):
        delong_ci(labels, scores)


# ------------------------------------------------------------------------- paired frames
def _side(ids, labels, preds, scores=None, **extra):
    df = pd.DataFrame({"patient_id": ids, "label": labels, "pred": pd.array(preds, dtype="Int64"), **extra})
    if scores is not None:
        df["score"] = scores
    return df


def test_compare_without_scores_returns_every_key():
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    ids = [f"p{i}" for i in range(10)]
    a = _side(ids, y, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1])
    b = _side(ids, y, [1, 0, 0, 0, 1, 0, 0, 0, 1, 1])
    assert compare_predictions(a, b) == {
        "n": 10, "auc_a": None, "auc_b": None, "auc_diff": None, "auc_diff_ci": None, "delong_z": None,
        "delong_p": None, "mcnemar_b": 3, "mcnemar_c": 1, "mcnemar_p": 0.625,
        "mcnemar_method": "exact binomial",
        "accuracy_a": 0.7, "accuracy_b": 0.5, "accuracy_diff": pytest.approx(0.2),
        "accuracy_diff_ci": pytest.approx([-0.2221372922, 0.5554706255]), "n_dropped_abstained": 0}
    assert compare_predictions(a, b, confidence=0.9)["accuracy_diff_ci"] == pytest.approx(
        [-0.1596279015, 0.4929612348])


def test_compare_with_scores_is_delong_on_the_units_both_answered():
    y = [0, 0, 1, 1, 1, 0]
    ids = ["a", "b", "c", "d", "e", "f"]
    a = _side(ids, y, [0, 0, 1, 1, 1, None], [0.1, 0.4, 0.2, 0.3, 0.5, 0.9])
    b = _side(ids, y, [0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    r = compare_predictions(a, b, confidence=0.9)
    dl = delong_test(y[:5], [0.1, 0.4, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], confidence=0.9)
    assert r["n"] == 5 and r["n_dropped_abstained"] == 1  # f: A abstained
    assert (r["auc_a"], r["auc_b"], r["auc_diff"], r["auc_diff_ci"], r["delong_z"], r["delong_p"]) == (
        dl["auc_a"], dl["auc_b"], dl["auc_diff"], dl["auc_diff_ci"], dl["z"], dl["p"])
    only_a = compare_predictions(a, b.drop(columns="score"))  # one side without scores: no DeLong
    assert only_a["auc_a"] is None and only_a["delong_p"] is None


def test_compare_skips_delong_with_a_missing_score_or_one_class():
    ids = ["a", "b", "c", "d"]
    a = _side(ids, [0, 1, 0, 1], [0, 1, 0, 1], [0.1, np.nan, 0.2, 0.9])
    b = _side(ids, [0, 1, 0, 1], [0, 1, 1, 1], [0.3, 0.8, 0.6, 0.7])
    with pytest.warns(StatsWarning) as record:
        r = compare_predictions(a, b, name_a="cnn", name_b="vlm")
    assert r["auc_a"] is None and r["mcnemar_c"] == 0
    assert [str(w.message) for w in record] == [
        "DeLong skipped: 1 patients in cnn and 0 in vlm have no score"]
    one = _side(ids, [1, 1, 1, 1], [0, 1, 0, 1], [0.1, 0.5, 0.2, 0.9])
    with pytest.warns(StatsWarning) as record:
        assert compare_predictions(one, one)["auc_a"] is None
    assert [str(w.message) for w in record] == ["DeLong skipped: the test cohort has one class only"]


def test_compare_slice_rows_pairs_units_and_says_they_are_not_independent():
    rows = {"patient_id": ["P1", "P1", "P1", "P2"], "orientation": ["axial", "coronal", "axial", "axial"],
            "slice_index": [3, 3, 4, 3]}
    a = _side(rows["patient_id"], [1, 1, 1, 0], [1, 1, 0, 0], orientation=rows["orientation"],
              slice_index=rows["slice_index"])
    b = a.assign(pred=pd.array([1, 0, 0, 1], dtype="Int64")).iloc[::-1]  # any row order
    with pytest.warns(StatsWarning) as record:
        r = compare_predictions(a, b)
    note = ("4 slices of 2 patients: McNemar and DeLong treat slices as independent, so their p-values and "
            "intervals are optimistic")
    assert (r["n"], r["n_patients"], r["unit"], r["note"]) == (4, 2, "slice", note)
    assert (r["mcnemar_b"], r["mcnemar_c"]) == (2, 0) and [str(w.message) for w in record] == [note]
    twice = pd.concat([a, a.iloc[[0]]])
    with pytest.raises(DataError, match="^B: unit 'P1:axial:3' appears 2 times; expected one row per unit$"):
        compare_predictions(a, twice)


def test_compare_messages_name_the_files_and_the_units():
    ids = [f"p{i}" for i in range(8)]
    full = _side(ids, [0, 1] * 4, [0, 1] * 4)
    short = full.iloc[:2]
    with pytest.raises(DataError, match=r"^the two files do not cover the same patients \(same kind of "
                                        r"rows\? one row per patient, or per slice, in both\): 6 only in A "
                                        r"\(p2, p3, p4, p5, p6, \.\.\.\)$"):
        compare_predictions(full, short)
    with pytest.raises(DataError, match=r"\): 1 only in x \(p9\); 5 only in y \(p1, p2, p3, p4, p5\)$"):
        compare_predictions(_side(["p0", "p9"], [0, 1], [0, 1]), full.iloc[:6], name_a="x", name_b="y")
    slices = full.assign(orientation="axial", slice_index=range(8))
    with pytest.raises(DataError, match=r"^the two files do not cover the same units "):
        compare_predictions(slices, slices.iloc[:7])
    with pytest.raises(DataError, match="^B: patient 'p1' appears 2 times; expected one row per patient$"):
        compare_predictions(full, pd.concat([full, full.iloc[[1]]]))
    with pytest.raises(DataError, match="^B: patient 'p1' appears 2 times; "):  # the first repeated one
        compare_predictions(full, pd.concat([full, full.iloc[[1, 2]]]))
    for one, other in ((slices, full), (full, slices)):  # slice rows on one side only: units, not patients
        with pytest.raises(DataError, match=r"^the two files do not cover the same units \(same kind"):
            compare_predictions(one, other)
    with pytest.raises(DataError, match="^mine: no 'patient_id' column; a paired comparison joins the files "
                                        "on patient_id$"):
        compare_predictions(full.drop(columns="patient_id"), full, name_a="mine")
    with pytest.raises(DataError, match=r"^theirs: no row of cohort 'test' \(cohorts found: train\)$"):
        compare_predictions(full, full.assign(cohort="train"), name_b="theirs")
    none = full.assign(pred=pd.array([None] * 8, dtype="Int64"))
    with pytest.raises(DataError, match=r"^no unit answered by both A and B \(8 abstained in one or both\): "
                                        r"nothing to compare$"):
        compare_predictions(full, none)


def test_warnings_point_at_the_caller():
    if hasattr(delong_test, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    ids = ["a", "b", "c", "d"]
    one = _side(ids, [1, 1, 1, 1], [0, 1, 0, 1], [0.1, 0.5, 0.2, 0.9])
    missing = _side(ids, [0, 1, 0, 1], [0, 1, 0, 1], [0.1, np.nan, 0.2, 0.9])
    slices = _side(ids, [0, 1, 0, 1], [0, 1, 0, 1], orientation="axial", slice_index=[1, 2, 3, 4])
    with pytest.warns(StatsWarning) as record:
        delong_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
        compare_predictions(one, one)
        compare_predictions(missing, missing)
        compare_predictions(slices, slices)
    assert len(record) == 4 and {w.filename for w in record} == {__file__}


@pytest.mark.parametrize("scores_b", [[0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.4, 0.9]])
def test_delong_with_a_zero_standard_error_gives_no_interval(scores_b):
    from medvlm.stats import delong_test

    out = delong_test([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], scores_b)  # both separate perfectly
    assert out == {"n": 4, "auc_a": 1.0, "auc_b": 1.0, "auc_diff": 0.0, "se": 0.0, "auc_diff_ci": None,
                   "z": 0.0, "p": 1.0}


def test_compare_k_classes_gives_mcnemar_on_correctness_and_no_delong():
    from medvlm.stats import StatsWarning, compare_predictions

    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2]
    frame = pd.DataFrame({"patient_id": [f"P{i}" for i in range(9)], "label": labels,
                          "pred": [0, 1, 2, 0, 2, 2, 1, 1, 2], "score": [0.1] * 9})
    other = frame.assign(pred=[0, 0, 1, 0, 1, 2, 0, 2, 2])
    with pytest.warns(StatsWarning) as record:
        r = compare_predictions(frame, other, n_classes=3)
    assert [str(w.message) for w in record] == [
        "DeLong skipped: 3 classes; DeLong compares the ROC AUCs of a binary task (McNemar compares which "
        "predicted classes are right)"]
    # by hand: A right and B wrong on P1, P2, P7 (b = 3); A wrong and B right on P4, P6 (c = 2)
    assert (r["mcnemar_b"], r["mcnemar_c"], r["n_classes"], r["n"]) == (3, 2, 3, 9)
    assert r["auc_a"] is None and r["auc_b"] is None and r["delong_p"] is None and r["auc_diff_ci"] is None
    assert (r["accuracy_a"], r["accuracy_b"]) == (7 / 9, 6 / 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatsWarning)
        binary = compare_predictions(frame.assign(label=[y % 2 for y in labels], pred=[p % 2 for p in
                                                  frame["pred"]], score=np.linspace(0.1, 0.9, 9)),
                                     other.assign(label=[y % 2 for y in labels], pred=[p % 2 for p in
                                                  other["pred"]], score=np.linspace(0.9, 0.1, 9)))
    assert "n_classes" not in binary and binary["auc_a"] is not None


def test_the_k_class_note_points_at_the_caller():
    from medvlm.stats import StatsWarning, compare_predictions

    if hasattr(compare_predictions, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    frame = pd.DataFrame({"patient_id": ["a", "b", "c"], "label": [0, 1, 2], "pred": [0, 1, 1]})
    with pytest.warns(StatsWarning) as record:
        compare_predictions(frame, frame, n_classes=3)
    assert [w.filename for w in record] == [__file__]
