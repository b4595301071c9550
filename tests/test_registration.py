"""Public registration API: conventions, validation, streaming, accuracy."""

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from mfsr.cfa import mosaic
from mfsr.registration import (
    ReferencePyramid,
    RegistrationParams,
    TileMotion,
    align_frame,
    dense_flow,
    flow_irregularity,
    prepare_reference,
    register,
    registration_image,
)


def _texture(shape, sigma=2.0, seed=0):
    img = gaussian_filter(np.random.default_rng(seed).random(shape), sigma, mode="wrap")
    return (0.1 + 0.8 * (img - img.min()) / np.ptp(img)).astype(np.float32)


def _shift(img, shift):
    # Exact shift of a periodic band-limited image; content moves by +shift.
    axes = tuple(range(len(shift)))
    spec = fourier_shift(np.fft.fftn(img, axes=axes), shift + (0,) * (img.ndim - len(shift)))
    return np.fft.ifftn(spec, axes=axes).real.astype(np.float32)


def _colour_texture(shape, seed=0):
    # Natural-like colour: a shared luminance texture with weaker chroma.
    base = _texture(shape, seed=seed)[..., None] * np.array([0.7, 0.9, 0.6], np.float32)
    chroma = np.stack([_texture(shape, seed=seed + 10 + c) for c in range(3)], axis=-1)
    return (0.8 * base + 0.2 * chroma).astype(np.float32)


def _interior_median(flow, crop=16):
    return np.median(flow[crop:-crop, crop:-crop].reshape(-1, 2), axis=0)


# -- conventions -------------------------------------------------------------


@pytest.mark.parametrize("shift", [(2.5, -1.25), (-3.0, 0.4), (0.0, 3.7), (-0.3, -2.2)])
def test_flow_sign_convention_grey(shift):
    ref = _texture((128, 128))
    frames = np.stack([ref, _shift(ref, shift)])
    flow = register(frames)
    assert flow.shape == (2, 128, 128, 2) and flow.dtype == np.float32
    assert (flow[0] == 0).all()
    # Content of reference pixel (i, j) is at (i + dy, j + dx) in frame 1.
    np.testing.assert_allclose(_interior_median(flow[1]), shift, atol=0.02)


@pytest.mark.parametrize("shift", [(3.0, -2.0), (1.0, 1.0), (-1.5, 2.5), (0.6, -0.3)])
def test_flow_sign_convention_and_units_cfa(shift):
    # Displacements are in raw mosaic pixels, whatever the grey grid.
    rgb = _colour_texture((128, 128))
    frames = np.stack([mosaic(rgb, "GBRG"), mosaic(_shift(rgb, shift), "GBRG")])
    flow = register(frames, cfa="gbrg")
    assert flow.shape == (2, 128, 128, 2)
    np.testing.assert_allclose(_interior_median(flow[1]), shift, atol=0.03)


def test_rgb_input_and_negative_reference():
    rgb = _colour_texture((96, 96), seed=1)
    frames = [_shift(rgb, (1.5, -2.0)), rgb]
    flow = register(frames, reference=-1)
    assert (flow[1] == 0).all()
    # Frame 0 holds the content shifted by (1.5, -2) relative to the reference.
    np.testing.assert_allclose(_interior_median(flow[0]), (1.5, -2.0), atol=0.03)


