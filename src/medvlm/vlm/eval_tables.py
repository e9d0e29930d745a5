"""From ``eval-vlm``'s answers to its tables: the per-call rows and failures (:func:`call_frames`), the
per-unit votes of each orientation and ``combined`` (:func:`reduce_calls`) and the metrics of one set of
predictions with its call counts (:func:`part_metrics`). Labels, columns and the reducer's rules come
from the task (:mod:`medvlm.tasks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medvlm.vlm.engine import Answer
from medvlm.vlm.records import call_frame

if TYPE_CHECKING:
    from medvlm.tasks.base import Task

FAILURE_COLUMNS = ["patient_id", "orientation", "slice_index", "repeat", "error"]


def call_frames(answers: list[Answer], order: dict[str, int], orientations: list[str], task: Task):
    """(per-call rows, failures), sorted by patient (cohort order), orientation, slice, repeat."""
    import pandas as pd

    if task.unit == "image":
        return image_call_frames(answers, order, task)
    rows, failures = [], []
    for a in answers:
        pid, orientation, index = a.meta
        if a.response.failed:
            failures.append({"patient_id": pid, "orientation": orientation, "slice_index": index,
                             "repeat": a.repeat, "error": a.response.error})
        else:
            rows.append({"patient_id": pid, "orientation": orientation, "slice_index": index,
                         "repeat": a.repeat, "response": a.response})
    o_rank = {o: i for i, o in enumerate(orientations)}

    def ordered(df):
        if len(df):
            df = df.sort_values(["patient_id", "orientation", "slice_index", "repeat"],
                                key=lambda s: s.map(order) if s.name == "patient_id"
                                else s.map(o_rank) if s.name == "orientation" else s, kind="stable")
        return df.reset_index(drop=True)

    return ordered(call_frame(rows, task)), ordered(pd.DataFrame(failures, columns=FAILURE_COLUMNS))


def image_call_frames(answers: list[Answer], order: dict[str, int], task: Task):
    """:func:`call_frames` of an image task: keyed by ``patient_id, image_id``."""
    import pandas as pd

    keys = ["patient_id", "image_id"]
    rows, failures = [], []
    for a in answers:
        pid, image_id = a.meta
        if a.response.failed:
            failures.append({"patient_id": pid, "image_id": image_id, "repeat": a.repeat,
                             "error": a.response.error})
        else:
            rows.append({"patient_id": pid, "image_id": image_id, "repeat": a.repeat, "response": a.response})

    def ordered(df):
        if len(df):
            df = df.sort_values([*keys, "repeat"], kind="stable",
                                key=lambda s: s.map(order) if s.name == "patient_id" else s)
        return df.reset_index(drop=True)

    return (ordered(call_frame(rows, task, key=keys)),
            ordered(pd.DataFrame(failures, columns=[*keys, "repeat", "error"])))


def part_metrics(units, calls, n_failed: int, *, n_boot: int, seed: int, task: Task | None = None
             ) -> dict[str, Any]:
    """Metrics of one set of predictions (one orientation, or combined), through the one shared path
    (:func:`medvlm.predictions.predictions_metrics`; bootstrap clustered by patient for slice units),
    plus the call counts behind them."""
    import warnings

    from medvlm.predictions import predictions_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = predictions_metrics(units, n_boot=n_boot, seed=seed, task=task)
    n_calls = len(calls)
    n_unparsed = int(calls["choice"].isna().sum())
    out.update({"n_calls": n_calls, "n_unparsed": n_unparsed, "n_failed": n_failed,
                "parsed_share": (n_calls - n_unparsed) / n_calls if n_calls else None,
                "n_no_score": int(units["score"].isna().sum()),
                "n_truncated": int((calls["finish_reason"] == "length").sum())})
    return out


def reduce_calls(calls, failures, units, *, task: Task, reducer: str, tie_break: int,
                 orientations: list[str]):
    """Per-unit rows for each orientation and ``combined``: ``{name: (unit rows, their calls,
    n_failed)}``, and the table written as patients.csv (patient unit) or units.csv (others)."""
    import pandas as pd

    from medvlm.aggregate import COMBINED, keyed_rows, patient_rows

    names = [*orientations, COMBINED]
    if task.unit == "patient":
        labels = dict(zip(units["patient_id"], units["label"], strict=True))
        table = patient_rows(calls, labels, task=task, reducer=reducer, tie_break=tie_break,
                             orientations=orientations)
        fail_counts = (failures.groupby(["patient_id", "orientation"]).size().to_dict()
                       if len(failures) else {})
        table["n_failed"] = [
            sum(v for (p, _o), v in fail_counts.items() if p == pid) if o == COMBINED
            else fail_counts.get((pid, o), 0)
            for pid, o in zip(table["patient_id"], table["orientation"], strict=True)]
        parts = {name: table[table["orientation"] == name] for name in names}
    else:
        keys = ["patient_id", *task.unit_keys]
        table = keyed_rows(calls, units, task=task, keys=keys, reducer=reducer, tie_break=tie_break)
        fails = failures.groupby(keys).size() if len(failures) else pd.Series(dtype=int)
        table["n_failed"] = [int(fails.get(tuple(k), 0)) for k in table[keys].itertuples(index=False)]
        parts = {name: table if name == COMBINED else table[table["orientation"] == name] for name in names}
    out = {}
    for name, part in parts.items():
        sub_calls = calls if name == COMBINED else calls[calls["orientation"] == name]
        out[name] = (part, sub_calls, int(part["n_failed"].sum()))
    return out, table
