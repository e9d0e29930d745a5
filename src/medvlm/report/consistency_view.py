"""Tables of the report's consistency parts, built from ``summary.json`` (``medvlm consistency``).

Pure functions of the summary dict: each returns a table dict for the report template,
``{"title", "columns", "rows", "left" (indexes of left-aligned columns), "note"}``; a cell is a plain
value or ``{"v": text, "cls": css class}`` (autoescaped by the template). Answer and class names come
from the run's task (:class:`Names`; the default task's when none is given); ``majority`` is a category
key (an answer code or "unparsed") or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.report.format import fmt

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.tasks.base import Task

PER_IMAGE_MAX = 300


@dataclass(frozen=True)
class Names:
    """A task's answers as the tables show them: ``cats`` (answer codes, then "unparsed"), ``answer``
    (category -> name, None -> "–"), ``columns`` ("<name> (0)", ..., "unparsed"), ``truth`` (label ->
    "<class> (label)")."""

    cats: tuple[str, ...]
    answer: dict[Any, str]
    columns: tuple[str, ...]
    truth: dict[int, str]


def names_of(task: Task | str | None = None) -> Names:
    """:class:`Names` of ``task`` (None: the default task)."""
    from medvlm.tasks import get_task

    t = get_task(task)
    cats = (*t.codes, "unparsed")
    answer: dict[Any, str] = {**t.answer_names, "unparsed": "unparsed", None: "–"}
    columns = tuple(f"{answer[k]} ({k})" if k != "unparsed" else k for k in cats)
    return Names(cats, answer, columns, {i: f"{c} ({i})" for i, c in enumerate(t.classes)})

OVERALL_MEASURES = (
    ("n_images", "images", "distinct image × prompt × temperature combinations asked"),
    ("n", "answers", "all answers pooled over images and repeats"),
    (
        "mean_agreement",
        "mean agreement",
        "share of the majority answer per image, averaged (1 = always the same)",
    ),
    (
        "mean_entropy",
        "mean entropy (bits)",
        "spread of the answers per image, averaged (0 = always the same)",
    ),
    ("flip_rate", "flip rate", "share of consecutive repeats whose answer changed"),
    (
        "fleiss_kappa",
        "Fleiss' kappa",
        "agreement of the repeats beyond chance, across images (needs ≥ 2 images)",
    ),
    ("consensus_accuracy", "consensus accuracy", "share of labelled images whose majority answer is right"),
    ("expected_accuracy", "expected accuracy", "mean share of right answers per labelled image (one ask)"),
)


def _f(x: Any, digits: int = 3) -> str:
    return fmt(x, digits)


def truth_text(label: Any, names: Names | None = None) -> str:
    names = names or names_of()
    try:
        return names.truth.get(int(label), "–") if label is not None and label == label else "–"
    except (TypeError, ValueError):
        return "–"


def majority_text(r: Mapping[str, Any], names: Names | None = None) -> str:
    names = names or names_of()
    return names.answer.get(r.get("majority"), str(r.get("majority"))) + (" *" if r.get("tie") else "")


def right_cell(consensus_correct: Any) -> Any:
    if consensus_correct is None:
        return "–"
    return {"v": "yes", "cls": "good"} if float(consensus_correct) >= 0.5 else {"v": "no", "cls": "bad"}


def _temp(t: Any) -> str:
    return "model default" if t is None else _f(float(t), 2)


def has_per_image(summary: Any) -> bool:
    return (
        isinstance(summary, Mapping)
        and isinstance(summary.get("per_image"), list)
        and bool(summary["per_image"])
        and all(isinstance(r, Mapping) for r in summary["per_image"])
    )


def per_image_table(
    entries: Sequence[Mapping[str, Any]], *, run_names: Sequence[str] | None = None, title: str = "Per image",
    names: Names | None = None,
) -> dict[str, Any]:
    """One row per image (patient, truth, orientation, slice, [prompt], [T], n, counts per answer and
    unparsed, majority, agreement, entropy, flip rate, majority right?); ``run_names`` adds a first run
    column."""
    names = names or names_of()
    many_prompts = len({str(r.get("prompt")) for r in entries}) > 1
    many_t = len({str(r.get("temperature")) for r in entries}) > 1
    cols = (["run"] if run_names is not None else []) + ["patient", "truth", "orientation", "slice"]
    cols += (["prompt"] if many_prompts else []) + (["temperature"] if many_t else [])
    cols += [
        "n",
        *names.columns,
        "majority",
        "agreement",
        "entropy (bits)",
        "flip rate",
        "majority right?",
    ]
    rows = []
    for i, r in enumerate(entries[:PER_IMAGE_MAX]):
        counts = r.get("counts") if isinstance(r.get("counts"), Mapping) else {}
        row = [run_names[i]] if run_names is not None else []
        row += [
            str(r.get("patient_id", "")),
            truth_text(r.get("label"), names),
            str(r.get("orientation", "")),
            _f(r.get("slice_index")),
        ]
        row += [Path(str(r.get("prompt"))).name] if many_prompts else []
        row += [_temp(r.get("temperature"))] if many_t else []
        row += [
            _f(r.get("n")),
            *(_f(counts.get(k)) for k in names.cats),
            majority_text(r, names),
            _f(r.get("agreement")),
            _f(r.get("entropy")),
            _f(r.get("flip_rate")),
            right_cell(r.get("consensus_correct")),
        ]
        rows.append(row)
    notes = []
    if len(entries) > PER_IMAGE_MAX:
        notes.append(f"first {PER_IMAGE_MAX} of {len(entries)} images shown; all are in summary.json")
    if any(r.get("tie") for r in entries):
        notes.append("* the most frequent answers tied; the tie was broken as the run's tie_break says")
    left = {
        cols.index(c) for c in ("run", "patient", "truth", "orientation", "prompt", "majority") if c in cols
    }
    return {"title": title, "columns": cols, "rows": rows, "left": left, "note": "; ".join(notes)}


def overall_table(summary: Mapping[str, Any], title: str = "Overall", *, names: Names | None = None
                  ) -> dict[str, Any]:
    """The overall measures with what each means, plus the run's settings (repeats, sampling, prompts)."""
    names = names or names_of()
    rows = []
    for key, name, meaning in OVERALL_MEASURES:
        if key not in summary:
            continue
        val = summary[key]
        if key == "fleiss_kappa" and val is None:
            meaning += "; not defined here"
        if key in ("consensus_accuracy", "expected_accuracy") and "n_labelled" in summary:
            meaning += f" ({_f(summary['n_labelled'])} labelled images)"
        rows.append([name, _f(val), meaning])
    counts = summary.get("counts")
    if isinstance(counts, Mapping):
        rows.append(
            [
                "answers per category",
                ", ".join(f"{names.answer[k]} {_f(counts.get(k))}" for k in names.cats),
                f"pooled majority: {names.answer.get(summary.get('majority'), '–')}",
            ]
        )
    if "repeats" in summary:
        rows.append(["repeats", _f(summary["repeats"]), "times each image and prompt were asked"])
    if summary.get("sampling_effective") is not None:
        effective = bool(summary["sampling_effective"])
        cell = {"v": "yes" if effective else "no", "cls": "" if effective else "bad"}
        rows.append(["sampling effective", cell, "a temperature above 0 was asked for; "
                     + ("the repeats differ" if effective else
                        "every repeat of every image was byte-identical: the model did not sample")])
    sampling = summary.get("sampling")
    if isinstance(sampling, list) and sampling:
        text = "; ".join(
            ", ".join(
                f"{k.replace('_', '-')} {_temp(v) if k == 'temperature' else _f(v)}"
                for k, v in s.items()
                if k in ("temperature", "top_p", "seed") and (v is not None or k == "temperature")
            )
            for s in sampling
            if isinstance(s, Mapping)
        )
        rows.append(["sampling", text, "decoding settings sent with each request"])
    if isinstance(summary.get("prompts"), list):
        rows.append(["prompts", ", ".join(Path(str(p)).name for p in summary["prompts"]), ""])
    if "n_failed" in summary:
        rows.append(
            ["failed calls", _f(summary["n_failed"]), "requests that returned no answer (failures.csv)"]
        )
    return {
        "title": title,
        "columns": ["measure", "value", "what it means"],
        "rows": rows,
        "left": {0, 1, 2},
        "note": "",
    }