def test_rotation_gives_smooth_flow_without_seams():
    # A small rotation about the centre: the flow must follow the affine
    # field smoothly (bilinear between tile centres), not step per tile.
    h = w = 160
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    th = np.deg2rad(0.5)
    c = (h - 1) / 2
    from scipy.ndimage import map_coordinates

    hr = _texture((h, w), sigma=2.0, seed=3).astype(np.float64)
    # Frame samples the scene at R (p - c) + c: content of p moves to R^-1 (p - c) + c.
    sy = np.cos(th) * (yy - c) - np.sin(th) * (xx - c) + c
    sx = np.sin(th) * (yy - c) + np.cos(th) * (xx - c) + c
    moved = map_coordinates(hr, [sy, sx], order=3, mode="grid-wrap").astype(np.float32)
    ty = np.cos(th) * (yy - c) + np.sin(th) * (xx - c) + c - yy
    tx = -np.sin(th) * (yy - c) + np.cos(th) * (xx - c) + c - xx
    flow = register([hr.astype(np.float32), moved])[1]
    err = np.hypot(flow[..., 0] - ty, flow[..., 1] - tx)[20:-20, 20:-20]
    assert np.median(err) < 0.05
    # No seams: the flow's second differences stay tiny everywhere inside.
    d2 = np.abs(np.diff(flow[20:-20, 20:-20], 2, axis=1)).max()
    assert d2 < 0.02


# -- API shape and streaming -------------------------------------------------


def test_streaming_api_matches_register():
    ref = _texture((96, 128), seed=4)
    frames = np.stack([ref, _shift(ref, (1.2, 0.7)), _shift(ref, (-2.6, 3.1))])
    flow = register(frames)
    pyr = prepare_reference(frames[0])
    assert isinstance(pyr, ReferencePyramid) and pyr.grid_factor == 1
    buf = np.empty((96, 128, 2), np.float32)
    for k in (1, 2):
        motion = align_frame(pyr, frames[k])
        assert isinstance(motion, TileMotion)
        ty, tx = motion.centres
        assert motion.displacements.shape == (ty.size, tx.size, 2)
        out = dense_flow(motion, (96, 128), out=buf)
        assert out is buf
        np.testing.assert_array_equal(out, flow[k])


def test_tile_motion_geometry_cfa():
    raw = mosaic(_colour_texture((128, 96), seed=2), "RGGB")
    motion = align_frame(prepare_reference(raw, "RGGB"), raw)
    assert motion.grid_factor == 2
    assert motion.tile_size == 16 and motion.stride == 8
    ty, tx = motion.centres
    assert ty[0] == pytest.approx(motion.centre_y) and np.allclose(np.diff(ty), 8)
    assert ty[-1] + 7.5 < 64 and tx[-1] + 7.5 < 48  # tiles lie in the 64x48 grey image
    np.testing.assert_allclose(motion.displacements, 0, atol=1e-4)


@pytest.mark.parametrize(
    "shape, cfa",
    [((32, 32), None), ((8, 8), None), ((2, 2), None), ((4, 4), "RGGB"), ((8, 12), "BGGR"), ((17, 33), None)],
)
def test_small_images_work(shape, cfa):
    ref = _texture(shape, sigma=1.0, seed=5)
    frames = np.stack([ref, np.roll(ref, 1, axis=1)])
    flow = register(frames, cfa=cfa)
    assert flow.shape == (2,) + shape + (2,)
    assert np.isfinite(flow).all()


def test_small_32x32_recovers_shift():
    ref = _texture((32, 32), sigma=1.5, seed=6)
    flow = register([ref, _shift(ref, (1.4, -0.8))])
    np.testing.assert_allclose(_interior_median(flow[1], crop=8), (1.4, -0.8), atol=0.05)


def test_single_frame_gives_zero_flow():
    flow = register(_texture((40, 40))[None])
    assert flow.shape == (1, 40, 40, 2) and not flow.any()


def test_identical_frames_give_zero_flow():
    ref = _texture((64, 64), seed=7)
    flow = register([ref, ref.copy(), ref.copy()])
    np.testing.assert_allclose(flow, 0, atol=1e-4)


# -- validation --------------------------------------------------------------


