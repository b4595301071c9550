"""Tests of the learned refinement stage (mfsr.refine)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mfsr.cfa import PATTERNS
from mfsr.refine import MODES, RefineNet, RefinerWeightsError, load_refiner, refine_image
from mfsr.refine._features import confidence_reference, pixel_features
from mfsr.refine._inference import DC_SIGMA
from mfsr.refine._network import N_GLOBAL_FEATURES
from mfsr.refine._weights import MANIFEST, WEIGHTS_DIR, sha256_file
from mfsr.refine.heldout import EXCLUDED_IMAGES, HELDOUT_IMAGES, TRAIN_EXTRA_PHOTOS, TRAIN_IMAGES
from mfsr.synth import SAMPLE_IMAGES

NOISE = (1e-3, 1e-5)


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random(shape, dtype=np.float32)
    conf = (rng.random(shape[:2], dtype=np.float32) * 6.0).astype(np.float32)
    return img, conf


def _random_net(seed=0) -> RefineNet:
    """A network with a non-zero residual (the tail starts at zero by design)."""
    torch.manual_seed(seed)
    net = RefineNet(channels=8, blocks=2)
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    return net.eval()


@pytest.mark.parametrize(
    "shape, cfa",
    [((40, 52), None), ((40, 52, 3), None), ((40, 52, 3), "RGGB"), ((33, 47, 3), "RGGB"), ((31, 45), None)],
)
def test_shapes_and_dtypes(shape, cfa):
    img, conf = _inputs(shape)
    out = refine_image(img, conf, cfa=cfa, scale=2.0, noise=NOISE)
    assert out.shape == shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_shipped_weights_load_offline_and_match_manifest():
    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    assert set(manifest["modes"]) == set(MODES)
    for mode in MODES:
        name = manifest["modes"][mode]
        entry = manifest["files"][name]
        assert sha256_file(WEIGHTS_DIR / name) == entry["sha256"]
        net = load_refiner(mode)
        assert isinstance(net, RefineNet)
        assert not net.training
        n_params = sum(p.numel() for p in net.parameters())
        assert n_params == entry["parameters"]
    # small weights: well under a megabyte each
    assert all(e["bytes"] < 1_000_000 for e in manifest["files"].values())
    # provenance: the shipped run predates the stage layout of newer manifests
    assert "seed" in manifest["training"] and ("stages" in manifest["training"] or "steps" in manifest["training"])


def test_load_refiner_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        load_refiner("bayer")


def test_deterministic():
    img, conf = _inputs((48, 64, 3), seed=1)
    a = refine_image(img, conf, cfa="RGGB", scale=1.0, noise=NOISE)
    b = refine_image(img.copy(), conf.copy(), cfa="RGGB", scale=1.0, noise=NOISE)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(70, 90, 3), (67, 53)])
def test_tiled_equals_whole_image(shape):
    net = _random_net()
    img, conf = _inputs(shape, seed=2)
    whole = refine_image(img, conf, cfa=None, scale=2.0, noise=NOISE, tile=4096, weights=net)
    assert np.abs(whole - img).max() > 1e-3  # the residual is not trivially zero
    for tile in (16, 22, 40):
        tiled = refine_image(img, conf, cfa=None, scale=2.0, noise=NOISE, tile=tile, weights=net)
        np.testing.assert_allclose(tiled, whole, atol=1e-3, rtol=0)
        assert np.abs(tiled - whole).max() < 1e-5


def _filter_net(seed=0) -> RefineNet:
    """A network with a gated linear filter bank, filters and gates non-trivial."""
    torch.manual_seed(seed)
    net = RefineNet(channels=8, blocks=2, filters=2, filter_size=9)
    torch.nn.init.normal_(net.bank, std=0.05)
    torch.nn.init.normal_(net.gate.weight, std=0.1)
    return net.eval()


def test_filter_bank_starts_at_zero_and_keeps_flat_fields():
    net = RefineNet(channels=8, blocks=2, filters=2)
    planes = torch.rand(1, 5, 32, 32)
    assert float(net(planes, torch.zeros(1, N_GLOBAL_FEATURES)).abs().max()) == 0.0
    # trained filters have zero DC gain: on a flat image the bank adds nothing
    net = _filter_net(1)
    flat = torch.full((1, 5, 32, 32), 0.4)
    bare = RefineNet(channels=8, blocks=2)
    bare.load_state_dict(net.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(net(flat, torch.zeros(1, N_GLOBAL_FEATURES)), bare.eval()(flat, torch.zeros(1, N_GLOBAL_FEATURES)),
                                   atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="filter_size"):
        RefineNet(filters=1, filter_size=8)


def test_tiled_equals_whole_image_with_filter_bank():
    net = _filter_net(2)
    img, conf = _inputs((70, 90, 3), seed=4)
    whole = refine_image(img, conf, cfa="RGGB", scale=1.0, noise=NOISE, tile=4096, weights=net)
    assert np.abs(whole - img).max() > 1e-3
    for tile in (16, 40):
        tiled = refine_image(img, conf, cfa="RGGB", scale=1.0, noise=NOISE, tile=tile, weights=net)
        assert np.abs(tiled - whole).max() < 1e-5


def test_tile_margin_covers_receptive_field():
    """A change at one pixel moves no network output farther than its radius."""
    net = _random_net(3).eval()
    img, conf = _inputs((96, 96), seed=3)
    img2 = img.copy()
    img2[48, 48] += 0.5
    g = torch.zeros(1, N_GLOBAL_FEATURES)
    with torch.no_grad():
        a, b = (net(torch.from_numpy(pixel_features(x, conf, conf_ref=1.0, noise=NOISE))[None], g)[0].numpy()
                for x in (img, img2))
    # Beyond the receptive field a change may only be rounding: summation
    # order (and so the last bits) differs between CPUs and thread counts, so
    # "moved at all" is judged against a tolerance far below the 0.5 step.
    tol = 1e-6

    def reach(diff: np.ndarray) -> int:
        changed = np.argwhere(diff > tol)
        assert changed.size
        return int(np.abs(changed - 48).max())

    assert reach(np.abs(a - b).max(axis=0)) <= net.radius + 1
    # refine_image adds the high-pass of the residual (Gaussian truncated at 3 sigma)
    ra = refine_image(img, conf, cfa=None, scale=1.0, noise=NOISE, weights=net, precision="fp32")
    rb = refine_image(img2, conf, cfa=None, scale=1.0, noise=NOISE, weights=net, precision="fp32")
    assert reach(np.abs(ra - rb)) <= net.radius + 1 + int(np.ceil(3 * DC_SIGMA))


def test_flat_field_keeps_its_level():
    """The residual is high-passed: a flat field keeps its level exactly.

    What remains is the pixel shuffle's 2x2 pattern, zero-mean; measured with
    the shipped weights: at most 7e-4 of full scale at scales 1 and 2 and
    2.3e-3 at scale 4 (level 1.0), bounded here at 3e-3 as a regression guard.
    """
    for shape, cfa in (((64, 66, 3), "RGGB"), ((63, 65), None)):
        for level in (0.05, 0.5, 1.0):
            for scale in (1.0, 2.0, 4.0):
                img = np.full(shape, level, np.float32)
                out = refine_image(img, np.full(shape[:2], 4.0, np.float32), cfa=cfa, scale=scale, noise=NOISE)
                # over whole periods of the 2x2 pattern the level is exact
                even = out[: shape[0] - shape[0] % 2, : shape[1] - shape[1] % 2]
                assert abs(float(even.mean(dtype=np.float64)) - level) < 1e-6
                assert np.abs(out - img).max() < 3e-3


def test_confidence_reference_is_scale_free():
    conf = np.random.default_rng(4).random((50, 60)).astype(np.float32) + 0.5
    assert confidence_reference(7.0 * conf) == pytest.approx(7.0 * confidence_reference(conf), rel=1e-6)
    planes_a = pixel_features(np.zeros((50, 60), np.float32), conf, conf_ref=confidence_reference(conf), noise=(0, 0))
    planes_b = pixel_features(
        np.zeros((50, 60), np.float32), 7 * conf, conf_ref=confidence_reference(7 * conf), noise=(0, 0)
    )
    np.testing.assert_allclose(planes_a[3], planes_b[3], atol=1e-6)
    assert confidence_reference(np.zeros((4, 4), np.float32)) == 1.0


def test_noise_plane():
    img = np.full((4, 4), 0.25, np.float32)
    planes = pixel_features(img, np.ones((4, 4), np.float32), conf_ref=1.0, noise=(4e-3, 1e-4))
    np.testing.assert_allclose(planes[4], 10.0 * np.sqrt(4e-3 * 0.25 + 1e-4), rtol=1e-5)
    np.testing.assert_allclose(planes[3], np.log1p(1.0), rtol=1e-6)
    np.testing.assert_array_equal(planes[0], planes[2])


def test_missing_weight_file(tmp_path):
    missing = tmp_path / "nothing.pt"
    img, conf = _inputs((20, 20, 3))
    with pytest.raises(RefinerWeightsError, match="nothing.pt") as info:
        refine_image(img, conf, cfa="RGGB", scale=1.0, noise=NOISE, weights=missing)
    assert "refine=False" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_corrupt_weight_file(tmp_path):
    bad = tmp_path / "refiner.pt"
    bad.write_bytes(b"this is not a torch file" * 10)
    img, conf = _inputs((20, 20, 3))
    with pytest.raises(RefinerWeightsError, match="refiner.pt") as info:
        refine_image(img, conf, cfa=None, scale=1.0, noise=NOISE, weights=bad)
    assert "refine=False" in str(info.value)


def test_hash_mismatch_detected(tmp_path):
    """A copy of the shipped weights with its manifest, then one flipped byte."""
    manifest = json.loads((WEIGHTS_DIR / MANIFEST).read_text())
    name = manifest["modes"]["cfa"]
    shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    shutil.copy(WEIGHTS_DIR / MANIFEST, tmp_path / MANIFEST)
    assert isinstance(load_refiner("cfa", tmp_path / name), RefineNet)
    data = bytearray((tmp_path / name).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(RefinerWeightsError, match="SHA-256"):
        load_refiner("cfa", tmp_path / name)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(RefineNet(channels=8, blocks=1).state_dict(), path)
    with pytest.raises(RefinerWeightsError, match="small.pt"):
        load_refiner("grey", path)


def test_progress_bar(capsys):
    img, conf = _inputs((40, 40, 3))
    out = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, tile=16, progress=True)
    err = capsys.readouterr().err
    assert "refine" in err and "9/9" in err
    np.testing.assert_allclose(out, refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise=(-1.0, 0.0)), "noise"),
        (dict(noise="x"), "noise"),
        (dict(scale=0.0), "scale"),
        (dict(tile=1), "tile"),
        (dict(ensemble=3), "ensemble"),
        (dict(ensemble=True), "ensemble"),
        (dict(precision="fp16"), "precision"),
    ],
)
def test_bad_arguments(kwargs, match):
    img, conf = _inputs((20, 20, 3))
    args = dict(cfa=None, scale=1.0, noise=NOISE)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        refine_image(img, conf, **args)


def test_bad_shapes():
    img, conf = _inputs((20, 20, 3))
    with pytest.raises(ValueError, match="confidence"):
        refine_image(img, conf[:10], cfa=None, scale=1.0, noise=NOISE)
    with pytest.raises(ValueError, match="cfa"):
        refine_image(img[..., 0], conf, cfa="RGGB", scale=1.0, noise=NOISE)
    with pytest.raises(ValueError, match="image"):
        refine_image(img[..., :2], conf, cfa=None, scale=1.0, noise=NOISE)


def test_heldout_images_not_in_training():
    assert not set(HELDOUT_IMAGES) & set(TRAIN_IMAGES)
    assert not set(EXCLUDED_IMAGES) & set(TRAIN_IMAGES)
    assert set(HELDOUT_IMAGES) | set(TRAIN_IMAGES) <= set(SAMPLE_IMAGES)


@pytest.mark.parametrize("bf16", [False, True])
def test_one_training_step_reduces_loss_on_toy_batch(bf16):
    from mfsr.refine.train import loss_fn

    torch.manual_seed(0)
    net = RefineNet(channels=8, blocks=1)
    rng = np.random.default_rng(5)
    planes = torch.from_numpy(rng.random((2, 5, 16, 16), dtype=np.float32))
    gl = torch.zeros(2, N_GLOBAL_FEATURES)
    truth = planes[:, :3] + 0.05
    grey = torch.tensor([False, True])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with torch.no_grad():
        before = float(loss_fn(net, planes, gl, truth, grey, bf16=bf16))
    for _ in range(10):
        opt.zero_grad()
        loss_fn(net, planes, gl, truth, grey, bf16=bf16).backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(net, planes, gl, truth, grey, bf16=bf16)) < before


def test_loss_weighs_harmed_examples_by_one_plus_harm_weight():
    from mfsr.refine.train import MSE_FLOOR, loss_fn

    net = _random_net(1)
    rng = np.random.default_rng(6)
    planes = torch.from_numpy(rng.random((3, 5, 16, 16), dtype=np.float32))
    gl = torch.zeros(3, N_GLOBAL_FEATURES)
    grey = torch.tensor([False, False, False])
    with torch.no_grad():
        resid = net(planes, gl)
        # example 0: already perfect (harmed); 1: offset; 2: mostly the network's own residual (helped)
        truth = planes[:, :3] + torch.tensor([0.0, 0.02, 0.0])[:, None, None, None]
        truth[2] += 0.8 * resid[2]
        out = (planes[:, :3] + resid).numpy()
        losses = {w: float(loss_fn(net, planes, gl, truth, grey, harm_weight=w)) for w in (0.0, 1.0, 4.0)}
    fused, t = planes[:, :3].numpy().astype(np.float64), truth.numpy().astype(np.float64)
    ratio = np.log((((out - t) ** 2).mean(axis=(1, 2, 3)) + MSE_FLOOR) / (((fused - t) ** 2).mean(axis=(1, 2, 3)) + MSE_FLOOR))
    assert (ratio > 0).any() and (ratio < 0).any()  # harmed and helped examples both
    for w, got in losses.items():
        assert got == pytest.approx(np.mean(ratio + w * np.maximum(ratio, 0)), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("size", [2, 8])
def test_self_ensemble_averages_the_views(size):
    """Each view's refinement, turned back, averaged: the ensemble of ``size`` views."""
    net = _random_net(5)
    # sides a multiple of 4: the local mean's coarse grid then turns with the image
    img, conf = _inputs((64, 64, 3), seed=5)
    kw = dict(cfa="RGGB", scale=2.0, noise=NOISE, weights=net, precision="fp32", overshoot=np.inf)  # the bound is not linear
    single = refine_image(img, conf, ensemble=1, **kw)
    views = [(0, False), (1, False)] if size == 2 else [(k, f) for f in (False, True) for k in range(4)]
    expected = np.zeros_like(img)
    for k, flip in views:
        fwd = (lambda x: np.rot90(x[:, ::-1] if flip else x, k))
        back = np.rot90(refine_image(fwd(img).copy(), fwd(conf).copy(), ensemble=1, **kw), -k)
        expected += back[:, ::-1] if flip else back
    expected /= len(views)
    out = refine_image(img, conf, ensemble=size, **kw)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=0)
    assert np.abs(out - single).max() > 1e-3  # the views differ: the ensemble is not the single pass
    # any shape, any tiling
    img, conf = _inputs((37, 50), seed=6)
    kw["cfa"] = None
    whole = refine_image(img, conf, ensemble=size, tile=4096, **kw)
    np.testing.assert_allclose(refine_image(img, conf, ensemble=size, tile=16, **kw), whole, atol=1e-5, rtol=0)


