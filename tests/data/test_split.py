"""``split``: stratified by label, by patient; partition, no leakage, reproducibility; CLI."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import pytest

from medvlm.cli import main
from medvlm.data.cohorts import load_cohort, read_splits
from medvlm.data.split import check_split, make_split, split_patients
from medvlm.errors import ConfigError, DataError

IDS = [f"BraTS20_Training_{i:03d}" for i in range(1, 101)]
LABELS = [0 if i % 5 == 0 else 1 for i in range(1, 101)]  # 20 LGG, 80 HGG


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_partition_and_stratification():
    split = split_patients(IDS, LABELS, test_fraction=0.15, folds=5, seed=0)
    labels = dict(zip(IDS, LABELS, strict=True))
    test = split["test"]
    assert len(test) == 15 and sum(labels[p] == 0 for p in test) == 3  # 20% LGG as in the cohort
    vals = [p for f in split["folds"] for p in f["val"]]
    assert sorted(vals + test) == sorted(IDS)  # every patient exactly once in test or one val
    for fold in split["folds"]:
        assert set(fold["train"]) | set(fold["val"]) | set(test) == set(IDS)
        assert not (set(fold["train"]) & set(fold["val"]))
        assert len(fold["val"]) == 17
        n_lgg = sum(labels[p] == 0 for p in fold["val"])
        assert n_lgg in (3, 4)  # 17 LGG over 5 folds
    assert split["seed"] == 0 and split["test_fraction"] == 0.15


def test_reproducible_and_order_independent():
    a = split_patients(IDS, LABELS, seed=3)
    b = split_patients(list(reversed(IDS)), list(reversed(LABELS)), seed=3)
    c = split_patients(IDS, LABELS, seed=4)
    assert a == b
    assert a["test"] != c["test"]


def test_check_split_refuses_leakage():
    split = split_patients(IDS, LABELS, seed=0)
    leaked = json.loads(json.dumps(split))
    leaked["folds"][0]["train"].append(split["test"][0])
    with pytest.raises(DataError, match=f"patient {split['test'][0]} is in two cohorts of fold 0"):
        check_split(leaked)
    twice = json.loads(json.dumps(split))
    twice["folds"][1]["val"].append(twice["folds"][1]["train"][0])
    with pytest.raises(DataError, match="two cohorts of fold 1"):
        check_split(twice)


def test_warns_when_a_fold_has_no_lgg():
    ids = [f"p{i}" for i in range(12)]
    labels = [0, 0] + [1] * 10
    with pytest.warns(UserWarning, match="holds no LGG"):
        split = split_patients(ids, labels, test_fraction=0.0, folds=4, seed=0)
    assert sum(len(f["val"]) for f in split["folds"]) == 12


def test_no_warning_when_every_fold_has_lgg():
    labels = dict(zip(IDS, LABELS, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test here
        split = split_patients(IDS, LABELS, folds=5, seed=0)
        assert check_split(split, labels) == []
    for fold in split["folds"]:
        for name in ("train", "val"):
            assert any(labels[p] == 0 for p in fold[name]), name  # the reason there is nothing to warn about


def test_check_split_returns_the_warnings_it_issues():
    split = {"test": ["t0", "t1"], "folds": [{"train": ["a", "b"], "val": ["c", "d"]},
                                             {"train": ["c", "d"], "val": ["a", "b"]}]}
    labels = {"t0": 0, "t1": 1, "a": 1, "b": 1, "c": 0, "d": 1}
    with pytest.warns(UserWarning) as record:
        notes = check_split(split, labels)
    assert notes == ["fold 0 train holds no LGG patient", "fold 1 val holds no LGG patient"]
    assert [str(w.message) for w in record] == notes
    assert check_split(split) == []  # without labels nothing is known about LGG


def _toy_split():
    return {"test": ["t0", "t1"], "folds": [{"train": ["a", "b"], "val": ["c", "d"]},
                                            {"train": ["c", "d"], "val": ["a", "b"]}]}


@pytest.mark.parametrize(("change", "match"), [
    (lambda s: s["folds"][1]["val"].append("t1"), "patient t1 is in two cohorts of fold 1; refusing to "
                                                  "write"),
    (lambda s: s["folds"][0]["train"].append("t0"), "patient t0 is in two cohorts of fold 0; refusing to "
                                                    "write"),
    (lambda s: s["folds"][0]["val"].append("a"), "patient a is in two cohorts of fold 0; refusing to write"),
    (lambda s: s["test"].append("t0"), "a patient appears twice in the test set"),
    (lambda s: s["folds"][1]["train"].append("c"), "a patient appears twice in fold 1 train"),
    (lambda s: s["folds"][0]["val"].append("d"), "a patient appears twice in fold 0 val"),
    (lambda s: s["folds"][1].update(val=["c"], train=["a", "b", "d"]),
     "a patient is in the validation set of two folds"),
])  # val-test, train-test, train-val, then duplicates
def test_check_split_refuses_every_kind_of_leakage(change, match):
    split = _toy_split()
    assert check_split(split) == []
    change(split)
    with pytest.raises(DataError, match=f"^split: {match}$"):
        check_split(split)


def test_check_split_refuses_a_fold_that_does_not_cover_the_cohort():
    labels = {"t0": 0, "t1": 1, "a": 0, "b": 1, "c": 0, "d": 1}
    assert check_split(_toy_split(), labels) == []
    with pytest.raises(DataError, match="^split: fold 0 does not cover the cohort exactly$"):
        check_split(_toy_split(), {**labels, "e": 1})  # a patient left out
    short = _toy_split()
    short["folds"][1]["train"].remove("d")
    with pytest.raises(DataError, match="^split: fold 1 does not cover the cohort exactly$"):
        check_split(short, labels)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test_fraction": 1.0}, ConfigError, r"--test-fraction must be within \[0, 1\), got 1.0"),
        ({"test_fraction": -0.1}, ConfigError, r"--test-fraction must be within \[0, 1\), got -0.1"),
        ({"folds": 1}, ConfigError, "--folds must be at least 2, got 1"),
        ({"test_fraction": 0.01}, DataError,
         r"^cannot hold out a stratified test set of 0.01 from 100 patients \(20 LGG, 80 HGG\): at least one "
         r"patient of each class is needed in the test set; use a larger --test-fraction or more patients$"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        split_patients(IDS, LABELS, **kwargs)


def test_duplicate_patient_refused():
    with pytest.raises(DataError, match="appears twice"):
        split_patients(["a", "a", "b", "c"], [0, 0, 1, 1])


def test_fixture_split_is_readable(prepared_work):
    split = read_splits(prepared_work)
    assert len(split["test"]) == 3 and len(split["folds"]) == 2
    test = load_cohort(prepared_work, "test")
    assert sorted(test.labels) == [0, 1, 1]  # stratified: one of the three LGG
    train, val = load_cohort(prepared_work, "train", fold=0), load_cohort(prepared_work, "val", fold=0)
    assert len(train) + len(val) + len(test) == 12


def test_only_ok_patients(prepared_work, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    with open(work / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["status"], rows[0]["reason"] = "skipped", "x: missing t1 file"
    with open(work / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    split = make_split(work, test_fraction=0.25, folds=2, seed=1)
    everyone = set(split["test"]) | set(split["folds"][0]["train"]) | set(split["folds"][0]["val"])
    assert rows[0]["patient_id"] not in everyone and len(everyone) == 11


def test_cli_split(prepared_work, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    (work / "splits.json").unlink()
    assert _run(["split", str(work), "--test-fraction", "0.25", "--folds", "2", "--seed", "0"]) == 0
    assert read_splits(work) == read_splits(prepared_work)
    assert "test 3" in capsys.readouterr().out


def test_cli_split_errors_exit_2(tmp_path, capsys):
    assert _run(["split", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medvlm: error: ") and "none" in err[0]
    tmp_path.joinpath("w").mkdir()
    assert _run(["split", str(tmp_path / "w")]) == 2
    assert "manifest" in capsys.readouterr().err


@pytest.mark.parametrize(("n0", "n1", "folds", "ok"), [(4, 4, 5, False), (4, 4, 3, True), (1, 7, 5, True),
                                                       (2, 2, 3, False)])
def test_too_few_patients_for_the_folds_is_one_line_naming_the_largest(n0, n1, folds, ok):
    ids = [f"p{i}" for i in range(n0 + n1)]
    labels = [0] * n0 + [1] * n1
    if ok:
        assert len(split_patients(ids, labels, test_fraction=0.0, folds=folds)["folds"]) == folds
        return
    largest = max(n0, n1)
    with pytest.raises(DataError, match=rf"\({n0} of class 0, {n1} of class 1\): too few for {folds} "
                                        rf"stratified folds; use --folds {largest} or fewer"):
        split_patients(ids, labels, test_fraction=0.0, folds=folds)


def test_cli_split_on_eight_patients_exits_2(prepared_work, tmp_path, capsys):
    import pandas as pd

    from medvlm.cli import invoke
    from medvlm.data.cohorts import read_manifest

    work = tmp_path / "w"
    shutil.copytree(prepared_work, work)
    manifest = read_manifest(work)
    keep = pd.concat([manifest[manifest["label"] == 0], manifest[manifest["label"] == 1].iloc[:5]])
    assert len(keep) == 8  # 3 + 5: after the test set, neither class has 5 patients for 5 folds
    keep.to_csv(work / "manifest.csv", index=False)
    assert invoke(["split", str(work), "--test-fraction", "0.25"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvlm: error: ") and "too few for 5 stratified folds" in err
    assert err.count("\n") == 1


# ------------------------------------------------------------- the split is sklearn's, on sorted ids
def _sorted(ids, labels):
    pairs = sorted(zip(ids, labels, strict=True))
    return [p for p, _ in pairs], [y for _, y in pairs]


def test_test_set_and_folds_are_sklearns_stratified_splits_of_the_sorted_ids():
    from sklearn.model_selection import StratifiedKFold, train_test_split

    ids, ys = _sorted(IDS, LABELS)
    rest, test, y_rest, _ = train_test_split(ids, ys, test_size=0.2, stratify=ys, random_state=7)
    folds = [{"train": sorted(rest[i] for i in tr), "val": sorted(rest[i] for i in va)}
             for tr, va in StratifiedKFold(n_splits=3, shuffle=True, random_state=7).split(rest, y_rest)]
    assert split_patients(IDS, LABELS, test_fraction=0.2, folds=3, seed=7) == {
        "seed": 7, "test_fraction": 0.2, "test": sorted(test), "folds": folds}


def test_one_lgg_left_is_still_stratified_and_no_lgg_uses_plain_kfold():
    from sklearn.model_selection import KFold, StratifiedKFold

    ids = [f"p{i:02d}" for i in range(9)]
    one = [0] + [1] * 8  # one LGG: stratified folds still (it sits in one fold's val)
    with pytest.warns(UserWarning, match="holds no LGG"):
        split = split_patients(ids, one, test_fraction=0.0, folds=3, seed=2)
    want = [sorted(ids[i] for i in va) for _, va in
            StratifiedKFold(n_splits=3, shuffle=True, random_state=2).split(ids, one)]
    assert [f["val"] for f in split["folds"]] == want
    none = [1] * 9
    with pytest.warns(UserWarning, match="holds no LGG"):
        split = split_patients(ids, none, test_fraction=0.0, folds=3, seed=2)
    kfold = KFold(n_splits=3, shuffle=True, random_state=2)
    want = [sorted(ids[i] for i in va) for _, va in kfold.split(ids)]
    assert [f["val"] for f in split["folds"]] == want


def test_defaults_are_15_percent_5_folds_seed_0():
    assert split_patients(IDS, LABELS) == split_patients(IDS, LABELS, test_fraction=0.15, folds=5, seed=0)


def test_bad_ids_and_labels_are_named():
    with pytest.raises(DataError, match="^patient b appears twice in the manifest$"):
        split_patients(["b", "a", "b", "c"], [0, 1, 0, 1])
    with pytest.raises(DataError, match=r"^labels must be 0 \(LGG\) or 1 \(HGG\), got \[2, 3\]$"):
        split_patients(["a", "b", "c", "d"], [0, 3, 1, 2])


@pytest.mark.parametrize(("n0", "n1", "folds", "message"), [
    (2, 3, 4, r"5 patients left after the test set \(2 of class 0, 3 of class 1\): too few for 4 stratified "
              r"folds; use --folds 3 or fewer$"),
    (1, 1, 2, r"2 patients left after the test set \(1 of class 0, 1 of class 1\): too few for 2 stratified "
              r"folds; add patients or lower --test-fraction$"),
    (0, 3, 4, r"3 patients left after the test set \(0 of class 0, 3 of class 1\): too few for 4 stratified "
              r"folds; use --folds 3 or fewer$"),
])
def test_too_few_patients_names_the_counts_and_the_fix(n0, n1, folds, message):
    ids = [f"p{i}" for i in range(n0 + n1)]
    with pytest.raises(DataError, match="^" + message):
        split_patients(ids, [0] * n0 + [1] * n1, test_fraction=0.0, folds=folds)


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
def test_as_many_folds_as_the_larger_class_is_allowed(labels):
    ids = [f"p{i}" for i in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fold without LGG, with two of them
        split = split_patients(ids, labels, test_fraction=0.0, folds=3)
    assert sorted(p for f in split["folds"] for p in f["val"]) == ids


def _manifest(work, rows):
    work.mkdir(exist_ok=True)
    lines = ["patient_id,label,status"] + [f"{p},{y},{s}" for p, y, s in rows]
    (work / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_make_split_writes_the_split_of_the_ok_patients(tmp_path):
    work = tmp_path / "w"
    _manifest(work, [(p, y, "ok") for p, y in zip(IDS, LABELS, strict=True)] + [("X", 1, "skipped")])
    written = make_split(work)
    assert written == json.loads((work / "splits.json").read_text())
    assert written.pop("labels") == dict(zip(IDS, LABELS, strict=True))  # what the split was stratified on
    assert written == split_patients(IDS, LABELS)
    options = {"test_fraction": 0.2, "folds": 3, "seed": 4}
    again = make_split(work, **options)
    assert again.pop("labels") == dict(zip(IDS, LABELS, strict=True))
    assert again == split_patients(IDS, LABELS, **options)


def test_make_split_errors_name_the_manifest(tmp_path):
    work = tmp_path / "w"
    _manifest(work, [("A", 0, "skipped")])
    with pytest.raises(DataError, match=rf"^{work / 'manifest.csv'}: no patient with status ok to split$"):
        make_split(work)
    _manifest(work, [("A", 0, "ok"), ("B", "", "ok"), ("C", "", "ok")])
    with pytest.raises(DataError, match=rf"^{work / 'manifest.csv'}: patient B is ok but has no label$"):
        make_split(work)


def test_ids_and_labels_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="shorter"):
        split_patients(["a", "b", "c", "d"], [0, 1, 0])


def test_warnings_point_at_the_caller():
    if hasattr(check_split, "__wrapped__"):
        pytest.skip("under mutmut: its trampoline adds frames between caller and function")
    with pytest.warns(UserWarning) as record:
        check_split({"test": [], "folds": [{"train": ["a"], "val": ["b"]}]}, {"a": 1, "b": 0})
    assert [w.filename for w in record] == [__file__]


def test_k_class_labels_beyond_the_classes_are_refused_with_the_range():
    with pytest.raises(DataError, match=r"^labels must be 0\.\.2, got \[3, 5\]$"):
        split_patients([f"p{i}" for i in range(6)], [0, 1, 2, 3, 5, 1], n_classes=3)


def test_a_k_class_test_set_too_small_names_the_classes_by_number():
    ids = [f"p{i}" for i in range(7)]
    with pytest.raises(DataError, match=r"^cannot hold out a stratified test set of 0\.3 from 7 patients "
                                        r"\(3 of class 0, 3 of class 1, 1 of class 2\): each class needs at "
                                        r"least 2 patients \(one for the test set, one for the rest\); add "
                                        r"patients of the smallest class$"):
        split_patients(ids, [0, 0, 0, 1, 1, 1, 2], test_fraction=0.3, folds=2, n_classes=3)


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_check_split_refuses_a_test_patient_outside_the_cohort():
    split = {"test": ["p1", "zz"], "folds": [{"train": ["p2"], "val": ["p3"]}]}
    with pytest.raises(DataError, match=r"^split: fold 0 does not cover the cohort exactly$"):
        check_split(split, {"p1": 0, "p2": 1, "p3": 0})
