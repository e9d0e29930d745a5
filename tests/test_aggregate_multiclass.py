"""K-class votes: the plurality, its documented tie rule, per-class scores, and the unit tables of a 3-class
image task built by hand (the binary study's rule is pinned in test_aggregate.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from medvlm.aggregate import Vote, class_score_columns, keyed_rows, majority, mean_prob, unit_columns
from medvlm.tasks import get_task
from medvlm.tasks.base import AnswerCode, Task
from medvlm.vlm.parsing import NameParser

CLASSES = ("normal", "pneumonia", "effusion")


def four_answer_task() -> Task:
    """Three classes and one abstaining answer ("unsure", code 3), one prediction per image."""
    names = (*CLASSES, "unsure")
    answers = tuple(AnswerCode(n, f"p_{n}", f"n_{n}") for n in names)
    return Task(name="chest3", description="three classes and 'unsure'", classes=CLASSES, positive=None,
                answers=answers, parser=NameParser(4, answer_names=names), parser_version="1", unit="image")


@pytest.mark.parametrize(("choices", "tie_break", "pred", "probs"), [
    ([2, 2, 1, 0, 3, None], 0, 2, (1 / 4, 1 / 4, 2 / 4)),   # plurality; "unsure" (3) and unparsed do not vote
    ([0, 1, 1, 2, 2], 0, 1, (1 / 5, 2 / 5, 2 / 5)),        # tie 1-2, tie_break 0 not among them: lowest
    ([0, 1, 1, 2, 2], 2, 2, (1 / 5, 2 / 5, 2 / 5)),        # tie 1-2, tie_break among them: it wins
    ([0, 1, 1, 2, 2], 1, 1, (1 / 5, 2 / 5, 2 / 5)),
    ([0, 0, 1, 1, 2, 2], 2, 2, (1 / 3, 1 / 3, 1 / 3)),     # three-way tie
    ([0, 0, 1, 1, 2, 2], 1, 1, (1 / 3, 1 / 3, 1 / 3)),
    ([0, 1, 2, 2, 2], 0, 2, (1 / 5, 1 / 5, 3 / 5)),        # a clear winner ignores tie_break
    ([1], 2, 1, (0.0, 1.0, 0.0)),
])
def test_plurality_and_its_tie_rule(choices, tie_break, pred, probs):
    vote = majority(choices, tie_break=tie_break, n_classes=3)
    assert vote.pred == pred and vote.score is None
    assert vote.probs == pytest.approx(probs, abs=1e-15) and len(vote.probs) == 3


def test_no_class_vote_abstains_and_binary_votes_carry_no_class_scores():
    assert majority([3, 3, None], n_classes=3) == Vote(None, None)
    assert majority([3, 3, None], n_classes=3).probs is None
    assert majority([0, 1, 1]).probs is None and majority([0, 1, 1]) == Vote(1, 2 / 3)
    assert mean_prob([None], [(0.2, 0.7, 0.1)]).probs is None
    assert repr(majority([1, 1, 2], n_classes=3)) == "Vote(pred=1, score=None)"


def test_mean_prob_over_three_classes():
    rows = [(0.2, 0.5, 0.3, 0.0), (0.4, 0.1, 0.5, 0.0), None, (0.3, 0.3, float("nan"), 0.4)]
    vote = mean_prob([None] * 4, rows, n_classes=3, positive=2, tie_break=0)
    assert vote.pred == 2 and vote.probs == pytest.approx((0.3, 0.3, 0.4), abs=1e-12)
    assert vote.score is None  # no positive class: P(last class) is no score of a 3-class answer
    tie = mean_prob([None], [(0.4, 0.4, 0.2)], n_classes=3, tie_break=2)
    assert tie.pred == 0 and tie.probs == (0.4, 0.4, 0.2)  # tie_break 2 is not among the tied: lowest
    assert mean_prob([None], [(0.4, 0.4, 0.2)], n_classes=3, tie_break=1).pred == 1
    assert mean_prob([None], [None], n_classes=3).probs is None


def test_unit_table_of_a_three_class_image_task():
    task = four_answer_task()
    assert class_score_columns(task) == ["p_normal", "p_pneumonia", "p_effusion"]
    assert class_score_columns(get_task("brats-grading")) == []
    assert unit_columns(get_task("brats-grading"), ["patient_id", "orientation"]) == [
        "patient_id", "orientation", "label", "n_lgg", "n_hgg", "n_ng", "n_unparsed", "gldr", "score", "pred"]
    calls = pd.DataFrame({
        "patient_id": ["A", "A", "A", "A", "A", "B", "B"],
        "image_id": ["a1", "a1", "a1", "a1", "a2", "b1", "b1"],
        "choice": pd.array([2, 2, 1, 3, None, 0, 1], dtype="Int64"),
    })
    units = pd.DataFrame({"patient_id": ["A", "A", "B", "C"], "image_id": ["a1", "a2", "b1", "c1"],
                          "label": [2, 1, 0, 1]})
    rows = keyed_rows(calls, units, task=task, keys=["patient_id", "image_id"], tie_break=0)
    assert list(rows.columns) == ["patient_id", "image_id", "label", "n_normal", "n_pneumonia", "n_effusion",
                                  "n_unsure", "n_unparsed", "share", "score", "pred", "p_normal",
                                  "p_pneumonia", "p_effusion"]
    assert [None if pd.isna(p) else int(p) for p in rows["pred"]] == [2, None, 0, None]  # b1: tie 0-1 -> 0
    assert rows.loc[0, ["n_normal", "n_pneumonia", "n_effusion", "n_unsure", "n_unparsed"]].tolist() == [
        0, 1, 2, 1, 0]
    assert rows.loc[0, ["p_normal", "p_pneumonia", "p_effusion"]].tolist() == pytest.approx([0, 1 / 3, 2 / 3])
    assert rows.loc[2, ["p_normal", "p_pneumonia", "p_effusion"]].tolist() == pytest.approx([0.5, 0.5, 0])
    assert rows.loc[1, ["p_normal", "p_pneumonia", "p_effusion"]].isna().all()  # no class vote: none
    assert rows["score"].isna().all()


def test_k_class_defaults_are_no_binary_defaults():
    """Issue 18 #6: a task of more than two classes has no positive class, so no default tie-break to its
    last class, no score and no share of the last class; BraTS keeps its positive-class defaults."""
    task = four_answer_task()
    assert task.tie_break_label(None) == 0 and task.tie_break_name(None) == "normal"  # was 2, 'effusion'
    assert task.tie_break_label("Effusion") == 2  # a named class is still honoured
    brats = get_task("brats-grading")
    assert brats.tie_break_label(None) == 1 and brats.tie_break_name(None) == "hgg"
    # the default tie-break 0 = the lowest-numbered of the tied classes, whichever they are
    assert majority([1, 2], n_classes=3, tie_break=task.tie_break_label(None)).pred == 1
    assert majority([0, 2], n_classes=3, tie_break=task.tie_break_label(None)).pred == 0
    calls = pd.DataFrame({"patient_id": ["A", "A", "B"], "image_id": ["a1", "a1", "b1"],
                          "choice": pd.array([2, 2, 1], dtype="Int64"),
                          "p_normal": [0.1, 0.2, 0.3], "p_pneumonia": [0.2, 0.2, 0.4],
                          "p_effusion": [0.7, 0.6, 0.3], "p_unsure": [0.0, 0.0, 0.0]})
    units = pd.DataFrame({"patient_id": ["A", "B"], "image_id": ["a1", "b1"], "label": [2, 0]})
    for reducer in ("majority", "mean_prob"):
        rows = keyed_rows(calls, units, task=task, keys=["patient_id", "image_id"], reducer=reducer,
                          tie_break=0)
        assert rows["score"].isna().all() and rows["share"].isna().all()  # was P / share of 'effusion'
        assert rows["pred"].tolist() == [2, 1]
    mp = keyed_rows(calls, units, task=task, keys=["patient_id", "image_id"], reducer="mean_prob",
                    tie_break=0)
    assert mp.loc[0, ["p_normal", "p_pneumonia", "p_effusion"]].tolist() == pytest.approx([0.15, 0.2, 0.65])
    binary = mean_prob([None], [(0.3, 0.7, 0.0)])
    assert binary == Vote(1, 0.7)  # binary: the score is P(positive), as before
