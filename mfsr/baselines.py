"""Reference baselines a multi-frame method must beat.

- :func:`single_frame_upscale`: bilinear demosaic + bicubic (cubic B-spline)
  upsampling of the reference frame alone.
- :func:`phase_correlation_average`: what a user would script with
  scikit-image: global shifts by phase correlation, shift back, average, upsample.

Both use the pixel-area geometry of docs/conventions.md: output pixel (y, x) at scale s
samples input coordinate ((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5); borders are
reflected (half-sample symmetric).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .cfa import demosaic_bilinear
from .pixel_area import centre_coordinates, reflect_index
from .validation import as_burst, check_scale

__all__ = ["single_frame_upscale", "phase_correlation_average"]


def _cubic_bspline_weights(t: np.ndarray):
    """Indices offsets and weights of the cubic B-spline at positions ``t``.

    Returns ``(m0, w)`` with ``m0 = floor(t) - 1`` and ``w`` of shape (n, 4):
    the value at ``t`` is ``sum_k w[:, k] * c[m0 + k]`` for spline coefficients ``c``.
    """
    m = np.floor(t)
    f = t - m
    w = np.empty(t.shape + (4,), np.float64)
    w[..., 0] = (1 - f) ** 3 / 6
    w[..., 1] = (3 * f**3 - 6 * f**2 + 4) / 6
    w[..., 2] = (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6
    w[..., 3] = f**3 / 6
    return m.astype(np.intp) - 1, w


def _resample_axis(coef: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Evaluate a cubic spline along one axis at ``coords`` (separable pass)."""
    n = coef.shape[axis]
    m0, w = _cubic_bspline_weights(coords)
    c = np.moveaxis(coef, axis, 0)
    out = None
    for k in range(4):
        idx = reflect_index(m0 + k, n)
        term = w[:, k].reshape((-1,) + (1,) * (c.ndim - 1)).astype(np.float32) * c[idx]
        out = term if out is None else out + term
    return np.moveaxis(out, 0, axis)


def _bicubic_upsample(img: np.ndarray, scale: float) -> np.ndarray:
    """Cubic B-spline resampling of (h, w[, C]) onto the pixel-area grid of ``scale``.

    Equals ``scipy.ndimage.map_coordinates(order=3, mode="reflect")`` at output
    coordinates ((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5), done as two separable passes.
    """
    h, w = img.shape[:2]
    oh, ow = int(round(h * scale)), int(round(w * scale))
    ty = centre_coordinates(oh, scale)
    tx = centre_coordinates(ow, scale)
    coef = img.astype(np.float64)
    for ax in (0, 1):
        coef = ndimage.spline_filter1d(coef, order=3, axis=ax, mode="reflect")
    coef = coef.astype(np.float32)
    out = _resample_axis(coef, ty, 0)
    out = _resample_axis(out, tx, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def single_frame_upscale(
    frame: np.ndarray, scale: float, *, cfa: str | None = None
) -> np.ndarray:
    """Single-frame baseline: bilinear demosaic (if CFA) then bicubic upsampling.

    Parameters
    ----------
    frame : ndarray, shape (h, w) grey or mosaic, or (h, w, 3) RGB
        Linear float values.
    scale : float
        Output size is ``round(h s) x round(w s)``.
    cfa : str or None
        Bayer pattern of a mosaic frame; the result is then RGB.

    Returns
    -------
    image : ndarray of float32, shape (round(h s), round(w s)[, 3])
        Cubic B-spline interpolation (``map_coordinates(order=3)``) at output
        pixel centres ((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5), borders reflected;
        exact at scale 1.
    """
    f = np.asarray(frame)
    if f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[2] != 3):
        raise ValueError(f"frame: expected (h, w) or (h, w, 3), got shape {f.shape}")
    s = check_scale(scale)
    if cfa is not None:
        if f.ndim != 2:
            raise ValueError(f"cfa: a mosaic frame must be (h, w), got shape {f.shape}")
        f = demosaic_bilinear(f, cfa)
    f = np.asarray(f, dtype=np.float32)
    return _bicubic_upsample(f, s)


def phase_correlation_average(
    frames: np.ndarray | Sequence[np.ndarray],
    scale: float,
    *,
    cfa: str | None = None,
    reference: int = 0,
    upsample_factor: int = 20,
    return_shifts: bool = False,
):
    """Shift-and-average baseline built from scikit-image and SciPy.

    Each frame is demosaicked bilinearly (if CFA); its global shift against the
    reference is estimated on a grey image with
    ``skimage.registration.phase_cross_correlation(upsample_factor=20)``; it is
    shifted back with ``scipy.ndimage.shift`` (cubic spline, reflected border);
    the aligned frames are averaged and the mean is upsampled like
    :func:`single_frame_upscale`.

    Parameters
    ----------
    frames : ndarray, shape (N, h, w) or (N, h, w, 3), or sequence of frames
    scale : float
    cfa : str or None
    reference : int
    return_shifts : bool
        Also return the estimated shifts (N, 2): the translation (dy, dx) that
        aligns each frame to the reference, i.e. minus the frame's global flow.

    Returns
    -------
    image : ndarray of float32, shape (round(h s), round(w s)[, 3])
    shifts : ndarray of float64, shape (N, 2), only with ``return_shifts``

    Notes
    -----
    The grey image is the channel mean for RGB frames and, for CFA frames,
    the 2x2-binned mosaic (each binned pixel sums one Bayer cell; the shift found
    there is doubled, with ``2 * upsample_factor`` to keep the precision).
    Phase correlation on bilinearly demosaicked frames locks onto the
    demosaicking artefacts (period 2 px) instead of the scene's motion, so
    it is not used.
    """
    from skimage.registration import phase_cross_correlation

    burst, cfa, ref = as_burst(frames, cfa, reference)
    s = check_scale(scale)
    factor = 1
    if cfa is not None:
        h2, w2 = burst.shape[1] // 2 * 2, burst.shape[2] // 2 * 2
        grey = burst[:, :h2, :w2].reshape(burst.shape[0], h2 // 2, 2, w2 // 2, 2).mean(axis=(2, 4))
        factor = 2
        burst = np.stack([demosaic_bilinear(f, cfa) for f in burst])
    else:
        grey = burst.mean(axis=-1) if burst.ndim == 4 else burst
    acc = np.zeros(burst.shape[1:], np.float64)
    shifts = np.zeros((burst.shape[0], 2))
    for k in range(burst.shape[0]):
        if k == ref:
            acc += burst[k]
            continue
        shift, _, _ = phase_cross_correlation(
            grey[ref], grey[k], upsample_factor=upsample_factor * factor
        )
        shift = np.asarray(shift, np.float64) * factor
        shifts[k] = shift
        sh = tuple(shift) + ((0.0,) if burst.ndim == 4 else ())
        acc += ndimage.shift(burst[k].astype(np.float64), sh, order=3, mode="reflect")
    mean = (acc / burst.shape[0]).astype(np.float32)
    out = _bicubic_upsample(mean, s)
    return (out, shifts) if return_shifts else out
