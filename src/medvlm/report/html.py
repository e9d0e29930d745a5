"""The self-contained HTML report built from run folders (``medvlm report RUN [RUN ...] --out FILE``).

The page is built only from the files runs leave on disk (``run.json``, ``predictions.csv``,
``metrics.json``, ``history.csv``, ``patients.csv``, ``slices.csv``, ``consistency.csv``,
``summary.json``, ``train_log.csv``: whichever a run has). It is one file: CSS inline, figures inlined
as ``data:image/png;base64`` URIs, no remote resource and no JavaScript. Jinja2 autoescaping is on,
so every string from a model or a file (raw answers, patient ids, config values) arrives escaped.

Library use (the study code adds its own sections)::

    from medvlm.report.html import Section, build_report, html_table
    build_report([run_a, run_b], out / "report.html", title="My study",
                 extra_sections=[Section("Plain-language summary", text="...", position="start"),
                                 Section("Cohort", html=html_table(rows))])

Layout: :mod:`medvlm.report.runs` reads run folders, :mod:`medvlm.report.summary` builds the summary
table and the paired tests, :mod:`medvlm.report.format` holds the shared formatting helpers.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _figure, _is_num, _raw_sample, _safe_figure, _slug, fmt, html_table
from medvlm.report.runs import (
    RUN_FILES,
    ReportWarning,
    RunData,
    _finetune_config,
    _model_name,
    _read_csv,
    _read_json,
    _unique_names,
    load_run,
    vlm_role,
)
from medvlm.report.summary import SUMMARY_METRICS, paired_tests, summary_rows, test_cohort_predictions

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


def _consistency_fn(name: str) -> Any:
    """A figure function of :mod:`medvlm.consistency` (``agreement_figure``, ``temperature_figure``)."""
    import medvlm.consistency as C

    return getattr(C, name)


def _finetune_facts(ft: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Method, rank, epochs, steps and the selected epoch of a fine-tuning (from finetune_config.json)."""
    if not ft:
        return []
    hp = ft.get("hyperparameters") if isinstance(ft.get("hyperparameters"), Mapping) else {}
    out = [("method", str(ft.get("method") or hp.get("method") or "–"))]
    if hp.get("rank") is not None:
        out.append(("LoRA rank / alpha", f"{hp.get('rank')} / {fmt(hp.get('alpha'), 1)}"))
    epochs = hp.get("epochs")
    if epochs is not None or hp.get("max_steps") is not None:
        out.append(
            ("epochs", fmt(epochs) + (f" (max_steps {hp['max_steps']})" if hp.get("max_steps") else ""))
        )
    if ft.get("steps") is not None:
        out.append(("steps trained", fmt(ft["steps"])))
    if ft.get("selected_epoch") is not None:
        how = f"{ft.get('select', '')} by {ft.get('select_metric', '')}".strip() if ft.get("select") else ""
        out.append(("selected epoch", fmt(ft["selected_epoch"]) + (f" ({how})" if how else "")))
    if ft.get("base_model"):
        out.append(("base model", str(ft["base_model"])))
    if ft.get("n_train") is not None:
        out.append(("training examples", f"{fmt(ft['n_train'])} (validation {fmt(ft.get('n_val'))})"))
    return out


def _validation_table(log: Any, selected: int | None) -> dict[str, Any] | None:
    """Validation metrics per epoch end (rows of train_log.csv with val_* values); selected row marked."""
    import pandas as pd

    vcols = [c for c in log.columns if str(c).startswith("val_") and log[c].notna().any()]
    if not vcols or "epoch" not in log.columns:
        return None
    rows = []
    for _, r in log[log[vcols].notna().any(axis=1)].iterrows():
        ep = int(r["epoch"]) if pd.notna(r["epoch"]) else None
        mark = "selected" if selected is not None and ep == selected else ("base model" if ep == 0 else "")
        cells = [fmt(ep), *(fmt(float(r[c])) if pd.notna(r[c]) else "–" for c in vcols)]
        cells.append({"v": mark, "cls": "good"} if mark == "selected" else mark)
        rows.append(cells)
    return {
        "title": "Validation per epoch (train_log.csv)",
        "columns": ["epoch", *vcols, ""],
        "rows": rows,
        "left": set(),
        "note": "",
    }


