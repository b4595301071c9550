"""Integer tile block matching (one pyramid level of HDR+ style alignment).

A regular grid of square tiles covers the reference image: tile ``(ti, tj)``
spans rows ``origin_y + ti*stride .. + tile - 1`` and columns
``origin_x + tj*stride .. + tile - 1`` (every tile lies inside the image).
For each tile the kernel evaluates a few candidate displacements (the
upsampled motion of nearby coarser tiles), keeps the cheapest and then
searches every integer displacement within ``radius`` of it.

A displacement ``(dy, dx)`` means the content of reference pixel ``(y, x)``
is at ``(y + dy, x + dx)`` in the moving image (mfsr's flow convention).
Pixels of the displaced tile that fall outside the moving image are read at
the nearest edge pixel (coordinate clamping), so every candidate is scored on
the same number of pixels and costs stay comparable.

:func:`reject_outliers` then replaces tiles that disagree with their 3x3
neighbourhood's median (near-random minima in flat or noisy tiles).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, fastmath=True, inline="always")
def _row_cost(a, ao: int, b, off: int, n: int, use_l1: bool):
    # sum_j |a[ao + j] - b[off + j]| (or squared) for j < n. Literal trip counts
    # for the usual tile sides let LLVM emit full-width vector code; with a
    # runtime count of 8 the vectorised body would be skipped entirely.
    s = np.float32(0.0)
    if use_l1:
        if n == 8:
            for j in range(8):
                s += abs(a[ao + j] - b[off + j])
        elif n == 16:
            for j in range(16):
                s += abs(a[ao + j] - b[off + j])
        else:
            for j in range(n):
                s += abs(a[ao + j] - b[off + j])
    else:
        if n == 8:
            for j in range(8):
                d = a[ao + j] - b[off + j]
                s += d * d
        elif n == 16:
            for j in range(16):
                d = a[ao + j] - b[off + j]
                s += d * d
        else:
            for j in range(n):
                d = a[ao + j] - b[off + j]
                s += d * d
    return s


@njit(cache=True, fastmath=True, inline="always")
def _row_cost3(a, ao: int, b, bo: int, n: int, use_l1: bool):
    # The three costs of one row at horizontal offsets bo, bo+1, bo+2 in one
    # pass, each reference value loaded once (radius-1 search).
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    if use_l1:
        if n == 16:
            for j in range(16):
                v = a[ao + j]
                s0 += abs(v - b[bo + j])
                s1 += abs(v - b[bo + j + 1])
                s2 += abs(v - b[bo + j + 2])
        else:
            for j in range(n):
                v = a[ao + j]
                s0 += abs(v - b[bo + j])
                s1 += abs(v - b[bo + j + 1])
                s2 += abs(v - b[bo + j + 2])
    else:
        for j in range(n):
            v = a[ao + j]
            d0 = v - b[bo + j]
            d1 = v - b[bo + j + 1]
            d2 = v - b[bo + j + 2]
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
    return s0, s1, s2


@njit(cache=True, fastmath=True)
def tile_cost(
    ref: np.ndarray,
    moving: np.ndarray,
    y0: int,
    x0: int,
    tile: int,
    dy: int,
    dx: int,
    use_l1: bool,
) -> float:
    """Sum of absolute (``use_l1``) or squared differences between the
    reference tile with top-left ``(y0, x0)`` and the moving tile at
    ``(y0 + dy, x0 + dx)``, moving coordinates clamped to the image."""
    h, w = moving.shape
    my = y0 + dy
    mx = x0 + dx
    s = np.float32(0.0)
    if my >= 0 and mx >= 0 and my + tile <= h and mx + tile <= w:
        for i in range(tile):
            s += _row_cost(ref[y0 + i], x0, moving[my + i], mx, tile, use_l1)
    else:
        for i in range(tile):
            yy = min(max(my + i, 0), h - 1)
            for j in range(tile):
                xx = min(max(mx + j, 0), w - 1)
                d = ref[y0 + i, x0 + j] - moving[yy, xx]
                if use_l1:
                    s += abs(d)
                else:
                    s += d * d
    return s


@njit(cache=True, parallel=True, fastmath=True)
def block_match(
    ref: np.ndarray,
    moving: np.ndarray,
    origin_y: int,
    origin_x: int,
    stride: int,
    tile: int,
    candidates: np.ndarray,
    radius: int,
    use_l1: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Best integer displacement of every tile.

    Parameters
    ----------
    ref, moving : ndarray of float32, shape (H, W)
        Reference and moving images of one pyramid level.
    origin_y, origin_x : int
        Top-left pixel of tile (0, 0).
    stride, tile : int
        Tile spacing and tile side, in pixels.
    candidates : ndarray of int32, shape (TY, TX, K, 2)
        K candidate displacements (dy, dx) per tile, best guess first.
    radius : int
        Search radius around the cheapest candidate (a (2r+1)^2 window).
    use_l1 : bool
        Cost: sum of absolute differences if True, of squared differences
        otherwise.

    Returns
    -------
    disp : ndarray of int32, shape (TY, TX, 2)
        Displacement (dy, dx) of minimal cost. The cheapest candidate (the
        first listed among equals) is the centre of the search window and
        wins ties; other ties go to the earliest window position in row-major
        order.
    cost : ndarray of float32, shape (TY, TX)
        Its cost (sum over the tile's ``tile * tile`` pixels).
    """
    n_ty, n_tx, n_cand = candidates.shape[0], candidates.shape[1], candidates.shape[2]
    h, w = moving.shape
    nd = 2 * radius + 1
    win = tile + 2 * radius
    disp = np.empty((n_ty, n_tx, 2), np.int32)
    cost = np.empty((n_ty, n_tx), np.float32)
    for ti in prange(n_ty):
        # Per-row scratch: the clamped search window of border tiles and the
        # window's costs.
        mbuf = np.empty((win, win), np.float32)
        costs = np.empty((nd, nd), np.float32)
        y0 = origin_y + ti * stride
        for tj in range(n_tx):
            x0 = origin_x + tj * stride
            best = np.inf
            cy = 0
            cx = 0
            for k in range(n_cand):
                dy = candidates[ti, tj, k, 0]
                dx = candidates[ti, tj, k, 1]
                seen = False
                for k2 in range(k):
                    if candidates[ti, tj, k2, 0] == dy and candidates[ti, tj, k2, 1] == dx:
                        seen = True
                if seen:
                    continue
                c = tile_cost(ref, moving, y0, x0, tile, dy, dx, use_l1)
                if c < best:
                    best = c
                    cy = dy
                    cx = dx
            wy0 = y0 + cy - radius
            wx0 = x0 + cx - radius
            inside = wy0 >= 0 and wx0 >= 0 and wy0 + win <= h and wx0 + win <= w
            if not inside:
                for i in range(win):
                    yy = min(max(wy0 + i, 0), h - 1)
                    for j in range(win):
                        xx = min(max(wx0 + j, 0), w - 1)
                        mbuf[i, j] = moving[yy, xx]
            for sy in range(nd):
                if nd == 3:
                    # Radius 1 (the finest level): three running sums in
                    # registers, each reference row loaded once.
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    s2 = np.float32(0.0)
                    for i in range(tile):
                        # One call site: the inlined body is compiled once.
                        if inside:
                            mr = moving[wy0 + sy + i]
                            mo = wx0
                        else:
                            mr = mbuf[sy + i]
                            mo = 0
                        c0, c1, c2 = _row_cost3(ref[y0 + i], x0, mr, mo, tile, use_l1)
                        s0 += c0
                        s1 += c1
                        s2 += c2
                    costs[sy, 0] = s0
                    costs[sy, 1] = s1
                    costs[sy, 2] = s2
                    continue
                for sx in range(nd):
                    costs[sy, sx] = 0.0
                for i in range(tile):
                    rr = ref[y0 + i]
                    if inside:
                        mr = moving[wy0 + sy + i]
                        mo = wx0
                    else:
                        mr = mbuf[sy + i]
                        mo = 0
                    for sx in range(nd):
                        costs[sy, sx] += _row_cost(rr, x0, mr, mo + sx, tile, use_l1)
            # Scan with a strict '<' from the centre: this running minimum is
            # what the tests with known integer shifts guard.
            best = costs[radius, radius]
            by = 0
            bx = 0
            for sy in range(nd):
                for sx in range(nd):
                    if costs[sy, sx] < best:
                        best = costs[sy, sx]
                        by = sy - radius
                        bx = sx - radius
            disp[ti, tj, 0] = cy + by
            disp[ti, tj, 1] = cx + bx
            cost[ti, tj] = best
    return disp, cost


