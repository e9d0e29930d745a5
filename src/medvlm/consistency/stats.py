"""The pure summary functions of a consistency run: one image's repeated answers, several images, and
the robustness of the majority answer to a paraphrase of the prompt (doctested; no I/O).

Answer categories: the task's answer codes (``"0"``, ``"1"``, ...) and ``"unparsed"`` (an answer that
could not be read is a category of its own, never a guess); :func:`answer_categories` builds them. A
truth label ``i`` is right for answer code ``"i"``. The default categories are a three-code task's.

One image: :func:`category`, :func:`count_answers`, :func:`majority_answer`, :func:`is_tie`,
:func:`agreement`, :func:`entropy_bits`, :func:`flips`, :func:`flip_rate`, :func:`expected_accuracy`,
:func:`summarize_answers`. Across images: :func:`fleiss_kappa`, :func:`summarize_images`,
:func:`prompt_robustness`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

UNPARSED = "unparsed"


def answer_categories(codes: Sequence[str]) -> tuple[str, ...]:
    """A task's answer codes plus ``"unparsed"``: the categories, in this order everywhere (``counts``
    keys, Fleiss' kappa columns).

    >>> answer_categories(("0", "1"))
    ('0', '1', 'unparsed')
    """
    return (*codes, UNPARSED)


#: the default categories (a three-code task, e.g. brats-grading's 0, 1, 2)
CATEGORIES = answer_categories(("0", "1", "2"))


def category(choice: Any, categories: Sequence[str] = CATEGORIES) -> str:
    """One answer -> its category: an answer code (int, float or digit string) -> ``"0"``, ``"1"``, ...;
    anything else (None, NaN, empty, codes not in ``categories``) -> ``"unparsed"``.

    >>> [category(c) for c in (1, 0.0, "2", None, float("nan"), "", 3)]
    ['1', '0', '2', 'unparsed', 'unparsed', 'unparsed', 'unparsed']
    """
    code = _code(choice)
    return code if code in categories else UNPARSED


def _code(choice: Any) -> str:
    """An answer as its code string (any non-negative integer), else ``"unparsed"``."""
    if choice is None:
        return UNPARSED
    try:
        value = float(choice)
    except (TypeError, ValueError):
        return UNPARSED
    if math.isnan(value) or not value.is_integer() or value < 0:
        return UNPARSED
    return str(int(value))


def count_answers(choices: Iterable[Any], categories: Sequence[str] = CATEGORIES) -> dict[str, int]:
    """Counts of the categories (every key present, in order).

    >>> count_answers([1, 1, 0, None, 2, 1])
    {'0': 1, '1': 3, '2': 1, 'unparsed': 1}
    """
    counts = dict.fromkeys(categories, 0)
    for c in choices:
        counts[category(c, categories)] += 1
    return counts


def _n(counts: Mapping[str, int]) -> int:
    return int(sum(int(v) for v in counts.values()))


def majority_answer(counts: Mapping[str, int], *, first: str | None = "1") -> str | None:
    """The most frequent category (may be ``"unparsed"``); None when there is no answer.

    A tie between the most frequent categories goes to ``first`` (the tie-break class's code; "1", the
    positive class of a binary task, by default) when it is among them, else to the first of them in
    the counts' order.

    >>> majority_answer({"0": 18, "1": 77, "2": 0, "unparsed": 0})
    '1'
    >>> tied = {"0": 2, "1": 2, "2": 0, "unparsed": 0}
    >>> majority_answer(tied), majority_answer(tied, first="0")
    ('1', '0')
    >>> majority_answer({"0": 1, "1": 0, "2": 0, "unparsed": 3})
    'unparsed'
    """
    if _n(counts) == 0:
        return None
    top = max(int(v) for v in counts.values())
    best = [k for k, v in counts.items() if int(v) == top]
    return first if first in best else best[0]


def is_tie(counts: Mapping[str, int]) -> bool:
    """True when two or more categories share the highest count (and there is an answer).

    >>> is_tie({"0": 2, "1": 2}), is_tie({"0": 1, "1": 2})
    (True, False)
    """
    values = [int(v) for v in counts.values()]
    return max(values) > 0 and values.count(max(values)) > 1


def agreement(counts: Mapping[str, int]) -> float | None:
    """Share of the majority answer among all answers (unparsed included); None without answers.

    >>> round(agreement({"0": 18, "1": 77, "2": 0, "unparsed": 0}), 4)
    0.8105
    """
    n = _n(counts)
    return None if n == 0 else max(int(v) for v in counts.values()) / n


def entropy_bits(counts: Mapping[str, int]) -> float | None:
    """Shannon entropy (bits) of the answer distribution over the categories: 0 when every answer
    is the same, 1 for an even split of two, 2 for an even split of four; None without answers.

    >>> entropy_bits({"0": 5, "1": 5, "2": 0, "unparsed": 0})
    1.0
    >>> entropy_bits({"0": 1, "1": 1, "2": 1, "unparsed": 1}), entropy_bits({"1": 95})
    (2.0, 0.0)
    >>> round(entropy_bits({"0": 18, "1": 77}), 4)
    0.7004
    """
    n = _n(counts)
    if n == 0:
        return None
    h = -sum((c / n) * math.log2(c / n) for c in (int(v) for v in counts.values()) if c)
    return abs(h)  # no -0.0


def flips(choices: Sequence[Any]) -> tuple[int, int]:
    """(number of consecutive pairs whose categories differ, number of consecutive pairs).

    >>> flips([1, 1, 0, 0, None, None, 1])
    (3, 6)
    """
    cats = [_code(c) for c in choices]
    changed = sum(a != b for a, b in zip(cats, cats[1:], strict=False))
    return changed, max(len(cats) - 1, 0)


def flip_rate(choices: Sequence[Any]) -> float | None:
    """Share of consecutive repeats (in repeat order) whose answer differs from the previous one;
    None for fewer than two answers. 0 = never changes its mind; about ``1 - sum p_k^2`` for
    independent draws.

    >>> flip_rate([1, 1, 0, 0, None, None, 1])
    0.5
    >>> flip_rate([1]) is None
    True
    """
    changed, pairs = flips(choices)
    return None if pairs == 0 else changed / pairs


def truth_label(label: Any) -> int | None:
    """A truth label -> a non-negative integer (a class); None when missing (None, NaN, not a number).
    Any other number raises ValueError.

    >>> truth_label(1.0), truth_label("0"), truth_label(None), truth_label(float("nan"))
    (1, 0, None, None)
    """
    if label is None:
        return None
    try:
        value = float(label)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    if value < 0 or not value.is_integer():
        raise ValueError(f"label must be a class number 0, 1, ...; got {label!r}")
    return int(value)


def expected_accuracy(choices: Sequence[Any], label: Any) -> float | None:
    """Mean accuracy of single answers against the truth ``label``: the chance that one call, picked at
    random, is right. Abstaining and unparsed answers count as wrong. None without a label or without
    answers.

    >>> expected_accuracy([1, 1, 1, 0, None], 0)
    0.2
    >>> expected_accuracy([1, 1], None) is None
    True
    """
    lab = truth_label(label)
    if lab is None or len(choices) == 0:
        return None
    return sum(_code(c) == str(lab) for c in choices) / len(choices)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa: agreement among repeated answers beyond chance, across images.

    Args:
        table: one row per image (subject), one column per category, ``table[i][j]`` = how many of the
            image's repeats (raters) gave category j. Rows may have different totals (e.g. after failed
            calls): the per-image agreement ``P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))`` and the
            category shares ``p_j = sum_i n_ij / sum_i n_i`` then follow Fleiss (1971) with ``n_i`` in
            place of a constant n (the same as Fleiss for equal totals). Rows with fewer than 2 answers
            are left out.

    Returns:
        ``(mean P_i - P_e) / (1 - P_e)`` with ``P_e = sum_j p_j^2``; 1 = perfect agreement, 0 = what
        chance gives, negative = less. None with fewer than 2 usable images, or when every answer falls
        into one category (``P_e = 1``: kappa undefined).

    The textbook example (Fleiss' kappa on Wikipedia: 10 subjects, 14 raters, 5 categories):

    >>> wiki = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    ...         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    >>> round(fleiss_kappa(wiki), 3)
    0.21
    >>> fleiss_kappa([[5, 0], [0, 5]]), fleiss_kappa([[5, 0], [5, 0]]) is None
    (1.0, True)
    """
    rows = [[int(v) for v in row] for row in table]
    rows = [row for row in rows if sum(row) >= 2]
    if len(rows) < 2:
        return None
    width = max(len(row) for row in rows)
    rows = [row + [0] * (width - len(row)) for row in rows]
    total = sum(sum(row) for row in rows)
    p = [sum(row[j] for row in rows) / total for j in range(width)]
    p_e = sum(x * x for x in p)
    p_i = [sum(v * (v - 1) for v in row) / (sum(row) * (sum(row) - 1)) for row in rows]
    p_bar = sum(p_i) / len(p_i)
    if math.isclose(p_e, 1.0, rel_tol=0.0, abs_tol=1e-12):
        return None
    return (p_bar - p_e) / (1 - p_e)


