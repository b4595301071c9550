import numpy as np
import pytest
from scipy import ndimage

from mfsr.pixel_area import (
    apply_separable,
    area_weights,
    block_mean,
    box_sample,
    centre_coordinates,
    reflect_index,
)


def test_reflect_index_is_scipy_reflect():
    n = 5
    m = np.arange(-12, 13)
    signal = np.arange(n, dtype=np.float64)
    expect = ndimage.map_coordinates(signal, [m.astype(np.float64)], order=0, mode="reflect")
    np.testing.assert_array_equal(signal[reflect_index(m, n)], expect)


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0, 3.0, 0.75])
def test_area_weights_rows_sum_to_one(scale):
    idx, wts = area_weights(7, 20, scale, shift=0.3)
    assert idx.shape == wts.shape and wts.dtype == np.float32
    assert idx.min() >= 0 and idx.max() < 20
    np.testing.assert_allclose(wts.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("s", [2, 3])
def test_integer_area_weights_are_the_block_mean(s):
    img = np.random.default_rng(0).random((4 * s + 1, 5 * s + 1)).astype(np.float32)
    iy, wy = area_weights(4, img.shape[0], s)
    ix, wx = area_weights(5, img.shape[1], s)
    np.testing.assert_allclose(apply_separable(img, iy, wy, ix, wx), block_mean(img, s), atol=1e-6)


def test_block_mean_keeps_channels():
    img = np.random.default_rng(1).random((9, 8, 3)).astype(np.float32)
    out = block_mean(img, 2)
    assert out.shape == (4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], img[2:4, 4:6].mean(axis=(0, 1)), atol=1e-6)


def test_box_sample_of_a_pixel_square_is_the_pixel():
    img = np.random.default_rng(2).random((6, 7)).astype(np.float32)
    cy, cx = np.mgrid[0:6, 0:7].astype(np.float64)
    np.testing.assert_allclose(box_sample(img, cy, cx, 1.0), img, atol=1e-6)


def test_centre_coordinates_share_the_grid_edges():
    c = centre_coordinates(6, 3.0)
    # output pixel i covers input [(i / s) - 0.5, ((i + 1) / s) - 0.5]
    np.testing.assert_allclose(c[0] - 0.5 / 3.0, -0.5)
    np.testing.assert_allclose(c[-1] + 0.5 / 3.0, 1.5)
    np.testing.assert_allclose(centre_coordinates(4, 1.0), np.arange(4))
