"""The section of a calibrated run (``medvlm calibrate FIT APPLY``): the run it calibrates, the method and
its parameters, the threshold and its rule, the FIT rows it was fitted on and FIT's calibration before
and after (``calibration.json``), then the test-cohort confusion matrix, reliability diagram and
risk-coverage curve of the calibrated scores.

>>> params_text("temperature", {"temperature": 2.5}), params_text("platt", {"a": 0.5, "b": -1.25})
('T = 2.500', 'a = 0.500, b = -1.250')
>>> params_text("isotonic", {"x": [0.1, 0.5, 0.9], "y": [0.0, 0.4, 1.0]}), params_text("none", {})
('a step map with 3 knots', '–')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvlm.report.format import _is_num, fmt
from medvlm.report.roles import calibration_source
from medvlm.report.runs import RunData, _read_json, run_task
from medvlm.report.sections._classifier import add_calibration_figures, add_confusion_matrix

METHOD_NAME = {"temperature": "temperature scaling", "platt": "Platt scaling",
               "isotonic": "isotonic regression", "none": "none (scores as they were; threshold only)"}
RULE_NAME = {"youden": "Youden (max sensitivity + specificity - 1 on FIT)",
             "balanced": "balanced (sensitivity closest to specificity on FIT)", "fixed": "fixed by hand"}
COHORT_NAME = {"val": "validation", "train": "training", "test": "test"}


def params_text(method: Any, params: Any) -> str:
    """The fitted parameters of ``method`` in a few words."""
    if not isinstance(params, Mapping) or not params:
        return "–"
    if method == "temperature" and _is_num(params.get("temperature")):
        return f"T = {params['temperature']:.3f}"
    if method == "platt" and _is_num(params.get("a")) and _is_num(params.get("b")):
        return f"a = {params['a']:.3f}, b = {params['b']:.3f}"
    if method == "isotonic" and isinstance(params.get("x"), list):
        return f"a step map with {len(params['x'])} knots"
    return ", ".join(f"{k} = {fmt(v)}" for k, v in params.items())


def calibration_record(run: RunData) -> dict[str, Any]:
    """``calibration.json`` of the run as a dict ({} and a problem of the run when it is missing or not an
    object)."""
    cal = _read_json(run, "calibration.json")
    if cal is None and "calibration.json" not in run.files:
        run.problems.append("calibration.json is missing: method, threshold and the fit are unknown")
    elif cal is not None and not isinstance(cal, Mapping):
        run.problems.append(f"calibration.json holds a JSON {type(cal).__name__}, not an object: ignored")
    return dict(cal) if isinstance(cal, Mapping) else {}


def _fit_table(cal: Mapping[str, Any]) -> dict[str, Any] | None:
    rows = []
    for label, key in (("before (raw scores)", "fit_before"), ("after (calibrated)", "fit_after")):
        part = cal.get(key)
        if isinstance(part, Mapping):
            rows.append([label, *(fmt(part.get(k)) for k in ("brier", "ece", "log_loss"))])
    if not rows:
        return None
    cohort = COHORT_NAME.get(str(cal.get("fit_cohort")), str(cal.get("fit_cohort") or "FIT"))
    return {"title": f"Calibration on the {fmt(cal.get('n_fit'))} FIT units ({cohort} cohort)",
            "columns": ["scores", "Brier", "ECE", "log loss"], "rows": rows, "left": {0},
            "note": "Lower is better for all three. These are the rows the calibration was fitted on; the "
                    "test cohort's values are in the summary table."}


def details(run: RunData, d: dict[str, Any]) -> None:
    """What was calibrated and how, FIT's calibration before/after, then the test-cohort figures."""
    facts = d["facts"]
    cfg = run.info.get("config") if isinstance(run.info.get("config"), Mapping) else {}
    cal = calibration_record(run)
    source = calibration_source(run)
    task = run_task(run)
    facts.append(("calibrates", f"{source.name} ({source.kind} run, {source.path})" if source is not None
                  else "unknown (APPLY's run is gone)"))
    facts.append(("APPLY (scores calibrated)",
                  f"{cfg.get('apply') or '–'} ({cfg.get('apply_cohort') or 'test'} rows)"))
    facts.append(("FIT (calibration fitted on)",
                  f"{cfg.get('fit') or '–'} ({cfg.get('fit_cohort') or 'val'} rows)"))
    method = cal.get("method", cfg.get("method"))
    if method is not None:
        facts.append(("method", METHOD_NAME.get(str(method), str(method))))
        facts.append(("parameters", params_text(method, cal.get("params"))))
    if "threshold" in cal:
        rule = str(cal.get("threshold_rule") or "")
        positive = task.classes[task.positive_label]
        facts.append(("threshold",
                      f"{fmt(cal['threshold'])}: {positive} when the calibrated score is at least this"))
        facts.append(("threshold rule", RULE_NAME.get(rule, rule)))
    if cal.get("n_fit") is not None:
        cohort = COHORT_NAME.get(str(cal.get("fit_cohort")), str(cal.get("fit_cohort") or "FIT"))
        facts.append(("fitted on", f"{fmt(cal['n_fit'])} {cohort} {task.unit}s (answered and scored)"))
    if cal.get("abstain_below") is not None:
        facts.append(("abstains below confidence", fmt(cal["abstain_below"])))
    table = _fit_table(cal)
    if table:
        d["tables"].append(table)
    add_confusion_matrix(run, d)
    add_calibration_figures(run, d)
