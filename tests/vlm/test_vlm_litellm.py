"""The ``litellm`` backend against a local OpenAI-shaped server: LiteLLM's ``openai/`` provider with
``api_base`` = the test server (:class:`tests.vlm.conftest.FakeServer`). LiteLLM never reaches the
internet here: its packaged cost map is used (``LITELLM_LOCAL_MODEL_COST_MAP``), offline mode is on,
and every request goes to 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time

import pandas as pd
import pytest

pytest.importorskip("litellm")  # offline: tests/conftest.py sets LITELLM_LOCAL_MODEL_COST_MAP first

from medvlm.cli import invoke  # noqa: E402
from medvlm.errors import BackendError, ConfigError  # noqa: E402
from medvlm.vlm._secrets import PROVIDER_KEY_VARS, redact_command  # noqa: E402
from medvlm.vlm.backends import BackendConfig, make_backend  # noqa: E402
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm  # noqa: E402
from medvlm.vlm.types import Decoding, VLMRequest  # noqa: E402

KEY = "sk-litellm-FAKE-0123456789abcdef"
OTHER_KEY = "sk-ant-FAKE-fedcba9876543210"
PROMPT_TOKENS, COMPLETION_TOKENS = 120, 9
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No provider key but the fake ones, LiteLLM's packaged cost map, offline mode."""
    for var in PROVIDER_KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "true")


def _code(body: dict) -> int:
    """The answer the server gives: from the hash of the image sent (0 or 1), 2 without an image."""
    parts = body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    return hashlib.sha256(urls[0].encode()).digest()[0] % 2 if urls else 2


