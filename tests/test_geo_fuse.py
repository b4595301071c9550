"""End to end: mfsr.geo.fuse_rasters on synthetic passes (no external data)."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from mfsr.geo import GeoFusionResult, fuse_rasters
from mfsr.geo.synth import simulate_passes
from mfsr.synth import sample_image

T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
CRS = "EPSG:32633"


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    """5 passes of 100 x 100 px at scale 2 with clouds, gains, shifts and one grid offset."""
    d = tmp_path_factory.mktemp("passes")
    img = sample_image("camera", grey=True, size=232).astype(np.float64)
    offs = np.zeros((5, 2))
    offs[2] = (0.5, -1.25)
    sp = simulate_passes(img, T, CRS, d, n=5, scale=2, margin=8, grid_offsets=offs,
                         masked_value=10.0, seed=2)
    return sp


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.bounds, src


def test_fused_geotiff_grid_shifts_and_no_leak(passes, tmp_path):
    out = tmp_path / "fused.tif"
    res = fuse_rasters(passes.paths, out, scale=2, masks=passes.mask_paths,
                       save_confidence=tmp_path / "conf.tif", save_count=tmp_path / "count.tif")
    assert isinstance(res, GeoFusionResult) and res.out_path == out
    data, prof, bounds, _ = _read(out)
    with rasterio.open(passes.paths[0]) as ref:
        assert prof["crs"] == ref.crs
        assert bounds == pytest.approx(tuple(ref.bounds))
        assert prof["transform"] == ref.transform @ Affine.scale(0.5)
        assert (prof["width"], prof["height"]) == (2 * ref.width, 2 * ref.height)
        assert ref.descriptions == rasterio.open(out).descriptions
    assert prof["dtype"] == "float32" and np.isnan(prof["nodata"])
    tags = rasterio.open(out).tags()
    assert tags["SOURCE"] == "mfsr.geo.synth" and tags["MFSR_SCALE"] == "2"
    # Masked pixels hold 10 (ten times the scene's maximum): none may leak.
    assert np.nanmax(data) < 1.5
    assert not np.isnan(data).any()  # pass 0 is clear everywhere
    # Shifts: residual misregistration beyond the geotransform.
    assert res.shifts.shape == (5, 2) and res.shifts.dtype == np.float64
    np.testing.assert_allclose(res.shifts, passes.shifts, atol=0.05)
    np.testing.assert_allclose(res.grid_offsets, passes.grid_offsets, atol=1e-9)
    # Radiometry back to the reference: adjusted = gain * x + offset inverts the simulation.
    np.testing.assert_allclose(res.gains[:, 0], 1 / passes.gains, rtol=0.05)
    assert res.valid_fractions[0] == 1.0 and res.valid_fractions[4] < 0.75
    count = rasterio.open(tmp_path / "count.tif").read(1)
    conf = rasterio.open(tmp_path / "conf.tif").read(1)
    assert count.dtype == np.uint16 and count.max() <= 5 and (count >= 1).mean() > 0.99
    assert (conf > 0).all()
    # The fused image is close to the truth.
    truth = passes.truth
    err = np.abs(data[0] - truth)[8:-8, 8:-8].mean()
    assert err < 0.03


def test_tiled_equals_untiled_and_distributed_equals_threads(passes, tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    a = fuse_rasters(passes.paths, tmp_path / "a.tif", scale=2, masks=passes.mask_paths, tile=1024,
                     save_count=tmp_path / "ca.tif")
    b = fuse_rasters(passes.paths, tmp_path / "b.tif", scale=2, masks=passes.mask_paths, tile=32,
                     save_count=tmp_path / "cb.tif")
    assert a.n_tiles == 1 and b.n_tiles == 16
    A = _read(tmp_path / "a.tif")[0]
    B = _read(tmp_path / "b.tif")[0]
    np.testing.assert_allclose(B, A, atol=1e-5)
    np.testing.assert_array_equal(_read(tmp_path / "ca.tif")[0], _read(tmp_path / "cb.tif")[0])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        host = cluster.scheduler_address.split("://", 1)[1]
        c = fuse_rasters(passes.paths, tmp_path / "c.tif", scale=2, masks=passes.mask_paths, tile=32,
                         scheduler=f"distributed://{host}")
    C = _read(tmp_path / "c.tif")[0]
    np.testing.assert_allclose(C, B, atol=1e-5)
    np.testing.assert_allclose(c.shifts, b.shifts)


def test_scale_three_cog_nodata_and_progress(passes, tmp_path):
    out = tmp_path / "x3.tif"
    fuse_rasters(passes.paths[:3], out, scale=3, masks=passes.mask_paths[:3], cog=True, nodata=-9999.0,
                 tile=48, progress=True)
    data, prof, bounds, _ = _read(out)
    assert (prof["width"], prof["height"]) == (300, 300) and prof["nodata"] == -9999.0
    with rasterio.open(passes.paths[0]) as ref:
        assert bounds == pytest.approx(tuple(ref.bounds))
    assert not np.isnan(data).any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x3.tif"]


def test_nodata_where_no_pass_is_valid(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((40, 40)).astype(np.float32)
    paths = []
    for k in range(3):
        a = img.copy()
        a[:10, :10] = -1  # nodata in every pass
        a[20:, 20:] = -1 if k == 0 else a[20:, 20:]  # the reference misses a corner
        p = tmp_path / f"p{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32",
                           crs=CRS, transform=T, nodata=-1) as dst:
            dst.write(a, 1)
        paths.append(p)
    fuse_rasters(paths, tmp_path / "o.tif", scale=2, shifts=np.zeros((3, 2)), save_count=tmp_path / "n.tif")
    out = _read(tmp_path / "o.tif")[0][0]
    n = _read(tmp_path / "n.tif")[0][0]
    assert np.isnan(out[:14, :14]).all() and (n[:14, :14] == 0).all()
    assert not np.isnan(out[50:, 50:]).any() and (n[50:, 50:] == 2).all()
    assert not np.isnan(out[24:36, 50:]).any()


def test_pass_in_another_crs_is_warped(passes, tmp_path):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    src = passes.paths[1]
    warped = tmp_path / "utm32.tif"
    with rasterio.open(src) as s:
        t, w, h = calculate_default_transform(s.crs, "EPSG:32632", s.width, s.height, *s.bounds)
        arr = np.full((h, w), np.nan, np.float32)
        reproject(s.read(1), arr, src_transform=s.transform, src_crs=s.crs, dst_transform=t,
                  dst_crs="EPSG:32632", resampling=Resampling.bilinear, dst_nodata=np.nan)
    with rasterio.open(warped, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs="EPSG:32632", transform=t, nodata=np.nan) as dst:
        dst.write(arr, 1)
    res = fuse_rasters([passes.paths[0], warped, passes.paths[3]], tmp_path / "o.tif", scale=2,
                       masks=[passes.mask_paths[0], None, passes.mask_paths[3]])
    assert list(res.native) == [True, False, True]
    data = _read(tmp_path / "o.tif")[0]
    assert np.nanmax(data) < 1.5  # the warped pass's clouds were not masked: the composite rejects them
    # The warp keeps the geolocation: the residual shift is the simulated one (within warp accuracy).
    np.testing.assert_allclose(res.shifts[1], passes.shifts[1], atol=0.2)


def test_multiband_and_band_mask(tmp_path):
    img = sample_image("astronaut", size=120).astype(np.float32)  # (120, 120, 3)
    cloud = np.zeros((60, 60), np.uint8)
    cloud[10:30, 10:30] = 1
    paths = []
    for k in range(3):
        lr = img.reshape(60, 2, 60, 2, 3).mean(axis=(1, 3))
        bands = np.concatenate([np.moveaxis(lr, -1, 0), cloud[None] * (k == 1)], axis=0)
        if k == 1:
            bands[:3, cloud.astype(bool)] = 50.0
        p = tmp_path / f"m{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=60, height=60, count=4, dtype="float32",
                           crs=CRS, transform=T) as dst:
            dst.write(bands.astype(np.float32))
            for b, name in enumerate(["red", "green", "blue", "cloud"], start=1):
                dst.set_band_description(b, name)
        paths.append(p)
    res = fuse_rasters(paths, tmp_path / "o.tif", scale=2, masks=[4, 4, 4])
    assert res.bands == (1, 2, 3)
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.count == 3 and src.descriptions == ("red", "green", "blue")
        data = src.read()
    assert np.nanmax(data) < 2.0
    err = np.abs(np.moveaxis(data, 0, -1) - img)[8:-8, 8:-8].mean()
    assert err < 0.05


def test_pass_with_another_extent(passes, tmp_path):
    win = rasterio.windows.Window(10, 20, 80, 60)  # cols 10..89, rows 20..79
    crops = []
    for src in (passes.paths[1], passes.mask_paths[1]):
        with rasterio.open(src) as s:
            arr = s.read(1, window=win)
            prof = s.profile | {"width": 80, "height": 60, "transform": s.window_transform(win)}
        dst = tmp_path / ("crop_" + Path(src).name)
        with rasterio.open(dst, "w", **prof) as d:
            d.write(arr, 1)
        crops.append(dst)
    res = fuse_rasters([passes.paths[0], crops[0], passes.paths[3]], tmp_path / "o.tif", scale=2,
                       masks=[passes.mask_paths[0], crops[1], passes.mask_paths[3]],
                       save_count=tmp_path / "n.tif")
    np.testing.assert_allclose(res.grid_offsets[1], (-20.0, -10.0))
    np.testing.assert_allclose(res.shifts[1], passes.shifts[1], atol=0.05)
    n = _read(tmp_path / "n.tif")[0][0]
    out = _read(tmp_path / "o.tif")[0][0]
    # Outside the crop (output rows < 40 or >= 160), at most the two full passes contribute.
    assert n[:30].max() <= 2 and n[170:].max() <= 2 and n[60:140, 40:160].max() == 3
    assert not np.isnan(out).any() and np.nanmax(out) < 1.5


@pytest.fixture
def good(passes):
    return [str(p) for p in passes.paths[:3]]


def _no_output(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.name.startswith((".", "out"))] == []


def _zeros_raster(path, *, count=1, dtype="float32", crs=CRS, transform=T):
    """A 100 x 100 all-zero GeoTIFF pass (``crs=None`` leaves the CRS out)."""
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=count, dtype=dtype,
                       crs=crs, transform=transform) as dst:
        dst.write(np.zeros((count, 100, 100), dtype))


def test_bad_mismatched_bands(good, tmp_path):
    p = tmp_path / "two.tif"
    _zeros_raster(p, count=2)
    with pytest.raises(ValueError, match="two.tif has 2 band"):
        fuse_rasters(good + [p], tmp_path / "out.tif")
    assert _no_output(tmp_path)


def test_bad_no_overlap(good, tmp_path):
    p = tmp_path / "far.tif"
    _zeros_raster(p, transform=T @ Affine.translation(5000, 0))
    with pytest.raises(ValueError, match="far.tif does not overlap"):
        fuse_rasters(good + [p], tmp_path / "out.tif")
    assert _no_output(tmp_path)


def test_bad_missing_crs(good, tmp_path):
    p = tmp_path / "nocrs.tif"
    _zeros_raster(p, crs=None)
    with pytest.raises(ValueError, match="nocrs.tif has no CRS"):
        fuse_rasters(good + [p], tmp_path / "out.tif")
    with pytest.raises(ValueError, match="nocrs.tif has no CRS"):
        fuse_rasters([p, p], tmp_path / "out.tif")
    assert _no_output(tmp_path)


def test_bad_dtype(good, tmp_path):
    p = tmp_path / "u16.tif"
    _zeros_raster(p, dtype="uint16")
    with pytest.raises(ValueError, match="u16.tif has data type uint16"):
        fuse_rasters(good + [p], tmp_path / "out.tif")
    assert _no_output(tmp_path)


def test_bad_unreadable(good, tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="cannot read .*broken.tif"):
        fuse_rasters(good + [p], tmp_path / "out.tif")
    with pytest.raises(ValueError, match="file not found: .*missing.tif"):
        fuse_rasters(good + [tmp_path / "missing.tif"], tmp_path / "out.tif")
    assert _no_output(tmp_path)


def test_bad_existing_output_and_arguments(good, tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="out_path: .*out.tif exists"):
        fuse_rasters(good, out)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="save_count: .*out.tif"):
        fuse_rasters(good, tmp_path / "o2.tif", save_count=out)
    with pytest.raises(ValueError, match="is one of the input passes"):
        fuse_rasters(good, good[0], overwrite=True)
    with pytest.raises(ValueError, match="reference"):
        fuse_rasters(good, tmp_path / "o3.tif", reference=3)
    with pytest.raises(ValueError, match="scheduler"):
        fuse_rasters(good, tmp_path / "o3.tif", scheduler="mpi")
    with pytest.raises(ValueError, match="paths"):
        fuse_rasters(good[0], tmp_path / "o3.tif")
    with pytest.raises(ValueError, match="masks"):
        fuse_rasters(good, tmp_path / "o3.tif", masks=[None])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    fuse_rasters(good, out, overwrite=True)
    assert rasterio.open(out).count == 1


def test_failure_during_tiles_leaves_nothing(good, tmp_path, monkeypatch):
    import mfsr.geo.pipeline as fr

    def boom(args):
        raise RuntimeError("tile failed")

    monkeypatch.setattr(fr, "_fuse_tile", boom)
    with pytest.raises(RuntimeError, match="tile failed"):
        fuse_rasters(good, tmp_path / "out.tif", save_count=tmp_path / "cnt.tif")
    assert list(tmp_path.iterdir()) == []


def test_cli_fuses_passes_and_rejects_camera_only_options(passes, tmp_path, capsys):
    from mfsr.cli import main

    out = tmp_path / "cli.tif"
    argv = ["fuse", *map(str, passes.paths), "-o", str(out), "--scale", "2", "--quiet"]
    for extra in (["--merge-sharpen", "0"], ["--psf-sigma", "0.4"], ["--save-refinement", str(tmp_path / "c.png")],
                  ["--cfa", "RGGB"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert f"{extra[0]}: only for" in err and "these inputs are georeferenced passes" in err
        assert not out.exists()
    assert main(argv) == 0
    data, prof, _, _ = _read(out)
    with rasterio.open(passes.paths[0]) as ref:
        assert prof["crs"] == ref.crs and (prof["width"], prof["height"]) == (2 * ref.width, 2 * ref.height)
    assert np.isfinite(data).mean() > 0.9
