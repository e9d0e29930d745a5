"""Task YAML files (medvlm.tasks.yaml_task): exact messages and the Task each spec builds.

Written for the mutation run of ``yaml_task.py`` (benchmarks/MUTATION.md): every refusal with its whole
one-line message (unknown keys with and without a "did you mean", both source kinds, the validators),
every field of the built :class:`~medvlm.tasks.base.Task`, the 2D/3D choice from a work folder's
images, the files ``prepare`` writes into WORK, the task folder listing and the source path checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from medvlm.errors import ConfigError
from medvlm.tasks import get_task
from medvlm.tasks.base import AnswerCode
from medvlm.tasks.yaml_task import (
    ImageCsvSource,
    MedmnistSource,
    build_task,
    find_yaml_tasks,
    load_yaml_task,
    read_spec,
    source_kind,
    spec_source_path,
    write_work_yaml,
)

GOOD = """name: pneu
classes: [normal, pneumonia]
positive: pneumonia
source: {kind: image-csv, csv: labels.csv}
prompt: "Normal (0) or pneumonia (1)? Choice:"
"""
THREE = """name: tri
classes: [a, b_c, Ground Glass]
source: {kind: medmnist, npz: tri_28.npz}
prompt: "0, 1 or 2? Choice:"
"""
FIELDS = "classes, description, name, positive, prompt, source, variants"


def _write(folder: Path, text: str, name: str = "task.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _message(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        read_spec(path)
    return str(info.value)


# ------------------------------------------------------------------------- one-line refusals
@pytest.mark.parametrize("text, message", [
    ("zzz: 1\n", f"unknown key 'zzz'. Allowed: {FIELDS}."),
    ("promt: 1\nzzz: 2\n", f"unknown key 'promt'. Did you mean 'prompt'?; 'zzz'. Allowed: {FIELDS}."),
    (GOOD.replace("csv: labels.csv", "cvs: labels.csv"), "unknown key 'source.cvs'. Did you mean 'csv'?"),
    (GOOD.replace("csv: labels.csv", "qqq: labels.csv"), "unknown key 'source.qqq'. Allowed: csv, kind."),
    (THREE.replace("npz: tri", "npzz: tri"), "unknown key 'source.npzz'. Did you mean 'npz'?"),
    (THREE.replace("npz: tri", "qqq: tri"), "unknown key 'source.qqq'. Allowed: kind, label_column, npz."),
    (GOOD.replace(", csv: labels.csv", ""), "source.image-csv.csv: Field required"),
    (GOOD.replace("name: pneu", "name: Pneu"), "name: String should match pattern "
                                               "'^[a-z0-9][a-z0-9._-]{0,63}$'"),
    (GOOD.replace("name: pneu", "name: " + "p" * 65), "name: String should match pattern "
                                                      "'^[a-z0-9][a-z0-9._-]{0,63}$'"),
    (GOOD.replace("[normal, pneumonia]", "[' ', pneumonia]"), "classes: class names must not be empty"),
    (GOOD.replace("[normal, pneumonia]", "[normal, NORMAL]"),
     "classes: class names must be distinct (any case), got ['normal', 'NORMAL']"),
    (GOOD.replace("[normal, pneumonia]", "[no lesion, no-lesion]"),
     "classes: class names must differ in letters or digits (their columns p_<name> would be the same), got "
     "['no lesion', 'no-lesion']"),
    (GOOD.replace("[normal, pneumonia]", "[normal]"),
     "classes: a task needs at least two classes, got ['normal']"),
    (THREE.replace("[a, b_c, Ground Glass]", f"[{', '.join(f'c{i}' for i in range(11))}]"),
     "classes: 11 classes, but a task has at most 10: the answer codes are single digits 0-9; merge classes, "
     "or declare several tasks of at most 10 classes each"),
    (GOOD.replace("prompt:", "variants: {Bad: x}\nprompt:"),
     "variants: variant name 'Bad': lower-case letters, digits, '-' or '_'"),
    (GOOD.replace("prompt:", "variants: {ok: '  '}\nprompt:"), "variants: variant 'ok' is empty"),
    (GOOD.replace("positive: pneumonia\n", ""),
     "positive is required for a binary task: name its positive class, one of ['normal', 'pneumonia'] "
     "(listed second, label 1), e.g. positive: pneumonia"),
    (GOOD.replace("positive: pneumonia", "positive: pneumonie"),
     "positive 'pneumonie' is not among the classes ['normal', 'pneumonia']. Did you mean 'pneumonia'?"),
    (GOOD.replace("positive: pneumonia", "positive: xyz"),
     "positive 'xyz' is not among the classes ['normal', 'pneumonia']."),
    (GOOD.replace("positive: pneumonia", "positive: normal"),
     "positive 'normal': list the positive class second (label 1), e.g. classes: [pneumonia, normal]"),
    (THREE.replace("prompt:", "positive: b_c\nprompt:"),
     "positive names the positive class of a binary task; a task with 3 classes has none (leave it out)"),
    ("- a\n- b\n", "expected a mapping (name, classes, source, prompt, ...)"),
    (GOOD.replace("name: pneu", "name: brats-tumour"),
     "name 'brats-tumour' is a built-in task; give the task another name"),
])
def test_every_refusal_is_one_whole_line_naming_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    assert _message(path) == f"{path}: {message}"


def test_a_missing_task_file_is_named(tmp_path):
    assert _message(tmp_path / "nope.yaml") == f"--task {tmp_path / 'nope.yaml'}: no such task file"
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such task file$"):
        load_yaml_task(tmp_path / "nope.yaml")


def test_class_names_are_stripped_and_the_longest_name_is_accepted(tmp_path):
    name = "p" * 64
    spec = read_spec(_write(tmp_path, GOOD.replace("[normal, pneumonia]", "['  normal ', pneumonia]")
                            .replace("name: pneu", f"name: {name}")))
    assert spec.classes == ["normal", "pneumonia"] and spec.name == name


def test_ten_classes_are_accepted_and_answered_0_to_9(tmp_path):
    ten = GOOD.replace("[normal, pneumonia]", f"[{', '.join(f'c{i}' for i in range(10))}]")
    task = load_yaml_task(_write(tmp_path, ten.replace("positive: pneumonia\n", "")))
    assert task.classes == tuple(f"c{i}" for i in range(10)) and task.parser("Choice: 9") == 9


def test_variants_and_a_multiclass_task_without_positive_are_accepted(tmp_path):
    spec = read_spec(_write(tmp_path, THREE.replace("prompt:", "variants: {v-1_a: other}\nprompt:")))
    assert spec.positive is None and spec.variants == {"v-1_a": "other"}
    assert isinstance(spec.source, MedmnistSource) and spec.source.npz == "tri_28.npz"
    assert isinstance(read_spec(_write(tmp_path, GOOD, "g.yaml")).source, ImageCsvSource)


# ------------------------------------------------------------------------------ the Task built
def test_a_binary_spec_builds_exactly_this_task(tmp_path):
    task = load_yaml_task(_write(tmp_path, GOOD))
    assert task.name == "pneu"
    assert task.description == "pneu: one prediction per image, normal (0), pneumonia (1)"
    assert task.classes == ("normal", "pneumonia") and task.positive == "pneumonia"
    assert task.answers == (AnswerCode("normal", "p_normal", "n_normal"),
                            AnswerCode("pneumonia", "p_pneumonia", "n_pneumonia"))
    assert task.parser_version == "2" and task.unit == "image" and task.answer_prefix == "Choice:"
    assert task.share_column == "pneumonia_share" and task.share_label == "pneumonia share"
    assert task.prompts == ("pneu",)  # no prompt folder: the prompt names
    assert task.cnn_model == "densenet2d" and task.cnn_spatial_dims == 2
    assert task.default_slices == "image"
    assert task.source == {"prepare": "medvlm.data.images:prepare_image_task"}
    assert task.reference_standard == "the label of each image (image-csv source)"
    assert task.preprocessing == ("grayscale, DICOM rescaled and windowed, intensities mapped to [0, 1]; "
                                  "one image each")
    assert task.limitations == ("Images of one patient are not independent: confidence intervals resample "
                                "patients, not images.")
    assert task.spec == read_spec(tmp_path / "task.yaml") and source_kind(task) == "image-csv"


def test_a_multiclass_spec_shares_its_last_class_and_reads_words_of_several_parts(tmp_path):
    task = load_yaml_task(_write(tmp_path, THREE.replace("prompt:", "description: Three kinds.\nprompt:")))
    assert task.description == "Three kinds." and task.positive is None
    assert task.share_column == "ground_glass_share" and task.share_label == "Ground Glass share"
    assert task.answers[2] == AnswerCode("Ground Glass", "p_ground_glass", "n_ground_glass")
    assert task.reference_standard == "the label of each image (medmnist source)"
    assert source_kind(task) == "medmnist"
    for text in ("Choice: ground glass", "Choice: Ground-Glass", "Choice: ground \t glass"):
        assert task.parser(text) == 2, text
    assert task.parser("Choice: 2") == 2 and task.parser("Choice: 3") is None
    assert task.parser("Choice: glass") is None
    assert [task.parser(f"Choice: {c}") for c in ("a", "b c", "b-c")] == [0, 1, 1]  # b_c: its parts


def test_a_class_name_with_an_underscore_is_read_as_written(tmp_path):
    task = load_yaml_task(_write(tmp_path, THREE))
    assert task.parser("Choice: b_c") == 1


def test_a_built_in_task_has_no_source_kind():
    assert source_kind(get_task("brats-grading")) is None


def _work(tmp_path: Path, shape: tuple[int, ...] | None, *, content: bytes | None = None) -> Path:
    work = tmp_path / "w"
    (work / "prompts").mkdir(parents=True)
    if shape is not None or content is not None:
        (work / "images").mkdir()
        if content is not None:
            (work / "images" / "a.npy").write_bytes(content)
        else:
            np.save(work / "images" / "a.npy", np.zeros(shape, np.uint8))
    return work


@pytest.mark.parametrize("shape, dims", [
    (None, 2),  # no images folder yet
    ((6, 5), 2),  # 2D
    ((6, 5, 3), 2),  # colour
    ((4, 6, 5), 3),  # a MedMNIST 3D volume (D, H, W)
    ((4, 6, 4), 3),
    ((2, 4, 6, 5), 2),
])
def test_the_cnn_follows_the_dims_of_the_prepared_images(tmp_path, shape, dims):
    work = _work(tmp_path, shape)
    task = load_yaml_task(_write(tmp_path, GOOD), prompt_dir=work / "prompts")
    assert task.cnn_spatial_dims == dims
    assert task.cnn_model == ("densenet2d" if dims == 2 else "small3d")
    assert task.prompts == (str(work / "prompts" / "pneu.txt"),)


def test_an_empty_or_unreadable_images_folder_means_2d(tmp_path):
    work = _work(tmp_path, None)
    (work / "images").mkdir()
    (work / "images" / "a.png").write_bytes(b"not an array")
    spec = read_spec(_write(tmp_path, GOOD))
    assert build_task(spec, prompt_dir=work / "prompts").cnn_spatial_dims == 2
    (work / "images" / "a.npy").write_bytes(b"not an npy file")
    assert build_task(spec, prompt_dir=work / "prompts").cnn_spatial_dims == 2


# ------------------------------------------------------------------------- files written in WORK
def test_without_its_file_the_spec_is_written_as_yaml_in_field_order_unicode_kept(tmp_path):
    text = GOOD.replace("prompt:", "variants: {short: \"Ödem? X\\n\\n\", lead: \"\\nfirst  \"}\nprompt:")
    task = load_yaml_task(_write(tmp_path, text))
    work = tmp_path / "w"
    assert write_work_yaml(work, task) == work / "task.yaml"
    written = (work / "task.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(written) == task.spec.model_dump()
    assert list(yaml.safe_load(written)) == ["name", "classes", "positive", "source", "prompt", "variants",
                                             "description"]  # the fields' order, not sorted
    assert written.startswith("name: pneu\nclasses:\n- normal\n- pneumonia\npositive: pneumonia\n"
                              "source:\n  kind: image-csv\n  csv: labels.csv\n")
    assert "short: 'Ödem? X" in written  # unicode written as it is, not escaped
    assert sorted(p.name for p in (work / "prompts").iterdir()) == ["pneu-lead.txt", "pneu-short.txt",
                                                                     "pneu.txt"]
    prompt = (work / "prompts" / "pneu.txt").read_text(encoding="utf-8")
    assert prompt == "Normal (0) or pneumonia (1)? Choice:\n"
    assert (work / "prompts" / "pneu-short.txt").read_text(encoding="utf-8") == "Ödem? X\n"
    assert (work / "prompts" / "pneu-lead.txt").read_text(encoding="utf-8") == "\nfirst  \n"


def test_with_its_file_the_copy_is_the_file_byte_for_byte(tmp_path):
    text = GOOD.replace("prompt:", "# a comment, kept\ndescription: Lungs — ödem\nprompt:")
    path = _write(tmp_path, text)
    work = tmp_path / "w"
    write_work_yaml(work, load_yaml_task(path), path)
    assert (work / "task.yaml").read_bytes() == text.encode("utf-8")


def _in_ascii_locale(fn):
    """``fn()`` under the C locale's ASCII encoding (what open() without an encoding would use)."""
    import locale

    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        return fn()
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def test_the_task_file_is_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    import medvlm._io

    def write_utf8(path, text):  # the writer's own locale bug is the next test's
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(text.encode("utf-8"))

    monkeypatch.setattr(medvlm._io, "write_text_atomic", write_utf8)
    text = GOOD.replace("prompt:", "description: Lungs — ödem\nprompt:")
    path = _write(tmp_path, text)
    task = load_yaml_task(path)
    _in_ascii_locale(lambda: write_work_yaml(tmp_path / "w", task, path))
    assert (tmp_path / "w" / "task.yaml").read_bytes() == text.encode("utf-8")


