"""The retry policy and the fan-out shared by the HTTP backends (``openai``, ``litellm``).

- Retried: connection errors, timeouts, HTTP 408, 429 (``Retry-After`` honoured, up to the backoff cap)
  and every 5xx (:func:`retryable`), with exponential backoff and jitter (:func:`backoff_delay`). Any
  other 4xx stops the run on first sight: the request itself is refused, and every request of the run
  asks the same.
- The run's first request is a probe, sent alone (at most :data:`PROBE_ATTEMPTS` attempts) before the
  rest fan out over ``concurrency`` threads (:func:`fan_out`); a backend raises :class:`Fatal` inside a
  worker for a problem that must stop the run, and :func:`fan_out` turns it into a
  :class:`~medvlm.errors.BackendError` after keeping the answers already on their way.
- :data:`GIVE_UP_AFTER` requests in a row failed after their retries: the rest are not sent.
- :class:`RetryingBackend`: the request loop both backends share on top of these (the probe, the fan-out,
  the give-up count, the attempts of one request and their backoff); a backend supplies what one
  attempt is (:meth:`RetryingBackend._send`: an answer, a :class:`Retry`, or :class:`Fatal`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from medvlm.errors import BackendError
from medvlm.vlm._secrets import body_secrets
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse

#: statuses retried besides every 5xx (any other 4xx stops the run: the request itself is refused)
RETRY_STATUS = {408, 429}
#: after this many requests in a row failed (after their retries), the rest are not sent (returned as
#: failures, retried by the next run): a dead server is not hammered for hours
GIVE_UP_AFTER = 8
#: attempts of the probe (the run's first request) on a 5xx or a timeout before the run stops
PROBE_ATTEMPTS = 3
#: seconds to open a connection (an unreachable server fails the probe within seconds)
CONNECT_TIMEOUT_S = 5.0

R = TypeVar("R", bound=VLMRequest)


class Fatal(Exception):
    """Raised inside a worker for a problem that must stop the run (its message: one line, redacted)."""


def retryable(status: int) -> bool:
    """Whether an HTTP status is worth another attempt (408, 429 and every 5xx).

    >>> [retryable(s) for s in (400, 404, 408, 422, 429, 500, 503)]
    [False, False, True, False, True, True, True]
    """
    return status in RETRY_STATUS or status >= 500


def backoff_delay(attempt: int, retry_after: str | None, *, backoff_s: float, max_backoff_s: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential (``backoff_s * 2**attempt``, capped at
    ``max_backoff_s``) with jitter in its upper half, and at least the server's ``Retry-After`` (seconds;
    capped too; an HTTP date or junk is ignored).

    >>> backoff_delay(0, "3", backoff_s=0.0, max_backoff_s=60.0), backoff_delay(5, "999", backoff_s=0.0,
    ...                                                                       max_backoff_s=10.0)
    (3.0, 10.0)
    """
    base = min(max_backoff_s, backoff_s * 2 ** attempt)
    delay = base / 2 + random.uniform(0, base / 2)  # noqa: S311 (jitter, not crypto)
    if retry_after:
        with contextlib.suppress(ValueError):
            delay = max(delay, min(max_backoff_s, float(retry_after)))
    return delay


def fan_out(one: Callable[[R], VLMResponse], requests: Iterator[R], *, concurrency: int,
            redact: Callable[[str], str], thread_name: str = "medvlm-http"
            ) -> Iterator[tuple[R, VLMResponse]]:
    """``(request, one(request))`` as they complete, ``concurrency`` in flight; ``requests`` is pulled
    lazily (only when a slot is free). A :class:`Fatal` from a worker stops the run: nothing more is
    sent, the answers already on their way are yielded, then :class:`BackendError` (message redacted)."""
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=thread_name)
    pending: dict[cf.Future, R] = {}
    try:
        while True:
            while len(pending) < concurrency:
                req = next(requests, None)
                if req is None:
                    break
                pending[pool.submit(one, req)] = req
            if not pending:
                break
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                req = pending.pop(fut)
                try:
                    yield req, fut.result()
                except Fatal as exc:
                    # stop: send nothing more, but keep the answers already on their way (cached)
                    for other in cf.as_completed(list(pending)):
                        with contextlib.suppress(Fatal):
                            response = other.result()
                            if not response.failed:
                                yield pending[other], response
                    pending.clear()
                    raise BackendError(redact(str(exc))) from None
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def n_attempts(max_retries: int, *, probe: bool) -> int:
    """Attempts of one request: ``max_retries + 1``; the probe (the run's first request) at most
    :data:`PROBE_ATTEMPTS`.

    >>> n_attempts(5, probe=False), n_attempts(5, probe=True), n_attempts(0, probe=True)
    (6, 3, 1)
    """
    return min(PROBE_ATTEMPTS, max_retries + 1) if probe else max_retries + 1


@dataclass(frozen=True)
class Retry:
    """One attempt that failed in a way worth another: what went wrong (one line, naming where),
    the server's ``Retry-After`` and the server it went to (the next attempt avoids it)."""

    error: str
    retry_after: str | None = None
    server: str | None = None


