"""make-tiny-vlm trains the stand-in to answer in the study's format, mostly one code, deterministically."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from medvlm.report.html import build_report
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm
from medvlm.vlm.tiny import RECORD_FILE, build_tiny_model, build_tiny_processor, make_tiny_vlm
from medvlm.vlm.tiny_train import ANSWER_CODE, REASONING, TRAIN_STEPS


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_greedy_answers_all_parse_and_say_the_stand_ins_code(tiny_work, tiny_vlm, tmp_path):
    res = evaluate_vlm(tiny_work, tmp_path / "gen", VLMEvalConfig(
        backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False, max_new_tokens=24))
    slices = pd.read_csv(tmp_path / "gen" / "slices.csv", dtype={"raw": str})
    assert res.n_calls == len(slices) >= 24 and res.n_unparsed == 0
    assert set(slices["finish_reason"]) == {"stop"}  # the model ends its turn (no answer cut short)
    assert (slices["choice"] == int(ANSWER_CODE)).all()  # greedy: the one class it mostly says
    assert slices["raw"].str.strip().eq(f"{ANSWER_CODE} Reasoning: {REASONING}").all()
    # the report's answer table: every vote parsed (LGG 0, HGG n, no glioma 0, unparsed 0)
    html = build_report([tmp_path / "gen"], tmp_path / "r.html", n_boot=0).read_text()
    table = html[html.index("Answers (slices.csv)"):]
    table = table[table.index("<tbody>"):table.index("</tbody>")]
    cells = [c.strip() for c in re.findall(r"<td[^>]*>([^<]*)</td>", table)]
    assert cells == ["0", str(res.n_calls), "0", "0", str(res.n_calls)]
    # no image at all (the --image none control): still the format
    none = evaluate_vlm(tiny_work, tmp_path / "none", VLMEvalConfig(
        backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False, max_new_tokens=24,
        image="none", orientations=["axial"]))
    assert none.n_calls > 0 and none.n_unparsed == 0


def test_sampled_answers_parse(tiny_work, tiny_vlm, tmp_path):
    # the consistency test's decoding (Llama-3.2-Vision's sampling defaults)
    res = evaluate_vlm(tiny_work, tmp_path / "s", VLMEvalConfig(
        backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False, max_new_tokens=24,
        temperature=0.6, top_p=0.9, repeats=4, orientations=["axial"], slices="central:1"))
    assert res.n_calls == 16 and res.n_unparsed <= 1  # nearly all parse


def test_log_probs_put_the_mass_on_the_codes_and_most_on_the_stand_ins_code(tiny_work, tiny_vlm, tmp_path):
    evaluate_vlm(tiny_work, tmp_path / "lp", VLMEvalConfig(
        backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False, scoring="logprobs"))
    slices = pd.read_csv(tmp_path / "lp" / "slices.csv")
    assert (slices["mass"] > 0.9).all()  # the next token is one of the codes
    assert (slices["choice"] == int(ANSWER_CODE)).all()  # mostly one class: HGG, as in the study ...
    assert slices["p_hgg"].between(0.6, 0.95).all()  # ... but not only: sampling gives other answers too
    assert (slices["p_lgg"] > 0.05).all()


def test_two_builds_write_identical_weights_and_the_record_says_trained(tiny_vlm, tmp_path):
    from medvlm.vlm import tiny

    tiny._TRAINED.clear()  # train again, not the weights kept from the first build
    again = make_tiny_vlm(tmp_path / "again", seed=0)
    assert _sha(again / "model.safetensors") == _sha(tiny_vlm / "model.safetensors")
    record = json.loads((tiny_vlm / RECORD_FILE).read_text())
    assert record["trained"] is True and record["train_steps"] == TRAIN_STEPS and record["seed"] == 0
    assert record["last_loss"] < record["first_loss"] / 5  # it learned the format


def test_train_steps_0_is_the_old_random_model(tmp_path):
    random = make_tiny_vlm(tmp_path / "random", seed=0, train_steps=0)
    old = build_tiny_model(build_tiny_processor(), seed=0)  # what make_tiny_vlm wrote before training
    old.save_pretrained(tmp_path / "old")
    assert _sha(random / "model.safetensors") == _sha(tmp_path / "old" / "model.safetensors")
    record = json.loads((random / RECORD_FILE).read_text())
    assert record == {"seed": 0, "train_steps": 0, "trained": False}


def test_negative_train_steps_is_a_one_line_error(tmp_path, capsys):
    from medvlm.cli import invoke
    from medvlm.errors import ConfigError

    with pytest.raises(ConfigError, match="--train-steps must be 0"):
        make_tiny_vlm(tmp_path / "x", train_steps=-1)
    assert invoke(["make-tiny-vlm", str(tmp_path / "y"), "--train-steps", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--train-steps" in err and "Traceback" not in err
