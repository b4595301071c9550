"""Overshoot limit: hold an image within the range of a source's neighbourhood.

A detail-restoring step (an unsharp mask, a learned residual) steepens edges;
in linear light it also pushes dark pixels beside bright edges below zero
(crushed to black once written) and rings around highlights. Holding every
channel within what its source's 3x3 neighbourhood spans keeps the steeper
edge but not its halo, and keeps non-negative data non-negative. A small
excursion, bounded relative to the local range and, below, to the local
minimum's own level, lets a restored edge be a little steeper than its
blurred neighbourhood without crushing shadows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def clamp_to_range(value, lo, hi, overshoot, rel):
    """``value`` held within ``[lo - m, hi + m]``, ``m = overshoot * (hi - lo)``; where
    ``lo >= 0`` the floor is at least ``rel * lo`` (``rel = 1 - min(overshoot, 1)``).

    The rule of :func:`limit_overshoot`, for one channel of one pixel whose
    source neighbourhood spans ``[lo, hi]``.
    """
    margin = overshoot * (hi - lo)
    floor = lo - margin
    if lo >= 0:
        floor = max(floor, rel * lo)
    return min(max(value, floor), hi + margin)


@njit(cache=True, parallel=True)
def limit_overshoot(image: np.ndarray, source: np.ndarray, overshoot: float) -> None:
    """Clamp ``image`` to its source's local 3x3 range, widened by ``overshoot`` (in place).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W, C)
        Processed image; modified in place.
    source : ndarray of float32, shape (H, W, C)
        The image before processing. Channel ``c`` of output pixel ``(y, x)``
        is held within ``[lo - m, hi + m]``, where ``lo`` and ``hi`` are the
        minimum and maximum of ``source[..., c]`` over the 3x3 neighbourhood
        of ``(y, x)`` (clipped at the borders) and ``m = overshoot * (hi -
        lo)``. Where ``lo >= 0`` the lower bound is also at least ``(1 -
        overshoot) lo`` (0 for ``overshoot >= 1``): a shadow beside a bright
        edge may darken by that fraction of its own level, not by a fraction
        of the edge's height, so it is never crushed to black.
    overshoot : float
        Allowed excursion as a fraction of the local range (0: none).
    """
    h, w, nc = image.shape
    ov = np.float32(overshoot)
    rel = np.float32(1.0 - min(overshoot, 1.0))
    for y in prange(h):
        y0, y1 = max(y - 1, 0), min(y + 2, h)
        for x in range(w):
            x0, x1 = max(x - 1, 0), min(x + 2, w)
            for c in range(nc):
                lo = source[y, x, c]
                hi = lo
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        s = source[yy, xx, c]
                        lo = min(lo, s)
                        hi = max(hi, s)
                image[y, x, c] = clamp_to_range(image[y, x, c], lo, hi, ov, rel)
