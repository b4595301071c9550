"""Satellite defaults on synthetic passes: automatic reference, band checks,
no overshoot, no rejected content, no Nyquist pattern, single pass = cubic."""

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from mfsr.geo import fuse_rasters
from mfsr.geo.masked_fusion import nyquist_energy, nyquist_guard, sample_radius_floor
from mfsr.geo.synth import simulate_passes
from mfsr.synth import sample_image

T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
CRS = "EPSG:32633"


def _write(path, arr, *, desc=None, tags=None, nodata=None):
    arr = np.asarray(arr, np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="float32", crs=CRS, transform=T, nodata=nodata) as dst:
        dst.write(arr, 1)
        if desc:
            dst.set_band_description(1, desc)
        if tags:
            dst.update_tags(1, **tags)
    return path


def _read(path, band=1):
    with rasterio.open(path) as src:
        return src.read(band)


@pytest.fixture(scope="module")
def cloudy_first(tmp_path_factory):
    """5 passes; the first has a large unmasked bright cloud (no mask given)."""
    d = tmp_path_factory.mktemp("cloudy")
    img = sample_image("camera", grey=True, size=232).astype(np.float64)
    return simulate_passes(img, T, CRS, d, n=5, scale=2, margin=8, cloud_fractions=[0.45, 0, 0.05, 0, 0.1],
                           masked_value=1.0, seed=3)


