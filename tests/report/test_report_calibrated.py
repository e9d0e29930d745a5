"""The report's calibrated runs (issue 15): their section, summary row beside the raw run, ECE/Brier and
coverage, reliability diagrams and risk-coverage curves, key comparisons with paired tests, and a
calibrated run whose FIT/APPLY files are gone."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from report_runs import (
    CAL_BIN_COUNTS,
    CAL_LABELS,
    CAL_SCORES,
    make_calibration_study,
    make_cnn_run,
    write_scored_run,
)

from medvlm.calibration import aurc
from medvlm.report import calibration_figures as CF
from medvlm.report.calibration_figures import COUNT_GID, reliability_figure, risk_coverage_figure
from medvlm.report.html import load_run, paired_tests, render_report, summary_rows
from medvlm.stats import compare_predictions

XSS = "<img src=x onerror=alert(1)>"


def _counts(fig):
    return [int(t.get_text()) for t in fig.axes[0].texts if t.get_gid() == COUNT_GID]


def _key_rows(html):
    return re.findall(r'<tr class="key"><td class="l cmp">([^<]+)</td><td class="l">([^<]+)</td>'
                      r'<td class="l">([^<]+)</td>', html)


def _run_section(html, name):
    start = html.index(f"</span> {name}</h2>")
    return html[start:html.index("</section>", start)]


def test_reliability_figure_counts_and_title_by_hand():
    fig = reliability_figure(CAL_LABELS, CAL_SCORES, title="t", positive="HGG")
    assert _counts(fig) == CAL_BIN_COUNTS
    # ECE: (0.55 + |1.25 - 1| + 0.7 + |1.65 - 2| + |1.85 - 2|) / 8 = 0.25; Brier 1.45 / 8 = 0.18125
    assert fig.axes[0].get_title() == "t\nECE 0.250, Brier 0.181, n = 8"
    assert _counts(reliability_figure([1, 0, 1], [1.0, 0.0, 0.1])) == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert _counts(reliability_figure([], [])) == [0] * 10
    with pytest.raises(Exception, match="probabilities"):
        reliability_figure([1, 0], [1.5, 0.2])


def test_risk_coverage_figure_legend_has_aurc():
    fig = risk_coverage_figure([("m", [1, 0, 1, 0], [1, 0, 0, 1], [0.9, 0.2, 0.4, 0.7]),
                                ("empty", [], [], [])])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # kept by confidence 0.9, 0.8, 0.6, 0.7 -> risks 0, 0, 1/3, 1/2 at coverage 1/4 .. 1: AURC 5/24
    assert legend == ["m (AURC 0.208, n = 4)", "empty: not defined (no scored unit)"]
    assert aurc([1, 0, 1, 0], [1, 0, 0, 1], [0.9, 0.2, 0.4, 0.7]) == pytest.approx(5 / 24)


@pytest.fixture
def study(tmp_path):
    return make_calibration_study(tmp_path)


def test_calibrated_section_row_and_order(study):
    # given first, the calibrated run is shown right after the run it calibrates
    html = render_report([study["cal"], study["tuned"], study["general"]], n_boot=0)
    names = re.findall(r'<li><a href="#run-\d+-[^"]+">([^<]+)</a>', html)
    assert names == ["vlm-tuned", "vlm-general", "vlm-cal"]
    assert ('<span class="badge calibrated">calibrated</span> <span class="badge general">general</span> '
            'vlm-cal<span class="ci">calibrates vlm-general</span>') in html
    # its summary row: the test cohort from metrics.json, in the row group of vlm-general (dashed line)
    row = re.search(r'<tr class="calibrated-of">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td>([^<]*)", row)
    metrics = json.loads((study["cal"] / "metrics.json").read_text())
    assert metrics["ece"] == pytest.approx(0.25) and metrics["brier"] == pytest.approx(0.18125)
    # n, then AUC and MCC (leading), the parsed share (empty: no VLM answers), balanced accuracy,
    # sensitivity, specificity, accuracy, precision, F1, ECE, Brier, counts
    assert re.findall(r'<td class="lead-metric">([^<]*)', row) == ["0.867", "0.775"]
    assert '<td class="parsed"></td>' in row
    assert cells == ["8", "0.900", "0.800", "1.000", "0.875", "1.000", "0.889", "0.250", "0.181", "4/0/3/1"]
    assert '<td class="l">test</td>' in row
    section = _run_section(html, "vlm-cal")
    for fact in ("<th>method</th><td>none (scores as they were; threshold only)</td>",
                 "<th>threshold</th><td>0.730: HGG when the calibrated score is at least this</td>",
                 "<th>threshold rule</th><td>Youden (max sensitivity + specificity - 1 on FIT)</td>",
                 "<th>fitted on</th><td>6 validation patients (answered and scored)</td>",
                 f"<th>FIT (calibration fitted on)</th><td>{study['fit'] / 'predictions.csv'} (val rows)",
                 f"<th>calibrates</th><td>vlm-general (vlm run, {study['general']})</td>"):
        assert fact in section, fact
    assert "Calibration on the 6 FIT units (validation cohort)" in section
    # confusion matrix, reliability diagram, risk-coverage curve
    assert section.count('src="data:image/png;base64,') == 3
    assert "Reliability diagram of vlm-cal on the test cohort: 8 scored patients" in section
    assert "Problems" not in section


def test_reliability_diagram_uses_the_test_cohort_rows(study, monkeypatch, tmp_path):
    # a CNN run with train/val/test rows: its diagram shows only the test rows, as the paired tests use
    cnn = make_cnn_run(tmp_path)
    seen = {}
    real = CF.reliability_figure

    def spy(labels, scores, **kw):
        seen[kw["title"].split(":")[0]] = (list(labels), list(scores))
        return real(labels, scores, **kw)

    monkeypatch.setattr(CF, "reliability_figure", spy)
    render_report([cnn, study["general"], study["cal"]], n_boot=0)
    preds = pd.read_csv(cnn / "predictions.csv")
    test = preds[preds["cohort"] == "test"]
    assert seen["cnn-small3d"] == (test["label"].tolist(), test["score"].tolist())
    assert seen["vlm-cal"] == (CAL_LABELS, CAL_SCORES)  # method none: the scores as they were
    hand = np.bincount(np.minimum((np.array(test["score"]) * 10).astype(int), 9), minlength=10).tolist()
    assert _counts(real(*seen["cnn-small3d"])) == hand


def test_key_comparisons_with_paired_tests(study):
    html = render_report([study["general"], study["tuned"], study["cal"]], n_boot=0)
    assert _key_rows(html) == [
        ("fine-tuned VLM vs general VLM", "vlm-tuned", "vlm-general"),
        ("general VLM + calibrated threshold vs general VLM", "vlm-cal", "vlm-general"),
        ("general VLM + calibrated threshold vs fine-tuned VLM", "vlm-cal", "vlm-tuned"),
    ]
    runs = [load_run(study[k]) for k in ("general", "tuned", "cal")]
    pairs = {(p["a"], p["b"]): p for p in paired_tests(runs)}
    p = pairs["vlm-cal", "vlm-general"]
    # the threshold fixes P6-P8 (LGG) and loses P5 (HGG at 0.60): b = 3, c = 1
    assert (p["mcnemar_b"], p["mcnemar_c"], p["accuracy_a"], p["accuracy_b"]) == (3, 1, 0.875, 0.625)
    ref = compare_predictions(pd.read_csv(study["cal"] / "predictions.csv"),
                              pd.read_csv(study["general"] / "predictions.csv"))
    assert p["mcnemar_p"] == pytest.approx(ref["mcnemar_p"])
    assert p["delong_p"] == pytest.approx(ref["delong_p"])
    # same scores (method none): the AUCs are equal, the DeLong difference is 0
    assert p["auc_diff"] == pytest.approx(0.0)
    row = re.search(r'vlm-cal</td><td class="l">vlm-general</td>(.*?)</tr>', html, re.S).group(1)
    assert "<td>3 / 1</td>" in row and f"<td>{p['fmt']['mcnemar_p']}</td>" in row
    assert (pairs["vlm-cal", "vlm-tuned"]["mcnemar_b"], pairs["vlm-cal", "vlm-tuned"]["mcnemar_c"]) == (1, 1)


def test_calibrated_arm_against_another_general_vlm_is_not_key(study, tmp_path):
    other = write_scored_run(tmp_path, "vlm-other", "test", CAL_LABELS, [1] * 8, CAL_SCORES)
    html = render_report([other, study["general"], study["cal"]], n_boot=0)
    assert _key_rows(html) == [
        ("general VLM + calibrated threshold vs general VLM", "vlm-cal", "vlm-general")]
    other_pairs = html[html.index("Other pairs"):]
    assert "general VLM + calibrated threshold vs general VLM</td><td class=\"l\">vlm-cal</td>" \
           "<td class=\"l\">vlm-other</td>" in other_pairs


def test_calibrated_cnn_sits_beside_its_cnn_and_is_compared_with_it(tmp_path):
    from medvlm.calibrate import calibrate

    cnn = make_cnn_run(tmp_path)
    calibrate(cnn, cnn, tmp_path / "cnn-cal", method="temperature", threshold="balanced", apply_cohort="test")
    rows = summary_rows(load_run(tmp_path / "cnn-cal"), n_boot=0)
    assert [r["subset"] for r in rows] == ["test"] and rows[0]["role"] == "cnn"
    html = render_report([tmp_path / "cnn-cal", cnn], n_boot=0)
    assert _key_rows(html) == [("CNN + calibrated threshold vs CNN", "cnn-cal", "cnn-small3d")]
    assert "<th>method</th><td>temperature scaling</td>" in html and "<th>parameters</th><td>T = " in html


@pytest.mark.filterwarnings("ignore::medvlm.metrics.MetricWarning")  # no LGG left: specificity undefined
def test_abstentions_show_coverage_in_the_n_cell(study, tmp_path):
    from medvlm.calibrate import calibrate

    # confidences after the 0.73 threshold: P1-P4 0.95 0.9 0.85 0.8, P5 0.4, P6 0.3, P7 0.35, P8 0.45: below
    # 0.5, P5-P8 become abstentions; 4 answered (TP 4), coverage 4/8
    calibrate(study["fit"], study["general"], tmp_path / "cal-abstain", method="none", threshold="youden",
              abstain_below=0.5)
    html = render_report([study["general"], tmp_path / "cal-abstain"], n_boot=0)
    assert '<td>4<span class="ci">+4 abstained, coverage 0.50</span></td>' in html
    assert "<td>4/0/0/0</td>" in html
    assert "<th>abstains below confidence</th><td>0.500</td>" in html


def test_vanished_fit_and_apply_is_a_problem_of_the_run(study, tmp_path):
    shutil.rmtree(study["general"])
    shutil.rmtree(study["fit"])
    (study["cal"] / "calibration.json").unlink()
    html = render_report([study["tuned"], study["cal"]], n_boot=0)
    section = _run_section(html, "vlm-cal")
    assert "<strong>Problems</strong>" in section
    assert f"APPLY {study['general'] / 'predictions.csv'} is gone" in section
    assert f"FIT {study['fit'] / 'predictions.csv'} is gone" in section
    assert "calibration.json is missing" in section
    assert "<th>calibrates</th><td>unknown (APPLY&#39;s run is gone)</td>" in section
    # still a row of its own (metrics.json), still compared (its own predictions.csv), role unknown
    assert "<td>4/0/3/1</td>" in html
    assert ("fine-tuned VLM vs calibrated run", "vlm-tuned", "vlm-cal") not in _key_rows(html)
    assert ('fine-tuned VLM vs calibrated run</td><td class="l">vlm-tuned</td><td class="l">vlm-cal</td>'
            "<td>8</td>" in html)


def test_calibrated_run_without_run_json_is_inferred(study):
    (study["cal"] / "run.json").unlink()
    run = load_run(study["cal"])
    assert run.kind == "calibrated" and "kind inferred" in run.problems[0]
    html = render_report([study["cal"]], n_boot=0)
    assert "run.json names no APPLY predictions" in html and "<td>4/0/3/1</td>" in html


def test_source_paths_are_escaped(tmp_path):
    study = make_calibration_study(tmp_path, general=XSS)
    html = render_report([study["general"], study["cal"]], n_boot=0)
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "calibrates &lt;img src=x onerror=alert(1)&gt;" in html
