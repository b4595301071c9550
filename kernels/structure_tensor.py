"""Structure tensor and the anisotropic fusion kernels derived from it.

The fusion of Wronski et al. (2019) weighs every input sample with an
anisotropic Gaussian whose covariance follows the local image structure:
long along edges, short across them, wide in flat or noisy regions. This
module computes, per pixel of a frame's grey image,

1. :func:`grey_image`: the grey image (2x2-binned for a CFA mosaic);
2. :func:`structure_tensor`: the Gaussian-smoothed outer product of the
   gradient, ``(Iy^2, Iy*Ix, Ix^2)``;
3. :func:`kernel_inverse_covariance`: the inverse covariance ``Omega^-1`` of
   the fusion kernel at that pixel, in *input-frame* pixel units, so the
   accumulation only evaluates ``exp(-0.5 d^T Omega^-1 d)``.

Arrays are (row, col) = (y, x) as everywhere in mfsr; every 2x2 symmetric
matrix is stored as its three distinct entries in the order ``(yy, yx, xx)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .separable_filter import separable_filter


@njit(cache=True)
def gaussian_weights(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of standard deviation ``sigma`` (px).

    Radius ``int(3 * sigma + 0.5)``, so ``sigma <= 0.16`` gives the single tap
    ``[1.0]`` (no smoothing).

    Returns
    -------
    taps : ndarray of float32, shape (2 * radius + 1,)
    """
    radius = int(3.0 * sigma + 0.5)
    taps = np.empty(2 * radius + 1, np.float32)
    if radius == 0:
        taps[0] = 1.0
        return taps
    total = 0.0
    for i in range(-radius, radius + 1):
        total += math.exp(-0.5 * (i / sigma) ** 2)
    for i in range(-radius, radius + 1):
        taps[i + radius] = math.exp(-0.5 * (i / sigma) ** 2) / total
    return taps


@njit(cache=True, parallel=True, fastmath=True)
def grey_image(frame: np.ndarray, bin: int) -> np.ndarray:
    """Mean over channels and over ``bin x bin`` blocks.

    With ``bin = 2`` on a CFA mosaic (as (H, W, 1)) this is the mean of the
    four samples of each 2x2 cell, i.e. ``(R + 2G + B) / 4`` of a Bayer
    pattern, centred at the cell's centre; with ``bin = 1`` on an RGB frame
    it is the mean of R, G and B.

    Parameters
    ----------
    frame : ndarray of float32, shape (H, W, C)
    bin : int
        1 or 2; trailing odd rows/columns are dropped when 2.

    Returns
    -------
    grey : ndarray of float32, shape (H // bin, W // bin)
    """
    h, w, nc = frame.shape
    hg, wg = h // bin, w // bin
    out = np.empty((hg, wg), np.float32)
    norm = np.float32(1.0 / (bin * bin * nc))
    for y in prange(hg):
        for x in range(wg):
            acc = np.float32(0.0)
            for i in range(bin):
                for j in range(bin):
                    for c in range(nc):
                        acc += frame[y * bin + i, x * bin + j, c]
            out[y, x] = acc * norm
    return out


