from dataclasses import replace

import numpy as np
import pytest

from mfsr.baselines import single_frame_upscale
from mfsr.cfa import mosaic
from mfsr.fusion import FusionParams, FusionResult, fuse, sharpen_gain
from mfsr.metrics import psnr
from mfsr.noise import estimate_noise
from mfsr.synth import sample_image, simulate_burst

CROP = 8
# Realistic handheld settings: shifts up to 3 low-res px, rotations up to
# 0.5 degrees, optical blur 0.5 high-res px.
SIM = dict(n_frames=8, max_shift=3.0, max_rotation=0.5, blur_sigma=0.5)


def _gain(burst, **kw):
    """PSNR gain of the kernel fusion (no learned refinement) over one frame upscaled."""
    res = fuse(burst.frames, scale=burst.scale, cfa=burst.cfa, refine=False, **kw)
    base = single_frame_upscale(burst.frames[burst.reference], burst.scale, cfa=burst.cfa)
    mask = kw.pop("_mask", None)
    return (
        psnr(res.image, burst.ground_truth, crop=CROP, valid=mask)
        - psnr(base, burst.ground_truth, crop=CROP, valid=mask)
    ), res


# --- API and validation -----------------------------------------------------


@pytest.mark.parametrize(
    "shape, cfa, scale, out_shape",
    [
        ((3, 20, 24), None, 2.0, (40, 48)),
        ((3, 20, 24, 3), None, 1.5, (30, 36, 3)),
        ((3, 20, 24), "GRBG", 1.0, (20, 24, 3)),
        ((2, 21, 23), "RGGB", 0.5, (10, 12, 3)),
    ],
)
def test_result_shapes_and_types(shape, cfa, scale, out_shape):
    rng = np.random.default_rng(0)
    frames = rng.random(shape).astype(np.float32)
    flow = np.zeros(shape[:3] + (2,), np.float32)
    flow[1:] = rng.uniform(-1, 1, (shape[0] - 1, 1, 1, 2))
    res = fuse(frames, scale=scale, cfa=cfa, flow=flow, reference=0, noise=(0.0, 1e-4))
    assert isinstance(res, FusionResult)
    assert res.image.shape == out_shape and res.image.dtype == np.float32
    assert res.confidence.shape == out_shape[:2] and res.confidence.dtype == np.float32
    assert res.flow.shape == shape[:3] + (2,) and res.flow.dtype == np.float32
    assert np.isfinite(res.image).all() and (res.confidence > 0).all()
    assert res.scale == scale and res.cfa == cfa and res.reference == 0
    assert res.noise == (0.0, 1e-4)


@pytest.mark.parametrize("cfa, shape", [(None, (4, 16, 18)), (None, (4, 16, 18, 3)), ("BGGR", (4, 16, 18))])
def test_constant_scene_is_reproduced_exactly(cfa, shape):
    rgb = np.array([0.2, 0.5, 0.8], np.float32)
    if cfa is not None:
        frames = np.stack([mosaic(np.broadcast_to(rgb, shape[1:] + (3,)), cfa)] * shape[0])
        want = rgb
    elif len(shape) == 4:
        frames = np.broadcast_to(rgb, shape).copy()
        want = rgb
    else:
        frames = np.full(shape, 0.3, np.float32)
        want = 0.3
    flow = np.random.default_rng(1).uniform(-2, 2, shape[:3] + (2,)).astype(np.float32)
    flow[0] = 0
    res = fuse(frames, scale=1.7, cfa=cfa, flow=flow, refine=False)
    np.testing.assert_allclose(res.image, np.broadcast_to(want, res.image.shape), atol=1e-5)


def test_single_frame_identity_at_scale_one():
    frame = np.random.default_rng(2).random((24, 30)).astype(np.float32)
    params = FusionParams(k_detail=0.1, k_stretch=1.0, k_shrink=1.0, radius_min=0.05, sharpen_amount=0.0)
    res = fuse(frame[None], scale=1.0, params=params, noise=(0.0, 0.0), refine=False)
    np.testing.assert_allclose(res.image, frame, atol=1e-5)
    assert res.flow.shape == (1, 24, 30, 2) and not res.flow.any()


def test_sequence_input_and_negative_reference():
    rng = np.random.default_rng(3)
    frames = [rng.random((12, 14)).astype(np.float32) for _ in range(3)]
    flow = np.zeros((3, 12, 14, 2), np.float32)
    res = fuse(frames, reference=-1, flow=flow, scale=1.0)
    assert res.reference == 2


