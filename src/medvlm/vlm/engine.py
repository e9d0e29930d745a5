"""The evaluation engine: slices -> requests -> (cache | backend) -> answers -> votes -> metrics.

Two layers:

- :func:`ask_images` -- ask a backend about images, ``repeats`` times each, through the response cache.
  Cached answers are reused, every new answer (or failure) is committed as it arrives. The consistency
  command reuses it (same image, N repeats, explicit sampling settings in :class:`Decoding`).
- :func:`evaluate_vlm` -- the whole ``medvlm eval-vlm`` run over a cohort, writing ``slices.csv``,
  ``patients.csv``, ``predictions.csv`` (+ ``predictions_<orientation>.csv``), ``metrics.json``,
  ``failures.csv`` and ``run.json`` into the run folder.

Labels: LGG 0, HGG 1; answers 0 LGG, 1 HGG, 2 no glioma, empty = unparsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from medvlm.errors import ConfigError
from medvlm.registry import check_choice
from medvlm.vlm.backends import BACKENDS, Backend, make_backend
from medvlm.vlm.cache import ResponseCache
from medvlm.vlm.options import BackendOptions
from medvlm.vlm.prompts import Prompt, load_prompt
from medvlm.vlm.types import Decoding, VLMRequest, VLMResponse, cache_key

ORIENTATIONS = ("axial", "coronal", "sagittal")
SLICE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "choice", "p_lgg", "p_hgg", "p_ng",
                 "raw", "mass"]
FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "error"]
PREDICTION_COLUMNS = ["patient_id", "cohort", "label", "pred", "score"]
#: score given, for AUC only, to a patient without one (no LGG/HGG vote, no probabilities)
NEUTRAL_SCORE = 0.5


# ------------------------------------------------------------------------------------------- ask_images
@dataclass
class Answer:
    """One answered (or failed) call: ``meta`` as given, ``repeat`` index and the response."""

    meta: Any
    repeat: int
    response: VLMResponse


@dataclass
class AskResult:
    """Answers of :func:`ask_images` (in completion order) and counts: ``n_cached`` answers reused,
    ``n_sent`` requests given to the backend, ``n_failed`` of those that failed after retries."""

    answers: list[Answer] = field(default_factory=list)
    n_cached: int = 0
    n_sent: int = 0
    n_failed: int = 0

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.response.failed]


def _progress(enabled: bool, total: int | None, description: str):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text("-/s" if speed is None else f"{speed:.2f}/s")

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
    task = progress.add_task(description, total=total, info="")
    return progress, task


def ask_images(backend: Backend, images: Iterable[tuple[Any, bytes]], *, prompt: Prompt | str,
               decoding: Decoding, repeats: int = 1, cache: ResponseCache | None = None,
               total: int | None = None, progress: bool = False, description: str = "asking",
               on_answer: Callable[[Answer], None] | None = None) -> AskResult:
    """Ask ``backend`` about each ``(meta, png_bytes)`` of ``images`` ``repeats`` times.

    Each request's cache key covers backend, model, adapter, prompt text, image bytes, ``decoding``
    (sampling settings included) and the repeat index. Cached answers are not sent again; failures are
    recorded in the cache as failures (retried next time) and returned with ``response.error`` set.
    ``images`` is consumed lazily (slices are rendered as the backend asks for work); ``total`` (calls)
    sizes the progress bar. Raises :class:`~medvlm.errors.BackendError` when the backend cannot go on;
    answers received so far stay in the cache.
    """
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1; got {repeats}")
    backend.check(decoding)
    prompt_text = prompt.text if isinstance(prompt, Prompt) else str(prompt)
    model_id, adapter_id = backend.model_identity(), backend.adapter_identity()
    result = AskResult()
    bar, task = _progress(progress, total, description)

    def record(answer: Answer) -> None:
        result.answers.append(answer)
        bar.update(task, advance=1, info=f"sent {result.n_sent}, cached {result.n_cached}, "
                                          f"failed {result.n_failed}")
        if on_answer is not None:
            on_answer(answer)

    def requests() -> Iterable[VLMRequest]:
        for meta, png in images:
            for repeat in range(repeats):
                key = cache_key(backend=backend.name, model=model_id, adapter=adapter_id, prompt=prompt_text,
                                image=png, decoding=decoding, repeat=repeat)
                hit = cache.get(key) if cache is not None else None
                if hit is not None:
                    result.n_cached += 1
                    record(Answer(meta, repeat, hit))
                    continue
                result.n_sent += 1
                yield VLMRequest(key=key, image=png, prompt=prompt_text, repeat=repeat, meta=(meta,))

    with bar:
        for request, response in backend.answer(requests(), decoding):
            if cache is not None:
                cache.put(request.key, response)
            if response.failed:
                result.n_failed += 1
            record(Answer(request.meta[0], request.repeat, response))
    return result


# ------------------------------------------------------------------------------------------- evaluate
class VLMEvalConfig(BackendOptions):
    """Resolved settings of one ``eval-vlm`` run (recorded in ``run.json``; no secrets).

    The backend, model and request fields come from :class:`~medvlm.vlm.options.BackendOptions`.
    ``temperature``/``top_p`` None: the model's / server's own default.
    """

    model_config = ConfigDict(extra="forbid")

    orientations: list[str] = Field(default_factory=lambda: list(ORIENTATIONS))
    prompt: str = "seed"
    cohort: str = "test"
    fold: int = Field(0, ge=0)
    slices: str = "tumour"
    repeats: int = Field(1, ge=1)
    reducer: str | None = None  # default: majority (generate) / mean_prob (logprobs)
    tie_break: Literal["hgg", "lgg"] = "hgg"
    temperature: float | None = Field(0.0, ge=0)
    top_p: float | None = Field(1.0, gt=0, le=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    n_boot: int = Field(1000, ge=0)
    boot_seed: int = 0

    @field_validator("orientations")
    @classmethod
    def _orientations(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one orientation")
        for o in value:
            check_choice("orientations", o, ORIENTATIONS)
        return list(dict.fromkeys(value))

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

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failed else 0


def validate_config(config: VLMEvalConfig) -> tuple[Prompt, Decoding, str]:
    """Check options before any work (ConfigError naming the option)."""
    from medvlm.aggregate import REDUCERS
    from medvlm.data.slices import parse_modalities, parse_selection

    check_choice("backend", config.backend, BACKENDS.names())
    parse_selection(config.slices)
    parse_modalities(config.modalities)
    reducer = config.resolved_reducer()
    REDUCERS.get(reducer)
    if reducer == "mean_prob" and config.scoring != "logprobs":
        raise ConfigError("--reducer mean_prob needs class probabilities: use --scoring logprobs")
    return load_prompt(config.prompt), config.decoding(), reducer


def _slice_frame(answers: list[Answer], order: dict[str, int], orientations: list[str]):
    import pandas as pd

    rows, failures = [], []
    for a in answers:
        pid, orientation, index = a.meta
        r = a.response
        if r.failed:
            failures.append({"patient_id": pid, "orientation": orientation, "slice_index": index,
                             "repeat": a.repeat, "error": r.error})
            continue
        p = r.probs or (None, None, None)
        rows.append({"patient_id": pid, "orientation": orientation, "slice_index": index, "repeat": a.repeat,
                     "choice": r.choice, "p_lgg": p[0], "p_hgg": p[1], "p_ng": p[2], "raw": r.raw or "",
                     "mass": r.mass})
    o_rank = {o: i for i, o in enumerate(orientations)}

    def frame(records, columns):
        df = pd.DataFrame(records, columns=columns)
        if len(df):
            df = df.sort_values(["patient_id", "orientation", "slice_index", "repeat"],
                                key=lambda s: s.map(order) if s.name == "patient_id"
                                else s.map(o_rank) if s.name == "orientation" else s, kind="stable")
        df = df.reset_index(drop=True)
        if "choice" in df:
            df["choice"] = df["choice"].astype("Int64")
        for c in ("p_lgg", "p_hgg", "p_ng", "mass"):
            if c in df:
                df[c] = df[c].astype("float64")
        return df

    return frame(rows, SLICE_COLUMNS), frame(failures, FAILURE_COLUMNS)


def csv_text(frame) -> str:
    """``frame.to_csv(index=False)`` with carriage returns in text cells written as newlines.

    pandas (Python's csv writer, ``lineterminator="\\n"``) quotes a cell holding ``"\\n"`` but not
    one holding a lone ``"\\r"``, which every CSV reader then takes for a line break: a model answer
    with a carriage return became two rows. Line breaks are normalised to ``"\\n"`` (always quoted),
    so each call stays exactly one CSV record.

    >>> import pandas as pd
    >>> csv_text(pd.DataFrame({"raw": ["a\\rb", "c\\r\\nd"], "n": [1, 2]}))
    'raw,n\\n"a\\nb",1\\n"c\\nd",2\\n'
    """
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object or str(frame[col].dtype).startswith(("str", "string")):
            frame[col] = [v.replace("\r\n", "\n").replace("\r", "\n") if isinstance(v, str) else v
                          for v in frame[col]]
    return frame.to_csv(index=False)


def _metrics(patients, name: str, n_boot: int, seed: int) -> dict[str, Any]:
    import warnings

    import numpy as np

    from medvlm.metrics import metrics_with_ci

    sub = patients[patients["orientation"] == name]
    labels = sub["label"].astype(int).to_numpy()
    preds = sub["pred"].astype(int).to_numpy()
    scores = sub["score"].astype("float64").to_numpy()
    no_score = int(np.isnan(scores).sum())
    scores = np.where(np.isnan(scores), NEUTRAL_SCORE, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metrics_with_ci(labels, preds, scores, n_boot=n_boot, seed=seed)
    calls = int(sub[["n_lgg", "n_hgg", "n_ng", "n_unparsed"]].to_numpy().sum())
    out.update({"n_calls": calls, "n_unparsed": int(sub["n_unparsed"].sum()),
                "n_failed": int(sub["n_failed"].sum()),
                "parsed_share": (calls - int(sub["n_unparsed"].sum())) / calls if calls else None,
                "n_no_score": no_score})
    return out


def evaluate_vlm(work: str | Path, out: str | Path, config: VLMEvalConfig, *,
                 backend: Backend | None = None, console: Any = None) -> EvalResult:
    """Run ``eval-vlm``: every selected slice of every patient of ``config.cohort``, through the cache.

    Writes into ``out``: ``slices.csv`` (one row per answered call, so its record count is
    ``metrics.json``'s ``n_calls``; ``raw`` verbatim except carriage returns, written as newlines so that
    an answer stays one CSV record -- count records with a CSV reader, not lines with ``wc -l``;
    ``choice`` empty when unparsed;
    ``mass`` = probability mass of the three answers under log-prob scoring), ``failures.csv`` (calls that
    failed after retries), ``patients.csv`` (per patient and orientation plus ``combined``; ``n_failed``
    appended), ``predictions.csv`` (the combined prediction per patient),
    ``predictions_<orientation>.csv``, ``metrics.json`` and ``run.json``. Returns an :class:`EvalResult`
    whose ``exit_code`` is 1 when some requests failed (they are retried by the next run).
    """
    import pandas as pd

    from medvlm._io import write_json_atomic, write_text_atomic
    from medvlm.aggregate import COMBINED, patient_rows
    from medvlm.data.cohorts import load_cohort, read_manifest
    from medvlm.data.slices import count_slices, parse_modalities, patient_slices
    from medvlm.runinfo import write_run_info

    start = time.monotonic()
    work, out = Path(work), Path(out)
    prompt, decoding, reducer = validate_config(config)
    modalities = parse_modalities(config.modalities)
    cohort = load_cohort(work, config.cohort, fold=config.fold)
    manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    labels = dict(zip(cohort.patient_ids, cohort.labels, strict=True))
    order = {pid: i for i, pid in enumerate(cohort.patient_ids)}
    out.mkdir(parents=True, exist_ok=True)
    run_config = {**config.model_dump(mode="json"), "reducer": reducer, "prompt_name": prompt.name,
                  "prompt_sha": prompt.sha, "prompt_text": prompt.text, "work": str(work.resolve()),
                  "n_patients": len(cohort)}
    write_run_info(out, kind="vlm", config=run_config)

    counts = [count_slices(manifest.loc[pid], o, selection=config.slices)
              for pid in cohort.patient_ids for o in config.orientations]
    total = None if any(c is None for c in counts) else sum(counts) * config.repeats  # type: ignore[misc]

    def images():
        for pid in cohort.patient_ids:
            row = manifest.loc[pid]
            for orientation in config.orientations:
                for s in patient_slices(row, orientation, selection=config.slices, modalities=modalities):
                    yield (pid, orientation, s.slice_index), s.png

    own_backend = backend is None
    backend = backend or make_backend(config.backend_config())
    cache = ResponseCache(Path(config.cache) if config.cache else out / "cache.sqlite")
    try:
        asked = ask_images(backend, images(), prompt=prompt, decoding=decoding, repeats=config.repeats,
                           cache=cache, total=total, progress=config.progress, description="eval-vlm")
    finally:
        cache.close()
        if own_backend:
            backend.close()

    slices, failures = _slice_frame(asked.answers, order, list(config.orientations))
    tie = 1 if config.tie_break == "hgg" else 0
    patients = patient_rows(slices, labels, reducer=reducer, tie_break=tie, orientations=config.orientations)
    fail_counts = failures.groupby(["patient_id", "orientation"]).size().to_dict() if len(failures) else {}
    patients["n_failed"] = [
        sum(v for (p, _o), v in fail_counts.items() if p == pid) if o == COMBINED
        else fail_counts.get((pid, o), 0)
        for pid, o in zip(patients["patient_id"], patients["orientation"], strict=True)]

    write_text_atomic(out / "slices.csv", csv_text(slices))
    write_text_atomic(out / "failures.csv", csv_text(failures))
    write_text_atomic(out / "patients.csv", patients.to_csv(index=False))
    for name in [*config.orientations, COMBINED]:
        sub = patients[patients["orientation"] == name]
        preds = pd.DataFrame({"patient_id": sub["patient_id"], "cohort": config.cohort, "label": sub["label"],
                              "pred": sub["pred"], "score": sub["score"]}, columns=PREDICTION_COLUMNS)
        target = "predictions.csv" if name == COMBINED else f"predictions_{name}.csv"
        write_text_atomic(out / target, preds.to_csv(index=False))

    n_unparsed = int(slices["choice"].isna().sum())
    metrics = {
        "orientations": {name: _metrics(patients, name, config.n_boot, config.boot_seed)
                         for name in [*config.orientations, COMBINED]},
        "n_calls": len(slices), "n_unparsed": n_unparsed, "n_failed": len(failures),
        "n_patients": len(cohort), "cohort": config.cohort, "reducer": reducer, "tie_break": config.tie_break,
        "scoring": config.scoring, "backend": config.backend, "model": config.model,
        "adapter": config.adapter,
        "prompt_sha": prompt.sha, "n_sent": asked.n_sent, "n_cached": asked.n_cached,
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_run_info(out, kind="vlm", config=run_config)
    result = EvalResult(out=out, metrics=metrics, n_calls=len(slices), n_unparsed=n_unparsed,
                        n_failed=len(failures), n_sent=asked.n_sent, n_cached=asked.n_cached,
                        elapsed_s=time.monotonic() - start)
    if console is not None:
        print_summary(result, console)
    return result


def print_summary(result: EvalResult, console: Any) -> None:
    """A rich table: per orientation n, parsed share, accuracy, recall, specificity, F1, AUC [95 % CI]."""
    from rich.table import Table

    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    def ci(m: dict, key: str) -> str:
        c = m.get(f"{key}_ci")
        return "" if not c else f" [{c[0]:.2f}, {c[1]:.2f}]"

    table = Table(title=f"eval-vlm: {result.out}")
    for col in ("orientation", "patients", "calls", "parsed", "accuracy", "recall", "specificity", "F1",
                "AUC"):
        table.add_column(col, justify="right" if col != "orientation" else "left")
    for name, m in result.metrics["orientations"].items():
        table.add_row(name, str(m.get("n")), str(m.get("n_calls")), fmt(m.get("parsed_share")),
                      fmt(m.get("accuracy")) + ci(m, "accuracy"), fmt(m.get("recall")),
                      fmt(m.get("specificity")), fmt(m.get("f1")), fmt(m.get("auc")) + ci(m, "auc"))
    console.print(table)
    console.print(f"calls {result.n_calls} (sent {result.n_sent}, from cache {result.n_cached}), "
                  f"unparsed {result.n_unparsed}, failed {result.n_failed}, {result.elapsed_s:.1f} s")