def summarize_answers(choices: Sequence[Any], *, label: Any = None, categories: Sequence[str] = CATEGORIES,
                      first: str | None = "1") -> dict[str, Any]:
    """Summary of one image's repeated answers (``choices`` in repeat order; codes, None = unparsed).

    Keys: ``n``, ``counts`` (every category), ``majority`` (a category key, see
    :func:`majority_answer`; ``first`` breaks ties), ``tie`` (the top counts tied), ``agreement``,
    ``entropy`` (bits), ``flip_rate``, ``label`` (a class or None), ``consensus_correct`` (1.0 when the
    majority
    answer equals the label, 0.0 when not, None without label), ``expected_accuracy``.

    >>> s = summarize_answers([1] * 77 + [0] * 18, label=0)
    >>> s["counts"], s["majority"], round(s["agreement"], 3), round(s["entropy"], 3)
    ({'0': 18, '1': 77, '2': 0, 'unparsed': 0}, '1', 0.811, 0.7)
    >>> s["consensus_correct"], round(s["expected_accuracy"], 3), round(s["flip_rate"], 3)
    (0.0, 0.189, 0.011)
    """
    counts = count_answers(choices, categories)
    majority = majority_answer(counts, first=first)
    lab = truth_label(label)
    return {
        "n": _n(counts),
        "counts": counts,
        "majority": majority,
        "tie": is_tie(counts),
        "agreement": agreement(counts),
        "entropy": entropy_bits(counts),
        "flip_rate": flip_rate(choices),
        "label": lab,
        "consensus_correct": None if lab is None or majority is None else float(majority == str(lab)),
        "expected_accuracy": expected_accuracy(choices, lab),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize_images(images: Sequence[tuple[Sequence[Any], Any]], *, categories: Sequence[str] = CATEGORIES,
                     first: str | None = "1") -> dict[str, Any]:
    """Summary over several images, each ``(choices in repeat order, label or None)``.

    The contract's keys are over *all* answers pooled: ``n``, ``counts``, ``majority``, ``agreement``,
    ``entropy``. Then, over images: ``n_images``; ``flip_rate`` (flips / consecutive pairs, pooled within
    images); ``mean_agreement``, ``mean_entropy`` (means of the per-image values); ``fleiss_kappa``
    (:func:`fleiss_kappa` over the images' category counts; None for one image); ``n_labelled``;
    ``consensus_accuracy`` (share of labelled images whose majority answer equals the label);
    ``expected_accuracy`` (mean over labelled images of their :func:`expected_accuracy`).

    >>> s = summarize_images([([1] * 95, 1), ([1] * 77 + [0] * 18, 0)])
    >>> s["n"], s["counts"]["1"], s["majority"], s["n_images"], s["consensus_accuracy"]
    (190, 172, '1', 2, 0.5)
    >>> round(s["expected_accuracy"], 4), round(s["mean_agreement"], 4)
    (0.5947, 0.9053)
    """
    per = [summarize_answers(c, label=lab, categories=categories, first=first) for c, lab in images]
    pooled = dict.fromkeys(categories, 0)
    for s in per:
        for k in categories:
            pooled[k] += s["counts"][k]
    changed = pairs = 0
    for choices, _ in images:
        c, p = flips(choices)
        changed, pairs = changed + c, pairs + p
    labelled = [s for s in per if s["label"] is not None and s["n"]]
    return {
        "n": _n(pooled),
        "counts": pooled,
        "majority": majority_answer(pooled, first=first),
        "agreement": agreement(pooled),
        "entropy": entropy_bits(pooled),
        "n_images": len(per),
        "flip_rate": changed / pairs if pairs else None,
        "mean_agreement": _mean(s["agreement"] for s in per),
        "mean_entropy": _mean(s["entropy"] for s in per),
        "fleiss_kappa": fleiss_kappa([[s["counts"][k] for k in categories] for s in per]),
        "n_labelled": len(labelled),
        "consensus_accuracy": _mean(s["consensus_correct"] for s in labelled),
        "expected_accuracy": _mean(s["expected_accuracy"] for s in labelled),
    }


def prompt_robustness(per_image: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Does the majority answer of an image survive a paraphrase of the prompt? Over images (patient,
    orientation, slice, temperature) asked with two or more prompts: ``n_images``,
    ``same_majority_share`` (share of images whose majority answer is the same under every prompt) and
    ``mean_majority_agreement`` (mean over images of the share of prompts giving the most common
    majority).

    >>> rows = [{"patient_id": "A", "orientation": "axial", "slice_index": 1, "temperature": None,
    ...          "prompt": p, "majority": m} for p, m in (("seed", "1"), ("alt", "1"))]
    >>> rows += [{"patient_id": "B", "orientation": "axial", "slice_index": 1, "temperature": None,
    ...           "prompt": p, "majority": m} for p, m in (("seed", "1"), ("alt", "0"))]
    >>> prompt_robustness(rows)
    {'n_images': 2, 'same_majority_share': 0.5, 'mean_majority_agreement': 0.75}
    """
    by_image: dict[tuple, list[str | None]] = {}
    for r in per_image:
        key = (r["patient_id"], r["orientation"], r["slice_index"], r["temperature"])
        by_image.setdefault(key, []).append(r["majority"])
    multi = [m for m in by_image.values() if len(m) > 1]
    shares = [max(m.count(v) for v in m) / len(m) for m in multi]
    return {"n_images": len(multi),
            "same_majority_share": _mean(float(len(set(m)) == 1) for m in multi),
            "mean_majority_agreement": _mean(shares)}
