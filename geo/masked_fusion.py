"""Masked kernel fusion of translated passes over one window (arrays only).

:func:`mfsr.fuse` has no per-pixel validity input, so the satellite side
drives the same Numba kernels itself (:mod:`mfsr.kernels`), with two changes:

- **Validity as a channel.** The accumulation kernel weighs all samples a
  frame gives an output pixel with one weight sum, so a masked sample cannot
  be left out of it. Instead every frame is accumulated with one more
  channel, its validity (1 or 0), and its values set to 0 where invalid:
  the extra channel then sums ``w * valid`` over the samples, the exact
  normaliser of the value channels. A masked, nodata or out-of-extent
  sample adds nothing to either, so it never reaches the output, and valid
  samples right next to it still count (no erosion of the masks).
- **Robustness against a clear composite.** Satellite references are often
  cloudy, so each pass is compared not with the reference pass but with the
  per-pixel median of all valid passes resampled to the reference grid;
  content that disagrees with the majority (an unmasked cloud edge, a
  change) is rejected. The reference pass is compared too, and breaks ties
  (two valid passes). Rejection steps are softened by a small blur on the
  accepted side; a floor weight (larger for the reference) keeps a value
  wherever some pass is valid.

Every pass is a pure translation of the reference on this window: the
caller reads pass ``k`` so that reference pixel ``(i, j)`` of the window lies
at ``(i + f_y, j + f_x)`` of the pass's array; the flow is then the constant
``f``. Output pixels no valid sample reached have zero weight and become
nodata (NaN) in :func:`finish_window`.

Conventions: DESIGN.md (arrays (row, col); flow (dy, dx) reference -> frame;
pixel-area output grid: output pixel ``(y, x)`` at scale ``s`` is centred at
reference coordinate ``((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from mfsr.fusion import FusionParams
from mfsr.kernels.accumulate import accumulate_frame
from mfsr.kernels.robustness import local_stats, robustness
from mfsr.kernels.structure_tensor import grey_image, kernel_inverse_covariance, structure_tensor

__all__ = [
    "HALO", "warp_translate", "masked_median", "fuse_window", "finish_window",
    "back_project", "upsample_area",
]

# Gaussian blur of the robustness map, reference px (see fuse_window).
ROBUSTNESS_BLUR = 1.5
# Smallest robustness weight of a valid pixel (see fuse_window).
ROBUSTNESS_FLOOR = 1e-3
# Context (input px) every window needs around the pixels it outputs so that
# the result does not depend on where the window ends: composite warp (1),
# robustness statistics (1), minimum filter (2) and blur (5), sample window
# (2) and bilinear look-up (1), back-projection (2 per iteration); the
# structure tensor (Gaussian sigma 1 + gradient, 4) is a parallel path.
# 24 px covers it with room; tiles overlap by twice this.
HALO = 24


def warp_translate(frame: np.ndarray, f: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of ``frame`` at ``(i + f_y, j + f_x)`` for ``i < shape[0]``, ``j < shape[1]``.

    Parameters
    ----------
    frame : ndarray, shape (H, W, ...) with H >= shape[0] + 1, W >= shape[1] + 1
    f : (float, float)
        Fractional offset (dy, dx) in [0, 1).
    shape : (int, int)

    Returns
    -------
    ndarray of float32, shape ``shape + frame.shape[2:]``
    """
    h, w = shape
    fy, fx = np.float32(f[0]), np.float32(f[1])
    a = frame[:h, :w]
    b = frame[:h, 1 : w + 1]
    c = frame[1 : h + 1, :w]
    d = frame[1 : h + 1, 1 : w + 1]
    one = np.float32(1.0)
    return ((one - fy) * ((one - fx) * a + fx * b) + fy * ((one - fx) * c + fx * d)).astype(np.float32)