def test_confidence_grows_with_frames():
    rng = np.random.default_rng(4)
    frames = np.repeat(rng.random((1, 16, 16)).astype(np.float32), 4, axis=0)
    flow = np.zeros((4, 16, 16, 2), np.float32)
    one = fuse(frames[:1], scale=2.0, flow=flow[:1], noise=(0.0, 1e-4))
    four = fuse(frames, scale=2.0, flow=flow, noise=(0.0, 1e-4))
    np.testing.assert_allclose(four.confidence, 4 * one.confidence, rtol=1e-4)


def test_invalid_arguments_name_the_argument():
    frames = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="^scale"):
        fuse(frames, scale=0)
    with pytest.raises(TypeError, match="^scale"):
        fuse(frames, scale="x")
    with pytest.raises(ValueError, match="^cfa"):
        fuse(frames, cfa="XYZW")
    with pytest.raises(ValueError, match="^reference"):
        fuse(frames, reference=5)
    with pytest.raises(ValueError, match="^frames"):
        fuse(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="^flow"):
        fuse(frames, flow=np.zeros((2, 8, 8), np.float32))
    bad = np.zeros((2, 8, 8, 2), np.float32)
    bad[0] = 0.5
    with pytest.raises(ValueError, match="^flow.*reference"):
        fuse(frames, flow=bad)
    with pytest.raises(ValueError, match="^noise"):
        fuse(frames, noise=(-1.0, 0.0), flow=np.zeros((2, 8, 8, 2)))
    with pytest.raises(TypeError, match="^noise"):
        fuse(frames, noise=0.1, flow=np.zeros((2, 8, 8, 2)))
    with pytest.raises(TypeError, match="^params"):
        fuse(frames, params={"k_detail": 0.3}, flow=np.zeros((2, 8, 8, 2)))


def test_progress_bar_runs(capsys):
    frames = np.random.default_rng(5).random((2, 10, 10)).astype(np.float32)
    res = fuse(frames, flow=np.zeros((2, 10, 10, 2), np.float32), progress=True)
    assert res.image.shape == (20, 20)
    assert "fuse" in capsys.readouterr().err


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        FusionParams().k_detail = 1.0


# --- noise model -----------------------------------------------------------


@pytest.mark.parametrize("cfa", [None, "RGGB"])
@pytest.mark.parametrize("alpha, beta", [(0.0, 1e-4), (4e-3, 1e-5)])
def test_estimate_noise_recovers_model(cfa, alpha, beta):
    img = sample_image("coffee", grey=cfa is None, size=256)
    frame = mosaic(img, cfa) if cfa else img
    rng = np.random.default_rng(6)
    noisy = frame + rng.standard_normal(frame.shape) * np.sqrt(alpha * frame + beta)
    a, b = estimate_noise(noisy.astype(np.float32), cfa)
    # Texture leaks into the high-pass residual: the estimate errs high.
    for x in (0.1, 0.5):
        assert 0.6 < (a * x + b) / (alpha * x + beta) < 2.0


def test_estimate_noise_of_flat_frame():
    rng = np.random.default_rng(7)
    frame = 0.4 + 0.01 * rng.standard_normal((128, 128))
    a, b = estimate_noise(frame)
    assert abs(a * 0.4 + b - 1e-4) < 1.5e-5
    with pytest.raises(ValueError, match="^frame"):
        estimate_noise(np.zeros((4, 4, 3)), "RGGB")


# --- quality on simulated bursts ------------------------------------------
# Gains over mfsr.baselines.single_frame_upscale of the reference frame (PSNR,
# 8 px border cropped); thresholds sit below the measured values
# (see the fusion module notes).


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_bayer_scale1_beats_demosaicking(name):
    burst = simulate_burst(sample_image(name, size=144), scale=1.0, cfa="RGGB", seed=1, **SIM)
    gain, _ = _gain(burst, flow=burst.flow)
    assert gain > 3.0


@pytest.mark.slow
def test_bayer_scale2_beats_upscaling():
    burst = simulate_burst(sample_image("coffee", size=288), scale=2.0, cfa="RGGB", seed=2, **SIM)
    gain, _ = _gain(burst, flow=burst.flow)
    assert gain > 2.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_grey_scale2_beats_upscaling(name):
    burst = simulate_burst(sample_image(name, grey=True, size=288), scale=2.0, seed=3, **SIM)
    gain, _ = _gain(burst, flow=burst.flow)
    assert gain > 0.8


