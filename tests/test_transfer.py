import numpy as np

from mfsr.transfer import linear_to_srgb, srgb_to_linear


def test_srgb_round_trip_and_known_values():
    v = np.linspace(-0.1, 1.2, 1001).astype(np.float32)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(v)), v, atol=2e-6)
    # mid-grey: sRGB 0.5 is 21.4 % linear light
    assert abs(float(srgb_to_linear(np.float32(0.5))) - 0.21404) < 1e-4
    assert abs(float(linear_to_srgb(np.float32(1.0))) - 1.0) < 1e-6