def test_ensemble_size_defaults_to_the_manifests(tmp_path):
    from mfsr.refine._weights import refiner_ensemble

    torch.save(_random_net(7).state_dict(), tmp_path / "refiner.pt")
    manifest = {
        "format": 1,
        "modes": {m: "refiner.pt" for m in MODES},
        "files": {"refiner.pt": {"architecture": {"channels": 8, "blocks": 2}}},
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_ensemble("cfa", tmp_path) is None  # no calibration
    manifest["strength"] = {m: {"1": 0.5, "2": 1.0} for m in MODES}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_ensemble("cfa", tmp_path) == 1  # calibrated before the ensemble existed
    manifest["ensemble"] = {"cfa": 2}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_ensemble("cfa", tmp_path) == 2
    assert refiner_ensemble("rgb", tmp_path) == 1
    img, conf = _inputs((40, 44, 3), seed=7)
    kw = dict(scale=2.0, noise=NOISE, weights=tmp_path, precision="fp32")
    np.testing.assert_array_equal(refine_image(img, conf, cfa="RGGB", **kw),
                                  refine_image(img, conf, cfa="RGGB", ensemble=2, **kw))
    np.testing.assert_array_equal(refine_image(img, conf, cfa=None, **kw),
                                  refine_image(img, conf, cfa=None, ensemble=1, **kw))
    # another size than the strength was calibrated for: a warning naming the remedy
    with pytest.warns(UserWarning, match="ensemble: .* calibrated for 2 view.*--ensemble cfa=1"):
        one = refine_image(img, conf, cfa="RGGB", ensemble=1, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a strength given explicitly: no warning
        np.testing.assert_array_equal(refine_image(img, conf, cfa="RGGB", ensemble=1, strength=1.0, **kw), one)


def test_bfloat16_and_float32_agree():
    """bfloat16 arithmetic (the default on CPUs with bf16 units) changes the refinement by rounding only."""
    img, conf = _inputs((64, 72, 3), seed=8)
    img = gaussian_filter(img, (1.5, 1.5, 0))  # image-like: smooth with detail, not white noise
    kw = dict(cfa="RGGB", scale=1.0, noise=NOISE, ensemble=1, strength=1.0)
    f32 = refine_image(img, conf, precision="fp32", **kw)
    b16 = refine_image(img, conf, precision="bf16", **kw)
    assert np.abs(f32 - img).max() > 1e-3
    diff = b16 - f32
    assert 0 < np.abs(diff).max() < 2e-3
    assert np.sqrt(np.mean(diff**2)) < 0.02 * np.sqrt(np.mean((f32 - img) ** 2))


def test_strength_zero_returns_fusion_and_one_is_raw():
    net = _random_net(6)
    img, conf = _inputs((32, 36, 3), seed=6)
    np.testing.assert_array_equal(
        refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, strength=0.0), img
    )
    # linear in the strength (without the overshoot bound, which is not)
    full = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, strength=1.0, overshoot=np.inf)
    half = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, strength=0.5, overshoot=np.inf)
    np.testing.assert_allclose(half - img, 0.5 * (full - img), atol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, strength=1.5)


