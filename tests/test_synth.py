import numpy as np
import pytest
from scipy import ndimage

from mfsr.cfa import PATTERNS, mosaic
from mfsr.synth import (
    SAMPLE_IMAGES,
    _Motion,
    _render_general,
    _render_separable,
    box_sample,
    lowres_shape,
    sample_image,
    simulate_burst,
)
from mfsr.transfer import srgb_to_linear


def _smooth(shape=(96, 128), sigma=4.0, seed=0, rgb=False):
    rng = np.random.default_rng(seed)
    full = shape + ((3,) if rgb else ())
    img = ndimage.gaussian_filter(rng.random(full), (sigma, sigma) + ((0,) if rgb else ()), mode="wrap")
    img = (img - img.min()) / (img.max() - img.min())
    return (0.1 + 0.8 * img).astype(np.float32)


def _random(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# --------------------------------------------------------------------- images


def test_srgb_to_linear_known_values():
    x = np.array([0.0, 0.04045, 0.5, 1.0], np.float32)
    np.testing.assert_allclose(srgb_to_linear(x), [0.0, 0.04045 / 12.92, 0.21404, 1.0], atol=1e-5)


@pytest.mark.parametrize("name", ["astronaut", "camera", "motorcycle_left"])
def test_sample_image_linear_float(name):
    img = sample_image(name, size=64)
    assert img.dtype == np.float32 and img.shape[:2] == (64, 64)
    assert 0.0 <= img.min() and img.max() <= 1.0
    from skimage import data

    if name == "astronaut":
        raw = data.astronaut()
        y0, x0 = (512 - 64) // 2, (512 - 64) // 2
        np.testing.assert_allclose(
            img, srgb_to_linear(raw[y0 : y0 + 64, x0 : x0 + 64] / 255.0), atol=1e-6
        )
    grey = sample_image(name, grey=True, size=32)
    assert grey.shape == (32, 32)


def test_sample_image_names_and_errors():
    assert "astronaut" in SAMPLE_IMAGES and "dead_leaves" in SAMPLE_IMAGES
    with pytest.raises(ValueError, match="name"):
        sample_image("nope")
    dl = sample_image("dead_leaves", size=64, seed=3)
    assert dl.shape == (64, 64, 3) and dl.dtype == np.float32
    np.testing.assert_array_equal(dl, sample_image("dead_leaves", size=64, seed=3))


# --------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cfa", [None, *PATTERNS])
@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0])
def test_shapes_and_dtypes(cfa, scale):
    img = _random((48, 64, 3))
    b = simulate_burst(img, n_frames=3, scale=scale, cfa=cfa, seed=1)
    h, w = lowres_shape((48, 64), scale)
    assert h == int(48 // scale) and w == int(64 // scale)
    assert b.frames.shape == ((3, h, w) if cfa else (3, h, w, 3))
    assert b.frames.dtype == np.float32 and b.flow.dtype == np.float32
    assert b.flow.shape == (3, h, w, 2)
    assert b.ground_truth.shape == (round(h * scale), round(w * scale), 3)
    assert b.cfa == cfa and b.scale == scale and b.motion_mask is None
    np.testing.assert_array_equal(b.flow[0], 0.0)


def test_grey_shapes():
    b = simulate_burst(_random((40, 50)), n_frames=2, scale=2, seed=0)
    assert b.frames.shape == (2, 20, 25) and b.ground_truth.shape == (40, 50)


def test_determinism():
    img = _random((40, 48, 3))
    kw = dict(n_frames=3, scale=2, cfa="GRBG", max_rotation=1.0, alpha=1e-3, beta=1e-4)
    a = simulate_burst(img, seed=5, **kw)
    b = simulate_burst(img, seed=5, **kw)
    c = simulate_burst(img, seed=6, **kw)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.flow, b.flow)
    assert not np.array_equal(a.frames, c.frames)


