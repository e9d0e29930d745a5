"""``medvlm consistency`` end to end: a local OpenAI-compatible server whose answers vary per request,
the mock backend over a cohort, the tiny transformers model, the cache, bad input."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medvlm.cli import invoke as _run
from medvlm.consistency.run import csv_columns
from medvlm.consistency.stats import fleiss_kappa
from medvlm.tasks import get_task

CSV_COLUMNS = csv_columns(get_task("brats-grading"))


def _vlm_helpers():
    """The VLM tests' helpers (``write_tiny_work``, ``FakeServer``): ``tests/vlm/conftest.py`` loaded
    under its own name. (No conftest.py here: ``--doctest-modules`` imports every conftest.py as a
    module named ``conftest``, and two of them collide.)"""
    path = Path(__file__).parents[1] / "vlm" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_medvlm_vlm_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


VLM = _vlm_helpers()
FakeServer = VLM.FakeServer


@pytest.fixture(scope="session")
def cons_work(tmp_path_factory) -> Path:
    """4 patients P000..P003 (HGG, LGG, HGG, LGG), all in the test cohort; volumes 12x12x8; tumour
    z 2..4 (P000, P002) or 3..5 (P001, P003), so the central axial slice is 3 or 4."""
    return VLM.write_tiny_work(tmp_path_factory.mktemp("conswork"))


@pytest.fixture()
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from medvlm.vlm.tiny import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("cons_tiny") / "model", seed=0)


PATIENT_LGG = "P001"  # label 0, tumour z 3..5 -> central axial slice 4




def _by_seed(body):
    """Answer of the test server, from the request's seed (= repeat index): repeats differ, reruns agree."""
    seed = body["seed"]
    if seed % 5 == 0:
        return "Choice: 0 Reasoning: diffuse, no enhancement"
    if seed % 7 == 3:
        return "I cannot tell from this image."
    return "Choice: 1 Reasoning: ring enhancement"


def _image_bytes(body):
    return base64.b64decode(body["messages"][0]["content"][0]["image_url"]["url"].split(",", 1)[1])


def _openai_args(work, out, server, *extra):
    return ["consistency", str(work), "--out", str(out), "--backend", "openai", "--model", "llama3.2-vision",
            "--base-url", server.url, "--concurrency", "3", "--no-progress", *extra]


