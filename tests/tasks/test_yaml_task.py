"""Task YAML files (``--task FILE.yaml``): validation in one line, exit 2, and the Task they declare."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.tasks import get_task, work_task
from medvlm.tasks.yaml_task import load_yaml_task

GOOD = """name: pneu
classes: [normal, pneumonia]
positive: pneumonia
source: {kind: image-csv, csv: labels.csv}
prompt: "Normal (0) or pneumonia (1)? Reply 'Choice: <0 or 1>'."
variants: {short: "0 or 1? Choice:"}
"""


def _write(tmp_path, text, name="task.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _cli_error(capsys, argv):
    code = invoke(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    return err[0]


def test_a_task_file_declares_an_image_task(tmp_path):
    task = get_task(str(_write(tmp_path, GOOD)))
    assert task.name == "pneu" and task.unit == "image" and task.unit_keys == ["image_id"]
    assert task.classes == ("normal", "pneumonia") and task.positive_label == 1
    assert task.codes == ("0", "1") and task.prob_columns == ["p_normal", "p_pneumonia"]
    assert task.prompts == ("pneu", "pneu-short")
    assert task.parser("Choice: 1") == 1 and task.parser("Choice: normal") == 0
    assert task.parser("Choice: 2") is None  # no code beyond the classes: unparsed, never a guess
    assert task.describe()["source"] == "image-csv"


def test_class_words_do_not_swallow_each_other(tmp_path):
    task = load_yaml_task(_write(tmp_path, GOOD.replace("[normal, pneumonia]", "[no-lesion, lesion]")
                                 .replace("positive: pneumonia", "positive: lesion")))
    assert task.parser("Choice: lesion") == 1
    assert task.parser("Choice: no-lesion") == 0


@pytest.mark.parametrize("edit, message", [
    (("positive: pneumonia", "positive: pneumonie"),
     r"task\.yaml: positive 'pneumonie' is not among the classes \['normal', 'pneumonia'\]\. "
     r"Did you mean 'pneumonia'\?$"),
    (("prompt:", "promt:"), r"unknown key 'promt'\. Did you mean 'prompt'\?"),
    (("csv: labels.csv", "cvs: labels.csv"), r"unknown key 'source\.cvs'\. Did you mean 'csv'\?"),
    (("positive: pneumonia", "positive: normal"), r"list the positive class second \(label 1\)"),
    (("kind: image-csv", "kind: dicom-folder"),
     r"task\.yaml: source: .*'dicom-folder'.*'image-csv', 'medmnist'"),
    (("name: pneu\n", ""), r"task\.yaml: name: Field required$"),
    (("[normal, pneumonia]", "[normal, Normal]"), r"class names must be distinct"),
])
def test_a_bad_task_file_is_one_line_exit_2(tmp_path, capsys, edit, message):
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        get_task(str(path))
    line = _cli_error(capsys, ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(path)])
    assert line.startswith(f"medvlm: error: {path}: ")


def test_a_builtin_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"name 'brats-tumour' is a built-in task"):
        load_yaml_task(_write(tmp_path, GOOD.replace("name: pneu", "name: brats-tumour")))


def _image_folder(tmp_path, rows):
    (tmp_path / "img").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        pixels = rng.integers(0, 256, (12, 10), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(tmp_path / "img" / name)
    (tmp_path / "labels.csv").write_text("path,label,patient_id\n" + "".join(f"{r}\n" for r in rows))
    return _write(tmp_path, GOOD)


@pytest.mark.parametrize("rows, message", [
    (["img/a.png,normal,P1", "img/missing.png,normal,P1"],
     r"labels\.csv: line 3: image file img/missing\.png does not exist"),
    (["img/a.png,normal,P1", "img/b.png,pneumonai,P2"],
     r"labels\.csv: line 3: label 'pneumonai' is neither a class of \['normal', 'pneumonia'\] nor an "
     r"index 0\.\.1\. Did you mean 'pneumonia'\?"),
    (["img/a.png,2,P1"], r"labels\.csv: line 2: label '2' is neither a class"),
    (["img/a.png,0,P1", "img/a.png,1,P2"], r"line 3: image img/a\.png is listed twice \(first on line 2\)"),
    (["img/a.png,0,P1", "../outside.png,1,P2"],
     r"labels\.csv: line 3: image path \.\./outside\.png leads outside the CSV's folder .*stay inside it$"),
    (["img/../../x.png,0,P1"], r"labels\.csv: line 2: image path img/\.\./\.\./x\.png leads outside"),
    (["/etc/passwd,0,P1"], r"labels\.csv: line 2: image path /etc/passwd leads outside the CSV's folder"),
    (["img,0,P1"], r"labels\.csv: line 2: img is a folder, not an image file"),
])
def test_bad_rows_of_the_image_csv_name_the_line(tmp_path, capsys, rows, message):
    task_file = _image_folder(tmp_path, rows)
    argv = ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(task_file)]
    line = _cli_error(capsys, argv)
    assert line.startswith("medvlm: error: ") and re.search(message, line), line
    assert not (tmp_path / "w" / "task.json").exists()


def test_prepare_copies_the_task_into_work(tmp_path, capsys):
    task_file = _image_folder(tmp_path, ["img/a.png,normal,P1", "img/b.png,1,P1", "img/c.png,pneumonia"])
    work = tmp_path / "w"
    assert invoke(["prepare", str(tmp_path), "--out", str(work), "--task", str(task_file)]) == 0
    record = json.loads((work / "task.json").read_text())
    assert record["name"] == "pneu" and record["yaml"] == "task.yaml" and record["unit"] == "image"
    assert (work / "task.yaml").read_text() == GOOD
    prompt = "Normal (0) or pneumonia (1)? Reply 'Choice: <0 or 1>'.\n"
    assert (work / "prompts" / "pneu.txt").read_text() == prompt
    task_file.unlink()  # later commands read the copy in WORK
    task = work_task(work)
    assert task.name == "pneu" and task.prompts == (str(work / "prompts" / "pneu.txt"),
                                                    str(work / "prompts" / "pneu-short.txt"))
    import pandas as pd

    manifest = pd.read_csv(work / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest["id"]) == ["a", "b", "c"]
    assert list(manifest["patient_id"]) == ["P1", "P1", "c"]  # no patient_id: the image's own id
    assert list(manifest["label"]) == ["0", "1", "1"]
    assert np.load(work / "images" / "a.npy").dtype == np.uint8  # an 8-bit PNG is kept as it is


def test_tasks_lists_yaml_tasks_of_a_folder(tmp_path, capsys):
    _write(tmp_path, GOOD, "pneu.yaml")
    _write(tmp_path, "name: broken\n", "broken.yml")
    assert invoke(["tasks", "--json", "--tasks-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    listed = {t["name"]: t for t in json.loads(out.out)}
    assert set(listed) == {"brats-grading", "brats-tumour", "pneu"}
    assert listed["pneu"]["unit"] == "image" and listed["pneu"]["classes"] == ["normal", "pneumonia"]
    assert listed["pneu"]["positive"] == "pneumonia" and listed["pneu"]["file"] == str(tmp_path / "pneu.yaml")
    assert "broken.yml" in out.err


def test_a_folder_named_like_an_image_is_called_a_folder(tmp_path, capsys):
    task_file = _image_folder(tmp_path, ["img/adir.png,0,P1"])
    (tmp_path / "img" / "adir.png").mkdir()
    argv = ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(task_file)]
    line = _cli_error(capsys, argv)
    assert re.search(r"labels\.csv: line 2: img/adir\.png is a folder, not an image file", line), line


def test_a_source_outside_data_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _image_folder(tmp_path, ["img/a.png,0,P1"])  # labels.csv one level above DATA
    task_file = _write(data, GOOD.replace("csv: labels.csv", "csv: ../labels.csv"))
    argv = ["prepare", str(data), "--out", str(tmp_path / "w"), "--task", str(task_file)]
    line = _cli_error(capsys, argv)
    assert re.search(r"task pneu: source image-csv path \.\./labels\.csv leads outside DATA", line), line


def test_a_binary_task_needs_its_positive_class(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("positive: pneumonia\n", ""))
    with pytest.raises(ConfigError, match=r"task\.yaml: positive is required for a binary task: name its "
                                          r"positive class, one of \['normal', 'pneumonia'\]"):
        load_yaml_task(path)
    three = GOOD.replace("positive: pneumonia\n", "").replace("[normal, pneumonia]", "[a, b, c]")
    assert load_yaml_task(_write(tmp_path, three, "three.yaml")).positive is None
