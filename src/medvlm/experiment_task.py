"""The task of an experiment file, checked before any stage runs (:func:`check_task`).

``task:`` names a registered task (checked by :class:`~medvlm.experiment.ExperimentConfig` itself) or a
task YAML (``task: cxr.yaml``). A task file is found where the study will read it
(:meth:`medvlm.study_paths._Paths.task`): in the data folder when it is there, else next to the
experiment file; ``data: {synthetic: {kind: cxr}}`` writes its own ``cxr.yaml`` into the data folder, so
that one is the file :func:`medvlm.data.synth_cxr.task_yaml` writes. Either way the file is read and
validated (unknown keys, the positive class among the classes, ...) and the runs' prompts, tie-breaks and
picks are checked against its task: a bad file is one ConfigError line when the config loads
(``medvlm run FILE`` and ``medvlm run FILE --check``), not when the prepare stage reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from medvlm.errors import ConfigError, MedVLMError

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.experiment import ExperimentConfig
    from medvlm.tasks.base import Task


def is_task_file(task: str) -> bool:
    """Whether ``task:`` names a task YAML rather than a registered task."""
    return str(task).lower().endswith((".yaml", ".yml"))


def check_runs_fit_task(config: ExperimentConfig, task: Task) -> None:
    """Class names, prompts and picks the runs give that ``task`` must know (MedVLMError, one line)."""
    for run in [*config.vlm, *config.consistency]:
        task.tie_break_label(run.tie_break)
    for run in config.vlm:
        if run.prompt:
            task.check_prompt(run.prompt)
    for run in config.consistency:
        for prompt in run.prompts:
            task.check_prompt(prompt)
        if run.pick is not None:
            if task.unit != "patient":
                raise ConfigError(f"consistency run {run.name!r}: pick needs a patient-level task; "
                                  f"{task.name} predicts per {task.unit}: give patients: [ID]")
            task.label_of(run.pick, "pick")
    for run in config.finetune:
        if run.prompt:
            task.check_prompt(run.prompt)


def task_file_path(config: ExperimentConfig, base_dir: Path) -> Path | None:
    """Where the study will read ``config.task`` from; None for the synthetic cxr cohort's own
    ``cxr.yaml`` (written by the data stage). The data folder of ``data.path`` is looked in first."""
    from medvlm.data.synth_cxr import TASK_FILE

    path = Path(config.task).expanduser()
    if path.is_absolute():
        return path
    synthetic = config.data.synthetic
    if synthetic is not None and synthetic.kind == "cxr" and path == Path(TASK_FILE):
        return None
    if config.data.path is not None:
        data = Path(config.data.path).expanduser()
        in_data = (data if data.is_absolute() else base_dir / data) / path
        if in_data.is_file():
            return in_data.resolve()
    return (base_dir / path).resolve()


def load_config_task(config: ExperimentConfig, base_dir: Path) -> Task:
    """The :class:`Task` of a config whose ``task`` is a YAML file (ConfigError, one line, naming it)."""
    from medvlm.tasks.yaml_task import TaskSpec, build_task, load_yaml_task

    path = task_file_path(config, base_dir)
    if path is None:  # the synthetic cohort's own task file
        import yaml

        from medvlm.data.synth_cxr import task_yaml

        return build_task(TaskSpec.model_validate(yaml.safe_load(task_yaml())))
    if not path.is_file():
        where = "the data folder, then next to the experiment file" if config.data.path else \
            "next to the experiment file"
        raise ConfigError(f"task: {config.task}: no such task file (looked in {where}: {path})")
    return load_yaml_task(path)


def check_task(config: ExperimentConfig, base_dir: Path, *, source: str | None = None) -> Task | None:
    """Read and check a config's task YAML and the runs against it (module docstring); returns its
    :class:`Task`, None for a registered task (checked by the config itself). Raises ConfigError, one line:
    ``"<source>: task: ..."`` (``"task: ..."`` without ``source``)."""
    if not is_task_file(config.task):
        return None
    try:
        task = load_config_task(config, base_dir)
        check_runs_fit_task(config, task)
    except MedVLMError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = message if message.startswith("task: ") else f"task: {message}"
        raise ConfigError(f"{source}: {message}" if source else message) from None
    return task


@contextmanager
def with_prompt_files(task: Task) -> Iterator[Task]:
    """A YAML ``task`` whose prompts are files in a temporary folder, as ``prepare`` writes them into
    ``WORK/prompts/`` (so a run's options can be checked, prompt included, before the prepare stage)."""
    import tempfile

    from medvlm.tasks.yaml_task import PROMPT_DIR, build_task, write_work_yaml

    with tempfile.TemporaryDirectory(prefix="medvlm-task-") as folder:
        write_work_yaml(folder, task)
        yield build_task(task.spec, prompt_dir=Path(folder) / PROMPT_DIR)


def check_task_source(task: Task, data: Path) -> None:
    """The data folder of a YAML task exists and holds the task's source file (ConfigError, one line)."""
    from medvlm.tasks.yaml_task import spec_source_path

    if not data.is_dir():
        raise ConfigError(f"{data}: no such folder")
    spec_source_path(task, data)
