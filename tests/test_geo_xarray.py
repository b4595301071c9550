"""mfsr.geo.fuse_xarray: an xarray stack fused by the fuse_rasters engine.

Synthetic stacks are written as GeoTIFFs in tmp_path and loaded back with
rioxarray, so both routes see the same passes; the real Sentinel-2
comparison uses ../shared/data and skips without it.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from mfsr.geo import fuse_arrays, fuse_rasters, fuse_xarray
from mfsr.synth import sample_image

xr = pytest.importorskip("xarray")
rioxarray = pytest.importorskip("rioxarray")

T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
CRS = "EPSG:32633"
NAMES = ["B02", "B03", "B04"]


def _write_passes(d, *, n=4, size=40, bands=3, dtype="float32", nodata=None, hole=False, seed=0):
    """``n`` passes (bands, size, size) of one scene, sub-pixel shifts, gains, noise; their paths."""
    rng = np.random.default_rng(seed)
    hr = sample_image("camera", grey=True, size=2 * size + 32).astype(np.float64)
    paths = []
    for k in range(n):
        dy, dx = (0.0, 0.0) if k == 0 else rng.uniform(-1.0, 1.0, 2)
        sh = ndimage.shift(hr, (2 * dy, 2 * dx), order=1, mode="nearest")[16 : 16 + 2 * size, 16 : 16 + 2 * size]
        lr = sh.reshape(size, 2, size, 2).mean(axis=(1, 3))
        g = rng.uniform(0.9, 1.1)
        data = np.stack([g * lr * (0.8 + 0.1 * b) + 0.02 * b for b in range(bands)])
        data = data + rng.normal(0, 0.003, data.shape)
        if np.dtype(dtype).kind in "iu":
            data = np.round(data * 10000)
        data = data.astype(dtype)
        if hole:  # a gap in pass 1, and one no pass covers
            data[:, 28:36, 28:36] = nodata
            if k == 1:
                data[:, 5:15, 8:20] = nodata
        p = d / f"pass_{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=bands, dtype=dtype,
                           crs=CRS, transform=T, nodata=nodata) as dst:
            dst.write(data)
            for i in range(bands):
                dst.set_band_description(i + 1, NAMES[i] if i < len(NAMES) else f"B{i}")
        paths.append(p)
    return paths


def _stack(paths, **kw):
    return xr.concat([rioxarray.open_rasterio(p, **kw) for p in paths], dim="time")


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    return _write_passes(tmp_path_factory.mktemp("xr"))


def test_same_values_and_shifts_as_fuse_rasters(passes, tmp_path):
    res_f = fuse_rasters(passes, tmp_path / "f.tif", scale=2)
    ref, prof = _read(tmp_path / "f.tif")
    out, res = fuse_xarray(_stack(passes), scale=2, return_result=True)
    assert out.dims == ("band", "y", "x") and out.shape == ref.shape and out.dtype == np.float32
    assert np.nanmax(np.abs(out.values - ref)) <= 1e-6
    assert res.reference == res_f.reference and res.reference_reason == res_f.reference_reason
    np.testing.assert_allclose(res.shifts, res_f.shifts, atol=1e-12)
    np.testing.assert_allclose(res.gains, res_f.gains, atol=1e-12)
    assert res.out_path is None
    # Grid, CRS, pixel-centre coordinates, the per-pass report in attrs.
    assert out.rio.crs == prof["crs"]
    assert out.rio.transform().almost_equals(prof["transform"])
    t = prof["transform"]
    np.testing.assert_allclose(out.x.values, t.c + (np.arange(out.sizes["x"]) + 0.5) * t.a)
    np.testing.assert_allclose(out.y.values, t.f + (np.arange(out.sizes["y"]) + 0.5) * t.e)
    tags = rasterio.open(tmp_path / "f.tif").tags()
    assert out.attrs["MFSR_SHIFTS"] == tags["MFSR_SHIFTS"]
    assert out.attrs["MFSR_REFERENCE"] == tags["MFSR_REFERENCE"] and out.attrs["MFSR_SCALE"] == "2"
    assert out.attrs["MFSR_PASSES"] == "time[0];time[1];time[2];time[3]"
    assert list(out.band.values) == [1, 2, 3] and out.attrs["long_name"] == tuple(NAMES)
    assert np.isnan(out.rio.nodata)
    # Written back with rioxarray: CRS, transform, band descriptions, tags.
    out.rio.to_raster(tmp_path / "x.tif")
    with rasterio.open(tmp_path / "x.tif") as src:
        assert src.crs == prof["crs"] and src.transform.almost_equals(prof["transform"])
        assert src.descriptions == tuple(NAMES) and src.tags()["MFSR_SHIFTS"] == tags["MFSR_SHIFTS"]
        np.testing.assert_array_equal(src.read(), out.values)


def test_dask_and_dim_order_give_the_same_result(passes):
    plain = fuse_xarray(_stack(passes), scale=2, reference=1)
    chunked = _stack(passes, chunks={"x": 16, "y": 16})
    assert chunked.chunks is not None
    lazy = fuse_xarray(chunked, scale=2, reference=1, tile=16)
    np.testing.assert_array_equal(lazy.values, plain.values)
    swapped = fuse_xarray(_stack(passes).transpose("band", "x", "time", "y"), scale=2, reference=1)
    np.testing.assert_array_equal(swapped.values, plain.values)


def test_band_names_and_time_labels_are_kept(passes):
    names = ["blue", "green", "red"]
    stack = _stack(passes).assign_coords(band=names, wavelength=("band", [490.0, 560.0, 665.0]),
                                         time=np.array(["2021-06-0%d" % (k + 1) for k in range(4)], "datetime64[ns]"))
    bare = stack.copy()
    bare.attrs = {}  # no long_name: the band coordinate names the bands
    out = fuse_xarray(bare, scale=2, reference=0)
    assert list(out.band.values) == names and list(out.wavelength.values) == [490.0, 560.0, 665.0]
    assert out.attrs["long_name"] == tuple(names)  # band names become descriptions on to_raster
    assert "time" not in out.coords
    assert out.attrs["MFSR_PASSES"].split(";")[1] == "time=2021-06-02"
    one = fuse_xarray(stack.sel(band="red"), scale=2, reference=0)
    assert one.dims == ("y", "x") and one.coords["band"].item() == "red"
    np.testing.assert_array_equal(one.values, fuse_xarray(stack.sel(band=["red"]), scale=2, reference=0)[0].values)


def test_integer_nodata_is_invalid_and_kept(tmp_path):
    paths = _write_passes(tmp_path, n=3, dtype="int16", nodata=-9999, hole=True)
    fuse_rasters(paths, tmp_path / "f.tif", scale=2, reference=0, nodata=-9999)
    ref, _ = _read(tmp_path / "f.tif")
    out = fuse_xarray(_stack(paths), scale=2, reference=0)
    assert out.rio.nodata == -9999 and out.dtype == np.float32
    assert np.max(np.abs(out.values - ref)) <= 1e-6
    gap = out.values[:, 62:66, 62:66]
    assert np.all(gap == -9999)  # no pass covers it: the stack's nodata
    seen = np.delete(out.values.reshape(3, -1), np.flatnonzero(out.values[0].ravel() == -9999), axis=1)
    assert seen.min() > -1000  # the nodata samples never entered the fusion (dark pixels dip a little below 0)
    # masked=True: NaN in memory, -9999 kept as the encoded nodata.
    masked = fuse_xarray(_stack(paths, masked=True), scale=2, reference=0)
    assert np.isnan(masked.rio.nodata) and masked.rio.encoded_nodata == -9999
    assert np.all(np.isnan(masked.values[:, 62:66, 62:66]))
    np.testing.assert_allclose(np.nan_to_num(masked.values, nan=-9999), out.values, atol=1e-3)


def test_mask_polarity_matches_fuse_rasters_masks(passes, tmp_path):
    # A cloud in pass 2 (True / nonzero = invalid in both routes), filled with garbage.
    stack = _stack(passes)
    cloud = np.zeros((4, 40, 40), bool)
    cloud[2, 10:30, 5:25] = True
    garbage = stack.copy(data=np.where(cloud[:, None], np.float32(5.0), stack.values))
    files, masks = [], []
    for k in range(4):
        p, m = tmp_path / f"g_{k}.tif", tmp_path / f"m_{k}.tif"
        garbage.isel(time=k).rio.to_raster(p)
        with rasterio.open(m, "w", driver="GTiff", width=40, height=40, count=1, dtype="uint8",
                           crs=CRS, transform=T) as dst:
            dst.write(cloud[k].astype(np.uint8)[None])
        files.append(p)
        masks.append(m)
    fuse_rasters(files, tmp_path / "f.tif", scale=2, masks=masks, reference=0)
    ref, _ = _read(tmp_path / "f.tif")
    mask = xr.DataArray(cloud, dims=("time", "y", "x"), coords={"y": stack.y, "x": stack.x})
    out = fuse_xarray(garbage, scale=2, mask=mask, reference=0)
    assert np.max(np.abs(out.values - ref)) <= 1e-6
    assert np.nanmax(out.values) < 1.5  # the masked garbage (5.0) did not leak
    # The same mask as a plain array, per band (any band masks the pixel), and NaN for the cloud.
    np.testing.assert_array_equal(fuse_xarray(garbage, scale=2, mask=cloud, reference=0).values, out.values)
    per_band = mask.expand_dims(band=stack.band).transpose("time", "band", "y", "x").copy()
    per_band[:, 1:] = False
    np.testing.assert_array_equal(fuse_xarray(garbage, scale=2, mask=per_band, reference=0).values, out.values)
    nan = stack.copy(data=np.where(cloud[:, None], np.float32(np.nan), stack.values))
    np.testing.assert_array_equal(fuse_xarray(nan, scale=2, reference=0).values, out.values)


def test_errors_name_the_argument(passes):
    stack = _stack(passes)
    with pytest.raises(TypeError, match="stack: expected an xarray.DataArray"):
        fuse_xarray(stack.values)
    with pytest.raises(TypeError, match="to_array"):
        fuse_xarray(stack.to_dataset(name="v"))
    with pytest.raises(ValueError, match="stack: no CRS"):
        fuse_xarray(xr.DataArray(stack.values, dims=stack.dims))
    with pytest.raises(ValueError, match="stack: no transform"):
        fuse_xarray(xr.DataArray(stack.values, dims=stack.dims).rio.write_crs(CRS))
    with pytest.raises(ValueError, match="stack: expected dims"):
        fuse_xarray(stack.isel(time=0))
    with pytest.raises(ValueError, match="stack: expected dims"):
        fuse_xarray(stack, time_dim="date")
    with pytest.raises(ValueError, match="stack: dim 'time' is empty"):
        fuse_xarray(stack.isel(time=slice(0, 0)))
    with pytest.raises(ValueError, match="stack: data type bool"):
        fuse_xarray(stack > 0)
    with pytest.raises(ValueError, match="stack: rotated transform"):
        fuse_xarray(stack.rio.write_transform(T * Affine.rotation(10)))
    with pytest.raises(ValueError, match="scale: expected a finite number > 0"):
        fuse_xarray(stack, scale=0)
    with pytest.raises(ValueError, match="scale: expected a finite number > 0"):
        fuse_xarray(stack, scale=-2)
    with pytest.raises(ValueError, match="mask: shape"):
        fuse_xarray(stack, mask=np.zeros((4, 40, 39), bool))
    with pytest.raises(ValueError, match="mask: dim 'x' has 39"):
        fuse_xarray(stack, mask=xr.DataArray(np.zeros((4, 40, 39), bool), dims=("time", "y", "x")))
    with pytest.raises(ValueError, match="mask: dims \\('date',\\)"):
        fuse_xarray(stack, mask=xr.DataArray(np.zeros((4, 40, 40), bool), dims=("date", "y", "x")))
    shifted = xr.DataArray(np.zeros((40, 40), bool), dims=("y", "x"), coords={"y": stack.y, "x": stack.x + 10})
    with pytest.raises(ValueError, match="mask: its 'x' coordinates differ"):
        fuse_xarray(stack, mask=shifted)
    with pytest.raises(ValueError, match="mask: data type float"):
        fuse_xarray(stack, mask=xr.zeros_like(stack.isel(band=0), dtype=float))
    with pytest.raises(ValueError, match="reference: index 9 out of range"):
        fuse_xarray(stack, reference=9)


def test_fuse_arrays_is_the_numpy_route(passes):
    stack = _stack(passes)
    fused, res = fuse_arrays(stack.values, CRS, T, 2, reference=1)
    np.testing.assert_array_equal(fused, fuse_xarray(stack, scale=2, reference=1).values)
    assert res.transform.almost_equals(T @ Affine.scale(0.5)) and fused.shape == (3, 80, 80)
    with pytest.raises(ValueError, match="data: expected an array of shape \\(N, C, H, W\\)"):
        fuse_arrays(stack.values[0], CRS, T)
    with pytest.raises(ValueError, match="invalid: expected shape"):
        fuse_arrays(stack.values, CRS, T, invalid=np.zeros((4, 40, 40, 1), bool))
    with pytest.raises(ValueError, match="crs: not a CRS"):
        fuse_arrays(stack.values, "EPSG:nope", T)
    with pytest.raises(ValueError, match="transform: expected"):
        fuse_arrays(stack.values, CRS, (10, 0, 0, 0, -10, 0))


def test_one_date_is_a_spline_interpolation(passes, tmp_path):
    fuse_rasters(passes[:1], tmp_path / "f.tif", scale=2)
    ref, _ = _read(tmp_path / "f.tif")
    out = fuse_xarray(_stack(passes[:1]), scale=2)
    assert np.max(np.abs(out.values - ref)) <= 1e-6


def test_missing_xarray_says_which_extra(passes, monkeypatch):
    stack = _stack(passes)
    monkeypatch.setitem(sys.modules, "rioxarray", None)
    with pytest.raises(ImportError, match=r"pip install mfsr\[xarray\]"):
        fuse_xarray(stack)


def test_importing_mfsr_geo_does_not_need_xarray():
    code = ("import sys; sys.modules['xarray'] = None; sys.modules['rioxarray'] = None\n"
            "import mfsr.geo; assert callable(mfsr.geo.fuse_xarray); print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


@pytest.mark.realdata
@pytest.mark.parametrize("scale", [2, 3])
def test_sentinel2_same_as_fuse_rasters(tmp_path, scale):
    from test_geo_realdata import _need, _sentinel2

    _need("sentinel2_eolearn", "REFERENCE_SCENES.npy")
    _, paths = _sentinel2(tmp_path)  # 5 dates, B02 B03 B04 B08, 101 x 100 px, 10 m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cloudy dates refuse registration in both routes
        res_f = fuse_rasters(paths, tmp_path / "f.tif", scale=scale)
        ref, prof = _read(tmp_path / "f.tif")
        stack = _stack(paths).assign_coords(band=["B02", "B03", "B04", "B08"])
        lazy = fuse_xarray(_stack(paths, chunks={"x": 64, "y": 64}).assign_coords(band=["B02", "B03", "B04", "B08"]),
                           scale=scale)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, res = fuse_xarray(stack, scale=scale, return_result=True)
    # The cloudy first date's warning names it and points at the caller.
    first = [w for w in caught if str(w.message).startswith("time[0]: no registration")]
    assert first and first[0].filename == __file__
    diff = float(np.max(np.abs(out.values - ref)))
    print(f"\nS2 x{scale}: max |fuse_xarray - fuse_rasters| = {diff:.3g} over {out.shape}, "
          f"reference {res.reference} (fuse_rasters {res_f.reference})")
    assert diff <= 1e-6
    np.testing.assert_array_equal(lazy.values, out.values)
    assert res.reference == res_f.reference
    np.testing.assert_allclose(res.shifts, res_f.shifts, atol=1e-12)
    assert out.rio.crs == prof["crs"] and out.rio.transform().almost_equals(prof["transform"])
    assert list(out.band.values) == ["B02", "B03", "B04", "B08"]
    rx, ry = stack.rio.resolution()
    assert out.rio.resolution() == pytest.approx((rx / scale, ry / scale))


def test_geometry_and_refine_options_reach_the_fusion(passes):
    stack = _stack(passes)
    _, res = fuse_xarray(stack, scale=2, reference=1, geometry="translation", local=False, return_result=True)
    assert res.models == ("translation",) * len(res.models) and res.tie_points == (None,) * len(res.models)
    with pytest.raises(ValueError, match="geometry"):
        fuse_xarray(stack, scale=2, geometry="perspective")
    with pytest.raises(TypeError, match="refine"):
        fuse_xarray(stack, scale=2, refine="yes")
