"""The report's honesty about few patients (rules and thresholds: :mod:`medvlm.small_samples`).

:func:`few_patient_notes` gives the warning above the summary table when a class of a run's test cohort
has fewer than :data:`~medvlm.small_samples.MIN_CLASS_PATIENTS` patients; :func:`paired_verdicts` says,
for one paired comparison, whether its McNemar and DeLong p-values can be read as findings (and so be
highlighted) or are "too few to test". Pure functions of prediction frames and test results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medvlm.small_samples import (
    TOO_FEW,
    class_patient_counts,
    class_unit_counts,
    delong_too_few,
    few_patients_warnings,
    mcnemar_too_few,
)

SIGNIFICANT = 0.05


def _answered_units(df: Any) -> Any:
    from medvlm.predictions import unit_keys

    keys = unit_keys(df)
    rows = df[df["pred"].notna()]
    return rows.set_index(keys) if keys else rows


def few_patient_notes(cohorts: Sequence[tuple[Any, ...]]) -> list[str]:
    """One line per distinct warning over the test cohorts ``(run name, its test-cohort predictions,
    its task's class names)``, naming the runs it is about: "test cohort of cnn, vlm: only 1 <class 0>
    patient and 2 <class 1> patients (fewer than 10 in a class): ..." (the classes named as the task
    names them)."""
    by_text: dict[str, list[str]] = {}
    for name, df, classes, *unit in cohorts:  # an optional 4th item: the task's unit (images are counted)
        if df.empty or "label" not in df.columns:
            continue
        word = "image" if unit and unit[0] == "image" else "patient"
        for text in few_patients_warnings(class_unit_counts(df, word), classes, unit=word):
            by_text.setdefault(text, []).append(name)
    return [f"test cohort of {', '.join(names)}: {text}" for text, names in by_text.items()]


def paired_class_counts(a: Any, b: Any) -> dict[int, int]:
    """Patients per label among the units both test-cohort frames answered (the paired units)."""
    ua, ub = _answered_units(a), _answered_units(b)
    both = ua[ua.index.isin(ub.index)]
    ids = both["patient_id"] if "patient_id" in both.columns else both.index.get_level_values(0)
    return class_patient_counts(both["label"], ids)


def paired_verdicts(res: Mapping[str, Any], counts: Mapping[int, int], class_names: Sequence[str]
                    ) -> dict[str, Any]:
    """``{"mcnemar_sig", "delong_sig"}`` (p below 0.05 and enough data: highlight), ``{"mcnemar_few",
    "delong_few"}`` ("too few to test (...)" or "") and ``{"mcnemar_why", "delong_why"}`` (the reason
    alone, for the cell's small line) for one result of :func:`medvlm.stats.compare_predictions`."""
    mc_few = mcnemar_too_few(res.get("mcnemar_b"), res.get("mcnemar_c")) or ""
    dl_few = (delong_too_few(counts, class_names) or "") if res.get("delong_p") is not None else ""

    def sig(p: Any, few: str) -> bool:
        return isinstance(p, int | float) and p < SIGNIFICANT and not few

    def why(few: str) -> str:  # "too few to test (b + c = 4 ...)" -> "b + c = 4 ..." (the cell's small line)
        return few[len(TOO_FEW):].strip().removeprefix("(").removesuffix(")") if few else ""

    return {"mcnemar_few": mc_few, "delong_few": dl_few, "mcnemar_sig": sig(res.get("mcnemar_p"), mc_few),
            "delong_sig": sig(res.get("delong_p"), dl_few), "mcnemar_why": why(mc_few),
            "delong_why": why(dl_few), "too_few": TOO_FEW}
