"""``medvlm report`` on run folders whose files are damaged: every file the report reads, given as JSON
that is not an object, truncated, not UTF-8, empty, or a CSV without its columns, is reported as a problem
of that run (naming the file) -- never a traceback; the rest of the report is still written."""

from __future__ import annotations

import json
import os
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


# ------------------------------------------------------------------ impossible values, special files
def _report(run, tmp_path, capsys):
    """The run's problems as text (HTML entities decoded)."""
    import html

    report = tmp_path / "report.html"
    code = invoke(["report", str(run), "--out", str(report), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    return html.unescape(_problems(report.read_text()))


def _axial_row(run):
    from medvlm.report.runs import load_run
    from medvlm.report.summary import SUMMARY_METRICS, summary_rows

    data = load_run(run)
    rows = {r["subset"]: r for r in summary_rows(data, n_boot=0)}
    cells = {key: cell["value"]
             for (key, _), cell in zip(SUMMARY_METRICS, rows["axial"]["cells"], strict=True)}
    return data, rows["axial"], cells


#: (key in orientations.axial, the value written as JSON text, the metric shown blank or None)
IMPOSSIBLE = [
    ("accuracy", "1.5", "accuracy"), ("auc", "-3", "auc"), ("n", "-4", None), ("n", "2.5", None),
    ("tp", "true", None), ("mcc", "-1.5", "mcc"), ("ece", "2", "ece"), ("brier", "-0.01", "brier"),
    ("precision", "NaN", "precision"), ("recall", "Infinity", "recall"), ("specificity", "-Infinity",
                                                                             "specificity"),
    ("f1", "1e999999", "f1"), ("balanced_accuracy", '"high"', "balanced_accuracy"), ("log_loss", "-1", None),
    ("aurc", "-0.5", None), ("coverage", "1.01", None), ("n_abstained", "-1", None),
    ("accuracy_ci", "[0.2, 1.4]", None), ("auc_ci", "[NaN, 0.5]", None),
]


@pytest.mark.parametrize(("key", "text", "metric"), IMPOSSIBLE)
def test_an_impossible_metric_is_blank_and_a_problem(runs, tmp_path, capsys, key, text, metric):
    run = tmp_path / "vlm"
    shutil.copytree(runs["vlm"], run)
    data = json.loads((run / "metrics.json").read_text())
    data["orientations"]["axial"][key] = "@@VALUE@@"
    (run / "metrics.json").write_text(json.dumps(data).replace('"@@VALUE@@"', text))
    problems = _report(run, tmp_path, capsys)
    assert f"metrics.json: orientations.axial.{key} = " in problems and "shown blank" in problems, problems
    _, row, cells = _axial_row(run)
    if metric is not None:
        assert cells[metric] == "–"
    if key == "n":
        assert row["n"] == "–"


def test_the_adversarial_metrics_json(runs, tmp_path, capsys):
    """The tester's file: every impossible value is blank and listed, with its key; none is shown."""
    run = tmp_path / "vlm"
    shutil.copytree(runs["vlm"], run)
    data = json.loads((run / "metrics.json").read_text())
    data["orientations"]["axial"].update({"accuracy": "@A", "auc": "@B", "n": "@C"})
    data["accuracy"] = "@D"
    text = json.dumps(data)
    for mark, value in (("@A", "1.5"), ("@B", "-3"), ("@C", "-4"), ("@D", "1e999999")):
        text = text.replace(f'"{mark}"', value)
    (run / "metrics.json").write_text(text)
    problems = _report(run, tmp_path, capsys)
    for path in ("orientations.axial.accuracy = 1.5", "orientations.axial.auc = -3",
                 "orientations.axial.n = -4", "metrics.json: accuracy = Infinity"):
        assert path in problems, problems
    _, row, cells = _axial_row(run)
    assert row["n"] == cells["accuracy"] == cells["auc"] == "–"


@pytest.mark.parametrize(("where", "value"), [
    ("folds.0.test.accuracy", "7"), ("folds.0.val.n", "-1"), ("folds.0.test.auc_ci", "[0.1, 2]"),
    ("cv.accuracy.mean", "1.2"), ("cv.accuracy.std", "-0.1"), ("folds.0.train.mcc", "NaN")])
def test_impossible_cnn_metrics_are_problems(runs, tmp_path, capsys, where, value):
    run = tmp_path / "cnn"
    shutil.copytree(runs["cnn"], run)
    data = json.loads((run / "metrics.json").read_text())
    if where.startswith("cv."):
        data["cv"] = {"accuracy": {"mean": 0.8, "std": 0.1}, "n": 3}
    node = data
    *parents, last = where.split(".")
    for part in parents:
        node = node[part]
    node[last] = "@V"
    (run / "metrics.json").write_text(json.dumps(data).replace('"@V"', value))
    problems = _report(run, tmp_path, capsys)
    assert f"metrics.json: {where} = " in problems and "shown blank" in problems, problems


@pytest.mark.parametrize(("column", "value", "why"), [
    ("train_loss", "inf", "not a finite number"), ("val_loss", "-inf", "not a finite number"),
    ("val_accuracy", "x", "not a number"), ("train_accuracy", "1.5", "not a proportion"),
    ("train_loss", "-0.2", "not >= 0"), ("val_loss", "nan", None)])
def test_impossible_history_values_are_problems(runs, tmp_path, capsys, column, value, why):
    import pandas as pd

    run = tmp_path / "cnn"
    shutil.copytree(runs["cnn"], run)
    hist = pd.read_csv(run / "history.csv", dtype=str)
    hist.loc[2, column] = value
    hist.to_csv(run / "history.csv", index=False)
    problems = _report(run, tmp_path, capsys)
    if why is None:  # NaN: a missing value, not an impossible one
        assert "history.csv" not in problems, problems
        return
    assert f"history.csv: column '{column}' has 1 impossible value ({why}" in problems, problems
    assert "could not be drawn" not in problems  # the curves are still drawn, without that point


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _loop(path):
    path.unlink()
    path.symlink_to(path.name)  # points at itself


def _broken(path):
    path.unlink()
    path.symlink_to(path.name + ".gone")


def _device(path):
    """A symlink to a character device that never ends (/dev/zero): reading it would never stop."""
    import stat

    device = next((d for d in ("/dev/zero", "/dev/urandom", "/dev/null")
                   if stat.S_ISCHR(os.stat(d).st_mode)), None) if os.path.exists("/dev") else None
    if device is None:
        pytest.skip("no character device here")
    path.unlink()
    path.symlink_to(device)


def _folder(path):
    path.unlink()
    path.mkdir()


SPECIAL = {"a FIFO": _fifo, "a symlink loop": _loop, "a broken symlink": _broken,
           "a character device": _device, "a folder": _folder}
SPECIAL_CASES = [(kind, name, how) for kind, names in READ.items() for name in names for how in SPECIAL
                 if not (kind == "finetune" and name == "run.json")]


@pytest.mark.parametrize(("kind", "name", "how"), SPECIAL_CASES)
def test_a_special_run_file_is_a_problem_never_a_hang(runs, tmp_path, capsys, kind, name, how):
    import signal

    run = tmp_path / kind
    shutil.copytree(runs[kind], run)
    SPECIAL[how](run / name)

    def hang(*_):
        raise TimeoutError(f"the report hangs on {how} {name}")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(120)
    try:
        problems = _report(run, tmp_path, capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    what = how.replace("a FIFO", "a FIFO (named pipe)")
    assert f"{name} is {what}, not a regular file" in problems, problems
