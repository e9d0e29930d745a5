"""`medvlm report` on the README's own path (prepare -> split -> train-cnn -> eval-vlm -> report): the study
sections from the work folder each run names, several or vanished work folders, the summary table that
leads with the answer (and fits at 1400 px in chromium), and the honest edges on few patients."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.report.format import fmt
from medvlm.report.html import render_report
from medvlm.runinfo import write_run_info

SHAPE = ["24", "32", "32"]


def _vlm(work: Path, out: Path) -> None:
    assert invoke(["eval-vlm", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--bootstrap", "0", "--no-progress"]) == 0


@pytest.fixture(scope="module")
def readme(synth_dir, tmp_path_factory) -> dict[str, Path]:
    """The README's "Real data" commands on the 12-patient synthetic cohort (mock VLM, 1 CNN epoch)."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    assert invoke(["prepare", str(synth_dir), "--out", str(work), "--shape", *SHAPE]) == 0
    assert invoke(["split", str(work), "--test-fraction", "0.25", "--folds", "2"]) == 0
    assert invoke(["train-cnn", str(work), "--out", str(root / "runs" / "cnn"), "--fold", "all", "--epochs",
                   "1", "--batch-size", "4", "--workers", "0", "--bootstrap", "0", "--no-progress",
                   "--device", "cpu"]) == 0
    _vlm(work, root / "runs" / "vlm")
    report = root / "report.html"
    assert invoke(["report", str(root / "runs" / "cnn"), str(root / "runs" / "vlm"), "--out", str(report),
                   "--bootstrap", "100"]) == 0
    return {"root": root, "work": work, "cnn": root / "runs" / "cnn", "vlm": root / "runs" / "vlm",
            "report": report, "data": synth_dir}


def _section(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    return html[start:html.index("</section>", start)]


def _test_counts(work: Path) -> tuple[int, int]:
    manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str})
    test = set(json.loads((work / "splits.json").read_text())["test"])
    labels = manifest[manifest["patient_id"].isin(test)]["label"]
    return int((labels == 0).sum()), int((labels == 1).sum())


def test_readme_path_report_holds_the_study_sections(readme):
    html = readme["report"].read_text()
    for anchor in ("cohorts", "plain-summary", "limitations", "reproducibility", "claim"):
        assert f'id="{anchor}"' in html, anchor
    assert 'id="work-folders"' not in html  # one work folder: nothing to warn about
    assert html.index('id="cohorts"') < html.index('id="summary"') < html.index('id="limitations"')
    n_lgg, n_hgg = _test_counts(readme["work"])
    cohorts = _section(html, "cohorts")
    assert f'<td class="l">test</td><td>{n_lgg + n_hgg}</td><td>{n_hgg}</td><td>{n_lgg}</td>' in cohorts
    assert '<td class="l">all usable (status ok)</td><td>12</td><td>9</td><td>3</td>' in cohorts
    summary = _section(html, "plain-summary")
    assert "cnn: accuracy" in summary and "vlm: accuracy" in summary
    assert f"on {n_lgg + n_hgg} test patients" in summary and "predicting HGG for everyone" in summary
    assert "Single task and data set: BraTS 2020 glioma grading" in _section(html, "limitations")
    claim = _section(html, "claim")
    training = readme["data"] / "MICCAI_BraTS2020_TrainingData"
    assert f"data prepared from {training}" in claim and "resize to 24x32x32" in claim
    assert "12 usable patients; 0 skipped by prepare" in claim and "<td class=\"l\">cnn, vlm</td>" in claim
    repro = _section(html, "reproducibility")
    assert '<td class="l">cnn</td>' in repro and '<td class="l">vlm</td>' in repro