def _adapter_facts(run: RunData) -> list[tuple[str, str]]:
    cfg = run.info.get("config") or {}
    adapter = cfg.get("adapter") if isinstance(cfg, Mapping) else None
    if not adapter:
        return [("variant", "general (zero-shot, no adapter)")] if run.kind == "vlm" else []
    out = [("variant", "fine-tuned"), ("adapter", str(adapter))]
    ft = _finetune_config(adapter)
    if ft:
        out += [(f"adapter {k}", v) for k, v in _finetune_facts(ft) if k != "base model"]
    elif not Path(adapter).is_dir():
        run.notes.append(f"adapter folder {adapter} not found here; its fine-tuning settings are not shown")
    return out


def _run_details(run: RunData) -> dict[str, Any]:
    """Facts, tables and figures of one run's section."""
    import pandas as pd

    from medvlm.report import figures as F

    d: dict[str, Any] = {"facts": [], "figures": [], "tables": [], "raw": [], "role": vlm_role(run) or ""}
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

    if run.kind in ("cnn", "vlm"):
        try:
            tp = test_cohort_predictions(run)
            d["figures"].append(
                _figure(
                    F.confusion_matrix_figure(tp["label"], tp["pred"], title=f"{run.name}: test cohort"),
                    f"Confusion matrix of {run.name} on the test cohort.",
                )
            )
        except DataError as exc:
            if str(exc) not in run.problems:
                run.notes.append(str(exc))

    if run.kind == "cnn":
        hist = _read_csv(run, "history.csv")
        if hist is not None:
            fig = _safe_figure(
                run,
                "history.csv",
                lambda: (
                    F.learning_curve_figure(hist, title=run.name),
                    f"Learning curves of {run.name} (history.csv).",
                ),
            )
            if fig:
                d["figures"].insert(0, fig)
    elif run.kind == "vlm":
        facts.extend(_adapter_facts(run))
        metrics = _read_json(run, "metrics.json") or {}
        slices = _read_csv(run, "slices.csv")
        n_calls = metrics.get("n_calls") if isinstance(metrics, Mapping) else None
        n_unparsed = metrics.get("n_unparsed") if isinstance(metrics, Mapping) else None
        n_failed = metrics.get("n_failed") if isinstance(metrics, Mapping) else None
        if slices is not None and "choice" in slices.columns:
            counts = F.answer_counts(slices)
            n_calls = n_calls if n_calls is not None else len(slices)
            n_unparsed = n_unparsed if n_unparsed is not None else counts["unparsed"]
            d["tables"].append(
                {
                    "title": "Answers (slices.csv)",
                    "columns": ["LGG (0)", "HGG (1)", "no glioma (2)", "unparsed", "total"],
                    "rows": [
                        [counts["0"], counts["1"], counts["2"], counts["unparsed"], sum(counts.values())]
                    ],
                    "left": set(),
                    "note": "",
                }
            )
        facts.append(("model calls", fmt(n_calls)))
        facts.append(("unparsed answers", fmt(n_unparsed)))
        if _is_num(n_calls) and _is_num(n_unparsed) and n_calls:
            facts.append(("unparsed rate", f"{100 * n_unparsed / n_calls:.1f}%"))
        if n_failed is not None:
            facts.append(("failed calls", fmt(n_failed)))
        pats = _read_csv(run, "patients.csv")
        if pats is not None:
            try:
                for o, fig in F.vote_figures(pats).items():
                    d["figures"].append(
                        _figure(
                            fig,
                            f"{run.name}, {o}: share of HGG votes per patient (GLDR), "
                            "patients ordered by true label; markers show TP/FP/TN/FN "
                            "of the majority vote.",
                        )
                    )
            except (DataError, KeyError, ValueError) as exc:
                run.problems.append(f"patients.csv could not be drawn: {exc}")
            if {"orientation", "label", "score"} <= set(pats.columns) and pats["score"].notna().any():
                curves = [
                    (str(o), part["label"].to_numpy(), part["score"].to_numpy(dtype=float))
                    for o, part in pats.groupby("orientation", sort=False)
                ]
                fig = _safe_figure(
                    run,
                    "patients.csv",
                    lambda: (
                        F.roc_figure(curves, title=f"{run.name}: ROC per orientation"),
                        f"ROC curves of {run.name} per orientation (patient score from patients.csv).",
                    ),
                )
                if fig:
                    d["figures"].append(fig)
        d["raw"] = _raw_sample(slices)
    elif run.kind == "consistency":
        from medvlm.report import consistency_view as CV

        summary = _read_json(run, "summary.json")
        cons = _read_csv(run, "consistency.csv")
        if CV.has_per_image(summary):
            d["tables"].append(CV.overall_table(summary))
            d["tables"].append(CV.per_image_table(summary["per_image"]))
            if isinstance(summary.get("per_prompt"), list) and summary["per_prompt"]:
                t = CV.group_table(summary["per_prompt"], "prompt", "Per prompt")
                rob = summary.get("prompt_robustness")
                if isinstance(rob, Mapping):
                    t["note"] = (
                        f"Prompt robustness: over {fmt(rob.get('n_images'))} images asked with several "
                        f"prompts, the majority answer stayed the same under every prompt for a share "
                        f"{fmt(rob.get('same_majority_share'))}."
                    )
                d["tables"].append(t)
            if isinstance(summary.get("per_temperature"), list) and summary["per_temperature"]:
                d["tables"].append(
                    CV.group_table(summary["per_temperature"], "temperature", "Per temperature")
                )
            fig = _safe_figure(
                run,
                "summary.json",
                lambda: (
                    _consistency_fn("agreement_figure")(summary["per_image"], title=run.name),
                    f"{run.name}: share of each answer over the repeats of each image (LGG images first); "
                    "the marker above a bar says whether its majority answer is right.",
                ),
            )
            if fig:
                d["figures"].append(fig)
            if isinstance(summary.get("per_temperature"), list) and len(summary["per_temperature"]) > 1:
                fig = _safe_figure(
                    run,
                    "summary.json",
                    lambda: (
                        _consistency_fn("temperature_figure")(
                            summary["per_temperature"], title=f"{run.name}: temperature sweep"
                        ),
                        f"{run.name}: agreement, flip rate, entropy and accuracy against the sampling "
                        "temperature.",
                    ),
                )
                if fig:
                    d["figures"].append(fig)
        else:
            if isinstance(summary, Mapping):
                d["tables"].append(CV.legacy_table(summary))
            if cons is not None or isinstance(summary, Mapping):
                fig = _safe_figure(
                    run,
                    "consistency.csv",
                    lambda: (
                        F.answer_distribution_figure(
                            cons if cons is not None and "choice" in cons.columns else None,
                            summary=summary if isinstance(summary, Mapping) else None,
                            title=run.name,
                        ),
                        f"Answers of {run.name} over repeats of the same image and prompt.",
                    ),
                )
                if fig:
                    d["figures"].append(fig)
        d["raw"] = _raw_sample(cons)
    elif run.kind == "finetune":
        ft = _finetune_config(run.path)
        selected = ft.get("selected_epoch") if isinstance(ft.get("selected_epoch"), int) else None
        facts.extend(_finetune_facts(ft))
        log = _read_csv(run, "train_log.csv")
        if log is not None:
            fig = _safe_figure(
                run,
                "train_log.csv",
                lambda: (
                    F.loss_curve_figure(log, title=run.name, selected_epoch=selected),
                    f"Fine-tuning of {run.name} (train_log.csv): training loss per optimizer step and the "
                    "validation metrics at each epoch end (epoch 0 = the base model)"
                    + (
                        f"; the dashed line marks the selected epoch {selected}."
                        if selected is not None
                        else "."
                    ),
                ),
            )
            if fig:
                d["figures"].append(fig)
            if "loss" in log.columns and log["loss"].notna().any():
                facts.append(
                    (
                        "optimizer steps",
                        fmt(int(pd.to_numeric(log["step"], errors="coerce").max()))
                        if "step" in log.columns
                        else "–",
                    )
                )
                facts.append(("final training loss", fmt(float(log["loss"].dropna().iloc[-1]))))
            t = _validation_table(log, selected)
            if t:
                d["tables"].append(t)
    return d


