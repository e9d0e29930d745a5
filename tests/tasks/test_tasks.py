"""Every registered task is declared consistently; `medvlm tasks`; the work folder records its task."""

from __future__ import annotations

import json

import pytest

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.tasks import TASKS, get_task, prepare_work, work_task, write_work_task


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_is_declared_consistently(name):
    task = get_task(name)
    assert task.name == name
    assert len(task.answers) >= task.n_classes >= 2
    assert task.codes == tuple(str(i) for i in range(len(task.answers)))
    assert len(set(task.prob_columns)) == len(task.answers) == len(set(task.count_columns))
    assert task.share_column not in {*task.prob_columns, *task.count_columns}
    assert task.positive in task.classes and task.classes[task.positive_label] == task.positive
    for i, code in enumerate(task.codes):  # the parser reads every code, and nothing beyond them
        assert task.parser(f"{task.answer_prefix} {code} Reasoning: x") == i
    assert task.parser(f"{task.answer_prefix} {len(task.answers)}") is None
    assert task.parser("I cannot tell.") is None
    assert task.default_prompt in task.prompts and task.default_orientations
    assert task.tie_break_label(None) == task.positive_label
    assert task.tie_break_label(task.classes[0].upper()) == 0
    with pytest.raises(ConfigError, match="--tie-break"):
        task.tie_break_label("nonsense")


def test_tasks_json_lists_the_contract_keys(capsys):
    assert invoke(["tasks", "--json"]) == 0
    tasks = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert set(tasks) == set(TASKS.names())
    assert tasks["brats-grading"]["classes"] == ["LGG", "HGG"] and tasks["brats-grading"]["positive"] == "HGG"
    assert tasks["brats-grading"]["unit"] == "patient"
    assert tasks["brats-tumour"]["unit"] == "slice" and tasks["brats-tumour"]["positive"] == "tumour"
    assert invoke(["tasks"]) == 0
    assert "brats-tumour" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "code"), [
    ("Choice: 1 Reasoning: hyperintense mass", 1),
    ("Choice: 0", 0),
    ("Choice: No tumour. Reasoning: symmetric", 0),
    ("Choice: Tumour present", 1),
    ("Choice: tumor-free", 0),
    ("Choice: 2", None),              # not one of this task's codes
    ("Choice: 0 or 1", None),
    ('{"choice": 1, "reasoning": "mass"}', 1),
    ("There is a tumour.", None),     # no keyword: never guessed
    # a negation anywhere in the named answer is "no tumour", never "tumour"
    ("Choice: No glioma", 0), ("Choice: not a tumour", 0), ("Choice: no evidence of tumour", 0),
    ("Choice: no visible tumour", 0), ("Choice: No brain tumour", 0), ("Choice: No-tumour", 0),
    ("Choice: no signs of tumor", 0), ("Choice: Normal", 0), ("Choice: lesion in the left lobe", 1),
])
def test_the_tumour_parser_reads_its_own_codes_and_words(text, code):
    assert get_task("brats-tumour").parser(text) == code


def test_work_folder_records_its_task_and_refuses_another(tmp_path, synth_dir):
    assert work_task(tmp_path).name == "brats-grading"  # no task.json: the study
    write_work_task(tmp_path, get_task("brats-tumour"))
    assert work_task(tmp_path).name == "brats-tumour"
    with pytest.raises(ConfigError, match="prepared for task 'brats-tumour'"):
        prepare_work(synth_dir, tmp_path, "brats-grading", shape=(8, 8, 8), progress=False)
    (tmp_path / "task.json").write_text("{broken")
    assert invoke(["eval-vlm", str(tmp_path), "--out", str(tmp_path / "r"), "--backend", "mock",
                   "--model", "hash", "--no-progress"]) == 2
