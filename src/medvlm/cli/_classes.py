"""The class set ``medvlm metrics`` scores a predictions file against: the task its run.json names, the
one ``--classes``/``--task`` names, or (neither) the labels the file holds, inferred honestly.

Without a task, labels 0/1 are the binary file of docs/cli.md. Labels beyond 1 are K classes only where
every label 0..K-1 occurs: a gap (labels 0, 1 and 3) may be a class absent from this file or a wrong
label, which the file cannot tell, so it is refused with a one-line message asking for ``--classes`` or
``--task``; a gap-free K > 2 is scored with a warning saying the classes were inferred from the labels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medvlm.errors import ConfigError, DataError


def parse_classes(spec: str) -> Any:
    """``--classes``: a number K (classes 0..K-1, named by their index) or the class names in label order,
    comma-separated; a :class:`~medvlm.metrics_multiclass.ClassSpec`.

    >>> parse_classes("3").classes, parse_classes("normal, effusion").classes
    (('0', '1', '2'), ('normal', 'effusion'))
    """
    from medvlm.metrics_multiclass import INDEX_PROB_PREFIX, ClassSpec

    text = spec.strip()
    if re.fullmatch(r"\d+", text):
        k = int(text)
        if k < 2:
            raise ConfigError(f"--classes {spec}: a task has at least 2 classes")
        return ClassSpec(tuple(str(i) for i in range(k)), tuple(f"{INDEX_PROB_PREFIX}{i}" for i in range(k)))
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise ConfigError(f"--classes {spec!r}: give the number of classes (e.g. 4) or at least two class "
                          "names in label order, comma-separated (e.g. normal,pneumonia)")
    if len(set(names)) < len(names):
        raise ConfigError(f"--classes {spec!r}: a class name is given twice")
    return ClassSpec.from_names(names)


def task_classes(name: str) -> Any:
    """``--task``: the classes of a registered task or of a task YAML file (a ClassSpec)."""
    from medvlm.metrics_multiclass import ClassSpec
    from medvlm.tasks import get_task

    if name.lower().endswith((".yaml", ".yml")) and not Path(name).is_file():
        raise ConfigError(f"--task {name}: no such file")
    task = get_task(name)
    return ClassSpec(tuple(task.classes), tuple(task.prob_columns[:task.n_classes]))


def chosen_classes(classes: str | None, task: str | None, recorded: Any, source: Path) -> Any:
    """The ClassSpec named by ``--classes`` or ``--task`` (not both), checked against the one the
    run.json beside ``source`` records (``recorded``, None without one); ``recorded`` when neither is
    given."""
    if classes is not None and task is not None:
        raise ConfigError("--classes and --task both name the classes; give one")
    if classes is None and task is None:
        return recorded
    spec = parse_classes(classes) if classes is not None else task_classes(task)  # type: ignore[arg-type]
    option = f"--classes {classes}" if classes is not None else f"--task {task}"
    if recorded is not None and recorded.n_classes != spec.n_classes:
        raise ConfigError(f"{option}: {spec.n_classes} classes, but the run.json beside {source} records "
                          f"{recorded.n_classes} ({', '.join(recorded.classes)}); leave {option.split()[0]} "
                          "out to use the run's task")
    return spec


def inferred_classes(df: Any, source: str) -> tuple[int, str | None]:
    """(K, note) for a file scored without a task: K from the labels (2 for 0/1), the note (None for a
    binary file) saying K > 2 was inferred; a DataError naming the labels and the options when the labels
    leave a gap (:func:`~medvlm.metrics_multiclass.check_inferred_classes` checks the rest)."""
    from medvlm.metrics_multiclass import check_inferred_classes

    seen = sorted({int(v) for v in df["label"].tolist()})
    top = seen[-1] if seen else 0
    if top > 1:
        missing = sorted(set(range(top + 1)) - set(seen))
        if missing:
            labels, gaps = ", ".join(map(str, seen)), ", ".join(map(str, missing))
            row = df["label"].tolist().index(top) + 1  # 1-based data row, as read_predictions names rows
            raise DataError(
                f"{source}: row {row}, column 'label': {top} is not 0 or 1, and labels {labels} leave out "
                f"{gaps} with no run.json beside the file naming its task: a class absent from this file, "
                "or a wrong label? Name the classes: "
                f"--classes {top + 1} (or their names, comma-separated), or --task NAME")
    k = check_inferred_classes(df, source)
    if k == 2:
        return k, None
    return k, (f"{source}: no run.json beside the file names its task; {k} classes inferred from the labels "
               f"seen (0..{k - 1}); name them with --classes or --task if the task has others")


def read_binary(path: Path, df: Any) -> Any:
    """``path`` read as the binary file its 0/1 labels make it (``df``: the same file read without a
    task); a prediction beyond 1 is the reader's one-line error, plus how to name more classes."""
    from medvlm.metrics import read_predictions

    try:
        return read_predictions(path)
    except DataError as exc:
        preds = df["pred"].dropna()
        if len(preds) and int(preds.max()) > 1:
            hint = ("with no run.json beside the file naming its task, labels 0 and 1 make it binary: if the "
                    "task has more classes, name them with --classes or --task")
            raise DataError(f"{exc}; {hint}") from None
        raise
