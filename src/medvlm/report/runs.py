"""Reading run folders for the report: :class:`RunData`, :func:`load_run` and the cached file readers.

Files are read lazily and at most once per run (``run.cache``); a file that cannot be parsed becomes
one of the run's ``problems`` (listed in its section) instead of stopping the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.errors import DataError

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
        if isinstance(recorded, dict) and recorded.get("name"):
            task = get_task(str(recorded["name"]))
        elif isinstance(cfg, dict) and cfg.get("work") and Path(str(cfg["work"])).is_dir():
            task = work_task(cfg["work"])
    except MedVLMError as exc:
        run.problems.append(f"task: {exc}; the default task's names are used")
    run.cache["task"] = task or get_task(None)
    return run.cache["task"]


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
    """``RUN/name`` as a DataFrame (ids, cohorts, orientations and raw answers kept as text), or None."""
    import pandas as pd

    text_columns = {"patient_id": str, "cohort": str, "orientation": str, "raw": str}
    return _read_file(run, name, lambda path: pd.read_csv(path, dtype=text_columns))


def _read_json(run: RunData, name: str) -> Any:
    """``RUN/name`` parsed as JSON, or None."""
    return _read_file(run, name, lambda path: json.loads(path.read_text()))


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
    files = [f for f in RUN_FILES if (path / f).is_file()]
    problems: list[str] = []
    info: dict[str, Any] = {}
    if "run.json" in files:
        try:
            info = json.loads((path / "run.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path / 'run.json'}: not valid JSON ({exc})") from None
        if not isinstance(info, dict):
            problems.append(f"run.json holds a JSON {type(info).__name__}, not an object: ignored")
            info = {}
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
    return RunData(
        path=path,
        name=str(info.get("name") or path.name),
        kind=kind,
        info=info,
        files=files,
        problems=problems,
    )


def _unique_names(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name} ({seen[r.name]})"
        else:
            seen[r.name] = 1


def _raw_role(info: Mapping[str, Any]) -> str | None:
    """The role of an uncalibrated run from its ``run.json`` (``cnn``, ``fine-tuned``, ``general``)."""
    if info.get("kind") == "cnn":
        return "cnn"
    if info.get("kind") == "vlm":
        cfg = info.get("config") or {}
        return "fine-tuned" if isinstance(cfg, Mapping) and cfg.get("adapter") else "general"
    return None


def _config_path(run: RunData, key: str) -> Path | None:
    cfg = run.info.get("config") or {}
    value = cfg.get(key) if isinstance(cfg, Mapping) else None
    return Path(str(value)) if value else None


def calibration_source(run: RunData) -> RunData | None:
    """The raw run a ``calibrated`` run calibrates: the folder of its APPLY predictions file
    (``config.apply``), loaded once; None for other kinds, or when that folder is gone or holds no run
    (then one of the run's problems says so, and FIT's too when FIT's file is gone)."""
    if run.kind != "calibrated":
        return None
    if "source" in run.cache:
        return run.cache["source"]
    source = None
    apply = _config_path(run, "apply")
    if apply is None:
        run.problems.append("run.json names no APPLY predictions (config.apply): the run it calibrates is "
                            "unknown")
    else:
        folder = apply if apply.suffix != ".csv" else apply.parent
        try:
            if not (apply.is_file() or apply.is_dir()):
                raise DataError(f"{apply}: no such file")
            source = load_run(folder)
        except DataError as exc:
            run.problems.append(f"APPLY {apply} is gone or no run ({exc}); the run it calibrates is unknown")
    fit = _config_path(run, "fit")
    if fit is not None and not fit.exists():
        run.problems.append(f"FIT {fit} is gone; calibration.json's record of the fit is shown as written")
    run.cache["source"] = source
    return source


def vlm_role(run: RunData) -> str | None:
    """``"cnn"``, ``"fine-tuned"`` (a VLM run whose config has an ``adapter``), ``"general"`` (other VLM
    runs), ``"calibrated-<role of the run it calibrates>"`` for a calibrated run (``"calibrated"`` when
    that run is unknown) or None (consistency and fine-tuning runs)."""
    if run.kind in ("cnn", "vlm"):
        return _raw_role({"kind": run.kind, "config": run.info.get("config")})
    if run.kind == "calibrated":
        source = calibration_source(run)
        base = _raw_role({"kind": source.kind, "config": source.info.get("config")}) if source else None
        return f"calibrated-{base}" if base else "calibrated"
    return None


def role_badge(role: str | None) -> str:
    """The badge shown beside a run's kind: the VLM variant, also for a calibrated run (its kind badge
    already says "calibrated"), the CNN only for a calibrated CNN; "" otherwise."""
    base = (role or "").removeprefix("calibrated").lstrip("-")
    if base == "cnn":
        return "cnn" if role != "cnn" else ""
    return base


def order_runs(runs: list[RunData]) -> tuple[list[RunData], dict[str, str]]:
    """``runs`` with each calibrated run moved right after the run it calibrates (when that run is among
    them), and ``{calibrated run name: name of the run it calibrates}`` for those."""
    from contextlib import suppress

    def key(path: Path) -> Path:
        with suppress(OSError):
            return path.resolve()
        return path

    by_path = {key(r.path): r for r in runs}
    placed: dict[str, str] = {}
    after: dict[int, list[RunData]] = {}
    for r in runs:
        source = calibration_source(r)
        target = by_path.get(key(source.path)) if source is not None else None
        if target is not None and target is not r:
            placed[r.name] = target.name
            after.setdefault(id(target), []).append(r)
    out: list[RunData] = []
    for r in runs:
        if r.name in placed:
            continue
        out.append(r)
        out.extend(after.get(id(r), []))
    if len(out) != len(runs):  # a loop of calibrated runs: keep the given order
        return list(runs), {}
    return out, placed


def _model_name(run: RunData) -> str:
    if run.kind == "calibrated":
        source = calibration_source(run)  # one level only: a calibrated run of a calibrated run is rare
        return _model_name(source) if source is not None and source.kind != "calibrated" else ""
    cfg = run.info.get("config") or {}
    metrics = run.cache.get("file:metrics.json")  # only if already read or {}
    for key in ("model", "base_model", "model_name"):
        if isinstance(metrics, Mapping) and metrics.get(key):
            return str(metrics[key])
        if isinstance(cfg, Mapping) and cfg.get(key):
            return str(cfg[key])
    return ""


def _valid_predictions(run: RunData, name: str = "predictions.csv") -> Any:
    """``predictions.csv`` validated with :func:`medvlm.metrics.read_predictions`, or None (+ problem)."""
    from medvlm.metrics import read_predictions

    key = f"pred:{name}"
    if key in run.cache:
        return run.cache[key]
    df = None
    if name in run.files:
        try:
            df = read_predictions(run.path / name)
        except DataError as exc:
            run.problems.append(str(exc))
    run.cache[key] = df
    return df


def _finetune_config(folder: str | Path) -> dict[str, Any]:
    """``finetune_config.json`` of an adapter folder as a dict ({} when absent or unreadable)."""
    path = Path(folder) / FINETUNE_CONFIG
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}
