"""MIMIC-CXR-JPG -> ``labels.csv`` (image-csv layout) and a task YAML: one finding against No Finding.

Usage (ROOT: the MIMIC-CXR-JPG folder, holding ``files/pXX/p<subject>/s<study>/<dicom_id>.jpg``,
``mimic-cxr-2.0.0-chexpert.csv.gz`` and, for --views, ``mimic-cxr-2.0.0-metadata.csv.gz``)::

    python examples/mimic_cxr_labels.py ROOT --finding Pneumonia            # writes ROOT/labels.csv
    medvlm prepare ROOT --out work-pneumonia --task ROOT/mimic-pneumonia.yaml
    medvlm split work-pneumonia

Rule, per study (CheXpert labeler: 1 positive, 0 negative, -1 uncertain, empty not mentioned):
``FINDING == 1`` -> the finding (label 1); ``No Finding == 1`` and ``FINDING`` not 1 -> ``no-finding``
(label 0); every other study is left out: uncertain (``FINDING == -1``, whatever ``No Finding`` says),
or another finding only. Every image of a kept
study gets the study's label; ``patient_id`` = ``subject_id``, so ``medvlm split`` keeps a patient's
studies in one cohort. With ``--views PA,AP`` (default) only those view positions are kept (needs the
metadata file). Paths in labels.csv are relative to it (``files/...``). Listed JPEGs that are not on
disk (a partial download) are left out of labels.csv and counted. ``--finding "No Finding"`` is refused
(it is the negative class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz"
METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"


def study_labels(chexpert: pd.DataFrame, finding: str) -> pd.DataFrame:
    """``subject_id, study_id, label`` (1 finding, 0 no finding) of the studies the rule keeps."""
    if finding not in chexpert.columns:
        raise SystemExit(f"{CHEXPERT}: no column {finding!r}; findings: "
                         + ", ".join(c for c in chexpert.columns if c not in ("subject_id", "study_id")))
    if finding == "No Finding":
        raise SystemExit("--finding 'No Finding': that is the negative class; give a finding column "
                         "(e.g. Pneumonia)")
    positive = chexpert[finding] == 1
    negative = (chexpert["No Finding"] == 1) & (chexpert[finding] != -1) & ~positive
    kept = chexpert[positive | negative]
    return pd.DataFrame({"subject_id": kept["subject_id"].astype(int),
                         "study_id": kept["study_id"].astype(int),
                         "label": positive[positive | negative].astype(int)})


def image_rows(root: Path, studies: pd.DataFrame, views: list[str] | None) -> pd.DataFrame:
    """One row per JPEG of the kept studies: ``path,label,patient_id``."""
    if views:
        meta = pd.read_csv(root / METADATA, usecols=["dicom_id", "subject_id", "study_id", "ViewPosition"])
        meta = meta[meta["ViewPosition"].isin(views)]
        images = meta.merge(studies, on=["subject_id", "study_id"])
    else:
        found = [(p.stem, int(p.parent.parent.name[1:]), int(p.parent.name[1:]))
                 for p in sorted((root / "files").glob("p*/p*/s*/*.jpg"))]
        images = pd.DataFrame(found, columns=["dicom_id", "subject_id", "study_id"]).merge(
            studies, on=["subject_id", "study_id"])
    path = [f"files/p{str(s)[:2]}/p{s}/s{st}/{d}.jpg"
            for d, s, st in zip(images["dicom_id"], images["subject_id"], images["study_id"], strict=True)]
    return pd.DataFrame({"path": path, "label": images["label"], "patient_id": images["subject_id"]})


def task_yaml(finding: str, name: str) -> str:
    classes = f"[no-finding, {finding.lower().replace(' ', '-')}]"
    return (f"name: {name}\n"
            f"description: \"MIMIC-CXR-JPG: {finding} against No Finding (CheXpert labels), one "
            f"prediction per image\"\n"
            f"classes: {classes}\n"
            f"positive: {finding.lower().replace(' ', '-')}\n"
            f"source: {{kind: image-csv, csv: labels.csv}}\n"
            f"prompt: \"This is a chest radiograph. Does it show {finding.lower()}? Answer with one number: "
            f"no (0) or yes (1). Reply in the form 'Choice: <0 or 1>'.\"\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="The MIMIC-CXR-JPG folder.")
    parser.add_argument("--finding", default="Pneumonia", help="A CheXpert column (default Pneumonia).")
    parser.add_argument("--views", default="PA,AP", help="View positions to keep ('' = all images, no "
                        "metadata file needed).")
    args = parser.parse_args(argv)
    studies = study_labels(pd.read_csv(args.root / CHEXPERT), args.finding)
    rows = image_rows(args.root, studies, [v for v in args.views.split(",") if v] or None)
    on_disk = [(args.root / p).is_file() for p in rows["path"]]
    missing = [p for p, ok in zip(rows["path"], on_disk, strict=True) if not ok]
    if missing:
        rows = rows[on_disk]
        print(f"note: {len(missing)} listed image(s) not on disk, left out (first: {missing[0]})")
    rows.to_csv(args.root / "labels.csv", index=False)
    name = f"mimic-{args.finding.lower().replace(' ', '-')}"
    (args.root / f"{name}.yaml").write_text(task_yaml(args.finding, name), encoding="utf-8")
    counts = rows["label"].value_counts().to_dict()
    print(f"{len(rows)} images of {rows['patient_id'].nunique()} patients ({counts.get(1, 0)} "
          f"{args.finding}, {counts.get(0, 0)} no finding) -> {args.root / 'labels.csv'}; task "
          f"{args.root / (name + '.yaml')}")


if __name__ == "__main__":
    main()
