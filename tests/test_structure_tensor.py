import numpy as np
import pytest
from scipy.ndimage import correlate1d

from mfsr.kernels.separable_filter import separable_filter
from mfsr.kernels.structure_tensor import (
    gaussian_weights,
    kernel_inverse_covariance,
    structure_tensor,
)

# (k_detail, k_denoise, k_stretch, k_shrink, d_th, d_tr, radius_min, radius_max)
SHAPE = (0.3, 4.0, 4.0, 2.0, 0.7, 2.0, 0.05, 3.0)


def _np_taps(sigma):
    r = int(3 * sigma + 0.5)
    if r == 0:
        return np.ones(1)
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return t / t.sum()


def _np_structure_tensor(grey, sigma):
    gy, gx = np.gradient(grey.astype(np.float64))
    prod = np.stack([gy * gy, gy * gx, gx * gx])
    taps = _np_taps(sigma)
    prod = correlate1d(prod, taps, axis=1, mode="nearest")
    return correlate1d(prod, taps, axis=2, mode="nearest")


def _np_inverse_covariance(tensor, intensity, alpha, beta, kd, kn, kst, ksh, dth, dtr, rmin, rmax, ps):
    h, w = intensity.shape
    out = np.zeros((h, w, 3))
    for y in range(h):
        for x in range(w):
            a, b, c = tensor[:, y, x].astype(np.float64)
            vals, vecs = np.linalg.eigh(np.array([[a, b], [b, c]]))
            l2, l1 = max(vals[0], 0.0), max(vals[1], 0.0)
            e1 = vecs[:, 1]
            e2 = np.array([-e1[1], e1[0]])
            aniso = 1 + np.sqrt((l1 - l2) / (l1 + l2)) if l1 + l2 > 1e-30 else 1.0
            thr = max(dtr * np.sqrt(max(alpha * intensity[y, x] + beta, 0)), 1e-6)
            d = np.clip(1 - np.sqrt(l1) / thr + dth, 0, 1)
            k1 = (1 - d) * kd / (ksh * aniso) + d * kd * kn
            k2 = (1 - d) * kd * kst * aniso + d * kd * kn
            k1 = np.clip(k1, rmin, rmax) * ps
            k2 = np.clip(k2, rmin, rmax) * ps
            inv = np.outer(e1, e1) / k1**2 + np.outer(e2, e2) / k2**2
            out[y, x] = inv[0, 0], inv[0, 1], inv[1, 1]
    return out


def _covariance(inv_cov_entry):
    a, b, c = (float(v) for v in inv_cov_entry)
    return np.linalg.inv(np.array([[a, b], [b, c]]))


@pytest.mark.parametrize("sigma", [0.1, 0.8, 1.5])
def test_gaussian_weights_match_numpy(sigma):
    taps = gaussian_weights(sigma)
    np.testing.assert_allclose(taps, _np_taps(sigma), rtol=1e-6, atol=1e-7)
    assert abs(taps.sum() - 1) < 1e-6


@pytest.mark.parametrize("shape, sigma", [((9, 13), 1.0), ((16, 7), 1.5), ((5, 6), 0.1)])
def test_structure_tensor_matches_numpy_twin(shape, sigma):
    grey = np.random.default_rng(0).random(shape).astype(np.float32)
    np.testing.assert_allclose(
        structure_tensor(grey, sigma), _np_structure_tensor(grey, sigma), rtol=1e-5, atol=1e-6
    )


def test_inverse_covariance_matches_numpy_twin():
    rng = np.random.default_rng(1)
    grey = rng.random((12, 10)).astype(np.float32)
    tensor = structure_tensor(grey, 1.0)
    for ps in (1.0, 2.0):
        got = kernel_inverse_covariance(tensor, grey, 0.01, 1e-3, *SHAPE, ps)
        want = _np_inverse_covariance(tensor, grey, 0.01, 1e-3, *SHAPE, ps)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-3)


