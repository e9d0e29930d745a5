"""Is a decoded patient usable? The checks ``medvlm prepare`` runs before it writes a volume.

Each function returns the problem as text (the manifest's ``reason`` of a ``skipped`` row, after the
file's name) or ``None`` when the data are fine. Arrays are canonical, any axis order.

What makes a patient unusable:

- a volume too small to be a brain MRI (:data:`MIN_AXIS_VOXELS`), files not on one grid in space
  (their affines differ: voxel size, orientation or origin), :func:`size_problem`, :func:`affine_problem`;
- a modality non-zero in only a sliver of the brain (:func:`coverage_problem`);
- a file whose voxels are not numbers (RGB or complex NIfTI, structured types): :func:`voxel_type_problem`;
- a mask that is not a label mask (non-integer, negative or many distinct values), or that covers
  most of the brain (an image given as the mask): :func:`mask_problem`;
- no brain at all (every modality zero), or one modality constant inside the brain (an all-zero or
  blank file): :func:`modality_problem`;
- a normalised volume that is not finite (intensities beyond float32): checked on the result.

Labels other than :data:`medvlm.data.brats.SEG_LABELS` are kept (counted as tumour) and *noted*.
"""

from __future__ import annotations

import numpy as np

from medvlm.data.brats import SEG_LABELS

#: a mask with more distinct values than this is an image, not a label mask
MAX_MASK_LABELS = 16
#: a volume smaller than this on any axis is no brain MRI (BraTS: 240 x 240 x 155)
MIN_AXIS_VOXELS = 16
#: a modality non-zero in less than this share of the brain is a (nearly) empty image
MIN_BRAIN_COVERAGE = 0.1
#: affines of one patient's files may differ by this much (mm) and still describe one grid
AFFINE_TOLERANCE_MM = 1e-3
#: a mask covering at least this share of the brain's voxels is an image, not a tumour mask (a real
#: glioma's whole tumour is at most about a quarter of the brain)
MAX_MASK_BRAIN_SHARE = 0.6


def voxel_type_problem(data: np.ndarray) -> str | None:
    """The problem with ``data``'s voxel type, or None for bool, integer and float data.

    >>> voxel_type_problem(np.zeros(2, np.int16)) is None
    True
    >>> voxel_type_problem(np.zeros(2, [("R", "u1"), ("G", "u1"), ("B", "u1")]))
    'voxels are not intensities (RGB or structured type); a grey-level image is expected'
    """
    kind = data.dtype.kind
    if kind in "biuf":
        return None
    if kind == "c":
        return "voxels are complex numbers; a real-valued image is expected"
    if kind == "V":
        return "voxels are not intensities (RGB or structured type); a grey-level image is expected"
    return f"voxels of type {data.dtype} are not intensities; a grey-level image is expected"


def mask_labels(seg: np.ndarray) -> tuple[list[int], str | None]:
    """The labels present in a mask, or the problem that makes it no label mask.

    >>> mask_labels(np.array([0, 1, 2, 4, 4], np.uint8))
    ([0, 1, 2, 4], None)
    >>> mask_labels(np.array([0.0, 0.5]))
    ([], 'not a label mask (non-integer values such as 0.5)')
    >>> mask_labels(np.arange(40))[1]
    'not a label mask (40 distinct values; an image given as the mask?)'
    """
    if seg.dtype.kind == "b":
        return sorted({int(v) for v in np.unique(seg)}), None
    if seg.dtype.kind == "f":
        fractional = seg != np.floor(seg)
        if fractional.any():
            return [], f"not a label mask (non-integer values such as {float(seg[fractional].flat[0]):g})"
    lo, hi = seg.min(), seg.max()
    if lo < 0:
        return [], f"not a label mask (negative values down to {float(lo):g})"
    if hi >= 2**16:
        return [], f"not a label mask (values up to {float(hi):g})"
    counts = np.bincount(seg.ravel().astype(np.uint16, copy=False), minlength=1)
    labels = [int(v) for v in np.flatnonzero(counts)]
    if len(labels) > MAX_MASK_LABELS:
        return [], f"not a label mask ({len(labels)} distinct values; an image given as the mask?)"
    return labels, None