def hosted(server):
    """A server answering like a hosted model: an image-dependent code, log-probs when asked, token usage
    and the model name (so LiteLLM can price the call)."""

    def behave(body: dict, n: int):
        code = _code(body)
        p = {c: (0.7 if c == code else 0.15) for c in (0, 1, 2)}
        lp = [{"token": "Choice", "logprob": 0.0, "top_logprobs": []},
              {"token": ":", "logprob": 0.0, "top_logprobs": []},
              {"token": f" {code}", "logprob": math.log(p[code]), "top_logprobs": [
                  {"token": f" {c}", "logprob": math.log(p[c])} for c in (0, 1, 2)]}]
        answer = server.completion(f"Choice: {code} Reasoning: seen", lp if body.get("logprobs") else None)
        answer.update(model=body["model"], usage={"prompt_tokens": PROMPT_TOKENS,
                                                  "completion_tokens": COMPLETION_TOKENS,
                                                  "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
        return 200, answer, 0

    return behave


def _price() -> float:
    """USD of one call of the fake server as gpt-4o, from LiteLLM's packaged cost map."""
    import litellm

    entry = litellm.model_cost["gpt-4o"]
    return PROMPT_TOKENS * entry["input_cost_per_token"] + COMPLETION_TOKENS * entry["output_cost_per_token"]


def _config(backend: str, model: str, url: str, **kw) -> VLMEvalConfig:
    return VLMEvalConfig(backend=backend, model=model, base_urls=[url], progress=False, n_boot=0,
                         concurrency=2, backoff_s=0.0, **kw)


def test_same_answers_as_the_openai_backend_and_usage_recorded(tiny_work, tmp_path, fake_server):
    fake_server.behave = hosted(fake_server)
    ref = evaluate_vlm(tiny_work, tmp_path / "openai", _config("openai", "gpt-4o", fake_server.url,
                                                                 scoring="logprobs"))
    openai_bodies = list(fake_server.bodies)
    fake_server.bodies.clear()
    run = evaluate_vlm(tiny_work, tmp_path / "litellm", _config("litellm", "openai/gpt-4o", fake_server.url,
                                                                  scoring="logprobs"))
    assert ref.n_failed == run.n_failed == 0 and ref.n_calls == run.n_calls == run.n_sent > 4
    # the same request bodies (build_payload's), up to the order the threads sent them in
    def key(body):
        return json.dumps(body, sort_keys=True)
    assert sorted(map(key, fake_server.bodies)) == sorted(map(key, openai_bodies))
    a, b = (pd.read_csv(tmp_path / name / "slices.csv") for name in ("openai", "litellm"))
    assert a.equals(b)  # same choices, probabilities and raw answers, row for row
    assert set(a["choice"]) == {0, 1}  # the answers depend on the image: the comparison means something
    for name in ("predictions.csv", "patients.csv"):
        assert (tmp_path / "openai" / name).read_bytes() == (tmp_path / "litellm" / name).read_bytes()
    usage = json.loads((tmp_path / "litellm" / "run.json").read_text())["usage"]
    n = run.n_sent
    assert usage["n_calls"] == n and usage["prompt_tokens"] == PROMPT_TOKENS * n
    assert usage["completion_tokens"] == COMPLETION_TOKENS * n
    assert usage["cost_usd"] == pytest.approx(n * _price(), rel=1e-9) and usage["cost_complete"] is True
    assert "usage" not in json.loads((tmp_path / "openai" / "run.json").read_text())  # as before
    # a rerun answers from the cache: nothing sent, nothing spent
    sent = len(fake_server.bodies)
    again = evaluate_vlm(tiny_work, tmp_path / "litellm", _config("litellm", "openai/gpt-4o", fake_server.url,
                                                                    scoring="logprobs"))
    assert len(fake_server.bodies) == sent and again.n_cached == n and again.n_sent == 0
    usage = json.loads((tmp_path / "litellm" / "run.json").read_text())["usage"]
    assert (usage["n_calls"], usage["prompt_tokens"], usage["cost_usd"]) == (0, 0, 0.0)


def test_no_key_reaches_a_file_or_the_terminal(tiny_work, tmp_path, fake_server, monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", OTHER_KEY)
    seen = []

    def echo(body, n):  # a server that echoes the key it was sent (and the other one) in its answers
        auth = fake_server.headers[n - 1].get("authorization") or fake_server.headers[n - 1].get(
            "Authorization", "")
        seen.append(auth)
        answer = fake_server.completion(f"Choice: 1 Reasoning: you sent {auth} and {OTHER_KEY}; "
                                        f"{base64.b64encode(KEY.encode()).decode()}")
        answer["usage"] = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        if n == 2:
            return 500, {"error": {"message": f"bad key {KEY[:12]}**** retry"}}, 0
        return 200, answer, 0

    fake_server.behave = echo
    out = tmp_path / "run"
    code = invoke(["eval-vlm", str(tiny_work), "--out", str(out), "--backend", "litellm", "--model",
                   "openai/gpt-4o", "--base-url", fake_server.url, "--no-progress", "--bootstrap", "0",
                   "--max-retries", "1", "--concurrency", "1"])
    captured = capsys.readouterr()
    assert code == 0 and seen and all(KEY in s for s in seen)  # the key travelled as the header
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"run.json", "slices.csv", "cache.sqlite"} <= {p.name for p in written}
    for secret in (KEY, OTHER_KEY, KEY[:12], base64.b64encode(KEY.encode()).decode()[:16]):
        for path in written:
            assert secret.encode() not in path.read_bytes(), (secret, path)
        assert secret not in captured.out + captured.err
    raw = pd.read_csv(out / "slices.csv")["raw"]
    assert raw.str.contains("you sent Bearer \\*\\*\\*", regex=True).all()


def test_max_cost_stops_cleanly_and_a_rerun_resumes(tiny_work, tmp_path, fake_server, capsys):
    fake_server.behave = hosted(fake_server)
    out = tmp_path / "run"
    args = ["eval-vlm", str(tiny_work), "--out", str(out), "--backend", "litellm", "--model", "openai/gpt-4o",
            "--base-url", fake_server.url, "--no-progress", "--bootstrap", "0", "--concurrency", "1"]
    price = _price()
    code = invoke([*args, "--max-cost", str(3.5 * price)])  # room for 3 calls, not 4
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "--max-cost" in err and "rerun with a higher --max-cost" in err
    assert len(fake_server.bodies) == 3
    failures = pd.read_csv(out / "failures.csv")
    assert len(pd.read_csv(out / "slices.csv")) == 3
    assert len(failures) > 0 and failures["error"].str.startswith("max-cost").all()
    # each row says what happened: asking it could exceed the limit, with the spend and calls in flight then
    import re

    for text in failures["error"]:
        m = re.search(r"--max-cost \S+ USD would be exceeded \(spent (\S+) USD when this call was held back, "
                      r"(\d+) call\(s\) in flight\)", text)
        assert m and "reached" not in text, text
        assert float(m[1]) + (int(m[2]) + 1) * price > 3.5 * price
    total = 3 + len(failures)
    usage = json.loads((out / "run.json").read_text())["usage"]
    assert usage["n_calls"] == 3 and usage["n_not_asked"] == len(failures)
    assert usage["cost_usd"] == pytest.approx(3 * price) and usage["cost_usd"] <= 3.5 * price
    assert usage["max_cost_usd"] == pytest.approx(3.5 * price)
    # the rerun with a higher budget asks only the rest
    code = invoke([*args, "--max-cost", "10"])
    assert code == 0, capsys.readouterr().err
    assert len(fake_server.bodies) == total
    assert len(pd.read_csv(out / "slices.csv")) == total and len(pd.read_csv(out / "failures.csv")) == 0
    usage = json.loads((out / "run.json").read_text())["usage"]
    assert usage["n_calls"] == total - 3 and usage["n_not_asked"] == 0


@pytest.mark.parametrize(("model", "message"), [
    ("nosuchprovider/some-model", "--model 'nosuchprovider/some-model': LiteLLM knows no provider"),
    ("anthropic/claude-sonnet-4-5", "anthropic provider needs the environment variable ANTHROPIC_API_KEY"),
])
def test_unknown_provider_and_missing_key_are_one_line_before_any_request(tiny_work, tmp_path, fake_server,
                                                                          capsys, model, message):
    code = invoke(["eval-vlm", str(tiny_work), "--out", str(tmp_path / "run"), "--backend", "litellm",
                   "--model", model, "--base-url", fake_server.url, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and err.startswith("medvlm: error:")
    assert "Traceback" not in err and fake_server.bodies == []


def test_logprobs_from_a_provider_without_them_stop_before_any_request(tiny_work, tmp_path, fake_server,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", OTHER_KEY)
    code = invoke(["eval-vlm", str(tiny_work), "--out", str(tmp_path / "run"), "--backend", "litellm",
                   "--model", "anthropic/claude-sonnet-4-5", "--base-url", fake_server.url, "--no-progress",
                   "--scoring", "logprobs"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--scoring logprobs: LiteLLM gives no log-probs" in err and "\n" not in err
    assert fake_server.bodies == []


def _backend(url: str, **kw):
    return make_backend(BackendConfig(backend="litellm", model="openai/gpt-4o", base_urls=[url], **kw))


def _request(i: int = 0) -> VLMRequest:
    return VLMRequest(key=str(i), image=b"png" + bytes([i]), prompt="q", repeat=0, meta=(f"P{i}",),
                      codes=("0", "1", "2"), prefix="Choice:")


def test_429_waits_for_retry_after(fake_server):
    fake_server.retry_after = "1"
    answer = hosted(fake_server)
    fake_server.behave = lambda body, n: (429, {"error": {"message": "slow down"}}, 0) if n == 1 \
        else answer(body, n)
    backend = _backend(fake_server.url, backoff_s=0.0)
    start = time.monotonic()
    [(_, response)] = list(backend.answer([_request()], Decoding()))
    elapsed = time.monotonic() - start
    assert response.raw and response.raw.startswith("Choice:") and len(fake_server.bodies) == 2
    assert elapsed >= 1.0  # backoff 0: the wait is the server's Retry-After
    assert response.extra["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                                       "cost_usd": pytest.approx(_price())}


def test_retries_5xx_not_4xx_and_names_the_model(fake_server):
    answer = hosted(fake_server)
    fake_server.behave = lambda body, n: (503, {"error": {"message": "restarting"}}, 0) if n == 1 \
        else answer(body, n)
    backend = _backend(fake_server.url, backoff_s=0.0)
    responses = list(backend.answer([_request(0), _request(1)], Decoding()))
    assert len(responses) == 2 and not any(r.failed for _, r in responses) and len(fake_server.bodies) == 3
    fake_server.bodies.clear()
    missing = {"error": {"message": "The model `gpt-4o` does not exist."}}
    fake_server.behave = lambda body, n: (404, missing, 0)
    backend = _backend(fake_server.url, backoff_s=0.0)
    with pytest.raises(BackendError, match="does not serve model 'openai/gpt-4o'"):
        list(backend.answer([_request(0), _request(1)], Decoding()))
    assert len(fake_server.bodies) == 1  # the probe alone; a 404 is not retried


def test_an_unreachable_provider_stops_at_the_probe():
    backend = _backend("http://127.0.0.1:9/v1", backoff_s=0.0)
    start = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach the provider"):
        list(backend.answer([_request(0), _request(1)], Decoding()))
    assert time.monotonic() - start < 10


def test_a_server_without_logprobs_stops_the_run(fake_server):
    fake_server.behave = lambda body, n: (200, fake_server.completion("Choice: 1"), 0)
    backend = _backend(fake_server.url)
    with pytest.raises(BackendError, match="returned no logprobs.*use --scoring generate"):
        list(backend.answer([_request(0), _request(1)], Decoding(scoring="logprobs")))
    assert len(fake_server.bodies) == 1


def test_bad_options_are_config_errors(fake_server):
    with pytest.raises(ConfigError, match="takes one"):
        make_backend(BackendConfig(backend="litellm", model="openai/gpt-4o",
                                   base_urls=[fake_server.url, fake_server.url]))
    with pytest.raises(ConfigError, match="--adapter"):
        make_backend(BackendConfig(backend="litellm", model="openai/gpt-4o", adapter="a"))


def test_max_cost_needs_a_backend_that_reports_cost_and_a_price(tiny_work, tmp_path, fake_server):
    config = VLMEvalConfig(backend="mock", model="hash", progress=False, n_boot=0, max_cost=1.0)
    with pytest.raises(ConfigError, match="--max-cost: the mock backend reports no cost"):
        evaluate_vlm(tiny_work, tmp_path / "run", config)
    fake_server.behave = hosted(fake_server)
    config = _config("litellm", "openai/my-local-vlm", fake_server.url, max_cost=1.0)
    with pytest.raises(ConfigError, match="no price for model 'openai/my-local-vlm'"):
        evaluate_vlm(tiny_work, tmp_path / "run2", config)
    assert fake_server.bodies == []  # before any request
    # without --max-cost it runs, and says the cost is unknown
    evaluate_vlm(tiny_work, tmp_path / "run3", _config("litellm", "openai/my-local-vlm", fake_server.url))
    usage = json.loads((tmp_path / "run3" / "run.json").read_text())["usage"]
    n = len(fake_server.bodies)
    assert usage["cost_usd"] is None and usage["n_cost_unknown"] == n and usage["cost_complete"] is False
    assert usage["prompt_tokens"] == PROMPT_TOKENS * n


def test_recorded_command_masks_every_provider_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", OTHER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789")
    monkeypatch.setenv("MYPROVIDER_API_KEY", "my-provider-key-123")
    text = redact_command(f"medvlm eval-vlm W --model x --note {OTHER_KEY} aws-secret-0123456789 "
                          "my-provider-key-123 short")
    assert text == "medvlm eval-vlm W --model x --note *** *** *** short"


def test_the_report_shows_usage_and_cost(tiny_work, tmp_path, fake_server):
    from medvlm.report.html import build_report

    fake_server.behave = hosted(fake_server)
    evaluate_vlm(tiny_work, tmp_path / "run", _config("litellm", "openai/gpt-4o", fake_server.url))
    n = len(fake_server.bodies)
    html = build_report([tmp_path / "run"], tmp_path / "report.html", n_boot=0).read_text()
    assert f"{PROMPT_TOKENS * n} prompt + {COMPLETION_TOKENS * n} completion in {n} calls" in html
    assert f"{n * _price():.6g} USD" in html


def test_consistency_records_usage_and_honours_max_cost(tiny_work, tmp_path, fake_server):
    from medvlm.consistency.config import ConsistencyConfig
    from medvlm.consistency.run import run_consistency

    fake_server.behave = hosted(fake_server)
    price = _price()
    config = ConsistencyConfig(backend="litellm", model="openai/gpt-4o", base_urls=[fake_server.url],
                               repeats=3, progress=False, backoff_s=0.0, concurrency=1, max_cost=4.5 * price)
    result = run_consistency(tiny_work, tmp_path / "c", config)
    usage = json.loads((tmp_path / "c" / "run.json").read_text())["usage"]
    assert result.n_sent == usage["n_calls"] == len(fake_server.bodies) == 4  # room for 4 calls, not 5
    assert usage["cost_usd"] == pytest.approx(4 * price) and usage["n_not_asked"] == result.n_failed > 0
    assert result.usage == usage


def test_two_shot_requests_match_the_openai_backend(tmp_path, fake_server, make_tiny_work):
    """--shots 2 through LiteLLM: the openai backend's multi-turn body (3 images), the same answers."""
    work = make_tiny_work(tmp_path / "w", n_patients=6)
    (work / "splits.json").write_text(json.dumps({"seed": 0, "test": ["P000", "P001"], "folds": [
        {"train": ["P002", "P003", "P004", "P005"], "val": []}]}))
    fake_server.behave = hosted(fake_server)
    evaluate_vlm(work, tmp_path / "openai", _config("openai", "gpt-4o", fake_server.url, shots=2))
    openai_bodies = list(fake_server.bodies)
    fake_server.bodies.clear()
    run = evaluate_vlm(work, tmp_path / "litellm", _config("litellm", "openai/gpt-4o", fake_server.url,
                                                             shots=2))
    assert run.n_failed == 0 and run.n_sent == len(fake_server.bodies) == len(openai_bodies) > 0
    assert sorted(json.dumps(b, sort_keys=True) for b in fake_server.bodies) == sorted(
        json.dumps(b, sort_keys=True) for b in openai_bodies)
    roles = [m["role"] for m in fake_server.bodies[0]["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    a, b = (pd.read_csv(tmp_path / name / "slices.csv") for name in ("openai", "litellm"))
    assert a.equals(b) and a["shots"].str.count(";").eq(1).all()
    assert json.loads((tmp_path / "litellm" / "run.json").read_text())["usage"]["n_calls"] == run.n_sent


def test_a_provider_that_reports_no_usage_is_never_free(tiny_work, tmp_path, fake_server):
    """No usage in the answers: tokens and cost unknown (never 0), and --max-cost stops after the probe."""
    def no_usage(body, n):
        return 200, {**fake_server.completion("Choice: 1"), "model": body["model"]}, 0

    fake_server.behave = no_usage
    config = _config("litellm", "openai/gpt-4o", fake_server.url, max_cost=1.0)
    with pytest.raises(BackendError, match="--max-cost: no cost for an answer"):
        evaluate_vlm(tiny_work, tmp_path / "run", config)
    assert len(fake_server.bodies) == 1
    evaluate_vlm(tiny_work, tmp_path / "run", _config("litellm", "openai/gpt-4o", fake_server.url))
    usage = json.loads((tmp_path / "run" / "run.json").read_text())["usage"]
    assert usage["n_calls"] == len(fake_server.bodies) - 1 > 0  # the probe's answer came from the cache
    assert usage["prompt_tokens"] is None and usage["cost_usd"] is None
    assert usage["n_tokens_unknown"] == usage["n_cost_unknown"] == usage["n_calls"]
