"""A damaged VLM response cache: moved aside with one warning line and the run goes on; a folder, or
damage found in the middle of a run, is one error line (exit 2); outputs already written stay intact."""

from __future__ import annotations

import json
import os
import sqlite3

import pandas as pd
import pytest
from tests.adversarial.checks import one_line_error, warnings_only

from medvlm.cli import invoke
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.types import VLMResponse


def _eval(work, out, *extra):
    return ["eval-vlm", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
            "--orientations", "axial", "--bootstrap", "0", "--no-progress", *extra]


def _consistency(work, out, *extra):
    return ["consistency", str(work), "--out", str(out), "--backend", "mock", "--model", "hash",
            "--repeats", "2", "--no-progress", *extra]


@pytest.fixture(scope="module")
def big_cache(tmp_path_factory):
    """A valid cache of many pages (about 200 KiB): 600 stored answers and failures."""
    path = tmp_path_factory.mktemp("bigcache") / "cache.sqlite"
    with ResponseCache(path) as cache:
        for i in range(600):
            cache.put(f"k{i}", VLMResponse(raw=f"Choice: {i % 2} " + "x" * 300) if i % 5
                      else VLMResponse(error="HTTP 503"))
        cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    assert len(data) > 40 * 4096
    return data


def _damaged(data: bytes, how: str) -> bytes:
    mid = len(data) // 2
    return {
        "random bytes": os.urandom(20_000),
        "text": b"this is not a database\n" * 200,
        "truncated to half": data[:mid],
        "truncated inside the header": data[:60],
        "truncated to one page": data[:4096],
        "pages overwritten with random bytes": data[:mid] + os.urandom(3 * 4096) + data[mid + 3 * 4096:],
        "pages overwritten with zeros": data[:mid] + bytes(5 * 4096) + data[mid + 5 * 4096:],
        "header overwritten": os.urandom(100) + data[100:],
    }[how]


DAMAGE = ["random bytes", "text", "truncated to half", "truncated inside the header", "truncated to one page",
          "pages overwritten with random bytes", "pages overwritten with zeros", "header overwritten"]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("where", ["default", "--cache"])
def test_a_damaged_cache_is_moved_aside_and_the_run_completes(vlm_work, tmp_path, capsys, big_cache, how,
                                                              where):
    out = tmp_path / "run"
    out.mkdir()
    path = out / "cache.sqlite" if where == "default" else tmp_path / "elsewhere" / "answers.db"
    path.parent.mkdir(exist_ok=True)
    bad = _damaged(big_cache, how)
    path.write_bytes(bad)
    extra = ("--cache", str(path)) if where == "--cache" else ()
    assert invoke(_eval(vlm_work, out, *extra)) == 0
    lines = warnings_only(capsys.readouterr().err)
    assert len(lines) == 1 and str(path) in lines[0] and "damaged" in lines[0] and "asked again" in lines[0]
    aside = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".corrupt-")]
    assert len(aside) == 1 and aside[0].name in lines[0] and aside[0].read_bytes() == bad
    assert len(pd.read_csv(out / "slices.csv")) == 12
    assert (out / "predictions.csv").is_file() and (out / "metrics.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["n_sent"] == 12
    # the fresh cache works: a rerun asks nothing and warns about nothing
    assert invoke(_eval(vlm_work, out, *extra)) == 0
    assert capsys.readouterr().err == ""
    assert json.loads((out / "metrics.json").read_text())["n_cached"] == 12


@pytest.mark.parametrize("how", ["random bytes", "pages overwritten with zeros"])
def test_consistency_recovers_from_a_damaged_cache_too(vlm_work, tmp_path, capsys, big_cache, how):
    out = tmp_path / "cons"
    out.mkdir()
    (out / "cache.sqlite").write_bytes(_damaged(big_cache, how))
    assert invoke(_consistency(vlm_work, out)) == 0
    assert len(warnings_only(capsys.readouterr().err)) == 1
    assert (out / "consistency.csv").is_file() and (out / "summary.json").is_file()


def test_an_empty_file_is_a_new_cache(vlm_work, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "cache.sqlite").write_bytes(b"")
    assert invoke(_eval(vlm_work, out)) == 0
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in out.iterdir() if "corrupt" in p.name) == []


