import numpy as np
import pytest
from scipy.ndimage import correlate1d, map_coordinates, minimum_filter, uniform_filter

from mfsr.cfa import cell_channels, mosaic
from mfsr.kernels.robustness import guide_image, local_stats, robustness, warp_guide

BOX = np.full(3, 1 / 3, np.float32)
BLUR = np.array([0.25, 0.5, 0.25], np.float32)


def _np_local_stats(g, taps):
    # Planar (C, H, W) guide.
    g = g.astype(np.float64)
    m3 = uniform_filter(g, size=(1, 3, 3), mode="nearest")
    var = np.maximum(uniform_filter(g * g, size=(1, 3, 3), mode="nearest") - m3 * m3, 0)
    mean = correlate1d(correlate1d(g, taps, axis=1, mode="nearest"), taps, axis=2, mode="nearest")
    return mean, var


def _np_bilinear(field, y, x):
    return map_coordinates(field, [y, x], order=1, mode="nearest")


def _np_warp(guide, flow, b):
    nc, h, w = guide.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ry, rx = b * (yy + 0.5) - 0.5, b * (xx + 0.5) - 0.5
    fy = _np_bilinear(flow[..., 0].astype(np.float64), ry, rx)
    fx = _np_bilinear(flow[..., 1].astype(np.float64), ry, rx)
    gy, gx = (ry + fy + 0.5) / b - 0.5, (rx + fx + 0.5) / b - 0.5
    return np.stack([_np_bilinear(guide[c].astype(np.float64), gy, gx) for c in range(nc)])


def _np_robustness(rm, rv, warped, alpha, beta, chn, spread, thr, s, s_irr, t, win, taps, gain):
    wm, wv = _np_local_stats(warped, taps)
    d2 = ((rm - wm) ** 2).sum(0)
    s2 = (np.minimum(rv, wv) + np.maximum(alpha * rm + beta, 0) * chn[:, None, None]).sum(0) * gain
    g = np.where(spread > thr, s_irr, s)
    r = np.clip(g * np.exp(-d2 / s2) - t, 0, 1)
    return minimum_filter(r, size=win, mode="nearest")


@pytest.mark.parametrize("taps", [BOX, BLUR])
def test_local_stats_matches_numpy_twin(taps):
    g = np.random.default_rng(0).random((3, 9, 11)).astype(np.float32)
    mean, var = local_stats(g, taps)
    m_ref, v_ref = _np_local_stats(g, taps)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, v_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("b", [1, 2])
def test_warp_guide_matches_numpy_twin(b):
    rng = np.random.default_rng(1)
    guide = rng.random((3, 10, 12)).astype(np.float32)
    flow = rng.uniform(-2, 2, (10 * b, 12 * b, 2)).astype(np.float32)
    np.testing.assert_allclose(warp_guide(guide, flow, b), _np_warp(guide, flow, b), rtol=1e-5, atol=1e-5)


