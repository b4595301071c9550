import numpy as np
import pytest
from scipy import ndimage

from mfsr.baselines import phase_correlation_average, single_frame_upscale
from mfsr.synth import sample_image


def _smooth(shape, sigma=4.0, seed=0):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), sigma, mode="wrap")
    return (0.1 + 0.8 * (img - img.min()) / (img.max() - img.min())).astype(np.float32)


def test_scale_one_returns_frame():
    f = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    out = single_frame_upscale(f, 1.0)
    assert out.dtype == np.float32 and out.shape == f.shape
    np.testing.assert_allclose(out, f, atol=1e-5)


@pytest.mark.parametrize("scale", [2.0, 1.5, 3.0])
def test_pixel_area_alignment_on_ramp(scale):
    h, w = 30, 24
    f = np.tile((0.02 * np.arange(h, dtype=np.float32))[:, None], (1, w)) + 0.1
    out = single_frame_upscale(f, scale)
    assert out.shape == (round(h * scale), round(w * scale))
    y = np.arange(out.shape[0])
    expect = 0.1 + 0.02 * ((y + 0.5) / scale - 0.5)
    b = int(6 * scale)  # reflection at the border bends the ramp; the spline decays it
    np.testing.assert_allclose(out[b:-b, w // 2], expect[b:-b], atol=1e-5)


def test_matches_map_coordinates_order3():
    f = np.random.default_rng(1).random((17, 23, 3)).astype(np.float32)
    s = 1.7
    out = single_frame_upscale(f, s)
    yy, xx = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    for c in range(3):
        ref = ndimage.map_coordinates(
            f[..., c], [(yy + 0.5) / s - 0.5, (xx + 0.5) / s - 0.5], order=3, mode="reflect"
        )
        np.testing.assert_allclose(out[..., c], ref, atol=1e-5)


def test_cfa_single_frame():
    img = sample_image("astronaut", size=32)
    from mfsr.cfa import mosaic

    out = single_frame_upscale(mosaic(img, "RGGB"), 2, cfa="RGGB")
    assert out.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="cfa"):
        single_frame_upscale(img, 2, cfa="RGGB")


@pytest.mark.parametrize("shift", [(2.0, -3.0), (0.5, 0.25)])
def test_phase_correlation_recovers_shift(shift):
    ref = _smooth((96, 96), sigma=3.0)
    moved = ndimage.shift(ref, shift, order=3, mode="grid-wrap")
    frames = np.stack([ref, moved])
    out, shifts = phase_correlation_average(frames, 1.0, return_shifts=True)
    # the shift that registers the moved frame back is the opposite of the applied one
    np.testing.assert_allclose(shifts[1], -np.asarray(shift), atol=0.06)
    np.testing.assert_allclose(out[8:-8, 8:-8], ref[8:-8, 8:-8], atol=0.01)
    # without alignment the average would be far off
    assert np.abs(frames.mean(0) - ref)[8:-8, 8:-8].max() > 0.02


def test_phase_correlation_average_shapes():
    rng = np.random.default_rng(0)
    frames = rng.random((3, 16, 20)).astype(np.float32)
    assert phase_correlation_average(frames, 2.0, cfa="RGGB").shape == (32, 40, 3)
    assert phase_correlation_average(frames, 1.5).shape == (24, 30)