def test_one_image_n_times_over_http(cons_work, server, tmp_path):
    server.behave = lambda body, n: (200, server.completion(_by_seed(body)), 0)
    run = tmp_path / "run"
    args = _openai_args(cons_work, run, server, "--patient", PATIENT_LGG, "--repeats", "20")
    assert _run(args) == 0
    assert len(server.bodies) == 20
    # the same image and prompt every time, sampling left to the server (null), seed = repeat
    assert len({_image_bytes(b) for b in server.bodies}) == 1
    from medvlm.data.cohorts import read_manifest
    from medvlm.data.slices import patient_slices
    from medvlm.vlm.prompts import load_prompt

    row = read_manifest(cons_work).set_index("patient_id", drop=False).loc[PATIENT_LGG]
    central = [s for s in patient_slices(row, "axial") if s.slice_index == 4]
    assert _image_bytes(server.bodies[0]) == central[0].png  # exactly what eval-vlm renders
    assert {b["messages"][0]["content"][1]["text"] for b in server.bodies} == {load_prompt("seed").text}
    assert all("temperature" not in b and "top_p" not in b for b in server.bodies)  # left to the server
    assert sorted(b["seed"] for b in server.bodies) == list(range(20))

    csv = pd.read_csv(run / "consistency.csv", keep_default_na=False)
    assert list(csv.columns) == CSV_COLUMNS and list(csv.columns)[:9] == [
        "patient_id", "orientation", "slice_index", "repeat", "choice", "p_lgg", "p_hgg", "p_ng", "raw"]
    assert list(csv["repeat"]) == list(range(20)) and set(csv["slice_index"]) == {4}
    assert set(csv["patient_id"]) == {PATIENT_LGG} and set(csv["orientation"]) == {"axial"}
    assert list(csv["seed"]) == list(range(20)) and set(csv["temperature"]) == {""}
    assert csv.loc[3, "choice"] == "" and csv.loc[3, "raw"] == "I cannot tell from this image."

    s = json.loads((run / "summary.json").read_text())
    # seeds 0,5,10,15 -> LGG; 3,17 -> unparsed; the other 14 -> HGG
    assert s["n"] == 20 and s["counts"] == {"0": 4, "1": 14, "2": 0, "unparsed": 2}
    assert s["majority"] == "1" and s["agreement"] == 0.7
    assert math.isclose(s["entropy"], -(0.2 * math.log2(0.2) + 0.7 * math.log2(0.7) + 0.1 * math.log2(0.1)))
    assert math.isclose(s["flip_rate"], 11 / 19)
    assert s["consensus_accuracy"] == 0.0 and s["expected_accuracy"] == 0.2  # the truth is LGG
    assert s["fleiss_kappa"] is None and s["n_images"] == 1 and s["n_failed"] == 0
    assert s["sampling"] == [{"temperature": None, "top_p": None, "seed": 0,
                              "source": "temperature server default (not sent); "
                                        "top_p server default (not sent)"}]
    [img] = s["per_image"]
    assert img["patient_id"] == PATIENT_LGG and img["slice_index"] == 4 and img["label"] == 0
    assert img["counts"] == s["counts"] and "per_prompt" not in s and "per_temperature" not in s
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "consistency" and info["config"]["repeats"] == 20
    assert info["config"]["sampling"] == s["sampling"]  # the defaults recorded in run.json too
    assert info["config"]["temperatures"] == [] and info["config"]["top_p"] is None
    assert info["config"]["prompts_resolved"][0]["name"] == "seed"

    # rerun: nothing sent, same files
    before = {name: (run / name).read_text() for name in ("consistency.csv", "summary.json")}
    assert _run(args) == 0
    assert len(server.bodies) == 20
    assert {name: (run / name).read_text() for name in before} == before
    # more repeats: only the new ones are sent
    assert _run(_openai_args(cons_work, run, server, "--patient", PATIENT_LGG, "--repeats", "30")) == 0
    assert sorted(b["seed"] for b in server.bodies[20:]) == list(range(20, 30))
    s30 = json.loads((run / "summary.json").read_text())
    assert s30["n"] == 30 and s30["counts"] == {"0": 6, "1": 21, "2": 0, "unparsed": 3}


def test_prompt_paraphrases_and_temperature_sweep(cons_work, server, tmp_path):
    def behave(body, n):
        text = body["messages"][0]["content"][1]["text"]
        if body["temperature"] == 0.2:  # cold: always the same answer (HGG, or LGG for the paraphrase)
            return 200, server.completion("Choice: 0" if "paraphrase" in text else "Choice: 1"), 0
        return 200, server.completion(_by_seed(body)), 0

    server.behave = behave
    p1, p2 = tmp_path / "a.txt", tmp_path / "b.txt"
    p1.write_text("Is this glioma low grade (0), high grade (1) or absent (2)? Choice:\n")
    p2.write_text("A paraphrase: low grade (0), high grade (1), no glioma (2)?\n")
    run = tmp_path / "sweep"
    args = _openai_args(cons_work, run, server, "--patient", "P000", "--slice", "2", "--repeats", "10",
                        "--prompt", str(p1), "--prompt", str(p2), "--temperature", "0.2",
                        "--temperature", "0.9", "--top-p", "0.95")
    assert _run(args) == 0
    assert len(server.bodies) == 2 * 2 * 10
    assert {b["temperature"] for b in server.bodies} == {0.2, 0.9}
    assert {b["top_p"] for b in server.bodies} == {0.95}
    csv = pd.read_csv(run / "consistency.csv")
    assert len(csv) == 40 and set(csv["slice_index"]) == {2}
    assert list(dict.fromkeys(csv["prompt"])) == [str(p1), str(p2)]
    assert list(dict.fromkeys(csv["temperature"])) == [0.2, 0.9]
    s = json.loads((run / "summary.json").read_text())
    assert [p["prompt"] for p in s["per_prompt"]] == [str(p1), str(p2)]
    assert [t["temperature"] for t in s["per_temperature"]] == [0.2, 0.9]
    cold, warm = s["per_temperature"]
    assert cold["counts"] == {"0": 10, "1": 10, "2": 0, "unparsed": 0} and cold["mean_agreement"] == 1.0
    assert cold["flip_rate"] == 0.0 and cold["fleiss_kappa"] == 1.0
    # warm: seeds 0..9 per prompt -> LGG at 0 and 5, unparsed at 3, HGG otherwise
    assert warm["counts"] == {"0": 4, "1": 14, "2": 0, "unparsed": 2} and warm["mean_agreement"] == 0.7
    assert len(s["per_image"]) == 4 and s["n"] == 40 and s["n_images"] == 4
    assert s["consensus_accuracy"] == 0.75  # P000 is HGG: the paraphrase at T 0.2 says LGG
    # the paraphrase flips the cold majority (1 -> 0) but not the warm one
    assert s["prompt_robustness"] == {"n_images": 2, "same_majority_share": 0.5,
                                      "mean_majority_agreement": 0.75}
    assert [x["source"] for x in s["sampling"]] == ["temperature --temperature; top_p --top-p"] * 2


