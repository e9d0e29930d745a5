"""Few-shot prompting (``--shots K``): balanced, seeded examples from the training cohort, carried as earlier
chat turns by the openai payload and the transformers chat, cached, listed in slices.csv; bad K refused."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.vlm.fewshot import Example, answer_text, class_counts, draw_examples
from medvlm.vlm.types import Decoding, Shot, cache_key

TEST_IDS = ["P000", "P001"]
TRAIN_IDS = ["P002", "P003", "P004", "P005"]  # HGG, LGG, HGG, LGG (write_tiny_work: even ids are HGG)


@pytest.fixture(scope="module")
def shot_work(tmp_path_factory, make_tiny_work) -> Path:
    """8 patients; test P000-P001, fold 0 train P002-P005 (2 LGG, 2 HGG), val P006-P007. Tumour slices per
    patient: 3 axial, 3 coronal, 4 sagittal, so fold 0 has 6 axial training slices of each class."""
    work = make_tiny_work(tmp_path_factory.mktemp("shots"), n_patients=8)
    (work / "splits.json").write_text(json.dumps({"seed": 0, "test": TEST_IDS, "folds": [
        {"train": TRAIN_IDS, "val": ["P006", "P007"]}]}))
    return work


def _labels(work: Path) -> dict[str, int]:
    manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str})
    return dict(zip(manifest["patient_id"], manifest["label"], strict=True))


def _png(work: Path, shot_id: str) -> bytes:
    from medvlm.data.slices import patient_slices

    manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str}).set_index("patient_id",
                                                                                        drop=False)
    pid, orientation, index = shot_id.split(":")
    [image] = patient_slices(manifest.loc[pid], orientation, indices=[int(index)])
    return image.png


# ------------------------------------------------------------------------------------------ pure parts
def test_draws_are_balanced_distinct_and_seeded():
    pool = {0: [Example("L", "axial", i, 0) for i in range(5)],
            1: [Example("H", "axial", i, 1) for i in range(5)]}
    for k in range(0, 6):
        drawn = draw_examples(pool, k, n_classes=2, seed=3)
        counts = Counter(e.label for e in drawn)
        assert len(drawn) == k and len({e.id for e in drawn}) == k
        assert abs(counts[0] - counts[1]) <= 1  # balanced: k // 2 each, the odd one to a random class
        assert drawn == draw_examples(pool, k, n_classes=2, seed=3)
    draws = {tuple(e.id for e in draw_examples(pool, 2, n_classes=2, seed=s)) for s in range(20)}
    assert len(draws) > 5  # the seed matters
    odd = Counter(draw_examples(pool, 1, n_classes=2, seed=s)[0].label for s in range(40))
    assert odd[0] > 5 and odd[1] > 5  # K=1: either class, not always the same
    assert class_counts(7, 3, seed=0).count(3) == 1 and sum(class_counts(7, 3, seed=0)) == 7
    assert Example("P1", "axial", 4, 0).id == "P1:axial:4"


def test_sampler_reads_each_volume_once_per_orientation_and_keeps_draws():
    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import ShotSampler

    pool = {"axial": {0: [Example(p, "axial", i, 0) for p in ("L1", "L2") for i in range(4)],
                      1: [Example(p, "axial", i, 1) for p in ("H1", "H2") for i in range(4)]}}
    calls = []

    def render(pid, orientation, indices):
        calls.append((pid, orientation, tuple(indices)))
        return {i: f"{pid}/{orientation}/{i}".encode() for i in indices}

    sampler = ShotSampler(pool, 2, n_classes=2, seed=0, render=render)
    task = get_task("brats-grading")
    for q in range(30):
        shots = sampler.shots(("Q", "axial", q), prompt_text="Grade?", task=task)
        assert [s.image for s in shots] == [s.id.replace(":", "/").encode() for s in shots]
        assert sorted(s.answer for s in shots) == ["Choice: 0", "Choice: 1"]
        assert shots == sampler.shots(("Q", "axial", q), prompt_text="Grade?", task=task)
    assert sorted(calls) == [(p, "axial", (0, 1, 2, 3)) for p in ("H1", "H2", "L1", "L2")]  # once each
    assert sampler.n_rendered == 4
    assert sampler.ids(("Q", "axial", 0)) == ";".join(e.id for e in sampler.examples("Q", "axial", 0))


def test_check_shots_checks_every_view_and_names_the_largest_k():
    from types import SimpleNamespace

    from medvlm.errors import ConfigError
    from medvlm.vlm.fewshot import check_shots

    def pool(**sizes):  # view -> class sizes
        return {view: {c: [Example("P", view, i, c) for i in range(n)] for c, n in enumerate(ns)}
                for view, ns in sizes.items()}

    task = SimpleNamespace(n_classes=2, classes=("HGG", "LGG"))
    views = pool(axial=(20, 12), sagittal=(11, 30))
    check_shots(22, views, task=task, fold=1)  # 11 of each class: every view serves it
    with pytest.raises(ConfigError, match=r"^--shots 23: needs 12 example\(s\) of each class, but the "
                       r"training cohort of fold 1 has only 11 sagittal slice\(s\) of class HGG; "
                       r"use --shots 22 or fewer$"):
        check_shots(23, views, task=task, fold=1)
    # the hint's K passes, K + 1 does not, and the sampler serves every K that passes (any seed)
    three = SimpleNamespace(n_classes=3, classes=("a", "b", "c"))
    views3 = pool(image=(5, 2, 9))
    check_shots(6, views3, task=three, fold=0, unit="image")
    for seed in range(20):
        assert len(draw_examples(views3["image"], 6, n_classes=3, seed=seed)) == 6
    with pytest.raises(ConfigError, match=r"only 2 image\(s\) of class b; use --shots 6 or fewer$"):
        check_shots(7, views3, task=three, fold=0, unit="image")


def test_answer_text_follows_the_prompts_codes():
    from medvlm.tasks import get_task
    from medvlm.vlm.prompts import load_prompt

    task = get_task("brats-grading")
    swapped = task.for_prompt(load_prompt("seed-swapped"))
    assert [answer_text(task, c) for c in (0, 1)] == ["Choice: 0", "Choice: 1"]
    assert [answer_text(swapped, c) for c in (0, 1)] == ["Choice: 1", "Choice: 0"]
    assert json.loads(answer_text(task, 1, json_answer=True)) == {"choice": 1, "reasoning": ""}


def test_cache_key_changes_only_with_shots():
    common = dict(backend="openai", model="m", adapter=None, prompt="Q", image=b"png", decoding=Decoding(),
                  repeat=0)
    # the key medvlm computed before few-shot existed (same inputs): zero-shot caches keep their answers
    assert cache_key(**common) == "aa6a7b601602b65dd9086ab20f77f713117ff18f6bba34581fc64adf37a77a17"
    assert cache_key(**common, shots=()) == cache_key(**common)
    one = (Shot("P2:axial:3", b"a", "Q", "Choice: 1"),)
    keyed = cache_key(**common, shots=one)
    assert keyed != cache_key(**common)
    assert cache_key(**common, shots=(Shot("other:id", b"a", "Q", "Choice: 1"),)) == keyed  # id: records only
    assert cache_key(**common, shots=(Shot("P2:axial:3", b"b", "Q", "Choice: 1"),)) != keyed
    assert cache_key(**common, shots=(Shot("P2:axial:3", b"a", "Q", "Choice: 0"),)) != keyed


# ------------------------------------------------------------------------------- eval-vlm, openai server
def _eval(work: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["eval-vlm", str(work), "--out", str(out), "--backend", "openai", "--model", "m",
            "--base-url", url,
            "--bootstrap", "0", "--no-progress", *extra]


@pytest.mark.slow
def test_openai_few_shot_requests(shot_work, tmp_path, fake_server):
    from medvlm.vlm.openai_compat import data_uri

    run = tmp_path / "run"
    args = _eval(shot_work, run, fake_server.url, "--shots", "2", "--orientations", "axial,coronal")
    assert invoke(args) == 0
    slices = pd.read_csv(run / "slices.csv", dtype={"patient_id": str})
    assert list(slices.columns)[-1] == "shots" and len(slices) == 2 * (3 + 3)
    assert len(fake_server.bodies) == len(slices)
    labels = _labels(shot_work)
    expected = Counter()
    for row in slices.itertuples():
        ids = row.shots.split(";")
        assert len(ids) == 2 and len(set(ids)) == 2
        pids = [i.split(":")[0] for i in ids]
        assert set(pids) <= set(TRAIN_IDS)  # training patients only, never a test patient
        assert {i.split(":")[1] for i in ids} == {row.orientation}  # the question's orientation
        assert sorted(labels[p] for p in pids) == [0, 1]  # class-balanced: one LGG, one HGG
        turns = tuple((data_uri(_png(shot_work, i)), f"Choice: {labels[i.split(':')[0]]}") for i in ids)
        expected[turns] += 1
    seen = Counter()
    for body in fake_server.bodies:
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
        images = [c for m in messages if m["role"] == "user" for c in m["content"]
                  if c["type"] == "image_url"]
        assert len(images) == 3  # two examples and the question
        assert all(m["content"][-1]["text"] == messages[-1]["content"][-1]["text"]
                   for m in messages if m["role"] == "user")  # the same prompt in every user turn
        seen[tuple((messages[i]["content"][0]["image_url"]["url"], messages[i + 1]["content"])
                   for i in (0, 2))] += 1
    assert seen == expected  # each request shows the examples slices.csv names, answered with their labels
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["shots"] == 2
    # a rerun draws the same examples: everything from the cache, nothing sent
    before = len(fake_server.bodies)
    assert invoke(args) == 0
    assert len(fake_server.bodies) == before
    assert json.loads((run / "metrics.json").read_text())["n_sent"] == 0
    again = pd.read_csv(run / "slices.csv", dtype={"patient_id": str})
    assert again["shots"].tolist() == slices["shots"].tolist()


def test_swapped_codes_and_zero_shot(shot_work, tmp_path, fake_server):
    from medvlm.vlm.openai_compat import data_uri

    labels = _labels(shot_work)
    assert invoke(_eval(shot_work, tmp_path / "s", fake_server.url, "--shots", "2", "--orientations", "axial",
                        "--prompt", "seed-swapped")) == 0
    slices = pd.read_csv(tmp_path / "s" / "slices.csv", dtype={"patient_id": str})
    patient_of = {data_uri(_png(shot_work, i)): i.split(":")[0]
                  for ids in slices["shots"] for i in ids.split(";")}
    assert len(fake_server.bodies) == 6
    for body in fake_server.bodies:
        m = body["messages"]
        for user, assistant in ((m[0], m[1]), (m[2], m[3])):
            pid = patient_of[user["content"][0]["image_url"]["url"]]
            assert assistant["content"] == f"Choice: {1 - labels[pid]}"  # seed-swapped: LGG is 1, HGG 0
    # K = 0 (the default): one user turn, no shots column
    n = len(fake_server.bodies)
    assert invoke(_eval(shot_work, tmp_path / "z", fake_server.url, "--orientations", "axial")) == 0
    assert all(len(b["messages"]) == 1 for b in fake_server.bodies[n:])
    assert "shots" not in pd.read_csv(tmp_path / "z" / "slices.csv").columns


def test_bad_shots_exit_2(shot_work, tiny_work, tmp_path, capsys):
    base = ["eval-vlm", str(shot_work), "--backend", "mock", "--model", "hash", "--no-progress",
            "--bootstrap", "0"]
    out = tmp_path / "big"
    # 6 axial, 6 coronal, 8 sagittal training slices per class: 13 needs 7 of each class, 12 and 7 are served
    assert invoke([*base, "--out", str(out), "--shots", "13"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("medvlm: error: --shots 13: needs 7 example(s) of each class, but the training cohort of "
                   "fold 0 has only 6 axial slice(s) of class LGG; use --shots 12 or fewer")
    assert not (out / "run.json").exists()
    assert invoke([*base, "--out", str(tmp_path / "ok"), "--shots", "12"]) == 0
    assert invoke([*base, "--out", str(tmp_path / "ok7"), "--shots", "7", "--orientations", "axial"]) == 0
    capsys.readouterr()
    for cohort in ("train", "all"):
        assert invoke([*base, "--out", str(tmp_path / cohort), "--shots", "1", "--cohort", cohort]) == 2
        err = capsys.readouterr().err
        assert f"--shots 1 with --cohort {cohort}" in err and len(err.strip().splitlines()) == 1
    assert invoke([*base, "--out", str(tmp_path / "neg"), "--shots", "-1"]) == 2
    assert "--shots" in capsys.readouterr().err
    # a split whose test cohort holds a training patient of the fold (tiny_work: P000 in both)
    assert invoke(["eval-vlm", str(tiny_work), "--out", str(tmp_path / "overlap"), "--backend", "mock",
                   "--model", "hash", "--shots", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "patient P000 is both evaluated and in the training cohort of --fold 0" in err


# --------------------------------------------------------------------------------------- transformers
@pytest.mark.slow
def test_transformers_few_shot_chat(shot_work, tiny_vlm, tmp_path):
    import warnings

    from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm
    from medvlm.vlm.hf import build_chat_text
    from medvlm.vlm.tiny import build_tiny_processor

    proc = build_tiny_processor()
    shots = (Shot("a", b"x", "Grade?", "Choice: 1"), Shot("b", b"y", "Grade?", "Choice: 0"))
    text = build_chat_text(proc, "Grade?", shots=shots)
    assert text.count("<|image|>") == 3 and text.endswith("assistant<|end_header_id|>\n\nChoice:")
    assert text.index("Choice: 1<|eot_id|>") < text.index("Choice: 0<|eot_id|>") < text.rindex("<|image|>")
    common = dict(backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False,
                  orientations=["axial"], scoring="logprobs", batch_size=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        few = evaluate_vlm(shot_work, tmp_path / "few", VLMEvalConfig(**common, shots=2))
    mllama = [w for w in caught if "one image per conversation" in str(w.message)]
    assert len(mllama) == 1  # warned once, and still ran
    zero = evaluate_vlm(shot_work, tmp_path / "zero", VLMEvalConfig(**common))
    s_few = pd.read_csv(tmp_path / "few" / "slices.csv")
    s_zero = pd.read_csv(tmp_path / "zero" / "slices.csv")
    assert few.n_calls == zero.n_calls == 6 and few.n_unparsed == 0
    assert ((s_few[["p_lgg", "p_hgg", "p_ng"]].sum(axis=1) - 1).abs() < 1e-6).all()
    assert (s_few["p_hgg"] - s_zero["p_hgg"]).abs().max() > 1e-6  # the examples reach the model
    gen = evaluate_vlm(shot_work, tmp_path / "gen", VLMEvalConfig(**{**common, "scoring": "generate"},
                                                                   shots=1, max_new_tokens=3))
    gen_slices = pd.read_csv(tmp_path / "gen" / "slices.csv")
    assert gen.n_calls == 6 and gen_slices["shots"].str.count(":").eq(2).all()  # one example each


# ----------------------------------------------------------------------------------------- consistency
def test_consistency_shots(shot_work, tmp_path, fake_server, capsys):
    run = tmp_path / "c"
    common = ["consistency", str(shot_work), "--backend", "openai", "--model", "m", "--base-url",
              fake_server.url, "--repeats", "2", "--temperature", "0.5", "--no-progress"]
    args = [*common, "--out", str(run), "--shots", "2"]
    assert invoke(args) == 0
    images = json.loads((run / "run.json").read_text())["config"]["images"]
    assert [im["patient_id"] for im in images] == TEST_IDS
    labels = _labels(shot_work)
    for im in images:
        pids = [i.split(":")[0] for i in im["shots"].split(";")]
        assert set(pids) <= set(TRAIN_IDS) and sorted(labels[p] for p in pids) == [0, 1]
    assert len(fake_server.bodies) == 4
    for body in fake_server.bodies:
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    by_question = {}
    for body in fake_server.bodies:  # both repeats of an image show the same examples
        question = body["messages"][-1]["content"][0]["image_url"]["url"]
        by_question.setdefault(question, set()).add(json.dumps(body["messages"][:-1]))
    assert len(by_question) == 2 and all(len(v) == 1 for v in by_question.values())
    assert invoke(args) == 0 and len(fake_server.bodies) == 4  # rerun: nothing sent
    assert invoke([*common, "--out", str(tmp_path / "c2"), "--shots", "1", "--patient", "P002"]) == 2
    assert "patient P002 is both evaluated and in the training cohort" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ slice-level task
@pytest.mark.slow
def test_slice_task_examples_are_labelled_training_slices(synth_dir, tmp_path_factory):
    from medvlm.data.split import make_split
    from medvlm.tasks import prepare_work
    from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm

    root = tmp_path_factory.mktemp("tumour_shots")
    work = root / "work"
    prepare_work(synth_dir, work, "brats-tumour", shape=(24, 32, 32), progress=False)
    make_split(work, test_fraction=0.25, folds=2, seed=0)
    config = VLMEvalConfig(backend="mock", model="hash", n_boot=0, progress=False, orientations=["axial"],
                           shots=2)
    res = evaluate_vlm(work, root / "run", config)
    slices = pd.read_csv(root / "run" / "slices.csv", dtype={"patient_id": str})
    assert res.n_calls == len(slices) > 0
    units = pd.read_csv(work / "units.csv", dtype={"patient_id": str})
    keys = zip(units["patient_id"], units["orientation"], units["slice_index"], units["label"], strict=True)
    label = {f"{p}:{o}:{i}": int(lab) for p, o, i, lab in keys}
    train = set(json.loads((work / "splits.json").read_text())["folds"][0]["train"])
    for ids in slices["shots"]:
        shown = ids.split(";")
        assert all(i in label for i in shown)  # labelled slices of units.csv
        assert {i.split(":")[0] for i in shown} <= train and {i.split(":")[1] for i in shown} == {"axial"}
        assert sorted(label[i] for i in shown) == [0, 1]  # one slice without, one with tumour


# ------------------------------------------------------------------------ pure parts, exact (mutation run)
def test_class_counts_and_draws_exactly():
    import numpy as np

    from medvlm.data.controls import derived_seed

    assert class_counts(6, 3, seed=0) == [2, 2, 2] and class_counts(0, 2, seed=5) == [0, 0]
    for seed in range(5):  # the remainder goes to classes drawn without replacement from the seed
        extra = np.random.default_rng(seed).choice(4, size=3, replace=False)
        assert class_counts(7, 4, seed=seed) == [1 + int(c in extra) for c in range(4)]
    pool = {0: [Example("L", "axial", i, 0) for i in range(6)],
            1: [Example("H", "coronal", i, 1) for i in range(4)]}
    for seed in range(12):  # (the odd example goes to class 0 for some seeds, to class 1 for others)
        counts = class_counts(5, 2, seed=derived_seed("shot-classes", seed))
        rng = np.random.default_rng(seed)
        out = [pool[c][int(i)] for c in (0, 1)
               for i in rng.choice(len(pool[c]), size=counts[c], replace=False)]
        want = [out[int(i)] for i in rng.permutation(len(out))]
        assert draw_examples(pool, 5, n_classes=2, seed=seed) == want
    assert draw_examples({0: pool[0]}, 2, n_classes=1, seed=0) != []  # a class missing from the pool ...
    with pytest.raises(ConfigError, match=r"^--shots 2: class 1 has only 0 training example\(s\)$"):
        draw_examples({0: pool[0]}, 2, n_classes=2, seed=0)  # ... is a class with no candidate
    with pytest.raises(ConfigError, match=r"^--shots 10: class 1 has only 4 training example\(s\)$"):
        draw_examples(pool, 10, n_classes=2, seed=0)
    assert len(draw_examples(pool, 8, n_classes=2, seed=1)) == 8  # every candidate of class 1: allowed
    assert Example("P1", "image", 0, 1, image_id="x7").id == "P1:x7"


def test_answer_format_and_the_cohort_checks(tmp_path):
    from types import SimpleNamespace

    from medvlm.vlm.fewshot import check_cohort, check_shots, wants_json

    assert wants_json("Grade?") is False and wants_json("Grade?", "json") is True
    assert wants_json('Answer as {"choice": 1}') is True and wants_json("choice", "none") is False
    letters = SimpleNamespace(codes=("A", "B"), answer_prefix="Answer:")
    assert answer_text(letters, 1) == "Answer: B"
    assert answer_text(letters, 0, json_answer=True) == '{"choice": "A", "reasoning": ""}'
    assert answer_text(SimpleNamespace(codes=("0", "1"), answer_prefix=""), 1) == "1"  # no prefix: no space
    for cohort, what in (("train", "the very patients evaluated"), ("all", "which --cohort all includes")):
        with pytest.raises(ConfigError, match=rf"^--shots 2 with --cohort {cohort}: the examples come from "
                                              rf"the training cohort of --fold 1, {what}; evaluate --cohort "
                                              r"val or test$"):
            check_cohort(2, cohort=cohort, fold=1, evaluated=[], training=[], work=tmp_path)
    with pytest.raises(ConfigError, match=rf"^--shots 3: patient P2 is both evaluated and in the training "
                                          rf"cohort of --fold 0 \({tmp_path / 'splits.json'}\); the examples "
                                          r"must come from other patients$"):
        check_cohort(3, cohort="val", fold=0, evaluated=["P9", "P5", "P2"], training=["P5", "P2", "P1"],
                     work=tmp_path)
    check_cohort(3, cohort="test", fold=0, evaluated=["P9"], training=["P1"], work=tmp_path)
    task = SimpleNamespace(n_classes=2, classes=("HGG", "LGG"))
    check_shots(5, {}, task=task, fold=0)  # no view: nothing to check
    one = {"slice": {0: [Example("P", "slice", i, 0) for i in range(2)], 1: [Example("P", "slice", 0, 1)]}}
    check_shots(2, one, task=task, fold=0)
    with pytest.raises(ConfigError, match=r"^--shots 3: needs 2 example\(s\) of each class, but the "
                                          r"training cohort of fold 0 has only 1 slice\(s\) of class LGG; "
                                          r"use --shots 2 or fewer$"):
        check_shots(3, one, task=task, fold=0)


def test_sampler_prompt_callable_and_column():
    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import SHOTS_COLUMN, ShotSampler

    pool = {"axial": {0: [Example("L1", "axial", i, 0) for i in range(3)],
                      1: [Example("H1", "axial", i, 1) for i in range(3)]},
            "coronal": {0: [Example("L1", "coronal", 5, 0)], 1: [Example("H1", "coronal", 6, 1)]}}
    renders = []

    def render(pid, orientation, indices):
        renders.append((pid, orientation, list(indices)))
        return {i: f"{pid}-{orientation}-{i}".encode() for i in indices}

    sampler = ShotSampler(pool, 2, n_classes=2, seed=4, render=render)
    task = get_task("brats-grading")
    shots = sampler.for_prompt("Grade?", task, key=lambda meta: meta["key"])({"key": ("Q", "coronal", 2)})
    assert sorted((s.id, s.image, s.prompt) for s in shots) == [
        ("H1:coronal:6", b"H1-coronal-6", "Grade?"), ("L1:coronal:5", b"L1-coronal-5", "Grade?")]
    assert sorted(s.answer for s in shots) == ["Choice: 0", "Choice: 1"]
    as_json = sampler.for_prompt("Grade?", task, "json")(("Q", "coronal", 2))
    assert sorted(s.answer for s in as_json) == ['{"choice": 0, "reasoning": ""}',
                                                 '{"choice": 1, "reasoning": ""}']
    assert sorted(renders) == [("H1", "coronal", [6]), ("L1", "coronal", [5])] and sampler.n_rendered == 2
    sampler.image(Example("L1", "axial", 2, 0))
    assert renders[-1] == ("L1", "axial", [0, 1, 2]) and sampler.n_rendered == 3
    calls = pd.DataFrame({"patient_id": ["Q", "R"], "orientation": ["axial", "coronal"],
                          "slice_index": [1, 4]})
    out = sampler.add_column(calls)
    assert list(out.columns) == [*calls.columns, SHOTS_COLUMN] and SHOTS_COLUMN not in calls.columns
    assert out[SHOTS_COLUMN].tolist() == [sampler.ids(("Q", "axial", 1)), sampler.ids(("R", "coronal", 4))]
    assert sampler.examples("Q", "axial", 1) != sampler.examples("Q", "axial", 2)


def test_sampler_draws_from_the_question_and_keeps_its_files_in_a_folder_of_its_own(tmp_path, monkeypatch):
    import gc
    import tempfile

    import medvlm.vlm.fewshot as fs
    from medvlm.data.controls import derived_seed

    pool = {"axial": {0: [Example("L1", "axial", i, 0) for i in range(4)],
                      1: [Example("H1", "axial", i, 1) for i in range(4)]}}
    sampler = fs.ShotSampler(pool, 2, n_classes=2, seed=9,
                             render=lambda pid, o, idx: {i: f"{pid}{i}".encode() for i in idx})
    for key in (("Q1", "axial", 3), ("Q2", "axial", 3), ("Q1", "axial", 4)):
        assert sampler.examples(*key) == draw_examples(pool["axial"], 2, n_classes=2,
                                                       seed=derived_seed("shots", *key, 9))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(fs, "_IMAGE_CACHE_SIZE", 2)
    a, b, c = (Example("L1", "axial", i, 0) for i in (0, 1, 2))
    assert [sampler.image(e) for e in (a, b, c)] == [b"L10", b"L11", b"L12"]
    [folder] = list(tmp_path.iterdir())  # one volume group rendered into the sampler's own folder
    assert folder.name.startswith("medvlm-shots-") and len(list(folder.iterdir())) == 4
    for f in folder.iterdir():
        f.unlink()
    assert [sampler.image(e) for e in (b, c)] == [b"L11", b"L12"]  # the two most recent: from memory
    with pytest.raises(FileNotFoundError):
        sampler.image(a)  # the least recently used was let go (and its file is gone)
    del sampler
    gc.collect()
    assert not folder.exists()  # removed with the sampler


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_the_training_pool_of_every_slice_follows_each_axis_size(shot_work):
    """``--slices all``: every slice along the axis is a candidate, counted from orig_shape 12x12x8 (x, y,
    z): 8 axial (z) and 12 sagittal (x) slices per training patient, labelled with its label."""
    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import training_pool

    training, pool = training_pool(shot_work, task=get_task("brats-grading"), fold=0,
                                   orientations=["axial", "sagittal"], selection="all", modalities=["flair"])
    assert sorted(training) == TRAIN_IDS
    labels = _labels(shot_work)
    for orientation, size in (("axial", 8), ("sagittal", 12)):
        got = sorted((e.patient_id, e.slice_index, e.label) for c in (0, 1) for e in pool[orientation][c])
        assert got == sorted((p, i, labels[p]) for p in TRAIN_IDS for i in range(size))


def test_the_training_pool_of_a_slice_task_is_its_labelled_training_slices(shot_work, tmp_path):
    """A slice-level task: the training patients' rows of units.csv in the orientations asked, grouped by
    orientation and label, in cohort then slice order; a label beyond the task's classes is left out."""
    import shutil

    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import training_pool

    work = tmp_path / "w"
    shutil.copytree(shot_work, work)
    rows = [("P003", "axial", 5, 1), ("P002", "axial", 4, 0), ("P002", "axial", 2, 1),
            ("P002", "coronal", 3, 1), ("P006", "axial", 1, 1), ("P004", "sagittal", 7, 0),
            ("P005", "axial", 0, 2)]
    pd.DataFrame(rows, columns=["patient_id", "orientation", "slice_index", "label"]).to_csv(
        work / "units.csv", index=False)
    training, pool = training_pool(work, task=get_task("brats-tumour"), fold=0, selection="tumour",
                                   orientations=["axial", "sagittal"], modalities=["flair"])
    assert training == TRAIN_IDS
    assert pool == {"axial": {0: [Example("P002", "axial", 4, 0)],
                              1: [Example("P002", "axial", 2, 1), Example("P003", "axial", 5, 1)]},
                    "sagittal": {0: [Example("P004", "sagittal", 7, 0)], 1: []}}
    from medvlm.vlm.fewshot import make_sampler

    sampler = make_sampler(work, 2, task=get_task("brats-tumour"), cohort="val", fold=0, evaluated=["P006"],
                           orientations=["axial"], selection="tumour", modalities=["flair"])
    assert sampler is not None and sampler.k == 2  # a slice task has slices to show


