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
plain-language verdict per control (:func:`verdict`): an agreement of at least :data:`SAME` reads as "does
not depend on", below :data:`SOME` as "depends on", in between as "changes some of its answers".
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _ci_text, _p, fmt
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
    return (run_task(run).name, json.dumps([cfg.get(k) for k in IDENTITY_KEYS], default=str),
            json.dumps(patients))


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


# ----------------------------------------------------------------------------------------------- verdicts
def _share(x: float) -> str:
    """A share as a whole percentage that never rounds to 0% or 100% unless it is exactly that."""
    if 0 < x < 0.005:
        return "under 1%"
    if 0.995 <= x < 1:
        return "over 99%"
    return f"{x:.0%}"


def _level(agreement: float) -> str:
    return "same" if agreement >= SAME else ("some" if agreement >= SOME else "differ")


def _wording(control: Control) -> tuple[str, str, dict[str, str]]:
    """(how the control's answers were got, what they are compared with, conclusion per level, and
    ``scores`` for the same answers with significantly different patient scores)."""
    s = control.settings
    task = run_task(control.reference)
    ref_prompt = run_settings(control.reference).prompt
    real = "answers on the real image"
    kind = control.kind
    if kind == "absent":
        return IMAGE_PHRASE.get(s.image, f"with image {s.image}"), real, {
            "same": "the model's answer does not depend on the image",
            "some": "the image changes some of its answers, but most stay the same without it",
            "differ": "the model's answer depends on the image",
            "scores": "the image does not change its answers, but it changes its scores"}
    if kind == "masked":
        return IMAGE_PHRASE["tumour-masked"], real, {
            "same": "its answer does not rest on the tumour",
            "some": "masking the tumour changes some of its answers",
            "differ": "its answer depends on the tumour region",
            "scores": "masking the tumour does not change its answers, but it changes its scores"}
    if kind == "artifact" and s.artifact:
        return f"under {s.artifact[0]} artifacts at severity {s.artifact[1]:g}", real, {
            "same": "its answers are robust to this artifact",
            "some": "this artifact changes some of its answers",
            "differ": "this artifact changes its answers",
            "scores": "this artifact does not change its answers, but it changes its scores"}
    neg, pos = task.classes[1 - task.positive_label], task.classes[task.positive_label]
    if kind == "swapped":
        return (f"with the codes of {neg} and {pos} swapped in the prompt ({s.prompt})",
                f"answers to the {ref_prompt} prompt", {
                    "same": "the model reads the answer codes",
                    "some": "the swapped codes change some of its answers",
                    "differ": "its answers change with the codes",
                    "scores": "the model reads the answer codes, but the swap changes its scores"})
    if kind == "prompt":
        return f"to the reworded prompt {s.prompt}", f"answers to the {ref_prompt} prompt", {
            "same": "its answers do not depend on the wording",
            "some": "the wording changes some of its answers",
            "differ": "its answers depend on the wording of the question",
            "scores": "the wording does not change its answers, but it changes its scores"}
    return f"with {control.label}", f"answers of {control.reference.name}", {
        "same": "these changes leave its answers as they were",
        "some": "these changes change some of its answers",
        "differ": "these changes change its answers",
        "scores": "these changes leave its answers but change its scores"}


def _answer_name(code: str, task: Any) -> str:
    return {str(i): a.name for i, a in enumerate(task.answers)}.get(code, code)


def scores_differ(paired: Mapping[str, Any] | None) -> bool:
    """Whether the two runs' patient scores rank the test cohort differently: DeLong p below 0.05."""
    p = (paired or {}).get("delong_p")
    return isinstance(p, int | float) and math.isfinite(p) and p < 0.05


def verdict(control: Control, calls: Mapping[str, Any] | None, paired: Mapping[str, Any] | None = None, *,
            blind: bool | None = None) -> str:
    """One plain-language sentence (or two) on what ``control`` says about its reference run.

    ``calls``: :func:`call_agreement` (None: not paired); ``paired``: the patient-level paired tests
    (A = the reference). Agreement of the answers decides the words (:data:`SAME`, :data:`SOME`); where
    the answers agree but the scores rank the patients differently (:func:`scores_differ`: log-prob
    scores can move while the top answer stays), the verdict says so. ``blind``: the reference's
    no-image (blank, noise) controls showed that neither its answers nor its scores depend on the image,
    so an artifact that changes nothing says nothing about robustness.
    """
    how, against, conclusions = _wording(control)
    task = run_task(control.reference)
    cfg = _config(control.reference)
    parts = []
    if calls is None:
        parts.append(f"Answers {how} ({control.run.name}) could not be paired with those of "
                     f"{control.reference.name} call by call.")
    else:
        agreement = float(calls["agreement"])
        level = _level(agreement)
        repeats = cfg.get("repeats") or 1
        units = task.unit + "s" if task.unit != "patient" else "slices"
        units = units if repeats == 1 else "calls"
        text = f"Answers {how} agree with {against} on {_share(agreement)} of {calls['n']} {units}"
        if level == "same" and calls.get("share_a", 0) >= SAME and calls.get("share_b", 0) >= SAME \
                and calls.get("top_a") == calls.get("top_b"):
            text += (f" (it answers {_answer_name(str(calls['top_a']), task)} on {_share(calls['share_b'])} "
                     f"of them {'without it' if control.kind == 'absent' else 'either way'})")
        moved = level == "same" and scores_differ(paired)
        text += ": " + conclusions["scores" if moved else level]
        if control.kind == "swapped" and level == "differ" and (calls.get("swapped") or 0) >= 0.5:
            text += (f": {_share(calls['swapped'])} of the graded answers name the other grade, so the model "
                     "follows the digit, not the grade it stands for")
        if control.kind == "artifact" and level == "same" and not moved and blind:
            text += ("; but neither its answers nor its scores depend on the image at all (the no-image "
                     "control), so this says nothing about robustness")
        temperature = cfg.get("temperature")
        if level != "same" and isinstance(temperature, int | float) and temperature > 0:
            text += (f" (sampled at temperature {temperature:g}: some changes are sampling noise; the "
                     "consistency runs show how much)")
        parts.append(text + ".")
        if paired is not None:
            parts.append(_patient_sentence(control, calls, paired, level))
    return " ".join(p for p in parts if p)