def test_cohort_mode_central_slices_and_figure(cons_work, tmp_path):
    run = tmp_path / "cohort"
    args = ["consistency", str(cons_work), "--out", str(run), "--backend", "mock", "--model", "hash",
            "--repeats", "12", "--no-progress"]
    assert _run(args) == 0
    csv = pd.read_csv(run / "consistency.csv", keep_default_na=False)
    assert len(csv) == 4 * 12
    assert list(dict.fromkeys(csv["patient_id"])) == ["P000", "P001", "P002", "P003"]
    s = json.loads((run / "summary.json").read_text())
    assert [(i["patient_id"], i["slice_index"], i["label"]) for i in s["per_image"]] == [
        ("P000", 3, 1), ("P001", 4, 0), ("P002", 3, 1), ("P003", 4, 0)]
    assert s["n"] == 48 and sum(s["counts"].values()) == 48
    assert s["sampling"][0]["temperature"] == 1.0  # the mock's own default: it samples
    assert csv.groupby("patient_id")["choice"].nunique().max() > 1  # answers vary over repeats
    table = [[i["counts"][k] for k in ("0", "1", "2", "unparsed")] for i in s["per_image"]]
    assert math.isclose(s["fleiss_kappa"], fleiss_kappa(table))
    right = [float(i["majority"] == str(i["label"])) for i in s["per_image"]]
    assert s["consensus_accuracy"] == sum(right) / 4
    expect = [sum(str(c) == str(i["label"]) for c in csv[csv.patient_id == i["patient_id"]]["choice"]) / 12
              for i in s["per_image"]]
    assert math.isclose(s["expected_accuracy"], sum(expect) / 4)
    from medvlm.consistency.figures import agreement_figure

    fig = agreement_figure(s)
    assert len(fig.axes[0].patches) == 4 * 4
    # other orientation and the whole cohort "all"
    assert _run(["consistency", str(cons_work), "--out", str(tmp_path / "sag"), "--backend", "mock",
                 "--model", "hash", "--repeats", "2", "--orientation", "sagittal", "--cohort", "all",
                 "--no-progress"]) == 0
    sag = json.loads((tmp_path / "sag" / "summary.json").read_text())
    assert [i["slice_index"] for i in sag["per_image"]] == [4, 5, 6, 4]  # x extents 3..6, 4..7, 5..8, 3..6


