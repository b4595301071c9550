"""Dense per-pixel field from per-tile values by bilinear interpolation.

Tile centres form a regular grid on the registration image: tile ``(ti, tj)``
is centred at ``(centre_y + ti*stride, centre_x + tj*stride)``. Output pixel
``(y, x)`` of the input frame sits at registration-image coordinate
``((y + 0.5)/f - 0.5, (x + 0.5)/f - 0.5)`` where ``f`` is the grid factor (2
for a CFA mosaic registered on its 2x2-binned grey image, 1 otherwise), i.e.
``((y - 0.5)/2, (x - 0.5)/2)`` for a mosaic. Between tile centres the field is
bilinear, so an affine tile field (rotation, zoom) is reproduced exactly and
leaves no seams; beyond the outermost centres it is constant.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _axis_weights(
    n_out: int, n_tiles: int, centre0: float, stride: float, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    # For each output coordinate along one axis: lower tile index and the
    # weight of the upper one, clamped so that positions beyond the outer
    # centres take the outer value.
    idx = np.empty(n_out, np.int64)
    wt = np.empty(n_out, np.float32)
    for y in range(n_out):
        g = (y + 0.5) / factor - 0.5
        u = (g - centre0) / stride
        if u <= 0.0 or n_tiles == 1:
            idx[y] = 0
            wt[y] = 0.0
        elif u >= n_tiles - 1:
            idx[y] = n_tiles - 2
            wt[y] = 1.0
        else:
            i = int(np.floor(u))
            idx[y] = i
            wt[y] = u - i
    return idx, wt


@njit(cache=True, parallel=True, fastmath=True)
def interpolate_tiles(
    field: np.ndarray,
    centre_y: float,
    centre_x: float,
    stride: float,
    factor: int,
    value_scale: float,
    out: np.ndarray,
) -> None:
    """Bilinearly interpolate a tile field to every pixel of the input frame.

    Parameters
    ----------
    field : ndarray of float32, shape (TY, TX, C)
        Value per tile (e.g. C = 2 displacements (dy, dx) in registration px).
    centre_y, centre_x : float
        Centre of tile (0, 0) in registration-image pixels.
    stride : float
        Distance between neighbouring tile centres, registration px.
    factor : int
        Input pixels per registration pixel (2 for CFA, else 1).
    value_scale : float
        Multiplier applied to the values (``factor`` turns displacements in
        registration px into input px; 1 leaves other fields unchanged).
    out : ndarray of float32, shape (H, W, C)
        Written in place with the dense field of the (H, W) input frame.
        Passing a reused buffer avoids faulting in fresh pages for every
        frame, which costs as much as the interpolation itself.
    """
    n_ty, n_tx, n_c = field.shape
    out_h, out_w = out.shape[0], out.shape[1]
    iy, wy = _axis_weights(out_h, n_ty, centre_y, stride, factor)
    ix, wx = _axis_weights(out_w, n_tx, centre_x, stride, factor)
    # With a single tile along an axis both interpolation rows are tile 0.
    dy1 = 1 if n_ty > 1 else 0
    dx1 = 1 if n_tx > 1 else 0
    s = np.float32(value_scale)
    for y in prange(out_h):
        i0 = iy[y]
        i1 = i0 + dy1
        b = wy[y]
        a = np.float32(1.0) - b
        # Interpolate along y once per row; per pixel only a value and a
        # slope are read: v = row[j0] + wx * slope[j0].
        row = np.empty((n_tx, n_c), np.float32)
        slope = np.empty((n_tx, n_c), np.float32)
        for j in range(n_tx):
            for ch in range(n_c):
                row[j, ch] = s * (a * field[i0, j, ch] + b * field[i1, j, ch])
                slope[j, ch] = 0.0
        for j in range(n_tx - dx1):
            for ch in range(n_c):
                slope[j, ch] = row[j + dx1, ch] - row[j, ch]
        if n_c == 2:
            for x in range(out_w):
                j0 = ix[x]
                d = wx[x]
                out[y, x, 0] = row[j0, 0] + d * slope[j0, 0]
                out[y, x, 1] = row[j0, 1] + d * slope[j0, 1]
        else:
            for x in range(out_w):
                j0 = ix[x]
                d = wx[x]
                for ch in range(n_c):
                    out[y, x, ch] = row[j0, ch] + d * slope[j0, ch]


@njit(cache=True, parallel=True)
def smooth_tiles(disp: np.ndarray, radius: int, threshold: float) -> np.ndarray:
    """Average tile displacements over a symmetric neighbourhood.

    Each tile takes the mean of itself and of the point-symmetric pairs of
    tiles ``(+a, +b)`` / ``(-a, -b)`` within ``radius`` (the neighbourhood
    shrinks symmetrically at the grid edges) whose displacements both lie
    within ``threshold`` (either component) of the tile's own. Every pair
    averages to the centre value of a locally affine field, so rotations and
    zooms are reproduced without bias while independent per-tile errors
    (noise, aliasing) average out; a pair straddling a motion boundary is
    left out.

    Parameters
    ----------
    disp : ndarray of float32, shape (TY, TX, 2)
    radius : int
        Half-width of the neighbourhood in tiles (0 returns a copy).
    threshold : float
        Largest component difference of an accepted neighbour, pixels.

    Returns
    -------
    smoothed : ndarray of float32, shape (TY, TX, 2)
    """
    n_ty, n_tx = disp.shape[0], disp.shape[1]
    out = np.empty_like(disp)
    for ti in prange(n_ty):
        ry = min(radius, ti, n_ty - 1 - ti)
        for tj in range(n_tx):
            rx = min(radius, tj, n_tx - 1 - tj)
            cy = disp[ti, tj, 0]
            cx = disp[ti, tj, 1]
            sy = np.float64(cy)
            sx = np.float64(cx)
            n = 1
            for a in range(0, ry + 1):
                for b in range(-rx, rx + 1):
                    # One representative per symmetric pair.
                    if a == 0 and b <= 0:
                        continue
                    py = disp[ti + a, tj + b, 0]
                    px = disp[ti + a, tj + b, 1]
                    qy = disp[ti - a, tj - b, 0]
                    qx = disp[ti - a, tj - b, 1]
                    if (
                        abs(py - cy) <= threshold
                        and abs(px - cx) <= threshold
                        and abs(qy - cy) <= threshold
                        and abs(qx - cx) <= threshold
                    ):
                        sy += py + qy
                        sx += px + qx
                        n += 2
            out[ti, tj, 0] = sy / n
            out[ti, tj, 1] = sx / n
    return out
