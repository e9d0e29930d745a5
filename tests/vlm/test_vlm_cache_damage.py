"""The response cache's damage handling, called directly: what counts as a damaged file, how it is moved
aside (with its SQLite companions), the advice for an error that is not damage, and which stored rows
are read back as answers (``_decode``). The end-to-end paths are in tests/adversarial/test_adv_cache.py."""

from __future__ import annotations

import math
import re
import sqlite3

import pytest

from medvlm.errors import DataError
from medvlm.vlm import cache
from medvlm.vlm.cache import (
    ResponseCache,
    _advice,
    _decode,
    _is_damage,
    _number,
    _warn,
    move_aside,
)


def _error(message: str, errorname: str | None = "absent") -> sqlite3.DatabaseError:
    exc = sqlite3.DatabaseError(message)
    if errorname != "absent":
        exc.sqlite_errorname = errorname  # what sqlite3 sets on errors it raises itself
    return exc


@pytest.mark.parametrize(("message", "errorname", "damaged"), [
    ("database disk image is malformed", "absent", True),       # the words alone, no error name
    ("file is not a database", "absent", True),
    ("Index CORRUPT on page 3", "absent", True),                 # read case-blind
    ("something odd", "SQLITE_CORRUPT", True),                   # the name alone
    ("something odd", "SQLITE_CORRUPT_VTAB", True),              # an extended code of the family
    ("something odd", "SQLITE_NOTADB", True),
    ("database is locked", "SQLITE_BUSY", False),
    ("attempt to write a readonly database", "SQLITE_READONLY", False),
    ("something odd", None, False),                              # a name of None is no name
    ("something odd", "absent", False),                          # errors raised in Python have none
])
def test_what_counts_as_a_damaged_file(message, errorname, damaged):
    assert _is_damage(_error(message, errorname)) is damaged


BUSY = "another medvlm run seems to use it: wait for it, or give another --cache"


@pytest.mark.parametrize(("message", "errorname", "advice"), [
    ("database is locked", "absent", BUSY),
    ("x", "SQLITE_BUSY", BUSY),
    ("attempt to write a readonly database", "absent",
     "check that its folder exists and is writable, or give another --cache"),
    ("unable to open database file", "absent",
     "check that its folder exists and is writable, or give another --cache"),
    ("x", "SQLITE_CANTOPEN", "check that its folder exists and is writable, or give another --cache"),
    ("Permission denied", "absent", "check that its folder exists and is writable, or give another --cache"),
    ("database or disk is full", "SQLITE_FULL", "give another --cache"),
    ("x", "absent", "give another --cache"),
])
def test_the_advice_for_an_error_that_is_not_damage(message, errorname, advice):
    assert _advice(_error(message, errorname)) == advice


def test_a_warning_is_one_prefixed_line_on_stderr(capsys):
    _warn("the cache held 2 damaged rows")
    out = capsys.readouterr()
    assert out.err == "medvlm: warning: the cache held 2 damaged rows\n"
    assert out.out == ""


def test_move_aside_renames_the_file_and_its_companions(tmp_path, monkeypatch):
    db = tmp_path / "responses.sqlite"
    for name, text in [("", "db"), ("-wal", "wal"), ("-shm", "shm"), ("-journal", "journal")]:
        (tmp_path / f"responses.sqlite{name}").write_text(text)
    (tmp_path / "responses.sqlite-other").write_text("kept")
    moved = move_aside(db)
    assert re.fullmatch(r"responses\.sqlite\.corrupt-\d{8}-\d{6}", moved.name), moved.name
    assert moved.read_text() == "db"
    for suffix, text in [("-wal", "wal"), ("-shm", "shm"), ("-journal", "journal")]:
        assert (tmp_path / f"{moved.name}{suffix}").read_text() == text
        assert not (tmp_path / f"responses.sqlite{suffix}").exists()
    assert not db.exists()
    assert (tmp_path / "responses.sqlite-other").read_text() == "kept"  # not a SQLite companion


