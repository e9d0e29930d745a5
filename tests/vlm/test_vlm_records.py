"""Answers are parsed after the cache: a parser change reaches cached answers; 0.1 caches migrate."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

from medvlm.tasks import get_task
from medvlm.tasks.base import choice_parser
from medvlm.vlm.backends import BackendConfig, MockBackend
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.engine import ask_images
from medvlm.vlm.records import interpret
from medvlm.vlm.types import Decoding, VLMResponse, cache_key

GRADING = get_task("brats-grading")
IMAGES = [("a", b"png-a"), ("b", b"png-b")]


def test_interpret_uses_probabilities_then_the_parser():
    r = interpret(VLMResponse(raw="Choice: 0", code_probs={"0": 0.0, "1": 0.0, "2": 0.0}), GRADING)
    assert r.probs is None and r.choice == 0  # all-zero probabilities: the text decides
    r = interpret(VLMResponse(raw="", code_probs={"1": 0.2, "2": 0.2}), GRADING)  # "0" missing counts 0
    assert r.probs == (0.0, 0.5, 0.5) and r.choice == 1  # a tie goes to the first code
    r = interpret(VLMResponse(raw=" 2 Reasoning: normal", prefill=None), GRADING, prefill="Choice:")
    assert r.choice == 2  # a migrated answer: the prefix the backend wrote is supplied
    assert interpret(VLMResponse(raw=" 2", prefill=None), GRADING).choice == 2  # bare digit still reads
    failed = interpret(VLMResponse(error="boom"), GRADING)
    assert failed.choice is None and failed.probs is None


def test_a_parser_change_reaches_cached_answers_without_a_request(tmp_path):
    backend = MockBackend(BackendConfig(backend="mock", model="text:Choice: high grade glioma"))
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        first = ask_images(backend, IMAGES, prompt="p", decoding=Decoding(), task=GRADING, cache=cache)
    assert first.n_sent == 2 and {a.response.choice for a in first.answers} == {1}
    # a stricter parser (no class names after the keyword): the same cached raw text, now unparsed
    strict = dataclasses.replace(GRADING, parser=choice_parser(3, []), parser_version="2")
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        again = ask_images(backend, IMAGES, prompt="p", decoding=Decoding(), task=strict, cache=cache)
    assert again.n_sent == 0 and again.n_cached == 2
    assert {a.response.choice for a in again.answers} == {None}
    assert {a.response.raw for a in again.answers} == {"Choice: high grade glioma"}


def test_cache_keys_of_the_study_are_unchanged_and_other_answers_key_apart():
    args = {"backend": "mock", "model": "m", "adapter": None, "prompt": "p", "image": b"x",
            "decoding": Decoding(), "repeat": 0}
    assert cache_key(**args) == cache_key(**args, prefix="Choice:", codes=("0", "1", "2"))
    assert cache_key(**args) != cache_key(**args, prefix="Choice:", codes=("0", "1"))
    assert cache_key(**args) != cache_key(**args, prefix="Answer:", codes=("0", "1", "2"))


def _v1_cache(path, rows):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, status TEXT NOT NULL, raw TEXT, "
               "choice INTEGER, "
               "p_lgg REAL, p_hgg REAL, p_ng REAL, mass REAL, error TEXT, extra TEXT, "
               "attempts INTEGER NOT NULL DEFAULT 1, updated REAL NOT NULL)")
    db.executemany("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0)", rows)
    db.commit()
    db.close()


class _PrefillingMock(MockBackend):
    name = "transformers"  # keys as the transformers backend's did
    prefills_answer = True

    def answer(self, requests, decoding):
        for _request in requests:
            raise AssertionError("a migrated cache must answer everything")
        yield from ()


def test_a_v1_cache_is_migrated_and_its_answers_reused(tmp_path):
    backend = _PrefillingMock(BackendConfig(backend="mock", model="m"))
    decoding = Decoding(scoring="generate")
    keys = [cache_key(backend="transformers", model="m", adapter=None, prompt="p", image=png,
                      decoding=decoding, repeat=0) for _, png in IMAGES]
    _v1_cache(tmp_path / "cache.sqlite", [
        (keys[0], "ok", " 0 Reasoning: small", 0, None, None, None, None, None, None),
        (keys[1], "ok", "", 1, 0.2, 0.7, 0.1, 0.9, None, json.dumps({"n": 1})),
        ("dead", "failed", None, None, None, None, None, None, "boom", None),
    ])
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        assert cache.counts() == {"ok": 2, "failed": 1} and cache.failure("dead") == "boom"
        res = ask_images(backend, IMAGES, prompt="p", decoding=decoding, task=GRADING, cache=cache)
    assert res.n_sent == 0 and res.n_cached == 2
    by = {a.meta: a.response for a in res.answers}
    assert by["a"].choice == 0  # " 0 ..." read after the transformers backend's "Choice:" prefix
    assert by["b"].choice == 1 and by["b"].probs == pytest.approx((0.2, 0.7, 0.1)) and by["b"].mass == 0.9
    db = sqlite3.connect(tmp_path / "cache.sqlite")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"answers"} and db.execute("PRAGMA user_version").fetchone() == (2,)


def test_a_foreign_sqlite_file_is_refused_in_one_line(tmp_path):
    db = sqlite3.connect(tmp_path / "other.sqlite")
    db.execute("CREATE TABLE responses (key TEXT, something TEXT)")
    db.commit()
    db.close()
    from medvlm.errors import DataError

    with pytest.raises(DataError, match="unknown layout"):
        ResponseCache(tmp_path / "other.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)  # damaged: moved aside
    with pytest.raises(DataError, match="is damaged"):
        ResponseCache(tmp_path / "junk.sqlite", recover=False)
    ResponseCache(tmp_path / "junk.sqlite").close()
    assert len(list(tmp_path.glob("junk.sqlite.corrupt-*"))) == 1