# ------------------------------------------------------------------------------------------------- build
def consistency_overview(runs: Sequence[RunData]) -> dict[str, Any]:
    """The combined "Consistency" section over all consistency runs: one row per run (``runs``), the
    images of all runs in one table (``images``) and one answers-per-image figure (``figures``), so the
    study's HGG/LGG pair (two runs of one image each) stands side by side. {} without consistency runs."""
    from medvlm.report import consistency_view as CV

    cons = [r for r in runs if r.kind == "consistency"]
    if not cons:
        return {}
    rows, entries, names = [], [], []
    for r in cons:
        summary = _read_json(r, "summary.json")
        if not isinstance(summary, Mapping):
            continue
        rows.append(CV.run_overview_row(r.name, summary))
        if CV.has_per_image(summary):
            entries.extend(summary["per_image"])
            names.extend([r.name] * len(summary["per_image"]))
    out: dict[str, Any] = {
        "runs": {
            "title": "Consistency runs",
            "columns": CV.OVERVIEW_COLUMNS,
            "rows": rows,
            "left": {0, 2, 8},
            "note": "",
        },
        "images": CV.per_image_table(entries, run_names=names, title="All images") if entries else None,
        "figures": [],
    }
    if entries:
        fig = _safe_figure(
            None,
            "summary.json",
            lambda: (
                _consistency_fn("agreement_figure")(entries, title="All runs"),
                "Share of each answer over the repeats of each image, all consistency runs together "
                "(LGG first, then by HGG share); green o / red x: its majority answer is right / wrong.",
            ),
        )
        if fig:
            out["figures"].append(fig)
    return out


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


