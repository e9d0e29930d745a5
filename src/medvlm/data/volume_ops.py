"""Array arithmetic of ``medvlm prepare``: trilinear resize, bounding/crop boxes, brain mask, z-score.

Pure numpy (no torch, so prepare's worker processes start fast); every function works on canonical
arrays with axes (z, y, x) or ``(C, z, y, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1D linear resize ``n_in -> n_out`` (align_corners=False).

    The same arithmetic as torch's ``interpolate(mode="linear")`` on CPU (float32 scale, source index
    ``scale * (i + 0.5) - 0.5`` rounded once, clamped at 0), so the weights are bit-identical to torch's.
    Returns ``(i0, i1, w0, w1)``: output ``j`` is ``w0[j] * x[i0[j]] + w1[j] * x[i1[j]]``.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: Sequence[int]) -> np.ndarray:
    """A float32 work array of ``shape``, reused across calls in this process (fresh multi-MB arrays
    cost page faults that, in a loop over patients, take longer than the arithmetic on them)."""
    n = math.prod(shape)
    buf = _SCRATCH.get(name)
    if buf is None or buf.size < n:
        buf = _SCRATCH[name] = np.empty(n, np.float32)
    return buf[:n].reshape(shape)


def resize_trilinear(volume: np.ndarray, shape: Sequence[int], *, scratch: bool = False) -> np.ndarray:
    """Trilinear resize of ``(C, D, H, W)`` to ``(C, *shape)`` (align_corners=False), float32.

    Separable: one linear pass per axis (shrinking axes first, so later passes touch fewer voxels).
    Equal to ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` up to float32
    rounding (a few ulp) without importing torch, so prepare's worker processes start in well under a
    second. With ``scratch`` the result lives in a reused work array, valid until the next call.
    """
    out = np.ascontiguousarray(volume, dtype=np.float32)
    shape = tuple(int(s) for s in shape)
    flip = False
    for axis in sorted(range(3), key=lambda a: shape[a] / out.shape[a + 1]):
        n_in, n_out = out.shape[axis + 1], shape[axis]
        if n_in == n_out:
            continue
        i0, i1, w0, w1 = _linear_taps(n_in, n_out)
        new_shape = list(out.shape)
        new_shape[axis + 1] = n_out
        bshape = [1, 1, 1, 1]
        bshape[axis + 1] = n_out
        lo = _scratch("resize_a" if flip else "resize_b", new_shape)
        hi = _scratch("resize_hi", new_shape)
        np.take(out, i0, axis=axis + 1, out=lo, mode="clip")  # indices are in range; "clip" avoids a copy
        lo *= w0.reshape(bshape)
        np.take(out, i1, axis=axis + 1, out=hi, mode="clip")
        hi *= w1.reshape(bshape)
        lo += hi
        out, flip = lo, not flip
    return out if scratch else out.copy()


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(min, max)`` index per axis of the non-zero voxels of ``mask``.

    >>> m = np.zeros((4, 5, 6)); m[1, 2:4, 5] = 1
    >>> bounding_box(m)
    [(1, 1), (2, 3), (5, 5)]
    """
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        out.append((int(idx[0]), int(idx[-1])))
    return out


def crop_box(
    bbox: list[tuple[int, int]], shape: Sequence[int], margin: Sequence[int]
) -> list[tuple[int, int]]:
    """``bbox`` widened by ``margin`` voxels per axis and clipped to ``shape`` (inclusive bounds).

    >>> crop_box([(1, 1), (2, 3), (5, 5)], (4, 5, 6), (2, 2, 2))
    [(0, 3), (0, 4), (3, 5)]
    """
    return [(max(lo - m, 0), min(hi + m, n - 1)) for (lo, hi), n, m in zip(bbox, shape, margin, strict=True)]


def brain_mask(channels: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels non-zero in any of ``channels`` (all of one shape), as a bool array of that shape.

    Integer data takes one bitwise OR per channel (a voxel is non-zero in some channel exactly when the
    OR of the channels is non-zero), cheaper than a comparison per channel.

    >>> brain_mask([np.array([0, 2, 0]), np.array([0, 0, -1])]).tolist()
    [False, True, True]
    """
    dtype = np.result_type(*channels)
    if all(c.dtype.kind in "iu" for c in channels) and dtype.kind in "iu":
        acc = np.bitwise_or(channels[0], channels[1], dtype=dtype) if len(channels) > 1 \
            else np.array(channels[0], dtype=dtype)
        for c in channels[2:]:
            np.bitwise_or(acc, c, out=acc)
        return acc != 0
    brain = np.asarray(channels[0]) != 0
    for c in channels[1:]:
        brain |= c != 0
    return brain


def brain_stats(channel: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std of ``channel`` over ``brain``; ``(0, 0)`` for an empty brain.

    Integer data of up to 16 bits: exact integer sums (correctly rounded mean and variance); otherwise
    float64 as numpy's ``mean``/``std``.
    """
    values = channel[brain]
    n = int(values.size)
    if n == 0:
        return 0.0, 0.0
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        s1 = int(values.sum(dtype=np.int64))
        s2 = int(np.einsum("i,i->", values, values, dtype=np.int64))  # < n * 2**32: no overflow
        return s1 / n, math.sqrt((n * s2 - s1 * s1) / (n * n))
    values = values.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, reported by the caller
        return float(values.mean()), float(values.std())


def zscore_in_brain(channel: np.ndarray, brain: np.ndarray, *, region: tuple | None = None,
                    stats: tuple[float, float] | None = None) -> np.ndarray:
    """``(x - mean) / std`` with mean and std over all brain voxels; 0 outside the brain (float32).

    With ``region`` (a tuple of slices) only that part is returned (statistics still over the whole
    brain), which saves normalising voxels that the crop throws away. ``stats``: ``(mean, std)`` when
    already computed by :func:`brain_stats`.

    >>> z = zscore_in_brain(np.array([0., 1., 3.]), np.array([False, True, True]))
    >>> z.tolist()
    [0.0, -1.0, 1.0]
    """
    mean, std = brain_stats(channel, brain) if stats is None else stats
    if region is not None:
        channel, brain = channel[region], brain[region]
    out = (channel.astype(np.float32) - np.float32(mean)) / np.float32(std if std > 0 else 1.0)
    out[~brain] = 0.0
    return out
