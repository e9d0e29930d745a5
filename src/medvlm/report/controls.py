"""The report's "Does the model look at the image?" section: controls of a real-image VLM run.

A *control* is a VLM run that differs from a *reference* run only in what the model was shown or asked:
the image variant (``config.image``: none, blank, noise, tumour-masked), an MRI artifact
(``config.artifact``, e.g. ``motion:0.5``) or the prompt (``config.prompt_sha``; the ``seed-swapped``
prompt also changes the answer codes, ``config.task.answer_codes``). Everything else that decides the
calls must match (:data:`IDENTITY_KEYS`: model, adapter, scoring, orientations, slices, modalities,
repeats, decoding), as must the task and the test cohort's patients. The reference of such a group is
its run on the real image without an artifact, with the task's default prompt where there is one.

For each control the section shows (a) how often its answers agree with the reference's, call by call
(:func:`medvlm.stats.compare_answers` on the two ``slices.csv``: agreement, flip rate, Cohen's kappa),
(b) both runs' patient-level metrics with McNemar and DeLong paired tests
(:func:`medvlm.stats.compare_predictions`, A = the reference), (c) for each artifact kind a robustness
curve, accuracy and AUC with their 95% CIs against the severity (severity 0 = the reference), and (d) one
plain-language verdict per control (:func:`medvlm.report.control_verdicts.verdict`): an agreement of at
least :data:`SAME` reads as "does not depend on", below :data:`SOME` as "depends on", in between as
"changes some of its answers".
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medvlm.errors import DataError
from medvlm.report.runs import RunData, run_task

#: agreement with the reference at or above which a control "does not change" the answers
SAME = 0.90
#: agreement below which a control "changes" the answers (in between: "changes some of them")
SOME = 0.70
#: config fields that decide which calls a VLM run makes and how it answers: a control matches its
#: reference in all of them (image, artifact and prompt are what a control changes)
IDENTITY_KEYS = ("model", "adapter", "scoring", "orientations", "slices", "modalities", "repeats",
                 "temperature", "top_p", "max_new_tokens", "structured", "reducer", "tie_break", "cohort")
#: image variants that take the image away
ABSENT = ("none", "blank", "noise")
IMAGE_LABEL = {"none": "no image", "blank": "blank image", "noise": "noise image",
               "tumour-masked": "tumour masked"}
IMAGE_PHRASE = {"none": "with no image", "blank": "on a blank (black) image", "noise": "on random noise",
                "tumour-masked": "with the tumour masked out"}


@dataclass(frozen=True)
class Settings:
    """What a control may change: the image variant, the artifact (kind, severity), the prompt (its name
    and identity) and the answer codes (``""`` for the task's own)."""

    image: str
    artifact: tuple[str, float] | None
    prompt: str
    prompt_id: str
    codes: str


@dataclass
class Control:
    """One control run and the reference run it is a control of."""

    run: RunData
    reference: RunData
    settings: Settings
    changes: tuple[str, ...]  # of "image", "artifact", "prompt", "codes"
    label: str

    @property
    def kind(self) -> str:
        """``absent`` (none/blank/noise), ``masked``, ``artifact``, ``swapped`` (answer codes), ``prompt``
        or ``mixed`` (several of these at once)."""
        changes = set(self.changes)
        if changes == {"image"}:
            return "absent" if self.settings.image in ABSENT else "masked"
        if changes == {"artifact"}:
            return "artifact"
        if "codes" in changes and changes <= {"prompt", "codes"}:
            return "swapped"
        return "prompt" if changes == {"prompt"} else "mixed"


@dataclass
class ControlSet:
    """A reference run and its controls (in run order)."""

    reference: RunData
    controls: list[Control] = field(default_factory=list)


def _config(run: RunData) -> Mapping[str, Any]:
    cfg = run.info.get("config")
    return cfg if isinstance(cfg, Mapping) else {}


def run_settings(run: RunData) -> Settings:
    """The image, artifact, prompt and answer codes a VLM run used (``run.json`` config)."""
    cfg = _config(run)
    artifact = None
    spec = cfg.get("artifact")
    if isinstance(spec, str) and ":" in spec:
        kind, _, severity = spec.partition(":")
        try:
            artifact = (kind.strip(), float(severity))
        except ValueError:
            artifact = (spec, math.nan)
    task = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else {}
    prompt = str(cfg.get("prompt_name") or cfg.get("prompt") or run_task(run).default_prompt)
    codes = task.get("answer_codes")
    return Settings(image=str(cfg.get("image") or "real"), artifact=artifact, prompt=prompt,
                    prompt_id=str(cfg.get("prompt_sha") or prompt),
                    codes=json.dumps(codes, sort_keys=True) if codes else "")


def _identity(run: RunData) -> tuple[str, ...] | None:
    """What a control shares with its reference (None: not a VLM run with test-cohort predictions)."""
    from medvlm.report.summary import test_cohort_predictions

    if run.kind != "vlm":
        return None
    try:
        patients = sorted(set(test_cohort_predictions(run)["patient_id"].astype(str)))
    except DataError:
        return None
    cfg = _config(run)
    shots = int(cfg.get("shots") or 0)  # few-shot runs are references of their own (absent: zero-shot)
    return (run_task(run).name, json.dumps([cfg.get(k) for k in IDENTITY_KEYS], default=str),
            json.dumps(patients), *([f"shots {shots}"] if shots else []))


def _label(s: Settings, ref: Settings) -> tuple[tuple[str, ...], str]:
    changes, parts = [], []
    if s.image != ref.image:
        changes.append("image")
        parts.append(IMAGE_LABEL.get(s.image, s.image))
    if s.artifact != ref.artifact:
        changes.append("artifact")
        parts.append(f"{s.artifact[0]} {s.artifact[1]:g}" if s.artifact else "no artifact")
    if s.prompt_id != ref.prompt_id:
        changes.append("prompt")
    if s.codes != ref.codes:
        changes.append("codes")
    if "codes" in changes:
        parts.append(f"codes swapped (prompt {s.prompt})")
    elif "prompt" in changes:
        parts.append(f"prompt {s.prompt}")
    return tuple(changes), " + ".join(parts)


def find_controls(runs: Sequence[RunData]) -> list[ControlSet]:
    """The reference runs among ``runs`` that have controls, each with its controls (see the module
    docstring); [] when there are none."""
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run in runs:
        ident = _identity(run)
        if ident is not None:
            groups.setdefault(ident, []).append(run)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        settings = {id(r): run_settings(r) for r in members}
        real = [r for r in members if settings[id(r)].image == "real" and settings[id(r)].artifact is None]
        if not real:
            continue
        default = [r for r in real if settings[id(r)].prompt == run_task(r).default_prompt
                   and not settings[id(r)].codes]
        reference = (default or real)[0]
        ref = settings[id(reference)]
        cset = ControlSet(reference)
        for r in members:
            changes, label = _label(settings[id(r)], ref)
            if r is not reference and changes:
                cset.controls.append(Control(r, reference, settings[id(r)], changes, label))
        if cset.controls:
            out.append(cset)
    return out


def control_names(runs: Sequence[RunData]) -> dict[str, str]:
    """``{control run name: "<label> (control of <reference>)"}`` for every control among ``runs``."""
    return {c.run.name: f"{c.label} (control of {c.reference.name})"
            for cs in find_controls(runs) for c in cs.controls}


# ------------------------------------------------------------------------------------------- comparisons
def _calls(run: RunData) -> Any:
    from medvlm.stats import read_calls

    if "calls" not in run.cache:
        try:
            if "slices.csv" not in run.files:
                raise DataError(f"{run.name} has no slices.csv")
            run.cache["calls"] = read_calls(run.path / "slices.csv")
        except DataError as exc:
            run.cache["calls"] = exc
    if isinstance(run.cache["calls"], DataError):
        raise run.cache["calls"]
    return run.cache["calls"]


def call_agreement(reference: RunData, control: RunData) -> dict[str, Any]:
    """:func:`medvlm.stats.compare_answers` of the two runs' ``slices.csv`` (A = the reference), plus
    ``top_a``/``top_b`` (each run's most frequent answer code, with ``share_a``/``share_b``) and
    ``swapped`` (the share of the calls both answered with a class, 0 or 1, whose class differs).
    Raises DataError when the calls cannot be paired."""
    from medvlm.stats import compare_answers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compare_answers(_calls(reference), _calls(control), name_a=reference.name, name_b=control.name)
    conf = res["confusion"]
    n = res["n"]
    for side in ("a", "b"):
        totals = ({x: sum(row.values()) for x, row in conf.items()} if side == "a"
                  else {y: sum(conf[x][y] for x in conf) for y in res["categories"]})
        top = max(sorted(totals), key=lambda k: totals[k])
        res[f"top_{side}"], res[f"share_{side}"] = top, totals[top] / n
    graded = [(x, y) for x in ("0", "1") for y in ("0", "1") if x in conf and y in conf[x]]
    n_graded = sum(conf[x][y] for x, y in graded)
    res["swapped"] = (sum(conf[x][y] for x, y in graded if x != y) / n_graded) if n_graded else None
    return res


def _paired(reference: RunData, control: RunData) -> dict[str, Any]:
    from medvlm.report.summary import test_cohort_predictions
    from medvlm.stats import compare_predictions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compare_predictions(test_cohort_predictions(reference), test_cohort_predictions(control),
                                   name_a=reference.name, name_b=control.name)


def robustness_points(cset: ControlSet, *, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, list[dict[str, Any]]]:
    """``{artifact kind: [point, ...]}`` by severity, the first point the reference at severity 0; a point
    is ``{"severity", "run", "accuracy", "accuracy_ci", "auc", "auc_ci"}`` (test cohort,
    :func:`medvlm.report.quick_metrics.test_metrics`). Only controls that change the artifact alone."""
    from medvlm.report.quick_metrics import test_metrics

    def point(run: RunData, severity: float) -> dict[str, Any]:
        try:
            m = test_metrics(run, n_boot=n_boot, seed=seed)
        except DataError:
            m = {}
        return {"severity": severity, "run": run.name,
                **{k: m.get(k) for k in ("accuracy", "accuracy_ci", "auc", "auc_ci")}}

    curves: dict[str, list[dict[str, Any]]] = {}
    for c in cset.controls:
        if c.kind != "artifact" or c.settings.artifact is None or not math.isfinite(c.settings.artifact[1]):
            continue
        kind, severity = c.settings.artifact
        points = curves.setdefault(kind, [point(cset.reference, 0.0)])
        if all(p["severity"] != severity for p in points):
            points.append(point(c.run, severity))
    for points in curves.values():
        points.sort(key=lambda p: p["severity"])
    return dict(sorted(curves.items()))
