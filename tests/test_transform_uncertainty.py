"""Uncertainty of global transforms: covariance, corner uncertainty, reliability, fallback."""

import dataclasses
import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mfsr import fuse
from mfsr.alignment import align
from mfsr.geometry import (
    FrameMap,
    GeometryParams,
    TransformUncertainty,
    UnreliableTransformWarning,
    assess_transform,
    check_simplification,
    corner_sd,
    estimate_transform,
    fit_transform,
    refine_photometric,
    warp,
)
from mfsr.metrics import corner_error
from mfsr.synth import sample_image, simulate_geometric_burst

SHAPE = (120, 160)


def _corners(shape):
    h, w = shape
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def _affine_matches(rng, n=150):
    src = rng.uniform([0, 0], [SHAPE[1] - 1, SHAPE[0] - 1], (n, 2))
    A = np.array([[1.01, 0.004, 1.3], [-0.006, 0.995, -0.7]])
    dst = src @ A[:, :2].T + A[:, 2]
    sd = rng.uniform(0.05, 0.1, n)  # heteroscedastic, within Tukey's inlier band
    return src, dst, sd


def _numpy_wls_corner_sd(src, sd, shape):
    """Reference: exact corner standard deviation of a weighted least-squares
    affine fit with the true per-match noise (weights 1 / sd^2)."""
    X = np.c_[src, np.ones(len(src))]
    cov = np.linalg.inv(X.T @ (X / sd[:, None] ** 2))  # per axis, the same for x and y
    c = np.c_[_corners(shape), np.ones(4)]
    return np.sqrt(2 * np.einsum("ci,ij,cj->c", c, cov, c))  # x and y errors add


def test_fit_covariance_matches_numpy_wls_and_monte_carlo():
    rng = np.random.default_rng(0)
    src, clean, sd = _affine_matches(rng)
    ref = _numpy_wls_corner_sd(src, sd, SHAPE)
    fmap = FrameMap("affine", SHAPE)
    predicted, est = [], []
    for _ in range(60):
        dst = clean + rng.normal(size=clean.shape) * sd[:, None]
        fit = fit_transform(src, dst, "affine", SHAPE, weights=1 / sd**2, params=GeometryParams(ransac_iterations=50))
        predicted.append(corner_sd(fmap, fit.theta, fit.covariance))
        assert fit.corner_uncertainty == pytest.approx(predicted[-1].max())
        q = np.c_[_corners(SHAPE), np.ones(4)] @ fit.matrix.T
        est.append(q[:, :2] / q[:, 2:])
    est = np.array(est)
    mc = np.sqrt(((est - est.mean(0)) ** 2).sum(-1).mean(0))  # RMS corner error over the draws
    # the covariance (estimated residual variance) against the exact one
    np.testing.assert_allclose(np.mean(predicted, 0), ref, rtol=0.1)
    # and against the spread of the fit itself over noise draws
    np.testing.assert_allclose(mc, ref, rtol=0.25)


def test_exact_fit_of_few_matches_keeps_an_uncertainty():
    # four matches fitted exactly by an affine model: zero residuals, but
    # the residual scale is floored (min_sigma), so the corners stay uncertain
    src = np.r_[_corners(SHAPE)[:3] + 5.0, [[80.0, 60.0]]]
    fit = fit_transform(src, src + 1.0, "affine", SHAPE)
    assert fit.corner_uncertainty > GeometryParams().min_sigma / 2
    assert fit.weights.shape == (4,)


def _texture(size, sigma=1.5, seed=2):
    rng = np.random.default_rng(seed)
    t = gaussian_filter(rng.random((size, size)), sigma)
    return ((t - t.min()) / np.ptp(t)).astype(np.float32)