@pytest.mark.slow
def test_noisy_bayer_is_denoised():
    img = sample_image("astronaut", size=144)
    burst = simulate_burst(img, scale=1.0, cfa="RGGB", alpha=4e-3, beta=2e-4, seed=4, **SIM)
    gain, res = _gain(burst, flow=burst.flow)
    assert gain > 3.5
    alpha, beta = res.noise  # estimated from the reference frame
    assert 0.5 < (alpha * 0.3 + beta) / (4e-3 * 0.3 + 2e-4) < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("cfa, scale", [("RGGB", 1.0), (None, 2.0)])
def test_moving_object_does_not_ghost(cfa, scale):
    img = sample_image("astronaut", grey=cfa is None, size=int(144 * scale))
    burst = simulate_burst(img, scale=scale, cfa=cfa, moving_object=True, seed=5, **SIM)
    base = single_frame_upscale(burst.frames[0], scale, cfa=cfa)
    res = fuse(burst.frames, scale=scale, cfa=cfa, flow=burst.flow)
    m = burst.motion_mask
    assert psnr(res.image, burst.ground_truth, crop=CROP, valid=m) >= psnr(base, burst.ground_truth, crop=CROP, valid=m)
    # Without robustness the moved patch ghosts into the merge.
    off = replace(FusionParams(), robustness_t=0.0, robustness_s=1e9, robustness_s_irregular=1e9)
    ghost = fuse(burst.frames, scale=scale, cfa=cfa, flow=burst.flow, params=off)
    p_res = psnr(res.image, burst.ground_truth, crop=CROP, valid=m)
    assert psnr(ghost.image, burst.ground_truth, crop=CROP, valid=m) < p_res - (1.0 if cfa else 0.0)
    # The frame with the moved object (the last one) is the most rejected.
    assert res.robustness[-1] < res.robustness[1:-1].min()


@pytest.mark.slow
def test_default_path_registers_the_burst():
    burst = simulate_burst(sample_image("astronaut", size=144), scale=1.0, cfa="RGGB", seed=1, **SIM)
    gain, res = _gain(burst)
    assert gain > 3.0
    err = np.abs(res.flow - burst.flow)[:, 8:-8, 8:-8]
    assert np.median(err) < 0.1
    assert not res.flow[burst.reference].any()


def test_refine_adds_the_network_correction_and_reports_it():
    from mfsr.synth import sample_image, simulate_burst

    burst = simulate_burst(sample_image("astronaut", size=96), n_frames=4, scale=2, cfa="RGGB", seed=0)
    plain = fuse(burst.frames, scale=2, cfa="RGGB", flow=burst.flow, refine=False)
    refined = fuse(burst.frames, scale=2, cfa="RGGB", flow=burst.flow, refine=True)
    assert plain.refinement is None
    assert refined.image.shape == plain.image.shape and refined.image.dtype == np.float32
    np.testing.assert_allclose(refined.image - refined.refinement, plain.image, atol=1e-5)
    assert np.abs(refined.refinement).max() > 1e-3  # the network did change something


def test_shipped_refinement_improves_a_held_out_photo_and_uses_a_given_blur():
    """Quality guard on the shipped weights (held-out photo, 128 px crop)."""
    from mfsr.metrics import psnr
    from mfsr.synth import sample_image, simulate_burst

    motion = dict(n_frames=8, max_shift=2.0, max_rotation=0.5, alpha=2e-4, beta=2e-6, seed=0)
    burst = simulate_burst(sample_image("astronaut", size=128), scale=2, cfa="RGGB", blur_sigma=0.5, **motion)
    fused, refined = (psnr(fuse(burst.frames, scale=2, cfa="RGGB", refine=r).image, burst.ground_truth, crop=8)
                      for r in (False, True))
    assert refined > fused + 1.0


