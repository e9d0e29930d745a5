"""Runs of a 2D image task (synth cxr): ``compare`` pairs two runs' slices.csv on ``patient_id, image_id,
repeat``; ``--save-images`` names files by image id and the report's thumbnails show their own answers."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from medvlm.cli import invoke


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr-runs")
    assert invoke(["synth", str(root / "data"), "--task", "cxr", "--patients", "16", "--size", "small",
                   "--seed", "4"]) == 0
    work = root / "work"
    assert invoke(["prepare", str(root / "data"), "--out", str(work), "--task",
                   str(root / "data" / "cxr.yaml")]) == 0
    assert invoke(["split", str(work), "--folds", "2", "--test-fraction", "0.5"]) == 0
    out = {}
    for name, model in (("one", "always:1"), ("hash", "hash")):
        out[name] = root / "runs" / name
        assert invoke(["eval-vlm", str(work), "--out", str(out[name]), "--backend", "mock", "--model", model,
                       "--bootstrap", "0", "--no-progress", "--repeats", "2", "--save-images", "5"]) == 0
    return root, work, out


def _calls(run):
    return pd.read_csv(run / "slices.csv", dtype={"patient_id": str, "image_id": str})


def test_compare_pairs_image_runs_on_image_id(runs, capsys):
    _, work, out = runs
    a, b = _calls(out["one"]), _calls(out["hash"])
    assert "orientation" not in a.columns and len(a) == len(b) == 2 * len(
        json.loads((work / "splits.json").read_text())["test"])
    capsys.readouterr()
    assert invoke(["compare", str(out["one"] / "slices.csv"), str(out["hash"] / "slices.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    pairs = a.merge(b, on=["patient_id", "image_id", "repeat"], suffixes=("_a", "_b"))
    assert len(pairs) == len(a)
    assert result["n"] == len(a) and result["n_patients"] == a["patient_id"].nunique()
    assert result["agreement"] == pytest.approx(float((pairs["choice_a"] == pairs["choice_b"]).mean()))
    assert 0 < result["agreement"] < 1  # the hash model answers both ways: a real pairing is tested
    assert invoke(["compare", str(out["hash"] / "slices.csv"), str(out["hash"] / "slices.csv")]) == 0
    text = capsys.readouterr().out
    assert "paired on patient_id, image_id, repeat" in text and "agreement 1.000" in text


def test_compare_refuses_an_image_run_against_a_slice_run(runs, tmp_path, capsys):
    _, _, out = runs
    volume = tmp_path / "slices.csv"
    volume.write_text("patient_id,orientation,slice_index,repeat,choice\nP1,axial,3,0,1\n")
    capsys.readouterr()
    assert invoke(["compare", str(out["one"] / "slices.csv"), str(volume)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "keyed differently (patient_id, image_id, repeat vs patient_id, orientation" in err[0]


def test_saved_images_named_by_image_id_and_shown_with_their_answers(runs):
    from medvlm.data.images import image_png
    from medvlm.report.html import build_report

    root, work, out = runs
    run = out["hash"]
    index = pd.read_csv(run / "images" / "index.csv", dtype=str)
    assert list(index.columns) == ["file", "patient_id", "image_id", "sha256", "bytes"] and len(index) == 5
    assert list(index["file"]) == [f"{i}.png" for i in index["image_id"]]
    assert index["patient_id"].nunique() == 5  # breadth: the first image of each patient first
    for row in index.itertuples():
        assert (run / "images" / row.file).read_bytes() == image_png(work, row.image_id)  # the bytes sent
    html = build_report([run], root / "report.html", n_boot=0).read_text()
    start = html.index("<h3>What the model saw</h3>")
    seen = html[start:html.index("<details>", start)]
    assert '<th class="l">image id</th>' in seen and "<th>slice</th>" not in seen
    calls = _calls(run)
    names = ["no-lesion", "lesion"]
    for row in index.itertuples():
        mine = calls[calls["image_id"] == row.image_id]["choice"].astype(int).tolist()
        assert len(mine) == 2
        counts = {f"{names[c]} ({c})": mine.count(c) for c in dict.fromkeys(mine)}
        parsed = ", ".join(f"{k} x{n}" for k, n in counts.items())
        pattern = (rf'<td class="l">{re.escape(row.patient_id)}</td>\s*'
                   rf'<td class="l">{re.escape(row.image_id)}</td><td>{re.escape(parsed)}</td>')
        assert re.search(pattern, seen), (row.image_id, parsed)