def test_photometric_covariance_matches_monte_carlo():
    scene = _texture(96)
    H = np.array([[1.003, 0.002, 0.6], [-0.002, 0.998, -1.2], [0, 0, 1.0]])
    moving = warp(scene, np.linalg.inv(H), mode="bicubic")
    fmap = FrameMap("affine", scene.shape)
    th0 = fmap.theta_from(H)
    est, predicted = [], []
    for rep in range(30):
        r = np.random.default_rng(100 + rep)
        ref = scene + r.normal(0, 0.04, scene.shape).astype(np.float32)
        mov = moving + r.normal(0, 0.04, scene.shape).astype(np.float32)
        th, cov = refine_photometric(ref, mov, fmap, th0, return_covariance=True)
        assert cov.shape == (6, 6) and np.allclose(cov, cov.T)
        est.append(th)
        predicted.append(corner_sd(fmap, th, cov))
    corners = []
    for th in est:
        q = np.c_[_corners(scene.shape), np.ones(4)] @ fmap.matrix(th).numpy().T
        corners.append(q[:, :2])
    corners = np.array(corners)
    mc = np.sqrt(((corners - corners.mean(0)) ** 2).sum(-1).mean(0))
    ratio = np.mean(predicted, 0) / mc
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio


def _flat_bayer_burst(seed=3):
    # a dim, nearly featureless scene under heavy noise: nothing to pin a homography to
    y, x = np.mgrid[0:128, 0:128] / 128.0
    base = 0.05 + 0.01 * np.sin(2 * np.pi * x) + 0.005 * y
    scene = np.repeat(base[..., None], 3, -1).astype(np.float32)
    return simulate_geometric_burst(scene, n_frames=3, scale=2, cfa="RGGB", max_shift=2, corner_shift=3,
                                    alpha=2e-2, beta=2e-3, seed=seed)


#: The fallback before the chain: an unreliable frame on the local registration alone.
IDENTITY_FALLBACK = GeometryParams(fallback_chain=False, start_from_unreliable="never")


def test_low_texture_burst_is_flagged_and_falls_back_to_the_local_registration():
    b = _flat_bayer_burst()
    with pytest.warns(UnreliableTransformWarning, match=r"frames 1, 2 use the local registration alone"):
        res = fuse(b.frames, scale=1, cfa="RGGB", noise=b.noise, refine=False, geometry="homography",
                   geometry_params=IDENTITY_FALLBACK)
    assert res.transform_reliable.dtype == bool and res.transform_reliable.shape == (3,)
    assert res.transform_reliable[0] and not res.transform_reliable[1:].any()
    assert res.transform_models == ("homography", "identity", "identity")
    assert res.transform_uncertainty[0] == 0
    assert np.all(res.transform_uncertainty[1:] > GeometryParams().max_corner_uncertainty)
    np.testing.assert_allclose(res.transforms, np.tile(np.eye(3), (3, 1, 1)))
    plain = fuse(b.frames, scale=1, cfa="RGGB", noise=b.noise, refine=False)
    assert plain.transform_reliable is None and plain.transform_uncertainty is None
    assert plain.transform_models is None
    np.testing.assert_allclose(res.image, plain.image, atol=1e-5)
    np.testing.assert_allclose(res.flow, plain.flow, atol=1e-5)


def test_default_fallback_names_what_every_flagged_frame_uses():
    # the same flat burst with the default fallback: no simpler model is
    # reliable, each frame either starts its local registration from the
    # unreliable homography (kept only where that aligns it better) or uses
    # the local registration alone; both are flagged, and the warning says which
    b = _flat_bayer_burst()
    with pytest.warns(UnreliableTransformWarning, match="no simpler model was reliable|starts? the local") as rec:
        al = align(b.frames, "RGGB", 0, geometry="homography")
    msg = str(rec[0].message)
    assert not al.transform_reliable[1:].any()
    for k in (1, 2):
        model = al.transform_models[k]
        assert model in ("homography", "identity")
        assert f"frame {k}" in msg
        if model == "identity":
            np.testing.assert_allclose(al.transforms[k], np.eye(3))
        else:  # the estimate the flow started from, reported and flagged
            assert not np.allclose(al.transforms[k], np.eye(3))
            assert al.transform_uncertainty[k] > GeometryParams().max_corner_uncertainty
    with pytest.warns(UnreliableTransformWarning, match="frames 1, 2 start the local registration"):
        forced = align(b.frames, "RGGB", 0, geometry="homography",
                       geometry_params=GeometryParams(start_from_unreliable="always"))
    assert forced.transform_models[1:] == ("homography", "homography")
    assert not forced.transform_reliable[1:].any()


