"""Honest at the edges of a real deployment: the probe, which errors are retried, what servers ignore,
abstentions and cut-off answers. Error bodies are the real servers' shapes (vLLM, transformers serve)."""

from __future__ import annotations

import json
import socket
import time

import pandas as pd
import pytest

from medvlm.cli import invoke

VLLM_404 = {"object": "error", "message": "The model `llama3.2-vision` does not exist.",
            "type": "NotFoundError", "param": None, "code": 404}
SERVE_PINNED_400 = {"detail": "Server is pinned to 'tiny'; requested 'llama3.2-vision'."}
SERVE_422 = {"detail": "Unexpected fields in the request: {'guided_choice'}"}


def _args(work, out, url, *extra):
    return ["eval-vlm", str(work), "--out", str(out), "--backend", "openai", "--model", "llama3.2-vision",
            "--base-url", url, "--orientations", "axial", "--bootstrap", "0", "--no-progress",
            "--max-retries", "2", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("medvlm: error: ") and err.count("\n") == 1, err
    return err


def test_an_unreachable_server_stops_at_once(tiny_work, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert invoke(_args(tiny_work, tmp_path / "r", f"http://127.0.0.1:{port}/v1")) == 2
    assert time.monotonic() - start < 10
    assert "cannot reach the server" in _one_line_error(capsys)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (404, VLLM_404, "(HTTP 404: The model `llama3.2-vision` does not exist"),
    (400, SERVE_PINNED_400, "(HTTP 400: Server is pinned to 'tiny'"),
])
def test_a_model_not_served_is_one_line_naming_what_is_served(tiny_work, tmp_path, capsys, fake_server,
                                                               status, body, expected):
    fake_server.models = ["tiny"]
    fake_server.behave = lambda b, n: (status, body, 0)
    assert invoke(_args(tiny_work, tmp_path / "r", fake_server.url)) == 2
    err = _one_line_error(capsys)
    assert "does not serve model 'llama3.2-vision'" in err and expected in err and "it lists: tiny" in err
    assert len(fake_server.bodies) == 1  # the probe, never retried, nothing else sent


def test_a_rejected_request_field_names_the_option_to_use(tiny_work, tmp_path, capsys, fake_server):
    def behave(b, n):  # transformers serve: neither form of a choice constraint
        if "guided_choice" in b:
            return 422, SERVE_422, 0
        return 422, {"detail": "Unexpected fields in the request: {'structured_outputs'}"}, 0

    fake_server.behave = behave
    assert invoke(_args(tiny_work, tmp_path / "r", fake_server.url, "--structured", "choice")) == 2
    err = _one_line_error(capsys)
    assert "rejects the request field 'structured_outputs'" in err and "use --structured none" in err
    assert "tried guided_choice, structured_outputs" in err
    assert len(fake_server.bodies) == 2  # one probe in each form; nothing else sent


def test_a_server_that_takes_structured_outputs_gets_them(tiny_work, tmp_path, fake_server):
    """vLLM 0.10+ takes ``structured_outputs: {"choice": [...]}``; one that refuses ``guided_choice`` gets
    that form from the probe on."""
    def behave(b, n):
        if "guided_choice" in b:
            return 400, {"error": {"message": "guided_choice is not supported; use structured_outputs"}}, 0
        assert b["structured_outputs"] == {"choice": ["0", "1", "2"]}
        return 200, fake_server.completion("1"), 0

    fake_server.behave = behave
    out = tmp_path / "r"
    assert invoke(_args(tiny_work, out, fake_server.url, "--structured", "choice")) == 0
    assert len(fake_server.bodies) == 12 + 1  # the refused probe, then every call in the accepted form
    assert pd.read_csv(out / "slices.csv")["choice"].tolist() == [1] * 12


def test_structured_json_ignored_by_the_server_stops_the_run(tiny_work, tmp_path, capsys, fake_server):
    fake_server.behave = lambda b, n: (200, fake_server.completion("Choice: 1 Reasoning: x"), 0)
    assert invoke(_args(tiny_work, tmp_path / "r", fake_server.url, "--structured", "json")) == 2
    assert "ignored --structured json" in _one_line_error(capsys)
    assert len(fake_server.bodies) == 1


def test_only_transient_errors_are_retried_and_a_dead_run_stops_sending(tiny_work, tmp_path, fake_server):
    # the server answers once, then dies (503 from then on)
    fake_server.behave = lambda b, n: (fake_server.default(b, n) if n == 1
                                       else (503, {"error": "overloaded"}, 0))
    out = tmp_path / "r"
    assert invoke(_args(tiny_work, out, fake_server.url, "--max-retries", "1", "--concurrency", "1")) == 1
    fails = pd.read_csv(out / "failures.csv")
    assert len(fails) == 11  # every other call recorded as failed ...
    assert len(fake_server.bodies) == 1 + 8 * 2  # ... and after 8 dead requests in a row none was sent
    assert fails["error"].str.contains("not sent").sum() == 3
    m = json.loads((out / "metrics.json").read_text())["orientations"]["combined"]
    assert m["n"] + m["n_abstained"] == 4 and m["coverage"] < 1  # no answer, no prediction
    fake_server.behave = fake_server.default  # back up: the rerun sends exactly the missing calls
    sent = len(fake_server.bodies)
    assert invoke(_args(tiny_work, out, fake_server.url)) == 0
    assert len(fake_server.bodies) - sent == 11


