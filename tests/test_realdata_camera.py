"""Real captures from ../shared/data: a real Bayer mosaic and a real handheld burst.

Skipped, with the reason, when the shared data folder is absent. Nothing from
it is copied into the repository.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from mfsr import FusionParams, fuse, register
from mfsr.baselines import single_frame_upscale
from mfsr.held_out import held_out_psnr
from mfsr.metrics import psnr
from mfsr.raw_io import read_headerless
from mfsr.synth import simulate_burst

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPENISP = DATA / "bayer_openisp" / "openISP_test_1920x1080_RGGB_10bit_u16le.RAW"
HDRPLUS = DATA / "hdrplus_burst"

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real capture not found: {path} (the ../shared/data folder is absent)")


def test_openisp_multi_frame_demosaicking_beats_single_frame():
    """Bursts re-mosaicked from a real sensor image: fusion vs bilinear demosaicking."""
    _need(OPENISP)
    m = read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB").mosaic
    # Full-colour truth without demosaicking: each RGGB cell gives one RGB pixel.
    truth = np.stack([m[0::2, 0::2], (m[0::2, 1::2] + m[1::2, 0::2]) / 2, m[1::2, 1::2]], axis=-1)
    gains, refined = [], []
    for (y, x), noise in [((100, 300), (0.0, 0.0)), ((250, 600), (2e-4, 2e-6))]:
        scene = truth[y : y + 192, x : x + 192]
        # shifts and rotation at sensor resolution (scale 1), then the RGGB mosaic again
        burst = simulate_burst(scene, n_frames=8, scale=1, cfa="RGGB", max_shift=2.0, max_rotation=0.5,
                               blur_sigma=0.3, alpha=noise[0], beta=noise[1], seed=1)
        default = fuse(burst.frames, scale=1, cfa="RGGB")
        fused = default.image
        plain = fused - default.refinement
        single = single_frame_upscale(burst.frames[0], 1, cfa="RGGB")
        gains.append(psnr(fused, burst.ground_truth, crop=8) - psnr(single, burst.ground_truth, crop=8))
        refined.append(psnr(fused, burst.ground_truth, crop=8) - psnr(plain, burst.ground_truth, crop=8))
    print(f"openISP multi-frame demosaicking gain over bilinear: {gains[0]:.2f} dB clean, {gains[1]:.2f} dB noisy; "
          f"refinement vs plain fusion {refined[0]:+.2f} / {refined[1]:+.2f} dB")
    assert min(gains) > 3.0
    # real sensor texture: the default refinement must not make it worse
    assert min(refined) >= -0.1


@pytest.fixture(scope="module")
def hdrplus():
    _need(HDRPLUS)
    from mfsr.image_io import read_frames

    frames, infos = read_frames([HDRPLUS])  # 8-bit JPEG: read through the inverse sRGB curve
    assert infos[0].transfer == "srgb" and frames.shape == (7, 1200, 1600, 3)
    return frames[:, 300:900, 400:1200]  # the centre, for speed


@pytest.fixture(scope="module")
def hdrplus_flow(hdrplus):
    return register(hdrplus, reference=0)


def test_hdrplus_registration_finds_the_hand_shake(hdrplus, hdrplus_flow):
    """Independent check by phase correlation: before our flow the frames are off by up to
    a few pixels; after warping each frame with our flow, no global shift above 0.1 px is left."""
    from skimage.registration import phase_cross_correlation

    grey = hdrplus.mean(axis=3)
    h, w = grey.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inner = (slice(32, h - 32), slice(32, w - 32))
    before, after = [], []
    for k in range(1, len(grey)):
        shift, _, _ = phase_cross_correlation(grey[0][inner], grey[k][inner], upsample_factor=100)
        before.append(np.hypot(*shift))
        f = hdrplus_flow[k]
        warped = map_coordinates(grey[k], [yy + f[..., 0], xx + f[..., 1]], order=3, mode="nearest")
        shift, _, _ = phase_cross_correlation(grey[0][inner], warped[inner], upsample_factor=100)
        after.append(np.abs(shift).max())
    print("hdrplus global shift before (px):", np.round(before, 2), "residual after:", np.round(after, 3))
    assert max(before) > 1.0  # the hand shake is real
    assert max(after) <= 0.1


@pytest.mark.parametrize("scale", [1, 2])
def test_hdrplus_defaults_never_predict_a_held_out_frame_worse_than_doing_less(hdrplus, hdrplus_flow, scale):
    """Fuse 6 frames; re-degraded to frame 7's geometry, every default must predict frame 7
    at least as well as the plain fusion without sharpening (0.05 dB tolerance), and all of
    them better than the reference frame upsampled."""
    flow6 = hdrplus_flow[:6]
    scores = {}
    for name, params, refine in (("default", None, True), ("fused", None, False),
                                 ("fused, no sharpening", FusionParams(sharpen_amount=0), False)):
        hr = fuse(hdrplus[:6], scale=scale, reference=0, flow=flow6, params=params, refine=refine).image
        scores[name] = held_out_psnr(hr, hdrplus_flow[6], hdrplus[6], scale)
    base = single_frame_upscale(hdrplus[0], scale)
    scores["reference upsampled"] = held_out_psnr(base, hdrplus_flow[6], hdrplus[6], scale)
    print(f"held-out frame PSNR at scale {scale} (dB):", {k: round(v, 2) for k, v in scores.items()})
    for name in ("default", "fused", "fused, no sharpening"):
        assert scores[name] > scores["reference upsampled"] + 0.3
    assert scores["fused"] >= scores["fused, no sharpening"] - 0.05  # the sharpening does no harm
    assert scores["default"] >= scores["fused"] - 0.05  # nor does the refinement


def _black_share(linear: np.ndarray) -> float:
    """Share of pixels with a channel at 8-bit sRGB level 0 once written (clipped, encoded, rounded)."""
    from mfsr.transfer import linear_to_srgb

    levels = np.round(255 * linear_to_srgb(np.clip(linear, 0, 1)))
    return float((levels.min(axis=-1) == 0).mean())


@pytest.mark.parametrize("scale", [1, 2])
def test_hdrplus_default_crushes_no_shadows(hdrplus, hdrplus_flow, scale):
    """The default fusion writes no more black pixels than the reference frame (2x + 0.1 %)."""
    out = fuse(hdrplus, scale=scale, reference=0, flow=hdrplus_flow).image
    ref = _black_share(hdrplus[0])
    print(f"black share at scale {scale}: fused {100 * _black_share(out):.3f} %, reference {100 * ref:.3f} %")
    assert _black_share(out) <= 2 * ref + 1e-3


def test_openisp_noise_estimate_is_a_few_dn():
    """The noise of the real mosaic (black borders, clipped chart paper, 8-bit data in
    10-bit words) is a few digital numbers, as flat chart patches show."""
    from mfsr.noise import estimate_noise

    _need(OPENISP)
    m = read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB").mosaic
    alpha, beta = estimate_noise(m, "RGGB")
    sigma = lambda x: np.sqrt(alpha * x + beta) * 1023  # noqa: E731 - DN at normalised level x
    print(f"openISP noise: alpha {alpha:.3g}, beta {beta:.3g}; sigma {sigma(0.2):.2f} DN at 0.2, "
          f"{sigma(0.5):.2f} DN at 0.5")
    assert 3.0 < sigma(0.5) < 15.0 and 1.5 < sigma(0.2) < 10.0
    # A flat grey chart patch, measured on its own (second-difference residual of the
    # green sites): the model agrees within the patch's own unevenness.
    patch = m[830:890, 570:630][0::2, 1::2].astype(np.float64)
    hp = (patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:]) / 4 - patch[1:-1, 1:-1]
    measured = hp.std() / np.sqrt(1.25) * 1023  # this filter's gain on white noise
    assert 0.6 < sigma(patch.mean()) / measured < 1.5, (sigma(patch.mean()), measured)


def test_openisp_grey_world_development_has_no_cast():
    """A headerless dump has no white balance: developing it balances by grey world
    instead of leaving the sensor's cyan cast."""
    from mfsr.camera import develop, resolve_white_balance
    from mfsr.cfa import demosaic_bilinear

    _need(OPENISP)
    frame = read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB")
    rgb = demosaic_bilinear(frame.mosaic, "RGGB")
    gains, source = resolve_white_balance(rgb, frame)
    assert source == "grey world"
    means = np.clip(develop(rgb, frame), 0, 1).reshape(-1, 3).mean(axis=0)
    cast = np.clip(develop(rgb, frame, white_balance=(1, 1, 1)), 0, 1).reshape(-1, 3).mean(axis=0)
    print(f"openISP grey-world gains {np.round(gains, 3)}; channel means {np.round(means, 3)} "
          f"(unit gains: {np.round(cast, 3)})")
    assert np.ptp(cast) / cast.max() > 0.2  # the cast is real
    assert np.ptp(means) / means.max() < 0.1
