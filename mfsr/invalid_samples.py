"""Samples that cannot be data: found, counted and replaced before a burst is fused.

Float frames sometimes carry values that are no measurement: NaN or
infinity, or an undeclared fill value such as -3.4e38 or 1e30 where a
detector had no data. Fused as they are they overflow the accumulators and
turn the output into NaN, zero or infinity. Here every such sample is
replaced by the median of the other frames at the same position where they
are valid (frames of a burst are nearly aligned), else by the nearest valid
sample of the same colour in its own frame; the caller reports the count.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["SANE_LIMIT", "fill_invalid", "invalid_mask"]

#: Largest magnitude a normalised sample (0 black, 1 white) may have; far
#: beyond any HDR headroom, far below where float32 sums of squares overflow.
SANE_LIMIT = 1e6


def invalid_mask(frames: np.ndarray) -> np.ndarray:
    """True where a sample is NaN, infinite or beyond +-:data:`SANE_LIMIT`.

    Parameters
    ----------
    frames : ndarray of float, any shape

    Returns
    -------
    ndarray of bool, same shape
    """
    with np.errstate(invalid="ignore"):
        return ~(np.abs(frames) <= SANE_LIMIT)


def fill_invalid(frames: np.ndarray, invalid: np.ndarray, cfa: str | None = None) -> np.ndarray:
    """Replace invalid samples of a burst from the other frames or valid neighbours.

    Parameters
    ----------
    frames : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
    invalid : ndarray of bool, same shape
        From :func:`invalid_mask`.
    cfa : str or None
        Bayer pattern of single-channel mosaics: a spatial fill then takes
        the nearest sample of the same CFA position (period 2).

    Returns
    -------
    ndarray of float32, same shape
        A copy with every invalid sample replaced.

    Raises
    ------
    ValueError
        If a frame (or a channel of it) holds no valid sample at all.
    """
    out = np.array(frames, dtype=np.float32, copy=True)
    n = out.shape[0]
    for k in range(n):
        bad = invalid[k]
        if not bad.any():
            continue
        others = np.delete(out, k, axis=0)
        other_bad = np.delete(invalid, k, axis=0)
        if n > 1:
            masked = np.where(other_bad[:, bad], np.nan, others[:, bad])
            with warnings.catch_warnings():
                # All-NaN columns (no other frame valid there) go to the spatial fill.
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(masked, axis=0)
            ok = np.isfinite(med)
            vals = out[k][bad]
            vals[ok] = med[ok]
            out[k][bad] = vals
            still = bad.copy()
            still[bad] = ~ok
        else:
            still = bad
        if still.any():
            out[k] = _nearest_fill(out[k], still, invalid[k], 2 if cfa is not None else 1, k)
    return out


def _nearest_fill(frame: np.ndarray, holes: np.ndarray, invalid: np.ndarray, period: int, k: int) -> np.ndarray:
    frame = frame.copy()
    planes = frame[..., None] if frame.ndim == 2 else frame
    holes3 = holes[..., None] if holes.ndim == 2 else holes
    invalid3 = invalid[..., None] if invalid.ndim == 2 else invalid
    for c in range(planes.shape[2]):
        for dy in range(period):
            for dx in range(period):
                plane = planes[dy::period, dx::period, c]
                hole = holes3[dy::period, dx::period, c]
                if not hole.any():
                    continue
                valid = ~invalid3[dy::period, dx::period, c]
                if not valid.any():
                    raise ValueError(f"frames: frame {k} holds no valid sample (all NaN, infinite or fill values)")
                idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
                plane[hole] = plane[idx[0][hole], idx[1][hole]]
    return planes[..., 0] if frame.ndim == 2 else planes
