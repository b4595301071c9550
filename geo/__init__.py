"""Satellite passes: GeoTIFF reading, common grids, masks and tiled fusion.

The public surface:

- :func:`fuse_rasters` -- fuse several passes (GeoTIFF, JPEG2000, ... with
  nodata, internal masks and cloud masks) into one finer GeoTIFF on the
  reference grid, tiled and optionally on a ``dask.distributed`` cluster;
  returns a :class:`GeoFusionResult` with the per-pass shifts;
- :func:`fuse_xarray` -- the same fusion of an xarray ``DataArray`` stack
  (time, band, y, x) with a rioxarray CRS and transform (odc-stac,
  stackstac, rioxarray; NumPy or Dask), returned as a finer DataArray
  (needs ``pip install mfsr[xarray]``);
- :func:`fuse_arrays` -- the same fusion of NumPy or Dask arrays
  (N, C, H, W) on one grid given by a CRS and a transform;
- :func:`is_georaster` -- whether a file is a georeferenced raster (the CLI
  routes such inputs to :func:`fuse_rasters`);
- :func:`quicklook` -- an 8-bit PNG preview of a (large) raster.

The burst fusion core it builds on lives in :mod:`mfsr` and
:mod:`mfsr.kernels`; conventions are those of DESIGN.md (arrays (row, col);
shifts (dy, dx) in input pixels, reference -> pass).
"""

from .passes import is_georaster
from .pipeline import GeoFusionResult, fuse_arrays, fuse_rasters
from .quicklook import quicklook
from .xarray_stack import fuse_xarray

__all__ = ["GeoFusionResult", "fuse_arrays", "fuse_rasters", "fuse_xarray", "is_georaster", "quicklook"]
