"""Masked kernel fusion of translated passes (arrays only, no files)."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, maximum_filter, minimum_filter
from scipy.ndimage import shift as nd_shift

from mfsr.geo.masked_fusion import (
    back_project,
    finish_window,
    fuse_window,
    masked_median,
    upsample_area,
    upsample_spline,
    warp_translate,
)
from mfsr.metrics import degrade

NOISE = (0.0, 1e-6)


def _smooth(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random(shape), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


def test_warp_translate_matches_bilinear_shift():
    rng = np.random.default_rng(1)
    frame = rng.random((20, 24)).astype(np.float32)
    f = (0.3, 0.8)
    got = warp_translate(frame, f, (19, 23))
    # NumPy twin: sample at (i + fy, j + fx) = shifting the frame by -f.
    ref = nd_shift(frame.astype(np.float64), (-f[0], -f[1]), order=1, mode="nearest")[:19, :23]
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.filterwarnings("ignore:All-NaN slice")
def test_masked_median_matches_nanmedian():
    rng = np.random.default_rng(2)
    stack = rng.random((7, 9, 11)).astype(np.float32)
    valid = rng.random(stack.shape) > 0.4
    valid[:, 0, 0] = False
    med, n = masked_median(stack, valid)
    ref = np.nanmedian(np.where(valid, stack, np.nan), axis=0)
    ok = n > 0
    np.testing.assert_allclose(med[ok], ref[ok], atol=1e-6)
    assert med[0, 0] == 0 and n[0, 0] == 0
    np.testing.assert_array_equal(n, valid.sum(0))
    # Two valid values: the one closer to the preferred entry, not their mean.
    two = np.array([[[0.2]], [[10.0]], [[0.0]]], np.float32)
    ok = np.array([[[True]], [[True]], [[False]]])
    assert masked_median(two, ok)[0][0, 0] == pytest.approx(5.1)
    assert masked_median(two, ok, prefer=0)[0][0, 0] == pytest.approx(0.2)


def test_upsample_area_matches_pixel_area_bilinear():
    rng = np.random.default_rng(3)
    img = rng.random((6, 7)).astype(np.float32)
    out = upsample_area(img, (12, 14), 2.0)
    # NumPy twin with scipy: output y samples input (y + 0.5)/2 - 0.5, edges replicated.
    from scipy.ndimage import map_coordinates

    yy, xx = np.meshgrid(np.arange(12), np.arange(14), indexing="ij")
    ref = map_coordinates(img.astype(np.float64), [np.clip((yy + 0.5) / 2 - 0.5, 0, 5),
                                                    np.clip((xx + 0.5) / 2 - 0.5, 0, 6)], order=1)
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("robust", [True, False])
def test_masked_pixels_never_leak(robust):
    # Masked pixels hold 1e6: any leak, even at weight 1e-6, shows.
    rng = np.random.default_rng(4)
    n, h, w = 5, 40, 44
    truth = _smooth((h + 4, w + 4), seed=5)
    frames, valids, offs = [], [], []
    for k in range(n):
        f = rng.uniform(0, 1, 2) if k else np.zeros(2)
        fr = nd_shift(truth, -f, order=3, mode="nearest")[:h + 2, :w + 2]
        valid = gaussian_filter(rng.standard_normal(fr.shape), 3) < 0.05
        fr = np.where(valid, fr, 1e6).astype(np.float32)
        frames.append(fr[..., None])
        valids.append(valid)
        offs.append(f)
    num, den, count = fuse_window(frames, valids, np.array(offs), (h, w), (2 * h, 2 * w), 2.0, NOISE,
                                  composite_robustness=robust)
    img = finish_window(num, den, 2.0, NOISE)
    assert np.nanmax(img) < 2.0
    assert np.isfinite(img).mean() > 0.5
    assert count.max() <= n


def test_empty_output_is_nan_and_count_counts_frames():
    h, w = 24, 24
    img = _smooth((h + 1, w + 1), seed=6)
    frames = [img[..., None].copy() for _ in range(3)]
    valids = [np.ones(img.shape, bool) for _ in range(3)]
    valids[1][:, :12] = False  # frame 1 misses the left half
    for v in valids:
        v[16:, 16:] = False  # nobody sees the bottom-right corner
    num, den, count = fuse_window(frames, valids, np.zeros((3, 2)), (h, w), (h, w), 1.0, NOISE,
                                  composite_robustness=False)
    out = finish_window(num, den, 1.0, NOISE)[..., 0]
    assert np.isnan(out[20:, 20:]).all() and (den[20:, 20:] == 0).all()
    assert (count[20:, 20:] == 0).all()
    # Far from every mask edge (3 px erosion), counts are exact.
    assert (count[2:10, 17:22] == 3).all()
    assert (count[2:10, 1:8] == 2).all()
    np.testing.assert_allclose(out[4:10, 4:10], img[4:10, 4:10], atol=0.02)


@pytest.mark.parametrize("d", [(0.5, 0.0), (0.25, 0.75)])
def test_shift_sign_convention(d):
    # Frame holds the content of reference pixel (i, j) at (i + dy, j + dx):
    # fusing it alone with offset d must give back the reference grid.
    truth = _smooth((40, 40), seed=7, sigma=3.0)
    frame = nd_shift(truth.astype(np.float64), d, order=3, mode="nearest").astype(np.float32)
    valid = np.ones(frame.shape, bool)
    h = w = 36
    for offset, expect_good in ((d, True), ((-d[0], -d[1]), False)):
        off = np.array([offset]) + 1.0  # the window starts one pixel in
        num, den, _ = fuse_window([frame[..., None].copy()], [valid], off, (h, w), (h, w), 1.0, NOISE,
                                  composite_robustness=False)
        out = finish_window(num, den, 1.0, NOISE)[..., 0]
        err = np.abs(out[4:-4, 4:-4] - truth[1 + 4 : 1 + h - 4, 1 + 4 : 1 + w - 4]).mean()
        if expect_good:
            assert err < 0.01
        else:
            assert err > 0.02


def test_back_project_improves_consistency_and_keeps_nan():
    ref = _smooth((20, 20), seed=8, sigma=1.0)[..., None]
    blurry = upsample_area(gaussian_filter(ref[..., 0], 1.0)[..., None], (40, 40), 2.0)
    blurry[:4, :4] = np.nan
    valid = np.ones((20, 20), bool)
    out = back_project(blurry, ref, valid, 2.0, iterations=2)
    assert np.isnan(out[:4, :4]).all()
    before = np.abs(degrade(np.nan_to_num(blurry[..., 0]), 2.0) - ref[..., 0])[4:, 4:].mean()
    after = np.abs(degrade(np.nan_to_num(out[..., 0]), 2.0) - ref[..., 0])[4:, 4:].mean()
    assert after < 0.5 * before


def test_upsample_spline_matches_pixel_area_cubic_spline():
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(9)
    img = rng.random((6, 7, 2)).astype(np.float32)
    out = upsample_spline(img, (12, 14), 2.0)
    yy, xx = np.meshgrid((np.arange(12) + 0.5) / 2 - 0.5, (np.arange(14) + 0.5) / 2 - 0.5, indexing="ij")
    for c in range(2):
        ref = map_coordinates(img[..., c].astype(np.float64), [yy, xx], order=3, mode="nearest")
        np.testing.assert_allclose(out[..., c], ref, atol=1e-6)
    np.testing.assert_allclose(upsample_spline(img[..., 0], (12, 14), 2.0), out[..., 0], atol=0)
    flat = upsample_spline(np.full((5, 5), 0.3, np.float32), (15, 15), 3.0)
    np.testing.assert_allclose(flat, 0.3, atol=1e-6)


def test_back_project_spline_residual_leaves_no_hatching():
    # An aliased reference (a period-2.5 px grating averaged over its
    # pixels) and a smooth start: the bilinear correction puts the
    # residual's spectral images near the output's Nyquist frequency, the
    # cubic spline's far less, and reaches a closer consistency.
    from mfsr.geo.masked_fusion import nyquist_energy

    yy, xx = np.mgrid[0:96, 0:96] / 2.0
    hr = 0.5 + 0.3 * np.sin(2 * np.pi * (xx + 0.3 * yy) / 1.25)
    ref = degrade(hr.astype(np.float32), 2.0)[..., None]
    start = upsample_area(gaussian_filter(ref[..., 0], 1.5)[..., None], (96, 96), 2.0)
    valid = np.ones(ref.shape[:2], bool)
    err, nyq = {}, {}
    for order in (1, 3):
        out = back_project(start, ref, valid, 2.0, iterations=2, order=order)
        err[order] = np.abs(degrade(out[..., 0], 2.0) - ref[..., 0])[4:-4, 4:-4].mean()
        nyq[order] = nyquist_energy(out[8:-8, 8:-8, 0])
    assert err[3] < err[1]
    assert nyq[3] < 0.5 * nyq[1]
    with pytest.raises(ValueError, match="order"):
        back_project(start, ref, valid, 2.0, order=2)


def test_reference_keeps_its_floor_where_every_frame_is_rejected(monkeypatch):
    # Every frame rejected everywhere (as aliased texture can make the
    # composite test do): with reject_floor=False only the reference keeps
    # a weight, so its own samples, never another frame's, give the value.
    import mfsr.geo.masked_fusion as mf
    from mfsr.fusion import FusionParams

    monkeypatch.setattr(mf, "robustness", lambda *a, **k: np.zeros(a[2].shape[1:], np.float32))
    h = w = 24
    rng = np.random.default_rng(10)
    frames = [rng.random((h + 2, w + 2, 1)).astype(np.float32) for _ in range(3)]
    valids = [np.ones((h + 2, w + 2), bool) for _ in range(3)]
    valids[1][:, :12] = False  # the reference misses the left half
    offs = np.zeros((3, 2))
    num, den, count, lo, hi, covered = fuse_window(
        [f.copy() for f in frames], valids, offs, (h, w), (h, w), 1.0, NOISE,
        reference=1, reject_floor=False, return_bounds=True)
    out = finish_window(num, den, 1.0, NOISE, FusionParams(sharpen_amount=0.0))[..., 0]
    assert (count == 0).all() and covered.all()
    assert (den[:, :10] == 0).all() and np.isnan(out[:, :10]).all()
    right = (slice(2, -2), slice(14, -2))
    ref = frames[1][:h, :w, 0]
    assert (den[right] > 0).all()
    assert (out[right] >= minimum_filter(ref, 3)[right] - 1e-6).all()
    assert (out[right] <= maximum_filter(ref, 3)[right] + 1e-6).all()
    # The bounds hold the reference's samples, and only them.
    np.testing.assert_allclose(lo[right][..., 0], minimum_filter(ref, 3)[right])
    np.testing.assert_allclose(hi[right][..., 0], maximum_filter(ref, 3)[right])
    assert np.isinf(lo[:, :10]).all()
    # No reference: rejected content gets no weight at all.
    num, den, count = fuse_window([f.copy() for f in frames], valids, offs, (h, w), (h, w), 1.0, NOISE,
                                  reject_floor=False)
    assert (den == 0).all()
