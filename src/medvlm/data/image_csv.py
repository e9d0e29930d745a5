"""Reading an image-csv table (:func:`read_table`) and giving its images unique ids (:func:`unique_ids`).

The table: UTF-8 (a BOM is fine), separated by commas, or by semicolons or tabs when the header holds
the required columns only when split that way; header names in any case (``Path,Label`` is
``path,label``); blank lines skipped (line numbers stay those of the file); a row with more fields
than the header -> :class:`~medvlm.errors.DataError` naming its line (never shifted into the next
column); a row with fewer fields: the missing ones empty.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from medvlm.errors import DataError

#: the separators tried, in this order (the first that yields the required columns is used)
SEPARATORS = (",", ";", "\t")
_SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
#: patient ids that mean "no patient id" (compared case-insensitively): the image is its own patient
MISSING_PATIENT = ("", "na", "n/a", "nan", "none", "null", "<na>", "#n/a")


def read_table(csv_path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``[(line number, {column (lower case): value}), ...]`` of the data rows (module docstring)."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from exc
    lines = text.splitlines()
    header_line = next((ln for ln in lines if ln.strip()), None)
    if header_line is None:
        raise DataError(f"{csv_path}: empty file; expected a header {','.join(required)}")
    sep, names = None, []
    for candidate in SEPARATORS:
        names = [n.strip().lower() for n in next(csv.reader([header_line], delimiter=candidate))]
        if all(c in names for c in required):
            sep = candidate
            break
    if sep is None:
        names = [n.strip().lower() for n in next(csv.reader([header_line]))]
        missing = [c for c in required if c not in names]
        seen = "".join(sorted({s for s in SEPARATORS[1:] if s in header_line}))
        hint = (f" (the header {header_line.strip()!r} holds no comma but a "
                f"{_SEPARATOR_NAMES[seen[0]]}: its columns did not include them either)") if seen else ""
        raise DataError(f"{csv_path}: missing column(s) {missing}; expected "
                        f"{','.join(required)}[,patient_id]{hint}")
    reader = csv.reader(text.splitlines(keepends=True), delimiter=sep)
    rows: list[tuple[int, dict[str, str]]] = []
    header_seen = False
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # a blank line
            if not header_seen:
                header_seen = True
                continue
            line = reader.line_num
            if len(fields) > len(names):
                raise DataError(f"{csv_path}: line {line}: {len(fields)} fields, but the header has "
                                f"{len(names)} ({','.join(names)}); quote a value that holds "
                                f"the {_SEPARATOR_NAMES[sep]}")
            rows.append((line, dict(zip(names, [*fields, *[""] * (len(names) - len(fields))], strict=True))))
    except csv.Error as exc:
        raise DataError(f"{csv_path}: line {reader.line_num}: not a readable CSV row ({exc})") from exc
    return rows


def is_missing_patient(value: str) -> bool:
    """Whether a ``patient_id`` value means "none" (:data:`MISSING_PATIENT`).

    >>> [is_missing_patient(v) for v in ("", " NA ", "n/a", "P1", "NaN")]
    [True, True, True, False, True]
    """
    return value.strip().lower() in MISSING_PATIENT


def full_id(text: str) -> str:
    """A file-safe id of a whole relative path, its extension kept: ``"s/IM.000002"`` -> ``"s_IM.000002"``.

    >>> full_id("series/IM.000002"), full_id("a b/x.png")
    ('series_IM.000002', 'a_b_x.png')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("\\", "/")).strip("._") or "image"


def unique_ids(rels: Sequence[str], lines: Sequence[int], base: Callable[[str], str]) -> list[str]:
    """One id per path, unique even on a disk that ignores case: ``base(rel)`` (what earlier versions
    gave, so existing work folders stay valid) for the first path with that id; a later path whose
    ``base`` id is taken gets its :func:`full_id` (extension kept), else that with ``-<line>``, else
    ``-<line>-<k>``; a fallback never takes an id that another path's ``base`` gives.

    >>> unique_ids(["x-4.png", "x.png", "x.jpg"], [2, 3, 4], lambda r: r.rsplit(".", 1)[0])
    ['x-4', 'x', 'x.jpg']
    """
    bases = [base(r) for r in rels]
    reserved = {b.casefold() for b in bases}
    taken: set[str] = set()
    out = []
    for rel, line, first in zip(rels, lines, bases, strict=True):
        candidates = [first] if first.casefold() not in taken else []
        whole = full_id(rel)
        extra = (f"{whole}-{line}-{k}" for k in range(2, 2 * len(rels) + 3))
        candidates += [whole, f"{whole}-{line}", *extra]
        for i, cand in enumerate(candidates):
            key = cand.casefold()
            if key not in taken and (i == 0 and cand == first or key not in reserved):
                break
        taken.add(key)
        out.append(cand)
    return out