def test_move_aside_twice_in_one_second_numbers_the_second(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.time, "strftime",
                        lambda fmt: "20260102-030405" if fmt == "%Y%m%d-%H%M%S" else "?")
    db = tmp_path / "c.db"
    names = []
    for text in ("first", "second", "third"):
        db.write_text(text)
        names.append(move_aside(db).name)
    assert names == ["c.db.corrupt-20260102-030405", "c.db.corrupt-20260102-030405-2",
                     "c.db.corrupt-20260102-030405-3"]
    assert [(tmp_path / n).read_text() for n in names] == ["first", "second", "third"]


@pytest.mark.parametrize(("value", "ok"), [
    (1, True), (0.25, True), (0, True), (-2.5, True),
    (True, False), (False, False), (math.nan, False), (math.inf, False), ("1", False), (None, False),
])
def test_a_stored_number_is_a_finite_int_or_float_not_a_bool(value, ok):
    assert _number(value) is ok


def _row(**kw):
    row = {"raw": "Answer: A", "prefill": None, "code_probs": None, "mass": None, "finish_reason": None,
           "extra": None}
    row.update(kw)
    return _decode(row["raw"], row["prefill"], row["code_probs"], row["mass"], row["finish_reason"],
                   row["extra"])


def test_a_good_row_is_read_back_whole():
    resp = _row(prefill="Answer:", code_probs='{"A": 0.75, "B": 0}', mass=0.5, finish_reason="stop",
                extra='{"tokens": 3}')
    assert (resp.raw, resp.prefill, resp.code_probs, resp.mass, resp.finish_reason, resp.cached,
            resp.extra) == ("Answer: A", "Answer:", {"A": 0.75, "B": 0}, 0.5, "stop", True, {"tokens": 3})
    assert isinstance(resp.mass, float)
    empty = _row(raw="")
    assert (empty.raw, empty.code_probs, empty.mass, empty.extra) == ("", None, None, {})


@pytest.mark.parametrize("damage", [
    {"raw": None}, {"raw": b"Answer: A"}, {"raw": 3},
    {"prefill": 1}, {"finish_reason": b"stop"}, {"code_probs": 2}, {"extra": 5},
    {"mass": "0.5"}, {"mass": math.nan}, {"mass": True},
    {"code_probs": "{not json"}, {"extra": "[1, 2]"}, {"extra": "{bad"},
    {"code_probs": "[0.5, 0.5]"}, {"code_probs": '{"A": -0.1}'}, {"code_probs": '{"A": "0.5"}'},
    {"code_probs": '{"A": NaN}'}, {"code_probs": '{"A": true}'},
])
def test_a_damaged_row_is_not_an_answer(damage):
    assert _row(**damage) is None


def test_a_probability_of_exactly_zero_is_kept():
    assert _row(code_probs='{"A": 0, "B": 1}').code_probs == {"A": 0, "B": 1}


# ------------------------------------------------------------------ ResponseCache's messages, in full
def test_a_folder_given_as_the_cache_is_refused_in_full(tmp_path):
    with pytest.raises(DataError) as info:
        ResponseCache(tmp_path)
    assert str(info.value) == (f"{tmp_path}: the response cache is a folder, not a file; give --cache a file "
                               "path (e.g. RUN/cache.sqlite)")


def test_a_cache_folder_that_cannot_be_made_names_the_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "sub" / "c.sqlite"
    with pytest.raises(DataError) as info:
        ResponseCache(path)
    assert str(info.value) == (f"{path}: cannot create the response cache's folder (Not a directory); give "
                               "another --cache")


def test_a_damaged_file_without_recovery_and_with_it(tmp_path, capsys):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(DataError) as info:
        ResponseCache(path, recover=False)
    assert str(info.value) == (f"{path}: the response cache is damaged (file is not a database); move it "
                               "aside or give another --cache")
    with ResponseCache(path) as cache:
        assert cache.counts() == {"ok": 0, "failed": 0}
    (moved,) = tmp_path.glob("c.sqlite.corrupt-*")
    assert capsys.readouterr().err == (f"medvlm: warning: the response cache {path} is damaged (file is "
                                       f"not a database); moved it to {moved.name} and started a fresh one: "
                                       "its answers will be asked again\n")