def test_calibrated_strength_is_interpolated_in_log_scale(tmp_path):
    from mfsr.refine._weights import refiner_strength

    path = tmp_path / "refiner.pt"
    torch.save(RefineNet().state_dict(), path)
    manifest = {
        "format": 1,
        "modes": {m: "refiner.pt" for m in MODES},
        "files": {"refiner.pt": {"architecture": {"channels": 32, "blocks": 4}}},
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_strength("cfa", 2.0, path) == 1.0  # no calibration: raw network
    manifest["strength"] = {"cfa": {"1": 0.2, "4": 1.0}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_strength("cfa", 1.0, path) == pytest.approx(0.2)
    assert refiner_strength("cfa", 2.0, path) == pytest.approx(0.6)
    assert refiner_strength("cfa", 8.0, path) == pytest.approx(1.0)
    assert refiner_strength("cfa", 0.5, path) == pytest.approx(0.2)
    assert refiner_strength("grey", 2.0, path) == 1.0
    # a known optical blur has its own table, and falls back to the blind one without it
    assert refiner_strength("cfa", 1.0, path, psf_known=True) == pytest.approx(0.2)
    manifest["strength_known_psf"] = {"cfa": {"1": 0.8, "4": 1.0}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_strength("cfa", 1.0, path, psf_known=True) == pytest.approx(0.8)
    assert refiner_strength("cfa", 1.0, path) == pytest.approx(0.2)
    # what real captures allow caps both tables; elsewhere the calibration stands
    manifest["real_capture_limit"] = {"cfa": {"1": 0.1, "2": 0.8}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert refiner_strength("cfa", 1.0, path) == pytest.approx(0.1)
    assert refiner_strength("cfa", 1.0, path, psf_known=True) == pytest.approx(0.1)
    assert refiner_strength("cfa", 4.0, path) == pytest.approx(0.8)
    assert refiner_strength("grey", 2.0, path) == 1.0


def test_psf_feature_is_the_blur_in_output_pixels():
    from mfsr.refine._features import PSF_FEATURE_MAX, global_features

    unknown = global_features(cfa=True, grey=False, scale=2.0, conf_ref=3.0)
    known = global_features(cfa=True, grey=False, scale=2.0, conf_ref=3.0, psf_sigma=0.3)
    assert unknown.shape == known.shape == (6,)
    np.testing.assert_array_equal(unknown[:4], known[:4])
    assert tuple(unknown[4:]) == (0.0, 0.0)
    assert known[4] == 1.0 and known[5] == pytest.approx(0.6)  # 0.3 input px at scale 2
    # a sharp lens is known too: flag 1, blur 0
    sharp = global_features(cfa=True, grey=False, scale=2.0, conf_ref=3.0, psf_sigma=0.0)
    assert tuple(sharp[4:]) == (1.0, 0.0)
    huge = global_features(cfa=False, grey=True, scale=4.0, conf_ref=3.0, psf_sigma=5.0)
    assert huge[5] == PSF_FEATURE_MAX


def test_psf_sigma_reaches_the_network_and_is_checked():
    img, conf = _inputs((40, 52, 3))
    torch.manual_seed(0)
    net = _random_net(3)
    torch.nn.init.normal_(net.head.weight, std=0.3)
    blind = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net)
    told = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, psf_sigma=0.4)
    assert np.abs(told - blind).max() > 1e-4
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="psf_sigma"):
            refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, psf_sigma=bad)
    with pytest.raises(TypeError, match="psf_sigma"):
        refine_image(img, conf, cfa="RGGB", scale=2.0, noise=NOISE, weights=net, psf_sigma="0.5")