def test_kernel_long_axis_follows_edges():
    # Horizontal edge (intensity changes along y): the kernel must be long
    # along x and short along y; a vertical edge gives the opposite.
    g = np.zeros((21, 21), np.float32)
    g[11:] = 1.0
    inv = kernel_inverse_covariance(structure_tensor(g, 1.0), g, 0.0, 1e-6, *SHAPE, 1.0)
    cov = _covariance(inv[10, 10])
    vals, vecs = np.linalg.eigh(cov)
    long_axis = vecs[:, 1]
    assert abs(long_axis[1]) > 0.999  # (y, x) order: along x
    assert vals[1] / vals[0] > 10
    inv_t = kernel_inverse_covariance(
        structure_tensor(np.ascontiguousarray(g.T), 1.0), np.ascontiguousarray(g.T), 0.0, 1e-6, *SHAPE, 1.0
    )
    vals_t, vecs_t = np.linalg.eigh(_covariance(inv_t[10, 10]))
    assert abs(vecs_t[0, 1]) > 0.999  # long axis along y


def test_diagonal_edge_gives_diagonal_kernel():
    yy, xx = np.mgrid[0:21, 0:21]
    g = (yy + xx > 20).astype(np.float32)  # edge along the anti-diagonal
    inv = kernel_inverse_covariance(structure_tensor(g, 1.0), g, 0.0, 1e-6, *SHAPE, 1.0)
    vals, vecs = np.linalg.eigh(_covariance(inv[10, 10]))
    long_axis = vecs[:, 1]
    # Along the edge: direction (1, -1) / sqrt(2) in (y, x).
    assert abs(abs(long_axis @ np.array([1, -1]) / np.sqrt(2)) - 1) < 1e-3


def test_flat_noisy_region_gets_wide_isotropic_kernel():
    # Gradients at the noise level: D = 1, radius k_detail * k_denoise.
    rng = np.random.default_rng(2)
    sigma_n = 0.05
    g = (0.5 + sigma_n * rng.standard_normal((40, 40))).astype(np.float32)
    inv = kernel_inverse_covariance(structure_tensor(g, 1.5), g, 0.0, sigma_n**2, *SHAPE, 1.0)
    radius = SHAPE[0] * SHAPE[1]
    cov = _covariance(inv[20, 20])
    np.testing.assert_allclose(np.sqrt(np.linalg.eigvalsh(cov)), [radius, radius], rtol=1e-3)
    # Noise-free model on the same image: the gradients now count as detail.
    inv_clean = kernel_inverse_covariance(structure_tensor(g, 1.5), g, 0.0, 0.0, *SHAPE, 1.0)
    assert np.sqrt(np.linalg.eigvalsh(_covariance(inv_clean[20, 20]))).min() < radius / 4


def test_pixel_scale_scales_covariance():
    g = np.random.default_rng(3).random((8, 8)).astype(np.float32)
    t = structure_tensor(g, 1.0)
    a = kernel_inverse_covariance(t, g, 0.0, 1e-3, *SHAPE, 1.0)
    b = kernel_inverse_covariance(t, g, 0.0, 1e-3, *SHAPE, 2.0)
    np.testing.assert_allclose(b * 4, a, rtol=1e-5)


def test_radii_are_clamped():
    g = np.zeros((9, 9), np.float32)
    g[5:] = 1.0
    # floats, as the fusion passes them (integers would compile the kernel again)
    inv = kernel_inverse_covariance(structure_tensor(g, 1.0), g, 0.0, 0.0, 0.3, 4.0, 100.0, 100.0, 0.0, 1.0, 0.1, 1.5,
                                    1.0)
    radii = np.sqrt(np.linalg.eigvalsh(_covariance(inv[4, 4])))
    np.testing.assert_allclose(radii, [0.1, 1.5], rtol=1e-4)


@pytest.mark.parametrize(
    "shape, sigma", [((3, 70, 90), 1.0), ((2, 9, 4), 2.0), ((1, 5, 300), 0.7)]
)
def test_separable_filter_matches_scipy(shape, sigma):
    # Including taps wider than the image (edge replication on both sides).
    src = np.random.default_rng(12).random(shape).astype(np.float32)
    taps = gaussian_weights(sigma)
    out = separable_filter(src, taps)
    want = correlate1d(src.astype(np.float64), taps.astype(np.float64), axis=1, mode="nearest")
    want = correlate1d(want, taps.astype(np.float64), axis=2, mode="nearest")
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
