"""Run a whole study: ``medvlm run EXPERIMENT.yaml`` and ``medvlm demo``.

:func:`run_experiment` turns an :class:`medvlm.experiment.ExperimentConfig` into an ordered list of
stages (synth or data check -> prepare -> split -> tiny model -> CNNs -> VLM evaluations -> fine-tuning
and its evaluation -> consistency -> calibrated arms -> report), each a call of the library function
behind one command. A stage whose inputs (its fingerprint) did not change since it finished is skipped
on rerun; the others resume from what their command leaves on disk (prepared volumes, checkpoints, the
response cache). ``out/experiment.json`` records the resolved config and one record per stage. Labels:
the task's (``task:`` in the config; ``brats-grading`` by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlm.experiment import TINY_MODEL, ExperimentConfig, fingerprint
from medvlm.predictions import summarise_test_cohort
from medvlm.study_data import _stage_data, _stage_prepare, _stage_split, _stage_tiny
from medvlm.study_paths import StageRecord, _Paths


@dataclass
class StudyResult:
    """All stage records of one run of the study, in order, and where the report is."""

    out: Path
    config: ExperimentConfig
    stages: list[StageRecord] = field(default_factory=list)
    report: Path | None = None

    def stage(self, name: str) -> StageRecord:
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(name)

    @property
    def exit_code(self) -> int:
        """0 when every stage finished; 1 when some stage finished with failed requests."""
        return 1 if any(r.status == "incomplete" for r in self.stages) else 0


@dataclass
class _Stage:
    name: str
    fingerprint: str
    run: Callable[[], StageRecord]
    outputs_exist: Callable[[], bool]


# ------------------------------------------------------------------------------------------- stages
def _zero_shot_as_before(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without ``shots: 0``, ``limit: None``, ``max_cost: None`` and ``save_images: 0`` (the
    defaults), so runs without them keep the fingerprints they had before those options existed."""
    defaults = {"shots": 0, "limit": None, "max_cost": None, "save_images": 0}
    return {k: v for k, v in fields.items() if not (k in defaults and v == defaults[k])}


