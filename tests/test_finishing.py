"""mfsr.finishing, mfsr.sharpness and mfsr.report."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mfsr.finishing import apply_orientation, finish
from mfsr.report import comparison_picture, detail_crop, difference_map, flow_overview, flow_picture
from mfsr.sharpness import sharpest_frame
from mfsr.synth import sample_image


def test_finish_matches_numpy_reference():
    rng = np.random.default_rng(0)
    cam = rng.random((6, 7, 3)).astype(np.float32)
    wb = np.array([2.0, 1.0, 1.5])
    cm = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]])
    out = finish(cam, wb_multipliers=wb, color_matrix=cm, exposure=1.0)
    expected = np.einsum("ij,yxj->yxi", cm, cam * wb) * 2.0
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    # neutral camera values (the white balance's grey) come out neutral
    grey = np.ones((1, 1, 3), np.float32) / wb.astype(np.float32)
    np.testing.assert_allclose(finish(grey, wb_multipliers=wb, color_matrix=cm)[0, 0], 1.0, rtol=1e-5)


def test_soft_tone_keeps_hue_and_maps_white_point_to_one():
    rgb = np.array([[[4.0, 4.0, 4.0], [0.01, 0.02, 0.03], [8.0, 4.0, 2.0]]], np.float32)
    out = finish(rgb, tone="soft")
    np.testing.assert_allclose(out[0, 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], rgb[0, 1], rtol=0.05)  # shadows nearly linear
    np.testing.assert_allclose(out[0, 2] / out[0, 2, 1], [2.0, 1.0, 0.5], rtol=1e-5)
    ramp = np.linspace(0, 10, 50, dtype=np.float32)[None, :, None].repeat(3, 2)
    assert np.all(np.diff(finish(ramp, tone="soft")[0, :, 0]) > 0)


def test_finish_sharpen_and_errors():
    img = np.random.default_rng(1).random((20, 20, 3)).astype(np.float32)
    luma = img @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    detail = luma - gaussian_filter(luma, 1.0, mode="nearest")
    np.testing.assert_allclose(finish(img, sharpen=0.5), img + 0.5 * detail[..., None], atol=1e-5)
    for kwargs, name in [({"tone": "hdr"}, "tone"), ({"sharpen": -1}, "sharpen"),
                         ({"wb_multipliers": (1, -1, 1)}, "wb_multipliers"),
                         ({"color_matrix": np.eye(2)}, "color_matrix")]:
        with pytest.raises(ValueError, match=name):
            finish(img, **kwargs)
    with pytest.raises(ValueError, match="image"):
        finish(img[..., 0])


@pytest.mark.parametrize("code", range(1, 9))
def test_orientation_matches_pil(code):
    from PIL import Image, ImageOps

    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    im = Image.fromarray(a)
    im.getexif()[0x0112] = code
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(apply_orientation(a, code), expected)


def test_sharpest_frame_skips_blurred_frames():
    img = sample_image("camera", size=96)
    sharp = img
    blurred = gaussian_filter(img, 1.5)
    frames = np.stack([blurred, blurred * 1.2, sharp, sharp])  # brightness must not matter
    assert sharpest_frame(frames) == 2
    assert sharpest_frame(frames, candidates=2) in (0, 1)
    assert sharpest_frame(frames[:1]) == 0
    with pytest.raises(ValueError, match="candidates"):
        sharpest_frame(frames, candidates=0)


def test_report_pictures():
    a = np.zeros((40, 60, 3), np.float32)
    b = a.copy()
    b[10:20, 10:20] = 0.5
    diff, limit = difference_map(b, a)
    assert diff.dtype == np.uint8 and diff.shape == (40, 60, 3)
    assert np.all(diff[0, 0] == 255)  # unchanged -> white
    assert diff[15, 15, 0] == 255 and diff[15, 15, 2] == 0  # brighter -> red
    assert limit > 0
    y, x, size = detail_crop(b, 16)
    assert size == 16 and y <= 10 < y + 16 and x <= 10 < x + 16
    pic = comparison_picture([("a", a), ("b", b), ("diff", diff)], crop=(y, x, size), zoom=1, max_width=90)
    assert pic.dtype == np.uint8 and pic.ndim == 3
    flow = np.zeros((3, 20, 30, 2), np.float32)
    flow[1, ..., 1] = 1.0  # motion to +x is red
    pic = flow_picture(flow[1])
    assert pic[5, 5, 0] == 255 and pic[5, 5, 1] < 128
    assert np.all(flow_picture(flow[0], max_norm=1.0) == 255)  # no motion -> white
    assert flow_overview(flow, columns=2).shape[2] == 3
