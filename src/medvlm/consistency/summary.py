"""``summary.json`` of a consistency run (:func:`build_summary`) from its answer rows: the summary over all
images, per image, per prompt and per temperature (:mod:`medvlm.consistency.stats`), and whether
sampling happened at all (:func:`sampling_effective`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medvlm.consistency.stats import answer_categories, prompt_robustness, summarize_answers, summarize_images

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from medvlm.consistency.config import Sampling
    from medvlm.tasks.base import Task

_IMAGE_KEYS = ["_prompt", "_sampling", "_image"]


def sampling_effective(frame: pd.DataFrame, samplings: list[Sampling], repeats: int) -> bool | None:
    """Whether sampling happened: None when none was asked for (no temperature above 0, or one
    repeat); else False when every image of every sampled series got the byte-identical answer in every
    repeat, True otherwise."""
    sampled = [i for i, s in enumerate(samplings) if s.temperature is not None and s.temperature > 0]
    if repeats < 2 or not sampled:
        return None
    part = frame[frame["_sampling"].isin(sampled)]
    if part.empty:
        return None
    distinct = part.groupby(_IMAGE_KEYS, sort=False)["raw"].nunique()
    return bool((distinct > 1).any())


def build_summary(frame: pd.DataFrame, *, prompts: list[str], samplings: list[Sampling], repeats: int,
                  task: Task, n_failed: int = 0, tie_break: str | None = None) -> dict[str, Any]:
    """``summary.json`` from the answer rows (``consistency.csv`` plus the private ``_prompt``,
    ``_sampling``, ``_image`` index columns). Categories: the task's answer codes and "unparsed"; a tie
    goes to the ``tie_break`` class (default: the positive one). See
    :func:`medvlm.consistency.run.run_consistency` for the keys."""
    tie_break = task.tie_break_name(tie_break)
    answers = {"categories": answer_categories(task.codes), "first": str(task.tie_break_label(tie_break))}
    overall, groups = _group_summary(frame, _IMAGE_KEYS, answers)
    summary: dict[str, Any] = {**overall, "repeats": repeats, "n_failed": n_failed, "tie_break": tie_break,
                               "prompts": prompts, "sampling": [s.model_dump(mode="json") for s in samplings]}
    per_image = []
    for row, choices in groups:
        s = summarize_answers(choices, label=row["label"], **answers)
        per_image.append({"patient_id": str(row["patient_id"]), "orientation": str(row["orientation"]),
                          "slice_index": int(row["slice_index"]), "prompt": prompts[int(row["_prompt"])],
                          "temperature": samplings[int(row["_sampling"])].temperature, **s})
    summary["per_image"] = per_image
    effective = sampling_effective(frame, samplings, repeats)
    if effective is not None:
        summary["sampling_effective"] = effective
    if len(prompts) > 1:
        summary["per_prompt"] = []
        for i, name in enumerate(prompts):
            sub, _ = _group_summary(frame[frame["_prompt"] == i], _IMAGE_KEYS, answers)
            summary["per_prompt"].append({"prompt": name, **sub})
        summary["prompt_robustness"] = prompt_robustness(per_image)
    if len(samplings) > 1:
        summary["per_temperature"] = []
        for i, s in enumerate(samplings):
            sub, _ = _group_summary(frame[frame["_sampling"] == i], _IMAGE_KEYS, answers)
            summary["per_temperature"].append({"temperature": s.temperature, "top_p": s.top_p, **sub})
    return summary


def _group_summary(frame: pd.DataFrame, keys: list[str], answers: dict[str, Any]
                   ) -> tuple[dict[str, Any], list]:
    """Summary over the images of ``frame`` (image = one combination of ``keys``), and the per-image
    groups in frame order."""
    import pandas as pd

    groups = []
    for _, g in frame.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("repeat", kind="stable")
        choices = [None if pd.isna(c) else int(c) for c in g["choice"]]
        groups.append((g.iloc[0], choices))
    summary = summarize_images([(c, r["label"]) for r, c in groups], **answers)
    return summary, groups