def test_bad_arguments():
    with pytest.raises(ValueError, match="cfa"):
        simulate_burst(_random((32, 32)), cfa="RGGB")
    with pytest.raises(ValueError, match="cfa"):
        simulate_burst(_random((32, 32, 3)), cfa="XYZW")
    with pytest.raises(ValueError, match="scale"):
        simulate_burst(_random((32, 32)), scale=-1)
    with pytest.raises(ValueError, match="jpeg_quality"):
        simulate_burst(_random((32, 32, 3)), cfa="RGGB", jpeg_quality=90)
    with pytest.raises(TypeError, match="image"):
        simulate_burst(np.zeros((32, 32), np.uint8))


# ------------------------------------------------------------ sensor model


@pytest.mark.parametrize("scale", [2, 3])
def test_reference_is_block_mean(scale):
    img = _random((60, 72, 3))
    b = simulate_burst(img, n_frames=2, scale=scale, reference=1, seed=0)
    h, w = 60 // scale, 72 // scale
    block = img.reshape(h, scale, w, scale, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(b.frames[1], block, atol=1e-6)
    bc = simulate_burst(img, n_frames=2, scale=scale, cfa="BGGR", seed=0)
    np.testing.assert_allclose(bc.frames[0], mosaic(block, "BGGR"), atol=1e-6)


def test_scale_one_reference_is_image():
    img = _random((30, 40))
    b = simulate_burst(img, n_frames=2, scale=1, seed=0)
    np.testing.assert_allclose(b.frames[0], img, atol=1e-6)


def test_non_integer_scale_fractional_areas():
    # scale 1.5: low-res pixel 0 covers high-res pixel 0 fully and half of pixel 1
    img = _random((30, 45))
    b = simulate_burst(img, n_frames=1, scale=1.5, seed=0)
    expect = (img[0, 0] + 0.5 * img[0, 1] + 0.5 * img[1, 0] + 0.25 * img[1, 1]) / 2.25
    np.testing.assert_allclose(b.frames[0, 0, 0], expect, atol=1e-6)
    expect = (0.25 * img[1, 1] + 0.5 * img[1, 2] + 0.5 * img[2, 1] + img[2, 2]) / 2.25
    np.testing.assert_allclose(b.frames[0, 1, 1], expect, atol=1e-6)


def test_integer_shift_sign_convention():
    img = _random((20, 24))
    shifts = np.array([[0.0, 0.0], [1.0, -2.0]])
    b = simulate_burst(img, n_frames=2, scale=1, shifts=shifts, seed=0)
    # frame 1 pixel (i, j) shows reference pixel (i + 1, j - 2) ...
    np.testing.assert_allclose(b.frames[1][:-1, 2:], img[1:, :-2], atol=1e-6)
    # ... so the content of reference pixel (i, j) is at (i - 1, j + 2) in frame 1
    np.testing.assert_allclose(b.flow[1, ..., 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(b.flow[1, ..., 1], 2.0, atol=1e-6)
    assert b.params["path"] == "separable"


def test_half_pixel_shift_at_scale_two():
    img = _random((24, 24))
    b = simulate_burst(img, n_frames=2, scale=2, shifts=[[0, 0], [0.5, 0]], seed=0)
    # half a low-res pixel = one high-res pixel down
    expect = img[1:-1].reshape(11, 2, 12, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(b.frames[1][:11], expect, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0, 3.0])
def test_general_path_matches_separable_for_translation(scale):
    img = _random((60, 66))
    h, w = lowres_shape(img.shape, scale)
    m = _Motion((0.37, -1.21), 0.0, ((h - 1) / 2, (w - 1) / 2))
    a = _render_separable(img, m, scale, slice(0, h), slice(0, w))
    g = _render_general(img, m, scale, np.arange(h), np.arange(w), 2 * int(np.ceil(scale)))
    np.testing.assert_allclose(a, g, atol=1e-5)


def _brute_force_frame(img, motion, scale, h, w, n=32):
    """Plain NumPy reference: n x n point samples of the piecewise-constant
    scene (nearest pixel) over each rotated footprint."""
    out = np.zeros((h, w))
    offs = (np.arange(n) + 0.5) / n - 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    H, W = img.shape
    for oy in offs:
        for ox in offs:
            ry, rx = motion.forward(yy + oy, xx + ox)
            uy = np.floor((ry + 0.5) * scale).astype(int)
            ux = np.floor((rx + 0.5) * scale).astype(int)
            uy = np.where(uy < 0, -1 - uy, np.where(uy >= H, 2 * H - 1 - uy, uy))
            ux = np.where(ux < 0, -1 - ux, np.where(ux >= W, 2 * W - 1 - ux, ux))
            out += img[uy, ux]
    return out / n**2


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_general_path_matches_brute_force_rotation(scale):
    img = _smooth((40, 40), sigma=1.0)
    h, w = lowres_shape(img.shape, scale)
    m = _Motion((0.3, -0.6), 3.0, ((h - 1) / 2, (w - 1) / 2))
    g = _render_general(img, m, scale, np.arange(h), np.arange(w), 8)
    ref = _brute_force_frame(img, m, scale, h, w)
    # brute force is itself a point-sampling approximation (error ~ 1/n)
    np.testing.assert_allclose(g, ref, atol=5e-3)
    # the simulator's default sub-squares (q = ceil(s) within 3 degrees)
    b = simulate_burst(img, n_frames=2, scale=scale, shifts=[[0, 0], [0.3, -0.6]], angles=[0, 3.0])
    assert b.params["q"] == int(np.ceil(scale)) and b.params["path"] == "general"
    np.testing.assert_allclose(b.frames[1], ref, atol=5e-3)
    with pytest.raises(ValueError, match="subsamples"):
        simulate_burst(img, scale=2.0, subsamples=1)


def test_box_sample_exact():
    img = _random((10, 12))
    # a square of side 2 centred between four pixels: their mean
    v = box_sample(img, np.array([4.5]), np.array([6.5]), 2.0)
    np.testing.assert_allclose(v, img[4:6, 6:8].mean(), atol=1e-6)
    # side 1 at a pixel centre: the pixel; side 0.5 at an offset inside a pixel: the pixel
    np.testing.assert_allclose(box_sample(img, np.array([3.0]), np.array([2.0]), 1.0), img[3, 2], atol=1e-6)
    np.testing.assert_allclose(box_sample(img, np.array([3.2]), np.array([1.8]), 0.5), img[3, 2], atol=1e-6)


# ------------------------------------------------------------------- flow


def _warp_to_reference(frame, flow):
    h, w = frame.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return ndimage.map_coordinates(frame, [yy + flow[..., 0], xx + flow[..., 1]], order=3, mode="reflect")


def test_subpixel_translation_flow_on_smooth_image():
    img = _smooth((96, 128), sigma=8.0)
    b = simulate_burst(img, n_frames=4, scale=2, max_shift=2.0, seed=3)
    for k in range(1, 4):
        np.testing.assert_allclose(b.flow[k, ..., 0], -b.params["shifts"][k, 0], atol=1e-6)
        np.testing.assert_allclose(b.flow[k, ..., 1], -b.params["shifts"][k, 1], atol=1e-6)
        warped = _warp_to_reference(b.frames[k], b.flow[k])
        err = np.abs(warped - b.frames[0])[6:-6, 6:-6].max()
        assert err < 2e-3, err
        # the wrong sign must fail
        bad = _warp_to_reference(b.frames[k], -b.flow[k])
        assert np.abs(bad - b.frames[0])[6:-6, 6:-6].max() > 10 * err


def test_rotation_and_warp_flow():
    img = _smooth((128, 160), sigma=8.0)
    b = simulate_burst(img, n_frames=3, scale=2, max_rotation=2.0, local_warp=1.5, seed=4)
    assert b.params["path"] == "general"
    h, w = b.frames.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for k in (1, 2):
        m = _Motion(b.params["shifts"][k], b.params["angles"][k], ((h - 1) / 2, (w - 1) / 2),
                    b.params["warp"][k], (h, w))
        fy, fx = m.forward(yy + b.flow[k, ..., 0], xx + b.flow[k, ..., 1])
        assert max(np.abs(fy - yy).max(), np.abs(fx - xx).max()) < 1e-4
        warped = _warp_to_reference(b.frames[k], b.flow[k])
        err = np.abs(warped - b.frames[0])[8:-8, 8:-8]
        raw = np.abs(b.frames[k] - b.frames[0])[8:-8, 8:-8]
        assert err.max() < 4e-3 and err.mean() < 0.05 * raw.mean()


# ------------------------------------------------------------------ noise


def test_noise_statistics():
    img = np.full((200, 200), 0.4, np.float32)
    alpha, beta = 0.01, 1e-4
    b = simulate_burst(img, n_frames=3, scale=1, alpha=alpha, beta=beta, seed=2)
    x = b.frames[1:].astype(np.float64)
    assert abs(x.mean() - 0.4) < 1e-3
    var = alpha * 0.4 + beta
    assert abs(x.var() / var - 1) < 0.03
    assert b.noise == (alpha, beta)
    # Poisson only: values are multiples of alpha
    p = simulate_burst(img, n_frames=2, scale=1, alpha=alpha, seed=2).frames
    np.testing.assert_allclose(p / alpha, np.round(p / alpha), atol=1e-3)


def test_gaussian_only_noise_not_clipped():
    img = np.full((100, 100), 0.01, np.float32)
    b = simulate_burst(img, n_frames=2, scale=1, beta=1e-3, seed=0)
    assert b.frames.min() < 0
    assert abs(b.frames.std() - np.sqrt(1e-3)) < 1e-3


def test_jpeg():
    img = _smooth((64, 64), rgb=True)
    b = simulate_burst(img, n_frames=2, scale=2, jpeg_quality=50, seed=0)
    clean = simulate_burst(img, n_frames=2, scale=2, seed=0)
    assert b.frames.min() >= 0 and b.frames.max() <= 1
    d = np.abs(b.frames - clean.frames)
    assert 0 < d.mean() < 0.05


# --------------------------------------------------------------- moving object


def test_moving_object_mask_and_effect():
    img = _random((96, 128, 3))
    kw = dict(n_frames=3, scale=2, seed=7)
    b = simulate_burst(img, moving_object=True, **kw)
    c = simulate_burst(img, moving_object=False, **kw)
    m = b.motion_mask
    assert m is not None and m.shape == b.ground_truth.shape[:2] and m.dtype == bool
    assert 0 < m.mean() < 0.3
    assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()
    k = b.params["moving_object"]["frame"]
    assert k == 2
    np.testing.assert_array_equal(b.frames[:k], c.frames[:k])
    diff = np.abs(b.frames[k] - c.frames[k]).max(axis=-1) > 0
    assert diff.any()
    # every changed frame pixel lies inside the mask (mapped to the output grid)
    iy, ix = np.nonzero(diff)
    ry = iy - b.flow[k, iy, ix, 0]
    rx = ix - b.flow[k, iy, ix, 1]
    oy = np.clip(np.round((ry + 0.5) * 2 - 0.5).astype(int), 0, m.shape[0] - 1)
    ox = np.clip(np.round((rx + 0.5) * 2 - 0.5).astype(int), 0, m.shape[1] - 1)
    assert m[oy, ox].all()


def test_moving_object_with_blur_and_cfa():
    img = _random((96, 128, 3))
    b = simulate_burst(img, n_frames=2, scale=1.5, cfa="RGGB", moving_object=True, blur_sigma=1.0, seed=1)
    assert b.motion_mask.any() and b.frames.shape == (2, 64, 85)
