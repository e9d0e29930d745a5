"""The section of a consistency run (summary.json, consistency.csv), and the report's combined
"Consistency" section over all consistency runs (:func:`consistency_overview`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medvlm.report import consistency_view as CV
from medvlm.report.format import _raw_sample, _safe_figure, fmt
from medvlm.report.runs import RunData, _read_csv, _read_json, run_task
from medvlm.vlm.usage import usage_facts


def _consistency_fn(name: str) -> Any:
    """A figure function of :mod:`medvlm.consistency` (``agreement_figure``, ``temperature_figure``)."""
    import medvlm.consistency as C

    return getattr(C, name)


def details(run: RunData, d: dict[str, Any]) -> None:
    """Overall, per-image, per-prompt and per-temperature tables with their figures (summary.json with
    ``per_image``), else the older summary table and answer histogram; a sample of raw answers."""
    from medvlm.report import answer_figures as AF

    task = run_task(run)
    d["facts"].extend(usage_facts(run.info.get("usage")))  # tokens and cost (hosted models), where recorded
    names = CV.names_of(task)
    summary = _read_json(run, "summary.json")
    cons = _read_csv(run, "consistency.csv")
    if CV.has_per_image(summary):
        d["tables"].append(CV.overall_table(summary, names=names))
        d["tables"].append(CV.per_image_table(summary["per_image"], names=names))
        if isinstance(summary.get("per_prompt"), list) and summary["per_prompt"]:
            t = CV.group_table(summary["per_prompt"], "prompt", "Per prompt", names=names)
            rob = summary.get("prompt_robustness")
            if isinstance(rob, Mapping):
                t["note"] = (
                    f"Prompt robustness: over {fmt(rob.get('n_images'))} images asked with several "
                    f"prompts, the majority answer stayed the same under every prompt for a share "
                    f"{fmt(rob.get('same_majority_share'))}."
                )
            d["tables"].append(t)
        if isinstance(summary.get("per_temperature"), list) and summary["per_temperature"]:
            d["tables"].append(CV.group_table(summary["per_temperature"], "temperature", "Per temperature",
                                              names=names))
        fig = _safe_figure(
            run,
            "summary.json",
            lambda: (
                _consistency_fn("agreement_figure")(summary["per_image"], title=run.name, task=task),
                f"{run.name}: share of each answer over the repeats of each image ({task.classes[0]} images "
                "first); "
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
            d["tables"].append(CV.legacy_table(summary, names=names))
        if cons is not None or isinstance(summary, Mapping):
            fig = _safe_figure(
                run,
                "consistency.csv",
                lambda: (
                    AF.answer_distribution_figure(
                        cons if cons is not None and "choice" in cons.columns else None,
                        summary=summary if isinstance(summary, Mapping) else None,
                        title=run.name,
                        task=task,
                    ),
                    f"Answers of {run.name} over repeats of the same image and prompt.",
                ),
            )
            if fig:
                d["figures"].append(fig)
    d["raw"] = _raw_sample(cons)


def consistency_overview(runs: Sequence[RunData]) -> dict[str, Any]:
    """The combined "Consistency" section over all consistency runs: one row per run (``runs``), the
    images of all runs in one table (``images``) and one answers-per-image figure (``figures``), so the
    study's pair of one image per class (two runs of one image each) stands side by side. The names are
    the first run's
    task's (runs of several tasks: each run keeps its own in its section). {} without consistency runs."""
    cons = [r for r in runs if r.kind == "consistency"]
    if not cons:
        return {}
    task = run_task(cons[0])
    answer_names = CV.names_of(task)
    cons = [r for r in cons if run_task(r).name == task.name]
    rows, entries, names = [], [], []
    for r in cons:
        summary = _read_json(r, "summary.json")
        if not isinstance(summary, Mapping):
            continue
        rows.append(CV.run_overview_row(r.name, summary, names=answer_names))
        if CV.has_per_image(summary):
            entries.extend(summary["per_image"])
            names.extend([r.name] * len(summary["per_image"]))
    out: dict[str, Any] = {
        "runs": {
            "title": "Consistency runs",
            "columns": CV.overview_columns(answer_names),
            "rows": rows,
            "left": {0, 2, 8},
            "note": "",
        },
        "images": (CV.per_image_table(entries, run_names=names, title="All images", names=answer_names)
                   if entries else None),
        "figures": [],
    }
    if entries:
        fig = _safe_figure(
            None,
            "summary.json",
            lambda: (
                _consistency_fn("agreement_figure")(entries, title="All runs", task=task),
                "Share of each answer over the repeats of each image, all consistency runs together "
                f"({task.classes[0]} first, then by {task.classes[task.positive_label]} share); green o / "
                "red x: its majority answer is right / wrong.",
            ),
        )
        if fig:
            out["figures"].append(fig)
    return out
