"""Atomic GeoTIFF output, optionally Cloud-Optimized.

Every output is written to a temporary file in its final directory
(:func:`mfsr.atomic_file.temporary_path`) and moved into place only when the
whole product (and its companions) is complete, so a failure or an interrupt
never leaves a partial file under the final name. Existing outputs are
refused unless ``overwrite=True``, and without it the final name is created
exclusively, so a concurrent run to the same new file fails instead of
replacing it.

COG: with GDAL's ``COG`` driver (GDAL >= 3.1) the finished temporary GeoTIFF
is copied by it (tiled 512 px, overviews, DEFLATE); without it, overviews are
built on the temporary file and it is copied as a tiled GeoTIFF with
``COPY_SRC_OVERVIEWS``.

Band metadata (descriptions, colour interpretation, scale and offset, units,
band tags: ``RasterWriter(band_metadata=)``) is set on the temporary file
before its data, so it is part of the same atomic write.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from ..atomic_file import commit_temporary, temporary_path
from .band_metadata import BandMetadata
from .grid import Grid

__all__ = ["check_output_path", "RasterWriter", "commit_all", "abort_all", "fill_nodata"]


def fill_nodata(values: np.ndarray, nodata: float) -> np.ndarray:
    """Holes (NaN) set to ``nodata`` for writing.

    A value equal to ``nodata`` that is data (a clamp to the type's minimum)
    moves one ulp away, so it does not read back as a hole.

    Parameters
    ----------
    values : ndarray of float32
    nodata : float

    Returns
    -------
    ndarray of float32, same shape
    """
    v = np.float32(nodata)
    out = np.where(values == v, np.nextafter(v, np.float32(np.inf)), values)
    return np.where(np.isnan(out), v, out).astype(np.float32, copy=False)


def check_output_path(path, overwrite: bool, argument: str) -> Path:
    """Check that ``path`` may be written.

    Raises
    ------
    ValueError
        If it exists (and ``overwrite`` is False) or is a directory, or its
        directory does not exist.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{argument}: {p} is a directory; expected a file name")
    if p.exists() and not overwrite:
        raise ValueError(f"{argument}: {p} exists; pass overwrite=True (--overwrite) to replace it")
    if not p.parent.is_dir():
        raise ValueError(f"{argument}: the directory of {p} does not exist")
    return p


class RasterWriter:
    """A GeoTIFF written window by window to a temporary file.

    Parameters
    ----------
    path : path-like
        Final name.
    grid : Grid
        Output grid (CRS, transform, size).
    count : int
        Bands.
    dtype : str
    nodata : float or None
    descriptions : sequence of (str or None), optional
        Band descriptions; a non-empty entry takes precedence over
        ``band_metadata``'s.
    tags : dict, optional
        Dataset tags.
    band_tags : sequence of dict, optional
        Band tags, added to (and overriding keys of) ``band_metadata``'s.
    band_metadata : sequence of BandMetadata, optional
        One per band (``count`` entries), in output order: description,
        colour interpretation, scale, offset, units and tags of each band
        (:func:`mfsr.geo.band_metadata.fused_band_metadata` takes them from
        the reference pass). Without it the bands get GDAL's defaults (grey,
        then undefined; scale 1, offset 0; no units): what companion
        products (confidence, count) should claim.
    cog : bool
        Convert to a Cloud-Optimized GeoTIFF on commit.
    block : int
        Internal tile size, px.
    overwrite : bool
        Replace an existing file on commit; if False the final name is
        created exclusively (``FileExistsError`` if it appeared meanwhile).

    Raises
    ------
    ValueError
        If ``band_metadata`` does not hold ``count`` entries.
    TypeError
        If an entry of ``band_metadata`` is not a :class:`BandMetadata`.

    Notes
    -----
    All metadata is set on the temporary file before any data, so it is part
    of the atomic write: the final name never holds a product without it.
    The COG conversion copies it (GDAL's ``CreateCopy``). Nodata is
    ``nodata``, never taken from ``band_metadata``.
    """

    def __init__(self, path, grid: Grid, count: int, dtype: str, nodata=None, *, descriptions=None,
                 tags=None, band_tags=None, band_metadata=None, cog: bool = False, block: int = 512,
                 overwrite: bool = True):
        band_metadata = _check_band_metadata(band_metadata, count)
        self.path = Path(path)
        self.cog = cog
        self.overwrite = overwrite
        self.tmp = temporary_path(self.path)
        blk = block if min(grid.width, grid.height) >= block else 256
        tiled = min(grid.width, grid.height) >= blk
        profile = dict(
            driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
            crs=grid.crs, transform=grid.transform, nodata=nodata,
            BIGTIFF="IF_SAFER",
        )
        if tiled:
            profile.update(tiled=True, blockxsize=blk, blockysize=blk)
        self._ds = rasterio.open(self.tmp, "w", **profile)
        try:
            if band_metadata is not None:
                _write_band_metadata(self._ds, band_metadata)
            if descriptions is not None:
                for i, d in enumerate(descriptions, start=1):
                    if d:
                        self._ds.set_band_description(i, d)
            if tags:
                self._ds.update_tags(**{str(k): str(v) for k, v in tags.items()})
            if band_tags is not None:
                for i, t in enumerate(band_tags, start=1):
                    if t:
                        self._ds.update_tags(i, **{str(k): str(v) for k, v in t.items()})
        except Exception:
            self.abort()
            raise

    def write(self, rows: tuple[int, int], cols: tuple[int, int], data: np.ndarray) -> None:
        """Write ``data`` of shape (h, w) or (h, w, C) at the given window."""
        arr = data if data.ndim == 3 else data[..., None]
        win = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        self._ds.write(np.moveaxis(arr, -1, 0).astype(self._ds.dtypes[0], copy=False), window=win)

    def finish(self) -> None:
        """Close the temporary file and make it a COG when asked (still temporary)."""
        if self._ds is not None and not self._ds.closed:
            self._ds.close()
        if not self.cog:
            return
        cog_tmp = self.tmp.with_name(self.tmp.name + ".cog")
        try:
            with rasterio.Env() as env:
                has_cog = "COG" in env.drivers()
            if has_cog:
                rasterio.shutil.copy(
                    self.tmp, cog_tmp, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE",
                    OVERVIEWS="AUTO", BIGTIFF="IF_SAFER",
                )
            else:  # pragma: no cover - GDAL < 3.1
                from rasterio.enums import Resampling

                with rasterio.open(self.tmp, "r+") as ds:
                    factors = [2**i for i in range(1, 12) if max(ds.width, ds.height) // 2**i >= 256]
                    if factors:
                        ds.build_overviews(factors, Resampling.average)
                rasterio.shutil.copy(
                    self.tmp, cog_tmp, driver="GTiff", tiled=True, blockxsize=512, blockysize=512,
                    compress="deflate", copy_src_overviews=True, BIGTIFF="IF_SAFER",
                )
            os.replace(cog_tmp, self.tmp)
        finally:
            if cog_tmp.exists():
                cog_tmp.unlink()

    def commit(self) -> Path:
        """Move the finished temporary file to its final name."""
        return commit_temporary(self.tmp, self.path, overwrite=self.overwrite)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            if self._ds is not None and not self._ds.closed:
                self._ds.close()
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def _check_band_metadata(band_metadata, count: int):
    """``band_metadata`` as a tuple of ``count`` BandMetadata, or None."""
    if band_metadata is None:
        return None
    items = tuple(band_metadata)
    if len(items) != count:
        raise ValueError(f"band_metadata: expected one entry per band ({count}), got {len(items)}")
    for k, m in enumerate(items):
        if not isinstance(m, BandMetadata):
            raise TypeError(f"band_metadata: entry {k} is a {type(m).__name__}, expected a BandMetadata "
                            "(mfsr.geo.band_metadata.fused_band_metadata makes them)")
    return items


def _write_band_metadata(ds, band_metadata: tuple[BandMetadata, ...]) -> None:
    """Set each band's metadata on the open (writable) dataset ``ds``."""
    for i, m in enumerate(band_metadata, start=1):
        if m.description:
            ds.set_band_description(i, m.description)
        if m.tags:
            ds.update_tags(i, **m.tags)
    # Set only what differs from GDAL's defaults, so a product without
    # declared scales or units does not gain meaningless entries.
    if any(m.colorinterp is not None for m in band_metadata):
        ds.colorinterp = [ColorInterp.undefined if m.colorinterp is None else m.colorinterp for m in band_metadata]
    if any(m.scale != 1.0 for m in band_metadata):
        ds.scales = [m.scale for m in band_metadata]
    if any(m.offset != 0.0 for m in band_metadata):
        ds.offsets = [m.offset for m in band_metadata]
    if any(m.units for m in band_metadata):
        ds.units = [m.units or "" for m in band_metadata]


def commit_all(writers: list[RasterWriter]) -> None:
    """Finish every writer, then move them all into place (none if a finish fails)."""
    try:
        for w in writers:
            w.finish()
    except BaseException:
        abort_all(writers)
        raise
    for w in writers:
        w.commit()


def abort_all(writers: list[RasterWriter]) -> None:
    """Delete every writer's temporary file."""
    for w in writers:
        try:
            w.abort()
        except Exception:
            pass
