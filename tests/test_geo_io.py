"""Reading passes, common grid, masks and atomic GeoTIFF output."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from mfsr.geo import is_georaster
from mfsr.geo.grid import Grid, choose_grid, output_grid, place_pass, scale_fraction
from mfsr.geo.masks import parse_masks, read_mask_window
from mfsr.geo.passes import check_compatible, read_pass_info, read_window
from mfsr.geo.writer import RasterWriter, abort_all, check_output_path, commit_all

T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write(path, arr, crs="EPSG:32633", transform=T, nodata=None, dtype=None):
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    kw = {} if crs is None else {"crs": crs}
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype=dtype or arr.dtype, transform=transform,
                       nodata=nodata, **kw) as dst:
        dst.write(arr.astype(dtype or arr.dtype))
    return path


def test_is_georaster(tmp_path):
    assert is_georaster(_write(tmp_path / "a.tif", np.zeros((4, 4), np.uint8)))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    assert not is_georaster(tmp_path / "b.png")
    assert not is_georaster(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    assert not is_georaster(tmp_path / "junk.tif")
    # A transform alone (no CRS) still counts as georeferenced.
    assert is_georaster(_write(tmp_path / "c.tif", np.zeros((4, 4), np.uint8), crs=None))


def test_read_pass_info_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="paths: file not found: .*nope.tif"):
        read_pass_info(tmp_path / "nope.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    with pytest.raises(ValueError, match="cannot read .*junk.tif"):
        read_pass_info(tmp_path / "junk.tif")
    _write(tmp_path / "nocrs.tif", np.zeros((4, 4), np.uint8), crs=None)
    with pytest.raises(ValueError, match="nocrs.tif has no CRS"):
        read_pass_info(tmp_path / "nocrs.tif")
    _write(tmp_path / "cplx.tif", np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match="cplx.tif has data type complex64"):
        read_pass_info(tmp_path / "cplx.tif")


def test_check_compatible(tmp_path):
    a = read_pass_info(_write(tmp_path / "a.tif", np.zeros((2, 4, 4), np.uint16)))
    b = read_pass_info(_write(tmp_path / "b.tif", np.zeros((3, 4, 4), np.uint16)))
    c = read_pass_info(_write(tmp_path / "c.tif", np.zeros((2, 4, 4), np.float32)))
    assert check_compatible([a, a], None) == (1, 2)
    assert check_compatible([a, a], [2]) == (2,)
    with pytest.raises(ValueError, match="b.tif has 3 band"):
        check_compatible([a, b], None)
    with pytest.raises(ValueError, match="c.tif has data type float32"):
        check_compatible([a, c], None)
    with pytest.raises(ValueError, match="bands"):
        check_compatible([a, a], [3])


def test_read_window_pads_and_masks(tmp_path):
    arr = np.arange(36, dtype=np.int16).reshape(6, 6)
    arr[2, 3] = -9999
    info = read_pass_info(_write(tmp_path / "a.tif", arr, nodata=-9999))
    with rasterio.open(info.path) as src:
        data, valid = read_window(src, (1,), (-2, 4), (4, 8))
    assert data.shape == (6, 4, 1) and valid.shape == (6, 4)
    assert not valid[:2].any() and not valid[:, 2:].any()  # outside
    # Window pixel (i, j) is raster pixel (i - 2, j + 4).
    assert valid[2, 0] and data[2, 0, 0] == 4
    assert valid[4, 1] and data[4, 1, 0] == 17
    assert valid[2:, :2].all() and (data[~valid] == 0).all()
    # nodata at (2, 3) is outside this window; read one that holds it.
    with rasterio.open(info.path) as src:
        data, valid = read_window(src, (1,), (0, 6), (0, 6))
    assert not valid[2, 3] and valid.sum() == 35


def test_placement_offsets_and_overlap(tmp_path):
    ref = read_pass_info(_write(tmp_path / "r.tif", np.zeros((20, 30), np.float32)))
    grid = choose_grid(ref)
    # A pass whose pixel (0, 0) lies 2.5 px right and 1.25 px down of the grid's.
    t = T @ Affine.translation(2.5, 1.25)
    p = read_pass_info(_write(tmp_path / "p.tif", np.zeros((20, 30), np.float32), transform=t))
    pl = place_pass(p, grid)
    assert pl.native and pl.offset == pytest.approx((-1.25, -2.5))
    assert 0.8 < pl.overlap < 1.0
    far = read_pass_info(_write(tmp_path / "far.tif", np.zeros((20, 30), np.float32),
                                transform=T @ Affine.translation(100, 0)))
    with pytest.raises(ValueError, match="far.tif does not overlap"):
        place_pass(far, grid)
    # Another CRS: warped, offset zero.
    from rasterio.warp import calculate_default_transform

    t2, w2, h2 = calculate_default_transform("EPSG:32633", "EPSG:4326", 30, 20, *ref.bounds)
    q = read_pass_info(_write(tmp_path / "q.tif", np.zeros((h2, w2), np.float32), crs="EPSG:4326",
                              transform=t2))
    pq = place_pass(q, grid)
    assert not pq.native and pq.offset == (0.0, 0.0) and pq.overlap > 0.5


def test_output_grid_and_scale_fraction():
    g = Grid("EPSG:32633", T, 30, 20)
    o = output_grid(g, 2.0)
    assert (o.width, o.height) == (60, 40)
    assert o.transform.a == 5.0 and o.bounds == pytest.approx(g.bounds)
    assert scale_fraction(2.5).denominator == 2
    with pytest.raises(ValueError, match="scale"):
        scale_fraction(np.pi)


def test_choose_grid_dst_crs(tmp_path):
    ref = read_pass_info(_write(tmp_path / "r.tif", np.zeros((20, 30), np.float32)))
    g = choose_grid(ref, dst_crs="EPSG:32632", resolution=20.0)
    assert g.crs.to_epsg() == 32632 and g.transform.a == pytest.approx(20.0)
    with pytest.raises(ValueError, match="dst_crs"):
        choose_grid(ref, dst_crs="not a crs")


def test_masks_parse_and_read(tmp_path):
    img = _write(tmp_path / "p.tif", np.zeros((2, 10, 12), np.float32))
    m = np.zeros((10, 12), np.uint8)
    m[3, 4] = 7
    _write(tmp_path / "m.tif", m, nodata=255)
    m2 = m.copy()
    m2[0, 0] = 255  # the mask's own nodata counts as invalid
    _write(tmp_path / "m2.tif", m2, crs=None, nodata=255)
    info = read_pass_info(img)
    grid = choose_grid(info)
    specs = parse_masks([tmp_path / "m.tif", (tmp_path / "m2.tif", 1), 2, None], [info] * 4)
    assert specs[3] is None and specs[2].own_band
    bad = read_mask_window(specs[0], info, True, grid, (0, 10), (0, 12))
    assert bad.sum() == 1 and bad[3, 4]
    bad2 = read_mask_window(specs[1], info, True, grid, (-1, 10), (0, 12))
    assert bad2.shape == (11, 12) and bad2[1, 0] and bad2[4, 4] and bad2.sum() == 2
    with pytest.raises(ValueError, match="masks: expected 2 entries"):
        parse_masks([None], [info, info])
    with pytest.raises(ValueError, match=r"masks\[0\]: file not found"):
        parse_masks([tmp_path / "none.tif"], [info])
    _write(tmp_path / "small.tif", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"masks\[0\]: .*small.tif is 5x5"):
        parse_masks([tmp_path / "small.tif"], [info])
    with pytest.raises(ValueError, match=r"masks\[0\]: band 3"):
        parse_masks([3], [info])


def test_writer_is_atomic_and_refuses_existing(tmp_path):
    g = Grid(rasterio.crs.CRS.from_epsg(32633), T, 8, 6)
    out = tmp_path / "o.tif"
    w = RasterWriter(out, g, 2, "float32", float("nan"), descriptions=["a", "b"], tags={"X": 1},
                     band_tags=[{"K": "v"}, {}])
    w.write((0, 6), (0, 8), np.ones((6, 8, 2), np.float32))
    assert not out.exists()  # nothing under the final name until commit
    commit_all([w])
    with rasterio.open(out) as src:
        assert src.descriptions == ("a", "b") and src.tags()["X"] == "1" and src.tags(1)["K"] == "v"
        assert src.crs.to_epsg() == 32633 and src.transform == T
    with pytest.raises(ValueError, match="out_path: .*o.tif exists"):
        check_output_path(out, False, "out_path")
    check_output_path(out, True, "out_path")
    with pytest.raises(ValueError, match="directory"):
        check_output_path(tmp_path / "nodir" / "x.tif", False, "out_path")
    w2 = RasterWriter(tmp_path / "p.tif", g, 1, "float32")
    abort_all([w2])
    assert list(tmp_path.iterdir()) == [out]


def test_writer_cog(tmp_path):
    g = Grid(rasterio.crs.CRS.from_epsg(32633), T, 1100, 1030)
    out = tmp_path / "cog.tif"
    w = RasterWriter(out, g, 1, "float32", float("nan"), cog=True)
    w.write((0, 1030), (0, 1100), np.random.default_rng(0).random((1030, 1100), np.float32))
    commit_all([w])
    with rasterio.open(out) as src:
        assert src.overviews(1) and src.profile.get("tiled", False) or src.block_shapes[0] == (512, 512)
        assert src.transform == T
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif"]


@pytest.mark.realdata
def test_reads_jpeg2000_passes():
    files = sorted((DATA / "modis_ndvi").glob("*.jp2")) if DATA.is_dir() else []
    if not files:
        pytest.skip(f"real data not found at {DATA / 'modis_ndvi'}")
    infos = [read_pass_info(f) for f in files[:3]]
    assert all(i.crs is not None and i.dtype == "int16" for i in infos)
    assert check_compatible(infos, None) == (1,)
    grid = choose_grid(infos[0])
    assert all(place_pass(i, grid).native for i in infos)
    assert is_georaster(files[0])


def test_quicklook(tmp_path):
    from mfsr.geo import quicklook

    arr = np.random.default_rng(0).random((3, 300, 500)).astype(np.float32)
    arr[:, :10, :10] = np.nan
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=500, height=300, count=3,
                       dtype="float32", crs="EPSG:32633", transform=T, nodata=np.nan) as dst:
        dst.write(arr)
    png = quicklook(tmp_path / "a.tif", tmp_path / "a.png", max_size=100)
    img = np.asarray(Image.open(png))
    assert img.shape == (60, 100, 3) and img.dtype == np.uint8
    grey = np.asarray(Image.open(quicklook(tmp_path / "a.tif", tmp_path / "g.png", bands=[2])))
    assert grey.ndim == 2
    with pytest.raises(ValueError, match="bands"):
        quicklook(tmp_path / "a.tif", tmp_path / "x.png", bands=[1, 2])
