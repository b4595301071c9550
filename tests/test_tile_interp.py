"""Dense interpolation of tile fields and tile-field smoothing."""

import numpy as np
import pytest

from mfsr.kernels.tile_interp import interpolate_tiles, smooth_tiles


def _interp_ref(field, cy, cx, stride, factor, scale, h, w):
    n_ty, n_tx, _ = field.shape
    gy = ((np.arange(h) + 0.5) / factor - 0.5 - cy) / stride
    gx = ((np.arange(w) + 0.5) / factor - 0.5 - cx) / stride
    gy = np.clip(gy, 0, n_ty - 1)
    gx = np.clip(gx, 0, n_tx - 1)
    out = np.empty((h, w, field.shape[2]))
    for c in range(field.shape[2]):
        # Separable linear interpolation along x, then y.
        rows = np.stack([np.interp(gx, np.arange(n_tx), field[i, :, c]) for i in range(n_ty)])
        out[..., c] = np.stack([np.interp(gy, np.arange(n_ty), rows[:, j]) for j in range(w)], axis=1)
    return out * scale


def _run(field, cy, cx, stride, factor, scale, h, w):
    out = np.empty((h, w, field.shape[2]), np.float32)
    interpolate_tiles(field, cy, cx, stride, factor, scale, out)
    return out


@pytest.mark.parametrize("factor", [1, 2])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_interpolate_tiles_matches_numpy(factor, channels):
    field = np.random.default_rng(channels).normal(size=(5, 7, channels)).astype(np.float32)
    args = (field, 7.5, 5.5, 8.0, factor, float(factor), 37 * factor + 1, 61 * factor - 1)
    np.testing.assert_allclose(_run(*args), _interp_ref(*args), rtol=1e-5, atol=1e-5)


def test_affine_field_is_reproduced_exactly_between_centres():
    # A field affine in the tile-centre coordinates (rotation + zoom +
    # translation) interpolates to the same affine map at every pixel
    # between the outermost centres: no seams.
    n_ty, n_tx, stride, c0y, c0x = 6, 8, 8.0, 7.5, 7.5
    A = np.array([[0.004, -0.0087], [0.0087, 0.004]])
    t = np.array([1.25, -3.5])
    cy = c0y + stride * np.arange(n_ty)
    cx = c0x + stride * np.arange(n_tx)
    pts = np.stack(np.meshgrid(cy, cx, indexing="ij"), axis=-1)
    field = (pts @ A.T + t).astype(np.float32)
    for factor in (1, 2):
        h, w = int((cy[-1] + 6) * factor), int((cx[-1] + 6) * factor)
        dense = _run(field, c0y, c0x, stride, factor, float(factor), h, w)
        yy = (np.arange(h) + 0.5) / factor - 0.5
        xx = (np.arange(w) + 0.5) / factor - 0.5
        iy = (yy >= cy[0]) & (yy <= cy[-1])
        ix = (xx >= cx[0]) & (xx <= cx[-1])
        g = np.stack(np.meshgrid(yy[iy], xx[ix], indexing="ij"), axis=-1)
        expected = factor * (g @ A.T + t)
        np.testing.assert_allclose(dense[np.ix_(iy, ix)], expected, atol=2e-5)
        # Constant beyond the outermost centres: the first row takes the
        # values on the line through the first row of centres.
        edge = np.stack(np.broadcast_arrays(cy[0], xx[ix]), axis=-1)
        np.testing.assert_allclose(dense[0, ix], factor * (edge @ A.T + t), atol=2e-5)


def test_single_tile_gives_constant_field():
    field = np.array([[[0.75, -1.5]]], np.float32)
    out = _run(field, 7.5, 7.5, 8.0, 2, 2.0, 20, 30)
    np.testing.assert_allclose(out, np.broadcast_to([1.5, -3.0], (20, 30, 2)))


def _smooth_ref(disp, radius, thr):
    n_ty, n_tx = disp.shape[:2]
    out = np.empty_like(disp, dtype=np.float64)
    for i in range(n_ty):
        ry = min(radius, i, n_ty - 1 - i)
        for j in range(n_tx):
            rx = min(radius, j, n_tx - 1 - j)
            c = disp[i, j].astype(np.float64)
            acc, n = c.copy(), 1
            for a in range(-ry, ry + 1):
                for b in range(-rx, rx + 1):
                    if (a, b) <= (0, 0):
                        continue
                    p, q = disp[i + a, j + b], disp[i - a, j - b]
                    if np.abs(p - c).max() <= thr and np.abs(q - c).max() <= thr:
                        acc += p + q
                        n += 2
            out[i, j] = acc / n
    return out


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_smooth_tiles_matches_numpy(radius):
    rng = np.random.default_rng(radius)
    disp = rng.normal(0, 0.4, (7, 9, 2)).astype(np.float32)
    disp[3, 4] += 3.0  # an outlier: left out of its neighbours' averages
    np.testing.assert_allclose(smooth_tiles(disp, radius, 0.8), _smooth_ref(disp, radius, 0.8), atol=1e-6)


def test_smooth_tiles_keeps_affine_fields_and_boundaries():
    yy, xx = np.meshgrid(np.arange(8.0), np.arange(10.0), indexing="ij")
    affine = np.stack([0.3 + 0.07 * yy - 0.05 * xx, -1.0 + 0.05 * yy + 0.07 * xx], -1).astype(np.float32)
    np.testing.assert_allclose(smooth_tiles(affine, 2, 0.5), affine, atol=1e-5)
    step = np.zeros((8, 10, 2), np.float32)
    step[:, 5:] = 2.0
    np.testing.assert_array_equal(smooth_tiles(step, 2, 0.5), step)
