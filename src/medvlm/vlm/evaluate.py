"""``medvlm eval-vlm``: every image of every prediction unit of a cohort -> answers -> votes -> metrics.

:func:`evaluate_vlm` writes ``slices.csv``, ``patients.csv`` (patient unit) or ``units.csv`` (slice unit),
``predictions.csv`` (+ ``predictions_<orientation>.csv``), ``metrics.json``, ``failures.csv`` and
``run.json`` into the run folder. Labels, answer codes, column names and the parser come from the work
folder's task (:mod:`medvlm.tasks`); answers are asked through :func:`medvlm.vlm.engine.ask_images`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, field_validator

from medvlm.errors import ConfigError
from medvlm.registry import check_choice
from medvlm.vlm.backends import BACKENDS, Backend, make_backend
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.engine import Answer, ask_images
from medvlm.vlm.options import BackendOptions
from medvlm.vlm.prompts import Prompt, load_prompt
from medvlm.vlm.records import call_frame, csv_text
from medvlm.vlm.saved_images import ImageSaver
from medvlm.vlm.types import Decoding
from medvlm.vlm.usage import run_usage

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "error"]
PREDICTION_COLUMNS = ["patient_id", "cohort", "label", "pred", "score"]


class VLMEvalConfig(BackendOptions):
    """Resolved settings of one ``eval-vlm`` run (recorded in ``run.json``; no secrets).

    The backend, model and request fields come from :class:`~medvlm.vlm.options.BackendOptions`.
    ``temperature``/``top_p`` None: the model's / server's own default. ``shots``: K labelled examples of
    the training cohort of ``fold`` before each question (:mod:`medvlm.vlm.fewshot`; 0 = zero-shot).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf: one line, exit 2

    orientations: list[str] | None = None  # default: the task's
    prompt: str | None = None  # default: the task's first prompt
    cohort: str = "test"
    fold: int = Field(0, ge=0)
    slices: str | None = None  # default: the task's
    repeats: int = Field(1, ge=1)
    reducer: str | None = None  # default: majority (generate) / mean_prob (logprobs)
    tie_break: str | None = None  # a class name; default: the positive class
    temperature: float | None = Field(0.0, ge=0)
    top_p: float | None = Field(1.0, gt=0, le=1)
    n_boot: int = Field(1000, ge=0)
    boot_seed: int = 0
    image: str = "real"  # real | none | blank | noise | tumour-masked (medvlm.data.controls)
    artifact: str | None = None  # KIND:SEVERITY, e.g. motion:0.5
    shots: int = Field(0, ge=0)  # few-shot examples per question, from the training cohort of fold
    save_images: int = Field(0, ge=0)  # N inputs, byte for byte, to RUN/images/ (medvlm.vlm.saved_images)

    @field_validator("orientations")
    @classmethod
    def _orientations(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one orientation")
        return None if value is None else list(dict.fromkeys(value))

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        from medvlm.data.controls import check_image

        try:
            return check_image(value)
        except ConfigError as exc:  # the message as is (no "Value error, " in front)
            raise PydanticCustomError("image", str(exc).replace("The '--image' parameter", "it")) from None

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, value: str | None) -> str | None:
        from pydantic_core import PydanticCustomError

        from medvlm.data.controls import parse_artifact

        try:
            parsed = parse_artifact(value)
        except ConfigError as exc:
            message = str(exc).replace(f"--artifact {value}: ", "").replace("The '--artifact' parameter",
                                                                           "the kind")
            if "Got " not in message:
                message += f"; got {value!r}"
            raise PydanticCustomError("artifact", message) from None
        return parsed.spec if parsed else None

    def for_task(self, task: Task) -> VLMEvalConfig:
        """A copy with every task default filled in and checked against the task (ConfigError)."""
        orientations, modalities = task.views(self.orientations, self.modalities, slices=self.slices)
        if task.unit != "patient" and self.slices not in (None, task.default_slices):
            raise ConfigError(f"--slices {self.slices}: {task.name} asks about its labelled {task.unit}s "
                              "(WORK/units.csv); --slices selects slices for patient-level tasks")
        return self.model_copy(update={
            "orientations": orientations, "modalities": modalities,
            "prompt": task.check_prompt(self.prompt or task.default_prompt),
            "slices": self.slices or task.default_slices, "tie_break": task.tie_break_name(self.tie_break)})

    def resolved_reducer(self) -> str:
        return self.reducer or ("mean_prob" if self.scoring == "logprobs" else "majority")

    def decoding(self) -> Decoding:
        return Decoding(scoring=self.scoring, max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature,
                        top_p=self.top_p, seed=self.seed, structured=self.structured,
                        extra_body=self.extra_body)


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


