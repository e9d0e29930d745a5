"""The section of a VLM run: adapter (general or fine-tuned), answer counts, unparsed rate, the
test-cohort confusion matrix, reliability diagram and risk-coverage curve, vote figures, ROC per
orientation, a sample of raw answers and, for a run made with ``--save-images``, thumbnails of what
the model saw next to its answers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.report.format import RAW_MAX_CHARS, _figure, _is_num, _printable, _raw_sample, _safe_figure, fmt
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
    seen = seen_images(run, slices)
    if seen:
        d["seen"] = seen


# -------------------------------------------------------------------------------- what the model saw
#: thumbnails shown per run (the report stays one small file) and their longest side in pixels
SEEN_MAX = 8
THUMB_PX = 96
KEYS = ("patient_id", "orientation", "slice_index")
#: the same for an image task's run (index.csv and slices.csv keyed by image)
IMAGE_KEYS = ("patient_id", "image_id")


def _thumbnail(png: bytes) -> str:
    """A ``data:image/png;base64,...`` thumbnail (longest side :data:`THUMB_PX`) of PNG bytes."""
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    im.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _seen_answers(calls: Any, names: list[str], prob_columns: list[str]) -> tuple[str, str]:
    """(parsed answers over the repeats, e.g. ``"<name> (1) x2, unparsed x1"`` with ``names`` the task's
    answer names; the first repeat's raw answer, or its code probabilities when the model wrote no
    text)."""
    import pandas as pd

    if calls is None or not len(calls):
        return "no answer in slices.csv", ""
    choices = pd.to_numeric(calls["choice"], errors="coerce")
    labels = ["unparsed" if pd.isna(c) or not 0 <= int(c) < len(names) else f"{names[int(c)]} ({int(c)})"
              for c in choices]
    counts = {k: labels.count(k) for k in dict.fromkeys(labels)}
    parsed = ", ".join(k if len(labels) == 1 else f"{k} x{n}" for k, n in counts.items())
    first = calls.iloc[0]
    raw = "" if pd.isna(first.get("raw")) else _printable(str(first.get("raw")))
    if not raw.strip():
        probs = [(n, first.get(c)) for n, c in zip(names, prob_columns, strict=True) if c in calls.columns]
        raw = "(no text: log-prob scoring) P " + ", ".join(f"{n} {float(v):.3f}" for n, v in probs
                                                             if pd.notna(v))
    return parsed, raw if len(raw) <= RAW_MAX_CHARS else raw[:RAW_MAX_CHARS] + " …"


def seen_images(run: RunData, slices: Any) -> dict[str, Any] | None:
    """Thumbnails of the images ``eval-vlm --save-images`` kept (``RUN/images/``), each with the
    model's parsed answer(s) and raw answer from ``slices.csv`` (matched on patient, orientation and
    slice; an image task's run on patient and image id); None when the run saved none. A file whose
    bytes no longer match the sha256 in ``images/index.csv`` is a problem of the run, not shown."""
    import hashlib

    from medvlm.vlm.saved_images import IMAGES_DIR, INDEX_FILE, NO_IMAGE_NOTE, read_index

    cfg = run.info.get("config") or {}
    asked = cfg.get("save_images") if isinstance(cfg, Mapping) else None
    if isinstance(asked, int) and asked > 0 and cfg.get("image") == "none":
        return {"rows": [], "note": f"{NO_IMAGE_NOTE} (--save-images {asked})."}
    try:
        index = read_index(run.path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        run.problems.append(f"{IMAGES_DIR}/{INDEX_FILE} could not be read: {exc}")
        return None
    if not index:
        return None
    task = run_task(run)
    names = [a.name for a in task.answers]
    rows = []
    for entry in index[:SEEN_MAX]:
        name = str(entry.get("file") or "")
        path = run.path / IMAGES_DIR / name
        if "/" in name or "\\" in name or not path.is_file():
            run.problems.append(f"{IMAGES_DIR}/{name}: listed in {INDEX_FILE} but not there")
            continue
        png = path.read_bytes()
        if hashlib.sha256(png).hexdigest() != entry.get("sha256"):
            run.problems.append(f"{IMAGES_DIR}/{name}: its bytes do not match the sha256 in {INDEX_FILE}; "
                                "not shown")
            continue
        keys = IMAGE_KEYS if "image_id" in entry else KEYS
        values = [str(entry.get(k, "")) for k in keys]
        calls = None
        if slices is not None and {*keys, "choice"} <= set(slices.columns):
            match = True
            for k, v in zip(keys, values, strict=True):
                match = match & (slices[k].astype(str) == v)
            calls = slices[match]
        try:
            src = _thumbnail(png)
        except (OSError, ValueError) as exc:
            run.problems.append(f"{IMAGES_DIR}/{name} could not be drawn: {exc}")
            continue
        parsed, raw = _seen_answers(calls, names, task.prob_columns)
        if keys == IMAGE_KEYS:
            pid, image_id = values
            rows.append({"src": src, "alt": f"{pid} image {image_id}", "file": name, "patient_id": pid,
                         "image_id": image_id, "parsed": parsed, "raw": raw})
            continue
        pid, orientation, index_ = values
        rows.append({"src": src, "alt": f"{pid} {orientation} slice {index_}", "file": name,
                     "patient_id": pid, "orientation": orientation, "slice_index": index_,
                     "parsed": parsed, "raw": raw})
    more = f" ({len(index)} saved, the first {SEEN_MAX} shown)" if len(index) > SEEN_MAX else ""
    note = (f"The images as the model received them{more}, from {IMAGES_DIR}/ (byte for byte what was sent; "
            f"{INDEX_FILE} lists their sha256), shown small, with the parsed answer over all repeats and "
            "the first repeat's raw answer (verbatim).")
    out: dict[str, Any] = {"rows": rows, "note": note}
    if rows and all("image_id" in r for r in rows):
        out["by_image"] = True  # the table shows an image id column instead of orientation and slice
    return out