def render_report(
    runs: Sequence[str | Path],
    *,
    title: str = "medvlm report",
    extra_sections: Iterable[Section | Mapping[str, Any]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> str:
    """The report's HTML as a string (see :func:`build_report`)."""
    import jinja2

    from medvlm.report import figures as F

    if not runs:
        raise DataError("no run folder given")
    data = [load_run(r) for r in runs]
    _unique_names(data)
    summary = []
    for r in data:
        summary.extend(summary_rows(r, n_boot=n_boot, seed=seed))
    pairs = paired_tests(data)
    curves = []
    for r in data:
        if r.kind not in ("cnn", "vlm"):
            continue
        try:
            tp = test_cohort_predictions(r)
        except DataError:
            continue
        if "score" in tp.columns and tp["score"].notna().any():
            curves.append((r.name, tp["label"].to_numpy(), tp["score"].to_numpy(dtype=float)))
    overview_figures = []
    if curves:
        overview_figures.append(
            _figure(
                F.roc_figure(curves, title="ROC curves on the test cohort"),
                "ROC curves of all runs with scores, test cohort (HGG positive).",
            )
        )
    details = [
        {"run": r, "anchor": f"run-{i}-{_slug(r.name)}", **_run_details(r)} for i, r in enumerate(data)
    ]
    anchors = {d["run"].name: d["anchor"] for d in details}
    consistency = consistency_overview(data)
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
    return template.render(
        title=title,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=getattr(medvlm, "__version__", ""),
        runs=data,
        details=details,
        summary=summary,
        metric_names=[n for _, n in SUMMARY_METRICS],
        pairs=pairs,
        key_pairs=[p for p in pairs if p["key"]],
        other_pairs=[p for p in pairs if not p["key"]],
        consistency=consistency,
        overview_figures=overview_figures,
        start_sections=[s for s in sections if s["position"] == "start"],
        end_sections=[s for s in sections if s["position"] == "end"],
        n_boot=n_boot,
    )


def build_report(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = "medvlm report",
    extra_sections: Iterable[Section | Mapping[str, Any]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML page comparing ``runs`` to ``out`` (atomically) and return its path.

    Sections: summary table of all classifier runs side by side (per fold/cohort for a CNN, per
    orientation for a VLM, 95% CIs), paired tests between runs on the test cohort (McNemar and
    DeLong), figures, per-run details (provenance, unparsed rate and a sample of raw answers for VLM
    and consistency runs), then ``extra_sections`` (:class:`Section` or dicts with its fields).

    Args:
        runs: run folders (each with ``run.json``; the kind is inferred from the files without one).
        out: the HTML file to write.
        n_boot: bootstrap resamples for metrics the run files do not already hold (0: no CIs).
        seed: bootstrap seed.

    Raises:
        DataError: a run folder is missing or holds no run file. Unreadable files inside a run do not
        stop the report; each is listed under "Problems" in that run's section.
    """
    from medvlm._io import write_text_atomic

    html = render_report(runs, title=title, extra_sections=extra_sections, n_boot=n_boot, seed=seed)
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
    write_text_atomic(out, html)
    return out
