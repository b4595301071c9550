"""Satellite passes: opening GDAL rasters, their metadata, and windowed reads.

A *pass* is one acquisition of the area, stored as a single- or multi-band
raster that GDAL reads (GeoTIFF, JPEG2000, ...). :func:`read_pass_info`
checks that it opens and is georeferenced and keeps what the fusion needs
(grid, bands, dtype, nodata, and each band's description, colour
interpretation, scale, offset, units and tags), so the per-tile tasks only
carry paths and small records, never arrays. An in-memory pass (an
:class:`ArrayDataset`, what :func:`mfsr.geo.fuse_xarray` builds from a
DataArray stack) is read through the same :func:`read_window`.

Arrays are (row, col) = (y, x); windows are given as half-open pixel ranges
``rows = (r0, r1)``, ``cols = (c0, c1)`` that may reach beyond the raster:
:func:`read_window` pads such reads and marks the padding invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .safe_open import check_local_raster, open_raster

#: Magnitude beyond which a sample is taken for an undeclared fill value, not
#: a measurement (float rasters use -3.4e38, 1e30, ... without declaring them).
IMPLAUSIBLE = 1e20

__all__ = ["ArrayDataset", "PassInfo", "is_georaster", "read_pass_info", "check_compatible", "read_window"]


@dataclass(frozen=True)
class PassInfo:
    """What the fusion needs to know about one pass.

    Attributes
    ----------
    path : str
        File name as given.
    crs : rasterio.crs.CRS
    transform : affine.Affine
        Pixel (col, row) -> map (x, y) of the pixel's upper-left corner.
    width, height : int
        Raster size, px.
    count : int
        Number of bands in the file.
    dtype : str
        Data type of the bands (all bands share it).
    nodata : float or None
        The file's nodata value.
    descriptions : tuple of (str or None)
        Band descriptions.
    tags : dict
        Dataset-level metadata tags (default domain).
    band_tags : tuple of dict
        Per-band metadata tags (default domain, e.g. ``wavelength``).
    colorinterp : tuple of rasterio.enums.ColorInterp
        Per-band colour interpretation (``red``, ``gray``, ``undefined``, ...).
    scales, offsets : tuple of float
        Per band: physical value = stored value * scale + offset (1 and 0
        where the file declares none).
    units : tuple of (str or None)
        Per-band units of the physical value.

    Notes
    -----
    The per-band tuples hold one entry per band of the file (band ``b`` at
    index ``b - 1``); a PassInfo built in memory may leave them empty.
    :func:`mfsr.geo.band_metadata.fused_band_metadata` selects them for the
    fused bands, with defaults for missing entries. Every field pickles (the
    records travel to Dask workers).
    """

    path: str
    crs: object
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple = ()
    tags: dict = field(default_factory=dict)
    band_tags: tuple = ()
    colorinterp: tuple = ()
    scales: tuple = ()
    offsets: tuple = ()
    units: tuple = ()

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in map units (north-up rasters)."""
        from rasterio.transform import array_bounds

        return array_bounds(self.height, self.width, self.transform)


