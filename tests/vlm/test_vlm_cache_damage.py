"""The response cache's damage handling, called directly: what counts as a damaged file, how it is moved
aside (with its SQLite companions), the advice for an error that is not damage, and which stored rows
are read back as answers (``_decode``). The end-to-end paths are in tests/adversarial/test_adv_cache.py."""

from __future__ import annotations

import math
import re
import sqlite3

import pytest

from medvlm.vlm import cache
from medvlm.vlm.cache import _advice, _decode, _is_damage, _number, _warn, move_aside


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
