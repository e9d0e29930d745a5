"""The openai backend against a real HTTP server on 127.0.0.1 (payloads and responses over the wire)."""

from __future__ import annotations

import base64
import math
import time

import pytest

from medvlm.errors import BackendError
from medvlm.tasks import get_task
from medvlm.vlm.backends import BackendConfig
from medvlm.vlm.engine import ask_images
from medvlm.vlm.openai_compat import OpenAIBackend
from medvlm.vlm.records import interpret
from medvlm.vlm.types import Decoding

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


def _backend(urls, **kw):
    cfg = dict(backend="openai", model="llama3.2-vision", base_urls=urls, concurrency=4, timeout_s=2.0,
               max_retries=3, backoff_s=0.01, max_backoff_s=0.05)
    cfg.update(kw)
    return OpenAIBackend(BackendConfig(**cfg))


def test_payload_key_and_answer_over_the_wire(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    backend = _backend([fake_server.url])
    res = ask_images(backend, [("a", PNG), ("b", PNG + b"2")], prompt="Grade it.",
                     decoding=Decoding(max_new_tokens=40, temperature=0.0, seed=7), repeats=2)
    assert res.n_sent == 4 and res.n_failed == 0
    assert {a.response.choice for a in res.answers} == {1}
    assert res.answers[0].response.raw == "Choice: 1 Reasoning: enhancing"
    body = fake_server.bodies[0]
    assert body["model"] == "llama3.2-vision" and body["max_tokens"] == 40 and body["temperature"] == 0.0
    image, text = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "Grade it."}
    uri = image["image_url"]["url"]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) in (PNG, PNG + b"2")
    assert sorted(b["seed"] for b in fake_server.bodies) == [7, 7, 8, 8]  # seed + repeat index
    assert "logprobs" not in body and "response_format" not in body
    assert fake_server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    backend.close()


def test_structured_outputs_in_payload(fake_server):
    backend = _backend([fake_server.url])
    list(backend.answer(
        ask_requests := [_req("k1")], Decoding(structured="json")))
    list(backend.answer([_req("k2")], Decoding(structured="choice", extra_body={"top_k": 1})))
    schema = fake_server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["choice"]["enum"] == [0, 1, 2]
    assert fake_server.bodies[1]["guided_choice"] == ["0", "1", "2"] and fake_server.bodies[1]["top_k"] == 1
    assert ask_requests


def _req(key):
    from medvlm.vlm.types import VLMRequest

    return VLMRequest(key=key, image=PNG, prompt="p", repeat=0, codes=("0", "1", "2"), prefix="Choice:")


def test_retries_on_429_and_500_then_success(fake_server):
    def behave(body, n):
        if n == 1:
            return 429, {"error": "rate limited"}, 0
        if n == 2:
            return 500, {"error": "boom"}, 0
        return fake_server.default(body, n)

    fake_server.behave = behave
    backend = _backend([fake_server.url], concurrency=1)
    [(_, resp)] = list(backend.answer([_req("k")], Decoding()))
    assert resp.raw == "Choice: 1 Reasoning: enhancing" and not resp.failed
    assert resp.choice is None  # a backend never parses: the engine does, through the task
    assert len(fake_server.bodies) == 3 and backend.n_http == 3


def test_slow_answer_times_out_then_retry_succeeds(fake_server):
    def behave(body, n):
        return (200, fake_server.completion("Choice: 0"), 1.5 if n == 1 else 0)

    fake_server.behave = behave
    backend = _backend([fake_server.url], timeout_s=0.3, concurrency=1)
    t0 = time.monotonic()
    [(_, resp)] = list(backend.answer([_req("k")], Decoding()))
    assert resp.raw.startswith("Choice: 0") and len(fake_server.bodies) == 2
    assert time.monotonic() - t0 < 1.4  # did not wait for the slow answer


def test_failure_after_retries_is_returned_not_raised(fake_server):
    fake_server.behave = lambda body, n: (200, fake_server.completion("Choice: 1"), 0) if n == 1 else (
        503, {"error": "down"}, 0)
    backend = _backend([fake_server.url], max_retries=2, concurrency=1)
    [(_, first), (_, resp)] = list(backend.answer([_req("k"), _req("k2")], Decoding()))
    assert not first.failed
    assert resp.failed and "HTTP 503" in resp.error and "3 attempts" in resp.error
    assert len(fake_server.bodies) == 1 + 3


def test_a_probe_without_an_answer_stops_the_run(fake_server):
    fake_server.behave = lambda body, n: (500, {"error": "no such model"}, 0)
    fake_server.models = ["other"]
    with pytest.raises(BackendError, match=r"got no answer in 3 attempts .*does not list model "
                                           r"'llama3.2-vision' \(it lists: other\)"):
        list(_backend([fake_server.url], max_retries=5).answer([_req("k"), _req("k2")], Decoding()))
    assert len(fake_server.bodies) == 3  # the probe's attempts only


