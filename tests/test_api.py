"""The public surface: mfsr.fuse / mfsr.register contracts and their input errors."""

import numpy as np
import pytest

import mfsr

RNG = np.random.default_rng(0)
GREY = RNG.random((3, 24, 28)).astype(np.float32)
RGB = RNG.random((3, 24, 28, 3)).astype(np.float32)


def _nan_burst(value):
    b = GREY.copy()
    b[1, 5, 5] = value
    return b


BAD_INPUTS = [
    ("wrong ndim", dict(frames=GREY[0]), ValueError, "^frames: expected shape"),
    ("5-D", dict(frames=RGB[..., None]), ValueError, "^frames: expected shape"),
    ("different shapes", dict(frames=[GREY[0], GREY[1, :20]]), ValueError, r"^frames\[1\]: shape"),
    ("empty array", dict(frames=np.zeros((0, 8, 8), np.float32)), ValueError, "^frames: empty"),
    ("empty list", dict(frames=[]), ValueError, "^frames: empty"),
    ("NaN", dict(frames=_nan_burst(np.nan)), ValueError, "^frames: NaN or infinite"),
    ("inf", dict(frames=_nan_burst(np.inf)), ValueError, "^frames: NaN or infinite"),
    ("unknown CFA", dict(frames=GREY, cfa="RGBG"), ValueError, "^cfa: unknown CFA pattern"),
    ("CFA on RGB", dict(frames=RGB, cfa="RGGB"), ValueError, "^cfa:"),
    ("reference too large", dict(frames=GREY, reference=3), ValueError, "^reference: index 3"),
    ("reference too small", dict(frames=GREY, reference=-4), ValueError, "^reference"),
]


@pytest.mark.parametrize("case, kwargs, exc, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("function", [mfsr.fuse, mfsr.register], ids=["fuse", "register"])
def test_bad_input_names_the_argument(function, case, kwargs, exc, message):
    kwargs = dict(kwargs)
    frames = kwargs.pop("frames")
    with pytest.raises(exc, match=message):
        function(frames, **kwargs)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan")])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="^scale"):
        mfsr.fuse(GREY, scale=scale)


@pytest.mark.parametrize("psf_sigma, exc", [(-0.5, ValueError), (float("inf"), ValueError), ("0.5", TypeError),
                                            (True, TypeError)])
def test_bad_psf_sigma(psf_sigma, exc):
    # checked before any fusion work, with or without the refinement
    with pytest.raises(exc, match="^psf_sigma"):
        mfsr.fuse(GREY, psf_sigma=psf_sigma, refine=False)


@pytest.mark.parametrize(
    "frames, cfa, scale, shape",
    [
        (GREY, None, 2.0, (48, 56)),
        (RGB, None, 1.5, (36, 42, 3)),
        (GREY, "GRBG", 1.0, (24, 28, 3)),
        (GREY, "BGGR", 2.0, (48, 56, 3)),
    ],
)
def test_result_contract(frames, cfa, scale, shape):
    res = mfsr.fuse(frames, scale=scale, cfa=cfa)
    assert isinstance(res, mfsr.FusionResult)
    assert res.image.shape == shape and res.image.dtype == np.float32
    assert res.confidence.shape == shape[:2] and res.confidence.dtype == np.float32
    assert res.flow.shape == frames.shape[:3] + (2,) and res.flow.dtype == np.float32
    assert np.all(res.flow[0] == 0)
    assert np.isfinite(res.image).all() and (res.confidence > 0).all()
    flow = mfsr.register(frames, cfa=cfa, reference=1)
    assert flow.shape == frames.shape[:3] + (2,) and flow.dtype == np.float32
    assert np.all(flow[1] == 0)


def test_single_frame_is_valid_input():
    one = GREY[:1]
    res = mfsr.fuse(one, scale=2.0)
    assert res.image.shape == (48, 56)
    assert np.all(res.flow == 0)
    assert np.all(mfsr.register(one) == 0)
    res = mfsr.fuse(GREY[:1], scale=1.0, cfa="RGGB")  # single-frame demosaicking
    assert res.image.shape == (24, 28, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_flow_is_rejected(bad):
    flow = np.zeros(GREY.shape + (2,), np.float32)
    flow[2, 3, 4, 1] = bad
    with pytest.raises(ValueError, match="^flow: NaN or infinite"):
        mfsr.fuse(GREY, flow=flow)
