"""The self-contained HTML report built from run folders (``medvlm report RUN [RUN ...] --out FILE``).

The page is built only from the files runs leave on disk (``run.json``, ``predictions.csv``,
``metrics.json``, ``history.csv``, ``patients.csv``, ``slices.csv``, ``consistency.csv``,
``summary.json``, ``train_log.csv``, ``calibration.json``: whichever a run has; a calibrated run's
section also reads the ``run.json`` of the run it calibrates). It is one file: CSS inline, figures inlined
as ``data:image/png;base64`` URIs, no remote resource and no JavaScript. Jinja2 autoescaping is on,
so every string from a model or a file (raw answers, patient ids, config values) arrives escaped.

Library use (the study code adds its own sections)::

    from medvlm.report.html import Section, build_report, html_table
    build_report([run_a, run_b], out / "report.html", title="My study",
                 extra_sections=[Section("Plain-language summary", text="...", position="start"),
                                 Section("Cohort", html=html_table(rows))])

Layout: :mod:`medvlm.report.runs` reads run folders, :mod:`medvlm.report.roles` gives each run its role
and the report order, :mod:`medvlm.report.work` the work folder it was made from,
:mod:`medvlm.report.summary` builds the summary table and the paired tests (:mod:`medvlm.report.sample_notes`:
few patients, "too few to test"), :mod:`medvlm.report.sections` holds the part of a run's section that
depends on its kind (one module per kind), :mod:`medvlm.report.format` the shared formatting helpers.
The study sections (cohorts, plain summary, limitations, reproducibility, CLAIM items) come from
:mod:`medvlm.report.work_sections`, which ``medvlm report``, ``run`` and ``demo`` pass as extra sections.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.control_verdicts import controls_view
from medvlm.report.controls import control_names
from medvlm.report.format import _figure, _slug, fmt, html_table
from medvlm.report.roles import _model_name, order_runs, role_badge, vlm_role
from medvlm.report.runs import RUN_FILES, ReportWarning, RunData, _unique_names, load_run, run_task
from medvlm.report.sample_notes import few_patient_notes
from medvlm.report.sections import RUN_SECTIONS
from medvlm.report.sections.consistency import consistency_overview
from medvlm.report.subgroups import subgroups_view
from medvlm.report.summary import (
    CLASSIFIER_KINDS,
    SUMMARY_METRICS,
    SUMMARY_METRICS_MULTICLASS,
    paired_tests,
    summary_rows,
    test_cohort_predictions,
)
from medvlm.small_samples import MIN_CLASS_PATIENTS, MIN_DISCORDANT

__all__ = [
    "RUN_FILES",
    "ReportWarning",
    "RunData",
    "Section",
    "build_report",
    "consistency_overview",
    "fmt",
    "html_table",
    "load_run",
    "paired_tests",
    "render_report",
    "summary_rows",
    "test_cohort_predictions",
]


@dataclass
class Section:
    """An extra section of the report.

    ``text`` is plain text (escaped; blank lines separate paragraphs); ``html`` is trusted markup the
    caller built (escape anything from files yourself, e.g. with :func:`html_table`). ``position``:
    ``"start"`` (before the results) or ``"end"`` (after the per-run details).
    """

    title: str
    html: str | None = None
    text: str | None = None
    anchor: str | None = None
    position: str = "end"


def _run_details(run: RunData) -> dict[str, Any]:
    """Facts, tables and figures of one run's section: what every run has, then the part of its kind
    (:data:`medvlm.report.sections.RUN_SECTIONS`)."""
    d: dict[str, Any] = {"facts": [], "figures": [], "tables": [], "raw": [],
                         "role": role_badge(vlm_role(run))}
    facts = d["facts"]
    facts.append(("kind", run.kind))
    facts.append(("folder", str(run.path)))
    for key in ("created", "git_revision", "command"):
        if run.info.get(key):
            facts.append((key.replace("_", " "), str(run.info[key])))
    model = _model_name(run)
    if model:
        facts.append(("model", model))
    facts.append(("files", ", ".join(run.files)))
    d["config"] = json.dumps(run.info.get("config"), indent=2, default=str) if run.info.get("config") else ""
    d["versions"] = run.info.get("versions") or {}
    try:
        RUN_SECTIONS.get(run.kind)(run, d)
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        # a run file holds values of an unexpected type somewhere: say so in the run's section
        run.problems.append(f"this section is incomplete: a run file holds unexpected values "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
    return d


# ------------------------------------------------------------------------------------------------- build
def _sections(extra: Iterable[Section | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    from markupsafe import Markup, escape

    out = []
    for s in extra or []:
        if isinstance(s, Mapping):
            s = Section(**s)
        if s.position not in ("start", "end"):
            raise ValueError(f"Section.position must be 'start' or 'end', got {s.position!r}")
        if s.html is not None:
            body = Markup(s.html)
        else:
            paras = [p.strip() for p in (s.text or "").split("\n\n") if p.strip()]
            body = Markup("".join(f"<p>{escape(p)}</p>" for p in paras))
        out.append(
            {"title": s.title, "anchor": s.anchor or _slug(s.title), "body": body, "position": s.position}
        )
    return out


def _label_legend(runs: Sequence[RunData]) -> tuple[str, str, str]:
    """(the header's label legend, the positive and the negative class's name) of the runs' tasks:
    ``"labels: <class 0> = 0, <class 1> = 1 (<positive> positive)"`` for one task, one such part per
    task (named) for
    several, with "the positive class" / "the negative class" then."""
    tasks = list({t.name: t for t in (run_task(r) for r in runs)}.values())

    def legend(t: Any) -> str:
        pos = t.classes[t.positive_label]
        named = ", ".join(f"{c} = {i}" for i, c in enumerate(t.classes))
        return named if t.n_classes > 2 else f"{named} ({pos} positive)"  # multi-class: no positive class

    if len(tasks) == 1:
        t = tasks[0]
        return f"labels: {legend(t)}", t.classes[t.positive_label], t.classes[1 - t.positive_label]
    text = "labels: " + "; ".join(f"{t.name}: {legend(t)}" for t in tasks)
    return text, "the positive class", "the negative class"


def _test_cohorts(runs: Sequence[RunData]) -> list[tuple[str, Any, Any, str]]:
    """(name, test-cohort predictions, class names, unit) of every classifier run that has them."""
    out = []
    for r in runs:
        if r.kind in CLASSIFIER_KINDS:
            try:
                out.append((r.name, test_cohort_predictions(r), run_task(r).classes, run_task(r).unit))
            except DataError:
                continue
    return out


def _overview_figures(runs: Sequence[RunData], positive: str) -> list[dict[str, str]]:
    """The ROC curves and the risk-coverage curves of all scored classifier runs on the test cohort."""
    from medvlm.report import calibration_figures as CF
    from medvlm.report import figures as F
    from medvlm.report.multiclass import ovr_roc_figure
    from medvlm.report.sections._classifier import scored_test_rows

    curves, risks, multi = [], [], []
    for r in runs:
        if r.kind not in CLASSIFIER_KINDS:
            continue
        try:
            tp = test_cohort_predictions(r)
        except DataError:
            continue
        if run_task(r).n_classes > 2:  # no positive class: one-vs-rest curves per class, no risk-coverage
            fig = ovr_roc_figure(r, tp)
            if fig:
                multi.append(fig)
            continue
        if "score" in tp.columns and tp["score"].notna().any():
            curves.append((r.name, tp["label"].to_numpy(), tp["score"].to_numpy(dtype=float)))
        rows = scored_test_rows(r)
        if rows is not None:
            risks.append((r.name, rows["label"].to_numpy(), rows["pred"].to_numpy(dtype=float),
                          rows["score"].to_numpy(dtype=float)))
    out = []
    if curves:
        out.append(_figure(F.roc_figure(curves, title="ROC curves on the test cohort"),
                           f"ROC curves of all runs with scores, test cohort ({positive} positive)."))
    out.extend(multi)
    if risks:
        out.append(_figure(
            CF.risk_coverage_figure(risks, title="Risk-coverage on the test cohort"),
            "Risk-coverage curves of all runs with scores in [0, 1], test cohort: each run keeps its most "
            "confident units first; AURC (lower is better) in the legend. A calibrated run with its own "
            "threshold changes which class is predicted, and so its curve."))
    return out


def render_report(
    runs: Sequence[str | Path],
    *,
    title: str = "medvlm report",
    extra_sections: Iterable[Section | Mapping[str, Any]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    on_problems: Callable[[Path, list[str]], None] | None = None,
) -> str:
    """The report's HTML as a string (see :func:`build_report`)."""
    import jinja2

    if not runs:
        raise DataError("no run folder given")
    data = [load_run(r) for r in runs]
    _unique_names(data)
    data, calibrates = order_runs(data)  # a calibrated run right after the run it calibrates
    labels, positive, negative = _label_legend(data)
    # every task with more than two classes: the K-class summary columns and wording (no positive class)
    multiclass = all(run_task(r).n_classes > 2 for r in data)
    metric_names = [n for _, n in (SUMMARY_METRICS_MULTICLASS if multiclass else SUMMARY_METRICS)]
    summary = []
    for r in data:
        rows = summary_rows(r, n_boot=n_boot, seed=seed)
        for row in rows:
            row["of"] = calibrates.get(r.name, "")
            if multiclass:
                row["cells"], row["counts"] = row["cells_multiclass"], ""
        summary.extend(rows)
    controls = control_names(data)
    for row in summary:
        row["control"] = controls.get(row["run"], "")
    pairs = paired_tests(data, controls=controls)
    few_patients = few_patient_notes(_test_cohorts(data))
    overview_figures = _overview_figures(data, positive)
    details = [
        {"run": r, "anchor": f"run-{i}-{_slug(r.name)}", **_run_details(r)} for i, r in enumerate(data)
    ]
    anchors = {d["run"].name: d["anchor"] for d in details}
    consistency = consistency_overview(data)
    controls_section = controls_view(data, anchors=anchors, n_boot=n_boot, seed=seed)
    subgroups = subgroups_view(data, controls=controls, n_boot=n_boot, seed=seed)
    for row in consistency.get("runs", {}).get("rows", []):
        row[0] = {"v": row[0], "href": "#" + anchors[row[0]]}
    sections = _sections(extra_sections)
    import medvlm

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("report.html.j2")
    html = template.render(
        title=title,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=getattr(medvlm, "__version__", ""),
        runs=data,
        details=details,
        summary=summary,
        few_patients=few_patients,
        min_discordant=MIN_DISCORDANT,
        min_class=MIN_CLASS_PATIENTS,
        metric_names=metric_names,
        multiclass=multiclass,
        n_classes=max(run_task(r).n_classes for r in data),
        max_entropy=f"{math.log2(max(run_task(r).n_classes for r in data)):.2f}",
        pairs=pairs,
        key_pairs=[p for p in pairs if p["key"]],
        other_pairs=[p for p in pairs if not p["key"]],
        consistency=consistency,
        controls=controls_section,
        subgroups=subgroups,
        overview_figures=overview_figures,
        start_sections=[s for s in sections if s["position"] == "start"],
        end_sections=[s for s in sections if s["position"] == "end"],
        n_boot=n_boot,
        labels=labels,
        positive=positive,
        negative=negative,
    )
    for r in data:
        if r.problems and on_problems is not None:
            on_problems(r.path, list(r.problems))
    return html


