"""Paired tests on image rows (a 2D task, issue 18 #7): images of one patient are not independent, so
``compare`` (library, CLI, --json, the report) says how many patients the images come from and that the
p-values are optimistic; images of distinct patients get no such note."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from medvlm.cli import invoke
from medvlm.stats import StatsWarning, compare_predictions

NOTE = ("6 images of 3 patients: McNemar and DeLong treat images as independent, so their p-values and "
        "intervals are optimistic")


def _images(pids, preds):
    n = len(pids)
    return pd.DataFrame({"patient_id": pids, "image_id": [f"img{i}" for i in range(n)], "cohort": "test",
                         "label": [0, 1] * (n // 2), "pred": pd.array(preds, dtype="Int64"),
                         "score": [0.2, 0.8, 0.4, 0.6, 0.3, 0.9][:n]})


def test_images_of_one_patient_get_the_note():
    a = _images(["P1", "P1", "P2", "P2", "P3", "P3"], [0, 1, 0, 1, 0, 1])
    b = a.assign(pred=pd.array([1, 1, 0, 0, 0, 1], dtype="Int64"))
    with pytest.warns(StatsWarning) as record:
        r = compare_predictions(a, b)
    assert (r["n"], r["n_patients"], r["unit"], r["note"]) == (6, 3, "image", NOTE)
    assert (r["mcnemar_b"], r["mcnemar_c"]) == (2, 0) and NOTE in [str(w.message) for w in record]


def test_images_of_distinct_patients_get_none():
    a = _images(["P1", "P2", "P3", "P4", "P5", "P6"], [0, 1, 0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatsWarning)
        r = compare_predictions(a, a)
    assert "note" not in r and "n_patients" not in r and r["n"] == 6


def test_compare_cli_json_and_table_name_the_patients(tmp_path, capsys):
    a = _images(["P1", "P1", "P2", "P2", "P3", "P3"], [0, 1, 0, 1, 0, 1])
    a.to_csv(tmp_path / "a.csv", index=False)
    a.assign(pred=[1, 1, 0, 0, 0, 1]).to_csv(tmp_path / "b.csv", index=False)
    assert invoke(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["n"], r["n_patients"], r["unit"], r["note"]) == (6, 3, "image", NOTE)
    assert invoke(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "6 images of 3 patients" in out and "p-values and intervals are optimistic" in out
