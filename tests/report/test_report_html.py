"""medvlm.report.html and `medvlm report`: sections, embedded figures, escaping, robustness, CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
from report_runs import make_cnn_run, make_vlm_run

from medvlm.cli import main
from medvlm.errors import DataError
from medvlm.metrics import binary_metrics, read_predictions
from medvlm.report.html import Section, build_report, html_table, load_run, render_report
from medvlm.stats import compare_predictions


@pytest.fixture
def report(runs, tmp_path):
    out = build_report(
        list(runs.values()),
        tmp_path / "report.html",
        title="Study <one>",
        n_boot=100,
        extra_sections=[
            Section("Plain-language summary", text="The VLM <b>said</b> HGG.\n\nP2", position="start"),
            {"title": "Limitations", "html": "<p class='mine'>trusted</p>"},
        ],
    )
    return out.read_text()


def test_sections_and_figures(report, runs):
    for anchor in ("summary", "paired-tests", "figures", "runs", "plain-language-summary", "limitations"):
        assert f'id="{anchor}"' in report
    assert report.index('id="plain-language-summary"') < report.index('id="summary"')
    assert report.index('id="limitations"') > report.index('id="runs"')
    for name in ("cnn-small3d", "vlm-tiny", "consistency", "lora"):
        assert f">{name}</a>" in report
    # ROC and risk-coverage overviews, CNN learning curve + confusion + reliability + risk-coverage, VLM
    # confusion + reliability + risk-coverage + 3 vote plots + ROC per orientation, consistency histogram,
    # fine-tune loss curve
    assert report.count('src="data:image/png;base64,') == 15
    assert "<title>Study &lt;one&gt;</title>" in report


def test_self_contained_and_escaped(report):
    assert "<script" not in report.lower()
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in report  # raw answers and the config
    assert "The VLM &lt;b&gt;said&lt;/b&gt; HGG." in report and "<p>P2</p>" in report
    assert "<p class='mine'>trusted</p>" in report
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report)
    assert "<link" not in report and "@import" not in report and "url(" not in report


def test_summary_values_match_run_files(report, runs):
    preds = read_predictions(runs["cnn"] / "predictions.csv")
    test = preds[preds["cohort"] == "test"]
    m = binary_metrics(test["label"], test["pred"], test["score"])
    assert f"{m['tp']}/{m['fp']}/{m['tn']}/{m['fn']}" in report
    for o in ("axial", "coronal", "sagittal", "combined"):
        assert f'<td class="l">{o}</td>' in report
    # the VLM facts: calls, unparsed count and rate from metrics.json
    vm = json.loads((runs["vlm"] / "metrics.json").read_text())
    assert f"{100 * vm['n_unparsed'] / vm['n_calls']:.1f}%" in report
    # paired tests between the two classifiers on the test cohort
    res = compare_predictions(test, read_predictions(runs["vlm"] / "predictions.csv"))
    assert f"<td>{res['mcnemar_b']} / {res['mcnemar_c']}</td>" in report
    assert "McNemar" in report and "DeLong" in report


def test_cnn_without_metrics_json_computes_with_ci(tmp_path):
    run = make_cnn_run(tmp_path)
    (run / "metrics.json").unlink()
    html = render_report([run], n_boot=50)
    assert '<td class="l">test</td>' in html and '<span class="ci">' in html
    assert "Fewer than two classifier runs" in html


def test_broken_file_is_reported_not_fatal(tmp_path):
    a, b = make_cnn_run(tmp_path / "a"), make_vlm_run(tmp_path / "b")
    df = pd.read_csv(b / "predictions.csv")
    df.loc[2, "label"] = 5
    df.to_csv(b / "predictions.csv", index=False)
    html = render_report([a, b], n_boot=0)
    assert "Problems" in html and "row 3, column &#39;label&#39;" in html
    assert "not compared:" in html


def test_run_without_run_json_and_duplicate_names(tmp_path):
    a = make_vlm_run(tmp_path / "x", name="same")
    b = make_vlm_run(tmp_path / "y", name="same")
    (b / "run.json").unlink()
    data = load_run(b)
    assert data.kind == "vlm" and "kind inferred" in data.problems[0]
    html = render_report([a, b], n_boot=0)
    assert "same (2)" in html


def test_fold_ensemble_for_paired_tests(tmp_path):
    run = make_cnn_run(tmp_path)
    df = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    two = pd.concat([df.assign(fold=0), df.assign(fold=1, score=1 - df["score"], pred=1 - df["pred"])])
    two.to_csv(run / "predictions.csv", index=False)
    from medvlm.report.html import test_cohort_predictions

    data = load_run(run)
    tp = test_cohort_predictions(data)
    assert len(tp) == (df["cohort"] == "test").sum() and set(tp["score"].round(6)) == {0.5}
    assert "ensemble of the 2 folds" in data.notes[0]


def test_bad_run_folders(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="medvlm run folder"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")


def test_every_run_kind_has_a_section_renderer():
    from medvlm.report.sections import RUN_SECTIONS
    from medvlm.runinfo import RUN_KINDS

    assert sorted(RUN_SECTIONS) == sorted(RUN_KINDS)
    assert all(callable(RUN_SECTIONS.get(kind)) for kind in RUN_KINDS)


def test_html_table_escapes():
    html = str(html_table([{"a": "<i>x</i>", "b": 0.12345}], caption="c<d"))
    assert "&lt;i&gt;x&lt;/i&gt;" in html and "0.123" in html and "c&lt;d" in html


def _cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr()


def test_cli_report(runs, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    code, cap = _cli(
        ["report", str(runs["cnn"]), str(runs["vlm"]), "--out", str(out), "--bootstrap", "50"], capsys
    )
    assert code == 0 and cap.out.strip() == f"wrote {out}"
    html = out.read_text()
    assert "<title>medvlm report</title>" in html  # the default --title
    assert ">cnn-small3d</a>" in html and ">vlm-tiny</a>" in html and ">lora</a>" not in html  # those given
    # the two runs' test-cohort numbers and their paired test, as the library computes them
    cnn = read_predictions(runs["cnn"] / "predictions.csv")
    test = cnn[cnn["cohort"] == "test"]
    m = binary_metrics(test["label"], test["pred"], test["score"])
    assert f"{m['tp']}/{m['fp']}/{m['tn']}/{m['fn']}" in html
    res = compare_predictions(test, read_predictions(runs["vlm"] / "predictions.csv"))
    assert f"<td>{res['mcnemar_b']} / {res['mcnemar_c']}</td>" in html
    # ROC overview, CNN learning curve + confusion, VLM confusion + 3 vote plots + ROC per orientation (8);
    # a reliability diagram and a risk-coverage curve per scored run (2 x 2) and the risk-coverage overview
    assert html.count('src="data:image/png;base64,') == 8 + 2 * 2 + 1
    argv = ["report", str(runs["cnn"]), "--out", str(out), "--title", "Mine <b>", "--bootstrap", "0"]
    code, cap = _cli(argv, capsys)
    assert code == 0 and "<title>Mine &lt;b&gt;</title>" in out.read_text()  # overwritten, title escaped
    code, cap = _cli(["report", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and cap.err.startswith("medvlm: error: ") and "nope" in cap.err


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on this machine")
    page = tmp_path / "page.html"
    page.write_text(report)
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="paired-tests"' in dom.stdout and "&lt;script&gt;" in dom.stdout
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*flags, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # something was drawn: text and figures, not a blank page


def test_cross_validation_mean_and_sd_share_the_cell_layout(tmp_path):
    run = make_cnn_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["cv"] = {"accuracy": {"mean": 0.9, "std": 0.1}, "ece": {"mean": 0.125, "std": 0.025}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = render_report([run], n_boot=0)
    row = html[html.index('<td class="l">cross-validation</td>'):]
    row = row[:row.index("</tr>")]
    cells = re.findall(r"<td(?: class=\"[a-z-]+\")?>([^<]*)(?:<span class=\"ci\">([^<]*)</span>)?</td>", row)
    # subset, n, AUC, MCC, parsed, balanced accuracy, sensitivity, specificity, accuracy, precision, F1, ECE,
    # Brier, counts: mean above, ± SD below (no value: an en dash)
    assert cells[8] == ("0.900", "± 0.100") and cells[11] == ("0.125", "± 0.025") and cells[12] == ("–", "")
    assert cells[2] == ("–", "") and cells[4] == ("", "")  # AUC without a mean; no parsed share for a CNN
