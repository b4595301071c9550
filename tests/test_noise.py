"""Tests for mfsr.noise.estimate_noise on frames with what real captures hold besides noise."""

import numpy as np
import pytest

from mfsr.noise import estimate_noise
from mfsr.synth import sample_image, simulate_burst


def _chart(size: int = 768, seed: int = 0) -> np.ndarray:
    """A test-chart scene (like the openISP capture): smooth background, flat
    patches, a textured photo corner and a patch bright enough to saturate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.1 + 0.6 * xx, 0.15 + 0.5 * yy, 0.2 + 0.15 * (xx + yy)], axis=-1)
    n, s = 6, size // 8
    for i in range(n):
        for j in range(n):
            img[s + i * s + 8 : s + (i + 1) * s - 8, s + j * s + 8 : s + (j + 1) * s - 8] = rng.uniform(0.03, 0.95, 3)
    img[: 2 * s, -2 * s :] = sample_image("coffee", size=2 * s)
    img[-s:, s : 3 * s] = 1.6
    return img.astype(np.float32)


def _degrade(frame: np.ndarray) -> np.ndarray:
    """Clip at black and white, add black borders and a noise-free synthetic flat area."""
    f = np.clip(frame, 0.0, 1.0)
    w = f.shape[1]
    f[:, : w // 8] = 0.0
    f[:, -(w // 8) :] = 0.0
    f[20:60, 150:220] = 0.5
    return f


def _var(model, x):
    return model[0] * x + model[1]


@pytest.mark.parametrize("alpha, beta", [(2e-4, 2e-6), (4e-3, 1e-5), (0.0, 1e-4), (1e-3, 0.0)])
def test_estimate_noise_ignores_borders_clipping_and_flat_areas(alpha, beta):
    burst = simulate_burst(_chart(), n_frames=1, scale=2, cfa="RGGB", max_shift=0.0, blur_sigma=0.5,
                           alpha=alpha, beta=beta, seed=2)
    frame = _degrade(burst.frames[0])
    assert np.mean(frame == 0) > 0.2 and np.mean(frame == 1) > 0.01  # the hazards are there
    est = estimate_noise(frame, "RGGB")
    for x in (0.1, 0.5):
        ratio = _var(est, x) / _var((alpha, beta), x)
        assert 0.7 < ratio < 1.3, f"variance at {x}: estimated {est}, true {(alpha, beta)}"
    if alpha * 0.5 > 10 * beta:
        assert est[0] == pytest.approx(alpha, rel=0.3)
    if beta > 10 * alpha * 0.5:
        assert est[1] == pytest.approx(beta, rel=0.3)


def test_estimate_noise_does_not_collapse_on_a_mostly_constant_frame():
    """Most of the frame constant (borders at 0, highlights at 1): the rest still shows the noise."""
    rng = np.random.default_rng(1)
    frame = np.zeros((256, 256), np.float32)
    frame[:, 160:] = 1.0
    frame[:, 60:160] = 0.3 + 0.01 * rng.standard_normal((256, 100))
    alpha, beta = estimate_noise(frame, "GRBG")
    assert _var((alpha, beta), 0.3) == pytest.approx(1e-4, rel=0.2)


def test_estimate_noise_ignores_non_finite_samples():
    rng = np.random.default_rng(2)
    frame = 0.4 + 0.01 * rng.standard_normal((128, 128))
    frame[10:20, 10:20] = np.nan
    frame[50, 50] = np.inf
    est = estimate_noise(frame)
    assert np.isfinite(est).all() and _var(est, 0.4) == pytest.approx(1e-4, rel=0.2)


def test_estimate_noise_floor_is_the_quantisation_of_the_data():
    """A constant frame shows no noise: beta falls to the floor, never to 0; integer
    data cannot have less noise than its own quantisation."""
    alpha, beta = estimate_noise(np.full((64, 64), 0.5, np.float32))
    assert alpha == 0.0 and 0 < beta < 1e-10
    levels = np.random.default_rng(3).integers(100, 110, (64, 64)) * 4 / 1023.0  # 8-bit data in 10-bit words
    levels[:, 32:] = levels[0, 0]  # half constant, half barely varying
    _, beta = estimate_noise(levels.astype(np.float32))
    assert beta >= (4 / 1023.0) ** 2 / 12 * 0.999


def test_estimate_noise_rejects_bad_arguments():
    frame = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="^bins"):
        estimate_noise(frame, bins=0)
    with pytest.raises(ValueError, match="^keep_fraction"):
        estimate_noise(frame, keep_fraction=0.0)
    with pytest.raises(ValueError, match="^frame"):
        estimate_noise(np.zeros((4, 4, 4, 3)))
