"""Tasks: what is asked, of which data, and how answers become predictions (one file per task).

``TASKS`` maps a task name to its :class:`~medvlm.tasks.base.Task` (lazy ``"module:TASK"`` targets);
:func:`get_task` looks one up ("did you mean" on a miss), :func:`work_task` reads the task a work folder
was prepared for (``WORK/task.json``; a work folder from before tasks existed is ``brats-grading``).

Adding a task: one module here declaring ``TASK = Task(...)``, one ``TASKS.register`` line below
(``docs/internals.md``, "Adding a task").
"""

from __future__ import annotations

import json
from pathlib import Path

from medvlm.registry import Registry
from medvlm.tasks.base import AnswerCode, Task

__all__ = ["DEFAULT_TASK", "TASKS", "AnswerCode", "Task", "get_task", "work_task", "write_work_task"]

TASKS = Registry("task")
TASKS.register("brats-grading", "medvlm.tasks.brats_grading:TASK")
TASKS.register("brats-tumour", "medvlm.tasks.brats_tumour:TASK")

#: the study, and the task of every work folder without a task.json
DEFAULT_TASK = "brats-grading"
TASK_FILE = "task.json"


def get_task(name: str | Task | None = None) -> Task:
    """The registered task ``name`` (any case; None: :data:`DEFAULT_TASK`; ``FILE.yaml``: the task that
    file declares, :mod:`medvlm.tasks.yaml_task`); a Task is returned as is."""
    if isinstance(name, Task):
        return name
    if name is None:
        return TASKS.get(DEFAULT_TASK)
    if str(name).lower().endswith((".yaml", ".yml")):
        from medvlm.tasks.yaml_task import load_yaml_task

        return load_yaml_task(name)
    return TASKS.get(str(name).strip().lower())


def all_tasks() -> list[Task]:
    return [get_task(name) for name in TASKS.names()]


def work_task(work: str | Path) -> Task:
    """The task ``WORK`` was prepared for (``WORK/task.json``; a work folder from before tasks existed,
    without task.json and without ``units.csv``, is :data:`DEFAULT_TASK`). A task prepared from a YAML
    file is read from the folder's copy, ``WORK/task.yaml``, its prompts from ``WORK/prompts/``."""
    from medvlm.errors import DataError, MedVLMError

    path = Path(work) / TASK_FILE
    if not path.exists():
        if (Path(work) / "units.csv").is_file():
            raise DataError(f"{path}: missing, but the folder holds units.csv (a slice-level task); prepare "
                            "it again with `medvlm prepare DATA --out WORK --task NAME`")
        return get_task(DEFAULT_TASK)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        name = record["name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable task record ({exc})") from exc
    if isinstance(record, dict) and record.get("yaml"):
        from medvlm.tasks.yaml_task import PROMPT_DIR, load_yaml_task

        try:
            return load_yaml_task(Path(work) / str(record["yaml"]), prompt_dir=Path(work) / PROMPT_DIR)
        except MedVLMError as exc:
            raise DataError(f"{path}: {exc}") from None
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{path}: 'name' must be a task name (`medvlm tasks`), got {name!r}")
    try:
        return get_task(name)
    except MedVLMError as exc:
        raise DataError(f"{path}: {exc}") from None


def write_work_task(work: str | Path, task: Task, source: str | Path | None = None) -> None:
    """Record in ``WORK/task.json`` which task the folder was prepared for (a YAML task: its copy in
    ``WORK/task.yaml``, from ``source``, the file given to ``--task``, and its prompt files)."""
    from medvlm._io import write_json_atomic

    record = task.describe()
    if task.spec is not None:
        from medvlm.tasks.yaml_task import write_work_yaml

        record["yaml"] = write_work_yaml(work, task, source).name
    write_json_atomic(Path(work) / TASK_FILE, record)


def prepare_work(data: str | Path, out: str | Path, task: str | Task | None = None, **options):
    """``medvlm prepare DATA --out WORK --task NAME|FILE.yaml``: the task's own preparation, then
    ``WORK/task.json`` (and, for a YAML task, ``WORK/task.yaml`` and ``WORK/prompts/``).

    A work folder already prepared for another task is refused (its volumes and units would be mixed
    with this task's): give another ``--out``. ``options`` go to the task's ``prepare`` function.
    """
    from medvlm.errors import ConfigError

    source = task if isinstance(task, str) and task.lower().endswith((".yaml", ".yml")) else None
    task = get_task(task)
    if (Path(out) / TASK_FILE).is_file() or (Path(out) / "manifest.csv").is_file():
        previous = work_task(out)
        if previous.name != task.name:
            raise ConfigError(f"--out {out}: prepared for task {previous.name!r}, not {task.name!r}; "
                              "give another --out")
    result = task.function("prepare")(data, out, **options)
    if task.spec is not None:  # a YAML task: its CNN (2D or 3D) follows the images just prepared
        from medvlm.tasks.yaml_task import build_task

        task = build_task(task.spec, work=result.work)
    write_work_task(result.work, task, source)
    return result
