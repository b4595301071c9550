"""Global geometry inside the fusion pipeline (fuse(geometry=, distortion=))."""

import numpy as np
import pytest
import torch

from mfsr import fuse
from mfsr.geometry import BrownConrady
from mfsr.metrics import corner_error, flow_epe, psnr
from mfsr.registration import align_frame, dense_flow, prepare_reference
from mfsr.synth import sample_image, simulate_burst, simulate_geometric_burst


@pytest.fixture(scope="module")
def homography_burst():
    img = sample_image("astronaut", size=256)
    return simulate_geometric_burst(img, n_frames=4, scale=2, max_shift=3, corner_shift=5,
                                    local_warp=0.05, alpha=1e-3, beta=1e-4, seed=1)


def test_synth_geometric_flow_is_the_homography():
    img = sample_image("coffee", size=96)
    b = simulate_geometric_burst(img, n_frames=3, scale=2, max_shift=2, corner_shift=3, seed=0)
    h, w = b.frames.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    for k in range(3):
        H = b.params["homographies"][k]
        q = np.tensordot(H, np.stack([xx, yy, np.ones_like(xx)]), 1)
        np.testing.assert_allclose(b.flow[k, ..., 1], q[0] / q[2] - xx, atol=1e-4)
        np.testing.assert_allclose(b.flow[k, ..., 0], q[1] / q[2] - yy, atol=1e-4)
    np.testing.assert_allclose(b.params["homographies"][0], np.eye(3))


def test_synth_geometric_lens_flows():
    img = sample_image("coffee", size=96)
    b = simulate_geometric_burst(img, n_frames=2, scale=2, max_shift=1, distortion=[0.1], seed=0)
    h, w = b.frames.shape[1:3]
    assert np.abs(b.flow[0]).max() == 0
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    d = BrownConrady([0.1], (h, w)).distort_points(torch.as_tensor(np.stack([xx, yy], -1).reshape(-1, 2)))
    d = d.numpy().reshape(h, w, 2)
    np.testing.assert_allclose(b.params["rectified_flow"][0, ..., 1], d[..., 0] - xx, atol=1e-4)
    np.testing.assert_allclose(b.params["rectified_flow"][0, ..., 0], d[..., 1] - yy, atol=1e-4)


def test_registration_prior_finds_only_the_residual():
    img = sample_image("astronaut", size=192)
    b = simulate_burst(img, n_frames=2, scale=2, shifts=[[0, 0], [2.3, -1.6]], seed=0)
    h, w = b.frames.shape[1:3]
    ref = prepare_reference(b.frames[0])
    prior = np.zeros((h, w, 2), np.float32)
    prior[..., 0], prior[..., 1] = -2.0, 1.5  # most of the motion (flow = -shift) is known
    motion = align_frame(ref, b.frames[1], prior=prior)
    res = dense_flow(motion, (h, w))
    np.testing.assert_allclose(np.median(res, axis=(0, 1)), [-0.3, 0.1], atol=0.03)
    assert flow_epe(prior + res, b.flow[1], crop=8) < 0.05
    with pytest.raises(ValueError, match="prior"):
        align_frame(ref, b.frames[1], prior=prior[:-1])


def test_fuse_transforms_contract(homography_burst):
    b = homography_burst
    plain = fuse(b.frames[:2], scale=1, noise=b.noise)
    assert plain.transforms is None and plain.distortion is None
    res = fuse(b.frames, scale=2, geometry="homography", noise=b.noise)
    assert res.transforms.shape == (4, 3, 3) and res.transforms.dtype == np.float64
    np.testing.assert_array_equal(res.transforms[0], np.eye(3))
    assert np.abs(res.flow[0]).max() == 0  # no lens: the output grid is the reference's
    err = corner_error(b.params["homographies"][1:], res.transforms[1:], b.frames.shape[1:3])
    assert np.median(err) < 0.1
    assert flow_epe(res.flow[1:], b.flow[1:], crop=4) < 0.1


