"""Response cache: SQLite in WAL mode, one row per request key, committed as each answer arrives.

A killed run loses at most what was in flight. Failures are stored with ``status = 'failed'`` (for the
record and the failure report) and are *not* answers: :meth:`ResponseCache.get` ignores them, so the
next run retries exactly those. The key (see :func:`medvlm.vlm.types.cache_key`) hashes backend, model,
adapter, prompt text, image bytes, decoding parameters, scoring mode and repeat index.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from medvlm.vlm.types import VLMResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,          -- 'ok' or 'failed'
    raw TEXT,
    choice INTEGER,
    p_lgg REAL, p_hgg REAL, p_ng REAL, mass REAL,
    error TEXT,
    extra TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    updated REAL NOT NULL
)
"""


class ResponseCache:
    """``ResponseCache(path)``; use from one thread (the engine's main thread writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> VLMResponse | None:
        """The stored answer for ``key`` (``cached=True``), or None (absent or only a failure)."""
        row = self._db.execute(
            "SELECT raw, choice, p_lgg, p_hgg, p_ng, mass, extra FROM responses WHERE key=? AND status='ok'",
            (key,)).fetchone()
        if row is None:
            return None
        raw, choice, p0, p1, p2, mass, extra = row
        probs = None if p0 is None else (p0, p1, p2)
        return VLMResponse(raw=raw, choice=choice, probs=probs, mass=mass, cached=True,
                           extra=json.loads(extra) if extra else {})

    def put(self, key: str, response: VLMResponse) -> None:
        """Store an answer or a failure and commit at once. A failure never overwrites an answer."""
        p = response.probs or (None, None, None)
        status = "failed" if response.failed else "ok"
        if status == "failed":
            self._db.execute(
                "INSERT INTO responses (key, status, error, updated) VALUES (?, 'failed', ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET error=excluded.error, attempts=attempts+1, "
                "updated=excluded.updated WHERE status='failed'",
                (key, response.error, time.time()))
        else:
            self._db.execute(
                "INSERT INTO responses (key, status, raw, choice, p_lgg, p_hgg, p_ng, mass, error, extra, "
                "updated)"
                " VALUES (?, 'ok', ?, ?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT(key) DO UPDATE SET status='ok', "
                "raw=excluded.raw, choice=excluded.choice, p_lgg=excluded.p_lgg, p_hgg=excluded.p_hgg, "
                "p_ng=excluded.p_ng, mass=excluded.mass, error=NULL, extra=excluded.extra, "
                "updated=excluded.updated",
                (key, response.raw, response.choice, p[0], p[1], p[2], response.mass,
                 json.dumps(response.extra) if response.extra else None, time.time()))
        self._db.commit()

    def failure(self, key: str) -> str | None:
        row = self._db.execute("SELECT error FROM responses WHERE key=? AND status='failed'",
                               (key,)).fetchone()
        return None if row is None else row[0]

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "failed": m}``."""
        out = {"ok": 0, "failed": 0}
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM responses GROUP BY status"):
            out[status] = n
        return out
