"""Few-shot on a 2D image task (``eval-vlm --shots K`` / ``consistency --shots K`` on synth cxr): K
class-balanced training images per question, the PNG bytes eval-vlm sends for them, their true labels as
the assistant turns, named ``patient_id:image_id`` in slices.csv; K above the smallest class refused."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from medvlm.cli import invoke


@pytest.fixture(scope="module")
def cxr_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr-shots")
    assert invoke(["synth", str(root / "data"), "--task", "cxr", "--patients", "16", "--size", "small",
                   "--seed", "3"]) == 0
    work = root / "work"
    assert invoke(["prepare", str(root / "data"), "--out", str(work), "--task",
                   str(root / "data" / "cxr.yaml")]) == 0
    assert invoke(["split", str(work), "--folds", "2", "--test-fraction", "0.25"]) == 0
    return root, work


def _training(work):
    """(image id -> (patient, label), training image ids of fold 0)."""
    manifest = pd.read_csv(work / "manifest.csv", dtype={"id": str, "patient_id": str})
    ok = manifest[manifest["status"] == "ok"]
    info = {i: (p, int(label)) for i, p, label in zip(ok["id"], ok["patient_id"], ok["label"], strict=True)}
    return info, json.loads((work / "splits.json").read_text())["folds"][0]["train"]


def _eval(work, out, url, *extra):
    return ["eval-vlm", str(work), "--out", str(out), "--backend", "openai", "--model", "m",
            "--base-url", url, "--bootstrap", "0", "--no-progress", *extra]


def test_image_few_shot_requests(cxr_work, fake_server):
    from medvlm.data.images import image_png
    from medvlm.vlm.openai_compat import data_uri

    root, work = cxr_work
    info, train_images = _training(work)
    test_images = json.loads((work / "splits.json").read_text())["test"]
    train_patients = {info[i][0] for i in train_images}
    test_patients = {info[i][0] for i in test_images}
    assert train_patients and not train_patients & test_patients
    run = root / "runs" / "shots2"
    args = _eval(work, run, fake_server.url, "--shots", "2")
    assert invoke(args) == 0
    calls = pd.read_csv(run / "slices.csv", dtype={"patient_id": str, "image_id": str, "shots": str})
    assert list(calls.columns)[-1] == "shots" and sorted(calls["image_id"]) == sorted(test_images)
    assert len(fake_server.bodies) == len(calls)
    expected = Counter()
    for row in calls.itertuples():
        ids = row.shots.split(";")
        assert len(ids) == 2 and len(set(ids)) == 2
        pairs = [i.split(":") for i in ids]
        assert all(len(p) == 2 and info[p[1]][0] == p[0] for p in pairs)  # patient_id:image_id
        assert {p[1] for p in pairs} <= set(train_images)  # training images only
        assert not {p[0] for p in pairs} & test_patients  # never a patient of the evaluated cohort
        assert sorted(info[p[1]][1] for p in pairs) == [0, 1]  # class-balanced
        expected[tuple((data_uri(image_png(work, p[1])), f"Choice: {info[p[1]][1]}") for p in pairs)] += 1
    seen = Counter()
    for body in fake_server.bodies:
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
        images = [c for m in messages if m["role"] == "user" for c in m["content"]
                  if c["type"] == "image_url"]
        assert len(images) == 3  # two examples and the question
        seen[tuple((messages[i]["content"][0]["image_url"]["url"], messages[i + 1]["content"])
                   for i in (0, 2))] += 1
    assert seen == expected  # the examples slices.csv names, their PNG bytes, answered with their labels
    draws = set(calls["shots"])
    assert len(draws) > 1  # seeded per question, not one fixed set
    before = len(fake_server.bodies)
    assert invoke(args) == 0  # a rerun: the same draws, all from the cache
    assert len(fake_server.bodies) == before
    assert json.loads((run / "metrics.json").read_text())["n_sent"] == 0
    again = pd.read_csv(run / "slices.csv", dtype=str)
    assert again["shots"].tolist() == calls["shots"].tolist()


def test_image_few_shot_refusals(cxr_work, fake_server, capsys):
    root, work = cxr_work
    info, train_images = _training(work)
    counts = Counter(info[i][1] for i in train_images)
    smallest, limit = min(counts.values()), min(counts.values()) * len(counts)  # ceil(K / classes) each
    capsys.readouterr()
    assert invoke(_eval(work, root / "runs" / "big", fake_server.url, "--shots", str(limit + 1))) == 2
    err = capsys.readouterr().err
    assert (f"--shots {limit + 1}: needs {smallest + 1} example(s) of each class, but the training cohort "
            f"of fold 0 has only {smallest} image(s)") in err and f"use --shots {limit} or fewer" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    argv = _eval(work, root / "runs" / "tr", fake_server.url, "--shots", "1", "--cohort", "train")
    assert invoke(argv) == 2
    assert "--cohort train" in capsys.readouterr().err
    assert not fake_server.bodies


def test_image_consistency_shots(cxr_work, fake_server):
    from medvlm.data.images import image_png
    from medvlm.vlm.openai_compat import data_uri

    root, work = cxr_work
    info, train_images = _training(work)
    out = root / "runs" / "cons"
    assert invoke(["consistency", str(work), "--out", str(out), "--backend", "openai", "--model", "m",
                   "--base-url", fake_server.url, "--repeats", "2", "--temperature", "0.7", "--shots", "2",
                   "--no-progress"]) == 0
    images = json.loads((out / "run.json").read_text())["config"]["images"]
    assert images and all(len(im["shots"].split(";")) == 2 for im in images)
    for im in images:
        pairs = [s.split(":") for s in im["shots"].split(";")]
        assert {p[1] for p in pairs} <= set(train_images)
        assert sorted(info[p[1]][1] for p in pairs) == [0, 1]
    assert len(fake_server.bodies) == 2 * len(images)
    for body in fake_server.bodies:
        urls = [c["image_url"]["url"] for m in body["messages"] if m["role"] == "user" for c in m["content"]
                if c["type"] == "image_url"]
        assert len(urls) == 3
    first = images[0]["shots"].split(";")
    assert fake_server.bodies[0]["messages"][0]["content"][0]["image_url"]["url"] in {
        data_uri(image_png(work, s.split(":")[1])) for s in first}


# ------------------------------------------------------------------------------- the sampler in isolation
def _pool():
    from medvlm.vlm.fewshot import Example

    return {"image": {c: [Example(f"P{c}{i}", "image", 0, c, image_id=f"i{c}{i}") for i in range(3)]
                      for c in range(2)}}


def test_image_sampler_draws_per_question_and_keeps_recent_images(monkeypatch):
    import medvlm.vlm.fewshot_images as fi
    from medvlm.data.controls import derived_seed
    from medvlm.vlm.fewshot import draw_examples

    rendered = []

    def render(image_id):
        rendered.append(image_id)
        return image_id.encode()

    sampler = fi.ImageShotSampler(_pool(), 2, n_classes=2, seed=7, render=render)
    for key in (("A", "a1"), ("B", "b1"), ("A", "image", 3)):  # eval-vlm's and consistency's keys
        want = draw_examples(_pool()["image"], 2, n_classes=2, seed=derived_seed("shots", *map(str, key), 7))
        assert sampler.examples(*key) == want
    seen = [sampler.examples(f"P{i}", f"x{i}") for i in range(12)]
    assert len({tuple(e.id for e in s) for s in seen}) > 1  # the questions draw differently
    assert sampler.examples("A", 1) == sampler.examples("A", "1")  # keys compared as text
    assert sampler.ids(("A", "a1")) == ";".join(e.id for e in sampler.examples("A", "a1"))
    monkeypatch.setattr(fi, "_IMAGE_CACHE_SIZE", 2)
    ex = {e.image_id: e for c in _pool()["image"].values() for e in c}
    for image_id in ("i00", "i01", "i00", "i02", "i00", "i01"):
        assert sampler.image(ex[image_id]) == image_id.encode()
    # i00 used again before i02 came, so i01 (least recently used) went; i01 rendered again at the end
    assert rendered == ["i00", "i01", "i02", "i01"] and sampler.n_rendered == 4


def test_image_pool_lists_each_training_image_with_its_label(cxr_work):
    from medvlm.data.cohorts import image_units, load_cohort
    from medvlm.tasks.yaml_task import load_yaml_task
    from medvlm.vlm.fewshot import Example
    from medvlm.vlm.fewshot_images import image_pool

    root, work = cxr_work
    task = load_yaml_task(root / "data" / "cxr.yaml")
    for fold in (0, 1):
        train = load_cohort(work, "train", fold=fold)
        units = image_units(work, train)
        ids, pool = image_pool(work, task=task, fold=fold)
        assert ids == list(train.patient_ids) and list(pool) == ["image"]
        want = {c: [Example(str(p), "image", 0, c, image_id=str(i)) for p, i, label in
                    zip(units["patient_id"], units["image_id"], units["label"], strict=True) if label == c]
                for c in range(task.n_classes)}
        assert pool["image"] == want and sum(map(len, want.values())) == len(units)
    assert image_pool(work, task=task, fold=0)[0] != image_pool(work, task=task, fold=1)[0]
    # labels beyond the task's classes give no example (a task of one class here keeps class 0 only)
    from types import SimpleNamespace

    _, one = image_pool(work, task=SimpleNamespace(n_classes=1), fold=0)
    assert one == {"image": {0: image_pool(work, task=task, fold=0)[1]["image"][0]}}


def test_make_image_sampler_renders_with_the_runs_control_and_checks_the_cohort(cxr_work):
    from medvlm.data.cohorts import load_cohort
    from medvlm.data.images import image_png
    from medvlm.errors import ConfigError
    from medvlm.tasks.yaml_task import load_yaml_task
    from medvlm.vlm.fewshot_images import make_image_sampler

    root, work = cxr_work
    task = load_yaml_task(root / "data" / "cxr.yaml")
    test_ids = list(load_cohort(work, "test").patient_ids)
    plain = make_image_sampler(work, 2, task=task, cohort="test", fold=1, evaluated=test_ids)  # real, seed 0
    noisy = make_image_sampler(work, 2, task=task, cohort="test", fold=1, evaluated=test_ids, image="noise",
                               seed=5)
    noise0 = make_image_sampler(work, 2, task=task, cohort="test", fold=1, evaluated=test_ids, image="noise")
    [e, *_] = plain.examples(test_ids[0], "x")
    assert plain.image(e) == image_png(work, e.image_id)
    assert noisy.image(e) == image_png(work, e.image_id, image="noise", seed=5)
    assert noise0.image(e) == image_png(work, e.image_id, image="noise", seed=0) != noisy.image(e)
    train = list(load_cohort(work, "train", fold=1).patient_ids)
    with pytest.raises(ConfigError, match=r"^--shots 3 with --cohort train: the examples come from the "
                                          r"training cohort of --fold 1, the very patients evaluated; "):
        make_image_sampler(work, 3, task=task, cohort="train", fold=1, evaluated=train)
    with pytest.raises(ConfigError, match=rf"^--shots 2: patient {sorted(train)[0]} is both evaluated and in "
                                          rf"the training cohort of --fold 1 \({work / 'splits.json'}\); "):
        make_image_sampler(work, 2, task=task, cohort="val", fold=1, evaluated=train)
