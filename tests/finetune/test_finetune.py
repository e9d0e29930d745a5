"""medvlm finetune on the tiny offline model: learning, save/load, merge, QLoRA, resume, bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from tests.finetune.conftest import FAST

from medvlm.tasks import get_task  # noqa: E402

GRADING = get_task("brats-grading")


def _train_examples(work, **kw):
    from medvlm.data.cohorts import load_cohort
    from medvlm.finetune.data import cohort_examples

    cohort = load_cohort(work, "train", fold=0)
    return cohort_examples(work, cohort, task=GRADING, orientations=["axial"], max_slices_per_patient=2,
                           **kw)[0]


def _probs(model_or_path, base, examples, *, adapter=None):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medvlm.finetune._render import class_probs
    from medvlm.vlm.prompts import load_prompt

    model = AutoModelForImageTextToText.from_pretrained(str(model_or_path)).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    processor = AutoProcessor.from_pretrained(str(base))
    return class_probs(model, processor, [e.png for e in examples], load_prompt("seed").text, GRADING)


# ------------------------------------------------------------------------------------------ pure parts
def test_balance_oversamples_lgg_to_hgg_count():
    from medvlm.finetune.data import Example, balance_examples

    ex = [Example("l", "axial", i, 0, b"") for i in range(3)] + [Example("h", "axial", i, 1, b"")
                                                                 for i in range(8)]
    out, info = balance_examples(ex, seed=1, names=("lgg", "hgg"))
    assert info == {"lgg": 3, "hgg": 8, "lgg_balanced": 8, "hgg_balanced": 8}
    lgg = [e.slice_index for e in out if e.label == 0]
    assert sorted(set(lgg)) == [0, 1, 2] and all(lgg.count(i) in (2, 3) for i in range(3))
    assert balance_examples(ex, seed=1)[0] == out  # seeded


def test_batch_labels_cover_the_answer_only(ft_base):
    import io

    from PIL import Image
    from transformers import AutoProcessor

    from medvlm.finetune._render import scoring_context
    from medvlm.finetune._steps import make_batch
    from medvlm.finetune.data import Example
    from medvlm.vlm.hf import build_chat_text

    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20), 99, np.uint8)).save(buf, format="PNG")
    proc = AutoProcessor.from_pretrained(str(ft_base))
    ex = [Example("a", "axial", 0, 1, buf.getvalue()), Example("b", "axial", 1, 0, buf.getvalue())]
    batch = make_batch(proc, "Grade?", ex, GRADING)
    for b, e in enumerate(ex):
        ids = batch["input_ids"][b][batch["labels"][b] != -100]
        assert proc.tokenizer.decode(ids) == f" {e.label}<|eot_id|>"
        n_text = int(batch["attention_mask"][b].sum())
        text = proc.tokenizer.decode(batch["input_ids"][b][:n_text])
        assert text == build_chat_text(proc, "Grade?", e.label)
    # the token scoring reads is the label token of the training target
    context, class_ids = scoring_context(proc, "Grade?", GRADING)
    assert context == build_chat_text(proc, "Grade?") + " "
    assert class_ids == [proc.tokenizer.convert_tokens_to_ids(c) for c in "012"]


# ------------------------------------------------------------------------------------------ LoRA run
def test_lora_run_writes_its_files(lora_run):
    out, summary = lora_run
    for name in ("adapter_config.json", "adapter_model.safetensors", "processor_config.json",
                 "tokenizer.json", "finetune_config.json", "train_log.csv", "loss_curve.png", "run.json",
                 "checkpoint/state.json", "checkpoint/optimizer.pt", "merged/config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["kind"] == "finetune"
    cfg = json.loads((out / "finetune_config.json").read_text())
    assert cfg["method"] == "lora" and len(cfg["prompt_sha"]) == 64
    assert cfg["balance"]["lgg_balanced"] == cfg["balance"]["hgg_balanced"] > cfg["balance"]["lgg"]
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.columns[:3]) == ["step", "epoch", "loss"]
    losses = log.dropna(subset=["loss"])
    assert losses["step"].tolist() == list(range(1, 37))
    val = log.dropna(subset=["val_p_true"])
    assert val["step"].iloc[0] == 0 and len(val) >= 2  # the base model, then each epoch
    assert summary["steps"] == 36 and summary["n_train"] == cfg["n_train"]
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_lora_moves_training_answers_toward_labels(lora_run, prepared_work, ft_base):
    out, summary = lora_run
    examples = _train_examples(prepared_work)
    labels = np.array([e.label for e in examples])
    p_base = _probs(ft_base, ft_base, examples)
    p_tuned = _probs(ft_base, ft_base, examples, adapter=out)
    # class-balanced mean P(true label): fine-tuning balances the classes, and the stand-in base starts out
    # saying HGG for most slices (as the study's zero-shot model), so HGG slices may lose a little
    def balanced(p):
        return np.mean([p[labels == c, c].mean() for c in np.unique(labels)])

    assert balanced(p_tuned) > balanced(p_base) + 0.02


def test_adapter_reload_and_merge_reproduce_probabilities(lora_run, prepared_work, ft_base):
    from medvlm.data.cohorts import load_cohort
    from medvlm.finetune.data import cohort_examples

    out, summary = lora_run
    val = cohort_examples(prepared_work, load_cohort(prepared_work, "val", fold=0), task=GRADING,
                          orientations=["axial"], max_slices_per_patient=1)[0]
    p_adapter = _probs(ft_base, ft_base, val, adapter=out)
    labels = np.array([e.label for e in val])
    # the reloaded adapter gives exactly the validation metric logged for the selected epoch
    p_true = p_adapter[np.arange(len(val)), labels].mean()
    assert p_true == pytest.approx(summary["val"]["val_p_true"], abs=1e-5)
    p_merged = _probs(out / "merged", ft_base, val)
    np.testing.assert_allclose(p_merged, p_adapter, atol=1e-4)


# ------------------------------------------------------------------------------------------ QLoRA, resume
@pytest.mark.slow
def test_qlora_runs_on_cpu_and_loads_on_full_precision_base(prepared_work, ft_base, tmp_path):
    from medvlm.finetune import FinetuneConfig, finetune

    out = tmp_path / "q"
    summary = finetune(prepared_work, out, FinetuneConfig(base_model=str(ft_base), method="qlora",
                                                          max_steps=3, **FAST))
    assert summary["steps"] == 3
    examples = _train_examples(prepared_work)[:4]
    p = _probs(ft_base, ft_base, examples, adapter=out)
    assert p.shape == (4, 3) and np.allclose(p.sum(1), 1)
    assert json.loads((out / "finetune_config.json").read_text())["method"] == "qlora"


@pytest.mark.slow
def test_resume_continues_exactly(prepared_work, ft_base, tmp_path):
    from safetensors.torch import load_file

    from medvlm.finetune import FinetuneConfig, finetune

    fast = {**FAST, "dropout": 0.1, "select": "last"}  # dropout: the RNG state must be restored too
    straight = tmp_path / "straight"
    finetune(prepared_work, straight, FinetuneConfig(base_model=str(ft_base), max_steps=5, **fast))
    resumed = tmp_path / "resumed"
    finetune(prepared_work, resumed, FinetuneConfig(base_model=str(ft_base), max_steps=2, **fast))
    summary = finetune(prepared_work, resumed, FinetuneConfig(base_model=str(ft_base), max_steps=5, **fast))
    assert summary["steps"] == 5
    a, b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)
    log_a = pd.read_csv(straight / "train_log.csv").dropna(subset=["loss"])
    log_b = pd.read_csv(resumed / "train_log.csv").dropna(subset=["loss"])
    assert log_b["step"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(log_a["loss"], log_b["loss"], rtol=1e-5)


# ------------------------------------------------------------------------------------------ bad inputs
def _cli(args, capsys):
    from medvlm.cli import main

    with pytest.raises(SystemExit, match=r"^\d?$") as exc:  # the exit status, if any
        main(args)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def test_no_split_is_exit_2(prepared_work, ft_base, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    (work / "splits.json").unlink()
    code, err = _cli(["finetune", str(work), "--out", str(tmp_path / "a"), "--base-model", str(ft_base)],
                     capsys)
    assert code == 2 and "no split" in err and "splits.json" in err and len(err.splitlines()) == 1


def test_missing_base_model_is_exit_2(prepared_work, tmp_path, capsys):
    code, err = _cli(["finetune", str(prepared_work), "--out", str(tmp_path / "a"), "--base-model",
                      str(tmp_path / "nope")], capsys)
    assert code == 2 and "--base-model" in err and "nope" in err and len(err.splitlines()) == 1


def test_unsloth_without_gpu_is_exit_2(prepared_work, ft_base, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    code, err = _cli(["finetune", str(prepared_work), "--out", str(tmp_path / "a"), "--base-model",
                      str(ft_base), "--engine", "unsloth"], capsys)
    assert code == 2 and "unsloth" in err and "CUDA" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("option", "value", "needle"), [("--method", "qlor", "method"),
                                                          ("--orientations", "axil", "orientations"),
                                                          ("--rank", "0", "rank")])
def test_bad_options_are_exit_2(prepared_work, ft_base, tmp_path, capsys, option, value, needle):
    code, err = _cli(["finetune", str(prepared_work), "--out", str(tmp_path / "a"), "--base-model",
                      str(ft_base), option, value], capsys)
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_resume_with_other_options_is_refused(lora_run, prepared_work, ft_base, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(lora_run[0], out)
    code, err = _cli(["finetune", str(prepared_work), "--out", str(out), "--base-model", str(ft_base),
                      "--lr", "0.5", "--orientations", "axial", "--max-slices-per-patient", "2"], capsys)
    assert code == 2 and "checkpoint" in err and "new --out" in err


def test_eval_vlm_with_the_adapter_scores_as_finetune_does(lora_run, prepared_work, ft_base, tmp_path):
    """``eval-vlm --adapter`` (transformers backend, log-prob scoring) reads the same probabilities."""
    from medvlm.data.cohorts import load_cohort
    from medvlm.finetune.data import cohort_examples
    from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm

    out, _summary = lora_run
    evaluate_vlm(prepared_work, tmp_path / "run", VLMEvalConfig(
        backend="transformers", model=str(ft_base), adapter=str(out), scoring="logprobs", cohort="val",
        orientations=["axial"], n_boot=0, progress=False, device="cpu"))
    slices = pd.read_csv(tmp_path / "run" / "slices.csv", dtype={"patient_id": str})
    val = cohort_examples(prepared_work, load_cohort(prepared_work, "val", fold=0), task=GRADING,
                          orientations=["axial"])[0]
    ours = _probs(ft_base, ft_base, val, adapter=out)
    key = {(e.patient_id, e.slice_index): p for e, p in zip(val, ours, strict=True)}
    assert len(slices) == len(val)
    for row in slices.itertuples():
        np.testing.assert_allclose([row.p_lgg, row.p_hgg, row.p_ng], key[(row.patient_id, row.slice_index)],
                                   atol=1e-5)


@pytest.mark.slow
def test_trl_engine_trains_on_the_same_batches(prepared_work, ft_base, tmp_path, monkeypatch):
    import medvlm.finetune._trl as trl_engine
    import medvlm.finetune.train as native_engine
    from medvlm.finetune import FinetuneConfig, finetune
    from medvlm.finetune._steps import make_batch

    batches: dict[str, list[list[tuple]]] = {"peft": [], "trl": []}

    def recording(engine):
        def record(processor, prompt, examples, task):
            batches[engine].append([(e.patient_id, e.orientation, e.slice_index, e.label) for e in examples])
            return make_batch(processor, prompt, examples, task)
        return record

    monkeypatch.setattr(native_engine, "make_batch", recording("peft"))
    monkeypatch.setattr(trl_engine, "make_batch", recording("trl"))
    summaries, logs = {}, {}
    for engine in ("peft", "trl"):  # the native loop and TRL, one epoch each: every training slice once
        out = tmp_path / engine
        cfg = FinetuneConfig(base_model=str(ft_base), engine=engine, epochs=1, validate_each_epoch=False,
                             **FAST)
        summaries[engine] = finetune(prepared_work, out, cfg)
        logs[engine] = pd.read_csv(out / "train_log.csv").dropna(subset=["loss"])
    n_train, size = summaries["peft"]["n_train"], FAST["batch_size"]
    steps = -(-n_train // size)
    assert summaries["trl"]["n_train"] == n_train
    assert summaries["trl"]["balance"] == summaries["peft"]["balance"]
    assert summaries["peft"]["steps"] == summaries["trl"]["steps"] == steps
    for engine in ("peft", "trl"):
        sizes = [len(b) for b in batches[engine]]
        assert sizes == [size] * (steps - 1) + [n_train - size * (steps - 1)], engine
        assert logs[engine]["step"].tolist() == list(range(1, steps + 1)) and (logs[engine]["loss"] > 0).all()
    # the same balanced training slices, rendered by the same collator (make_batch); only the order may differ
    assert sorted(sum(batches["trl"], [])) == sorted(sum(batches["peft"], []))
    p = _probs(ft_base, ft_base, _train_examples(prepared_work)[:2], adapter=tmp_path / "trl")
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1)
