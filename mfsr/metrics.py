"""Image-quality and registration metrics, and the sensor model used to score
reconstructions without ground truth.

All functions take float arrays (H, W) or (H, W, C) in linear light and return
Python floats unless stated otherwise. Metrics are computed per image (never
pooled over a batch).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .cfa import mosaic
from .deprecation import renamed_argument
from .pixel_area import apply_separable, area_weights, box_sample
from .validation import check_scale

__all__ = ["psnr", "ssim", "flow_epe", "degrade", "downscale_consistency"]


def _check_pair(image, truth, names=("image", "truth")):
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(truth, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]}: shape {a.shape} differs from {names[1]} shape {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{names[0]}: expected (H, W) or (H, W, C), got shape {a.shape}")
    return a, b


def _crop(a: np.ndarray, crop: int, name: str = "crop") -> np.ndarray:
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {crop!r}")
    if crop == 0:
        return a
    if 2 * crop >= a.shape[0] or 2 * crop >= a.shape[1]:
        raise ValueError(f"{name}: {crop} px removes the whole {a.shape[0]}x{a.shape[1]} image")
    return a[crop:-crop, crop:-crop]


def psnr(
    image: np.ndarray,
    truth: np.ndarray,
    *,
    data_range: float = 1.0,
    crop: int = 0,
    valid: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio of one image, over all its channels.

    Parameters
    ----------
    image, truth : ndarray, shape (H, W) or (H, W, C)
    data_range : float
        Peak value (1 for images in [0, 1]).
    crop : int
        Border pixels removed on every side before comparing.
    valid : ndarray of bool, shape (H, W), optional
        Only pixels where ``valid`` is True count (all channels of them).
    mask : ndarray of bool, optional
        Deprecated name of ``valid`` (same polarity: True = counted).

    Returns
    -------
    psnr : float
        ``10 log10(data_range^2 / MSE)`` in dB; ``inf`` for identical images.
    """
    valid = renamed_argument("psnr", "mask", mask, "valid", valid)
    a, b = _check_pair(image, truth)
    d2 = (a - b) ** 2
    if d2.ndim == 3:
        d2 = d2.mean(axis=2)
    if valid is not None:
        m = np.asarray(valid, dtype=bool)
        if m.shape != a.shape[:2]:
            raise ValueError(f"valid: shape {m.shape} differs from image shape {a.shape[:2]}")
        m = _crop(m, crop)
        d2 = _crop(d2, crop)[m]
        if d2.size == 0:
            raise ValueError("valid: selects no pixel")
    else:
        d2 = _crop(d2, crop)
    mse = float(d2.mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(
    image: np.ndarray,
    truth: np.ndarray,
    *,
    data_range: float = 1.0,
    crop: int = 0,
) -> float:
    """Structural similarity (Wang et al. 2004), mean over pixels and channels.

    Gaussian window with sigma 1.5 (truncated at 3.5 sigma: 11 x 11), K1 = 0.01,
    K2 = 0.03, population (not sample) covariances. As in scikit-image, the
    mean excludes the 5-pixel border where the window overhangs the image
    (after ``crop`` is applied), so values match
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004.
    """
    a, b = _check_pair(image, truth)
    a, b = _crop(a, crop), _crop(b, crop)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    sigma, truncate = 1.5, 3.5
    pad = int(truncate * sigma + 0.5)
    if a.shape[0] <= 2 * pad or a.shape[1] <= 2 * pad:
        raise ValueError(f"image: {a.shape[0]}x{a.shape[1]} is too small for an 11x11 SSIM window")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=truncate)

    vals = []
    for c in range(a.shape[2]):
        x, y = a[..., c], b[..., c]
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


def flow_epe(
    flow: np.ndarray,
    true_flow: np.ndarray,
    *,
    crop: int = 0,
    reduce: str | None = "median",
) -> float | np.ndarray:
    """End-point error ``sqrt(ddy^2 + ddx^2)`` between two flows.

    Parameters
    ----------
    flow, true_flow : ndarray, shape (N, h, w, 2) or (h, w, 2)
        (dy, dx) flows; every given frame counts (pass ``flow[mask]`` frames
        yourself to leave out the reference).
    crop : int
        Border pixels removed on every side.
    reduce : {"median", "mean", None}
        Reduction over all pixels (and frames); None returns the per-pixel
        error array of shape (N, h', w') or (h', w').
    """
    f = np.asarray(flow, dtype=np.float64)
    t = np.asarray(true_flow, dtype=np.float64)
    if f.shape != t.shape:
        raise ValueError(f"flow: shape {f.shape} differs from true_flow shape {t.shape}")
    if f.ndim not in (3, 4) or f.shape[-1] != 2:
        raise ValueError(f"flow: expected (N, h, w, 2) or (h, w, 2), got shape {f.shape}")
    e = np.sqrt(((f - t) ** 2).sum(axis=-1))
    if crop:
        if e.ndim == 2:
            e = _crop(e, crop)
        else:
            e = np.stack([_crop(x, crop) for x in e])
    if reduce is None:
        return e
    if reduce == "median":
        return float(np.median(e))
    if reduce == "mean":
        return float(e.mean())
    raise ValueError(f"reduce: expected 'median', 'mean' or None, got {reduce!r}")