class RetryingBackend:
    """The request loop of the HTTP backends (a mixin before :class:`~medvlm.vlm.backends.Backend`).

    :meth:`answer`: the run's first request is a probe, sent alone (:meth:`_probe`; a :class:`Fatal`
    there is a :class:`BackendError`), the rest fan out over ``config.concurrency`` threads
    (:func:`fan_out`). :meth:`_one`: once :data:`GIVE_UP_AFTER` requests in a row failed, the rest are
    returned unsent; otherwise up to :func:`n_attempts` attempts with :func:`backoff_delay` between
    them, each :meth:`_send` (the backend's own). A request that never got an answer is a failure (the
    probe: :class:`Fatal`); its error is redacted.

    A backend calls :meth:`_start_loop` in its ``__init__``, sets ``_redactor``
    (:class:`~medvlm.vlm._secrets.Redactor`) and implements :meth:`_payload` and :meth:`_send`.
    """

    config: Any  # the backend's BackendConfig
    _redactor: Any
    #: prefix of the fan-out's worker threads
    thread_name = "medvlm-http"

    def _start_loop(self) -> None:
        self._lock = threading.Lock()
        self._probed = False
        self.n_answered = 0  # requests answered in this backend's life
        self.n_failed_in_a_row = 0  # requests failed since the last answer

    # ------------------------------------------------------------------ what a backend supplies
    def _down(self) -> str:
        """Who seems down when requests keep failing (in the not-sent message)."""
        return "the server"

    def _payload(self, request: VLMRequest, decoding: Decoding) -> Any:
        """What each attempt of ``request`` sends."""
        raise NotImplementedError

    def _send(self, payload: Any, request: VLMRequest, decoding: Decoding, *, probe: bool,
              previous: Retry | None) -> VLMResponse | Retry:
        """One attempt: the answer (or a failure not worth retrying), a :class:`Retry`, or raise
        :class:`Fatal` (the run must stop). ``previous``: the last attempt's outcome (None: the first)."""
        raise NotImplementedError

    def _probe_hint(self) -> str:
        """Appended to the error of a probe that never got an answer."""
        return ""

    # ------------------------------------------------------------------ shared
    def _redact(self, text: str, *, min_length: int = 1) -> str:
        """``text`` with every secret masked (a server may echo what it was sent); see
        :mod:`medvlm.vlm._secrets`."""
        return self._redactor(text, min_length=min_length)

    def _one(self, request: VLMRequest, decoding: Decoding, *, probe: bool = False) -> VLMResponse:
        """One request with retries. ``probe``: the run's first request (fewer attempts; a server that
        cannot be reached stops the run at once)."""
        with self._lock:
            if self.n_failed_in_a_row >= GIVE_UP_AFTER:
                return VLMResponse(error=f"not sent: the last {GIVE_UP_AFTER} requests all failed, "
                                         f"{self._down()} seems down (see failures.csv); rerun to retry")
        response = self._attempts(request, decoding, probe=probe)
        if response.error:
            response.error = self._redact(response.error)
        with self._lock:
            if response.failed:
                self.n_failed_in_a_row += 1
            else:
                self.n_answered += 1
                self.n_failed_in_a_row = 0
        return response

    def _attempts(self, request: VLMRequest, decoding: Decoding, *, probe: bool) -> VLMResponse:
        payload = self._payload(request, decoding)
        attempts = n_attempts(self.config.max_retries, probe=probe)
        last: Retry | None = None
        for attempt in range(attempts):
            outcome = self._send(payload, request, decoding, probe=probe, previous=last)
            if isinstance(outcome, VLMResponse):
                return outcome
            last = outcome
            if attempt < attempts - 1:
                time.sleep(backoff_delay(attempt, last.retry_after, backoff_s=self.config.backoff_s,
                                         max_backoff_s=self.config.max_backoff_s))
        last_error = last.error if last is not None else "no attempt"
        if probe:  # the run's first request never got an answer: stop before sending the rest
            raise Fatal(f"the first request got no answer in {attempts} attempts (last: {last_error})"
                        f"{self._probe_hint()}")
        return VLMResponse(error=f"failed after {attempts} attempts; last: {last_error}")

    def _probe(self, first: VLMRequest, decoding: Decoding) -> VLMResponse:
        """The run's first request, alone; a :class:`Fatal` stops the run (:class:`BackendError`)."""
        try:
            return self._one(first, decoding, probe=True)
        except Fatal as exc:
            raise BackendError(self._redact(str(exc))) from None

    def answer(self, requests: Iterable[VLMRequest], decoding: Decoding
               ) -> Iterator[tuple[VLMRequest, VLMResponse]]:
        self._redactor.add(body_secrets(decoding.extra_body))  # secret-named --extra-body fields
        it = iter(requests)
        if not self._probed:
            first = next(it, None)
            if first is None:
                return
            self._probed = True
            yield first, self._probe(first, decoding)
        yield from fan_out(lambda req: self._one(req, decoding), it, concurrency=self.config.concurrency,
                           redact=self._redact, thread_name=self.thread_name)
