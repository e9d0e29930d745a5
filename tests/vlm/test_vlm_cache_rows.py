"""medvlm.vlm.cache.ResponseCache directly: what a row holds, and which write may replace which."""

from __future__ import annotations

import sqlite3

import pytest

from medvlm.errors import DataError
from medvlm.vlm.cache import SCHEMA_VERSION, ResponseCache
from medvlm.vlm.types import VLMResponse

ANSWER = VLMResponse(raw=" 1 Reasoning: ring enhancement", prefill="Choice:",
                     code_probs={"0": 0.1, "1": 0.85, "2": 0.05}, mass=0.97, finish_reason="stop",
                     extra={"tokens": 12})


def _row(path, key):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT status, raw, error, attempts FROM answers WHERE key=?", (key,)).fetchone()
    finally:
        db.close()


def test_an_answer_round_trips_every_field_and_reads_as_cached(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k", ANSWER)
        got = cache.get("k")
    assert got == VLMResponse(raw=" 1 Reasoning: ring enhancement", prefill="Choice:",
                              code_probs={"0": 0.1, "1": 0.85, "2": 0.05}, mass=0.97, finish_reason="stop",
                              cached=True, extra={"tokens": 12})
    with ResponseCache(tmp_path / "c.sqlite") as cache:  # committed: a new connection sees it
        assert cache.get("k") == got and cache.get("other") is None
        assert cache.counts() == {"ok": 1, "failed": 0} and cache.failure("k") is None


def test_an_answer_without_probabilities_or_extra_reads_back_empty(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k", VLMResponse(raw="Choice: 0", prefill=""))
        got = cache.get("k")
    assert (got.raw, got.prefill, got.code_probs, got.mass, got.extra, got.cached) == ("Choice: 0", "", None,
                                                                                        None, {}, True)


def test_a_failure_never_overwrites_a_cached_answer(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put("k", ANSWER)
        cache.put("k", VLMResponse(error="HTTP 500"))
        assert cache.get("k").raw == ANSWER.raw
        assert cache.failure("k") is None
        assert cache.counts() == {"ok": 1, "failed": 0}
    assert _row(path, "k") == ("ok", ANSWER.raw, None, 1)


def test_a_repeated_failure_counts_attempts_and_keeps_the_last_error(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put("k", VLMResponse(error="timeout"))
        assert cache.get("k") is None  # a failure is not an answer: the next run retries it
        assert cache.failure("k") == "timeout"
        cache.put("k", VLMResponse(error="HTTP 503"))
        assert cache.failure("k") == "HTTP 503" and cache.counts() == {"ok": 0, "failed": 1}
    assert _row(path, "k") == ("failed", None, "HTTP 503", 2)


def test_an_answer_replaces_a_failure(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put("k", VLMResponse(error="timeout"))
        cache.put("k", ANSWER)
        assert cache.get("k").code_probs == {"0": 0.1, "1": 0.85, "2": 0.05}
        assert cache.failure("k") is None and cache.counts() == {"ok": 1, "failed": 0}
    assert _row(path, "k") == ("ok", ANSWER.raw, None, 1)


def test_a_new_answer_replaces_an_old_one(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k", ANSWER)
        cache.put("k", VLMResponse(raw="Choice: 0", prefill="", finish_reason="length"))
        got = cache.get("k")
    assert (got.raw, got.prefill, got.code_probs, got.mass, got.finish_reason, got.extra) == (
        "Choice: 0", "", None, None, "length", {})


def test_counts_per_status_and_schema_version(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"  # the folder is made
    with ResponseCache(path) as cache:
        for i in range(3):
            cache.put(f"ok{i}", ANSWER)
        cache.put("bad", VLMResponse(error="boom"))
        assert cache.counts() == {"ok": 3, "failed": 1}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_table_of_an_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, status TEXT)")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="'answers' table of an unknown layout"):
        ResponseCache(path)



def test_the_folder_is_made_and_a_locked_database_is_waited_for(tmp_path, monkeypatch):
    import medvlm.vlm.cache as cache_module

    seen = {}
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        seen.update(kwargs)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(cache_module.sqlite3, "connect", connect)
    with ResponseCache(tmp_path / "a" / "b" / "c.sqlite") as cache:  # missing parents are made
        cache.put("k", ANSWER)
    assert seen == {"timeout": 30.0}  # another process writing: wait up to 30 s, not sqlite's 5 s


def test_a_v1_table_with_exactly_the_needed_columns_is_migrated(tmp_path):
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, status TEXT, raw TEXT, p_lgg REAL, p_hgg REAL, "
               "p_ng REAL, mass REAL, error TEXT, extra TEXT, attempts INTEGER, updated REAL)")  # no 'choice'
    db.execute("INSERT INTO responses VALUES ('k', 'ok', 'Choice: 1', 0.25, 0.5, 0.25, 0.8, NULL, NULL, 1, "
               "0)")
    db.commit()
    db.close()
    with ResponseCache(path) as cache:
        got = cache.get("k")
    assert (got.raw, got.prefill, got.code_probs, got.mass) == ("Choice: 1", None, {"0": 0.25, "1": 0.5,
                                                                                    "2": 0.25}, 0.8)


def test_layout_errors_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT, something TEXT)")
    db.commit()
    db.close()
    with pytest.raises(DataError, match=rf"^{path}: a 'responses' table of an unknown layout; move the file "
                                        r"away or give another --cache$"):
        ResponseCache(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    ResponseCache(junk).close()  # a damaged file is moved aside (tests/adversarial/test_adv_cache.py)
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("junk.sqlite.corrupt-*")] == ["junk.sqlite"]


def test_a_v1_table_needs_three_probability_columns_read_in_table_order(tmp_path):
    """The 0.1 table's ``p_*`` columns are answer codes 0, 1, 2 in table order; another count of them is
    an unknown layout (nothing migrated, nothing dropped)."""
    base = ("key TEXT PRIMARY KEY, status TEXT, raw TEXT, mass REAL, error TEXT, extra TEXT, "
            "attempts INTEGER, updated REAL")
    two = tmp_path / "two.sqlite"
    db = sqlite3.connect(two)
    db.execute(f"CREATE TABLE responses ({base}, p_lgg REAL, p_hgg REAL)")
    db.commit()
    db.close()
    with pytest.raises(DataError, match=r"a 'responses' table of an unknown layout"):
        ResponseCache(two)
    db = sqlite3.connect(two)
    assert db.execute("SELECT COUNT(*) FROM pragma_table_info('responses')").fetchone() == (10,)  # kept
    db.close()
    moved = tmp_path / "moved.sqlite"  # the probability columns after the others: still codes 0, 1, 2
    db = sqlite3.connect(moved)
    db.execute(f"CREATE TABLE responses ({base}, p_lgg REAL, p_hgg REAL, p_ng REAL)")
    db.execute("INSERT INTO responses VALUES ('k', 'ok', 'Choice: 0', 0.9, NULL, NULL, 1, 0, 0.6, 0.2, 0.1)")
    db.commit()
    db.close()
    with ResponseCache(moved) as cache:
        got = cache.get("k")
    assert (got.raw, got.code_probs, got.mass) == ("Choice: 0", {"0": 0.6, "1": 0.2, "2": 0.1}, 0.9)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_a_failure_is_neither_an_answer_nor_a_damaged_row(tmp_path, capsys):
    """get() of a key that only failed: None, and not counted as a damaged answer (no warning on close)."""
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k", VLMResponse(error="timeout"))
        assert cache.get("k") is None
        assert cache.n_damaged == 0
    assert "damaged" not in capsys.readouterr().err


def test_an_answered_key_has_no_failure_even_with_an_old_error_text(tmp_path):
    """A 0.1 cache whose answered row still holds the error of an earlier attempt: the row is an answer,
    so failure() is None (only failed rows report their error)."""
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, status TEXT, raw TEXT, p_lgg REAL, p_hgg REAL, "
               "p_ng REAL, mass REAL, error TEXT, extra TEXT, attempts INTEGER, updated REAL)")
    db.execute("INSERT INTO responses VALUES ('k', 'ok', 'Choice: 1', NULL, NULL, NULL, NULL, 'HTTP 500', "
               "NULL, 2, 0)")
    db.execute("INSERT INTO responses VALUES ('f', 'failed', NULL, NULL, NULL, NULL, NULL, 'timeout', "
               "NULL, 1, 0)")
    db.commit()
    db.close()
    with ResponseCache(path) as cache:
        assert cache.get("k").raw == "Choice: 1"
        assert cache.failure("k") is None
        assert cache.failure("f") == "timeout" and cache.get("f") is None


def test_move_aside_takes_the_wal_and_shm_files_along(tmp_path):
    from medvlm.vlm.cache import move_aside

    path = tmp_path / "c.sqlite"
    for suffix, data in (("", b"db"), ("-wal", b"wal"), ("-shm", b"shm")):
        (tmp_path / f"c.sqlite{suffix}").write_bytes(data)
    target = move_aside(path)
    assert target.name.startswith("c.sqlite.corrupt-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, f"{target.name}-wal",
                                                                 f"{target.name}-shm"])
    assert (tmp_path / f"{target.name}-wal").read_bytes() == b"wal"
