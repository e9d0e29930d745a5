"""``split`` on an image task counts patients: when the test cohort's share of the images is far from
``--test-fraction`` (a patient with many images), a warning gives both numbers (issue 18 #9)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from medvlm.data.split import IMAGE_SHARE_GAP, split_images


def _manifest(huge: int):
    """One patient with ``huge`` images (labels 0, 1, 2 in turn), then 21 patients with one image each."""
    rows = [(f"h{i}", "HUGE", i % 3) for i in range(huge)] + [(f"s{i}", f"P{i}", i % 3) for i in range(21)]
    return pd.DataFrame(rows, columns=["id", "patient_id", "label"])


def _split(manifest):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = split_images(manifest, test_fraction=0.2, folds=2, seed=0, n_classes=3)
    return split, [str(w.message) for w in caught if "counts patients" in str(w.message)]


def test_a_heavy_patient_in_test_is_named_with_both_shares():
    split, notes = _split(_manifest(40))
    assert "h0" in split["test"]  # seed 0 puts the 40-image patient in test: 44 of 61 images
    assert notes == ["--test-fraction 0.2 counts patients: the test cohort holds 5 of 22 patients (23%) "
                     "but 44 of 61 images (72%): patients have different numbers of images"]


@pytest.mark.parametrize("huge", [1, 2, 40])
def test_the_note_comes_exactly_when_the_image_share_is_far(huge):
    manifest = _manifest(huge)
    split, notes = _split(manifest)
    share = len(split["test"]) / len(manifest)
    assert bool(notes) == (abs(share - 0.2) >= IMAGE_SHARE_GAP)
    if huge == 1:
        assert notes == []  # one image per patient: the shares agree


def test_the_note_starts_at_a_gap_of_ten_points():
    """3 images of the heavy patient: 7 of 24 images in test (29%, 9 points from 20%), no note; 4 images:
    8 of 25 (32%, 12 points), the note."""
    assert _split(_manifest(3))[1] == []
    assert _split(_manifest(4))[1] == ["--test-fraction 0.2 counts patients: the test cohort holds 5 of 22 "
                                       "patients (23%) but 8 of 25 images (32%): patients have different "
                                       "numbers of images"]