def test_auto_reference_skips_the_cloudy_first_pass(cloudy_first, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fuse_rasters(cloudy_first.paths, tmp_path / "a.tif", scale=2)
    assert res.reference in (1, 3)  # the cloud-free passes
    assert "automatic" in res.reference_reason and f"reference: pass {res.reference}" in res.summary()
    assert res.clear_scores.shape == (5,) and res.clear_scores[0] < res.clear_scores[res.reference] - 0.3
    assert _read(tmp_path / "a.tif").shape == (200, 200)
    assert rasterio.open(tmp_path / "a.tif").tags()["MFSR_REFERENCE"] == str(res.reference)
    # An explicit index is kept as given.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res0 = fuse_rasters(cloudy_first.paths[:3], tmp_path / "b.tif", scale=2, reference=0)
        res_none = fuse_rasters(cloudy_first.paths[:3], tmp_path / "c.tif", scale=2, reference=None)
    assert res0.reference == 0 and res0.reference_reason == "given"
    assert res_none.reference in (1, 2)
    with pytest.raises(TypeError, match="reference"):
        fuse_rasters(cloudy_first.paths, tmp_path / "d.tif", reference="best")


def test_cli_names_the_chosen_reference(cloudy_first, tmp_path, capsys):
    from mfsr.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fuse", *map(str, cloudy_first.paths[:3]), "-o", str(tmp_path / "o.tif")]) == 0
    out = capsys.readouterr().out
    assert "reference: pass" in out and "automatic" in out and "pass_00" not in out.split("reference: pass")[1]


def test_different_bands_warn_or_raise(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.random((48, 48))
    p1 = _write(tmp_path / "scene_B4.tif", a, desc="red", tags={"wavelength": "665"})
    p2 = _write(tmp_path / "scene_B8.tif", a, desc="nir", tags={"wavelength": "842"})
    with pytest.raises(ValueError, match="paths: band 1 of .*scene_B8.tif is centred at 842"):
        fuse_rasters([p1, p2], tmp_path / "o.tif", reference=0)
    p3 = _write(tmp_path / "x_B4.tif", a, desc="red")
    p4 = _write(tmp_path / "y_B4.tif", a, desc="nir")
    with pytest.warns(UserWarning, match="described as 'nir'.*different bands"):
        fuse_rasters([p3, p4], tmp_path / "o1.tif", reference=0, shifts=np.zeros((2, 2)))
    p5 = _write(tmp_path / "l8_B4.tif", a)
    p6 = _write(tmp_path / "l8_B8.tif", a)
    with pytest.warns(UserWarning, match="file name says band 8 .* band 4"):
        fuse_rasters([p5, p6], tmp_path / "o2.tif", reference=0, shifts=np.zeros((2, 2)))
    # Anticorrelated content after registration (another band, or a changed scene) warns.
    img = sample_image("camera", grey=True, size=96).astype(np.float64)
    q1 = _write(tmp_path / "d1.tif", img)
    q2 = _write(tmp_path / "d2.tif", 1.0 - img)
    with pytest.warns(UserWarning, match="correlates at -"):
        fuse_rasters([q1, q2], tmp_path / "o3.tif", reference=0, min_correlation=-1.0)


def test_output_stays_within_the_inputs_range(tmp_path):
    # Hard edges and a saturated block: interpolation and back-projection overshoot there.
    rng = np.random.default_rng(1)
    hr = np.zeros((112, 112))
    hr[20:70, 30:90] = 1.0
    hr[50:60, :] = 0.6
    hr[::7, ::5] = 1.0
    sp = simulate_passes(hr, T, CRS, tmp_path, n=4, scale=2, margin=8, cloud_fractions=[0] * 4, seed=4,
                         noise=0.002, gain_range=(1, 1), offset_range=(0, 0))
    res = fuse_rasters(sp.paths, tmp_path / "o.tif", scale=2)
    out = _read(tmp_path / "o.tif")
    vals = np.concatenate([_read(p).ravel() for p in sp.paths])
    sigma = np.sqrt(res.noise[1]) * (vals.max() - vals.min())
    assert np.nanmin(out) >= vals.min() - 3 * sigma - 1e-6
    assert np.nanmax(out) <= vals.max() + 3 * sigma + 1e-6
    del rng


def test_pixels_all_passes_reject_take_no_rejected_value(tmp_path):
    # A flat scene where, in one square, the reference is nodata and the four
    # other passes disagree (0.1, 0.15, 0.85, 0.9 around a median of 0.5):
    # every pass is rejected there.
    vals = [-1.0, 0.1, 0.15, 0.85, 0.9]
    paths = []
    for k, v in enumerate(vals):
        a = np.full((60, 60), 0.5) + 0.002 * np.random.default_rng(k).standard_normal((60, 60))
        a[20:40, 20:40] = v
        paths.append(_write(tmp_path / f"p{k}.tif", a, nodata=-1.0))
    fuse_rasters(paths, tmp_path / "o.tif", scale=2, reference=0, shifts=np.zeros((5, 2)),
                 save_count=tmp_path / "n.tif")
    out, n = _read(tmp_path / "o.tif"), _read(tmp_path / "n.tif")
    core = (slice(50, 70), slice(50, 70))
    # Filled from the accepted surroundings (0.5), accepted passes or nodata,
    # never one rejected pass's own value (0.1, 0.15, 0.85 or 0.9).
    fin = out[core][np.isfinite(out[core])]
    assert fin.size and np.all(np.abs(fin - 0.5) < 0.1)
    flagged = (n == 0) & np.isfinite(out)
    assert np.all(np.abs(out[flagged] - 0.5) < 0.1)
    assert (n[:30, :30] == 5).all() and np.abs(out[:30, :30] - 0.5).max() < 0.02


def test_nyquist_energy_and_guard():
    yy, xx = np.mgrid[0:64, 0:64]
    checker = ((yy + xx) % 2).astype(np.float64)
    smooth = np.sin(2 * np.pi * yy / 32.0) + np.cos(2 * np.pi * xx / 20.0)
    assert nyquist_energy(checker) > 0.9 and nyquist_energy(smooth) < 1e-4
    img = (smooth + 0.2 * checker).astype(np.float32)[..., None]
    img[:4, :4] = np.nan
    out = nyquist_guard(img, 2.0)
    assert np.isnan(out[:4, :4]).all() and np.isfinite(out[4:, 4:]).all()
    inner = (slice(16, -16), slice(16, -16))
    assert nyquist_energy(np.nan_to_num(out[..., 0])[inner]) < 1e-3
    np.testing.assert_allclose(out[..., 0][inner], smooth[inner] + 0.1, atol=0.02)  # checker mean 0.1
    assert nyquist_guard(img, 1.0) is img
    with pytest.raises(ValueError, match="image"):
        nyquist_energy(np.full((4, 4), np.nan))
    assert sample_radius_floor(1) > sample_radius_floor(4) == pytest.approx(sample_radius_floor(1) / 2)


def test_fusion_has_no_more_nyquist_energy_than_bicubic(tmp_path):
    from skimage.transform import resize

    img = sample_image("camera", grey=True, size=232).astype(np.float64)
    sp = simulate_passes(img, T, CRS, tmp_path, n=3, scale=2, margin=8, cloud_fractions=[0, 0, 0], seed=5)
    fuse_rasters(sp.paths, tmp_path / "o.tif", scale=2, reference=0)
    out = _read(tmp_path / "o.tif").astype(np.float64)[16:-16, 16:-16]
    ref = _read(sp.paths[0]).astype(np.float64)
    bic = resize(ref, (200, 200), order=3, mode="edge")[16:-16, 16:-16]
    assert nyquist_energy(out) <= nyquist_energy(bic)


def test_single_pass_is_the_cubic_interpolation(tmp_path):
    from skimage.transform import resize

    from scipy.ndimage import gaussian_filter

    # Optics blur as in real passes: a cubic spline's overshoot at the
    # synthetic image's perfect steps is beyond what the overshoot clamp allows.
    img = gaussian_filter(sample_image("camera", grey=True, size=128).astype(np.float64), 1.0)
    lr = img.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    p = _write(tmp_path / "one.tif", lr)
    res = fuse_rasters([p], tmp_path / "o.tif", scale=2, save_count=tmp_path / "n.tif")
    assert res.reference == 0 and res.reference_reason == "the only pass"
    out = _read(tmp_path / "o.tif").astype(np.float64)
    bic = resize(lr, (128, 128), order=3, mode="edge")
    c = (slice(4, -4), slice(4, -4))

    def psnr(x):
        return 10 * np.log10(1.0 / np.mean((x[c] - img[c]) ** 2))

    assert psnr(out) >= psnr(bic) - 0.05
    assert (_read(tmp_path / "n.tif") == 1).all()
