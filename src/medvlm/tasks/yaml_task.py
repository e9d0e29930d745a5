"""2D image tasks declared in one YAML file (``--task FILE.yaml``).

::

    name: my-task
    classes: [normal, pneumonia]        # label = index; the prompt's answer codes are these indices
    positive: pneumonia                  # binary tasks (required): the positive class (label 1, second)
    source: {kind: image-csv, csv: labels.csv}   # or {kind: medmnist, npz: pneumoniamnist_224.npz}
    prompt: "...the question, asking for one number..."
    variants: {para1: "...another wording, same codes..."}   # optional, for consistency runs
    description: "..."                   # optional

One prediction per image (unit ``image``; ``patient_id`` kept, so bootstrap CIs resample patients).
The answers are the classes, codes ``0..K-1`` (so at most 10 classes); an unparsed answer abstains.
Answers are read by :class:`~medvlm.vlm.parsing.NameParser`: the code after ``Choice:`` wins (a class
name beside it must agree), a name alone counts when the answer phrase is that name (longest first).
Class names start with a letter (``grade-1``, never ``1``: a digit is always a code, in answers and in
the CSV's labels) and give the columns ``p_<slug>``, ``n_<slug>``, ``<slug>_share``
(:func:`~medvlm.tasks.base.class_columns`: letters of any script; a column medvlm writes anyway, such as
``n_failed``, is refused). YAML booleans, numbers and nulls where text is meant (``classes: [no, yes]``)
are one line asking to quote them. ``source`` paths are
relative to DATA (``medvlm prepare DATA --task FILE.yaml``); data are read by
:mod:`medvlm.data.images` (image-csv) and :mod:`medvlm.data.medmnist`.

``prepare`` copies the file into ``WORK/task.yaml`` and writes its prompts to
``WORK/prompts/<name>.txt`` (the default prompt ``<task name>``, then each variant
``<task name>-<variant>``): every later command reads the task, and the prompt files, from WORK.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medvlm.errors import ConfigError
from medvlm.tasks.base import AnswerCode, Task, class_columns, slug
from medvlm.vlm.parsing import NameParser

#: file name of a work folder's copy of its task YAML, and the folder of its prompt files
WORK_YAML = "task.yaml"
PROMPT_DIR = "prompts"
_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: the most classes a task may have: its answer codes are the single digits 0-9
MAX_CLASSES = 10
#: the version of the YAML tasks' parser (:class:`~medvlm.vlm.parsing.NameParser`), recorded in run.json
PARSER_VERSION = "2"


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (unquoted yes/no/on/off/true/false)"
    if value is None:
        return "null (empty, or an unquoted ~ or null)"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"a {type(value).__name__}"


def _text(value: Any, where: str, *, number_hint: bool = False) -> None:
    """ValueError, one line, when YAML did not read ``value`` as text (a quoted string is always text)."""
    if isinstance(value, str):
        return
    if isinstance(value, int | float) and not isinstance(value, bool) and number_hint:
        raise ValueError(f"{where}: {value} is a number; a class name must start with a letter (the answer "
                         "codes are digits), e.g. 'grade-1' or 'birads-1'")
    if value is None:
        raise ValueError(f"{where} is empty (null); write it out")
    shown = {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else None
    example = f' (e.g. "{shown}")' if shown else ""
    raise ValueError(f"{where}: YAML read this as {_yaml_kind(value)}, not text; quote it{example}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageCsvSource(_Strict):
    """``{kind: image-csv, csv: labels.csv}``: columns ``path,label[,patient_id]`` (medvlm.data.images)."""

    kind: Literal["image-csv"]
    csv: str


class MedmnistSource(_Strict):
    """``{kind: medmnist, npz: pneumoniamnist_224.npz[, label_column: K]}`` (:mod:`medvlm.data.medmnist`)."""

    kind: Literal["medmnist"]
    npz: str
    #: a multi-label file (ChestMNIST: labels ``(N, 14)``, one 0/1 column per finding): the column read
    #: as this task's label (a binary task: finding absent 0, present 1); None: single-label labels
    label_column: int | None = Field(None, ge=0)


class TaskSpec(_Strict):
    """A task YAML, validated (extra keys forbidden; see the module docstring)."""

    name: str = Field(pattern=_NAME)
    classes: list[str]
    positive: str | None = None
    source: Annotated[ImageCsvSource | MedmnistSource, Field(discriminator="kind")]
    prompt: str = Field(min_length=1)
    variants: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _yaml_scalars(cls, data: Any) -> Any:
        """Values YAML 1.1 reads as booleans, numbers or null where text is meant: one line saying so."""
        if not isinstance(data, dict):
            return data
        for key in ("name", "positive", "prompt", "description"):
            if key in data and (key != "positive" or data[key] is not None):  # positive: null = none
                _text(data[key], key)
        if isinstance(data.get("classes"), list):
            for i, value in enumerate(data["classes"]):
                _text(value, f"classes (item {i + 1})", number_hint=True)
        variants = data.get("variants")
        if isinstance(variants, dict):
            for name, value in variants.items():
                if isinstance(name, bool) or name is None:
                    raise ValueError(f"variants: the variant name {name} was read by YAML as "
                                     f"{_yaml_kind(name)}; quote it (e.g. \"on\": ..., \"off\": ...)")
                _text(value, f"variants.{name}")
            data = {**data, "variants": {str(k): v for k, v in variants.items()}}
        return data

    @field_validator("classes", mode="before")
    @classmethod
    def _class_count(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_CLASSES:
            raise ValueError(f"{len(value)} classes, but a task has at most {MAX_CLASSES}: the answer codes "
                             f"are single digits 0-9; merge classes, or declare several tasks of at most "
                             f"{MAX_CLASSES} classes each")
        if isinstance(value, list) and len(value) < 2:
            raise ValueError(f"a task needs at least two classes, got {value}")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        value = [str(c).strip() for c in value]
        if any(not c for c in value):
            raise ValueError("class names must not be empty")
        for c in value:
            if not re.match(r"[^\W\d_]", c):
                raise ValueError(f"class name {c!r} must start with a letter: the answer codes are digits, "
                                 f"so a name like '1' or '2a' would read both as a name and as a code; name "
                                 f"it e.g. 'grade-1' or 'birads-1'")
        lower = [c.lower() for c in value]
        if len(set(lower)) != len(lower):
            raise ValueError(f"class names must be distinct (any case), got {value}")
        if len({slug(c) for c in value}) != len(value):
            raise ValueError(f"class names must differ in letters or digits (their columns p_<name> would "
                             f"be the same), got {value}")
        for c in value:
            class_columns(c)  # a column medvlm already writes (n_failed, n_unparsed, ...): ValueError
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", str(name)):
                raise ValueError(f"variant name {name!r}: lower-case letters, digits, '-' or '_'")
            if not str(text).strip():
                raise ValueError(f"variant {name!r} is empty")
        return value

    @model_validator(mode="after")
    def _positive(self) -> TaskSpec:
        from medvlm.registry import did_you_mean

        if self.positive is None:
            if len(self.classes) == 2:
                raise ValueError(f"positive is required for a binary task: name its positive class, one of "
                                 f"{self.classes} (listed second, label 1), e.g. positive: {self.classes[1]}")
            return self
        if self.positive not in self.classes:
            raise ValueError(f"positive {self.positive!r} is not among the classes {self.classes}."
                             + did_you_mean(self.positive, self.classes))
        if len(self.classes) == 2 and self.classes.index(self.positive) != 1:
            raise ValueError(f"positive {self.positive!r}: list the positive class second (label 1), "
                             f"e.g. classes: [{self.classes[1]}, {self.classes[0]}]")
        if len(self.classes) > 2:
            raise ValueError("positive names the positive class of a binary task; a task with "
                             f"{len(self.classes)} classes has none (leave it out)")
        return self


def _explain(exc: ValidationError, source: str) -> ConfigError:
    """One line: each unknown key with a "did you mean", else the first validation error."""
    from medvlm.registry import did_you_mean

    errors = exc.errors()
    unknown = [[str(p) for p in e["loc"]] for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        parts = []
        for loc in unknown:
            model: type[BaseModel] = TaskSpec
            if loc[0] == "source" and len(loc) > 2:
                model = ImageCsvSource if loc[1] == "image-csv" else MedmnistSource
                loc = [loc[0], *loc[2:]]
            choices = sorted(model.model_fields)
            hint = did_you_mean(loc[-1], choices) or f" Allowed: {', '.join(choices)}."
            parts.append(f"{'.'.join(loc)!r}.{hint}")
        return ConfigError(f"{source}: unknown key " + "; ".join(parts))
    err = errors[0]
    where = "".join(f"{p}: " for p in [".".join(str(p) for p in err["loc"])] if p)  # a whole-file check: none
    message = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
    return ConfigError(f"{source}: {where}{message}")


def read_spec(path: str | Path) -> TaskSpec:
    """Read and validate a task YAML (ConfigError, one line naming the file, otherwise)."""
    from medvlm.experiment import read_yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--task {path}: no such task file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (name, classes, source, prompt, ...)")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, str(path)) from None
    from medvlm.tasks import TASKS

    if spec.name in TASKS.names():
        raise ConfigError(f"{path}: name {spec.name!r} is a built-in task; give the task another name")
    return spec


def prompt_names(spec: TaskSpec) -> list[str]:
    """The prompt names of a task: ``<name>`` then ``<name>-<variant>`` for each variant."""
    return [spec.name, *(f"{spec.name}-{v}" for v in spec.variants)]


def build_task(spec: TaskSpec, *, prompt_dir: str | Path | None = None, work: str | Path | None = None
               ) -> Task:
    """The :class:`Task` a spec declares. ``prompt_dir``: the work folder's prompt files (the task's
    prompts are then their paths, which ``--prompt`` and ``eval-vlm`` read); None: names only.
    ``work`` (default: ``prompt_dir``'s folder): the prepared images that decide the CNN (2D or 3D)."""
    prompts = prompt_names(spec)
    dims = 2
    if prompt_dir is not None:
        prompts = [str(Path(prompt_dir) / f"{p}.txt") for p in prompts]
        work = Path(prompt_dir).parent if work is None else work
    if work is not None:
        dims = _prepared_dims(Path(work))
    kind = spec.source.kind
    description = spec.description or (f"{spec.name}: one prediction per image, "
                                       + ", ".join(f"{c} ({i})" for i, c in enumerate(spec.classes)))
    return Task(
        name=spec.name,
        description=description,
        classes=tuple(spec.classes),
        positive=spec.positive,
        answers=tuple(AnswerCode(c, *class_columns(c)[:2]) for c in spec.classes),
        parser=NameParser(len(spec.classes), answer_names=spec.classes),
        parser_version=PARSER_VERSION,
        unit="image",
        share_column=class_columns(spec.positive or spec.classes[-1])[2],
        share_label=f"{spec.positive or spec.classes[-1]} share",
        prompts=tuple(prompts),
        cnn_model="densenet2d" if dims == 2 else "small3d",
        cnn_spatial_dims=dims,
        default_slices="image",
        source={"prepare": "medvlm.data.images:prepare_image_task"},
        reference_standard=f"the label of each image ({kind} source)",
        preprocessing="grayscale, DICOM rescaled and windowed, intensities mapped to [0, 1]; one image each",
        limitations=("Images of one patient are not independent: confidence intervals resample patients, "
                     "not images."),
        spec=spec,
    )


def _prepared_dims(work: Path) -> int:
    """3 when the work folder's images are 3D (a MedMNIST 3D set: ``(D, H, W)`` arrays), else 2."""
    import numpy as np

    from medvlm.data.images import IMAGE_DIR

    folder = work / IMAGE_DIR
    # every image has the same dims (prepare refuses MedMNIST splits that differ); the first by name,
    # so the answer never depends on the order a folder is listed in
    first = min(folder.glob("*.npy"), default=None) if folder.is_dir() else None
    if first is None:
        return 2
    try:
        shape = np.load(first, mmap_mode="r").shape
    except (OSError, ValueError):
        return 2
    return 3 if len(shape) == 3 and shape[-1] != 3 else 2


def load_yaml_task(path: str | Path, *, prompt_dir: str | Path | None = None) -> Task:
    """``--task FILE.yaml`` -> its :class:`Task` (ConfigError, one line, for a bad file)."""
    return build_task(read_spec(path), prompt_dir=prompt_dir)


def write_work_yaml(work: str | Path, task: Task, source: str | Path | None = None) -> Path:
    """Copy the task's YAML into ``WORK/task.yaml`` and its prompts into ``WORK/prompts/``."""
    import yaml

    from medvlm._io import write_text_atomic

    spec: TaskSpec = task.spec
    work = Path(work)
    text = (Path(source).read_text(encoding="utf-8") if source is not None
            else yaml.safe_dump(spec.model_dump(), sort_keys=False, allow_unicode=True))
    write_text_atomic(work / WORK_YAML, text)
    texts = [spec.prompt, *spec.variants.values()]
    for name, prompt in zip(prompt_names(spec), texts, strict=True):
        write_text_atomic(work / PROMPT_DIR / f"{name}.txt", prompt.rstrip("\n") + "\n")
    return work / WORK_YAML


def find_yaml_tasks(folder: str | Path) -> list[tuple[Path, Task | ConfigError]]:
    """Every ``*.yaml``/``*.yml`` in ``folder`` that declares a task (a file that does not: its error)."""
    out: list[tuple[Path, Task | ConfigError]] = []
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--tasks-dir {folder}: no such folder")
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            out.append((path, load_yaml_task(path)))
        except ConfigError as exc:
            out.append((path, exc))
    return out


def duplicate_names(found: list[tuple[Path, Task | ConfigError]]) -> list[str]:
    """One warning per task name that several files of :func:`find_yaml_tasks` declare, naming them."""
    files: dict[str, list[Path]] = {}
    for path, task in found:
        if isinstance(task, Task):
            files.setdefault(task.name, []).append(path)
    return [f"task name {name!r} is declared by {len(paths)} files: {', '.join(map(str, paths))}; "
            "give each task its own name" for name, paths in files.items() if len(paths) > 1]


def spec_source_path(task: Task, data: str | Path) -> Path:
    """The source file (CSV or npz) of a YAML task, relative to DATA (ConfigError when missing)."""
    spec: TaskSpec = task.spec
    rel = spec.source.csv if isinstance(spec.source, ImageCsvSource) else spec.source.npz
    from medvlm.data.images import inside

    if not inside(Path(data).expanduser(), rel):
        raise ConfigError(f"task {task.name}: source {spec.source.kind} path {rel} leads outside DATA "
                          f"({data}); source paths must stay inside it")
    path = Path(data).expanduser() / rel
    if path.is_dir():
        raise ConfigError(f"task {task.name}: source {spec.source.kind} path {path} is a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"task {task.name}: source {spec.source.kind} file {path} does not exist "
                          f"(source paths are relative to DATA, {data})")
    return path


def source_kind(task: Task) -> Any:
    return task.spec.source.kind if task.spec is not None else None
