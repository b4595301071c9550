"""Spatial transformer modules, lens model and robust fits (mfsr.geometry)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, map_coordinates

from mfsr.geometry import (
    MODELS,
    BrownConrady,
    FrameMap,
    GlobalWarp,
    check_distortion,
    check_transform,
    default_camera_matrix,
    estimate_transform,
    fit_transform,
    matrix_to_params,
    params_to_matrix,
    warp,
    warp_image,
)
from mfsr.metrics import corner_error


# --- independent NumPy reference of the Brown-Conrady model -----------------


def np_distort(x, y, c, K):
    """OpenCV model, written out term by term."""
    k1, k2, p1, p2, k3 = c
    u = (x - K[0, 2]) / K[0, 0]
    v = (y - K[1, 2]) / K[1, 1]
    r2 = u**2 + v**2
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u**2)
    vd = v * radial + p1 * (r2 + 2 * v**2) + 2 * p2 * u * v
    return ud * K[0, 0] + K[0, 2], vd * K[1, 1] + K[1, 2]


def np_undistort(x, y, c, K):
    """Newton's method with a numerical Jacobian (independent of kornia's
    fixed-point iteration)."""
    ux, uy = np.array(x, float), np.array(y, float)
    e = 1e-5
    for _ in range(20):
        fx, fy = np_distort(ux, uy, c, K)
        rx, ry = fx - x, fy - y
        ax, ay = np_distort(ux + e, uy, c, K)
        bx, by = np_distort(ux, uy + e, c, K)
        j00, j10 = (ax - fx) / e, (ay - fy) / e
        j01, j11 = (bx - fx) / e, (by - fy) / e
        det = j00 * j11 - j01 * j10
        ux = ux - (j11 * rx - j01 * ry) / det
        uy = uy - (-j10 * rx + j00 * ry) / det
    return ux, uy


SHAPE = (96, 128)
LENSES = [
    [0.1, 0.0, 0.0, 0.0, 0.0],
    [-0.08, 0.01, 0.0, 0.0, 0.0],
    [0.05, -0.02, 0.002, -0.001, 0.01],
]


def _points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, SHAPE[1] - 1, n), rng.uniform(0, SHAPE[0] - 1, n)], 1)


@pytest.mark.parametrize("coeffs", LENSES)
def test_lens_matches_numpy_reference(coeffs):
    lens = BrownConrady(coeffs, SHAPE)
    K = default_camera_matrix(SHAPE)
    pts = _points()
    d = lens.distort_points(torch.as_tensor(pts)).numpy()
    rx, ry = np_distort(pts[:, 0], pts[:, 1], np.array(coeffs), K)
    np.testing.assert_allclose(d[:, 0], rx, atol=1e-9)
    np.testing.assert_allclose(d[:, 1], ry, atol=1e-9)
    u = lens.undistort_points(torch.as_tensor(pts)).numpy()
    ux, uy = np_undistort(pts[:, 0], pts[:, 1], np.array(coeffs), K)
    np.testing.assert_allclose(u[:, 0], ux, atol=1e-6)
    np.testing.assert_allclose(u[:, 1], uy, atol=1e-6)


@pytest.mark.parametrize("coeffs", LENSES)
def test_lens_round_trip_below_001_px(coeffs):
    lens = BrownConrady(coeffs, SHAPE)
    pts = torch.as_tensor(_points(seed=1))[None]
    back = lens.undistort_points(lens.distort_points(pts))
    assert (back - pts).norm(dim=-1).max() < 0.01
    back = lens.distort_points(lens.undistort_points(pts))
    assert (back - pts).norm(dim=-1).max() < 0.01


def test_lens_convention_pincushion_moves_corners_out():
    lens = BrownConrady([0.1], SHAPE)
    c = torch.tensor([[0.0, 0.0], [SHAPE[1] - 1.0, SHAPE[0] - 1.0]], dtype=torch.float64)
    d = lens.distort_points(c)
    assert d[0, 0] < 0 and d[0, 1] < 0 and d[1, 0] > SHAPE[1] - 1 and d[1, 1] > SHAPE[0] - 1
    centre = torch.tensor([[(SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2]], dtype=torch.float64)
    assert torch.allclose(lens.distort_points(centre), centre)


def _smooth_field(x, y):
    return 0.5 + 0.2 * np.sin(x / 7.0) * np.cos(y / 9.0) + 0.1 * np.sin((x + y) / 13.0)


def test_undistort_image_rectifies_an_analytic_scene():
    coeffs = [0.1, 0.0, 0.001, 0.0, 0.0]
    K = default_camera_matrix(SHAPE)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    # the camera sees, at distorted pixel p, the scene at undistort(p)
    ux, uy = np_undistort(xx, yy, np.array(coeffs), K)
    distorted = _smooth_field(ux, uy).astype(np.float32)
    lens = BrownConrady(coeffs, SHAPE)
    img = torch.as_tensor(distorted)[None, None]
    rect = lens.undistort_image(img, mode="bicubic")[0, 0].numpy()
    truth = _smooth_field(xx, yy)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(rect - truth)[inner].max() < 2e-3
    back = lens.distort_image(torch.as_tensor(truth, dtype=torch.float32)[None, None], mode="bicubic")[0, 0]
    assert np.abs(back.numpy() - distorted)[inner].max() < 2e-3
    ident = BrownConrady([0.0], SHAPE).undistort_image(img)
    assert torch.abs(ident - img).max() < 1e-4


@pytest.mark.parametrize(
    "coeffs, match",
    [
        ([-0.6], "fold"),
        ([0.0, -0.5], "fold"),
        ([0.1, 0.2, 0.3], "1, 2, 4 or 5"),
        ([0.1] * 6, "1, 2, 4 or 5"),
        ([np.nan], "NaN"),
        ("barrel", "coefficients"),
    ],
)
def test_bad_distortion_is_rejected(coeffs, match):
    with pytest.raises(ValueError, match=match):
        check_distortion(coeffs, SHAPE, argname="distortion")


def test_tangential_fold_is_rejected():
    with pytest.raises(ValueError, match="fold"):
        check_distortion([0.0, 0.0, 0.9, 0.0], SHAPE)


# --- global warps ----------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_params_matrix_round_trip(model):
    rng = np.random.default_rng(3)
    theta = torch.as_tensor(rng.normal(0, 2, (3, {"translation": 2, "similarity": 4, "affine": 6,
                                                    "homography": 8}[model])))
    H = params_to_matrix(model, theta, SHAPE).numpy()
    np.testing.assert_allclose(matrix_to_params(model, H, SHAPE), theta.numpy(), atol=1e-9)
    np.testing.assert_allclose(params_to_matrix(model, torch.zeros(1, theta.shape[1], dtype=torch.float64),
                                                SHAPE)[0].numpy(), np.eye(3), atol=1e-12)


def test_similarity_parameters_are_rotation_scale_translation():
    H = np.array([[np.cos(0.01), -np.sin(0.01), 2.0], [np.sin(0.01), np.cos(0.01), -1.0], [0, 0, 1]]) * 1.02
    H[2] = [0, 0, 1]
    back = params_to_matrix("similarity", torch.as_tensor(matrix_to_params("similarity", H, SHAPE)), SHAPE)
    np.testing.assert_allclose(back[0].numpy(), H, atol=1e-12)


def test_warp_image_identity_and_shift_convention():
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.random(SHAPE), 2).astype(np.float32)
    t = torch.as_tensor(img)[None, None]
    same = warp_image(t, torch.eye(3, dtype=torch.float64)[None])
    assert torch.abs(same - t).max() < 1e-4
    inner = (slice(6, -6), slice(6, -6))
    # integer shift: reference pixel (x, y) sits at (x + 2, y - 1) of the moving image
    H = torch.tensor([[[1.0, 0, 2.0], [0, 1, -1.0], [0, 0, 1]]], dtype=torch.float64)
    out = warp_image(t, H)[0, 0].numpy()
    np.testing.assert_allclose(out[inner], img[5:-7, 8:-4], atol=1e-4)
    # sub-pixel: agrees with a spline interpolation of the same positions, and
    # the opposite sign is far off
    H = torch.tensor([[[1.0, 0, 1.5], [0, 1, -0.75], [0, 0, 1]]], dtype=torch.float64)
    out = warp_image(t, H, mode="bicubic")[0, 0].numpy()
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    truth = map_coordinates(img, [yy - 0.75, xx + 1.5], order=3)
    wrong = map_coordinates(img, [yy + 0.75, xx - 1.5], order=3)
    assert np.abs(out - truth)[inner].max() < 5e-3
    assert np.abs(out - wrong)[inner].max() > 10 * np.abs(out - truth)[inner].max()


def test_global_warp_module_batches_frames():
    Hs = np.stack([np.eye(3), [[1, 0.01, 2], [-0.01, 1, 1], [1e-5, 0, 1]]])
    m = GlobalWarp("homography", SHAPE, batch=2, init=Hs)
    np.testing.assert_allclose(m.matrix().detach().numpy(), Hs, atol=1e-12)
    pts = torch.tensor([[[10.0, 20.0]], [[10.0, 20.0]]], dtype=torch.float64)
    q = m.transform_points(pts).detach().numpy()
    h = Hs[1] @ [10, 20, 1]
    np.testing.assert_allclose(q[1, 0], h[:2] / h[2], atol=1e-9)
    out = m(torch.rand(2, 3, *SHAPE))
    assert out.shape == (2, 3, *SHAPE)


@pytest.mark.parametrize(
    "H, match",
    [
        (np.zeros((3, 3)), "singular|degenerate"),
        (np.diag([1.0, -1.0, 1.0]), "singular"),
        (np.array([[1, 0, 0], [0, 1, 0], [-0.02, 0, 1.0]]), "infinity"),
        (np.full((3, 3), np.nan), "NaN"),
        (np.eye(2), "shape"),
    ],
)
def test_degenerate_transforms_are_rejected(H, match):
    with pytest.raises(ValueError, match=match):
        check_transform(H, SHAPE, "transforms")
    with pytest.raises(ValueError):
        warp(np.zeros(SHAPE, np.float32), H)


# --- gradients flow ----------------------------------------------------------


def test_gradient_descent_recovers_an_affine_warp():
    shape = (64, 64)
    rng = np.random.default_rng(1)
    img = torch.as_tensor(gaussian_filter(rng.random(shape), 3).astype(np.float32))[None, None]
    img = (img - img.mean()) / img.std()
    true = GlobalWarp("affine", shape, init=[[1.01, 0.005, 1.2], [-0.004, 0.99, -0.7], [0, 0, 1]])
    with torch.no_grad():
        moving_view = true(img)  # the reference as seen through the true warp
    model = GlobalWarp("affine", shape)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    inner = (Ellipsis, slice(6, -6), slice(6, -6))
    for _ in range(200):
        opt.zero_grad()
        loss = ((model(img) - moving_view)[inner] ** 2).mean()
        loss.backward()
        opt.step()
    assert torch.abs(model.theta - true.theta).max() < 0.05  # edge px


def test_gradient_descent_recovers_k1():
    pts = torch.as_tensor(_points(200, seed=4))[None]
    target = BrownConrady([0.07], SHAPE).distort_points(pts)
    lens = BrownConrady([0.0], SHAPE, learnable=True)
    opt = torch.optim.Adam(lens.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100, 0.3)
    for _ in range(400):
        opt.zero_grad()
        loss = ((lens.distort_points(pts) - target) ** 2).mean()
        loss.backward()
        lens.coeffs.grad[:, 1:] = 0  # only k1 is free
        opt.step()
        sched.step()
    assert abs(float(lens.coeffs.detach()[0, 0]) - 0.07) < 1e-3


# --- robust fitting ------------------------------------------------------------


def test_fit_transform_rejects_outliers_unlike_least_squares():
    rng = np.random.default_rng(5)
    H = np.array([[1.02, 0.01, 3.0], [-0.015, 0.99, -2.0], [2e-5, -1e-5, 1.0]])
    src = _points(300, seed=6)
    hp = np.c_[src, np.ones(len(src))] @ H.T
    dst = hp[:, :2] / hp[:, 2:] + rng.normal(0, 0.05, src.shape)
    bad = rng.random(len(src)) < 0.3  # a third of the tiles: a moving object, wrong matches
    dst[bad] += rng.uniform(-6, 6, (bad.sum(), 2))
    fit = fit_transform(src, dst, "homography", SHAPE)
    assert np.median(corner_error(fit.matrix, H, SHAPE)) < 0.05
    assert fit.weights[bad].mean() < 0.1 and fit.weights[~bad].mean() > 0.8
    # a plain least-squares fit of the same matches is far off
    from mfsr.geometry._estimate import _linear_fit

    tm = np.diag([1.0, 1.0, 1.0])
    lsq = _linear_fit("homography", src, dst, np.ones(len(src)))
    assert np.median(corner_error(tm @ lsq, H, SHAPE)) > 0.3


def test_fit_transform_uses_confidence_weights():
    rng = np.random.default_rng(7)
    src = _points(200, seed=8)
    dst = src + [1.25, -0.5]
    noisy = np.arange(200) < 100
    dst[noisy] += rng.normal(0, 1.0, (100, 2))
    w = np.where(noisy, 1e-4, 1.0)
    fit = fit_transform(src, dst, "translation", SHAPE, weights=w)
    np.testing.assert_allclose(fit.matrix[:2, 2], [1.25, -0.5], atol=0.01)


def test_fit_transform_radial_recovers_relative_k1():
    fmap = FrameMap("similarity", SHAPE, radial=True)
    theta = fmap.theta_from(np.array([[1.003, -0.002, 0.8], [0.002, 1.003, -0.4], [0, 0, 1]]), (0.015,))
    src = _points(300, seed=9)
    dst = fmap.apply(torch.as_tensor(theta), torch.as_tensor(src)).numpy()
    dst += np.random.default_rng(0).normal(0, 0.03, dst.shape)
    fit = fit_transform(src, dst, "similarity", SHAPE, radial=True)
    assert abs(fit.radial - 0.015) < 1e-3


def test_fit_transform_bad_input():
    with pytest.raises(ValueError, match="geometry|model"):
        fit_transform(np.zeros((10, 2)), np.zeros((10, 2)), "projective", SHAPE)
    with pytest.raises(ValueError, match="too few"):
        fit_transform(np.zeros((3, 2)), np.zeros((3, 2)), "homography", SHAPE)


# --- array-level alignment (satellite passes) ------------------------------------


def test_estimate_transform_recovers_an_affine_difference():
    rng = np.random.default_rng(2)
    scene = gaussian_filter(rng.random((128, 128)), 1.5).astype(np.float32)
    H = np.array([[1.004, 0.003, 0.7], [-0.002, 0.997, -1.3], [0, 0, 1.0]])
    # the moving pass shows reference pixel p at H p: moving = scene o H^-1
    moving = warp(scene, np.linalg.inv(H), mode="bicubic")
    est = estimate_transform(scene, moving, "affine")
    inner = corner_error(est, H, (128, 128))
    assert np.median(inner) < 0.05
    aligned = warp(moving, est, fill=np.nan)
    assert np.isnan(aligned).any() and np.nanmax(np.abs(aligned - scene)[10:-10, 10:-10]) < 0.05


def test_estimate_transform_ignores_masked_clouds():
    rng = np.random.default_rng(3)
    scene = gaussian_filter(rng.random((128, 128)), 1.5).astype(np.float32)
    H = np.array([[1, 0, 1.4], [0, 1, 0.6], [0, 0, 1.0]])
    moving = warp(scene, np.linalg.inv(H), mode="bicubic")
    moving[20:70, 30:90] = 1.0  # a cloud in the moving pass
    mask = np.ones(scene.shape, bool)
    mask[12:78, 22:98] = False
    est = estimate_transform(scene, moving, "translation", valid=mask)
    np.testing.assert_allclose(est[:2, 2], [1.4, 0.6], atol=0.03)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ransac_iterations": 0}, "ransac_iterations"),
        ({"ransac_iterations": 300.0}, "ransac_iterations"),
        ({"ransac_threshold": 0.0}, "ransac_threshold"),
        ({"irls_iterations": -1}, "irls_iterations"),
        ({"tukey_c": float("nan")}, "tukey_c"),
        ({"min_sigma": 0.0}, "min_sigma"),
        ({"photometric": 1}, "photometric"),
        ({"photometric_iterations": True}, "photometric_iterations"),
        ({"photometric_levels": 0}, "photometric_levels"),
        ({"max_size": 0}, "max_size"),
        ({"prefilter_sigma": -1.0}, "prefilter_sigma"),
        ({"residual_shrinkage": float("inf")}, "residual_shrinkage"),
        ({"photometric_full_resolution": "yes"}, "photometric_full_resolution"),
        ({"seed": -1}, "seed"),
        ({"max_corner_uncertainty": 0.0}, "max_corner_uncertainty"),
        ({"max_corner_uncertainty": float("nan")}, "max_corner_uncertainty"),
        ({"fallback": "no"}, "fallback"),
        ({"fallback_chain": 1}, "fallback_chain"),
        ({"start_from_unreliable": True}, "start_from_unreliable"),
        ({"start_from_unreliable": "sometimes"}, "start_from_unreliable"),
    ],
)
def test_geometry_params_validation(kwargs, name):
    from mfsr.geometry import GeometryParams

    with pytest.raises(ValueError, match=f"^{name}: expected"):
        GeometryParams(**kwargs)


def test_geometry_params_accept_the_limits():
    from mfsr.geometry import GeometryParams

    GeometryParams()
    GeometryParams(irls_iterations=0, photometric=False, photometric_iterations=0, prefilter_sigma=0.0,
                   residual_shrinkage=0.0, photometric_levels=1, seed=np.int64(3),
                   max_corner_uncertainty=float("inf"), fallback=False)
    for start in ("if better", "always", "never"):
        GeometryParams(fallback_chain=False, start_from_unreliable=start)
