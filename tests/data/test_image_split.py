"""The split of an image task: lists of image ids, the images of one patient always in one cohort."""

from __future__ import annotations

import numpy as np
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


def _caught(fn, *args, **kwargs):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, caught


def test_the_source_split_is_written_whole_and_every_note_in_full():
    m = pd.DataFrame({"id": ["t2", "t1", "v1", "x1", "x2"], "patient_id": ["p1", "p2", "p3", "p4", "p5"],
                      "label": [0, 0, 2, 1, 2], "split": ["train", "train ", "val", "test", "test"]})
    split, caught = _caught(split_images, m, test_fraction=0.25, folds=3, seed=3, n_classes=3)
    assert split == {"seed": 3, "test_fraction": None, "source_split": True, "test": ["x1", "x2"],
                     "folds": [{"train": ["t1", "t2"], "val": ["v1"]}], "unit": "image",
                     "labels": {"t2": 0, "t1": 0, "v1": 2, "x1": 1, "x2": 2}}
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "the source's own train/val/test split is kept (one fold); --test-fraction 0.25 and "
                      "--folds 3 do not apply"),
        (UserWarning, "fold 0 train holds no image of class 1, 2"),  # two classes, the label numbers
        (UserWarning, "fold 0 val holds no image of class 0, 1")]