def test_summary_table_leads_with_the_cnn_test_ensemble_and_folds_the_per_fold_rows(readme):
    html = readme["report"].read_text()
    section = _section(html, "summary")
    main, folded = section.split('<details class="folds">')
    rows = re.findall(r"<tr[^>]*>\s*<td class=\"l run\">(.*?)</tr>", main, re.S)
    test = json.loads((readme["cnn"] / "metrics.json").read_text())["test"]
    first = rows[0]
    assert "cnn" in first and '<td class="l">test · ensemble of 2 folds</td>' in first
    assert f"<td>{test['tp']}/{test['fp']}/{test['tn']}/{test['fn']}</td>" in first
    assert re.findall(r'<td class="lead-metric">([^<]*)', first) == [fmt(test["auc"]), fmt(test["mcc"])]
    assert "fold 0 · train" not in main and "fold 1 · val" not in main
    for subset in ("fold 0 · train", "fold 0 · val", "fold 0 · test", "fold 1 · train"):
        assert f'<td class="l">{subset}</td>' in folded, subset
    # every VLM row has its parsed share, from slices.csv (combined first, then each orientation)
    slices = pd.read_csv(readme["vlm"] / "slices.csv", dtype={"orientation": str})
    vlm_rows = [r for r in rows if "badge vlm" in r]
    subsets = [re.search(r'<td class="l">([a-z]+)</td>', r).group(1) for r in vlm_rows]
    assert subsets == ["combined", "axial", "coronal", "sagittal"]
    for subset, row in zip(subsets, vlm_rows, strict=True):
        part = slices if subset == "combined" else slices[slices["orientation"] == subset]
        assert f'<td class="parsed">{100 * part["choice"].notna().mean():.0f}%</td>' in row
    assert all('<td class="parsed"></td>' in r for r in rows if "badge vlm" not in r)


def test_few_patients_warning_and_no_highlight_on_too_few(readme):
    html = readme["report"].read_text()
    n_lgg, n_hgg = _test_counts(readme["work"])
    lgg = f"{n_lgg} LGG patient{'s' if n_lgg != 1 else ''}"
    assert ("<strong>Few patients</strong><ul><li>test cohort of cnn, vlm: only "
            f"{lgg} and {n_hgg} HGG patients (fewer than 10 in a class)") in html
    paired = _section(html, "paired-tests")
    assert 'too few to test<span class="ci">b + c = ' in paired and 'class="sig"' not in html


def _two_runs(root: Path, discordant: int) -> list[Path]:
    """Two CNN runs on 24 test patients (12 per class): A right on all, B wrong on ``discordant`` of them."""
    labels = [0] * 12 + [1] * 12
    ids = [f"P{i:02d}" for i in range(24)]
    runs = []
    for name, wrong in (("a", 0), ("b", discordant)):
        run = root / name
        run.mkdir(parents=True)
        pred = [1 - y if i < wrong else y for i, y in enumerate(labels)]
        pd.DataFrame({"patient_id": ids, "cohort": "test", "label": labels, "pred": pred}).to_csv(
            run / "predictions.csv", index=False)
        write_run_info(run, kind="cnn", config={"model": "small3d"})
        runs.append(run)
    return runs


def test_mcnemar_highlight_needs_enough_discordant_patients(tmp_path):
    few = render_report(_two_runs(tmp_path / "few", 8), n_boot=0)  # exact p = 0.008, but b + c = 8
    assert ('too few to test<span class="ci">b + c = 8 discordant, fewer than 10; p = 0.008</span>' in few
            and 'class="sig"' not in few)
    many = render_report(_two_runs(tmp_path / "many", 12), n_boot=0)  # b + c = 12, p < 0.001
    assert re.search(r'<td class="sig"[^>]*>&lt; 0.001</td>', many) and "b + c = " not in many


