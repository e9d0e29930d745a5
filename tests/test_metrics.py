"""medvlm.metrics: hand-computed confusion matrices, agreement with scikit-learn, CIs, file checks, CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medvlm.cli import main
from medvlm.errors import DataError
from medvlm.metrics import (
    CI_METRICS,
    METRIC_KEYS,
    MetricWarning,
    auc_score,
    binary_metrics,
    bootstrap_metrics,
    read_predictions,
)


def test_hand_computed_confusion_matrix():
    # labels: 6 HGG, 4 LGG. preds: TP 4, FN 2, FP 1, TN 3.
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    preds = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    m = binary_metrics(labels, preds)
    assert list(m) == list(METRIC_KEYS)
    assert (m["n"], m["tp"], m["fp"], m["tn"], m["fn"]) == (10, 4, 1, 3, 2)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert m["mcc"] == pytest.approx((4 * 3 - 1 * 2) / math.sqrt(5 * 6 * 4 * 5))
    assert m["auc"] is None
    for key in ("n", "tp", "fp", "tn", "fn"):
        assert type(m[key]) is int
    for key in CI_METRICS[:-1]:
        assert type(m[key]) is float
    json.dumps(m)


def test_study_like_all_hgg_predictions():
    # The study's failure mode: the model says HGG for everyone (4 LGG, 16 HGG).
    labels = [0] * 4 + [1] * 16
    with pytest.warns(MetricWarning):
        m = binary_metrics(labels, [1] * 20, [0.5] * 20)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (16, 4, 0, 0)
    assert m["accuracy"] == 0.8 and m["recall"] == 1.0 and m["specificity"] == 0.0
    assert m["balanced_accuracy"] == 0.5
    assert m["mcc"] is None  # a constant prediction: undefined, not 0
    assert m["auc"] == 0.5


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = rng.integers(0, 2, n)
    p[:2] = [0, 1]
    s = rng.integers(0, 6, n) / 5  # many ties
    m = binary_metrics(y, p, s)
    tn, fp, fn, tp = skm.confusion_matrix(y, p, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["precision"] == pytest.approx(skm.precision_score(y, p, zero_division=np.nan))
    assert m["recall"] == pytest.approx(skm.recall_score(y, p))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, p, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_auc_with_ties_hand_computed():
    # positives 0.5, 0.9; negatives 0.2, 0.5: pairs (0.5>0.2)=1, (0.5=0.5)=1/2, (0.9>.)=2 -> 3.5/4
    assert binary_metrics([0, 0, 1, 1], [0, 1, 1, 1], [0.2, 0.5, 0.5, 0.9])["auc"] == 0.875
    # all scores tied: 0.5
    with pytest.warns(MetricWarning, match="mcc"):
        assert binary_metrics([0, 1, 0, 1], [1, 1, 1, 1], [0.7] * 4)["auc"] == 0.5


def test_undefined_values_are_none_with_warning():
    with pytest.warns(MetricWarning, match="auc"):
        m = binary_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8])
    assert m["auc"] is None and m["specificity"] is None and m["recall"] == pytest.approx(2 / 3)
    with pytest.warns(MetricWarning, match="precision"):
        m = binary_metrics([0, 1, 1], [0, 0, 0])
    assert m["precision"] is None and m["f1"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binary_metrics([0, 1], [0, 1])["auc"] is None  # no scores: quiet, expected


def test_partial_scores_leave_rows_out_of_auc_only():
    with pytest.warns(MetricWarning, match="3 of 4 rows"):
        m = binary_metrics([0, 0, 1, 1], [0, 1, 1, 1], [0.1, np.nan, 0.7, 0.9])
    assert m["n"] == 4 and m["auc"] == 1.0


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="labels"):
        binary_metrics([0, 2], [0, 1])
    with pytest.raises(DataError, match="length"):
        binary_metrics([0, 1, 1], [0, 1])


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(3)
    widths = []
    for n in (40, 400):
        y = rng.integers(0, 2, n)
        s = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        p = (s > 0.5).astype(int)
        est = binary_metrics(y, p, s)
        ci = bootstrap_metrics(y, p, s, n_boot=300, seed=0)
        assert set(ci) == {f"{k}_ci" for k in CI_METRICS}
        for k in CI_METRICS:
            lo, hi = ci[f"{k}_ci"]
            assert lo <= est[k] <= hi, k
        widths.append(ci["auc_ci"][1] - ci["auc_ci"][0])
        assert ci["accuracy_ci"][1] - ci["accuracy_ci"][0] > 0
    assert widths[1] < widths[0] / 2


def _pairwise_auc(y, s):
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_percentile_interval_is_the_central_quantiles_of_the_documented_resamples():
    # Documented: resample n rows with replacement, n_boot times, from numpy.random.default_rng(seed); the
    # percentile interval at 95% is the 2.5% and 97.5% quantiles of the resampled metric.
    data = np.random.default_rng(5)
    n = 60
    y = data.integers(0, 2, n)
    p = np.where(data.random(n) < 0.7, y, 1 - y)
    s = np.clip(0.3 * y + 0.7 * data.random(n), 0, 1)
    rng = np.random.default_rng(11)
    boot = {"accuracy": [], "recall": [], "specificity": [], "auc": []}
    for _ in range(200):
        i = rng.integers(0, n, size=n)
        yi, pi = y[i], p[i]
        boot["accuracy"].append(np.mean(yi == pi))
        boot["recall"].append(np.mean(pi[yi == 1] == 1) if (yi == 1).any() else np.nan)
        boot["specificity"].append(np.mean(pi[yi == 0] == 0) if (yi == 0).any() else np.nan)
        boot["auc"].append(_pairwise_auc(yi, s[i]) if 0 < yi.sum() < n else np.nan)
    for confidence in (0.95, 0.9):
        ci = bootstrap_metrics(y, p, s, n_boot=200, seed=11, confidence=confidence)
        alpha = 1 - confidence
        for metric, values in boot.items():
            values = np.array(values)
            want = np.quantile(values[~np.isnan(values)], [alpha / 2, 1 - alpha / 2])
            assert ci[f"{metric}_ci"] == pytest.approx(want.tolist(), rel=1e-12), (metric, confidence)


def test_percentile_interval_of_known_values():
    from medvlm.metrics import _percentile_ci

    values = np.arange(1001.0)  # quantile q of 0..1000 is 1000 q
    assert _percentile_ci(values, 0.05) == [25.0, 975.0]
    assert _percentile_ci(values, 0.2) == [100.0, 900.0]
    assert _percentile_ci(np.array([np.nan, 2.0, np.nan]), 0.05) == [2.0, 2.0]  # undefined resamples left out
    assert _percentile_ci(np.array([np.nan, np.nan]), 0.05) is None


@pytest.mark.parametrize(("confidence", "z"), [(0.95, 1.959964), (0.9, 1.644854)])
def test_a_95_percent_interval_is_as_wide_as_normal_theory_says(confidence, z):
    # 400 patients, accuracy 0.75: the bootstrap distribution of the accuracy is close to normal with
    # sd sqrt(0.75 * 0.25 / 400), so the two-sided interval is 2 z sd wide (a 90% one is 16% narrower)
    y = np.array([0, 1] * 200)
    p = y.copy()
    p[:100] = 1 - p[:100]
    for seed in (0, 1):
        lo, hi = bootstrap_metrics(y, p, n_boot=2000, seed=seed, confidence=confidence)["accuracy_ci"]
        assert (hi - lo) / (2 * z * math.sqrt(0.75 * 0.25 / 400)) == pytest.approx(1.0, abs=0.05)
        assert (lo + hi) / 2 == pytest.approx(0.75, abs=0.005)


def test_bootstrap_seeded_and_methods():
    y = [0, 1] * 15
    p = [0, 1, 1, 1, 0, 0] * 5
    s = np.linspace(0, 1, 30)
    a = bootstrap_metrics(y, p, s, n_boot=200, seed=7)
    assert a == bootstrap_metrics(y, p, s, n_boot=200, seed=7)
    assert a != bootstrap_metrics(y, p, s, n_boot=200, seed=8)
    bca = bootstrap_metrics(y, p, s, n_boot=200, seed=7, method="bca")
    est = binary_metrics(y, p, s)
    for k in CI_METRICS:
        lo, hi = bca[f"{k}_ci"]
        assert lo <= est[k] + 1e-12 and est[k] - 1e-12 <= hi
    assert bootstrap_metrics(y, p, n_boot=10)["auc_ci"] is None


def test_cluster_bootstrap_is_wider_for_correlated_slices():
    # 20 patients x 10 identical slices each: slice-level resampling overstates the sample size.
    rng = np.random.default_rng(0)
    y_pat = np.array([0, 1] * 10)
    p_pat = np.where(rng.random(20) < 0.7, y_pat, 1 - y_pat)
    y, p = np.repeat(y_pat, 10), np.repeat(p_pat, 10)
    clusters = np.repeat([f"P{i}" for i in range(20)], 10)
    naive = bootstrap_metrics(y, p, n_boot=400, seed=0)["accuracy_ci"]
    clustered = bootstrap_metrics(y, p, n_boot=400, seed=0, clusters=clusters)["accuracy_ci"]
    patient = bootstrap_metrics(y_pat, p_pat, n_boot=400, seed=0)["accuracy_ci"]
    assert clustered[1] - clustered[0] > 2 * (naive[1] - naive[0])
    assert clustered[1] - clustered[0] == pytest.approx(patient[1] - patient[0], rel=0.35)


# ------------------------------------------------------------------------------------------ read_predictions
def _write(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_predictions_types(tmp_path):
    path = _write(tmp_path, "patient_id,cohort,label,pred,score\n007,test,1,1,0.9\n010,val,0,1,\n")
    df = read_predictions(path)
    assert df["patient_id"].tolist() == ["007", "010"]
    assert df["label"].dtype == np.int64 and str(df["pred"].dtype) == "Int64"
    assert np.isnan(df["score"].iloc[1])


def test_an_empty_pred_is_an_abstention_counted_not_guessed(tmp_path, capsys):
    from medvlm.cli import invoke

    path = _write(tmp_path, "patient_id,label,pred,score\nA,1,1,0.9\nB,0,0,0.2\nC,1,,\nD,0,,\n")
    df = read_predictions(path)
    assert df["pred"].isna().tolist() == [False, False, True, True]
    assert invoke(["metrics", str(path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["n"], m["accuracy"], m["auc"], m["n_abstained"], m["coverage"]) == (2, 1.0, 1.0, 2, 0.5)
    none = _write(tmp_path, "label,pred\n1,\n0,\n", name="none.csv")
    assert invoke(["metrics", str(none), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["n"], m["accuracy"], m["coverage"], m["n_abstained"]) == (0, None, 0.0, 2)


@pytest.mark.parametrize(("text", "match"), [
    ("patient_id,pred\nA,1\n", "missing column 'label'"),
    ("label,score\n1,0.2\n", "missing column 'pred'"),
    ("label,pred\n1,1\n2,0\n", "row 2, column 'label'"),
    ("label,pred\n1,1\n,1\n", "row 2, column 'label': empty"),
    ("label,pred\n1,HGG\n", "row 1, column 'pred'"),
    ("label,pred,score\n1,1,0.5\n0,0,1.5\n", "row 2, column 'score'"),
    ("label,pred,score\n1,1,-0.1\n", "row 1, column 'score'"),
    ("label,pred\n", "no data rows"),
])
def test_read_predictions_errors(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_predictions(_write(tmp_path, text))


def test_read_predictions_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_predictions(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------------- CLI
def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_metrics_json(tmp_path, capsys):
    path = _write(tmp_path, "label,pred,score\n1,1,0.9\n1,0,0.4\n0,0,0.3\n0,1,0.6\n1,1,0.8\n")
    code, out, _ = _run(["metrics", str(path), "--json"], capsys)
    assert code == 0
    obj = json.loads(out)
    assert list(obj) == [*METRIC_KEYS, "n_abstained", "coverage"]  # the contract's keys, then abstentions
    assert (obj["tp"], obj["fp"], obj["tn"], obj["fn"]) == (2, 1, 1, 1)
    assert obj["auc"] == pytest.approx(5 / 6)
    code, out, _ = _run(["metrics", str(path), "--json", "--bootstrap", "100"], capsys)
    obj = json.loads(out)
    assert code == 0 and len(obj["accuracy_ci"]) == 2 and "auc_ci" in obj


def test_cli_metrics_table_and_no_scores(tmp_path, capsys):
    path = _write(tmp_path, "label,pred\n1,1\n0,0\n1,0\n")
    code, out, _ = _run(["metrics", str(path), "--bootstrap", "50"], capsys)
    assert code == 0 and "accuracy" in out and "ROC AUC" in out and "n/a" in out
    code, out, _ = _run(["metrics", str(path), "--json"], capsys)
    assert json.loads(out)["auc"] is None


@pytest.mark.parametrize(("text", "match"), [
    ("label,score\n1,0.2\n", "missing column 'pred'"),
    ("label,pred\n3,1\n", "row 1, column 'label'"),
    ("label,pred,score\n1,1,2\n", "row 1, column 'score'"),
])
def test_cli_metrics_bad_file_exit_2(tmp_path, capsys, text, match):
    code, _, err = _run(["metrics", str(_write(tmp_path, text))], capsys)
    assert code == 2
    assert err.startswith("medvlm: error: ") and match in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["metrics", str(tmp_path / "missing.csv")], capsys)
    assert code == 2 and "no such file" in err


def test_a_patient_twice_is_an_error_naming_it(tmp_path, capsys):
    from medvlm.cli import invoke

    path = _write(tmp_path, "patient_id,label,pred\nA,1,1\nB,0,0\nA,0,1\n")
    assert invoke(["metrics", str(path)]) == 2
    assert "patient A has 2 rows" in capsys.readouterr().err
