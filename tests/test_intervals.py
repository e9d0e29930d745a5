"""Honest statistics on few patients: every interval inside the possible range (medvlm.intervals and each
CI producer), the few-patient warning and the "too few to test" rule (medvlm.small_samples), and the
``metrics`` command's warning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medvlm.cli import main
from medvlm.intervals import clip_interval, clip_metric_ci, metric_range
from medvlm.metrics import CI_METRICS, bootstrap_metrics
from medvlm.small_samples import (
    MIN_CLASS_PATIENTS,
    MIN_DISCORDANT,
    class_patient_counts,
    delong_too_few,
    few_patients_warnings,
    mcnemar_too_few,
)
from medvlm.stats import delong_ci, delong_test, mcnemar, paired_difference_ci


@pytest.mark.parametrize(("ci", "low", "high", "want"), [
    ([-0.25, 1.3], 0.0, 1.0, [0.0, 1.0]),
    ([0.2, 0.4], 0.0, 1.0, [0.2, 0.4]),
    ([-1.7, 0.3], -1.0, 1.0, [-1.0, 0.3]),
    ([1.2, 1.5], 0.0, 1.0, [1.0, 1.0]),  # wholly outside: pinned to the edge, never low > high
    ([0.1, math.inf], 0.0, 1.0, None),
    ([math.nan, 0.3], 0.0, 1.0, None),
    (None, 0.0, 1.0, None),
    ("ab", 0.0, 1.0, None),
    ([0.1], 0.0, 1.0, None),
])
def test_clip_interval(ci, low, high, want):
    assert clip_interval(ci, low, high) == want


def test_metric_ranges():
    assert metric_range("auc") == metric_range("accuracy") == metric_range("ece") == (0.0, 1.0)
    assert metric_range("mcc") == metric_range("auc_diff") == metric_range("accuracy_diff") == (-1.0, 1.0)
    assert metric_range("log_loss") == (0.0, math.inf)
    assert clip_metric_ci("mcc", [-1.4, 0.2]) == [-1.0, 0.2]
    assert clip_metric_ci("log_loss", [-0.1, 7.0]) == [0.0, 7.0]


def test_delong_intervals_are_clipped_where_the_raw_interval_exceeds_the_range():
    y = [0, 0, 1, 1, 1]
    r = delong_test(y, [0.1, 0.2, 0.7, 0.8, 0.9], [0.9, 0.3, 0.2, 0.8, 0.1])
    z = 1.959963984540054
    assert r["auc_diff"] == pytest.approx(5 / 6) and r["auc_diff"] + z * r["se"] > 1.2  # raw: past 1
    assert r["auc_diff_ci"][1] == 1.0 and r["auc_diff_ci"][0] == pytest.approx(5 / 6 - z * r["se"])
    flipped = delong_test(y, [0.9, 0.3, 0.2, 0.8, 0.1], [0.1, 0.2, 0.7, 0.8, 0.9])
    assert flipped["auc_diff_ci"][0] == -1.0  # the mirror image: raw below -1
    one = delong_ci(y, [0.1, 0.6, 0.5, 0.7, 0.9])
    assert one["auc"] + z * one["se"] > 1.2 and one["ci"][1] == 1.0


def test_paired_difference_interval_is_clipped_at_the_edges():
    # 1 patient, A right and B wrong: Bonett-Price d = 1/3, half width 1.07 -> raw [-0.73, 1.40]
    p12, p21 = 2 / 3, 1 / 3
    half = 1.959963984540054 * math.sqrt((p12 + p21 - (1 / 3) ** 2) / 3)
    assert 1 / 3 + half > 1.3
    assert paired_difference_ci(1, 0, 1) == [pytest.approx(1 / 3 - half), 1.0]
    assert mcnemar([1], [1], [0])["accuracy_diff_ci"][1] == 1.0


@pytest.mark.filterwarnings("ignore:bootstrap")
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_intervals_stay_in_range_on_few_patients(method):
    rng = np.random.default_rng(3)
    for trial in range(8):
        y = rng.integers(0, 2, size=7)
        y[:2] = [0, 1]
        p = rng.integers(0, 2, size=7)
        s = rng.random(7)
        ci = bootstrap_metrics(y, p, s, n_boot=200, seed=trial, method=method)
        for m in CI_METRICS:
            if ci[f"{m}_ci"] is None:
                continue
            lo, hi = ci[f"{m}_ci"]
            low, high = metric_range(m)
            assert low <= lo <= hi <= high, (m, ci[f"{m}_ci"])


def test_class_patient_counts_counts_patients_not_rows():
    assert class_patient_counts([0, 1, 1, 1]) == {0: 1, 1: 3}
    # slices: P1 has 3 positive rows and 1 negative, P2 2 positive rows -> 2 positive patients, 1 negative
    labels = [1, 1, 1, 0, 1, 1]
    ids = ["P1", "P1", "P1", "P1", "P2", "P2"]
    assert class_patient_counts(labels, ids) == {0: 1, 1: 2}
    assert class_patient_counts([1, 1]) == {0: 0, 1: 2}  # an absent class is 0 patients


def test_few_patients_warning_threshold():
    assert MIN_CLASS_PATIENTS == 10
    assert few_patients_warnings({0: 10, 1: 40}) == []
    (text,) = few_patients_warnings({0: 9, 1: 40}, ["LGG", "HGG"])
    assert text.startswith("only 9 LGG patients and 40 HGG patients (fewer than 10 in a class)")
    (text,) = few_patients_warnings({0: 1, 1: 12})
    assert text.startswith("only 1 label 0 patient and 12 label 1 patients")


def test_too_few_to_test_rules():
    assert MIN_DISCORDANT == 10
    assert mcnemar_too_few(9, 0) == "too few to test (b + c = 9 discordant, fewer than 10)"
    assert mcnemar_too_few(5, 5) is None and mcnemar_too_few(10, 0) is None
    # the exact test is "significant" from 6 discordant patients all one way: still too few to read
    assert mcnemar([1] * 6, [1] * 6, [0] * 6)["p"] < 0.05 and mcnemar_too_few(6, 0)
    assert delong_too_few({0: 3, 1: 20}, ["LGG", "HGG"]) == "too few to test (3 LGG patients, fewer than 10)"
    assert delong_too_few({0: 10, 1: 10}) is None


def _metrics_cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr()


def test_metrics_cli_warns_on_few_patients_per_class(tmp_path, capsys):
    few = tmp_path / "few.csv"
    rows = ["patient_id,label,pred,score"] + [f"P{i},{int(i >= 2)},{int(i >= 1)},{0.1 + i / 10:.1f}"
                                               for i in range(6)]
    few.write_text("\n".join(rows) + "\n")
    code, cap = _metrics_cli(["metrics", str(few), "--json"], capsys)
    assert code == 0 and json.loads(cap.out)["n"] == 6  # stdout stays one JSON object
    assert ("medvlm: warning: only 2 label 0 patients and 4 label 1 patients (fewer than 10 in a class)"
            in cap.err)
    # slices of one patient are one patient: 12 rows of 6 patients are still 2 + 4 patients
    slices = tmp_path / "slices.csv"
    rows = ["patient_id,slice_index,label,pred"] + [f"P{i // 2},{i % 2},{int(i >= 4)},1" for i in range(12)]
    slices.write_text("\n".join(rows) + "\n")
    code, cap = _metrics_cli(["metrics", str(slices)], capsys)
    assert code == 0 and "only 2 label 0 patients and 4 label 1 patients" in cap.err
    many = tmp_path / "many.csv"
    rows = ["patient_id,label,pred"] + [f"P{i},{i % 2},{i % 2}" for i in range(20)]
    many.write_text("\n".join(rows) + "\n")
    code, cap = _metrics_cli(["metrics", str(many), "--json"], capsys)
    assert code == 0 and "fewer than 10" not in cap.err
