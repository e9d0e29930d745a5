"""What ``medvlm prepare`` has finished, and whether a finished volume may be reused.

``WORK/prepare-journal.jsonl`` gets one line per patient *as it finishes* (appended and flushed after
its volume is saved), so a run killed half-way loses no finished patient: the rerun reads the journal
and reuses what still matches. A line holds the patient's manifest row and its *stamp*:

- ``options``: what shapes the volume (output shape, margin, crop, :data:`PREPROCESS_VERSION`);
- ``inputs``: path, size and modification time (ns) of each of the five source files, plus grade/note;
- ``volume``: size and modification time of the saved ``.npy``.

A volume is reused only when all three match the current run; otherwise the patient is prepared
again and the reason is counted (``options changed: margin_mm 10.0 -> 0.0``, ``input files changed``,
``volume changed``). At the end of a run the journal is rewritten with one line per patient.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medvlm._io import write_text_atomic

JOURNAL_FILE = "prepare-journal.jsonl"
#: bump when the arithmetic of a prepared volume changes (old volumes are then prepared again)
PREPROCESS_VERSION = 1


def options_stamp(shape: Sequence[int], margin_mm: float, crop: str) -> dict[str, Any]:
    """The options that shape a volume.

    >>> options_stamp((95, 128, 128), 10, "tumour")
    {'version': 1, 'shape': [95, 128, 128], 'margin_mm': 10.0, 'crop': 'tumour'}
    """
    return {"version": PREPROCESS_VERSION, "shape": [int(s) for s in shape], "margin_mm": float(margin_mm),
            "crop": crop}


def file_stamp(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def inputs_stamp(row: Mapping[str, str], kinds: Sequence[str]) -> dict[str, Any]:
    """Source files (path, size, mtime) of one manifest row, with its grade and note."""
    files = {k: [row.get(k, ""), file_stamp(row[k]) if row.get(k) else None] for k in kinds}
    return {"files": files, "grade": row.get("grade", ""), "note": row.get("note", "")}


def read_journal(work: Path) -> dict[str, dict[str, Any]]:
    """The last journal entry of each patient (a torn last line from a killed run is ignored)."""
    path = work / JOURNAL_FILE
    entries: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return entries
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("row"), dict) and entry["row"].get("patient_id"):
            entries[str(entry["row"]["patient_id"])] = entry
    return entries


def stale_reason(entry: Mapping[str, Any] | None, options: Mapping[str, Any], inputs: Mapping[str, Any],
                 volume: Path) -> str | None:
    """Why a journal entry cannot be reused ("" / None: reusable). None entry -> "not prepared".

    >>> stale_reason({"options": {"margin_mm": 10.0}, "row": {"status": "ok"}}, {"margin_mm": 0.0}, {},
    ...              Path("/nonexistent"))
    'options changed: margin_mm 10.0 -> 0.0'
    """
    if entry is None or entry.get("row", {}).get("status") != "ok":
        return "not prepared"
    old = entry.get("options") or {}
    changed = [f"{k} {old.get(k)} -> {v}" for k, v in options.items() if old.get(k) != v]
    if changed:
        return "options changed: " + ", ".join(changed)
    if entry.get("inputs") != inputs:
        return "input files changed"
    stamp = file_stamp(volume)
    if stamp is None:
        return "volume missing"
    if stamp != entry.get("volume"):
        return "volume changed"
    return None


class Journal:
    """Append-only record of finished patients (see the module docstring); one writer process."""

    def __init__(self, work: Path, options: Mapping[str, Any]) -> None:
        self.work = work
        self.options = dict(options)
        self.entries = read_journal(work)
        self._fh = open(work / JOURNAL_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def record(self, row: Mapping[str, str], inputs: Mapping[str, Any]) -> None:
        """Append one finished patient (its volume already saved) and flush it to disk."""
        volume = file_stamp(self.work / row["volume"]) if row.get("status") == "ok" and row.get("volume") \
            else None
        entry = {"row": dict(row), "options": self.options, "inputs": dict(inputs), "volume": volume}
        self.entries[str(row["patient_id"])] = entry
        self._fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def compact(self, patient_ids: Sequence[str]) -> None:
        """Rewrite the journal with the last entry of each of ``patient_ids`` (in that order)."""
        self.close()
        lines = [json.dumps(self.entries[p], sort_keys=True) for p in patient_ids if p in self.entries]
        write_text_atomic(self.work / JOURNAL_FILE, "".join(line + "\n" for line in lines))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def summarise_reasons(reasons: Sequence[str]) -> str:
    """One line of why patients were prepared again, most common first.

    >>> summarise_reasons(["input files changed", "options changed: crop", "input files changed"])
    '2 input files changed; 1 options changed: crop'
    """
    return "; ".join(f"{n} {reason}" for reason, n in Counter(reasons).most_common())
