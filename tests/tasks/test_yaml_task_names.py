"""Class names of task YAML files: numbers, nested names, brackets and dots, column names, YAML 1.1 scalars,
too many classes, duplicate task names, and the options an image task does not have (issue 18, findings
3, 4, 5, 15, 18, 19). Answers are real-looking model output, parsed by the task the file declares."""

from __future__ import annotations

import pytest

from medvlm.cli import invoke
from medvlm.errors import ConfigError
from medvlm.tasks import get_task
from medvlm.tasks.base import class_columns, slug
from medvlm.tasks.yaml_task import load_yaml_task

TEMPLATE = """name: tv
classes: {classes}
{positive}source: {{kind: image-csv, csv: labels.csv}}
prompt: "Which class? Reply 'Choice: <code>'."
{extra}"""


def _task_file(tmp_path, classes, positive=None, extra="", name="task.yaml"):
    path = tmp_path / name
    pos = f"positive: {positive}\n" if positive is not None else ""
    path.write_text(TEMPLATE.format(classes=classes, positive=pos, extra=extra), encoding="utf-8")
    return path


def _task(tmp_path, classes, positive=None):
    return load_yaml_task(_task_file(tmp_path, classes, positive))


def _one_line_exit_2(capsys, tmp_path, path):
    code = invoke(["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith(f"medvlm: error: {path}: ")
    return err[0]


# ------------------------------------------------------------------ 3: numbers are codes, never names
@pytest.mark.parametrize("classes, message", [
    ('["1", "2", "3", "4", "5"]', r"classes: class name '1' must start with a letter: the answer codes are "
                                  r"digits.*e\.g\. 'grade-1' or 'birads-1'$"),
    ("[normal, 2a]", r"class name '2a' must start with a letter"),
    ("[0, 1, 2]", r"classes \(item 1\): 0 is a number; a class name must start with a letter .*'grade-1'"),
    ("[normal, '1']", r"class name '1' must start with a letter"),
])
def test_numeric_class_names_are_refused_in_one_line(tmp_path, capsys, classes, message):
    path = _task_file(tmp_path, classes)
    with pytest.raises(ConfigError, match=message):
        get_task(str(path))
    _one_line_exit_2(capsys, tmp_path, path)


@pytest.mark.parametrize("answer, expected", [
    ("Choice: 2", "grade 3"),               # the code after the keyword is the answer
    ("Choice: 1 (grade 2)", "grade 2"),     # code and name agree
    ("Choice: 2 (grade 2)", None),          # they disagree: unparsed, never 'grade 3'
    ("Choice: 0 - grade 1", "grade 1"),
    ("Choice: grade 2", "grade 2"),         # a name only when there is no code
    ("The answer is grade 3.", "grade 3"),
    ("**Grade 2**", "grade 2"),
    ('{"choice": "grade 1"}', "grade 1"),
    ("1. Grade 2\nThe lesion enhances.", "grade 2"),
    ("2. Grade 2\nThe lesion enhances.", None),  # a code on the first line and a name against it
    ("Choice: grade 4", None),
])
def test_names_with_digits_follow_the_code_wins_rule(tmp_path, answer, expected):
    task = _task(tmp_path, "[grade 1, grade 2, grade 3]")
    got = task.parser(answer)
    assert (None if got is None else task.classes[got]) == expected


def test_csv_labels_are_indices_and_names_one_way_each(tmp_path):
    """With no class name a number, a CSV label that is a number is an index, a word a name."""
    from medvlm.data.images import parse_label

    task = _task(tmp_path, "[grade 1, grade 2, grade 3]")
    assert [parse_label(v, task.classes, "x") for v in ("0", "2", "Grade 2", "grade 3")] == [0, 2, 1, 2]


# ------------------------------------------------------------------ 4: nested names, brackets, dots
NESTED = [
    ("[lesion, no lesion]", "no lesion", [
        ("Choice: no lesion", "no lesion"), ("Choice: lesion", "lesion"),
        ("The answer is no lesion.", "no lesion"),
        ("**No lesion**", "no lesion"), ("Choice: No-Lesion", "no lesion"), ("Choice: 0 (lesion)", "lesion"),
        ("Choice: 1 (lesion)", None), ("Choice: not lesion", None)]),
    ("[normal, pneumonia, bacterial pneumonia]", None, [
        ("Choice: bacterial pneumonia", "bacterial pneumonia"),
        ("The answer is bacterial pneumonia.", "bacterial pneumonia"),
        ("Choice: pneumonia", "pneumonia"), ("The answer is pneumonia, lower lobe", "pneumonia"),
        ("Choice: viral pneumonia", None),         # contains a name but is not one
        ("Choice: bacterial or viral pneumonia", None),
        ("**Bacterial Pneumonia**", "bacterial pneumonia")]),
    ("[effusion, pleural effusion, normal]", None, [
        ("Choice: pleural effusion", "pleural effusion"), ("**Pleural effusion**", "pleural effusion"),
        ("The answer is effusion.", "effusion"), ("Choice: 1 (pleural effusion)", "pleural effusion"),
        ("Choice: 0 (pleural effusion)", None), ("Choice: effusion (not pleural effusion)", None)]),
    ("[normal, pneumonia (viral), pneumonia (bacterial)]", None, [
        ("Choice: pneumonia (viral)", "pneumonia (viral)"),
        ("The answer is pneumonia (bacterial).", "pneumonia (bacterial)"),
        ("**Pneumonia (viral)**", "pneumonia (viral)"),
        ("Choice: 2 (pneumonia (bacterial))", "pneumonia (bacterial)"),
        ("Choice: pneumonia", None)]),
    ("[normal, st. elevation]", "st. elevation", [
        ("Choice: st. elevation", "st. elevation"), ("The answer is ST. elevation.", "st. elevation"),
        ("**St. Elevation**", "st. elevation"), ("Choice: ST elevation", "st. elevation"),
        ("Choice: normal", "normal"), ("Choice: no st. elevation", None)]),
]


@pytest.mark.parametrize("classes, positive, cases", NESTED, ids=[c for c, _, _ in NESTED])
def test_nested_names_and_names_with_brackets_or_dots(tmp_path, classes, positive, cases):
    task = _task(tmp_path, classes, positive)
    got = {answer: (None if (i := task.parser(answer)) is None else task.classes[i]) for answer, _ in cases}
    assert got == dict(cases)


@pytest.mark.parametrize("answer, expected", [
    ("Answer: a pleural effusion", "pleural effusion"),   # an article before the name
    ("The answer is the pneumonia.", "pneumonia"),
    ("Choice: pneumonia - consolidation in the right lower lobe", "pneumonia"),
    ('Choice: "Pneumonia"', "pneumonia"),
    ("Answer: the image shows pneumonia", None),          # the phrase is not a name
    ("Choice: pneumonia with a small pleural effusion", None),
    ("Choice: pneumonia (not normal)", None),
])
def test_a_name_counts_only_as_the_whole_answer_phrase(tmp_path, answer, expected):
    task = _task(tmp_path, "[normal, pneumonia, pleural effusion]")
    got = task.parser(answer)
    assert (None if got is None else task.classes[got]) == expected


def test_swapped_codes_keep_names_on_their_class(tmp_path):
    task = _task(tmp_path, "[lesion, no lesion]", "no lesion").with_answer_codes(("1", "0"))
    assert task.parser("Choice: 1") == 0 and task.parser("Choice: no lesion") == 1
    assert task.parser("Choice: 1 (no lesion)") is None


# ------------------------------------------------------------------ 5: column names
def test_columns_of_reserved_words_are_refused(tmp_path, capsys):
    for name, column in (("failed", "n_failed"), ("Unparsed", "n_unparsed"), ("calls", "n_calls"),
                         ("parsed", "parsed_share")):
        path = _task_file(tmp_path, f"[normal, {name}]", name)
        line = _one_line_exit_2(capsys, tmp_path, path)
        assert f"class name {name!r} would write the column {column}, which already counts" in line, line


def test_columns_are_unicode_aware_and_never_empty(tmp_path):
    task = _task(tmp_path, "[正常, 肺炎]", "肺炎")
    assert task.prob_columns == ["p_正常", "p_肺炎"] and task.count_columns == ["n_正常", "n_肺炎"]
    assert task.share_column == "肺炎_share"
    task = _task(tmp_path, "[normal, Œdème]", "Œdème")
    assert task.prob_columns == ["p_normal", "p_œdème"] and task.share_column == "œdème_share"
    assert slug("e\u0301de\u0300me") == slug("édème") == "édème"  # NFC: one spelling, one column
    assert task.parser("Choice: œdème") == 1 and task.parser("Choice: normal") == 0
    with pytest.raises(ConfigError, match=r"class names must differ in letters or digits .*\['a b', 'a-b'\]"):
        _task(tmp_path, "[a b, a-b]", "a-b")


def test_existing_column_names_are_unchanged(tmp_path):
    grading, tumour = get_task("brats-grading"), get_task("brats-tumour")
    assert grading.prob_columns == ["p_lgg", "p_hgg", "p_ng"]
    assert grading.count_columns == ["n_lgg", "n_hgg", "n_ng"]
    assert grading.share_column == "gldr" and tumour.share_column == "tumour_share"
    assert [slug(n) for n in ("HGG", "no tumour", "No Glioma")] == ["hgg", "no_tumour", "no_glioma"]
    assert class_columns("HGG") == ("p_hgg", "n_hgg", "hgg_share")
    task = _task(tmp_path, "[normal, Pleural-Effusion, pneumonia]")
    assert task.prob_columns == ["p_normal", "p_pleural_effusion", "p_pneumonia"]
    assert task.count_columns == ["n_normal", "n_pleural_effusion", "n_pneumonia"]
    assert task.share_column == "pneumonia_share"


# ------------------------------------------------------------------ 15: YAML 1.1 scalars
@pytest.mark.parametrize("classes, positive, extra, message", [
    ("[no, yes]", '"yes"', "", r'classes \(item 1\): YAML read this as the boolean false \(unquoted '
                              r'yes/no/on/off/true/false\), not text; quote it \(e\.g\. "no"\)$'),
    ("[normal, pneumonia]", "pneumonia", "variants: {on: a, off: b}\n",
     r"variants: the variant name True was read by YAML as the boolean true .*quote it"),
    ("[normal, pneumonia]", "no", "", r"positive: YAML read this as the boolean false"),
    ("[normal, ~]", None, "", r"classes \(item 2\) is empty \(null\)"),
    ("[normal, pneumonia]", "pneumonia", "description: 3.5\n",
     r"description: YAML read this as the number 3\.5"),
])
def test_yaml_scalars_that_are_not_text_are_explained(tmp_path, capsys, classes, positive, extra, message):
    path = _task_file(tmp_path, classes, positive, extra)
    with pytest.raises(ConfigError, match=message):
        get_task(str(path))
    assert "valid string" not in _one_line_exit_2(capsys, tmp_path, path)


def test_quoted_yes_no_classes_are_a_task(tmp_path):
    task = _task(tmp_path, '["no", "yes"]', '"yes"')
    assert task.classes == ("no", "yes")
    assert task.parser("Choice: yes") == 1 and task.parser("Choice: no") == 0


# ------------------------------------------------------------------ 19: limits and duplicates
def test_more_than_ten_classes_says_why(tmp_path, capsys):
    names = ", ".join(f"organ-{c}" for c in "abcdefghijk")
    path = _task_file(tmp_path, f"[{names}]")
    line = _one_line_exit_2(capsys, tmp_path, path)
    assert line.endswith("classes: 11 classes, but a task has at most 10: the answer codes are single digits "
                         "0-9; merge classes, or declare several tasks of at most 10 classes each"), line
    assert len(_task(tmp_path, "[" + ", ".join(f"organ-{c}" for c in "abcdefghij") + "]").classes) == 10


def test_tasks_dir_warns_about_two_files_of_one_task_name(tmp_path, capsys):
    first = _task_file(tmp_path, "[normal, pneumonia]", "pneumonia", name="a.yaml")
    second = _task_file(tmp_path, "[normal, effusion]", "effusion", name="b.yaml")
    assert invoke(["tasks", "--tasks-dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"medvlm: warning: task name 'tv' is declared by 2 files: {first}, "
                                    f"{second}; give each task its own name")
    assert '"file": "' + str(second) + '"' in captured.out


# ------------------------------------------------------------------ 18: prompts and views of image tasks
def test_a_variant_prompt_resolves_by_its_listed_name(tmp_path):
    from medvlm.tasks.yaml_task import build_task, read_spec, write_work_yaml
    from medvlm.vlm.prompts import load_prompt

    path = _task_file(tmp_path, "[normal, pneumonia]", "pneumonia", 'variants: {short: "0 or 1? Choice:"}\n')
    work = tmp_path / "w"
    write_work_yaml(work, build_task(read_spec(path)), path)
    task = build_task(read_spec(path), prompt_dir=work / "prompts")
    assert task.check_prompt("tv-short") == str(work / "prompts" / "tv-short.txt")
    assert task.check_prompt("tv") == task.default_prompt
    assert load_prompt(task.check_prompt("tv-short")).text == "0 or 1? Choice:"
    with pytest.raises(ConfigError, match=r"--prompt seed: a built-in prompt of another task"):
        task.check_prompt("seed")


@pytest.mark.parametrize("kwargs, message", [
    ({"slices": "central:3"}, r"^--slices central:3: tv is an image task \(one prediction per 2D image\): "
                              r"its images have no slices, orientations or modalities to choose; "
                              r"leave --slices out$"),
    ({"orientations": ["axial"]}, r"^--orientations axial: tv is an image task .*leave --orientations out$"),
    ({"modalities": ["flair"]}, r"^--modalities flair: tv is an image task"),
])
def test_image_tasks_have_no_slices_or_orientations(tmp_path, kwargs, message):
    from medvlm.vlm.evaluate import VLMEvalConfig

    task = _task(tmp_path, "[normal, pneumonia]", "pneumonia")
    with pytest.raises(ConfigError, match=message):
        VLMEvalConfig(model="m", **kwargs).for_task(task)
    assert task.views(None, None, slices="image") == ([], [])  # the defaults are fine


# ------------------------------------------------------------------ 19: one label of a multi-label file
def test_a_multi_label_medmnist_file_is_read_by_its_label_column(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = {}
    arrays = {}
    for split, n in {"train": 6, "val": 2, "test": 3}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 5, 5), dtype=np.uint8)
        labels[split] = rng.integers(0, 2, (n, 3))
        arrays[f"{split}_labels"] = labels[split]
    np.savez(tmp_path / "chest.npz", **arrays)
    task = ("name: chest-effusion\nclasses: [no-effusion, effusion]\npositive: effusion\n"
            "source: {kind: medmnist, npz: chest.npz%s}\nprompt: \"0 or 1? Choice:\"\n")
    (tmp_path / "t.yaml").write_text(task % "")
    argv = ["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task", str(tmp_path / "t.yaml")]
    assert invoke(argv) == 2
    assert "pick one column with label_column: K (0..2)" in capsys.readouterr().err
    (tmp_path / "t.yaml").write_text(task % ", label_column: 3")
    assert invoke(argv) == 2
    err = capsys.readouterr().err
    assert "train_labels has shape (6, 3): no label column 3 (label_column counts from 0)" in err
    (tmp_path / "t.yaml").write_text(task % ", label_column: 1")
    assert invoke(argv) == 0
    manifest = pd.read_csv(tmp_path / "w" / "manifest.csv", dtype=str, keep_default_na=False)
    expected = [str(v) for split in ("train", "val", "test") for v in labels[split][:, 1]]
    assert list(manifest["label"]) == expected


def test_a_null_variant_name_is_explained(tmp_path):
    path = _task_file(tmp_path, "[normal, pneumonia]", "pneumonia", "variants: {~: a, short: b}\n")
    with pytest.raises(ConfigError, match=r"variants: the variant name None was read by YAML as null "
                                          r"\(empty, or an unquoted ~ or null\); quote it"):
        get_task(str(path))


def test_duplicate_names_warns_only_for_names_declared_twice(tmp_path):
    from medvlm.tasks.yaml_task import duplicate_names

    a, b, c = (_task(tmp_path, "[normal, pneumonia]", "pneumonia") for _ in range(3))
    found = [(tmp_path / "a.yaml", a), (tmp_path / "b.yaml", ConfigError("bad")), (tmp_path / "c.yaml", b)]
    assert duplicate_names(found[:2]) == []  # one file per name, an unreadable one not counted
    assert duplicate_names(found) == [f"task name {a.name!r} is declared by 2 files: {tmp_path / 'a.yaml'}, "
                                      f"{tmp_path / 'c.yaml'}; give each task its own name"]
    assert c.name == a.name


@pytest.mark.parametrize(("name", "message"), [
    ("unparsed", "class name 'unparsed' would write the column n_unparsed, which already counts unparsed "
                 "answers; rename the class, e.g. 'unparsed-class'"),
    ("Failed", "class name 'Failed' would write the column n_failed, which already counts failed requests; "
               "rename the class, e.g. 'Failed-class'"),
    ("?!", "class name '?!' has no letter or digit to name its columns"),
])
def test_class_columns_refusals_in_full(name, message):
    with pytest.raises(ValueError) as info:
        class_columns(name)
    assert str(info.value) == message


@pytest.mark.parametrize(("classes", "positive", "extra", "end"), [
    ("[0, 1, 2]", None, "", "classes (item 1): 0 is a number; a class name must start with a letter (the "
                            "answer codes are digits), e.g. 'grade-1' or 'birads-1'"),
    ("[yes, normal]", "normal", "", 'classes (item 1): YAML read this as the boolean true (unquoted '
                                    'yes/no/on/off/true/false), not text; quote it (e.g. "yes")'),
    ("[normal, pneumonia]", "pneumonia", "description: 3.5\n",
     "description: YAML read this as the number 3.5, not text; quote it"),
    ("[normal, pneumonia]", "pneumonia", "description: [a, b]\n",
     "description: YAML read this as a list, not text; quote it"),
])
def test_yaml_scalar_messages_end_exactly(tmp_path, classes, positive, extra, end):
    path = _task_file(tmp_path, classes, positive, extra)
    with pytest.raises(ConfigError) as info:
        get_task(str(path))
    assert str(info.value).endswith(end), str(info.value)
