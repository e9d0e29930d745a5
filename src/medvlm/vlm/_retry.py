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
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import random
from collections.abc import Callable, Iterator
from typing import TypeVar

from medvlm.errors import BackendError
from medvlm.vlm.types import VLMRequest, VLMResponse

#: statuses retried besides every 5xx (any other 4xx stops the run: the request itself is refused)
RETRY_STATUS = {408, 429}
#: after this many requests in a row failed (after their retries), the rest are not sent (returned as
#: failures, retried by the next run): a dead server is not hammered for hours
GIVE_UP_AFTER = 8
#: attempts of the probe (the run's first request) on a 5xx or a timeout before the run stops
PROBE_ATTEMPTS = 3

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
