"""The common target grid of a set of passes and where each pass sits on it.

The fusion works on one *working grid*: by default the reference pass's own
CRS, transform and size; with ``dst_crs`` and/or ``resolution`` the
reference's footprint reprojected to that CRS and pixel size. The output grid
is the working grid with pixels ``scale`` times smaller (same bounds).

A pass whose CRS equals the grid's and whose transform differs from it only
by a translation is read on its *native* grid: its sub-pixel offset is
carried into the fusion's flow, so its data are resampled once, by the
fusion kernel. Any other pass (other CRS, pixel size or rotation) is warped
to the working grid on the fly by a ``WarpedVRT`` (bilinear), i.e. resampled
once by GDAL before the fusion resamples it again; the residual offset of
such a pass is then only what registration finds.

Offsets follow docs/conventions.md: ``offset = (dy, dx)`` means working-grid pixel
``(i, j)`` (pixel centres at integer coordinates) lies at ``(i + dy, j + dx)``
of the pass's own pixel grid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from .passes import PassInfo

__all__ = ["Grid", "Placement", "choose_grid", "place_pass", "output_grid", "open_on_grid", "scale_fraction"]


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size (rows, cols)."""

    crs: object
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        return array_bounds(self.height, self.width, self.transform)


@dataclass(frozen=True)
class Placement:
    """How one pass maps onto the working grid.

    Attributes
    ----------
    native : bool
        True: read the pass's own pixels, shifted by ``offset``; False: read
        it through a WarpedVRT on the working grid (``offset`` is (0, 0)).
    offset : (float, float)
        (dy, dx), pass px: working-grid pixel (i, j) is at (i + dy, j + dx)
        of the pass's grid.
    overlap : float
        Fraction of the working grid the pass's footprint covers.
    """

    native: bool
    offset: tuple[float, float]
    overlap: float


def choose_grid(ref: PassInfo, dst_crs=None, resolution=None) -> Grid:
    """Working grid: the reference pass's grid, or its footprint in ``dst_crs`` / ``resolution``.

    Parameters
    ----------
    ref : PassInfo
        The reference pass.
    dst_crs : CRS, str or None
        Target CRS (anything ``rasterio.crs.CRS.from_user_input`` accepts).
    resolution : float or (float, float) or None
        Target pixel size (x, y) in target CRS units.

    Returns
    -------
    Grid
    """
    if dst_crs is None and resolution is None:
        return Grid(ref.crs, ref.transform, ref.width, ref.height)
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform

    try:
        crs = ref.crs if dst_crs is None else CRS.from_user_input(dst_crs)
    except Exception as exc:
        raise ValueError(f"dst_crs: not a CRS rasterio understands: {dst_crs!r} ({exc})") from None
    kwargs = {}
    if resolution is not None:
        res = (resolution, resolution) if np.isscalar(resolution) else tuple(resolution)
        if len(res) != 2 or not all(np.isfinite(r) and r > 0 for r in res):
            raise ValueError(f"resolution: expected a positive pixel size or (x, y) pair, got {resolution!r}")
        kwargs["resolution"] = tuple(float(r) for r in res)
    transform, width, height = calculate_default_transform(
        ref.crs, crs, ref.width, ref.height, *ref.bounds, **kwargs
    )
    return Grid(crs, transform, int(width), int(height))


def output_grid(grid: Grid, scale: float) -> Grid:
    """The working grid with pixels ``scale`` times smaller and the same origin.

    Size ``(round(H * scale), round(W * scale))`` (the fusion's rule), so the
    bounds are the working grid's whenever ``W * scale`` and ``H * scale``
    are integers.
    """
    return Grid(
        grid.crs,
        grid.transform @ Affine.scale(1.0 / scale),
        max(1, int(round(grid.width * scale))),
        max(1, int(round(grid.height * scale))),
    )


def scale_fraction(scale: float, max_denominator: int = 64) -> Fraction:
    """``scale`` as a fraction p/q with q <= ``max_denominator``.

    Tiles start on working-grid rows that are multiples of q, so every tile's
    output grid starts on a whole output pixel.

    Raises
    ------
    ValueError
        If no such fraction matches ``scale`` to 1e-9.
    """
    f = Fraction(scale).limit_denominator(max_denominator)
    if abs(float(f) - scale) > 1e-9 * max(1.0, scale):
        raise ValueError(
            f"scale: {scale!r} is not a ratio p/q with q <= {max_denominator}; "
            "tiled fusion needs whole output pixels at tile starts (use e.g. 2, 2.5, 3, 4/3)"
        )
    return f


def _is_translation(m: Affine, tol: float = 1e-6) -> bool:
    return abs(m.a - 1) < tol and abs(m.e - 1) < tol and abs(m.b) < tol and abs(m.d) < tol


def place_pass(info: PassInfo, grid: Grid, *, argument: str = "paths") -> Placement:
    """Where a pass sits on the working grid, and how much of it it covers.

    Raises
    ------
    ValueError
        If the pass's footprint does not overlap the working grid.
    """
    same_crs = info.crs == grid.crs
    m = ~info.transform @ grid.transform
    if same_crs and _is_translation(m):
        dy, dx = float(m.f), float(m.c)
        rows = (max(0.0, -dy), min(float(grid.height), info.height - dy))
        cols = (max(0.0, -dx), min(float(grid.width), info.width - dx))
        placement_native = True
        offset = (dy, dx)
    else:
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(info.crs, grid.crs, *info.bounds, densify_pts=21)
        inv = ~grid.transform
        xs, ys = zip(*[inv @ (x, y) for x in (left, right) for y in (bottom, top)])
        rows = (max(0.0, min(ys)), min(float(grid.height), max(ys)))
        cols = (max(0.0, min(xs)), min(float(grid.width), max(xs)))
        placement_native = False
        offset = (0.0, 0.0)
    area = max(0.0, rows[1] - rows[0]) * max(0.0, cols[1] - cols[0])
    frac = area / float(grid.width * grid.height)
    if frac <= 0:
        raise ValueError(
            f"{argument}: {info.path} does not overlap the reference grid "
            f"(its bounds {tuple(round(v, 3) for v in info.bounds)} vs the grid's "
            f"{tuple(round(v, 3) for v in grid.bounds)})"
        )
    return Placement(placement_native, offset, float(frac))


@contextlib.contextmanager
def open_on_grid(path: str, native: bool, grid: Grid, *, resampling=Resampling.bilinear,
                 src_crs=None, src_transform=None):
    """Open a raster as the fusion reads it: natively, or warped to ``grid``.

    Parameters
    ----------
    path : str
    native : bool
        Yield the dataset itself (its own pixel grid) when True, else a
        ``WarpedVRT`` on ``grid``.
    grid : Grid
    resampling : rasterio.enums.Resampling
        Of the warp (nearest for masks).
    src_crs, src_transform : optional
        Georeferencing to assume for the source (a mask file without its own).

    Yields
    ------
    dataset
    """
    from .safe_open import open_raster

    with open_raster(path) as src:
        if native:
            yield src
            return
        kw = {}
        if src_crs is not None:
            kw["src_crs"] = src_crs
        if src_transform is not None:
            kw["src_transform"] = src_transform
        with WarpedVRT(
            src, crs=grid.crs, transform=grid.transform, width=grid.width,
            height=grid.height, resampling=resampling, **kw,
        ) as vrt:
            yield vrt
