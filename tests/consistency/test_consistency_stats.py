"""The pure summary functions of medvlm.consistency.stats against hand-computed values."""

from __future__ import annotations

import math

import pytest

from medvlm.consistency.stats import (
    CATEGORIES,
    agreement,
    answer_categories,
    count_answers,
    entropy_bits,
    expected_accuracy,
    fleiss_kappa,
    flip_rate,
    majority_answer,
    prompt_robustness,
    summarize_answers,
    summarize_images,
)

WIKIPEDIA = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


@pytest.mark.parametrize(("choices", "expected"), [
    ([], {"0": 0, "1": 0, "2": 0, "unparsed": 0}),
    ([1, 1.0, "1", 0, 2, None, float("nan"), "", "x", 3, -1], {"0": 1, "1": 3, "2": 1, "unparsed": 6}),
])
def test_count_answers_unparsed_is_its_own_category(choices, expected):
    assert count_answers(choices) == expected
    assert list(count_answers(choices)) == list(CATEGORIES)


def test_hand_made_list_exact_values():
    #            r0 r1 r2  r3    r4 r5 r6 r7
    choices = [1, 1, 0, None, 1, 2, 1, 1]
    s = summarize_answers(choices, label=0)
    assert s["n"] == 8
    assert s["counts"] == {"0": 1, "1": 5, "2": 1, "unparsed": 1}
    assert s["majority"] == "1" and s["tie"] is False
    assert s["agreement"] == 5 / 8
    # -(5/8 log2 5/8 + 3 * 1/8 log2 1/8)
    assert math.isclose(s["entropy"], 5 / 8 * math.log2(8 / 5) + 3 * 1 / 8 * 3)
    assert math.isclose(s["entropy"], 1.5487949406953985)
    assert s["flip_rate"] == 5 / 7  # changes at r2, r3, r4, r5, r6
    assert s["consensus_correct"] == 0.0 and s["expected_accuracy"] == 1 / 8
    assert summarize_answers(choices, label=1)["consensus_correct"] == 1.0
    assert summarize_answers(choices, label=1)["expected_accuracy"] == 5 / 8
    assert summarize_answers(choices)["consensus_correct"] is None


def test_the_study_lgg_image():
    """77 of 95 answers HGG for an LGG image (18 LGG)."""
    s = summarize_answers([1] * 77 + [0] * 18, label=0)
    assert s["majority"] == "1" and math.isclose(s["agreement"], 77 / 95)
    p, q = 77 / 95, 18 / 95
    assert math.isclose(s["entropy"], -(p * math.log2(p) + q * math.log2(q)))
    assert s["flip_rate"] == 1 / 94 and s["consensus_correct"] == 0.0
    assert math.isclose(s["expected_accuracy"], 18 / 95)
    hgg = summarize_answers([1] * 95, label=1)
    assert hgg["agreement"] == 1.0 and hgg["entropy"] == 0.0 and hgg["flip_rate"] == 0.0
    assert hgg["consensus_correct"] == 1.0 and hgg["expected_accuracy"] == 1.0


def test_edge_cases():
    assert majority_answer(count_answers([])) is None and agreement(count_answers([])) is None
    assert entropy_bits(count_answers([])) is None and flip_rate([1]) is None
    assert expected_accuracy([], 1) is None
    assert entropy_bits(count_answers([0, 1, 2, None])) == 2.0
    assert majority_answer(count_answers([None, None, 1])) == "unparsed"
    tied = count_answers([0, 1, 1, 0, 2])
    assert majority_answer(tied) == "1" and majority_answer(tied, first="0") == "0"
    assert summarize_answers([0, 1], label=0)["tie"] is True
    assert majority_answer(count_answers([2, 2, None, None])) == "2"  # no LGG/HGG in the tie: NG first
    with pytest.raises(ValueError, match="label"):
        expected_accuracy([1], -1)
    with pytest.raises(ValueError, match="label"):
        expected_accuracy([1], 0.5)


def test_a_two_code_task_has_three_categories():
    cats = answer_categories(("0", "1"))
    assert count_answers([0, 1, 1, 2, None], cats) == {"0": 1, "1": 2, "unparsed": 2}  # 2 is no code here
    s = summarize_answers([0, 0, 1, 1], label=0, categories=cats, first="0")
    assert s["majority"] == "0" and s["tie"] and s["counts"] == {"0": 2, "1": 2, "unparsed": 0}


def test_fleiss_kappa_wikipedia_example():
    """Wikipedia, Fleiss' kappa, worked example: P-bar 0.378, P_e 0.213, kappa 0.210."""
    kappa = fleiss_kappa(WIKIPEDIA)
    assert round(kappa, 3) == 0.210
    assert math.isclose(kappa, (0.37802197802197807 - 0.21275510204081635) / (1 - 0.21275510204081635))


def test_fleiss_kappa_hand_computed():
    # P_i = 1, 1, 0 -> P-bar 2/3; p = (1/2, 1/2) -> P_e 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert math.isclose(fleiss_kappa([[2, 0], [0, 2], [1, 1]]), 1 / 3)
    # unequal totals: P_i = 1, 1; p = (3/5, 2/5), P_e = 0.52; kappa 1; a row with one answer is left out
    assert math.isclose(fleiss_kappa([[3, 0], [0, 2], [1, 0]]), 1.0)
    # every repeat of every image disagrees as much as possible: negative
    assert fleiss_kappa([[1, 1], [1, 1]]) == -1.0
    assert fleiss_kappa([[5, 0]]) is None  # one image
    assert fleiss_kappa([[5, 0, 0], [4, 0, 0]]) is None  # one category only: undefined


def test_summarize_images_pools_answers_and_averages_images():
    images = [([1] * 95, 1), ([1] * 77 + [0] * 18, 0), ([0, 0, 1, None], None)]
    s = summarize_images(images)
    assert s["n"] == 194 and s["n_images"] == 3
    assert s["counts"] == {"0": 20, "1": 173, "2": 0, "unparsed": 1}
    assert s["majority"] == "1" and math.isclose(s["agreement"], 173 / 194)
    # flips counted within images only: 0 + 1 + 2 over 94 + 94 + 3 pairs
    assert math.isclose(s["flip_rate"], 3 / 191)
    assert math.isclose(s["mean_agreement"], (1 + 77 / 95 + 0.5) / 3)
    assert s["n_labelled"] == 2 and s["consensus_accuracy"] == 0.5
    assert math.isclose(s["expected_accuracy"], (1 + 18 / 95) / 2)
    table = [[0, 95, 0, 0], [18, 77, 0, 0], [2, 1, 0, 1]]
    assert math.isclose(s["fleiss_kappa"], fleiss_kappa(table))
    flips_only = summarize_images([([1, 1], 1), ([0, 0], 0)])
    assert flips_only["flip_rate"] == 0.0 and flips_only["fleiss_kappa"] == 1.0
    empty = summarize_images([])
    assert empty["n"] == 0 and empty["majority"] is None and empty["consensus_accuracy"] is None


def test_prompt_robustness():
    def row(pid, prompt, majority, t=None):
        return {"patient_id": pid, "orientation": "axial", "slice_index": 3, "temperature": t,
                "prompt": prompt, "majority": majority}

    rows = [row("A", "p1", "1"), row("A", "p2", "1"), row("A", "p3", "1"),
            row("B", "p1", "1"), row("B", "p2", "0"), row("B", "p3", "0"), row("C", "p1", "0")]
    r = prompt_robustness(rows)
    assert r == {"n_images": 2, "same_majority_share": 0.5, "mean_majority_agreement": (1 + 2 / 3) / 2}

