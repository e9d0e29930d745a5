"""``brats-tumour`` end to end on the synthetic cohort, through the generic layers only: prepare (whole
brain + labelled slices), split, eval-vlm at the slice unit, consistency, the 2D CNN, fine-tuning and
the report. Its metrics resample patients, never slices one by one."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.tasks import get_task

TASK = get_task("brats-tumour")


@pytest.fixture(scope="module")
def tumour_work(synth_dir, tmp_path_factory):
    from medvlm.data.split import make_split
    from medvlm.tasks import prepare_work

    work = tmp_path_factory.mktemp("tumour") / "work"
    prepare_work(synth_dir, work, "brats-tumour", shape=(24, 32, 32), progress=False)
    make_split(work, test_fraction=0.25, folds=2, seed=0)
    return work


def test_prepare_keeps_the_whole_brain_and_labels_slices(tumour_work, synth_dir, tmp_path):
    from medvlm.data.brats_tumour import SLIVER_FRACTION
    from medvlm.data.cohorts import read_manifest

    manifest = read_manifest(tumour_work, ok_only=True)
    row = manifest.iloc[0]
    for axis in "xyz":  # the crop is the brain's box, wider than the tumour's
        assert int(row[f"crop_{axis}_min"]) <= int(row[f"tumour_{axis}_min"])
        assert int(row[f"crop_{axis}_max"]) >= int(row[f"tumour_{axis}_max"])
    assert json.loads((tumour_work / "task.json").read_text())["name"] == "brats-tumour"
    units = pd.read_csv(tumour_work / "units.csv", dtype={"patient_id": str})
    assert list(units.columns) == ["patient_id", "orientation", "slice_index", "label", "tumour_fraction"]
    assert set(units["orientation"]) == {"axial", "coronal", "sagittal"}
    assert (units.loc[units["label"] == 1, "tumour_fraction"] >= SLIVER_FRACTION).all()
    assert (units.loc[units["label"] == 0, "tumour_fraction"] == 0).all()
    per = units.groupby(["patient_id", "orientation", "label"]).size().unstack(fill_value=0)
    assert (per[0] <= per[1]).all() and per[1].min() > 0  # as many negatives as positives, at most
    # tumour slices of one patient lie inside the manifest's tumour extent
    first = units[(units["patient_id"] == row["patient_id"]) & (units["orientation"] == "axial")]
    pos = first[first["label"] == 1]["slice_index"]
    assert pos.min() >= int(row["tumour_z_min"]) and pos.max() <= int(row["tumour_z_max"])
    # seeded: preparing again gives the same units, byte for byte
    from medvlm.tasks import prepare_work

    again = tmp_path / "again"
    prepare_work(synth_dir, again, "brats-tumour", shape=(24, 32, 32), progress=False)
    assert (again / "units.csv").read_bytes() == (tumour_work / "units.csv").read_bytes()


def test_eval_vlm_predicts_one_row_per_slice_with_patient_clustered_cis(tumour_work, tmp_path):
    out = tmp_path / "vlm"
    assert invoke(["eval-vlm", str(tumour_work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--scoring", "logprobs", "--bootstrap", "50", "--no-progress"]) == 0
    preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert list(preds.columns) == ["patient_id", "orientation", "slice_index", "cohort", "label", "pred",
                                   "score"]
    units = pd.read_csv(tumour_work / "units.csv", dtype={"patient_id": str})
    test_ids = json.loads((tumour_work / "splits.json").read_text())["test"]
    expected = units[units["patient_id"].isin(test_ids) & (units["orientation"] == "axial")]
    assert len(preds) == len(expected) and set(preds["orientation"]) == {"axial"}
    assert preds["label"].tolist() == expected["label"].tolist()
    calls = pd.read_csv(out / "slices.csv")
    assert [c for c in calls.columns if c.startswith("p_")] == TASK.prob_columns
    assert set(calls["choice"].dropna().astype(int)) <= {0, 1}
    table = pd.read_csv(out / "units.csv")
    assert {*TASK.count_columns, TASK.share_column} <= set(table.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    combined = metrics["orientations"]["combined"]
    assert combined["n"] == len(preds) and combined["n_patients"] == len(test_ids)
    assert metrics["unit"] == "slice" and metrics["n_units"] == len(preds)
    # the clustered bootstrap is what eval-vlm reports: same numbers as `metrics` on the file
    from medvlm.metrics import bootstrap_metrics

    clustered = bootstrap_metrics(preds["label"], preds["pred"], preds["score"], n_boot=50, seed=0,
                                  clusters=preds["patient_id"])
    assert combined["accuracy_ci"] == pytest.approx(clustered["accuracy_ci"])
    run = json.loads((out / "run.json").read_text())["config"]
    assert run["task"]["name"] == "brats-tumour" and run["prompt"] == "tumour"
    assert run["tie_break"] == "tumour"


def test_consistency_counts_the_tasks_own_answers(tumour_work, tmp_path):
    out = tmp_path / "cons"
    assert invoke(["consistency", str(tumour_work), "--out", str(out), "--backend", "mock", "--model", "hash",
                   "--repeats", "3", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["counts"]) == {"0", "1", "unparsed"} and summary["tie_break"] == "tumour"
    labels = [r["label"] for r in summary["per_image"]]
    assert labels.count(0) == labels.count(1) > 0  # one tumour and one tumour-free slice per patient
    csv = pd.read_csv(out / "consistency.csv")
    assert "p_tumour" in csv.columns and "p_hgg" not in csv.columns


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.mark.slow
def test_the_2d_cnn_finetune_and_report_run_on_slices(tumour_work, tmp_path, tiny_base):
    cnn = tmp_path / "cnn"
    assert invoke(["train-cnn", str(tumour_work), "--out", str(cnn), "--epochs", "1", "--batch-size", "16",
                   "--bootstrap", "20", "--no-progress"]) == 0
    run = json.loads((cnn / "run.json").read_text())["config"]
    assert run["model"] == "densenet2d"
    preds = pd.read_csv(cnn / "predictions.csv", dtype={"patient_id": str})
    assert list(preds.columns)[:3] == ["patient_id", "orientation", "slice_index"]
    assert set(preds["cohort"]) == {"train", "val", "test"}
    assert np.isfinite(preds["score"]).all()
    assert invoke(["metrics", str(cnn / "predictions.csv"), "--json"]) == 0

    lora = tmp_path / "lora"
    assert invoke(["finetune", str(tumour_work), "--out", str(lora), "--base-model", str(tiny_base),
                   "--epochs", "1", "--max-slices-per-patient", "1", "--batch-size", "8"]) == 0
    ft = json.loads((lora / "finetune_config.json").read_text())
    assert set(ft["balance"]) >= {"no_tumour", "tumour"}
    assert ft["prompt_name"] == "tumour" and ft["hyperparameters"]["orientations"] == ["axial"]

    vlm = tmp_path / "vlm"
    assert invoke(["eval-vlm", str(tumour_work), "--out", str(vlm), "--backend", "mock", "--model", "hash",
                   "--scoring", "logprobs", "--bootstrap", "0", "--no-progress"]) == 0
    html = tmp_path / "report.html"
    assert invoke(["report", str(cnn), str(vlm), str(lora), "--out", str(html)]) == 0
    page = re.sub(r"data:[^\"']+", "", html.read_text())  # the text, without embedded figures
    assert "labels: no tumour = 0, tumour = 1 (tumour positive)" in page
    assert "HGG" not in page and "LGG" not in page and "glioma" not in page


def test_another_tasks_prompt_slices_or_adapter_are_refused(tumour_work, tmp_path, capsys):
    base = ["eval-vlm", str(tumour_work), "--out", str(tmp_path / "r"), "--backend", "mock", "--model",
            "hash", "--no-progress"]
    assert invoke([*base, "--prompt", "seed"]) == 2
    assert "a built-in prompt of another task" in capsys.readouterr().err
    assert invoke([*base, "--slices", "tumour"]) == 2
    assert "labelled slices" in capsys.readouterr().err
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "finetune_config.json").write_text(json.dumps({"task": "brats-grading"}))
    assert invoke([*base, "--adapter", str(adapter)]) == 2
    assert "fine-tuned for task 'brats-grading'" in capsys.readouterr().err
    assert invoke([*base, "--tie-break", "No Tumour", "--bootstrap", "0"]) == 0  # a class name, any case


def test_the_work_folders_task_is_never_guessed(tumour_work, tmp_path, capsys):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tumour_work, work)
    base = ["eval-vlm", str(work), "--out", str(tmp_path / "r"), "--backend", "mock", "--model", "hash",
            "--no-progress"]
    for record in ('{"name": null}', '{"name": 5}', '{"name": "brats-nonsense"}'):
        (work / "task.json").write_text(record)
        assert invoke(base) == 2
        assert "task.json" in capsys.readouterr().err
    (work / "task.json").unlink()  # a slice-level folder without its record: not silently the study
    assert invoke(base) == 2
    assert "units.csv" in capsys.readouterr().err


def test_compare_says_slices_are_not_independent(tumour_work, tmp_path, capsys):
    runs = []
    for model in ("hash", "always:1"):
        out = tmp_path / model.replace(":", "")
        assert invoke(["eval-vlm", str(tumour_work), "--out", str(out), "--backend", "mock", "--model", model,
                       "--scoring", "logprobs", "--bootstrap", "0", "--no-progress"]) == 0
        runs.append(out / "predictions.csv")
    capsys.readouterr()
    assert invoke(["compare", str(runs[0]), str(runs[1]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "slice" and result["n_patients"] == 3
    assert "optimistic" in result["note"] and result["n"] > result["n_patients"]


def test_fine_tuning_examples_keep_both_classes_per_patient(tumour_work):
    from medvlm.data.cohorts import load_cohort
    from medvlm.finetune.data import cohort_examples

    examples, _ = cohort_examples(tumour_work, load_cohort(tumour_work, "train", fold=0), task=TASK,
                                  orientations=["axial"], max_slices_per_patient=1, selection="all")
    per_patient = {}
    for e in examples:
        per_patient.setdefault(e.patient_id, []).append(e.label)
    units = pd.read_csv(tumour_work / "units.csv", dtype={"patient_id": str})
    axial = units[units["orientation"] == "axial"]
    has_both = {p for p, g in axial.groupby("patient_id") if g["label"].nunique() == 2}
    assert has_both & set(per_patient)
    for pid, labels in per_patient.items():  # one of each class where the patient has both
        assert sorted(labels) == ([0, 1] if pid in has_both else sorted(set(labels)))


def test_negatives_lie_away_from_the_tumour(tumour_work):
    from medvlm.data.brats_tumour import NEGATIVE_MARGIN

    units = pd.read_csv(tumour_work / "units.csv", dtype={"patient_id": str})
    for _, part in units.groupby(["patient_id", "orientation"]):
        pos = part.loc[part["label"] == 1, "slice_index"].to_numpy()
        neg = part.loc[part["label"] == 0, "slice_index"].to_numpy()
        if len(pos) and len(neg):
            assert np.abs(neg[:, None] - pos[None, :]).min() >= NEGATIVE_MARGIN
