"""examples/mimic_cxr_labels.py on a tiny fake MIMIC-CXR-JPG layout: the labels it writes prepare."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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


def _fake_mimic(tmp_path, pneumonia, no_finding):
    """A fake MIMIC-CXR-JPG folder: one subject per study, one PA JPEG each; ``(chexpert, paths)``."""
    n = len(pneumonia)
    chexpert = pd.DataFrame({"subject_id": [10000000 + i for i in range(n)],
                             "study_id": [50000000 + i for i in range(n)],
                             "Pneumonia": pneumonia, "No Finding": no_finding})
    chexpert.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    meta, paths, rng = [], [], np.random.default_rng(1)
    for subject, study in zip(chexpert["subject_id"], chexpert["study_id"], strict=True):
        folder = tmp_path / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(folder / f"d{study}.jpg")
        meta.append((f"d{study}", subject, study, "PA"))
        paths.append(folder / f"d{study}.jpg")
    pd.DataFrame(meta, columns=["dicom_id", "subject_id", "study_id", "ViewPosition"]).to_csv(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    return chexpert, paths


def test_uncertain_finding_is_left_out_whatever_no_finding_says(tmp_path):
    _fake_mimic(tmp_path, [-1.0, -1.0, 1.0, None], [1.0, None, None, 1.0])
    _script().main([str(tmp_path), "--finding", "Pneumonia"])
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels["patient_id"]) == [10000002, 10000003]  # the two -1 studies are out
    assert list(labels["label"]) == [1, 0]


def test_missing_jpegs_are_left_out_and_counted_so_prepare_works(tmp_path, capsys):
    _, paths = _fake_mimic(tmp_path, [1.0, None, 1.0, None], [None, 1.0, None, 1.0])
    paths[1].unlink()
    paths[2].unlink()  # a partial download
    _script().main([str(tmp_path), "--finding", "Pneumonia"])
    out = capsys.readouterr().out
    assert "note: 2 listed image(s) not on disk, left out (first: files/p10/p10000001/s50000001/" \
           "d50000001.jpg)" in out
    assert "2 images of 2 patients (1 Pneumonia, 1 no finding)" in out
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels["patient_id"]) == [10000000, 10000003]
    assert invoke(["prepare", str(tmp_path), "--out", str(tmp_path / "w"), "--task",
                   str(tmp_path / "mimic-pneumonia.yaml")]) == 0


def test_no_finding_as_the_finding_is_refused_in_one_line(tmp_path):
    _fake_mimic(tmp_path, [1.0], [None])
    with pytest.raises(SystemExit, match=r"^--finding 'No Finding': that is the negative class"):
        _script().main([str(tmp_path), "--finding", "No Finding"])
    assert not (tmp_path / "labels.csv").exists()
