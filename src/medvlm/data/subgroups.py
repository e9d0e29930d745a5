"""Patient subgroups from the BraTS 2020 release's own files: the contributing collection and the age.

- ``source``: from ``name_mapping.csv``. A TCGA/TCIA subject ID (``TCGA-02-0006``) names the TCGA
  collections on TCIA (``TCGA``); otherwise the site token of the oldest BraTS ID (``Brats17_CBICA_AAB_1``
  -> ``CBICA``, ``Brats17_2013_10_1`` -> ``2013``, ``BraTS19_TMC_06290_1`` -> ``TMC``); empty when none.
- ``age``: ``Age`` of ``survival_info.csv`` (columns ``Brats20ID,Age,...``; the release has it for HGG
  patients only), next to ``name_mapping.csv``; empty when absent.

:func:`age_band` turns an age into the report's bands. Reading is lenient: these files only add
subgroups, so an unreadable one leaves them empty (and says so), never stops ``prepare``.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

SURVIVAL_FILE = "survival_info.csv"
#: manifest columns this module fills
SUBGROUP_COLUMNS = ("source", "age")
#: age bands of the report: (upper bound exclusive, label)
AGE_BANDS = ((40.0, "<40"), (60.0, "40-59"), (math.inf, ">=60"))
_SITE = re.compile(r"^brats\d*_([A-Za-z0-9]+)_", re.IGNORECASE)
_EMPTY = {"", "na", "n/a", "nan", "none"}


def site_of(tcga_id: str, *brats_ids: str) -> str:
    """The contributing collection of one ``name_mapping.csv`` row.

    >>> site_of("TCGA-02-0006", "Brats17_TCIA_165_1"), site_of("NA", "Brats17_CBICA_AAB_1")
    ('TCGA', 'CBICA')
    >>> site_of("NA", "", "", "BraTS19_TMC_06290_1"), site_of("NA", "", "")
    ('TMC', '')
    """
    if tcga_id.strip().lower() not in _EMPTY and tcga_id.strip().upper().startswith("TCGA"):
        return "TCGA"
    for value in brats_ids:
        match = _SITE.match(value.strip())
        if match:
            return match.group(1).upper() if not match.group(1).isdigit() else match.group(1)
    return ""


def read_sources(mapping: Path) -> dict[str, str]:
    """``{BraTS_2020_subject_ID: source}`` from ``name_mapping.csv`` (rows without one left out)."""
    out: dict[str, str] = {}
    try:
        with open(mapping, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                pid = row.get("BraTS_2020_subject_ID", "")
                site = site_of(row.get("TCGA_TCIA_subject_ID", ""), row.get("BraTS_2017_subject_ID", ""),
                               row.get("BraTS_2018_subject_ID", ""), row.get("BraTS_2019_subject_ID", ""))
                if pid and site:
                    out[pid] = site
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        warnings.warn(f"{mapping}: no patient sources ({exc})", stacklevel=2)
    return out


def read_ages(folder: Path) -> dict[str, float]:
    """``{Brats20ID: age}`` from ``folder/survival_info.csv`` ({} when the file is absent)."""
    path = folder / SURVIVAL_FILE
    out: dict[str, float] = {}
    if not path.is_file():
        return out
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                pid = row.get("Brats20ID") or row.get("BraTS20ID") or row.get("BraTS_2020_subject_ID") or ""
                try:
                    age = float(row.get("Age", ""))
                except ValueError:
                    continue
                if pid and math.isfinite(age) and 0 <= age < 130:
                    out[pid] = age
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        warnings.warn(f"{path}: no patient ages ({exc})", stacklevel=2)
    return out


def age_band(age: str | float | None) -> str:
    """The report's age band of an age ("" when unknown).

    >>> [age_band(a) for a in (39.9, 40, 59.5, 60, "", None, "71.2")]
    ['<40', '40-59', '40-59', '>=60', '', '', '>=60']
    """
    try:
        value = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(value):
        return ""
    return next(label for upper, label in AGE_BANDS if value < upper)


def fill_subgroups(rows: list[dict[str, str]], mapping: Path, training: Path) -> None:
    """Set the ``source`` and ``age`` columns of manifest rows in place (see the module docstring)."""
    sources = read_sources(mapping)
    ages = read_ages(mapping.parent) or read_ages(training)
    for row in rows:
        pid = row["patient_id"]
        row["source"] = sources.get(pid, "")
        row["age"] = f"{ages[pid]:g}" if pid in ages else ""