def test_fallback_chain_reports_a_reliable_simpler_model():
    # a pure translation: the homography's extra freedom is noise alone, so
    # with a threshold between the homography's corner uncertainty and the
    # simpler models' the chain reports a simpler model, reliable and right
    img = sample_image("astronaut", size=192)
    b = simulate_geometric_burst(img, n_frames=3, scale=2, max_shift=2, corner_shift=0, alpha=1e-3, beta=1e-4,
                                 seed=1)
    params = GeometryParams(max_corner_uncertainty=0.03)
    with pytest.warns(UnreliableTransformWarning, match="fall back to a reliable"):
        res = fuse(b.frames, scale=1, noise=b.noise, refine=False, geometry="homography", geometry_params=params)
    assert res.transform_reliable.all()
    assert all(m in ("affine", "similarity", "translation") for m in res.transform_models[1:])
    assert np.all(res.transform_uncertainty[1:] <= 0.03)
    err = corner_error(b.params["homographies"][1:], res.transforms[1:], b.frames.shape[1:3])
    assert err.max() < 0.1
    # the chain off: the same frames are flagged instead
    with pytest.warns(UnreliableTransformWarning):
        off = align(b.frames, None, 0, geometry="homography",
                    geometry_params=GeometryParams(max_corner_uncertainty=0.03, fallback_chain=False))
    assert not off.transform_reliable[1:].any()
    assert set(off.transform_models[1:]) <= {"homography", "identity"}