def corner_error(transforms: np.ndarray, true_transforms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance between where two sets of 3x3 transforms send the image corners.

    Parameters
    ----------
    transforms, true_transforms : ndarray, shape (3, 3) or (N, 3, 3)
        Transforms on (x, y, 1) column vectors, pixel coordinates (as
        :attr:`mfsr.FusionResult.transforms`).
    shape : (int, int)
        (h, w) of the image whose corner pixel centres are mapped.

    Returns
    -------
    ndarray of float64, shape (4,) or (N, 4)
        Euclidean distance in pixels, corners in the order top-left,
        top-right, bottom-right, bottom-left.
    """
    a = np.asarray(transforms, np.float64)
    b = np.asarray(true_transforms, np.float64)
    if a.shape != b.shape or a.shape[-2:] != (3, 3):
        raise ValueError(f"transforms: expected matching (3, 3) or (N, 3, 3) arrays, got {a.shape} and {b.shape}")
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64).T
    pa, pb = a @ corners, b @ corners
    return np.linalg.norm(pa[..., :2, :] / pa[..., 2:, :] - pb[..., :2, :] / pb[..., 2:, :], axis=-2)


def degrade(
    image: np.ndarray,
    scale: float,
    *,
    cfa: str | None = None,
    flow: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Re-degrade an output image of scale ``s`` to low-resolution frame geometry.

    Each low-res pixel is the exact mean of ``image`` (each pixel uniform over
    its square, reflected beyond the border) over the pixel's footprint: an
    ``s x s`` square of output pixels; for integer ``s`` and no flow, the plain
    block mean, otherwise fractional-area weights. This is the simulator's
    sensor model (``mfsr.synth``) without blur or noise, so
    ``degrade(burst.ground_truth, s, cfa=burst.cfa)`` reproduces a noise-free,
    blur-free reference frame.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Output-grid image (RGB when ``cfa`` is given).
    scale : float
    cfa : str or None
        Mosaic the result with this Bayer pattern.
    flow : ndarray, shape (h, w, 2), optional
        Flow of another frame k (convention of docs/conventions.md, on the
        reference grid): the result then has frame k's geometry. Frame-k pixel ``p`` is taken at
        the reference position ``r`` solving ``r + flow(r) = p`` (fixed-point
        iterations, flow interpolated bilinearly); its footprint is translated,
        not rotated.
    shape : (h, w), optional
        Low-res frame shape; default ``round(H / s), round(W / s)`` (which
        inverts the output size rule ``H = round(h s)`` for s >= 1).

    Returns
    -------
    frame : ndarray of float32, shape (h, w) or (h, w, 3) or mosaic (h, w)
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3):
        raise ValueError(f"image: expected (H, W) or (H, W, C), got shape {img.shape}")
    s = check_scale(scale)
    H, W = img.shape[:2]
    if shape is None:
        h, w = int(round(H / s)), int(round(W / s))
    else:
        h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape: low-res frame {h}x{w} is empty")
    if cfa is not None and img.ndim != 3:
        raise ValueError(f"cfa: mosaicking needs an RGB image (H, W, 3), got shape {img.shape}")
    chans = [img] if img.ndim == 2 else [np.ascontiguousarray(img[..., c]) for c in range(img.shape[2])]

    if flow is None:
        iy, wy = area_weights(h, H, s)
        ix, wx = area_weights(w, W, s)
        planes = [apply_separable(c, iy, wy, ix, wx) for c in chans]
    else:
        fl = np.asarray(flow, dtype=np.float64)
        if fl.shape != (h, w, 2):
            raise ValueError(f"flow: expected shape {(h, w, 2)}, got {fl.shape}")
        py, px = np.mgrid[0:h, 0:w].astype(np.float64)
        ry, rx = py - fl[..., 0], px - fl[..., 1]
        for _ in range(20):
            fy = ndimage.map_coordinates(fl[..., 0], [ry, rx], order=1, mode="nearest")
            fx = ndimage.map_coordinates(fl[..., 1], [ry, rx], order=1, mode="nearest")
            ny, nx = py - fy, px - fx
            done = max(np.abs(ny - ry).max(), np.abs(nx - rx).max()) < 1e-6
            ry, rx = ny, nx
            if done:
                break
        uy, ux = (ry + 0.5) * s - 0.5, (rx + 0.5) * s - 0.5
        planes = [box_sample(c, uy, ux, s) for c in chans]
    out = planes[0] if img.ndim == 2 else np.stack(planes, axis=-1)
    if cfa is not None:
        out = mosaic(out, cfa)
    return np.ascontiguousarray(out, dtype=np.float32)


def downscale_consistency(
    output: np.ndarray,
    reference_frame: np.ndarray,
    scale: float,
    *,
    cfa: str | None = None,
    crop: int = 0,
) -> float:
    """No-reference check: PSNR (dB, data range 1) between ``degrade(output)`` and
    the reference frame it was reconstructed from.

    A faithful reconstruction re-degrades to the (noisy) reference frame, so the
    value is bounded by the frame's own noise level; it detects shifted, blurred
    or hallucinated outputs, not noise removal.
    """
    ref = np.asarray(reference_frame, dtype=np.float32)
    low = degrade(output, scale, cfa=cfa, shape=ref.shape[:2])
    if low.shape != ref.shape:
        raise ValueError(
            f"reference_frame: shape {ref.shape} does not match the degraded output {low.shape}"
        )
    return psnr(low, ref, crop=crop)
