"""Response cache: SQLite in WAL mode, one row per request key, committed as each answer arrives.

The cache keeps what a backend returned and nothing it did not: the raw text (verbatim), the text the
backend wrote before it (``prefill``), the answer codes' probabilities under log-prob scoring and their
mass, the finish reason. No parsed choice and no class names: answers are parsed after the cache, so a
parser fix reaches every cached answer with no new request.

A killed run loses at most what was in flight. Failures are stored with ``status = 'failed'`` (for the
record and the failure report) and are *not* answers: :meth:`ResponseCache.get` ignores them, so the
next run retries exactly those. The key (see :func:`medvlm.vlm.types.cache_key`) hashes backend, model,
adapter, prompt text, image bytes, decoding parameters, scoring mode and repeat index.

A cache written by medvlm 0.1 (a ``responses`` table with a parsed ``choice`` and three class-named
probability columns) is migrated in place when opened: its keys stay valid, raw texts and
probabilities are kept, the parsed choice is dropped. Its ``prefill`` is unknown (NULL): the engine
takes the request's prefix for a backend that prefills (transformers) and "" otherwise -- exactly what
those answers were parsed with.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from medvlm.errors import DataError
from medvlm.vlm.types import VLMResponse

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,          -- 'ok' or 'failed'
    raw TEXT,
    prefill TEXT,                  -- NULL: unknown (migrated from a 0.1 cache)
    code_probs TEXT,               -- JSON {code: P(code)}; NULL without log-prob scoring
    mass REAL,
    finish_reason TEXT,
    error TEXT,
    extra TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    updated REAL NOT NULL
)
"""
_ANSWER_COLUMNS = {"key", "status", "raw", "prefill", "code_probs", "mass", "finish_reason", "error", "extra",
                   "attempts", "updated"}
#: the 0.1 table's probability columns, in answer-code order
_V1_PROB_COLUMNS = ("p_lgg", "p_hgg", "p_ng")


class ResponseCache:
    """``ResponseCache(path)``; use from one thread (the engine's main thread writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._migrate_v1()
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(answers)")}
            if not columns >= _ANSWER_COLUMNS:
                raise DataError(f"{self.path}: an 'answers' table of an unknown layout (columns "
                                f"{sorted(columns)}); move the file away or give another --cache")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a medvlm response cache ({exc}); move it away or give "
                            "another --cache") from exc

    def _migrate_v1(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "responses" not in tables:
            return
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(responses)")}
        needed = {"key", "status", "raw", "mass", "error", "extra", "attempts", "updated", *_V1_PROB_COLUMNS}
        if not needed <= columns:
            raise DataError(f"{self.path}: a 'responses' table of an unknown layout; move the file away "
                            "or give another --cache")
        rows = self._db.execute(
            "SELECT key, status, raw, p_lgg, p_hgg, p_ng, mass, error, extra, attempts, updated "
            "FROM responses")
        for key, status, raw, p0, p1, p2, mass, error, extra, attempts, updated in rows.fetchall():
            probs = None if p0 is None else json.dumps(dict(zip(("0", "1", "2"), (p0, p1, p2), strict=True)))
            self._db.execute(
                "INSERT OR IGNORE INTO answers (key, status, raw, prefill, code_probs, mass, error, extra, "
                "attempts, updated) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
                (key, status, raw, probs, mass, error, extra, attempts, updated))
        self._db.execute("DROP TABLE IF EXISTS responses")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> VLMResponse | None:
        """The stored answer for ``key`` (``cached=True``; ``prefill`` None when unknown), or None
        (absent or only a failure)."""
        row = self._db.execute(
            "SELECT raw, prefill, code_probs, mass, finish_reason, extra FROM answers "
            "WHERE key=? AND status='ok'", (key,)).fetchone()
        if row is None:
            return None
        raw, prefill, code_probs, mass, finish_reason, extra = row
        return VLMResponse(raw=raw, prefill=prefill,  # type: ignore[arg-type]
                           code_probs=json.loads(code_probs) if code_probs else None, mass=mass,
                           finish_reason=finish_reason, cached=True,
                           extra=json.loads(extra) if extra else {})

    def put(self, key: str, response: VLMResponse) -> None:
        """Store an answer or a failure and commit at once. A failure never overwrites an answer."""
        if response.failed:
            self._db.execute(
                "INSERT INTO answers (key, status, error, updated) VALUES (?, 'failed', ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET error=excluded.error, attempts=attempts+1, "
                "updated=excluded.updated WHERE status='failed'",
                (key, response.error, time.time()))
        else:
            self._db.execute(
                "INSERT INTO answers (key, status, raw, prefill, code_probs, mass, finish_reason, error, "
                "extra, updated) VALUES (?, 'ok', ?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "status='ok', raw=excluded.raw, prefill=excluded.prefill, code_probs=excluded.code_probs, "
                "mass=excluded.mass, finish_reason=excluded.finish_reason, error=NULL, extra=excluded.extra, "
                "updated=excluded.updated",
                (key, response.raw, response.prefill,
                 None if response.code_probs is None else json.dumps(response.code_probs), response.mass,
                 response.finish_reason, json.dumps(response.extra) if response.extra else None, time.time()))
        self._db.commit()

    def failure(self, key: str) -> str | None:
        row = self._db.execute("SELECT error FROM answers WHERE key=? AND status='failed'",
                               (key,)).fetchone()
        return None if row is None else row[0]

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "failed": m}``."""
        out = {"ok": 0, "failed": 0}
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM answers GROUP BY status"):
            out[status] = n
        return out
