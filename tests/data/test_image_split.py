"""The split of an image task: lists of image ids, the images of one patient always in one cohort."""

from __future__ import annotations

import pandas as pd
import pytest

from medvlm.data.split import check_groups, split_images
from medvlm.errors import DataError


def manifest(n_patients=30, *, n_classes=2):
    """Patients with 1 to 3 images each, labels mixed within some patients."""
    rows = []
    for p in range(n_patients):
        for k in range(1 + p % 3):
            rows.append({"id": f"P{p:02d}_{k}", "patient_id": f"P{p:02d}", "label": (p + k) % n_classes})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_classes, folds, seed", [(2, 3, 0), (2, 5, 1), (3, 3, 2)])
def test_patients_stay_together(n_classes, folds, seed):
    m = manifest(36, n_classes=n_classes)
    split = split_images(m, test_fraction=0.2, folds=folds, seed=seed, n_classes=n_classes)
    patient = dict(zip(m["id"], m["patient_id"], strict=True))
    for fold in split["folds"]:
        cohorts = [fold["train"], fold["val"], split["test"]]
        assert sorted(i for c in cohorts for i in c) == sorted(m["id"])  # every image exactly once
        groups = [{patient[i] for i in c} for c in cohorts]
        assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    vals = [i for f in split["folds"] for i in f["val"]]
    assert sorted(vals + split["test"]) == sorted(m["id"])  # the folds' vals partition the rest
    assert split["labels"] == dict(zip(m["id"], m["label"], strict=True)) and split["unit"] == "image"
    # stratified by patient: each class among the test patients' largest labels
    largest = m.groupby("patient_id")["label"].max()
    test_patients = {patient[i] for i in split["test"]}
    assert set(largest[list(test_patients)]) == set(largest)


def test_same_seed_same_split_whatever_the_row_order():
    m = manifest(24)
    a = split_images(m, folds=3, seed=4)
    b = split_images(m.sample(frac=1.0, random_state=1), folds=3, seed=4)
    assert a == b


def test_a_split_that_separates_a_patient_is_refused():
    split = {"test": ["a1"], "folds": [{"train": ["a2", "b1"], "val": ["c1"]}]}
    with pytest.raises(DataError, match=r"^split: images of patient A are in two cohorts of fold 0; "
                                        r"refusing to write$"):
        check_groups(split, {"a1": "A", "a2": "A", "b1": "B", "c1": "C"})


def test_too_few_patients_for_the_folds_is_one_line():
    m = manifest(12)  # 9 patients after the test set; largest label 0 only for P00, P06
    with pytest.raises(DataError, match=r"^9 patients left after the test set \(1 of class 0, 8 of class "
                                        r"1\): too few for 12 stratified folds; use --folds 8 or fewer$"):
        split_images(m, test_fraction=0.25, folds=12)


def test_a_fold_without_a_class_is_named_with_the_class():
    m = pd.DataFrame({"id": [f"i{k}" for k in range(12)], "patient_id": [f"P{k}" for k in range(12)],
                      "label": [0] * 10 + [1] * 2})
    with pytest.warns(UserWarning, match=r"^fold \d (train|val) holds no image of class lesion$"):
        split_images(m, test_fraction=0.0, folds=3, seed=0, classes=("no-lesion", "lesion"))


def test_a_test_set_too_small_names_the_classes_in_our_words():
    m = pd.DataFrame({"id": [f"i{k}" for k in range(5)], "patient_id": [f"P{k}" for k in range(5)],
                      "label": [0, 0, 1, 1, 1]})
    with pytest.raises(DataError, match=r"^cannot hold out a stratified test set of 0\.15 from 5 patients "
                                        r"\(2 no-lesion, 3 lesion\): at least one patient of each class is "
                                        r"needed in the test set; use a larger --test-fraction or more "
                                        r"patients$"):
        split_images(m, test_fraction=0.15, folds=2, classes=("no-lesion", "lesion"))
    m["label"] = [0, 1, 1, 1, 1]  # one no-lesion patient: it cannot be both in test and in the rest
    with pytest.raises(DataError, match=r"\(1 no-lesion, 4 lesion\): each class needs at least 2 patients"):
        split_images(m, test_fraction=0.4, folds=2, classes=("no-lesion", "lesion"))


def test_the_source_split_warns_about_options_and_empty_cohorts():
    m = pd.DataFrame({"id": ["a", "b", "c", "d"], "patient_id": ["a", "b", "c", "d"], "label": [0, 1, 0, 1],
                      "split": ["train", "train", "val", "val"]})
    with pytest.warns(UserWarning) as caught:
        split = split_images(m, test_fraction=0.3, folds=2)
    texts = [str(w.message) for w in caught]
    assert "the source's own train/val/test split is kept (one fold); --test-fraction 0.3 and --folds 2 do " \
           "not apply" in texts
    assert "the source's own test set holds no usable image: test 0" in texts
    assert split["test"] == [] and split["folds"] == [{"train": ["a", "b"], "val": ["c", "d"]}]


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
@pytest.mark.parametrize("fold, test", [({"train": ["b1"], "val": ["a1"]}, ["a2"]),   # val and test
                                        ({"train": ["a1"], "val": ["a2"]}, ["b1"])])  # train and val
def test_a_patient_split_between_any_two_cohorts_is_refused(fold, test):
    with pytest.raises(DataError, match=r"^split: images of patient A are in two cohorts of fold 0; "):
        check_groups({"test": test, "folds": [fold]}, {"a1": "A", "a2": "A", "b1": "B"})


def test_a_half_filled_split_column_is_no_source_split():
    """Only a split column filled on every row is the source's own split; one with gaps is ignored and the
    patients are split as without it."""
    m = manifest(24)
    m["split"] = ["train"] * 10 + [""] * (len(m) - 10)
    got = split_images(m, test_fraction=0.2, folds=3, seed=4)
    assert "source_split" not in got
    assert got == split_images(m.drop(columns="split"), test_fraction=0.2, folds=3, seed=4)


def test_an_empty_source_cohort_is_said_once_not_as_a_fold_without_classes():
    m = pd.DataFrame({"id": ["a", "b", "c", "d"], "patient_id": ["a", "b", "c", "d"], "label": [0, 1, 0, 1],
                      "split": ["train", "train", "test", "test"]})
    with pytest.warns(UserWarning) as caught:
        split = split_images(m, folds=5)
    assert [str(w.message) for w in caught] == [
        "the source's own train/val/test split is kept (one fold); --test-fraction 0.15 and --folds 5 do not "
        "apply", "the source's own val set holds no usable image: val 0"]
    assert split["folds"] == [{"train": ["a", "b"], "val": []}]
