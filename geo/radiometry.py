"""Radiometry of passes: working range, per-pass linear adjustment, noise.

The fusion kernels expect values nominally in [0, 1] (their noise-model
thresholds are absolute), so every band is mapped linearly to the working
range ``(x - lo) / (hi - lo)`` with ``lo, hi`` robust percentiles of the
reference pass's valid pixels, and mapped back at the output. Dates differ in
illumination and atmosphere: each pass gets a per-band linear adjustment
``gain * x + offset`` to the reference, fitted on the pixels both see clear
(after registration). The noise of one normalised sample is estimated from
the reference's clear pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve, gaussian_gradient_magnitude, minimum_filter

__all__ = ["working_range", "fit_linear", "masked_noise"]

_HIGH_PASS = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64) / 6.0


def working_range(samples: list[np.ndarray], valids: list[np.ndarray], q: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(lo, hi)``: the ``q`` and ``100 - q`` percentiles of valid pixels.

    Parameters
    ----------
    samples : list of ndarray, shape (h, w, C)
        Windows of the reference pass.
    valids : list of ndarray of bool, shape (h, w)
    q : float
        Percentile, in percent.

    Returns
    -------
    lo, hi : ndarray of float64, shape (C,)
        ``hi > lo`` (a constant band gets ``hi = lo + 1``).

    Raises
    ------
    ValueError
        If no pixel is valid.
    """
    vals = [s[v] for s, v in zip(samples, valids) if v.any()]
    if not vals:
        raise ValueError("reference: the reference pass has no valid pixel (all nodata or masked)")
    allv = np.concatenate(vals).astype(np.float64)
    lo = np.percentile(allv, q, axis=0)
    hi = np.percentile(allv, 100 - q, axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return lo, hi


def fit_linear(ref: np.ndarray, mov: np.ndarray, weight: np.ndarray, iterations: int = 3) -> tuple[float, float]:
    """Robust least-squares ``ref ~ gain * mov + offset`` over weighted pixels.

    Starting from unit gain and the median difference, pixels whose
    residual exceeds 3 robust standard deviations (changes, unmasked clouds)
    are dropped and the line refitted, a few times.

    Parameters
    ----------
    ref, mov : ndarray of float, same shape
    weight : ndarray of float or bool, same shape
        0 excludes a pixel.
    iterations : int

    Returns
    -------
    gain, offset : float
        (1, 0) when fewer than 16 pixels or no spread in ``mov``; gain 1
        and the difference of the means when the fit's gain is not positive.
    """
    w = np.asarray(weight, np.float64).ravel()
    x = np.asarray(mov, np.float64).ravel()
    y = np.asarray(ref, np.float64).ravel()
    keep = w > 0
    gain, offset = 1.0, 0.0
    if keep.sum() >= 16:
        # Robust start: unit gain and the median difference, so outliers
        # (unmasked clouds) are trimmed before the first least-squares fit.
        offset = float(np.median(y[keep] - x[keep]))
        r = y - (x + offset)
        sd = 1.4826 * np.median(np.abs(r[keep])) + 1e-12
        keep = keep & (np.abs(r) <= 3 * sd)
    for _ in range(iterations):
        if keep.sum() < 16:
            break
        ww, xx, yy = w[keep], x[keep], y[keep]
        sw = ww.sum()
        mx, my = (ww * xx).sum() / sw, (ww * yy).sum() / sw
        vx = (ww * (xx - mx) ** 2).sum() / sw
        if vx <= 1e-12:
            break
        gain = (ww * (xx - mx) * (yy - my)).sum() / sw / vx
        if gain <= 0:
            # Anticorrelated dates (another season): a negative gain would
            # invert the pass; match the means only.
            gain = 1.0
        offset = my - gain * mx
        r = y - (gain * x + offset)
        sd = 1.4826 * np.median(np.abs(r[keep])) + 1e-12
        keep = (w > 0) & (np.abs(r) <= 3 * sd)
    return float(gain), float(offset)


def masked_noise(grey: list[np.ndarray], valids: list[np.ndarray], keep_fraction: float = 0.5) -> tuple[float, float]:
    """Noise model ``(alpha, beta)`` of normalised samples from clear pixels.

    Immerkaer's second-difference high-pass over pixels whose 3x3
    neighbourhood is valid, on the flatter half of them (smoothed gradient
    magnitude), as :func:`mfsr.noise.estimate_noise` does without masks;
    satellite noise is taken as signal-independent (``alpha = 0``).

    Parameters
    ----------
    grey : list of ndarray of float32, shape (h, w)
        Normalised grey windows of the reference.
    valids : list of ndarray of bool, shape (h, w)

    Returns
    -------
    alpha, beta : float
        ``(0, sigma^2)``; ``(0, 1e-6)`` when too few pixels are clear.
    """
    res = []
    for g, v in zip(grey, valids):
        if g.shape[0] < 5 or g.shape[1] < 5:
            continue
        g64 = np.where(v, g, 0.0).astype(np.float64)
        hp = convolve(g64, _HIGH_PASS, mode="reflect")
        ok = minimum_filter(v, size=3, mode="constant", cval=False)
        act = gaussian_gradient_magnitude(g64, 2.0, mode="reflect")
        ok &= minimum_filter(v, size=13, mode="constant", cval=False)
        if ok.sum() < 64:
            continue
        a = act[ok]
        sel = a <= np.quantile(a, keep_fraction)
        res.append(hp[ok][sel])
    if not res:
        return 0.0, 1e-6
    r = np.concatenate(res)
    sd = 1.4826 * np.median(np.abs(r))
    return 0.0, float(max(sd * sd, 1e-10))
