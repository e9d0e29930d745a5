"""When there are too few patients for a number to mean much: the warnings and the "too few to test" rule.

Decided here, once, for the ``metrics`` command and the report:

- **Few patients in a class.** A class with fewer than :data:`MIN_CLASS_PATIENTS` (10) patients makes its
  recall (sensitivity or specificity), the AUC and every interval built on them rest on a handful of
  patients: ``metrics`` prints a warning line and the report a warning box above the summary table.
  Patients are counted, not rows: slices of one patient are one patient.
- **McNemar.** The exact test can reach p < 0.05 from 6 discordant patients (all one way:
  p = 2 * 0.5^6 = 0.031), which says little about two models. A McNemar p-value is highlighted as a
  finding only with at least :data:`MIN_DISCORDANT` (10) discordant patients (b + c); below that the report
  says "too few to test" and shows the p-value beneath it, unhighlighted.
- **DeLong.** The test is asymptotic (a normal approximation of the AUC difference): it is highlighted only
  with at least :data:`MIN_CLASS_PATIENTS` patients of each class among the paired patients.

>>> few_patients_warnings({0: 3, 1: 9}, ["LGG", "HGG"])  # doctest: +ELLIPSIS
['only 3 LGG patients and 9 HGG patients (fewer than 10 in a class): sensitivity, ...']
>>> mcnemar_too_few(4, 1), mcnemar_too_few(8, 2)
('too few to test (b + c = 5 discordant, fewer than 10)', None)
>>> delong_too_few({0: 3, 1: 9}, ["LGG", "HGG"])
'too few to test (3 LGG patients, fewer than 10)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: a class with fewer patients than this gets a warning, and DeLong is not read as a finding
MIN_CLASS_PATIENTS = 10
#: McNemar is read as a finding only with at least this many discordant patients (b + c)
MIN_DISCORDANT = 10
TOO_FEW = "too few to test"


def class_patient_counts(labels: Any, patient_ids: Any = None) -> dict[int, int]:
    """Patients per label: ``{label: n}`` for labels 0 and 1 (and any other present). ``labels``, shape
    (n,); ``patient_ids`` (n,) or None (then every row is one patient). A patient with rows of several
    labels (slice-level tasks) counts in each of them."""
    import pandas as pd

    y = pd.Series(list(labels)).astype(int)
    counts = {0: 0, 1: 0}
    if patient_ids is None:
        counts.update({int(k): int(v) for k, v in y.value_counts().items()})
        return counts
    frame = pd.DataFrame({"label": y.to_numpy(), "patient": pd.Series(list(patient_ids)).astype(str)})
    counts.update({int(k): int(v) for k, v in frame.groupby("label")["patient"].nunique().items()})
    return counts


def class_unit_counts(df: Any, unit: str = "patient") -> dict[int, int]:
    """:func:`class_patient_counts` of a predictions frame (``label``, optional ``patient_id``) for a task
    whose rows are ``unit``: an image task counts its images (one row each: its metrics are per image),
    the others their patients (slices of one patient are one patient).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 0, 1], "patient_id": ["a", "a", "b"]})
    >>> class_unit_counts(df), class_unit_counts(df, "image")
    ({0: 1, 1: 1}, {0: 2, 1: 1})
    """
    ids = df["patient_id"] if unit != "image" and "patient_id" in df.columns else None
    return class_patient_counts(df["label"], ids)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return f"label {label}"


def few_patients_warnings(counts: Mapping[int, int], class_names: Sequence[str] | None = None,
                          unit: str = "patient") -> list[str]:
    """One warning (a list of at most one line) when a class of ``counts`` (:func:`class_patient_counts`,
    :func:`class_unit_counts`) has fewer than :data:`MIN_CLASS_PATIENTS`; [] otherwise. ``unit``: the word
    of what was counted (``patient``, or ``image`` for an image task).

    >>> few_patients_warnings({0: 1, 1: 12}, ["normal", "effusion"], unit="image")  # doctest: +ELLIPSIS
    ['only 1 normal image and 12 effusion images (fewer than 10 in a class): ... rest on very few images']
    """
    if not counts or min(counts.values()) >= MIN_CLASS_PATIENTS:
        return []
    parts = " and ".join(f"{n} {_name(k, class_names)} {unit}{'s' if n != 1 else ''}"
                         for k, n in sorted(counts.items()))
    n_classes = max(len(class_names or ()), len(counts))
    metrics = ("per-class recall, macro F1, AUC" if n_classes > 2 else "sensitivity, specificity, AUC")
    return [f"only {parts} (fewer than {MIN_CLASS_PATIENTS} in a class): {metrics} and "
            f"their intervals rest on very few {unit}s"]


def mcnemar_too_few(b: Any, c: Any) -> str | None:
    """"too few to test (...)" when ``b + c`` < :data:`MIN_DISCORDANT`, else None (the test can be read)."""
    try:
        total = int(b) + int(c)
    except (TypeError, ValueError):
        return TOO_FEW
    if total < MIN_DISCORDANT:
        return f"{TOO_FEW} (b + c = {total} discordant, fewer than {MIN_DISCORDANT})"
    return None


def delong_too_few(counts: Mapping[int, int], class_names: Sequence[str] | None = None) -> str | None:
    """"too few to test (...)" when a class of the paired patients has fewer than
    :data:`MIN_CLASS_PATIENTS`, else None."""
    small = [(k, n) for k, n in sorted(counts.items()) if n < MIN_CLASS_PATIENTS]
    if not small:
        return None
    k, n = min(small, key=lambda kn: kn[1])
    plural = "s" if n != 1 else ""
    return f"{TOO_FEW} ({n} {_name(k, class_names)} patient{plural}, fewer than {MIN_CLASS_PATIENTS})"