def unknown_labels_note(labels: list[int]) -> str:
    """A manifest note for labels outside :data:`SEG_LABELS` ("" when there are none).

    >>> unknown_labels_note([0, 1, 3]), unknown_labels_note([0, 2, 4])
    ('mask holds labels outside 0/1/2/4: 3 (counted as tumour)', '')
    """
    odd = [v for v in labels if v not in SEG_LABELS]
    if not odd:
        return ""
    known = "/".join(map(str, SEG_LABELS))
    return f"mask holds labels outside {known}: {', '.join(map(str, odd))} (counted as tumour)"


def mask_share_problem(mask: np.ndarray, brain: np.ndarray) -> str | None:
    """The problem when the tumour mask covers most of the brain (an image given as the mask).

    >>> brain = np.ones(10, bool)
    >>> mask_share_problem(brain.copy(), brain)
    'the mask covers 100% of the brain; a tumour mask covers far less (an image given as the mask?)'
    >>> mask_share_problem(np.arange(10) < 2, brain) is None
    True
    """
    n_brain = int(np.count_nonzero(brain | mask))
    share = np.count_nonzero(mask) / max(n_brain, 1)
    if share < MAX_MASK_BRAIN_SHARE:
        return None
    return (f"the mask covers {share:.0%} of the brain; a tumour mask covers far less "
            "(an image given as the mask?)")


def modality_problem(mean: float, std: float) -> str | None:
    """The problem with one modality's statistics inside the brain (constant, or not finite).

    >>> modality_problem(0.0, 0.0)
    'constant inside the brain (every voxel 0): an empty or blank image'
    >>> modality_problem(3.0, 1.5) is None
    True
    """
    if not (np.isfinite(mean) and np.isfinite(std)):
        return "intensities too large to normalise (their mean or spread is not finite)"
    if std == 0:
        return f"constant inside the brain (every voxel {mean:g}): an empty or blank image"
    return None


def size_problem(shape: tuple[int, ...]) -> str | None:
    """The problem with a volume's size (any axis under :data:`MIN_AXIS_VOXELS`).

    >>> size_problem((4, 4, 4))
    'volume 4x4x4 is too small for a brain MRI (at least 16 voxels per axis)'
    >>> size_problem((240, 240, 155)) is None
    True
    """
    if min(shape[:3]) >= MIN_AXIS_VOXELS:
        return None
    return (f"volume {'x'.join(map(str, shape[:3]))} is too small for a brain MRI "
            f"(at least {MIN_AXIS_VOXELS} voxels per axis)")


def affine_problem(affine: np.ndarray, reference: np.ndarray) -> str | None:
    """How two canonical affines differ (voxel size, axes or origin), or None when they agree.

    >>> a = np.eye(4); b = np.eye(4); b[0, 3] = 50
    >>> affine_problem(a, b)
    'origin 50 mm away'
    >>> c = np.diag([2.0, 1, 1, 1]); affine_problem(c, a)
    'voxel size 2x1x1 mm vs 1x1x1 mm'
    """
    if np.allclose(affine, reference, atol=AFFINE_TOLERANCE_MM, rtol=0):
        return None
    size = np.linalg.norm(affine[:3, :3], axis=0)
    ref_size = np.linalg.norm(reference[:3, :3], axis=0)
    if not np.allclose(size, ref_size, atol=AFFINE_TOLERANCE_MM, rtol=0):
        fmt = lambda v: "x".join(f"{x:g}" for x in v)  # noqa: E731
        return f"voxel size {fmt(size)} mm vs {fmt(ref_size)} mm"
    if not np.allclose(affine[:3, :3], reference[:3, :3], atol=AFFINE_TOLERANCE_MM, rtol=0):
        return "other axes (orientation)"
    shift = float(np.linalg.norm(affine[:3, 3] - reference[:3, 3]))
    return f"origin {shift:g} mm away"


def coverage_problem(n_nonzero: int, n_brain: int) -> str | None:
    """The problem when a modality is non-zero in under :data:`MIN_BRAIN_COVERAGE` of the brain.

    >>> coverage_problem(1, 5000)
    'non-zero in only 1 voxels, 0.02% of the brain: a nearly empty image'
    >>> coverage_problem(4900, 5000) is None
    True
    """
    if n_brain == 0 or n_nonzero >= MIN_BRAIN_COVERAGE * n_brain:
        return None
    return (f"non-zero in only {n_nonzero} voxels, {n_nonzero / n_brain:.2%} of the brain: a nearly "
            "empty image")
