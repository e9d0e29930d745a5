"""The section of a VLM run: adapter (general or fine-tuned), answer counts, unparsed rate, the
test-cohort confusion matrix, reliability diagram and risk-coverage curve, vote figures, ROC per
orientation and a sample of raw answers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import _figure, _is_num, _raw_sample, _safe_figure, fmt
from medvlm.report.runs import RunData, _finetune_config, _read_csv, _read_json, run_task
from medvlm.report.sections._classifier import add_calibration_figures, add_confusion_matrix
from medvlm.report.sections.finetune import _finetune_facts
from medvlm.vlm.usage import usage_facts


def _adapter_facts(run: RunData) -> list[tuple[str, str]]:
    cfg = run.info.get("config") or {}
    adapter = cfg.get("adapter") if isinstance(cfg, Mapping) else None
    shots = int(cfg.get("shots") or 0) if isinstance(cfg, Mapping) else 0
    few = [("few-shot", f"{shots} labelled example(s) of the training cohort of fold {cfg.get('fold', 0)} "
                        "before each question")] if shots else []
    if not adapter:
        variant = "few-shot (no adapter)" if shots else "general (zero-shot, no adapter)"
        return [("variant", variant), *few] if run.kind == "vlm" else []
    out = [("variant", "fine-tuned"), ("adapter", str(adapter)), *few]
    ft = _finetune_config(adapter)
    if ft:
        out += [(f"adapter {k}", v) for k, v in _finetune_facts(ft) if k != "base model"]
    elif not Path(adapter).is_dir():
        run.notes.append(f"adapter folder {adapter} not found here; its fine-tuning settings are not shown")
    return out


def details(run: RunData, d: dict[str, Any]) -> None:
    """The confusion matrix on the test cohort, then what the model answered (slices.csv, and
    patients.csv or units.csv), names from the run's task."""
    from medvlm.report import answer_figures as AF
    from medvlm.report import figures as F

    task = run_task(run)
    add_confusion_matrix(run, d)
    add_calibration_figures(run, d)
    facts = d["facts"]
    facts.extend(_adapter_facts(run))
    metrics = _read_json(run, "metrics.json") or {}
    slices = _read_csv(run, "slices.csv")
    n_calls = metrics.get("n_calls") if isinstance(metrics, Mapping) else None
    n_unparsed = metrics.get("n_unparsed") if isinstance(metrics, Mapping) else None
    n_failed = metrics.get("n_failed") if isinstance(metrics, Mapping) else None
    if slices is not None and "choice" in slices.columns:
        counts = AF.answer_counts(slices, task=task)
        n_calls = n_calls if n_calls is not None else len(slices)
        n_unparsed = n_unparsed if n_unparsed is not None else counts["unparsed"]
        names = AF.answer_names(task)
        d["tables"].append(
            {
                "title": "Answers (slices.csv)",
                "columns": [*names.values(), "total"],
                "rows": [[*(counts[k] for k in names), sum(counts.values())]],
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
    facts.extend(usage_facts(run.info.get("usage")))  # tokens and cost (hosted models), where recorded
    n_truncated = metrics.get("n_truncated") if isinstance(metrics, Mapping) else None
    if n_truncated is not None:
        facts.append(("answers cut at --max-new-tokens", fmt(n_truncated)))
    combined = (metrics.get("orientations") or {}).get("combined") if isinstance(metrics, Mapping) else None
    if isinstance(combined, Mapping) and combined.get("n_abstained"):
        coverage = fmt(combined.get("coverage"))
        facts.append(("abstained (no class vote)",
                      f"{combined['n_abstained']} {run_task(run).unit}s, coverage {coverage}"))
    table_name = "patients.csv" if task.unit == "patient" else "units.csv"
    pats = _read_csv(run, table_name)
    if pats is not None and task.unit == "patient":
        positive = task.classes[task.positive_label]
        try:
            for o, fig in AF.vote_figures(pats, task=task).items():
                d["figures"].append(
                    _figure(
                        fig,
                        f"{run.name}, {o}: share of {positive} votes per patient ({task.share_label}), "
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
                table_name,
                lambda: (
                    F.roc_figure(curves, title=f"{run.name}: ROC per orientation"),
                    f"ROC curves of {run.name} per orientation ({task.unit} score from {table_name}).",
                ),
            )
            if fig:
                d["figures"].append(fig)
    d["raw"] = _raw_sample(slices)