def _patient_sentence(control: Control, calls: Mapping[str, Any], paired: Mapping[str, Any],
                      level: str) -> str:
    units = {"patient": "patients", "slice": "slices", "image": "images"}[run_task(control.reference).unit]
    acc_a, acc_b, p = paired.get("accuracy_a"), paired.get("accuracy_b"), paired.get("mcnemar_p")
    if acc_a is None or acc_b is None:
        return ""
    text = (f"On the {paired['n']} test {units}: accuracy {fmt(acc_a, 2)} ({control.reference.name}) vs "
            f"{fmt(acc_b, 2)} ({control.label}), McNemar p {_p_words(p)}")
    if paired.get("auc_a") is not None and paired.get("auc_b") is not None:
        text += (f"; AUC {fmt(paired['auc_a'], 2)} vs {fmt(paired['auc_b'], 2)}, DeLong p "
                 f"{_p_words(paired.get('delong_p'))}")
    if control.kind == "absent" and level != "same" and isinstance(p, int | float):
        if p >= 0.05:
            text += (": the image changes its answers but, on this many test units, does not make them "
                     "measurably more accurate")
        elif acc_a > acc_b:
            text += ": the image makes its answers more accurate"
        else:
            text += ": its answers are more accurate without the image"
    return text + "."


def _p_words(p: Any) -> str:
    text = _p(p)
    return text if text.startswith("<") or text == "–" else f"= {text}"


# ---------------------------------------------------------------------------------------------- assessing
#: (control, call agreement or why not, paired tests or why not)
Result = tuple[Control, Any, Any]


def assess(cset: ControlSet) -> list[Result]:
    """``(control, calls, paired)`` for each control: :func:`call_agreement` and the patient-level paired
    tests against the reference, each the reason (text) where it cannot be computed."""
    out = []
    for c in cset.controls:
        try:
            calls: dict[str, Any] | str = call_agreement(cset.reference, c.run)
        except DataError as exc:
            calls = str(exc)
        try:
            paired: dict[str, Any] | str = _paired(cset.reference, c.run)
        except DataError as exc:
            paired = str(exc)
        out.append((c, calls, paired))
    return out


def _verdicts(results: Sequence[Result]) -> list[str]:
    absent = [isinstance(calls, dict) and calls["agreement"] >= SAME
              and not scores_differ(paired if isinstance(paired, dict) else None)
              for c, calls, paired in results if c.kind == "absent"]
    blind = bool(absent) and all(absent)
    return [verdict(c, calls if isinstance(calls, dict) else None,
                    paired if isinstance(paired, dict) else None, blind=blind)
            for c, calls, paired in results]


def control_verdicts(runs: Sequence[RunData]) -> list[tuple[Control, str]]:
    """``(control, its verdict)`` for every control among ``runs`` (:func:`verdict`), in run order of
    their references."""
    out = []
    for cset in find_controls(runs):
        results = assess(cset)
        out.extend(zip([c for c, _, _ in results], _verdicts(results), strict=True))
    return out


# ------------------------------------------------------------------------------------------------- view
def _cell(value: Any, ci: Any = None, digits: int = 3) -> dict[str, str]:
    return {"v": fmt(value, digits), "ci": _ci_text(ci)}


