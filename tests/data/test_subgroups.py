"""Patient subgroups from the release's files: contributing collection and age (issue 16)."""

from __future__ import annotations

import csv

import pytest

from medvlm.data.brats import MAPPING_HEADER
from medvlm.data.subgroups import age_band, fill_subgroups, read_ages, read_sources, site_of


@pytest.mark.parametrize("row, site", [
    (("HGG", "Brats17_CBICA_AAB_1", "Brats18_CBICA_AAB_1", "NA", "BraTS19_CBICA_AAB_1"), "CBICA"),
    (("HGG", "Brats17_2013_10_1", "Brats18_2013_10_1", "NA", "BraTS19_2013_10_1"), "2013"),
    (("LGG", "Brats17_TCIA_101_1", "Brats18_TCIA_101_1", "TCGA-HT-7692", "BraTS19_TCIA10_103_1"), "TCGA"),
    (("HGG", "NA", "NA", "NA", "BraTS19_TMC_06290_1"), "TMC"),
    (("HGG", "", "", "", ""), ""),
])
def test_site_of_real_name_mapping_rows(row, site):
    _grade, b17, b18, tcga, b19 = row
    assert site_of(tcga, b17, b18, b19) == site


def test_sources_ages_and_bands(tmp_path):
    mapping = tmp_path / "name_mapping.csv"
    with open(mapping, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(MAPPING_HEADER)
        w.writerow(["HGG", "Brats17_CBICA_AAB_1", "", "NA", "", "P1"])
        w.writerow(["LGG", "", "", "TCGA-CS-4941", "", "P2"])
        w.writerow(["HGG", "", "", "NA", "", "P3"])
    (tmp_path / "survival_info.csv").write_text("Brats20ID,Age,Survival_days,Extent_of_Resection\n"
                                                "P1,39.99,200,GTR\nP3,not known,,\nP9,150,1,GTR\n")
    assert read_sources(mapping) == {"P1": "CBICA", "P2": "TCGA"}
    assert read_ages(tmp_path) == {"P1": 39.99}  # unparsable and impossible ages left out
    rows = [{"patient_id": p} for p in ("P1", "P2", "P3")]
    fill_subgroups(rows, mapping, tmp_path)
    assert [(r["source"], r["age"]) for r in rows] == [("CBICA", "39.99"), ("TCGA", ""), ("", "")]
    assert [age_band(r["age"]) for r in rows] == ["<40", "", ""]


def test_prepare_writes_the_subgroup_columns(prepared_work, synth_dir):
    with open(prepared_work / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    sources = {r["patient_id"]: r["source"] for r in rows}
    assert sources["BraTS20_Training_001"] == "CBICA" and sources["BraTS20_Training_002"] == "TCGA"
    assert sources["BraTS20_Training_003"] == "2013"
    ages = {r["patient_id"]: r["age"] for r in rows if r["grade"] == "HGG"}
    assert all(ages.values()) and all(r["age"] == "" for r in rows if r["grade"] == "LGG")
    assert all(25 <= float(a) <= 80 for a in ages.values())