def _crop_padded(arr: np.ndarray, y0: int, x0: int, h: int, w: int, fill) -> np.ndarray:
    """``arr[y0 : y0 + h, x0 : x0 + w]`` with ``fill`` where it lies outside ``arr``."""
    out = np.full((h, w) + arr.shape[2:], fill, arr.dtype)
    a0, a1 = max(y0, 0), min(y0 + h, arr.shape[0])
    b0, b1 = max(x0, 0), min(x0 + w, arr.shape[1])
    if a1 > a0 and b1 > b0:
        out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = arr[a0:a1, b0:b1]
    return out


def masked_median(stack: np.ndarray, valid: np.ndarray, prefer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the valid entries of a stack.

    Parameters
    ----------
    stack : ndarray of float32, shape (N, H, W)
    valid : ndarray of bool, shape (N, H, W)
    prefer : int or None
        For an even count, take the middle value closer to entry
        ``stack[prefer]`` (where it is valid) instead of the mean of the two
        middle values: with two valid passes, one of them cloudy, the mean
        would be half cloud and reject both, the reference's pick keeps the
        reference.

    Returns
    -------
    median : ndarray of float32, shape (H, W)
        Median of the valid values (for an even count the mean of the two
        middle ones, or the one closer to ``prefer``); 0 where none is valid.
    n_valid : ndarray of int, shape (H, W)
    """
    s = np.where(valid, stack, np.float32(np.inf))
    s.sort(axis=0)
    n = valid.sum(axis=0)
    lo = np.clip((n - 1) // 2, 0, None)
    hi = np.clip(n // 2, 0, stack.shape[0] - 1)
    a = np.take_along_axis(s, lo[None], axis=0)[0]
    b = np.take_along_axis(s, hi[None], axis=0)[0]
    mid = np.float32(0.5) * (a + b)
    if prefer is not None:
        ref = stack[prefer]
        pick = np.where(np.abs(a - ref) <= np.abs(b - ref), a, b)
        mid = np.where(valid[prefer], pick, mid)
    med = np.where(n > 0, mid, np.float32(0.0)).astype(np.float32)
    return med, n


def fuse_window(
    frames: list[np.ndarray],
    valids: list[np.ndarray],
    offsets: np.ndarray,
    ref_shape: tuple[int, int],
    out_shape: tuple[int, int],
    scale: float,
    noise: tuple[float, float],
    params: FusionParams | None = None,
    *,
    composite_robustness: bool = True,
    reference: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accumulate translated, masked frames onto one window's output grid.

    Parameters
    ----------
    frames : list of ndarray of float32, shape (Hf_k, Wf_k, C)
        The passes' pixels, radiometrically matched, nominally [0, 1].
        Invalid pixels may hold anything (they are overwritten in place by
        the composite, which shapes the kernels there; their weight is 0).
    valids : list of ndarray of bool, shape (Hf, Wf)
        True where the pixel is data (not nodata, masked or outside).
    offsets : ndarray of float, shape (N, 2)
        (dy, dx): reference pixel (i, j) of the window is at (i + dy, j + dx)
        of frame k's array (any value; the flow of frame k).
    ref_shape : (int, int)
        (Hr, Wr) of the window on the reference (working) grid.
    out_shape : (int, int)
        (Ho, Wo) of the window's output grid (output pixel (y, x) centred
        at window coordinate ((y + 0.5)/s - 0.5, ...)).
    scale : float
    noise : (float, float)
        Noise model (alpha, beta) of one normalised sample.
    params : FusionParams, optional
        Kernel, robustness and sharpening parameters (tuned defaults).
    composite_robustness : bool
        Weigh each frame by its agreement with the clear composite (True)
        or by validity alone.
    reference : int or None
        Index of the reference frame in ``frames``: it breaks ties of the
        composite (see :func:`masked_median`).

    Returns
    -------
    num : ndarray of float32, shape (Ho, Wo, C)
        Weighted sums of sample values.
    den : ndarray of float32, shape (Ho, Wo)
        Sum of the weights of valid samples (0 where none contributed).
    count : ndarray of uint16, shape (Ho, Wo)
        Number of frames that contributed and were not rejected by the
        composite test (rejected frames keep a small floor weight,
        ``ROBUSTNESS_FLOOR``, so that a value exists wherever some frame is
        valid).

    Notes
    -----
    Memory: the N frames plus about ``(2C + 10) * Hr * Wr`` float32 of
    working maps and ``(C + 4) * Ho * Wo`` of output.
    """
    p = FusionParams() if params is None else params
    n = len(frames)
    hr, wr = ref_shape
    ho, wo = out_shape
    nc = frames[0].shape[2]
    alpha, beta = float(noise[0]), float(noise[1])
    offsets = np.asarray(offsets, np.float64).reshape(n, 2)
    # Nearest frame pixel of reference pixel i is i + q (q = round(f)).
    qy = [int(np.floor(f[0] + 0.5)) for f in offsets]
    qx = [int(np.floor(f[1] + 0.5)) for f in offsets]

    # Frames resampled to the reference grid (grey), usable where all four
    # bilinear neighbours are valid.
    grey_w = np.empty((n, hr, wr), np.float32)
    ok_w = np.empty((n, hr, wr), bool)
    for k in range(n):
        g = frames[k].mean(axis=2, dtype=np.float32) if nc > 1 else frames[k][..., 0]
        iy, ix = int(np.floor(offsets[k, 0])), int(np.floor(offsets[k, 1]))
        gp = _crop_padded(g, iy, ix, hr + 1, wr + 1, 0.0)
        vp = _crop_padded(valids[k], iy, ix, hr + 1, wr + 1, False)
        grey_w[k] = warp_translate(gp, (offsets[k, 0] - iy, offsets[k, 1] - ix), (hr, wr))
        # A neighbour with zero bilinear weight need not be valid (a frame
        # exactly on the grid, like the reference, is usable to its edge).
        fy, fx = offsets[k, 0] - iy, offsets[k, 1] - ix
        ok = vp[:hr, :wr].copy()
        if fx > 0:
            ok &= vp[:hr, 1:]
        if fy > 0:
            ok &= vp[1:, :wr]
        if fx > 0 and fy > 0:
            ok &= vp[1:, 1:]
        ok_w[k] = ok
    composite, _ = masked_median(grey_w, ok_w, reference)
    ok_all = ok_w
    if composite_robustness:
        taps = np.asarray(p.robustness_mean_taps, np.float32)
        ref_mean, ref_var = local_stats(composite[None], taps)
        spread = np.zeros((hr, wr), np.float32)
        chan_noise = np.full(1, 1.0 / nc, np.float32)

    # Invalid frame pixels take the (grey) composite, so the structure
    # tensor of valid pixels near a cloud does not see the cloud's edge (and
    # the robustness compares them with the composite itself: no rejection
    # spreads from a masked cloud). Their weight is zero either way.
    comp_rows = [np.clip(np.arange(frames[k].shape[0]) - qy[k], 0, hr - 1) for k in range(n)]
    comp_cols = [np.clip(np.arange(frames[k].shape[1]) - qx[k], 0, wr - 1) for k in range(n)]
    grey_w = np.where(ok_all, grey_w, composite[None])
    del ok_all

    nacc = nc + 1  # the value channels and the validity channel
    num = np.zeros((ho, wo, nacc), np.float32)
    den = np.zeros((ho, wo, 1), np.float32)  # all samples' weights: not used
    count = np.zeros((ho, wo), np.uint16)
    prev = np.empty((ho, wo), np.float32)
    near_y = np.clip(np.floor((np.arange(ho) + 0.5) / scale), 0, hr - 1).astype(np.intp)
    near_x = np.clip(np.floor((np.arange(wo) + 0.5) / scale), 0, wr - 1).astype(np.intp)
    flow = np.empty((2, 2, 2), np.float32)
    gain = 1.0 / nc
    for k in range(n):
        frame = frames[k]
        valid = valids[k]
        if not valid.any():
            continue
        bad = ~valid
        if bad.any():
            fill = composite[comp_rows[k][:, None], comp_cols[k][None, :]]
            frame[bad] = fill[bad][:, None]
        if composite_robustness:
            rob = robustness(
                ref_mean, ref_var, grey_w[k][None], alpha, beta, chan_noise, spread,
                p.irregularity_threshold, p.robustness_s, p.robustness_s_irregular,
                p.robustness_t, p.min_filter, taps, p.robustness_sigma_gain,
            )
            # The kernel's 5x5 local minimum leaves square steps where a
            # pass is rejected; between dates whose radiometry differs, steps
            # show as blocks. A small blur makes them gradual, on the
            # accepted side only (the minimum with the map itself never
            # raises a weight into a rejected area).
            if ROBUSTNESS_BLUR > 0:
                rob = np.minimum(rob, gaussian_filter(rob, ROBUSTNESS_BLUR, mode="nearest", truncate=3.0))
            accepted = rob > 0
            # A floor keeps a value wherever some pass is valid even if the
            # composite test rejects them all (aliased texture); where others
            # agree, a rejected pass weighs 1e-3 of them. Where all are
            # rejected, the reference's floor is 1000 times the others', so
            # the reference, not a blend with an unmasked cloud, fills in.
            floor = ROBUSTNESS_FLOOR if (reference is None or k == reference) else 1e-3 * ROBUSTNESS_FLOOR
            weight = np.maximum(rob, np.float32(floor))
        else:
            accepted = np.ones((hr, wr), bool)
            weight = np.ones((hr, wr), np.float32)
        grey = grey_image(frame, 1)
        tensor = structure_tensor(grey, p.tensor_sigma)
        inv_cov = kernel_inverse_covariance(
            tensor, grey, alpha * gain, beta * gain,
            p.k_detail, p.k_denoise, p.k_stretch, p.k_shrink, p.d_th, p.d_tr,
            p.radius_min, p.radius_max, 1.0,
        )
        del tensor, grey
        # Values (0 where invalid) and the validity, accumulated alike.
        acc = np.empty(frame.shape[:2] + (nacc,), np.float32)
        acc[..., :nc] = np.where(valid[..., None], frame, np.float32(0.0))
        acc[..., nc] = valid
        flow[...] = np.asarray(offsets[k], np.float32)
        prev[...] = num[..., nc]
        # The kernel keeps at most 3 channels beside its weight sum: more go
        # in groups of 3 with the same weights.
        for c0 in range(0, nacc, 3):
            c1 = min(c0 + 3, nacc)
            if c0 == 0 and c1 == nacc:
                accumulate_frame(acc, flow, inv_cov, 1, weight, 1, float(scale), num, den)
                break
            part = np.ascontiguousarray(num[..., c0:c1])
            accumulate_frame(np.ascontiguousarray(acc[..., c0:c1]), flow, inv_cov, 1, weight, 1,
                             float(scale), part, den)
            num[..., c0:c1] = part
        del acc
        # A pass counts where it added valid weight and the composite test
        # did not reject it (at the output pixel's nearest reference pixel).
        count += (num[..., nc] > prev) & accepted[near_y[:, None], near_x[None, :]]
    den_valid = np.ascontiguousarray(num[..., nc])
    return np.ascontiguousarray(num[..., :nc]), den_valid, count


def finish_window(
    num: np.ndarray,
    den: np.ndarray,
    scale: float,
    noise: tuple[float, float],
    params: FusionParams | None = None,
) -> np.ndarray:
    """Normalise the sums and sharpen, leaving NaN where nothing contributed.

    The unsharp mask is the one of :func:`mfsr.kernels.accumulate.sharpen`
    (gain ``amount * d^2 / (d^2 + gate * (alpha I + beta))`` on the
    luminance detail ``d``), computed here as a normalised convolution over
    the valid output pixels so that nodata holes do not ring.

    Parameters
    ----------
    num : ndarray of float32, shape (Ho, Wo, C)
    den : ndarray of float32, shape (Ho, Wo)
    scale : float
    noise : (float, float)
    params : FusionParams, optional

    Returns
    -------
    image : ndarray of float32, shape (Ho, Wo, C)
        NaN where ``den == 0``.
    """
    p = FusionParams() if params is None else params
    ok = den > 0
    safe = np.where(ok, den, np.float32(1.0))
    img = num / safe[..., None]
    if p.sharpen_amount > 0 and ok.any():
        lum = np.where(ok, img.mean(axis=2), np.float32(0.0)).astype(np.float32)
        sigma = p.sharpen_sigma * scale
        okf = ok.astype(np.float32)
        wsum = gaussian_filter(okf, sigma, mode="nearest", truncate=3.0)
        blurred = gaussian_filter(lum, sigma, mode="nearest", truncate=3.0) / np.maximum(wsum, 1e-6)
        d = lum - blurred
        e = d * d
        n2 = p.sharpen_noise_gate * np.maximum(noise[0] * lum + noise[1], 0.0)
        g = (p.sharpen_amount * e / (e + n2 + 1e-20) * d).astype(np.float32)
        img += g[..., None]
    img[~ok] = np.nan
    return img.astype(np.float32, copy=False)


def upsample_area(img: np.ndarray, out_shape: tuple[int, int], scale: float) -> np.ndarray:
    """Bilinear upsampling on the pixel-area grid (output pixel ``y`` samples input ``(y + 0.5)/s - 0.5``).

    Parameters
    ----------
    img : ndarray of float32, shape (h, w) or (h, w, C)
    out_shape : (int, int)
    scale : float

    Returns
    -------
    ndarray of float32, shape ``out_shape + img.shape[2:]``; edges replicated.
    """
    h, w = img.shape[:2]
    ys = np.clip((np.arange(out_shape[0]) + 0.5) / scale - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_shape[1]) + 0.5) / scale - 0.5, 0, w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.intp), max(h - 2, 0))
    x0 = np.minimum(np.floor(xs).astype(np.intp), max(w - 2, 0))
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0).astype(np.float32)
    fx = (xs - x0).astype(np.float32)
    extra = (None,) * (img.ndim - 2)
    fy = fy[(slice(None), None) + extra]
    fx = fx[(None, slice(None)) + extra]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def back_project(
    image: np.ndarray,
    reference: np.ndarray,
    valid: np.ndarray,
    scale: float,
    iterations: int = 1,
) -> np.ndarray:
    """Make the fused image consistent with the reference pass (iterative back-projection).

    Each iteration re-degrades the image to the reference grid (exact
    pixel-area means, :func:`mfsr.metrics.degrade`), and adds the bilinear
    upsampling of the residual ``reference - degraded`` where the reference
    is valid. The fusion kernel smooths (it interpolates, it does not
    deconvolve the pixel integration); one iteration restores the
    reference's pass band and measured +0.1 to +1.8 dB cPSNR on synthetic
    passes, without the ringing of an unsharp mask.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
        Fused image on the window's output grid; NaN where empty (kept).
    reference : ndarray of float32, shape (Hr, Wr, C)
        Reference pass on the window (normalised).
    valid : ndarray of bool, shape (Hr, Wr)
    scale : float
    iterations : int

    Returns
    -------
    ndarray of float32, shape (Ho, Wo, C)
    """
    from mfsr.metrics import degrade

    if iterations <= 0:
        return image
    empty = np.isnan(image[..., 0])
    out = np.where(empty[..., None], np.float32(0.0), image)
    # Output pixels of empty ones are not data: keep the reference's
    # residual away from where the image holds no value.
    ok = valid & ~np.isnan(degrade(np.where(empty, np.nan, 0.0).astype(np.float32), scale, shape=valid.shape))
    for _ in range(iterations):
        low = degrade(out, scale, shape=valid.shape)
        if low.ndim == 2:
            low = low[..., None]
        resid = np.where(ok[..., None], reference - low, np.float32(0.0)).astype(np.float32)
        out = out + upsample_area(resid, out.shape[:2], scale)
    out[empty] = np.nan
    return out.astype(np.float32, copy=False)
