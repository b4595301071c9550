"""Where each reference pixel lies in a pass: a global model plus a smooth local residual.

Orthorectified passes are related by a shift only to first order: other
orbits bring a small rotation and scale, terrain brings local parallax. A
:class:`PassGeometry` holds the displacement of one pass relative to the
reference on the working grid as

    d(y, x) = A @ (y, x, 1) + r(y, x)

with ``A`` the (2, 3) displacement matrix of a global model (translation,
similarity or affine; :func:`mfsr.geo.coregister.estimate_shift`) and ``r`` a
residual on a coarse grid of tie-point nodes (:mod:`mfsr.geo.tie_points`),
interpolated bilinearly between the nodes and held constant beyond the outer
ones. Reference pixel ``(y, x)`` lies at ``(y, x) + d(y, x)`` of the pass, in
working-grid px (docs/conventions.md), the sign of
:attr:`mfsr.geo.GeoFusionResult.shifts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PassGeometry"]


@dataclass(frozen=True)
class PassGeometry:
    """Displacement of one pass relative to the reference (working-grid px).

    Attributes
    ----------
    matrix : ndarray of float64, shape (2, 3)
        Global model: ``(dy, dx) = matrix @ (y, x, 1)``.
    node_rows, node_cols : ndarray of float64, shape (Ty,), (Tx,), or None
        Working-grid coordinates of the residual's nodes.
    residual : ndarray of float32, shape (Ty, Tx, 2), or None
        Local residual (dy, dx) at the nodes, beyond the global model.
    """

    matrix: np.ndarray
    node_rows: np.ndarray | None = None
    node_cols: np.ndarray | None = None
    residual: np.ndarray | None = None

    @classmethod
    def translation(cls, dy: float, dx: float) -> PassGeometry:
        """A pure shift."""
        return cls(np.array([[0.0, 0.0, dy], [0.0, 0.0, dx]]))

    @property
    def is_translation(self) -> bool:
        """True when the displacement is the same everywhere."""
        return self.residual is None and not np.any(self.matrix[:, :2])

    @property
    def shift(self) -> np.ndarray:
        """(dy, dx) of the global model at the grid origin, shape (2,)."""
        return self.matrix[:, 2].copy()

    def transform(self) -> np.ndarray:
        """The global model as a 3x3 matrix on ``(x, y, 1)`` (reference -> pass, working px).

        As ``mfsr.geometry`` and OpenCV write transforms; the local residual
        is not part of it.
        """
        m = self.matrix
        # (dy, dx) = [[myy, myx], [mxy, mxx]] (y, x) + (ty, tx); in (x, y)
        # order the position map is (x + dx, y + dy).
        return np.array([
            [1.0 + m[1, 1], m[1, 0], m[1, 2]],
            [m[0, 1], 1.0 + m[0, 0], m[0, 2]],
            [0.0, 0.0, 1.0],
        ])

    def displacement_at(self, rows, cols) -> np.ndarray:
        """(dy, dx) at working-grid coordinates (broadcast), shape ``broadcast + (2,)``, float64."""
        y, x = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
        m = self.matrix
        d = np.stack([m[0, 0] * y + m[0, 1] * x + m[0, 2], m[1, 0] * y + m[1, 1] * x + m[1, 2]], axis=-1)
        if self.residual is not None:
            d = d + self._residual_at(y, x)
        return d

    def window_field(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Dense displacement over working rows ``r0:r1``, columns ``c0:c1``, shape (h, w, 2), float32."""
        rows = np.arange(r0, r1, dtype=np.float64)[:, None]
        cols = np.arange(c0, c1, dtype=np.float64)[None, :]
        return self.displacement_at(rows, cols).astype(np.float32)

    def _residual_at(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        r = self.residual.astype(np.float64)
        iy, fy = _axis_taps(self.node_rows, y)
        ix, fx = _axis_taps(self.node_cols, x)
        iy1, ix1 = np.minimum(iy + 1, r.shape[0] - 1), np.minimum(ix + 1, r.shape[1] - 1)
        fy, fx = fy[..., None], fx[..., None]
        top = (1 - fx) * r[iy, ix] + fx * r[iy, ix1]
        bot = (1 - fx) * r[iy1, ix] + fx * r[iy1, ix1]
        return (1 - fy) * top + fy * bot


def _axis_taps(nodes: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the node at or before ``t`` and the fraction towards the next (constant beyond the ends)."""
    nodes = np.asarray(nodes, np.float64)
    if nodes.size == 1:
        return np.zeros(t.shape, np.intp), np.zeros(t.shape)
    tc = np.clip(t, nodes[0], nodes[-1])
    i = np.clip(np.searchsorted(nodes, tc, side="right") - 1, 0, nodes.size - 2)
    f = (tc - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, f