def _matches(H, shape, n=200, sd=0.1, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.uniform([0, 0], [shape[1] - 1, shape[0] - 1], (n, 2))
    q = np.c_[src, np.ones(n)] @ H.T
    return src, q[:, :2] / q[:, 2:] + rng.normal(0, sd, (n, 2)), np.full(n, 1 / sd**2)


def _fitted(model, src, dst, wts, shape):
    fit = fit_transform(src, dst, model, shape, weights=wts)
    fmap = FrameMap(model, shape)
    unc = assess_transform(fmap, fit.theta, fit.covariance, src, dst, wts, fit.weights, GeometryParams())
    return model, fmap, fit.theta, unc


def test_check_simplification_rejects_motion_the_simpler_model_cannot_represent():
    shape = (120, 160)
    H = np.array([[1.0, 0.0, 1.5], [0.0, 1.0, -0.8], [2e-5, 1e-5, 1.0]])  # corners up to about 0.3 px apart
    for truth, accepted in ((np.array([[1, 0, 1.5], [0, 1, -0.8], [0, 0, 1.0]]), True), (H, False)):
        src, dst, wts = _matches(truth, shape)
        richer = [_fitted("homography", src, dst, wts, shape)]
        _, fmap, theta, unc = _fitted("translation", src, dst, wts, shape)
        assert richer[0][3].checks_passed and unc.checks_passed
        out = check_simplification(fmap, theta, unc, richer)
        assert out.checks_passed is accepted and (out.reliable is (accepted and unc.reliable))
        if not accepted:
            assert "departs from the homography" in out.reason
            assert out.corner_uncertainty == unc.corner_uncertainty
        else:
            assert out is unc
    # a richer estimate too vague to show a pixel of model error, or one
    # that failed its own checks, certifies nothing
    src, dst, wts = _matches(np.eye(3), shape)
    model, fm, th, u = _fitted("homography", src, dst, wts, shape)
    _, fmap, theta, unc = _fitted("translation", src, dst, wts, shape)
    vague = dataclasses.replace(u, corner_sd=np.full(4, 0.5))
    out = check_simplification(fmap, theta, unc, [(model, fm, th, vague)])
    assert not out.reliable and "too uncertain" in out.reason
    failed = dataclasses.replace(u, checks_passed=False, reliable=False)
    assert not check_simplification(fmap, theta, unc, [(model, fm, th, failed)]).reliable
    assert not check_simplification(fmap, theta, unc, [(model, fm, None, u)]).reliable


def test_start_is_kept_only_where_it_aligns_the_frame_better():
    from mfsr.geometry._pipeline import _aligns_better

    scene = _texture(96)
    shift = np.zeros((96, 96, 2), np.float32)
    shift[..., 1] = 1.5  # the content of reference pixel p is at p + (0, 1.5) in the frame
    frame = warp(scene, np.array([[1, 0, -1.5], [0, 1, 0], [0, 0, 1.0]]))
    zero = np.zeros_like(shift)
    assert _aligns_better(scene, frame, shift, zero, 1.0)
    assert not _aligns_better(scene, frame, zero, shift, 1.0)
    assert not _aligns_better(scene, frame, shift, shift, 1.0)  # a tie keeps the other
    flat = np.full((96, 96), 0.3, np.float32)
    assert not _aligns_better(flat, flat, shift, zero, 1.0)


def test_fuse_passes_and_checks_geometry_params():
    b = _flat_bayer_burst()
    with pytest.warns(UnreliableTransformWarning, match="used anyway"):
        res = fuse(b.frames, scale=1, cfa="RGGB", noise=b.noise, refine=False, geometry="homography",
                   geometry_params=GeometryParams(fallback=False))
    assert res.transform_models == ("homography",) * 3
    assert not np.allclose(res.transforms[1:], np.eye(3))
    with pytest.raises(TypeError, match="^geometry_params: expected"):
        fuse(b.frames, scale=1, cfa="RGGB", geometry="homography", geometry_params={"fallback": False})
    with pytest.raises(TypeError, match="^geometry_params: expected"):
        align(b.frames, "RGGB", 0, geometry="homography", geometry_params="default")


def test_textured_burst_is_not_flagged():
    img = sample_image("astronaut", size=192)
    b = simulate_geometric_burst(img, n_frames=3, scale=2, max_shift=3, corner_shift=4, local_warp=0.05,
                                 alpha=1e-3, beta=1e-4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableTransformWarning)
        res = fuse(b.frames, scale=1, noise=b.noise, refine=False, geometry="homography")
    assert res.transform_reliable.all()
    assert np.all(res.transform_uncertainty[1:] > 0)
    assert np.all(res.transform_uncertainty <= GeometryParams().max_corner_uncertainty)


def test_estimate_transform_returns_its_uncertainty():
    scene = _texture(128)
    H = np.array([[1.004, 0.003, 0.7], [-0.002, 0.997, -1.3], [0, 0, 1.0]])
    moving = warp(scene, np.linalg.inv(H), mode="bicubic")
    rng = np.random.default_rng(4)
    moving = moving + rng.normal(0, 0.01, moving.shape).astype(np.float32)
    H0 = estimate_transform(scene, moving, "affine")
    H1, unc = estimate_transform(scene, moving, "affine", return_uncertainty=True)
    np.testing.assert_allclose(H1, H0, atol=1e-9)
    assert isinstance(unc, TransformUncertainty)
    assert unc.reliable and unc.reason == ""
    assert unc.covariance.shape == (6, 6) and unc.corner_sd.shape == (4,)
    assert 0 < unc.corner_uncertainty < 0.05
    # the same pair at 5 % contrast, buried in noise: flagged, with a warning, still returned
    faint = [0.05 * a + rng.normal(0, 0.05, a.shape).astype(np.float32) for a in (scene, moving)]
    with pytest.warns(UnreliableTransformWarning, match="estimate_transform"):
        _, bad = estimate_transform(*faint, "affine", return_uncertainty=True)
    assert not bad.reliable and "corner uncertainty" in bad.reason
    assert bad.corner_uncertainty > GeometryParams().max_corner_uncertainty


def test_estimate_transform_valid_and_deprecated_mask():
    scene = _texture(96)
    H = np.array([[1, 0, 1.4], [0, 1, 0.6], [0, 0, 1.0]])
    moving = warp(scene, np.linalg.inv(H), mode="bicubic")
    valid = np.ones(scene.shape, bool)
    valid[10:40, 20:60] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = estimate_transform(scene, moving, "translation", valid=valid)
    with pytest.warns(DeprecationWarning, match="mask= is deprecated, use valid="):
        old = estimate_transform(scene, moving, "translation", mask=valid)
    np.testing.assert_allclose(old, new, atol=1e-9)
    with pytest.raises(TypeError, match="valid= only"):
        estimate_transform(scene, moving, "translation", valid=valid, mask=valid)
    with pytest.raises(ValueError, match="^valid: expected shape"):
        estimate_transform(scene, moving, "translation", valid=valid[:-1])
    with pytest.raises(ValueError, match="^valid: fewer than 5%"):
        estimate_transform(scene, moving, "translation", valid=np.zeros(scene.shape, bool))
