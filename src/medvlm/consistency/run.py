"""A consistency run: render the images (:func:`select_images`, :func:`central_tumour_slice`), ask each
``repeats`` times per prompt and temperature (:func:`run_consistency`), write ``consistency.csv``,
``failures.csv`` and ``summary.json`` (:func:`build_summary`) and print them (:func:`print_summary`).

Requests go through :func:`medvlm.vlm.engine.ask_images` and its response cache, keyed by the repeat
index: rerunning sends nothing, raising ``--repeats`` sends only the new repeats.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.consistency.config import (
    ConsistencyConfig,
    Sampling,
    decoding_for,
    format_temperature,
    resolve_sampling,
    shot_sampler,
)
from medvlm.consistency.stats import answer_categories, prompt_robustness, summarize_answers, summarize_images
from medvlm.errors import ConfigError, DataError
from medvlm.vlm.records import CALL_KEY, call_frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from medvlm.tasks.base import Task
    from medvlm.vlm.backends import Backend

#: ``consistency.csv`` after the per-call columns (:func:`csv_columns`): the label, the prompt and the
#: sampling settings of each call (``temperature``/``top_p`` empty = the server's own default; ``seed`` =
#: seed + repeat), and ``mass`` (probability mass of the answer codes under log-prob scoring).
EXTRA_COLUMNS = ["label", "prompt", "temperature", "top_p", "seed"]
FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "prompt", "temperature", "error"]


def csv_columns(task: Task) -> list[str]:
    """``consistency.csv``'s columns: the contract's (key, repeat, choice, one probability column per
    answer code of the task, raw), then :data:`EXTRA_COLUMNS`, ``mass`` and ``finish_reason``."""
    return [*CALL_KEY, "repeat", "choice", *task.prob_columns, "raw", *EXTRA_COLUMNS, "mass", "finish_reason"]


# =============================================================================================== images
@dataclass(frozen=True)
class ConsistencyImage:
    """One image asked N times: patient, orientation, canonical slice index, truth label, PNG bytes."""

    patient_id: str
    orientation: str
    slice_index: int
    label: int | None
    png: bytes = field(repr=False)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.patient_id, self.orientation, self.slice_index


def _row_label(row: Any) -> int | None:
    try:
        value = row["label"]
    except (KeyError, IndexError):
        return None
    try:
        return None if value is None or str(value) in ("", "<NA>", "nan") else int(value)
    except (TypeError, ValueError):
        return None


def select_images(work: str | Path, config: ConsistencyConfig, task: Task | None = None
                  ) -> list[ConsistencyImage]:
    """Render the images of the run: for each patient (``config.patients`` or the cohort), slice
    ``config.slice_index`` or the central tumour slice along ``config.orientation`` (a slice-level task:
    the central labelled slice of each class, so that both answers are asked for), exactly as
    ``eval-vlm`` renders it (:func:`medvlm.data.slices.patient_slices`). The truth label is the
    patient's for a patient-level task, the slice's (``WORK/units.csv``; None when the slice is not one
    of the task's units) for a slice-level one. ``config`` has the task's defaults filled in. An image
    task: :func:`medvlm.data.images.consistency_images` (``--slice`` numbers a patient's images).

    Raises :class:`DataError` for an unknown or skipped patient, a slice out of range or a patient
    without a tumour extent (one line naming the option and the patient).
    """
    from medvlm.data.cohorts import Cohort, cohort_units, load_cohort, read_manifest
    from medvlm.data.slices import AXIS, load_canonical, parse_modalities, patient_slices
    from medvlm.registry import did_you_mean
    from medvlm.tasks import get_task
    from medvlm.vlm.options import first_patients

    task = get_task(task)
    config = config.for_task(task)
    if task.unit == "image":
        from medvlm.data.images import consistency_images

        return [ConsistencyImage(*picked) for picked in consistency_images(work, config)]
    assert config.orientation is not None
    modalities = parse_modalities(config.modalities)
    work = Path(work)
    manifest = read_manifest(work)
    rows = {str(r["patient_id"]): r for r in manifest.to_dict("records")}
    if config.patients:
        ids = list(dict.fromkeys(config.patients))
        for pid in ids:
            if pid not in rows:
                raise DataError(f"--patient {pid!r}: no such patient in {work / 'manifest.csv'}."
                                + did_you_mean(pid, list(rows)))
            if rows[pid].get("status") != "ok":
                reason = rows[pid].get("reason") or "no reason given"
                raise DataError(f"--patient {pid}: skipped by prepare ({reason}); pick another patient")
    else:
        ids = load_cohort(work, config.cohort, fold=config.fold).patient_ids
    ids = first_patients(ids, config.limit)  # --limit N: the first N (None: all)
    axis = AXIS[config.orientation]
    letter = "xyz"[axis]
    unit_labels: dict[tuple[str, int], int] = {}
    if task.unit == "slice":
        units = cohort_units(work, Cohort("selected", list(ids), [0] * len(ids)), unit=task.unit,
                             orientations=[config.orientation])
        unit_labels = {(p, int(i)): int(lab) for p, i, lab in
                       zip(units["patient_id"], units["slice_index"], units["label"], strict=True)}
    images = []
    for pid in ids:
        row = dict(rows[pid])
        path = row.get(modalities[0])
        if not path or not Path(str(path)).is_file():
            raise DataError(f"patient {pid}: {modalities[0]} file {path!r} does not exist")
        size = load_canonical(path, pid)[0].shape[axis]
        if config.slice_index is not None:
            index = int(config.slice_index)
            if not 0 <= index < size:
                raise DataError(f"--slice {index}: out of range for patient {pid} along {config.orientation} "
                                f"(valid 0..{size - 1})")
            indices = [index]
        elif task.unit == "slice":  # the central labelled slice of each class: both answers are asked for
            indices = []
            for label in range(task.n_classes):
                own = sorted(i for (p, i), lab in unit_labels.items() if p == pid and lab == label)
                indices += [own[len(own) // 2]] if own else []
        else:
            indices = [central_tumour_slice(row, config.orientation, size)]
        for index in indices:
            # render exactly one slice with the engine's renderer: a one-slice "tumour" range at ``index``
            one = {**row, f"tumour_{letter}_min": index, f"tumour_{letter}_max": index}
            [image] = patient_slices(one, config.orientation, selection="tumour", modalities=modalities)
            label = _row_label(row) if task.unit == "patient" else unit_labels.get((pid, index))
            images.append(ConsistencyImage(pid, config.orientation, index, label, image.png))
    return images


def central_tumour_slice(row: Mapping[str, Any], orientation: str, size: int) -> int:
    """The central slice of the tumour's extent along ``orientation`` (the manifest's inclusive
    ``tumour_*_min..max``, clipped to the volume; ``(lo + hi) // 2``), the slice eval-vlm's
    ``--slices central:1`` picks.

    >>> central_tumour_slice({"patient_id": "P", "tumour_z_min": 3, "tumour_z_max": 6}, "axial", 10)
    4
    """
    from medvlm.data.slices import AXIS, slice_indices

    try:
        [index] = slice_indices(row, orientation, "central:1", size)
    except DataError as exc:
        letter = "xyz"[AXIS[orientation]]
        pid = row.get("patient_id", "?")
        raise DataError(f"patient {pid}: no usable tumour extent along {letter} in the manifest ({exc}); "
                        "give --slice N") from None
    return int(index)


# ================================================================================================== run
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


def _group_summary(frame: pd.DataFrame, keys: list[str], answers: dict[str, Any]
                   ) -> tuple[dict[str, Any], list]:
    """Summary over the images of ``frame`` (image = one combination of ``keys``), and the per-image
    groups in frame order."""
    import pandas as pd

    groups = []
    for _, g in frame.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("repeat", kind="stable")
        choices = [None if pd.isna(c) else int(c) for c in g["choice"]]
        groups.append((g.iloc[0], choices))
    summary = summarize_images([(c, r["label"]) for r, c in groups], **answers)
    return summary, groups


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


_IMAGE_KEYS = ["_prompt", "_sampling", "_image"]


def sampling_effective(frame: pd.DataFrame, samplings: list[Sampling], repeats: int) -> bool | None:
    """Whether sampling happened: None when none was asked for (no temperature above 0, or one
    repeat); else False when every image of every sampled series got the byte-identical answer in every
    repeat, True otherwise."""
    sampled = [i for i, s in enumerate(samplings) if s.temperature is not None and s.temperature > 0]
    if repeats < 2 or not sampled:
        return None
    part = frame[frame["_sampling"].isin(sampled)]
    if part.empty:
        return None
    distinct = part.groupby(_IMAGE_KEYS, sort=False)["raw"].nunique()
    return bool((distinct > 1).any())


def build_summary(frame: pd.DataFrame, *, prompts: list[str], samplings: list[Sampling], repeats: int,
                  task: Task, n_failed: int = 0, tie_break: str | None = None) -> dict[str, Any]:
    """``summary.json`` from the answer rows (``consistency.csv`` plus the private ``_prompt``,
    ``_sampling``, ``_image`` index columns). Categories: the task's answer codes and "unparsed"; a tie
    goes to the ``tie_break`` class (default: the positive one). See :func:`run_consistency` for the
    keys."""
    tie_break = task.tie_break_name(tie_break)
    answers = {"categories": answer_categories(task.codes), "first": str(task.tie_break_label(tie_break))}
    overall, groups = _group_summary(frame, _IMAGE_KEYS, answers)
    summary: dict[str, Any] = {**overall, "repeats": repeats, "n_failed": n_failed, "tie_break": tie_break,
                               "prompts": prompts, "sampling": [s.model_dump(mode="json") for s in samplings]}
    per_image = []
    for row, choices in groups:
        s = summarize_answers(choices, label=row["label"], **answers)
        per_image.append({"patient_id": str(row["patient_id"]), "orientation": str(row["orientation"]),
                          "slice_index": int(row["slice_index"]), "prompt": prompts[int(row["_prompt"])],
                          "temperature": samplings[int(row["_sampling"])].temperature, **s})
    summary["per_image"] = per_image
    effective = sampling_effective(frame, samplings, repeats)
    if effective is not None:
        summary["sampling_effective"] = effective
    if len(prompts) > 1:
        summary["per_prompt"] = []
        for i, name in enumerate(prompts):
            sub, _ = _group_summary(frame[frame["_prompt"] == i], _IMAGE_KEYS, answers)
            summary["per_prompt"].append({"prompt": name, **sub})
        summary["prompt_robustness"] = prompt_robustness(per_image)
    if len(samplings) > 1:
        summary["per_temperature"] = []
        for i, s in enumerate(samplings):
            sub, _ = _group_summary(frame[frame["_sampling"] == i], _IMAGE_KEYS, answers)
            summary["per_temperature"].append({"temperature": s.temperature, "top_p": s.top_p, **sub})
    return summary


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
