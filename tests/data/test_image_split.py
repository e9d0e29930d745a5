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
