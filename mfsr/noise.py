"""Noise model of a frame: Poisson-Gaussian variance ``alpha * I + beta``.

Camera sensors add shot noise, whose variance grows linearly with the signal,
to read noise of constant variance. :func:`estimate_noise` fits both terms
from a single frame; the fusion uses them to tell noise from structure (the
kernel shapes) and from misalignment (the robustness).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve, gaussian_gradient_magnitude, uniform_filter
from scipy.optimize import nnls

from .cfa import check_pattern

# Second-difference high-pass (Immerkaer 1996): cancels constants, ramps and
# quadratic shading; on white noise of variance v its output has variance 36 v.
_HIGH_PASS = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
_MAD_TO_STD = 1.4826


def _planes(frame: np.ndarray, cfa: str | None) -> list[np.ndarray]:
    # Planes whose neighbouring samples have one noise law and similar signal.
    if cfa is not None:
        h, w = frame.shape
        return [frame[i : h - (h - i) % 2 : 2, j : w - (w - j) % 2 : 2] for i in (0, 1) for j in (0, 1)]
    if frame.ndim == 3:
        return [frame[..., c] for c in range(frame.shape[2])]
    return [frame]


def _tiles(frame: np.ndarray, max_pixels: int, tile: int = 256) -> list[np.ndarray]:
    # A grid of tiles spread over a large frame (even offsets keep the CFA
    # phase), so the estimate costs the same for any frame size.
    h, w = frame.shape[:2]
    if h * w <= max_pixels:
        return [frame]
    n = max(1, int(np.sqrt(max_pixels / (tile * tile))))
    ys = (np.linspace(0, max(h - tile, 0), n).astype(int) // 2) * 2
    xs = (np.linspace(0, max(w - tile, 0), n).astype(int) // 2) * 2
    return [frame[y : y + tile, x : x + tile] for y in ys for x in xs]


def estimate_noise(
    frame: np.ndarray,
    cfa: str | None = None,
    *,
    bins: int = 16,
    keep_fraction: float = 0.5,
    max_pixels: int = 1 << 20,
) -> tuple[float, float]:
    """Estimate the Poisson-Gaussian noise model of one frame.

    Each colour plane (each position of the CFA cell for a mosaic, each
    channel of an RGB frame) is filtered with a second-difference high-pass
    that removes smooth signal; the residual's robust standard deviation
    (1.4826 x median absolute value) is measured in ``bins`` bins of local
    intensity (3x3 mean) holding equal numbers of samples, and the line
    ``var = alpha * I + beta`` is fitted to the bins by non-negative least
    squares. Texture inflates the residual, so on strongly textured, nearly
    noise-free images the estimate errs high.

    Parameters
    ----------
    frame : ndarray, shape (H, W) or (H, W, 3)
        Linear values, nominally [0, 1]; a mosaic when ``cfa`` is given.
    cfa : str or None
        Bayer pattern of a mosaic (one of ``mfsr.cfa.PATTERNS``).
    bins : int
        Number of intensity bins of the fit.
    max_pixels : int
        Frames larger than this are sampled by a grid of 256 x 256 tiles
        holding about this many pixels.
    keep_fraction : float
        Fraction of each plane used: the samples of lowest smoothed gradient
        magnitude (Gaussian derivative, sigma 2 px, hardly touched by the
        noise itself), which excludes edges and strong texture.

    Returns
    -------
    alpha : float
        Shot-noise gain (variance per unit intensity), >= 0.
    beta : float
        Read-noise variance (intensity^2), >= 0.

    References
    ----------
    J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996.
    """
    frame = np.asarray(frame)
    if cfa is not None:
        check_pattern(cfa)
        if frame.ndim != 2:
            raise ValueError(f"frame: a CFA mosaic must be (H, W), got shape {frame.shape}")
    elif frame.ndim not in (2, 3):
        raise ValueError(f"frame: expected shape (H, W) or (H, W, 3), got {frame.shape}")
    means, resid = [], []
    planes = [p for t in _tiles(frame, max_pixels) for p in _planes(t, cfa)]
    for p in planes:
        if p.shape[0] < 3 or p.shape[1] < 3:
            continue
        p = p.astype(np.float64)
        hp = convolve(p, _HIGH_PASS, mode="reflect")[1:-1, 1:-1] / 6.0
        mu = uniform_filter(p, 3, mode="reflect")[1:-1, 1:-1]
        # Keep the flatter half of the plane: edges and texture leak through
        # the high-pass and would be counted as noise.
        act = gaussian_gradient_magnitude(p, 2.0, mode="reflect")[1:-1, 1:-1]
        keep = act <= np.quantile(act, keep_fraction)
        means.append(mu[keep])
        resid.append(hp[keep])
    if not means:
        return 0.0, 0.0
    mu = np.concatenate(means)
    res = np.concatenate(resid)
    order = np.argsort(mu, kind="stable")
    groups = np.array_split(order, max(1, min(bins, mu.size // 64)))
    xs, vs, ws = [], [], []
    for g in groups:
        if g.size < 16:
            continue
        sd = _MAD_TO_STD * np.median(np.abs(res[g]))
        xs.append(np.median(mu[g]))
        vs.append(sd * sd)
        ws.append(np.sqrt(g.size))
    if not xs:
        return 0.0, 0.0
    x = np.asarray(xs)
    v = np.asarray(vs)
    # Relative weighting: the variance of a variance estimate grows with it.
    wt = np.asarray(ws) / np.maximum(v, 1e-3 * v.max() + 1e-20)
    a = np.stack([x, np.ones_like(x)], axis=1) * wt[:, None]
    coef, _ = nnls(a, v * wt)
    return float(coef[0]), float(coef[1])
