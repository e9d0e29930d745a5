"""Formatting helpers shared by the report's modules: numbers, CIs, p-values, tables, raw answers, figures.

Pure text helpers with no report state; :mod:`medvlm.report.html`, :mod:`medvlm.report.consistency_view`
and the run-kind sections (:mod:`medvlm.report.sections`) all import from here.

>>> fmt(0.12345), fmt(3), fmt(None), fmt({"mean": 0.5, "std": 0.25}, 2)
('0.123', '3', '–', '0.50 ± 0.25')
>>> _ci_text([0.1, 0.25]), _p(0.0004), _p(0.25), _slug("Plain-language summary!")
('0.10 – 0.25', '< 0.001', '0.250', 'plain-language-summary')
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medvlm.errors import DataError

RAW_SAMPLE = 12
RAW_MAX_CHARS = 400
LONG_CELL = 160


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


def _p(p: Any) -> str:
    if not _is_num(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


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


# ----------------------------------------------------------------------------------------------- figures
def _figure(fig: Any, caption: str, alt: str | None = None) -> dict[str, str]:
    from medvlm.report.figures import figure_to_data_uri

    return {"src": figure_to_data_uri(fig), "caption": caption, "alt": alt or caption}


def _safe_figure(run: Any, what: str, make: Any) -> dict[str, str] | None:
    """``_figure(*make())``, or None when drawing fails; the failure is added to ``run.problems`` (a
    :class:`~medvlm.report.runs.RunData`, or None for figures of no single run)."""
    try:
        fig, caption = make()
    except (DataError, KeyError, ValueError, TypeError) as exc:
        if run is not None:
            run.problems.append(f"{what} could not be drawn: {exc}")
        return None
    return _figure(fig, caption)


# ------------------------------------------------------------------------------------------- raw answers
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