def test_failures_are_recorded_and_retried(cons_work, server, tmp_path):
    server.behave = lambda body, n: ((503, {"error": "busy"}, 0) if body["seed"] in (2, 4)
                                     else (200, server.completion("Choice: 1"), 0))
    run = tmp_path / "fail"
    args = _openai_args(cons_work, run, server, "--patient", "P000", "--repeats", "6", "--max-retries", "0")
    assert _run(args) == 1
    fails = pd.read_csv(run / "failures.csv")
    assert sorted(fails["repeat"]) == [2, 4]
    s = json.loads((run / "summary.json").read_text())
    assert s["n"] == 4 and s["n_failed"] == 2 and s["per_image"][0]["flip_rate"] == 0.0
    server.behave = lambda body, n: (200, server.completion("Choice: 1"), 0)
    sent = len(server.bodies)
    assert _run(args) == 0
    assert sorted(b["seed"] for b in server.bodies[sent:]) == [2, 4]
    assert json.loads((run / "summary.json").read_text())["n"] == 6


@pytest.mark.parametrize(("extra", "message"), [
    (["--patient", "P0001"], "--patient 'P0001': no such patient"),
    (["--patient", "P001", "--slice", "8"],
     "--slice 8: out of range for patient P001 along axial (valid 0..7)"),
    (["--patient", "P001", "--slice", "-1"], "--slice -1: out of range"),
    (["--patient", "P001", "--orientation", "axail"], "Did you mean 'axial'?"),
    (["--temperature", "-0.5"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--repeats", "0"], "--repeats"),
    (["--cohort", "tset"], "Did you mean 'test'?"),
    (["--backend", "mokc"], "Did you mean 'mock'?"),
    (["--prompt", "seed", "--prompt", "seed2"], "--prompt 'seed2'"),
])
def test_bad_input_exits_2_with_one_line(cons_work, tmp_path, capsys, extra, message):
    args = ["consistency", str(cons_work), "--out", str(tmp_path / "bad"), "--backend", "mock", "--model",
            "hash", "--repeats", "2", "--no-progress", *extra]
    assert _run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medvlm: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "bad" / "consistency.csv").exists()


def test_skipped_patient_and_did_you_mean(cons_work, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(cons_work, work)
    manifest = pd.read_csv(work / "manifest.csv", keep_default_na=False)
    manifest.loc[manifest.patient_id == "P003", ["status", "reason"]] = ["skipped", "no flair file"]
    manifest.to_csv(work / "manifest.csv", index=False)
    base = ["consistency", str(work), "--out", str(tmp_path / "r"), "--backend", "mock", "--model", "m",
            "--no-progress"]
    assert _run([*base, "--patient", "P003"]) == 2
    assert "skipped by prepare (no flair file)" in capsys.readouterr().err
    assert _run([*base, "--patient", "P00l"]) == 2
    assert "Did you mean" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_transformers_sampling_defaults_and_seeds(cons_work, tiny_model, tmp_path):
    common = ["--backend", "transformers", "--patient", PATIENT_LGG, "--repeats", "6", "--max-new-tokens",
              "4", "--no-progress"]
    # a model whose generation_config does not sample: its default is greedy, every repeat the same
    greedy_model = tmp_path / "greedy_model"
    shutil.copytree(tiny_model, greedy_model)
    config = json.loads((greedy_model / "generation_config.json").read_text())
    assert config["do_sample"] is True and config["temperature"] == 0.6  # make-tiny-vlm: like Llama's
    config.update(do_sample=False)
    (greedy_model / "generation_config.json").write_text(json.dumps(config))
    greedy = tmp_path / "greedy"
    args = ["consistency", str(cons_work), "--out", str(greedy), "--model", str(greedy_model), *common]
    assert _run(args) == 0
    g = pd.read_csv(greedy / "consistency.csv", keep_default_na=False)
    assert len(g) == 6 and g["raw"].nunique() == 1 and set(g["temperature"]) == {0.0}
    sg = json.loads((greedy / "summary.json").read_text())
    assert sg["per_image"][0]["agreement"] == 1.0 and sg["flip_rate"] == 0.0
    assert "do_sample false: greedy" in sg["sampling"][0]["source"]
    # a model whose generation_config samples (as Llama-3.2-Vision's: temperature 0.6, top-p 0.9)
    sampler = tmp_path / "sampler"
    shutil.copytree(tiny_model, sampler)
    config = json.loads((sampler / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=5.0, top_p=1.0)
    (sampler / "generation_config.json").write_text(json.dumps(config))
    runs = []
    for name in ("s1", "s2"):
        assert _run(["consistency", str(cons_work), "--out", str(tmp_path / name), "--model", str(sampler),
                     *common]) == 0
        runs.append(pd.read_csv(tmp_path / name / "consistency.csv", keep_default_na=False))
    s = json.loads((tmp_path / "s1" / "summary.json").read_text())
    assert s["sampling"][0]["temperature"] == 5.0 and s["sampling"][0]["top_p"] == 1.0
    assert "generation_config.json" in s["sampling"][0]["source"]
    assert runs[0]["raw"].nunique() > 1  # sampled: the repeats differ
    assert runs[0].equals(runs[1])  # seeded per repeat: the same in a fresh run folder
    assert list(runs[0]["seed"]) == list(range(6))


def test_logprob_scoring_records_class_probabilities(cons_work, server, tmp_path):
    run = tmp_path / "lp"
    assert _run(_openai_args(cons_work, run, server, "--patient", "P002", "--repeats", "3", "--scoring",
                             "logprobs")) == 0
    assert all(b["logprobs"] is True for b in server.bodies)
    csv = pd.read_csv(run / "consistency.csv")
    assert set(csv["choice"]) == {1}
    assert (csv["p_hgg"] - 0.7 / 0.95).abs().max() < 1e-9 and (csv["mass"] - 0.95).abs().max() < 1e-9


def test_on_a_prepared_synthetic_cohort(prepared_work, tmp_path):
    """The manifest ``prepare`` writes (real NIfTI paths, tumour extents) works as is."""
    from medvlm.data.cohorts import load_cohort, read_manifest

    run = tmp_path / "synth"
    assert _run(["consistency", str(prepared_work), "--out", str(run), "--backend", "mock", "--model", "hash",
                 "--repeats", "3", "--orientation", "coronal", "--no-progress"]) == 0
    s = json.loads((run / "summary.json").read_text())
    cohort = load_cohort(prepared_work, "test")
    assert [i["patient_id"] for i in s["per_image"]] == cohort.patient_ids
    assert [i["label"] for i in s["per_image"]] == cohort.labels
    manifest = read_manifest(prepared_work).set_index("patient_id")
    for image in s["per_image"]:
        lo, hi = manifest.loc[image["patient_id"], ["tumour_y_min", "tumour_y_max"]].astype(int)
        assert image["slice_index"] == (lo + hi) // 2


def test_sampling_that_never_happened_is_flagged(cons_work, server, tmp_path):
    # a server that ignores the temperature: every repeat byte-identical
    server.behave = lambda body, n: (200, server.completion("Choice: 1 Reasoning: same"), 0)
    run = tmp_path / "flat"
    assert _run(_openai_args(cons_work, run, server, "--patient", "P000", "--repeats", "4",
                             "--temperature", "1.0")) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["sampling_effective"] is False
    # greedy on purpose: nothing to flag
    run0 = tmp_path / "greedy"
    assert _run(_openai_args(cons_work, run0, server, "--patient", "P000", "--repeats", "4",
                             "--temperature", "0")) == 0
    assert "sampling_effective" not in json.loads((run0 / "summary.json").read_text())
    # a server that samples
    server.behave = lambda body, n: (200, server.completion(f"Choice: {n % 2} Reasoning: r{n}"), 0)
    run1 = tmp_path / "sampled"
    assert _run(_openai_args(cons_work, run1, server, "--patient", "P000", "--repeats", "4",
                             "--temperature", "1.0", "--extra-body", '{"top_k": 40}')) == 0
    assert json.loads((run1 / "summary.json").read_text())["sampling_effective"] is True
    assert server.bodies[-1]["top_k"] == 40
