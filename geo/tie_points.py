"""Local co-registration: a grid of tie points and the smooth residual field they support.

The analyst's view of local misregistration (AROSICS' ``COREG_LOCAL``): the
working grid is cut into square cells; at each cell's centre (a node) the
shift of the pass is measured on the cell's window, starting from the global
model's prediction (:func:`mfsr.geo.coregister.estimate_shift` with
``initial``, masks respected). A node is reliable when the fit saw enough
clear pixels, correlates, and its predicted standard deviation is small.

The residual field (node shift minus global model) is then cleaned and
smoothed on the node grid: nodes that disagree with their neighbours'
median are dropped, and a Gaussian-weighted mean with inverse-variance
weights fills every node. It is kept only when it is significant: larger
than what the nodes' own noise would leave after the smoothing; otherwise
the global model alone describes the pass (a field of noise would only
misplace samples).

Conventions (docs/conventions.md): displacements (dy, dx) in working-grid
px, reference pixel ``(y, x)`` at ``(y, x) + d`` of the pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.ndimage import correlate, generic_filter

from .coregister import corner_std, estimate_shift, model_basis, model_matrix
from .pass_geometry import PassGeometry

__all__ = [
    "TiePoints", "node_grid", "measure_tie_points", "fit_model", "residual_field",
    "MIN_SPACING", "MAX_NODES", "MAX_NODE_STD", "MIN_NODES", "MIN_GRID", "NODE_WINDOW",
]

# Smallest cell side, px: below it a window holds too little texture for a
# shift to 0.1 px (and the time per node no longer drops).
MIN_SPACING = 32
# Most nodes along an axis (time grows with their number).
MAX_NODES = 12
# Largest window measured at a node (its cell's centre), px: larger cells
# are sampled at their centre, so the time per node stays bounded.
NODE_WINDOW = 96
# Fewest nodes along each axis for a residual field.
MIN_NODES = 3
# Smallest working grid (px, each axis) for a residual field or a global
# model beyond translation (see mfsr.geo.pipeline): on smaller grids a
# rotation or a local term cannot be told from content that changed between
# dates (on the real 50 to 150 px stacks of ../shared/data such fits passed
# the significance test on content change alone).
MIN_GRID = 192
# Largest predicted std (px) of a reliable node.
MAX_NODE_STD = 0.1
# Smallest fraction of clear pixels in a reliable node's window.
MIN_CLEAR = 0.5
# Search margin around the starting prediction, px (shifts up to 2 px less
# are found: a 0.1 deg rotation moves the corners of a 2000 px grid by 2.5 px
# from a translation).
NODE_MARGIN = 6
# Smoothing of the residual over the node grid (Gaussian sigma, nodes).
SMOOTH_NODES = 0.35
# A node further than this from its neighbours' median (px) is dropped.
OUTLIER_PX = 0.25
# A residual field smaller than this everywhere (px) is not used.
MIN_RESIDUAL = 0.05


@dataclass
class TiePoints:
    """Shifts measured on a grid of nodes for one pass.

    Attributes
    ----------
    rows, cols : ndarray of float64, shape (Ty,), (Tx,)
        Working-grid coordinates of the node centres.
    shifts : ndarray of float64, shape (Ty, Tx, 2)
        Measured displacement (dy, dx), px; NaN where no fit was possible.
    std : ndarray of float64, shape (Ty, Tx)
        Predicted standard deviation (larger component), px; inf where none.
    correlation : ndarray of float64, shape (Ty, Tx)
    clear : ndarray of float64, shape (Ty, Tx)
        Fraction of the window's pixels clear in both images.
    reliable : ndarray of bool, shape (Ty, Tx)
    """

    rows: np.ndarray
    cols: np.ndarray
    shifts: np.ndarray
    std: np.ndarray
    correlation: np.ndarray
    clear: np.ndarray
    reliable: np.ndarray


def node_grid(height: int, width: int, spacing: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Node centres and cell side for a working grid.

    Parameters
    ----------
    height, width : int
        Working grid, px.
    spacing : int or None
        Cell side, px (default: :data:`MIN_SPACING`, or larger so that at
        most :data:`MAX_NODES` fit along the longer axis).

    Returns
    -------
    rows, cols : ndarray of float64
        Node centres (cells of ``spacing`` px from the grid origin; a
        partial last cell is left out).
    spacing : int
    """
    if spacing is None:
        spacing = max(MIN_SPACING, int(np.ceil(max(height, width) / MAX_NODES)))
    spacing = int(spacing)
    rows = (np.arange(height // spacing) + 0.5) * spacing - 0.5
    cols = (np.arange(width // spacing) + 0.5) * spacing - 0.5
    return rows, cols, spacing


def measure_tie_points(
    read_ref: Callable[[tuple[int, int], tuple[int, int]], tuple[np.ndarray, np.ndarray]],
    read_mov: Callable[[tuple[int, int], tuple[int, int]], tuple[np.ndarray, np.ndarray]],
    model: PassGeometry,
    height: int,
    width: int,
    *,
    spacing: int | None = None,
    min_correlation: float = 0.5,
) -> TiePoints:
    """Measure the pass's shift at every node, starting from the global model.

    Parameters
    ----------
    read_ref, read_mov : callable ``(rows, cols) -> (grey, valid)``
        Read a window (half-open working-grid ranges, which may reach
        beyond the grid) of the reference / the pass as normalised grey
        float32 and bool validity; the pass in its own pixels placed on the
        working grid (its pixel ``(y, x)`` is working position ``(y, x)``,
        before the displacement). Outside the data is invalid.
    model : PassGeometry
        The global model: the starting point of every node.
    height, width : int
        Working grid, px.
    spacing : int or None
        See :func:`node_grid`.
    min_correlation : float
        Smallest correlation of a reliable node.

    Returns
    -------
    TiePoints
    """
    rows, cols, spacing = node_grid(height, width, spacing)
    ty, tx = rows.size, cols.size
    shifts = np.full((ty, tx, 2), np.nan)
    std = np.full((ty, tx), np.inf)
    corr = np.full((ty, tx), np.nan)
    clear = np.zeros((ty, tx))
    m = NODE_MARGIN
    size = min(spacing, NODE_WINDOW)
    inset = (spacing - size) // 2
    for a in range(ty):
        r0 = a * spacing + inset
        pred = np.rint(model.displacement_at(rows[a], cols)).astype(int)  # (tx, 2)
        ref_strip, ref_valid = read_ref((r0, r0 + size), (0, tx * spacing))
        py0 = r0 + int(pred[:, 0].min()) - m
        py1 = r0 + size + int(pred[:, 0].max()) + m
        px0 = int(pred[:, 1].min()) - m
        px1 = tx * spacing + int(pred[:, 1].max()) + m
        mov_strip, mov_valid = read_mov((py0, py1), (px0, px1))
        for b in range(tx):
            c0 = b * spacing + inset
            ref = ref_strip[:, c0 : c0 + size]
            rv = ref_valid[:, c0 : c0 + size]
            y0 = r0 + pred[b, 0] - m - py0
            x0 = c0 + pred[b, 1] - m - px0
            mov = mov_strip[y0 : y0 + size + 2 * m, x0 : x0 + size + 2 * m]
            mv = mov_valid[y0 : y0 + size + 2 * m, x0 : x0 + size + 2 * m]
            joint = rv & mv[m : m + size, m : m + size]
            clear[a, b] = joint.mean()
            if clear[a, b] < MIN_CLEAR:
                continue
            start = model.displacement_at(rows[a], cols[b]) - pred[b]
            try:
                est = estimate_shift([ref], [rv], [mov], [mv], m, initial=start, tolerance=1e-3, iterations=10)
            except ValueError:
                continue
            shifts[a, b] = pred[b] + est.shift
            std[a, b] = float(np.max(est.std))
            corr[a, b] = est.correlation
    reliable = (np.isfinite(shifts[..., 0]) & (std <= MAX_NODE_STD) & (corr >= min_correlation)
                & (clear >= MIN_CLEAR))
    return TiePoints(rows, cols, shifts, std, corr, clear, reliable)


def fit_model(points: TiePoints, model: str, height: int, width: int) -> tuple[np.ndarray, float] | None:
    """Global model fitted to the reliable tie points (robust least squares).

    Parameters
    ----------
    points : TiePoints
    model : {"similarity", "affine"}
    height, width : int
        Working grid, px: the corner uncertainty is evaluated at its corners.

    Returns
    -------
    (matrix, corner_std) or None
        The (2, 3) displacement matrix (``(dy, dx) = matrix @ (y, x, 1)``)
        and the largest standard deviation (px) of the modelled displacement
        at the grid's corners, from the fit's covariance with the scatter of
        the points about it (local displacement included: an honest, not a
        statistical-only, uncertainty). None with fewer than 6 reliable
        points.
    """
    ok = points.reliable
    if ok.sum() < 6:
        return None
    yy, xx = np.meshgrid(points.rows, points.cols, indexing="ij")
    y, x, d = yy[ok], xx[ok], points.shifts[ok]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    half = max(height, width) / 2
    u, v = (y - cy) / half, (x - cx) / half
    ky, kx = model_basis(model, u, v)
    a = np.concatenate([ky.T, kx.T])
    b = np.concatenate([d[:, 0], d[:, 1]])
    w = np.ones(b.size)
    theta = np.zeros(a.shape[1])
    for _ in range(5):  # Huber IRLS: a cloud edge or a changed field does not tilt the model
        aw = a * w[:, None]
        theta = np.linalg.lstsq(aw.T @ a, aw.T @ b, rcond=None)[0]
        r = b - a @ theta
        scale = 1.4826 * np.median(np.abs(r)) + 1e-6
        w = np.minimum(1.0, 1.345 * scale / np.maximum(np.abs(r), 1e-12))
    aw = a * w[:, None]
    dof = max(b.size - a.shape[1], 1)
    sigma2 = float((w * r**2).sum() / dof)
    cov = sigma2 * np.linalg.pinv(aw.T @ a)
    matrix = model_matrix(model, theta, np.array([cy, cx]), np.array([half, half]))
    # the grid's corners, normalised as the points
    cu, cv = np.array([-cy, -cy, cy, cy]) / half, np.array([-cx, cx, -cx, cx]) / half
    return matrix, corner_std(model, cov, cu, cv)


def residual_field(points: TiePoints, model: PassGeometry) -> tuple[np.ndarray | None, np.ndarray]:
    """The smooth residual of the tie points beyond the global model, if significant.

    Parameters
    ----------
    points : TiePoints
    model : PassGeometry
        The global model the residual is measured against.

    Returns
    -------
    residual : ndarray of float32, shape (Ty, Tx, 2), or None
        Smoothed residual (dy, dx) at every node; None when too few nodes
        are reliable or the field is not significant.
    used : ndarray of bool, shape (Ty, Tx)
        Nodes that entered the field (reliable and not outliers).
    """
    ty, tx = points.reliable.shape
    used = points.reliable.copy()
    if used.sum() < max(4, 0.25 * used.size) or min(ty, tx) < MIN_NODES:
        return None, np.zeros_like(used)
    yy, xx = np.meshgrid(points.rows, points.cols, indexing="ij")
    res = np.where(used[..., None], points.shifts - model.displacement_at(yy, xx), np.nan)
    # Outliers against the neighbours' median (a cloud edge, a changed field).
    for c in range(2):
        med = _nan_median3(res[..., c])
        used &= ~(np.abs(res[..., c] - med) > OUTLIER_PX)
    w = np.where(used, 1.0 / np.maximum(points.std, 1e-3) ** 2, 0.0)
    g = _gaussian_kernel(SMOOTH_NODES)
    wsum = correlate(w, g, mode="nearest")
    if not np.all(wsum > 0):
        return None, used
    field = np.stack([correlate(np.where(used, res[..., c], 0.0) * w, g, mode="nearest") / wsum
                      for c in range(2)], axis=-1)
    # Variance the nodes' noise leaves in the inverse-variance weighted mean.
    var = correlate(w, g * g, mode="nearest") / wsum**2
    if not np.any(np.abs(field).max(axis=-1) > np.maximum(MIN_RESIDUAL, 3.0 * np.sqrt(var))):
        return None, used
    return field.astype(np.float32), used


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1)
    g1 = np.exp(-0.5 * (t / sigma) ** 2)
    g = np.outer(g1, g1)
    return g / g.sum()


def _nan_median3(a: np.ndarray) -> np.ndarray:
    """3x3 median ignoring NaN (the centre included); NaN where all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
        return generic_filter(a, np.nanmedian, size=3, mode="nearest")