def test_the_training_pool_reads_the_axis_size_from_the_volume_without_orig_shape(shot_work):
    from medvlm.data.cohorts import read_manifest
    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import _axis_size, training_pool

    manifest = read_manifest(shot_work, ok_only=True).set_index("patient_id", drop=False)
    bare = manifest.drop(columns="orig_shape")
    row = bare.loc["P002"]
    assert [_axis_size(row, o, "flair") for o in ("sagittal", "coronal", "axial")] == [12, 12, 8]
    assert _axis_size(manifest.loc["P002"], "axial", "nope") == 8  # orig_shape first: the file is not read
    with pytest.raises(KeyError):
        _axis_size(row, "axial", "nope")  # without orig_shape the modality's file is read
    from medvlm.errors import DataError

    with pytest.raises(DataError, match=r"^patient P002: cannot read "):
        broken = row.copy()
        broken["flair"] = "/no/such.nii.gz"
        _axis_size(broken, "axial", "flair")
    kw = dict(task=get_task("brats-grading"), fold=0, orientations=["axial", "sagittal"], selection="all",
              modalities=["flair"])
    assert training_pool(shot_work, manifest=bare, **kw) == training_pool(shot_work, **kw)
    import shutil

    copy = shutil.copytree(shot_work, shot_work.parent / "no_orig_shape", dirs_exist_ok=True)
    on_disk = pd.read_csv(copy / "manifest.csv", dtype=str, keep_default_na=False)
    on_disk.drop(columns="orig_shape").to_csv(copy / "manifest.csv", index=False)
    assert training_pool(copy, **kw) == training_pool(shot_work, **kw)  # read from the volumes