def test_networks_without_the_blur_input_still_load_and_widen_exactly(tmp_path):
    from mfsr.refine._network import n_globals_of, widen_globals

    torch.manual_seed(0)
    old = RefineNet(channels=8, blocks=2, n_globals=4).eval()
    torch.nn.init.normal_(old.tail.weight, std=0.1)
    path = tmp_path / "old.pt"
    torch.save(old.state_dict(), path)
    (tmp_path / MANIFEST).write_text(json.dumps({
        "modes": {m: "old.pt" for m in MODES},
        "files": {"old.pt": {"sha256": sha256_file(path), "architecture": {"channels": 8, "blocks": 2}}},
    }))
    loaded = load_refiner("rgb", tmp_path)
    assert loaded.n_globals == 4 == n_globals_of(old.state_dict())
    # widened to the blur input with zero weights on it: the same function, whatever the blur says
    new = RefineNet(channels=8, blocks=2).eval()
    new.load_state_dict(widen_globals(old.state_dict()))
    x = torch.rand(1, 5, 24, 24)
    g = torch.tensor([[1.0, 0.0, 0.5, 0.8, 1.0, 0.7]])
    torch.testing.assert_close(new(x, g), old(x, g), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="n_globals"):
        widen_globals(new.state_dict(), 4)


