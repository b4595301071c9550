"""Lucas-Kanade kernels: NumPy twins, known sub-pixel shifts, guards."""

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from mfsr.kernels.lucas_kanade import (
    gradients,
    interp_weights,
    lk_refine,
    sample_tile,
    tile_hessians,
)


def _smooth_periodic(shape, sigma=2.0, seed=0):
    # Band-limited periodic texture: fourier_shift then gives exact shifts.
    img = gaussian_filter(np.random.default_rng(seed).random(shape), sigma, mode="wrap")
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


def _shift(img, shift):
    return np.fft.ifftn(fourier_shift(np.fft.fftn(img), shift)).real.astype(np.float32)


def _weights_ref(frac, order):
    t = float(frac)
    if order == 3:
        a = -0.5
        d = np.array([1 + t, t, 1 - t, 2 - t])  # distances to taps -1, 0, 1, 2
        w = np.where(
            d <= 1,
            (a + 2) * d**3 - (a + 3) * d**2 + 1,
            a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a,
        )
        return np.array([-1, 0, 1, 2]), w
    return np.array([0, 1]), np.array([1 - t, t])


def _sample_ref(mov, y0, x0, tile, py, px, order):
    h, w = mov.shape
    fy, fx = np.floor(py), np.floor(px)
    oy, wy = _weights_ref(py - fy, order)
    ox, wx = _weights_ref(px - fx, order)
    rows = np.clip(y0 + int(fy) + np.arange(tile)[:, None] + oy[None, :], 0, h - 1)
    cols = np.clip(x0 + int(fx) + np.arange(tile)[:, None] + ox[None, :], 0, w - 1)
    m = mov.astype(np.float64)
    out = np.zeros((tile, tile))
    for a in range(len(wy)):
        for b in range(len(wx)):
            out += wy[a] * wx[b] * m[np.ix_(rows[:, a], cols[:, b])]
    return out


def _hessians_ref(gy, gx, oy, ox, stride, tile, n_ty, n_tx, window):
    wt = np.outer(window, window).astype(np.float64)
    hess = np.zeros((n_ty, n_tx, 3))
    for ti in range(n_ty):
        for tj in range(n_tx):
            s = np.s_[oy + ti * stride : oy + ti * stride + tile, ox + tj * stride : ox + tj * stride + tile]
            a, b = gy[s].astype(np.float64), gx[s].astype(np.float64)
            hess[ti, tj] = ((wt * a * a).sum(), (wt * a * b).sum(), (wt * b * b).sum())
    return hess


def _lk_ref(ref, gy, gx, hess, mov, oy, ox, stride, tile, init, n_iter, tol, max_dev, order, window):
    n_ty, n_tx = init.shape[:2]
    wt = np.outer(window, window).astype(np.float64)
    out = init.astype(np.float64).copy()
    sd = np.full((n_ty, n_tx), np.inf)
    for ti in range(n_ty):
        for tj in range(n_tx):
            y0, x0 = oy + ti * stride, ox + tj * stride
            hyy, hyx, hxx = hess[ti, tj].astype(np.float64)
            det, tr = hyy * hxx - hyx * hyx, hyy + hxx
            if not (tr > 1e-12 and det > 1e-4 * tr * tr):
                continue
            hinv = np.array([[hxx, -hyx], [-hyx, hyy]]) / det
            s = np.s_[y0 : y0 + tile, x0 : x0 + tile]
            t, a, b = ref[s].astype(np.float64), gy[s].astype(np.float64), gx[s].astype(np.float64)
            p = out[ti, tj].copy()
            for _ in range(n_iter):
                r = _sample_ref(mov, y0, x0, tile, p[0], p[1], order) - t
                e = r * wt
                ee = (e * r).sum()
                dp = hinv @ np.array([(a * e).sum(), (b * e).sum()])
                p -= dp
                if np.all(np.abs(dp) < tol):
                    break
            if np.all(np.abs(p - out[ti, tj]) <= max_dev):
                lam = 0.5 * (tr - np.sqrt(max(tr * tr - 4 * det, 0.0)))
                out[ti, tj] = p
                sd[ti, tj] = np.sqrt(ee / wt.sum() / lam)
    return out, sd


def test_gradients_match_numpy():
    img = np.random.default_rng(0).random((13, 17), dtype=np.float32)
    gy, gx = gradients(img)
    ry, rx = np.gradient(img.astype(np.float64))
    np.testing.assert_allclose(gy, ry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-6)


def test_gradients_degenerate_axes():
    gy, gx = gradients(np.arange(5, dtype=np.float32)[None, :])
    assert (gy == 0).all()
    np.testing.assert_allclose(gx, np.ones((1, 5)))


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("frac", [0.0, 0.25, 0.5, 0.9])
def test_interp_weights_match_formula(order, frac):
    off, n, *w = interp_weights(frac, order)
    if frac == 0.0:
        assert (off, n) == (0, 1) and w[0] == 1.0 and w[1:] == [0, 0, 0]
        return
    offs, ref = _weights_ref(frac, order)
    assert off == offs[0] and n == len(ref)
    np.testing.assert_allclose(w[:n], ref, rtol=1e-5, atol=1e-7)
    assert abs(sum(w) - 1.0) < 1e-6


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("p", [(0.0, 0.0), (1.3, -2.6), (-0.45, 0.75), (-3.2, 4.0), (6.5, 7.25)])
def test_sample_tile_matches_numpy(order, p):
    mov = np.random.default_rng(1).random((20, 22), dtype=np.float32)
    tile = 8
    buf = np.empty((tile + 3, tile), np.float32)
    out = np.empty((tile, tile), np.float32)
    # (2, 3) is inside for small p; (10, 12) + p pushes the taps past the edge.
    for y0, x0 in [(2, 3), (10, 12), (0, 0)]:
        sample_tile(mov, y0, x0, tile, p[0], p[1], order, buf, out)
        np.testing.assert_allclose(out, _sample_ref(mov, y0, x0, tile, p[0], p[1], order), rtol=1e-5, atol=1e-6)


