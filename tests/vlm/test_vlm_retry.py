"""The request loop both HTTP backends share (:class:`medvlm.vlm._retry.RetryingBackend`), driven by a
scripted attempt: retries and their backoff, the probe, the give-up count, redaction, the fan-out."""

from __future__ import annotations

import pytest

from medvlm.errors import BackendError
from medvlm.vlm import _retry
from medvlm.vlm._retry import GIVE_UP_AFTER, PROBE_ATTEMPTS, Fatal, Retry, RetryingBackend
from medvlm.vlm._secrets import Redactor
from medvlm.vlm.backends import Backend, BackendConfig
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse


class Scripted(RetryingBackend, Backend):
    """Each attempt takes the next outcome of ``script`` (a VLMResponse, a Retry or a Fatal to raise)."""

    name = "scripted"

    def __init__(self, script, **config):
        super().__init__(BackendConfig(backend="mock", model="m", concurrency=1, **config))
        self._redactor = Redactor(["s3cret-key"])
        self._start_loop()
        self.script = list(script)
        self.sent = []  # (payload, probe, previous) of each attempt

    def _payload(self, request, decoding):
        return f"payload of {request.key}"

    def _send(self, payload, request, decoding, *, probe, previous):
        self.sent.append((payload, probe, previous))
        outcome = self.script.pop(0)
        if isinstance(outcome, Fatal):
            raise outcome
        return outcome


def _req(i: int) -> VLMRequest:
    return VLMRequest(key=f"k{i}", image=b"", prompt="p", repeat=0)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(_retry.time, "sleep", slept.append)
    return slept


def test_retries_then_answers_with_backoff_between_attempts(no_sleep):
    b = Scripted([Retry("a: HTTP 503", None, server="a"), Retry("b: HTTP 429", "7", server="b"),
                  VLMResponse(raw="Choice: 1")], max_retries=5, backoff_s=0.0, max_backoff_s=60.0)
    response = b._one(_req(0), Decoding())
    assert response.raw == "Choice: 1" and not response.failed
    assert [s[2] for s in b.sent] == [None, Retry("a: HTTP 503", None, server="a"),
                                      Retry("b: HTTP 429", "7", server="b")]  # each attempt sees the last
    assert no_sleep == [0.0, 7.0]  # backoff 0 here; Retry-After honoured
    assert (b.n_answered, b.n_failed_in_a_row) == (1, 0)


def test_a_request_that_never_got_an_answer_is_a_redacted_failure(no_sleep):
    b = Scripted([Retry("x: HTTP 500 s3cret-key")] * 3, max_retries=2, backoff_s=0.0)
    response = b._one(_req(0), Decoding())
    assert response.error == "failed after 3 attempts; last: x: HTTP 500 ***" and len(no_sleep) == 2
    assert b.n_failed_in_a_row == 1


def test_the_probe_has_at_most_probe_attempts_and_stops_the_run(no_sleep):
    b = Scripted([Retry(f"x: HTTP 502 try {i}") for i in range(PROBE_ATTEMPTS)], max_retries=9, backoff_s=0.0)
    with pytest.raises(BackendError, match=rf"^the first request got no answer in {PROBE_ATTEMPTS} attempts "
                                           rf"\(last: x: HTTP 502 try {PROBE_ATTEMPTS - 1}\)$"):
        list(b.answer([_req(0), _req(1)], Decoding()))
    assert [s[1] for s in b.sent] == [True] * PROBE_ATTEMPTS and not b.script


def test_after_give_up_after_failures_in_a_row_the_rest_are_not_sent(no_sleep):
    b = Scripted([VLMResponse(raw="Choice: 0")] + [Retry("x: timeout")] * GIVE_UP_AFTER, max_retries=0)
    got = list(b.answer([_req(i) for i in range(GIVE_UP_AFTER + 3)], Decoding()))
    assert [r.key for r, _ in got] == [f"k{i}" for i in range(GIVE_UP_AFTER + 3)]
    assert len(b.sent) == GIVE_UP_AFTER + 1 and [s[1] for s in b.sent] == [True] + [False] * GIVE_UP_AFTER
    assert [resp.error for _, resp in got[-2:]] == [
        f"not sent: the last {GIVE_UP_AFTER} requests all failed, the server seems down (see failures.csv); "
        "rerun to retry"] * 2


def test_a_fatal_attempt_stops_the_run_with_its_redacted_message(no_sleep):
    b = Scripted([VLMResponse(raw="Choice: 1"), Fatal("refused: s3cret-key is not valid")])
    with pytest.raises(BackendError, match=r"^refused: \*\*\* is not valid$"):
        list(b.answer([_req(0), _req(1), _req(2)], Decoding()))
    assert len(b.sent) == 2
