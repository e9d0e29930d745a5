"""The report's subgroup tables: every classifier run's test-cohort metrics per patient subgroup.

A patient's subgroups come from the work folder's ``manifest.csv`` (columns ``source`` and ``age``,
written by ``prepare``; :mod:`medvlm.data.subgroups`): the contributing collection and the age band
(:func:`medvlm.data.subgroups.age_band`); an empty value is the subgroup ``unknown`` (the BraTS 2020
release has ages for HGG patients only). A CNN or VLM run names its work folder in ``run.json``
(``config.work``); a calibrated run uses the work folder of the run it calibrates (its APPLY run).

Each subgroup shows accuracy, sensitivity, specificity and AUC with 95% bootstrap CIs that resample the
subgroup's patients (:func:`medvlm.report.quick_metrics.frame_metrics`), or "too small to read" and no
metric when it has fewer than :data:`MIN_PATIENTS` patients or one class only: a metric of 3 patients
reads as a finding and is none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _ci_text, fmt
from medvlm.report.runs import RunData, run_task
from medvlm.report.work import run_work

#: a subgroup with fewer patients than this (or one class only) shows no metric
MIN_PATIENTS = 10
UNKNOWN = "unknown"
ALL = "all test patients"
#: (manifest-derived column, heading)
GROUPINGS = (("source", "Contributing collection"), ("age_band", "Age band (years)"))
TOO_SMALL = "too small to read"


def patient_subgroups(work: Path) -> Any:
    """``{patient_id: {"source": ..., "age_band": ...}}`` as a DataFrame indexed by ``patient_id`` from
    ``work/manifest.csv`` (empty values -> :data:`UNKNOWN`). DataError with the reason when the file is
    missing, unreadable or older than the subgroup columns."""
    import pandas as pd

    from medvlm.data.subgroups import age_band

    path = Path(work) / "manifest.csv"
    if not path.is_file():
        raise DataError(f"the work folder {work} has no manifest.csv here")
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} could not be read ({' '.join(str(exc).split())[:160]})") from None
    missing = [c for c in ("patient_id", "source", "age") if c not in manifest.columns]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)} column (prepared before subgroups were "
                        "recorded: run prepare again)")
    out = pd.DataFrame({
        "source": manifest["source"].str.strip().replace("", UNKNOWN).to_numpy(),
        "age_band": [age_band(a) or UNKNOWN for a in manifest["age"]],
    }, index=manifest["patient_id"].str.strip())
    return out[~out.index.duplicated()]


def _order(by: str, values: Sequence[str], counts: Mapping[str, int]) -> list[str]:
    from medvlm.data.subgroups import AGE_BANDS

    known = [v for v in dict.fromkeys(values) if v != UNKNOWN]
    if by == "age_band":
        bands = [label for _, label in AGE_BANDS]
        known.sort(key=lambda v: (bands.index(v) if v in bands else len(bands), v))
    else:
        known.sort(key=lambda v: (-counts[v], v))
    return known + ([UNKNOWN] if UNKNOWN in values else [])


def _metric_cells(m: Mapping[str, Any]) -> list[dict[str, str]]:
    from medvlm.report.quick_metrics import READ_METRICS

    return [{"value": fmt(m.get(k)), "ci": _ci_text(m.get(f"{k}_ci"))} for k in READ_METRICS]


def subgroup_rows(run: RunData, groups: Any, by: str, *, n_boot: int = 1000, seed: int = 0
                  ) -> list[dict[str, Any]]:
    """One row per subgroup of ``by`` (a column of :func:`patient_subgroups`) of the run's test cohort,
    after a first row for all test patients: ``subgroup``, ``patients``, ``classes`` (units per class,
    ``"n0 / n1"``), and either ``cells`` (accuracy, sensitivity, specificity, AUC, each ``{"value",
    "ci"}``) or ``too_small`` (why no metric is shown). Raises DataError without test predictions."""
    from medvlm.report.quick_metrics import frame_metrics
    from medvlm.report.summary import test_cohort_predictions

    df = test_cohort_predictions(run)
    task = run_task(run)
    values = groups[by].reindex(df["patient_id"].astype(str)).fillna(UNKNOWN).astype(str).tolist()
    df = df.assign(_group=values)
    patients_per_group = df.groupby("_group")["patient_id"].nunique().to_dict()
    rows = []
    parts = [(ALL, df)] + [(v, df[df["_group"] == v]) for v in _order(by, values, patients_per_group)]
    for name, part in parts:
        n_patients = int(part["patient_id"].nunique())
        labels = part["label"].astype(int)
        row: dict[str, Any] = {
            "run": run.name, "subgroup": name, "patients": n_patients,
            "classes": " / ".join(str(int((labels == i).sum())) for i in range(len(task.classes))),
        }
        present = sorted(set(labels.tolist()))
        if n_patients < MIN_PATIENTS:
            row["too_small"] = f"{n_patients} patient{'s' if n_patients != 1 else ''}"
        elif len(present) < 2:
            row["too_small"] = f"{task.classes[present[0]]} only" if present else "no labels"
        else:
            m = frame_metrics(part.drop(columns="_group"), n_boot=n_boot, seed=seed)
            if not m["n"]:
                row["too_small"] = "no answered unit"
            else:
                row["cells"] = _metric_cells(m)
        rows.append(row)
    return rows


def subgroups_view(runs: Sequence[RunData], *, controls: Mapping[str, str] | None = None, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """What the template's subgroup section shows: ``tables`` (one per grouping: ``by``, ``title``,
    ``rows`` of the main runs, ``control_rows`` of the runs in ``controls``, a name -> reference map)
    and ``missing`` (``[run, why no subgroups]``); {} when no classifier run names a work folder."""
    from medvlm.report.summary import CLASSIFIER_KINDS

    controls = controls or {}
    manifests: dict[str, Any] = {}
    found: list[tuple[RunData, Any]] = []
    missing: list[list[str]] = []
    multiclass = False  # a run left out for its K > 2 task: the section says so
    for run in runs:
        if run.kind not in CLASSIFIER_KINDS:
            continue
        task = run_task(run)
        if task.n_classes > 2:  # the subgroup columns (sensitivity, specificity) need a positive class
            missing.append([run.name, f"subgroup metrics are binary-only (sensitivity, specificity); "
                                      f"{task.name} has {task.n_classes} classes"])
            multiclass = True
            continue
        work = run_work(run)
        if work is None:
            missing.append([run.name, "run.json names no work folder (config.work)"])
            continue
        key = str(work)
        if key not in manifests:
            try:
                manifests[key] = patient_subgroups(work)
            except DataError as exc:
                manifests[key] = exc
        if isinstance(manifests[key], DataError):
            why = str(manifests[key])
            if task.spec is not None and "run prepare again" in why:  # a YAML task records no subgroups
                why = f"{task.name}'s manifest records no contributing collection or age"
            missing.append([run.name, why])
            continue
        found.append((run, manifests[key]))
    if not found and not manifests and not multiclass:  # no run names a work folder: nothing to say
        return {}
    tables = []
    for by, title in GROUPINGS:
        rows: list[dict[str, Any]] = []
        control_rows: list[dict[str, Any]] = []
        for run, groups in found:
            try:
                part = subgroup_rows(run, groups, by, n_boot=n_boot, seed=seed)
            except DataError as exc:
                if by == GROUPINGS[0][0]:
                    missing.append([run.name, str(exc)])
                continue
            (control_rows if run.name in controls else rows).extend(part)
        if rows or control_rows:
            tables.append({"by": by, "title": title, "rows": rows, "control_rows": control_rows})
    brats = any(run_task(run).spec is None for run, _ in found)  # the built-in (BraTS) tasks
    return {"tables": tables, "missing": missing, "min_patients": MIN_PATIENTS, "brats": brats}
