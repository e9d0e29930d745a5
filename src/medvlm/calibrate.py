"""``medvlm calibrate FIT APPLY --out RUN``: a calibrated arm of any scored run (CNN, VLM, fine-tuned).

FIT and APPLY are each a ``predictions.csv`` or a run folder holding one. The calibrator and threshold
are fitted on FIT's ``val`` rows (all rows without a ``cohort`` column) and applied to APPLY's ``test``
rows (likewise); VLM predictions with an ``orientation`` column use their ``combined`` rows (or
``orientation``). FIT and APPLY must predict the same kind of unit, for the same task, and share no
patient (a threshold fitted on the patients it is judged on would flatter it).

Writes ``RUN/predictions.csv`` (APPLY's rows, calibrated ``score``, ``pred = score >= threshold``; a row
without a score is an abstention), ``RUN/metrics.json``, ``RUN/calibration.json`` (``method``,
``params``, ``threshold``, ``threshold_rule``, ``n_fit``, FIT's calibration before/after) and
``RUN/run.json`` (kind ``calibrated``, naming FIT and APPLY). Labels: 1 = the task's positive class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.errors import ConfigError, DataError

PREDICTIONS_FILE = "predictions.csv"


@dataclass
class ScoredSource:
    """The rows of one side (FIT or APPLY), where they came from and the task its run recorded."""

    path: Path
    rows: Any  # pandas DataFrame
    cohort: str
    task: str | None


def _run_task(folder: Path) -> str | None:
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = info.get("config") if isinstance(info, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if isinstance(task, dict):
        return str(task.get("name")) if task.get("name") else None
    return str(task) if isinstance(task, str) else None


def load_side(source: str | Path, role: str, cohort: str, orientation: str = "combined") -> ScoredSource:
    """Read FIT or APPLY (``role``): its ``cohort`` rows (all rows without a cohort column)."""
    from medvlm.metrics import read_predictions
    from medvlm.predictions import unit_keys

    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise DataError(f"{role} {path}: no such file or run folder (a predictions.csv, or a run folder "
                        "holding one)")
    if path.is_dir():
        path = path / PREDICTIONS_FILE
        if not path.is_file():
            raise DataError(f"{role} {folder}: no {PREDICTIONS_FILE} in this run folder")
    df = read_predictions(path)
    if "orientation" in df.columns and len(unit_keys(df)) == 1:
        present = sorted(df["orientation"].astype(str).unique())
        if orientation not in present:
            raise DataError(f"{role} {path}: no rows for orientation {orientation!r} "
                            f"(has {', '.join(present)})")
        df = df[df["orientation"].astype(str) == orientation]
    if "cohort" in df.columns:
        chosen = df[df["cohort"].astype(str) == cohort]
        if chosen.empty:
            have = ", ".join(sorted(df["cohort"].astype(str).unique()))
            hint = (" (evaluate the model on the validation cohort: eval-vlm --cohort val --fold K)"
                    if role == "FIT" else "")
            raise DataError(f"{role} {path}: no {cohort!r} rows (it has {have}){hint}")
        df = chosen
    return ScoredSource(path, df.reset_index(drop=True), cohort, _run_task(folder))


def check_sides(fit: ScoredSource, apply: ScoredSource) -> None:
    """FIT and APPLY must describe the same kind of unit and task and share no patient."""
    from medvlm.predictions import unit_keys

    fk, ak = unit_keys(fit.rows), unit_keys(apply.rows)
    if fk != ak:
        raise DataError(f"FIT {fit.path} and APPLY {apply.path} predict different units "
                        f"({', '.join(fk)} vs {', '.join(ak)}); calibrate runs of the same task")
    if fit.task and apply.task and fit.task != apply.task:
        raise DataError(f"FIT {fit.path} is for task {fit.task!r} but APPLY {apply.path} for {apply.task!r}")
    if "patient_id" in fit.rows.columns and "patient_id" in apply.rows.columns:
        shared = sorted(set(fit.rows["patient_id"].astype(str)) & set(apply.rows["patient_id"].astype(str)))
        if shared:
            more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
            raise DataError(f"FIT and APPLY share patients ({', '.join(shared[:3])}{more}): a calibration "
                            "must be fitted on other patients than it is judged on")


def fit_on(fit: ScoredSource, method: str, threshold: str | float) -> dict[str, Any]:
    """Fit the calibrator and the threshold on FIT's answered, scored rows; the calibration.json dict."""
    import numpy as np

    from medvlm import calibration as cal
    from medvlm.metrics import has_scores

    rows = fit.rows
    if not has_scores(rows):
        raise DataError(f"FIT {fit.path}: no scores (a score column with P of the positive class is needed; "
                        "eval-vlm --scoring logprobs gives one)")
    rows = rows[rows["score"].notna() & rows["pred"].notna()]
    y, s = rows["label"].to_numpy(dtype=float), rows["score"].to_numpy(dtype=float)
    if (s < 0).any() or (s > 1).any():
        raise DataError(f"FIT {fit.path}: scores outside [0, 1] are not probabilities")
    rule_is_number = not isinstance(threshold, str)
    if len(np.unique(y)) < 2 and not (method == "none" and rule_is_number):
        raise DataError(f"FIT {fit.path}: its {len(y)} scored rows hold one class only; fitting a "
                        "calibration or a threshold needs both")
    params = cal.fit_calibrator(y, s, method)
    calibrated = cal.apply_calibrator(s, method, params)
    value = cal.fit_threshold(y, calibrated, threshold)
    before = cal.calibration_vector(y, s)
    after = cal.calibration_vector(y, calibrated)
    return {"method": method, "params": params, "threshold": value,
            "threshold_rule": threshold if isinstance(threshold, str) else "fixed",
            "n_fit": int(len(y)), "fit_cohort": fit.cohort,
            "fit_before": dict(zip(("brier", "ece", "log_loss"), before, strict=True)),
            "fit_after": dict(zip(("brier", "ece", "log_loss"), after, strict=True))}