class ArrayDataset:
    """One in-memory pass, read by :func:`read_window` as it reads a rasterio dataset.

    It offers the part of a rasterio dataset's interface that
    :func:`read_window` uses (``height``, ``width``, ``nodata``, ``read`` and
    ``read_masks`` with a ``window``), so an array pass goes through the very
    code that reads a file: same padding, same validity rule (the mask, the
    nodata value, non-finite values), same float32 conversion.

    Parameters
    ----------
    data : array-like, shape (C, H, W)
        Band values in their own data type: a NumPy array, or anything
        sliced lazily and turned into one by ``np.asarray`` (a Dask array:
        only the windows read are computed).
    invalid : array-like of bool, shape (H, W), or None
        True where the pass holds no valid data (cloud, bad pixel): the
        meaning of a nonzero mask pixel in :func:`mfsr.geo.fuse_rasters`.
    nodata : float or None
        Samples equal to it are invalid (in every band's data type).
    """

    def __init__(self, data, invalid=None, nodata: float | None = None):
        if len(data.shape) != 3:
            raise ValueError(f"data: expected shape (C, H, W), got {tuple(data.shape)}")
        if invalid is not None and tuple(invalid.shape) != tuple(data.shape[1:]):
            raise ValueError(f"invalid: expected shape {tuple(data.shape[1:])}, got {tuple(invalid.shape)}")
        self.data = data
        self.invalid = invalid
        self.nodata = nodata
        self.count, self.height, self.width = (int(v) for v in data.shape)

    def _rows_cols(self, window: Window) -> tuple[slice, slice]:
        r0, c0 = int(window.row_off), int(window.col_off)
        return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))

    def read(self, indexes, window: Window) -> np.ndarray:
        """Bands ``indexes`` (1-based list) over ``window``: ndarray (len(indexes), h, w), own dtype."""
        rs, cs = self._rows_cols(window)
        idx = [int(b) - 1 for b in indexes]
        if idx == list(range(self.count)):
            return np.asarray(self.data[:, rs, cs])
        return np.asarray(self.data[idx][:, rs, cs])

    def read_masks(self, indexes, window: Window) -> np.ndarray:
        """rasterio's mask convention: uint8 (len(indexes), h, w), 0 where invalid, 255 elsewhere."""
        rs, cs = self._rows_cols(window)
        h, w = rs.stop - rs.start, cs.stop - cs.start
        ok = np.ones((h, w), bool) if self.invalid is None else ~np.asarray(self.invalid[rs, cs], bool)
        return np.broadcast_to(np.where(ok, np.uint8(255), np.uint8(0)), (len(indexes), h, w))


def is_georaster(path) -> bool:
    """Whether ``path`` is a raster GDAL opens with a CRS or a non-identity transform.

    The CLI uses it to route inputs: georeferenced passes go to
    :func:`mfsr.geo.fuse_rasters`, plain images (PNG, JPEG, TIFF without
    georeferencing) to the burst fusion. Never raises: unreadable or missing
    files are simply not georasters.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
    """
    try:
        with open_raster(path) as src:
            return src.crs is not None or not src.transform.almost_equals(Affine.identity())
    except Exception:
        return False


def read_pass_info(path, *, argument: str = "paths") -> PassInfo:
    """Open one pass and read its metadata.

    Parameters
    ----------
    path : str or os.PathLike
        A raster file GDAL opens.
    argument : str
        Name of the argument the path came from, for error messages.

    Returns
    -------
    PassInfo

    Raises
    ------
    ValueError
        If the file is missing or unreadable, has no CRS, has mixed band
        data types, or a complex or boolean data type.
    """
    p = check_local_raster(path, argument)
    if not Path(p).exists():
        raise ValueError(f"{argument}: file not found: {p}")
    try:
        with open_raster(p, argument) as src:
            info = PassInfo(
                path=p,
                crs=src.crs,
                transform=src.transform,
                width=src.width,
                height=src.height,
                count=src.count,
                dtype=src.dtypes[0] if src.count else "",
                nodata=src.nodata,
                descriptions=tuple(src.descriptions),
                tags=dict(src.tags()),
                band_tags=tuple(dict(src.tags(b)) for b in range(1, src.count + 1)),
                colorinterp=tuple(src.colorinterp),
                scales=tuple(1.0 if v is None else float(v) for v in src.scales),
                offsets=tuple(0.0 if v is None else float(v) for v in src.offsets),
                units=tuple(u or None for u in src.units),
            )
            dtypes = set(src.dtypes)
    except RasterioIOError as exc:
        raise ValueError(f"{argument}: cannot read {p} as a raster: {exc}") from None
    if info.count == 0:
        raise ValueError(f"{argument}: {p} has no bands")
    if len(dtypes) > 1:
        raise ValueError(f"{argument}: {p} mixes band data types {sorted(dtypes)}")
    kind = np.dtype(info.dtype).kind
    if kind not in "uif":
        raise ValueError(
            f"{argument}: {p} has data type {info.dtype}; expected real integer or float bands"
        )
    if info.crs is None:
        raise ValueError(
            f"{argument}: {p} has no CRS (coordinate reference system); georeference it "
            "(e.g. gdal_edit.py -a_srs) or fuse plain images with mfsr.fuse"
        )
    return info