def test_training_tells_half_the_examples_their_blur():
    from mfsr.refine.train import PSF_KNOWN_SHARE, Example, _globals_with_blur

    g = np.array([1.0, 0.0, 0.5, 0.8, 0.0, 0.0], np.float32)
    ex = Example(np.zeros((5, 4, 4), np.float32), g, np.zeros((3, 4, 4), np.float32), False,
                 {"blur_sigma": 0.45})
    assert tuple(_globals_with_blur(ex, True)[4:]) == pytest.approx((1.0, 0.45))
    np.testing.assert_array_equal(_globals_with_blur(ex, False), g)
    assert tuple(ex.globals_) == tuple(g)  # the cached example is not modified
    assert 0.0 < PSF_KNOWN_SHARE < 1.0


def test_training_tint_varies_smoothly_in_space():
    from mfsr.refine.train import _smooth_tint

    tint = _smooth_tint(np.random.default_rng(0), 150, 150)
    assert tint.shape == (150, 150, 3) and tint.dtype == np.float32
    assert tint.min() >= 0.4 and tint.max() <= 1.0
    # chroma is not one global colour (that would tie chroma to luminance) ...
    assert np.ptp(tint[..., 0] / tint[..., 1]) > 0.05
    # ... and changes slowly: neighbouring pixels differ by far less than the range
    assert np.abs(np.diff(tint, axis=1)).max() < 0.02


@pytest.mark.parametrize("name, package, relpath, factor", TRAIN_EXTRA_PHOTOS)
def test_extra_training_photos_load(name, package, relpath, factor):
    from mfsr.refine.train import _extra_photo

    pytest.importorskip(package, reason=f"the {name!r} training photo ships with {package} (pip install 'mfsr[train]')")
    img = _extra_photo(package, relpath, factor)
    assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    assert min(img.shape[:2]) >= 200  # room for the largest training crop (161 px)
    assert name not in HELDOUT_IMAGES