class _Connection:
    """A real connection whose ``quick_check`` or every statement answers as told."""

    def __init__(self, real, *, check=None, error=None):
        self._real, self._check, self._error = real, check, error

    def execute(self, sql, *args):
        if self._error is not None and not sql.upper().startswith("PRAGMA QUICK_CHECK"):
            raise self._error
        if self._check is not None and sql.upper().startswith("PRAGMA QUICK_CHECK"):
            return sqlite3.connect(":memory:").execute(
                "SELECT ?" + " UNION ALL SELECT ?" * (len(self._check) - 1), self._check)
        return self._real.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_failed_quick_check_is_named_by_its_first_line_cut_at_200(tmp_path, monkeypatch):
    real = sqlite3.connect
    first = "*** in database main ***" + "x" * 300
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _Connection(
        real(*a, **k), check=[f"{first}\nOn tree page 3 cell 0: invalid page number", "row 2"]))
    path = tmp_path / "c.sqlite"
    with pytest.raises(DataError) as info:
        ResponseCache(path, recover=False)
    assert str(info.value) == (f"{path}: the response cache is damaged (quick_check: {first[:200]}); move it "
                               "aside or give another --cache")


@pytest.mark.parametrize(("error", "message"), [
    (sqlite3.OperationalError("unable to open database file"),
     "cannot use the response cache (unable to open database file); check that its folder exists and is "
     "writable, or give another --cache"),
    (sqlite3.OperationalError("database is locked"),
     "cannot use the response cache (database is locked); another medvlm run seems to use it: wait for it, "
     "or give another --cache"),
])
def test_an_error_that_is_not_damage_is_one_line_with_advice(tmp_path, monkeypatch, error, message):
    def refuse(*a, **k):
        raise error

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with pytest.raises(DataError) as info:
        ResponseCache(tmp_path / "c.sqlite")
    assert str(info.value) == f"{tmp_path / 'c.sqlite'}: {message}"
    assert not list(tmp_path.glob("*.corrupt-*"))  # not damage: nothing moved aside


@pytest.mark.parametrize(("error", "message"), [
    (sqlite3.DatabaseError("database disk image is malformed"),
     "is damaged (database disk image is malformed); rerun the same command to move it aside and ask its "
     "answers again, or give another --cache"),
    (sqlite3.OperationalError("attempt to write a readonly database"),
     "cannot be used (attempt to write a readonly database); check that its folder exists and is writable, "
     "or give another --cache"),
])
def test_a_statement_that_fails_mid_run_is_one_line(tmp_path, error, message):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache._db = _Connection(cache._db, error=error)
    with pytest.raises(DataError) as info:
        cache.counts()
    assert str(info.value) == f"the response cache {path} {message}"


def test_the_damaged_rows_warning_counts_them_once(tmp_path, capsys):
    path = tmp_path / "c.sqlite"
    for n, noun in [(1, "row"), (2, "rows")]:
        cache = ResponseCache(path)
        cache.n_damaged = n
        cache.close()
        assert cache.n_damaged == 0
        assert capsys.readouterr().err == (f"medvlm: warning: the response cache {path} held {n} damaged "
                                           f"answer {noun} (not text, no answer, or JSON that does not "
                                           "decode); they were treated as missing and asked again\n")


def test_a_v1_cache_with_a_quote_in_a_probability_column_migrates(tmp_path):
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(str(path))
    db.execute('CREATE TABLE responses (key TEXT PRIMARY KEY, status TEXT, raw TEXT, "p_a""b" REAL, '
               "p_c REAL, p_d REAL, mass REAL, error TEXT, extra TEXT, attempts INTEGER, updated REAL)")
    db.execute("INSERT INTO responses VALUES ('k', 'ok', 'Choice: 1', 0.25, 0.5, 0.25, 0.9, NULL, NULL, 1, "
               "0)")
    db.commit()
    db.close()
    with ResponseCache(path) as cache:
        resp = cache.get("k")
    assert resp.raw == "Choice: 1" and resp.mass == 0.9
    assert resp.code_probs == {"0": 0.25, "1": 0.5, "2": 0.25}
