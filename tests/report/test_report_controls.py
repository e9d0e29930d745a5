"""The report's "Does the model look at the image?" section, on hand-made run folders (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvlm.report.control_verdicts import verdict
from medvlm.report.controls import (
    call_agreement,
    control_names,
    find_controls,
    robustness_points,
)
from medvlm.report.html import build_report, load_run, paired_tests
from medvlm.runinfo import write_run_info

PATIENTS = [f"P{i:02d}" for i in range(1, 11)]
LABELS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
BASE = {"backend": "transformers", "model": "tiny", "scoring": "generate", "orientations": ["axial"],
        "slices": "tumour", "modalities": ["flair"], "repeats": 1, "temperature": 0.0, "cohort": "test"}


def write_vlm(root: Path, name: str, choices, *, preds=None, scores=None, image: str = "real",
              artifact: str | None = None, prompt: str = "seed", codes=None, metrics=None, **cfg) -> Path:
    """A VLM run: 10 test patients x 3 axial slices (``choices``: 30 answer codes, "" unparsed), the
    patient predictions ``preds``/``scores`` (default: the majority of the answers)."""
    run = root / name
    run.mkdir(parents=True)
    rows = [{"patient_id": p, "orientation": "axial", "slice_index": 40 + s, "repeat": 0,
             "choice": choices[3 * i + s], "p_lgg": "", "p_hgg": "", "p_ng": "",
             "raw": f"Choice: {choices[3 * i + s]}"}
            for i, p in enumerate(PATIENTS) for s in range(3)]
    pd.DataFrame(rows).to_csv(run / "slices.csv", index=False)
    if preds is None:
        votes = np.array([c == "1" for c in choices]).reshape(10, 3).sum(axis=1)
        preds = (votes >= 2).astype(int).tolist()
    pd.DataFrame({"patient_id": PATIENTS, "cohort": "test", "label": LABELS, "pred": preds,
                  "score": scores if scores is not None else [None] * 10}).to_csv(
        run / "predictions.csv", index=False)
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    task = {"name": "brats-grading", **({"answer_codes": codes} if codes else {})}
    write_run_info(run, kind="vlm", config={**BASE, **cfg, "image": image, "artifact": artifact,
                                            "prompt": prompt, "prompt_name": prompt,
                                            "prompt_sha": f"sha-{prompt}", "task": task})
    return run


REAL = ["1", "1", "1"] * 6 + ["0", "0", "1"] * 4  # HGG patients all HGG, LGG patients 2 of 3 LGG


def loaded(*paths):
    return [load_run(p) for p in paths]


def test_flip_rate_is_exact_on_hand_made_slices(tmp_path):
    other = list(REAL)
    for i in (0, 4, 19, 29):  # four of the 30 calls answered otherwise, one of them unparsed
        other[i] = {"1": "0", "0": "1"}[other[i]] if i != 29 else ""
    ref, ctl = loaded(write_vlm(tmp_path, "real", REAL), write_vlm(tmp_path, "noimg", other, image="none"))
    res = call_agreement(ref, ctl)
    assert res["n"] == 30 and res["n_patients"] == 10
    assert res["agreement"] == pytest.approx(26 / 30) and res["flip_rate"] == pytest.approx(4 / 30)
    assert res["confusion"]["1"]["unparsed"] == 1 and res["confusion"]["1"]["0"] == 2
    assert res["confusion"]["0"]["1"] == 1
    assert res["top_a"] == "1" and res["share_a"] == pytest.approx(22 / 30)

    html_path = build_report([ref.path, ctl.path], tmp_path / "r.html", n_boot=50)
    html = html_path.read_text()
    assert "Does the model look at the image?" in html and 'href="#controls"' in html
    assert "87%" in html and "0.133" in html  # agreement and flip rate in the calls table


def test_controls_are_same_model_task_calls_and_patients_only(tmp_path):
    ref = write_vlm(tmp_path, "real", REAL)
    blank = write_vlm(tmp_path, "blank", REAL, image="blank")
    other_model = write_vlm(tmp_path, "other-model", REAL, image="none", model="other")
    other_scoring = write_vlm(tmp_path, "other-scoring", REAL, image="none", scoring="logprobs")
    para = write_vlm(tmp_path, "para", REAL, prompt="seed-para1")
    masked_motion = write_vlm(tmp_path, "masked-motion", REAL, image="tumour-masked", artifact="motion:0.5")
    runs = loaded(para, ref, blank, other_model, other_scoring, masked_motion)
    sets = find_controls(runs)
    assert len(sets) == 1 and sets[0].reference.name == "real"  # the default prompt, not the first run
    assert [(c.run.name, c.kind, c.label) for c in sets[0].controls] == [
        ("para", "prompt", "prompt seed-para1"), ("blank", "absent", "blank image"),
        ("masked-motion", "mixed", "tumour masked + motion 0.5")]
    assert control_names(runs)["blank"] == "blank image (control of real)"
    # a control against a CNN or a fine-tuned run is never a key comparison of the study
    cnn = tmp_path / "cnn"
    cnn.mkdir()
    pd.DataFrame({"patient_id": PATIENTS, "cohort": "test", "label": LABELS, "pred": LABELS,
                  "score": [0.9] * 6 + [0.1] * 4}).to_csv(cnn / "predictions.csv", index=False)
    write_run_info(cnn, kind="cnn", config={})
    runs = loaded(ref, blank, cnn)
    pairs = paired_tests(runs, controls=control_names(runs))
    key = {(p["a"], p["b"]) for p in pairs if p["key"]}
    assert key == {("cnn", "real")}


def test_verdict_no_image_does_not_depend_on_the_image(tmp_path):
    nearly = list(REAL)
    nearly[19] = "1"  # one call of 30 differs
    ref, ctl = loaded(write_vlm(tmp_path, "real", REAL), write_vlm(tmp_path, "none", nearly, image="none"))
    (cset,) = find_controls([ref, ctl])
    control = cset.controls[0]
    text = verdict(control, call_agreement(ref, ctl))
    assert text == ("Answers with no image agree with answers on the real image on 97% of 30 slices: the "
                    "model's answer does not depend on the image.")


def test_verdict_all_hgg_model_is_named(tmp_path):
    always = ["1"] * 30
    ref, ctl = loaded(write_vlm(tmp_path, "real", always), write_vlm(tmp_path, "none", always, image="none"))
    (cset,) = find_controls([ref, ctl])
    text = verdict(cset.controls[0], call_agreement(ref, ctl))
    assert text == ("Answers with no image agree with answers on the real image on 100% of 30 slices (it "
                    "answers HGG on 100% of them without it): the model's answer does not depend on the "
                    "image.")


def test_verdict_same_answers_other_scores(tmp_path):
    # log-prob scoring: HGG is the top answer everywhere, with or without the image, but the real image's
    # scores rank the patients (AUC 23/24) and the no-image scores are all alike (AUC 0.5)
    always = ["1"] * 30
    ranked = [0.9, 0.8, 0.85, 0.7, 0.75, 0.4, 0.3, 0.2, 0.5, 0.1]
    ref = write_vlm(tmp_path, "real", always, scores=ranked, scoring="logprobs")
    none = write_vlm(tmp_path, "none", always, scores=[0.6] * 10, image="none", scoring="logprobs")
    motion = write_vlm(tmp_path, "motion", always, scores=ranked, artifact="motion:0.5", scoring="logprobs")
    from medvlm.report.control_verdicts import control_verdicts

    texts = dict((c.run.name, t) for c, t in control_verdicts(loaded(ref, none, motion)))
    assert texts["none"].startswith(
        "Answers with no image agree with answers on the real image on 100% of 30 slices (it answers HGG on "
        "100% of them without it): the image does not change its answers, but it changes its scores. On the "
        "10 test patients: accuracy 0.60 (real) vs 0.60 (no image), McNemar p = 1.000; AUC 0.96 vs 0.50, "
        "DeLong p ")
    # the image matters to the scores, so an artifact that changes nothing is robustness, not blindness
    assert "its answers are robust to this artifact." in texts["motion"]
    assert "says nothing about robustness" not in texts["motion"]


def test_verdict_no_image_changes_the_answers_and_the_accuracy(tmp_path):
    # without the image: the first patient of each class keeps its answers, the rest answer otherwise
    flipped = REAL[:3] + [{"1": "0", "0": "1"}[c] for c in REAL[3:18]] + REAL[18:21] + \
        [{"1": "0", "0": "1"}[c] for c in REAL[21:]]
    ref, ctl = loaded(write_vlm(tmp_path, "real", REAL), write_vlm(tmp_path, "none", flipped, image="none"))
    (cset,) = find_controls([ref, ctl])
    from medvlm.report.controls import _paired

    text = verdict(cset.controls[0], call_agreement(ref, ctl), _paired(ref, ctl))
    assert text.startswith("Answers with no image agree with answers on the real image on 20% of 30 slices: "
                           "the model's answer depends on the image.")
    # real: 10 of 10 right; no image: 2 of 10 right (8 discordant, exact McNemar p = 2 / 2**8)
    assert "On the 10 test patients: accuracy 1.00 (real) vs 0.20 (no image), McNemar p = 0.008: the " \
           "image makes its answers more accurate." in text


def test_verdict_middle_and_sampling_and_swapped_codes(tmp_path):
    some = list(REAL)
    for i in (0, 3, 6, 9, 12, 15):  # 6 of 30 differ: 80%
        some[i] = "0"
    ref = write_vlm(tmp_path, "real", REAL, temperature=0.6)
    ctl = write_vlm(tmp_path, "noise", some, image="noise", temperature=0.6)
    swapped = write_vlm(tmp_path, "swapped", [{"1": "0", "0": "1"}[c] for c in REAL], prompt="seed-swapped",
                        codes={"1": "LGG", "0": "HGG", "2": "no glioma"}, temperature=0.6)
    runs = loaded(ref, ctl, swapped)
    (cset,) = find_controls(runs)
    by_name = {c.run.name: c for c in cset.controls}
    text = verdict(by_name["noise"], call_agreement(runs[0], runs[1]))
    assert text == ("Answers on random noise agree with answers on the real image on 80% of 30 slices: the "
                    "image changes some of its answers, but most stay the same without it (sampled at "
                    "temperature 0.6: some changes are sampling noise; the consistency runs show how much).")
    assert by_name["swapped"].kind == "swapped"
    text = verdict(by_name["swapped"], call_agreement(runs[0], runs[2]))
    assert text.startswith("Answers with the codes of LGG and HGG swapped in the prompt (seed-swapped) agree "
                           "with answers to the seed prompt on 0% of 30 slices: its answers change with the "
                           "codes: 100% of the graded answers name the other grade, so the model follows the "
                           "digit, not the grade it stands for")


def _combined(acc, ci, auc=None, auc_ci=None):
    m = {"accuracy": acc, "accuracy_ci": ci, "recall": 1.0, "specificity": 0.5, "auc": auc, "auc_ci": auc_ci,
         "n": 10}
    return {"cohort": "test", "orientations": {"combined": m}}


def test_robustness_points_and_figure_data(tmp_path):
    from medvlm.report.figures import robustness_figure

    ref = write_vlm(tmp_path, "real", REAL, metrics=_combined(0.9, [0.7, 1.0], 0.95, [0.8, 1.0]))
    m05 = write_vlm(tmp_path, "motion-0.5", REAL, artifact="motion:0.5",
                    metrics=_combined(0.8, [0.6, 1.0], 0.85, [0.6, 1.0]))
    m1 = write_vlm(tmp_path, "motion-1", REAL, artifact="motion:1",
                   metrics=_combined(0.6, [0.3, 0.9], 0.6, [0.3, 0.9]))
    # no metrics.json: computed from predictions.csv (6 of 10 right, no scores -> no AUC)
    gh = write_vlm(tmp_path, "ghost", REAL, artifact="ghosting:0.25", preds=[1] * 6 + [1] * 4)
    none = write_vlm(tmp_path, "none", REAL, image="none", metrics=_combined(0.6, [0.3, 0.9], 0.5, None))
    runs = loaded(m1, ref, gh, m05, none)
    (cset,) = find_controls(runs)
    curves = robustness_points(cset, n_boot=200, seed=0)
    assert list(curves) == ["ghosting", "motion"]
    assert [(p["severity"], p["run"], p["accuracy"], p["accuracy_ci"]) for p in curves["motion"]] == [
        (0.0, "real", 0.9, [0.7, 1.0]), (0.5, "motion-0.5", 0.8, [0.6, 1.0]),
        (1.0, "motion-1", 0.6, [0.3, 0.9])]
    assert [p["auc"] for p in curves["motion"]] == [0.95, 0.85, 0.6]
    ghost = curves["ghosting"]
    assert [(p["severity"], p["accuracy"], p["auc"]) for p in ghost] == [(0.0, 0.9, 0.95), (0.25, 0.6, None)]
    lo, hi = ghost[1]["accuracy_ci"]
    assert lo <= 0.6 <= hi

    fig = robustness_figure(curves, floor=("no image", {"accuracy": 0.6, "auc": 0.5}))
    lines = {ln.get_gid(): ln.get_xydata().tolist() for ax in fig.axes for ln in ax.lines if ln.get_gid()}
    assert lines["motion:accuracy"] == [[0.0, 0.9], [0.5, 0.8], [1.0, 0.6]]
    assert lines["motion:auc"] == [[0.0, 0.95], [0.5, 0.85], [1.0, 0.6]]
    assert lines["ghosting:accuracy"] == [[0.0, 0.9], [0.25, 0.6]]
    assert lines["ghosting:auc"] == [[0.0, 0.95]]  # no AUC at 0.25: left out of the line

    html = build_report([p.path for p in runs], tmp_path / "r.html", n_boot=50).read_text()
    assert "against the severity of each TorchIO artifact" in html
    # a model whose answers do not depend on the image is robust to anything: the verdict says so
    assert "says nothing about robustness" in html


def test_no_controls_no_section(runs, tmp_path):
    html = build_report([runs["cnn"], runs["vlm"]], tmp_path / "r.html", n_boot=20).read_text()
    assert "Does the model look at the image?" not in html and 'href="#controls"' not in html


def test_model_output_and_names_stay_escaped(tmp_path):
    script = "<script>alert(1)</script>"
    ref = write_vlm(tmp_path, "real", REAL)
    ctl = write_vlm(tmp_path, "para", REAL, prompt=f"{script}.txt")
    slices = pd.read_csv(ctl / "slices.csv")
    slices["raw"] = script
    slices.to_csv(ctl / "slices.csv", index=False)
    html = build_report([ref, ctl], tmp_path / "r.html", n_boot=20).read_text()
    assert "Does the model look at the image?" in html
    assert script not in html
    assert "prompt &lt;script&gt;alert(1)&lt;/script&gt;.txt" in html


def test_plain_summary_gives_controls_their_verdict_not_a_fine_tuning_arm(tmp_path):
    from medvlm.study_sections import plain_summary

    ref = write_vlm(tmp_path, "real", REAL)
    none = write_vlm(tmp_path, "none", REAL, image="none")
    tuned = write_vlm(tmp_path, "tuned", REAL, adapter=str(tmp_path / "lora"))
    text = plain_summary([ref, none, tuned])
    assert ("none (a control of real: no image): Answers with no image agree with answers on the real image "
            "on 100% of 30 slices: the model's answer does not depend on the image.") in text
    assert "\n\nnone: accuracy" not in text  # no line of numbers for a control
    assert "Fine-tuning (tuned vs real)" in text and "tuned vs none" not in text
