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

A damaged cache never stops a run with a traceback. A file that is not a usable SQLite database (garbage,
truncated, damaged pages: it fails to open or fails ``PRAGMA quick_check``) is moved aside to
``<name>.corrupt-<timestamp>`` (its ``-wal``/``-shm`` companions with it), one ``medvlm: warning:`` line
on stderr says so, and a fresh cache takes its place: the answers it held are asked again. A 0-byte file
is simply a new cache. A folder, a file in use by another run (locked), or one that cannot be opened or
written is a one-line :class:`~medvlm.errors.DataError`, and so is damage found in the middle of a run
(a ``get``/``put`` failing): rerunning then moves the damaged file aside.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

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
#: the 0.1 table held one probability column per answer code it asked for (three): its ``p_*`` columns,
#: in table order, which is answer-code order (:func:`_v1_prob_columns`)
_V1_N_CODES = 3
_V1_COLUMNS = {"key", "status", "raw", "mass", "error", "extra", "attempts", "updated"}


def _v1_prob_columns(columns: list[str]) -> list[str]:
    """The probability columns of a 0.1 ``responses`` table (``columns``: its columns in table order):
    the ``p_*`` ones, in order -- the probabilities of answer codes "0", "1", "2".

    >>> _v1_prob_columns(["key", "status", "raw", "choice", "p_a", "p_b", "p_c", "mass"])
    ['p_a', 'p_b', 'p_c']
    """
    return [c for c in columns if c.startswith("p_")]


#: SQLite error names that mean "the file is damaged" (move it aside), not "in use" or "not writable"
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    return name.startswith(_DAMAGE) or any(w in str(exc).lower() for w in _DAMAGE_WORDS)


class _Damaged(Exception):
    """The file is not a usable SQLite database (raised by :meth:`ResponseCache._open`)."""


def _warn(message: str) -> None:
    print(f"medvlm: warning: {message}", file=sys.stderr)


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm`` files) to ``<name>.corrupt-<timestamp>[-n]``; returns the
    new path of the database file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.is_file():
            companion.rename(target.with_name(target.name + suffix))
    return target


