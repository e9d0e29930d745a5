"""``medvlm split``: a stratified, by-patient test set and k stratified folds over the rest.

``WORK/splits.json`` =
``{"seed", "test_fraction", "test": [ids], "folds": [{"train": [ids], "val": [ids]}]}``.
Only patients with status ``ok`` in ``WORK/manifest.csv`` take part. Labels: LGG = 0, HGG = 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from medvlm._io import write_json_atomic
from medvlm.errors import ConfigError, DataError


def split_patients(
    patient_ids: Sequence[str],
    labels: Sequence[int],
    *,
    test_fraction: float = 0.15,
    folds: int = 5,
    seed: int = 0,
    n_classes: int = 2,
    classes: Sequence[str] | None = None,
) -> dict:
    """Stratified test set of ``test_fraction``, then ``folds`` stratified folds over the rest.

    Pure and reproducible: the result depends on the set of ``(id, label)`` pairs and ``seed`` only
    (not on their order). Ids within each list are sorted. Labels ``0..n_classes-1``; ``classes`` names
    them in errors (default LGG, HGG for two classes).

    >>> ids = [f"p{i:02d}" for i in range(20)]
    >>> s = split_patients(ids, [0] * 5 + [1] * 15, test_fraction=0.2, folds=2, seed=0)
    >>> len(s["test"]), [len(f["val"]) for f in s["folds"]]
    (4, [8, 8])
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be within [0, 1), got {test_fraction}")
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if len(set(patient_ids)) != len(patient_ids):
        dup = sorted({p for p in patient_ids if list(patient_ids).count(p) > 1})
        raise DataError(f"patient {dup[0]} appears twice in the manifest")
    pairs = sorted(zip(patient_ids, (int(y) for y in labels), strict=True))
    ids = [p for p, _ in pairs]
    ys = [y for _, y in pairs]
    if set(ys) - set(range(n_classes)):
        bad = sorted(set(ys) - set(range(n_classes)))
        if n_classes == 2:
            raise DataError(f"labels must be 0 (LGG) or 1 (HGG), got {bad}")
        raise DataError(f"labels must be 0..{n_classes - 1}, got {bad}")
    if test_fraction > 0:
        try:
            rest, test, y_rest, _ = train_test_split(ids, ys, test_size=test_fraction, stratify=ys,
                                                     random_state=seed)
        except ValueError as exc:
            names = (list(classes) if classes else ["LGG", "HGG"] if n_classes == 2
                     else [f"of class {k}" for k in range(n_classes)])
            counts = ", ".join(f"{ys.count(k)} {names[k]}" for k in range(n_classes))
            if "least populated class" in str(exc):
                need = ("each class needs at least 2 patients (one for the test set, one for the rest); "
                        "add patients of the smallest class")
            else:
                need = ("at least one patient of each class is needed in the test set; use a larger "
                        "--test-fraction or more patients")
            raise DataError(
                f"cannot hold out a stratified test set of {test_fraction} from {len(ids)} patients "
                f"({counts}): {need}"
            ) from None
    else:
        rest, test, y_rest = ids, [], ys
    present = [y_rest.count(k) for k in range(n_classes) if y_rest.count(k)]
    n_min = min(present) if len(present) > 1 else 0
    largest = min(len(rest), max(present) if n_min >= 1 else len(rest))
    if folds > largest:
        counts = ", ".join(f"{y_rest.count(k)} of class {k}" for k in range(n_classes))
        fix = f"use --folds {largest} or fewer" if largest >= 2 else "add patients or lower --test-fraction"
        raise DataError(f"{len(rest)} patients left after the test set ({counts}): too few for {folds} "
                        f"stratified folds; {fix}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # we warn ourselves, once per fold without LGG
        if n_min >= 1:
            kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            parts = list(kfold.split(rest, y_rest))
        else:
            from sklearn.model_selection import KFold

            parts = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(rest))
    out_folds = [
        {"train": sorted(rest[i] for i in tr), "val": sorted(rest[i] for i in va)} for tr, va in parts
    ]
    split = {"seed": int(seed), "test_fraction": float(test_fraction), "test": sorted(test),
             "folds": out_folds}
    check_split(split, dict(zip(ids, ys, strict=True)))
    return split


