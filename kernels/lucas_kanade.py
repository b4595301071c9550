"""Inverse-compositional Lucas-Kanade refinement of tile translations.

The reference tile ``T`` is fixed, so its gradients and 2x2 Gauss-Newton
Hessian are computed once per reference (:func:`gradients`,
:func:`tile_hessians`) and reused for every frame; each iteration only
resamples the moving tile (:func:`lk_refine`). Tile grid as in
:mod:`mfsr.kernels.block_matching`.

For a translation ``p`` (content of reference pixel ``x`` at ``x + p`` in the
moving image ``I``) one iteration computes

    e(x)  = I(x + p) - T(x)                 (linear or Keys cubic sampling)
    dp    = H^-1 sum_x w(x) grad T(x) e(x),   H = sum_x w(x) grad T grad T^T
    p    <- p - dp                          (inverse composition)

with separable pixel weights ``w`` (:func:`tile_hessians`). The residual
also gives each tile's predicted error (Gauss-Newton covariance).

References
----------
S. Baker and I. Matthews, "Lucas-Kanade 20 Years On: A Unifying Framework",
IJCV 56(3), 2004.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=True)
def gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image gradients by central differences (one-sided at the borders).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)

    Returns
    -------
    gy, gx : ndarray of float32, shape (H, W)
        d image / d row and d image / d column, per pixel; same values as
        ``numpy.gradient(image)`` (first-order one-sided differences at the
        edges, zero along an axis of length 1).
    """
    h, w = image.shape
    # zeroed in the loop, only along an axis of length 1: np.zeros would be
    # a parallel loop of its own
    gy = np.empty((h, w), np.float32)
    gx = np.empty((h, w), np.float32)
    for y in prange(h):
        if h == 1:
            for x in range(w):
                gy[y, x] = 0.0
        if w == 1:
            gx[y, 0] = 0.0
        if h > 1:
            if y == 0:
                for x in range(w):
                    gy[y, x] = image[1, x] - image[0, x]
            elif y == h - 1:
                for x in range(w):
                    gy[y, x] = image[h - 1, x] - image[h - 2, x]
            else:
                for x in range(w):
                    gy[y, x] = 0.5 * (image[y + 1, x] - image[y - 1, x])
        if w > 1:
            gx[y, 0] = image[y, 1] - image[y, 0]
            gx[y, w - 1] = image[y, w - 1] - image[y, w - 2]
            for x in range(1, w - 1):
                gx[y, x] = 0.5 * (image[y, x + 1] - image[y, x - 1])
    return gy, gx


@njit(cache=True, parallel=True, fastmath=True)
def tile_hessians(
    gy: np.ndarray,
    gx: np.ndarray,
    origin_y: int,
    origin_x: int,
    stride: int,
    tile: int,
    n_ty: int,
    n_tx: int,
    window: np.ndarray,
) -> np.ndarray:
    """Gauss-Newton Hessian of every reference tile.

    Parameters
    ----------
    window : ndarray of float32, shape (tile,)
        Separable weight of tile pixel (i, j): ``window[i] * window[j]``.

    Returns
    -------
    hess : ndarray of float32, shape (TY, TX, 3)
        ``(sum w*gy*gy, sum w*gy*gx, sum w*gx*gx)`` over each tile's pixels.
    """
    hess = np.empty((n_ty, n_tx, 3), np.float32)
    for t in prange(n_ty * n_tx):
        ti = t // n_tx
        tj = t - ti * n_tx
        y0 = origin_y + ti * stride
        x0 = origin_x + tj * stride
        syy = 0.0
        syx = 0.0
        sxx = 0.0
        for i in range(tile):
            for j in range(tile):
                wt = np.float64(window[i]) * window[j]
                a = np.float64(gy[y0 + i, x0 + j])
                b = np.float64(gx[y0 + i, x0 + j])
                syy += wt * a * a
                syx += wt * a * b
                sxx += wt * b * b
        hess[ti, tj, 0] = syy
        hess[ti, tj, 1] = syx
        hess[ti, tj, 2] = sxx
    return hess