def build_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = "medvlm report",
    extra_sections: Iterable[Section | Mapping[str, Any]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    on_problems: Callable[[Path, list[str]], None] | None = None,
) -> Path:
    """Write one self-contained HTML page comparing ``runs`` to ``out`` (atomically) and return its path.

    Sections: summary table of all classifier runs side by side (per fold/cohort for a CNN, per
    orientation for a VLM, 95% CIs), paired tests between runs on the test cohort (McNemar and
    DeLong), figures, "Does the model look at the image?" (controls of a real-image VLM run:
    :mod:`medvlm.report.controls`), test-cohort metrics per patient subgroup
    (:mod:`medvlm.report.subgroups`), per-run details (provenance, unparsed rate and a sample of raw
    answers for VLM and consistency runs), then ``extra_sections`` (:class:`Section` or dicts with its
    fields).

    Args:
        runs: run folders (each with ``run.json``; the kind is inferred from the files without one).
        out: the HTML file to write.
        n_boot: bootstrap resamples for metrics the run files do not already hold (0: no CIs).
        seed: bootstrap seed.
        on_problems: called once per run with problems, ``(run folder, its problems)``, after rendering.

    Raises:
        DataError: a run folder is missing or holds no run file. Unreadable files inside a run do not
        stop the report; each is listed under "Problems" in that run's section.
    """
    from medvlm._io import write_text_atomic

    html = render_report(runs, title=title, extra_sections=extra_sections, n_boot=n_boot, seed=seed,
                         on_problems=on_problems)
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
    write_text_atomic(out, html)
    return out