class ResponseCache:
    """``ResponseCache(path)``; use from one thread (the engine's main thread writes).

    ``recover`` (default True): a damaged file is moved aside with a warning and a fresh cache started
    (see the module docstring); False raises a :class:`DataError` instead.
    """

    def __init__(self, path: str | Path, *, recover: bool = True) -> None:
        self.path = Path(path)
        self.n_damaged = 0  # damaged answer rows met by get() (asked again)
        if self.path.is_dir():
            raise DataError(f"{self.path}: the response cache is a folder, not a file; give --cache a file "
                            "path (e.g. RUN/cache.sqlite)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot create the response cache's folder "
                            f"({exc.strerror or exc}); give another --cache") from None
        try:
            self._open()
        except _Damaged as exc:
            if not recover:
                raise DataError(f"{self.path}: the response cache is damaged ({exc}); move it aside or give "
                                "another --cache") from None
            moved = move_aside(self.path)
            _warn(f"the response cache {self.path} is damaged ({exc}); moved it to {moved.name} and started "
                  "a fresh one: its answers will be asked again")
            try:
                self._open()
            except _Damaged as again:  # pragma: no cover - a fresh file that is damaged at once
                raise DataError(f"{self.path}: cannot start a fresh response cache ({again})") from None

    def _open(self) -> None:
        """Connect, check (``quick_check``), create or migrate the schema; :class:`_Damaged` for a file
        that is not a usable database, :class:`DataError` for one that cannot be used otherwise."""
        db = None
        try:
            db = sqlite3.connect(str(self.path), timeout=30.0)
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise _Damaged(f"quick_check: {str(check[0][0]).splitlines()[0][:200]}")
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._migrate_v1()
            columns = {r[1] for r in db.execute("PRAGMA table_info(answers)")}
            if not columns >= _ANSWER_COLUMNS:
                raise DataError(f"{self.path}: an 'answers' table of an unknown layout (columns "
                                f"{sorted(columns)}); move the file away or give another --cache")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.commit()
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if _is_damage(exc):
                raise _Damaged(str(exc)) from None
            raise DataError(f"{self.path}: cannot use the response cache ({exc}); "
                            f"{_advice(exc)}") from None
        except BaseException:
            if db is not None:
                db.close()
            raise

    def _migrate_v1(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "responses" not in tables:
            return
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(responses)")]
        prob_columns = _v1_prob_columns(columns)
        if not set(columns) >= _V1_COLUMNS or len(prob_columns) != _V1_N_CODES:
            raise DataError(f"{self.path}: a 'responses' table of an unknown layout; move the file away "
                            "or give another --cache")
        probs_sql = ", ".join('"' + c.replace('"', '""') + '"' for c in prob_columns)  # quoted identifiers
        rows = self._db.execute(
            f"SELECT key, status, raw, {probs_sql}, mass, error, extra, attempts, updated "
            "FROM responses")
        codes = tuple(str(i) for i in range(_V1_N_CODES))
        for key, status, raw, p0, p1, p2, mass, error, extra, attempts, updated in rows.fetchall():
            probs = None if p0 is None else json.dumps(dict(zip(codes, (p0, p1, p2), strict=True)))
            self._db.execute(
                "INSERT OR IGNORE INTO answers (key, status, raw, prefill, code_probs, mass, error, extra, "
                "attempts, updated) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
                (key, status, raw, probs, mass, error, extra, attempts, updated))
        self._db.execute("DROP TABLE IF EXISTS responses")

    def close(self) -> None:
        """Close the database; when damaged answer rows were met (:meth:`get`), one warning line says
        how many (they were treated as missing and asked again)."""
        self._db.close()  # a damaged database still closes
        if self.n_damaged:
            n, self.n_damaged = self.n_damaged, 0
            _warn(f"the response cache {self.path} held {n} damaged answer row{'s' * (n != 1)} (not text, no "
                  "answer, or JSON that does not decode); they were treated as missing and asked again")

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: tuple[Any, ...] = (), *, commit: bool = False,
             undecodable: list[Any] | None = None) -> list[Any]:
        """``execute(sql).fetchall()`` (then commit); a failing database is a one-line DataError.
        ``undecodable``: what to return for a row whose text is not UTF-8 (a damaged row) instead."""
        try:
            rows = self._db.execute(sql, params).fetchall()
            if commit:
                self._db.commit()
            return rows
        except sqlite3.DatabaseError as exc:
            if undecodable is not None and "could not decode" in str(exc).lower():
                return undecodable
            if _is_damage(exc):
                raise DataError(f"the response cache {self.path} is damaged ({exc}); rerun the same "
                                "command to move it aside and ask its answers again, or give another --cache"
                                ) from None
            raise DataError(f"the response cache {self.path} cannot be used ({exc}); "
                            f"{_advice(exc)}") from None

    def get(self, key: str) -> VLMResponse | None:
        """The stored answer for ``key`` (``cached=True``; ``prefill`` None when unknown), or None
        (absent or only a failure). A stored answer row that is damaged (:func:`_decode`: text that is
        not UTF-8, a BLOB or a number where text belongs, no raw text, JSON that does not decode or
        holds values of the wrong type) counts as absent: it is asked again and overwritten, and
        counted in :attr:`n_damaged` (one warning line when the cache is closed)."""
        rows = self._run("SELECT raw, prefill, code_probs, mass, finish_reason, extra FROM answers "
                         "WHERE key=? AND status='ok'", (key,), undecodable=[_UNDECODABLE])
        if not rows:
            return None
        response = None if rows[0] is _UNDECODABLE else _decode(*rows[0])
        if response is None:
            self.n_damaged += 1
        return response

    def put(self, key: str, response: VLMResponse) -> None:
        """Store an answer or a failure and commit at once. A failure never overwrites an answer."""
        if response.failed:
            self._run(
                "INSERT INTO answers (key, status, error, updated) VALUES (?, 'failed', ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET error=excluded.error, attempts=attempts+1, "
                "updated=excluded.updated WHERE status='failed'",
                (key, response.error, time.time()), commit=True)
        else:
            self._run(
                "INSERT INTO answers (key, status, raw, prefill, code_probs, mass, finish_reason, error, "
                "extra, updated) VALUES (?, 'ok', ?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "status='ok', raw=excluded.raw, prefill=excluded.prefill, code_probs=excluded.code_probs, "
                "mass=excluded.mass, finish_reason=excluded.finish_reason, error=NULL, extra=excluded.extra, "
                "updated=excluded.updated",
                (key, response.raw, response.prefill,
                 None if response.code_probs is None else json.dumps(response.code_probs), response.mass,
                 response.finish_reason, json.dumps(response.extra) if response.extra else None, time.time()),
                commit=True)

    def failure(self, key: str) -> str | None:
        rows = self._run("SELECT error FROM answers WHERE key=? AND status='failed'", (key,))
        return rows[0][0] if rows else None

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "failed": m}``."""
        out = {"ok": 0, "failed": 0}
        for status, n in self._run("SELECT status, COUNT(*) FROM answers GROUP BY status"):
            out[status] = n
        return out


#: what :meth:`ResponseCache._run` returns for a row whose text is not UTF-8
_UNDECODABLE = ("undecodable",)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _decode(raw: Any, prefill: Any, code_probs: Any, mass: Any, finish_reason: Any, extra: Any
            ) -> VLMResponse | None:
    """A stored answer row as a :class:`VLMResponse`, or None when it is damaged: SQLite keeps any
    type in any column, so each is checked -- ``raw`` text (every backend stores one, "" included),
    ``prefill`` and ``finish_reason`` text or NULL, ``mass`` a finite number or NULL, ``code_probs``
    NULL or JSON text of an object of finite non-negative numbers, ``extra`` NULL or JSON text of an
    object."""
    if not isinstance(raw, str) or not all(v is None or isinstance(v, str)
                                           for v in (prefill, finish_reason, code_probs, extra)):
        return None
    if mass is not None and not _number(mass):
        return None
    try:
        probs = json.loads(code_probs) if code_probs is not None else None
        extra_dict = json.loads(extra) if extra is not None else {}
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(extra_dict, dict):
        return None
    if probs is not None and not (isinstance(probs, dict)
                                  and all(_number(p) and p >= 0 for p in probs.values())):
        return None
    return VLMResponse(raw=raw, prefill=prefill,  # type: ignore[arg-type]
                       code_probs=probs, mass=None if mass is None else float(mass),
                       finish_reason=finish_reason, cached=True, extra=extra_dict)


def _advice(exc: sqlite3.DatabaseError) -> str:
    """What to do about a database error that is not damage (locked, read-only, disk full, ...)."""
    text = f"{getattr(exc, 'sqlite_errorname', '')} {exc}".lower()
    if "busy" in text or "locked" in text:
        return "another medvlm run seems to use it: wait for it, or give another --cache"
    if "readonly" in text or "unable to open" in text or "cantopen" in text or "permission" in text:
        return "check that its folder exists and is writable, or give another --cache"
    return "give another --cache"