def test_fuse_geometry_bad_input(homography_burst):
    f = homography_burst.frames[:2, :64, :64]
    with pytest.raises(ValueError, match="geometry"):
        fuse(f, geometry="projective")
    with pytest.raises(ValueError, match="distortion"):
        fuse(f, distortion="guess")
    with pytest.raises(ValueError, match="distortion"):
        fuse(f, distortion=[0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match="distortion.*fold"):
        fuse(f, distortion=[-0.9])
    with pytest.raises(ValueError, match="flow"):
        fuse(f, geometry="affine", flow=np.zeros((2, 64, 64, 2), np.float32))


@pytest.mark.slow
def test_fuse_cfa_transforms_are_in_raw_pixels():
    img = sample_image("astronaut", size=256)
    b = simulate_geometric_burst(img, n_frames=3, scale=2, cfa="RGGB", max_shift=3, corner_shift=4,
                                 alpha=5e-4, beta=5e-5, seed=4)
    res = fuse(b.frames, scale=2, cfa="RGGB", geometry="homography", noise=b.noise)
    err = corner_error(b.params["homographies"][1:], res.transforms[1:], b.frames.shape[1:3])
    assert np.median(err) < 0.1
    assert flow_epe(res.flow[1:], b.flow[1:], crop=4) < 0.1


@pytest.mark.slow
def test_fuse_known_lens_outputs_the_rectified_image():
    img = sample_image("astronaut", size=256)
    lens = [0.1]
    b = simulate_geometric_burst(img, n_frames=4, scale=2, max_shift=2, corner_shift=1, distortion=lens,
                                 alpha=1e-3, beta=1e-4, seed=2)
    plain = fuse(b.frames, scale=2, noise=b.noise)
    rect = fuse(b.frames, scale=2, noise=b.noise, distortion=lens, geometry="homography")
    gain = psnr(rect.image, b.ground_truth, crop=8) - psnr(plain.image, b.ground_truth, crop=8)
    assert gain > 3.0
    # the output grid is rectified: every frame's flow, the reference's included
    assert flow_epe(rect.flow, b.params["rectified_flow"], crop=4) < 0.1
    np.testing.assert_allclose(rect.flow[0], b.params["rectified_flow"][0], atol=1e-3)
    np.testing.assert_allclose(rect.distortion, np.tile([0.1, 0, 0, 0, 0], (4, 1)))


@pytest.mark.slow
def test_fuse_estimates_focus_breathing():
    img = sample_image("astronaut", size=256)
    b = simulate_geometric_burst(img, n_frames=4, scale=2, max_shift=2, corner_shift=0.5, distortion=[0.05],
                                 breathing=0.02, alpha=1e-3, beta=1e-4, seed=3)
    res = fuse(b.frames, scale=2, noise=b.noise, geometry="homography", distortion="estimate")
    true_dk1 = b.params["distortion"][:, 0] - 0.05
    np.testing.assert_allclose(res.distortion[:, 0], true_dk1, atol=0.003)
    assert flow_epe(res.flow[1:], b.flow[1:]) < 0.1


def test_fuse_lens_without_global_model_and_single_frame():
    img = sample_image("coffee", size=160)
    b = simulate_geometric_burst(img, n_frames=3, scale=2, max_shift=1.5, distortion=[0.08],
                                 alpha=1e-3, beta=1e-4, seed=5)
    res = fuse(b.frames, scale=2, noise=b.noise, distortion=[0.08])
    assert res.transforms is None
    assert flow_epe(res.flow, b.params["rectified_flow"], crop=4) < 0.1
    one = fuse(b.frames[:1], scale=2, noise=b.noise, distortion=[0.08], geometry="affine")
    np.testing.assert_array_equal(one.transforms, np.eye(3)[None])
    np.testing.assert_allclose(one.flow[0], b.params["rectified_flow"][0], atol=1e-3)
    plain = fuse(b.frames[:1], scale=2, noise=b.noise)
    assert psnr(one.image, b.ground_truth, crop=8) > psnr(plain.image, b.ground_truth, crop=8) + 2
