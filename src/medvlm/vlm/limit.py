"""``--limit N`` above the size of what it limits: one line saying so (printed, and kept in run.json's
``notes`` by :func:`medvlm.runinfo.add_run_note`), so a limit that limits nothing is never silent.

``--limit N`` takes the first N patients of the cohort (:func:`medvlm.vlm.options.first_patients`); for an
image task a patient brings all its images, so the note gives both counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def limit_note(limit: int | None, n_patients: int, *, what: str, n_images: int | None = None) -> str | None:
    """The note for ``--limit`` ``limit`` over ``n_patients`` patients (``what``: where they come from,
    with its verb, e.g. ``the test cohort has``; ``n_images``: an image task's images of them); None when
    there is no limit or it is not above the number of patients.

    >>> limit_note(50, 13, what="the test cohort has")
    '--limit 50: the test cohort has 13 patients; all used'
    >>> limit_note(50, 1, what="the val cohort (fold 0) has", n_images=3)
    '--limit 50: the val cohort (fold 0) has 1 patient (3 images); all used'
    >>> limit_note(13, 13, what="the test cohort has") is None, limit_note(None, 4, what="x") is None
    (True, True)
    """
    if limit is None or limit <= n_patients:
        return None
    images = "" if n_images is None else f" ({n_images} image{'s' if n_images != 1 else ''})"
    patients = f"{n_patients} patient{'s' if n_patients != 1 else ''}"
    return f"--limit {limit}: {what} {patients}{images}; all used"


def cohort_limit_note(work: str | Path, config: Any) -> str | None:
    """:func:`limit_note` for an eval-vlm or consistency ``config`` (its ``limit``, ``cohort``, ``fold`` and,
    for consistency, ``patients``) on the work folder ``work``; None where it cannot tell (the run itself
    then reports a bad cohort or fold)."""
    from medvlm.data.cohorts import load_cohort, read_manifest
    from medvlm.errors import MedVLMError

    limit = getattr(config, "limit", None)
    if limit is None:
        return None
    patients = list(dict.fromkeys(getattr(config, "patients", None) or []))
    try:
        if patients:
            ids, what = patients, "--patient gives"
        else:
            cohort = str(getattr(config, "cohort", "test"))
            fold = int(getattr(config, "fold", 0) or 0)
            ids = load_cohort(work, cohort, fold=fold).patient_ids
            what = f"the {cohort} cohort" + (f" (fold {fold})" if cohort in ("train", "val") else "") + " has"
        if limit <= len(ids):
            return None
        manifest = read_manifest(work, ok_only=True)
        n_images = int(manifest["patient_id"].isin(set(ids)).sum()) if "id" in manifest.columns else None
    except (MedVLMError, OSError, KeyError, ValueError):
        return None
    return limit_note(limit, len(ids), what=what, n_images=n_images)