def test_mode_and_scale_draws_follow_their_shares():
    from mfsr.refine import train as tr

    assert sum(tr.MODE_SHARES.values()) == pytest.approx(1.0)
    assert sum(tr.SCALE_SHARES.values()) < 1.0  # the rest is U(1.25, 4)
    scene = np.full((200, 200), 0.5, np.float32)
    pool = ([("flat", scene, 1.0)], [("flat", scene)])
    rng = np.random.default_rng(3)
    draws = [tr._draw_config(rng, pool)[0] for _ in range(400)]
    share_cfa = np.mean([d["mode"] == "cfa" for d in draws])
    share_x1 = np.mean([d["scale"] == 1.0 for d in draws])
    # binomial standard error at n = 400 is about 0.025
    assert abs(share_cfa - tr.MODE_SHARES["cfa"]) < 0.08
    assert abs(share_x1 - tr.SCALE_SHARES[1.0]) < 0.08


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The whole training script at a toy size (shared stage, then the Bayer fine-tune): folder, manifest."""
    pytest.importorskip("sklearn", reason="training photos ship with scikit-learn (pip install 'mfsr[train]')")
    pytest.importorskip("pywt", reason="training photos ship with PyWavelets (pip install 'mfsr[train]')")
    from mfsr.refine.train import train

    folder = tmp_path_factory.mktemp("toy_run")
    manifest = train(folder, bursts=2, val_bursts=1, steps=3, cfa_bursts=2, cfa_steps=2, cfa_filters=1,
                     channels=4, blocks=1, log=lambda *a: None)
    return folder, manifest


def test_tiny_training_run_writes_loadable_weights(toy_run, tmp_path):
    from mfsr.refine.train import train

    run, manifest = toy_run
    stages = manifest["training"]["stages"]
    assert stages["shared"]["steps"] == 3 and stages["cfa"]["steps"] == 2
    assert stages["cfa"]["bursts_by_mode"] == {"grey": 0, "rgb": 0, "cfa": 2}
    assert manifest["training"]["precision"].startswith("bf16")
    assert manifest["modes"] == {"grey": "refiner.pt", "rgb": "refiner.pt", "cfa": "refiner_cfa.pt"}
    for name in ("refiner.pt", "refiner_cfa.pt", "manifest.json", "training.csv", "training.png"):
        assert (run / name).is_file()
    with open(run / "training.csv") as f:
        assert [line.split(",")[0] for line in f][1:] == ["shared", "cfa"]
    # the folder resolves each mode to its own file, hash-checked
    shared, bayer = load_refiner("grey", run), load_refiner("cfa", run)
    assert (bayer.channels, bayer.blocks, bayer.filters) == (4, 1, 1)
    assert manifest["files"]["refiner_cfa.pt"]["architecture"]["filters"] == 1
    assert not torch.equal(shared.tail.weight, bayer.tail.weight)
    img, conf = _inputs((24, 24, 3), seed=1)
    out = refine_image(img, conf, cfa="RGGB", scale=2.0, noise=(0.0, 0.0), weights=run)
    assert out.shape == img.shape and np.isfinite(out).all()
    # the Bayer stage alone, from the shared weights
    again = train(tmp_path / "ft", init=run / "refiner.pt", minutes=0, val_bursts=1, cfa_bursts=2,
                  cfa_steps=1, channels=4, blocks=1, harm_weight=10.0, log=lambda *a: None)
    assert "shared" not in again["training"]["stages"]
    # the loss that was used is recorded, and the command that reproduces it
    assert "10 x its positive part" in again["training"]["loss"]
    assert "--harm-weight 10" in again["training"]["command"]
    assert "--harm-weight" not in manifest["training"]["command"]
    # a fine-tune kept for Bayer fusions only: grey and RGB keep the init file, byte for byte
    cfa = train(tmp_path / "cfa", init=run / "refiner.pt", steps=1, bursts=2, val_bursts=1, channels=4, blocks=1,
                cfa_only=True, log=lambda *a: None)
    assert cfa["modes"] == {"grey": "refiner.pt", "rgb": "refiner.pt", "cfa": "refiner_cfa.pt"}
    assert sha256_file(tmp_path / "cfa" / "refiner.pt") == sha256_file(run / "refiner.pt")
    assert cfa["files"]["refiner.pt"]["sha256"] == sha256_file(run / "refiner.pt")
    assert "--cfa-only" in cfa["training"]["command"]
    assert not torch.equal(load_refiner("cfa", tmp_path / "cfa").tail.weight,
                           load_refiner("grey", tmp_path / "cfa").tail.weight)
    with pytest.raises(ValueError, match="cfa_only"):
        train(tmp_path / "bad", steps=1, cfa_only=True, log=lambda *a: None)
    assert again["training"]["init"]["sha256"] == sha256_file(run / "refiner.pt")
    assert again["training"]["init"]["manifest_training"]["stages"]["shared"]["steps"] == 3
    with pytest.raises(ValueError, match="minutes"):
        train(tmp_path / "none", minutes=0, log=lambda *a: None)


def test_bayer_stage_on_every_mode_with_its_own_harm_weight(toy_run, tmp_path, monkeypatch):
    """The one-run recipe: the Bayer stage trains on fresh bursts of every mode, harm-weighted."""
    from mfsr.refine import train as train_mod

    seen = {}
    fit = train_mod._fit

    def spy(*args, **kwargs):
        seen[kwargs["stage"]] = (kwargs["harm_weight"], {ex.info["mode"] for ex in args[1]})
        return fit(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_fit", spy)
    run = toy_run[0]
    out = train_mod.train(tmp_path / "one", steps=1, bursts=2, val_bursts=1, cfa_steps=1, cfa_bursts=8,
                          channels=4, blocks=1, cfa_data="all", cfa_harm_weight=10.0, log=lambda *a: None)
    assert seen["shared"][0] == 1.0 and seen["cfa"][0] == 10.0
    assert len(seen["cfa"][1]) > 1  # not Bayer bursts only
    stage = out["training"]["stages"]["cfa"]
    assert (stage["data"], stage["harm_weight"]) == ("all", 10.0)
    assert sum(stage["bursts_by_mode"].values()) == 8 and stage["bursts_by_mode"]["cfa"] < 8
    assert "--cfa-data all --cfa-harm-weight 10" in out["training"]["command"]
    assert "Bayer stage: 10 x" in out["training"]["loss"]
    assert out["modes"]["cfa"] == "refiner_cfa.pt" and out["modes"]["grey"] == "refiner.pt"
    # without its own weight the stage takes the shared one; the default data stay Bayer only
    seen.clear()
    plain = train_mod.train(tmp_path / "plain", init=run / "refiner.pt", minutes=0, val_bursts=1, cfa_bursts=2,
                            cfa_steps=1, channels=4, blocks=1, harm_weight=3.0, log=lambda *a: None)
    assert seen["cfa"] == (3.0, {"cfa"})
    assert "--cfa-data" not in plain["training"]["command"] and "--cfa-harm-weight" not in plain["training"]["command"]
    with pytest.raises(ValueError, match="cfa_data"):
        train_mod.train(tmp_path / "bad", steps=1, cfa_data="grey", log=lambda *a: None)


def test_calibration_uses_each_modes_weights(toy_run, tmp_path, monkeypatch):
    from mfsr.refine import _inference
    from mfsr.refine.calibrate import SCALES, calibrate

    # a copy: calibration writes into the manifest
    shutil.copytree(toy_run[0], tmp_path, dirs_exist_ok=True)
    hashes = {n: sha256_file(tmp_path / n) for n in ("refiner.pt", "refiner_cfa.pt")}
    seen = []
    original = _inference.refine_image

    def spy(image, confidence, *, cfa, weights, **kw):
        seen.append((cfa, image.ndim, weights.name, kw["ensemble"]))
        return original(image, confidence, cfa=cfa, weights=weights, **kw)

    monkeypatch.setattr(_inference, "refine_image", spy)
    manifest = calibrate(tmp_path, bursts=1, ensemble={"cfa": 2}, log=lambda *a: None)
    # grey and RGB fusions are scored with the shared file, Bayer ones with the Bayer file
    assert {w for cfa, _, w, _ in seen if cfa} == {"refiner_cfa.pt"}
    assert {w for cfa, _, w, _ in seen if not cfa} == {"refiner.pt"}
    # with the self-ensemble they are stored with
    assert {n for cfa, _, _, n in seen if cfa} == {2} and {n for cfa, _, _, n in seen if not cfa} == {1}
    assert manifest["ensemble"] == {"grey": 1, "rgb": 1, "cfa": 2}
    assert "--ensemble cfa=2" in manifest["calibration"]["command"]
    assert set(manifest["strength"]) == set(MODES)
    assert all(len(manifest["strength"][m]) == len(SCALES) for m in MODES)
    assert all(len(manifest["strength_known_psf"][m]) == len(SCALES) for m in MODES)
    assert "worst" in manifest["calibration"]["rule"]
    assert {n: sha256_file(tmp_path / n) for n in hashes} == hashes


def test_more_calibration_bursts_add_to_the_same_ones(toy_run, tmp_path, monkeypatch):
    from mfsr.refine import calibrate as cal

    shutil.copytree(toy_run[0], tmp_path, dirs_exist_ok=True)
    drawn = []
    original = cal.draw_burst

    def spy(rng, pool, mode=None, scale=None):
        cfg, scene, burst = original(rng, pool, mode=mode, scale=scale)
        drawn.append((mode, scale, cfg["seed"]))
        return cfg, scene, burst

    monkeypatch.setattr(cal, "draw_burst", spy)
    monkeypatch.setattr(cal, "SCALES", (1.0, 2.0))
    cal.calibrate(tmp_path, bursts=1, log=lambda *a: None)
    one, drawn[:] = list(drawn), []
    cal.calibrate(tmp_path, bursts=2, log=lambda *a: None)
    # every (mode, scale) bin starts with the burst it had before, then adds one
    assert drawn[0::2] == one and len(drawn) == 2 * len(one) == 2 * len(MODES) * 2
    assert len({s for *_, s in drawn}) == len(drawn)


def test_weight_folder_picks_each_modes_file(tmp_path):
    a, b = _random_net(1), _random_net(2)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save(b.state_dict(), tmp_path / "b.pt")
    arch = {"channels": a.channels, "blocks": a.blocks}
    (tmp_path / MANIFEST).write_text(json.dumps({
        "modes": {"grey": "a.pt", "rgb": "a.pt", "cfa": "b.pt"},
        "files": {n: {"sha256": sha256_file(tmp_path / n), "architecture": arch} for n in ("a.pt", "b.pt")},
    }))
    assert torch.equal(load_refiner("grey", tmp_path).tail.weight, a.tail.weight)
    assert torch.equal(load_refiner("cfa", tmp_path).tail.weight, b.tail.weight)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(RefinerWeightsError, match="manifest.json"):
        load_refiner("cfa", tmp_path)


def test_calibrate_command_line_checks_the_ensemble(tmp_path, capsys):
    from mfsr.refine.calibrate import main

    for bad in ("cfa=3", "bayer=2", "cfa"):
        with pytest.raises(SystemExit):
            main(["--dir", str(tmp_path), "--ensemble", bad])
        assert "--ensemble" in capsys.readouterr().err


def test_calibration_prefers_safety_over_the_mean():
    from mfsr.refine.calibrate import STRENGTHS, WORST_ALLOWED, choose_strength

    a = np.asarray(STRENGTHS)
    # mean gain rises with strength, but one burst is harmed beyond the allowance above 0.4
    good = np.tile(2.0 * a, (3, 1))
    harmed = np.where(a > 0.4, -5.0 * (a - 0.4), 0.5 * a)
    gains = np.vstack([good, harmed])
    best = choose_strength(gains)
    assert a[best] == pytest.approx(0.4)
    assert gains[:, best].min() >= WORST_ALLOWED
    # harm at every strength: refinement off
    assert choose_strength(np.tile(-a, (2, 1))) == 0
    # nothing harmed: the highest mean wins
    assert a[choose_strength(np.tile(a, (2, 1)))] == 1.0


def test_calibration_gain_ignores_changes_far_below_the_loss_floor():
    from mfsr.refine.calibrate import floored_gain_db
    from mfsr.refine.train import MSE_FLOOR

    # ordinary errors: the plain PSNR gain
    assert floored_gain_db(1e-3, 2e-3) == pytest.approx(10 * np.log10(2.0), abs=0.01)
    # 73.5 dB -> 70.7 dB: almost no loss once both are floored at 60 dB, not -2.8 dB
    assert floored_gain_db(10**-7.07, 10**-7.35) == pytest.approx(
        10 * np.log10((10**-7.35 + MSE_FLOOR) / (10**-7.07 + MSE_FLOOR)))
    assert -0.2 < floored_gain_db(10**-7.07, 10**-7.35) < 0.0


def test_refinement_change_is_bounded_by_the_fused_neighbourhood():
    """A wild network cannot ring, crush shadows to black or run away from the fusion."""
    net = _random_net(7)
    with torch.no_grad():  # make it wild: a large random residual
        for prm in net.parameters():
            prm.mul_(4.0)
    img, conf = _inputs((48, 48, 3), seed=7)
    img[:, :24] *= 0.01  # a dark half beside a bright one
    kw = dict(cfa=None, scale=2.0, noise=NOISE, weights=net, strength=1.0, precision="fp32")
    free = refine_image(img, conf, overshoot=np.inf, **kw)
    held = refine_image(img, conf, **kw)
    from scipy.ndimage import maximum_filter, minimum_filter

    lo = minimum_filter(img, size=(3, 3, 1), mode="nearest")
    hi = maximum_filter(img, size=(3, 3, 1), mode="nearest")
    assert (free < lo - (hi - lo)).any() or (free > 2 * hi - lo).any()  # the bound has work to do
    assert (held >= np.maximum(lo - (hi - lo), 0) - 1e-6).all() and (held <= 2 * hi - lo + 1e-6).all()
    quarter = refine_image(img, conf, overshoot=0.25, **kw)  # a shadow keeps 3/4 of its level at least
    assert (quarter >= np.maximum(lo - 0.25 * (hi - lo), 0.75 * lo) - 1e-6).all()
    tight = refine_image(img, conf, overshoot=0.0, **kw)
    assert (tight >= lo - 1e-6).all() and (tight <= hi + 1e-6).all()
    with pytest.raises(ValueError, match="overshoot"):
        refine_image(img, conf, overshoot=-1.0, **kw)


# --- cfa= takes the Bayer pattern or None; the old bool form still works, with a warning (issue 18)


def _refine(img, conf, cfa, **kw):
    return refine_image(img, conf, cfa=cfa, scale=2.0, noise=NOISE, precision="fp32", **kw)


def test_patterns_refine_as_cfa_true():
    """Every pattern (any case) selects the shipped mosaic weights, as cfa=True did: same result."""
    img, conf = _inputs((24, 28, 3), seed=1)
    with pytest.warns(DeprecationWarning):
        old = _refine(img, conf, True)
    for pattern in PATTERNS + ("rggb", "gBrG"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the pattern form does not warn
            new = _refine(img, conf, pattern)
        # one code path after the argument check: identical, not merely close
        np.testing.assert_array_equal(new, old)
    # and the mosaic weights are not the RGB ones (the test would be void otherwise)
    assert not np.array_equal(old, _refine(img, conf, None))


@pytest.mark.parametrize("shape", [(20, 22), (20, 22, 3)])
def test_none_refines_as_cfa_false(shape):
    img, conf = _inputs(shape, seed=2)
    with pytest.warns(DeprecationWarning):
        old = _refine(img, conf, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _refine(img, conf, None)
    np.testing.assert_array_equal(new, old)


def test_global_features_follow_the_pattern():
    """With a given network (no mode lookup) the mosaic flag still reaches the network's global features."""
    img, conf = _inputs((20, 24, 3), seed=3)
    net = _random_net()
    with pytest.warns(DeprecationWarning):
        old_true, old_false = _refine(img, conf, True, weights=net), _refine(img, conf, False, weights=net)
    np.testing.assert_array_equal(_refine(img, conf, "BGGR", weights=net), old_true)
    np.testing.assert_array_equal(_refine(img, conf, None, weights=net), old_false)
    assert not np.array_equal(old_true, old_false)