def test_work_files_are_written_as_utf8_whatever_the_locale(tmp_path):
    text = GOOD.replace("prompt:", "description: Lungs — ödem\nprompt:")
    path = _write(tmp_path, text)
    task = load_yaml_task(path)
    _in_ascii_locale(lambda: write_work_yaml(tmp_path / "w", task, path))
    assert (tmp_path / "w" / "task.yaml").read_bytes() == text.encode("utf-8")


# ------------------------------------------------------------------------------- task folders
def test_a_task_folder_lists_yaml_and_yml_files_with_their_errors(tmp_path):
    _write(tmp_path, GOOD, "b.yaml")
    _write(tmp_path, GOOD.replace("name: pneu", "name: other"), "a.yml")
    _write(tmp_path, "name: broken\n", "c.yaml")
    _write(tmp_path, GOOD, "skip.txt")
    found = find_yaml_tasks(tmp_path)
    assert [p.name for p, _ in found] == ["a.yml", "b.yaml", "c.yaml"]
    assert found[0][1].name == "other" and found[1][1].name == "pneu"
    assert isinstance(found[2][1], ConfigError)
    assert str(found[2][1]).startswith(f"{tmp_path / 'c.yaml'}: ")


def test_a_missing_task_folder_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        find_yaml_tasks(tmp_path / "none")
    assert str(info.value) == f"--tasks-dir {tmp_path / 'none'}: no such folder"


