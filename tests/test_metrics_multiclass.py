"""medvlm.metrics_multiclass: a hand-computed 3x3 confusion matrix, agreement with scikit-learn, the
one-vs-rest AUC by hand, the clustered bootstrap redone by hand, input checks, predictions_metrics routing."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medvlm.errors import ConfigError, DataError
from medvlm.metrics import MetricWarning, bootstrap_metrics, read_predictions
from medvlm.metrics_multiclass import (
    MULTICLASS_CI_METRICS,
    PER_CLASS_KEYS,
    ClassSpec,
    bootstrap_multiclass,
    check_inferred_classes,
    class_prob_columns,
    confusion_matrix,
    coverage_notes,
    empty_multiclass,
    multiclass_frame_metrics,
    multiclass_metrics,
    n_classes_of,
    ovr_auc,
)
from medvlm.predictions import n_classes, predictions_metrics
from medvlm.tasks.base import AnswerCode, Task
from medvlm.vlm.parsing import NameParser

CLASSES = ("normal", "pneumonia", "effusion")

# the 3x3 case: rows true, columns predicted = [[2, 1, 0], [1, 1, 1], [1, 0, 3]]
Y = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
P = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]

# the one-vs-rest AUC case (rows sum to 1): class AUCs 7/8, 7/8, 1 -> macro 11/12
AUC_Y = [0, 1, 2, 0, 1, 2]
AUC_PROBS = [[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6],
             [0.4, 0.3, 0.3], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]


def three_class_task(unit: str = "image") -> Task:
    """A 3-class image task built by hand (the YAML tasks are not needed for the metrics)."""
    answers = tuple(AnswerCode(c, f"p_{c}", f"n_{c}") for c in CLASSES)
    return Task(name="chest3", description="three classes, one prediction per image", classes=CLASSES,
                positive=None, answers=answers, parser=NameParser(3, answer_names=CLASSES),
                parser_version="1", unit=unit)  # type: ignore[arg-type]


def test_hand_computed_three_by_three():
    m = multiclass_metrics(Y, P, classes=CLASSES)
    assert list(m) == ["n", "n_classes", "classes", "accuracy", "balanced_accuracy", "macro_f1", "auc",
                       "per_class", "confusion", "notes"]
    assert m["confusion"] == [[2, 1, 0], [1, 1, 1], [1, 0, 3]]
    assert m["notes"] == []  # every class is a label: the averages cover all three
    assert (m["n"], m["n_classes"], m["classes"]) == (10, 3, list(CLASSES))
    assert m["accuracy"] == pytest.approx(6 / 10, abs=1e-15)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3, abs=1e-15)  # 7/12
    assert m["macro_f1"] == pytest.approx((4 / 7 + 2 / 5 + 3 / 4) / 3, abs=1e-15)  # 241/420
    assert m["auc"] is None
    expected = [  # class, label, support, precision, recall, specificity, f1, auc
        ("normal", 0, 3, 2 / 4, 2 / 3, 5 / 7, 4 / 7, None),
        ("pneumonia", 1, 3, 1 / 2, 1 / 3, 6 / 7, 2 / 5, None),
        ("effusion", 2, 4, 3 / 4, 3 / 4, 5 / 6, 3 / 4, None),
    ]
    assert [list(r) for r in m["per_class"]] == [list(PER_CLASS_KEYS)] * 3
    for row, want in zip(m["per_class"], expected, strict=True):
        got = tuple(row[k] for k in PER_CLASS_KEYS)
        assert got[:3] == want[:3] and got[7] is None
        assert got[3:7] == pytest.approx(want[3:7], abs=1e-15)


def test_equal_to_scikit_learn_on_random_tables():
    rng = np.random.default_rng(7)
    for trial in range(30):
        k = int(rng.integers(3, 6))
        n = int(rng.integers(4, 40))
        y, p = rng.integers(0, k, n), rng.integers(0, k, n)
        probs = rng.dirichlet(np.ones(k), n)
        if trial % 2:
            probs = np.round(probs, 1)  # ties
            probs = probs / probs.sum(axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = multiclass_metrics(y, p, probs, classes=k)
            assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
            assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-12)
            assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-12)
            assert m["confusion"] == skm.confusion_matrix(y, p, labels=list(range(k))).tolist()
            precision, recall, f1, support = skm.precision_recall_fscore_support(
                y, p, labels=list(range(k)), zero_division=np.nan)
            for i, row in enumerate(m["per_class"]):
                assert row["support"] == support[i]
                for key, ref in (("precision", precision), ("recall", recall), ("f1", f1)):
                    assert (row[key] is None) == bool(np.isnan(ref[i]))
                    if row[key] is not None:
                        assert row[key] == pytest.approx(ref[i], abs=1e-12)
            if len(set(y.tolist())) == k:
                ref_auc = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
                assert m["auc"] == pytest.approx(ref_auc, abs=1e-12)
                for i, row in enumerate(m["per_class"]):
                    assert row["auc"] == pytest.approx(skm.roc_auc_score(y == i, probs[:, i]), abs=1e-12)
            else:
                assert m["auc"] is None


def test_one_vs_rest_auc_by_hand():
    macro, per = ovr_auc(AUC_Y, AUC_PROBS, 3)
    assert per.tolist() == pytest.approx([7 / 8, 7 / 8, 1.0], abs=1e-15)
    assert macro == pytest.approx(11 / 12, abs=1e-15)
    m = multiclass_metrics(AUC_Y, [0, 1, 2, 0, 0, 2], AUC_PROBS, classes=CLASSES)
    assert m["auc"] == pytest.approx(11 / 12, abs=1e-15)
    assert [r["auc"] for r in m["per_class"]] == pytest.approx([7 / 8, 7 / 8, 1.0], abs=1e-15)
    assert skm.roc_auc_score(AUC_Y, AUC_PROBS, multi_class="ovr", average="macro") == pytest.approx(11 / 12)


def test_auc_needs_every_class_and_leaves_out_rows_without_probabilities():
    # class 2 absent from the labels: no macro AUC (scikit-learn refuses), the present classes keep theirs
    with pytest.warns(MetricWarning, match=r"^auc undefined: no row of class effusion \(one-vs-rest needs "
                                           r"every class\)$"):
        m = multiclass_metrics([0, 1, 0, 1], [0, 1, 1, 1], [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1],
                                                          [0.4, 0.5, 0.1]], classes=CLASSES)
    assert m["auc"] is None
    assert [r["auc"] for r in m["per_class"]] == [1.0, 1.0, None]
    probs = np.array(AUC_PROBS + [[np.nan, 0.5, 0.5]])
    with pytest.warns(MetricWarning, match=r"^auc computed on the 6 of 7 rows that have every class "
                                           r"probability$"):
        m = multiclass_metrics([*AUC_Y, 1], [0, 1, 2, 0, 0, 2, 1], probs, classes=3)
    assert m["auc"] == pytest.approx(11 / 12, abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no probabilities at all: quietly no AUC
        assert multiclass_metrics(Y, P, np.full((10, 3), np.nan), classes=3)["auc"] is None


def test_undefined_per_class_values_are_none():
    # class 1 never predicted and never true: precision, recall and F1 undefined; the averages leave it out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined is None, quietly: no division by zero on the way
        m = multiclass_metrics([0, 0, 2, 2], [0, 2, 2, 2], classes=3)
    one = m["per_class"][1]
    assert (one["support"], one["precision"], one["recall"], one["f1"]) == (0, None, None, None)
    assert one["specificity"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # class 0: 2/(2+0+1), class 2: 4/(4+1+0)
    assert m["macro_f1"] == pytest.approx(skm.f1_score([0, 0, 2, 2], [0, 2, 2, 2], average="macro"))
    # predicted but never true: counted in macro F1 (as 0), not in balanced accuracy
    m = multiclass_metrics([0, 0, 1], [0, 2, 1], classes=3)
    assert m["per_class"][2]["f1"] == 0.0 and m["per_class"][2]["recall"] is None
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    with pytest.warns(MetricWarning, match=r"^no rows: every metric is undefined$") as caught:
        m = multiclass_metrics([], [], classes=CLASSES)
    assert len(caught) == 1  # and no numpy division warning
    assert (m["n"], m["accuracy"], m["balanced_accuracy"], m["macro_f1"]) == (0, None, None, None)
    assert m == {**empty_multiclass(CLASSES), "per_class": m["per_class"]}
    assert [r["specificity"] for r in m["per_class"]] == [None, None, None]


def test_number_of_classes_and_column_names():
    assert n_classes_of(None, [0, 1], [3, 1]) == 4
    assert n_classes_of(None, [], []) == 2
    assert n_classes_of(CLASSES, [0], [0]) == 3 and n_classes_of(5, [0], [0]) == 5
    assert class_prob_columns(CLASSES) == ["p_0", "p_1", "p_2"]
    assert class_prob_columns(3, three_class_task()) == ["p_normal", "p_pneumonia", "p_effusion"]
    spec = ClassSpec.from_names(["No finding", "pleural_effusion", "Mass"])
    assert spec.prob_columns == ("p_no_finding", "p_pleural_effusion", "p_mass") and spec.n_classes == 3
    assert class_prob_columns(3, spec) == list(spec.prob_columns)
    assert multiclass_metrics([0, 2], [0, 2])["classes"] == ["0", "1", "2"]


def test_bad_input_is_named():
    with pytest.raises(DataError, match=r"^labels must be class labels 0\.\.2, found 3$"):
        multiclass_metrics([0, 3], [0, 1], classes=3)
    with pytest.raises(DataError, match=r"^preds must be class labels 0\.\.2, found -1$"):
        multiclass_metrics([0, 1], [0, -1], classes=3)
    with pytest.raises(DataError, match=r"^preds must be class labels 0\.\.2, found 1\.5$"):
        multiclass_metrics([0, 1], [0, 1.5], classes=3)
    with pytest.raises(DataError, match=r"^labels and preds differ in length \(2 vs 3\)$"):
        multiclass_metrics([0, 1], [0, 1, 2], classes=3)
    with pytest.raises(DataError, match=r"^probs must have shape \(n, K\) = \(2, 3\), got \(2, 2\)$"):
        multiclass_metrics([0, 1], [0, 1], [[0.5, 0.5], [0.5, 0.5]], classes=3)
    with pytest.raises(DataError, match=r"^labels must be one-dimensional, got shape \(1, 2\)$"):
        multiclass_metrics([[0, 1]], [0, 1], classes=3)
    with pytest.raises(ConfigError, match=r"^a classification task needs at least 2 classes, got 1$"):
        multiclass_metrics([0], [0], classes=1)
    with pytest.raises(ConfigError, match=r"^The 'method' parameter must be one of \('percentile', 'bca'\)\. "
                                          r"Got 'normal' instead\.$"):
        bootstrap_multiclass(Y, P, method="normal")
    with pytest.raises(ConfigError, match=r"^n_boot must be at least 1, got 0$"):
        bootstrap_multiclass(Y, P, n_boot=0)
    for confidence in (0, 1):
        with pytest.raises(ConfigError, match=rf"^confidence must lie in \(0, 1\), got {confidence}$"):
            bootstrap_multiclass(Y, P, confidence=confidence)


def _by_hand(y, p, probs, clusters, n_boot, seed, k=3):
    """The clustered percentile bootstrap redone with scikit-learn: whole patients drawn with replacement."""
    y, p, probs = np.asarray(y), np.asarray(p), np.asarray(probs)
    ids = sorted(set(clusters))
    rows = {c: [i for i, x in enumerate(clusters) if x == c] for c in ids}
    rng = np.random.default_rng(seed)
    values = {m: [] for m in MULTICLASS_CI_METRICS}
    for _ in range(n_boot):
        idx = [i for j in rng.integers(0, len(ids), size=len(ids)) for i in rows[ids[j]]]
        yy, pp, ss = y[idx], p[idx], probs[idx]
        values["accuracy"].append(skm.accuracy_score(yy, pp))
        present = sorted(set(yy.tolist()))
        recall = skm.recall_score(yy, pp, labels=present, average=None, zero_division=0)
        values["balanced_accuracy"].append(float(np.mean(recall)))
        values["macro_f1"].append(skm.f1_score(yy, pp, average="macro"))
        if len(present) == k:
            values["auc"].append(skm.roc_auc_score(yy, ss, multi_class="ovr", average="macro"))
    return {f"{m}_ci": [float(q) for q in np.quantile(v, [0.025, 0.975])] for m, v in values.items()}


def test_clustered_bootstrap_equals_a_hand_resampling():
    y = [0, 0, 1, 1, 2, 2, 0, 1, 2, 2, 1, 0]
    p = [0, 1, 1, 2, 2, 2, 0, 1, 0, 2, 1, 0]
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), len(y))
    clusters = ["a", "a", "b", "b", "c", "c", "d", "e", "e", "f", "g", "g"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = bootstrap_multiclass(y, p, probs, n_classes=3, n_boot=80, seed=4, clusters=clusters)
        want = _by_hand(y, p, probs, clusters, 80, 4)
    assert list(got) == [f"{m}_ci" for m in MULTICLASS_CI_METRICS]
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # rows as their own clusters = the row bootstrap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = bootstrap_multiclass(y, p, probs, n_classes=3, n_boot=80, seed=4)
        by_row = bootstrap_multiclass(y, p, probs, n_classes=3, n_boot=80, seed=4, clusters=list(range(12)))
    assert rows == by_row and rows != got


def test_bootstrap_draws_the_binary_path_resamples_and_counts_undefined_ones():
    y = [0, 1, 1, 0, 1, 0, 1, 1]
    p = [0, 1, 0, 0, 1, 1, 1, 1]
    clusters = ["a", "a", "b", "c", "c", "d", "e", "e"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = bootstrap_multiclass(y, p, n_classes=2, n_boot=200, seed=9, clusters=clusters)
        binary = bootstrap_metrics(y, p, n_boot=200, seed=9, clusters=clusters)
    assert two["accuracy_ci"] == binary["accuracy_ci"]  # the same resamples
    # balanced accuracy differs by definition: scikit-learn's mean recall of the classes present, where the
    # binary path's (sensitivity + specificity) / 2 is undefined on a resample of one class
    assert two["balanced_accuracy_ci"] != binary["balanced_accuracy_ci"]
    assert two["auc_ci"] is None
    rng = np.random.default_rng(0)  # the resamples that miss a class, counted by hand
    missing = sum(len(set(np.asarray(AUC_Y)[rng.integers(0, 6, size=6)].tolist())) < 3 for _ in range(100))
    assert 0 < missing < 100
    with pytest.warns(MetricWarning, match=r"^bootstrap: resamples where a metric was undefined were left "
                                           rf"out \(auc: {missing} of 100\)$"):
        ci = bootstrap_multiclass(AUC_Y, [0, 1, 2, 0, 0, 2], AUC_PROBS, n_boot=100, seed=0)
    lo, hi = ci["auc_ci"]
    assert 0 <= lo <= hi <= 1
    for clusters in (None, ["a", "a", "b", "c", "c", "d", "e", "e"]):  # BCa: the binary path's jackknife too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            two = bootstrap_multiclass(y, p, n_classes=2, n_boot=200, seed=2, clusters=clusters, method="bca")
            binary = bootstrap_metrics(y, p, n_boot=200, seed=2, clusters=clusters, method="bca")
        assert two["accuracy_ci"] == binary["accuracy_ci"]
    one = bootstrap_multiclass(Y, P, n_boot=1, seed=0)  # one resample: a degenerate but defined interval
    assert one["accuracy_ci"][0] == one["accuracy_ci"][1]
    assert bootstrap_multiclass([], [], n_classes=3, n_boot=10) == dict.fromkeys(
        [f"{m}_ci" for m in MULTICLASS_CI_METRICS])
    bca = bootstrap_multiclass(Y, P, n_boot=200, seed=1, method="bca")
    pinned = {"accuracy_ci": [0.3, 0.802810406357446],  # (the jackknife is checked against the binary path)
              "balanced_accuracy_ci": [0.2115317794052694, 0.8333333333333334],
              "macro_f1_ci": [0.30765602994187086, 0.8747531003724506]}
    assert bca["auc_ci"] is None
    for key, value in pinned.items():
        assert bca[key] == pytest.approx(value, abs=1e-12), key
    pct = bootstrap_multiclass(Y, P, n_boot=200, seed=1)
    assert bca["accuracy_ci"] != pct["accuracy_ci"]
    assert 0 <= bca["accuracy_ci"][0] <= 0.6 <= bca["accuracy_ci"][1] <= 1


# ------------------------------------------------------------------------------------- predictions tables
def _frame(with_probs: bool = True) -> pd.DataFrame:
    """Eight images of five patients, one abstention (image e1), class probabilities named as the task
    names them."""
    df = pd.DataFrame({
        "patient_id": ["a", "a", "b", "c", "c", "d", "d", "e"],
        "image_id": ["a1", "a2", "b1", "c1", "c2", "d1", "d2", "e1"],
        "label": [0, 1, 2, 0, 1, 2, 2, 1],
        "pred": pd.array([0, 1, 2, 1, 1, 0, 2, None], dtype="Int64"),
        "score": [np.nan] * 8,
    })
    if with_probs:
        probs = [[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6], [0.4, 0.3, 0.3],
                 [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.2, 0.3, 0.5], [np.nan] * 3]
        for i, c in enumerate(CLASSES):
            df[f"p_{c}"] = [r[i] for r in probs]
    return df


def test_predictions_metrics_routes_a_three_class_task_and_counts_abstentions():
    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = predictions_metrics(df, task=three_class_task(), n_boot=100, seed=0)
    answered = df.iloc[:7]
    y, p = answered["label"].to_numpy(), answered["pred"].to_numpy(dtype=int)
    probs = answered[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert m["classes"] == list(CLASSES)
    assert (m["n"], m["n_abstained"], m["coverage"], m["n_patients"]) == (7, 1, 7 / 8, 4)
    assert m["accuracy"] == pytest.approx(5 / 7) and m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = bootstrap_multiclass(y, p, probs, n_classes=3, n_boot=100, seed=0,
                                    clusters=answered["patient_id"].to_numpy())
    assert {k: m[k] for k in want} == want  # clustered by patient: images share patients
    # without the task: indices for names, and the task's columns are not the index columns
    plain = predictions_metrics(df.iloc[:7])
    assert plain["classes"] == ["0", "1", "2"] and plain["auc"] is None and plain["n_abstained"] == 0
    renamed = df.rename(columns={f"p_{c}": f"p_{i}" for i, c in enumerate(CLASSES)})
    assert predictions_metrics(renamed)["auc"] == pytest.approx(m["auc"])


def test_predictions_metrics_with_every_row_abstained_and_binary_tables_unchanged():
    df = _frame().assign(pred=pd.array([None] * 8, dtype="Int64"))
    m = predictions_metrics(df, task=three_class_task(), n_boot=50)
    assert (m["n"], m["n_abstained"], m["coverage"], m["accuracy"], m["auc_ci"]) == (0, 8, 0.0, None, None)
    assert m["confusion"] == [[0, 0, 0]] * 3 and m["per_class"][2]["class"] == "effusion"
    binary = pd.DataFrame({"patient_id": list("abcdef"), "label": [0, 1, 1, 0, 1, 0],
                           "pred": [0, 1, 0, 0, 1, 1], "score": [0.2, 0.9, 0.4, 0.1, 0.7, 0.6]})
    from medvlm.tasks import get_task

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = predictions_metrics(binary, n_boot=100)
        with_task = predictions_metrics(binary, n_boot=100, task=get_task("brats-grading"))
    assert json.dumps(with_task) == json.dumps(before) and "tp" in before and "macro_f1" not in before
    assert n_classes(binary) == 2 and n_classes(_frame()) == 3 and n_classes(binary, three_class_task()) == 3
    assert n_classes(pd.DataFrame({"label": [], "pred": []})) == 2
    assert n_classes(pd.DataFrame({"label": [0, 1], "pred": pd.array([None, None], dtype="Int64")})) == 2


def test_probability_columns_are_checked():
    df = _frame().iloc[:7].copy()
    df.loc[3, "p_pneumonia"] = 1.5
    with pytest.raises(DataError, match=r"^run/predictions.csv: row 4, column 'p_pneumonia': '1.5' is not a "
                                        r"probability in \[0, 1\]$"):
        multiclass_frame_metrics(df, classes=CLASSES, prob_columns=class_prob_columns(3, three_class_task()),
                                 source="run/predictions.csv")
    edges = _frame().iloc[:7].copy()
    edges.loc[0, ["p_normal", "p_pneumonia", "p_effusion"]] = [1.0, 0.0, 0.0]  # the bounds are probabilities
    assert multiclass_frame_metrics(edges, classes=CLASSES,
                                    prob_columns=class_prob_columns(3, three_class_task()))["auc"] is not None
    partial = _frame().iloc[:7].drop(columns="p_effusion")
    assert multiclass_frame_metrics(partial, classes=CLASSES,
                                    prob_columns=["p_normal", "p_pneumonia", "p_effusion"])["auc"] is None


def test_read_predictions_with_classes(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("patient_id,label,pred\na,0,2\nb,2,\nc,1,1\n")
    df = read_predictions(path, n_classes=3)
    assert df["label"].tolist() == [0, 2, 1] and df["pred"].isna().tolist() == [False, True, False]
    assert str(df["pred"].dtype) == "Int64" and df["label"].dtype == np.int64
    assert read_predictions(path, n_classes=None)["label"].tolist() == [0, 2, 1]
    with pytest.raises(DataError, match=r"row 2, column 'label': '2' is not 0 or 1 \(1 = the positive "
                                        r"class\)$"):
        read_predictions(path)  # the default stays binary, message and all
    for text, k, message in [
        ("label,pred\n3,1\n", 3, r"row 1, column 'label': '3' is not a class label 0\.\.2$"),
        ("label,pred\n1,3\n", 3, r"row 1, column 'pred': '3' is not a class label 0\.\.2$"),
        ("label,pred\n1,0.5\n", None, r"row 1, column 'pred': '0.5' is not a class label 0, 1, \.\.\.$"),
        ("label,pred\n-1,0\n", None, r"row 1, column 'label': '-1' is not a class label 0, 1, \.\.\.$"),
        ("label,pred\n,0\n", None, r"row 1, column 'label': empty is not a class label 0, 1, \.\.\.$"),
        ("label,pred\n0,x\n", 4, r"row 1, column 'pred': 'x' is not a class label 0\.\.3$"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=f"^{path}: " + message):
            read_predictions(path, n_classes=k)
    path.write_text("label,pred\n2,2\n0,1\n")
    assert read_predictions(path, n_classes=3)["pred"].tolist() == [2, 1]


def test_classes_inferred_from_a_file_without_its_task(tmp_path):
    def frame(text):
        (tmp_path / "f.csv").write_text(text)
        return read_predictions(tmp_path / "f.csv", n_classes=None)

    assert check_inferred_classes(frame("label,pred\n0,1\n1,\n"), "f.csv") == 2
    assert check_inferred_classes(frame("label,pred\n0,1\n1,2\n"), "f.csv") == 2  # binary: re-read as one
    assert check_inferred_classes(frame("label,pred\n0,1\n1,2\n2,\n"), "f.csv") == 3
    with pytest.raises(DataError, match=r"^f.csv: row 2, column 'label': 3 is not 0 or 1, and as a class "
                                        r"label of a 4-class file the labels 0\.\.3 would all occur \(2 "
                                        r"does not\); fix the value, or keep the file in its run folder "
                                        r"\(run\.json names the task\)$"):
        check_inferred_classes(frame("label,pred\n1,1\n3,0\n0,0\n"), "f.csv")
    with pytest.raises(DataError, match=r"^f.csv: row 3, column 'pred': 3 is not a class label 0\.\.2 \(the "
                                        r"labels name 3 classes\)$"):
        check_inferred_classes(frame("label,pred\n1,1\n2,\n0,3\n"), "f.csv")


def test_the_run_stage_table_of_a_three_class_run(tmp_path):
    from medvlm.predictions import summarise_test_cohort

    df = _frame()
    df["cohort"] = ["test"] * 7 + ["val"]
    df.to_csv(tmp_path / "predictions.csv", index=False)
    assert summarise_test_cohort(tmp_path) == {"test_accuracy": round(5 / 7, 3), "test_specificity": None,
                                               "test_auc": None}


# ------------------------------------------------------------------------- which classes an average covers
def test_notes_name_the_classes_each_macro_average_covers():
    # class pneumonia: neither a label nor a prediction; left out of both averages, as scikit-learn does
    y, p = [0, 0, 2, 2], [0, 2, 2, 2]
    m = multiclass_metrics(y, p, classes=CLASSES)
    assert m["notes"] == [
        "balanced_accuracy: the mean recall of the 2 of 3 classes among the labels (normal, effusion); "
        "never a label: pneumonia",
        "macro_f1: the mean F1 of the 2 of 3 classes among the labels or predictions (normal, effusion); "
        "neither a label nor a prediction: pneumonia"]
    assert m["balanced_accuracy"] == skm.balanced_accuracy_score(y, p)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, labels=[0, 2], average="macro"), abs=1e-15)
    # pneumonia predicted but never a label: in macro F1 with F1 0, not in balanced accuracy
    y, p = [0, 0, 2, 2], [0, 1, 2, 2]
    m = multiclass_metrics(y, p, classes=CLASSES)
    assert m["notes"] == [
        "balanced_accuracy: the mean recall of the 2 of 3 classes among the labels (normal, effusion); "
        "never a label: pneumonia",
        "macro_f1: counts with F1 0 the classes predicted but never a label: pneumonia"]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3, abs=1e-15)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns: y_pred has a class not in y_true
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-15)
    # one class labelled of four: both kinds of left-out class at once, several names listed
    m = multiclass_metrics([1, 1], [1, 3], classes=["a", "b", "c", "d"])
    assert m["notes"] == [
        "balanced_accuracy: the mean recall of the 1 of 4 classes among the labels (b); never a label: "
        "a, c, d",
        "macro_f1: the mean F1 of the 2 of 4 classes among the labels or predictions (b, d); neither a label "
        "nor a prediction: a, c",
        "macro_f1: counts with F1 0 the classes predicted but never a label: d"]
    assert (m["balanced_accuracy"], m["macro_f1"]) == (0.5, pytest.approx((2 / 3 + 0) / 2, abs=1e-15))
    # every class a label (some never predicted): the averages cover all K, nothing to say
    assert multiclass_metrics([0, 1, 2], [0, 0, 0], classes=CLASSES)["notes"] == []
    with pytest.warns(MetricWarning, match=r"^no rows: every metric is undefined$"):
        assert multiclass_metrics([], [], classes=CLASSES)["notes"] == []
    assert empty_multiclass(CLASSES)["notes"] == [] and empty_multiclass(2, n_boot=5)["notes"] == []


def test_coverage_notes_by_hand_and_against_scikit_learn():
    names = ["a", "b", "c"]
    assert coverage_notes(names, [1, 1, 1], [3, 0, 0]) == []
    assert coverage_notes(names, [0, 0, 0], [0, 0, 0]) == []  # no rows: every metric is undefined anyway
    assert coverage_notes(names, [0, 0, 3], [0, 0, 3]) == [
        "balanced_accuracy: the mean recall of the 1 of 3 classes among the labels (c); never a label: a, b",
        "macro_f1: the mean F1 of the 1 of 3 classes among the labels or predictions (c); neither a label "
        "nor a prediction: a, b"]
    assert coverage_notes(names, [2, 0, 0], [0, 1, 1]) == [
        "balanced_accuracy: the mean recall of the 1 of 3 classes among the labels (a); never a label: b, c",
        "macro_f1: counts with F1 0 the classes predicted but never a label: b, c"]
    assert coverage_notes(np.array(names), np.array([2.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.0])) == [
        "balanced_accuracy: the mean recall of the 2 of 3 classes among the labels (a, c); never a label: b",
        "macro_f1: counts with F1 0 the classes predicted but never a label: b"]
    # the classes named are the ones scikit-learn averages over (its labels=None semantics), on random tables
    rng = np.random.default_rng(11)
    for _ in range(40):
        k = int(rng.integers(3, 6))
        n = int(rng.integers(1, 6))
        y, p = rng.integers(0, k, n), rng.integers(0, k, n)
        m = multiclass_metrics(y, p, classes=k)
        covered = {"balanced_accuracy": sorted(set(y.tolist())),
                   "macro_f1": sorted(set(y.tolist()) | set(p.tolist()))}
        for note in m["notes"]:
            metric, rest = note.split(": ", 1)
            if "(" in rest:
                listed = [int(c) for c in rest[rest.index("(") + 1:rest.index(")")].split(", ")]
                assert listed == covered[metric]
        said = {n.split(":")[0] for n in m["notes"]}
        assert ("balanced_accuracy" in said) == (len(covered["balanced_accuracy"]) < k)
        assert ("macro_f1" in said) == (len(covered["macro_f1"]) < k or len(covered["balanced_accuracy"]) < k
                                        and bool(set(p.tolist()) - set(y.tolist())))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-12)
            assert m["macro_f1"] == pytest.approx(
                skm.f1_score(y, p, labels=covered["macro_f1"], average="macro"), abs=1e-12)
            assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-12)


def test_an_undefined_auc_is_explained_in_the_notes():
    probs = [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1]]
    with pytest.warns(MetricWarning, match=r"^auc undefined: no row of class effusion"):
        m = multiclass_metrics([0, 1, 0, 1], [0, 1, 1, 1], probs, classes=CLASSES)
    assert m["notes"] == [
        "balanced_accuracy: the mean recall of the 2 of 3 classes among the labels (normal, pneumonia); "
        "never a label: effusion",
        "macro_f1: the mean F1 of the 2 of 3 classes among the labels or predictions (normal, pneumonia); "
        "neither a label nor a prediction: effusion",
        "auc: undefined, one-vs-rest needs every class among the labels (with probabilities); no row of "
        "class effusion"]
    # every class a label, but class 2's only row has no probabilities: only the AUC is short of a class
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [np.nan, np.nan, np.nan]])
    with pytest.warns(MetricWarning, match=r"^auc"):
        m = multiclass_metrics([0, 1, 2], [0, 1, 2], probs, classes=CLASSES)
    assert m["notes"] == ["auc: undefined, one-vs-rest needs every class among the labels (with "
                          "probabilities); no row of class effusion"]
    assert multiclass_metrics(AUC_Y, [0, 1, 2, 0, 0, 2], AUC_PROBS, classes=CLASSES)["notes"] == []


# ------------------------------------------------------------------------ edges the mutation run found
def test_warnings_point_at_the_caller():
    if hasattr(multiclass_metrics, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [np.nan, 0.5, 0.5]])
    with pytest.warns(MetricWarning) as record:
        multiclass_metrics([0, 1, 1], [0, 1, 1], probs, classes=3)  # rows left out of the AUC; AUC undefined
        multiclass_metrics([], [], classes=3)
        bootstrap_multiclass(AUC_Y, [0, 1, 2, 0, 0, 2], AUC_PROBS, n_boot=50, seed=0)
    assert len(record) == 4 and {w.filename for w in record} == {__file__}


def test_confusion_matrix_names_its_bad_input():
    with pytest.raises(DataError, match=r"^labels must be class labels 0\.\.2, found 3$"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(DataError, match=r"^preds must be class labels 0\.\.2, found 5$"):
        confusion_matrix([0, 1], [5, 1], 3)


def test_the_undefined_auc_names_only_the_classes_without_a_scored_row():
    # a row without probabilities (left out) and two classes without a label: both named, only they
    probs = [[0.9, 0.1, 0, 0], [0.2, 0.7, 0.1, 0], [np.nan] * 4]
    with pytest.warns(MetricWarning) as record:
        m = multiclass_metrics([0, 1, 1], [0, 1, 1], probs, classes=["a", "b", "c", "d"])
    assert [str(w.message) for w in record] == [
        "auc computed on the 2 of 3 rows that have every class probability",
        "auc undefined: no row of class c, d (one-vs-rest needs every class)"]
    assert m["notes"][-1] == ("auc: undefined, one-vs-rest needs every class among the labels (with "
                              "probabilities); no row of class c, d")


def test_bootstrap_defaults_and_the_class_count():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert bootstrap_multiclass(Y, P) == bootstrap_multiclass(Y, P, n_boot=1000, seed=0)
    with pytest.warns(MetricWarning, match=r" of 1000\)$"):  # the default is 1000 resamples
        bootstrap_multiclass(AUC_Y, [0, 1, 2, 0, 0, 2], AUC_PROBS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no probabilities: no AUC, and nothing else is ever undefined
        ci = bootstrap_multiclass(Y, P, n_boot=50, seed=1)
    assert ci["auc_ci"] is None and ci["accuracy_ci"] is not None
    # K = 4 given, the labels and predictions only 0..2: the probabilities have 4 columns
    probs = np.random.default_rng(0).dirichlet(np.ones(4), len(Y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        four = bootstrap_multiclass(Y, P, probs, n_classes=4, n_boot=50, seed=1)
    assert four["auc_ci"] is None and four["accuracy_ci"] == ci["accuracy_ci"]


def test_bca_of_one_row_and_bca_of_the_auc_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = bootstrap_multiclass([1], [1], n_classes=3, n_boot=20, seed=0, method="bca")
    assert one["accuracy_ci"] == [1.0, 1.0] and one["auc_ci"] is None  # a jackknife without rows: NaN
    from medvlm.intervals import bca_interval

    y, p = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1]), np.array([0, 1, 2, 1, 1, 0, 0, 2, 2, 1])
    probs = np.random.default_rng(5).dirichlet(np.ones(3), len(y))

    def auc(idx):  # ovr_auc (equal to scikit-learn's, above): BCa's bias term counts resamples below the
        return ovr_auc(y[idx], probs[idx], 3)[0]  # estimate, so it needs the same last bit

    rng = np.random.default_rng(6)
    boot = np.array([auc(rng.integers(0, 10, size=10)) for _ in range(300)])
    jack = np.array([auc(np.delete(np.arange(10), i)) for i in range(10)])
    want = bca_interval(boot, auc(np.arange(10)), jack, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = bootstrap_multiclass(y, p, probs, n_boot=300, seed=6, method="bca")["auc_ci"]
    assert np.isfinite(jack).all() and want is not None and np.isnan(boot).any()
    assert got == pytest.approx(want, abs=1e-12)
    assert auc(np.arange(10)) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-12)


def test_frame_metrics_defaults_and_options():
    df = _frame().iloc[:7].rename(columns={f"p_{c}": f"p_{i}" for i, c in enumerate(CLASSES)})
    y, p = df["label"].to_numpy(), df["pred"].to_numpy(dtype=int)
    probs = df[["p_0", "p_1", "p_2"]].to_numpy()
    plain = multiclass_frame_metrics(df)  # K from the data, the index columns, no bootstrap
    assert plain == multiclass_metrics(y, p, probs) and plain["auc"] is not None
    assert multiclass_frame_metrics(df, classes=3) == plain
    assert not any(k.endswith("_ci") for k in plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = multiclass_frame_metrics(df, n_boot=40)  # rows resampled, seed 0, percentile
        assert {k: boot[k] for k in boot if k.endswith("_ci")} == bootstrap_multiclass(y, p, probs, n_boot=40)
        for kwargs in ({"seed": 3}, {"method": "bca"}, {"clusters": "patient_id"}):
            got = multiclass_frame_metrics(df, n_boot=40, **kwargs)
            cl = {"clusters": df["patient_id"].to_numpy()} if "clusters" in kwargs else {}
            want = bootstrap_multiclass(y, p, probs, n_boot=40, **{**kwargs, **cl})
            assert {k: got[k] for k in want} == want, kwargs
    # K = 4 given, the labels only 0..2: four probability columns, the AUC undefined (class 3 has no row)
    four = df.assign(p_3=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = multiclass_frame_metrics(four, classes=4, n_boot=20)
    assert (m["n_classes"], m["classes"], m["auc"], m["auc_ci"]) == (4, ["0", "1", "2", "3"], None, None)
    assert m["per_class"][0]["auc"] is not None
    for value, shown in (("x", "'x'"), (-0.25, "'-0.25'")):  # not a number, below 0
        bad = df.astype({"p_1": object})
        bad.loc[2, "p_1"] = value
        with pytest.raises(DataError, match=rf"^predictions: row 3, column 'p_1': {shown} is not a "
                                            r"probability in \[0, 1\]$"):
            multiclass_frame_metrics(bad)


def test_empty_result_in_full():
    assert empty_multiclass(2) == {
        "n": 0, "n_classes": 2, "classes": ["0", "1"], "accuracy": None, "balanced_accuracy": None,
        "macro_f1": None, "auc": None,
        "per_class": [{"class": "0", "label": 0, "support": 0, "precision": None, "recall": None,
                       "specificity": None, "f1": None, "auc": None},
                      {"class": "1", "label": 1, "support": 0, "precision": None, "recall": None,
                       "specificity": None, "f1": None, "auc": None}],
        "confusion": [[0, 0], [0, 0]], "notes": []}
    named = empty_multiclass(["x", "y", "z"], n_boot=10)
    assert named["classes"] == ["x", "y", "z"] and [r["class"] for r in named["per_class"]] == ["x", "y", "z"]
    assert named["confusion"] == [[0] * 3] * 3
    assert {k: named[k] for k in named if k.endswith("_ci")} == dict.fromkeys(
        [f"{m}_ci" for m in MULTICLASS_CI_METRICS])


def test_classes_inferred_from_a_frame_without_rows():
    # read_predictions refuses a file without rows; a frame of none (e.g. every row filtered out) is binary
    df = pd.DataFrame({"label": np.array([], dtype=np.int64), "pred": pd.array([], dtype="Int64")})
    assert check_inferred_classes(df, "f.csv") == 2


def test_ovr_auc_reads_none_as_a_missing_probability():
    probs = [[0.6, 0.2, 0.2], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6], [0.4, 0.3, 0.3], [0.5, 0.3, 0.2],
             [0.2, 0.2, 0.6], [None, 0.5, 0.5]]
    macro, per = ovr_auc([*AUC_Y, 1], probs, 3)
    assert macro == pytest.approx(11 / 12, abs=1e-15) and per.tolist() == pytest.approx([7 / 8, 7 / 8, 1.0])
    with pytest.warns(MetricWarning, match=r"^auc computed on the 6 of 7 rows that have every class "
                                           r"probability$"):
        m = multiclass_metrics([*AUC_Y, 1], [0, 1, 2, 0, 0, 2, 1], probs, classes=3)
    assert m["auc"] == pytest.approx(11 / 12, abs=1e-15)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_a_file_whose_labels_are_all_zero_is_binary():
    """Only LGG patients in the file, one predicted HGG: still the binary file (K = 2), not a one-class
    file whose prediction 1 would be out of range."""
    df = pd.DataFrame({"label": [0, 0, 0], "pred": pd.array([0, 1, None], dtype="Int64")})
    assert check_inferred_classes(df, "p.csv") == 2
