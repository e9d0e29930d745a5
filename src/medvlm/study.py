"""The whole study on embedded defaults: ``medvlm demo``.

:func:`run_demo` runs named stages in order, each a function ``(out, config, console) -> StageRecord``
listed in :data:`DEMO_STAGES`; today: synth -> prepare -> split. Later stages (CNN, VLM, report)
append themselves to :data:`DEMO_STAGES` and read what earlier stages left in ``out``:

    out/data/MICCAI_BraTS2020_TrainingData/   synthetic cohort (stage ``synth``)
    out/work/                                 manifest.csv, volumes/, splits.json (``prepare``, ``split``)
    out/demo.json                             config and one record per stage

Every stage is resumable: rerunning the demo with the same ``--out`` reuses finished work.
Labels: LGG = 0, HGG = 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class DemoConfig(BaseModel):
    """Embedded defaults of the demo (a synthetic cohort small enough for a laptop CPU)."""

    model_config = ConfigDict(extra="forbid")

    patients: int = Field(40, ge=4)
    lgg_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0
    size: Literal["small", "medium", "full"] = "medium"
    shape: tuple[int, int, int] = (48, 64, 64)
    margin_mm: float = 10.0
    test_fraction: float = 0.25
    folds: int = Field(3, ge=2)
    workers: int = Field(1, ge=1)


@dataclass
class StageRecord:
    """What one stage did: ``name``, wall-clock ``seconds``, a JSON-able ``summary`` and its outputs."""

    name: str
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoResult:
    """All stage records of one demo run, in order."""

    out: Path
    config: DemoConfig
    stages: list[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(name)


def data_dir(out: Path) -> Path:
    """Where the demo writes its synthetic cohort (the parent of the BraTS training folder)."""
    return Path(out) / "data"


def work_dir(out: Path) -> Path:
    """The demo's work folder (manifest.csv, volumes/, splits.json)."""
    return Path(out) / "work"


def stage_synth(out: Path, config: DemoConfig, console: Any) -> StageRecord:
    """Write the synthetic cohort (reused when ``data/synth.json`` records the same parameters)."""
    import json

    from medvlm._io import write_json_atomic
    from medvlm.data.brats import MAPPING_FILE, TRAINING_FOLDER
    from medvlm.data.synth import synth_cohort

    params = {"patients": config.patients, "lgg_fraction": config.lgg_fraction, "seed": config.seed,
              "size": config.size}
    data = data_dir(out)
    stamp = data / "synth.json"
    mapping = data / TRAINING_FOLDER / MAPPING_FILE
    reused = stamp.is_file() and mapping.is_file() and json.loads(stamp.read_text()).get("params") == params
    if not reused:
        infos = synth_cohort(data, **params, progress=console is not None)
        write_json_atomic(stamp, {"params": params, "patients": [asdict(i) for i in infos]})
    record = json.loads(stamp.read_text())
    grades = [p["grade"] for p in record["patients"]]
    return StageRecord("synth", summary={
        "patients": len(grades), "hgg": grades.count("HGG"), "lgg": grades.count("LGG"),
        "atypical": sum(p["atypical"] for p in record["patients"]), "size": config.size, "reused": reused,
    }, outputs={"data": str(data / TRAINING_FOLDER)})


def stage_prepare(out: Path, config: DemoConfig, console: Any) -> StageRecord:
    """Prepare the cohort into ``work/`` (finished patients are reused)."""
    from medvlm.data.prepare import prepare

    result = prepare(data_dir(out), work_dir(out), shape=config.shape, workers=config.workers,
                     margin_mm=config.margin_mm, progress=console is not None)
    return StageRecord("prepare", summary={
        "ok": result.n_ok, "skipped": result.n_skipped, "reused": result.n_reused,
        "shape": "x".join(map(str, config.shape)), "skipped_reasons": dict(result.skipped()),
    }, outputs={"manifest": str(result.work / "manifest.csv"), "volumes": str(result.work / "volumes")})


def stage_split(out: Path, config: DemoConfig, console: Any) -> StageRecord:
    """Stratified test set and folds: ``work/splits.json``."""
    import warnings

    from medvlm.data.split import make_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = make_split(work_dir(out), test_fraction=config.test_fraction, folds=config.folds,
                           seed=config.seed)
    return StageRecord("split", summary={
        "test": len(split["test"]),
        "folds": [f"{len(f['train'])}/{len(f['val'])}" for f in split["folds"]],
        "warnings": [str(w.message) for w in caught],
    }, outputs={"splits": str(work_dir(out) / "splits.json")})


Stage = Callable[[Path, DemoConfig, Any], StageRecord]
#: The demo's stages in order; later work appends ``(name, function)`` pairs.
DEMO_STAGES: list[tuple[str, Stage]] = [
    ("synth", stage_synth),
    ("prepare", stage_prepare),
    ("split", stage_split),
]


def run_demo(
    out: str | Path,
    config: DemoConfig | None = None,
    *,
    console: Any = None,
    stages: list[tuple[str, Stage]] | None = None,
    only: list[str] | None = None,
) -> DemoResult:
    """Run the demo's stages in ``out`` and write ``out/demo.json``; returns the stage records.

    ``console``: a ``rich.console.Console`` for stage headers and progress bars (None: quiet).
    ``only``: names of the stages to run (default all of ``stages``, which defaults to
    :data:`DEMO_STAGES`).
    """
    from medvlm._io import write_json_atomic
    from medvlm.errors import ConfigError

    config = config or DemoConfig()
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = list(stages if stages is not None else DEMO_STAGES)
    names = [n for n, _ in stages]
    unknown = [n for n in (only or []) if n not in names]
    if unknown:
        raise ConfigError(f"unknown demo stage(s) {unknown}; stages are {names}")
    result = DemoResult(out, config)
    for name, fn in stages:
        if only and name not in only:
            continue
        if console is not None:
            console.rule(f"[bold]{name}")
        start = time.perf_counter()
        record = fn(out, config, console)
        record.seconds = round(time.perf_counter() - start, 3)
        result.stages.append(record)
        write_json_atomic(out / "demo.json", {
            "config": config.model_dump(mode="json"),
            "stages": [asdict(r) for r in result.stages],
        })
    return result


def print_summary(result: DemoResult, console: Any) -> None:
    """A rich table: one row per stage with its time and key numbers, then the output paths."""
    from rich.table import Table

    table = Table(title=f"medvlm demo: {result.out}", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for record in result.stages:
        parts = []
        for key, value in record.summary.items():
            if key in ("skipped_reasons", "warnings") and not value:
                continue
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            parts.append(f"{key}: {value}")
        table.add_row(record.name, f"{record.seconds:.1f}", "; ".join(parts))
    console.print(table)
    for record in result.stages:
        for key, path in record.outputs.items():
            console.print(f"  {record.name}.{key}: {path}")
