"""Gaussian-like image pyramid for coarse-to-fine registration.

Three kernels: :func:`bin2x2` turns a Bayer mosaic into the half-resolution
grey image that registration works on, :func:`separable_blur` prefilters it
against noise, and :func:`downsample` blurs and decimates one pyramid level
into the next.

Geometry (pixel-area, as everywhere in mfsr): pixel ``i`` of an image
decimated by ``f`` covers fine pixels ``f*i .. f*i + f - 1``, so its centre
lies at fine coordinate ``f*i + (f - 1)/2``; a fine coordinate ``y`` maps to
``(y + 0.5)/f - 0.5`` on the coarse grid, and displacements simply scale by
``f``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .separable_filter import separable_filter


@njit(cache=True, parallel=True, fastmath=True)
def bin2x2(raw: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 cell of a mosaic.

    Parameters
    ----------
    raw : ndarray of float32, shape (H, W)
        CFA mosaic (any Bayer pattern: every 2x2 cell holds one R, two G and
        one B sample, so the mean is a grey value free of CFA modulation).

    Returns
    -------
    grey : ndarray of float32, shape (H // 2, W // 2)
        ``grey[i, j]`` is the mean of ``raw[2i:2i+2, 2j:2j+2]``; its centre is
        at raw coordinate ``(2i + 0.5, 2j + 0.5)``. An odd last row or column
        of ``raw`` is ignored.
    """
    h = raw.shape[0] // 2
    w = raw.shape[1] // 2
    out = np.empty((h, w), np.float32)
    for i in prange(h):
        for j in range(w):
            out[i, j] = 0.25 * (
                raw[2 * i, 2 * j]
                + raw[2 * i, 2 * j + 1]
                + raw[2 * i + 1, 2 * j]
                + raw[2 * i + 1, 2 * j + 1]
            )
    return out


@njit(cache=True)
def _taps(factor: int) -> np.ndarray:
    # box(factor) convolved with the binomial [1, 2, 1]: an even, symmetric
    # filter centred on the coarse pixel centre f*i + (f-1)/2 that removes
    # most of the aliasing of plain box averaging.
    k = np.zeros(factor + 2, np.float32)
    for t in range(factor):
        k[t] += 1.0
        k[t + 1] += 2.0
        k[t + 2] += 1.0
    return k / np.float32(4 * factor)


@njit(cache=True, parallel=True, fastmath=True)
def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Blur and decimate an image by an integer factor.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
    factor : int
        Decimation factor f >= 1. ``f = 1`` returns a copy.

    Returns
    -------
    coarse : ndarray of float32, shape (H // f, W // f)
        ``coarse[i, j] = sum_{a, b} k[a] k[b] image[f*i - 1 + a, f*j - 1 + b]``
        with the separable filter ``k`` = box(f) * [1, 2, 1] / (4 f) of
        length f + 2 and coordinates clamped to the image (edge replication).
        Its centre lies at fine coordinate ``(f*i + (f-1)/2, f*j + (f-1)/2)``.
    """
    h, w = image.shape
    if factor == 1:
        return image.copy()
    hc = h // factor
    wc = w // factor
    k = _taps(factor)
    nt = factor + 2
    # Per coarse row, in one parallel loop: the vertical pass straight to
    # the decimated row (whole contiguous rows, vectorises) in a row buffer,
    # then the horizontal pass on that row only.
    out = np.empty((hc, wc), np.float32)
    for i in prange(hc):
        tmp = np.empty(w, np.float32)
        for x in range(w):
            tmp[x] = 0.0
        y0 = factor * i - 1
        for t in range(nt):
            y = min(max(y0 + t, 0), h - 1)
            kt = k[t]
            for x in range(w):
                tmp[x] += kt * image[y, x]
        for j in range(wc):
            s = np.float32(0.0)
            x0 = factor * j - 1
            if x0 >= 0 and x0 + nt <= w:
                for t in range(nt):
                    s += k[t] * tmp[x0 + t]
            else:
                for t in range(nt):
                    s += k[t] * tmp[min(max(x0 + t, 0), w - 1)]
            out[i, j] = s
    return out


def separable_blur(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Filter rows and columns with one symmetric kernel (edge replication).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
    taps : ndarray of float32, shape (2R + 1,)
        Kernel, centred on its middle tap (e.g. sampled Gaussian, sum 1).

    Returns
    -------
    blurred : ndarray of float32, shape (H, W)
        ``sum_{a,b} taps[a] taps[b] image[y + a - R, x + b - R]`` with
        coordinates clamped to the image, i.e. scipy.ndimage's
        ``correlate1d(..., mode="nearest")`` along both axes.

    Notes
    -----
    The single-plane form of :func:`mfsr.kernels.separable_filter.separable_filter`,
    which the fusion kernels use too.
    """
    return separable_filter(image[np.newaxis], taps)[0]
