"""examples/mimic_cxr_labels.py on a tiny fake MIMIC-CXR-JPG layout: the labels it writes prepare."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medvlm.cli import invoke

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mimic_cxr_labels.py"


def _script():
    spec = importlib.util.spec_from_file_location("mimic_cxr_labels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_finding_against_no_finding(tmp_path, capsys):
    chexpert = pd.DataFrame({
        "subject_id": [10000032, 10000032, 11000011, 12000022, 12000022],
        "study_id": [50000001, 50000002, 50000003, 50000004, 50000005],
        "Pneumonia": [1.0, None, -1.0, 0.0, 1.0],
        "No Finding": [None, 1.0, None, 1.0, 1.0],
    })  # kept: 1 (pneumonia), 2 (no finding), 4 (no finding), 5 (pneumonia wins); 3 uncertain: left out
    chexpert.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    meta, rng = [], np.random.default_rng(0)
    for subject, study in zip(chexpert["subject_id"], chexpert["study_id"], strict=True):
        for k, view in enumerate(("PA", "LATERAL")):
            dicom = f"d{study}-{k}"
            meta.append((dicom, subject, study, view))
            folder = tmp_path / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{dicom}.jpg")
    pd.DataFrame(meta, columns=["dicom_id", "subject_id", "study_id", "ViewPosition"]).to_csv(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)

    _script().main([str(tmp_path), "--finding", "Pneumonia"])
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels["path"]) == [
        "files/p10/p10000032/s50000001/d50000001-0.jpg", "files/p10/p10000032/s50000002/d50000002-0.jpg",
        "files/p12/p12000022/s50000004/d50000004-0.jpg", "files/p12/p12000022/s50000005/d50000005-0.jpg"]
    assert list(labels["label"]) == [1, 0, 0, 1]
    assert list(labels["patient_id"]) == [10000032, 10000032, 12000022, 12000022]
    assert invoke(["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task",
                   str(tmp_path / "mimic-pneumonia.yaml")]) == 0
    manifest = pd.read_csv(tmp_path / "w" / "manifest.csv", dtype=str)
    assert list(manifest["status"]) == ["ok"] * 4 and list(manifest["label"]) == ["1", "0", "0", "1"]

    _script().main([str(tmp_path), "--finding", "Pneumonia", "--views", ""])  # every image, from the folders
    assert len(pd.read_csv(tmp_path / "labels.csv")) == 8
