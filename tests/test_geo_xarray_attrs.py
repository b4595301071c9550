"""fuse_xarray keeps the stack's attrs that stay true of the fused values (issue 19, item 4).

``scale_factor``/``add_offset`` attrs of stored values stay (the fused values
are in the same stored units); a decoded stack's live in ``encoding`` and are
not carried, so nothing is scaled twice. GDAL's ``STATISTICS_*`` go.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 10.0, 10.0)


@pytest.mark.parametrize("decoded", [False, True])
def test_fuse_xarray_keeps_scale_attrs_once(tmp_path, decoded):
    """Stored values keep their scale_factor/add_offset (decoded once downstream); decoded ones get none."""
    rioxarray = pytest.importorskip("rioxarray")
    xr = pytest.importorskip("xarray")
    from mfsr.geo import fuse_xarray

    paths = []
    for k in range(2):
        p = tmp_path / f"d{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=24, height=20, count=2, dtype="uint16", crs=CRS,
                           transform=TRANSFORM) as ds:
            rng = np.random.default_rng(k)
            smooth = np.add.outer(np.arange(20), np.arange(24)).astype(np.float64) * 20 + 1000
            ds.write((np.stack([smooth, smooth * 1.5]) + rng.normal(0, 5, (2, 20, 24))).round().astype(np.uint16))
            ds.scales = [1e-4, 1e-4]
            ds.offsets = [-0.1, -0.1]
            ds.set_band_description(1, "red")
            ds.set_band_description(2, "nir")
            ds.update_tags(1, STATISTICS_MEAN="5", wavelength="665")
        paths.append(p)
    stack = xr.concat([rioxarray.open_rasterio(p, mask_and_scale=decoded) for p in paths], dim="time")
    out = fuse_xarray(stack, scale=2, shifts=np.zeros((2, 2)))  # a ramp: nothing to register
    assert out.attrs["long_name"] == ("red", "nir")
    assert not any(k.startswith("STATISTICS_") for k in out.attrs)
    assert out.attrs["wavelength"] == stack.attrs["wavelength"]  # other tags stay
    if decoded:
        assert "scale_factor" not in out.attrs and "add_offset" not in out.attrs
        physical = out.values
    else:
        assert out.attrs["scale_factor"] == 1e-4 and out.attrs["add_offset"] == -0.1
        physical = xr.decode_cf(out.to_dataset(name="v"))["v"].values
    # either way the physical values are those of the decoded passes: scaled exactly once
    ref = xr.concat([rioxarray.open_rasterio(p, mask_and_scale=True) for p in paths], dim="time").values
    assert abs(np.nanmean(physical) - np.nanmean(ref)) < 1e-3
