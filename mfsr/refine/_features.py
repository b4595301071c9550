"""Input planes of the refinement network, shared by inference and training.

The same function builds the network's inputs at training and at inference
time, so the normalisations below cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PSF_FEATURE_MAX", "SIGMA_GAIN", "confidence_reference", "global_features", "pixel_features"]

#: Gain on the noise standard deviation so its plane is of order 0.1 to 1.
SIGMA_GAIN = 10.0
#: Clamp of the relative confidence before ``log1p``: beyond 16 times the
#: image's median weight a pixel is simply "very well covered".
_REL_MAX = 16.0


def confidence_reference(confidence: np.ndarray) -> float:
    """Robust per-image confidence level: the median of the positive weights.

    ``FusionResult.confidence`` is a total kernel weight; its level grows with
    the burst length and falls as ``1 / scale^2`` (fewer samples per output
    pixel), so it is normalised by this reference before it enters the
    network, and the reference itself enters as one global feature.
    Computed once over the whole image (never per tile).

    Parameters
    ----------
    confidence : ndarray of float, shape (H, W)

    Returns
    -------
    reference : float
        > 0 (1.0 when no weight is positive).
    """
    c = np.asarray(confidence)
    # subsample: the median of a 12 MP image needs no more than ~1 M samples
    step = max(1, int(math.sqrt(c.size / 1e6)))
    sub = c[::step, ::step]
    pos = sub[sub > 0]
    if pos.size == 0:
        return 1.0
    ref = float(np.median(pos))
    return ref if np.isfinite(ref) and ref > 0 else 1.0


#: Largest optical blur (Gaussian sigma, output pixels) the network is told
#: of: training drew blur up to 1 output pixel; beyond, "very soft".
PSF_FEATURE_MAX = 2.0


def global_features(
    *, cfa: bool, grey: bool, scale: float, conf_ref: float, psf_sigma: float | None = None
) -> np.ndarray:
    """Per-image constants of the network.

    Parameters
    ----------
    cfa, grey : bool
        The fusion came from Bayer mosaics; the image is grey.
    scale : float
        Output pixels per input pixel.
    conf_ref : float
        :func:`confidence_reference` of the whole image.
    psf_sigma : float or None
        Optical blur of the camera: standard deviation of a Gaussian point
        spread function in *input* (sensor) pixels, without the pixel's own
        aperture. None: unknown.

    Returns
    -------
    ndarray of float32, shape (6,)
        CFA flag, grey flag, ``log2(scale) / 2``, ``log1p(conf_ref) / 2``,
        blur-known flag (0 or 1) and the blur in output pixels,
        ``min(psf_sigma * scale, PSF_FEATURE_MAX)`` (0 when unknown).
    """
    known = psf_sigma is not None
    blur = min(float(psf_sigma) * float(scale), PSF_FEATURE_MAX) if known else 0.0
    return np.array(
        [float(cfa), float(grey), math.log2(float(scale)) / 2.0, math.log1p(conf_ref) / 2.0, float(known), blur],
        np.float32,
    )


def pixel_features(
    image: np.ndarray,
    confidence: np.ndarray,
    *,
    conf_ref: float,
    noise: tuple[float, float],
) -> np.ndarray:
    """Per-pixel planes of one image or tile.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Fused image, linear light.
    confidence : ndarray of float32, shape (H, W)
        Fused confidence (total kernel weight).
    conf_ref : float
        :func:`confidence_reference` of the *whole* image.
    noise : (alpha, beta)
        Noise model of one input sample, variance ``alpha * I + beta``.

    Returns
    -------
    planes : ndarray of float32, shape (5, H, W)
        RGB (grey replicated), ``log1p(min(confidence / conf_ref, 16))``
        (about 0.69 at a typical pixel, 0 where nothing was merged) and
        ``SIGMA_GAIN * sqrt(alpha * max(I, 0) + beta)`` with ``I`` the channel
        mean: the noise of one input sample at that intensity (the network
        learns how much merging reduced it from the confidence).
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape[:2]
    out = np.empty((5, h, w), np.float32)
    if img.ndim == 2:
        out[0:3] = img[None]
        mean = img
    else:
        out[0:3] = np.moveaxis(img, 2, 0)
        mean = out[0:3].mean(axis=0)
    rel = np.asarray(confidence, np.float32) * np.float32(1.0 / conf_ref)
    np.clip(rel, 0.0, _REL_MAX, out=rel)
    out[3] = np.log1p(rel)
    alpha, beta = float(noise[0]), float(noise[1])
    out[4] = np.float32(SIGMA_GAIN) * np.sqrt(np.float32(alpha) * np.maximum(mean, 0.0) + np.float32(beta))
    return out