@pytest.mark.parametrize("command", [_eval, _consistency])
@pytest.mark.parametrize("case", ["--cache folder", "default cache is a folder", "--cache inside a file"])
def test_a_cache_that_cannot_be_a_file_is_one_line(vlm_work, tmp_path, capsys, command, case):
    out = tmp_path / "run"
    out.mkdir()
    extra: tuple[str, ...] = ()
    if case == "--cache folder":
        (tmp_path / "dir").mkdir()
        extra = ("--cache", str(tmp_path / "dir"))
    elif case == "default cache is a folder":
        (out / "cache.sqlite").mkdir()
    else:
        (tmp_path / "plain.txt").write_text("x")
        extra = ("--cache", str(tmp_path / "plain.txt" / "cache.sqlite"))
    assert invoke(command(vlm_work, out, *extra)) == 2
    one_line_error(capsys, "cache")
    assert not any("corrupt" in p.name for p in tmp_path.rglob("*"))


class _FailingConnection:
    """A sqlite3 connection whose statements fail from the ``after``-th one starting with ``verb`` on
    (a get: ``SELECT raw``, a put: ``INSERT INTO answers``)."""

    def __init__(self, real, verb: str, after: int, error: Exception) -> None:
        self.real, self.verb, self.after, self.error, self.seen = real, verb, after, error, 0

    def execute(self, sql, *args):
        if sql.lstrip().startswith(self.verb):
            self.seen += 1
            if self.seen >= self.after:
                raise self.error
        return self.real.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize(("verb", "after"), [("SELECT raw", 1), ("SELECT raw", 5), ("INSERT INTO answers", 1),
                                           ("INSERT INTO answers", 4)])
@pytest.mark.parametrize(("error", "words"), [
    (sqlite3.DatabaseError("database disk image is malformed"), "is damaged"),
    (sqlite3.OperationalError("disk I/O error"), "cannot be used"),
])
def test_damage_found_in_the_middle_of_a_run_is_one_line(vlm_work, tmp_path, capsys, monkeypatch, verb, after,
                                                         error, words):
    out = tmp_path / "run"
    assert invoke(_eval(vlm_work, out, "--model", "always:0")) == 0  # a finished run: its outputs are kept
    before = {name: (out / name).read_bytes() for name in ("slices.csv", "predictions.csv", "metrics.json")}
    capsys.readouterr()
    import medvlm.vlm.cache as cache_module

    real_connect = sqlite3.connect
    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda *a, **k: _FailingConnection(
        real_connect(*a, **k), verb, after, error))
    assert invoke(_eval(vlm_work, out)) == 2  # another model: every answer is new (SELECT, then INSERT)
    line = one_line_error(capsys, str(out / "cache.sqlite"), words)
    assert "Traceback" not in line and "another --cache" in line
    assert {name: (out / name).read_bytes() for name in before} == before
    json.loads((out / "run.json").read_text())


#: a damaged answer row: SQLite keeps a BLOB (or text in a REAL column) whatever the column's type
#: (a number written to a TEXT column becomes text: not damage)
DAMAGED_ROWS = [
    ("raw", "CAST(X'FFFE41' AS TEXT)"), ("raw", "X'FF31FE'"), ("raw", "NULL"), ("raw", "X''"),
    ("prefill", "X'FF31FE'"), ("prefill", "CAST(X'C0' AS TEXT)"), ("finish_reason", "X'00'"),
    ("mass", "'abc'"), ("mass", "X'01'"), ("mass", "9e999"),
    ("code_probs", "'{not json'"), ("code_probs", "'3'"), ("code_probs", "'[0.5]'"),
    ("code_probs", "'{\"1\": \"x\"}'"), ("code_probs", "'{\"1\": null}'"), ("code_probs", "'{\"1\": -0.5}'"),
    ("code_probs", "'{\"1\": 1e999}'"), ("code_probs", "'{\"1\": NaN}'"), ("code_probs", "'{\"1\": true}'"),
    ("code_probs", "X'7B7D'"), ("code_probs", "''"), ("code_probs", "'[' || printf('%.*c', 5000, '[')"),
    ("extra", "'[1, 2]'"), ("extra", "X'7B7D'"), ("extra", "'nope'"), ("extra", "5"),
]


