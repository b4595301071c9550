"""Global masked co-registration and radiometry of passes."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

from mfsr.geo.coregister import estimate_shift
from mfsr.geo.radiometry import fit_linear, masked_noise, working_range
from mfsr.synth import sample_image

M = 12


def _scene(seed=0):
    img = sample_image("camera", grey=True, size=224).astype(np.float64)
    return img[: 120 + 2 * M, : 130 + 2 * M]


@pytest.mark.parametrize("features", ["gradient", "intensity"])
@pytest.mark.parametrize("true", [(0.3, -0.7), (1.6, 0.45), (-1.25, -1.9), (0.0, 0.0)])
def test_estimate_shift_known_shift_with_clouds_and_gain(true, features):
    big = _scene()
    h, w = big.shape[0] - 2 * M, big.shape[1] - 2 * M
    ref = big[M:M + h, M:M + w].astype(np.float32)
    # Content of reference pixel (i, j) at (i + dy, j + dx) of the pass.
    mov = nd_shift(big, true, order=3, mode="nearest") * 1.3 + 0.05
    yy, xx = np.mgrid[: mov.shape[0], : mov.shape[1]]
    cloud = (yy - 60) ** 2 + (xx - 70) ** 2 < 28**2
    mov[cloud] = 50.0  # a bright cloud that the mask removes
    ref_valid = np.ones(ref.shape, bool)
    ref_valid[:30, :40] = False  # and a cloud on the reference
    ref = np.where(ref_valid, ref, 30.0).astype(np.float32)
    est = estimate_shift([ref], [ref_valid], [mov.astype(np.float32)], [~cloud], M, features=features)
    np.testing.assert_allclose(est.shift, true, atol=0.02)
    # The fit's gain maps the pass onto the reference (gradients scale alike).
    assert est.gain == pytest.approx(1 / 1.3, rel=0.02)
    if features == "intensity":
        assert est.offset == pytest.approx(-0.05 / 1.3, abs=0.01)
    assert est.n_pixels > 5000


def test_estimate_shift_multiple_windows_and_noise():
    rng = np.random.default_rng(1)
    big = _scene()
    true = (0.37, -0.61)
    mov = nd_shift(big, true, order=3, mode="nearest") + 0.01 * rng.standard_normal(big.shape)
    h, w = big.shape[0] - 2 * M, big.shape[1] - 2 * M
    ref = (big + 0.01 * rng.standard_normal(big.shape))[M:M + h, M:M + w]
    halves = [(slice(0, h // 2), slice(0, h // 2 + 2 * M)), (slice(h // 2, h), slice(h // 2, h + 2 * M))]
    refs, movs = [], []
    for (a, b) in halves:
        refs.append(ref[a].astype(np.float32))
        movs.append(mov[b].astype(np.float32))
    est = estimate_shift(refs, [np.ones(r.shape, bool) for r in refs], movs,
                         [np.ones(m.shape, bool) for m in movs], M)
    np.testing.assert_allclose(est.shift, true, atol=0.03)
    assert np.all(est.std < 0.05)


def test_estimate_shift_without_common_clear_pixels_raises():
    big = _scene().astype(np.float32)
    h, w = big.shape[0] - 2 * M, big.shape[1] - 2 * M
    with pytest.raises(ValueError, match="clear"):
        estimate_shift([big[M:M + h, M:M + w]], [np.zeros((h, w), bool)], [big], [np.ones(big.shape, bool)], M)
    with pytest.raises(ValueError, match="features"):
        estimate_shift([big], [np.ones(big.shape, bool)], [big], [np.ones(big.shape, bool)], M, features="edges")


def test_fit_linear_ignores_outliers():
    rng = np.random.default_rng(2)
    x = rng.random(2000)
    y = 0.8 * x + 0.1 + 0.001 * rng.standard_normal(x.size)
    y[:100] = 5.0  # unmasked cloud
    g, o = fit_linear(y, x, np.ones(x.size))
    assert g == pytest.approx(0.8, abs=0.01) and o == pytest.approx(0.1, abs=0.005)
    assert fit_linear(y, x, np.zeros(x.size)) == (1.0, 0.0)
    g, o = fit_linear(1.0 - x, x, np.ones(x.size))  # inverted contrast: means only
    assert g == 1.0 and o == pytest.approx(np.mean(1.0 - x) - np.mean(x))


def test_masked_noise_recovers_sigma_and_ignores_masked():
    rng = np.random.default_rng(3)
    img = gaussian_filter(rng.random((200, 200)), 8) + 0.02 * rng.standard_normal((200, 200))
    valid = np.ones(img.shape, bool)
    valid[:, :60] = False
    img[:, :60] = rng.random((200, 60))  # wild values where masked
    a, b = masked_noise([img.astype(np.float32)], [valid])
    assert a == 0.0 and np.sqrt(b) == pytest.approx(0.02, rel=0.1)


def test_working_range_and_empty_reference():
    data = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    valid = np.ones((10, 10), bool)
    valid[0] = False
    lo, hi = working_range([data], [valid], q=0.0)
    assert lo[0] == 10 and hi[0] == 99
    with pytest.raises(ValueError, match="reference"):
        working_range([data], [np.zeros((10, 10), bool)])
