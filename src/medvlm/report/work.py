"""Which work folder each run was made from, and the runs grouped by it.

Every command that makes a run records its work folder in ``run.json`` (``config.work``; a calibrated run
has the work folder of the run it calibrates). The report's study sections (cohorts, limitations, CLAIM
items) and the subgroup tables read that folder, and the paired tests compare only runs of one work
folder: two work folders are two sets of patients (or two preparations of them), even where the patient
ids coincide, as they do in two synthetic cohorts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medvlm.report.roles import calibration_source
from medvlm.report.runs import RunData, _config_path


def run_work(run: RunData) -> Path | None:
    """The work folder ``run`` was made from (``config.work``; for a calibrated run, that of the run it
    calibrates), or None when its run.json names none."""
    if run.kind == "calibrated":
        source = calibration_source(run)
        return run_work(source) if source is not None and source.kind != "calibrated" else None
    return _config_path(run, "work")


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name one folder (resolved; compared as given when they cannot be resolved)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def different_work(a: RunData, b: RunData) -> str | None:
    """Why two runs cannot be paired because they come from different work folders, or None (same
    folder, or one of them names none)."""
    wa, wb = run_work(a), run_work(b)
    if wa is None or wb is None or same_folder(wa, wb):
        return None
    return (f"made from different work folders ({a.name}: {wa}; {b.name}: {wb}): not the same patients, "
            "or not prepared alike")


@dataclass
class WorkGroup:
    """The runs made from one work folder; ``work`` None: runs whose work folder is unknown or gone."""

    work: Path | None
    runs: list[RunData] = field(default_factory=list)


def group_by_work(runs: Sequence[RunData]) -> tuple[list[WorkGroup], list[str]]:
    """The runs grouped by work folder, in the order each folder first appears (a last group with
    ``work`` None holds the runs whose work folder is not recorded or not found here), and one note
    per such run."""
    groups: list[WorkGroup] = []
    orphans = WorkGroup(None)
    notes: list[str] = []
    for run in runs:
        work = run_work(run)
        if work is None:
            if run.kind != "finetune":  # an adapter's training: no cohort of its own in the report
                notes.append(f"{run.name}: its run.json names no work folder; its cohorts are not shown")
            orphans.runs.append(run)
            continue
        if not (work / "manifest.csv").is_file():
            notes.append(f"{run.name}: its work folder {work} is not found here (moved or deleted); its "
                         "cohorts, limitations and CLAIM items are not shown")
            orphans.runs.append(run)
            continue
        for group in groups:
            if group.work is not None and same_folder(group.work, work):
                group.runs.append(run)
                break
        else:
            groups.append(WorkGroup(work, [run]))
    if orphans.runs:
        groups.append(orphans)
    return groups, notes
