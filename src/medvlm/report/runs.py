"""Reading run folders for the report: :class:`RunData`, :func:`load_run` and the cached file readers.

Files are read lazily and at most once per run (``run.cache``); a file that cannot be used becomes one
of the run's ``problems`` (listed in its section) instead of stopping the report: unreadable bytes (not
UTF-8), an empty or truncated file, JSON that is not an object (a list, a number, null), a CSV without
the columns the report reads (:data:`CSV_COLUMNS`). That holds for ``run.json`` too: the run's kind is
then inferred from its files; only a folder with no run file at all is an error.

A run file that is not a regular file (a FIFO, a device, a socket, a folder, a symlink loop or a broken
symlink) is a problem of the run and is never opened (a FIFO would hang the report). Values are checked
where they are read (:mod:`medvlm.report.run_values`): a number that cannot be what its key
says -- a proportion outside [0, 1], an MCC outside [-1, 1], a negative or fractional count, a negative
log-loss, AURC or loss, NaN or infinity (medvlm never writes them), text in a numeric CSV column -- is
shown blank and listed as a problem naming the file and the key (or column).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import DataError
from medvlm.report.run_values import _check_columns, check_values

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task

RUN_FILES = (
    "run.json",
    "predictions.csv",
    "metrics.json",
    "history.csv",
    "patients.csv",
    "units.csv",
    "slices.csv",
    "consistency.csv",
    "summary.json",
    "train_log.csv",
    "calibration.json",
)
FINETUNE_CONFIG = "finetune_config.json"
#: the columns the report needs from each CSV run file (predictions.csv: checked by read_predictions)
CSV_COLUMNS = {
    "history.csv": ("fold", "epoch"),
    "patients.csv": ("patient_id", "orientation", "label", "pred"),
    "units.csv": ("patient_id", "label", "pred"),
    "slices.csv": ("patient_id", "choice"),
    "consistency.csv": ("patient_id", "choice"),
    "train_log.csv": ("step",),
}


class ReportWarning(UserWarning):
    """A run file could not be used; the report says so in the run's section."""


@dataclass
class RunData:
    """What the report knows about one run folder."""

    path: Path
    name: str
    kind: str
    info: dict[str, Any]
    files: list[str]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)


def run_task(run: RunData) -> Task:
    """The task a run was made for: the one its ``run.json`` records, else its work folder's, else the
    default task (runs written before tasks existed are the study's)."""
    from medvlm.errors import MedVLMError
    from medvlm.tasks import get_task, work_task

    if "task" in run.cache:
        return run.cache["task"]
    cfg = run.info.get("config") or {}
    recorded = cfg.get("task") if isinstance(cfg, dict) else None
    task = None
    try:
        if isinstance(recorded, dict) and recorded.get("name") and not recorded.get("source"):
            task = get_task(str(recorded["name"]))  # a task of a YAML file ("source"): its work folder's
        elif isinstance(cfg, dict) and cfg.get("work") and Path(str(cfg["work"])).is_dir():
            task = work_task(cfg["work"])
    except MedVLMError as exc:
        task = recorded_task(recorded)
        used = "the class names run.json records are used" if task else "the default task's names are used"
        run.problems.append(f"task: {exc}; {used}")
    run.cache["task"] = task or recorded_task(recorded) or get_task(None)
    return run.cache["task"]


def recorded_task(recorded: Any) -> Task | None:
    """A view of the task a run.json records (``config.task``: ``name``, ``classes``, ``positive``,
    ``unit``, ``answers``), for a run whose task can no longer be loaded (its work folder is gone): the
    report's names, labels and units, no data functions and no study texts. None when the record names
    no task with at least two classes (a run written before tasks existed: the default task's).

    >>> t = recorded_task({"name": "cxr", "classes": ["normal", "effusion"], "positive": "effusion"})
    >>> t.classes, t.positive_label, t.unit
    (('normal', 'effusion'), 1, 'image')
    """
    from medvlm.tasks.base import UNITS, AnswerCode, Task, choice_parser, slug

    if not isinstance(recorded, dict) or not recorded.get("name"):
        return None
    classes = recorded.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        return None
    answers = recorded.get("answers") if isinstance(recorded.get("answers"), dict) else {}
    names = [str(answers.get(str(i), c)) for i, c in enumerate(classes)]
    names += [str(answers[k]) for k in sorted(answers, key=lambda k: int(k) if str(k).isdigit() else 99)
              if str(k).isdigit() and int(k) >= len(classes)]
    positive = recorded.get("positive") if recorded.get("positive") in classes else None
    unit = recorded.get("unit") if recorded.get("unit") in UNITS else "image"
    shown = positive or classes[-1]
    return Task(name=str(recorded["name"]), description=str(recorded.get("description") or recorded["name"]),
                classes=tuple(classes), positive=positive,
                answers=tuple(AnswerCode(n, f"p_{slug(n)}", f"n_{slug(n)}") for n in names),
                parser=choice_parser(len(names), []), parser_version=str(recorded.get("parser_version", "1")),
                unit=unit, share_column=f"{slug(shown)}_share", share_label=f"{shown} share")


