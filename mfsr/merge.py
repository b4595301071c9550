"""The merge stage: every frame's samples accumulated onto the output grid, normalised and sharpened.

:func:`merge` is the one per-frame loop of the kernel fusion (Wronski et al.
2019): for each frame, anisotropic kernels from its local structure
(:func:`frame_kernels`), a robustness weight against the reference, and the
accumulation of every sample at its aligned position (:func:`accumulate`);
then normalisation and the noise-gated detail restoration. The satellite
route (:mod:`mfsr.geo.masked_fusion`) builds its masked loop from the same
:func:`frame_kernels` and :func:`accumulate`, so the accumulation kernels are
called from this module only.

Conventions (docs/conventions.md): output pixel ``(y, x)`` at scale ``s`` is
centred at reference coordinate ``((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5)``;
values are float32 linear light, nominally [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

from .alignment import Alignment, frame_progress
from .cfa import cell_channels
from .fusion_params import FusionParams, sharpen_gain
from .kernels.accumulate import accumulate_frame, accumulate_frame_cfa, normalize, sharpen
from .kernels.robustness import guide_image, local_stats, robustness, warp_guide
from .kernels.structure_tensor import (
    gaussian_weights,
    grey_image,
    kernel_inverse_covariance,
    structure_tensor,
)
from .registration import TileMotion

__all__ = ["MergeResult", "accumulate", "frame_kernels", "merge"]

_NO_CELL = np.zeros((2, 2), np.int64)


@dataclass
class MergeResult:
    """Output of :func:`merge`.

    Attributes
    ----------
    image : ndarray of float32, shape (Ho, Wo) or (Ho, Wo, 3)
        The merged, sharpened image: grey for grey input, RGB for RGB or CFA.
    confidence : ndarray of float32, shape (Ho, Wo)
        Total kernel weight accumulated at each output pixel.
    robustness : ndarray of float32, shape (N,)
        Mean robustness weight of each frame (1 for the reference).
    """

    image: np.ndarray
    confidence: np.ndarray
    robustness: np.ndarray


def frame_kernels(
    frame: np.ndarray,
    grey_bin: int,
    noise: tuple[float, float],
    params: FusionParams,
    *,
    radius_min: float | None = None,
    radius_max: float | None = None,
) -> np.ndarray:
    """Per-pixel inverse covariance of one frame's anisotropic merge kernels.

    Parameters
    ----------
    frame : ndarray of float32, shape (H, W, C)
        One frame (a mosaic as (H, W, 1)).
    grey_bin : int
        Binning of the grey image the structure is measured on (2 for a
        Bayer mosaic, 1 otherwise); the kernels live on that grid.
    noise : (float, float)
        Noise model (alpha, beta) of one grey pixel.
    params : FusionParams
    radius_min, radius_max : float, optional
        Override ``params.radius_min`` / ``radius_max`` (input px).

    Returns
    -------
    ndarray of float32, shape (H / grey_bin, W / grey_bin, 3)
        (a, b, c) of the quadratic form, as
        :func:`mfsr.kernels.structure_tensor.kernel_inverse_covariance`.
    """
    p = params
    grey = grey_image(frame, grey_bin)
    tensor = structure_tensor(grey, p.tensor_sigma)
    return kernel_inverse_covariance(
        tensor, grey, noise[0], noise[1],
        p.k_detail, p.k_denoise, p.k_stretch, p.k_shrink, p.d_th, p.d_tr,
        p.radius_min if radius_min is None else radius_min, p.radius_max if radius_max is None else radius_max,
        float(grey_bin),
    )


def accumulate(
    frame: np.ndarray,
    flow: np.ndarray,
    inv_cov: np.ndarray,
    weight: np.ndarray,
    scale: float,
    num: np.ndarray,
    den: np.ndarray,
    *,
    cell: np.ndarray | None = None,
    grey_bin: int = 1,
) -> None:
    """Add one frame's samples into the output sums, in place.

    Parameters
    ----------
    frame : ndarray of float32, shape (H, W, C), or (H, W) with ``cell``
        The frame's samples; a Bayer mosaic with ``cell``. Any number of
        channels: the kernel takes at most 3 beside its weight sum, more go
        in groups of 3 with the same weights.
    flow : ndarray of float32, shape (Hf, Wf, 2)
        The frame's flow (dy, dx), input px, on a grid the kernel
        interpolates (the dense flow, or 2x2 for a translation).
    inv_cov : ndarray of float32, shape (H / grey_bin, W / grey_bin, 3)
        From :func:`frame_kernels`.
    weight : ndarray of float32, shape (H / grey_bin, W / grey_bin)
        Robustness (or validity) weight of each sample.
    scale : float
    num : ndarray of float32, shape (Ho, Wo, C)
        Weighted sums of sample values (updated).
    den : ndarray of float32, shape (Ho, Wo, 1) or (Ho, Wo, 3) with ``cell``
        Sums of the weights (updated).
    cell : ndarray of int64, shape (2, 2), optional
        Channel of each position of the Bayer cell (:func:`mfsr.cfa.cell_channels`).
    grey_bin : int
        Grid of ``inv_cov`` and ``weight`` relative to the frame.
    """
    if cell is not None:
        accumulate_frame_cfa(frame, cell, flow, inv_cov, grey_bin, weight, grey_bin, float(scale), num, den)
        return
    nc = frame.shape[2]
    if nc <= 3:
        accumulate_frame(frame, flow, inv_cov, grey_bin, weight, grey_bin, float(scale), num, den)
        return
    for c0 in range(0, nc, 3):
        c1 = min(c0 + 3, nc)
        part = np.ascontiguousarray(num[..., c0:c1])
        accumulate_frame(np.ascontiguousarray(frame[..., c0:c1]), flow, inv_cov, grey_bin, weight, grey_bin,
                         float(scale), part, den)
        num[..., c0:c1] = part


def merge(
    burst: np.ndarray,
    alignment: Alignment,
    *,
    scale: float,
    cfa: str | None,
    reference: int,
    noise: tuple[float, float],
    params: FusionParams | None = None,
    progress: bool = False,
) -> MergeResult:
    """Merge an aligned burst onto the output grid.

    Parameters
    ----------
    burst : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
        Validated frames (:func:`mfsr.validation.as_burst`).
    alignment : Alignment
        From :func:`mfsr.alignment.align`.
    scale : float
        Output pixels per input pixel.
    cfa : str or None
        Bayer pattern of single-channel mosaics.
    reference : int
    noise : (float, float)
        Noise model (alpha, beta) of one normalised input sample.
    params : FusionParams, optional
    progress : bool

    Returns
    -------
    MergeResult
    """
    p = FusionParams() if params is None else params
    alpha, beta = float(noise[0]), float(noise[1])
    n, h, w = burst.shape[:3]
    ho, wo = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    spreads = alignment.spreads
    flow_buf = np.empty((h, w, 2), np.float32)
    ref_frame = burst[reference] if alignment.reference_frame is None else alignment.reference_frame

    is_cfa = cfa is not None
    cell = cell_channels(cfa) if is_cfa else _NO_CELL
    nc = 3 if (is_cfa or burst.ndim == 4) else 1
    grey_bin = 2 if is_cfa else 1
    # Noise of one grey / guide pixel relative to one input sample.
    grey_gain = 0.25 if is_cfa else (1.0 / 3.0 if nc == 3 else 1.0)
    channel_noise = np.array([1.0, 0.5, 1.0] if is_cfa else [1.0] * nc, np.float32)

    def as3(frame: np.ndarray) -> np.ndarray:
        return frame[..., None] if frame.ndim == 2 else frame

    taps = np.asarray(p.robustness_mean_taps, np.float32)
    # with a known lens the output grid is rectified: guide and fallback use
    # the reference resampled onto it (its own flow is nonzero then)
    ref3 = as3(ref_frame)
    ref_guide = guide_image(ref3, cell, is_cfa)
    ref_mean, ref_var = local_stats(ref_guide, taps)
    num = np.zeros((ho, wo, nc), np.float32)
    den = np.zeros((ho, wo, 3 if is_cfa else 1), np.float32)
    mean_rob = np.ones(n, np.float32)

    for k in frame_progress(n, progress, "fuse"):
        frame3 = as3(burst[k])
        flow = alignment.frame_flow(k, out=flow_buf)
        inv_cov = frame_kernels(frame3, grey_bin, (alpha * grey_gain, beta * grey_gain), p)
        if k == reference:
            rob = np.ones(ref_guide.shape[1:], np.float32)
        else:
            warped = warp_guide(guide_image(frame3, cell, is_cfa), flow, grey_bin)
            if spreads[k] is not None:
                spread = _tile_spread_on_guide(spreads[k].irregularity, spreads[k].motion, ref_guide.shape[1:],
                                               grey_bin)
            else:
                spread = _flow_spread(flow, ref_guide.shape[1:], grey_bin, p.irregularity_cell)
            rob = robustness(
                ref_mean, ref_var, warped, alpha, beta, channel_noise, spread,
                p.irregularity_threshold, p.robustness_s, p.robustness_s_irregular,
                p.robustness_t, p.min_filter, taps, p.robustness_sigma_gain,
            )
            del warped
            mean_rob[k] = rob.mean()
        if is_cfa:
            accumulate(burst[k], flow, inv_cov, rob, scale, num, den, cell=cell, grey_bin=grey_bin)
        else:
            accumulate(frame3, flow, inv_cov, rob, scale, num, den)

    confidence = normalize(num, den, ref3, is_cfa, cell, float(scale), p.fallback_radius, p.min_weight, num)
    del den
    gain = sharpen_gain(p, scale, cfa)
    if gain > 0:
        sharpen(num, gaussian_weights(p.sharpen_sigma * scale), gain, alpha, beta, p.sharpen_noise_gate,
                p.sharpen_overshoot)
    return MergeResult(num[..., 0] if nc == 1 else num, confidence, mean_rob)


def _flow_spread(flow: np.ndarray, shape: tuple[int, int], guide_bin: int, cell: int) -> np.ndarray:
    """Irregularity of the flow on the guide grid, input px.

    The flow is sampled at the centres of ``cell``-px cells; the spread is the
    larger of the two components' max - min over each cell's 3x3
    neighbourhood (a smooth motion such as a translation or a small rotation
    has a small spread; broken or noisy alignment has a large one).
    """
    h, w = flow.shape[:2]
    c = max(1, int(cell))
    coarse = flow[c // 2 :: c, c // 2 :: c]
    if coarse.shape[0] == 0 or coarse.shape[1] == 0:
        coarse = flow[:1, :1]
    spread = np.zeros(coarse.shape[:2], np.float32)
    for k in range(2):
        comp = coarse[..., k]
        spread = np.maximum(
            spread, maximum_filter(comp, 3, mode="nearest") - minimum_filter(comp, 3, mode="nearest")
        )
    gy = np.minimum(((np.arange(shape[0]) + 0.5) * guide_bin) // c, spread.shape[0] - 1).astype(np.intp)
    gx = np.minimum(((np.arange(shape[1]) + 0.5) * guide_bin) // c, spread.shape[1] - 1).astype(np.intp)
    return np.ascontiguousarray(spread[gy[:, None], gx[None, :]], dtype=np.float32)


def _tile_spread_on_guide(spread: np.ndarray, motion: TileMotion, shape: tuple[int, int], guide_bin: int) -> np.ndarray:
    """Nearest tile's irregularity (input px) at every guide pixel."""
    ty, tx = spread.shape
    g = float(motion.grid_factor)
    out = []
    for n_pix, centre, n_tiles in ((shape[0], motion.centre_y, ty), (shape[1], motion.centre_x, tx)):
        r = guide_bin * (np.arange(n_pix) + 0.5) - 0.5  # input px
        reg = (r + 0.5) / g - 0.5  # registration px
        out.append(np.clip(np.rint((reg - centre) / motion.stride), 0, n_tiles - 1).astype(np.intp))
    return np.ascontiguousarray(spread[out[0][:, None], out[1][None, :]], dtype=np.float32)
