"""A consistency run: ask each image ``repeats`` times per prompt and temperature (:func:`run_consistency`),
write ``consistency.csv``, ``failures.csv`` and ``summary.json`` and print them (:func:`print_summary`).
The images are :mod:`medvlm.consistency.images`' (:func:`select_images`), the summary
:mod:`medvlm.consistency.summary`'s (:func:`build_summary`); both importable from here too.

Requests go through :func:`medvlm.vlm.engine.ask_images` and its response cache, keyed by the repeat
index: rerunning sends nothing, raising ``--repeats`` sends only the new repeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.consistency.config import (
    ConsistencyConfig,
    decoding_for,
    format_temperature,
    resolve_sampling,
    shot_sampler,
)
from medvlm.consistency.images import ConsistencyImage, central_tumour_slice, select_images
from medvlm.consistency.summary import build_summary, sampling_effective
from medvlm.errors import ConfigError
from medvlm.vlm.records import CALL_KEY, call_frame

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task
    from medvlm.vlm.backends import Backend

__all__ = ["EXTRA_COLUMNS", "FAILURE_COLUMNS", "ConsistencyImage", "ConsistencyResult", "build_summary",
           "central_tumour_slice", "csv_columns", "print_summary", "run_consistency", "sampling_effective",
           "select_images"]

#: ``consistency.csv`` after the per-call columns (:func:`csv_columns`): the label, the prompt and the
#: sampling settings of each call (``temperature``/``top_p`` empty = the server's own default; ``seed`` =
#: seed + repeat), and ``mass`` (probability mass of the answer codes under log-prob scoring).
EXTRA_COLUMNS = ["label", "prompt", "temperature", "top_p", "seed"]
FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "prompt", "temperature", "error"]


def csv_columns(task: Task) -> list[str]:
    """``consistency.csv``'s columns: the contract's (key, repeat, choice, one probability column per
    answer code of the task, raw), then :data:`EXTRA_COLUMNS`, ``mass`` and ``finish_reason``."""
    return [*CALL_KEY, "repeat", "choice", *task.prob_columns, "raw", *EXTRA_COLUMNS, "mass", "finish_reason"]


@dataclass
class ConsistencyResult:
    """What :func:`run_consistency` wrote and counted. ``exit_code``: 0, or 1 when some calls failed."""

    out: Path
    summary: dict[str, Any]
    n_calls: int
    n_failed: int
    n_sent: int
    n_cached: int
    notes: list[str]
    elapsed_s: float
    answer_names: dict[str, str] = field(default_factory=dict)  # code -> the task's name for it
    usage: dict[str, Any] | None = None  # run.json's usage (a backend that reports it)

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failed else 0


def run_consistency(work: str | Path, out: str | Path, config: ConsistencyConfig, *,
                    backend: Backend | None = None, console: Any = None) -> ConsistencyResult:
    """Run ``medvlm consistency``: each selected image, each prompt, each temperature, ``repeats`` times.

    Writes into ``out``:

    - ``consistency.csv`` -- one row per answered call (:func:`csv_columns`; ``choice`` empty when
      unparsed), ordered by prompt, temperature, patient, repeat;
    - ``summary.json`` -- the contract's keys over all answers (``n``, ``counts``, ``majority``,
      ``agreement``, ``entropy``), the cross-image summary of :func:`summarize_images`, ``repeats``,
      ``n_failed``, ``sampling`` (one entry per temperature), ``per_image`` (one entry per image x
      prompt x temperature, :func:`summarize_answers` plus its identity), and ``per_prompt`` /
      ``per_temperature`` (one :func:`summarize_images` entry per prompt / temperature) when the run has
      several;
    - ``failures.csv`` (calls that failed after retries; retried by the next run), ``run.json``
      (kind ``consistency``) and ``cache.sqlite`` (unless ``config.cache`` points elsewhere).
    """
    import pandas as pd

    from medvlm._io import write_json_atomic, write_text_atomic
    from medvlm.registry import check_choice
    from medvlm.runinfo import write_run_info
    from medvlm.tasks import work_task
    from medvlm.vlm.backends import BACKENDS, make_backend
    from medvlm.vlm.cache import ResponseCache
    from medvlm.vlm.engine import ask_images
    from medvlm.vlm.prompts import load_prompt
    from medvlm.vlm.records import csv_text
    from medvlm.vlm.usage import Usage, run_usage

    start = time.monotonic()
    work, out = Path(work), Path(out)
    check_choice("backend", config.backend, BACKENDS.names())
    task = work_task(work)
    config = config.for_task(task)
    prompts = [load_prompt(p) for p in dict.fromkeys(config.prompts)]
    shas = [p.sha for p in prompts]
    if len(set(shas)) != len(shas):
        dup = next(p.name for i, p in enumerate(prompts) if p.sha in shas[:i])
        raise ConfigError(f"--prompt {dup}: the same text as another --prompt; give each paraphrase once")
    samplings = resolve_sampling(config)
    decodings = [decoding_for(s, config) for s in samplings]
    images = select_images(work, config, task)
    sampler = shot_sampler(work, config, task, images)
    notes: list[str] = []
    if config.repeats > 1:
        if config.scoring == "logprobs" and config.backend == "transformers":
            notes.append("log-prob scoring with the transformers backend is one deterministic forward pass: "
                         "every repeat gives the same answer")
        elif any(s.temperature == 0 for s in samplings) and config.backend != "openai":
            notes.append("temperature 0 is greedy decoding: every repeat gives the same answer; pass "
                         "--temperature T (> 0) to sample")

    out.mkdir(parents=True, exist_ok=True)
    run_config = {
        **config.record(), "work": str(work.resolve()), "task": task.describe(),
        "prompts_resolved": [{"name": p.name, "sha": p.sha, "text": p.text} for p in prompts],
        "sampling": [s.model_dump(mode="json") for s in samplings],
        "images": [{"patient_id": im.patient_id, "orientation": im.orientation, "slice_index": im.slice_index,
                    "label": im.label, **({"shots": sampler.ids(im.key)} if sampler else {})}
                   for im in images],
    }
    write_run_info(out, kind="consistency", config=run_config)

    own_backend = backend is None
    cache = ResponseCache(Path(config.cache) if config.cache else out / "cache.sqlite")  # before the model
    rows, failures = [], []
    n_sent = n_cached = 0
    budget, used = config.budget(), Usage()
    try:
        backend = backend or make_backend(config.backend_config())
        for i_prompt, prompt in enumerate(prompts):
            for i_sampling, (sampling, decoding) in enumerate(zip(samplings, decodings, strict=True)):
                label = f"consistency {Path(prompt.name).name}, T={format_temperature(sampling.temperature)}"
                asked = ask_images(backend, ((i, im.png) for i, im in enumerate(images)), prompt=prompt,
                                   decoding=decoding, task=task.for_prompt(prompt), repeats=config.repeats,
                                   cache=cache,
                                   total=len(images) * config.repeats, progress=config.progress,
                                   description=label, budget=budget,
                                   shots=None if sampler is None else sampler.for_prompt(
                                       prompt.text, task.for_prompt(prompt), config.structured,
                                       key=lambda i: images[i].key))
                n_sent, n_cached = n_sent + asked.n_sent, n_cached + asked.n_cached
                used.merge(asked.usage)
                for a in asked.answers:
                    im, r = images[a.meta], a.response
                    ident = {"patient_id": im.patient_id, "orientation": im.orientation,
                             "slice_index": im.slice_index, "repeat": a.repeat}
                    if r.failed:
                        failures.append({**ident, "prompt": prompt.name, "temperature": sampling.temperature,
                                         "error": r.error})
                        continue
                    rows.append({**ident, "response": r, "label": im.label, "prompt": prompt.name,
                                 "temperature": sampling.temperature, "top_p": sampling.top_p,
                                 "seed": decoding.request_seed(a.repeat),
                                 "_image": a.meta, "_prompt": i_prompt, "_sampling": i_sampling})
    finally:
        cache.close()
        if own_backend and backend is not None:
            backend.close()

    columns = csv_columns(task)
    frame = call_frame(rows, task, extra=[*EXTRA_COLUMNS, "_image", "_prompt", "_sampling"])
    frame = frame[[*columns, "_image", "_prompt", "_sampling"]]
    frame = frame.sort_values(["_prompt", "_sampling", "_image", "repeat"], kind="stable")
    frame = frame.reset_index(drop=True)
    for col in ("choice", "label", "seed", "slice_index", "repeat"):
        frame[col] = frame[col].astype("Int64")
    for col in ("temperature", "top_p"):
        frame[col] = frame[col].astype("float64")
    fail_frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    if len(fail_frame):
        fail_frame = fail_frame.sort_values(["prompt", "temperature", "patient_id", "repeat"], kind="stable")
    write_text_atomic(out / "consistency.csv", csv_text(frame[columns]))
    write_text_atomic(out / "failures.csv", csv_text(fail_frame))

    summary = build_summary(frame, prompts=[p.name for p in prompts], samplings=samplings,
                            repeats=config.repeats, n_failed=len(failures), task=task,
                            tie_break=config.tie_break)
    if summary.get("sampling_effective") is False:
        notes.append("sampling was asked for (temperature > 0) but every repeat of every image gave the "
                     "byte-identical answer: the server or model did not sample (summary.json: "
                     "sampling_effective false); check its generation config, or pass --extra-body")
    write_json_atomic(out / "summary.json", summary)
    usage = run_usage(backend, used, budget)
    write_run_info(out, kind="consistency", config=run_config, usage=usage)
    result = ConsistencyResult(out=out, summary=summary, n_calls=len(frame), n_failed=len(failures),
                               n_sent=n_sent, n_cached=n_cached, notes=notes,
                               elapsed_s=time.monotonic() - start, answer_names=task.answer_names,
                               usage=usage)
    if console is not None:
        print_summary(result, console)
    return result


def print_summary(result: ConsistencyResult, console: Any) -> None:
    """A rich table per image (first 40) and the overall line."""
    from rich.table import Table

    def fmt(x: Any, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)

    s = result.summary
    names = {**result.answer_names, "unparsed": "unparsed", None: "-"}
    codes = list(result.answer_names)
    many_prompts, many_t = len(s["prompts"]) > 1, len(s["sampling"]) > 1
    table = Table(title=f"consistency: {result.out}")
    columns = ["patient", "slice", "truth", *(["prompt"] if many_prompts else []), *(["T"] if many_t else []),
               "n", *(names[k] for k in codes), "unp.", "majority", "agree", "H bits", "flips"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("patient", "prompt", "majority") else "right")
    for r in s["per_image"][:40]:
        c = r["counts"]
        cells = [r["patient_id"], f"{r['orientation'][:3]} {r['slice_index']}",
                 "-" if r["label"] is None else names.get(str(r["label"]), str(r["label"]))]
        cells += [Path(r["prompt"]).name] if many_prompts else []
        cells += [format_temperature(r["temperature"])] if many_t else []
        cells += [str(r["n"]), *(str(c[k]) for k in codes), str(c["unparsed"]),
                  names[r["majority"]] + ("*" if r["tie"] else ""), fmt(r["agreement"], 2),
                  fmt(r["entropy"], 2), fmt(r["flip_rate"], 2)]
        table.add_row(*cells)
    console.print(table)
    if len(s["per_image"]) > 40:
        console.print(f"... {len(s['per_image']) - 40} more images in {result.out / 'summary.json'}")
    if any(r["tie"] for r in s["per_image"]):
        console.print(f"* tie between the most frequent answers, broken to {s['tie_break']}")
    c = s["counts"]
    counts = ", ".join(f"{names[k]} {c[k]}" for k in [*codes, "unparsed"])
    console.print(f"{s['n']} answers over {s['n_images']} image(s): {counts}; "
                  f"majority {names[s['majority']]}, "
                  f"agreement {fmt(s['agreement'])}, "
                  f"entropy {fmt(s['entropy'])} bits, flip rate {fmt(s['flip_rate'])}, Fleiss' kappa "
                  f"{fmt(s['fleiss_kappa'])}, consensus accuracy {fmt(s['consensus_accuracy'])}, expected "
                  f"accuracy {fmt(s['expected_accuracy'])}; calls {result.n_calls} (sent {result.n_sent}, "
                  f"from cache {result.n_cached}), failed {result.n_failed}, {result.elapsed_s:.1f} s")
    for note in result.notes:
        console.print(f"note: {note}")
