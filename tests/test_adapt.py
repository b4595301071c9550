"""mfsr.refine.adapt: self-supervised fine-tune on held-out frames."""

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from mfsr import fuse
from mfsr.held_out import frame_centres, predict_frame
from mfsr.refine import refine_image
from mfsr.refine.adapt import (
    adapt,
    choose_strength,
    degrade,
    held_out_frames,
    held_out_loss,
    main,
    sampling_positions,
)
from mfsr.refine._weights import load_refiner, refiner_strength
from mfsr.synth import sample_image, simulate_burst


@pytest.fixture(scope="module")
def burst():
    image = sample_image("astronaut", size=160)
    return simulate_burst(image, n_frames=5, scale=2, max_shift=2.0, max_rotation=0.5, blur_sigma=0.5,
                          alpha=2e-4, beta=2e-6, seed=3)


@pytest.fixture(scope="module")
def examples(burst):
    return held_out_frames(burst.frames, scale=2, holdouts=3, name="astro")


@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("blur", [0.0, 0.7])
def test_degrade_matches_predict_frame(scale, blur):
    """The torch loss samples the held-out frame exactly as mfsr.held_out does."""
    rng = np.random.default_rng(scale)
    h = 30
    flow = rng.uniform(-0.4, 0.4, (h, h, 2)).astype(np.float32)
    hr = gaussian_filter(rng.random((h * scale, h * scale, 3)), (1, 1, 0)).astype(np.float32)
    expected = predict_frame(hr, flow, scale, blur=blur)
    pos = sampling_positions(frame_centres(flow, scale), (0, 0), scale)
    got = degrade(torch.from_numpy(np.moveaxis(hr, -1, 0)[None].copy()), torch.from_numpy(pos[None]), scale, blur)
    got = np.moveaxis(got[0].numpy(), 0, -1)
    inner = (slice(8, h - 8), slice(8, h - 8))  # the prefilter is truncated; borders differ
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-5)


def test_held_out_frames_fuse_the_others(burst, examples):
    assert [ex.frame for ex in examples] == [1, 3, 4]  # spread over the non-reference frames
    ex = examples[0]
    assert ex.mode == "rgb" and ex.scale == 2
    assert ex.image.shape == (160, 160, 3) and ex.target.shape == (80, 80, 3) and ex.flow.shape == (80, 80, 2)
    np.testing.assert_array_equal(ex.target, burst.frames[1])
    # the plain fusion of the other frames, with their registration
    others = [0, 2, 3, 4]
    again = fuse(burst.frames[others], scale=2, refine=False)
    assert np.abs(again.image - ex.image).mean() < 0.01


def test_loss_of_no_change_is_zero_and_harm_counts_more(examples):
    from mfsr.refine.adapt import _Patches

    net = load_refiner("rgb")
    patches = _Patches(examples[:2], margin=net.radius + 4)
    planes, gl, pos, target, mask, chans = patches.batch(np.random.default_rng(0), 4)
    assert planes.shape[2] == planes.shape[3] and planes.shape[2] % 2 == 0
    assert mask.mean() >= 0.5

    class Zero(torch.nn.Module):
        def forward(self, planes, gl):
            return torch.zeros_like(planes[:, :3])

    loss = held_out_loss(Zero(), planes, gl, pos, target, mask, chans, scale=2, grey=False)
    assert abs(float(loss)) < 1e-6

    class Noise(torch.nn.Module):
        def forward(self, planes, gl):
            return 0.05 * torch.randn_like(planes[:, :3])

    torch.manual_seed(0)
    worse = held_out_loss(Noise(), planes, gl, pos, target, mask, chans, scale=2, grey=False, harm_weight=0.0)
    torch.manual_seed(0)
    heavier = held_out_loss(Noise(), planes, gl, pos, target, mask, chans, scale=2, grey=False, harm_weight=10.0)
    assert worse > 0 and float(heavier) == pytest.approx(11 * float(worse), rel=1e-5)


def test_choose_strength_rule():
    gains = {0.25: [0.1, 0.0], 0.5: [0.3, -0.04], 0.8: [0.4, -0.2], 1.0: [0.1, 0.1]}
    assert choose_strength(gains) == 0.5  # 0.8 harms a case; 1.0's mean is below 0.5's
    assert choose_strength({0.5: [-0.1, 0.2]}) == 0.0


def test_adapt_writes_a_weight_folder_that_fuse_uses(examples, burst, tmp_path):
    out = tmp_path / "w"
    res = adapt(examples, out, steps=3, log=lambda m: None)
    assert res.mode == "rgb" and res.scale == 2 and res.steps == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modes"]["rgb"] == "refiner_rgb_adapted.pt"
    assert manifest["strength"]["rgb"] == {"2": res.strength}
    assert "rgb" not in manifest.get("real_capture_limit", {})
    record = manifest["adapt"]
    assert record["steps"] == 3 and record["validation_frames"] == {"astro": 4}
    assert set(record["validation_gain_db_mean_worst"]["adapted"]) == {"0.1", "0.25", "0.5", "0.8", "1"}
    # a complete folder: every mode loads (hash-checked), the strength is the validated one
    for mode in ("grey", "rgb", "cfa"):
        load_refiner(mode, out)
    assert refiner_strength("rgb", 2.0, out) == res.strength
    r0 = fuse(burst.frames, scale=2, refine=False)
    direct = refine_image(r0.image, r0.confidence, cfa=None, scale=2, noise=r0.noise, weights=out)
    via_fuse = fuse(burst.frames, scale=2, refine_weights=out).image
    np.testing.assert_allclose(via_fuse, direct, atol=1e-4)
    with pytest.raises(ValueError, match="out"):
        adapt(examples, out, steps=1, log=lambda m: None)


def test_adapt_rejects_bad_input(examples, burst):
    with pytest.raises(ValueError, match="scale"):
        held_out_frames(burst.frames, scale=1.5)
    with pytest.raises(ValueError, match="at least 3 frames"):
        held_out_frames(burst.frames[:2], scale=2)
    with pytest.raises(ValueError, match="holdouts"):
        adapt(examples[-1:], "unused", steps=1, log=lambda m: None)
    with pytest.raises(ValueError, match="psf_sigma"):
        adapt(examples, "unused", steps=1, psf_sigma=-1.0, log=lambda m: None)


def test_cli_errors_name_the_argument(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "w")]) == 2
    assert "bursts" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "w"), "--scale", "1.5"]) == 2
    assert "scale" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["grey", "cfa"])
def test_adapt_runs_for_grey_frames_and_mosaics(mode, tmp_path):
    image = sample_image("chelsea", size=128, grey=mode == "grey")
    b = simulate_burst(image, n_frames=4, scale=2, max_shift=1.5, cfa="RGGB" if mode == "cfa" else None,
                       alpha=2e-4, beta=2e-6, seed=5)
    ex = held_out_frames(b.frames, scale=2, holdouts=2, cfa="RGGB" if mode == "cfa" else None, name="c")
    assert ex[0].mode == mode and ex[0].target.shape == b.frames[0].shape
    res = adapt(ex, tmp_path / "w", steps=2, log=lambda m: None)
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["modes"][mode] == f"refiner_{mode}_adapted.pt" and res.mode == mode
    load_refiner(mode, tmp_path / "w")
