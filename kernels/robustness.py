"""Robustness: per-pixel weights that reject misaligned or moving content.

Following Wronski et al. (2019, section 5): each frame's *guide* image
(half-resolution RGB for CFA mosaics, the RGB or grey frame otherwise) is
warped to the reference geometry with the flow; its 3x3 local means are
compared with the reference's. The squared colour distance ``d^2`` is
normalised by ``sigma^2`` = the reference's 3x3 local variance plus the noise
variance, and turned into a weight

    R = clamp(s * exp(-d^2 / sigma^2) - t, 0, 1)

where the gain ``s`` drops (from 12 to 2 by default) where the local flow is
irregular, so doubtful alignment is rejected sooner. A 5x5 local minimum
finally spreads every rejection to its neighbourhood, so the edges of a
moving object do not leak into the merge.

Arrays are (row, col) = (y, x); guide arrays are planar (C, Hr, Wr) float32
(so every pass runs along contiguous rows) and the flow follows
docs/conventions.md (``(dy, dx)`` in input pixels, reference -> frame).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .separable_filter import filter_column, filter_row


# Row blocks per parallel loop (load balance on any thread count).
_BLOCKS = 64


@njit(cache=True, parallel=True, fastmath=True)
def guide_image(frame: np.ndarray, cell: np.ndarray, is_cfa: bool) -> np.ndarray:
    """Planar guide image of a frame for the robustness comparison.

    Parameters
    ----------
    frame : ndarray of float32, shape (H, W, C)
        Grey (C = 1) or RGB (C = 3) frame, or a CFA mosaic as (H, W, 1).
    cell : ndarray of int64, shape (2, 2)
        CFA cell channels (:func:`mfsr.cfa.cell_channels`); ignored unless
        ``is_cfa``.
    is_cfa : bool

    Returns
    -------
    guide : ndarray of float32, shape (C, H, W), or (3, H // 2, W // 2) for CFA
        For CFA input: per 2x2 cell, R, the mean of the two G samples, and B
        (the half-resolution RGB guide of the paper).
    """
    h, w, nc = frame.shape
    # Both layouts in one parallel loop over guide rows.
    if is_cfa:
        gc, gh, gw = 3, h // 2, w // 2
    else:
        gc, gh, gw = nc, h, w
    out = np.empty((gc, gh, gw), np.float32)
    for y in prange(gh):
        if not is_cfa:
            for c in range(nc):
                for x in range(w):
                    out[c, y, x] = frame[y, x, c]
            continue
        # zeroed row by row here: np.zeros would be a parallel loop of its own
        for ch in range(3):
            for x in range(gw):
                out[ch, y, x] = 0.0
        for i in range(2):
            for j in range(2):
                ch = cell[i, j]
                f = np.float32(0.5) if ch == 1 else np.float32(1.0)
                for x in range(gw):
                    out[ch, y, x] += f * frame[2 * y + i, 2 * x + j, 0]
    return out


@njit(cache=True, parallel=True, fastmath=True)
def local_stats(guide: np.ndarray, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and 3x3 variance of every channel (edge-replicating borders).

    Parameters
    ----------
    guide : ndarray of float32, shape (C, Hr, Wr)
    taps : ndarray of float32, shape (2 * r + 1,)
        Separable weights (summing to 1) of the local mean: ``[1/3, 1/3,
        1/3]`` is the paper's 3x3 box; ``[1/4, 1/2, 1/4]`` also cancels the
        Nyquist frequency, where most of the aliasing that changes from frame
        to frame lives.

    Returns
    -------
    mean : ndarray of float32, shape (C, Hr, Wr)
    var : ndarray of float32, shape (C, Hr, Wr)
        Biased 3x3 variance (about the 3x3 box mean), never negative.
    """
    nc, h, w = guide.shape
    # The 3x3 box of the variance. Made here rather than a module constant:
    # a global array is typed read-only, and the row filters would compile
    # a second time for it.
    box3 = np.empty(3, np.float32)
    for t in range(3):
        box3[t] = np.float32(1.0 / 3.0)
    mean = np.empty((nc, h, w), np.float32)
    var = np.empty((nc, h, w), np.float32)
    jobs = nc * h
    nblk = min(jobs, _BLOCKS)
    for blk in prange(nblk):
        # All three filters row by row through cached row buffers: no
        # squared-guide or filtered planes to write and read back.
        col = np.empty(w, np.float32)
        m = np.empty(w, np.float32)
        q = np.empty(w, np.float32)
        for job in range(blk * jobs // nblk, (blk + 1) * jobs // nblk):
            c = job // h
            y = job % h
            plane = guide[c]
            filter_column(plane, y, box3, False, col)
            filter_row(col, box3, m)
            filter_column(plane, y, box3, True, col)
            filter_row(col, box3, q)
            vrow = var[c, y]
            for x in range(w):
                vrow[x] = max(q[x] - m[x] * m[x], np.float32(0.0))
            filter_column(plane, y, taps, False, col)
            filter_row(col, taps, mean[c, y])
    return mean, var


@njit(cache=True, inline="always")
def _bilinear2(field: np.ndarray, y: float, x: float) -> tuple[float, float]:
    # Bilinear lookup of a (H, W, 2) field with coordinates clamped to the grid.
    h, w = field.shape[0], field.shape[1]
    y = min(max(y, 0.0), h - 1.0)
    x = min(max(x, 0.0), w - 1.0)
    y0 = min(int(y), h - 2) if h > 1 else 0
    x0 = min(int(x), w - 2) if w > 1 else 0
    y1 = min(y0 + 1, h - 1)
    x1 = min(x0 + 1, w - 1)
    fy = y - y0
    fx = x - x0
    a0 = (1.0 - fx) * field[y0, x0, 0] + fx * field[y0, x1, 0]
    b0 = (1.0 - fx) * field[y1, x0, 0] + fx * field[y1, x1, 0]
    a1 = (1.0 - fx) * field[y0, x0, 1] + fx * field[y0, x1, 1]
    b1 = (1.0 - fx) * field[y1, x0, 1] + fx * field[y1, x1, 1]
    return (1.0 - fy) * a0 + fy * b0, (1.0 - fy) * a1 + fy * b1


@njit(cache=True, parallel=True, fastmath=True)
def warp_guide(guide: np.ndarray, flow: np.ndarray, guide_bin: int) -> np.ndarray:
    """Resample a frame's guide onto the reference's guide grid.

    Guide pixel ``(i, j)`` covers input pixels ``guide_bin * i .. guide_bin *
    (i + 1) - 1``, so its centre is at input coordinate ``r = (guide_bin *
    (i + 0.5) - 0.5, ...)``; the frame's content for it is at ``p = r +
    flow(r)``, i.e. guide coordinate ``(p + 0.5) / guide_bin - 0.5``, sampled
    bilinearly with coordinates clamped to the grid.

    Parameters
    ----------
    guide : ndarray of float32, shape (C, Hr, Wr)
        The frame's guide image.
    flow : ndarray of float32, shape (H, W, 2)
        Dense flow of the frame in input pixels.
    guide_bin : int
        Input pixels per guide pixel (2 for a CFA guide, else 1).

    Returns
    -------
    warped : ndarray of float32, shape (C, Hr, Wr)
    """
    nc, h, w = guide.shape
    out = np.empty((nc, h, w), np.float32)
    inv_b = 1.0 / guide_bin
    for y in prange(h):
        ry = guide_bin * (y + 0.5) - 0.5
        for x in range(w):
            rx = guide_bin * (x + 0.5) - 0.5
            fdy, fdx = _bilinear2(flow, ry, rx)
            gy = min(max((ry + fdy + 0.5) * inv_b - 0.5, 0.0), h - 1.0)
            gx = min(max((rx + fdx + 0.5) * inv_b - 0.5, 0.0), w - 1.0)
            y0 = min(int(gy), h - 2) if h > 1 else 0
            x0 = min(int(gx), w - 2) if w > 1 else 0
            y1 = min(y0 + 1, h - 1)
            x1 = min(x0 + 1, w - 1)
            fy = gy - y0
            fx = gx - x0
            for c in range(nc):
                top = (1.0 - fx) * guide[c, y0, x0] + fx * guide[c, y0, x1]
                bot = (1.0 - fx) * guide[c, y1, x0] + fx * guide[c, y1, x1]
                out[c, y, x] = (1.0 - fy) * top + fy * bot
    return out


@njit(cache=True, parallel=True, fastmath=True)
def _min_filter(src: np.ndarray, size: int) -> np.ndarray:
    # Separable local minimum over a size x size window, edge-replicating.
    # One parallel loop: each output row takes the vertical minimum of its
    # source rows into a row buffer, then the horizontal one (min is exact,
    # so the order of the two passes changes nothing).
    h, w = src.shape
    r = size // 2
    out = np.empty((h, w), np.float32)
    for y in prange(h):
        row = np.empty(w, np.float32)
        for x in range(w):
            row[x] = src[y, x]
        for t in range(max(y - r, 0), min(y + r + 1, h)):
            srow = src[t]
            for x in range(w):
                row[x] = min(row[x], srow[x])
        orow = out[y]
        for x in range(w):
            orow[x] = row[x]
        for t in range(1, r + 1):
            for x in range(w - t):
                orow[x] = min(orow[x], row[x + t])
            for x in range(t, w):
                orow[x] = min(orow[x], row[x - t])
    return out


@njit(cache=True, parallel=True, fastmath=True)
def robustness(
    ref_mean: np.ndarray,
    ref_var: np.ndarray,
    warped: np.ndarray,
    noise_alpha: float,
    noise_beta: float,
    channel_noise: np.ndarray,
    spread: np.ndarray,
    spread_threshold: float,
    s: float,
    s_irregular: float,
    t: float,
    min_window: int,
    taps: np.ndarray,
    sigma_gain: float,
) -> np.ndarray:
    """Robustness weight of one frame on the reference's guide grid.

    ``d^2 = sum_c (mean_ref_c - mean_k_c)^2`` and ``sigma^2 = sigma_gain *
    sum_c (min(var_ref_c, var_k_c) + channel_noise_c * (alpha * mean_ref_c +
    beta))``, with ``var_k`` the frame's own 3x3 variance after warping (the
    paper uses the reference's alone, which lets a moved object through
    wherever the reference has an edge);
    ``R = clamp(s * exp(-d^2 / sigma^2) - t, 0, 1)``, then the local minimum.

    Parameters
    ----------
    ref_mean, ref_var : ndarray of float32, shape (C, Hr, Wr)
        Local mean and 3x3 variance of the reference guide
        (:func:`local_stats` with ``taps``).
    warped : ndarray of float32, shape (C, Hr, Wr)
        The frame's guide warped to the reference (:func:`warp_guide`).
    noise_alpha, noise_beta : float
        Noise model of the input samples: variance ``alpha * I + beta``.
    channel_noise : ndarray of float32, shape (C,)
        Factor on that variance per guide channel (e.g. 0.5 for the CFA
        guide's green, the mean of two samples).
    spread : ndarray of float32, shape (Hr, Wr)
        Local irregularity of the flow (input px); where it exceeds
        ``spread_threshold`` the gain ``s_irregular`` replaces ``s``.
    spread_threshold, s, s_irregular, t : float
        Parameters of ``R = clamp(s * exp(-d^2 / sigma^2) - t, 0, 1)``.
    min_window : int
        Side of the final local-minimum window (odd; 1 disables it).
    taps : ndarray of float32, shape (2 * r + 1,)
        Weights of the local means (the ones used for ``ref_mean``).
    sigma_gain : float
        Factor on ``sigma^2`` (1 in the paper).

    Returns
    -------
    weight : ndarray of float32, shape (Hr, Wr)
        In [0, 1].
    """
    nc, h, w = ref_mean.shape
    wmean, wvar = local_stats(warped, taps)
    raw = np.empty((h, w), np.float32)
    for y in prange(h):
        for x in range(w):
            d2 = 0.0
            s2 = 0.0
            for c in range(nc):
                m = ref_mean[c, y, x]
                diff = m - wmean[c, y, x]
                d2 += diff * diff
                # The smaller of the two local variances: a moved object that
                # brings an edge into a flat region, or flattens an edge,
                # is caught either way; aliasing changes both alike.
                v = min(ref_var[c, y, x], wvar[c, y, x])
                s2 += v + max(noise_alpha * m + noise_beta, 0.0) * channel_noise[c]
            s2 *= sigma_gain
            gain = s_irregular if spread[y, x] > spread_threshold else s
            if s2 > 1e-30:
                v = gain * math.exp(-d2 / s2) - t
            else:
                v = gain - t if d2 <= 0.0 else -t
            raw[y, x] = min(max(v, 0.0), 1.0)
    if min_window <= 1:
        return raw
    return _min_filter(raw, min_window)
