"""Votes, positive-vote share (GLDR) and reducers on hand-computed cases, with the study's task and a
slice-level one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medvlm.aggregate import (
    REDUCERS,
    Vote,
    keyed_rows,
    majority,
    mean_prob,
    patient_rows,
    vote_counts,
    vote_share,
)
from medvlm.errors import ConfigError
from medvlm.tasks import get_task

GRADING = get_task("brats-grading")


def test_counts_and_gldr():
    assert vote_counts([0, 0, 1, 2, 2, 2, None, float("nan")]) == (2, 1, 3, 2)
    assert vote_counts([0, 1, 1, None], 2) == (1, 2, 1)
    assert vote_share(2, 1) == pytest.approx(1 / 3)
    assert vote_share(0, 5) == 1.0 and vote_share(0, 0) is None
    with pytest.raises(ValueError, match=r"^answer 3 is not one of 0..2 or None$"):
        vote_counts([3])
    with pytest.raises(ValueError, match=r"^answer 2 is not one of 0..1 or None$"):
        vote_counts([2], 2)
    with pytest.raises(ValueError, match=r"^answer 0.5 is not one of 0..2 or None$"):
        vote_counts([0.5])  # not a code, even though 0 <= 0.5 < 3
    with pytest.raises(ValueError, match=r"^answer -1 is not one of 0..2 or None$"):
        vote_counts([-1])


@pytest.mark.parametrize(("choices", "tie", "expected"), [
    ([1, 1, 1, 0], 1, Vote(1, 0.75)),
    ([0, 0, 1, 2, 2, 2, 2], 1, Vote(0, 1 / 3)),   # no-glioma answers do not vote
    ([0, 1, None, None], 1, Vote(1, 0.5)),         # tie -> HGG
    ([0, 1], 0, Vote(0, 0.5)),                     # tie -> LGG when asked
    ([2, 2, None], 1, Vote(None, None)),           # no class vote at all: abstained, never a guess
    ([], 0, Vote(None, None)),
])
def test_majority(choices, tie, expected):
    got = majority(choices, tie_break=tie)
    assert got.pred == expected.pred
    assert (got.score is None and expected.score is None) or math.isclose(got.score, expected.score)


def test_mean_prob():
    v = mean_prob([None] * 3, [(0.6, 0.3, 0.1), (0.2, 0.4, 0.4), None])  # P(LGG) 0.4 > P(HGG) 0.35
    assert v.pred == 0 and v.score == pytest.approx(0.35)
    assert mean_prob([], [(0.25, 0.25, 0.5)]).pred == 1  # tie -> HGG
    assert mean_prob([], [(0.25, 0.25, 0.5)], tie_break=0).pred == 0
    assert mean_prob([], [None]) == Vote(None, None)
    assert REDUCERS.get("mean_prob") is mean_prob


def test_mean_prob_same_probabilities_same_score_whatever_the_number_of_answers():
    # the no-image control: every call answered alike; float sums of 3, 7 or 29 equal values differ in the
    # last digits, which an AUC would rank
    row = (0.3051373661949819, 0.4133778463394049, 0.28148478746561323)
    scores = {mean_prob([None] * n, [row] * n).score for n in range(1, 60)}
    assert len(scores) == 1
    with pytest.raises(ConfigError, match="Did you mean 'majority'"):
        REDUCERS.get("majorty")


def test_patient_rows_per_orientation_and_combined():
    slices = pd.DataFrame({
        "patient_id": ["A"] * 5 + ["B"] * 3,
        "orientation": ["axial", "axial", "axial", "coronal", "coronal", "axial", "axial", "coronal"],
        "choice": pd.array([1, 1, 0, 0, None, 2, 2, 0], dtype="Int64"),
    })
    rows = patient_rows(slices, {"A": 1, "B": 0, "C": 1}, task=GRADING, orientations=["axial", "coronal"])
    assert list(rows.columns) == ["patient_id", "orientation", "label", "n_lgg", "n_hgg", "n_ng",
                                  "n_unparsed",
                                  "gldr", "score", "pred"]
    by = {(r.patient_id, r.orientation): r for r in rows.itertuples()}
    a = by[("A", "axial")]
    assert (a.n_lgg, a.n_hgg, a.n_ng, a.n_unparsed, a.pred) == (1, 2, 0, 0, 1)
    assert a.gldr == pytest.approx(2 / 3)
    ac = by[("A", "coronal")]
    assert (ac.n_lgg, ac.n_unparsed, ac.pred, ac.gldr) == (1, 1, 0, 0.0)
    comb = by[("A", "combined")]  # pooled: 2 LGG vs 2 HGG -> tie -> HGG
    assert (comb.n_lgg, comb.n_hgg, comb.n_unparsed, comb.pred, comb.gldr) == (2, 2, 1, 1, 0.5)
    b = by[("B", "axial")]
    assert b.n_ng == 2 and pd.isna(b.pred) and pd.isna(b.gldr)  # only "no glioma": abstained
    assert by[("B", "combined")].pred == 0
    c = by[("C", "combined")]  # a patient without slices is kept, with zero counts
    assert (c.n_lgg, c.n_hgg, c.n_ng, c.n_unparsed) == (0, 0, 0, 0)
    assert len(rows) == 9


def test_keyed_rows_reduce_repeats_per_slice_with_the_tumour_task():
    task = get_task("brats-tumour")
    calls = pd.DataFrame({
        "patient_id": ["A", "A", "A", "A", "B"], "orientation": ["axial"] * 5,
        "slice_index": [3, 3, 3, 7, 2], "repeat": [0, 1, 2, 0, 0],
        "choice": pd.array([1, 1, 0, None, 0], dtype="Int64"),
    })
    units = pd.DataFrame({"patient_id": ["A", "A", "B", "B"], "orientation": ["axial"] * 4,
                          "slice_index": [3, 7, 2, 9], "label": [1, 0, 0, 1]})
    rows = keyed_rows(calls, units, task=task, keys=["patient_id", "orientation", "slice_index"])
    assert list(rows.columns) == ["patient_id", "orientation", "slice_index", "label", *task.count_columns,
                                  "n_unparsed", task.share_column, "score", "pred"]
    assert [None if pd.isna(p) else p for p in rows["pred"]] == [1, None, 0, None]  # no vote: abstained
    assert rows["score"].tolist()[0] == pytest.approx(2 / 3)
    assert rows["n_unparsed"].tolist() == [0, 1, 0, 0]
    assert pd.isna(rows["score"].iloc[1]) and pd.isna(rows["score"].iloc[3])


def _tied_slices():
    # patient A: axial 1 LGG vs 1 HGG (a tie), coronal 2 LGG; patient B: axial 2 HGG vs 2 LGG (a tie)
    return pd.DataFrame({
        "patient_id": ["A", "A", "A", "A", "B", "B", "B", "B"],
        "orientation": ["axial", "axial", "coronal", "coronal", "axial", "axial", "axial", "axial"],
        "choice": pd.array([0, 1, 0, 0, 1, 1, 0, 0], dtype="Int64"),
        "p_lgg": [0.5, 0.5, 0.7, 0.7, 0.4, 0.4, 0.6, 0.6],
        "p_hgg": [0.5, 0.5, 0.3, 0.3, 0.6, 0.6, 0.4, 0.4],
        "p_ng": [0.0] * 8,
    })


@pytest.mark.parametrize("reducer", ["majority", "mean_prob"])
def test_patient_rows_pass_the_tie_break_to_the_reducer(reducer):
    labels = {"A": 0, "B": 1}

    def preds(tie_break):
        rows = patient_rows(_tied_slices(), labels, task=GRADING, reducer=reducer, tie_break=tie_break,
                            orientations=["axial", "coronal"])
        return {(r.patient_id, r.orientation): None if pd.isna(r.pred) else int(r.pred)
                for r in rows.itertuples()}

    # only the tied units follow --tie-break: A axial and B axial (both reducers), B combined (a tie too)
    assert preds(1) == {("A", "axial"): 1, ("B", "axial"): 1, ("A", "coronal"): 0, ("B", "coronal"): None,
                        ("A", "combined"): 0, ("B", "combined"): 1}
    assert preds(0) == {("A", "axial"): 0, ("B", "axial"): 0, ("A", "coronal"): 0, ("B", "coronal"): None,
                        ("A", "combined"): 0, ("B", "combined"): 0}
    default = patient_rows(_tied_slices(), labels, task=GRADING, reducer=reducer, orientations=["axial"])
    assert default["pred"].tolist() == [1, 1, 1, 1]  # no tie_break given: the positive class


def test_keyed_rows_pass_the_tie_break_to_the_reducer():
    task = get_task("brats-tumour")
    calls = pd.DataFrame({"patient_id": ["A", "A", "A"], "orientation": ["axial"] * 3,
                          "slice_index": [3, 3, 5], "choice": pd.array([0, 1, 1], dtype="Int64")})
    units = pd.DataFrame({"patient_id": ["A", "A"], "orientation": ["axial"] * 2, "slice_index": [3, 5],
                          "label": [1, 0]})
    keys = ["patient_id", "orientation", "slice_index"]
    assert keyed_rows(calls, units, task=task, keys=keys, tie_break=0)["pred"].tolist() == [0, 1]
    assert keyed_rows(calls, units, task=task, keys=keys, tie_break=1)["pred"].tolist() == [1, 1]
    assert keyed_rows(calls, units, task=task, keys=keys)["pred"].tolist() == [1, 1]


def test_tie_break_must_be_a_label():
    for bad in (2, -1):
        with pytest.raises(ValueError, match="^tie_break must be a label 0..1$"):
            majority([0, 1], tie_break=bad)
    with pytest.raises(ValueError, match="^tie_break must be a label 0..2$"):
        mean_prob([], [(0.2, 0.3, 0.5)], tie_break=3, n_classes=3)


def test_majority_defaults_and_more_than_two_classes():
    assert majority([0, 1]) == Vote(1, 0.5)  # the default tie_break is the positive class
    # three classes: a tie between 0 and 1 that tie_break 2 is not part of goes to the first of them
    assert majority([0, 0, 1, 1], tie_break=2, n_classes=3) == Vote(0, None)  # no share beyond two classes
    assert majority([0, 0, 1, 1, 2, 2], tie_break=2, n_classes=3) == Vote(2, None)
    assert majority([3, 3, 0], n_classes=4) == Vote(3, None)  # code 3 is a class of a four-class task
    assert majority([1, 0, 0], positive=0) == Vote(0, 2 / 3)  # the share is the positive class's


def test_mean_prob_ties_are_decided_to_12_decimals():
    # a difference below 1e-12 is float noise: a tie, decided by tie_break; a larger one decides
    assert mean_prob([], [(0.3, 0.3 + 1e-13, 0.4)], tie_break=0).pred == 0
    assert mean_prob([], [(0.3, 0.3 + 1e-9, 0.4)], tie_break=0).pred == 1
    assert mean_prob([], [(0.5, 0.2, 0.3)], positive=0) == Vote(0, 0.5)


def test_patient_rows_orientations_default_to_the_order_seen_and_combined_is_optional():
    slices = pd.DataFrame({"patient_id": ["A", "A", "B"], "orientation": ["sagittal", "axial", "sagittal"],
                           "choice": pd.array([1, 0, None], dtype="Int64")})
    rows = patient_rows(slices, {"A": 1, "B": 0}, task=GRADING, combined=False)
    assert rows[["patient_id", "orientation", "label"]].values.tolist() == [
        ["A", "sagittal", 1], ["B", "sagittal", 0], ["A", "axial", 1], ["B", "axial", 0]]
    assert str(rows["pred"].dtype) == "Int64"
    assert [None if pd.isna(p) else p for p in rows["pred"]] == [1, None, 0, None]


def test_patient_rows_without_any_answer():
    labels = {"A": 1, "B": 0}
    rows = patient_rows(pd.DataFrame(), labels, task=GRADING, orientations=["axial"])
    cols = ["patient_id", "orientation", "label", "n_lgg", "n_hgg", "n_ng", "n_unparsed"]
    assert rows[cols].values.tolist() == [
        ["A", "axial", 1, 0, 0, 0, 0], ["B", "axial", 0, 0, 0, 0, 0],
        ["A", "combined", 1, 0, 0, 0, 0], ["B", "combined", 0, 0, 0, 0, 0]]
    assert rows["pred"].isna().all() and str(rows["pred"].dtype) == "Int64"
    empty = patient_rows(pd.DataFrame(), labels, task=GRADING)  # no answers, no orientation asked: no rows
    assert empty.empty and list(empty.columns) == ["patient_id", "orientation", "label", "n_lgg", "n_hgg",
                                                   "n_ng", "n_unparsed", "gldr", "score", "pred"]


def test_rows_follow_the_tasks_classes_and_positive_class():
    import dataclasses

    from medvlm.tasks.base import AnswerCode

    three = dataclasses.replace(GRADING, classes=("LGG", "HGG", "GBM"), positive=None, answers=(
        *GRADING.answers[:2], AnswerCode("GBM", "p_gbm", "n_gbm"), AnswerCode("none", "p_none", "n_none")))
    slices = pd.DataFrame({"patient_id": ["A"] * 3, "orientation": ["axial"] * 3,
                           "choice": pd.array([2, 2, 0], dtype="Int64")})
    rows = patient_rows(slices, {"A": 2}, task=three, orientations=["axial"], combined=False)
    assert rows["pred"].tolist() == [2] and rows["n_gbm"].tolist() == [2]  # class 2 votes in a 3-class task
    lgg_positive = dataclasses.replace(GRADING, positive="LGG")
    slices = pd.DataFrame({"patient_id": ["A"] * 3, "orientation": ["axial"] * 3,
                           "choice": pd.array([0, 0, 1], dtype="Int64")})
    rows = patient_rows(slices, {"A": 0}, task=lgg_positive, orientations=["axial"], combined=False)
    assert rows["score"].tolist() == rows["gldr"].tolist() == [pytest.approx(2 / 3)]


def test_keyed_rows_with_one_key_and_without_calls():
    task = get_task("brats-tumour")
    calls = pd.DataFrame({"patient_id": ["a", "a", "b"], "choice": pd.array([1, 1, 0], dtype="Int64")})
    units = pd.DataFrame({"patient_id": ["a", "b", "c"], "label": [1, 0, 1]})
    rows = keyed_rows(calls, units, task=task, keys=["patient_id"])  # one key column: still found
    assert [None if pd.isna(p) else p for p in rows["pred"]] == [1, 0, None]
    assert rows["label"].tolist() == [1, 0, 1] and str(rows["pred"].dtype) == "Int64"
    none = keyed_rows(pd.DataFrame(), units, task=task, keys=["patient_id"])
    assert none["pred"].isna().all() and none["n_unparsed"].tolist() == [0, 0, 0]
    empty = keyed_rows(calls, units.iloc[0:0], task=task, keys=["patient_id"])
    assert empty.empty and list(empty.columns) == ["patient_id", "label", *task.count_columns, "n_unparsed",
                                                   task.share_column, "score", "pred"]


def test_mean_prob_rounds_the_score_to_twelve_decimals():
    row = (0.3051373661949819, 0.4133778463394049, 0.28)
    assert mean_prob([None] * 3, [row] * 3).score == 0.413377846339
    assert mean_prob([None] * 3, [row] * 3, positive=0).score == 0.305137366195
    # the same probabilities give the same score whatever the number of answers
    assert {mean_prob([None] * n, [row] * n).score for n in range(1, 8)} == {0.413377846339}


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_mean_prob_abstains_when_a_class_probability_column_is_missing():
    """Log-prob reduction needs every answer code's column; with p_ng absent there are no class
    probabilities to average: the unit abstains (the votes are still counted), no crash."""
    slices = pd.DataFrame({"patient_id": ["A", "A"], "orientation": ["axial", "axial"],
                           "choice": pd.array([1, None], dtype="Int64"), "p_lgg": [0.2, 0.3],
                           "p_hgg": [0.7, 0.6]})
    kwargs = {"task": GRADING, "reducer": "mean_prob", "orientations": ["axial"], "combined": False}
    row = patient_rows(slices, {"A": 1}, **kwargs).iloc[0]
    assert pd.isna(row["pred"]) and pd.isna(row["score"])
    assert (row["n_hgg"], row["n_unparsed"], row["gldr"]) == (1, 1, 1.0)
    row = patient_rows(slices.assign(p_ng=[0.1, 0.1]), {"A": 1}, **kwargs).iloc[0]
    assert (row["pred"], row["score"]) == (1, 0.65)
