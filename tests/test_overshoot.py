"""kernels/overshoot.py against its NumPy twin."""

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

from mfsr.kernels.overshoot import limit_overshoot


def limit_overshoot_ref(image: np.ndarray, source: np.ndarray, overshoot: float) -> np.ndarray:
    """NumPy twin: clamp to the source's 3x3 range (borders clipped), widened by overshoot."""
    lo = minimum_filter(source, size=(3, 3, 1), mode="nearest")
    hi = maximum_filter(source, size=(3, 3, 1), mode="nearest")
    margin = overshoot * (hi - lo)
    floor = lo - margin
    floor = np.where(lo >= 0, np.maximum(floor, (1 - min(overshoot, 1.0)) * lo), floor)
    return np.minimum(np.maximum(image, floor), hi + margin)


@pytest.mark.parametrize("overshoot", [0.0, 0.25, 1.0, 3.0])
def test_limit_overshoot_matches_numpy(overshoot):
    rng = np.random.default_rng(3)
    source = rng.uniform(-0.1, 1.0, (17, 23, 3)).astype(np.float32)
    source[:, :8] *= 0.02  # shadows beside bright content
    image = (source + rng.normal(0, 0.5, source.shape)).astype(np.float32)
    expected = limit_overshoot_ref(image, source, overshoot)
    out = image.copy()
    limit_overshoot(out, source, overshoot)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_limit_overshoot_keeps_shadows_and_passes_what_is_inside():
    source = np.zeros((5, 5, 1), np.float32)
    source[:, 2:] = 1.0
    source[:, :2] = 0.01  # a dark side beside an edge
    image = source.copy()
    image[:, 1] = -0.5  # an undershoot that would crush the shadow
    image[:, 2] = 0.5  # inside its neighbourhood's range: untouched
    limit_overshoot(image, source, 0.25)
    assert (image[:, 1] >= 0.75 * 0.01 - 1e-7).all()
    np.testing.assert_array_equal(image[:, 2], 0.5)