def controls_view(runs: Sequence[RunData], *, anchors: Mapping[str, str] | None = None, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """What the template's controls section shows: ``groups``, one per reference run with controls, each
    with ``reference``, ``verdicts``, ``calls`` and ``patients`` (tables for the data_table macro),
    ``curves`` (:func:`robustness_points`) and ``figures``; {} when no run has controls."""
    from medvlm.report import figures as F
    from medvlm.report.format import _figure
    from medvlm.report.quick_metrics import READ_METRICS, test_metrics

    anchors = anchors or {}

    def link(name: str) -> dict[str, str]:
        return {"v": name, "href": "#" + anchors[name]} if name in anchors else {"v": name}

    groups = []
    for cset in find_controls(runs):
        ref = cset.reference
        results = assess(cset)
        verdicts = _verdicts(results)
        task = run_task(ref)
        call_rows, patient_rows = [], []

        def metric_cells(run: RunData) -> list[dict[str, str]]:
            try:
                m = test_metrics(run, n_boot=n_boot, seed=seed)
            except DataError:
                return [{"v": "–"}] * (1 + len(READ_METRICS))
            return [{"v": fmt(m.get("n"))}, *(_cell(m.get(k), m.get(f"{k}_ci")) for k in READ_METRICS)]

        ref_settings = run_settings(ref)
        patient_rows.append([{"v": f"reference: real image, prompt {ref_settings.prompt}"}, link(ref.name),
                             *metric_cells(ref), *([{"v": ""}] * 4)])
        for c, calls, paired in results:
            if isinstance(calls, dict):
                call_rows.append([{"v": c.label}, link(c.run.name), {"v": fmt(calls["n"])},
                                  {"v": fmt(calls["n_patients"])}, {"v": _share(calls["agreement"])},
                                  {"v": fmt(calls["flip_rate"])}, {"v": fmt(calls["kappa"], 2)},
                                  {"v": f"{_answer_name(str(calls['top_b']), task)} "
                                        f"({_share(calls['share_b'])})"}])
            else:
                call_rows.append([{"v": c.label}, link(c.run.name),
                                  {"v": f"not paired: {calls}", "cls": "wrap-text"}, *([{"v": ""}] * 5)])
            if isinstance(paired, dict):
                tests = [_cell(paired["accuracy_diff"], paired.get("accuracy_diff_ci")),
                         {"v": _p(paired["mcnemar_p"]),
                          "cls": "sig" if (paired["mcnemar_p"] or 1) < 0.05 else ""},
                         _cell(paired["auc_diff"], paired.get("auc_diff_ci")),
                         {"v": _p(paired["delong_p"]),
                          "cls": "sig" if (paired["delong_p"] or 1) < 0.05 else ""}]
            else:
                tests = [{"v": f"not compared: {paired}", "cls": "wrap-text"}, *([{"v": ""}] * 3)]
            patient_rows.append([{"v": c.label}, link(c.run.name), *metric_cells(c.run), *tests])
        reference_answer = ""
        first = next((calls for _, calls, _ in results if isinstance(calls, dict)), None)
        if first is not None:
            reference_answer = (f" On the real image it answered {_answer_name(str(first['top_a']), task)} "
                                f"on {_share(first['share_a'])} of the calls.")
        curves = robustness_points(cset, n_boot=n_boot, seed=seed)
        figures = []
        if curves:
            floor = None
            absent_runs = [c for c in cset.controls if c.kind == "absent"]
            if absent_runs:
                try:
                    m = test_metrics(absent_runs[0].run, n_boot=n_boot, seed=seed)
                    floor = (absent_runs[0].label, {k: m.get(k) for k in ("accuracy", "auc")})
                except DataError:
                    floor = None
            figures.append(_figure(
                F.robustness_figure(curves, title=f"{ref.name}: robustness to MRI artifacts", floor=floor),
                f"Accuracy and AUC of {ref.name} on the test cohort against the severity of each TorchIO "
                "artifact (severity 0 = the real image; bars: 95% bootstrap CIs"
                + (f"; dashed: {floor[0]}, the level of a model that does not see the image" if floor else "")
                + ")."))
        groups.append({
            "reference": ref.name, "anchor": anchors.get(ref.name, ""), "verdicts": verdicts,
            "lead": (f"Reference: {ref.name}, the real image with the prompt {ref_settings.prompt}; "
                     f"{len(cset.controls)} control{'s' if len(cset.controls) != 1 else ''} with the same "
                     "model, task, calls and test patients." + reference_answer),
            "calls": {"title": "Answers, call by call (slices.csv)",
                      "columns": ["control", "run", "calls paired", "patients", "agreement", "flip rate",
                                  "Cohen's kappa", "most frequent answer"],
                      "rows": call_rows, "left": {0, 1, 7},
                      "note": "Calls paired on patient, orientation, slice and repeat; agreement = the share "
                              "of calls answered alike (an unparsed answer is its own category), flip rate = "
                              "1 − agreement; kappa corrects the agreement for chance (– when undefined, "
                              "e.g. one answer throughout)."},
            "patients": {"title": "Patients (test cohort) and paired tests against the reference",
                         "columns": ["control", "run", "n", "Accuracy", "Sensitivity", "Specificity", "AUC",
                                     "Acc. ref − control", "McNemar p", "AUC ref − control", "DeLong p"],
                         "rows": patient_rows, "left": {0, 1},
                         "note": "95% bootstrap CIs below each estimate; differences: reference minus "
                                 "control (positive: the reference did better), McNemar and DeLong as in the "
                                 "paired tests above, p below 0.05 in green."},
            "curves": curves, "figures": figures,
        })
    return {"groups": groups, "same": SAME, "some": SOME} if groups else {}
