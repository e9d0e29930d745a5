"""Every registered task is declared consistently; `medvlm tasks`; the work folder records its task."""

from __future__ import annotations

import json

import pytest

from medvlm.cli import invoke
from medvlm.errors import ConfigError, DataError
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


# ------------------------------------------------------------------------------ the Task seam itself
def _task(**changes):
    import dataclasses

    return dataclasses.replace(get_task("brats-grading"), **changes)


def test_slug_makes_column_names():
    from medvlm.tasks.base import slug

    assert [slug(n) for n in ("No tumour", "LGG", " High-Grade  Glioma! ", "a__b")] == [
        "no_tumour", "lgg", "high_grade_glioma", "a_b"]


def test_a_task_declaration_is_checked():
    from medvlm.tasks.base import AnswerCode

    with pytest.raises(ValueError, match=r"^task brats-grading: unit must be one of \('patient', 'slice', "
                                         r"'image'\)$"):
        _task(unit="pixel")
    with pytest.raises(ValueError, match="^task brats-grading: every class needs an answer code$"):
        _task(answers=(AnswerCode("LGG", "p_lgg", "n_lgg"),))
    with pytest.raises(ValueError, match="^task brats-grading: positive 'GBM' is not a class$"):
        _task(positive="GBM")
    two = _task(answers=get_task("brats-grading").answers[:2])  # as many answers as classes: fine
    assert two.codes == ("0", "1")
    none = _task(positive=None)  # no named positive class: the last class
    assert none.positive_label == 1 and none.tie_break_label(None) == 1


def test_the_positive_class_can_be_the_first():
    flipped = _task(positive="LGG")
    assert flipped.positive_label == 0 and flipped.tie_break_label(None) == 0
    assert flipped.tie_break_name(None) == "lgg"


def test_class_names_and_views_are_checked_with_the_option_named():
    task = get_task("brats-grading")
    assert task.label_of("hgg") == 1
    assert task.tie_break_name("lgg") == "lgg" and task.tie_break_name(None) == "hgg"
    with pytest.raises(ConfigError, match=r"^The 'class' parameter must be one of \['lgg', 'hgg'\]. Got"):
        task.label_of("GBM")
    with pytest.raises(ConfigError, match=r"^The '--tie-break' parameter must be one of \['lgg', 'hgg'\]. "
                                          r"Got 'hg' instead. Did you mean 'hgg'\?"):
        task.tie_break_label("hg")
    assert task.views(None) == (["axial", "coronal", "sagittal"], ["flair"])
    assert task.views(["coronal"], [" T1CE ", "flair"]) == (["coronal"], ["t1ce", "flair"])
    with pytest.raises(ConfigError, match=r"^The 'orientations' parameter must be one of \['axial', "
                                          r"'coronal', 'sagittal'\]. Got 'oblique' instead."):
        task.views(["oblique"])
    with pytest.raises(ConfigError, match=r"^The 'modalities' parameter must be one of \['t1', 't1ce', 't2', "
                                          r"'flair'\]. Got 'dwi' instead."):
        task.views(None, ["dwi"])


def test_another_tasks_prompt_is_refused_naming_the_option():
    grading, tumour = get_task("brats-grading"), get_task("brats-tumour")
    assert grading.check_prompt("json") == "json" and grading.check_prompt("my_prompt.txt") == "my_prompt.txt"
    with pytest.raises(ConfigError, match=r"^--prompt tumour: a built-in prompt of another task, asking for "
                                          r"other answers; brats-grading's prompts are \['seed', 'json', "
                                          r"'montage', 'seed-swapped', 'seed-para1', 'seed-para2', "
                                          r"'seed-para3'\] \(or give a prompt file\)$"):
        grading.check_prompt("tumour")
    with pytest.raises(ConfigError, match="^--consistency-prompt seed: a built-in prompt of another task"):
        tumour.check_prompt("seed", "--consistency-prompt")


def test_the_task_names_its_data_functions():
    from medvlm.data.prepare import prepare

    assert get_task("brats-grading").function("prepare") is prepare
    with pytest.raises(ConfigError, match="^task 'brats-grading' has no 'train'$"):
        get_task("brats-grading").function("train")


