"""The satellite refinement (mfsr.geo.pass_refinement, fuse_arrays / fuse_rasters refine=)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.ndimage import gaussian_filter, maximum_filter, minimum_filter

from mfsr.geo import fuse_arrays, fuse_rasters
from mfsr.geo import pass_refinement as pr
from mfsr.pixel_area import block_mean

CRS = "EPSG:32633"
TR = Affine(30.0, 0, 500000.0, 0, -30.0, 4000000.0)


def _stack(n=4, size=80, seed=0):
    """``n`` passes (N, 1, size, size) of a textured scene, sub-pixel shifts, noise; pass 0 the reference."""
    rng = np.random.default_rng(seed)
    hr = gaussian_filter(rng.standard_normal((2 * size + 16, 2 * size + 16)), 1.5)
    hr = (hr - hr.min()) / (hr.max() - hr.min())
    out = np.empty((n, 1, size, size), np.float32)
    for k in range(n):
        dy, dx = (0, 0) if k == 0 else rng.integers(0, 2, 2)  # HR px: half a pass pixel
        crop = hr[8 + dy : 8 + dy + 2 * size, 8 + dx : 8 + dx + 2 * size]
        out[k, 0] = block_mean(crop, 2) + 0.004 * rng.standard_normal((size, size))
    return out


@pytest.fixture(scope="module")
def stack():
    return _stack()


def test_weights_load_offline_from_the_package():
    net = pr.load_pass_refiner()
    manifest = json.loads((pr.WEIGHTS / "manifest.json").read_text())
    entry = manifest["files"]["pass_refiner.pt"]
    assert (pr.WEIGHTS / "pass_refiner.pt").stat().st_size == entry["bytes"] < 1_000_000
    assert net.radius == pr.RADIUS <= 48
    assert not net.training
    assert "command" in manifest["training"]


def test_tiled_equals_whole_raster_with_refine(stack):
    whole, _ = fuse_arrays(stack, CRS, TR, scale=2, reference=0, refine=True)
    tiled, res = fuse_arrays(stack, CRS, TR, scale=2, reference=0, refine=True, tile=32)
    assert res.n_tiles > 1
    assert np.all(np.isfinite(whole))
    np.testing.assert_allclose(tiled, whole, atol=1e-5, rtol=0)


def test_refine_changes_the_output_within_local_bounds(stack):
    # radiometric=False: the bounds are then those of the raw samples
    plain, _ = fuse_arrays(stack, CRS, TR, scale=2, reference=0, radiometric=False)
    refined, res = fuse_arrays(stack, CRS, TR, scale=2, reference=0, radiometric=False, refine=True)
    assert np.abs(refined - plain).max() > 1e-3
    # Local range of the passes around every output pixel (7 x 7 input px: a generous window
    # for the bilinear bounds and the shifts), widened by the pipeline's margin.
    hi = maximum_filter(stack[:, 0].max(axis=0), size=7, mode="nearest")
    lo = minimum_filter(stack[:, 0].min(axis=0), size=7, mode="nearest")
    span = float(np.percentile(stack[0], 99.9) - np.percentile(stack[0], 0.1))
    margin = 3.0 * np.sqrt(res.noise[1]) * span + 1e-4
    up = lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1)  # noqa: E731
    assert np.all(refined[0] <= up(hi) + margin)
    assert np.all(refined[0] >= up(lo) - margin)


def test_refinement_is_held_to_the_local_bounds(stack, monkeypatch):
    import mfsr.geo.pipeline as pipeline

    plain, res = fuse_arrays(stack, CRS, TR, scale=2, reference=0, radiometric=False)
    monkeypatch.setattr(pipeline, "refine_band", lambda img, count, **kw: img + 10.0)
    wild, _ = fuse_arrays(stack, CRS, TR, scale=2, reference=0, radiometric=False, refine=True)
    span = float(np.percentile(stack[0], 99.9) - np.percentile(stack[0], 0.1))
    margin = 3.0 * np.sqrt(res.noise[1]) * span + 1e-4
    hi = maximum_filter(stack[:, 0].max(axis=0), size=7, mode="nearest")
    assert np.all(wild[0] <= np.repeat(np.repeat(hi, 2, 0), 2, 1) + margin)
    assert wild.max() < stack.max() + 0.1


def test_single_pass_and_other_scales_are_not_refined(stack):
    one, _ = fuse_arrays(stack[:1], CRS, TR, scale=2, reference=0)
    one_r, _ = fuse_arrays(stack[:1], CRS, TR, scale=2, reference=0, refine=True)
    np.testing.assert_allclose(one_r, one, atol=1e-6, rtol=0)
    three, _ = fuse_arrays(stack, CRS, TR, scale=3, reference=0)
    with pytest.warns(UserWarning, match="refine: .*scale 3 keeps the plain fusion"):
        three_r, _ = fuse_arrays(stack, CRS, TR, scale=3, reference=0, refine=True)
    np.testing.assert_allclose(three_r, three, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_bad_refine_is_a_type_error_naming_it(stack, tmp_path, bad):
    with pytest.raises(TypeError, match="^refine: "):
        fuse_arrays(stack, CRS, TR, scale=2, refine=bad)
    with pytest.raises(TypeError, match="^refine: "):
        fuse_rasters([tmp_path / "a.tif", tmp_path / "b.tif"], tmp_path / "o.tif", refine=bad)


def test_cli_refine_flag_on_passes(stack, tmp_path):
    from mfsr.cli import main

    paths = []
    for k in range(stack.shape[0]):
        p = tmp_path / f"p{k}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=stack.shape[3], height=stack.shape[2], count=1,
                           dtype="float32", crs=CRS, transform=TR) as dst:
            dst.write(stack[k])
        paths.append(str(p))
    base = ["fuse", *paths, "--scale", "2", "--reference", "0", "--quiet"]
    assert main([*base, "-o", str(tmp_path / "plain.tif"), "--no-refine"]) == 0
    assert main([*base, "-o", str(tmp_path / "refined.tif"), "--refine"]) == 0
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "refined.tif") as b:
        plain, refined = a.read(1), b.read(1)
    direct, _ = fuse_arrays(stack, CRS, TR, scale=2, reference=0, refine=True)
    assert np.abs(refined - plain).max() > 1e-3
    np.testing.assert_allclose(refined, direct[0], atol=1e-5, rtol=0)
