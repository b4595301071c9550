"""Separable filtering with edge-replicating borders, one row at a time.

Shared by the registration prefilter, the structure tensor, the robustness
statistics and the final sharpening: correlate along y, then along x, the same
arithmetic everywhere (``scipy.ndimage.correlate1d(..., mode="nearest")`` on
both axes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Row blocks per parallel loop: enough for load balance on any thread
# count, few enough that each block's row buffer costs nothing.
_BLOCKS = 64


@njit(cache=True, fastmath=True)
def filter_column(plane: np.ndarray, y: int, taps: np.ndarray, squared: bool, row: np.ndarray) -> None:
    """Row ``y`` of ``plane`` (or of its square) correlated with ``taps`` along y.

    Edge-replicating borders; ``row`` (W,) float32 receives the result. The
    first pass of :func:`separable_filter`, exposed so that fused filters
    share its arithmetic.
    """
    h, w = plane.shape
    r = taps.shape[0] // 2
    for x in range(w):
        row[x] = 0.0
    for t in range(-r, r + 1):
        yy = min(max(y + t, 0), h - 1)
        wt = taps[t + r]
        srow = plane[yy]
        if squared:
            for x in range(w):
                row[x] += wt * (srow[x] * srow[x])
        else:
            for x in range(w):
                row[x] += wt * srow[x]


@njit(cache=True, fastmath=True)
def filter_row(row: np.ndarray, taps: np.ndarray, orow: np.ndarray) -> None:
    """``row`` correlated with ``taps`` along x into ``orow`` (edge-replicating).

    The second pass of :func:`separable_filter`.
    """
    w = row.shape[0]
    r = taps.shape[0] // 2
    lo = min(r, w)
    hi = max(w - r, lo)
    for x in range(w):
        orow[x] = 0.0
    for t in range(-r, r + 1):
        wt = taps[t + r]
        for x in range(lo, hi):
            orow[x] += wt * row[x + t]
    for x in range(0, lo):
        acc = 0.0
        for t in range(-r, r + 1):
            acc += taps[t + r] * row[min(max(x + t, 0), w - 1)]
        orow[x] = acc
    for x in range(hi, w):
        acc = 0.0
        for t in range(-r, r + 1):
            acc += taps[t + r] * row[min(max(x + t, 0), w - 1)]
        orow[x] = acc


@njit(cache=True, parallel=True, fastmath=True)
def separable_filter(src: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Correlate every plane with ``taps`` along y, then along x.

    Borders replicate the edge pixels (``scipy.ndimage`` mode ``"nearest"``).
    Both passes run along contiguous rows so they vectorise, one row at a
    time through a row buffer that stays in the cache (no (P, H, W)
    intermediate to write, fault in and read back).

    Parameters
    ----------
    src : ndarray of float32, shape (P, H, W)
        P planes.
    taps : ndarray of float32, shape (2 * r + 1,)

    Returns
    -------
    out : ndarray of float32, shape (P, H, W)
    """
    npl, h, w = src.shape
    out = np.empty((npl, h, w), np.float32)
    jobs = npl * h
    nblk = min(jobs, _BLOCKS)
    for blk in prange(nblk):
        row = np.empty(w, np.float32)
        for job in range(blk * jobs // nblk, (blk + 1) * jobs // nblk):
            p = job // h
            y = job % h
            filter_column(src[p], y, taps, False, row)
            filter_row(row, taps, out[p, y])
    return out
