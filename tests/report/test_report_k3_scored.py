"""A scored (log-prob) run of a 3-class image task through ``medvlm report``: the report is built (no
binary-only ROC of ``score``), one-vs-rest ROC curves per class, and K-class wording everywhere
(balanced accuracy, macro F1, recall per class; no sensitivity of the last class, no TP/FP/TN/FN, no
BraTS sentences)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medvlm.cli import invoke

CLASSES = ("normal", "pneumonia", "effusion")


@pytest.fixture(scope="module")
def k3_runs(tmp_path_factory):
    """24 PNGs, 3 classes, 2 images per patient; a log-prob and a generate run of the mock VLM."""
    from PIL import Image

    root = tmp_path_factory.mktemp("k3")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["path,label,patient_id"]
    for i in range(24):
        pixels = (rng.random((40, 40)) * 100 + (i % 3) * 50).astype(np.uint8)
        Image.fromarray(pixels).save(data / "images" / f"img{i:03d}.png")
        lines.append(f"images/img{i:03d}.png,{CLASSES[i % 3]},P{i // 2:03d}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    (data / "t3.yaml").write_text("name: t3\nclasses: [normal, pneumonia, effusion]\nsource: {kind: "
                                  "image-csv, csv: labels.csv}\nprompt: \"normal (0), pneumonia (1) or "
                                  "effusion (2)? Reply Choice: N\"\n")
    work = root / "work"
    assert invoke(["prepare", str(data), "--out", str(work), "--task", str(data / "t3.yaml")]) == 0
    assert invoke(["split", str(work), "--test-fraction", "0.25", "--folds", "2"]) == 0
    runs = {"work": work}
    for scoring in ("logprobs", "generate"):
        runs[scoring] = root / scoring
        assert invoke(["eval-vlm", str(work), "--out", str(runs[scoring]), "--backend", "mock", "--model",
                       "hash", "--scoring", scoring, "--bootstrap", "0", "--no-progress"]) == 0
    return runs


def _text(html: str) -> str:
    html = re.sub(r"<style.*?</style>", "", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_report_of_a_scored_three_class_run(k3_runs, tmp_path):
    out = tmp_path / "report.html"
    # before: ValueError 'multiclass format is not supported' (roc_figure on P(last class))
    assert invoke(["report", str(k3_runs["logprobs"]), str(k3_runs["generate"]), "--out", str(out)]) == 0
    text = _text(out.read_text())
    assert "One-vs-rest ROC curves of logprobs on the test cohort" in text
    assert "(p_normal, p_pneumonia, p_effusion)" in text
    assert "ROC curves of all runs with scores" not in text  # no single ROC without a positive class
    # K-class wording (before: "could not be built: 'recall'", "Sensitivity = recall of effusion",
    # TP/FP/TN/FN)
    assert "could not be built" not in text
    assert "Sensitivity = recall of" not in text and "TP/FP/TN/FN</th>" not in out.read_text()
    assert "3 classes, no positive class: balanced accuracy is the mean recall" in text
    assert re.search(r"logprobs: accuracy \d\.\d\d, balanced accuracy \d\.\d\d, macro F1 \d\.\d\d, AUC \(one "
                     r"vs rest, macro\) \d\.\d\d on 6 test images; recall per class: normal \d\.\d\d, "
                     r"pneumonia \d\.\d\d, effusion \d\.\d\d\.", text)
    # the test cohort: 6 images (P000, P005, P011 hold 1 normal, 3 pneumonia, 2 effusion)
    assert ("predicting pneumonia (the most frequent class) for everyone scores accuracy 0.50 and balanced "
            "accuracy 0.33") in text
    assert "AUC (one vs rest) Macro F1 Parsed Bal. acc. Accuracy" in text
    # subgroups: binary-only, said in one line; no BraTS sentence for an image task
    assert "subgroup metrics are binary-only (sensitivity, specificity); t3 has 3 classes" in text
    assert "BraTS" not in text and "run prepare again" not in text
    # CLAIM's Metrics item and the few-images note in K-class words
    assert "one-vs-rest macro AUC with 95% bootstrap CIs; the K x K confusion matrix" in text
    assert "specificity, F1, balanced accuracy, MCC" not in text
    assert "per-class recall, macro F1, AUC and their intervals rest on very few images" in text
    assert "sensitivity, specificity, AUC and their intervals" not in text
    # binary-only per-run figures: left out with the reason
    assert ("no reliability diagram or risk-coverage curve: they read the score of a positive class, and t3 "
            "has 3 classes") in text


def test_eval_vlm_console_table_of_a_three_class_task(k3_runs, tmp_path, capsys):
    """Issue 18 #17: the table showed binary recall/specificity/F1 as '-' for K > 2."""
    assert invoke(["eval-vlm", str(k3_runs["work"]), "--out", str(tmp_path / "run"), "--backend", "mock",
                   "--model", "hash", "--scoring", "logprobs", "--bootstrap", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bal. acc." in out and "macro F1" in out and "specificity" not in out
    # the combined row: the test cohort's 6 images, balanced accuracy and macro F1 as in metrics.json
    import json

    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["orientations"]["combined"]
    row = next(line for line in out.splitlines() if "combined" in line)
    assert f"{m['balanced_accuracy']:.3f}" in row and f"{m['macro_f1']:.3f}" in row
