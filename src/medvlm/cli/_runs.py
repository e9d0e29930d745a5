"""Which run folders ``medvlm report`` can show: finished ones. A failed or interrupted run is named on
stderr and left out, never silently shown as if it were complete.

A run folder is left out when it has no ``run.json`` (not a run, or one that never started), when its
``run.json`` gives a ``status`` other than ``complete``/``done``, or when it lacks a file its command writes
last (:data:`FINAL_FILES`; ``run.json`` itself is written first, when a run starts). A damaged run (a
``run.json`` or another file that cannot be read) is not left out: the report lists its problems.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

#: run.json kind -> the files the command writes when it finishes (its predictions, or what stands for them)
FINAL_FILES = {
    "vlm": ("predictions.csv",),
    "cnn": ("predictions.csv",),
    "calibrated": ("predictions.csv",),
    "consistency": ("consistency.csv",),
    "finetune": ("train_log.csv",),
}
#: ``status`` values of a finished run (run.json files without a ``status`` are judged by their files)
DONE_STATUSES = ("complete", "completed", "done")


def unfinished_reason(run: Path) -> str | None:
    """None when ``run`` is a finished run folder; else why not, in a few words.

    >>> unfinished_reason(Path("/nonexistent-run"))
    'no such folder'
    """
    why = not_a_run_folder(run)
    if why is not None:
        return why
    path = run / "run.json"
    if not path.is_file():  # a FIFO, a device, a folder, a broken link: never read, the report names it
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # damaged, not unfinished: the report says what is wrong with it
    if not isinstance(info, dict):
        return None
    status = info.get("status")
    if status is not None and str(status).lower() not in DONE_STATUSES:
        return f"run.json status is {status!r}, not complete"
    kind = info.get("kind")
    if kind not in FINAL_FILES:
        return None  # the report infers the kind from the files, or names the problem
    # a final file that exists but is not a regular file (a FIFO, a folder, a broken link) is damage the
    # report names, not an unfinished run
    missing = [name for name in FINAL_FILES[kind] if not os.path.lexists(run / name)]
    finished_as_other = any(all(os.path.lexists(run / f) for f in files) for k, files in FINAL_FILES.items()
                            if k != kind)
    if missing and not finished_as_other:  # else run.json's kind is wrong: damaged, the report says so
        return f"missing {', '.join(missing)} (the {kind} run did not finish; rerun its command to resume)"
    return None


def not_a_run_folder(run: Path) -> str | None:
    """None when ``run`` is a folder with a ``run.json`` entry; else why it is no run folder, in a few
    words (a file, a missing path, a folder without run.json).

    >>> not_a_run_folder(Path("/nonexistent-run"))
    'no such folder'
    """
    if run.is_dir():
        if os.path.lexists(run / "run.json"):
            return None
        return "no run.json (not a run folder, or the run never started)"
    if os.path.lexists(run):
        return "a file, not a run folder (a folder with run.json)"
    return "no such folder"


def require_run_folder(run: Path, what: str = "RUN") -> Path:
    """``run`` when it is a run folder (a folder with run.json); else a DataError in one line naming
    ``what`` (the argument) and what was given instead.

    >>> require_run_folder(Path("/nope"), "FIT")
    Traceback (most recent call last):
    ...
    medvlm.errors.DataError: FIT must be a run folder (a folder with run.json): /nope does not exist
    """
    from medvlm.errors import DataError

    why = not_a_run_folder(run)
    if why is None:
        return run
    head = f"{what} must be a run folder (a folder with run.json)"
    if why == "no such folder":
        raise DataError(f"{head}: {run} does not exist")
    if why.startswith("a file"):
        raise DataError(f"{head}, got a file: {run}")
    raise DataError(f"{head}: {run} has no run.json (not a run folder, or the run never started)")


def require_csv_file(path: Path, what: str) -> Path:
    """``path`` unless it is a folder: a DataError naming ``what`` (the argument), the folder, and its
    ``predictions.csv`` when it has one (a missing path is left to the reader, which names it)."""
    from medvlm.errors import DataError

    if not path.is_dir():
        return path
    inner = path / "predictions.csv"
    hint = f" (did you mean {inner}?)" if inner.is_file() else ""
    raise DataError(f"{what} must be a CSV file, got a folder: {path}{hint}")


def finished_runs(runs: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``runs`` split into (finished, [(unfinished run, why)]), each in the given order."""
    kept, left_out = [], []
    for run in runs:
        reason = unfinished_reason(run)
        if reason is None:
            kept.append(run)
        else:
            left_out.append((run, reason))
    return kept, left_out


def unique_runs(runs: list[Path]) -> list[Path]:
    """``runs`` without a folder given again (the same resolved path): each repeat is named on stderr and
    reported once, in the order first given."""
    seen: dict[Path, Path] = {}
    out = []
    for run in runs:
        key = Path(os.path.realpath(run))
        if key in seen:
            print(f"medvlm: warning: {run}: the same run folder as {seen[key]}, given twice; reported once",
                  file=sys.stderr)
            continue
        seen[key] = run
        out.append(run)
    return out
