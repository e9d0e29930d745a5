"""medvlm.metrics: hand-computed confusion matrices, agreement with scikit-learn, CIs, file checks, CLI."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from medvlm.cli import main
from medvlm.errors import ConfigError, DataError
from medvlm.metrics import (
    CI_METRICS,
    METRIC_KEYS,
    MetricWarning,
    auc_score,
    binary_metrics,
    bootstrap_metrics,
    check_bootstrap,
    cluster_groups,
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
    for key in CI_METRICS[:CI_METRICS.index("auc")]:
        assert type(m[key]) is float
    assert all(m[key] is None for key in ("brier", "ece", "log_loss", "aurc"))  # no scores
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
    from medvlm.intervals import percentile_interval as _percentile_ci

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
    code, out, _ = _run(["metrics", str(path), "--bootstrap", "100"], capsys)
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


# ------------------------------------------------------------------------- inputs, messages, warnings
@pytest.mark.parametrize(("labels", "preds", "scores", "message"), [
    ([[0, 1]], [[0, 1]], None, r"^labels must be one-dimensional, got shape \(1, 2\)$"),
    ([0, 1], [[0], [1]], None, r"^preds must be one-dimensional, got shape \(2, 1\)$"),
    ([0, 2, 1], [0, 1, 1], None, r"^labels must contain only 0 and 1 \(the positive class\), found 2$"),
    ([0, 1, 1], [0, 0.5, 1], None, r"^preds must contain only 0 and 1 \(the positive class\), found 0.5$"),
    ([0, 1], [0, 1, 1], None, r"^labels and preds differ in length \(2 vs 3\)$"),
    ([0, 1], [0, 1], [0.5], r"^labels and scores differ in length \(2 vs 1\)$"),
])
def test_bad_inputs_are_named(labels, preds, scores, message):
    with pytest.raises(DataError, match=message):
        binary_metrics(labels, preds, scores)


def test_missing_scores_as_none_or_nan():
    with pytest.warns(MetricWarning) as record:
        m = binary_metrics([0, 1, 1], [0, 1, 1], [0.2, None, 0.9])  # None is a missing score too
    assert m["auc"] == 1.0
    assert [str(w.message) for w in record] == [
        "auc computed on the 2 of 3 rows that have a score (1 without one left out)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all scores missing: no scores, quietly
        assert binary_metrics([0, 1], [0, 1], [np.nan, np.nan])["auc"] is None
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert bootstrap_metrics([0, 1, 0, 1], [0, 1, 1, 1], [np.nan] * 4, n_boot=20)["auc_ci"] is None
    assert record and not any("auc" in str(w.message) for w in record)  # other metrics are undefined at times


def test_warnings_list_every_undefined_metric():
    with pytest.warns(MetricWarning) as record:
        binary_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.3])
    assert [str(w.message) for w in record] == [
        "undefined metrics set to None (tp=2, fp=0, tn=0, fn=1): auc (only one class among the labels), "
        "specificity, balanced_accuracy, mcc"]


def test_auc_score_edges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auc_score([0, 1, 1], [0.2, np.nan, 0.9]) == 1.0  # a row without a score is left out
        assert auc_score([0, 0, 1], [0.1, 0.3, 0.2]) == 0.5  # one positive is enough
        assert auc_score([0, 1, 1], [0.5, 0.2, 0.9]) == 0.5  # one negative too
        assert math.isnan(auc_score([1, 1], [0.2, 0.3])) and math.isnan(auc_score([0, 0], [0.2, 0.3]))
        assert math.isnan(auc_score([0, 1], [0.2, np.nan]))
        assert auc_score([0, 0, 1], [None, 0.1, 0.9]) == 1.0  # None is a missing score too


def test_warnings_point_at_the_caller():
    if hasattr(binary_metrics, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    with pytest.warns(MetricWarning) as record:
        binary_metrics([0, 1, 1], [0, 1, 1], [0.2, None, 0.9])
        binary_metrics([1, 1], [1, 1])
        bootstrap_metrics([0, 1, 0, 1], [0, 1, 1, 1], n_boot=20, seed=0)
    assert len(record) == 3 and {w.filename for w in record} == {__file__}


# ---------------------------------------------------------------------------------- bootstrap options
def test_bootstrap_defaults_and_options():
    y, p = [0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # six patients: some resamples lack a class
        assert bootstrap_metrics(y, p) == bootstrap_metrics(y, p, n_boot=1000, seed=0, confidence=0.95,
                                                            method="percentile")
    one = bootstrap_metrics(y, p, n_boot=1, seed=3)  # one resample: a zero-width interval
    assert one["accuracy_ci"][0] == one["accuracy_ci"][1]
    for kwargs, message in [({"method": "BCa"}, r"^The 'method' parameter must be one of \('percentile', "
                                                r"'bca'\). Got 'BCa' instead.$"),
                            ({"n_boot": 0}, "^n_boot must be at least 1, got 0$"),
                            ({"confidence": 0}, r"^confidence must lie in \(0, 1\), got 0$"),
                            ({"confidence": 1}, r"^confidence must lie in \(0, 1\), got 1$"),
                            ({"confidence": 1.5}, r"^confidence must lie in \(0, 1\), got 1.5$")]:
        with pytest.raises(ConfigError, match=message):
            bootstrap_metrics(y, p, **kwargs)
    with pytest.raises(DataError, match=r"^clusters and labels differ in length \(2 vs 6\)$"):
        bootstrap_metrics(y, p, clusters=["a", "b"])


def test_bootstrap_of_no_row_and_of_one_row():
    assert bootstrap_metrics([], [], n_boot=5) == {f"{m}_ci": None for m in CI_METRICS}
    for method in ("percentile", "bca"):
        with pytest.warns(MetricWarning, match=r"\(specificity: 5, balanced_accuracy: 5, mcc: 5 of 5\)"):
            ci = bootstrap_metrics([1], [1], n_boot=5, method=method)
        assert ci == {"accuracy_ci": [1.0, 1.0], "precision_ci": [1.0, 1.0], "recall_ci": [1.0, 1.0],
                      "specificity_ci": None, "f1_ci": [1.0, 1.0], "balanced_accuracy_ci": None,
                      "mcc_ci": None, "auc_ci": None, "brier_ci": None, "ece_ci": None,
                      "log_loss_ci": None, "aurc_ci": None}


def test_bootstrap_warns_with_the_count_per_metric_and_only_then():
    with pytest.warns(MetricWarning) as record:
        bootstrap_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], n_boot=20, seed=6)  # mcc undefined once
    assert [str(w.message) for w in record] == [
        "bootstrap: resamples where a metric was undefined were left out (mcc: 1 of 20)"]
    with pytest.warns(MetricWarning) as record:
        bootstrap_metrics([0, 1, 1, 0], [0, 1, 0, 0], n_boot=50, seed=0)
    assert [str(w.message) for w in record] == [
        "bootstrap: resamples where a metric was undefined were left out (precision: 17, recall: 4, "
        "specificity: 2, f1: 4, balanced_accuracy: 6, mcc: 19 of 50)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scores and no undefined resample: nothing to say
        bootstrap_metrics([0, 1] * 20, [0, 1] * 19 + [1, 0], n_boot=50, seed=0)


def test_cluster_bootstrap_draws_whole_patients_in_sorted_id_order():
    # 8 patients (ids not in sorted order, rows interleaved), 1 to 4 slices each
    data = np.random.default_rng(4)
    c = np.array(["P7", "P2", "P7", "P0", "P5", "P2", "P3", "P1", "P6", "P4", "P0", "P7", "P5", "P3", "P6",
                  "P0"])
    y = np.array([1 if int(pid[1]) % 2 else 0 for pid in c])
    p = np.where(data.random(c.size) < 0.7, y, 1 - y)
    uniq = np.unique(c)
    groups = [np.flatnonzero(c == u) for u in uniq]
    rng = np.random.default_rng(9)
    acc = []
    for _ in range(300):
        idx = np.concatenate([groups[i] for i in rng.integers(0, uniq.size, size=uniq.size)])
        acc.append(np.mean(y[idx] == p[idx]))
    want = np.quantile(acc, [0.025, 0.975]).tolist()
    with pytest.warns(MetricWarning, match=r"\(specificity: 3, balanced_accuracy: 3, mcc: 3 of 300\)"):
        ci = bootstrap_metrics(y, p, n_boot=300, seed=9, clusters=c)
    assert ci["accuracy_ci"] == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------------------------------- BCa
def _textbook_bca(values, estimate, jack, alpha):
    """Efron & Tibshirani (1993), ch. 14: z0 from the share of resamples below the estimate (ties count
    one half), acceleration a from the jackknife skewness."""
    from scipy.stats import norm

    ok = values[~np.isnan(values)]
    jack = jack[~np.isnan(jack)]
    z0 = norm.ppf((np.sum(ok < estimate) + 0.5 * np.sum(ok == estimate)) / ok.size)
    d = jack.mean() - jack
    den = 6 * np.sum(d ** 2) ** 1.5
    a = np.sum(d ** 3) / den if den > 0 else 0.0
    z = norm.ppf([alpha / 2, 1 - alpha / 2])
    return np.quantile(ok, norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))).tolist()


def test_bca_interval_matches_scipy():
    from scipy.stats import bootstrap

    from medvlm.intervals import bca_interval as _bca_ci

    x = np.random.default_rng(1).exponential(size=30)  # skewed: z0 and the acceleration are not 0
    jack = np.array([np.delete(x, i).mean() for i in range(x.size)])
    for confidence in (0.9, 0.95):
        res = bootstrap((x,), np.mean, method="BCa", n_resamples=2000, random_state=0,
                        confidence_level=confidence)
        want = [res.confidence_interval.low, res.confidence_interval.high]
        got = _bca_ci(res.bootstrap_distribution, float(x.mean()), jack, 1 - confidence)
        assert got == pytest.approx(want, rel=1e-12)
        textbook = _textbook_bca(res.bootstrap_distribution, float(x.mean()), jack, 1 - confidence)
        assert textbook == pytest.approx(want, rel=1e-12)


def test_bca_edges():
    from medvlm.intervals import bca_interval as _bca_ci
    from medvlm.intervals import percentile_interval as _percentile_ci

    skewed = np.array([0.1, 0.2, 0.25, 0.3, 0.9])  # jackknife values with acceleration
    values = np.array([0.0, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 1.0])  # ties at the estimate 0.5
    assert _bca_ci(values, 0.5, skewed, 0.1) == pytest.approx(_textbook_bca(values, 0.5, skewed, 0.1))
    assert _bca_ci(values, 0.5, skewed, 0.1) != pytest.approx(_percentile_ci(values, 0.1))
    three = skewed[[0, 1, 4]]  # three jackknife values are enough
    assert _bca_ci(values, 0.5, three, 0.1) == pytest.approx(_textbook_bca(values, 0.5, three, 0.1))
    with_nan = np.array([np.nan, *skewed])  # undefined jackknife values are left out
    assert _bca_ci(values, 0.5, with_nan, 0.1) == pytest.approx(_textbook_bca(values, 0.5, skewed, 0.1))
    flat = np.array([0.25, 0.25, 0.25])  # no spread in the jackknife (exactly): no acceleration, z0 counts
    assert _bca_ci(values, 0.6, flat, 0.1) == pytest.approx(_textbook_bca(values, 0.6, flat, 0.1))
    assert _bca_ci(values, 0.6, flat, 0.1) != pytest.approx(_percentile_ci(values, 0.1))
    for estimate, jack in [(-1.0, flat), (2.0, flat),  # every resample above / below: percentile
                           (math.nan, skewed), (0.6, skewed[:2])]:  # no estimate, too few jackknife values
        assert _bca_ci(values, estimate, jack, 0.1) == _percentile_ci(values, 0.1)
    assert _bca_ci(np.array([0.5]), 0.5, skewed, 0.1) == [0.5, 0.5]
    assert _bca_ci(np.array([np.nan, np.nan]), 0.5, skewed, 0.1) is None


@pytest.mark.parametrize("clustered", [False, True])
def test_bca_bootstrap_is_the_textbook_interval_of_the_documented_resamples(clustered):
    data = np.random.default_rng(8)
    n = 24
    y = np.array([0, 1] * 12)
    p = np.where(data.random(n) < 0.75, y, 1 - y)
    s = np.clip(0.35 * y + 0.65 * data.random(n), 0, 1)
    c = np.repeat([f"P{i:02d}" for i in range(12)], 2) if clustered else None
    groups = ([np.flatnonzero(c == u) for u in np.unique(c)] if clustered
              else [np.array([i]) for i in range(n)])

    def metrics(idx):
        yi, pi = y[idx], p[idx]
        auc = _pairwise_auc(yi, s[idx]) if 0 < yi.sum() < yi.size else np.nan
        return np.mean(yi == pi), auc

    rng = np.random.default_rng(5)
    boot = np.array([metrics(np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))]))
                     for _ in range(300)])
    jack = np.array([metrics(np.concatenate([g for j, g in enumerate(groups) if j != i]))
                     for i in range(len(groups))])
    estimate = metrics(np.arange(n))
    ci = bootstrap_metrics(y, p, s, n_boot=300, seed=5, clusters=c, method="bca", confidence=0.9)
    for j, metric in enumerate(("accuracy", "auc")):
        want = _textbook_bca(boot[:, j], estimate[j], jack[:, j], 0.1)
        assert ci[f"{metric}_ci"] == pytest.approx(want, rel=1e-12), metric


# --------------------------------------------------------------------------- one call, frames, files
def test_metrics_with_ci_passes_its_options_on():
    from medvlm.metrics import metrics_with_ci

    y, p, s = [0, 1, 1, 0, 1, 0, 1, 1], [0, 1, 0, 0, 1, 1, 1, 1], [0.1, 0.8, 0.4, 0.3, 0.9, 0.6, 0.7, 0.2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        assert metrics_with_ci(y, p, s) == {**binary_metrics(y, p, s), **bootstrap_metrics(y, p, s)}
        c = ["a", "a", "b", "b", "c", "c", "d", "d"]
        options = {"n_boot": 50, "seed": 3, "clusters": c, "method": "bca"}
        assert metrics_with_ci(y, p, s, **options) == {**binary_metrics(y, p, s),
                                                       **bootstrap_metrics(y, p, s, **options)}
        assert metrics_with_ci(y, p, s, n_boot=0) == binary_metrics(y, p, s)


def test_metrics_from_frame_passes_its_options_on():
    import pandas as pd

    from medvlm.metrics import metrics_from_frame

    df = pd.DataFrame({"patient_id": list("aabbccdd"), "label": [0, 1, 1, 0, 1, 0, 1, 1],
                       "pred": [0, 1, 0, 0, 1, 1, 1, 1], "score": [0.1, 0.8, 0.4, 0.3, 0.9, 0.6, 0.7, 0.2]})
    y, p, s = df["label"].to_numpy(), df["pred"].to_numpy(), df["score"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        assert metrics_from_frame(df) == binary_metrics(y, p, s)  # no CIs unless asked
        assert metrics_from_frame(df, n_boot=40) == {**binary_metrics(y, p, s),
                                                     **bootstrap_metrics(y, p, s, n_boot=40, seed=0)}
        assert metrics_from_frame(df, n_boot=40, seed=2, clusters="patient_id", method="bca") == {
            **binary_metrics(y, p, s),
            **bootstrap_metrics(y, p, s, n_boot=40, seed=2, clusters=df["patient_id"], method="bca")}


def test_read_predictions_messages_name_file_row_column_and_value(tmp_path):
    cases = [
        ("patient_id,pred\nA,1\n", r"missing column 'label' \(columns found: patient_id, pred; need at least "
                                   r"label,pred\)$"),
        ("label,pred\n1,1\n2,0\n", r"row 2, column 'label': '2' is not 0 or 1 \(1 = the positive class\)$"),
        ("label,pred\n1,1\n,1\n", r"row 2, column 'label': empty is not 0 or 1 \(1 = the positive class\)$"),
        ("label,pred,score\n1,1,0.5\n0,0,abc\n", r"row 2, column 'score': 'abc' is not a probability in "
                                                 r"\[0, 1\]$"),
        ("label,pred,score\n1,1,1.5\n", r"row 1, column 'score': '1.5' is not a probability in \[0, 1\]$"),
        ("patient_id,label,pred\nA,1,1\n,0,0\n", r"row 2, column 'patient_id' is empty$"),
        ("a,b\n1,2\n3,4,5\n", r"not a readable CSV file \(Error tokenizing data. C error: Expected 2 fields "
                             r"in line 3, saw 3\)$"),
        ("", r"not a readable CSV file \(No columns to parse from file\)$"),
    ]
    for text, message in cases:
        path = _write(tmp_path, text)
        with pytest.raises(DataError, match=f"^{path}: " + message):
            read_predictions(path)


def test_read_predictions_types_of_ids_cohorts_and_scores(tmp_path):
    df = read_predictions(_write(tmp_path, "patient_id,cohort,label,pred,score\n007,1,1,1,1\n010,2,0,,0\n"))
    assert df["patient_id"].tolist() == ["007", "010"] and df["cohort"].tolist() == ["1", "2"]
    assert df["score"].dtype == np.float64 and df["score"].tolist() == [1.0, 0.0]
    assert df["pred"].isna().tolist() == [False, True]


def test_cluster_groups_keep_the_rows_in_order():
    # 200 rows of 3 clusters: an unstable sort would shuffle the rows inside a cluster (the docstring's
    # promise; every metric is order-free, so only a direct test sees it)
    clusters = np.random.default_rng(0).integers(0, 3, 200).astype(str)
    groups = cluster_groups(200, clusters)
    assert [g.tolist() for g in groups] == [np.flatnonzero(clusters == c).tolist() for c in ("0", "1", "2")]
    assert [g.tolist() for g in cluster_groups(3, None)] == [[0], [1], [2]]
    with pytest.raises(DataError, match=r"^clusters and labels differ in length \(2 vs 3\)$"):
        cluster_groups(3, ["a", "b"])


def test_check_bootstrap_is_the_one_check_of_both_bootstraps():
    from medvlm.metrics_multiclass import bootstrap_multiclass

    check_bootstrap(1, 0.5, "bca")  # the edges that pass
    check_bootstrap(1000, 0.999, "percentile")
    for args, message in [((0, 0.95, "percentile"), "^n_boot must be at least 1, got 0$"),
                          ((5, 0.0, "percentile"), r"^confidence must lie in \(0, 1\), got 0.0$"),
                          ((5, 1, "bca"), r"^confidence must lie in \(0, 1\), got 1$"),
                          ((0, 2, "normal"), r"^The 'method' parameter must be one of \('percentile', "
                                             r"'bca'\)\. Got 'normal' instead\.$"),  # method, then n_boot
                          ((0, 2, "bca"), "^n_boot must be at least 1, got 0$")]:
        with pytest.raises(ConfigError, match=message):
            check_bootstrap(*args)
        n_boot, confidence, method = args
        for fn in (bootstrap_metrics, bootstrap_multiclass):
            with pytest.raises(ConfigError, match=message):
                fn([0, 1], [0, 1], n_boot=n_boot, confidence=confidence, method=method)


def test_read_predictions_strips_padded_patient_ids(tmp_path):
    from medvlm.metrics import read_predictions

    path = tmp_path / "p.csv"
    path.write_text("patient_id,label,pred,score\n p3 ,1,1,0.9\np4\t,0,0,0.2\n", encoding="utf-8")
    df = read_predictions(path)
    assert df["patient_id"].tolist() == ["p3", "p4"]
    assert list(df.columns) == ["patient_id", "label", "pred", "score"]
    path.write_text("patient_id,label,pred\np1,1,1\n   ,0,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: row 2, column 'patient_id' is empty$"):
        read_predictions(path)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_auc_is_undefined_when_the_rows_with_a_score_hold_one_class():
    """Both classes among the labels, but only LGG rows scored: the AUC is undefined (None, with its
    reason), never an error; the score metrics use the two scored rows."""
    with pytest.warns(MetricWarning) as caught:
        m = binary_metrics([0, 0, 1, 1], [0, 1, 1, 1], [0.1, 0.4, math.nan, math.nan])
    assert m["auc"] is None
    assert m["brier"] == pytest.approx((0.1 ** 2 + 0.4 ** 2) / 2)
    assert any("auc (only one class among the labels)" in str(w.message) for w in caught)


def test_a_score_above_one_leaves_the_probability_metrics_undefined():
    """A score of 1.5 is no probability: brier, ece, log_loss and aurc are None (the AUC, a ranking, is
    still defined), said in the warning; no error."""
    with pytest.warns(MetricWarning, match=r"scores outside \[0, 1\] are not probabilities"):
        m = binary_metrics([0, 0, 1, 1], [0, 1, 1, 1], [0.1, 0.4, 0.7, 1.5])
    assert m["auc"] == 1.0
    assert [m[k] for k in ("brier", "ece", "log_loss", "aurc")] == [None] * 4


def test_read_predictions_names_the_first_bad_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("label,pred\n1,1\n2,1\n3,0\n")
    with pytest.raises(DataError, match=r"row 2, column 'label': '2' is not 0 or 1"):
        read_predictions(path)


def test_scores_all_missing_or_outside_0_1_leave_the_score_metrics_undefined():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = binary_metrics([0, 1, 1], [0, 1, 0], [math.nan] * 3)
    assert [out[k] for k in ("brier", "ece", "log_loss", "aurc", "auc")] == [None] * 5
    assert not any("not probabilities" in str(w.message) for w in caught)  # no score at all: nothing to say
    with pytest.warns(MetricWarning) as record:
        out = binary_metrics([0, 1], [0, 1], [0.2, 1.5])
    assert out["brier"] is None and out["auc"] == 1.0
    assert [str(w.message) for w in record] == [
        "undefined metrics set to None (tp=1, fp=0, tn=1, fn=0): brier, ece, log_loss, aurc (scores outside "
        "[0, 1] are not probabilities)"]
