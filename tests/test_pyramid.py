"""Pyramid kernels against plain NumPy twins, and pyramid geometry."""

import numpy as np
import pytest
from scipy.ndimage import correlate1d

from mfsr.kernels.pyramid import bin2x2, downsample, separable_blur
from mfsr.registration import RegistrationParams, prepare_reference


def _bin2x2_ref(raw):
    h, w = raw.shape[0] // 2, raw.shape[1] // 2
    return raw[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))


def _downsample_ref(image, f):
    if f == 1:
        return image.copy()
    k = np.convolve(np.ones(f), [1.0, 2.0, 1.0]) / (4 * f)  # length f + 2
    h, w = image.shape
    hc, wc = h // f, w // f
    iy = np.clip(f * np.arange(hc)[:, None] - 1 + np.arange(f + 2)[None, :], 0, h - 1)
    ix = np.clip(f * np.arange(wc)[:, None] - 1 + np.arange(f + 2)[None, :], 0, w - 1)
    img = image.astype(np.float64)
    rows = np.einsum("it,itw->iw", np.broadcast_to(k, iy.shape), img[iy])
    return np.einsum("jt,ijt->ij", np.broadcast_to(k, ix.shape), rows[:, ix])


@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (2, 2), (31, 6)])
def test_bin2x2_matches_numpy(shape):
    raw = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = bin2x2(raw)
    assert out.shape == (shape[0] // 2, shape[1] // 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, _bin2x2_ref(raw), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("factor", [1, 2, 4, 3])
@pytest.mark.parametrize("shape", [(16, 16), (23, 37), (5, 9)])
def test_downsample_matches_numpy(factor, shape):
    img = np.random.default_rng(1).random(shape, dtype=np.float32)
    out = downsample(img, factor)
    assert out.shape == (shape[0] // factor, shape[1] // factor)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _downsample_ref(img, factor), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_is_centred_on_pixel_area(factor):
    # A linear ramp is reproduced at the coarse pixel centre f*i + (f-1)/2.
    y = np.arange(64, dtype=np.float32)
    img = np.repeat((3.0 * y + 1.0)[:, None], 48, axis=1)
    out = downsample(img, factor)
    i = np.arange(1, out.shape[0] - 1)
    np.testing.assert_allclose(out[i, 5], 3.0 * (factor * i + (factor - 1) / 2) + 1.0, rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0])
def test_separable_blur_matches_scipy(sigma):
    img = np.random.default_rng(2).random((21, 34), dtype=np.float32)
    r = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    ref = correlate1d(img.astype(np.float64), taps, axis=0, mode="nearest")
    ref = correlate1d(ref, taps, axis=1, mode="nearest")
    np.testing.assert_allclose(separable_blur(img, taps), ref, rtol=1e-5, atol=1e-6)


def test_separable_blur_narrow_image():
    # Images narrower than the kernel are all border.
    img = np.random.default_rng(3).random((9, 3), dtype=np.float32)
    taps = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
    ref = correlate1d(correlate1d(img, taps, axis=0, mode="nearest"), taps, axis=1, mode="nearest")
    np.testing.assert_allclose(separable_blur(img, taps), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, cfa, expected",
    [
        ((1500, 2000), None, [(1500, 2000), (750, 1000), (187, 250), (46, 62)]),
        ((256, 384), None, [(256, 384), (128, 192), (32, 48)]),
        ((3000, 4000), "RGGB", [(1500, 2000), (750, 1000), (187, 250), (46, 62)]),
        ((32, 32), None, [(32, 32), (16, 16)]),
        ((20, 20), None, [(20, 20)]),
        ((8, 8), "GRBG", [(4, 4)]),
    ],
)
def test_pyramid_level_shapes(shape, cfa, expected):
    frame = np.zeros(shape, np.float32)
    ref = prepare_reference(frame, cfa)
    assert [lv.shape for lv in ref.levels] == expected
    assert ref.factors == (1, 2, 4, 4)[: len(expected)]
    # The coarsest level still holds at least one full tile.
    g = ref.grids[-1]
    assert g.n_ty >= 1 and g.n_tx >= 1
    assert g.origin_y + (g.n_ty - 1) * g.stride + g.tile <= ref.levels[-1].shape[0]


def test_pyramid_respects_custom_factors():
    ref = prepare_reference(np.zeros((256, 256), np.float32), params=RegistrationParams(factors=(1, 4)))
    assert [lv.shape for lv in ref.levels] == [(256, 256), (64, 64)]
