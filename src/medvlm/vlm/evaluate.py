"""``medvlm eval-vlm``: every image of every prediction unit of a cohort -> answers -> votes -> metrics.

:func:`evaluate_vlm` writes ``slices.csv``, ``patients.csv`` (patient unit) or ``units.csv`` (slice unit),
``predictions.csv`` (+ ``predictions_<orientation>.csv``), ``metrics.json``, ``failures.csv`` and
``run.json`` into the run folder. Labels, answer codes, column names and the parser come from the work
folder's task (:mod:`medvlm.tasks`); answers are asked through :func:`medvlm.vlm.engine.ask_images`.

The settings are :mod:`medvlm.vlm.eval_config`'s (:class:`VLMEvalConfig` and :func:`validate_config`,
importable from here too), the tables :mod:`medvlm.vlm.eval_tables`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.vlm.backends import Backend, make_backend
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.engine import ask_images
from medvlm.vlm.eval_config import VLMEvalConfig, validate_config
from medvlm.vlm.eval_tables import call_frames, part_metrics, reduce_calls
from medvlm.vlm.records import csv_text
from medvlm.vlm.saved_images import ImageSaver
from medvlm.vlm.usage import run_usage

__all__ = ["PREDICTION_COLUMNS", "EvalResult", "VLMEvalConfig", "evaluate_vlm", "print_summary",
           "validate_config"]

PREDICTION_COLUMNS = ["patient_id", "cohort", "label", "pred", "score"]


@dataclass
class EvalResult:
    """What :func:`evaluate_vlm` wrote and counted. ``exit_code``: 0, or 1 when some requests failed."""

    out: Path
    metrics: dict[str, Any]
    n_calls: int
    n_unparsed: int
    n_failed: int
    n_sent: int
    n_cached: int
    elapsed_s: float
    usage: dict[str, Any] | None = None  # run.json's usage (a backend that reports it)

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failed else 0


def evaluate_vlm(work: str | Path, out: str | Path, config: VLMEvalConfig, *,
                 backend: Backend | None = None, console: Any = None) -> EvalResult:
    """Run ``eval-vlm``: every image of every unit of ``config.cohort`` (the work folder's task decides
    which), through the cache.

    Writes into ``out``: ``slices.csv`` (one row per answered call, so its record count is
    ``metrics.json``'s ``n_calls``; ``raw`` verbatim except carriage returns, written as newlines so that
    an answer stays one CSV record -- count records with a CSV reader, not lines with ``wc -l``;
    ``choice`` empty when unparsed; one probability column per answer code and
    ``mass`` = their probability mass under log-prob scoring; with ``shots`` > 0 a last column ``shots``:
    the call's examples as ``patient_id:orientation:slice_index`` joined by ``;``), ``failures.csv`` (calls
    that failed after retries), ``patients.csv`` (patient unit: per patient and orientation plus ``combined``)
    or ``units.csv`` (slice unit: one row per slice), ``n_failed`` appended, ``predictions.csv`` (all
    orientations combined), ``predictions_<orientation>.csv``, ``metrics.json`` and ``run.json``.
    Returns an :class:`EvalResult` whose ``exit_code`` is 1 when some requests failed (they are retried
    by the next run).
    """
    import pandas as pd

    from medvlm._io import write_json_atomic, write_text_atomic
    from medvlm.aggregate import COMBINED, class_score_columns
    from medvlm.data.cohorts import cohort_units, load_cohort, read_manifest
    from medvlm.data.slices import parse_modalities, unit_images
    from medvlm.runinfo import write_run_info
    from medvlm.tasks import work_task
    from medvlm.vlm.fewshot import make_sampler
    from medvlm.vlm.options import first_patients

    start = time.monotonic()
    work, out = Path(work), Path(out)
    task = work_task(work)
    config, prompt, decoding, reducer = validate_config(config, task)
    task = task.for_prompt(prompt)  # a prompt with other answer digits: read them back as the same answers
    orientations = list(config.orientations or [])
    cohort = load_cohort(work, config.cohort, fold=config.fold)
    if config.limit is not None:  # --limit N: the first N patients of the cohort
        keep = first_patients(cohort.patient_ids, config.limit)
        cohort = type(cohort)(cohort.name, keep, cohort.labels[:len(keep)])
    manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    units = cohort_units(work, cohort, unit=task.unit, orientations=orientations)
    order = {pid: i for i, pid in enumerate(cohort.patient_ids)}
    sampler = make_sampler(work, config.shots, task=task, cohort=config.cohort, fold=config.fold,
                           evaluated=cohort.patient_ids, orientations=orientations,
                           selection=config.slices or "",
                           modalities=parse_modalities(config.modalities) if task.modalities else (),
                           image=config.image,
                           artifact=config.artifact, seed=config.seed or 0, manifest=manifest)
    out.mkdir(parents=True, exist_ok=True)
    run_config = {**config.record(), "reducer": reducer, "prompt_name": prompt.name,
                  "prompt_sha": prompt.sha, "prompt_text": prompt.text, "work": str(work.resolve()),
                  "n_patients": len(cohort), "task": task.describe()}
    write_run_info(out, kind="vlm", config=run_config)

    if task.unit == "image":
        from medvlm.data.images import image_unit_images

        total, images = image_unit_images(work, units, image=config.image, seed=config.seed or 0)
    else:
        total, images = unit_images(manifest, units, orientations=orientations, selection=config.slices or "",
                                    modalities=parse_modalities(config.modalities), unit=task.unit,
                                    image=config.image, artifact=config.artifact, seed=config.seed or 0)
    saver = ImageSaver(out, config.save_images)
    images = saver.tap(images)
    own_backend = backend is None
    cache = ResponseCache(Path(config.cache) if config.cache else out / "cache.sqlite")  # before the model
    budget = config.budget()
    try:
        backend = backend or make_backend(config.backend_config())
        asked = ask_images(backend, images, prompt=prompt, decoding=decoding, task=task,
                           repeats=config.repeats, cache=cache,
                           total=None if total is None else total * config.repeats,
                           progress=config.progress, description="eval-vlm", budget=budget,
                           shots=None if sampler is None else sampler.for_prompt(prompt.text, task,
                                                                                 decoding.structured))
    finally:
        cache.close()
        if own_backend and backend is not None:
            backend.close()

    saver.write()
    if saver.note and console is not None:
        console.print(f"--save-images: {saver.note}")
    calls, failures = call_frames(asked.answers, order, orientations, task)
    if sampler is not None:
        calls = sampler.add_column(calls)
    parts, table = reduce_calls(calls, failures, units, task=task, reducer=reducer,
                           tie_break=task.tie_break_label(config.tie_break), orientations=orientations)
    write_text_atomic(out / "slices.csv", csv_text(calls))
    write_text_atomic(out / "failures.csv", csv_text(failures))
    table_file = "patients.csv" if task.unit == "patient" else "units.csv"
    write_text_atomic(out / table_file, table.to_csv(index=False))
    columns = ["patient_id", *task.unit_keys, *PREDICTION_COLUMNS[1:], *class_score_columns(task)]
    metrics_by_name = {}
    for name, (part, sub_calls, n_failed) in parts.items():
        preds = pd.DataFrame({**{k: part[k] for k in ["patient_id", *task.unit_keys]},
                              "cohort": config.cohort, "label": part["label"], "pred": part["pred"],
                              "score": part["score"], **{c: part[c] for c in class_score_columns(task)}},
                             columns=columns)
        target = "predictions.csv" if name == COMBINED else f"predictions_{name}.csv"
        write_text_atomic(out / target, preds.to_csv(index=False))
        metrics_by_name[name] = part_metrics(preds, sub_calls, n_failed, n_boot=config.n_boot,
                                         seed=config.boot_seed, task=task)

    n_unparsed = int(calls["choice"].isna().sum())
    metrics = {
        "orientations": metrics_by_name,
        "n_calls": len(calls), "n_unparsed": n_unparsed, "n_failed": len(failures),
        "n_truncated": int((calls["finish_reason"] == "length").sum()),
        "n_patients": len(cohort), "cohort": config.cohort, "reducer": reducer, "tie_break": config.tie_break,
        "scoring": config.scoring, "backend": config.backend, "model": config.model,
        "adapter": config.adapter,
        "prompt_sha": prompt.sha, "n_sent": asked.n_sent, "n_cached": asked.n_cached,
    }
    if task.unit != "patient":
        metrics["unit"], metrics["n_units"] = task.unit, len(units)
    write_json_atomic(out / "metrics.json", metrics)
    usage = run_usage(backend, asked.usage, budget)
    write_run_info(out, kind="vlm", config=run_config, usage=usage)
    result = EvalResult(out=out, metrics=metrics, n_calls=len(calls), n_unparsed=n_unparsed,
                        n_failed=len(failures), n_sent=asked.n_sent, n_cached=asked.n_cached,
                        elapsed_s=time.monotonic() - start, usage=usage)
    if console is not None:
        print_summary(result, console)
    return result


def print_summary(result: EvalResult, console: Any) -> None:
    """A rich table: per orientation n, parsed share, accuracy, recall, specificity, F1, AUC [95 % CI]."""
    from rich.table import Table

    from medvlm.vlm.usage import usage_line

    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    def ci(m: dict, key: str) -> str:
        c = m.get(f"{key}_ci")
        return "" if not c else f" [{c[0]:.2f}, {c[1]:.2f}]"

    table = Table(title=f"eval-vlm: {result.out}")
    units = {"slice": "slices", "image": "images"}.get(result.metrics.get("unit", "patient"), "patients")
    # more than two classes (no positive class): balanced accuracy and macro F1 instead of recall/spec/F1
    multi = any("macro_f1" in m for m in result.metrics["orientations"].values())
    keys = (("balanced_accuracy", "bal. acc."), ("macro_f1", "macro F1")) if multi else (
        ("recall", "recall"), ("specificity", "specificity"), ("f1", "F1"))
    for col in ("orientation", units, "calls", "parsed", "accuracy", *(c for _, c in keys), "AUC"):
        table.add_column(col, justify="right" if col != "orientation" else "left")
    for name, m in result.metrics["orientations"].items():
        table.add_row(name, str(m.get("n")), str(m.get("n_calls")), fmt(m.get("parsed_share")),
                      fmt(m.get("accuracy")) + ci(m, "accuracy"), *(fmt(m.get(k)) for k, _ in keys),
                      fmt(m.get("auc")) + ci(m, "auc"))
    console.print(table)
    console.print(f"calls {result.n_calls} (sent {result.n_sent}, from cache {result.n_cached}), "
                  f"unparsed {result.n_unparsed}, failed {result.n_failed}, {result.elapsed_s:.1f} s")
    combined = result.metrics["orientations"].get("combined") or {}
    if combined.get("n_abstained"):
        console.print(f"abstained: {combined['n_abstained']} unit(s) without a class vote get no prediction "
                      f"(coverage {fmt(combined.get('coverage'))})")
    if result.usage:
        console.print(usage_line(result.usage))
    if result.metrics.get("n_truncated"):
        console.print(f"note: {result.metrics['n_truncated']} answer(s) were cut at --max-new-tokens")