@pytest.mark.parametrize(("column", "value"), DAMAGED_ROWS)
def test_a_damaged_row_is_asked_again(tmp_path, capsys, column, value):
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put("a", VLMResponse(raw="Choice: 1", code_probs={"1": 0.9}, mass=0.9))
        cache.put("b", VLMResponse(raw="Choice: 0"))
    db = sqlite3.connect(path)
    db.execute(f"UPDATE answers SET {column} = {value} WHERE key = 'a'")  # noqa: S608 - test values
    db.commit()
    db.close()
    with ResponseCache(path) as cache:
        assert cache.get("a") is None and cache.get("b").raw == "Choice: 0"
        assert cache.n_damaged == 1
        cache.put("a", VLMResponse(raw="Choice: 1"))
        assert cache.get("a").raw == "Choice: 1"
    lines = warnings_only(capsys.readouterr().err)
    assert len(lines) == 1 and "1 damaged answer row " in lines[0] and str(path) in lines[0]


def test_an_empty_answer_and_a_migrated_row_are_not_damage(tmp_path, capsys):
    """raw "" is an answer (log-prob scoring), prefill NULL a 0.1 cache's row: neither is damage."""
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put("a", VLMResponse(raw="", code_probs={"0": 0.2, "1": 0.7}, mass=0.9))
        cache.put("b", VLMResponse(raw="Choice: 0", mass=3))
    db = sqlite3.connect(path)
    db.execute("UPDATE answers SET prefill = NULL, mass = 1")
    db.commit()
    db.close()
    with ResponseCache(path) as cache:
        assert cache.get("a").raw == "" and cache.get("b").prefill is None and cache.get("b").mass == 1.0
        assert cache.n_damaged == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", [
    ("raw", "X'FF31FE'"), ("raw", "NULL"), ("raw", "CAST(X'FFFE41' AS TEXT)"),
    ("code_probs", "'{\"1\": \"x\"}'"), ("prefill", "X'FF'")])
@pytest.mark.parametrize("command", [_eval, _consistency])
def test_damaged_rows_in_a_run_are_asked_again_with_one_warning(vlm_work, tmp_path, capsys, command, damage):
    """A run over a cache with damaged answer rows: no traceback, no unparsed answer taken from them;
    those rows are asked again and one warning line counts them; the rerun is quiet."""
    out = tmp_path / "run"
    assert invoke(command(vlm_work, out)) == 0
    outputs = {f: (out / f).read_bytes() for f in ("slices.csv", "consistency.csv") if (out / f).is_file()}
    capsys.readouterr()
    column, value = damage
    db = sqlite3.connect(out / "cache.sqlite")
    db.execute(f"UPDATE answers SET {column} = {value} WHERE rowid IN (1, 3, 5)")  # noqa: S608 - test values
    db.commit()
    db.close()
    assert invoke(command(vlm_work, out)) == 0
    lines = warnings_only(capsys.readouterr().err)
    assert len(lines) == 1 and "3 damaged answer rows" in lines[0] and "asked again" in lines[0], lines
    assert {f: (out / f).read_bytes() for f in outputs} == outputs  # the same answers, none unparsed
    if command is _eval:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n_sent"] == 3 and metrics["n_unparsed"] == 0
    assert invoke(command(vlm_work, out)) == 0
    assert capsys.readouterr().err == ""
