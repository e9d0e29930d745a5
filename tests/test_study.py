"""The whole study in one command: `medvlm run EXPERIMENT.yaml` and `medvlm demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from medvlm.cli import invoke as _exit_code
from medvlm.errors import ConfigError
from medvlm.experiment import demo_config, load_experiment, parse_experiment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY_STUDY = {
    "name": "tiny",
    "out": "out",
    "data": {"synthetic": {"patients": 8, "lgg_fraction": 0.25, "seed": 0, "size": "small"}},
    "prepare": {"shape": [8, 12, 12]},
    "split": {"test_fraction": 0.25, "folds": 2},
    "cnn": [{"name": "cnn", "epochs": 2, "batch_size": 2, "workers": 0, "bootstrap": 50}],
    "vlm": [{"name": "vlm", "model": "tiny", "scoring": "logprobs", "slices": "central:2", "n_boot": 50},
            {"name": "vlm-none", "model": "tiny", "scoring": "logprobs", "slices": "central:2", "n_boot": 50,
             "image": "none"}],
    "consistency": [{"name": "cons-hgg", "model": "tiny", "pick": "hgg", "repeats": 4,
                     "temperatures": [0.6], "top_p": 0.9}],
    "finetune": [{"name": "lora", "base_model": "tiny", "max_steps": 2, "batch_size": 4,
                  "max_slices_per_patient": 1, "slices": "central:2",
                  "evaluate": {"scoring": "logprobs", "slices": "central:2", "n_boot": 50}}],
}


@pytest.mark.slow
def test_run_whole_study_then_rerun_skips_finished_stages(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY))
    assert _exit_code(["run", str(path)]) == 0
    out = tmp_path / "out"
    record = json.loads((out / "experiment.json").read_text())
    names = [s["name"] for s in record["stages"]]
    assert names == ["data", "prepare", "split", "tiny-vlm", "cnn", "vlm", "vlm-none", "lora", "lora-eval",
                     "cons-hgg", "report"]
    assert all(s["status"] == "done" for s in record["stages"])
    for run in ("cnn", "vlm", "lora", "lora-eval", "cons-hgg"):
        assert (out / "runs" / run / "run.json").is_file(), run
    # the fine-tuned model is evaluated exactly like the general one, with its adapter
    general = json.loads((out / "runs" / "vlm" / "run.json").read_text())["config"]
    tuned = json.loads((out / "runs" / "lora-eval" / "run.json").read_text())["config"]
    assert tuned["adapter"] == str(out / "runs" / "lora")
    assert {k: general[k] for k in ("prompt_sha", "slices", "orientations", "modalities", "scoring")} == {
        k: tuned[k] for k in ("prompt_sha", "slices", "orientations", "modalities", "scoring")}
    summary = json.loads((out / "runs" / "cons-hgg" / "summary.json").read_text())
    assert summary["n"] == 4
    html = (out / "report.html").read_text()
    for title in ("Cohorts", "What the numbers say", "Limitations", "Reproducibility", "CLAIM checklist"):
        assert title in html, title
    assert "predicting HGG for everyone" in html
    # the no-image control of vlm, and every classifier run's subgroups (synth records sources and ages)
    assert "Does the model look at the image?" in html and "Answers with no image agree with" in html
    assert "vlm-none (a control of vlm: no image)" in html
    assert "Subgroups of the test cohort" in html and "too small to read" in html
    capsys.readouterr()

    # rerun: every finished stage is reused, nothing is sent to the model again
    assert _exit_code(["run", str(path)]) == 0
    again = json.loads((out / "experiment.json").read_text())
    statuses = {s["name"]: s["status"] for s in again["stages"]}
    assert statuses.pop("report") == "done"
    assert set(statuses.values()) == {"reused"}
    assert json.loads((out / "runs" / "vlm" / "metrics.json").read_text())["n_sent"] > 0


def test_unknown_key_is_rejected_with_did_you_mean(tmp_path):
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["cnn"][0]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'cnn\.0\.epoch'\. Did you mean 'epochs'\?"):
        parse_experiment(bad, source="x.yaml")
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["splt"] = {}
    with pytest.raises(ConfigError, match="Did you mean 'split'"):
        parse_experiment(bad, source="x.yaml")


def test_config_errors_name_the_field():
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["vlm"][0]["scoring"] = "logprob"
    with pytest.raises(ConfigError, match=r"vlm\.0\.scoring"):
        parse_experiment(bad)
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["vlm"].append(dict(bad["vlm"][0]))
    with pytest.raises(ConfigError, match="run names must be unique"):
        parse_experiment(bad)
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["data"] = {}
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        parse_experiment(bad)
    bad = json.loads(json.dumps(TINY_STUDY))
    bad["finetune"][0]["evaluate"] = {"scorng": "logprobs"}
    with pytest.raises(ConfigError, match="finetune.0.evaluate"):
        parse_experiment(bad)


def test_examples_validate_and_demo_yaml_is_the_demo():
    demo, base = load_experiment(EXAMPLES / "demo.yaml")
    assert base == EXAMPLES
    embedded = demo_config()
    assert demo.model_dump(exclude={"out"}) == embedded.model_dump(exclude={"out"})
    real, _ = load_experiment(EXAMPLES / "brats2020.yaml")
    assert real.data.path and real.data.synthetic is None
    assert [r.name for r in real.vlm] and real.finetune[0].method == "qlora"


def test_cli_run_bad_file_exit_2_one_line(tmp_path, capsys):
    assert _exit_code(["run", str(tmp_path / "missing.yaml")]) == 2
    path = tmp_path / "bad.yaml"
    path.write_text("data: {synthetic: {patients: 8}}\ncnn: [{name: c, lr: -1}]\n")
    assert _exit_code(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("medvlm: error: ") for line in err)
    assert "cnn.0.lr" in err[1]
    path.write_text("data: [unclosed\n")
    assert _exit_code(["run", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cli_run_check_lists_stages(tmp_path, capsys):
    assert _exit_code(["run", str(EXAMPLES / "demo.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "vlm-lora-eval" in out and "consistency-lgg" in out


def test_cli_demo_bad_option_exit_2(tmp_path, capsys):
    assert _exit_code(["demo", "--out", str(tmp_path), "--size", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medvlm: error: ") and "size" in err[0]


def _vlm_run(root: Path, name: str, preds: list[int], scores: list[float], adapter: str | None) -> Path:
    run = root / name
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "vlm", "name": name, "config": {"adapter": adapter}}))
    labels = [1, 1, 1, 1, 0, 0]
    rows = ["patient_id,cohort,label,pred,score"] + [
        f"P{i},test,{lab},{p},{s}" for i, (lab, p, s) in enumerate(zip(labels, preds, scores, strict=True))]
    (run / "predictions.csv").write_text("\n".join(rows) + "\n")
    return run


def test_plain_summary_names_the_all_hgg_failure_and_the_fine_tuning_change(tmp_path):
    from medvlm.study_sections import plain_summary

    general = _vlm_run(tmp_path, "general", [1] * 6, [0.9, 0.8, 0.85, 0.7, 0.6, 0.65], None)
    tuned = _vlm_run(tmp_path, "tuned", [1, 1, 1, 0, 0, 1], [0.9, 0.8, 0.85, 0.4, 0.3, 0.6], "/a")
    text = plain_summary([general, tuned])  # general: every HGG score above every LGG one -> AUC 1
    assert "general: accuracy 0.67, sensitivity (HGG) 1.00, specificity (LGG) 0.00, AUC 1.00" in text
    assert "It predicted HGG for 100% of patients and recognised 0 of 2 LGG patients" in text
    assert "the fixed 0.5 threshold, not the ranking, fails" in text
    assert "Fine-tuning (tuned vs general) moved specificity from 0.00 to 0.50" in text
    assert "predicting HGG for everyone scores accuracy 0.67" in text


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\ndata: {synthetic: {patients: 8}}\nvlm:\n  - {name: v, model: tiny, extra_body: &a {k: 1}}\n"
     "  - {name: w, model: tiny, extra_body: *a}\n", "anchors and aliases"),
    ("name: x\ndata: {synthetic: {patients: 8}}\nvlm: []\nvlm: []\n", "line 4: key 'vlm' appears twice"),
])
def test_aliases_and_duplicate_keys_are_refused(tmp_path, capsys, text, message):
    from medvlm.cli import invoke

    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert invoke(["run", str(path), "--check"]) == 2
    assert message in capsys.readouterr().err
    path.write_bytes(b"name: \xff\xfe\n")
    assert invoke(["run", str(path), "--check"]) == 2


CALIBRATED_STUDY = {
    "name": "cal", "out": "out",
    "data": {"synthetic": {"patients": 12, "lgg_fraction": 0.4, "seed": 0, "size": "small"}},
    "prepare": {"shape": [8, 12, 12]},
    "split": {"test_fraction": 0.25, "folds": 2},
    "cnn": [{"name": "cnn", "epochs": 1, "batch_size": 2, "workers": 0, "fold": "all"}],
    "vlm": [{"name": "vlm", "model": "tiny", "scoring": "logprobs", "slices": "central:2"}],
    "calibrate": [{"name": "vlm-cal", "run": "vlm"},
                  {"name": "cnn-cal", "run": "cnn", "method": "platt", "threshold": "balanced"}],
}


@pytest.mark.slow
def test_run_calibrate_section_evaluates_val_once_and_calibrates(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(CALIBRATED_STUDY))
    assert _exit_code(["run", str(path)]) == 0
    out = tmp_path / "out"
    names = [s["name"] for s in json.loads((out / "experiment.json").read_text())["stages"]]
    assert names[-5:] == ["vlm", "vlm-val0", "vlm-cal", "cnn-cal", "report"]
    val = json.loads((out / "runs" / "vlm-val0" / "run.json").read_text())["config"]
    general = json.loads((out / "runs" / "vlm" / "run.json").read_text())["config"]
    assert (val["cohort"], val["fold"]) == ("val", 0) and general["cohort"] == "test"
    assert {k: val[k] for k in ("prompt_sha", "slices", "scoring")} == {
        k: general[k] for k in ("prompt_sha", "slices", "scoring")}
    import pandas as pd

    from medvlm.data.cohorts import load_cohort

    cal = json.loads((out / "runs" / "vlm-cal" / "calibration.json").read_text())
    assert cal["n_fit"] == len(load_cohort(out / "work", "val", fold=0))  # fold 0's val patients
    info = json.loads((out / "runs" / "vlm-cal" / "run.json").read_text())
    assert info["kind"] == "calibrated"
    assert info["config"]["fit"] == str(out / "runs" / "vlm-val0" / "predictions.csv")
    assert info["config"]["apply"] == str(out / "runs" / "vlm" / "predictions.csv")
    cnn_cal = pd.read_csv(out / "runs" / "cnn-cal" / "predictions.csv")
    assert set(cnn_cal["cohort"]) == {"test"}
    capsys.readouterr()
    assert _exit_code(["run", str(path)]) == 0  # a rerun reuses every stage
    statuses = {s["name"]: s["status"] for s in json.loads((out / "experiment.json").read_text())["stages"]}
    assert statuses["vlm-val0"] == statuses["vlm-cal"] == statuses["cnn-cal"] == "reused"


@pytest.mark.parametrize("section, message", [
    ({"name": "c", "run": "nosuch"}, "run 'nosuch' is not a vlm, cnn or fine-tuning evaluation run"),
    ({"name": "c", "run": "vlm", "fold": 5}, "fold 5 but the split has 2 folds"),
    ({"name": "c", "run": "vlm", "threshold": 1.5}, "threshold must be youden, balanced or a number"),
    ({"name": "c", "run": "vlm", "method": "beta"}, "calibrate.0.method"),
    ({"name": "vlm", "run": "vlm"}, "run names must be unique"),
])
def test_bad_calibrate_sections_are_refused(section, message):
    from medvlm.errors import ConfigError

    bad = {**CALIBRATED_STUDY, "calibrate": [section]}
    with pytest.raises(ConfigError, match=message):
        parse_experiment(bad, source="x.yaml")


def test_plain_summary_says_what_a_calibrated_threshold_did_and_what_fine_tuning_reached(tmp_path):
    from medvlm.calibrate import calibrate
    from medvlm.study_sections import plain_summary

    general = _vlm_run(tmp_path, "general", [1] * 6, [0.9, 0.8, 0.85, 0.7, 0.6, 0.65], None)
    tuned = _vlm_run(tmp_path, "tuned", [1, 1, 1, 0, 0, 1], [0.9, 0.8, 0.85, 0.4, 0.3, 0.6], "/a")
    fit = tmp_path / "general-val"
    fit.mkdir()
    (fit / "run.json").write_text(json.dumps({"kind": "vlm", "name": "general-val", "config": {}}))
    (fit / "predictions.csv").write_text("patient_id,cohort,label,pred,score\n"
                                         "V0,val,1,1,0.8\nV1,val,1,1,0.72\nV2,val,0,1,0.66\nV3,val,0,1,0.5\n")
    # Youden on FIT: (0.66 + 0.72) / 2 = 0.69; on the test cohort the LGG scores 0.6 and 0.65 fall below it
    calibrate(fit, general, tmp_path / "cal", method="none", threshold="youden")
    calibrate(fit, general, tmp_path / "cal-t", method="temperature", threshold="youden")
    text = plain_summary([general, tuned, tmp_path / "cal", tmp_path / "cal-t"])
    assert ("cal: a threshold fitted on 4 validation patients raises specificity (LGG) from 0.00 to 1.00 on "
            "the test cohort of general (sensitivity (HGG) unchanged at 1.00); fine-tuning reached 0.50 "
            "(tuned)." in text)
    assert ("cal-t: temperature scaling and a threshold fitted on 4 validation patients raise specificity"
            in text)
    assert "cal: accuracy 1.00, sensitivity (HGG) 1.00, specificity (LGG) 1.00" in text
    shutil.rmtree(general)
    text = plain_summary([tuned, tmp_path / "cal"])
    assert ("cal: a threshold fitted on 4 validation patients gives specificity (LGG) 1.00 and sensitivity "
            "(HGG) 1.00 on the test cohort (the run it calibrates is not available)." in text)