def test_runs_of_two_work_folders_are_never_mixed(readme, tmp_path):
    work2 = tmp_path / "work2"
    shutil.copytree(readme["work"], work2)
    _vlm(work2, tmp_path / "vlm2")
    out = tmp_path / "r.html"
    assert invoke(["report", str(readme["cnn"]), str(readme["vlm"]), str(tmp_path / "vlm2"), "--out",
                   str(out), "--bootstrap", "0"]) == 0
    html = out.read_text()
    warning = _section(html, "work-folders")
    assert "these runs were made from 2 different work folders" in warning
    assert f"work folder 1: {readme['work']} (runs cnn, vlm)" in warning
    assert f"work folder 2: {work2} (runs vlm2)" in warning
    for anchor in ("cohorts-1", "cohorts-2", "plain-summary-1", "plain-summary-2", "claim-1", "claim-2"):
        assert f'id="{anchor}"' in html, anchor
    assert "vlm2: accuracy" in _section(html, "plain-summary-2")
    assert "vlm2" not in _section(html, "plain-summary-1")
    paired = _section(html, "paired-tests")
    assert re.search(r"<td class=\"l\">(cnn|vlm)</td><td class=\"l\">vlm2</td><td class=\"wrap-text\" "
                     r"colspan=\"11\">not compared: made from different work folders", paired)
    assert re.search(r"<td class=\"l\">cnn</td><td class=\"l\">vlm</td><td>3</td>", paired)  # same folder


def test_a_run_whose_work_folder_is_gone_is_a_note(readme, tmp_path):
    work3 = tmp_path / "work3"
    shutil.copytree(readme["work"], work3)
    _vlm(work3, tmp_path / "vlm3")
    shutil.rmtree(work3)
    out = tmp_path / "r.html"
    assert invoke(["report", str(readme["cnn"]), str(tmp_path / "vlm3"), "--out", str(out),
                   "--bootstrap", "0"]) == 0
    html = out.read_text()
    note = f"vlm3: its work folder {work3} is not found here (moved or deleted)"
    assert note in _section(html, "work-folders")
    assert 'id="cohorts"' in html and 'id="claim"' in html  # the CNN's work folder is still there
    assert "vlm3: accuracy" in _section(html, "plain-summary-none")
    assert "vlm3" in _section(html, "summary")  # its results still render


def test_no_interval_on_the_page_leaves_the_possible_range(tmp_path):
    from report_runs import make_cnn_run

    from medvlm.report.summary import _cell

    # a cell clips what it is given (the last guard: a bootstrap quantile a rounding error past 1)
    assert _cell("auc", 0.9, [0.7, 1.0000000000000002])["ci"] == "0.70 – 1.00"
    assert _cell("mcc", 0.1, [-1.0000000000000002, 0.6])["ci"] == "−1.00 – 0.60"
    assert _cell("auc_diff", 0.1, [-1.3, 1.2])["ci"] == "−1.00 – 1.00"
    # an impossible interval in a metrics.json is shown blank and named as a problem of the run
    run = make_cnn_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["folds"]["0"]["test"].update(auc=0.9, auc_ci=[0.7, 1.3], mcc=0.1, mcc_ci=[-1.4, 0.6])
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = render_report([run], n_boot=0)
    assert "1.30" not in html and "1.40" not in html
    assert "folds.0.test.auc_ci = [0.7, 1.3] is not a proportion in [0, 1]: shown blank" in html


MEASURE = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("table.summary").forEach(function (t) {
    var box = t.parentElement, right = box.getBoundingClientRect().right, heads = {};
    t.querySelectorAll("thead th").forEach(function (th) {
      heads[th.textContent.trim()] = th.getBoundingClientRect().right; });
    out.push({scroll: box.scrollWidth, client: box.clientWidth, right: right, heads: heads});
  });
  var pre = document.createElement("pre"); pre.id = "measure"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.slow
def test_summary_table_fits_at_1400_px_in_chromium(readme, runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on this machine")
    pages = {"readme": readme["report"].read_text(),
             "every kind": render_report(list(runs.values()), n_boot=100)}
    for what, html in pages.items():
        page = tmp_path / f"{what.replace(' ', '-')}.html"
        page.write_text(html.replace("</body>", MEASURE + "</body>"))
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                              "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom",
                              page.as_uri()], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        found = re.search(r'<pre id="measure">(.*?)</pre>', dom.stdout, re.S)
        assert found, what
        tables = json.loads(found.group(1).replace("&quot;", '"'))
        assert tables, what
        for t in tables[:1]:  # the table itself (the folded one is closed: not laid out)
            assert t["scroll"] <= t["client"], (what, t)  # no horizontal scrollbar at all
            for head in ("AUC", "MCC"):
                assert t["heads"][head] <= t["right"] + 0.5, (what, head, t)
