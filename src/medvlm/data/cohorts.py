"""Read the prepared work folder: ``manifest.csv``, ``volumes/<id>.npy`` and ``splits.json``.

Labels as the work folder's task defines them (``label`` 0/1; 1 the positive class).

A *cohort* is one of ``train``, ``val`` (both of one fold of ``splits.json``), ``test`` or ``all``
(every patient with status ``ok``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medvlm.errors import DataError
from medvlm.registry import check_choice

COHORTS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Cohort:
    """Patient ids and labels of one cohort, in a stable order (the order of ``splits.json``)."""

    name: str
    patient_ids: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.patient_ids)


def read_manifest(work: str | Path, *, ok_only: bool = False) -> pd.DataFrame:
    """Read ``WORK/manifest.csv`` (one row per patient found by ``prepare``).

    ``patient_id`` is kept as a string and ``label`` as a nullable integer.
    """
    path = Path(work) / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: no manifest; run `medvlm prepare DATA --out {work}` first")
    try:
        manifest = pd.read_csv(path, dtype={"patient_id": str, "id": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable manifest ({exc})") from exc
    missing = {"patient_id", "label", "status"} - set(manifest.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}")
    manifest["label"] = pd.to_numeric(manifest["label"], errors="coerce").astype("Int64")
    if ok_only:
        manifest = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    return manifest


def read_splits(work: str | Path) -> dict:
    """Read ``WORK/splits.json``: ``{"seed", "test": [ids], "folds": [{"train": [ids], "val": [ids]}]}``."""
    path = Path(work) / "splits.json"
    if not path.is_file():
        raise DataError(f"{path}: no split; run `medvlm split {work}` first")
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(splits, dict) or "test" not in splits or "folds" not in splits:
        raise DataError(f"{path}: expected keys 'test' and 'folds'")
    return splits


def volume_path(work: str | Path, patient_id: str) -> Path:
    """Prepared volume of one patient: float32, shape ``(4, D, H, W)``, the prepared channels."""
    return Path(work) / "volumes" / f"{patient_id}.npy"


def load_cohort(work: str | Path, cohort: str = "test", *, fold: int = 0) -> Cohort:
    """Patient ids and labels of ``cohort`` (``train``/``val`` of ``fold``, ``test``, or ``all``).

    Raises :class:`DataError` for a missing split, a fold out of range, an empty cohort or a patient of
    the split that is not ``ok`` in the manifest.
    """
    check_choice("cohort", cohort, COHORTS)
    manifest = read_manifest(work, ok_only=True)
    if "id" in manifest.columns:  # an image task: the split lists images
        return _image_cohort(work, manifest, cohort, fold)
    labels = dict(zip(manifest["patient_id"], manifest["label"], strict=True))
    if cohort == "all":
        ids = list(manifest["patient_id"])
    else:
        splits = read_splits(work)
        if cohort == "test":
            ids = list(splits["test"])
        else:
            folds = splits["folds"]
            if not 0 <= fold < len(folds):
                raise DataError(
                    f"{Path(work) / 'splits.json'}: fold {fold} does not exist (folds 0..{len(folds) - 1})"
                )
            ids = list(folds[fold][cohort])
    if not ids:
        raise DataError(f"{work}: cohort {cohort!r} (fold {fold}) has no patient")
    unknown = [pid for pid in ids if pid not in labels]
    if unknown:
        raise DataError(
            f"{Path(work) / 'splits.json'}: patient {unknown[0]} is in the split but not ok in manifest.csv"
        )
    if cohort != "all":
        split_labels = splits.get("labels") or {}  # absent in splits.json files of medvlm 0.1
        changed = [p for p in ids if p in split_labels and int(split_labels[p]) != int(labels[p])]
        if changed:
            first = changed[0]
            raise DataError(f"{Path(work) / 'splits.json'}: made when patient {first} had label "
                            f"{split_labels[first]}, but manifest.csv now says {int(labels[first])} "
                            f"({len(changed)} patient(s) changed since): rerun `medvlm split {work}`")
    return Cohort(cohort, ids, [int(labels[pid]) for pid in ids])


def _split_ids(work: str | Path, cohort: str, fold: int) -> list[str]:
    splits = read_splits(work)
    if cohort == "test":
        return list(splits["test"])
    folds = splits["folds"]
    if not 0 <= fold < len(folds):
        raise DataError(f"{Path(work) / 'splits.json'}: fold {fold} does not exist "
                        f"(folds 0..{len(folds) - 1})")
    return list(folds[fold][cohort])


def _image_cohort(work: str | Path, manifest: pd.DataFrame, cohort: str, fold: int) -> Cohort:
    """The patients of an image task's cohort (``splits.json`` lists image ids; a patient's images are
    all in one cohort). A patient's label: the largest label among its images (binary: any positive)."""
    labels = dict(zip(manifest["id"], manifest["label"], strict=True))
    patient = dict(zip(manifest["id"], manifest["patient_id"], strict=True))
    ids = list(manifest["id"]) if cohort == "all" else _split_ids(work, cohort, fold)
    if not ids:
        raise DataError(f"{work}: cohort {cohort!r} (fold {fold}) has no patient (no image)")
    unknown = [i for i in ids if i not in labels]
    if unknown:
        raise DataError(f"{Path(work) / 'splits.json'}: image {unknown[0]} is in the split but not ok in "
                        "manifest.csv")
    if cohort != "all":
        split_labels = read_splits(work).get("labels") or {}
        changed = [i for i in ids if i in split_labels and int(split_labels[i]) != int(labels[i])]
        if changed:
            raise DataError(f"{Path(work) / 'splits.json'}: made when image {changed[0]} had label "
                            f"{split_labels[changed[0]]}, but manifest.csv now says "
                            f"{int(labels[changed[0]])}: "
                            f"rerun `medvlm split {work}`")
    by_patient: dict[str, int] = {}
    for i in ids:
        by_patient[patient[i]] = max(by_patient.get(patient[i], 0), int(labels[i]))
    return Cohort(cohort, list(by_patient), list(by_patient.values()))


