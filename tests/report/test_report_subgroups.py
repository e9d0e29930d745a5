"""The report's subgroup tables (source and age band from the work folder's manifest.csv), by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from medvlm.metrics import bootstrap_metrics
from medvlm.report.format import _ci_text
from medvlm.report.html import build_report, load_run
from medvlm.report.subgroups import patient_subgroups, subgroup_rows, subgroups_view
from medvlm.runinfo import write_run_info

# 17 test patients. TCGA: P01-P11 (6 HGG, 5 LGG); CBICA: P12 (one HGG patient); no source: P13-P17 (LGG).
# Ages for the HGG patients only, as in the BraTS 2020 release: P01 65, P02 70, P03 45, P04 50, P05 30,
# P06 61, P12 66; the ten LGG patients have none (age band "unknown": 10 patients, LGG only).
IDS = [f"P{i:02d}" for i in range(1, 18)]
LABELS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
PREDS = [1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.65, 0.1, 0.2, 0.55, 0.3, 0.35, 0.7, 0.2, 0.25, 0.15, 0.3, 0.1]
SOURCES = ["TCGA"] * 11 + ["CBICA"] + [""] * 5
AGES = ["65", "70", "45", "50", "30", "61"] + [""] * 5 + ["66"] + [""] * 5


def make_work(root: Path) -> Path:
    work = root / "work"
    work.mkdir()
    pd.DataFrame({"patient_id": IDS + ["P99"], "grade": "", "label": LABELS + [0], "status": "ok",
                  "source": SOURCES + ["TMC"], "age": AGES + ["80"]}).to_csv(work / "manifest.csv",
                                                                            index=False)
    return work


def make_vlm(root: Path, work: Path | None, name: str = "vlm", cohort: str = "test", ids=IDS, labels=LABELS,
             preds=PREDS, scores=SCORES) -> Path:
    run = root / name
    run.mkdir()
    pd.DataFrame({"patient_id": ids, "cohort": cohort, "label": labels, "pred": preds,
                  "score": scores}).to_csv(run / "predictions.csv", index=False)
    write_run_info(run, kind="vlm", config={"model": "tiny", **({"work": str(work)} if work else {})})
    return run


@pytest.fixture()
def study(tmp_path):
    work = make_work(tmp_path)
    return work, make_vlm(tmp_path, work)


def test_subgroups_from_the_manifest(study):
    work, _ = study
    groups = patient_subgroups(work)
    assert groups.loc["P01"].tolist() == ["TCGA", ">=60"]
    assert groups.loc["P03"].tolist() == ["TCGA", "40-59"]
    assert groups.loc["P05"].tolist() == ["TCGA", "<40"]
    assert groups.loc["P13"].tolist() == ["unknown", "unknown"]


def test_subgroup_numbers_by_hand(study):
    work, path = study
    run = load_run(path)
    source = subgroup_rows(run, patient_subgroups(work), "source", n_boot=200, seed=0)
    rows = {r["subgroup"]: r for r in source}
    assert list(rows) == ["all test patients", "TCGA", "CBICA", "unknown"]
    tcga = rows["TCGA"]
    assert tcga["patients"] == 11 and tcga["classes"] == "5 / 6"
    values = [c["value"] for c in tcga["cells"]]
    # 9 of 11 right; sensitivity 5 of 6 (P05 missed); specificity 4 of 5 (P09 called HGG);
    # AUC: of the 6 x 5 HGG-LGG pairs only P05 (0.4) below P09 (0.55) is ranked wrong -> 29 / 30
    assert values == ["0.818", "0.833", "0.800", "0.967"]
    # the CIs resample the subgroup's patients, exactly as medvlm.metrics.bootstrap_metrics does
    ci = bootstrap_metrics(LABELS[:11], PREDS[:11], SCORES[:11], n_boot=200, seed=0)
    assert [c["ci"] for c in tcga["cells"]] == [_ci_text(ci[f"{k}_ci"])
                                                for k in ("accuracy", "recall", "specificity", "auc")]
    # one patient, or five: too small to read, and no metric at all
    assert rows["CBICA"]["patients"] == 1 and rows["CBICA"]["too_small"] == "1 patient"
    assert "cells" not in rows["CBICA"]
    assert rows["unknown"]["too_small"] == "5 patients" and "cells" not in rows["unknown"]
    every = rows["all test patients"]
    assert every["patients"] == 17 and every["cells"][0]["value"] == f"{15 / 17:.3f}"

    ages = {r["subgroup"]: r for r in subgroup_rows(run, patient_subgroups(work), "age_band", n_boot=0)}
    assert list(ages) == ["all test patients", "<40", "40-59", ">=60", "unknown"]
    assert ages[">=60"]["patients"] == 4 and ages[">=60"]["too_small"] == "4 patients"
    assert ages["unknown"]["patients"] == 10 and ages["unknown"]["too_small"] == "LGG only"


def test_report_shows_subgroups_of_every_classifier_run(study, tmp_path):
    from medvlm.calibrate import calibrate

    work, vlm = study
    fit = make_vlm(tmp_path, work, "vlm-val", cohort="val", ids=["V1", "V2", "V3", "V4"], labels=[1, 1, 0, 0],
                   preds=[1, 1, 1, 0], scores=[0.9, 0.8, 0.6, 0.3])
    calibrate(fit, vlm, tmp_path / "cal", method="none", threshold=0.5)
    cnn = tmp_path / "cnn"
    cnn.mkdir()
    pd.DataFrame({"patient_id": IDS, "cohort": "test", "label": LABELS, "pred": LABELS,
                  "score": [0.8 if y else 0.2 for y in LABELS]}).to_csv(cnn / "predictions.csv", index=False)
    write_run_info(cnn, kind="cnn", config={"work": str(work)})
    lost = make_vlm(tmp_path, None, "no-work")
    runs = [load_run(p) for p in (cnn, vlm, tmp_path / "cal", lost)]
    view = subgroups_view(runs, n_boot=50)
    source = view["tables"][0]
    assert source["by"] == "source"
    assert [r["run"] for r in source["rows"] if r["subgroup"] == "TCGA"] == ["cnn", "vlm", "cal"]
    cal_tcga = next(r for r in source["rows"] if r["run"] == "cal" and r["subgroup"] == "TCGA")
    assert cal_tcga["cells"][0]["value"] == "0.818"  # the calibrated run's subgroups: its APPLY run's work
    assert view["missing"] == [["no-work", "run.json names no work folder (config.work)"]]

    html = build_report([cnn, vlm, tmp_path / "cal", lost], tmp_path / "r.html", n_boot=50).read_text()
    assert 'id="subgroups"' in html and 'href="#subgroups"' in html
    body = html[html.index('id="subgroups"'):]
    body = body[:body.index("</section>")]
    cbica = re.findall(r"<td class=\"l\">CBICA</td>(.*?)</tr>", body, flags=re.S)
    assert len(cbica) == 3  # one row per run, each too small, none with a number
    for row in cbica:
        assert "too small to read (1 patient)" in row
        assert not re.search(r"\d\.\d{3}", row)
    assert "no-work (run.json names no work folder (config.work))" in body


def test_old_manifest_without_subgroup_columns(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    pd.DataFrame({"patient_id": IDS, "label": LABELS, "status": "ok"}).to_csv(work / "manifest.csv",
                                                                             index=False)
    run = load_run(make_vlm(tmp_path, work))
    view = subgroups_view([run])
    assert view["tables"] == []
    assert view["missing"] == [["vlm", f"{work / 'manifest.csv'} has no source, age column (prepared "
                                       "before subgroups were recorded: run prepare again)"]]
    html = build_report([run.path], tmp_path / "r.html", n_boot=0).read_text()
    assert 'id="subgroups"' in html and "run prepare again" in html
    # runs that name no work folder at all (hand-made, or older than config.work): no section
    bare = tmp_path / "bare"
    bare.mkdir()
    (run.path / "predictions.csv").rename(bare / "predictions.csv")
    write_run_info(bare, kind="vlm", config={})
    assert subgroups_view([load_run(bare)]) == {}
