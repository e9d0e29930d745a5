"""``medvlm report`` on run folders whose files are damaged: every file the report reads, given as JSON
that is not an object, truncated, not UTF-8, empty, or a CSV without its columns, is reported as a problem
of that run (naming the file) -- never a traceback; the rest of the report is still written."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from tests.adversarial.checks import one_line_error
from tests.report.report_runs import make_cnn_run, make_finetune_run

from medvlm.cli import invoke

JSON_DAMAGE = {
    "a JSON list": b"[1, 2]",
    "JSON null": b"null",
    "truncated": b'{"kind": "vlm", "config": {"mod',
    "not UTF-8": b"\xff\xfe\x00garbage\x81",
    "empty": b"",
}
CSV_DAMAGE = {
    "not UTF-8": b"\xff\xfe\x00garbage\x81\n1,2\n",
    "empty": b"",
    "missing columns": b"a,b\n1,2\n",
    "header only, other columns": b"patient,grade\n",
    "binary": bytes(range(256)) * 4,
}
#: objects of the right kind but with parts of the wrong shape
NESTED = {
    "metrics.json": [{"orientations": [1]}, {"orientations": {"axial": [1], "combined": "x"}},
                     {"folds": {"0": {"test": "x"}}, "cv": [1]}],
    "summary.json": [{"per_image": [1, 2]}, {"per_image": [{"counts": 5}]},
                     {"per_image": [{}], "per_prompt": [1], "per_temperature": "x"}],
    "run.json": [{"kind": "vlm", "config": [1]}, {"kind": 5, "name": ["x"]},
                 {"config": {"task": 5, "adapter": 7}}],
}


@pytest.fixture(scope="module")
def runs(vlm_work, tmp_path_factory):
    """One run of each kind: real eval-vlm and consistency runs (mock backend), a CNN and a fine-tuning
    run in the documented formats."""
    root = tmp_path_factory.mktemp("advruns")
    assert invoke(["eval-vlm", str(vlm_work), "--out", str(root / "vlm"), "--backend", "mock", "--model",
                   "hash", "--orientations", "axial,coronal", "--bootstrap", "0", "--no-progress"]) == 0
    assert invoke(["consistency", str(vlm_work), "--out", str(root / "consistency"), "--backend", "mock",
                   "--model", "hash", "--repeats", "3", "--no-progress"]) == 0
    finetune = make_finetune_run(root)
    (finetune / "finetune_config.json").write_text(json.dumps({"method": "lora", "rank": 8}))
    return {"vlm": root / "vlm", "consistency": root / "consistency", "cnn": make_cnn_run(root),
            "finetune": finetune}


READ = {  # the files the report reads, per run kind
    "vlm": ["run.json", "metrics.json", "slices.csv", "patients.csv", "predictions.csv"],
    "consistency": ["run.json", "summary.json", "consistency.csv"],
    "cnn": ["run.json", "metrics.json", "history.csv", "predictions.csv"],
    "finetune": ["run.json", "train_log.csv", "finetune_config.json"],
}
CASES = [(kind, name, how) for kind, names in READ.items() for name in names
         for how in (JSON_DAMAGE if name.endswith(".json") else CSV_DAMAGE)]
CASES += [(kind, name, f"nested {i}") for kind, names in READ.items() for name in names
          for i in range(len(NESTED.get(name, [])))]


def _damage(path, how):
    if how.startswith("nested "):
        path.write_text(json.dumps(NESTED[path.name][int(how.split()[1])]))
    else:
        path.write_bytes((JSON_DAMAGE if path.suffix == ".json" else CSV_DAMAGE)[how])


def _problems(html: str) -> str:
    return " ".join(re.findall(r'<div class="problems">(.*?)</div>', html, re.S))


@pytest.mark.parametrize(("kind", "name", "how"), CASES)
def test_a_damaged_run_file_is_a_problem_of_its_run(runs, tmp_path, capsys, kind, name, how):
    run = tmp_path / kind
    shutil.copytree(runs[kind], run)
    _damage(run / name, how)
    report = tmp_path / "report.html"
    code = invoke(["report", str(run), "--out", str(report), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:  # allowed: one line naming the file
        assert err.count("\n") == 1 and err.startswith("medvlm: error: ") and name in err, err
        return
    assert code == 0, err
    problems = _problems(report.read_text())
    assert name in problems, problems
    assert "this section is incomplete" not in problems  # each shape is caught where it is read


def test_one_damaged_run_does_not_stop_the_report_of_the_others(runs, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["vlm"], damaged)
    (damaged / "run.json").write_bytes(b"\xff")
    (damaged / "slices.csv").write_bytes(b"")
    report = tmp_path / "report.html"
    assert invoke(["report", str(runs["cnn"]), str(damaged), str(runs["consistency"]),
                   "--out", str(report)]) == 0
    html = report.read_text()
    assert "run.json could not be read" in html and "slices.csv could not be read" in html
    assert html.count('<section class="card run"') == 3


@pytest.mark.parametrize("files", [{}, {"run.json": b"\xff\xfe"}, {"run.json": b"[]"}, {"notes.txt": b"x"}])
def test_a_folder_without_any_usable_run_file_is_one_line(tmp_path, capsys, files):
    run = tmp_path / "run"
    run.mkdir()
    for name, data in files.items():
        (run / name).write_bytes(data)
    assert invoke(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    one_line_error(capsys, str(run))
    assert not (tmp_path / "r.html").exists()
