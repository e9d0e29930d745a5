"""How many classes a predictions file is about, found before it is read and checked: what ``calibrate``
(binary only) and ``compare`` (binary or K classes) decide up front.

:func:`file_classes` ``(path) -> (K, class names or None)``: the classes the run.json beside the file
records for its task (``config.task.classes``: VLM runs, and CNN runs of a task with K > 2 classes),
else K from the labels as ``medvlm metrics`` infers it: K > 2 only when the labels are every class
0..K-1 (a stray label 2 in a 0/1 file stays binary, so the binary reader names its row), else 2.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "p.csv").write_text("label,pred\\n0,0\\n1,2\\n2,2\\n")
>>> file_classes(d / "p.csv")
(3, None)
>>> _ = (d / "q.csv").write_text("label,pred\\n0,0\\n2,1\\n")
>>> file_classes(d / "q.csv")
(2, None)
"""

from __future__ import annotations

import json
from pathlib import Path

#: the file a run folder's predictions are in
PREDICTIONS_FILE = "predictions.csv"


def recorded_classes(folder: Path) -> list[str] | None:
    """The class names the run.json in ``folder`` records for its task (None without them)."""
    try:
        info = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = info.get("config") if isinstance(info, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    names = task.get("classes") if isinstance(task, dict) else None
    return [str(n) for n in names] if isinstance(names, list) and len(names) >= 2 else None


def file_classes(source: str | Path) -> tuple[int, list[str] | None]:
    """(K, class names or None) of a predictions.csv or a run folder holding one (module docstring).
    A file that is missing or unreadable counts as binary: its reader says what is wrong with it."""
    import pandas as pd

    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    names = recorded_classes(folder)
    if names:
        return len(names), names
    csv = folder / PREDICTIONS_FILE if path.is_dir() else path
    if not csv.is_file():
        return 2, None
    try:
        df = pd.read_csv(csv, usecols=lambda c: str(c).strip() == "label")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError):
        return 2, None
    labels = set(pd.to_numeric(df.iloc[:, 0], errors="coerce").dropna()) if df.shape[1] else set()
    return (len(labels), None) if len(labels) > 2 and labels == set(range(len(labels))) else (2, None)