def apply_to(rows: Any, calibration: dict[str, Any]) -> Any:
    """APPLY's rows with calibrated ``score`` and ``pred = score >= threshold`` (no score: abstention)."""
    import numpy as np
    import pandas as pd

    from medvlm.calibration import apply_calibrator
    from medvlm.predictions import answered_preds

    out = rows.copy()
    raw = pd.to_numeric(out["score"], errors="coerce").to_numpy(dtype=float) if "score" in out.columns \
        else np.full(len(out), np.nan)
    score = apply_calibrator(raw, calibration["method"], calibration["params"])
    out["score"] = score  # full precision: rounding would tie scores that the raw ones rank
    ok = ~np.isnan(raw)
    calibration["n_merged"] = int(len(np.unique(raw[ok])) - len(np.unique(score[ok])))
    if calibration["n_merged"] > 0:
        import warnings

        warnings.warn(f"the calibration maps {calibration['n_merged']} distinct APPLY scores onto others "
                      "(saturated at 0 or 1, or isotonic steps): ties that can change the AUC",
                      UserWarning, stacklevel=2)
    scored = ~np.isnan(score)
    pred = (np.nan_to_num(score) >= calibration["threshold"]).astype(int)
    out["pred"] = answered_preds(pred, scored)
    return out


def parse_threshold(value: str) -> str | float:
    """``youden``, ``balanced`` or a number (ConfigError otherwise)."""
    from medvlm.calibration import THRESHOLD_RULES

    if value in THRESHOLD_RULES:
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--threshold must be youden, balanced or a number in [0, 1], got {value!r}"
                          ) from None
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"--threshold must be youden, balanced or a number in [0, 1], got {value}")
    return number


def calibrate(fit: str | Path, apply: str | Path, out: str | Path, *, method: str = "temperature",
              threshold: str | float = "youden", fit_cohort: str = "val", apply_cohort: str = "test",
              orientation: str = "combined", n_boot: int = 0, seed: int = 0,
              abstain_below: float | None = None) -> dict[str, Any]:
    """Fit on FIT, apply to APPLY, write the run (module docstring); returns its metrics."""
    from medvlm._io import write_json_atomic, write_text_atomic
    from medvlm.calibration import CALIBRATION_METHODS
    from medvlm.predictions import predictions_metrics
    from medvlm.runinfo import write_run_info

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"--method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if isinstance(threshold, str):
        threshold = parse_threshold(threshold)
    fit_side = load_side(fit, "FIT", fit_cohort, orientation)
    apply_side = load_side(apply, "APPLY", apply_cohort, orientation)
    target = Path(out).expanduser().resolve()
    for role, side in (("FIT", fit_side), ("APPLY", apply_side)):
        if side.path.resolve().parent == target:
            raise ConfigError(f"--out {out}: is the folder of {role} ({side.path}); a calibrated run needs a "
                              "folder of its own (its predictions.csv would overwrite the input)")
    check_sides(fit_side, apply_side)
    calibration = fit_on(fit_side, method, threshold)
    rows = apply_to(apply_side.rows, calibration)
    if abstain_below is not None:
        from medvlm.predictions import abstain_below as selective

        rows = selective(rows, abstain_below, source=str(apply_side.path))
        calibration["abstain_below"] = abstain_below
    metrics = predictions_metrics(rows, n_boot=n_boot, seed=seed, source=f"APPLY {apply_side.path}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / PREDICTIONS_FILE, rows.to_csv(index=False))
    write_json_atomic(out / "calibration.json", calibration)
    write_json_atomic(out / "metrics.json", metrics)
    config = {"fit": str(fit_side.path.resolve()), "apply": str(apply_side.path.resolve()),
              "fit_cohort": fit_cohort, "apply_cohort": apply_cohort, "orientation": orientation,
              "method": method, "threshold": threshold, "abstain_below": abstain_below,
              "bootstrap": n_boot, "seed": seed,
              **({"task": {"name": apply_side.task}} if apply_side.task else {})}
    write_run_info(out, kind="calibrated", config=config)
    return metrics
