"""Quick-look PNG of a raster: decimated read, percentile stretch, 8 bits.

Reads at most ``max_size`` pixels on the long side through GDAL's decimated
read (overviews when the file has them), so a quick look of a huge product
costs little memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

__all__ = ["quicklook"]


def quicklook(path, png_path, *, bands=None, max_size: int = 1024, percentiles=(1.0, 99.0)) -> Path:
    """Write an 8-bit PNG preview of a raster.

    Parameters
    ----------
    path : path-like
        Raster to preview (e.g. the fused GeoTIFF).
    png_path : path-like
        PNG to write.
    bands : sequence of int or None
        1-based bands: one (grey) or three (RGB). Default: band 1, or bands
        (3, 2, 1) when the raster has three or four bands (red, green, blue
        stored blue-first as in Sentinel-2 B02, B03, B04).
    max_size : int
        Longest side of the preview, px.
    percentiles : (float, float)
        Stretch: these percentiles of the valid values map to 0 and 255
        (per band).

    Returns
    -------
    pathlib.Path
    """
    from PIL import Image

    with rasterio.open(path) as src:
        if bands is None:
            bands = (3, 2, 1) if src.count in (3, 4) else (1,)
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3) or any(b < 1 or b > src.count for b in bands):
            raise ValueError(f"bands: expected one or three bands of 1..{src.count}, got {bands!r}")
        f = max(1.0, max(src.width, src.height) / max_size)
        shape = (len(bands), max(1, int(src.height / f)), max(1, int(src.width / f)))
        data = src.read(bands, out_shape=shape, resampling=Resampling.average, masked=True)
    arr = np.ma.filled(data.astype(np.float64), np.nan)
    out = np.zeros(arr.shape, np.uint8)
    for i, plane in enumerate(arr):
        ok = np.isfinite(plane)
        if ok.any():
            lo, hi = np.percentile(plane[ok], percentiles)
            scaled = (plane - lo) / max(hi - lo, 1e-12)
            out[i] = np.where(ok, np.clip(np.round(255 * scaled), 0, 255), 0).astype(np.uint8)
    img = out[0] if len(bands) == 1 else np.moveaxis(out, 0, -1)
    png = Path(png_path)
    Image.fromarray(img).save(png)
    return png