@njit(cache=True, parallel=True, fastmath=True)
def structure_tensor(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed structure tensor of a grey image.

    Gradients are central differences ``(I[i+1] - I[i-1]) / 2`` (one-sided
    differences on the border rows and columns, as ``numpy.gradient``); the
    products are smoothed with a separable Gaussian of standard deviation
    ``sigma`` (edge-replicating borders, see :func:`gaussian_weights`).

    Parameters
    ----------
    grey : ndarray of float32, shape (H, W), H, W >= 2
        Grey image, linear intensity.
    sigma : float
        Smoothing standard deviation in pixels of ``grey``.

    Returns
    -------
    tensor : ndarray of float32, shape (3, H, W)
        Planes ``Iy*Iy, Iy*Ix, Ix*Ix``, in (intensity / px)^2.
    """
    h, w = grey.shape
    prod = np.empty((3, h, w), np.float32)
    for y in prange(h):
        if y == 0:
            y0, y1, fy = 0, 1, np.float32(1.0)
        elif y == h - 1:
            y0, y1, fy = h - 2, h - 1, np.float32(1.0)
        else:
            y0, y1, fy = y - 1, y + 1, np.float32(0.5)
        for x in range(1, w - 1):
            gy = fy * (grey[y1, x] - grey[y0, x])
            gx = np.float32(0.5) * (grey[y, x + 1] - grey[y, x - 1])
            prod[0, y, x] = gy * gy
            prod[1, y, x] = gy * gx
            prod[2, y, x] = gx * gx
        for x in (0, w - 1):
            gy = fy * (grey[y1, x] - grey[y0, x])
            gx = grey[y, 1] - grey[y, 0] if x == 0 else grey[y, w - 1] - grey[y, w - 2]
            prod[0, y, x] = gy * gy
            prod[1, y, x] = gy * gx
            prod[2, y, x] = gx * gx
    taps = gaussian_weights(sigma)
    if taps.shape[0] == 1:
        return prod
    return separable_filter(prod, taps)


@njit(cache=True, parallel=True, fastmath=True)
def kernel_inverse_covariance(
    tensor: np.ndarray,
    intensity: np.ndarray,
    noise_alpha: float,
    noise_beta: float,
    k_detail: float,
    k_denoise: float,
    k_stretch: float,
    k_shrink: float,
    d_th: float,
    d_tr: float,
    radius_min: float,
    radius_max: float,
    pixel_scale: float,
) -> np.ndarray:
    """Inverse covariance of the anisotropic fusion kernel at every pixel.

    With ``l1 >= l2`` the eigenvalues of ``tensor`` and ``e1`` the dominant
    gradient direction (``e2`` perpendicular to it, i.e. along the edge):

    - anisotropy ``A = 1 + sqrt((l1 - l2) / (l1 + l2))`` in [1, 2];
    - detail/denoise blend ``D = clamp(1 - sqrt(l1) / T + d_th, 0, 1)`` with
      the noise-adaptive threshold ``T = d_tr * sigma_g``, where
      ``sigma_g = sqrt(noise_alpha * I + noise_beta)`` is the noise standard
      deviation of the grey image at its local intensity ``I``: the
      gradient magnitude is judged in units of the noise, so the same
      parameters denoise a noisy burst and keep detail in a clean one;
    - radii ``k_e2 = (1 - D) k_detail k_stretch A + D k_detail k_denoise``
      along the edge and ``k_e1 = (1 - D) k_detail / (k_shrink A) + D
      k_detail k_denoise`` across it, each clamped to ``[radius_min,
      radius_max]`` to keep the covariance well conditioned;
    - ``Omega = k_e1^2 e1 e1^T + k_e2^2 e2 e2^T`` in grey pixels, scaled by
      ``pixel_scale^2`` to input pixels.

    Parameters
    ----------
    tensor : ndarray of float32, shape (3, H, W)
        Structure tensor planes ``(yy, yx, xx)`` from :func:`structure_tensor`.
    intensity : ndarray of float32, shape (H, W)
        Local grey intensity used to look up the noise level.
    noise_alpha, noise_beta : float
        Noise model of the grey image: variance ``alpha * I + beta``.
    k_detail, k_denoise, k_stretch, k_shrink : float
        Kernel shape parameters; ``k_detail`` in grey pixels, the others are
        dimensionless factors.
    d_th : float
        Offset of the blend (dimensionless).
    d_tr : float
        Gradient threshold in units of the grey noise standard deviation.
        ``T`` has a floor of 1e-6 intensity/px so noise-free input keeps a
        finite threshold.
    radius_min, radius_max : float
        Clamp of both kernel radii, grey pixels.
    pixel_scale : float
        Input pixels per grey pixel (2 for 2x2-binned CFA grey, else 1).

    Returns
    -------
    inv_cov : ndarray of float32, shape (H, W, 3)
        ``Omega^-1`` entries ``(yy, yx, xx)`` in 1/input-px^2, interleaved
        so the accumulation reads one pixel's entries together.
    """
    h, w = intensity.shape
    out = np.empty((h, w, 3), np.float32)
    wide = k_detail * k_denoise
    for y in prange(h):
        for x in range(w):
            a = tensor[0, y, x]
            b = tensor[1, y, x]
            c = tensor[2, y, x]
            half_tr = 0.5 * (a + c)
            disc = math.sqrt(max(0.25 * (a - c) * (a - c) + b * b, 0.0))
            l1 = max(half_tr + disc, 0.0)
            l2 = max(half_tr - disc, 0.0)
            # e1 = eigenvector of l1, computed from the better-conditioned row.
            if a >= c:
                vy = l1 - c
                vx = b
            else:
                vy = b
                vx = l1 - a
            norm = math.sqrt(vy * vy + vx * vx)
            if norm > 1e-20:
                vy /= norm
                vx /= norm
            else:
                vy = 1.0
                vx = 0.0
            if l1 + l2 > 1e-30:
                aniso = 1.0 + math.sqrt(max(l1 - l2, 0.0) / (l1 + l2))
            else:
                aniso = 1.0
            sigma_g = math.sqrt(max(noise_alpha * intensity[y, x] + noise_beta, 0.0))
            thr = max(d_tr * sigma_g, 1e-6)
            d = 1.0 - math.sqrt(l1) / thr + d_th
            d = min(max(d, 0.0), 1.0)
            k1 = (1.0 - d) * k_detail / (k_shrink * aniso) + d * wide
            k2 = (1.0 - d) * k_detail * k_stretch * aniso + d * wide
            k1 = min(max(k1, radius_min), radius_max) * pixel_scale
            k2 = min(max(k2, radius_min), radius_max) * pixel_scale
            i1 = 1.0 / (k1 * k1)
            i2 = 1.0 / (k2 * k2)
            # Omega^-1 = e1 e1^T / k1^2 + e2 e2^T / k2^2 with e2 = (-vx, vy).
            out[y, x, 0] = i1 * vy * vy + i2 * vx * vx
            out[y, x, 1] = (i1 - i2) * vy * vx
            out[y, x, 2] = i1 * vx * vx + i2 * vy * vy
    return out
