"""Real captures from ../shared/data: a real Bayer mosaic and a real handheld burst.

Skipped, with the reason, when the shared data folder is absent. Nothing from
it is copied into the repository.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates, uniform_filter

from mfsr import FusionParams, fuse, register
from mfsr.baselines import single_frame_upscale
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
    gains = []
    for (y, x), noise in [((100, 300), (0.0, 0.0)), ((250, 600), (2e-4, 2e-6))]:
        scene = truth[y : y + 192, x : x + 192]
        # shifts and rotation at sensor resolution (scale 1), then the RGGB mosaic again
        burst = simulate_burst(scene, n_frames=8, scale=1, cfa="RGGB", max_shift=2.0, max_rotation=0.5,
                               blur_sigma=0.3, alpha=noise[0], beta=noise[1], seed=1)
        fused = fuse(burst.frames, scale=1, cfa="RGGB").image
        single = single_frame_upscale(burst.frames[0], 1, cfa="RGGB")
        gains.append(psnr(fused, burst.ground_truth, crop=8) - psnr(single, burst.ground_truth, crop=8))
    print(f"openISP multi-frame demosaicking gain over bilinear: {gains[0]:.2f} dB clean, {gains[1]:.2f} dB noisy")
    assert min(gains) > 3.0


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


def _predict_frame(hr: np.ndarray, flow: np.ndarray, scale: int) -> np.ndarray:
    """Re-degrade a high-res image to the geometry of the frame whose flow is ``flow``."""
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ry, rx = yy.copy(), xx.copy()
    for _ in range(5):  # invert the flow: frame pixel q shows reference point r with r + f(r) = q
        ry = yy - map_coordinates(flow[..., 0], [ry, rx], order=1, mode="nearest")
        rx = xx - map_coordinates(flow[..., 1], [ry, rx], order=1, mode="nearest")
    # pixel integration over one low-res pixel, then sampling at its centre
    box = uniform_filter(hr, size=(scale, scale, 1), mode="nearest")
    off = (scale - 1) / 2 + (0.5 if scale % 2 == 0 else 0.0)
    pos = [scale * ry + off, scale * rx + off]
    return np.stack([map_coordinates(box[..., c], pos, order=3, mode="nearest") for c in range(3)], -1)


def test_hdrplus_held_out_frame_is_predicted_better_by_the_fusion(hdrplus, hdrplus_flow):
    """Fuse 6 frames at scale 2; re-degraded to frame 7's geometry, the fusion must predict
    frame 7 better than the reference frame upsampled and warped the same way."""
    flow6 = hdrplus_flow[:6]
    scores = {}
    for name, params, refine in (("fused", None, False), ("fused, no sharpening", FusionParams(sharpen_amount=0), False),
                                 ("fused + refinement", None, True)):
        hr = fuse(hdrplus[:6], scale=2, reference=0, flow=flow6, params=params, refine=refine).image
        scores[name] = psnr(_predict_frame(hr, hdrplus_flow[6], 2), hdrplus[6], crop=16)
    base = single_frame_upscale(hdrplus[0], 2)
    scores["reference upsampled"] = psnr(_predict_frame(base, hdrplus_flow[6], 2), hdrplus[6], crop=16)
    print("held-out frame PSNR (dB):", {k: round(v, 2) for k, v in scores.items()})
    assert scores["fused"] > scores["reference upsampled"] + 0.3
    assert scores["fused, no sharpening"] > scores["reference upsampled"] + 0.3
    # the network was trained on simulated bursts only: on a real one it must
    # stay consistent with a frame it never saw
    assert scores["fused + refinement"] > scores["reference upsampled"] + 0.3
