"""What every run folder records about itself: ``RUN/run.json``.

``run.json`` = ``{"kind", "name", "created", "config", "versions", "git_revision", "command"}`` (and
``usage``, the tokens and cost of the model calls a run sent, where its backend reports them:
:meth:`medvlm.vlm.usage.Usage.record`; ``notes``, lines on how the run was made: :func:`add_run_note`)
where ``kind`` is one of :data:`RUN_KINDS`. The report reads only run files, so this is how it learns
what a folder holds and how it was made (resolved config, package versions, git revision, seeds).
Credentials in ``config`` and ``command`` are stored masked (``***``). A run is shown under its
folder's name (:func:`display_name`), which a copied folder's run.json may not record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from medvlm._io import write_json_atomic

RUN_KINDS = ("cnn", "vlm", "consistency", "finetune", "calibrated")
_PACKAGES = ("medvlm", "numpy", "scipy", "pandas", "scikit-learn", "nibabel", "torch", "monai",
             "transformers", "peft", "trl", "bitsandbytes", "httpx", "pydantic")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that change results (absent ones are left out)."""
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The git revision of the medvlm source tree, or None outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_run_info(run: str | Path, *, kind: str, config: dict[str, Any], name: str | None = None,
                   usage: dict[str, Any] | None = None) -> Path:
    """Write ``RUN/run.json``; keeps the first ``created`` time when the run is resumed.

    ``config`` is the resolved configuration (JSON-serialisable). Credentials are masked as ``***``
    before anything is written (:func:`medvlm.vlm._secrets.redact_record`): in ``config`` the
    ``base_urls`` passwords and secret query values and the secret-named ``extra_body`` fields; in
    ``command`` (the command line as typed) the same, wherever they stand, and the provider keys of the
    environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...), which are also masked wherever else they
    stand. ``usage`` (None: left out): the tokens and cost of the calls this invocation sent.
    """
    from medvlm.vlm._secrets import Redactor, env_secrets, redact_record

    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be one of {RUN_KINDS}")
    run = Path(run)
    path = run / "run.json"
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            created = json.loads(path.read_text()).get("created", created)
    info = {
        "kind": kind,
        "name": name or run.name,
        "created": created,
        "config": config,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "command": " ".join(["medvlm", *sys.argv[1:]]) if sys.argv and "medvlm" in sys.argv[0] else None,
    }
    if usage is not None:
        info["usage"] = usage
    info = redact_record(info)
    redactor = Redactor([s for s in env_secrets() if len(s) >= 4])  # shorter ones would mask words
    write_json_atomic(path, _mask_strings(info, redactor) if redactor else info)
    return path


def add_run_note(run: str | Path, note: str) -> None:
    """Keep ``note`` (one line about how the run was made, e.g. a ``--limit`` above the cohort's size) in
    ``RUN/run.json``'s ``notes`` list, once; the report shows it in the run's section. Called after the
    command has written its run.json (which a resumed run writes anew)."""
    info = read_run_info(run, strict=False)
    if info is None:
        return
    notes = info.get("notes") if isinstance(info.get("notes"), list) else []
    if note not in notes:
        write_json_atomic(Path(run) / "run.json", {**info, "notes": [*notes, note]})


def display_name(run: str | Path) -> str:
    """The name a run is shown under (report, summaries, ``config dump``): the name of its folder as given
    (a folder copied with ``cp -r runs/a runs/b`` is ``b``, whatever its run.json says); for ``.`` or
    ``..``, the name of the folder they stand for.

    >>> display_name("runs/b/"), display_name("/tmp/runs/x/..")
    ('b', 'runs')
    """
    path = Path(run)
    return path.name if path.name not in ("", ".", "..") else Path(os.path.abspath(path)).name


def renamed_note(run: str | Path, info: dict[str, Any]) -> str | None:
    """A note when ``run.json`` records another name than the run's folder (a copied or renamed run
    folder): which name it records and which one the run is shown under; None when they agree.

    >>> renamed_note("runs/b", {"name": "a"})
    "run.json names this run 'a'; shown under its folder's name 'b' (a copied or renamed run folder)"
    >>> renamed_note("runs/a", {"name": "a"}) is None
    True
    """
    recorded, shown = info.get("name"), display_name(run)
    if not isinstance(recorded, str) or not recorded or recorded == shown:
        return None
    return (f"run.json names this run {recorded!r}; shown under its folder's name {shown!r} (a copied or "
            "renamed run folder)")


def _mask_strings(data: Any, redactor: Any) -> Any:
    """``data`` with every string (keys left as they are) passed through ``redactor``."""
    if isinstance(data, dict):
        return {k: _mask_strings(v, redactor) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask_strings(v, redactor) for v in data]
    return redactor(data) if isinstance(data, str) else data


def read_run_info(run: str | Path, *, strict: bool = True) -> dict[str, Any] | None:
    """``RUN/run.json`` as a dict, or None when the folder has none. A file that is not a JSON object
    (not UTF-8, truncated, a list, ...) is a DataError naming it (``strict=False``: None)."""
    from medvlm.errors import DataError

    path = Path(run) / "run.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if not strict:
            return None
        raise DataError(f"{path}: unreadable ({' '.join(str(exc).split())[:200]}); move it aside or use "
                        "another --out") from None
    if not isinstance(info, dict):
        if not strict:
            return None
        raise DataError(f"{path}: a JSON {type(info).__name__}, not the object medvlm writes; move it aside "
                        "or use another --out")
    return info