@pytest.mark.parametrize("value, instead", [(True, "'RGGB', 'BGGR', 'GRBG', 'GBRG'"), (False, "cfa=None"),
                                            (np.bool_(True), "'RGGB'")])
def test_bool_warns_with_the_replacement_at_the_caller(value, instead):
    img, conf = _inputs((16, 16, 3), seed=4)
    with pytest.warns(DeprecationWarning, match=r"cfa=(True|False) is deprecated") as record:
        _refine(img, conf, value, weights=_random_net())
    (w,) = [r for r in record if issubclass(r.category, DeprecationWarning)]
    assert instead in str(w.message)
    assert w.filename == __file__  # points at the call, not into mfsr


@pytest.mark.parametrize("bad", ["RGBG", "", "bayer", 1, 0, "RGGB "])
def test_unknown_pattern_names_cfa_and_the_accepted_values(bad):
    img, conf = _inputs((16, 16, 3))
    with pytest.raises(ValueError, match=r"cfa: expected a Bayer pattern \(RGGB, BGGR, GRBG, GBRG.*or None"):
        _refine(img, conf, bad, weights=_random_net())


def test_pattern_with_a_grey_image_is_refused():
    img, conf = _inputs((16, 16))
    with pytest.raises(ValueError, match="cfa: .*RGB image, got a grey"):
        _refine(img, conf, "GRBG")
