"""A run folder copied or renamed (``cp -r runs/a runs/b``) is shown under the folder's name, the name the
user gave, in the report, its summaries and ``config dump``; where run.json records another name the
report says which (a note in the run's section)."""

from __future__ import annotations

import json
import shutil

import yaml
from report_runs import make_cnn_run

from medvlm.cli import invoke
from medvlm.report.runs import load_run
from medvlm.runinfo import display_name
from medvlm.study_sections import reproducibility_rows

NOTE = "run.json names this run 'a'; shown under its folder's name 'b' (a copied or renamed run folder)"


def test_a_copied_run_is_named_after_its_folder_with_a_note(tmp_path):
    original = make_cnn_run(tmp_path / "runs", name="a")
    copy = tmp_path / "runs" / "b"
    shutil.copytree(original, copy)
    assert json.loads((copy / "run.json").read_text())["name"] == "a"  # cp keeps the old name
    run = load_run(copy)
    assert run.name == "b" and run.notes == [NOTE]
    same = load_run(original)
    assert same.name == "a" and same.notes == []  # nothing to say where the names agree
    assert [r["run"] for r in reproducibility_rows([original, copy])] == ["a", "b"]


def test_dot_is_named_after_the_folder_it_stands_for(tmp_path, monkeypatch):
    run = make_cnn_run(tmp_path, name="cnn-x")
    monkeypatch.chdir(run)
    assert display_name(".") == "cnn-x" and load_run(".").name == "cnn-x"
    assert reproducibility_rows([run / "."])[0]["run"] == "cnn-x"


def test_the_report_shows_the_copy_under_its_own_name(tmp_path, capsys):
    original = make_cnn_run(tmp_path / "runs", name="a")
    copy = tmp_path / "runs" / "b"
    shutil.copytree(original, copy)
    out = tmp_path / "report.html"
    assert invoke(["report", str(original), str(copy), "--out", str(out), "--bootstrap", "0"]) == 0
    html = out.read_text()
    assert "a (2)" not in html  # before: both shown as 'a', the copy renamed 'a (2)'
    assert "</span> b</h2>" in html and "</span> a</h2>" in html
    assert NOTE.replace("'", "&#39;") in html


def test_config_dump_names_the_section_after_the_folder(tmp_path, capsys):
    run = tmp_path / "b"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "vlm", "name": "a", "config": {"model": "m"}}))
    assert invoke(["config", "dump", str(run)]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out) == {"vlm": [{"name": "b", "model": "m"}]}
    assert captured.err.strip() == f"medvlm: note: {NOTE}"
    assert invoke(["config", "dump", str(run / "run.json")]) == 0  # run.json itself: its folder
    assert yaml.safe_load(capsys.readouterr().out)["vlm"][0]["name"] == "b"
