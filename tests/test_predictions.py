"""The predictions table -> metrics path (medvlm.predictions): exact values by hand.

Written for the mutation run of ``predictions.py`` (benchmarks/MUTATION.md): unit keys, cohort
selection and its messages, the fold ensemble (order, ties, abstentions, rounding, columns), K, the
one-row-per-unit check, ``predictions_metrics`` (abstentions, clusters, the arguments it passes on,
multi-class), ``abstain_below`` and ``summarise_test_cohort``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medvlm.errors import DataError
from medvlm.metrics import CI_METRICS, METRIC_KEYS, metrics_from_frame
from medvlm.metrics_multiclass import multiclass_frame_metrics
from medvlm.predictions import (
    abstain_below,
    answered_preds,
    check_one_row_per_unit,
    fold_ensemble,
    n_classes,
    predictions_metrics,
    select_cohort,
    summarise_test_cohort,
    unit_keys,
)
from medvlm.tasks.base import AnswerCode, Task


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------ unit keys
@pytest.mark.parametrize("columns, keys", [
    (["patient_id", "label", "pred"], ["patient_id"]),
    (["patient_id", "orientation", "slice_index", "label"], ["patient_id", "orientation", "slice_index"]),
    (["patient_id", "slice_index", "label"], ["patient_id", "slice_index"]),
    (["patient_id", "image_id", "label"], ["patient_id", "image_id"]),
    (["patient_id", "orientation", "label"], ["patient_id"]),
])
def test_unit_keys(columns, keys):
    assert unit_keys(pd.DataFrame(columns=columns)) == keys


# -------------------------------------------------------------------------------- select_cohort
COHORTS = pd.DataFrame({"patient_id": list("abcd"), "cohort": ["train", " test", "val", "test "]})


def test_the_default_cohort_is_test_and_values_are_stripped():
    assert list(select_cohort(COHORTS)["patient_id"]) == ["b", "d"]
    assert list(select_cohort(COHORTS, "val")["patient_id"]) == ["c"]
    assert select_cohort(COHORTS, None) is COHORTS
    no_column = COHORTS.drop(columns="cohort")
    assert select_cohort(no_column) is no_column  # not required by default: every row


def test_select_cohort_messages():
    assert _error(select_cohort, COHORTS, "x") == ("predictions: no row of cohort 'x' (cohorts found: test, "
                                                   "train, val)")
    assert _error(select_cohort, COHORTS, "x", source="p.csv", hint="; see --cohort") == (
        "p.csv: no row of cohort 'x' (cohorts found: test, train, val); see --cohort")
    assert _error(select_cohort, COHORTS.drop(columns="cohort"), "val", source="p.csv", required=True) == (
        "p.csv: no cohort column, so --cohort val cannot choose rows (--cohort all takes every row)")
    gaps = pd.DataFrame({"cohort": ["test", "", np.nan, "  "]})
    assert _error(select_cohort, gaps, source="p.csv") == ("p.csv: row 2 has an empty cohort (3 such rows; "
                                                           "train, val or test expected)")
    one_gap = pd.DataFrame({"cohort": ["test", "test", np.nan]})
    assert _error(select_cohort, one_gap) == ("predictions: row 3 has an empty cohort (1 such rows; train, "
                                              "val or test expected)")


# ------------------------------------------------------------------------------- answered_preds
def test_answered_preds():
    all_in = answered_preds([1.0, 0.0, 1.0], np.array([True, True, True]))
    assert isinstance(all_in, np.ndarray) and all_in.dtype.kind == "i" and all_in.tolist() == [1, 0, 1]
    some = answered_preds(np.array([1, 0, 1]), [True, False, True])
    assert str(some.dtype) == "Int64" and some.tolist() == [1, pd.NA, 1]


# -------------------------------------------------------------------------------- fold_ensemble
def _folds(**columns):
    return pd.DataFrame(columns)


def test_one_fold_or_no_fold_column_is_returned_as_it_is():
    df = _folds(patient_id=["a", "b"], label=[1, 0], pred=[1, 0], fold=[0, 0])
    assert fold_ensemble(df) is df
    no_fold = df.drop(columns="fold")
    assert fold_ensemble(no_fold) is no_fold


def test_the_ensemble_follows_the_first_fold_in_the_file_and_keeps_its_columns():
    df = _folds(patient_id=["c", "a", "b", "a", "b", "c"], label=[0, 1, 0, 1, 0, 0],
                pred=[0, 1, 0, 0, 0, 1], score=[0.1, 0.8, 0.25, 0.2, 0.35, 0.9],
                fold=[2, 2, 2, 0, 0, 0], note=["first"] * 3 + ["second"] * 3)
    out = fold_ensemble(df)
    assert list(out.columns) == ["patient_id", "label", "note", "pred", "score", "fold"]
    assert list(out["patient_id"]) == ["c", "a", "b"]  # fold 2 comes first in the file
    assert out["score"].tolist() == pytest.approx([0.5, 0.5, 0.3], abs=1e-15)
    assert out["pred"].tolist() == [1, 1, 0]  # a mean of exactly 0.5 is positive
    assert list(out["note"]) == ["first"] * 3 and list(out["fold"]) == ["ensemble"] * 3
    assert list(out["label"]) == [0, 1, 0]


def test_the_ensemble_score_is_rounded_only_when_asked():
    df = _folds(patient_id=["a", "b"] * 3, label=[1, 0] * 3, pred=[1, 0, 0, 0, 0, 1],
                score=[0.5, 0.2, 0.25, 0.1, 0.25, 0.6], fold=[0, 0, 1, 1, 2, 2])
    assert fold_ensemble(df)["score"].tolist() == pytest.approx([1 / 3, 0.3])
    assert fold_ensemble(df, decimals=2)["score"].tolist() == [0.33, 0.3]


def test_without_scores_the_folds_vote_and_a_tie_goes_to_1():
    df = _folds(patient_id=["a", "b", "c"] * 2, label=[1, 0, 1] * 2, pred=["1", "0", "", "0", "0", "x"],
                fold=[0, 0, 0, 1, 1, 1])
    out = fold_ensemble(df)  # pred as read from a CSV with dtype=str: "" (or anything not a number) abstains
    assert list(out.columns) == ["patient_id", "label", "pred", "fold"]
    assert out["pred"].tolist() == [1, 0, pd.NA]


def test_an_empty_score_column_falls_back_to_the_votes():
    df = _folds(patient_id=["a", "b"] * 2, label=[1, 0] * 2, pred=[1, 0, 1, 1],
                score=[np.nan] * 4, fold=[0, 0, 1, 1])
    out = fold_ensemble(df)
    assert list(out.columns) == ["patient_id", "label", "pred", "fold"]
    assert out["pred"].tolist() == [1, 1]


def test_a_unit_no_fold_answered_stays_an_abstention_with_nullable_preds():
    df = _folds(patient_id=["a", "b", "c"] * 2, label=[1, 0, 1] * 2,
                pred=pd.array([1, 0, None, None, 1, None], dtype="Int64"),
                score=[0.75, np.nan, np.nan, np.nan, 0.625, np.nan], fold=[0, 0, 0, 1, 1, 1])
    out = fold_ensemble(df)
    assert out["pred"].tolist() == [1, 1, pd.NA]
    assert out["score"].dtype == np.float64
    assert out["score"].tolist()[:2] == [0.75, 0.625] and np.isnan(out["score"].iloc[2])


@pytest.mark.parametrize("second", [["a", "c"], ["a", "b", "c"], ["a"]])
def test_folds_of_different_units_are_refused(second):
    first = ["a", "b"]
    df = _folds(patient_id=first + second, label=[0] * (2 + len(second)), pred=[0] * (2 + len(second)),
                fold=[0] * 2 + [1] * len(second))
    message = _error(fold_ensemble, df)
    assert message == "the folds do not predict the same units; a fold ensemble needs them all"


def test_slice_rows_are_matched_on_their_whole_key():
    df = _folds(patient_id=["a", "a", "a", "a"], orientation=["axial"] * 4, slice_index=[3, 4, 4, 3],
                label=[1] * 4, pred=[1, 0, 1, 1], score=[0.9, 0.2, 0.6, 0.7], fold=[0, 0, 1, 1])
    out = fold_ensemble(df)
    assert list(out["slice_index"]) == [3, 4]
    assert out["score"].tolist() == pytest.approx([0.8, 0.4])


# ------------------------------------------------------------------------------------ n_classes
def test_n_classes():
    task = Task(name="t", description="", classes=("a", "b", "c"), positive=None,
                answers=tuple(AnswerCode(c, f"p_{c}", f"n_{c}") for c in "abc"), parser=lambda t: None,
                parser_version="1", unit="image")
    assert n_classes(pd.DataFrame({"label": [0, 1], "pred": [1, 0]}), task) == 3
    assert n_classes(pd.DataFrame({"label": [0, 1], "pred": [2, None]})) == 3
    assert n_classes(pd.DataFrame({"label": [1], "pred": [0]})) == 2
    assert n_classes(pd.DataFrame({"label": [0, 0], "pred": ["", "x"]})) == 2
    assert n_classes(pd.DataFrame({"label": [np.nan], "pred": [np.nan]})) == 2
    assert n_classes(pd.DataFrame({"label": [0, 3], "pred": [1, 1]})) == 4


# ------------------------------------------------------------------------- one row per unit
CHOOSE = "(choose a cohort with --cohort, or one fold)"


def test_a_repeated_patient_or_unit_is_named_with_its_count():
    patients = pd.DataFrame({"patient_id": ["a", "b", "a", "b", "b"], "label": [0] * 5})
    assert _error(check_one_row_per_unit, patients, "p.csv") == (
        f"p.csv: patient a has 2 rows; one row per patient is needed {CHOOSE}")
    assert _error(check_one_row_per_unit, patients) == (
        f"patient a has 2 rows; one row per patient is needed {CHOOSE}")
    slices = pd.DataFrame({"patient_id": ["a", "a", "a"], "orientation": ["axial"] * 3,
                           "slice_index": [3, 4, 3]})
    assert _error(check_one_row_per_unit, slices, "s.csv") == (
        f"s.csv: unit a:axial:3 has 2 rows; one row per unit is needed {CHOOSE}")
    check_one_row_per_unit(slices.drop(columns="patient_id"), "s.csv")  # a key column missing: no check
    check_one_row_per_unit(slices.iloc[:2], "s.csv")


# ------------------------------------------------------------------------ predictions_metrics
BINARY = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "e"], "label": [1, 0, 1, 0, 1],
                       "pred": [1.0, 1.0, np.nan, 0.0, 1.0], "score": [0.9, 0.7, np.nan, 0.2, 0.6]})


def test_binary_metrics_of_the_answered_rows_by_hand():
    m = predictions_metrics(BINARY)
    assert (m["n"], m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 2, 1, 1, 0)
    assert m["accuracy"] == 0.75 and m["n_abstained"] == 1 and m["coverage"] == 0.8
    assert "n_patients" not in m and not any(k.endswith("_ci") for k in m)  # no bootstrap by default
    assert m == {**metrics_from_frame(BINARY.iloc[[0, 1, 3, 4]].astype({"pred": "int64"})),
                 "n_abstained": 1, "coverage": 0.8}


def _patients(n=40, seed=4):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    score = np.clip(rng.normal(0.4 + 0.2 * label, 0.2), 0.01, 0.99)
    return pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "label": label,
                         "pred": (score >= 0.5).astype(float), "score": score})


def _cis(m):
    return {k: v for k, v in m.items() if k.endswith("_ci")}


def test_the_bootstrap_arguments_are_passed_on():
    df = _patients()
    df.loc[[3, 7], ["pred", "score"]] = np.nan
    answered = df[df["pred"].notna()].astype({"pred": "int64"})
    default = predictions_metrics(df, n_boot=200)
    assert _cis(default) == _cis(metrics_from_frame(answered, n_boot=200, seed=0, method="percentile"))
    bca = predictions_metrics(df, n_boot=200, seed=5, method="bca")
    assert _cis(bca) == _cis(metrics_from_frame(answered, n_boot=200, seed=5, method="bca"))
    assert bca["auc_ci"] != _cis(metrics_from_frame(answered, n_boot=200, seed=5))["auc_ci"]
    assert _cis(bca) != _cis(metrics_from_frame(answered, n_boot=200, seed=0, method="bca"))
    assert len(bca["accuracy_ci"]) == 2 and bca["n_abstained"] == 2


def _images(n_patients=6, per=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = p % 2
        for i in range(per):
            score = float(np.clip(rng.normal(0.35 + 0.3 * label, 0.25), 0.01, 0.99))
            rows.append({"patient_id": f"P{p}", "image_id": f"P{p}-{i}", "label": label,
                         "pred": float(score >= 0.5), "score": score})
    return pd.DataFrame(rows)


def test_image_rows_resample_patients_and_count_the_answered_ones():
    df = _images()
    df.loc[df["patient_id"] == "P5", ["pred", "score"]] = np.nan  # P5 never answered
    m = predictions_metrics(df, n_boot=300, seed=1)
    answered = df[df["pred"].notna()].astype({"pred": "int64"})
    clustered = metrics_from_frame(answered, n_boot=300, seed=1, clusters="patient_id")
    rowwise = metrics_from_frame(answered, n_boot=300, seed=1)
    assert m["accuracy_ci"] == clustered["accuracy_ci"] != rowwise["accuracy_ci"]
    assert m["n_patients"] == 5 and m["n_abstained"] == 3 and m["coverage"] == 15 / 18


def test_slice_rows_need_a_patient_id():
    df = pd.DataFrame({"slice_index": [1, 2], "label": [0, 1], "pred": [0, 1]})
    assert _error(predictions_metrics, df) == (
        "rows are slices (a slice_index column) but there is no patient_id column: the confidence intervals "
        "must resample patients, so every row needs its patient_id")


def test_a_repeated_unit_is_refused_naming_the_source():
    df = pd.DataFrame({"patient_id": ["a", "a"], "label": [0, 0], "pred": [0, 1]})
    assert _error(predictions_metrics, df, source="p.csv").startswith("p.csv: patient a has 2 rows")


def test_no_answered_row_gives_every_metric_none_and_zero_counts():
    df = pd.DataFrame({"patient_id": ["a", "b"], "label": [0, 1], "pred": [np.nan, np.nan]})
    expected = {**dict.fromkeys(METRIC_KEYS), "n": 0, "tp": 0, "fp": 0, "tn": 0, "fn": 0,
                "n_abstained": 2, "coverage": 0.0}
    assert predictions_metrics(df) == expected
    assert predictions_metrics(df, n_boot=100) == {**expected, **{f"{k}_ci": None for k in CI_METRICS}}
    empty = pd.DataFrame({"patient_id": [], "label": [], "pred": []})
    assert predictions_metrics(empty)["coverage"] is None and predictions_metrics(empty)["n_abstained"] == 0


def _three_class_task():
    return Task(name="tri", description="", classes=("x", "y", "z"), positive=None,
                answers=tuple(AnswerCode(c, f"p_{c}", f"n_{c}") for c in "xyz"), parser=lambda t: None,
                parser_version="1", unit="image")


def _multi(with_task_columns=True):
    rng = np.random.default_rng(3)
    rows = []
    for p in range(8):
        for i in range(2):
            label = (p + i) % 3
            probs = rng.dirichlet([1, 1, 1]) * 0.7
            probs[label] += 0.3
            rows.append({"patient_id": f"P{p}", "image_id": f"P{p}-{i}", "label": label,
                         "pred": float(np.argmax(probs)) if p != 7 else np.nan,
                         **{(f"p_{c}" if with_task_columns else f"p_{j}"): probs[j]
                            for j, c in enumerate("xyz")}})
    return pd.DataFrame(rows)


def test_a_three_class_task_uses_its_classes_and_probability_columns():
    df, task = _multi(), _three_class_task()
    answered = df[df["pred"].notna()].astype({"pred": "int64"})
    m = predictions_metrics(df, n_boot=100, seed=2, method="percentile", task=task)
    want = multiclass_frame_metrics(answered, classes=["x", "y", "z"], n_boot=100, seed=2,
                                    prob_columns=["p_x", "p_y", "p_z"], clusters="patient_id")
    assert m == {**want, "n_patients": 7, "n_abstained": 2, "coverage": 14 / 16}
    assert m["classes"] == ["x", "y", "z"] and m["auc"] is not None
    rowwise = multiclass_frame_metrics(answered, classes=["x", "y", "z"], n_boot=100, seed=2,
                                       prob_columns=["p_x", "p_y", "p_z"])
    assert want["accuracy_ci"] != rowwise["accuracy_ci"]
    bca = predictions_metrics(df, n_boot=100, seed=2, method="bca", task=task)
    want_bca = multiclass_frame_metrics(answered, classes=["x", "y", "z"], n_boot=100, seed=2, method="bca",
                                        prob_columns=["p_x", "p_y", "p_z"], clusters="patient_id")
    assert bca["accuracy_ci"] == want_bca["accuracy_ci"] != want["accuracy_ci"]
    binary_labels = df[df["label"] < 2].assign(pred=lambda d: d["pred"].clip(upper=1))
    assert predictions_metrics(binary_labels, task=task)["n_classes"] == 3  # K from the task, not the data


def test_without_a_task_three_labels_are_named_by_index():
    df = _multi(with_task_columns=False).drop(columns="image_id").drop_duplicates("patient_id")
    m = predictions_metrics(df)
    answered = df[df["pred"].notna()].astype({"pred": "int64"})
    assert m == {**multiclass_frame_metrics(answered, classes=3), "n_abstained": 1, "coverage": 7 / 8}
    assert m["classes"] == ["0", "1", "2"] and m["auc"] is not None and "n_patients" not in m


def test_a_three_class_table_with_no_answer_is_the_empty_result():
    df = pd.DataFrame({"patient_id": ["a", "b"], "label": [0, 2], "pred": [np.nan, np.nan]})
    m = predictions_metrics(df, n_boot=100, task=_three_class_task())
    assert m["n"] == 0 and m["classes"] == ["x", "y", "z"] and m["accuracy"] is None
    assert m["accuracy_ci"] is None and m["coverage"] == 0.0
    assert "accuracy_ci" not in predictions_metrics(df, task=_three_class_task())
    assert predictions_metrics(df)["classes"] == ["0", "1", "2"]


def test_a_bad_class_probability_names_the_source():
    df = _multi().drop(columns="image_id").drop_duplicates("patient_id").reset_index(drop=True)
    df.loc[0, "p_y"] = 1.5
    task = _three_class_task()
    assert _error(predictions_metrics, df, task=task).startswith("predictions: row 1, column 'p_y': '1.5'")
    assert _error(predictions_metrics, df, task=task, source="p.csv").startswith("p.csv: row 1, column 'p_y'")


# -------------------------------------------------------------------------------- abstain_below
def test_abstain_below_empties_pred_and_score_of_the_unsure_answered_rows():
    df = pd.DataFrame({"label": [1, 0, 1, 0, 1], "pred": [1, 0, 1, np.nan, 0],
                       "score": [0.9, 0.45, 0.55, 0.5, 0.3]})
    out = abstain_below(df, 0.6)
    assert out["pred"].isna().tolist() == [False, True, True, True, False]
    assert out["score"].isna().tolist() == [False, True, True, False, False]
    assert out["pred"].dtype == np.float64 and out["score"].dtype == np.float64
    assert out.loc[[0, 4], "pred"].tolist() == [1.0, 0.0]
    assert out.loc[[0, 3, 4], "score"].tolist() == [0.9, 0.5, 0.3]
    assert df["pred"].notna().sum() == 4  # the input is left as it was


def test_abstain_below_needs_scores():
    df = pd.DataFrame({"label": [1], "pred": [1]})
    assert _error(abstain_below, df, 0.7) == ("predictions: --abstain-below needs scores (a score column "
                                               "with P of the positive class)")
    assert _error(abstain_below, df.assign(score=np.nan), 0.7, source="p.csv").startswith("p.csv: ")


# ------------------------------------------------------------------------- summarise_test_cohort
def _run(tmp_path, frame):
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    return tmp_path


def test_summarise_the_test_cohort_rounded_to_3_places(tmp_path):
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "e"], "label": [1, 0, 1, 0, 0],
                          "pred": [1, 1, 0, 0, 1], "score": [0.9, 0.6, 0.4, 0.1, 0.55],
                          "cohort": ["test", "test", "test", "test", "val"], "fold": [0, 0, 0, 0, 1]})
    # test rows a-d: accuracy 2/4, specificity 1/2, AUC (pairs 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1) 3/4
    assert summarise_test_cohort(_run(tmp_path, frame)) == {"test_accuracy": 0.5, "test_specificity": 0.5,
                                                            "test_auc": 0.75}
    frame = pd.DataFrame({"label": [1, 0, 1], "pred": [1, 0, 0], "score": [0.9, 0.2, np.nan]})
    assert summarise_test_cohort(_run(tmp_path, frame)) == {"test_accuracy": 0.667, "test_specificity": 1.0,
                                                            "test_auc": None}  # a score missing: no AUC
    assert summarise_test_cohort(_run(tmp_path, frame.drop(columns="score")))["test_auc"] is None


def test_summarise_gives_nothing_without_predictions_or_with_several_folds(tmp_path):
    assert summarise_test_cohort(tmp_path) == {}
    frame = pd.DataFrame({"label": [1, 0], "pred": [1, 0], "fold": [0, 1]})
    assert summarise_test_cohort(_run(tmp_path, frame)) == {}
    frame = pd.DataFrame({"label": [1, 0], "pred": [1, 0], "cohort": ["val", "val"]})
    assert summarise_test_cohort(_run(tmp_path, frame)) == {}


def test_summarise_a_multiclass_test_cohort_counts_the_answered_rows(tmp_path):
    frame = pd.DataFrame({"label": [0, 1, 2, 2], "pred": [0, 1, 1, np.nan]})
    assert summarise_test_cohort(_run(tmp_path, frame)) == {"test_accuracy": 0.667, "test_specificity": None,
                                                            "test_auc": None}


def test_summarise_a_binary_test_cohort_with_an_abstention(tmp_path):
    frame = pd.DataFrame({"label": [1, 0, 1], "pred": [1, 0, np.nan], "score": [0.9, 0.2, np.nan]})
    assert summarise_test_cohort(_run(tmp_path, frame))["test_accuracy"] == 1.0


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_a_fold_without_scores_leaves_the_ensemble_to_the_folds_with_scores():
    """Fold 1 wrote no scores (every score empty): the ensemble is still scored, from fold 0's scores
    (a fold that gave no score is left out of the mean), not a vote of the folds' preds."""
    df = pd.DataFrame({"patient_id": ["a", "b", "a", "b"], "label": [1, 0, 1, 0], "pred": [1, 0, 0, 1],
                       "score": [0.8, 0.3, np.nan, np.nan], "fold": [0, 0, 1, 1]})
    out = fold_ensemble(df)
    assert out["score"].tolist() == [0.8, 0.3]
    assert out["pred"].tolist() == [1, 0]