def cohort_of(work: str | Path, *, fold: int = 0) -> dict[str, str]:
    """Map every patient of the split to its cohort name (``train``, ``val`` or ``test``) for ``fold``."""
    splits = read_splits(work)
    out = {pid: "test" for pid in splits["test"]}
    if splits["folds"]:
        out.update({pid: "train" for pid in splits["folds"][fold]["train"]})
        out.update({pid: "val" for pid in splits["folds"][fold]["val"]})
    return out


UNITS_FILE = "units.csv"


def cohort_units(work: str | Path, cohort: Cohort, *, unit: str, orientations: list[str]) -> pd.DataFrame:
    """The prediction units of a cohort, in a stable order, with their labels.

    ``patient``: one row per patient (``patient_id, label``, cohort order). ``slice``: the rows of
    ``WORK/units.csv`` (written by ``prepare`` for slice-level tasks: ``patient_id, orientation,
    slice_index, label``) of the cohort's patients in ``orientations``, ordered by patient (cohort
    order), orientation (as given), slice index.
    """
    if unit == "patient":
        return pd.DataFrame({"patient_id": cohort.patient_ids, "label": cohort.labels})
    if unit == "image":
        return image_units(work, cohort)
    path = Path(work) / UNITS_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; this {unit}-level task's units are written by `medvlm prepare`")
    units = pd.read_csv(path, dtype={"patient_id": str, "orientation": str})
    missing = {"patient_id", "orientation", "slice_index", "label"} - set(units.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}")
    order = {pid: i for i, pid in enumerate(cohort.patient_ids)}
    o_rank = {o: i for i, o in enumerate(orientations)}
    units = units[units["patient_id"].isin(order) & units["orientation"].isin(o_rank)].copy()
    units["_p"], units["_o"] = units["patient_id"].map(order), units["orientation"].map(o_rank)
    units = units.sort_values(["_p", "_o", "slice_index"], kind="stable").drop(columns=["_p", "_o"])
    if units.empty:
        raise DataError(f"{path}: no labelled {unit} of the {cohort.name} cohort in {orientations}; "
                        "nothing to ask about")
    units["slice_index"] = units["slice_index"].astype(int)
    units["label"] = units["label"].astype(int)
    return units.reset_index(drop=True)


def image_units(work: str | Path, cohort: Cohort) -> pd.DataFrame:
    """The images of an image task's cohort: ``patient_id, image_id, label`` (see :func:`cohort_units`)."""
    manifest = read_manifest(work, ok_only=True)
    if "id" not in manifest.columns:
        raise DataError(f"{Path(work) / 'manifest.csv'}: no id column; not prepared for an image task")
    order = {pid: i for i, pid in enumerate(cohort.patient_ids)}
    rows = manifest[manifest["patient_id"].isin(order)]
    units = pd.DataFrame({"patient_id": rows["patient_id"].astype(str), "image_id": rows["id"].astype(str),
                          "label": rows["label"].astype(int)})
    units["_p"] = units["patient_id"].map(order)
    units = units.sort_values(["_p", "image_id"], kind="stable").drop(columns="_p")
    if units.empty:
        raise DataError(f"{work}: no ok image of the {cohort.name} cohort; nothing to ask about")
    return units.reset_index(drop=True)