def group_table(groups: Sequence[Mapping[str, Any]], key: str, title: str, *, names: Names | None = None
                ) -> dict[str, Any]:
    """``per_prompt`` (key "prompt") or ``per_temperature`` (key "temperature") as a table."""
    names = names or names_of()
    head = "prompt" if key == "prompt" else "temperature"
    cols = (
        [head]
        + (["top-p"] if key == "temperature" else [])
        + [
            "images",
            "answers",
            *names.columns,
            "mean agreement",
            "mean entropy",
            "flip rate",
            "Fleiss' kappa",
            "consensus acc.",
            "expected acc.",
        ]
    )
    rows = []
    for g in groups:
        counts = g.get("counts") if isinstance(g.get("counts"), Mapping) else {}
        first = Path(str(g.get("prompt"))).name if key == "prompt" else _temp(g.get("temperature"))
        row = [first] + ([_f(g.get("top_p"))] if key == "temperature" else [])
        row += [
            _f(g.get("n_images")),
            _f(g.get("n")),
            *(_f(counts.get(k)) for k in names.cats),
            _f(g.get("mean_agreement")),
            _f(g.get("mean_entropy")),
            _f(g.get("flip_rate")),
            _f(g.get("fleiss_kappa")),
            _f(g.get("consensus_accuracy")),
            _f(g.get("expected_accuracy")),
        ]
        rows.append(row)
    return {"title": title, "columns": cols, "rows": rows, "left": {0}, "note": ""}