def test_tile_hessians_match_numpy():
    rng = np.random.default_rng(2)
    gy = rng.normal(size=(30, 40)).astype(np.float32)
    gx = rng.normal(size=(30, 40)).astype(np.float32)
    window = rng.random(8).astype(np.float32)
    hess = tile_hessians(gy, gx, 1, 2, 4, 8, 6, 8, window)
    np.testing.assert_allclose(hess, _hessians_ref(gy, gx, 1, 2, 4, 8, 6, 8, window), rtol=1e-5)


@pytest.mark.parametrize("order", [1, 3])
def test_lk_refine_matches_numpy(order):
    ref = _smooth_periodic((48, 56), sigma=1.5, seed=3)
    mov = _shift(ref, (0.6, -1.3)) + np.random.default_rng(4).normal(0, 0.01, ref.shape).astype(np.float32)
    gy, gx = gradients(ref)
    tile, stride, n_ty, n_tx = 16, 8, 5, 6
    window = np.linspace(0.5, 1.0, tile).astype(np.float32)
    hess = tile_hessians(gy, gx, 0, 0, stride, tile, n_ty, n_tx, window)
    init = np.random.default_rng(5).integers(-1, 2, (n_ty, n_tx, 2)).astype(np.float32)
    args = (0, 0, stride, tile, init, 4, 1e-3, 1.5, order, window)
    disp, sd = lk_refine(ref, gy, gx, hess, mov, *args)
    disp_ref, sd_ref = _lk_ref(ref, gy, gx, hess, mov, *args)
    np.testing.assert_allclose(disp, disp_ref, atol=2e-4)
    finite = np.isfinite(sd_ref)
    assert (np.isfinite(sd) == finite).all()
    np.testing.assert_allclose(sd[finite], sd_ref[finite], rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("shift", [(0.3, -0.45), (-0.7, 0.2), (1.25, 0.5), (-2.4, -1.6), (0.05, 0.0)])
@pytest.mark.parametrize("order, tol", [(3, 0.02), (1, 0.04)])
def test_known_subpixel_shift_recovered(shift, order, tol):
    # Linear resampling pulls estimates towards integers (pixel locking);
    # cubic, the default, stays within 0.02 px.
    ref = _smooth_periodic((96, 96), sigma=2.0, seed=6)
    mov = _shift(ref, shift)
    gy, gx = gradients(ref)
    tile, stride, n = 16, 8, 9
    window = np.ones(tile, np.float32)
    hess = tile_hessians(gy, gx, 8, 8, stride, tile, n, n, window)
    # Start from the rounded shift, as block matching would.
    init = np.broadcast_to(np.round(shift).astype(np.float32), (n, n, 2)).copy()
    disp, sd = lk_refine(ref, gy, gx, hess, mov, 8, 8, stride, tile, init, 10, 1e-4, 1.5, order, window)
    err = np.abs(disp - np.array(shift, np.float32))
    assert err.max() < tol, err.max()
    assert np.isfinite(sd).all() and sd.max() < 0.05


def test_flat_or_edge_tiles_keep_block_matching_result():
    flat = np.full((40, 40), 0.5, np.float32)
    stripes = np.repeat(np.sin(np.arange(40) / 3.0)[:, None], 40, axis=1).astype(np.float32)
    for ref in (flat, stripes):
        gy, gx = gradients(ref)
        window = np.ones(16, np.float32)
        hess = tile_hessians(gy, gx, 0, 0, 8, 16, 4, 4, window)
        init = np.full((4, 4, 2), 2.0, np.float32)
        disp, sd = lk_refine(ref, gy, gx, hess, np.roll(ref, 1, 0), 0, 0, 8, 16, init, 3, 1e-3, 1.5, 3, window)
        np.testing.assert_array_equal(disp, init)
        assert np.isinf(sd).all()


def test_diverging_tiles_keep_init():
    ref = _smooth_periodic((64, 64), seed=7)
    mov = _shift(ref, (1.0, 0.0))
    gy, gx = gradients(ref)
    window = np.ones(16, np.float32)
    hess = tile_hessians(gy, gx, 8, 8, 8, 16, 5, 5, window)
    init = np.zeros((5, 5, 2), np.float32)
    # The true shift is 1 px away: a 0.5 px leash makes every tile keep init.
    disp, sd = lk_refine(ref, gy, gx, hess, mov, 8, 8, 8, 16, init, 10, 1e-4, 0.5, 3, window)
    np.testing.assert_array_equal(disp, init)
    assert np.isinf(sd).all()
    disp, _ = lk_refine(ref, gy, gx, hess, mov, 8, 8, 8, 16, init, 10, 1e-4, 1.5, 3, window)
    assert np.abs(disp[..., 0] - 1.0).max() < 0.02