@njit(cache=True, fastmath=True, inline="always")
def interp_weights(frac: float, order: int) -> tuple[int, int, float, float, float, float]:
    """Taps for a sample ``frac`` in [0, 1) past pixel 0.

    Returns ``(offset, n_taps, w0, w1, w2, w3)``: the first tap's pixel
    offset, the number of taps and their weights (unused ones zero).
    ``frac == 0`` gives the single unit tap (no interpolation); order 1:
    linear, taps at pixels 0, 1; order 3: Keys cubic convolution (a = -0.5,
    interpolating, exact for quadratics), taps at -1, 0, 1, 2.
    """
    t = np.float32(frac)
    z = np.float32(0.0)
    if t == 0:
        return 0, 1, np.float32(1.0), z, z, z
    if order == 3:
        t2 = t * t
        t3 = t2 * t
        return (
            -1,
            4,
            np.float32(-0.5) * t3 + t2 - np.float32(0.5) * t,
            np.float32(1.5) * t3 - np.float32(2.5) * t2 + np.float32(1.0),
            np.float32(-1.5) * t3 + np.float32(2.0) * t2 + np.float32(0.5) * t,
            np.float32(0.5) * t3 - np.float32(0.5) * t2,
        )
    return 0, 2, np.float32(1.0) - t, t, z, z


@njit(cache=True, fastmath=True)
def sample_tile(
    moving: np.ndarray,
    y0: int,
    x0: int,
    tile: int,
    py: float,
    px: float,
    order: int,
    buf: np.ndarray,
    out: np.ndarray,
) -> None:
    """Resample the moving image at ``(y0 + i + py, x0 + j + px)`` for
    ``0 <= i, j < tile`` into ``out[:tile, :tile]``.

    The sub-pixel part of the displacement is shared by the whole tile, so
    the interpolation is separable with fixed taps: one horizontal pass into
    ``buf`` (at least (tile + 3, tile)), then one vertical pass. Coordinates
    outside the image are clamped to its edge. ``order`` as in
    :func:`interp_weights`.
    """
    h, w = moving.shape
    fy = np.floor(py)
    fx = np.floor(px)
    oy, _, v0, v1, v2, v3 = interp_weights(py - fy, order)
    ox, _, w0, w1, w2, w3 = interp_weights(px - fx, order)
    my = y0 + int(fy) + oy
    mx = x0 + int(fx) + ox
    # Always four taps (unused ones weigh zero): one simple loop shape that
    # LLVM vectorises, instead of a branchy one per tap count.
    if my >= 0 and mx >= 0 and my + tile + 3 <= h and mx + tile + 3 <= w:
        for r in range(tile + 3):
            for j in range(tile):
                buf[r, j] = (
                    w0 * moving[my + r, mx + j] + w1 * moving[my + r, mx + j + 1]
                    + w2 * moving[my + r, mx + j + 2] + w3 * moving[my + r, mx + j + 3]
                )
    else:
        for r in range(tile + 3):
            yy = min(max(my + r, 0), h - 1)
            for j in range(tile):
                x = mx + j
                buf[r, j] = (
                    w0 * moving[yy, min(max(x, 0), w - 1)]
                    + w1 * moving[yy, min(max(x + 1, 0), w - 1)]
                    + w2 * moving[yy, min(max(x + 2, 0), w - 1)]
                    + w3 * moving[yy, min(max(x + 3, 0), w - 1)]
                )
    for i in range(tile):
        for j in range(tile):
            out[i, j] = v0 * buf[i, j] + v1 * buf[i + 1, j] + v2 * buf[i + 2, j] + v3 * buf[i + 3, j]