def check_compatible(infos: list[PassInfo], bands: tuple[int, ...] | None) -> tuple[int, ...]:
    """Check that the passes can be fused together and return the bands to use.

    Parameters
    ----------
    infos : list of PassInfo
        The passes, reference included.
    bands : tuple of int or None
        1-based band indexes to fuse; None means every band.

    Returns
    -------
    bands : tuple of int
        1-based indexes, valid in every pass.

    Raises
    ------
    ValueError
        Naming the first pass whose band count or data type differs from the
        first pass's, or an out-of-range band.
    """
    first = infos[0]
    for info in infos[1:]:
        if info.count != first.count:
            raise ValueError(
                f"paths: {info.path} has {info.count} band(s) but {first.path} has "
                f"{first.count}; every pass must hold the same bands"
            )
        if np.dtype(info.dtype) != np.dtype(first.dtype):
            raise ValueError(
                f"paths: {info.path} has data type {info.dtype} but {first.path} has "
                f"{first.dtype}; passes of one product share a data type (convert them first)"
            )
    if bands is None:
        return tuple(range(1, first.count + 1))
    out = tuple(int(b) for b in bands)
    if not out or any(b < 1 or b > first.count for b in out):
        raise ValueError(f"bands: expected 1-based band indexes in 1..{first.count}, got {bands!r}")
    return out


def read_window(
    src, bands: tuple[int, ...], rows: tuple[int, int], cols: tuple[int, int], *, tally: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may reach beyond the raster.

    Parameters
    ----------
    src : rasterio dataset (or WarpedVRT)
        Open dataset.
    bands : tuple of int
        1-based band indexes.
    rows, cols : (int, int)
        Half-open pixel ranges of the window in ``src``'s grid.

    Returns
    -------
    data : ndarray of float32, shape (h, w, C)
        Values; 0 outside the raster.
    valid : ndarray of bool, shape (h, w)
        True where every band holds data: inside the raster, not nodata, not
        masked by the dataset's own mask (``read_masks``: internal masks,
        alpha, nodata), finite and within +-:data:`IMPLAUSIBLE`.

    Other Parameters
    ----------------
    tally : list, optional
        Gets the number of pixels invalid only because a value is
        non-finite or beyond :data:`IMPLAUSIBLE` (undeclared fill values),
        for a warning that counts them.
    """
    r0, r1 = rows
    c0, c1 = cols
    h, w = r1 - r0, c1 - c0
    data = np.zeros((h, w, len(bands)), np.float32)
    valid = np.zeros((h, w), bool)
    a0, a1 = max(r0, 0), min(r1, src.height)
    b0, b1 = max(c0, 0), min(c1, src.width)
    if a1 <= a0 or b1 <= b0:
        return data, valid
    win = Window(b0, a0, b1 - b0, a1 - a0)
    block = src.read(list(bands), window=win)
    masks = src.read_masks(list(bands), window=win)
    ok = np.all(masks > 0, axis=0)
    blockf = block.astype(np.float32, copy=False)
    # NaN, infinity and undeclared fill values (-3.4e38, 1e30) are no data:
    # fused as numbers they overflow the accumulators.
    with np.errstate(invalid="ignore"):
        plausible = np.all(np.abs(blockf) <= IMPLAUSIBLE, axis=0)
    if src.nodata is not None and not np.isnan(src.nodata):
        ok &= np.all(block != np.asarray(src.nodata).astype(block.dtype), axis=0)
    if tally is not None:
        declared_nan = src.nodata is not None and np.isnan(src.nodata)
        undeclared = ok & ~plausible
        if declared_nan:
            undeclared &= ~np.any(np.isnan(blockf), axis=0)
        tally.append(int(undeclared.sum()))
    ok &= plausible
    sub = np.moveaxis(blockf, 0, -1)
    data[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = np.where(ok[..., None], sub, 0.0)
    valid[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = ok
    return data, valid