def check_split(split: dict, labels: dict[str, int] | None = None) -> list[str]:
    """Refuse leakage; return warnings (also issued with :func:`warnings.warn`).

    Raises :class:`DataError` when a patient sits in two cohorts of one fold, in test and a fold, twice
    in one list, or (with ``labels``) when a fold's train + val + test is not the whole cohort.
    Warns when a fold's train or val holds no LGG (label 0).
    """
    test = list(split["test"])
    if len(set(test)) != len(test):
        raise DataError("split: a patient appears twice in the test set")
    notes: list[str] = []
    for k, fold in enumerate(split["folds"]):
        train, val = list(fold["train"]), list(fold["val"])
        for name, ids in (("train", train), ("val", val)):
            if len(set(ids)) != len(ids):
                raise DataError(f"split: a patient appears twice in fold {k} {name}")
        both = (set(train) & set(val)) | (set(train) & set(test)) | (set(val) & set(test))
        if both:
            raise DataError(
                f"split: patient {sorted(both)[0]} is in two cohorts of fold {k}; refusing to write"
            )
        if labels is not None:
            if set(train) | set(val) | set(test) != set(labels):
                raise DataError(f"split: fold {k} does not cover the cohort exactly")
            for name, ids in (("train", train), ("val", val)):
                if ids and not any(labels[p] == 0 for p in ids):
                    notes.append(f"fold {k} {name} holds no LGG patient")
    vals = [p for f in split["folds"] for p in f["val"]]
    if len(vals) != len(set(vals)):
        raise DataError("split: a patient is in the validation set of two folds")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return notes


def make_split(work: str | Path, *, test_fraction: float = 0.15, folds: int = 5, seed: int = 0) -> dict:
    """Split the ``ok`` patients of ``WORK/manifest.csv`` and write ``WORK/splits.json`` (returned).

    An image task's manifest (one row per image, an ``id`` column): :func:`split_images`."""
    from medvlm.data.cohorts import read_manifest

    work = Path(work).expanduser()
    if not work.is_dir():
        raise DataError(f"{work}: no such work folder; run `medvlm prepare DATA --out {work}` first")
    manifest = read_manifest(work, ok_only=True)
    if manifest.empty:
        raise DataError(f"{work / 'manifest.csv'}: no patient with status ok to split")
    if "id" in manifest.columns:
        from medvlm.tasks import work_task

        task = work_task(work)
        split = split_images(manifest, test_fraction=test_fraction, folds=folds, seed=seed,
                             n_classes=task.n_classes, source=str(work / "manifest.csv"),
                             classes=task.classes)
        write_json_atomic(work / "splits.json", split)
        return split
    if manifest["label"].isna().any():
        pid = manifest.loc[manifest["label"].isna(), "patient_id"].iloc[0]
        raise DataError(f"{work / 'manifest.csv'}: patient {pid} is ok but has no label")
    split = split_patients(list(manifest["patient_id"]), [int(v) for v in manifest["label"]],
                           test_fraction=test_fraction, folds=folds, seed=seed)
    # the labels the split was stratified on: a later prepare that changes one makes the split stale
    split["labels"] = {str(p): int(v) for p, v in zip(manifest["patient_id"], manifest["label"], strict=True)}
    write_json_atomic(work / "splits.json", split)
    return split


#: a note when the test cohort's share of the images is this far (or farther) from --test-fraction
IMAGE_SHARE_GAP = 0.1


