"""Noise model of a frame: Poisson-Gaussian variance ``alpha * I + beta``.

Camera sensors add shot noise, whose variance grows linearly with the signal,
to read noise of constant variance. :func:`estimate_noise` fits both terms
from a single frame; the fusion uses them to tell noise from structure (the
kernel shapes) and from misalignment (the robustness).

Real frames hold much that is not noise: black borders (vignetted or masked
sensor areas), clipped highlights, flat synthetic regions, texture. The
estimator measures the noise only where it can be seen (samples away from
clamped values, in neighbourhoods that are not perfectly constant), and per
intensity bin trusts the flattest windows, where texture adds least.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import (
    convolve,
    gaussian_gradient_magnitude,
    maximum_filter,
    minimum_filter,
    uniform_filter,
)
from scipy.optimize import nnls

from .cfa import check_pattern

# Second-difference high-pass (Immerkaer 1996): cancels constants, ramps and
# quadratic shading; on white noise of variance v its output has variance 36 v.
_HIGH_PASS = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
_MAD_TO_STD = 1.4826
# Side of the windows (in plane samples) whose mean squared residual is one
# local variance estimate; small enough to fit between edges, large enough
# (about 13 independent residuals) for its lower quantile to be stable.
_WINDOW = 7
# Lower quantile of the window variances taken per intensity bin: texture only
# ever adds variance, so the flattest windows of a bin see the noise alone.
_QUANTILE = 0.25
# A value is a clamp (black clip, saturation) when at least this fraction of
# the samples sit exactly on the frame's minimum or maximum.
_CLAMP_FRACTION = 1e-3
# A bin whose variance is more than _ABOVE times the fitted line's is taken
# for texture and the line refitted without it, unless the bins left would
# span less than _MIN_SPAN of the bins' intensity range.
_ABOVE = 1.4
_MIN_SPAN = 0.5
# No RAW format is finer than 16 bits: the variance of 16-bit quantisation is
# the least noise any real frame carries.
_MIN_VARIANCE = (1.0 / 65535.0) ** 2 / 12.0


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


def _clamp_levels(values: np.ndarray) -> tuple[float, float]:
    # Black clipping and saturation pile samples up on one value; a noisy,
    # unclipped frame reaches its extremes only a handful of times.
    lo, hi = float(values.min()), float(values.max())
    need = max(16, _CLAMP_FRACTION * values.size)
    low = lo if np.count_nonzero(values <= lo) >= need else -np.inf
    high = hi if np.count_nonzero(values >= hi) >= need else np.inf
    return low, high


def _quantisation_step(plane: np.ndarray) -> float:
    # Integer raw data normalised to [0, 1] takes values on a grid; its step
    # (the smallest gap between distinct values) sets a floor to the noise.
    # Float data without such a grid gives a negligible gap.
    u = np.unique(plane[np.isfinite(plane)])
    if u.size < 2:
        return 0.0
    return float(np.diff(u).min())


def _window_variance(hp: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Mean squared residual over the valid samples of each window, and where
    # enough of the window is valid for the mean to count.
    v = valid.astype(np.float64)
    frac = uniform_filter(v, _WINDOW, mode="constant")
    num = uniform_filter(np.where(valid, hp * hp, 0.0), _WINDOW, mode="constant")
    ok = valid & (frac >= 0.75)
    return num / np.maximum(frac, 1e-12), ok


@lru_cache(maxsize=None)
def _quantile_bias() -> float:
    # The lower quantile of window variances of unit white noise: dividing by
    # it turns the per-bin quantile into an unbiased variance. Measured once,
    # with the same high-pass and windows, on a fixed-seed noise field.
    rng = np.random.default_rng(12345)
    noise = rng.standard_normal((512, 512))
    hp = convolve(noise, _HIGH_PASS, mode="reflect")[1:-1, 1:-1] / 6.0
    s2, ok = _window_variance(hp, np.ones(hp.shape, bool))
    return float(np.quantile(s2[ok], _QUANTILE))


def _plane_samples(p: np.ndarray, low: float, high: float, keep_fraction: float):
    """Local mean and window variance of the usable samples of one colour plane."""
    p = p.astype(np.float64)
    finite = np.isfinite(p)
    if not finite.all():
        p = np.where(finite, p, np.nanmedian(p) if finite.any() else 0.0)
    hp = convolve(p, _HIGH_PASS, mode="reflect")[1:-1, 1:-1] / 6.0
    mu = uniform_filter(p, 3, mode="reflect")[1:-1, 1:-1]
    # A residual means something only where its 3x3 support is finite, not
    # constant (black borders, clipped or synthetic flat areas have zero
    # variance but are no evidence of a noiseless sensor), and, with a margin
    # for the truncated noise nearby, away from clamped values.
    mn3 = minimum_filter(p, 3, mode="nearest")[1:-1, 1:-1]
    mx3 = maximum_filter(p, 3, mode="nearest")[1:-1, 1:-1]
    mn5 = minimum_filter(p, 5, mode="nearest")[1:-1, 1:-1]
    mx5 = maximum_filter(p, 5, mode="nearest")[1:-1, 1:-1]
    fin = minimum_filter(finite, 3, mode="nearest")[1:-1, 1:-1]
    usable = fin & (mx3 > mn3) & (mn5 > low) & (mx5 < high)
    s2, ok = _window_variance(hp, usable)
    if np.count_nonzero(ok) < 16:
        return None
    # Keep the windows centred on the flatter samples: edges leak through the
    # high-pass and would be counted as noise.
    act = gaussian_gradient_magnitude(p, 2.0, mode="reflect")[1:-1, 1:-1]
    ok &= act <= np.quantile(act[ok], keep_fraction)
    return mu[ok], s2[ok], hp[ok]


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
    that removes smooth signal. Samples are used only where they can show
    noise: not near a clamped value (a black clip or saturation level, found
    as the frame's minimum or maximum when at least 0.1 % of the samples sit
    on it), not in a perfectly constant 3x3 neighbourhood (black borders,
    clipped or synthetic flat areas), and among the ``keep_fraction``
    flattest by smoothed gradient. The mean squared residual over 7x7-sample
    windows is one local variance estimate; in ``bins`` bins of local
    intensity (3x3 mean) holding equal numbers of samples, the bin's noise
    variance is the smaller of the lower quartile of these estimates
    (divided by its value on pure white noise) and the squared robust
    standard deviation of the residuals (1.4826 x median absolute value), so
    texture (which only adds variance) hardly counts. The line ``var = alpha * I + beta`` is fitted to the bins
    by non-negative least squares with relative weights, dropping bins that
    sit far off the line or within three noise deviations of a clamp, and
    refitting. ``beta`` is at least the variance of the data's own
    quantisation (the smallest gap between its values, ``step**2 / 12``) and
    at least that of 16-bit quantisation.

    Parameters
    ----------
    frame : ndarray, shape (H, W) or (H, W, 3)
        Linear values, nominally [0, 1]; a mosaic when ``cfa`` is given.
        Non-finite samples are ignored.
    cfa : str or None
        Bayer pattern of a mosaic (one of ``mfsr.cfa.PATTERNS``).
    bins : int
        Number of intensity bins of the fit.
    keep_fraction : float
        Fraction, in (0, 1], of each plane's usable samples kept: those of
        lowest smoothed gradient magnitude (Gaussian derivative, sigma 2 px,
        hardly touched by the noise itself), which excludes edges.
    max_pixels : int
        Frames larger than this are sampled by a grid of 256 x 256 tiles
        holding about this many pixels.

    Returns
    -------
    alpha : float
        Shot-noise gain (variance per unit intensity), >= 0.
    beta : float
        Read-noise variance (intensity^2), > 0 (at least the floor above).
        ``(0.0, floor)`` when no sample can show noise (a constant frame).

    Raises
    ------
    ValueError
        On a wrong shape, an unknown ``cfa``, ``bins`` < 1 or
        ``keep_fraction`` outside (0, 1].

    References
    ----------
    J. Immerkaer, "Fast noise variance estimation", CVIU 64(2), 1996.
    A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical
    Poissonian-Gaussian noise modeling and fitting for single-image raw-data",
    IEEE TIP 17(10), 2008.
    """
    frame = np.asarray(frame)
    if cfa is not None:
        check_pattern(cfa)
        if frame.ndim != 2:
            raise ValueError(f"frame: a CFA mosaic must be (H, W), got shape {frame.shape}")
    elif frame.ndim not in (2, 3):
        raise ValueError(f"frame: expected shape (H, W) or (H, W, 3), got {frame.shape}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction: expected a fraction in (0, 1], got {keep_fraction!r}")
    tiles = _tiles(frame, max_pixels)
    planes = [p for t in tiles for p in _planes(t, cfa)]
    finite = np.concatenate([p[np.isfinite(p)].ravel() for p in planes])
    if finite.size == 0:
        return 0.0, _MIN_VARIANCE
    low, high = _clamp_levels(finite)
    # The quantisation step of each plane, from the same sampled tiles as the rest.
    n_planes = len(planes) // len(tiles)
    steps = [_quantisation_step(np.concatenate([p.ravel() for p in planes[i::n_planes]])) for i in range(n_planes)]
    floor = max(_MIN_VARIANCE, float(np.median(steps)) ** 2 / 12.0)

    means, variances, residuals = [], [], []
    for p in planes:
        if p.shape[0] < 3 or p.shape[1] < 3:
            continue
        got = _plane_samples(p, low, high, keep_fraction)
        if got is not None:
            means.append(got[0])
            variances.append(got[1])
            residuals.append(got[2])
    if not means:
        return 0.0, floor
    mu = np.concatenate(means)
    s2 = np.concatenate(variances)
    hp = np.concatenate(residuals)
    bias = _quantile_bias()
    order = np.argsort(mu, kind="stable")
    groups = np.array_split(order, max(1, min(bins, mu.size // 64)))
    xs, vs, ws = [], [], []
    for g in groups:
        if g.size < 16:
            continue
        xs.append(np.median(mu[g]))
        # Two texture-robust views of one variance: the flattest windows, and
        # the median residual (which sparse edges hardly move); texture can
        # only raise either, so the smaller is the better.
        mad = _MAD_TO_STD * np.median(np.abs(hp[g]))
        vs.append(min(np.quantile(s2[g], _QUANTILE) / bias, mad * mad))
        ws.append(np.sqrt(g.size))
    if not xs:
        return 0.0, floor
    alpha, beta = _fit_line(np.asarray(xs), np.asarray(vs), np.asarray(ws), low, high)
    return alpha, max(beta, floor)


def _fit_line(x, v, w, low: float, high: float) -> tuple[float, float]:
    """Non-negative ``v = alpha x + beta``, refitted without texture-raised bins."""
    keep = np.ones(x.size, bool)
    span = np.ptp(x)
    coef = np.zeros(2)
    for _ in range(8):
        # Relative weighting: the variance of a variance estimate grows with it.
        vk = v[keep]
        wt = w[keep] / np.maximum(vk, 1e-3 * vk.max() + 1e-20)
        a = np.stack([x[keep], np.ones(keep.sum())], axis=1) * wt[:, None]
        coef, _ = nnls(a, vk * wt)
        fit = np.maximum(coef[0] * x + coef[1], 1e-20)
        # Bins next to a clamp see truncated noise. Texture only adds
        # variance, so bins well above the line are dropped and the fit
        # settles on the lower envelope, as long as what is left spans enough
        # intensities to show the slope.
        sd = np.sqrt(fit)
        near_clamp = (x - 3 * sd <= low) | (x + 3 * sd >= high)
        new = keep & ~near_clamp & (v <= _ABOVE * fit)
        if new.sum() < 2 or np.ptp(x[new]) < _MIN_SPAN * span or np.array_equal(new, keep):
            break
        keep = new
    return float(coef[0]), float(coef[1])