def test_answer_names_and_unit_keys():
    grading, tumour = get_task("brats-grading"), get_task("brats-tumour")
    assert grading.answer_names == {"0": "LGG", "1": "HGG", "2": "no glioma"}
    assert tumour.answer_names == {"0": "no tumour", "1": "tumour"}
    assert (grading.unit_keys, tumour.unit_keys) == ([], ["orientation", "slice_index"])
    assert grading.prob_columns == ["p_lgg", "p_hgg", "p_ng"] and tumour.count_columns == ["n_no_tumour",
                                                                                           "n_tumour"]


def test_describe_is_the_json_record():
    assert get_task("brats-grading").describe() == {
        "name": "brats-grading",
        "description": "BraTS 2020 glioma grading, one prediction per patient: LGG (0) or HGG (1)",
        "classes": ["LGG", "HGG"], "positive": "HGG", "unit": "patient",
        "answers": {"0": "LGG", "1": "HGG", "2": "no glioma"}, "parser_version": "1",
        "prompts": ["seed", "json", "montage", "seed-swapped", "seed-para1", "seed-para2", "seed-para3"],
        "cnn_model": "small3d"}


def test_choice_parser_reads_the_names_it_is_given():
    from medvlm.tasks.base import choice_parser

    parse = choice_parser(2, [(r"\bred\b", 0), (r"\bblue\b", 1)])
    assert (parse("Choice: blue"), parse("Choice: 1"), parse("Choice: 2")) == (1, 1, None)


def test_get_task_defaults_and_reads_task_files(tmp_path):
    assert get_task().name == get_task(None).name == "brats-grading"
    assert get_task(" Brats-Tumour ").name == "brats-tumour"
    for name in ("mine.yaml", "MINE.YML"):  # a task file: read (tests/tasks/test_yaml_task.py), here missing
        with pytest.raises(ConfigError, match=rf"^--task {tmp_path / name}: no such task file$"):
            get_task(str(tmp_path / name))


def test_work_task_errors_name_the_file(tmp_path):
    (tmp_path / "units.csv").write_text("patient_id\n")
    with pytest.raises(DataError, match=r"task.json: missing, but the folder holds units.csv \(a "
                                        r"slice-level task\); prepare it again with `medvlm prepare DATA "
                                        r"--out WORK --task NAME`$"):
        work_task(tmp_path)
    (tmp_path / "task.json").write_text('{"nom": "x"}')
    with pytest.raises(DataError, match=r"task.json: not a readable task record \('name'\)$"):
        work_task(tmp_path)
    (tmp_path / "task.json").write_text('{"name": " "}')
    with pytest.raises(DataError, match=r"'name' must be a task name \(`medvlm tasks`\), got ' '$"):
        work_task(tmp_path)
    (tmp_path / "task.json").write_text('{"name": "brats-gradin"}')
    with pytest.raises(DataError, match=r"task.json: .*Did you mean 'brats-grading'\?"):
        work_task(tmp_path)