def test_all_unparsable_answers_abstain_and_cut_answers_are_counted(tiny_work, tmp_path, fake_server):
    def behave(b, n):
        payload = fake_server.completion("I would need more clinical context.")
        payload["choices"][0]["finish_reason"] = "length"
        return 200, payload, 0

    fake_server.behave = behave
    out = tmp_path / "r"
    assert invoke(_args(tiny_work, out, fake_server.url)) == 0
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["pred"].isna().all()
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_truncated"] == m["n_calls"] == 12
    combined = m["orientations"]["combined"]
    assert combined["coverage"] == 0.0 and combined["accuracy"] is None and combined["auc"] is None
    calls = pd.read_csv(out / "slices.csv")
    assert set(calls["finish_reason"]) == {"length"}
    assert invoke(["metrics", str(out / "predictions.csv"), "--json"]) == 0


def test_a_fully_cached_rerun_contacts_no_server(tiny_work, tmp_path, fake_server):
    out = tmp_path / "r"
    assert invoke(_args(tiny_work, out, fake_server.url)) == 0
    sent, gets = len(fake_server.bodies), fake_server.model_gets
    fake_server.close()  # the server is gone: a rerun must not need it
    assert invoke(_args(tiny_work, out, fake_server.url)) == 0
    assert sent == 12 and gets == 1  # the first run's reachability check, then only chat requests


def test_a_dead_first_server_is_found_before_anything_is_sent(tiny_work, tmp_path, capsys, fake_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert invoke([*_args(tiny_work, tmp_path / "r", dead), "--base-url", fake_server.url]) == 2
    assert dead in _one_line_error(capsys) and fake_server.bodies == []


def test_the_api_key_never_reaches_a_message_or_a_file(tiny_work, tmp_path, capsys, fake_server, monkeypatch):
    key = "sk-secret-XYZ123abc"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    fake_server.behave = lambda b, n: (401, {"error": {"message": f"Incorrect API key provided: {key}"}}, 0)
    assert invoke(_args(tiny_work, tmp_path / "a", fake_server.url)) == 2
    assert key not in capsys.readouterr().err
    first = len(fake_server.bodies) + 1  # the probe of the next run is answered, then the server breaks
    fake_server.behave = lambda b, n: (fake_server.default(b, n) if n == first
                                       else (500, {"error": f"bad request from Bearer {key}"}, 0))
    out = tmp_path / "b"
    assert invoke(_args(tiny_work, out, fake_server.url, "--max-retries", "0")) == 1
    assert key not in capsys.readouterr().err
    for f in out.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


@pytest.mark.parametrize(("body", "message"), [
    ('{"top_k": NaN}', "NaN and Infinity"), ('{"temperature": 1.0}', "set by medvlm's own options"),
    ('[1, 2]', "a JSON object is needed"), ("{top_k: 1}", "not valid JSON"),
])
def test_bad_extra_body_is_one_line(tiny_work, tmp_path, capsys, fake_server, body, message):
    assert invoke([*_args(tiny_work, tmp_path / "r", fake_server.url), "--extra-body", body]) == 2
    assert message in _one_line_error(capsys)


def test_a_base_url_without_v1_says_so(tiny_work, tmp_path, capsys, fake_server):
    fake_server.behave = lambda b, n: (404, {"detail": "Not Found"}, 0)
    assert invoke(_args(tiny_work, tmp_path / "r", fake_server.url)) == 2
    assert "although the server lists model 'llama3.2-vision': check --base-url" in _one_line_error(capsys)


def test_credentials_in_a_base_url_are_never_stored_or_printed(tiny_work, tmp_path, capsys, fake_server):
    secret = "s3cret-pw-777"
    url = fake_server.url.replace("http://", f"http://me:{secret}@")
    first = len(fake_server.bodies) + 1
    fake_server.behave = lambda b, n: (fake_server.default(b, n) if n == first
                                       else (500, {"error": f"auth was me:{secret}"}, 0))
    out = tmp_path / "r"
    assert invoke(_args(tiny_work, out, url, "--max-retries", "0")) == 1
    assert secret not in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["config"]["base_urls"] == [
        fake_server.url.replace("http://", "http://me:***@")]
    for f in out.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert invoke(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert secret not in (tmp_path / "r.html").read_text()
