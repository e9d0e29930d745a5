"""eval-vlm --save-images N: the saved PNGs are the bytes that were sent and that keyed the cache."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import sqlite3

import pandas as pd

from medvlm.cli import invoke as _run
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm
from medvlm.vlm.saved_images import IMAGES_DIR, INDEX_COLUMNS, INDEX_FILE, NO_IMAGE_NOTE, ImageSaver
from medvlm.vlm.types import Decoding, cache_key


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _index(run) -> list[dict[str, str]]:
    with (run / IMAGES_DIR / INDEX_FILE).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _cache_keys(db) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {k for (k,) in con.execute("SELECT key FROM answers")}
    finally:
        con.close()


def _sent_images(bodies: list[dict]) -> list[bytes]:
    out = []
    for body in bodies:
        for part in body["messages"][-1]["content"]:
            if part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                out.append(base64.b64decode(url.split(",", 1)[1]))
    return out


def test_saved_images_are_the_bytes_sent_and_the_bytes_in_the_cache_keys(tiny_work, tmp_path, fake_server):
    run = tmp_path / "run"
    assert _run(["eval-vlm", str(tiny_work), "--backend", "openai", "--model", "llama3.2-vision",
                 "--base-url", fake_server.url, "--bootstrap", "0", "--no-progress", "--repeats", "2",
                 "--out", str(run), "--save-images", "5"]) == 0
    rows = _index(run)
    assert len(rows) == 5 and list(rows[0]) == INDEX_COLUMNS
    sent = {_sha(b) for b in _sent_images(fake_server.bodies)}
    info = json.loads((run / "run.json").read_text())
    cfg = info["config"]
    assert cfg["save_images"] == 5
    decoding = Decoding(scoring=cfg["scoring"], max_new_tokens=cfg["max_new_tokens"],
                        temperature=cfg["temperature"], top_p=cfg["top_p"], seed=cfg["seed"],
                        structured=cfg["structured"], extra_body=cfg["extra_body"])
    keys = _cache_keys(run / "cache.sqlite")
    slices = pd.read_csv(run / "slices.csv", dtype={"patient_id": str, "orientation": str})
    files = sorted(p.name for p in (run / IMAGES_DIR).glob("*.png"))
    assert files == sorted(r["file"] for r in rows)
    for r in rows:
        png = (run / IMAGES_DIR / r["file"]).read_bytes()
        assert png.startswith(b"\x89PNG") and int(r["bytes"]) == len(png)
        assert _sha(png) == r["sha256"]
        assert r["sha256"] in sent  # exactly what a request carried
        for repeat in (0, 1):  # and what keyed each repeat's cached answer
            assert cache_key(backend="openai", model="llama3.2-vision", adapter=None,
                             prompt=cfg["prompt_text"],
                             image=png, decoding=decoding, repeat=repeat) in keys
        assert r["file"] == f"{r['patient_id']}_{r['orientation']}_{r['slice_index']}.png"
        match = slices[(slices["patient_id"] == r["patient_id"]) & (slices["orientation"] == r["orientation"])
                       & (slices["slice_index"] == int(r["slice_index"]))]
        assert sorted(match["repeat"]) == [0, 1]  # its slices.csv rows
    # breadth first: 5 images from 5 different (patient, orientation) pairs, in the order asked
    assert len({(r["patient_id"], r["orientation"]) for r in rows}) == 5
    asked = list(dict.fromkeys(zip(slices["patient_id"], slices["orientation"], slices["slice_index"],
                                   strict=True)))
    positions = [asked.index((r["patient_id"], r["orientation"], int(r["slice_index"]))) for r in rows]
    assert positions == sorted(positions)


def test_more_asked_than_images_saves_each_image_once_and_a_rerun_replaces_them(tiny_work, tmp_path):
    common = dict(backend="mock", model="hash", n_boot=0, progress=False, orientations=["axial"])
    run = tmp_path / "run"
    res = evaluate_vlm(tiny_work, run, VLMEvalConfig(**common, save_images=1000))
    slices = pd.read_csv(run / "slices.csv", dtype={"patient_id": str})
    rows = _index(run)
    assert len(rows) == res.n_calls == len(slices)  # every image, once (repeats 1)
    assert {(r["patient_id"], int(r["slice_index"])) for r in rows} == set(
        zip(slices["patient_id"], slices["slice_index"], strict=True))
    again = evaluate_vlm(tiny_work, run, VLMEvalConfig(**common, save_images=2))
    assert again.n_sent == 0  # from the cache, and the images are still the ones that keyed it
    rows2 = _index(run)
    assert len(rows2) == 2 and sorted(p.name for p in (run / IMAGES_DIR).glob("*.png")) == sorted(
        r["file"] for r in rows2)  # the earlier run's other files are gone
    assert [r["sha256"] for r in rows2] == [r["sha256"] for r in rows if r["file"] in
                                             {x["file"] for x in rows2}]


def test_default_saves_nothing_and_image_none_says_there_is_nothing_to_save(tiny_work, tmp_path, capsys):
    common = dict(backend="mock", model="hash", n_boot=0, progress=False, orientations=["axial"])
    evaluate_vlm(tiny_work, tmp_path / "plain", VLMEvalConfig(**common))
    assert not (tmp_path / "plain" / IMAGES_DIR).exists()
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["config"]["save_images"] == 0
    args = ["eval-vlm", str(tiny_work), "--backend", "mock", "--model", "hash", "--orientations", "axial",
            "--bootstrap", "0", "--no-progress", "--image", "none", "--save-images", "3",
            "--out", str(tmp_path / "none")]
    assert _run(args) == 0
    assert NO_IMAGE_NOTE in " ".join(capsys.readouterr().out.split())
    assert _index(tmp_path / "none") == []
    assert list((tmp_path / "none" / IMAGES_DIR).glob("*.png")) == []


def test_a_negative_count_is_one_line_exit_2(tiny_work, tmp_path, capsys):
    assert _run(["eval-vlm", str(tiny_work), "--backend", "mock", "--model", "hash", "--save-images", "-1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--save-images" in err and "Traceback" not in err


def test_saver_names_unsafe_ids_safely_and_keeps_two_that_clash(tmp_path):
    saver = ImageSaver(tmp_path, 3)
    stream = [(("a/b", "axial", 1), b"\x89PNG one"), (("a b", "axial", 1), b"\x89PNG two"),
              (("a b", "axial", 2), b""), (("c", "axial", 1), b"\x89PNG three")]
    assert list(saver.tap(stream)) == stream  # passed through unchanged
    rows = saver.write()
    assert [r["file"] for r in rows] == ["a_b_axial_1.png", "a_b_axial_1-2.png", "c_axial_1.png"]
    assert (tmp_path / IMAGES_DIR / "a_b_axial_1-2.png").read_bytes() == b"\x89PNG two"
    assert saver.note is None and saver.n_empty == 1
