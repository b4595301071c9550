"""Satellite passes: GeoTIFF reading, common grids, masks and tiled fusion.

The public surface:

- :func:`fuse_rasters` -- fuse several passes (GeoTIFF, JPEG2000, ... with
  nodata, internal masks and cloud masks) into one finer GeoTIFF on the
  reference grid, tiled and optionally on a ``dask.distributed`` cluster;
  returns a :class:`GeoFusionResult` with the per-pass shifts;
- :func:`is_georaster` -- whether a file is a georeferenced raster (the CLI
  routes such inputs to :func:`fuse_rasters`);
- :func:`quicklook` -- an 8-bit PNG preview of a (large) raster.

The burst fusion core it builds on lives in :mod:`mfsr` and
:mod:`mfsr.kernels`; conventions are those of DESIGN.md (arrays (row, col);
shifts (dy, dx) in input pixels, reference -> pass).
"""

from .passes import is_georaster
from .pipeline import GeoFusionResult, fuse_rasters
from .quicklook import quicklook

__all__ = ["GeoFusionResult", "fuse_rasters", "is_georaster", "quicklook"]
