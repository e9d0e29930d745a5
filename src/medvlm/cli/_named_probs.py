"""Per-class probability columns named after the classes (``p_normal, p_pneumonia, ...``) in a
predictions file read without its run folder (``medvlm metrics FILE`` with no run.json beside it).

Without the task the class order of such columns is unknown; the file's column order is used only when
the rows confirm it: every answered row with probabilities has its ``pred`` as the largest of them (ties
aside), as medvlm's own reducers write them. Otherwise the columns are left out of the AUC with a
warning. Never silently: either way one warning line says what was done.
"""

from __future__ import annotations

import warnings
from typing import Any

#: the prefix of a per-class probability column
PROB_PREFIX = "p_"


def _order_confirmed(df: Any, columns: list[str]) -> bool:
    """Whether each answered row with all ``columns`` present has ``pred`` = the index of its largest
    value (rows with a tie at the top are not evidence either way); at least one such row."""
    import numpy as np
    import pandas as pd

    probs = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    pred = pd.to_numeric(df["pred"], errors="coerce").to_numpy(dtype=float)
    rows = ~np.isnan(probs).any(axis=1) & ~np.isnan(pred)
    if not rows.any():
        return False
    probs, pred = probs[rows], pred[rows]
    top = probs.max(axis=1, keepdims=True)
    untied = (probs == top).sum(axis=1) == 1
    return bool(untied.any()) and bool((probs[untied].argmax(axis=1) == pred[untied]).all())


def use_named_prob_columns(df: Any, k: int, source: str) -> Any:
    """``df`` with class-named probability columns renamed ``p_0 .. p_<k-1>`` when their order is
    confirmed (a warning names the mapping), else unchanged (a warning says they are not read); ``df``
    unchanged and no warning when it has ``p_0 .. p_<k-1>`` or no other ``p_`` column.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 2], "pred": [0, 2], "p_a": [0.7, 0.1], "p_b": [0.2, 0.2],
    ...                    "p_c": [0.1, 0.7]})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     list(use_named_prob_columns(df, 3, "f.csv").columns)
    ['label', 'pred', 'p_0', 'p_1', 'p_2']
    """
    index_columns = [f"{PROB_PREFIX}{i}" for i in range(k)]
    if all(c in df.columns for c in index_columns):
        return df
    named = [c for c in df.columns if str(c).startswith(PROB_PREFIX) and c not in index_columns]
    if not named:
        return df
    listed = ", ".join(named)
    if len(named) == k and _order_confirmed(df, named):
        mapping = ", ".join(f"{c} = class {i}" for i, c in enumerate(named))
        warnings.warn(f"{source}: no run.json beside it names the classes; the probability columns are read "
                      f"in the file's order ({mapping}): every answered row's largest is its pred",
                      UserWarning, stacklevel=2)
        return df.rename(columns=dict(zip(named, index_columns, strict=True)))
    why = (f"{len(named)} columns for {k} classes" if len(named) != k
           else "their order does not match the pred column")
    warnings.warn(f"{source}: probability columns {listed} found but not read ({why}; no run.json beside "
                  f"it names the classes): no AUC. Keep the file in its run folder, give the classes in "
                  f"label order (--classes NAMES or --task), or name the columns {', '.join(index_columns)}",
                  UserWarning, stacklevel=2)
    return df
