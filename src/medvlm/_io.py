"""Small I/O helpers used at the edges: atomic writes (a crash never leaves a half-written file)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "x.txt").read_text()
    'hi'
    >>> oct((d / "x.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    True
    """
    path = Path(path)
    if path.is_dir():
        from medvlm.errors import DataError

        raise DataError(f"{path}: a folder is where medvlm writes this file; move it away and rerun")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import (os.umask can only be read by setting it)


def _umask() -> int:
    return _UMASK


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 (whatever the locale: files medvlm writes are read back as UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON; NaN becomes null (JSON has no NaN)."""
    write_text_atomic(path, json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n")


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    r"""Write ``rows`` as a CSV (header ``columns``, ``\n`` line ends; a key a row lacks -> empty; keys
    not in ``columns`` ignored) atomically; returns ``path``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = write_csv_atomic(p, ["id", "n"], [{"id": "a,b"}, {"n": 2}])
    >>> p.read_text()
    'id,n\n"a,b",\n,2\n'
    """
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def save_npy_atomic(path: str | Path, array: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _nan_to_none(obj: Any) -> Any:
    import math

    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _nan_to_none(obj.item())
    return obj


def _exists(path: Path) -> bool:
    """Like ``Path.exists`` but a folder this process may not enter raises PermissionError (``exists``
    says False there, which would send the search for a writable ancestor past it)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _folder_problem(path: Path) -> str | None:
    """Why no output can be written in folder ``path`` (made when missing), or None."""
    try:
        if path.exists() and not path.is_dir():
            return "is a file, not a folder (give a folder to write into)"
        ancestor = path
        while not _exists(ancestor) and ancestor != ancestor.parent:
            ancestor = ancestor.parent
    except PermissionError as exc:
        return f"{exc.filename or 'a parent folder'} cannot be reached (permission denied)"
    if not ancestor.is_dir():
        return f"{ancestor} is a file, so no folder can be made under it"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        what = "the folder" if ancestor == path else f"its parent {ancestor}"
        return f"{what} is not writable (permission denied or read-only)"
    return None


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Check that ``path`` can be the output folder of a command, before any work starts: an existing
    folder this process may write into, or a path whose nearest existing ancestor is such a folder.

    Raises :class:`medvlm.errors.ConfigError` naming ``option`` and what is wrong (a file in the way, a
    file as a parent, no write permission). Returns ``path`` unchanged.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "f").write_text("x")
    1
    >>> check_out_dir(d / "new" / "run") == d / "new" / "run"
    True
    >>> check_out_dir(d / "f")
    Traceback (most recent call last):
    medvlm.errors.ConfigError: --out ...f: is a file, not a folder (give a folder to write into)
    """
    from medvlm.errors import ConfigError

    path = Path(path).expanduser()
    problem = _folder_problem(path)
    if problem:
        raise ConfigError(f"{option} {path}: {problem}")
    return path


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """Check that a file can be written at ``path`` (not a folder; its folder can be made and written).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_out_file(d)
    Traceback (most recent call last):
    medvlm.errors.ConfigError: --out ...: is a folder; give a file name (e.g. report.html)
    """
    from medvlm.errors import ConfigError

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name (e.g. report.html)")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
    problem = _folder_problem(parent)
    if problem:
        raise ConfigError(f"{option} {path}: {problem}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: the file is not writable (permission denied or read-only)")
    return path
