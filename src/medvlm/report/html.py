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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.errors import DataError

RUN_FILES = (
    "run.json",
    "predictions.csv",
    "metrics.json",
    "history.csv",
    "patients.csv",
    "slices.csv",
    "consistency.csv",
    "summary.json",
    "train_log.csv",
)
SUMMARY_METRICS = (
    ("accuracy", "Accuracy"),
    ("precision", "Precision"),
    ("recall", "Sensitivity"),
    ("specificity", "Specificity"),
    ("f1", "F1"),
    ("balanced_accuracy", "Bal. acc."),
    ("mcc", "MCC"),
    ("auc", "AUC"),
)
ORIENTATION_ORDER = ("axial", "coronal", "sagittal", "combined")
COHORT_ORDER = ("train", "val", "test")
RAW_SAMPLE = 12
RAW_MAX_CHARS = 400
LONG_CELL = 160


class ReportWarning(UserWarning):
    """A run file could not be used; the report says so in the run's section."""


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


@dataclass
class RunData:
    """What the report knows about one run folder."""

    path: Path
    name: str
    kind: str
    info: dict[str, Any]
    files: list[str]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- small helpers
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: 3 decimals, ints as is, None/NaN as an en dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, Mapping) and "mean" in x:
        sd = x.get("std", x.get("sd"))
        return f"{fmt(x['mean'], digits)} ± {fmt(sd, digits)}" if sd is not None else fmt(x["mean"], digits)
    return str(x)


def _ci_text(ci: Any) -> str:
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2 and all(_is_num(v) for v in ci):
        return f"{ci[0]:.2f} – {ci[1]:.2f}".replace("-", "−")
    return ""


