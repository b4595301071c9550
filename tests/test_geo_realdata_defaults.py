"""Satellite defaults on real captures (../shared/data): automatic reference,
value range, Nyquist pattern, single pass against bicubic, different bands."""

import warnings

import numpy as np
import pytest
import rasterio
from test_geo_realdata import _need, _sentinel2

from mfsr.geo import fuse_rasters
from mfsr.geo.masked_fusion import nyquist_energy

pytestmark = pytest.mark.realdata


def _bicubic(a, s):
    from skimage.transform import resize

    return resize(a.astype(np.float64), (int(round(a.shape[0] * s)), int(round(a.shape[1] * s))), order=3, mode="edge")


@pytest.fixture(scope="module")
def s2(tmp_path_factory):
    _need("sentinel2_eolearn", "REFERENCE_SCENES.npy")
    return _sentinel2(tmp_path_factory.mktemp("s2"))


def test_sentinel2_default_reference_is_a_clear_date(s2, tmp_path):
    stack, paths = s2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cloudy dates refuse registration
        res = fuse_rasters(paths, tmp_path / "o.tif", scale=2)
    assert res.reference in (2, 3, 4), res.reference_reason
    b02 = np.nanmean(rasterio.open(tmp_path / "o.tif").read(1))
    clear = stack[2:, ..., 0].mean()
    print(f"\nS2 default reference {res.reference}: B02 mean {b02:.4f}, clear dates {clear:.4f}")
    assert abs(b02 / clear - 1) <= 0.10


@pytest.mark.parametrize("scale", [2, 3])
def test_sentinel2_b08_no_more_nyquist_energy_than_bicubic(s2, tmp_path, scale):
    stack, paths = s2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fuse_rasters(paths, tmp_path / "o.tif", scale=scale)
    out = rasterio.open(tmp_path / "o.tif").read(4).astype(np.float64)
    c = 4 * scale
    out = out[c:-c, c:-c]
    bic = _bicubic(stack[res.reference][..., 3], scale)[c:-c, c:-c]
    ratio = nyquist_energy(np.nan_to_num(out, nan=np.nanmean(out))) / nyquist_energy(bic)
    print(f"\nS2 B08 x{scale}: Nyquist energy / bicubic's = {ratio:.2f}")
    assert ratio <= 1.0


def test_modis_output_within_inputs_range(tmp_path):
    files = sorted(_need("modis_ndvi").glob("*.jp2"))
    arrs = np.array([rasterio.open(f).read(1) for f in files]).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fuse_rasters(files, tmp_path / "o.tif", scale=2)
    out = rasterio.open(tmp_path / "o.tif").read(1)
    lo, hi = np.percentile(arrs[res.reference], [0.1, 99.9])  # the working range (normalisation)
    sigma = np.sqrt(res.noise[1]) * (hi - lo)
    print(f"\nMODIS out [{np.nanmin(out):.0f}, {np.nanmax(out):.0f}], inputs [{arrs.min():.0f}, {arrs.max():.0f}], "
          f"3 sigma {3 * sigma:.0f}")
    assert np.nanmin(out) >= arrs.min() - 3 * sigma and np.nanmax(out) <= arrs.max() + 3 * sigma


def test_single_pass_is_not_worse_than_bicubic(tmp_path):
    from scipy.ndimage import binary_erosion

    with rasterio.open(_need("RGB.byte.tif")) as ds:
        a = ds.read(1).astype(np.float64)
        t, crs = ds.transform, ds.crs
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:h, :w]
    valid = a > 0  # 0 is the scene's nodata
    lr = a.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    lr = np.where(valid.reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3)), lr, 0)
    p = tmp_path / "lr.tif"
    with rasterio.open(p, "w", driver="GTiff", width=lr.shape[1], height=lr.shape[0], count=1, dtype="float32",
                       crs=crs, transform=t @ rasterio.Affine.scale(2), nodata=0) as dst:
        dst.write(lr.astype(np.float32), 1)
    fuse_rasters([p], tmp_path / "o.tif", scale=2)
    out = rasterio.open(tmp_path / "o.tif").read(1).astype(np.float64)
    ok = binary_erosion(valid, iterations=6) & np.isfinite(out)

    def psnr(x):
        return 10 * np.log10(255.0**2 / np.mean((x[ok] - a[ok]) ** 2))

    ours, bic = psnr(out), psnr(_bicubic(lr, 2))
    print(f"\nRGB.byte single pass x2: {ours:.2f} dB, bicubic {bic:.2f} dB")
    assert ours >= bic - 0.05


def test_landsat_red_and_pan_are_flagged(tmp_path):
    paths = [_need("landsat8_pan", "l8_B4.tif"), _need("landsat8_pan", "l8_B8.tif")]
    with pytest.warns(UserWarning, match="different bands"):
        fuse_rasters(paths, tmp_path / "o.tif", scale=2, tile=256)
