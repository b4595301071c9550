"""mfsr.held_out: re-degrading a fusion to a held-out frame's geometry."""

import numpy as np
import pytest
from scipy.ndimage import map_coordinates, uniform_filter

from mfsr.cfa import mosaic
from mfsr.held_out import frame_centres, held_out_psnr, predict_frame


def _predict_frame_ref(hr: np.ndarray, flow: np.ndarray, scale: int) -> np.ndarray:
    """NumPy twin: invert the flow, integrate over one low-res pixel, sample at its centre."""
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ry, rx = yy.copy(), xx.copy()
    for _ in range(5):  # frame pixel q shows reference point r with r + f(r) = q
        ry = yy - map_coordinates(flow[..., 0], [ry, rx], order=1, mode="nearest")
        rx = xx - map_coordinates(flow[..., 1], [ry, rx], order=1, mode="nearest")
    box = uniform_filter(hr, size=(scale, scale, 1), mode="nearest")
    off = (scale - 1) / 2 + (0.5 if scale % 2 == 0 else 0.0)
    pos = [scale * ry + off, scale * rx + off]
    return np.stack([map_coordinates(box[..., c], pos, order=3, mode="nearest") for c in range(hr.shape[2])], -1)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_predict_frame_matches_numpy(scale):
    rng = np.random.default_rng(scale)
    flow = rng.uniform(-0.4, 0.4, (20, 24, 2)).astype(np.float32)
    hr = rng.random((20 * scale, 24 * scale, 3)).astype(np.float32)
    np.testing.assert_allclose(predict_frame(hr, flow, scale), _predict_frame_ref(hr, flow, scale), atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_a_block_image_predicts_its_frame_exactly(scale):
    """With no motion, each frame pixel is the mean of its own scale x scale block."""
    rng = np.random.default_rng(0)
    frame = rng.random((12, 10)).astype(np.float32)
    hr = np.kron(frame, np.ones((scale, scale), np.float32))
    flow = np.zeros((12, 10, 2), np.float32)
    c = frame_centres(flow, scale)
    np.testing.assert_allclose(c[3, 4], [3 * scale + (scale - 1) / 2, 4 * scale + (scale - 1) / 2])
    np.testing.assert_allclose(predict_frame(hr, flow, scale), frame, atol=1e-5)
    assert held_out_psnr(hr, flow, frame, scale, crop=1) > 90


def test_a_shifted_frame_is_found_through_its_flow():
    """Frame content at reference pixel r lies at r + flow: the prediction follows it."""
    rng = np.random.default_rng(1)
    big = uniform_filter(rng.random((80, 80)), 5).astype(np.float32)
    ref, frame = big[10:50, 10:50], big[11:51, 10:50]  # frame shows reference row r at r - 1
    flow = np.zeros((40, 40, 2), np.float32)
    flow[..., 0] = -1.0
    assert held_out_psnr(ref, flow, frame, 1, crop=4) > held_out_psnr(ref, np.zeros_like(flow), frame, 1, crop=4) + 10


def test_mosaic_prediction_takes_each_sites_channel():
    rng = np.random.default_rng(2)
    rgb = rng.random((16, 18, 3)).astype(np.float32)
    flow = np.zeros((16, 18, 2), np.float32)
    np.testing.assert_allclose(predict_frame(rgb, flow, 1, cfa="GRBG"), mosaic(rgb, "GRBG"), atol=1e-6)


def test_bad_arguments_are_named():
    flow = np.zeros((8, 8, 2), np.float32)
    with pytest.raises(ValueError, match="scale"):
        predict_frame(np.zeros((12, 12)), flow, 1.5)
    with pytest.raises(ValueError, match="flow"):
        predict_frame(np.zeros((8, 8)), np.zeros((8, 8)), 1)
    with pytest.raises(ValueError, match="frame"):
        held_out_psnr(np.zeros((8, 8)), flow, np.zeros((7, 8)), 1)


def test_blur_fitted_score_finds_the_optics_blur():
    """A frame seen through a blur is predicted best by the sharp scene with that blur fitted,
    while the plain score prefers the blurred (optical) image."""
    from scipy.ndimage import gaussian_filter

    from mfsr.held_out import blur_fitted_psnr

    rng = np.random.default_rng(4)
    scene = gaussian_filter(rng.random((96, 96)), 0.8).astype(np.float32)
    optical = gaussian_filter(scene, 1.0, mode="nearest").astype(np.float32)
    flow = np.zeros((48, 48, 2), np.float32)
    frame = predict_frame(optical, flow, 2)
    assert held_out_psnr(optical, flow, frame, 2) > held_out_psnr(scene, flow, frame, 2) + 3
    score, blur = blur_fitted_psnr(scene, flow, frame, 2)
    assert blur == 1.0 and score > held_out_psnr(scene, flow, frame, 2) + 3
    np.testing.assert_allclose(predict_frame(scene, flow, 2, blur=1.0), frame, atol=1e-6)
    with pytest.raises(ValueError, match="blur"):
        predict_frame(scene, flow, 2, blur=-1.0)
