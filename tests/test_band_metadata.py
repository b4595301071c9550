"""Per-band metadata of the satellite route's outputs (issue 19, item 4).

The reference pass's descriptions, colour interpretation, scale/offset, units
and band tags are read into PassInfo, selected for the fused bands in output
order, and written by RasterWriter inside its atomic write; fuse_xarray keeps
the stack's attrs that stay true of the fused values.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from mfsr.geo.band_metadata import BandMetadata, fused_band_metadata
from mfsr.geo.grid import Grid
from mfsr.geo.passes import PassInfo, read_pass_info
from mfsr.geo.writer import RasterWriter, commit_all

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 10.0, 10.0)

DESCRIPTIONS = ("red", "green", "blue", None)
COLORINTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)
SCALES = (1e-4, 2e-4, 5e-5, 1.0)
OFFSETS = (-0.1, 0.0, 0.25, 0.0)
UNITS = ("1", "1", "W m-2 sr-1 um-1", None)
WAVELENGTHS = ("665", "560", "490", "842")


def _write_source(path: Path, width: int = 24, height: int = 20) -> Path:
    """A 4-band int16 GeoTIFF holding every kind of band metadata (and GDAL statistics, which go stale)."""
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="int16", crs=CRS,
                       transform=TRANSFORM, nodata=-9999) as ds:
        ds.write(rng.integers(0, 3000, (4, height, width), dtype=np.int16))
        ds.colorinterp = COLORINTERP
        ds.scales = SCALES
        ds.offsets = OFFSETS
        ds.units = [u or "" for u in UNITS]
        for b in range(1, 5):
            if DESCRIPTIONS[b - 1]:
                ds.set_band_description(b, DESCRIPTIONS[b - 1])
            ds.update_tags(b, wavelength=WAVELENGTHS[b - 1], wavelength_units="nm", STATISTICS_MEAN="1234.5")
    return path


def _grid(width=8, height=6) -> Grid:
    return Grid(rasterio.crs.CRS.from_string(CRS), TRANSFORM, width, height)


@pytest.fixture
def source(tmp_path) -> Path:
    return _write_source(tmp_path / "pass.tif")


def test_pass_info_reads_band_metadata(source):
    info = read_pass_info(source)
    assert info.descriptions == DESCRIPTIONS
    assert info.colorinterp == COLORINTERP
    np.testing.assert_allclose(info.scales, SCALES)
    np.testing.assert_allclose(info.offsets, OFFSETS)
    assert info.units == UNITS
    assert [t["wavelength"] for t in info.band_tags] == list(WAVELENGTHS)
    assert info.band_tags[0]["STATISTICS_MEAN"] == "1234.5"  # read as the file has it; dropped on output
    # the records travel to Dask workers
    assert pickle.loads(pickle.dumps(info)) == info


def test_fused_band_metadata_selects_the_bands_in_output_order(source):
    meta = fused_band_metadata(read_pass_info(source), (4, 1, 3))
    assert [m.description for m in meta] == [None, "red", "blue"]
    assert [m.colorinterp for m in meta] == [ColorInterp.undefined, ColorInterp.red, ColorInterp.blue]
    np.testing.assert_allclose([m.scale for m in meta], [1.0, 1e-4, 5e-5])
    np.testing.assert_allclose([m.offset for m in meta], [0.0, -0.1, 0.25])
    assert [m.units for m in meta] == [None, "1", "W m-2 sr-1 um-1"]
    assert [m.tags for m in meta] == [{"wavelength": w, "wavelength_units": "nm"} for w in ("842", "665", "490")]
    assert pickle.loads(pickle.dumps(meta)) == meta
    with pytest.raises(ValueError, match=r"bands: band 5 is not in 1\.\.4"):
        fused_band_metadata(read_pass_info(source), (1, 5))


@pytest.mark.parametrize("cog", [False, True])
def test_writer_writes_the_metadata_of_a_band_subset(source, tmp_path, cog):
    meta = fused_band_metadata(read_pass_info(source), (4, 1, 3))
    out = tmp_path / "fused.tif"
    w = RasterWriter(out, _grid(), 3, "float32", float("nan"), band_metadata=meta, cog=cog)
    w.write((0, 6), (0, 8), np.ones((6, 8, 3), np.float32))
    assert not out.exists()  # nothing under the final name before the commit
    commit_all([w])
    with rasterio.open(out) as ds:
        assert ds.count == 3
        assert ds.descriptions == (None, "red", "blue")
        assert ds.colorinterp == (ColorInterp.undefined, ColorInterp.red, ColorInterp.blue)
        np.testing.assert_allclose(ds.scales, (1.0, 1e-4, 5e-5))
        np.testing.assert_allclose(ds.offsets, (0.0, -0.1, 0.25))
        assert ds.units == (None, "1", "W m-2 sr-1 um-1")
        assert [ds.tags(b).get("wavelength") for b in (1, 2, 3)] == ["842", "665", "490"]
        assert not any(k.startswith("STATISTICS_") for b in (1, 2, 3) for k in ds.tags(b))
        assert np.isnan(ds.nodata)  # the caller's nodata, not the source's -9999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif", "pass.tif"]  # no temporary left


def test_explicit_descriptions_and_band_tags_take_precedence(source, tmp_path):
    meta = fused_band_metadata(read_pass_info(source), (1, 2))
    out = tmp_path / "fused.tif"
    w = RasterWriter(out, _grid(), 2, "float32", None, band_metadata=meta, descriptions=["fused red", None],
                     band_tags=[{"wavelength": "666", "note": "x"}, {}])
    commit_all([w])
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("fused red", "green")
        assert ds.tags(1) == {"wavelength": "666", "wavelength_units": "nm", "note": "x"}
        assert ds.tags(2) == {"wavelength": "560", "wavelength_units": "nm"}


def test_existing_signature_and_companions_keep_gdal_defaults(tmp_path):
    """Without band_metadata (the confidence and count products) no colour or scale is claimed."""
    conf_w = RasterWriter(tmp_path / "conf.tif", _grid(), 1, "float32", None, descriptions=["fusion weight"],
                          tags={"MFSR_PRODUCT": "confidence"})
    count_w = RasterWriter(tmp_path / "count.tif", _grid(), 1, "uint16", None, descriptions=["contributing passes"])
    commit_all([conf_w, count_w])
    for name in ("conf.tif", "count.tif"):
        with rasterio.open(tmp_path / name) as ds:
            assert ds.colorinterp[0] in (ColorInterp.gray, ColorInterp.undefined)
            assert ds.scales == (1.0,) and ds.offsets == (0.0,) and ds.units == (None,)


def test_in_memory_pass_gives_defaults_and_alpha_palette_lose_their_role(tmp_path):
    bare = PassInfo(path="array[0]", crs=None, transform=TRANSFORM, width=4, height=4, count=2, dtype="float32",
                    nodata=None)
    assert fused_band_metadata(bare, (2, 1)) == (BandMetadata(), BandMetadata())
    # all defaults: the writer leaves GDAL's own (grey first band)
    w = RasterWriter(tmp_path / "a.tif", _grid(), 2, "float32", None, band_metadata=fused_band_metadata(bare, (2, 1)))
    commit_all([w])
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.colorinterp == (ColorInterp.gray, ColorInterp.undefined)
        assert ds.scales == (1.0, 1.0) and ds.units == (None, None)
    rgba = PassInfo(path="p", crs=None, transform=TRANSFORM, width=4, height=4, count=3, dtype="uint8", nodata=None,
                    colorinterp=(ColorInterp.gray, ColorInterp.alpha, ColorInterp.palette))
    assert [m.colorinterp for m in fused_band_metadata(rgba, (1, 2, 3))] == [
        ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined]


def test_band_metadata_validates_its_fields():
    assert BandMetadata(colorinterp="Red", units="", description="").colorinterp is ColorInterp.red
    assert BandMetadata(units="", description="").units is None
    with pytest.raises(ValueError, match="colorinterp: expected"):
        BandMetadata(colorinterp="crimson")
    with pytest.raises(ValueError, match="scale: expected a finite number"):
        BandMetadata(scale=float("nan"))
    with pytest.raises(ValueError, match="offset: expected a finite number"):
        BandMetadata(offset="a")
    with pytest.raises(TypeError, match="units"):
        BandMetadata(units=3)
    with pytest.raises(TypeError, match="tags"):
        BandMetadata(tags=["wavelength"])


def test_writer_refuses_mismatched_band_metadata(tmp_path):
    with pytest.raises(ValueError, match=r"band_metadata: expected one entry per band \(2\), got 1"):
        RasterWriter(tmp_path / "x.tif", _grid(), 2, "float32", None, band_metadata=[BandMetadata()])
    with pytest.raises(TypeError, match="band_metadata: entry 1 is a dict"):
        RasterWriter(tmp_path / "x.tif", _grid(), 2, "float32", None, band_metadata=[BandMetadata(), {}])
    assert list(tmp_path.iterdir()) == []  # refused before any temporary file


@pytest.mark.realdata
def test_real_rgb_geotiff_metadata_matches_rasterio(tmp_path):
    path = DATA / "RGB.byte.tif"
    if not path.exists():
        pytest.skip(f"real data not found: {path} (the shared data folder ../shared/data is absent)")
    info = read_pass_info(path)
    with rasterio.open(path) as src:
        assert info.descriptions == src.descriptions
        assert info.colorinterp == src.colorinterp
        assert info.scales == src.scales
        assert info.offsets == src.offsets
        assert info.units == tuple(u or None for u in src.units)
        assert info.band_tags == tuple(src.tags(b) for b in range(1, src.count + 1))
        assert info.nodata == src.nodata
    # fused in reverse order: blue, green, red; GDAL's statistics of the input are not carried
    meta = fused_band_metadata(info, (3, 2, 1))
    out = tmp_path / "fused.tif"
    w = RasterWriter(out, _grid(), 3, "float32", float("nan"), band_metadata=meta)
    commit_all([w])
    with rasterio.open(out) as ds, rasterio.open(path) as src:
        assert ds.colorinterp == tuple(src.colorinterp[b - 1] for b in (3, 2, 1))
        assert ds.colorinterp == (ColorInterp.blue, ColorInterp.green, ColorInterp.red)
        assert ds.scales == tuple(src.scales[b - 1] for b in (3, 2, 1))
        assert all(not any(k.startswith("STATISTICS_") for k in ds.tags(b)) for b in (1, 2, 3))
        assert np.isnan(ds.nodata)
