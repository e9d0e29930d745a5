"""The verdicts and the view of the report's "Does the model look at the image?" section.

:func:`verdict` words one control's result in plain language (an agreement of at least
:data:`medvlm.report.controls.SAME` with the reference reads "does not depend on", below
:data:`~medvlm.report.controls.SOME` "depends on", in between "changes some of its answers");
:func:`assess` computes each control's call agreement and paired tests; :func:`controls_view` is the
section's data for the template. Which runs are controls of which: :mod:`medvlm.report.controls`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from medvlm.errors import DataError
from medvlm.report.controls import (
    IMAGE_PHRASE,
    SAME,
    SOME,
    Control,
    ControlSet,
    _config,
    _paired,
    call_agreement,
    find_controls,
    robustness_points,
    run_settings,
)
from medvlm.report.format import _ci_text, _p, fmt
from medvlm.report.runs import RunData, run_task
from medvlm.report.sample_notes import paired_class_counts, paired_verdicts
from medvlm.report.summary import test_cohort_predictions


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


def _paired_counts(reference: RunData, control: RunData) -> dict[int, int]:
    """Patients per class among the test units both runs answered ({} when either has none)."""
    try:
        return paired_class_counts(test_cohort_predictions(reference), test_cohort_predictions(control))
    except (DataError, KeyError):
        return {}


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
                v = paired_verdicts(paired, _paired_counts(ref, c.run), task.classes)

                def p_cell(which: str, v: dict[str, Any] = v, paired: dict[str, Any] = paired
                           ) -> dict[str, str]:
                    if v[f"{which}_few"]:  # too few to test: said so, the p-value beneath, no highlight
                        why = v[f"{which}_why"]
                        p_text = _p(paired[f"{which}_p"])
                        return {"v": v["too_few"], "ci": f"{why}; p = {p_text}", "cls": "few"}
                    return {"v": _p(paired[f"{which}_p"]), "cls": "sig" if v[f"{which}_sig"] else ""}

                tests = [_cell(paired["accuracy_diff"], paired.get("accuracy_diff_ci")), p_cell("mcnemar"),
                         _cell(paired["auc_diff"], paired.get("auc_diff_ci")), p_cell("delong")]
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
                                 "paired tests above: p below 0.05 in green where enough patients make it a "
                                 "test, else \"too few to test\"."},
            "curves": curves, "figures": figures,
        })
    return {"groups": groups, "same": SAME, "some": SOME} if groups else {}