@njit(cache=True, parallel=True, fastmath=True)
def lk_refine(
    ref: np.ndarray,
    gy: np.ndarray,
    gx: np.ndarray,
    hess: np.ndarray,
    moving: np.ndarray,
    origin_y: int,
    origin_x: int,
    stride: int,
    tile: int,
    init: np.ndarray,
    n_iter: int,
    tol: float,
    max_dev: float,
    order: int,
    window: np.ndarray,
) -> np.ndarray:
    """Sub-pixel translation of every tile by inverse-compositional LK.

    Parameters
    ----------
    ref : ndarray of float32, shape (H, W)
        Reference image.
    gy, gx : ndarray of float32, shape (H, W)
        Its gradients (:func:`gradients`).
    hess : ndarray of float32, shape (TY, TX, 3)
        Tile Hessians (:func:`tile_hessians`).
    moving : ndarray of float32, shape (H, W)
        Image to align, coordinates clamped to the image.
    origin_y, origin_x, stride, tile : int
        Tile grid (see module docstring).
    init : ndarray of float32, shape (TY, TX, 2)
        Starting displacement (dy, dx) per tile, e.g. block matching's.
    n_iter : int
        Maximum number of iterations.
    tol : float
        Stop when both components of the update are below ``tol`` pixels.
    max_dev : float
        If the refined displacement ends farther than ``max_dev`` pixels (per
        component) from ``init``, the tile keeps ``init``: LK has diverged.
    order : int
        Interpolation of the moving image: 1 bilinear, 3 Keys cubic (less
        biased towards integer shifts on sharp or aliased images).
    window : ndarray of float32, shape (tile,)
        Separable pixel weights, the same as for :func:`tile_hessians`.

    Returns
    -------
    disp : ndarray of float32, shape (TY, TX, 2)
        Refined displacement (dy, dx) in pixels. Tiles whose Hessian is
        (near) singular - flat tiles, or a single straight edge, where the
        aperture problem leaves the translation undetermined - keep ``init``.
    sd : ndarray of float32, shape (TY, TX)
        Predicted standard deviation of ``disp`` along its least certain
        direction, pixels: ``sqrt(mean weighted squared residual /
        lambda_min(H))`` from the last iteration's residual. Infinite for
        tiles that kept ``init``. Large values flag flat or noisy tiles and
        tiles whose content does not match (occlusion, wrong minimum).
    """
    n_ty, n_tx = init.shape[0], init.shape[1]
    out = np.empty((n_ty, n_tx, 2), np.float32)
    sd = np.empty((n_ty, n_tx), np.float32)
    w_sum = np.float32(0.0)
    for i in range(tile):
        for j in range(tile):
            w_sum += window[i] * window[j]
    for ti in prange(n_ty):
        buf = np.empty((tile + 3, tile), np.float32)
        warped = np.empty((tile, tile), np.float32)
        y0 = origin_y + ti * stride
        for tj in range(n_tx):
            x0 = origin_x + tj * stride
            p0y = np.float64(init[ti, tj, 0])
            p0x = np.float64(init[ti, tj, 1])
            out[ti, tj, 0] = p0y
            out[ti, tj, 1] = p0x
            sd[ti, tj] = np.inf
            hyy = np.float64(hess[ti, tj, 0])
            hyx = np.float64(hess[ti, tj, 1])
            hxx = np.float64(hess[ti, tj, 2])
            det = hyy * hxx - hyx * hyx
            tr = hyy + hxx
            # Relative test: the smaller eigenvalue must not vanish against
            # the larger one (a threshold on det alone depends on contrast).
            if not (tr > 1e-12 and det > 1e-4 * tr * tr):
                continue
            iyy = hxx / det
            iyx = -hyx / det
            ixx = hyy / det
            py = p0y
            px = p0x
            lam_min = 0.5 * (tr - np.sqrt(max(tr * tr - 4.0 * det, 0.0)))
            ee = np.float32(0.0)
            for _ in range(n_iter):
                sample_tile(moving, y0, x0, tile, py, px, order, buf, warped)
                by = np.float32(0.0)
                bx = np.float32(0.0)
                ee = np.float32(0.0)
                for i in range(tile):
                    t = ref[y0 + i]
                    ggy = gy[y0 + i]
                    ggx = gx[y0 + i]
                    wr = warped[i]
                    wi = window[i]
                    for j in range(tile):
                        r = wr[j] - t[x0 + j]
                        e = r * (wi * window[j])
                        ee += e * r
                        by += ggy[x0 + j] * e
                        bx += ggx[x0 + j] * e
                dy = iyy * by + iyx * bx
                dx = iyx * by + ixx * bx
                py -= dy
                px -= dx
                if abs(dy) < tol and abs(dx) < tol:
                    break
            if abs(py - p0y) <= max_dev and abs(px - p0x) <= max_dev:
                out[ti, tj, 0] = py
                out[ti, tj, 1] = px
                # Gauss-Newton covariance ~ residual variance * H^-1; its
                # largest eigenvalue is residual variance / lambda_min(H).
                sd[ti, tj] = np.sqrt(ee / w_sum / lam_min)
    return out, sd