def _fields(run: Any, drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    return _zero_shot_as_before({k: v for k, v in run.model_dump().items() if k not in drop})


def _stage_cnn(p: _Paths, run: Any, progress: bool) -> StageRecord:
    from medvlm.cnn.config import CNNConfig
    from medvlm.cnn.train import train_cnn

    config = CNNConfig(**{**_fields(run), "progress": progress})
    metrics = train_cnn(p.work, p.run(run.name), config)
    return StageRecord(run.name, summary=summarise_test_cohort(p.run(run.name)) or {"metrics": bool(metrics)},
                       outputs={"run": str(p.run(run.name))})


def _vlm_config(p: _Paths, fields: dict[str, Any], progress: bool) -> Any:
    from medvlm.vlm.evaluate import VLMEvalConfig

    fields = dict(fields)
    fields["model"] = p.model(fields["model"])
    fields["prompt"] = p.prompt(fields.get("prompt"))
    if fields.get("adapter"):
        fields["adapter"] = str(p.resolve(fields["adapter"]))
    return VLMEvalConfig(**{**fields, "progress": progress})


def _limit_note(p: _Paths, name: str, config: Any) -> str | None:
    """A run's ``limit`` above its cohort's size, in one line on stderr (:mod:`medvlm.vlm.limit`)."""
    import sys

    from medvlm.vlm.limit import cohort_limit_note

    note = cohort_limit_note(p.work, config)
    if note:
        print(f"medvlm: note: {name}: {note}", file=sys.stderr)
    return note


def _kept_note(run: Path, note: str | None) -> dict[str, Any]:
    """``note`` kept in the run's run.json and, as ``{"note": note}``, in the stage's summary ({} without)."""
    from medvlm.runinfo import add_run_note

    if not note:
        return {}
    add_run_note(run, note)
    return {"note": note}


def _stage_vlm(p: _Paths, name: str, fields: dict[str, Any], progress: bool) -> StageRecord:
    from medvlm.vlm.evaluate import evaluate_vlm

    config = _vlm_config(p, fields, progress)
    note = _limit_note(p, name, config)
    result = evaluate_vlm(p.work, p.run(name), config)
    summary = {"calls": result.n_calls, "unparsed": result.n_unparsed, "failed": result.n_failed,
               "sent": result.n_sent, "cached": result.n_cached, **summarise_test_cohort(p.run(name)),
               **_kept_note(p.run(name), note)}
    return StageRecord(name, status="incomplete" if result.exit_code else "done", summary=summary,
                       outputs={"run": str(p.run(name))})


def _stage_finetune(p: _Paths, run: Any, progress: bool) -> StageRecord:
    from medvlm.finetune.config import FinetuneConfig
    from medvlm.finetune.train import finetune

    fields = _fields(run, drop=("name", "evaluate"))
    fields["base_model"] = p.model(fields["base_model"])
    fields["prompt"] = p.prompt(fields.get("prompt"))
    result = finetune(p.work, p.run(run.name), FinetuneConfig(**fields))
    keep = {k: v for k, v in result.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
    return StageRecord(run.name, summary=keep, outputs={"adapter": str(p.run(run.name))})


def _finetune_eval_fields(run: Any) -> dict[str, Any]:
    """The evaluation of a fine-tuned model: the general runs' rendering and prompt, plus the adapter."""
    fields = {"model": run.base_model, "adapter": None, "backend": "transformers", "prompt": run.prompt,
              "orientations": run.orientations, "modalities": run.modalities, "slices": run.slices,
              **(run.evaluate or {})}
    return fields


def _pick_patient(p: _Paths, name: str) -> str:
    """The first test patient whose label is the class ``name`` (a patient-level task's class)."""
    from medvlm.data.cohorts import load_cohort
    from medvlm.errors import ConfigError, DataError
    from medvlm.tasks import work_task

    task = work_task(p.work)
    if task.unit != "patient":
        raise ConfigError(f"pick: {task.name} predicts per {task.unit}, not per patient; give patients: [ID]")
    want = task.label_of(name, "pick")
    cohort = load_cohort(p.work, "test")
    for pid, label in zip(cohort.patient_ids, cohort.labels, strict=True):
        if label == want:
            return pid
    raise DataError(f"{p.work / 'splits.json'}: the test cohort has no {task.classes[want]} patient to pick")


def _stage_consistency(p: _Paths, run: Any, progress: bool) -> StageRecord:
    from medvlm.consistency.config import ConsistencyConfig
    from medvlm.consistency.run import run_consistency

    fields = _fields(run, drop=("name", "pick"))
    fields["model"] = p.model(fields["model"])
    if "prompts" in fields:
        fields["prompts"] = [p.prompt(x) for x in fields["prompts"]]
    if run.pick:
        fields["patients"] = [_pick_patient(p, run.pick)]
    if "progress" in ConsistencyConfig.model_fields:
        fields["progress"] = progress
    config = ConsistencyConfig(**fields)
    note = _limit_note(p, run.name, config)
    result = run_consistency(p.work, p.run(run.name), config)
    summary_path = p.run(run.name) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    keep = {k: summary.get(k) for k in ("n", "counts", "majority", "agreement", "entropy") if k in summary}
    keep.update(_kept_note(p.run(run.name), note))
    if run.pick:
        keep["patient"] = fields["patients"][0]
    failed = result.n_failed
    return StageRecord(run.name, status="incomplete" if failed else "done", summary=keep,
                       outputs={"run": str(p.run(run.name))})


def _stage_report(p: _Paths, run_names: list[str], progress: bool) -> StageRecord:
    from medvlm.report.html import build_report
    from medvlm.report.work_sections import study_sections

    runs = [p.run(n) for n in run_names if (p.run(n) / "run.json").is_file()]
    target = p.out / p.config.report.file
    build_report(runs, target, title=p.config.report.title,
                 extra_sections=study_sections(runs, config=p.config))
    return StageRecord("report", summary={"runs": len(runs)}, outputs={"report": str(target)})


def _stage_calibrate(p: _Paths, run: Any, fit: Path, apply: Path) -> StageRecord:
    import warnings

    from medvlm.calibrate import calibrate

    with warnings.catch_warnings():  # undefined metrics are None in metrics.json; the report says why
        warnings.simplefilter("ignore")
        metrics = calibrate(fit, apply, p.run(run.name), method=run.method, threshold=run.threshold,
                            abstain_below=run.abstain_below, n_boot=run.bootstrap)
    cal = json.loads((p.run(run.name) / "calibration.json").read_text())
    return StageRecord(run.name, summary={
        "method": run.method, "threshold": round(cal["threshold"], 4), "n_fit": cal["n_fit"],
        **{f"test_{k}": (round(metrics[k], 3) if metrics[k] is not None else None)
           for k in ("accuracy", "specificity", "auc", "ece")}}, outputs={"run": str(p.run(run.name))})


def _calibrate_stages(config: ExperimentConfig, p: _Paths, eval_stages: dict[str, tuple[str, dict]],
                      progress: bool) -> list[tuple[_Stage, bool]]:
    """The stages of ``calibrate:``: a VLM run's validation evaluation when missing (``<run>-val<fold>``,
    the run's own options with ``cohort: val``), then the calibration. ``eval_stages``: VLM run name ->
    (fingerprint, fields). Returns (stage, shown in the report)."""
    out: list[tuple[_Stage, bool]] = []
    planned: set[str] = set()
    for run in config.calibrate:
        target = p.run(run.run)
        if run.run in eval_stages:
            fp, fields = eval_stages[run.run]
            val_name = f"{run.run}-val{run.fold}"
            val_fields = {**fields, "cohort": "val", "fold": run.fold}
            if val_name not in planned:
                planned.add(val_name)
                out.append((_Stage(val_name, fingerprint(fp, val_fields),
                                   lambda n=val_name, f=val_fields: _stage_vlm(p, n, f, progress),
                                   lambda n=val_name: (p.run(n) / "run.json").is_file()), False))
            fit, fit_fp = p.run(val_name), fingerprint(fp, val_fields)
        else:  # a CNN run: its out-of-fold val rows
            fit, fit_fp = target, fingerprint(run.run)
        out.append((_Stage(run.name, fingerprint(fit_fp, run.model_dump(mode="json"), str(target)),
                           lambda run=run, fit=fit, target=target: _stage_calibrate(p, run, fit, target),
                           lambda n=run.name: (p.run(n) / "run.json").is_file()), True))
    return out


# ------------------------------------------------------------------------------------------- runner
def plan_stages(config: ExperimentConfig, p: _Paths, *, progress: bool) -> list[_Stage]:
    """The ordered stages of ``config`` with the fingerprints that decide whether a rerun skips them."""
    def dumped(x: Any) -> Any:
        return _zero_shot_as_before(x.model_dump(mode="json")) if x is not None else None

    data_dump = dumped(config.data)
    if data_dump.get("synthetic") and data_dump["synthetic"].get("kind") == "brats":  # fingerprints as before
        data_dump["synthetic"] = {k: v for k, v in data_dump["synthetic"].items() if k != "kind"}
    data_fp = fingerprint(data_dump, str(p.data))
    from medvlm.tasks import DEFAULT_TASK

    task_part = [config.task] if config.task != DEFAULT_TASK else []  # the study's fingerprints unchanged
    prep_fp = fingerprint(data_fp, dumped(config.prepare), *task_part)
    split_fp = fingerprint(prep_fp, dumped(config.split))
    stages = [
        _Stage("data", data_fp, lambda: _stage_data(p, progress),
               lambda: (p.data).exists()),
        _Stage("prepare", prep_fp, lambda: _stage_prepare(p, progress),
               lambda: (p.work / "manifest.csv").is_file()),
        _Stage("split", split_fp, lambda: _stage_split(p, progress),
               lambda: (p.work / "splits.json").is_file()),
    ]
    uses_tiny = (any(r.model == TINY_MODEL for r in [*config.vlm, *config.consistency])
                 or any(r.base_model == TINY_MODEL for r in config.finetune))
    if uses_tiny:
        stages.append(_Stage("tiny-vlm", fingerprint("tiny", 0), lambda: _stage_tiny(p, progress),
                             lambda: (p.tiny / "config.json").is_file()))

    def run_exists(name: str) -> Callable[[], bool]:
        return lambda: (p.run(name) / "run.json").is_file()

    run_names: list[str] = []
    for run in config.cnn:
        stages.append(_Stage(run.name, fingerprint(split_fp, dumped(run)),
                             lambda run=run: _stage_cnn(p, run, progress), run_exists(run.name)))
        run_names.append(run.name)
    eval_stages: dict[str, tuple[str, dict[str, Any]]] = {}
    for run in config.vlm:
        fields = _fields(run)
        stages.append(_Stage(run.name, fingerprint(split_fp, dumped(run)),
                             lambda run=run, fields=fields: _stage_vlm(p, run.name, fields, progress),
                             run_exists(run.name)))
        run_names.append(run.name)
        eval_stages[run.name] = (fingerprint(split_fp, dumped(run)), fields)
    for run in config.finetune:
        ft_fp = fingerprint(split_fp, dumped(run))
        stages.append(_Stage(run.name, ft_fp, lambda run=run: _stage_finetune(p, run, progress),
                             run_exists(run.name)))
        run_names.append(run.name)
        if run.evaluate is not None:
            eval_name = f"{run.name}-eval"
            fields = {**_finetune_eval_fields(run), "adapter": str(p.run(run.name))}
            stages.append(_Stage(eval_name, fingerprint(ft_fp, fields),
                                 lambda n=eval_name, f=fields: _stage_vlm(p, n, f, progress),
                                 run_exists(eval_name)))
            run_names.append(eval_name)
            eval_stages[eval_name] = (fingerprint(ft_fp, fields), fields)
    for run in config.consistency:
        stages.append(_Stage(run.name, fingerprint(split_fp, dumped(run)),
                             lambda run=run: _stage_consistency(p, run, progress), run_exists(run.name)))
        run_names.append(run.name)
    for stage, shown in _calibrate_stages(config, p, eval_stages, progress):
        stages.append(stage)
        if shown:
            run_names.append(stage.name)
    stages.append(_Stage("report", fingerprint(time.time()), lambda: _stage_report(p, run_names, progress),
                         lambda: False))
    return stages


def run_experiment(config: ExperimentConfig, *, out: str | Path | None = None, base_dir: str | Path = ".",
                   console: Any = None, force: bool = False) -> StudyResult:
    """Run every stage of ``config`` into ``out`` (default ``config.out`` relative to ``base_dir``).

    A stage that finished before with the same fingerprint is skipped (``force``: run all again; each
    command still resumes from its own files). ``console``: a rich Console for stage headers and progress
    bars (None: quiet). Returns the stage records; ``out/experiment.json`` holds them too.
    """
    from medvlm._io import check_out_dir, write_json_atomic
    from medvlm.experiment import check_devices
    from medvlm.vlm._secrets import redact_record

    check_devices(config, source=f"experiment {config.name!r}")  # before any stage runs
    base = Path(base_dir).resolve()
    out = Path(out) if out is not None else Path(config.out)
    out = check_out_dir((out if out.is_absolute() else base / out).resolve(), "out")
    out.mkdir(parents=True, exist_ok=True)
    paths = _Paths(config, out, base)
    record_path = out / "experiment.json"
    previous: dict[str, Any] = {}
    if record_path.is_file():
        try:
            previous = {s["name"]: s for s in json.loads(record_path.read_text()).get("stages", [])}
        except (json.JSONDecodeError, KeyError, TypeError):
            previous = {}
    result = StudyResult(out, config)
    recorded = redact_record(config.model_dump(mode="json"))  # credentials masked
    progress = console is not None
    for stage in plan_stages(config, paths, progress=progress):
        before = previous.get(stage.name)
        if (not force and before and before.get("fingerprint") == stage.fingerprint
                and before.get("status") in ("done", "reused") and stage.outputs_exist()):
            record = StageRecord(**{**before, "status": "reused"})
            if console is not None:
                console.print(f"[dim]{stage.name}: finished before, skipped[/dim]")
        else:
            if console is not None:
                console.rule(f"[bold]{stage.name}")
            start = time.perf_counter()
            record = stage.run()
            record.seconds = round(time.perf_counter() - start, 2)
            record.fingerprint = stage.fingerprint
        result.stages.append(record)
        if stage.name == "report":
            result.report = Path(record.outputs["report"])
        write_json_atomic(record_path, {"config": recorded, "out": str(out),
                                        "stages": [asdict(r) for r in result.stages]})
    return result