def test_a_4xx_stops_the_run_on_first_sight_with_the_servers_message(fake_server):
    fake_server.behave = lambda body, n: (400, {"error": "image too large"}, 0)
    with pytest.raises(BackendError, match=r"refused the request \(HTTP 400: image too large\)"):
        list(_backend([fake_server.url]).answer([_req("k"), _req("k2")], Decoding()))
    assert len(fake_server.bodies) == 1  # never retried, and the rest are not sent


def test_auth_error_stops_and_never_shows_the_key(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    fake_server.behave = lambda body, n: (401, {"error": "bad key"}, 0)
    with pytest.raises(BackendError, match="OPENAI_API_KEY") as exc:
        list(_backend([fake_server.url]).answer([_req("k")], Decoding()))
    assert "sk-secret" not in str(exc.value)


def test_logprobs_read_and_missing_logprobs_is_a_clear_error(fake_server):
    backend = _backend([fake_server.url])
    [(_, resp)] = list(backend.answer([_req("k")], Decoding(scoring="logprobs")))
    assert fake_server.bodies[0]["logprobs"] is True and fake_server.bodies[0]["top_logprobs"] == 20
    assert set(resp.code_probs) == {"0", "1", "2"}
    assert math.isclose(resp.code_probs["1"], 0.7) and math.isclose(resp.code_probs["0"], 0.2)
    assert math.isclose(resp.mass, 0.95)
    interpret(resp, get_task("brats-grading"))
    p0, p1, p2 = resp.probs
    assert math.isclose(p1, 0.7 / 0.95) and math.isclose(p0, 0.2 / 0.95) and resp.choice == 1
    fake_server.behave = lambda body, n: (200, fake_server.completion("Choice: 1"), 0)
    with pytest.raises(BackendError, match="returned no logprobs"):
        list(backend.answer([_req("k2")], Decoding(scoring="logprobs")))


def test_requests_spread_over_servers_and_avoid_a_failing_one(fake_server):
    from tests.vlm.conftest import FakeServer

    healthy2, broken = FakeServer(), FakeServer()
    broken.behave = lambda body, n: (500, {"error": "down"}, 0)
    try:
        # rest 5 s (backoff_s * 5) so the broken server stays rested however slow the machine; retry
        # sleeps stay short (max_backoff_s)
        backend = _backend([fake_server.url, healthy2.url, broken.url], concurrency=2, max_retries=4,
                           backoff_s=1.0, max_backoff_s=0.05)
        out = list(backend.answer([_req(str(i)) for i in range(30)], Decoding()))
        assert all(not r.failed for _, r in out)
        assert len(fake_server.bodies) >= 8 and len(healthy2.bodies) >= 8
        assert len(broken.bodies) <= 4  # rested after 3 failures in a row
    finally:
        healthy2.close()
        broken.close()


def test_concurrency_limits_requests_in_flight(fake_server):
    import threading

    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def behave(body, n):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return fake_server.default(body, n)

    fake_server.behave = behave
    backend = _backend([fake_server.url], concurrency=3)
    out = list(backend.answer([_req(str(i)) for i in range(12)], Decoding()))
    assert len(out) == 12 and state["max"] == 3


def test_sampling_left_to_the_server_is_left_out_of_the_body(fake_server):
    backend = _backend([fake_server.url])
    list(backend.answer([_req("k1")], Decoding(temperature=None, top_p=None)))
    list(backend.answer([_req("k2")], Decoding(temperature=0.7, top_p=None)))
    list(backend.answer([_req("k3")], Decoding(temperature=0.7, top_p=0.9)))
    b1, b2, b3 = fake_server.bodies
    assert "temperature" not in b1 and "top_p" not in b1 and b1["seed"] == 0 and b1["max_tokens"] == 96
    assert b2["temperature"] == 0.7 and "top_p" not in b2
    assert b3["temperature"] == 0.7 and b3["top_p"] == 0.9
    backend.close()


def test_cache_key_stable_for_numbers_and_none_is_its_own_value():
    from medvlm.vlm.types import cache_key

    def key(decoding):
        return cache_key(backend="openai", model="m", adapter=None, prompt="p", image=b"png",
                         decoding=decoding, repeat=2)

    # the keys numeric settings had before temperature/top_p could be None (old caches stay valid)
    assert key(Decoding()) == "3c87452479aaf0588615e61cf72321ecebb29ea5b300a356230dba1a2d4aef81"
    assert key(Decoding(temperature=0.7, top_p=0.9, seed=3)) == (
        "abc3298f30a620dea3be4f2bb3878d890a9024ba7e246fcb4db070da59f57899")
    none = {key(Decoding(temperature=None, top_p=None)), key(Decoding(temperature=None)),
            key(Decoding(top_p=None))}
    assert len(none) == 3 and not none & {key(Decoding()), key(Decoding(temperature=1.0, top_p=1.0))}
    with pytest.raises(ValueError, match=r"temperature\n.*greater than or equal to 0"):
        Decoding(temperature=-0.1)