def run_overview_row(name: str, summary: Mapping[str, Any], *, names: Names | None = None) -> list[Any]:
    """One row of the combined Consistency overview (see :func:`overview_columns`)."""
    names = names or names_of()
    per = summary.get("per_image") if has_per_image(summary) else []
    truths = sorted({truth_text(r.get("label"), names) for r in per})
    counts = summary.get("counts") if isinstance(summary.get("counts"), Mapping) else {}
    return [
        name,
        _f(summary.get("n_images", len(per) or None)),
        ", ".join(truths) or "–",
        _f(summary.get("n")),
        *(_f(counts.get(k)) for k in names.cats),
        names.answer.get(summary.get("majority"), "–"),
        _f(summary.get("mean_agreement", summary.get("agreement"))),
        _f(summary.get("fleiss_kappa")),
        _f(summary.get("consensus_accuracy")),
        _f(summary.get("expected_accuracy")),
    ]


def overview_columns(names: Names | None = None) -> list[str]:
    """The columns of the combined Consistency overview (one :func:`run_overview_row` each)."""
    names = names or names_of()
    return ["run", "images", "truth", "answers", *names.columns, "majority", "mean agreement",
            "Fleiss' kappa", "consensus acc.", "expected acc."]


def legacy_table(summary: Mapping[str, Any], *, names: Names | None = None) -> dict[str, Any]:
    """A summary.json without ``per_image`` (older runs): its scalar entries, readable."""
    names = names or names_of()
    rows = []
    for k, v in summary.items():
        if isinstance(v, Mapping):
            v = ", ".join(f"{names.answer.get(kk, kk)}: {_f(vv)}" for kk, vv in v.items())
        elif isinstance(v, list):
            v = f"{len(v)} entries"
        elif k == "majority":
            v = names.answer.get(v, v)
        rows.append([k.replace("_", " "), _f(v)])
    return {
        "title": "summary.json",
        "columns": ["measure", "value"],
        "rows": rows,
        "left": {0, 1},
        "note": "",
    }