def test_prepare_work_passes_the_options_and_refuses_a_folder_of_another_task(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from medvlm.tasks.base import Task

    calls = []

    def fake_prepare(data, out, **options):
        calls.append((data, out, options))
        return SimpleNamespace(work=out)

    monkeypatch.setattr(Task, "function", lambda self, what: fake_prepare)
    out = tmp_path / "w"
    assert prepare_work("DATA", out, "brats-tumour", shape=(8, 8, 8)).work == out
    assert calls == [("DATA", out, {"shape": (8, 8, 8)})]
    assert work_task(out).name == "brats-tumour"
    prepare_work("DATA", out, "brats-tumour")  # the same task again: fine
    legacy = tmp_path / "legacy"  # a work folder from before tasks: a manifest, no task.json
    legacy.mkdir()
    (legacy / "manifest.csv").write_text("patient_id\n")
    with pytest.raises(ConfigError, match=rf"^--out {legacy}: prepared for task 'brats-grading', not "
                                          r"'brats-tumour'; give another --out$"):
        prepare_work("DATA", legacy, "brats-tumour")
    assert len(calls) == 2


def test_an_image_task_refuses_views_naming_the_option_and_every_value(tmp_path):
    from medvlm.errors import ConfigError
    from medvlm.tasks.yaml_task import load_yaml_task

    path = tmp_path / "cxr.yaml"
    path.write_text("name: cxr\nclasses: [normal, pneumonia]\npositive: pneumonia\n"
                    "source: {kind: image-csv, csv: labels.csv}\nprompt: \"0 or 1? Choice:\"\n",
                    encoding="utf-8")
    task = load_yaml_task(path)
    for args, shown, option in [((["axial", "coronal"],), "axial,coronal", "--orientations"),
                                ((None, ("flair", "t1")), "flair,t1", "--modalities")]:
        with pytest.raises(ConfigError) as info:
            task.views(*args)
        assert str(info.value) == (f"{option} {shown}: cxr is an image task (one prediction per 2D image): "
                                   "its images have no slices, orientations or modalities to choose; leave "
                                   f"{option} out")


def test_with_answer_codes_refuses_a_bad_order_in_full_and_for_prompt_reads_its_codes():
    from types import SimpleNamespace

    from medvlm.errors import ConfigError

    task = get_task("brats-grading")
    with pytest.raises(ConfigError) as info:
        task.with_answer_codes(["1", "1", "0"])
    assert str(info.value) == ("task brats-grading: answer codes ['1', '1', '0'] are not an order of "
                               "['0', '1', '2']")
    assert task.for_prompt(object()) is task  # a prompt without codes: the natural order
    assert task.for_prompt(SimpleNamespace(codes=None)) is task
    swapped = task.for_prompt(SimpleNamespace(codes=("1", "0", "2")))
    assert swapped.codes == ("1", "0", "2") and swapped.parser("Choice: 1") == 0


def test_answer_codes_in_another_order_are_described_and_undone(tmp_path):
    import dataclasses

    from medvlm.errors import ConfigError

    task = get_task("brats-grading")
    swapped = task.with_answer_codes(["1", "0", "2"])
    names = [a.name for a in task.answers]
    assert swapped.describe()["answer_codes"] == dict(zip(["1", "0", "2"], names, strict=True))
    assert "answer_codes" not in task.describe()
    back = swapped.with_answer_codes(None)  # the natural order again: the task as declared
    assert back.answer_digits == () and back.describe() == task.describe()
    plain = dataclasses.replace(task, parser=lambda text: None)  # a parser that cannot remap
    with pytest.raises(ConfigError) as info:
        plain.with_answer_codes(["1", "0", "2"])
    assert str(info.value) == "task brats-grading: its parser cannot read answer codes in another order"


def test_a_task_record_that_cannot_be_read_is_one_line(tmp_path):
    from medvlm.errors import DataError

    (tmp_path / "task.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError) as info:
        work_task(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'task.json'}: not a readable task record (")
    (tmp_path / "task.json").write_text('{"nom": "x"}', encoding="utf-8")
    with pytest.raises(DataError) as info:
        work_task(tmp_path)
    assert str(info.value) == f"{tmp_path / 'task.json'}: not a readable task record ('name')"
    for record, start in [('{"name": " "}', "'name' must be a task name (`medvlm tasks`), got ' '"),
                          ('{"name": "nope-task"}', ""), ('{"name": "x", "yaml": "gone.yaml"}', "")]:
        (tmp_path / "task.json").write_text(record, encoding="utf-8")
        with pytest.raises(DataError) as info:
            work_task(tmp_path)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'task.json'}: {start}")
        assert len(message) > len(f"{tmp_path / 'task.json'}: ") + 8
        assert message.count("\n") == 0 and "None" not in message


def test_a_task_record_is_read_as_utf8_whatever_the_locale(tmp_path):
    import locale

    (tmp_path / "task.json").write_bytes('{"name": "brats-grading", "note": "Lungs — ödem"}'.encode())
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # what open() without an encoding would then use: ASCII
    try:
        assert work_task(tmp_path).name == "brats-grading"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
