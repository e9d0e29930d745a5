"""The VLM arm on a 2D image task, end to end on the synthetic cxr cohort with the mock backend:
synth --task cxr -> prepare --task cxr.yaml -> split -> eval-vlm, consistency, report."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvlm.cli import invoke


@pytest.fixture(scope="module")
def cxr_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    assert invoke(["synth", str(root / "data"), "--task", "cxr", "--patients", "24", "--size", "small",
                   "--seed", "5"]) == 0
    work = root / "work"
    assert invoke(["prepare", str(root / "data"), "--out", str(work), "--task",
                   str(root / "data" / "cxr.yaml")]) == 0
    assert invoke(["split", str(work), "--folds", "3", "--test-fraction", "0.3"]) == 0
    return root, work


def test_eval_vlm_asks_once_per_image(cxr_work, capsys):
    root, work = cxr_work
    out = root / "runs" / "always1"
    assert invoke(["eval-vlm", str(work), "--out", str(out), "--backend", "mock", "--model", "always:1",
                   "--bootstrap", "20"]) == 0
    split = json.loads((work / "splits.json").read_text())
    manifest = pd.read_csv(work / "manifest.csv", dtype=str).set_index("id")
    preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str, "image_id": str})
    assert list(preds.columns) == ["patient_id", "image_id", "cohort", "label", "pred", "score"]
    assert sorted(preds["image_id"]) == sorted(split["test"])  # one row per test image, no orientations
    assert list(preds["patient_id"]) == [manifest.loc[i, "patient_id"] for i in preds["image_id"]]
    assert list(preds["label"]) == [int(manifest.loc[i, "label"]) for i in preds["image_id"]]
    assert (preds["pred"] == 1).all()
    calls = pd.read_csv(out / "slices.csv", dtype={"patient_id": str, "image_id": str})
    assert list(calls.columns[:3]) == ["patient_id", "image_id", "repeat"] and len(calls) == len(preds)
    metrics = json.loads((out / "metrics.json").read_text())
    combined = metrics["orientations"]["combined"]
    assert list(metrics["orientations"]) == ["combined"]
    assert metrics["unit"] == "image" and metrics["n_units"] == len(preds) == metrics["n_calls"]
    assert combined["accuracy"] == pytest.approx(preds["label"].mean())  # always "lesion": the lesion share
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["task"]["name"] == "cxr" and run["config"]["prompt_name"].endswith("prompts/cxr.txt")


def test_the_image_shown_is_the_prepared_image(cxr_work):
    from medvlm.data.images import image_png

    _, work = cxr_work
    image_id = json.loads((work / "splits.json").read_text())["test"][0]
    shown = np.asarray(Image.open(io.BytesIO(image_png(work, image_id))))
    prepared = np.load(work / "images" / f"{image_id}.npy")
    expected = prepared if prepared.dtype == np.uint8 else np.floor(prepared * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(shown, expected)


def test_cached_rerun_and_controls(cxr_work):
    root, work = cxr_work
    out = root / "runs" / "hash"
    argv = ["eval-vlm", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
            "--bootstrap", "0"]
    assert invoke(argv) == 0
    first = (out / "predictions.csv").read_text()
    assert invoke(argv) == 0
    assert (out / "predictions.csv").read_text() == first
    assert json.loads((out / "metrics.json").read_text())["n_sent"] == 0
    blank = root / "runs" / "blank"
    assert invoke([*argv[:3], str(blank), *argv[4:], "--image", "blank"]) == 0
    calls = pd.read_csv(blank / "slices.csv")
    assert calls["choice"].nunique() == 1  # every blank image of one size: the same bytes, the same answer


@pytest.mark.parametrize("option, message", [
    (["--artifact", "motion:0.5"], "MRI artifacts apply to volumes"),
    (["--image", "tumour-masked"], "--image tumour-masked needs a tumour mask"),
    (["--slices", "all"], "--slices all: cxr is an image task (one prediction per 2D image): its images "
                          "have no slices, orientations or modalities to choose; leave --slices out"),
    (["--orientations", "axial"], "--orientations axial: cxr is an image task"),
    (["--shots", "1000"], "--shots 1000: needs 500 example(s) of each class, but the training cohort of "
                          "fold 0 has only"),
])
def test_image_task_refuses_volume_options(cxr_work, capsys, option, message):
    root, work = cxr_work
    code = invoke(["eval-vlm", str(work), "--out", str(root / "runs" / "x"), "--backend", "mock", "--model",
                   "hash", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (root / "runs" / "x" / "run.json").exists()


def test_consistency_and_report(cxr_work, capsys):
    root, work = cxr_work
    out = root / "runs" / "cons"
    assert invoke(["consistency", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--repeats", "3", "--temperature", "0.7"]) == 0
    rows = pd.read_csv(out / "consistency.csv", dtype={"patient_id": str})
    manifest = pd.read_csv(work / "manifest.csv", dtype=str).set_index("id")
    test_patients = sorted({manifest.loc[i, "patient_id"]
                            for i in json.loads((work / "splits.json").read_text())["test"]})
    assert sorted(set(rows["patient_id"])) == test_patients  # one image per test patient
    assert set(rows["orientation"]) == {"image"} and len(rows) == 3 * len(test_patients)
    html = root / "report.html"
    vlm = root / "runs" / "report-vlm"
    assert invoke(["eval-vlm", str(work), "--out", str(vlm), "--backend", "mock", "--model", "hash",
                   "--bootstrap", "0"]) == 0
    assert invoke(["report", str(vlm), str(out), "--out", str(html)]) == 0
    text = html.read_text()
    assert "no-lesion = 0, lesion = 1" in text
    assert "LGG = 0" not in text and "glioma" not in text  # the study's names nowhere


def test_the_report_cohort_table_counts_images_and_patients(cxr_work):
    from medvlm.study_sections import cohort_rows

    _, work = cxr_work
    manifest = pd.read_csv(work / "manifest.csv", dtype=str)
    split = json.loads((work / "splits.json").read_text())
    rows = {r["cohort"]: r for r in cohort_rows(work)}
    test = manifest[manifest["id"].isin(split["test"])]
    assert rows["test"] == {"cohort": "test", "patients": test["patient_id"].nunique(),
                            "no-lesion (0) images": int((test["label"] == "0").sum()),
                            "lesion (1) images": int((test["label"] == "1").sum())}
    everything = rows["all usable (status ok)"]
    assert everything["patients"] == 24 and everything["lesion (1) images"] + everything[
        "no-lesion (0) images"] == len(manifest)


def test_finetune_examples_are_the_images_eval_vlm_shows(cxr_work):
    from medvlm.data.cohorts import load_cohort
    from medvlm.data.images import image_png
    from medvlm.finetune.data import cohort_examples
    from medvlm.tasks import work_task

    _, work = cxr_work
    task = work_task(work)
    train = load_cohort(work, "train", fold=0)
    examples, problems = cohort_examples(work, train, task=task, orientations=[])
    manifest = pd.read_csv(work / "manifest.csv", dtype=str).set_index("id")
    split_ids = json.loads((work / "splits.json").read_text())["folds"][0]["train"]
    assert problems == [] and len(examples) == len(split_ids)
    by_png = {image_png(work, i): i for i in split_ids}
    for e in examples:
        image_id = by_png[e.png]  # byte for byte an image eval-vlm would send
        assert (e.patient_id, e.label, e.orientation) == (manifest.loc[image_id, "patient_id"],
                                                          int(manifest.loc[image_id, "label"]), "image")
    capped, _ = cohort_examples(work, train, task=task, orientations=[], max_slices_per_patient=1)
    assert len(capped) == len(train) and len({e.patient_id for e in capped}) == len(train)


def test_consistency_limit_takes_the_first_patients_of_the_cohort(cxr_work):
    """`consistency --limit N` on an image task asks about the first N test patients only (it was
    ignored there: every patient of the cohort was asked)."""
    root, work = cxr_work
    out = root / "runs" / "cons-limit"
    assert invoke(["consistency", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--repeats", "2", "--temperature", "0.7", "--limit", "2"]) == 0
    rows = pd.read_csv(out / "consistency.csv", dtype={"patient_id": str})
    manifest = pd.read_csv(work / "manifest.csv", dtype=str).set_index("id")
    order = list(dict.fromkeys(manifest.loc[i, "patient_id"]
                               for i in json.loads((work / "splits.json").read_text())["test"]))
    assert list(dict.fromkeys(rows["patient_id"])) == order[:2]
    assert len(rows) == 2 * 2
