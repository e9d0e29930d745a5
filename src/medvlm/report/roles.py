"""The role of each run in the study's comparisons: CNN, general or fine-tuned VLM, or a calibrated arm of
one of them (``medvlm calibrate``), the run a calibrated run calibrates, and the runs in report order (a
calibrated run right after the run it calibrates)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.runs import RunData, _config_path, load_run


def _raw_role(info: Mapping[str, Any]) -> str | None:
    """The role of an uncalibrated run from its ``run.json`` (``cnn``, ``fine-tuned``, ``few-shot``: a
    VLM run without adapter shown examples, ``eval-vlm --shots K``; ``general``)."""
    if info.get("kind") == "cnn":
        return "cnn"
    if info.get("kind") == "vlm":
        cfg = info.get("config") or {}
        if not isinstance(cfg, Mapping):
            return "general"
        return "fine-tuned" if cfg.get("adapter") else "few-shot" if cfg.get("shots") else "general"
    return None


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
    """``"cnn"``, ``"fine-tuned"`` (a VLM run whose config has an ``adapter``), ``"few-shot"`` (a VLM run
    with ``shots`` > 0 and no adapter), ``"general"`` (other VLM runs), ``"calibrated-<role of the run it
    calibrates>"`` for a calibrated run (``"calibrated"`` when that run is unknown) or None (consistency
    and fine-tuning runs)."""
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