# --------------------------------------------------------------------------------- source paths
def test_the_source_path_of_each_kind_is_found_inside_data(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "labels.csv").write_text("path,label\n")
    (data / "tri_28.npz").write_bytes(b"")
    csv_task = load_yaml_task(_write(tmp_path, GOOD.replace("csv: labels.csv", "csv: sub/labels.csv")))
    assert spec_source_path(csv_task, data) == data / "sub" / "labels.csv"
    npz_task = load_yaml_task(_write(tmp_path, THREE, "three.yaml"))
    assert spec_source_path(npz_task, str(data)) == data / "tri_28.npz"
    text = THREE.replace("npz: tri_28.npz", f"npz: {data / 'tri_28.npz'}")
    absolute = load_yaml_task(_write(tmp_path, text, "abs.yaml"))
    assert spec_source_path(absolute, data) == data / "tri_28.npz"  # an absolute path inside DATA is fine


def test_a_source_path_that_is_outside_a_folder_or_missing_is_named(tmp_path):
    data = tmp_path / "data"
    (data / "labels.csv").mkdir(parents=True)
    task = load_yaml_task(_write(tmp_path, GOOD))
    with pytest.raises(ConfigError) as info:
        spec_source_path(task, data)
    assert str(info.value) == (f"task pneu: source image-csv path {data / 'labels.csv'} is a folder, "
                               "not a file")
    npz_task = load_yaml_task(_write(tmp_path, THREE, "three.yaml"))
    with pytest.raises(ConfigError) as info:
        spec_source_path(npz_task, data)
    assert str(info.value) == (f"task tri: source medmnist file {data / 'tri_28.npz'} does not exist "
                               f"(source paths are relative to DATA, {data})")
    out = load_yaml_task(_write(tmp_path, THREE.replace("npz: tri", "npz: ../tri"), "out.yaml"))
    with pytest.raises(ConfigError) as info:
        spec_source_path(out, data)
    assert str(info.value) == (f"task tri: source medmnist path ../tri_28.npz leads outside DATA ({data}); "
                               "source paths must stay inside it")


