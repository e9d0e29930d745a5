"""Several servers behind one ``openai`` backend (``--base-url`` given more than once).

:class:`ServerPool` sends each request to the server with the fewest requests in flight (ties: fewer
recent failures, then in turn); a server that failed :data:`FAILS_BEFORE_REST` times in a row rests
(exponential cool-down, at most a minute) while others are available.
"""

from __future__ import annotations

import threading
import time

#: failures in a row after which a server rests
FAILS_BEFORE_REST = 3


class ServerPool:
    """Spreads requests over servers: fewest in flight first; one that keeps failing rests a while."""

    def __init__(self, urls: list[str], *, rest_s: float = 5.0) -> None:
        self.urls = urls
        self.rest_s = rest_s
        self._lock = threading.Lock()
        self.in_flight = dict.fromkeys(urls, 0)
        self.fails = dict.fromkeys(urls, 0)
        self.rest_until = dict.fromkeys(urls, 0.0)
        self.sent = dict.fromkeys(urls, 0)
        self._turn = 0

    def acquire(self, avoid: str | None = None, only: str | None = None) -> str:
        """A server to send to (``only``: that one, counted like any other)."""
        with self._lock:
            if only is not None:
                self.in_flight[only] += 1
                self.sent[only] += 1
                return only
            now = time.monotonic()
            ready = [u for u in self.urls if self.rest_until[u] <= now]
            if avoid is not None and len(ready) > 1:
                ready = [u for u in ready if u != avoid] or ready
            if not ready:  # all resting: the one that wakes first
                ready = [min(self.urls, key=lambda u: self.rest_until[u])]
            self._turn += 1
            order = {u: (i - self._turn) % len(self.urls) for i, u in enumerate(self.urls)}
            url = min(ready, key=lambda u: (self.in_flight[u], self.fails[u], order[u]))
            self.in_flight[url] += 1
            self.sent[url] += 1
            return url

    def release(self, url: str, ok: bool) -> None:
        with self._lock:
            self.in_flight[url] -= 1
            if ok:
                self.fails[url] = 0
                self.rest_until[url] = 0.0
            else:
                self.fails[url] += 1
                if self.fails[url] >= FAILS_BEFORE_REST:
                    wait = min(60.0, self.rest_s * 2 ** (self.fails[url] - FAILS_BEFORE_REST))
                    self.rest_until[url] = time.monotonic() + wait