def html_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, caption: str | None = None
) -> str:
    """A ``<table>`` from rows of dicts, every cell escaped (for :class:`Section` ``html``)."""
    from markupsafe import Markup, escape

    cols = list(columns or (list(rows[0]) if rows else []))

    def cell(i: int, v: Any) -> str:
        text = fmt(v)
        if len(text) > LONG_CELL and text[:1] in "{[":  # a JSON dump: folded, pretty-printed
            with contextlib.suppress(json.JSONDecodeError):
                text = json.dumps(json.loads(text), indent=2)
            return (
                f'<td class="l"><details><summary>show ({len(text)} characters)</summary>'
                f"<pre>{escape(text)}</pre></details></td>"
            )
        if i == 0 or not (_is_num(v) or re.fullmatch(r"[−\-+0-9.,% –/]*", text)):
            cls = "l wrap-text" if len(text) > 60 else "l"
            return f'<td class="{cls}">{escape(text)}</td>'
        return f"<td>{escape(text)}</td>"

    left = ' class="l"'
    head = "".join(f"<th{left if i == 0 else ''}>{escape(c)}</th>" for i, c in enumerate(cols))
    body = "".join("<tr>" + "".join(cell(i, r.get(c)) for i, c in enumerate(cols)) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return Markup(f'<table class="data">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _read_file(run: RunData, name: str, parse: Any) -> Any:
    """``parse(RUN/name)`` (cached per run), or None when the run has no such file; a file that cannot
    be parsed is recorded as one of the run's problems (the report goes on)."""
    key = f"file:{name}"
    if key not in run.cache:
        value = None
        if name in run.files:
            try:
                value = parse(run.path / name)
            except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a visible note
                first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
                run.problems.append(f"{name} could not be read: {first_line}")
        run.cache[key] = value
    return run.cache[key]


def _read_csv(run: RunData, name: str) -> Any:
    """``RUN/name`` as a DataFrame (ids, cohorts, orientations and raw answers kept as text), or None."""
    import pandas as pd

    text_columns = {"patient_id": str, "cohort": str, "orientation": str, "raw": str}
    return _read_file(run, name, lambda path: pd.read_csv(path, dtype=text_columns))


def _read_json(run: RunData, name: str) -> Any:
    """``RUN/name`` parsed as JSON, or None."""
    return _read_file(run, name, lambda path: json.loads(path.read_text()))


def _infer_kind(files: list[str]) -> str | None:
    if "consistency.csv" in files or "summary.json" in files:
        return "consistency"
    if "slices.csv" in files or "patients.csv" in files:
        return "vlm"
    if "history.csv" in files:
        return "cnn"
    if "train_log.csv" in files:
        return "finetune"
    return None


def load_run(path: str | Path) -> RunData:
    """Read what the report needs to know about a run folder (files are read lazily later).

    Raises :class:`DataError` when the folder does not exist or holds no run file at all.
    """
    from medvlm.runinfo import RUN_KINDS

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run folder (no such directory)")
    files = [f for f in RUN_FILES if (path / f).is_file()]
    problems: list[str] = []
    info: dict[str, Any] = {}
    if "run.json" in files:
        try:
            info = json.loads((path / "run.json").read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path / 'run.json'}: not valid JSON ({exc})") from None
    kind = info.get("kind")
    if kind not in RUN_KINDS:
        inferred = _infer_kind(files)
        if inferred is None:
            raise DataError(
                f"{path}: no run.json and none of the run files ({', '.join(RUN_FILES[1:])}); "
                "is this a medvlm run folder?"
            )
        problems.append(
            f"run.json {'missing' if not info else 'has no valid kind'}; kind inferred from the "
            f"files: {inferred}"
        )
        kind = inferred
    return RunData(
        path=path,
        name=str(info.get("name") or path.name),
        kind=kind,
        info=info,
        files=files,
        problems=problems,
    )


# ------------------------------------------------------------------------------ fine-tuned vs general VLM
FINETUNE_CONFIG = "finetune_config.json"
ROLE_RANK = {"cnn": 0, "fine-tuned": 1, "general": 2}
ROLE_NAME = {"cnn": "CNN", "fine-tuned": "fine-tuned VLM", "general": "general VLM"}


def _consistency_fn(name: str) -> Any:
    """A figure function of :mod:`medvlm.consistency` (``agreement_figure``, ``temperature_figure``)."""
    import medvlm.consistency as C

    return getattr(C, name)


def _finetune_config(folder: str | Path) -> dict[str, Any]:
    """``finetune_config.json`` of an adapter folder as a dict ({} when absent or unreadable)."""
    path = Path(folder) / FINETUNE_CONFIG
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


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


def vlm_role(run: RunData) -> str | None:
    """``"cnn"``, ``"fine-tuned"`` (a VLM run whose config has an ``adapter``), ``"general"`` (other VLM
    runs) or None (consistency and fine-tuning runs)."""
    if run.kind == "cnn":
        return "cnn"
    if run.kind == "vlm":
        cfg = run.info.get("config") or {}
        return "fine-tuned" if isinstance(cfg, Mapping) and cfg.get("adapter") else "general"
    return None


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


# ------------------------------------------------------------------------------------------ metric rows
def _metric_cells(m: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"value": fmt(m.get(key)), "ci": _ci_text(m.get(f"{key}_ci"))} for key, _ in SUMMARY_METRICS]


def _row(run: RunData, subset: str, m: Mapping[str, Any], source: str) -> dict[str, Any]:
    n = m.get("n")
    counts = "/".join(fmt(m.get(k)) for k in ("tp", "fp", "tn", "fn")) if "tp" in m else ""
    return {
        "run": run.name,
        "kind": run.kind,
        "role": vlm_role(run) if run.kind == "vlm" else "",
        "model": _model_name(run),
        "model_short": Path(_model_name(run)).name if "/" in _model_name(run) else _model_name(run),
        "subset": subset,
        "n": fmt(n),
        "counts": counts,
        "cells": _metric_cells(m),
        "source": source,
    }


def _model_name(run: RunData) -> str:
    cfg = run.info.get("config") or {}
    metrics = run.cache.get("file:metrics.json")  # only if already read or {}
    for key in ("model", "base_model", "model_name"):
        if isinstance(metrics, Mapping) and metrics.get(key):
            return str(metrics[key])
        if isinstance(cfg, Mapping) and cfg.get(key):
            return str(cfg[key])
    return ""


def _looks_like_metrics(d: Any) -> bool:
    return isinstance(d, Mapping) and any(k in d for k in ("accuracy", "auc", "tp", "n"))


def _frame_metrics(df: Any, n_boot: int, seed: int) -> dict[str, Any]:
    from medvlm.metrics import metrics_with_ci

    scores = (
        df["score"].to_numpy(dtype=float) if "score" in df.columns and df["score"].notna().any() else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metrics_with_ci(
            df["label"].to_numpy(), df["pred"].to_numpy(), scores, n_boot=n_boot, seed=seed
        )


def _valid_predictions(run: RunData, name: str = "predictions.csv") -> Any:
    """``predictions.csv`` validated with :func:`medvlm.metrics.read_predictions`, or None (+ problem)."""
    from medvlm.metrics import read_predictions

    key = f"pred:{name}"
    if key in run.cache:
        return run.cache[key]
    df = None
    if name in run.files:
        try:
            df = read_predictions(run.path / name)
        except DataError as exc:
            run.problems.append(str(exc))
    run.cache[key] = df
    return df


def summary_rows(run: RunData, *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of the summary table for a CNN (per fold and cohort) or VLM run (per orientation).

    ``metrics.json`` is used as the run wrote it (with its CIs); without it, metrics are computed from
    ``predictions.csv`` / ``patients.csv`` with ``n_boot`` bootstrap resamples.
    """
    rows: list[dict[str, Any]] = []
    metrics = _read_json(run, "metrics.json")
    if run.kind == "cnn":
        if isinstance(metrics, Mapping) and isinstance(metrics.get("folds"), Mapping):
            for fold, cohorts in metrics["folds"].items():
                if not isinstance(cohorts, Mapping):
                    continue
                for cohort in sorted(cohorts, key=lambda c: (COHORT_ORDER + (c,)).index(c)):
                    if _looks_like_metrics(cohorts[cohort]):
                        label = cohort if len(metrics["folds"]) == 1 else f"fold {fold} · {cohort}"
                        rows.append(_row(run, label, cohorts[cohort], "metrics.json"))
            cv = metrics.get("cv")
            if _looks_like_metrics(cv):
                rows.append(_row(run, "cross-validation", cv, "metrics.json"))
            elif isinstance(cv, Mapping):
                for key, val in cv.items():
                    if _looks_like_metrics(val):
                        rows.append(_row(run, f"cross-validation · {key}", val, "metrics.json"))
            if rows:
                return rows
        df = _valid_predictions(run)
        if df is not None:
            keys = [c for c in ("fold", "cohort") if c in df.columns]
            groups = df.groupby(keys, sort=False) if keys else [((), df)]
            for key, part in groups:
                key = key if isinstance(key, tuple) else (key,)
                label = " · ".join(
                    f"fold {v}" if k == "fold" else str(v) for k, v in zip(keys, key, strict=True)
                )
                rows.append(_row(run, label or "all", _frame_metrics(part, n_boot, seed), "predictions.csv"))
        return rows
    if run.kind == "vlm":
        if isinstance(metrics, Mapping) and isinstance(metrics.get("orientations"), Mapping):
            ors = metrics["orientations"]
            for o in sorted(ors, key=lambda o: (ORIENTATION_ORDER + (o,)).index(o)):
                if _looks_like_metrics(ors[o]):
                    rows.append(_row(run, o, ors[o], "metrics.json"))
            if rows:
                return rows
        pats = _read_csv(run, "patients.csv")
        if pats is not None and {"orientation", "label", "pred"} <= set(pats.columns):
            for o, part in pats.groupby("orientation", sort=False):
                part = part[part["pred"].notna()]
                if len(part):
                    rows.append(_row(run, str(o), _frame_metrics(part, n_boot, seed), "patients.csv"))
        df = _valid_predictions(run)
        if df is not None and not any(r["subset"] == "combined" for r in rows):
            rows.append(
                _row(run, "combined" if rows else "all", _frame_metrics(df, n_boot, seed), "predictions.csv")
            )
        return rows
    return rows


# ------------------------------------------------------------------------------------------ paired tests
def test_cohort_predictions(run: RunData) -> Any:
    """One row per test-cohort patient (``patient_id,label,pred[,score]``) for the paired tests.

    VLM predictions with an ``orientation`` column use the ``combined`` rows; CNN predictions with a
    ``fold`` column and several folds on the test cohort become the fold ensemble (mean score; the
    majority of the fold predictions, ties broken by mean score >= 0.5), noted in the run's section.
    Raises :class:`DataError` when the run has no usable test-cohort predictions.
    """
    import numpy as np

    key = "test_cohort_predictions"
    if key in run.cache:
        if isinstance(run.cache[key], DataError):
            raise run.cache[key]
        return run.cache[key]
    try:
        df = _valid_predictions(run)
        if df is None:
            raise DataError(f"{run.name}: no valid predictions.csv")
        if "orientation" in df.columns:
            comb = df[df["orientation"].astype(str) == "combined"]
            if comb.empty:
                raise DataError(
                    f"{run.name}: predictions.csv has an orientation column but no 'combined' rows"
                )
            df = comb
        if "cohort" in df.columns:
            df = df[df["cohort"].astype(str) == "test"]
            if df.empty:
                raise DataError(f"{run.name}: no test-cohort rows in predictions.csv")
        if "patient_id" not in df.columns:
            raise DataError(f"{run.name}: predictions.csv has no patient_id column")
        if "fold" in df.columns and df["fold"].nunique() > 1:
            k = df["fold"].nunique()
            agg: dict[str, Any] = {"label": ("label", "first"), "pred_mean": ("pred", "mean")}
            if "score" in df.columns:
                agg["score"] = ("score", "mean")
            g = df.groupby("patient_id", sort=False).agg(**agg).reset_index()
            tie_break = (g["score"] >= 0.5) if "score" in g.columns else np.ones(len(g), bool)
            g["pred"] = np.where(
                g["pred_mean"] > 0.5, 1, np.where(g["pred_mean"] < 0.5, 0, tie_break)
            ).astype(int)
            df = g.drop(columns="pred_mean").assign(cohort="test")
            run.notes.append(
                f"paired tests and ROC use the ensemble of the {k} folds on the test cohort "
                "(mean score; majority of fold predictions)"
            )
        run.cache[key] = df.reset_index(drop=True)
        return run.cache[key]
    except DataError as exc:
        run.cache[key] = exc
        raise


def paired_tests(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """McNemar and DeLong (:func:`medvlm.stats.compare_predictions`) for every pair of classifier runs
    on the test cohort; a pair that cannot be compared gets a row with the reason."""
    from medvlm.stats import compare_predictions

    classifiers = [r for r in runs if r.kind in ("cnn", "vlm")]
    rows = []
    for i, first in enumerate(classifiers):
        for second in classifiers[i + 1 :]:
            a, b = first, second
            ra, rb = vlm_role(a), vlm_role(b)
            if ROLE_RANK[rb] < ROLE_RANK[ra]:  # A is the CNN, else the fine-tuned VLM
                a, b, ra, rb = b, a, rb, ra
            key = ra != rb
            row: dict[str, Any] = {
                "a": a.name,
                "b": b.name,
                "role_a": ra,
                "role_b": rb,
                "key": key,
                "comparison": f"{ROLE_NAME[ra]} vs {ROLE_NAME[rb]}",
                "order": (
                    0 if key else 1,
                    {("fine-tuned", "general"): 0, ("cnn", "general"): 1, ("cnn", "fine-tuned"): 2}.get(
                        (ra, rb), 3
                    ),
                ),
            }
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = compare_predictions(
                        test_cohort_predictions(a), test_cohort_predictions(b), name_a=a.name, name_b=b.name
                    )
            except DataError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            row.update(res)
            row["fmt"] = {
                "n": fmt(res["n"]),
                "acc_a": fmt(res["accuracy_a"]),
                "acc_b": fmt(res["accuracy_b"]),
                "acc_diff": fmt(res["accuracy_diff"]),
                "acc_ci": _ci_text(res["accuracy_diff_ci"]),
                "b": fmt(res["mcnemar_b"]),
                "c": fmt(res["mcnemar_c"]),
                "mcnemar_p": _p(res["mcnemar_p"]),
                "mcnemar_method": res["mcnemar_method"],
                "auc_a": fmt(res["auc_a"]),
                "auc_b": fmt(res["auc_b"]),
                "auc_diff": fmt(res["auc_diff"]),
                "auc_ci": _ci_text(res["auc_diff_ci"]),
                "z": fmt(res["delong_z"], 2),
                "delong_p": _p(res["delong_p"]),
            }
            rows.append(row)
    rows.sort(key=lambda r: r["order"])  # stable: run order within each comparison
    return rows


def _p(p: Any) -> str:
    if not _is_num(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


# ----------------------------------------------------------------------------------------------- figures
def _figure(fig: Any, caption: str, alt: str | None = None) -> dict[str, str]:
    from medvlm.report.figures import figure_to_data_uri

    return {"src": figure_to_data_uri(fig), "caption": caption, "alt": alt or caption}


def _safe_figure(run: RunData | None, what: str, make: Any) -> dict[str, str] | None:
    try:
        fig, caption = make()
    except (DataError, KeyError, ValueError, TypeError) as exc:
        if run is not None:
            run.problems.append(f"{what} could not be drawn: {exc}")
        return None
    return _figure(fig, caption)


def _printable(text: str) -> str:
    """``text`` with control, format (bidi overrides, zero-width) and private/surrogate characters shown
    as U+FFFD, so a model's noise cannot reorder or break the page; newlines and tabs are kept."""
    import unicodedata

    return "".join(
        c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp") else "\ufffd"
        for c in text
    )


def _raw_sample(df: Any) -> list[dict[str, str]]:
    """Up to :data:`RAW_SAMPLE` raw answers: unparsed ones first (half), then parsed ones."""
    import pandas as pd

    if df is None or "raw" not in df.columns or not df["raw"].fillna("").astype(str).str.strip().any():
        return []  # no text answers (e.g. log-probability scoring)
    choice = (
        pd.to_numeric(df["choice"], errors="coerce")
        if "choice" in df.columns
        else pd.Series(float("nan"), index=df.index)
    )
    unparsed = df[choice.isna()].head(RAW_SAMPLE // 2)
    parsed = df[choice.notna()].head(RAW_SAMPLE - len(unparsed))
    out = []
    for _, r in pd.concat([unparsed, parsed]).iterrows():
        raw = "" if pd.isna(r.get("raw")) else _printable(str(r.get("raw")))
        c = r.get("choice")
        out.append(
            {
                "patient_id": str(r.get("patient_id", "")),
                "orientation": str(r.get("orientation", "")),
                "slice_index": fmt(r.get("slice_index")) if pd.notna(r.get("slice_index")) else "",
                "repeat": fmt(r.get("repeat")) if pd.notna(r.get("repeat")) else "",
                "choice": "unparsed" if pd.isna(pd.to_numeric(c, errors="coerce")) else str(int(float(c))),
                "raw": raw if len(raw) <= RAW_MAX_CHARS else raw[:RAW_MAX_CHARS] + " …",
            }
        )
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
                    _consistency_fn("agreement_figure")(
                        summary["per_image"], title=run.name
                    ),
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


def _unique_names(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name} ({seen[r.name]})"
        else:
            seen[r.name] = 1


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