def test_warp_guide_identity_and_integer_shift():
    rng = np.random.default_rng(2)
    guide = rng.random((1, 8, 9)).astype(np.float32)
    zero = np.zeros((16, 18, 2), np.float32)
    np.testing.assert_allclose(warp_guide(guide, zero, 2), guide, atol=1e-6)
    # Content of reference pixel (i, j) at (i + 2, j - 2) raw px = one guide px.
    flow = np.zeros((16, 18, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -2.0
    w = warp_guide(guide, flow, 2)
    np.testing.assert_allclose(w[:, :-1, 1:], guide[:, 1:, :-1], atol=1e-6)


def test_robustness_matches_numpy_twin():
    rng = np.random.default_rng(3)
    ref = rng.random((3, 14, 15)).astype(np.float32)
    warped = (ref + 0.1 * rng.standard_normal(ref.shape)).astype(np.float32)
    spread = rng.uniform(0, 1.6, ref.shape[1:]).astype(np.float32)
    chn = np.array([1.0, 0.5, 1.0], np.float32)
    rm, rv = local_stats(ref, BLUR)
    args = (1e-3, 1e-4, chn, spread, 0.8, 12.0, 2.0, 0.12)
    for win in (1, 5):
        got = robustness(rm, rv, warped, *args, win, BLUR, 2.0)
        want = _np_robustness(rm.astype(np.float64), rv.astype(np.float64), warped, *args, win, BLUR, 2.0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_identical_frames_keep_weight_and_changed_block_is_rejected():
    rng = np.random.default_rng(4)
    ref = rng.random((1, 30, 30)).astype(np.float32) * 0.1 + 0.4
    rm, rv = local_stats(ref, BOX)
    spread = np.zeros((30, 30), np.float32)
    one = np.ones(1, np.float32)
    r = robustness(rm, rv, ref, 0.0, 1e-4, one, spread, 0.8, 12.0, 2.0, 0.12, 5, BOX, 1.0)
    assert r.min() == 1.0
    moved = ref.copy()
    moved[:, 10:20, 10:20] = 0.9  # a bright object that is not in the reference
    r = robustness(rm, rv, moved, 0.0, 1e-4, one, spread, 0.8, 12.0, 2.0, 0.12, 5, BOX, 1.0)
    assert r[10:20, 10:20].max() == 0.0
    # The 5x5 minimum widens the rejection by 2 px, and no further.
    assert r[8:22, 8:22].max() == 0.0
    assert r[:5].min() == 1.0 and r[25:].min() == 1.0


def test_irregular_flow_lowers_gain():
    ref = np.full((1, 12, 12), 0.5, np.float32)
    warped = ref + np.float32(0.05)  # d^2 / sigma^2 = 1 with the noise variance 0.0025
    rm, rv = local_stats(ref, BOX)
    one = np.ones(1, np.float32)
    reg = np.zeros((12, 12), np.float32)
    irr = np.full((12, 12), 1.0, np.float32)
    r_reg = robustness(rm, rv, warped, 0.0, 0.0025, one, reg, 0.8, 12.0, 2.0, 0.12, 1, BOX, 1.0)
    r_irr = robustness(rm, rv, warped, 0.0, 0.0025, one, irr, 0.8, 12.0, 2.0, 0.12, 1, BOX, 1.0)
    assert r_reg.min() == 1.0
    np.testing.assert_allclose(r_irr, 2 * np.exp(-1) - 0.12, rtol=1e-4)


def test_guide_image_cfa_and_rgb():
    rng = np.random.default_rng(6)
    rgb = rng.random((6, 8, 3)).astype(np.float32)
    g = guide_image(rgb, cell_channels("RGGB"), False)
    np.testing.assert_array_equal(g, rgb.transpose(2, 0, 1))
    raw = mosaic(rgb, "GRBG")
    g = guide_image(raw[..., None], cell_channels("GRBG"), True)
    assert g.shape == (3, 3, 4)
    np.testing.assert_allclose(g[0], raw[0::2, 1::2])  # R at (0, 1)
    np.testing.assert_allclose(g[2], raw[1::2, 0::2])  # B at (1, 0)
    np.testing.assert_allclose(g[1], 0.5 * (raw[0::2, 0::2] + raw[1::2, 1::2]), rtol=1e-6)


def test_object_erasing_an_edge_is_rejected():
    # The reference has a strong edge, the frame a flat patch there: the
    # reference's own variance is large, the frame's small; the smaller one
    # must set the tolerance.
    ref = np.full((1, 24, 24), 0.2, np.float32)
    ref[:, :, 12:] = 0.8
    frame = ref.copy()
    frame[:, 6:18, 8:16] = 0.5
    rm, rv = local_stats(ref, BLUR)
    one = np.ones(1, np.float32)
    r = robustness(rm, rv, frame, 0.0, 1e-5, one, np.zeros((24, 24), np.float32), 0.8, 12.0, 2.0, 0.12, 1, BLUR, 2.0)
    assert r[8:16, 10:14].max() == 0.0
    assert r[:, :4].min() == 1.0 and r[:, 20:].min() == 1.0