def test_make_sampler_hands_an_image_task_its_control_and_seed(monkeypatch):
    import dataclasses

    from medvlm.tasks import get_task
    from medvlm.vlm import fewshot_images
    from medvlm.vlm.fewshot import make_sampler

    seen = {}
    monkeypatch.setattr(fewshot_images, "make_image_sampler", lambda work, k, **kw: seen.update(kw) or "s")
    task = get_task("brats-grading")
    args = dict(cohort="test", fold=1, evaluated=["a"], orientations=["axial"], selection="tumour",
                modalities=["flair"])
    assert make_sampler("W", 0, task=task, **args) is None
    assert make_sampler("W", 2, task=dataclasses.replace(task, unit="image"), image="blank", **args) == "s"
    assert seen == {"task": dataclasses.replace(task, unit="image"), "cohort": "test", "fold": 1,
                    "evaluated": ["a"], "image": "blank", "seed": 0}  # the default seed is 0
    make_sampler("W", 2, task=dataclasses.replace(task, unit="image"), seed=7, **args)
    assert (seen["image"], seen["seed"]) == ("real", 7)


def test_a_samplers_examples_are_rendered_as_the_questions_are(shot_work):
    from medvlm.data.cohorts import read_manifest
    from medvlm.data.slices import patient_slices
    from medvlm.tasks import get_task
    from medvlm.vlm.fewshot import make_sampler

    pytest.importorskip("torchio")
    manifest = read_manifest(shot_work, ok_only=True).set_index("patient_id", drop=False)
    args = dict(task=get_task("brats-grading"), cohort="val", fold=0, evaluated=["P006"],
                orientations=["axial"], selection="all", modalities=["flair", "t1"])
    shown = {}
    for image, artifact in (("real", "spike:0.7"), ("noise", None)):
        sampler = make_sampler(shot_work, 2, image=image, artifact=artifact, seed=3, **args)
        want = {s.slice_index: s.png for s in patient_slices(
            manifest.loc["P002"], "axial", selection="all", modalities=("flair", "t1"), indices=[5, 1],
            image=image, artifact=artifact, seed=3)}
        assert sampler.render("P002", "axial", [5, 1]) == want and sorted(want) == [1, 5]
        shown = shown if image == "noise" else want
    other_seed = make_sampler(shot_work, 2, artifact="spike:0.7", seed=4, **args)
    assert other_seed.render("P002", "axial", [5])[5] != shown[5]  # the spike drawn with the seed given
