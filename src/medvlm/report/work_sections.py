"""The report's study sections, built from the work folder each run's ``run.json`` names.

Cohorts, "What the numbers say", limitations, reproducibility and the CLAIM items, whichever command
made the runs (``medvlm report`` on runs of ``prepare``/``split``/``train-cnn``/``eval-vlm``, or ``medvlm
run``/``demo``, which also pass their experiment config). Runs made from one work folder get the
sections as the demo always had them. Runs made from several work folders are never mixed: a "Work
folders" warning at the top names the folders and their runs, and each folder gets its own cohorts,
summary, limitations and CLAIM items (titles numbered by folder). A run whose work folder is not
recorded or not found here is named in that warning; the other sections still render.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvlm.errors import MedVLMError
from medvlm.report.html import Section, html_table, load_run
from medvlm.report.work import WorkGroup, group_by_work
from medvlm.study_sections import (
    GENERIC_LIMITATIONS,
    claim_rows,
    cohort_caption,
    cohort_rows,
    limitations,
    plain_summary,
    reproducibility_rows,
)
from medvlm.vlm._secrets import redact_record

#: what can go wrong reading a work folder or a run file; the section then says so instead
_SECTION_ERRORS = (MedVLMError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def _guarded(build: Any) -> tuple[str | None, str | None]:
    """(html, None) from ``build()``, or (None, the reason it could not be built)."""
    try:
        return build(), None
    except _SECTION_ERRORS as exc:
        return None, f"this section could not be built: {' '.join(str(exc).split())[:300]}"


def _section(title: str, anchor: str, build: Any, *, position: str = "end", text: bool = False) -> Section:
    body, problem = _guarded(build)
    if problem is not None:
        return Section(title=title, anchor=anchor, position=position, text=problem)
    content = {"text": body} if text else {"html": body}
    return Section(title=title, anchor=anchor, position=position, **content)


def _warning_html(lines: Sequence[str]) -> str:
    from markupsafe import escape

    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<div class="problems"><strong>Read with care</strong><ul>{items}</ul></div>'


def _group_sections(group: WorkGroup, number: int | None, config: Any, *, apart: bool = False
                    ) -> dict[str, list[Section]]:
    """Cohorts and summary (``start``), limitations and CLAIM items (``limits``, ``claim``) of one work
    folder's runs. ``number``: the folder's number when the report has several work folders; None: the
    only one, titled as the demo always had them. The runs without a work folder here (``group.work``
    None) get their summary only, titled apart when other runs have a work folder (``apart``)."""
    paths = [r.path for r in group.runs]
    out: dict[str, list[Section]] = {"start": [], "limits": [], "claim": []}
    if group.work is None:
        title, anchor = ("What the numbers say", "plain-summary") if not apart else (
            "What the numbers say (runs without a work folder here)", "plain-summary-none")
        out["start"].append(_section(title, anchor, lambda: plain_summary(paths), position="start",
                                     text=True))
        return out
    work = group.work
    suffix = "" if number is None else f" (work folder {number})"
    tag = "" if number is None else f"-{number}"
    names = ", ".join(r.name for r in group.runs)
    lead = "" if number is None else f"Work folder {number}: {work}; runs {names}. "
    out["start"] += [
        _section(f"Cohorts{suffix}", f"cohorts{tag}",
                 lambda: html_table(cohort_rows(work), caption=lead + cohort_caption(work)),
                 position="start"),
        _section(f"What the numbers say{suffix}", f"plain-summary{tag}", lambda: plain_summary(paths),
                 position="start", text=True)]
    out["limits"].append(_section(f"Limitations{suffix}", f"limitations{tag}", lambda: limitations(work),
                                  text=True))
    out["claim"].append(_section(f"CLAIM checklist (items the run records fill){suffix}", f"claim{tag}",
                                 lambda: html_table(claim_rows(work, paths, config))))
    return out


def study_sections(runs: Sequence[str | Path], *, config: Any = None) -> list[Section]:
    """The study sections for :func:`medvlm.report.html.build_report`: at the start the work-folder
    warning (when needed), cohorts and "What the numbers say"; at the end limitations, reproducibility and
    the CLAIM items.

    ``config``: the :class:`medvlm.experiment.ExperimentConfig` when ``medvlm run``/``demo`` made the runs
    (its description, data source and resolved config are then shown); None for ``medvlm report``.
    """
    loaded = [load_run(r) for r in runs]
    groups, notes = group_by_work(loaded)
    with_work = [g for g in groups if g.work is not None]
    if with_work:  # an adapter's training run without a work folder: nothing to summarise
        groups = [g for g in groups if g.work is not None or any(r.kind != "finetune" for r in g.runs)]
    numbered = len(with_work) > 1
    warnings = list(notes)
    if len(with_work) > 1:
        listing = "; ".join(f"work folder {i}: {g.work} (runs {', '.join(r.name for r in g.runs)})"
                            for i, g in enumerate(with_work, 1))
        warnings.insert(0, f"these runs were made from {len(with_work)} different work folders ({listing}): "
                           "each gets its own cohorts, summary, limitations and CLAIM items below, and runs "
                           "of different work folders are not compared in the paired tests")
    parts: dict[str, list[Section]] = {"start": [], "limits": [], "claim": []}
    if config is not None and config.description:
        parts["start"].append(Section(title="About this run", position="start", text=config.description))
    if warnings:
        parts["start"].append(Section(title="Work folders", anchor="work-folders", position="start",
                                      html=_warning_html(warnings)))
    for i, group in enumerate(groups, 1):
        sections = _group_sections(group, i if numbered else None, config, apart=bool(with_work))
        for key, found in sections.items():
            parts[key] += found
    if not with_work:  # no work folder: the limitations of every study still apply
        parts["limits"].append(Section(title="Limitations", anchor="limitations", text=GENERIC_LIMITATIONS))

    def reproducibility() -> str:
        html = html_table(reproducibility_rows([r.path for r in loaded]))
        if config is not None:
            html += html_table([{"experiment config (JSON)": json.dumps(
                redact_record(config.model_dump(mode="json")))}])
        return html

    return [*parts["start"], *parts["limits"],
            _section("Reproducibility", "reproducibility", reproducibility), *parts["claim"]]