def _medmnist_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "tri_28.npz", **{f"{s}_{k}": v for s, n in (("train", 6), ("val", 3), ("test", 3))
                                     for k, v in (("images", rng.integers(0, 256, (n, 5, 5), dtype=np.uint8)),
                                                  ("labels", (np.arange(n) % 3).reshape(n, 1)))})
    return data


@pytest.mark.parametrize("name", ["task.yml", "TASK.YML", "Task.Yaml"])
def test_prepare_work_copies_a_task_file_of_any_yaml_suffix(tmp_path, name):
    from medvlm.tasks import prepare_work

    data = _medmnist_data(tmp_path)
    text = THREE + "# kept as written\n"
    path = _write(tmp_path, text, name)
    prepare_work(data, tmp_path / "w", str(path))
    assert (tmp_path / "w" / "task.yaml").read_text(encoding="utf-8") == text


def test_prepare_work_takes_a_task_object_and_writes_its_spec(tmp_path):
    from medvlm.tasks import prepare_work

    data = _medmnist_data(tmp_path)
    task = load_yaml_task(_write(tmp_path, THREE + "# not kept: the spec is written\n"))
    result = prepare_work(data, tmp_path / "w", task)
    written = (tmp_path / "w" / "task.yaml").read_text(encoding="utf-8")
    assert "not kept" not in written and yaml.safe_load(written)["name"] == "tri"
    assert result.work == tmp_path / "w"


def test_build_task_takes_the_work_folder_given(tmp_path):
    prompt_dir = tmp_path / "prompts"
    prompt_dir.mkdir()
    spec = read_spec(_write(tmp_path, THREE))
    work = tmp_path / "elsewhere"
    (work / "images").mkdir(parents=True)
    np.save(work / "images" / "a.npy", np.zeros((4, 5, 5), np.float32))  # 3D images, none by the prompts
    assert build_task(spec, prompt_dir=prompt_dir, work=work).cnn_spatial_dims == 3
    assert build_task(spec, prompt_dir=prompt_dir).cnn_spatial_dims == 2  # the prompts' folder: no images
