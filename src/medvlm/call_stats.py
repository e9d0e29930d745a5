"""Agreement of two per-call answer tables (``slices.csv``): the calls of two runs paired one by one, on
:data:`CALL_KEYS` (volumes: ``patient_id, orientation, slice_index, repeat``) or, for a run of a 2D image
task, :data:`IMAGE_CALL_KEYS` (``patient_id, image_id, repeat``), decided from the columns present.

``medvlm compare A/slices.csv B/slices.csv`` and the report's controls: the share of calls with the same
parsed answer (an unparsed answer is an answer of its own), the flip rate and Cohen's kappa.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import DataError
from medvlm.stats import StatsWarning

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the key of one model call in a per-call table (``slices.csv``, ``consistency.csv``)
CALL_KEYS = ["patient_id", "orientation", "slice_index", "repeat"]
#: the key of one model call in a 2D image task's per-call table
IMAGE_CALL_KEYS = ["patient_id", "image_id", "repeat"]
#: the category of an answer that could not be parsed (an empty ``choice``)
UNPARSED = "unparsed"


def call_keys(columns: Any) -> list[str] | None:
    """The key columns of a per-call table's header: :data:`CALL_KEYS` when it has them all, else
    :data:`IMAGE_CALL_KEYS` when it has those, else None.

    >>> call_keys(["patient_id", "image_id", "repeat", "choice"]), call_keys(["patient_id", "choice"])
    (['patient_id', 'image_id', 'repeat'], None)
    """
    names = {str(c).strip() for c in columns}
    for keys in (CALL_KEYS, IMAGE_CALL_KEYS):
        if set(keys) <= names:
            return list(keys)
    return None


def is_call_table(columns: Any) -> bool:
    """Whether a CSV header is a per-call table: :data:`CALL_KEYS` (or :data:`IMAGE_CALL_KEYS`) and
    ``choice``."""
    return call_keys(columns) is not None and "choice" in {str(c).strip() for c in columns}


def read_calls(path: Any) -> pd.DataFrame:
    """A per-call table (``patient_id,orientation,slice_index,repeat,choice,...``, or an image task's
    ``patient_id,image_id,repeat,choice,...``) as its key columns and ``choice``, strings, ``choice``
    normalised to the answer code (``"1"``) or :data:`UNPARSED` for an empty cell; DataError naming the
    file for a missing column or a call that appears twice."""
    from pathlib import Path

    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if not is_call_table(df.columns):
        missing = [c for c in [*(call_keys(df.columns) or CALL_KEYS), "choice"] if c not in df.columns]
        raise DataError(f"{path}: missing column {missing[0]!r}: a per-call table (slices.csv) has "
                        f"{', '.join([*CALL_KEYS, 'choice'])}")
    keys = call_keys(df.columns) or CALL_KEYS
    df = df[[*keys, "choice"]].apply(lambda s: s.str.strip())

    def category(value: str) -> str:
        if value == "":
            return UNPARSED
        try:
            number = float(value)
        except ValueError:
            return value
        return str(int(number)) if number.is_integer() else value

    df["choice"] = df["choice"].map(category)
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise DataError(f"{path}: the call {'/'.join(first[k] for k in keys)} ({', '.join(keys)}) "
                        f"appears {int(dup.sum())} times; one row per call is expected (a consistency run "
                        "with several prompts or temperatures: compare runs of one prompt and temperature)")
    return df


def compare_answers(a: pd.DataFrame, b: pd.DataFrame, *, name_a: str = "A",
                    name_b: str = "B") -> dict[str, Any]:
    """How often two runs give the same answer to the same call (from :func:`read_calls`).

    Pairs the calls on ``patient_id, orientation, slice_index, repeat``, or ``patient_id, image_id,
    repeat`` for image runs (:func:`call_keys` of ``a``'s columns; DataError when ``b`` is keyed otherwise,
    or when a call is in one table only, naming how many). An unparsed answer is a category of its own.
    Returns ``n`` (paired calls), ``n_patients``, ``agreement`` (share of calls with the same answer),
    ``flip_rate`` (1 - agreement), ``kappa`` (Cohen's kappa, scikit-learn; None with a
    :class:`StatsWarning` when it is undefined, e.g. both runs gave one and the same answer throughout),
    ``categories`` and ``confusion`` (``{answer in A: {answer in B: count}}``).

    >>> import pandas as pd
    >>> rows = lambda choices: pd.DataFrame({"patient_id": ["P1"] * 4, "orientation": "axial",
    ...     "slice_index": ["1", "2", "3", "4"], "repeat": "0", "choice": choices})
    >>> r = compare_answers(rows(["1", "1", "0", "unparsed"]), rows(["1", "0", "0", "unparsed"]))
    >>> r["n"], r["agreement"], r["flip_rate"], round(r["kappa"], 4)
    (4, 0.75, 0.25, 0.6364)
    """
    from sklearn.metrics import cohen_kappa_score

    keys = call_keys(a.columns) or CALL_KEYS
    if call_keys(b.columns) != keys:
        raise DataError(f"{name_a} and {name_b}: the per-call tables are keyed differently "
                        f"({', '.join(keys)} vs {', '.join(call_keys(b.columns) or ['?'])}); compare two "
                        "runs of one kind of task")
    ka = a.set_index(keys)["choice"]
    kb = b.set_index(keys)["choice"]
    only_a, only_b = ka.index.difference(kb.index), kb.index.difference(ka.index)
    if len(only_a) or len(only_b):
        parts = [f"{len(ids)} only in {who} (first: {'/'.join(map(str, ids[0]))})"
                 for who, ids in ((name_a, only_a), (name_b, only_b)) if len(ids)]
        raise DataError(f"the two per-call tables do not hold the same calls ({', '.join(keys)}): "
                        + "; ".join(parts))
    if ka.empty:
        raise DataError(f"{name_a} and {name_b}: no calls to compare")
    kb = kb.loc[ka.index]
    ca, cb = ka.to_numpy(dtype=str), kb.to_numpy(dtype=str)
    categories = sorted(set(ca) | set(cb))
    agreement = float(np.mean(ca == cb))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(ca, cb, labels=categories))
    if not math.isfinite(kappa):
        warnings.warn(f"Cohen's kappa is undefined: both runs gave the answer(s) {categories} with chance "
                      "agreement 1", StatsWarning, stacklevel=2)
    confusion = {x: {y: int(((ca == x) & (cb == y)).sum()) for y in categories} for x in categories}
    return {"n": int(ca.size), "n_patients": int(ka.index.get_level_values("patient_id").nunique()),
            "agreement": agreement, "flip_rate": 1.0 - agreement,
            "kappa": kappa if math.isfinite(kappa) else None, "categories": categories,
            "confusion": confusion, "unit": "call"}