def split_images(manifest, *, test_fraction: float = 0.15, folds: int = 5, seed: int = 0, n_classes: int = 2,
                 source: str = "manifest.csv", classes: Sequence[str] | None = None) -> dict:
    """The split of an image task: lists of image ids, never two images of one patient in two cohorts.

    ``manifest``: the ``ok`` rows (``id, patient_id, label``, optionally ``split``). With a source split
    (MedMNIST's ``train``/``val``/``test`` in ``split``) that split is kept as it is: ``test``, and one
    fold of ``train``/``val`` (a warning says that ``test_fraction`` and ``folds`` do not apply).
    Otherwise the patients are split by :func:`split_patients`, stratified on each patient's largest
    label, and each patient's images follow it. ``labels``: every image's label (the stale-split check).
    Warns (naming ``classes``, default the label numbers) when a fold's train or val has no image of a
    class.
    """
    import pandas as pd

    ids = [str(i) for i in manifest["id"]]
    labels = {i: int(v) for i, v in zip(ids, manifest["label"], strict=True)}
    patients = {i: str(p) for i, p in zip(ids, manifest["patient_id"], strict=True)}
    own = (manifest["split"].astype(str).str.strip() if "split" in manifest.columns
           else pd.Series([], dtype=str))
    if len(own) and (own != "").all():
        bad = sorted(set(own) - {"train", "val", "test"})
        if bad:
            raise DataError(f"{source}: split {bad[0]!r}; expected train, val or test")
        warnings.warn(f"the source's own train/val/test split is kept (one fold); --test-fraction "
                      f"{test_fraction:g} and --folds {folds} do not apply", UserWarning, stacklevel=2)
        by = {name: sorted(i for i, s in zip(ids, own, strict=True) if s == name)
              for name in ("train", "val", "test")}
        for name in ("train", "val", "test"):
            if not by[name]:
                warnings.warn(f"the source's own {name} set holds no usable image: {name} 0", UserWarning,
                              stacklevel=2)
        split = {"seed": int(seed), "test_fraction": None, "source_split": True, "test": by["test"],
                 "folds": [{"train": by["train"], "val": by["val"]}]}
    else:
        patient_label: dict[str, int] = {}
        for i in ids:
            patient_label[patients[i]] = max(patient_label.get(patients[i], 0), labels[i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its notes are about patients; ours below, images
            by_patient = split_patients(list(patient_label), list(patient_label.values()),
                                        test_fraction=test_fraction, folds=folds, seed=seed,
                                        n_classes=n_classes, classes=classes)

        def images_of(group: list[str]) -> list[str]:
            members = set(group)
            return sorted(i for i in ids if patients[i] in members)

        split = {"seed": int(seed), "test_fraction": float(test_fraction),
                 "test": images_of(by_patient["test"]),
                 "folds": [{"train": images_of(f["train"]), "val": images_of(f["val"])}
                           for f in by_patient["folds"]]}
        image_share = len(split["test"]) / len(ids) if ids else 0.0
        if ids and abs(image_share - test_fraction) >= IMAGE_SHARE_GAP:
            n_pat = len(patient_label)
            n_test = len(by_patient["test"])
            warnings.warn(f"--test-fraction {test_fraction:g} counts patients: the test cohort holds "
                          f"{n_test} of {n_pat} patients ({n_test / n_pat:.0%}) "
                          f"but {len(split['test'])} of {len(ids)} images ({image_share:.0%}): patients have "
                          "different numbers of images", UserWarning, stacklevel=2)
    check_groups(split, patients)
    names = list(classes) if classes else [str(k) for k in range(n_classes)]
    for k, fold in enumerate(split["folds"]):
        for name in ("train", "val"):
            missing = sorted(set(range(n_classes)) - {labels[i] for i in fold[name]})
            if fold[name] and missing:
                warnings.warn(f"fold {k} {name} holds no image of class "
                              + ", ".join(names[c] for c in missing), UserWarning, stacklevel=2)
    split["unit"] = "image"
    split["labels"] = labels
    return split


def check_groups(split: dict, patients: dict[str, str]) -> None:
    """DataError when two images of one patient sit in two cohorts of a fold (``patients``: image id ->
    patient id)."""
    test = {patients[i] for i in split["test"]}
    for k, fold in enumerate(split["folds"]):
        train = {patients[i] for i in fold["train"]}
        val = {patients[i] for i in fold["val"]}
        both = (train & val) | (train & test) | (val & test)
        if both:
            raise DataError(f"split: images of patient {sorted(both)[0]} are in two cohorts of fold {k}; "
                            "refusing to write")
