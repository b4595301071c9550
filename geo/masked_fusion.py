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
  wherever some pass is valid, or, without the floor for the other passes
  (``reject_floor=False``), wherever the reference is: the reference pass
  is the product's anchor (back-projection pulls the product to it), so
  no rejected content of another pass fills a pixel that every pass
  fails.

Every pass is a pure translation of the reference on this window: the
caller reads pass ``k`` so that reference pixel ``(i, j)`` of the window lies
at ``(i + f_y, j + f_x)`` of the pass's array; the flow is then the constant
``f``. Output pixels no valid sample reached have zero weight and become
nodata (NaN) in :func:`finish_window`.

Conventions: docs/conventions.md (arrays (row, col); flow (dy, dx) reference -> frame;
pixel-area output grid: output pixel ``(y, x)`` at scale ``s`` is centred at
reference coordinate ``((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d, gaussian_filter, map_coordinates, maximum_filter, minimum_filter

from mfsr.fusion_params import FusionParams
from mfsr.kernels.robustness import local_stats, robustness
from mfsr.merge import accumulate, frame_kernels

__all__ = [
    "HALO", "GUARD_ROUNDS", "warp_translate", "masked_median", "fuse_window", "finish_window",
    "back_project", "upsample_area", "sample_radius_floor", "nyquist_guard", "clamp_to_bounds",
    "fill_from_neighbours", "upsample_cubic", "upsample_spline", "nyquist_energy", "nearest_input",
]

# Gaussian blur of the robustness map, reference px (see fuse_window).
ROBUSTNESS_BLUR = 1.5
# Smallest robustness weight of a valid pixel (see fuse_window).
ROBUSTNESS_FLOOR = 1e-3
# Context (input px) every window needs around the pixels it outputs so that
# the result does not depend on where the window ends: composite warp (1),
# robustness statistics (1), minimum filter (2) and blur (5), sample window
# (2) and bilinear look-up (1), back-projection (2 per iteration, plus the
# cubic spline's prefilter tail, which decays by 0.27 per px); the
# structure tensor (Gaussian sigma 1 + gradient, 4) is a parallel path.
# The Nyquist guard adds 12 output px (6 input px at scale 2, 8 at scale
# 1.5), the hole filling up to 3 * FILL_MAX_SIGMA output px.
# 32 px covers it; tiles overlap by twice this.
HALO = 32
# Kernel radius floor, input px, per unit of mean sample spacing
# (1 / sqrt(passes)); see sample_radius_floor.
RADIUS_PER_SPACING = 0.87
# Nyquist guard (see nyquist_guard): taps, cutoff (cycles per output px),
# Kaiser beta; applied from this scale up.
GUARD_TAPS = 25
GUARD_CUTOFF = 0.33
GUARD_BETA = 7.0
GUARD_MIN_SCALE = 1.5
# Rounds of guard and overshoot clamp after the first clamp (see
# geo.pipeline: each clamp's kinks are smoothed by the next guard).
GUARD_ROUNDS = 2
# Largest Gaussian (output px) used to fill pixels no accepted pass covers.
FILL_MAX_SIGMA = 8.0
# A weight sum below this counts as no contribution (kernel tails).
MIN_DEN = 1e-6


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


def _positions(offset, field: np.ndarray) -> np.ndarray:
    """Frame coordinates (y, x) of every reference pixel of the window, shape (2, Hr, Wr)."""
    hr, wr = field.shape[:2]
    ii, jj = np.mgrid[0:hr, 0:wr]
    return np.stack([ii + (offset[0] + field[..., 0]), jj + (offset[1] + field[..., 1])]).astype(np.float64)


def _warp_bilinear(grey: np.ndarray, valid: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of ``grey`` at ``pos``, and whether every neighbour with weight was valid.

    As :func:`warp_translate` with its validity rule, at per-pixel positions
    (outside the frame is invalid).
    """
    h, w = grey.shape
    y0 = np.floor(pos[0]).astype(np.intp)
    x0 = np.floor(pos[1]).astype(np.intp)
    fy = (pos[0] - y0).astype(np.float32)
    fx = (pos[1] - x0).astype(np.float32)

    def tap(dy, dx):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
        return grey[yc, xc], valid[yc, xc] & inside

    a, va = tap(0, 0)
    b, vb = tap(0, 1)
    c, vc = tap(1, 0)
    d, vd = tap(1, 1)
    one = np.float32(1.0)
    out = ((one - fy) * ((one - fx) * a + fx * b) + fy * ((one - fx) * c + fx * d)).astype(np.float32)
    # A neighbour with zero bilinear weight need not be valid.
    ok = va & (vb | (fx == 0)) & (vc | (fy == 0)) & (vd | (fx == 0) | (fy == 0))
    return out, ok


def _nearest_samples(frame: np.ndarray, valid: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest frame sample of every reference pixel (0 / invalid outside the frame)."""
    h, w = valid.shape
    yy = np.floor(pos[0] + 0.5).astype(np.intp)
    xx = np.floor(pos[1] + 0.5).astype(np.intp)
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    yc, xc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
    ok = valid[yc, xc] & inside
    return np.where(ok[..., None], frame[yc, xc], np.float32(0.0)).astype(frame.dtype), ok


def _inverse_nearest(shape: tuple[int, int], offset, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference pixel of every frame pixel, as index arrays into the window.

    The displacement is smooth, so one fixed-point step from the translation
    (its field read at the translated position) is within a fraction of a
    pixel: enough for what uses it (the composite shown to invalid pixels).
    """
    hr, wr = field.shape[:2]
    qq, pp = np.mgrid[0 : shape[0], 0 : shape[1]]
    ry = np.clip(np.rint(qq - offset[0]), 0, hr - 1).astype(np.intp)
    rx = np.clip(np.rint(pp - offset[1]), 0, wr - 1).astype(np.intp)
    f = field[ry, rx]
    ry = np.clip(np.rint(qq - offset[0] - f[..., 0]), 0, hr - 1).astype(np.intp)
    rx = np.clip(np.rint(pp - offset[1] - f[..., 1]), 0, wr - 1).astype(np.intp)
    return ry, rx


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
    radius_floor: float = 0.0,
    reject_floor: bool = True,
    return_bounds: bool = False,
    fields=None,
):
    """Accumulate translated (or locally displaced), masked frames onto one window's output grid.

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
    radius_floor : float
        Smallest kernel radius, input px (see :func:`sample_radius_floor`);
        raises ``params.radius_min`` when larger.
    reject_floor : bool
        Keep a floor weight for all rejected frames (True: a value wherever
        some frame is valid, taken from rejected frames where all are
        rejected) or for the reference frame only (False: where every frame
        is rejected, the reference's own samples give the value; where the
        reference is invalid there too, the pixel gets ``den == 0`` and
        :func:`fill_from_neighbours` fills it from accepted ones). The
        reference keeps its floor because it is the product's anchor:
        back-projection pulls the product to it wherever it is valid, and
        aliased texture, where the sub-pixel phases of the passes differ
        more than the composite test allows, rejects every frame while the
        reference still holds the scene. Without a ``reference``, False
        gives rejected content no weight at all.
    return_bounds : bool
        Also return the local range of the accepted samples (see below).
    fields : list of (ndarray of float32, shape (Hr, Wr, 2), or None), optional
        Per frame, a displacement (dy, dx) added to ``offsets[k]`` at every
        reference pixel of the window: reference pixel (i, j) is then at
        ``(i, j) + offsets[k] + fields[k][i, j]`` of frame k's array (a
        global model beyond translation, a local residual). None: the
        translation alone.

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
    lo, hi : ndarray of float32, shape (Hr, Wr, C)
        Only with ``return_bounds``: per reference pixel and band, the
        smallest and largest value of the valid samples that are accepted
        or belong to the reference frame, within one input px (nearest
        samples, 3 x 3 neighbourhood): the range an interpolation of them
        can honestly reach. The reference's samples always count: they are
        what back-projection restores, also where the composite test
        rejects them (aliased texture). +inf / -inf where none.
    covered : ndarray of bool, shape (Hr, Wr)
        Only with ``return_bounds``: some frame has a valid sample there
        (accepted or not).

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
    if fields is None:
        fields = [None] * n
    # Nearest frame pixel of reference pixel i is i + q (q = round(f)).
    qy = [int(np.floor(f[0] + 0.5)) for f in offsets]
    qx = [int(np.floor(f[1] + 0.5)) for f in offsets]
    # Frame positions of the reference pixels of displaced frames.
    pos = [None if fields[k] is None else _positions(offsets[k], fields[k]) for k in range(n)]

    # Frames resampled to the reference grid (grey), usable where all four
    # bilinear neighbours are valid.
    grey_w = np.empty((n, hr, wr), np.float32)
    ok_w = np.empty((n, hr, wr), bool)
    for k in range(n):
        g = frames[k].mean(axis=2, dtype=np.float32) if nc > 1 else frames[k][..., 0]
        if pos[k] is not None:
            grey_w[k], ok_w[k] = _warp_bilinear(g, valids[k], pos[k])
            continue
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
    comp_at = [None if pos[k] is None else _inverse_nearest(frames[k].shape[:2], offsets[k], fields[k])
               for k in range(n)]
    grey_w = np.where(ok_all, grey_w, composite[None])
    del ok_all

    nacc = nc + 1  # the value channels and the validity channel
    num = np.zeros((ho, wo, nacc), np.float32)
    den = np.zeros((ho, wo, 1), np.float32)  # all samples' weights: not used
    count = np.zeros((ho, wo), np.uint16)
    prev = np.empty((ho, wo), np.float32)
    near_y, near_x = nearest_input(ho, scale, hr), nearest_input(wo, scale, wr)
    flow = np.empty((2, 2, 2), np.float32)
    gain = 1.0 / nc
    radius_min = max(float(p.radius_min), float(radius_floor))
    if return_bounds:
        lo_b = np.full((hr, wr, nc), np.inf, np.float32)
        hi_b = np.full((hr, wr, nc), -np.inf, np.float32)
        covered = np.zeros((hr, wr), bool)
    for k in range(n):
        frame = frames[k]
        valid = valids[k]
        if not valid.any():
            continue
        if return_bounds:
            # Nearest sample of every reference pixel (before the fill below
            # overwrites invalid pixels with the composite).
            if pos[k] is None:
                near = _crop_padded(frame, qy[k], qx[k], hr, wr, 0.0)
                near_ok = _crop_padded(valid, qy[k], qx[k], hr, wr, False)
            else:
                near, near_ok = _nearest_samples(frame, valid, pos[k])
            covered |= near_ok
        bad = ~valid
        if bad.any():
            if comp_at[k] is None:
                fill = composite[comp_rows[k][:, None], comp_cols[k][None, :]]
            else:
                fill = composite[comp_at[k]]
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
            # Without the floor for rejected passes, the reference keeps its
            # own: it is what back-projection restores anyway, and holes
            # filled from neighbours would blur its aliased texture.
            keep_floor = reject_floor or k == reference
            weight = np.maximum(rob, np.float32(floor)) if keep_floor else rob.astype(np.float32)
        else:
            accepted = np.ones((hr, wr), bool)
            weight = np.ones((hr, wr), np.float32)
        if return_bounds:
            use = near_ok & (accepted | (k == reference))
            lo_b = np.where(use[..., None], np.minimum(lo_b, near), lo_b)
            hi_b = np.where(use[..., None], np.maximum(hi_b, near), hi_b)
        inv_cov = frame_kernels(frame, 1, (alpha * gain, beta * gain), p, radius_min=radius_min,
                                radius_max=max(p.radius_max, radius_min))
        # Values (0 where invalid) and the validity, accumulated alike.
        acc = np.empty(frame.shape[:2] + (nacc,), np.float32)
        acc[..., :nc] = np.where(valid[..., None], frame, np.float32(0.0))
        acc[..., nc] = valid
        if fields[k] is None:
            flow[...] = np.asarray(offsets[k], np.float32)
            frame_flow = flow
        else:
            frame_flow = np.ascontiguousarray(fields[k] + np.asarray(offsets[k], np.float32), dtype=np.float32)
        prev[...] = num[..., nc]
        accumulate(acc, frame_flow, inv_cov, weight, scale, num, den)
        del acc
        # A pass counts where it added valid weight and the composite test
        # did not reject it (at the output pixel's nearest reference pixel).
        count += (num[..., nc] > prev) & accepted[near_y[:, None], near_x[None, :]]
    den_valid = np.ascontiguousarray(num[..., nc])
    if not reject_floor:
        # Kernel tails of far samples are not a contribution.
        den_valid[den_valid < MIN_DEN] = 0.0
    out = (np.ascontiguousarray(num[..., :nc]), den_valid, count)
    if return_bounds:
        lo_b = minimum_filter(lo_b, size=(3, 3, 1), mode="nearest")
        hi_b = maximum_filter(hi_b, size=(3, 3, 1), mode="nearest")
        out = out + (lo_b, hi_b, covered)
    return out


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


def nearest_input(n_out: int, scale: float, n_in: int) -> np.ndarray:
    """Index of the input pixel nearest to each of ``n_out`` output pixels (pixel-area geometry), clipped."""
    return np.clip(np.floor((np.arange(n_out) + 0.5) / scale), 0, n_in - 1).astype(np.intp)


def _fill_nearest(x: np.ndarray, missing: np.ndarray) -> np.ndarray:
    # Missing pixels take their nearest present pixel's values (for filtering
    # or interpolation across them); unchanged where nothing is missing.
    if not missing.any():
        return x
    from scipy.ndimage import distance_transform_edt

    idx = distance_transform_edt(missing, return_distances=False, return_indices=True)
    return x[idx[0], idx[1]]


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


def upsample_spline(img: np.ndarray, out_shape: tuple[int, int], scale: float,
                    offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Cubic-spline upsampling on the pixel-area grid (output pixel ``y`` samples input ``(y + 0.5)/s - 0.5 + dy``).

    Parameters
    ----------
    img : ndarray of float32, shape (h, w) or (h, w, C)
        Finite values.
    out_shape : (int, int)
    scale : float
    offset : (float, float)
        ``(dy, dx)``, input px: where the grid's origin lies in ``img``.

    Returns
    -------
    ndarray of float32, shape ``out_shape + img.shape[2:]``; edges replicated.
    """
    ys = (np.arange(out_shape[0]) + 0.5) / scale - 0.5 + offset[0]
    xs = (np.arange(out_shape[1]) + 0.5) / scale - 0.5 + offset[1]
    coords = [np.broadcast_to(ys[:, None], out_shape), np.broadcast_to(xs[None, :], out_shape)]
    planes = img[..., None] if img.ndim == 2 else img
    out = np.empty(tuple(out_shape) + (planes.shape[2],), np.float32)
    for c in range(planes.shape[2]):
        out[..., c] = map_coordinates(planes[..., c].astype(np.float64), coords, order=3, mode="nearest")
    return out[..., 0] if img.ndim == 2 else out


def back_project(
    image: np.ndarray,
    reference: np.ndarray,
    valid: np.ndarray,
    scale: float,
    iterations: int = 1,
    *,
    order: int = 3,
) -> np.ndarray:
    """Make the fused image consistent with the reference pass (iterative back-projection).

    Each iteration re-degrades the image to the reference grid (exact
    pixel-area means, :func:`mfsr.metrics.degrade`), and adds the
    upsampling of the residual ``reference - degraded`` where the reference
    is valid. The fusion kernel smooths (it interpolates, it does not
    deconvolve the pixel integration); back-projection restores the
    reference's pass band without the ringing of an unsharp mask.

    The residual is upsampled with a cubic spline by default. A bilinear
    upsampling passes much more of the residual's spectral images (its
    triangle kernel's response near the output's Nyquist frequency is
    several times the spline's): on aliased real bands the residual is
    large at the input's own Nyquist frequency, and the bilinear correction
    prints a period-2 hatching that no later low-pass can remove without
    also undoing the correction. The spline's correction is also closer to
    the inverse of the pixel integration, so the same iterations reach a
    higher consistency.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
        Fused image on the window's output grid; NaN where empty (kept).
    reference : ndarray of float32, shape (Hr, Wr, C)
        Reference pass on the window (normalised).
    valid : ndarray of bool, shape (Hr, Wr)
    scale : float
    iterations : int
    order : int
        Interpolation of the residual: 3 (cubic spline) or 1 (bilinear,
        :func:`upsample_area`).

    Returns
    -------
    ndarray of float32, shape (Ho, Wo, C)
    """
    from mfsr.metrics import degrade

    if order not in (1, 3):
        raise ValueError(f"order: expected 1 or 3, got {order!r}")

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
        if order == 3:
            out = out + upsample_spline(resid, out.shape[:2], scale)
        else:
            out = out + upsample_area(resid, out.shape[:2], scale)
    out[empty] = np.nan
    return out.astype(np.float32, copy=False)


def sample_radius_floor(n_passes: int) -> float:
    """Smallest fusion-kernel radius for ``n_passes`` passes, input px.

    Each pass gives one sample per input pixel, so the samples of ``n``
    passes lie about ``1 / sqrt(n)`` input px apart. A kernel narrower than
    that spacing does not interpolate between samples: every output pixel
    copies its nearest sample, and a diagonal edge becomes a staircase of
    sample cells (the hatching seen on real Sentinel-2 bands with three
    clear dates and the default ``k_detail`` of 0.25 px, narrowed further
    across edges by the anisotropy). The floor is ``RADIUS_PER_SPACING``
    sample spacings; it stays at or below 0.87 px so the kernel's 3 x 3
    sample window (:func:`mfsr.kernels.accumulate.accumulate_frame`) still
    holds nearly all of its weight.

    Parameters
    ----------
    n_passes : int
        Passes with valid data on the window (>= 1).

    Returns
    -------
    float
        Radius (Gaussian standard deviation), input px.
    """
    return RADIUS_PER_SPACING / float(np.sqrt(max(int(n_passes), 1)))


def _guard_taps() -> np.ndarray:
    # Kaiser-windowed sinc low-pass, unit DC gain.
    m = np.arange(GUARD_TAPS) - (GUARD_TAPS - 1) / 2
    h = 2 * GUARD_CUTOFF * np.sinc(2 * GUARD_CUTOFF * m) * np.kaiser(GUARD_TAPS, GUARD_BETA)
    return (h / h.sum()).astype(np.float64)


def nyquist_guard(image: np.ndarray, scale: float) -> np.ndarray:
    """Remove what no pass can hold near the output grid's Nyquist frequency.

    At ``scale >= GUARD_MIN_SCALE`` the band above ``GUARD_CUTOFF`` cycles
    per output px lies beyond ``1.05 x`` the passes' own Nyquist frequency,
    where a satellite sensor's MTF leaves nearly nothing to recover; what a
    kernel fusion puts there is the pattern of its sample lattice (a
    period-2 checkerboard and streaks from the 3 x 3 sample window). A
    separable Kaiser-windowed sinc (``GUARD_TAPS`` taps, cutoff
    ``GUARD_CUTOFF``, unit DC gain) removes it and leaves the band up to
    about 0.3 cycles per output px (super-resolved detail beyond the input
    Nyquist at scale 2 included) nearly untouched. NaN pixels are filled
    with their nearest finite value for the filtering and stay NaN.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
        Fused image on the output grid; NaN where empty.
    scale : float

    Returns
    -------
    ndarray of float32, shape (Ho, Wo, C)
        Unchanged when ``scale < GUARD_MIN_SCALE`` or nothing is finite.
    """
    if scale < GUARD_MIN_SCALE:
        return image
    empty = np.isnan(image[..., 0])
    if empty.all():
        return image
    x = _fill_nearest(image.astype(np.float64), empty)
    h = _guard_taps()
    y = correlate1d(correlate1d(x, h, axis=0, mode="nearest"), h, axis=1, mode="nearest")
    y[empty] = np.nan
    return y.astype(np.float32)


def clamp_to_bounds(image: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: float, margin: float) -> np.ndarray:
    """Keep every output pixel within the local range of the samples that made it.

    Interpolation, back-projection and sharpening may overshoot next to
    edges, saturated pixels and rejection boundaries. No pass shows a value
    outside ``[lo, hi]`` near a pixel (the accepted samples within one input
    px, :func:`fuse_window` with ``return_bounds``), so anything beyond that
    by more than the noise (``margin``) is an artefact.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
    lo, hi : ndarray of float32, shape (Hr, Wr, C)
        Local range on the reference grid (+inf / -inf where no accepted
        sample: no bound there).
    scale : float
    margin : float
        Allowed excess (normalised units), e.g. 3 noise standard deviations.

    Returns
    -------
    ndarray of float32, shape (Ho, Wo, C); NaN stays NaN.
    """
    # Bilinear, not nearest: bounds constant per input pixel would cut
    # steps of the input pixel grid into clamped areas (energy at the
    # output Nyquist frequency); the 3 x 3 dilation keeps bilinear bounds
    # at or beyond the nearest samples' range.
    big = np.float32(1e30)
    lo_f = np.where(np.isfinite(lo), lo, -big).astype(np.float32)
    hi_f = np.where(np.isfinite(hi), hi, big).astype(np.float32)
    lo_o = upsample_area(lo_f, image.shape[:2], scale) - np.float32(margin)
    hi_o = upsample_area(hi_f, image.shape[:2], scale) + np.float32(margin)
    return np.minimum(np.maximum(image, lo_o), hi_o).astype(np.float32)


def fill_from_neighbours(image: np.ndarray, holes: np.ndarray, max_sigma: float = FILL_MAX_SIGMA) -> np.ndarray:
    """Fill ``holes`` by normalised Gaussian convolution of the finite pixels around them.

    Used for output pixels that some pass sees but whose every pass was
    rejected by the composite test: their value then comes from accepted
    neighbours, never from the rejected content. Widths 1, 2, 4, ... up to
    ``max_sigma`` output px are tried; a hole pixel takes the narrowest
    whose neighbourhood holds at least 5 % finite weight. Holes farther
    than that from any finite pixel stay NaN.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
        NaN where empty.
    holes : ndarray of bool, shape (Ho, Wo)
        Pixels to fill (NaN in ``image``).
    max_sigma : float

    Returns
    -------
    ndarray of float32, shape (Ho, Wo, C)
    """
    out = image.copy()
    todo = holes & np.isnan(out[..., 0])
    if not todo.any():
        return out
    ok = ~np.isnan(image[..., 0])
    if not ok.any():
        return out
    okf = ok.astype(np.float32)
    val = np.where(ok[..., None], image, np.float32(0.0))
    sigma = 1.0
    while todo.any() and sigma <= max_sigma:
        wsum = gaussian_filter(okf, sigma, mode="nearest", truncate=3.0)
        take = todo & (wsum >= 0.05)
        if take.any():
            for c in range(image.shape[2]):
                v = gaussian_filter(val[..., c], sigma, mode="nearest", truncate=3.0)
                out[..., c][take] = v[take] / wsum[take]
            todo &= ~take
        sigma *= 2.0
    return out


def upsample_cubic(frame: np.ndarray, valid: np.ndarray, offset: tuple[float, float],
                   out_shape: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic-spline interpolation of one pass onto a window's output grid.

    With one pass there is nothing to fuse: the honest product is an
    interpolation, and the cubic spline (what ``skimage.transform.resize``
    with ``order=3`` does) beats the fusion kernel, a local Gaussian
    average, on real scenes. Invalid pixels take their nearest valid value
    for the spline and the output is NaN where the nearest input pixel is
    invalid.

    Parameters
    ----------
    frame : ndarray of float32, shape (Hf, Wf, C)
        The pass's pixels (normalised).
    valid : ndarray of bool, shape (Hf, Wf)
    offset : (float, float)
        Reference pixel ``(i, j)`` of the window is at ``(i + dy, j + dx)``
        of ``frame`` (as in :func:`fuse_window`).
    out_shape : (int, int)
    scale : float

    Returns
    -------
    image : ndarray of float32, shape ``out_shape + (C,)``
        NaN where the nearest input pixel is invalid or outside.
    den : ndarray of float32, shape ``out_shape``
        1 where a value was given, 0 elsewhere.
    """
    ho, wo = out_shape
    hf, wf = valid.shape
    ys = (np.arange(ho) + 0.5) / scale - 0.5 + offset[0]
    xs = (np.arange(wo) + 0.5) / scale - 0.5 + offset[1]
    if not valid.any():
        return np.full((ho, wo, frame.shape[2]), np.nan, np.float32), np.zeros((ho, wo), np.float32)
    out = upsample_spline(_fill_nearest(frame.astype(np.float64), ~valid), out_shape, scale, offset=offset)
    ny = np.floor(ys + 0.5).astype(np.intp)
    nx = np.floor(xs + 0.5).astype(np.intp)
    inside = ((ny >= 0) & (ny < hf))[:, None] & ((nx >= 0) & (nx < wf))[None, :]
    ok = inside & valid[np.clip(ny, 0, hf - 1)[:, None], np.clip(nx, 0, wf - 1)[None, :]]
    out[~ok] = np.nan
    return out, ok.astype(np.float32)


def nyquist_energy(image: np.ndarray, band: float = 0.375) -> float:
    """Share of an image's spectral energy near its Nyquist frequency.

    The checkerboard and streak measure of the satellite defaults: the
    energy (Hann-windowed periodogram, mean removed) at frequencies whose
    larger component is at least ``band`` cycles per pixel, over the total.
    Compare a fused product with the bicubic upsampling of its reference:
    a sensor leaves almost nothing there at scale 2 or more, so a ratio
    above 1 is reconstruction pattern, not detail.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Finite values.
    band : float
        Lower edge of the band, cycles per pixel (Nyquist is 0.5).

    Returns
    -------
    float
        In [0, 1].
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError("image: expected a finite 2-D array")
    x = x - x.mean()
    h, w = x.shape
    p = np.abs(np.fft.fft2(x * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    fy = np.abs(np.fft.fftfreq(h))[:, None]
    fx = np.abs(np.fft.fftfreq(w))[None, :]
    total = p.sum()
    return float(p[np.maximum(fy, fx) >= band].sum() / total) if total > 0 else 0.0
