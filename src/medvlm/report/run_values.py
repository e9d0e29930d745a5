"""Values of run files checked where the report reads them: a number that cannot be what its key says
(a proportion outside [0, 1], an MCC outside [-1, 1], a negative or fractional count, a negative log-loss,
AURC or loss, NaN or infinity; text in a numeric CSV column) is shown blank and listed as a problem of the
run naming the file and the key (or column). Used by :mod:`medvlm.report.runs`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medvlm.report.runs import RunData

#: metric names whose values are proportions (key as written, or ending in ``_<name>``: ``val_auc``)
PROPORTIONS = ("balanced_accuracy", "accuracy", "precision", "recall", "sensitivity", "specificity", "f1",
               "auc", "coverage", "ece", "brier", "parsed_share")
#: names whose values are never negative
NON_NEGATIVE = ("log_loss", "aurc", "loss")
#: at most this many value problems are listed per file (then a count of the rest)
MAX_VALUE_PROBLEMS = 8


def value_rule(key: str) -> tuple[float, float, bool, str] | None:
    """``(low, high, whole, what)`` that a value under ``key`` must satisfy, or None for keys with no
    rule: proportions in [0, 1], ``mcc`` in [-1, 1], counts (``n``, ``tp``/``fp``/``tn``/``fn``,
    ``n_*``) whole numbers >= 0, log-loss / AURC / losses >= 0.

    >>> value_rule("val_auc")[:2], value_rule("mcc")[:2], value_rule("n_calls")[2], value_rule("model")
    ((0.0, 1.0), (-1.0, 1.0), True, None)
    """
    key = str(key).lower()

    def named(names: tuple[str, ...]) -> bool:
        return any(key == n or key.endswith("_" + n) for n in names)

    if key in ("n", "tp", "fp", "tn", "fn") or key.startswith("n_"):
        return 0.0, math.inf, True, "a count (a whole number >= 0)"
    if named(PROPORTIONS):
        return 0.0, 1.0, False, "a proportion in [0, 1]"
    if named(("mcc",)):
        return -1.0, 1.0, False, "in [-1, 1]"
    if named(NON_NEGATIVE):
        return 0.0, math.inf, False, ">= 0"
    return None


def _bad_value(value: Any, rule: tuple[float, float, bool, str] | None) -> str | None:
    """Why ``value`` cannot be a value under ``rule`` (None: it can; None values always can)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if rule is None:
        return None
    low, high, whole, what = rule
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"not a number ({what})"
    if not low <= value <= high or (whole and not float(value).is_integer()):
        return f"not {what}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, int | float | str | bool) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_values(run: RunData, name: str, data: Any) -> Any:
    """``data`` (a parsed JSON run file) with each impossible value replaced by None (shown blank), each
    one a problem of ``run`` naming ``name`` and the key's path: a value that breaks its key's
    :func:`value_rule` (also the ``mean`` of a ``{"mean", "std"}`` summary, whose ``std`` must be >= 0,
    and each end of a ``<metric>_ci`` pair), and NaN or infinity anywhere."""
    found: list[str] = []

    def bad(path: str, value: Any, why: str) -> None:
        found.append(f"{name}: {path} = {_shown(value)} is {why}: shown blank")

    def check(key: Any, value: Any, path: str) -> Any:
        rule = value_rule(key) if isinstance(key, str) else None
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                sub = f"{path}.{k}" if path else str(k)
                if rule is not None and k == "mean":
                    why = _bad_value(v, rule)
                elif k in ("std", "sd") and rule is not None:
                    why = _bad_value(v, (0.0, math.inf, False, ">= 0"))
                else:
                    out[k] = check(k, v, sub)
                    continue
                if why:
                    bad(sub, v, why)
                out[k] = None if why else v
            return out
        if isinstance(value, list):
            ends = value_rule(key[:-3]) if isinstance(key, str) and key.endswith("_ci") else None
            if ends is not None and len(value) == 2:
                whys = [_bad_value(v, ends) for v in value]
                if any(whys):
                    bad(path, value, next(w for w in whys if w))
                    return None
                return value
            return [check(None, v, f"{path}[{i}]") for i, v in enumerate(value)]
        why = _bad_value(value, rule)
        if why:
            bad(path, value, why)
            return None
        return value

    checked = check(None, data, "")
    run.problems.extend(found[:MAX_VALUE_PROBLEMS])
    if len(found) > MAX_VALUE_PROBLEMS:
        run.problems.append(f"{name}: {len(found) - MAX_VALUE_PROBLEMS} more impossible values, shown blank")
    return checked


#: CSV columns that hold text (never checked as numbers)
TEXT_COLUMNS = frozenset({"patient_id", "cohort", "orientation", "raw", "finish_reason", "prompt", "error",
                          "majority", "source", "model", "reason", "split", "name", "state", "what",
                          "folder", "job_id", "tie_break", "modality", "site", "collection"})


def _check_columns(run: RunData, name: str, frame: Any) -> Any:
    """``frame`` with the impossible values of its numeric columns set to NaN (shown blank), each column
    with some a problem of ``run``: text in a column of numbers, NaN written as text aside (``inf``,
    ``x``), infinity, and numbers that break the column's :func:`value_rule` (``val_auc`` 1.5)."""
    import numpy as np
    import pandas as pd

    found: list[str] = []
    for column in frame.columns:
        if str(column) in TEXT_COLUMNS:
            continue
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        as_text = not pd.api.types.is_numeric_dtype(values)  # object or string: maybe numbers and text
        numbers = pd.to_numeric(values, errors="coerce") if as_text else values
        if as_text:
            if not numbers.notna().any():
                continue  # a text column
            written = values.notna() & values.astype(str).str.strip().ne("")
            text = written & numbers.isna() & ~values.astype(str).str.strip().str.lower().isin(["nan"])
        else:
            text = pd.Series(False, index=values.index)
        numbers = numbers.astype("float64")
        infinite = pd.Series(np.isinf(numbers.to_numpy()), index=values.index)
        rule = value_rule(str(column))
        broken = pd.Series(False, index=values.index)
        if rule is not None:
            low, high, whole, _ = rule
            finite = numbers.where(~infinite)
            broken = finite.notna() & ((finite < low) | (finite > high)
                                       | (whole & (finite != finite.round())))
        wrong = text | infinite | broken
        if not wrong.any():
            if as_text and not text.any():
                frame[column] = numbers
            continue
        first = values[wrong].iloc[0]
        why = ("not a number" if text.any() else "not a finite number" if infinite.any()
               else f"not {rule[3]}" if rule else "impossible")
        found.append(f"{name}: column {column!r} has {int(wrong.sum())} impossible value"
                     f"{'s' * (int(wrong.sum()) != 1)} ({why}, e.g. {_shown(first)}): shown blank")
        frame[column] = numbers.mask(wrong)
    run.problems.extend(found[:MAX_VALUE_PROBLEMS])
    if len(found) > MAX_VALUE_PROBLEMS:
        run.problems.append(f"{name}: {len(found) - MAX_VALUE_PROBLEMS} more columns with impossible values")
    return frame