def _read_file(run: RunData, name: str, parse: Any) -> Any:
    """``parse(RUN/name)`` (cached per run), or None when the run has no such file; a file that cannot
    be parsed is recorded as one of the run's problems (the report goes on)."""
    key = f"file:{name}"
    if key not in run.cache:
        value = None
        if name in run.files:
            try:
                value = parse(run.path / name)
            except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a visible note
                first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
                run.problems.append(f"{name} could not be read: {first_line}")
        run.cache[key] = value
    return run.cache[key]


def _read_csv(run: RunData, name: str) -> Any:
    """``RUN/name`` as a DataFrame (ids, cohorts, orientations and raw answers kept as text), or None; a
    file without the columns of :data:`CSV_COLUMNS` is a problem of the run."""
    import pandas as pd

    text_columns = {"patient_id": str, "cohort": str, "orientation": str, "raw": str}

    def parse(path: Path) -> Any:
        frame = pd.read_csv(path, dtype=text_columns, encoding="utf-8")
        missing = [c for c in CSV_COLUMNS.get(name, ()) if c not in frame.columns]
        if missing:
            raise ValueError(f"no column {', '.join(missing)} (it has: {', '.join(map(str, frame.columns))})")
        return _check_columns(run, name, frame)

    return _read_file(run, name, parse)


def _json_object(path: Path) -> dict[str, Any]:
    """``path`` as a JSON object (ValueError for anything else: bytes that are not UTF-8, not JSON, a
    list, a number, null)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    return data


#: parts of a JSON run file that must be lists of objects (entries of another type make the part unusable)
_LISTS_OF_OBJECTS = {"summary.json": ("per_image", "per_prompt", "per_temperature")}
#: parts that must be objects of objects
_OBJECTS_OF_OBJECTS = {"metrics.json": ("orientations", "folds")}


def _usable_parts(run: RunData, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the parts whose shape the report cannot use (each dropped part is a problem)."""
    out = dict(data)
    for key in _LISTS_OF_OBJECTS.get(name, ()):
        value = out.get(key)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(v, Mapping) and isinstance(v.get("counts", {}), Mapping) for v in value)):
            run.problems.append(f"{name}: {key!r} is not a list of objects (with 'counts' objects): ignored")
            del out[key]
    for key in _OBJECTS_OF_OBJECTS.get(name, ()):
        value = out.get(key)
        if value is not None and not (isinstance(value, Mapping)
                                      and all(isinstance(v, Mapping) for v in value.values())):
            run.problems.append(f"{name}: {key!r} is not an object of objects: ignored")
            del out[key]
    return out


def _read_json(run: RunData, name: str) -> Any:
    """``RUN/name`` parsed as a JSON object (parts of an unusable shape left out, impossible values
    blanked: :func:`check_values`), or None."""
    return _read_file(run, name, lambda path: check_values(run, name, _usable_parts(run, name,
                                                                                    _json_object(path))))


