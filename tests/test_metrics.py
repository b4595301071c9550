import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from mfsr.cfa import mosaic
from mfsr.metrics import degrade, downscale_consistency, flow_epe, psnr, ssim
from mfsr.synth import sample_image, simulate_burst


def _random(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# -------------------------------------------------------------------- psnr


def test_psnr_identical_is_inf():
    a = _random((16, 16, 3))
    assert psnr(a, a) == math.inf


def test_psnr_known_mse():
    a = _random((20, 30))
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a + 0.1, a, data_range=2.0) == pytest.approx(20 + 20 * math.log10(2), abs=1e-4)
    # error only in the border: cropping removes it
    b = a.copy()
    b[0] += 0.5
    assert psnr(b, a, crop=1) == math.inf
    # per image over channels: one channel off by 0.3 -> MSE 0.03
    c = _random((10, 10, 3))
    d = c.copy()
    d[..., 1] += 0.3
    assert psnr(d, c) == pytest.approx(10 * math.log10(1 / 0.03), abs=1e-4)


def test_psnr_mask():
    a = _random((10, 10))
    b = a.copy()
    b[:5] += 0.1
    m = np.zeros((10, 10), bool)
    m[5:] = True
    assert psnr(b, a, valid=m) == math.inf
    assert psnr(b, a, valid=~m) == pytest.approx(20.0, abs=1e-4)
    with pytest.raises(ValueError, match="^valid: shape"):
        psnr(b, a, valid=np.ones((3, 3), bool))
    # the old name keeps its meaning, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="mask= is deprecated, use valid="):
        assert psnr(b, a, mask=m) == math.inf
    with pytest.raises(TypeError, match="give valid= only"):
        psnr(b, a, valid=m, mask=m)
    with pytest.raises(ValueError, match="image"):
        psnr(a, a[:5])


# -------------------------------------------------------------------- ssim


def test_ssim_identical_and_noisy():
    a = sample_image("camera", size=96)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    n1 = a + 0.02 * rng.standard_normal(a.shape)
    n2 = a + 0.1 * rng.standard_normal(a.shape)
    assert 1 > ssim(n1, a) > ssim(n2, a)


@pytest.mark.parametrize("rgb", [False, True])
def test_ssim_matches_skimage(rgb):
    a = sample_image("astronaut", size=80, grey=not rgb)
    rng = np.random.default_rng(1)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(
        b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        channel_axis=2 if rgb else None,
    )
    assert ssim(b, a) == pytest.approx(ref, abs=1e-3)


# --------------------------------------------------------------------- epe


def test_flow_epe_constructed():
    t = np.zeros((2, 8, 9, 2))
    f = t.copy()
    f[..., 0] = 3.0
    f[..., 1] = 4.0
    assert flow_epe(f, t) == pytest.approx(5.0)
    f[0] = 0.0  # frame 0 exact, frame 1 off by 5
    assert flow_epe(f, t, reduce="mean") == pytest.approx(2.5)
    e = flow_epe(f, t, reduce=None)
    assert e.shape == (2, 8, 9) and e[1].min() == pytest.approx(5.0)
    g = np.zeros((8, 9, 2))
    h = g.copy()
    h[0, :, 1] = 10.0  # border row only
    assert flow_epe(h, g, crop=1, reduce="mean") == 0.0
    assert flow_epe(h, g, reduce="mean") == pytest.approx(10 / 8)
    with pytest.raises(ValueError, match="reduce"):
        flow_epe(h, g, reduce="max")


# ----------------------------------------------------------------- degrade


def test_degrade_block_constant():
    low = _random((6, 7, 3))
    high = np.kron(low, np.ones((3, 3, 1))).astype(np.float32)
    np.testing.assert_allclose(degrade(high, 3), low, atol=1e-6)
    np.testing.assert_allclose(degrade(high, 3, cfa="GBRG"), mosaic(low, "GBRG"), atol=1e-6)


def test_degrade_integer_block_mean_and_fractional_weights():
    img = _random((12, 12))
    np.testing.assert_allclose(degrade(img, 2), img.reshape(6, 2, 6, 2).mean(axis=(1, 3)), atol=1e-6)
    # 1.5: low-res pixel 1 covers high-res [1.5, 3] -> half of pixel 1, all of pixel 2
    d = degrade(img, 1.5)
    assert d.shape == (8, 8)
    wy = np.array([0.5, 1.0]) / 1.5
    np.testing.assert_allclose(d[1, 1], wy @ img[1:3, 1:3] @ wy, atol=1e-6)


def test_degrade_with_flow_shift():
    img = _random((10, 12))
    flow = np.zeros((10, 12, 2))
    flow[..., 1] = -1.0  # reference pixel (i, j) is at (i, j - 1) in the frame
    d = degrade(img, 1, flow=flow)
    np.testing.assert_allclose(d[:, :-1], img[:, 1:], atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0])
def test_degrade_reproduces_simulated_frames(scale):
    img = sample_image("astronaut", size=96)
    b = simulate_burst(img, n_frames=3, scale=scale, cfa="RGGB", seed=2)
    shape = b.frames.shape[1:]
    np.testing.assert_allclose(degrade(b.ground_truth, scale, cfa="RGGB", shape=shape), b.frames[0], atol=1e-6)
    # with the true flow, another frame is reproduced too (away from reflected borders)
    d = degrade(b.ground_truth, scale, cfa="RGGB", shape=shape, flow=b.flow[1])
    np.testing.assert_allclose(d[4:-4, 4:-4], b.frames[1][4:-4, 4:-4], atol=1e-5)


def test_downscale_consistency():
    img = sample_image("astronaut", size=96)
    b = simulate_burst(img, n_frames=2, scale=2, cfa="RGGB", seed=2)
    assert downscale_consistency(b.ground_truth, b.frames[0], 2, cfa="RGGB") == math.inf
    blurred = ndimage.gaussian_filter(b.ground_truth, (2, 2, 0))
    shifted = np.roll(b.ground_truth, 2, axis=1)
    v1 = downscale_consistency(blurred, b.frames[0], 2, cfa="RGGB", crop=2)
    v2 = downscale_consistency(shifted, b.frames[0], 2, cfa="RGGB", crop=2)
    assert 15 < v1 < 60 and 10 < v2 < 60


def test_corner_error_of_a_translation_and_a_scaling():
    from mfsr.metrics import corner_error

    shift = np.array([[1.0, 0, 1.0], [0, 1.0, 2.0], [0, 0, 1.0]])
    np.testing.assert_allclose(corner_error(shift, np.eye(3), (10, 20)), np.full(4, np.sqrt(5.0)))
    zoom = np.diag([2.0, 2.0, 1.0])  # corners of a 3x5 image move by their own coordinates
    both = corner_error(np.stack([zoom, np.eye(3)]), np.stack([np.eye(3)] * 2), (3, 5))
    np.testing.assert_allclose(both, [[0, 4, np.hypot(4, 2), 2], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="transforms"):
        corner_error(np.eye(3), np.eye(2), (3, 5))