@njit(cache=True, parallel=True)
def reject_outliers(disp: np.ndarray, threshold: float) -> np.ndarray:
    """Replace tiles that disagree with their neighbourhood by its median.

    Parameters
    ----------
    disp : ndarray, shape (TY, TX, 2)
        Tile displacements (integer or float).
    threshold : float
        A tile whose displacement differs from the per-component median of
        its 3x3 tile neighbourhood (edges replicated, the tile included) by
        more than ``threshold`` in either component takes that median.

    Returns
    -------
    cleaned : ndarray, same shape and dtype as ``disp``
    """
    n_ty, n_tx = disp.shape[0], disp.shape[1]
    out = disp.copy()
    for ti in prange(n_ty):
        vals = np.empty(9, np.float64)
        med = np.empty(2, np.float64)
        for tj in range(n_tx):
            bad = False
            for c in range(2):
                k = 0
                for a in range(-1, 2):
                    yy = min(max(ti + a, 0), n_ty - 1)
                    for b in range(-1, 2):
                        xx = min(max(tj + b, 0), n_tx - 1)
                        vals[k] = disp[yy, xx, c]
                        k += 1
                # Insertion sort: far cheaper than a general sort for 9 values.
                for m in range(1, 9):
                    v = vals[m]
                    q = m - 1
                    while q >= 0 and vals[q] > v:
                        vals[q + 1] = vals[q]
                        q -= 1
                    vals[q + 1] = v
                med[c] = vals[4]
                if abs(disp[ti, tj, c] - med[c]) > threshold:
                    bad = True
            if bad:
                out[ti, tj, 0] = med[0]
                out[ti, tj, 1] = med[1]
    return out