def _usable_info(info: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``run.json`` with a ``config`` that is not an object, or config paths and names that are not
    text, left out (each a problem)."""
    info = dict(info)
    cfg = info.get("config")
    if cfg is not None and not isinstance(cfg, dict):
        problems.append(f"run.json: 'config' is a JSON {type(cfg).__name__}, not an object: ignored")
        info["config"] = {}
    elif isinstance(cfg, dict):
        bad = [k for k in ("adapter", "model", "base_model", "work", "name") if k in cfg
               and cfg[k] is not None and not isinstance(cfg[k], str)]
        if bad:
            problems.append(f"run.json: config {', '.join(map(repr, bad))} not text: ignored")
            info["config"] = {k: v for k, v in cfg.items() if k not in bad}
    if "name" in info and not isinstance(info["name"], str):
        problems.append("run.json: 'name' is not text: ignored")
        del info["name"]
    return info


def not_regular(path: Path) -> str | None:
    """None for a regular file (or a symlink to one); ``"absent"`` when nothing is there; else what it is
    (a FIFO, a device, a folder, a symlink loop, ...) -- found with ``stat``, never by opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symlink" if os.path.islink(path) else "absent"
    except OSError as exc:
        if os.path.islink(path):
            return "a symlink loop" if exc.errno == errno.ELOOP else "an unreadable symlink"
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a special file"


def _infer_kind(files: list[str]) -> str | None:
    if "calibration.json" in files:
        return "calibrated"
    if "consistency.csv" in files or "summary.json" in files:
        return "consistency"
    if "slices.csv" in files or "patients.csv" in files:
        return "vlm"
    if "history.csv" in files:
        return "cnn"
    if "train_log.csv" in files:
        return "finetune"
    return None


def load_run(path: str | Path) -> RunData:
    """Read what the report needs to know about a run folder (files are read lazily later).

    Raises :class:`DataError` when the folder does not exist or holds no run file at all.
    """
    from medvlm.runinfo import RUN_KINDS

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run folder (no such directory)")
    problems: list[str] = []
    files = []
    for name in RUN_FILES:
        why = not_regular(path / name)
        if why is None:
            files.append(name)
        elif why != "absent":
            problems.append(f"{name} is {why}, not a regular file: ignored")
    info: dict[str, Any] = {}
    if "run.json" in files:
        try:
            info = _json_object(path / "run.json")
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            first = " ".join(str(exc).split())[:200]
            problems.append(f"run.json could not be read ({first}): ignored")
            info = {}
        info = _usable_info(info, problems)
    from medvlm.vlm._secrets import redact_record

    info = redact_record(info)  # a run.json written before credentials were masked is shown masked
    kind = info.get("kind")
    if kind not in RUN_KINDS:
        inferred = _infer_kind(files)
        if inferred is None:
            raise DataError(
                f"{path}: no run.json and none of the run files ({', '.join(RUN_FILES[1:])}); "
                "is this a medvlm run folder?"
            )
        problems.append(
            f"run.json {'missing' if not info else 'has no valid kind'}; kind inferred from the "
            f"files: {inferred}"
        )
        kind = inferred
    from medvlm.runinfo import display_name, renamed_note

    recorded = info.get("notes")  # run.json's notes (e.g. a --limit above the cohort's size)
    notes = [n for n in recorded if isinstance(n, str)] if isinstance(recorded, list) else []
    note = renamed_note(path, info)  # a copied folder is shown under the name the user gave it
    return RunData(
        path=path,
        name=display_name(path),
        kind=kind,
        info=info,
        files=files,
        problems=problems,
        notes=[*notes, *([note] if note else [])],
    )


def _unique_names(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name} ({seen[r.name]})"
        else:
            seen[r.name] = 1


def _config_path(run: RunData, key: str) -> Path | None:
    cfg = run.info.get("config") or {}
    value = cfg.get(key) if isinstance(cfg, Mapping) else None
    return Path(str(value)) if value else None


def _valid_predictions(run: RunData, name: str = "predictions.csv") -> Any:
    """``predictions.csv`` validated with :func:`medvlm.metrics.read_predictions` (labels of the run's
    task: 0/1, or 0..K-1), or None (+ problem)."""
    from medvlm.metrics import read_predictions

    key = f"pred:{name}"
    if key in run.cache:
        return run.cache[key]
    df = None
    if name in run.files:
        try:
            df = read_predictions(run.path / name, n_classes=run_task(run).n_classes)
        except DataError as exc:
            run.problems.append(str(exc))
    run.cache[key] = df
    return df


def _finetune_config(folder: str | Path, run: RunData | None = None) -> dict[str, Any]:
    """``finetune_config.json`` of an adapter folder as a dict ({} when absent or unreadable; with
    ``run``, a file that cannot be used is one of its problems)."""
    path = Path(folder) / FINETUNE_CONFIG
    why = not_regular(path)
    if why is not None:
        if run is not None and why != "absent":
            run.problems.append(f"{FINETUNE_CONFIG} is {why}, not a regular file: ignored")
        return {}
    try:
        return _json_object(path)
    except (OSError, ValueError) as exc:
        if run is not None:
            run.problems.append(f"{FINETUNE_CONFIG} could not be read: {' '.join(str(exc).split())[:200]}")
        return {}
