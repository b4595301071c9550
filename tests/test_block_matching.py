"""Block matching kernel: NumPy twin, known integer shifts, candidate choice."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, median_filter

from mfsr.kernels.block_matching import block_match, reject_outliers, tile_cost


def _texture(shape, sigma=1.5, seed=0):
    img = gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return ((img - img.min()) / np.ptp(img)).astype(np.float32)


def _cost_ref(ref, mov, y0, x0, tile, dy, dx, use_l1):
    h, w = mov.shape
    yy = np.clip(np.arange(y0 + dy, y0 + dy + tile), 0, h - 1)
    xx = np.clip(np.arange(x0 + dx, x0 + dx + tile), 0, w - 1)
    d = ref[y0 : y0 + tile, x0 : x0 + tile].astype(np.float64) - mov[np.ix_(yy, xx)]
    return np.abs(d).sum() if use_l1 else (d * d).sum()


def _block_match_ref(ref, mov, oy, ox, stride, tile, cand, radius, use_l1):
    n_ty, n_tx, n_cand = cand.shape[:3]
    disp = np.zeros((n_ty, n_tx, 2), np.int32)
    cost = np.zeros((n_ty, n_tx))
    for ti in range(n_ty):
        for tj in range(n_tx):
            y0, x0 = oy + ti * stride, ox + tj * stride
            costs = [_cost_ref(ref, mov, y0, x0, tile, *cand[ti, tj, k], use_l1) for k in range(n_cand)]
            k = int(np.argmin(costs))  # first of equals
            cy, cx = cand[ti, tj, k]
            window = np.array(
                [
                    [_cost_ref(ref, mov, y0, x0, tile, cy + sy, cx + sx, use_l1) for sx in range(-radius, radius + 1)]
                    for sy in range(-radius, radius + 1)
                ]
            )
            best = window[radius, radius]
            by = bx = 0
            for sy in range(2 * radius + 1):
                for sx in range(2 * radius + 1):
                    if window[sy, sx] < best:
                        best, by, bx = window[sy, sx], sy - radius, sx - radius
            disp[ti, tj] = (cy + by, cx + bx)
            cost[ti, tj] = best
    return disp, cost


@pytest.mark.parametrize("tile, stride, radius, use_l1", [(8, 4, 3, False), (16, 8, 1, True), (6, 3, 2, True), (16, 16, 4, False)])
def test_block_match_matches_numpy(tile, stride, radius, use_l1):
    rng = np.random.default_rng(tile + radius)
    ref = rng.random((40, 52), dtype=np.float32)
    mov = rng.random((40, 52), dtype=np.float32)
    n_ty, n_tx = (40 - tile) // stride + 1, (52 - tile) // stride + 1
    # Candidates pushing tiles partly out of the frame exercise the clamping.
    cand = rng.integers(-6, 7, (n_ty, n_tx, 3, 2)).astype(np.int32)
    cand[:, :, 1] = cand[:, :, 0]  # a duplicate candidate must change nothing
    disp, cost = block_match(ref, mov, 0, 0, stride, tile, cand, radius, use_l1)
    disp_ref, cost_ref = _block_match_ref(ref, mov, 0, 0, stride, tile, cand, radius, use_l1)
    np.testing.assert_array_equal(disp, disp_ref)
    np.testing.assert_allclose(cost, cost_ref, rtol=2e-5)


def test_tile_cost_matches_numpy_inside_and_outside():
    rng = np.random.default_rng(5)
    ref = rng.random((20, 20), dtype=np.float32)
    mov = rng.random((20, 20), dtype=np.float32)
    for dy, dx in [(0, 0), (2, -1), (-5, 3), (9, 9)]:
        for l1 in (True, False):
            np.testing.assert_allclose(
                # int32 shifts, as block_match passes its candidates (one compilation)
                tile_cost(ref, mov, 2, 3, 8, np.int32(dy), np.int32(dx), l1),
                _cost_ref(ref, mov, 2, 3, 8, dy, dx, l1), rtol=1e-5,
            )


@pytest.mark.parametrize("shift", [(3, 0), (-3, 0), (0, 4), (0, -4), (2, -1), (-4, 3), (0, 0)])
@pytest.mark.parametrize("use_l1", [True, False])
def test_known_integer_shift_recovered_exactly(shift, use_l1):
    # Content of reference pixel (y, x) is at (y + dy, x + dx) in the moving image.
    ref = _texture((96, 96))
    mov = np.roll(ref, shift, axis=(0, 1))
    tile, stride = 16, 8
    n = (96 - tile) // stride + 1
    cand = np.zeros((n, n, 1, 2), np.int32)
    disp, _ = block_match(ref, mov, 0, 0, stride, tile, cand, 4, use_l1)
    inner = disp[1:-1, 1:-1]  # away from the wrapped-around border
    assert (inner == np.array(shift, np.int32)).all(), np.unique(inner.reshape(-1, 2), axis=0)


def test_search_is_centred_on_the_cheapest_candidate():
    ref = _texture((64, 64), seed=3)
    mov = np.roll(ref, (7, -6), axis=(0, 1))
    n = (64 - 16) // 8 + 1
    right = np.array([7, -6], np.int32)
    wrong = np.array([-7, 6], np.int32)
    for order in ([wrong, right], [right, wrong]):
        cand = np.broadcast_to(np.stack(order), (n, n, 2, 2)).copy()
        disp, cost = block_match(ref, mov, 0, 0, 8, 16, cand, 1, True)
        assert (disp[1:-1, 1:-1] == right).all()
        assert (cost[1:-1, 1:-1] < 1e-4).all()


def test_search_radius_limits_the_displacement():
    ref = _texture((64, 64), seed=4)
    mov = np.roll(ref, (0, 5), axis=(0, 1))
    n = (64 - 16) // 8 + 1
    cand = np.zeros((n, n, 1, 2), np.int32)
    disp, _ = block_match(ref, mov, 0, 0, 8, 16, cand, 2, True)
    assert np.abs(disp).max() <= 2
    disp, _ = block_match(ref, mov, 0, 0, 8, 16, cand, 0, True)
    assert (disp == 0).all()


def test_reject_outliers_matches_numpy():
    rng = np.random.default_rng(6)
    disp = rng.normal(0, 0.3, (9, 11, 2)).astype(np.float32)
    disp[4, 5] = (6.0, -3.0)
    disp[0, 0, 1] = 4.0
    out = reject_outliers(disp, 1.0)
    med = median_filter(disp, size=(3, 3, 1), mode="nearest")
    bad = (np.abs(disp - med) > 1.0).any(axis=2)
    expected = np.where(bad[..., None], med, disp)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert bad[4, 5] and bad[0, 0]
    assert abs(out[4, 5, 0]) < 1.5 and abs(out[0, 0, 1]) < 1.5


def test_reject_outliers_integer_displacements():
    disp = np.zeros((5, 5, 2), np.int32)
    disp[2, 2] = (5, 5)
    out = reject_outliers(disp, 1.0)
    assert out.dtype == np.int32 and (out == 0).all()
