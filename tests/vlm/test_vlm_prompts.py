"""Prompt controls: seed-swapped (answer codes of the two grades exchanged, read back to the same labels)
and paraphrases of the seed prompt, through eval-vlm, consistency, the task listing and fine-tuning."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from medvlm.cli import invoke as _run
from medvlm.errors import ConfigError
from medvlm.tasks import get_task
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm
from medvlm.vlm.prompts import builtin_prompts, load_prompt

PARAPHRASES = ["seed-para1", "seed-para2", "seed-para3"]


def test_the_swapped_and_paraphrased_prompts_are_registered_and_listed(capsys):
    seed, swapped = load_prompt("seed"), load_prompt("seed-swapped")
    assert {"seed-swapped", *PARAPHRASES} <= set(builtin_prompts())
    assert swapped.codes == ("1", "0", "2") and seed.codes is None
    # the seed prompt with the codes of the two grades exchanged, nothing else
    assert swapped.text == seed.text.replace("Glioma (0)", "Glioma (#)").replace(
        "Glioma (1)", "Glioma (0)").replace("Glioma (#)", "Glioma (1)")
    texts = {seed.text}
    for name in PARAPHRASES:
        p = load_prompt(name)
        assert p.codes is None and p.text not in texts
        texts.add(p.text)
        assert "Low Grade Glioma (0)" in p.text and "High Grade Glioma (1)" in p.text
        assert "No Glioma (2)" in p.text and "Choice: <0, 1, or 2>" in p.text
    grading = get_task("brats-grading")
    assert {"seed-swapped", *PARAPHRASES} <= set(grading.prompts)
    with pytest.raises(ConfigError, match="another task"):
        get_task("brats-tumour").check_prompt("seed-swapped")
    assert _run(["tasks", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert {"seed-swapped", *PARAPHRASES} <= set(listed["brats-grading"]["prompts"])
    assert _run(["tasks"]) == 0
    assert "seed-swapped" in capsys.readouterr().out


def test_a_swapped_task_asks_scores_and_describes_its_own_digits():
    grading = get_task("brats-grading")
    swapped = grading.for_prompt(load_prompt("seed-swapped"))
    assert swapped.codes == ("1", "0", "2") and grading.codes == ("0", "1", "2")
    assert swapped.for_prompt(load_prompt("seed")).codes == ("0", "1", "2")
    assert grading.for_prompt(load_prompt("seed")) is grading
    assert swapped.prob_columns == grading.prob_columns  # p_lgg is still P(LGG)
    assert swapped.describe()["answer_codes"] == {"1": "LGG", "0": "HGG", "2": "no glioma"}
    assert "answer_codes" not in grading.describe()
    with pytest.raises(ConfigError, match="not an order"):
        grading.with_answer_codes(("0", "0", "2"))


def test_eval_vlm_reads_swapped_answers_back_to_the_same_labels(tiny_work, tmp_path):
    common = dict(backend="mock", n_boot=0, progress=False, orientations=["axial"])
    says0 = evaluate_vlm(tiny_work, tmp_path / "sw", VLMEvalConfig(**common, model="always:0",
                                                                   prompt="seed-swapped"))
    slices = pd.read_csv(tmp_path / "sw" / "slices.csv")
    assert says0.n_unparsed == 0 and set(slices["choice"]) == {1}  # "0" means HGG in this prompt
    assert set(slices["raw"]) == {"Choice: 0 Reasoning: mock"}
    pats = pd.read_csv(tmp_path / "sw" / "patients.csv")
    assert (pats["n_hgg"] > 0).all() and (pats["n_lgg"] == 0).all() and set(pats["pred"]) == {1}
    info = json.loads((tmp_path / "sw" / "run.json").read_text())
    assert info["config"]["prompt_name"] == "seed-swapped"
    assert info["config"]["task"]["answer_codes"] == {"1": "LGG", "0": "HGG", "2": "no glioma"}
    seed0 = evaluate_vlm(tiny_work, tmp_path / "seed", VLMEvalConfig(**common, model="always:0"))
    assert set(pd.read_csv(tmp_path / "seed" / "slices.csv")["choice"]) == {0}
    assert seed0.n_sent == seed0.n_calls
    # log-prob scoring: P(LGG) is the probability of the digit "1" under the swapped prompt
    lp = evaluate_vlm(tiny_work, tmp_path / "lp", VLMEvalConfig(**common, model="hash", scoring="logprobs",
                                                                prompt="seed-swapped"))
    assert lp.n_unparsed == 0
    import hashlib

    from medvlm.data.slices import unit_images

    s = pd.read_csv(tmp_path / "lp" / "slices.csv").set_index(["patient_id", "slice_index"])
    manifest = pd.read_csv(tiny_work / "manifest.csv").set_index("patient_id", drop=False)
    units = manifest[["patient_id"]].reset_index(drop=True)
    _, images = unit_images(manifest, units, orientations=["axial"], selection="tumour",
                            modalities=("flair",), unit="patient")
    for (pid, _o, index), png in images:
        h = hashlib.sha256(png + b"0").digest()
        p_code = {c: h[1 + i] + 1.0 for i, c in enumerate(("1", "0", "2"))}  # the mock, codes as asked
        total = sum(p_code.values())
        row = s.loc[(pid, index)]
        assert math.isclose(row["p_lgg"], p_code["1"] / total)
        assert math.isclose(row["p_hgg"], p_code["0"] / total)


def test_eval_vlm_swapped_over_the_wire_with_logprobs(tiny_work, tmp_path, fake_server):
    """The test server answers "Choice: 1" with P(" 1") 0.7, P(" 0") 0.2, P(" 2") 0.05: under the swapped
    prompt that is LGG with P(LGG) = 0.7 / 0.95."""
    args = ["eval-vlm", str(tiny_work), "--backend", "openai", "--model", "llama3.2-vision", "--base-url",
            fake_server.url, "--orientations", "axial", "--bootstrap", "0", "--no-progress",
            "--prompt", "seed-swapped"]
    assert _run([*args, "--out", str(tmp_path / "gen")]) == 0
    assert set(pd.read_csv(tmp_path / "gen" / "slices.csv")["choice"]) == {0}
    assert "High Grade Glioma (0)" in fake_server.bodies[-1]["messages"][0]["content"][1]["text"]
    assert _run([*args, "--out", str(tmp_path / "lp"), "--scoring", "logprobs"]) == 0
    s = pd.read_csv(tmp_path / "lp" / "slices.csv")
    assert set(s["choice"]) == {0}
    assert (s["p_lgg"] - 0.7 / 0.95).abs().max() < 1e-9 and (s["p_hgg"] - 0.2 / 0.95).abs().max() < 1e-9


def test_consistency_sweeps_seed_swapped_and_paraphrases(tiny_work, tmp_path):
    run = tmp_path / "cons"
    args = ["consistency", str(tiny_work), "--out", str(run), "--backend", "mock", "--model", "always:1",
            "--patient", "P000", "--repeats", "3", "--no-progress", "--prompt", "seed",
            "--prompt", "seed-swapped", *[a for p in PARAPHRASES for a in ("--prompt", p)]]
    assert _run(args) == 0
    csv = pd.read_csv(run / "consistency.csv")
    by_prompt = csv.groupby("prompt")["choice"].agg(set).to_dict()
    assert by_prompt == {"seed": {1}, "seed-swapped": {0}, **{p: {1} for p in PARAPHRASES}}
    summary = json.loads((run / "summary.json").read_text())
    assert [p["prompt"] for p in summary["per_prompt"]] == ["seed", "seed-swapped", *PARAPHRASES]


def test_finetuning_on_the_swapped_prompt_trains_the_digits_it_asks_for():
    from medvlm.finetune._render import answer_text
    from medvlm.vlm.tiny import build_tiny_processor

    proc = build_tiny_processor()
    swapped = get_task("brats-grading").for_prompt(load_prompt("seed-swapped"))
    assert answer_text(proc, "Grade?", 0, swapped).endswith("Choice: 1<|eot_id|>")  # LGG is "1" here
    assert answer_text(proc, "Grade?", 1, swapped).endswith("Choice: 0<|eot_id|>")
