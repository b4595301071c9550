"""Kernel accumulation of one frame into the output grid, and normalisation.

Gather formulation of the merge of Wronski et al. (2019): for every output
pixel ``(y, x)`` at scale ``s`` the reference-frame coordinate is
``r = ((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5)``; the frame's matching position
is ``p = r + flow(r)`` (flow looked up bilinearly, DESIGN.md convention), and
the input samples around ``p`` are added with the weight

    w = R(r) * exp(-0.5 * d^T Omega^-1 d),   d = sample position - p  (input px)

into a numerator and a denominator buffer. Frames are accumulated one at a
time, so memory does not grow with the burst length. Grey and RGB frames use
the 3x3 samples around ``round(p)``; CFA mosaics use the 4x4 raw samples
``floor(p) - 1 .. floor(p) + 2``, each feeding only its own colour channel
(no demosaicking before the merge).

All kernels are parallel over blocks of output rows: each row owns its
slice of the buffers, so there are no write races. Within a row the work is
split into chunks of ``_CHUNK`` pixels (whose buffers stay in the L1 cache)
and, per chunk, into passes over its pixels (look-ups, then one pass per
window position) so the arithmetic runs in vectorised loops. The bilinear
taps of each output column are shared by all rows and computed once per
call; CFA windows that lie inside the mosaic are first copied into one row
per window position, so the sample passes need neither bounds tests nor
gathers. The Gaussian weights use :func:`fast_exp` (relative error below
1e-4), several times faster than the library ``exp``, which dominated the
run time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .overshoot import clamp_to_range
from .separable_filter import separable_filter

# Row blocks per call: enough for load balance on any thread count, few
# enough that the per-block buffers cost nothing.
_BLOCKS = 64
# Output pixels per pass of the sample loops: the chunk's dozen buffers
# (about 10 KB) stay in the L1 cache across the window positions.
_CHUNK = 256


@njit(cache=True, fastmath=True, inline="always")
def fast_exp(x: float) -> float:
    """``exp(x)`` for ``x <= 0`` in float32, relative error below 1e-4.

    ``x`` is clamped to [-60, 0] (``exp(-60)`` is 9e-27, nothing a weight
    sum notices), scaled by 1/256, expanded by a degree-4 Taylor polynomial
    and squared eight times: only multiplications and additions, which
    vectorise, where the library ``exp`` cost about 7 ns a call here.
    """
    y = min(max(np.float32(x), np.float32(-60.0)), np.float32(0.0)) * np.float32(1.0 / 256.0)
    p = np.float32(1.0) + y * (
        np.float32(1.0) + y * (np.float32(0.5) + y * (np.float32(1.0 / 6.0) + y * np.float32(1.0 / 24.0)))
    )
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p


@njit(cache=True, inline="always")
def _taps(g: float, n: int) -> tuple[int, int, float]:
    # Bilinear taps (i0, i1, fraction) of coordinate g on an axis of n
    # pixels, clamped to the grid: the arithmetic of the flow lookup in
    # robustness.warp_guide, so the merge and the robustness read the same flow.
    g = min(max(g, 0.0), n - 1.0)
    i0 = min(int(g), n - 2) if n > 1 else 0
    return i0, min(i0 + 1, n - 1), g - i0


@njit(cache=True)
def _column_taps(wo, inv_s, inv_rb, w, wr):
    # Per output column: its reference coordinate rx and the bilinear taps
    # of the flow (at rx) and of the robustness (on the guide grid). They
    # are the same for every output row, so they are computed once.
    rx = np.empty(wo, np.float64)
    # Unsigned: indexing with them needs no negative-index wrap test.
    fx0 = np.empty(wo, np.uint64)
    fx1 = np.empty(wo, np.uint64)
    ffx = np.empty(wo, np.float64)
    rx0 = np.empty(wo, np.uint64)
    rx1 = np.empty(wo, np.uint64)
    rfx = np.empty(wo, np.float64)
    for xo in range(wo):
        x = (xo + 0.5) * inv_s - 0.5
        rx[xo] = x
        fx0[xo], fx1[xo], ffx[xo] = _taps(x, w)
        rx0[xo], rx1[xo], rfx[xo] = _taps((x + 0.5) * inv_rb - 0.5, wr)
    return rx, fx0, fx1, ffx, rx0, rx1, rfx


@njit(cache=True, fastmath=True)
def _chunk_setup(flow, inv_cov, robustness, ry, inv_s, inv_gb, inv_rb, centred, x0, n, cols,
                 rob_r, iy0, ix0, ty, tx, ca, cb, cc):
    # Per output pixel x0 .. x0 + n - 1 of one row: robustness at r, the
    # aligned position p = r + flow(r) split into an integer window anchor
    # and a fractional part, and the kernel's inverse covariance at the grey
    # pixel nearest to p, pre-scaled so q = ca dy^2 + cb dy dx + cc dx^2 is
    # -0.5 d^T Omega^-1 d. The anchor is round(p) when centred (3x3
    # windows), else floor(p). The row's taps are resolved once here and the
    # column's come from the table, so the loop is loads and arithmetic.
    rx, fx0, fx1, ffx, rx0, rx1, rfx = cols
    hg, wg = inv_cov.shape[0], inv_cov.shape[1]
    fy0, fy1, fy = _taps(ry, flow.shape[0])
    ry0, ry1, rfy = _taps((ry + 0.5) * inv_rb - 0.5, robustness.shape[0])
    ftop = flow[fy0]
    fbot = flow[fy1]
    rtop = robustness[ry0]
    rbot = robustness[ry1]
    shift = 0.5 if centred else 0.0
    for i in range(n):
        xo = x0 + i
        a = rx0[xo]
        b = rx1[xo]
        fx = rfx[xo]
        top = (1.0 - fx) * rtop[a] + fx * rtop[b]
        bot = (1.0 - fx) * rbot[a] + fx * rbot[b]
        rob_r[i] = (1.0 - rfy) * top + rfy * bot
        a = fx0[xo]
        b = fx1[xo]
        fx = ffx[xo]
        a0 = (1.0 - fx) * ftop[a, 0] + fx * ftop[b, 0]
        b0 = (1.0 - fx) * fbot[a, 0] + fx * fbot[b, 0]
        a1 = (1.0 - fx) * ftop[a, 1] + fx * ftop[b, 1]
        b1 = (1.0 - fx) * fbot[a, 1] + fx * fbot[b, 1]
        py = ry + ((1.0 - fy) * a0 + fy * b0)
        px = rx[xo] + ((1.0 - fy) * a1 + fy * b1)
        gy = min(max(int(math.floor((py + 0.5) * inv_gb)), 0), hg - 1)
        gx = min(max(int(math.floor((px + 0.5) * inv_gb)), 0), wg - 1)
        # Unsigned indices (all are clamped): no negative-index wrap test.
        ugy = np.uint64(gy)
        ugx = np.uint64(gx)
        ca[i] = np.float32(-0.5) * inv_cov[ugy, ugx, 0]
        cb[i] = np.float32(-1.0) * inv_cov[ugy, ugx, 1]
        cc[i] = np.float32(-0.5) * inv_cov[ugy, ugx, 2]
        ay = math.floor(py + shift)
        ax = math.floor(px + shift)
        iy0[i] = int(ay)
        ix0[i] = int(ax)
        ty[i] = np.float32(py - ay)
        tx[i] = np.float32(px - ax)


@njit(cache=True, fastmath=True)
def _window_weights(doy, dox, n, ty, tx, ca, cb, cc, wts):
    # Gaussian weight of the window sample at offset (doy, dox) from the
    # anchor, for every pixel of the chunk (a vectorised loop).
    for i in range(n):
        dy = doy - ty[i]
        dx = dox - tx[i]
        wts[i] = fast_exp(ca[i] * dy * dy + cb[i] * dy * dx + cc[i] * dx * dx)


@njit(cache=True)
def _inside(n, iy0, ix0, lo, hi_y, hi_x):
    # Whether every window anchor of the chunk keeps its whole window
    # (anchor - lo .. anchor + hi) inside the frame: then the sample loops
    # need no bounds tests.
    ok = True
    for i in range(n):
        ok &= (iy0[i] >= lo) & (iy0[i] < hi_y) & (ix0[i] >= lo) & (ix0[i] < hi_x)
    return ok


@njit(cache=True, parallel=True, fastmath=True)
def accumulate_frame(
    frame: np.ndarray,
    flow: np.ndarray,
    inv_cov: np.ndarray,
    grey_bin: int,
    robustness: np.ndarray,
    robustness_bin: int,
    scale: float,
    num: np.ndarray,
    den: np.ndarray,
) -> None:
    """Add one grey or RGB frame to the accumulation buffers (in place).

    Every output pixel gathers the 3x3 input pixels around ``round(p)``.

    Parameters
    ----------
    frame : ndarray of float32, shape (H, W, C)
        The frame; C = 1 for grey, 3 for RGB.
    flow : ndarray of float32, shape (H, W, 2)
        ``(dy, dx)`` in input pixels: reference pixel ``(i, j)`` is at
        ``(i + dy, j + dx)`` in this frame.
    inv_cov : ndarray of float32, shape (Hg, Wg, 3)
        Kernel ``Omega^-1`` entries ``(yy, yx, xx)`` in 1/input-px^2 on the
        frame's grey grid (:func:`kernel_inverse_covariance`); looked up at
        the grey pixel nearest to ``p``.
    grey_bin : int
        Input pixels per grey pixel (1 here unless the grey image is binned).
    robustness : ndarray of float32, shape (Hr, Wr)
        Per-pixel weight in [0, 1] on the reference's guide grid, looked up
        bilinearly at ``r``.
    robustness_bin : int
        Input pixels per guide pixel.
    scale : float
        Output pixels per input pixel (> 0).
    num : ndarray of float32, shape (Ho, Wo, C)
        Weighted sum of sample values; updated in place.
    den : ndarray of float32, shape (Ho, Wo, 1)
        Sum of weights; updated in place.
    """
    h, w, nc = frame.shape
    ho, wo = num.shape[0], num.shape[1]
    inv_s = 1.0 / scale
    inv_gb = 1.0 / grey_bin
    inv_rb = 1.0 / robustness_bin
    cols = _column_taps(wo, inv_s, inv_rb, flow.shape[1], robustness.shape[1])
    nblk = min(ho, _BLOCKS)
    for blk in prange(nblk):
        rob_r = np.empty(_CHUNK, np.float32)
        iy0 = np.empty(_CHUNK, np.int64)
        ix0 = np.empty(_CHUNK, np.int64)
        ty = np.empty(_CHUNK, np.float32)
        tx = np.empty(_CHUNK, np.float32)
        ca = np.empty(_CHUNK, np.float32)
        cb = np.empty(_CHUNK, np.float32)
        cc = np.empty(_CHUNK, np.float32)
        wts = np.empty(_CHUNK, np.float32)
        acc = np.empty((4, _CHUNK), np.float32)
        for yo in range(blk * ho // nblk, (blk + 1) * ho // nblk):
            ry = (yo + 0.5) * inv_s - 0.5
            for x0 in range(0, wo, _CHUNK):
                n = min(_CHUNK, wo - x0)
                _chunk_setup(flow, inv_cov, robustness, ry, inv_s, inv_gb, inv_rb, True, x0, n, cols,
                             rob_r, iy0, ix0, ty, tx, ca, cb, cc)
                inside = _inside(n, iy0, ix0, 1, h - 1, w - 1)
                for k in range(4):
                    for i in range(n):
                        acc[k, i] = 0.0
                for oy in range(-1, 2):
                    for ox in range(-1, 2):
                        _window_weights(np.float32(oy), np.float32(ox), n, ty, tx, ca, cb, cc, wts)
                        if inside:
                            # Unsigned indices: no negative-index wrap test.
                            for i in range(n):
                                wt = wts[i]
                                acc[3, i] += wt
                                iy = np.uint64(iy0[i] + oy)
                                ix = np.uint64(ix0[i] + ox)
                                for c in range(nc):
                                    acc[c, i] += wt * frame[iy, ix, c]
                        else:
                            for i in range(n):
                                iy = iy0[i] + oy
                                ix = ix0[i] + ox
                                if iy >= 0 and iy < h and ix >= 0 and ix < w:
                                    wt = wts[i]
                                    acc[3, i] += wt
                                    for c in range(nc):
                                        acc[c, i] += wt * frame[iy, ix, c]
                for i in range(n):
                    r32 = rob_r[i]
                    if r32 > 0.0:
                        xo = x0 + i
                        for c in range(nc):
                            num[yo, xo, c] += r32 * acc[c, i]
                        den[yo, xo, 0] += r32 * acc[3, i]


@njit(cache=True, parallel=True, fastmath=True)
def accumulate_frame_cfa(
    raw: np.ndarray,
    cell: np.ndarray,
    flow: np.ndarray,
    inv_cov: np.ndarray,
    grey_bin: int,
    robustness: np.ndarray,
    robustness_bin: int,
    scale: float,
    num: np.ndarray,
    den: np.ndarray,
) -> None:
    """Add one CFA mosaic to the accumulation buffers (in place).

    Each raw sample of the 4x4 window ``floor(p) - 1 .. floor(p) + 2`` feeds
    only its own colour channel ``cell[y % 2, x % 2]``, so every channel gets
    samples from every window (4 R, 8 G, 4 B for a Bayer pattern).

    Parameters
    ----------
    raw : ndarray of float32, shape (H, W)
        The mosaic.
    cell : ndarray of int64, shape (2, 2)
        Channel index of each position of the 2x2 CFA cell
        (:func:`mfsr.cfa.cell_channels`).
    flow, inv_cov, grey_bin, robustness, robustness_bin, scale :
        As in :func:`accumulate_frame`; ``grey_bin`` and ``robustness_bin``
        are 2 for the 2x2-binned grey and half-resolution guide.
    num, den : ndarray of float32, shape (Ho, Wo, 3)
        Per-channel weighted sums and weights; updated in place.
    """
    h, w = raw.shape
    ho, wo = num.shape[0], num.shape[1]
    inv_s = 1.0 / scale
    inv_gb = 1.0 / grey_bin
    inv_rb = 1.0 / robustness_bin
    cols = _column_taps(wo, inv_s, inv_rb, flow.shape[1], robustness.shape[1])
    nblk = min(ho, _BLOCKS)
    for blk in prange(nblk):
        rob_r = np.empty(_CHUNK, np.float32)
        iy0 = np.empty(_CHUNK, np.int64)
        ix0 = np.empty(_CHUNK, np.int64)
        ty = np.empty(_CHUNK, np.float32)
        tx = np.empty(_CHUNK, np.float32)
        ca = np.empty(_CHUNK, np.float32)
        cb = np.empty(_CHUNK, np.float32)
        cc = np.empty(_CHUNK, np.float32)
        wts = np.empty(_CHUNK, np.float32)
        # Sums by (window row parity, window column parity): the channel of
        # each of the four classes follows from the window's origin.
        acc = np.empty((8, _CHUNK), np.float32)
        win = np.empty((16, _CHUNK), np.float32)
        for yo in range(blk * ho // nblk, (blk + 1) * ho // nblk):
            ry = (yo + 0.5) * inv_s - 0.5
            for x0 in range(0, wo, _CHUNK):
                n = min(_CHUNK, wo - x0)
                _chunk_setup(flow, inv_cov, robustness, ry, inv_s, inv_gb, inv_rb, False, x0, n, cols,
                             rob_r, iy0, ix0, ty, tx, ca, cb, cc)
                inside = _inside(n, iy0, ix0, 1, h - 2, w - 2)
                for k in range(8):
                    for i in range(n):
                        acc[k, i] = 0.0
                if inside:
                    # Copy every pixel's 4x4 window into rows of its own, so
                    # the sample loops below are plain vectorised arithmetic.
                    for i in range(n):
                        r0 = np.uint64(iy0[i] - 1)
                        c0 = np.uint64(ix0[i] - 1)
                        for a in range(4):
                            for b in range(4):
                                win[a * 4 + b, i] = raw[r0 + np.uint64(a), c0 + np.uint64(b)]
                    for oy in range(-1, 3):
                        for ox in range(-1, 3):
                            k = ((oy + 1) & 1) * 2 + ((ox + 1) & 1)
                            nk = acc[k]
                            wk = acc[4 + k]
                            wv = win[(oy + 1) * 4 + ox + 1]
                            fy = np.float32(oy)
                            fx = np.float32(ox)
                            for i in range(n):
                                dy = fy - ty[i]
                                dx = fx - tx[i]
                                wt = fast_exp(ca[i] * dy * dy + cb[i] * dy * dx + cc[i] * dx * dx)
                                nk[i] += wt * wv[i]
                                wk[i] += wt
                else:
                    for oy in range(-1, 3):
                        for ox in range(-1, 3):
                            _window_weights(np.float32(oy), np.float32(ox), n, ty, tx, ca, cb, cc, wts)
                            k = ((oy + 1) & 1) * 2 + ((ox + 1) & 1)
                            nk = acc[k]
                            wk = acc[4 + k]
                            for i in range(n):
                                iy = iy0[i] + oy
                                ix = ix0[i] + ox
                                if iy >= 0 and iy < h and ix >= 0 and ix < w:
                                    wt = wts[i]
                                    nk[i] += wt * raw[iy, ix]
                                    wk[i] += wt
                for i in range(n):
                    r32 = rob_r[i]
                    if r32 > 0.0:
                        xo = x0 + i
                        # Unsigned indices: no negative-index wrap test.
                        pr = np.uint64((iy0[i] - 1) & 1)
                        pc = np.uint64((ix0[i] - 1) & 1)
                        uy = np.uint64(yo)
                        ux = np.uint64(xo)
                        one = np.uint64(1)
                        for a in range(2):
                            for b in range(2):
                                ch = np.uint64(cell[(pr + np.uint64(a)) & one, (pc + np.uint64(b)) & one])
                                num[uy, ux, ch] += r32 * acc[a * 2 + b, i]
                                den[uy, ux, ch] += r32 * acc[4 + a * 2 + b, i]


@njit(cache=True, parallel=True, fastmath=True)
def normalize(
    num: np.ndarray,
    den: np.ndarray,
    reference: np.ndarray,
    is_cfa: bool,
    cell: np.ndarray,
    scale: float,
    radius: float,
    min_weight: float,
    out: np.ndarray,
) -> np.ndarray:
    """Divide the accumulated sums, with a wide-kernel fallback where weak.

    Where a channel's accumulated weight ``den`` is below ``min_weight`` (an
    output pixel no sample reached with a useful weight, e.g. a CFA channel
    at a large scale, or content every frame but the reference rejected
    near a border), the value is blended with an isotropic Gaussian
    interpolation ``f`` of the *reference* frame (zero flow) of radius
    ``radius`` input px over the same sample window (shifted inside the
    frame at borders): ``(num + (min_weight - den) * f) / min_weight``. The
    blend is continuous at ``den = min_weight`` and equals ``f`` at ``den =
    0``, so the output never holds NaN.

    Parameters
    ----------
    num : ndarray of float32, shape (Ho, Wo, C)
    den : ndarray of float32, shape (Ho, Wo, 1) or (Ho, Wo, C)
        One shared weight (grey/RGB) or one per channel (CFA).
    reference : ndarray of float32, shape (H, W, C) or (H, W, 1)
        The reference frame: (H, W, C) for grey/RGB, the mosaic as
        (H, W, 1) for CFA.
    is_cfa : bool
        Whether ``reference`` is a CFA mosaic.
    cell : ndarray of int64, shape (2, 2)
        CFA cell channels; ignored for grey/RGB input.
    scale : float
        Output pixels per input pixel.
    radius : float
        Fallback kernel standard deviation, input px.
    min_weight : float
        Weight below which the fallback is blended in (> 0).
    out : ndarray of float32, shape (Ho, Wo, C)
        Receives the image; may be ``num`` itself (computed in place).

    Returns
    -------
    confidence : ndarray of float32, shape (Ho, Wo)
        Total accumulated weight: ``den`` for grey/RGB, the sum over the
        channels (i.e. over all samples) for CFA.
    """
    ho, wo, nc = num.shape
    nd = den.shape[2]
    h, w = reference.shape[0], reference.shape[1]
    inv_s = 1.0 / scale
    inv_r2 = 1.0 / (radius * radius)
    conf = np.empty((ho, wo), np.float32)
    for yo in prange(ho):
        # reset per pixel below (np.zeros here would be a loop of its own)
        fb = np.empty(3, np.float64)
        fw = np.empty(3, np.float64)
        ry = (yo + 0.5) * inv_s - 0.5
        for xo in range(wo):
            total = np.float32(0.0)
            weak = False
            for c in range(nd):
                total += den[yo, xo, c]
                if den[yo, xo, c] < min_weight:
                    weak = True
            conf[yo, xo] = total
            if not weak:
                for c in range(nc):
                    out[yo, xo, c] = num[yo, xo, c] / den[yo, xo, c if nd > 1 else 0]
                continue
            rx = (xo + 0.5) * inv_s - 0.5
            for c in range(nc):
                fb[c] = 0.0
                fw[c] = 0.0
            if is_cfa:
                lo_y = int(math.floor(ry)) - 1
                lo_x = int(math.floor(rx)) - 1
                n = 4
            else:
                lo_y = int(math.floor(ry + 0.5)) - 1
                lo_x = int(math.floor(rx + 0.5)) - 1
                n = 3
            # Keep the window inside the frame so every CFA channel has samples.
            lo_y = max(min(lo_y, h - n), 0)
            lo_x = max(min(lo_x, w - n), 0)
            for iy in range(lo_y, min(lo_y + n, h)):
                dy = iy - ry
                for ix in range(lo_x, min(lo_x + n, w)):
                    dx = ix - rx
                    wt = fast_exp(-0.5 * (dy * dy + dx * dx) * inv_r2) + 1e-30
                    if is_cfa:
                        ch = cell[iy & 1, ix & 1]
                        fb[ch] += wt * reference[iy, ix, 0]
                        fw[ch] += wt
                    else:
                        for c in range(nc):
                            fb[c] += wt * reference[iy, ix, c]
                            fw[c] += wt
            for c in range(nc):
                dc = den[yo, xo, c if nd > 1 else 0]
                if dc >= min_weight:
                    out[yo, xo, c] = num[yo, xo, c] / dc
                else:
                    f = fb[c] / fw[c] if fw[c] > 0.0 else 0.0
                    out[yo, xo, c] = (num[yo, xo, c] + (min_weight - dc) * f) / min_weight
    return conf


@njit(cache=True, parallel=True, fastmath=True)
def sharpen(
    image: np.ndarray,
    taps: np.ndarray,
    amount: float,
    noise_alpha: float,
    noise_beta: float,
    noise_gate: float,
    overshoot: float,
) -> None:
    """Noise-gated, overshoot-limited unsharp mask (in place).

    Every input sample integrates the scene over one input pixel, so the
    merged image is the scene blurred by that box (plus the small fusion
    kernel). With ``I`` the pixel's mean over the channels (luminance), ``b``
    its Gaussian blur by ``taps`` and ``d = I - b`` the detail, every channel
    gets ``+ g d`` with the gain ``g = amount * d^2 / (d^2 + noise_gate *
    (alpha * I + beta))``: full gain on structure, little where the detail
    is at the noise level. Sharpening the luminance only leaves colours
    alone and costs a third of a per-channel filter.

    Each channel's result is then held within the range its unsharpened
    3x3 neighbourhood spans, widened by ``overshoot`` times that range
    (:func:`mfsr.kernels.overshoot.limit_overshoot`): the edge is steepened,
    but dark pixels beside it are not crushed nor highlights ringed.

    Parameters
    ----------
    image : ndarray of float32, shape (Ho, Wo, C)
        Merged image; modified in place.
    taps : ndarray of float32, shape (2 * r + 1,)
        Separable Gaussian of the unsharp mask, in output px.
    amount : float
        Maximum gain on the detail (0 disables).
    noise_alpha, noise_beta : float
        Noise model of one input sample (variance ``alpha * I + beta``).
    noise_gate : float
        Factor on that variance in the gate (0: no gating).
    overshoot : float
        Allowed excursion beyond the local 3x3 min/max, as a fraction of
        the local range (0: none; ``inf``: no limit).
    """
    ho, wo, nc = image.shape
    lum = np.empty((1, ho, wo), np.float32)
    inv_nc = np.float32(1.0 / nc)
    for y in prange(ho):
        for x in range(wo):
            m = np.float32(0.0)
            for c in range(nc):
                m += image[y, x, c]
            lum[0, y, x] = m * inv_nc
    blurred = separable_filter(lum, taps)
    a = np.float32(noise_alpha)
    b = np.float32(noise_beta)
    gate = np.float32(noise_gate)
    amt = np.float32(amount)
    # not `< inf`: fastmath lets the compiler assume no value is infinite
    unlimited = not overshoot <= 1e30
    # The gain per pixel replaces the blurred luminance (no longer needed);
    # without a limit it is added to every channel in the same pass.
    for y in prange(ho):
        for x in range(wo):
            m = lum[0, y, x]
            d = m - blurred[0, y, x]
            e = d * d
            n2 = gate * max(a * m + b, np.float32(0.0))
            g = amt * e / (e + n2 + np.float32(1e-20)) * d
            blurred[0, y, x] = g
            if unlimited:
                for c in range(nc):
                    image[y, x, c] += g
    if unlimited:
        return
    _add_clamped(image, blurred[0], overshoot)


@njit(cache=True, inline="always")
def _copy_row(dst: np.ndarray, src: np.ndarray) -> None:
    # dst[:] = src for one (W, C) row, as a plain loop: a slice assignment
    # would compile a broadcasting check with its error message (string
    # formatting) and, in a parallel kernel, a parfor of its own.
    for x in range(dst.shape[0]):
        for c in range(dst.shape[1]):
            dst[x, c] = src[x, c]


@njit(cache=True, parallel=True, fastmath=True)
def _add_clamped(image: np.ndarray, gain: np.ndarray, overshoot: float) -> None:
    # image += gain, each channel held within its unsharpened 3x3 range
    # (clamp_to_range, limit_overshoot's rule), in place. Row blocks run in parallel, each
    # top to bottom with the unsharpened rows above, at and below the current
    # one in a rolling buffer; the rows just outside a block are saved before
    # any block starts, so no full copy of the image is needed.
    ho, wo, nc = image.shape
    nb = min(_BLOCKS, ho)
    above = np.empty((nb, wo, nc), np.float32)
    below = np.empty((nb, wo, nc), np.float32)
    # a few rows: not worth a parallel loop
    for k in range(nb):
        _copy_row(above[k], image[max(k * ho // nb - 1, 0)])
        _copy_row(below[k], image[min((k + 1) * ho // nb, ho - 1)])
    ov = np.float32(overshoot)
    rel = np.float32(1.0 - min(overshoot, 1.0))
    for k in prange(nb):
        y0, y1 = k * ho // nb, (k + 1) * ho // nb
        if y1 <= y0:
            continue
        # Three row buffers that rotate: up, current, next (unsharpened).
        prev = np.empty((wo, nc), np.float32)
        cur = np.empty((wo, nc), np.float32)
        nxt = np.empty((wo, nc), np.float32)
        _copy_row(prev, above[k])
        _copy_row(cur, image[y0])
        for y in range(y0, y1):
            if y + 1 >= ho:
                _copy_row(nxt, cur)  # the bottom border repeats the last row, as the 3x3 window clips
            elif y + 1 < y1:
                _copy_row(nxt, image[y + 1])
            else:
                _copy_row(nxt, below[k])
            up = prev if y > 0 else cur
            for x in range(wo):
                x0, x1 = max(x - 1, 0), min(x + 2, wo)
                for c in range(nc):
                    lo = cur[x, c]
                    hi = lo
                    for xx in range(x0, x1):
                        lo = min(lo, up[xx, c], cur[xx, c], nxt[xx, c])
                        hi = max(hi, up[xx, c], cur[xx, c], nxt[xx, c])
                    image[y, x, c] = clamp_to_range(cur[x, c] + gain[y, x], lo, hi, ov, rel)
            prev, cur, nxt = cur, nxt, prev
