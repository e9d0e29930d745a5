"""The engine end to end: outputs as the contract says, transformers on the tiny model, cache and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from medvlm.cli import invoke as _run
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm


def test_outputs_follow_the_contract(tiny_work, tmp_path):
    cfg = VLMEvalConfig(backend="mock", model="hash", n_boot=20, progress=False)
    res = evaluate_vlm(tiny_work, tmp_path / "run", cfg)
    run = tmp_path / "run"
    slices = pd.read_csv(run / "slices.csv")
    assert list(slices.columns)[:9] == ["patient_id", "orientation", "slice_index", "repeat", "choice",
                                        "p_lgg",
                                        "p_hgg", "p_ng", "raw"]
    assert len(slices) == res.n_calls == 4 * (3 + 3 + 4)  # tumour extents: z 3, y 3, x 4 slices
    patients = pd.read_csv(run / "patients.csv")
    assert list(patients.columns)[:10] == ["patient_id", "orientation", "label", "n_lgg", "n_hgg", "n_ng",
                                           "n_unparsed", "gldr", "score", "pred"]
    assert set(patients["orientation"]) == {"axial", "coronal", "sagittal", "combined"}
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["patient_id", "cohort", "label", "pred", "score"]
    assert set(preds["cohort"]) == {"test"} and len(preds) == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["orientations"]) == {"axial", "coronal", "sagittal", "combined"}
    assert metrics["n_calls"] == len(slices) and metrics["n_failed"] == 0 and metrics["n_unparsed"] == 0
    assert "accuracy_ci" in metrics["orientations"]["axial"]
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "vlm" and info["config"]["prompt_name"] == "seed"
    # GLDR and votes agree with slices.csv
    ax = slices[(slices.patient_id == "P000") & (slices.orientation == "axial")]
    row = patients[(patients.patient_id == "P000") & (patients.orientation == "axial")].iloc[0]
    assert row.n_hgg == (ax.choice == 1).sum() and row.n_lgg == (ax.choice == 0).sum()


def test_unparsed_answers_and_failures(tiny_work, tmp_path):
    cfg = VLMEvalConfig(backend="mock", model="text:I am not sure.", n_boot=0, progress=False,
                        orientations=["axial"])
    res = evaluate_vlm(tiny_work, tmp_path / "u", cfg)
    slices = pd.read_csv(tmp_path / "u" / "slices.csv", keep_default_na=False)
    assert res.n_unparsed == len(slices) == 12 and set(slices["choice"]) == {""}
    assert set(slices["raw"]) == {"I am not sure."}
    # failures: recorded, not answers; exit code 1 through the CLI; the next run retries only those
    args = [str(tiny_work), "--out", str(tmp_path / "f"), "--backend", "mock", "--model", "fail",
            "--orientations", "axial", "--bootstrap", "0", "--no-progress"]
    assert _run(["eval-vlm", *args]) == 1
    fails = pd.read_csv(tmp_path / "f" / "failures.csv")
    assert len(fails) == 12 and set(fails["error"]) == {"mock failure"}
    db = sqlite3.connect(tmp_path / "f" / "cache.sqlite")
    assert db.execute("SELECT status, COUNT(*) FROM answers GROUP BY status").fetchall() == [("failed", 12)]


def test_bad_options_exit_2(tiny_work, tmp_path, capsys):
    base = ["eval-vlm", str(tiny_work), "--out", str(tmp_path / "x"), "--model", "m"]
    assert _run([*base, "--backend", "mokc"]) == 2
    assert "Did you mean 'mock'" in capsys.readouterr().err
    assert _run([*base, "--backend", "mock", "--slices", "middle"]) == 2
    assert "--slices" in capsys.readouterr().err
    assert _run([*base, "--backend", "mock", "--reducer", "mean_prob"]) == 2
    assert "--scoring logprobs" in capsys.readouterr().err
    assert _run([*base, "--backend", "mock", "--cohort", "tset"]) == 2
    assert _run([*base, "--backend", "transformers", "--model", str(tmp_path / "nope")]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.slow
def test_transformers_tiny_generate_and_logprobs(tiny_work, tiny_vlm, tmp_path):
    common = dict(backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False,
                  orientations=["axial", "sagittal"], max_new_tokens=6, batch_size=4)
    gen = evaluate_vlm(tiny_work, tmp_path / "gen", VLMEvalConfig(**common))
    slices = pd.read_csv(tmp_path / "gen" / "slices.csv", keep_default_na=False)
    assert len(slices) == gen.n_calls == 4 * (3 + 4)
    assert slices["raw"].str.len().gt(0).all()
    lp = evaluate_vlm(tiny_work, tmp_path / "lp", VLMEvalConfig(**common, scoring="logprobs"))
    s = pd.read_csv(tmp_path / "lp" / "slices.csv")
    assert lp.n_unparsed == 0 and s["choice"].notna().all()
    assert ((s[["p_lgg", "p_hgg", "p_ng"]].sum(axis=1) - 1).abs() < 1e-6).all()
    assert s["mass"].between(0, 1).all()
    assert s[["p_lgg", "p_hgg", "p_ng"]].round(6).drop_duplicates().shape[0] > 1  # the image matters
    assert (s["choice"] == s[["p_lgg", "p_hgg", "p_ng"]].to_numpy().argmax(axis=1)).all()
    pats = pd.read_csv(tmp_path / "lp" / "patients.csv")
    comb = pats[pats.orientation == "combined"].set_index("patient_id")
    expect = s.groupby("patient_id")["p_hgg"].mean()
    assert (comb["score"] - expect).abs().max() < 1e-9  # mean_prob: score = mean P(HGG)
    # batched and one-by-one probabilities agree (left padding is right)
    one = evaluate_vlm(tiny_work, tmp_path / "lp1", VLMEvalConfig(**{**common, "batch_size": 1},
                                                                   scoring="logprobs"))
    s1 = pd.read_csv(tmp_path / "lp1" / "slices.csv")
    assert one.n_sent == len(s1)
    assert (s1["p_hgg"] - s["p_hgg"]).abs().max() < 1e-4


def _count(db_path):
    try:
        con = sqlite3.connect(db_path, timeout=1)
        n = con.execute("SELECT COUNT(*) FROM answers WHERE status='ok'").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_run_resumes_and_rerun_sends_nothing(tiny_work, tmp_path, fake_server):
    """A run against a slow server is killed mid-way; the rerun finishes, equals an uninterrupted run,
    and a second rerun sends no request at all."""
    fake_server.behave = lambda body, n: (200, fake_server.completion(
        f"Choice: {len(body['messages'][0]['content'][0]['image_url']['url']) % 3}"), 0.05)
    args = ["eval-vlm", str(tiny_work), "--backend", "openai", "--model", "m", "--base-url", fake_server.url,
            "--concurrency", "2", "--bootstrap", "0", "--no-progress"]
    run = tmp_path / "run"
    code = ("import sys; from medvlm.cli import main; main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 60
    while _count(run / "cache.sqlite") < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _count(run / "cache.sqlite")
    assert 10 <= done < 40, done
    assert not (run / "slices.csv").exists()
    sent_before = len(fake_server.bodies)
    fake_server.behave = lambda body, n: (200, fake_server.completion(
        f"Choice: {len(body['messages'][0]['content'][0]['image_url']['url']) % 3}"), 0)
    assert _run([*args, "--out", str(run)]) == 0
    resent = len(fake_server.bodies) - sent_before
    assert resent <= 40 - done + 2  # at most what was in flight is sent again
    # an uninterrupted run elsewhere gives the same files
    assert _run([*args, "--out", str(tmp_path / "clean")]) == 0
    for name in ("slices.csv", "patients.csv", "predictions.csv"):
        assert (run / name).read_text() == (tmp_path / "clean" / name).read_text(), name
    before = len(fake_server.bodies)
    assert _run([*args, "--out", str(run)]) == 0
    assert len(fake_server.bodies) == before  # second rerun: zero requests
    assert json.loads((run / "metrics.json").read_text())["n_sent"] == 0


@pytest.mark.slow
def test_on_a_prepared_synthetic_cohort(prepared_work, tmp_path):
    """The manifest written by `prepare` (real synth NIfTIs) drives the slices; montage of 4 contrasts."""
    cfg = VLMEvalConfig(backend="mock", model="hash", n_boot=0, progress=False, slices="central:2",
                        modalities=["flair", "t1ce", "t2", "t1"], prompt="montage")
    res = evaluate_vlm(prepared_work, tmp_path / "run", cfg)
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"patient_id": str})
    from medvlm.data.cohorts import load_cohort

    cohort = load_cohort(prepared_work, "test")
    assert list(preds["patient_id"]) == cohort.patient_ids and list(preds["label"]) == cohort.labels
    assert res.n_calls == len(cohort) * 3 * 2 and res.n_failed == 0


def test_carriage_return_in_an_answer_stays_one_csv_row(tiny_work, tmp_path):
    # a lone "\r" in a model's text used to be written unquoted: readers split the row (n_calls 191,
    # slices.csv 192 rows in an end-to-end run with the tiny random model)
    import csv

    cfg = VLMEvalConfig(backend="mock", model="text:Choice: 1\rReasoning: a\r\nb, \"c\"", n_boot=0,
                        progress=False, orientations=["axial"])
    res = evaluate_vlm(tiny_work, tmp_path / "cr", cfg)
    metrics = json.loads((tmp_path / "cr" / "metrics.json").read_text())
    slices = pd.read_csv(tmp_path / "cr" / "slices.csv", keep_default_na=False)
    with open(tmp_path / "cr" / "slices.csv", newline="") as fh:
        records = list(csv.reader(fh))[1:]
    assert res.n_calls == metrics["n_calls"] == len(slices) == len(records) == 4 * 3
    assert metrics["orientations"]["combined"]["n_calls"] == metrics["n_calls"]
    assert set(slices["raw"]) == {"Choice: 1\nReasoning: a\nb, \"c\""} and set(slices["choice"]) == {1}
