"""Pixel-area sampling: exact means of a piecewise-constant image over pixel footprints.

The sensor model of the whole package (see ``docs/conventions.md``): every
pixel of an image is uniform over its unit square, so the value of a coarser
pixel is the *exact* mean of the finer image over the coarser pixel's
footprint. The simulator (:mod:`mfsr.synth`), the re-degradation of outputs
(:func:`mfsr.metrics.degrade`), the baselines (:mod:`mfsr.baselines`) and the
synthetic satellite passes (:mod:`mfsr.geo.synth`) all sample through these
functions, so they share one geometry:

- pixel ``m`` covers ``[m - 0.5, m + 0.5]`` in *centre* coordinates (pixel
  centres at integers), i.e. ``[m, m + 1]`` in *edge* coordinates;
- output pixel ``i`` of a grid at scale ``s`` is centred at input coordinate
  ``(i + 0.5) / s - 0.5`` (:func:`centre_coordinates`);
- beyond the border the image is reflected half-sample symmetrically
  (``... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...``, :func:`reflect_index`, the
  ``mode="reflect"`` of :mod:`scipy.ndimage`).

All lengths are in pixels of the image being sampled unless stated
otherwise. Arrays are (row, col) = (y, x).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "apply_separable",
    "area_weights",
    "block_mean",
    "box_coordinate",
    "box_sample",
    "centre_coordinates",
    "reflect_index",
]


def reflect_index(m: np.ndarray, n: int) -> np.ndarray:
    """Fold integer indices into ``[0, n)`` by half-sample symmetric reflection.

    Parameters
    ----------
    m : ndarray of int, any shape
        Pixel indices, possibly outside ``[0, n)``.
    n : int
        Length of the axis, >= 1.

    Returns
    -------
    ndarray of int, shape of ``m``
        ``-1 -> 0``, ``-2 -> 1``, ``n -> n - 1``, ``n + 1 -> n - 2``, ...
        (period ``2 n``), the index rule of ``scipy.ndimage``'s
        ``mode="reflect"``.
    """
    m = np.mod(m, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def centre_coordinates(n_out: int, scale: float) -> np.ndarray:
    """Input coordinates of the output pixel centres of a pixel-area grid.

    Parameters
    ----------
    n_out : int
        Output pixels along the axis.
    scale : float
        Output pixels per input pixel, > 0.

    Returns
    -------
    ndarray of float64, shape (n_out,)
        ``(i + 0.5) / scale - 0.5`` for ``i = 0 .. n_out - 1``: the grid's
        edges coincide with the input's (``align_corners=False``).
    """
    return (np.arange(n_out) + 0.5) / scale - 0.5


def area_weights(n_out: int, n_in: int, scale: float, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """1-D fractional-area weights of coarse pixels over fine pixels.

    Coarse pixel ``i`` covers, in fine-pixel *edge* coordinates (fine pixel
    ``m`` covers ``[m, m + 1]``), the interval ``[(i + shift) s, (i + shift +
    1) s]``; its weight on fine pixel ``m`` is the overlap length divided by
    ``s``, so the weighted sum is the exact mean of the fine pixels over the
    interval.

    Parameters
    ----------
    n_out : int
        Coarse pixels.
    n_in : int
        Fine pixels (the axis the indices refer to).
    scale : float
        Fine pixels per coarse pixel, ``s`` > 0.
    shift : float
        Offset of the coarse grid, coarse px.

    Returns
    -------
    idx : ndarray of intp, shape (n_out, K)
        Fine pixel indices, reflected into ``[0, n_in)``
        (:func:`reflect_index`); ``K = ceil(s) + 1``.
    wts : ndarray of float32, shape (n_out, K)
        Overlap lengths divided by ``s``; each row sums to 1.
    """
    a = (np.arange(n_out, dtype=np.float64) + shift) * scale
    b = a + scale
    m0 = np.floor(a).astype(np.intp)
    k = int(math.ceil(scale)) + 1
    m = m0[:, None] + np.arange(k)[None, :]
    ov = np.minimum(b[:, None], m + 1) - np.maximum(a[:, None], m)
    wts = (np.clip(ov, 0.0, None) / scale).astype(np.float32)
    return reflect_index(m, n_in), wts


def _apply_rows(img: np.ndarray, idx: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """``W @ img`` for the banded operator ``W`` given as (index, weight) pairs."""
    out = wts[:, 0, None] * img[idx[:, 0]]
    for t in range(1, idx.shape[1]):
        out += wts[:, t, None] * img[idx[:, t]]
    return out


def apply_separable(
    img: np.ndarray, iy: np.ndarray, wy: np.ndarray, ix: np.ndarray, wx: np.ndarray
) -> np.ndarray:
    """``Wy @ img @ Wx.T`` for banded 1-D operators given as (index, weight) pairs.

    Parameters
    ----------
    img : ndarray of float32, shape (H, W)
    iy, wy : ndarray, shape (h, Ky)
        Row operator, e.g. from :func:`area_weights` ``(h, H, s)``.
    ix, wx : ndarray, shape (w, Kx)
        Column operator, e.g. from :func:`area_weights` ``(w, W, s)``.

    Returns
    -------
    ndarray of float32, shape (h, w), C-contiguous
        ``out[i, j] = sum_{a, b} wy[i, a] wx[j, b] img[iy[i, a], ix[j, b]]``.
    """
    tmp = _apply_rows(img, iy, wy)  # (h, W)
    return np.ascontiguousarray(_apply_rows(np.ascontiguousarray(tmp.T), ix, wx).T)


def box_coordinate(u: np.ndarray, side: float) -> np.ndarray:
    """Coordinate at which linear interpolation equals an exact box mean.

    For a piecewise-constant signal (pixel ``m`` uniform on ``[m - 0.5, m +
    0.5]``) the mean over ``[u - side/2, u + side/2]`` with ``side <= 1``
    touches at most two pixels ``m0, m0 + 1``; it equals linear interpolation
    at ``m0 + v`` with ``v = max(0, 1 - (1 - f) / side)``, ``f`` the position
    of the interval's left end inside pixel ``m0``. This turns exact area
    integration into one ``map_coordinates(order=1)`` call.

    Parameters
    ----------
    u : ndarray of float
        Interval centres, centre coordinates (pixel centres at integers).
    side : float
        Interval length in pixels, ``0 < side <= 1``.

    Returns
    -------
    ndarray of float64, shape of ``u``
    """
    e = u + 0.5 - 0.5 * side
    m0 = np.floor(e)
    f = e - m0
    return m0 + np.maximum(0.0, 1.0 - (1.0 - f) / side)


def box_sample(
    image: np.ndarray, cy: np.ndarray, cx: np.ndarray, side: float
) -> np.ndarray:
    """Exact mean of a piecewise-constant image over axis-aligned squares.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Each pixel uniform over its unit square; reflected (half-sample
        symmetric) beyond the border.
    cy, cx : ndarray of float, one shape
        Square centres in pixel coordinates (pixel centres at integers).
    side : float
        Side of the squares in pixels, > 0. Squares larger than one pixel
        are split into ``ceil(side)^2`` sub-squares, each integrated exactly
        (:func:`box_coordinate`).

    Returns
    -------
    mean : ndarray of float32, shape of ``cy``
    """
    n = max(1, int(math.ceil(side - 1e-12)))
    sub = side / n
    acc = None
    for a in range(n):
        oy = ((a + 0.5) / n - 0.5) * side
        for b in range(n):
            ox = ((b + 0.5) / n - 0.5) * side
            v = ndimage.map_coordinates(
                image,
                [box_coordinate(cy + oy, sub), box_coordinate(cx + ox, sub)],
                order=1,
                mode="reflect",
                output=np.float32,
            )
            acc = v if acc is None else acc + v
    return acc / np.float32(n * n)


def block_mean(img: np.ndarray, s: int) -> np.ndarray:
    """Mean over ``s x s`` blocks: pixel-area downsampling by an integer factor.

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
    s : int
        Block side, px, >= 1.

    Returns
    -------
    ndarray, shape (H // s, W // s) or (H // s, W // s, C)
        Trailing rows and columns that do not fill a block are dropped (no
        reflection); the dtype follows ``numpy.mean`` (float32 stays float32).
    """
    h, w = (img.shape[0] // s) * s, (img.shape[1] // s) * s
    return img[:h, :w].reshape(h // s, s, w // s, s, *img.shape[2:]).mean(axis=(1, 3))
