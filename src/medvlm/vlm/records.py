"""From what a backend returned to what a task reads: the parse after the cache, one record per call.

- :func:`interpret` fills a response's ``choice`` (answer code index or None) and ``probs`` (code
  probabilities normalised over the task's codes) from the raw text and code probabilities, through
  the task's parser. It runs on fresh *and* cached answers, so a parser change reaches old answers.
- :func:`call_frame` turns answers into the per-call table shared by ``slices.csv`` (eval-vlm) and
  ``consistency.csv``: the key columns, ``repeat``, ``choice`` (empty = unparsed), one probability
  column per answer code (named by the task), ``raw``, ``mass`` and ``finish_reason`` (``length`` = the
  answer was cut at ``--max-new-tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medvlm.vlm.types import VLMResponse, normalise_probs

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

#: the leading columns of a per-call row (the unit key of a slice), before repeat and the answer
CALL_KEY = ["patient_id", "orientation", "slice_index"]


def interpret(response: VLMResponse, task: Task, *, prefill: str = "") -> VLMResponse:
    """Set ``response.choice`` and ``response.probs`` from the raw answer (in place; returned).

    With code probabilities: ``probs`` normalised over ``task.codes`` (a code the backend did not
    return counts 0) and ``choice`` the most probable code (the first on a tie); when they are all 0,
    or without them, ``choice`` = ``task.parser(prefill + raw)``. ``prefill`` is used when the
    response does not record its own (a cache migrated from medvlm 0.1).

    >>> from medvlm.tasks import get_task
    >>> task = get_task("brats-grading")
    >>> interpret(VLMResponse(raw="Choice: 0 Reasoning: x"), task).choice
    0
    >>> r = interpret(VLMResponse(raw="", code_probs={"0": 0.25, "1": 0.5, "2": 0.25}), task)
    >>> r.choice, r.probs
    (1, (0.25, 0.5, 0.25))
    """
    if response.failed:
        return response
    response.probs = None
    if response.code_probs is not None:
        response.probs, _ = normalise_probs(*(float(response.code_probs.get(c, 0.0)) for c in task.codes))
    if response.probs is not None:
        probs = response.probs
        response.choice = max(range(len(probs)), key=lambda i: probs[i])
    else:
        head = response.prefill if response.prefill is not None else prefill
        response.choice = task.parser(head + (response.raw or ""))
    return response


def call_frame(records: Sequence[dict[str, Any]], task: Task, *, key: Sequence[str] = CALL_KEY,
               extra: Sequence[str] = ()) -> Any:
    """A DataFrame of per-call rows: ``key``, ``repeat``, ``choice``, the task's probability columns,
    ``raw``, ``mass``, ``finish_reason``, then ``extra``. Each record is a dict with the key columns,
    ``repeat``,
    ``response`` (an interpreted :class:`VLMResponse`) and the ``extra`` columns. Dtypes: ``choice``
    nullable integer, probabilities and mass float64."""
    import pandas as pd

    prob_columns = task.prob_columns
    columns = [*key, "repeat", "choice", *prob_columns, "raw", "mass", "finish_reason", *extra]
    rows = []
    for rec in records:
        r: VLMResponse = rec["response"]
        probs = r.probs or (None,) * len(prob_columns)
        rows.append({**{k: rec[k] for k in (*key, "repeat", *extra)}, "choice": r.choice,
                     **dict(zip(prob_columns, probs, strict=True)), "raw": r.raw or "", "mass": r.mass,
                     "finish_reason": r.finish_reason or ""})
    frame = pd.DataFrame(rows, columns=columns)
    frame["choice"] = frame["choice"].astype("Int64")
    for c in (*prob_columns, "mass"):
        frame[c] = frame[c].astype("float64")
    return frame


def csv_text(frame) -> str:
    """``frame.to_csv(index=False)`` with carriage returns in text cells written as newlines.

    pandas (Python's csv writer, ``lineterminator="\\n"``) quotes a cell holding ``"\\n"`` but not
    one holding a lone ``"\\r"``, which every CSV reader then takes for a line break: a model answer
    with a carriage return became two rows. Line breaks are normalised to ``"\\n"`` (always quoted),
    so each call stays exactly one CSV record.

    >>> import pandas as pd
    >>> csv_text(pd.DataFrame({"raw": ["a\\rb", "c\\r\\nd"], "n": [1, 2]}))
    'raw,n\\n"a\\nb",1\\n"c\\nd",2\\n'
    """
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object or str(frame[col].dtype).startswith(("str", "string")):
            frame[col] = [v.replace("\r\n", "\n").replace("\r", "\n") if isinstance(v, str) else v
                          for v in frame[col]]
    return frame.to_csv(index=False)