def _check_adapter_task(adapter: str | None, task: Task) -> None:
    """Refuse an adapter that ``medvlm finetune`` trained for another task (its finetune_config.json)."""
    import json

    if not adapter:
        return
    record = Path(adapter) / "finetune_config.json"
    try:
        trained = json.loads(record.read_text(encoding="utf-8")).get("task") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        trained = None
    if trained and trained != task.name:
        raise ConfigError(f"--adapter {adapter}: fine-tuned for task {trained!r}, but the work folder is "
                          f"{task.name!r}; fine-tune on this work folder first")


def validate_config(config: VLMEvalConfig, task: Task | str | None = None
                    ) -> tuple[VLMEvalConfig, Prompt, Decoding, str]:
    """Check options before any work (ConfigError naming the option); returns the config with the
    task's defaults filled in, the prompt, the decoding settings and the reducer."""
    from medvlm.aggregate import REDUCERS
    from medvlm.data.controls import check_controls
    from medvlm.data.slices import parse_modalities, parse_selection
    from medvlm.tasks import get_task

    check_choice("backend", config.backend, BACKENDS.names())
    task = get_task(task)
    config = config.for_task(task)
    _check_adapter_task(config.adapter, task)
    if task.unit == "image":  # one whole image per unit: no slices, modalities or MRI artifacts
        if config.artifact:
            raise ConfigError(f"--artifact {config.artifact}: MRI artifacts apply to volumes; {task.name} "
                              "asks about 2D images")
        if config.image == "tumour-masked":
            raise ConfigError(f"--image tumour-masked needs a tumour mask; {task.name} asks about 2D images "
                              "(real, none, blank or noise)")
    else:
        parse_selection(config.slices)  # type: ignore[arg-type]
        parse_modalities(config.modalities)
    image, artifact = check_controls(config.image, config.artifact)
    config = config.model_copy(update={"image": image, "artifact": artifact.spec if artifact else None})
    reducer = config.resolved_reducer()
    REDUCERS.get(reducer)
    if reducer == "mean_prob" and config.scoring != "logprobs":
        raise ConfigError("--reducer mean_prob needs class probabilities: use --scoring logprobs")
    return config, load_prompt(config.prompt), config.decoding(), reducer  # type: ignore[arg-type]


def _call_frames(answers: list[Answer], order: dict[str, int], orientations: list[str], task: Task):
    """(per-call rows, failures), sorted by patient (cohort order), orientation, slice, repeat."""
    import pandas as pd

    if task.unit == "image":
        return _image_call_frames(answers, order, task)
    rows, failures = [], []
    for a in answers:
        pid, orientation, index = a.meta
        if a.response.failed:
            failures.append({"patient_id": pid, "orientation": orientation, "slice_index": index,
                             "repeat": a.repeat, "error": a.response.error})
        else:
            rows.append({"patient_id": pid, "orientation": orientation, "slice_index": index,
                         "repeat": a.repeat, "response": a.response})
    o_rank = {o: i for i, o in enumerate(orientations)}

    def ordered(df):
        if len(df):
            df = df.sort_values(["patient_id", "orientation", "slice_index", "repeat"],
                                key=lambda s: s.map(order) if s.name == "patient_id"
                                else s.map(o_rank) if s.name == "orientation" else s, kind="stable")
        return df.reset_index(drop=True)

    return ordered(call_frame(rows, task)), ordered(pd.DataFrame(failures, columns=FAILURE_COLUMNS))