def test_register_validates_input_naming_the_argument():
    good = _texture((32, 32))
    bad = good.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="^frames"):
        register([good, bad])
    with pytest.raises(ValueError, match="^cfa"):
        register([good, good], cfa="XYZW")
    with pytest.raises(ValueError, match="^reference"):
        register([good, good], reference=2)
    with pytest.raises(TypeError, match="^frames"):
        register([good.astype(np.uint8)] * 2)
    with pytest.raises(TypeError, match="^params"):
        register([good, good], params={"tile_size": 8})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tile_size": 15}, "tile_size"),
        ({"coarse_tile_size": 0}, "coarse_tile_size"),
        ({"search_radius": -1}, "search_radius"),
        ({"factors": (2, 2)}, "factors"),
        ({"lk_interpolation": "nearest"}, "lk_interpolation"),
        ({"lk_tolerance": 0.0}, "lk_tolerance"),
        ({"prefilter_sigma": -1.0}, "prefilter_sigma"),
        ({"max_uncertainty": float("nan")}, "max_uncertainty"),
        ({"lk_window": 2.0}, "lk_window"),
        ({"smoothing_threshold": 0}, "smoothing_threshold"),
    ],
)
def test_params_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        RegistrationParams(**kwargs)


def test_align_frame_validation():
    pyr = prepare_reference(_texture((32, 32)))
    with pytest.raises(ValueError, match="^frame"):
        align_frame(pyr, np.zeros((32, 33), np.float32))
    with pytest.raises(TypeError, match="^reference"):
        align_frame(np.zeros((32, 32)), np.zeros((32, 32)))
    motion = align_frame(pyr, _texture((32, 32)))
    with pytest.raises(ValueError, match="^out"):
        dense_flow(motion, (32, 32), out=np.empty((32, 32, 2), np.float64))


def test_registration_image_kinds():
    rng = np.random.default_rng(8)
    raw = rng.random((6, 9)).astype(np.float32)
    grey = registration_image(raw, "RGGB")
    assert grey.shape == (3, 4)
    np.testing.assert_allclose(grey[1, 2], raw[2:4, 4:6].mean(), rtol=1e-6)
    rgb = rng.random((5, 7, 3))
    np.testing.assert_allclose(registration_image(rgb, None), rgb.mean(axis=2), rtol=1e-6)
    assert registration_image(rgb, None).dtype == np.float32
    np.testing.assert_array_equal(registration_image(raw, None), raw)
    with pytest.raises(ValueError, match="^frame"):
        registration_image(rgb, "RGGB")
    with pytest.raises(ValueError, match="^cfa"):
        registration_image(raw, "RGB")
    with pytest.raises(ValueError, match="^frame"):
        registration_image(np.zeros((4, 4, 2)), None)


# -- flow irregularity -------------------------------------------------------


def test_flow_irregularity():
    disp = np.zeros((6, 8, 2), np.float32)
    disp[:, 4:, 1] = 0.6  # a 0.6 px motion step between tile columns 3 and 4
    disp[0, 0, 0] = -0.2
    motion = TileMotion(7.5, 7.5, 8, 16, 2, disp)
    spread = flow_irregularity(motion)
    assert spread.shape == (6, 8) and spread.dtype == np.float32
    np.testing.assert_allclose(spread[3, [3, 4]], 1.2)  # in input (raw) px
    np.testing.assert_allclose(spread[3, [0, 1, 6, 7]], 0.0)
    np.testing.assert_allclose(spread[1, 1], 0.4)


# -- accuracy on simulated bursts ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cfa", [None, "RGGB"])
@pytest.mark.parametrize("noise, limit", [((0.0, 0.0), 0.05), ((2e-3, 1e-5), 0.1)])
def test_accuracy_on_simulated_burst(cfa, noise, limit):
    synth = pytest.importorskip("mfsr.synth")
    img = synth.sample_image("astronaut", grey=cfa is None, size=512)
    burst = synth.simulate_burst(
        img, n_frames=8, scale=2.0, cfa=cfa, max_shift=4.0, max_rotation=0.5,
        alpha=noise[0], beta=noise[1], seed=1,
    )
    flow = register(burst.frames, cfa=cfa)
    err = np.hypot(*(flow - burst.flow)[1:, 16:-16, 16:-16].transpose(3, 0, 1, 2))
    assert np.median(err) < limit, np.median(err)
