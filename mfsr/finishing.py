"""Finishing a fused camera image for viewing: white balance, colour, tone, sharpening.

The fusion of a RAW burst returns *camera RGB*: linear, not white-balanced,
in the sensor's own primaries. :func:`finish` turns it into linear sRGB that
a viewer can show once the sRGB transfer curve is applied (as
:func:`mfsr.image_io.write_image` does with ``transfer="srgb"``). Each step is
explicit and optional; engineers who want the measurement keep the linear
camera RGB (``mfsr fuse --linear``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .transfer import REC709_LUMA
from .validation import check_orientation

_TONES = ("none", "soft")


def finish(
    image: np.ndarray,
    *,
    wb_multipliers=None,
    color_matrix: np.ndarray | None = None,
    exposure: float = 0.0,
    tone: str = "none",
    sharpen: float = 0.0,
    sharpen_sigma: float = 1.0,
) -> np.ndarray:
    """White-balance, convert to sRGB primaries, expose, tone-map and sharpen.

    Parameters
    ----------
    image : ndarray of float, shape (H, W, 3)
        Linear camera RGB (for a RAW burst, :attr:`mfsr.FusionResult.image`).
    wb_multipliers : sequence of 3 float, optional
        Gains for (R, G, B) (:attr:`mfsr.raw_io.RawFrame.wb_multipliers`);
        none applied when None.
    color_matrix : ndarray, shape (3, 3), optional
        White-balanced camera RGB -> linear sRGB
        (:attr:`mfsr.raw_io.RawFrame.color_matrix`); identity when None.
    exposure : float
        Exposure compensation in stops (EV): values are multiplied by
        ``2 ** exposure``.
    tone : {"none", "soft"}
        ``"none"`` keeps values linear (the writer's sRGB curve is the only
        tone curve; highlights above 1 are clipped there, with a warning).
        ``"soft"`` rolls highlights off smoothly (extended Reinhard on
        luminance, white point 4, hue kept), so nothing reaches the clip.
    sharpen : float
        Amount of unsharp masking of the luminance (0 = none; 0.3 is mild).
    sharpen_sigma : float
        Radius (Gaussian standard deviation) of the unsharp mask, in pixels.

    Returns
    -------
    ndarray of float32, shape (H, W, 3)
        Linear sRGB (D65), not clipped.

    Raises
    ------
    ValueError
        On a wrong shape, non-finite values or an unknown ``tone``.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) camera RGB image, got shape {img.shape}")
    if tone not in _TONES:
        raise ValueError(f"tone: expected one of {', '.join(_TONES)}, got {tone!r}")
    if not np.isfinite(exposure):
        raise ValueError(f"exposure: expected a finite number of stops, got {exposure}")
    if sharpen < 0 or not np.isfinite(sharpen):
        raise ValueError(f"sharpen: expected an amount >= 0, got {sharpen}")
    out = img.astype(np.float32, copy=True)
    if wb_multipliers is not None:
        wb = np.asarray(wb_multipliers, np.float32).reshape(-1)
        if wb.shape != (3,) or not np.all(np.isfinite(wb)) or np.any(wb <= 0):
            raise ValueError(f"wb_multipliers: expected three positive gains, got {wb.tolist()}")
        out *= wb
    if color_matrix is not None:
        cm = np.asarray(color_matrix, np.float32)
        if cm.shape != (3, 3) or not np.all(np.isfinite(cm)):
            raise ValueError(f"color_matrix: expected a finite (3, 3) matrix, got shape {cm.shape}")
        out = out @ cm.T
    out *= np.float32(2.0**exposure)
    if tone == "soft":
        out = _soft_highlights(out, white=4.0)
    if sharpen > 0:
        luma = out @ REC709_LUMA
        detail = luma - gaussian_filter(luma, sharpen_sigma, mode="nearest")
        out += (sharpen * detail)[..., None]
    return out


def grey_world_gains(
    image: np.ndarray,
    *,
    black: float = 0.02,
    clip: float = 0.95,
) -> np.ndarray:
    """White-balance gains that make the scene grey on average (grey world).

    The mean of each channel is taken over the pixels that carry colour:
    every channel above ``black`` (black borders, deep shadows and their
    noise hold no colour) and below ``clip`` (a clipped channel has lost the
    ratio between channels, and large blown-out areas would pull the gains
    towards 1). When fewer than 1 % of the pixels qualify (a very dark or
    blown-out frame), all pixels with every channel in (0, ``clip``) are
    used instead.

    Parameters
    ----------
    image : ndarray of float, shape (H, W, 3)
        Linear camera RGB, normalised so 1 is the white level.
    black, clip : float
        Thresholds in the same normalised units, 0 <= black < clip.

    Returns
    -------
    ndarray of float64, shape (3,)
        Gains for (R, G, B) with G = 1; all ones when no pixel qualifies.

    Raises
    ------
    ValueError
        On a wrong shape or thresholds out of order.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) camera RGB image, got shape {img.shape}")
    if not (np.isfinite(black) and np.isfinite(clip) and 0 <= black < clip):
        raise ValueError(f"black, clip: expected 0 <= black < clip, got {black!r}, {clip!r}")
    rgb = img.reshape(-1, 3)
    lo = rgb.min(axis=1)
    hi = rgb.max(axis=1)  # NaN in any channel makes lo/hi NaN and fails both tests
    use = (lo > black) & (hi < clip)
    if np.count_nonzero(use) < 0.01 * rgb.shape[0]:
        use = (lo > 0) & (hi < clip)
    if not use.any():
        return np.ones(3)
    means = rgb[use].astype(np.float64).mean(axis=0)
    return means[1] / means


def _soft_highlights(rgb: np.ndarray, white: float) -> np.ndarray:
    # Extended Reinhard on luminance: L' = L (1 + L / w^2) / (1 + L), which maps
    # w to 1 and leaves the shadows nearly linear; scaling RGB by L'/L keeps hue.
    luma = np.maximum(rgb @ REC709_LUMA, 0.0)
    mapped = luma * (1.0 + luma / (white * white)) / (1.0 + luma)
    gain = np.where(luma > 1e-8, mapped / np.maximum(luma, 1e-8), 1.0)
    return rgb * gain[..., None].astype(np.float32)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a sensor-oriented image upright by its EXIF orientation code.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    orientation : int
        EXIF orientation, 1 to 8 (1: as stored; 3: rotate 180 degrees;
        6: rotate 90 degrees clockwise; 8: 90 degrees counter-clockwise;
        2, 4, 5, 7: the mirrored variants).

    Returns
    -------
    ndarray
        A view or copy in display orientation; (W, H, ...) for codes 5 to 8.
    """
    check_orientation(orientation)
    out = image
    if orientation in (2, 4, 5, 7):  # mirrored variants: mirror first, then rotate
        out = out[:, ::-1]
    rotation = {1: 0, 2: 0, 3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}[orientation]
    return np.ascontiguousarray(np.rot90(out, rotation))