def test_grey_frames_at_scale_one_are_not_over_sharpened():
    """Grey frames fused at scale 1 share the output's pixel area: there is no
    integration blur to undo, and the unsharp mask that suits scale 2 would
    over-sharpen a sharp lens's burst by several dB."""
    from mfsr.metrics import psnr
    from mfsr.synth import sample_image, simulate_burst

    burst = simulate_burst(sample_image("astronaut", grey=True, size=128), scale=1, blur_sigma=0.0, n_frames=8,
                           max_shift=2.0, max_rotation=0.5, alpha=2e-4, beta=2e-6, seed=0)
    default = fuse(burst.frames, scale=1)
    assert default.refinement is not None and not default.refinement.any()  # off by default there
    everywhere = fuse(burst.frames, scale=1, flow=default.flow, refine=False,
                      params=FusionParams(sharpen_full_scale=1.0))
    assert psnr(default.image, burst.ground_truth, crop=8) > psnr(everywhere.image, burst.ground_truth, crop=8) + 3.0
    assert sharpen_gain(FusionParams(), 1.0, None) == 0.0
    assert sharpen_gain(FusionParams(), 1.0, "RGGB") == FusionParams().sharpen_amount
    assert sharpen_gain(FusionParams(), 2.0, None) == FusionParams().sharpen_amount
    assert 0 < sharpen_gain(FusionParams(), 1.5, None) < FusionParams().sharpen_amount
    with pytest.raises(ValueError, match="sharpen_overshoot"):
        FusionParams(sharpen_overshoot=-1)
    with pytest.raises(ValueError, match="sharpen_amount"):
        FusionParams(sharpen_amount=float("nan"))


def test_refinement_is_the_default_within_its_trained_scales():
    from mfsr.synth import sample_image, simulate_burst

    burst = simulate_burst(sample_image("astronaut", size=64), n_frames=3, scale=2, cfa="RGGB", seed=0)
    assert fuse(burst.frames, scale=2, cfa="RGGB", flow=burst.flow).refinement is not None
    # below the trained range: plain fusion and a warning that says why
    with pytest.warns(UserWarning, match="refine: the refinement network is trained for scales 1 to 4"):
        res = fuse(burst.frames, scale=0.5, cfa="RGGB", flow=burst.flow)
    assert res.refinement is None and res.image.shape == (16, 16, 3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"k_detail": 0.0}, "k_detail"),
        ({"k_denoise": -1.0}, "k_denoise"),
        ({"k_stretch": float("inf")}, "k_stretch"),
        ({"k_shrink": "1"}, "k_shrink"),
        ({"d_th": float("nan")}, "d_th"),
        ({"d_tr": 0}, "d_tr"),
        ({"radius_min": -0.1}, "radius_min"),
        ({"radius_max": 0.05}, "radius_max"),
        ({"tensor_sigma": -1.0}, "tensor_sigma"),
        ({"robustness_t": float("nan")}, "robustness_t"),
        ({"robustness_s": 0.0}, "robustness_s"),
        ({"robustness_s_irregular": True}, "robustness_s_irregular"),
        ({"robustness_mean_taps": (0.5, 0.5)}, "robustness_mean_taps"),
        ({"robustness_mean_taps": (1.0, 1.0, 1.0)}, "robustness_mean_taps"),
        ({"robustness_mean_taps": "box"}, "robustness_mean_taps"),
        ({"robustness_sigma_gain": 0.0}, "robustness_sigma_gain"),
        ({"irregularity_threshold": 0.0}, "irregularity_threshold"),
        ({"irregularity_cell": 0}, "irregularity_cell"),
        ({"irregularity_cell": 8.0}, "irregularity_cell"),
        ({"min_filter": 4}, "min_filter"),
        ({"fallback_radius": 0.0}, "fallback_radius"),
        ({"min_weight": 0.0}, "min_weight"),
        ({"sharpen_amount": -0.1}, "sharpen_amount"),
        ({"sharpen_sigma": float("inf")}, "sharpen_sigma"),
        ({"sharpen_noise_gate": float("inf")}, "sharpen_noise_gate"),
        ({"sharpen_overshoot": float("nan")}, "sharpen_overshoot"),
        ({"sharpen_full_scale": 0.0}, "sharpen_full_scale"),
    ],
)
def test_params_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        FusionParams(**kwargs)


def test_params_accept_the_documented_limits():
    assert FusionParams() == FusionParams(**{f: getattr(FusionParams(), f) for f in FusionParams.__dataclass_fields__})
    p = FusionParams(robustness_mean_taps=[1 / 3, 1 / 3, 1 / 3], irregularity_threshold=float("inf"),
                     sharpen_overshoot=float("inf"), sharpen_amount=0, tensor_sigma=0.0, min_filter=1,
                     radius_max=FusionParams().radius_min)
    assert isinstance(p.robustness_mean_taps, tuple)
    hash(p)