def test_split_images_warnings_point_at_the_caller():
    if hasattr(split_images, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    m = pd.DataFrame({"id": ["t1", "v1", "x1"], "patient_id": ["p1", "p2", "p3"], "label": [0, 1, 1],
                      "split": ["train", "val", "test"]})
    _, caught = _caught(split_images, m)
    assert len(caught) == 3 and {w.filename for w in caught} == {__file__}
    _, caught = _caught(split_images, m.assign(split=["train", "val", "val"]))  # an empty test cohort
    assert any("no usable image" in str(w.message) for w in caught)
    assert {w.filename for w in caught} == {__file__}
    heavy = pd.DataFrame([(f"h{i}", "HUGE", i % 3) for i in range(40)]
                         + [(f"s{i}", f"P{i}", i % 3) for i in range(21)],
                         columns=["id", "patient_id", "label"])
    _, caught = _caught(split_images, heavy, test_fraction=0.2, folds=2, seed=0, n_classes=3)
    assert caught and {w.filename for w in caught} == {__file__}


def test_a_source_split_with_an_empty_cohort_warns_once_for_it_not_for_its_classes():
    m = pd.DataFrame({"id": ["a", "b"], "patient_id": ["a", "b"], "label": [0, 1],
                      "split": ["train", "test"]})
    split, caught = _caught(split_images, m, classes=("no", "yes"))
    assert split["folds"] == [{"train": ["a"], "val": []}] and split["test"] == ["b"]
    assert [str(w.message) for w in caught] == [
        "the source's own train/val/test split is kept (one fold); --test-fraction 0.15 and --folds 5 do "
        "not apply",
        "the source's own val set holds no usable image: val 0",
        "fold 0 train holds no image of class yes"]


@pytest.mark.parametrize(("values", "bad"), [(["train", "dev"], "dev"), (["Test", "dev"], "Test")])
def test_a_source_split_name_that_is_not_train_val_test_is_refused(values, bad):
    m = pd.DataFrame({"id": ["a", "b"], "patient_id": ["a", "b"], "label": [0, 1], "split": values})
    with pytest.raises(DataError, match=rf"^manifest\.csv: split '{bad}'; expected train, val or test$"):
        split_images(m)
    with pytest.raises(DataError, match=r"^images\.csv: split 'dev'"):
        split_images(m.assign(split=["dev", "train"]), source="images.csv")


def test_a_split_column_with_a_blank_is_not_a_source_split():
    m = manifest(20)
    m["split"] = ["train"] * (len(m) - 1) + [" "]
    split, caught = _caught(split_images, m, folds=2, seed=1)
    assert "source_split" not in split and split == split_images(manifest(20), folds=2, seed=1)
    assert not any("source's own" in str(w.message) for w in caught)


def test_the_patient_split_follows_split_patients_with_every_option():
    from medvlm.data.split import split_patients

    m = manifest(30, n_classes=3)
    split, caught = _caught(split_images, m, test_fraction=0.3, folds=4, seed=7, n_classes=3)
    largest = m.groupby("patient_id")["label"].max()
    by_patient, _ = _caught(split_patients, list(largest.index), list(largest.values), test_fraction=0.3,
                            folds=4, seed=7, n_classes=3)

    def images(group):
        return sorted(m.loc[m["patient_id"].isin(group), "id"])

    assert list(split) == ["seed", "test_fraction", "test", "folds", "unit", "labels"]
    assert split["seed"] == 7 and split["test_fraction"] == 0.3
    assert split["test"] == images(by_patient["test"])
    assert split["folds"] == [{"train": images(f["train"]), "val": images(f["val"])}
                              for f in by_patient["folds"]]
    assert not any("patients" in str(w.message) for w in caught)  # split_patients' own notes are hushed


def test_the_defaults_are_five_folds_a_test_fraction_of_0_15_and_seed_0():
    m = manifest(40)
    split = split_images(m)
    assert len(split["folds"]) == 5 and split["test_fraction"] == 0.15 and split["seed"] == 0
    assert split == split_images(m, test_fraction=0.15, folds=5, seed=0, n_classes=2)


def test_the_image_share_note_comes_at_exactly_the_gap(monkeypatch):
    from medvlm.data import split as split_module

    m = pd.DataFrame({"id": [f"i{k}" for k in range(20)], "patient_id": [f"P{k // 2}" for k in range(20)],
                      "label": [(k // 2) % 2 for k in range(20)]})
    first, _ = _caught(split_images, m, test_fraction=0.3, folds=2)
    share = len(first["test"]) / len(m)
    for gap, noted in [(abs(share - 0.3), True), (np.nextafter(abs(share - 0.3), 1), False)]:
        monkeypatch.setattr(split_module, "IMAGE_SHARE_GAP", gap)
        _, caught = _caught(split_images, m, test_fraction=0.3, folds=2)
        assert any("counts patients" in str(w.message) for w in caught) is noted, (share, gap)


def _image_work(tmp_path):
    """A prepared MedMNIST task (3 classes, 24 train, 6 val, 6 test images)."""
    from medvlm.tasks import prepare_work

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 5, 5), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1)
    np.savez(data / "tri.npz", **arrays)
    task = tmp_path / "tri.yaml"
    task.write_text("name: tri\nclasses: [alpha, beta, gamma]\nsource: {kind: medmnist, npz: tri.npz}\n"
                    "prompt: \"0, 1 or 2? Choice:\"\n", encoding="utf-8")
    prepare_work(data, tmp_path / "w", str(task))
    return tmp_path / "w"


def test_make_split_of_an_image_task_passes_its_options_and_names(tmp_path):
    from medvlm.data.split import make_split

    work = _image_work(tmp_path)
    manifest = pd.read_csv(work / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[(manifest["split"] == "val") & (manifest["label"] == "1"), "split"] = "train"
    manifest.to_csv(work / "manifest.csv", index=False)
    split, caught = _caught(make_split, work, test_fraction=0.3, folds=3, seed=2)
    assert [str(w.message) for w in caught] == [
        "the source's own train/val/test split is kept (one fold); --test-fraction 0.3 and --folds 3 do not "
        "apply", "fold 0 val holds no image of class beta"]  # the task's class names
    assert split["seed"] == 2 and len(split["test"]) == 6
    manifest.loc[0, "split"] = "dev"
    manifest.to_csv(work / "manifest.csv", index=False)
    with pytest.raises(DataError, match=rf"^{work / 'manifest.csv'}: split 'dev'; expected train, val or "
                                        r"test$"):
        make_split(work)
    manifest.drop(columns="split").to_csv(work / "manifest.csv", index=False)
    split = make_split(work, test_fraction=0.25, folds=3, seed=5)
    assert (split["seed"], split["test_fraction"], len(split["folds"])) == (5, 0.25, 3)
    plain = manifest.drop(columns="split").assign(label=manifest["label"].astype(int))
    assert split == split_images(plain, test_fraction=0.25, folds=3, seed=5, n_classes=3)


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


def test_split_patients_notes_are_hushed_and_ours_given_in_images():
    m = pd.DataFrame({"id": [f"i{k}" for k in range(10)], "patient_id": [f"P{k}" for k in range(10)],
                      "label": [0] + [1] * 9})  # one class-0 patient: most cohorts hold none
    split, caught = _caught(split_images, m, test_fraction=0.0, folds=3, seed=0, classes=("no", "yes"))
    texts = sorted(str(w.message) for w in caught)
    assert texts == sorted(f"fold {k} {name} holds no image of class no" for k, f in enumerate(split["folds"])
                           for name in ("train", "val") if "i0" not in f[name])
    assert len(texts) == 3 and not any("LGG" in t or "patients" in t for t in texts)