def _image_call_frames(answers: list[Answer], order: dict[str, int], task: Task):
    """:func:`_call_frames` of an image task: keyed by ``patient_id, image_id``."""
    import pandas as pd

    keys = ["patient_id", "image_id"]
    rows, failures = [], []
    for a in answers:
        pid, image_id = a.meta
        if a.response.failed:
            failures.append({"patient_id": pid, "image_id": image_id, "repeat": a.repeat,
                             "error": a.response.error})
        else:
            rows.append({"patient_id": pid, "image_id": image_id, "repeat": a.repeat, "response": a.response})

    def ordered(df):
        if len(df):
            df = df.sort_values([*keys, "repeat"], kind="stable",
                                key=lambda s: s.map(order) if s.name == "patient_id" else s)
        return df.reset_index(drop=True)

    return (ordered(call_frame(rows, task, key=keys)),
            ordered(pd.DataFrame(failures, columns=[*keys, "repeat", "error"])))


def _metrics(units, calls, n_failed: int, *, n_boot: int, seed: int, task: Task | None = None
             ) -> dict[str, Any]:
    """Metrics of one set of predictions (one orientation, or combined), through the one shared path
    (:func:`medvlm.predictions.predictions_metrics`; bootstrap clustered by patient for slice units),
    plus the call counts behind them."""
    import warnings

    from medvlm.predictions import predictions_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = predictions_metrics(units, n_boot=n_boot, seed=seed, task=task)
    n_calls = len(calls)
    n_unparsed = int(calls["choice"].isna().sum())
    out.update({"n_calls": n_calls, "n_unparsed": n_unparsed, "n_failed": n_failed,
                "parsed_share": (n_calls - n_unparsed) / n_calls if n_calls else None,
                "n_no_score": int(units["score"].isna().sum()),
                "n_truncated": int((calls["finish_reason"] == "length").sum())})
    return out


def _reduce(calls, failures, units, *, task: Task, reducer: str, tie_break: int, orientations: list[str]):
    """Per-unit rows for each orientation and ``combined``: ``{name: (unit rows, their calls,
    n_failed)}``, and the table written as patients.csv (patient unit) or units.csv (others)."""
    import pandas as pd

    from medvlm.aggregate import COMBINED, keyed_rows, patient_rows

    names = [*orientations, COMBINED]
    if task.unit == "patient":
        labels = dict(zip(units["patient_id"], units["label"], strict=True))
        table = patient_rows(calls, labels, task=task, reducer=reducer, tie_break=tie_break,
                             orientations=orientations)
        fail_counts = (failures.groupby(["patient_id", "orientation"]).size().to_dict()
                       if len(failures) else {})
        table["n_failed"] = [
            sum(v for (p, _o), v in fail_counts.items() if p == pid) if o == COMBINED
            else fail_counts.get((pid, o), 0)
            for pid, o in zip(table["patient_id"], table["orientation"], strict=True)]
        parts = {name: table[table["orientation"] == name] for name in names}
    else:
        keys = ["patient_id", *task.unit_keys]
        table = keyed_rows(calls, units, task=task, keys=keys, reducer=reducer, tie_break=tie_break)
        fails = failures.groupby(keys).size() if len(failures) else pd.Series(dtype=int)
        table["n_failed"] = [int(fails.get(tuple(k), 0)) for k in table[keys].itertuples(index=False)]
        parts = {name: table if name == COMBINED else table[table["orientation"] == name] for name in names}
    out = {}
    for name, part in parts.items():
        sub_calls = calls if name == COMBINED else calls[calls["orientation"] == name]
        out[name] = (part, sub_calls, int(part["n_failed"].sum()))
    return out, table


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
    calls, failures = _call_frames(asked.answers, order, orientations, task)
    if sampler is not None:
        calls = sampler.add_column(calls)
    parts, table = _reduce(calls, failures, units, task=task, reducer=reducer,
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
        metrics_by_name[name] = _metrics(preds, sub_calls, n_failed, n_boot=config.n_boot,
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
