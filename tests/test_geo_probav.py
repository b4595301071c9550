"""PROBA-V scene reader, cPSNR scorer and mean-of-clearest baseline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image

from mfsr.baselines import single_frame_upscale
from mfsr.geo.probav import (
    PNG_MAX,
    ProbaVScene,
    challenge_score,
    clear_fractions,
    cmse_grid,
    cpsnr,
    load_scene,
    mean_clear_baseline,
    to_unit,
)


def _reference_cmse(sr, hr, mask, border, max_value):
    """Naive per-pixel loops: the scoring page's formulas read literally."""
    h, w = hr.shape
    ch, cw = h - 2 * border, w - 2 * border
    n = 2 * border + 1
    out = np.full((n, n), np.nan)
    for u in range(n):
        for v in range(n):
            diffs = []
            for i in range(ch):
                for j in range(cw):
                    if mask[u + i, v + j]:
                        diffs.append(
                            (float(hr[u + i, v + j]) - float(sr[border + i, border + j]))
                            / max_value
                        )
            if diffs:
                b = sum(diffs) / len(diffs)
                out[u, v] = sum((d - b) ** 2 for d in diffs) / len(diffs)
    return out


def _scene_images(rng, size=384):
    hr = rng.uniform(0, 16383, (size, size))
    sm = np.ones((size, size), bool)
    return hr, sm


# --------------------------------------------------------------------------- cPSNR


def test_identical_images_score_infinite():
    rng = np.random.default_rng(0)
    hr, sm = _scene_images(rng)
    assert cpsnr(hr, hr, sm) == math.inf
    assert challenge_score(hr, hr, sm, 47.0) == 0.0


def test_hand_computed_tiny_example():
    # 4x4 images, border 1 -> 2x2 crops, shifts u, v in {0, 1, 2}.
    sr = np.zeros((4, 4))
    sr[1:3, 1:3] = [[1, 2], [3, 4]]
    hr = np.zeros((4, 4))
    hr[0:2, 2:4] = [[11, 12], [13, 15]]
    mask = np.ones((4, 4), bool)
    grid = cmse_grid(sr, hr, mask, border=1, max_value=1.0)
    # Shift (1, 1): HR crop [[0, 13], [0, 0]], d = [-1, 11, -3, -4], bias 0.75,
    # residuals [-1.75, 10.25, -3.75, -4.75] -> cMSE 144.75 / 4.
    assert grid[1, 1] == pytest.approx(144.75 / 4, rel=1e-12)
    # Shift (0, 2): d = [10, 10, 10, 11], bias 10.25 -> cMSE (3 * 0.0625 + 0.5625) / 4.
    assert grid[0, 2] == pytest.approx(0.1875, rel=1e-12)
    assert np.nanargmin(grid) == np.ravel_multi_index((0, 2), grid.shape)
    assert cpsnr(sr, hr, mask, border=1, max_value=1.0) == pytest.approx(
        -10 * math.log10(0.1875), rel=1e-12
    )
    # Masking the one pixel that breaks the constant offset makes (0, 2) exact.
    mask[1, 3] = False
    assert cpsnr(sr, hr, mask, border=1, max_value=1.0) == math.inf
    # The default full scale 65535 divides both images: +20 log10(65535) dB.
    mask[1, 3] = True
    assert cpsnr(sr, hr, mask, border=1) == pytest.approx(
        -10 * math.log10(0.1875) + 20 * math.log10(PNG_MAX), rel=1e-12
    )


def test_matches_naive_reference_on_random_input():
    rng = np.random.default_rng(1)
    hr = rng.uniform(0, 100, (11, 13))
    sr = hr + rng.normal(0, 5, hr.shape)
    mask = rng.random(hr.shape) > 0.3
    grid = cmse_grid(sr, hr, mask, border=2, max_value=100.0)
    assert grid.shape == (5, 5)
    np.testing.assert_allclose(grid, _reference_cmse(sr, hr, mask, 2, 100.0), rtol=1e-12)


def test_brightness_bias_is_removed():
    rng = np.random.default_rng(2)
    hr, sm = _scene_images(rng)
    sr = hr + rng.normal(0, 30, hr.shape)
    base = cpsnr(sr, hr, sm)
    assert cpsnr(sr + 1234.5, hr, sm) == pytest.approx(base, abs=1e-9)
    assert cpsnr(sr - 800.0, hr, sm) == pytest.approx(base, abs=1e-9)


def test_noise_sigma_gives_expected_cpsnr():
    rng = np.random.default_rng(3)
    hr, sm = _scene_images(rng)
    sigma = 20.0  # digital numbers
    sr = hr + rng.normal(0, sigma, hr.shape)
    expected = -10 * math.log10((sigma / PNG_MAX) ** 2)  # 70.31 dB
    # 378^2 samples: the sample variance is within ~0.4 % (0.02 dB) of sigma^2.
    assert cpsnr(sr, hr, sm) == pytest.approx(expected, abs=0.06)
    # Images given in [0, 1] with max_value=1 give the same number.
    unit = cpsnr(to_unit(sr), to_unit(hr), sm, max_value=1.0)
    assert unit == pytest.approx(expected, abs=0.06)


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, -1), (-3, 3), (1, 3), (-3, -3)])
def test_known_shift_is_found_and_scores_as_unshifted(dy, dx):
    rng = np.random.default_rng(4)
    b = 3
    big = rng.uniform(0, 16383, (96 + 2 * b, 90 + 2 * b))
    hr = big[b : b + 96, b : b + 90]
    # sr pixel (i, j) shows hr pixel (i + dy, j + dx).
    shifted = big[b + dy : b + dy + 96, b + dx : b + dx + 90]
    noise = rng.normal(0, 15, hr.shape)
    mask = np.ones(hr.shape, bool)
    grid = cmse_grid(shifted + noise, hr, mask)
    assert np.unravel_index(np.nanargmin(grid), grid.shape) == (b + dy, b + dx)
    assert cpsnr(shifted + noise, hr, mask) == pytest.approx(
        cpsnr(hr + noise, hr, mask), abs=1e-9
    )


def test_masked_pixels_do_not_count():
    rng = np.random.default_rng(5)
    hr, sm = _scene_images(rng)
    sr = hr + rng.normal(0, 25, hr.shape)
    sm[100:180, 50:300] = False  # a cloud in the target
    sm[rng.random(sm.shape) < 0.05] = False
    base = cpsnr(sr, hr, sm)
    grid = cmse_grid(sr, hr, sm)
    bad_sr = sr.copy()
    bad_sr[~sm] = 1e7
    bad_hr = hr.copy()
    bad_hr[~sm] = -5e6
    assert cpsnr(bad_sr, bad_hr, sm) == pytest.approx(base, abs=1e-9)
    # At the zero shift only the clear pixels meet: that cMSE is unchanged exactly.
    assert cmse_grid(bad_sr, bad_hr, sm)[3, 3] == pytest.approx(grid[3, 3], rel=1e-12)


def test_challenge_score_normalises_by_baseline():
    rng = np.random.default_rng(6)
    hr, sm = _scene_images(rng)
    sr = hr + rng.normal(0, 20, hr.shape)
    value = cpsnr(sr, hr, sm)
    assert challenge_score(sr, hr, sm, 50.0) == pytest.approx(50.0 / value, rel=1e-12)
    assert challenge_score(sr, hr, sm, value) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="baseline_cpsnr"):
        challenge_score(sr, hr, sm, float("nan"))


def test_scorer_rejects_bad_input():
    hr = np.zeros((20, 20))
    sm = np.ones((20, 20), bool)
    with pytest.raises(ValueError, match="sr: shape"):
        cpsnr(np.zeros((20, 21)), hr, sm)
    with pytest.raises(ValueError, match="mask: shape"):
        cpsnr(hr, hr, np.ones((21, 20), bool))
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        cpsnr(hr, hr, sm.astype(np.uint8))
    bad = hr.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="sr: contains NaN"):
        cpsnr(bad, hr, sm)
    with pytest.raises(ValueError, match="hr: contains NaN"):
        cpsnr(hr, bad, sm)
    with pytest.raises(ValueError, match="border"):
        cpsnr(hr, hr, sm, border=10)
    with pytest.raises(ValueError, match="border"):
        cpsnr(hr, hr, sm, border=-1)
    with pytest.raises(ValueError, match="sr: expected a 2-D"):
        cpsnr(np.zeros((2, 20, 20)), np.zeros((2, 20, 20)), np.ones((2, 20, 20), bool))
    with pytest.raises(ValueError, match="mask: no clear pixel"):
        cpsnr(hr, hr, np.zeros((20, 20), bool))
    with pytest.raises(ValueError, match="max_value"):
        cpsnr(hr, hr, sm, max_value=0.0)


# ------------------------------------------------------------------------ baseline


def test_baseline_uses_frames_of_maximal_clearance():
    lr = np.stack([np.full((8, 10), v, np.float32) for v in (1.0, 3.0, 100.0, 5.0)])
    qm = np.ones(lr.shape, bool)
    qm[2, :2] = False  # frame 2 slightly cloudy
    qm[3, :, :5] = False  # frame 3 half cloudy
    np.testing.assert_allclose(clear_fractions(qm), [1.0, 1.0, 1 - 20 / 80, 0.5])
    out = mean_clear_baseline(lr, qm)
    assert out.shape == (24, 30) and out.dtype == np.float32
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)
    # k = 3 adds the slightly cloudy frame; its clear pixels enter the mean,
    # its cloudy pixels (rows 0-1 of frame 2) do not.
    out3 = mean_clear_baseline(lr, qm, k=3, scale=1)
    np.testing.assert_allclose(out3[:2], 2.0, rtol=1e-6)
    np.testing.assert_allclose(out3[2:], 104.0 / 3, rtol=1e-6)
    plain = mean_clear_baseline(lr, qm, k=3, scale=1, exclude_masked=False)
    np.testing.assert_allclose(plain, 104.0 / 3, rtol=1e-6)


def test_baseline_falls_back_where_no_selected_frame_is_clear():
    lr = np.stack([np.full((6, 6), 2.0), np.full((6, 6), 4.0)])
    qm = np.ones(lr.shape, bool)
    qm[:, 0, 0] = False
    out = mean_clear_baseline(lr, qm, scale=1)
    np.testing.assert_allclose(out, 3.0)


def test_baseline_upsampling_is_pixel_area_aligned():
    h, w, s = 16, 20, 3
    ramp = np.tile(np.arange(w, dtype=np.float64), (h, 1)) * 10.0 + 7.0
    lr = np.stack([ramp, ramp])
    out = mean_clear_baseline(lr, np.ones(lr.shape, bool), scale=s)
    x = (np.arange(w * s) + 0.5) / s - 0.5
    interior = slice(8 * s, (w - 8) * s)
    expected = np.broadcast_to(x * 10 + 7, out.shape)
    np.testing.assert_allclose(out[:, interior], expected[:, interior], atol=1e-3)
    # The same cubic B-spline interpolant as the single-frame baseline.
    rng = np.random.default_rng(7)
    frame = rng.random((12, 14)).astype(np.float32)
    np.testing.assert_allclose(
        mean_clear_baseline(frame[None], np.ones((1, 12, 14), bool), scale=3),
        single_frame_upscale(frame, 3),
        atol=2e-5,
    )


def test_baseline_rejects_bad_input():
    lr = np.zeros((3, 8, 8))
    qm = np.ones((3, 8, 8), bool)
    with pytest.raises(ValueError, match="k:"):
        mean_clear_baseline(lr, qm, k=4)
    with pytest.raises(ValueError, match="k:"):
        mean_clear_baseline(lr, qm, k=0)
    with pytest.raises(TypeError, match="qm:"):
        mean_clear_baseline(lr, qm.astype(np.uint8))
    with pytest.raises(ValueError, match="qm: shape"):
        mean_clear_baseline(lr, qm[:2])
    with pytest.raises(ValueError, match="lr: expected shape"):
        mean_clear_baseline(lr[0], qm[0])
    with pytest.raises(ValueError, match="scale"):
        mean_clear_baseline(lr, qm, scale=0)


# -------------------------------------------------------------------------- reader


def _write16(path: Path, data: np.ndarray) -> None:
    png.from_array(np.asarray(data, np.uint16), "L;16").save(str(path))


def _write_mask(path: Path, mask: np.ndarray, mode: str = "L") -> None:
    if mode == "1":
        Image.fromarray(mask.astype(bool)).save(path)
    else:
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _make_scene(folder: Path, rng, indices=(10, 0, 2), with_hr=True):
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for k in indices:
        lr = rng.integers(0, 16384, (128, 128)).astype(np.uint16)
        qm = rng.random((128, 128)) > 0.2 * (k % 3)
        _write16(folder / f"LR{k:03d}.png", lr)
        _write_mask(folder / f"QM{k:03d}.png", qm)
        truth[k] = (lr, qm)
    hr = sm = None
    if with_hr:
        hr = rng.integers(0, 16384, (384, 384)).astype(np.uint16)
        hr[0, 0] = 65535  # full 16-bit range survives
        sm = rng.random((384, 384)) > 0.1
        _write16(folder / "HR.png", hr)
        _write_mask(folder / "SM.png", sm, mode="1")
    return truth, hr, sm


def test_load_scene_reads_frames_in_index_order(tmp_path):
    rng = np.random.default_rng(8)
    folder = tmp_path / "imgset0042"
    truth, hr, sm = _make_scene(folder, rng)
    (folder / "notes.txt").write_text("ignored")
    scene = load_scene(folder)
    assert isinstance(scene, ProbaVScene)
    assert scene.name == "imgset0042" and scene.scale == 3
    assert scene.frames == ("LR000.png", "LR002.png", "LR010.png")
    assert scene.lr.shape == (3, 128, 128) and scene.lr.dtype == np.float32
    assert scene.qm.shape == (3, 128, 128) and scene.qm.dtype == np.bool_
    for i, k in enumerate((0, 2, 10)):
        np.testing.assert_array_equal(scene.lr[i], truth[k][0].astype(np.float32))
        np.testing.assert_array_equal(scene.qm[i], truth[k][1])
    assert scene.hr.dtype == np.float32 and scene.hr.shape == (384, 384)
    np.testing.assert_array_equal(scene.hr, hr.astype(np.float32))
    assert scene.hr[0, 0] == 65535.0
    np.testing.assert_array_equal(scene.sm, sm)
    np.testing.assert_allclose(scene.clear_fraction, [truth[k][1].mean() for k in (0, 2, 10)])
    # The loaded scene feeds the scorer and the baseline directly.
    base = mean_clear_baseline(scene.lr, scene.qm, scene.scale)
    assert base.shape == scene.hr.shape
    assert math.isfinite(cpsnr(base, scene.hr, scene.sm))


def test_load_test_scene_without_target(tmp_path):
    rng = np.random.default_rng(9)
    _make_scene(tmp_path / "imgset1160", rng, indices=(0, 1), with_hr=False)
    scene = load_scene(tmp_path / "imgset1160")
    assert scene.hr is None and scene.sm is None and scene.lr.shape[0] == 2


def test_load_scene_accepts_other_sizes_when_asked(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    _write16(folder / "LR000.png", np.full((8, 9), 100))
    _write_mask(folder / "QM000.png", np.ones((8, 9), bool))
    with pytest.raises(ValueError, match=r"LR000\.png: shape \(8, 9\), expected \(128, 128\)"):
        load_scene(folder)
    scene = load_scene(folder, lr_shape=None)
    assert scene.lr.shape == (1, 8, 9)


@pytest.mark.parametrize(
    "breakage, error, pattern",
    [
        ("missing_qm", ValueError, r"LR002\.png: no matching quality map"),
        ("extra_qm", ValueError, r"QM007\.png: quality map without"),
        ("truncated_lr", ValueError, r"LR000\.png: unreadable PNG"),
        ("not_png", ValueError, r"QM002\.png: unreadable PNG"),
        ("eight_bit_lr", ValueError, r"LR010\.png: expected a 16-bit greyscale PNG"),
        ("hr_shape", ValueError, r"HR\.png: shape \(380, 384\), expected \(384, 384\)"),
        ("qm_shape", ValueError, r"QM000\.png: shape \(128, 120\)"),
        ("sm_missing", ValueError, r"HR\.png present but SM\.png missing"),
        ("empty", FileNotFoundError, r"no LR\*\.png frame"),
    ],
)
def test_load_scene_rejects_broken_folder(tmp_path, breakage, error, pattern):
    rng = np.random.default_rng(10)
    folder = tmp_path / "imgset0001"
    _make_scene(folder, rng)
    if breakage == "missing_qm":
        (folder / "QM002.png").unlink()
    elif breakage == "extra_qm":
        _write_mask(folder / "QM007.png", np.ones((128, 128), bool))
    elif breakage == "truncated_lr":
        data = (folder / "LR000.png").read_bytes()
        (folder / "LR000.png").write_bytes(data[: len(data) // 2])
    elif breakage == "not_png":
        (folder / "QM002.png").write_text("this is not an image")
    elif breakage == "eight_bit_lr":
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(folder / "LR010.png")
    elif breakage == "hr_shape":
        _write16(folder / "HR.png", np.zeros((380, 384)))
    elif breakage == "qm_shape":
        _write_mask(folder / "QM000.png", np.ones((128, 120), bool))
    elif breakage == "sm_missing":
        (folder / "SM.png").unlink()
    elif breakage == "empty":
        for p in folder.iterdir():
            p.unlink()
    with pytest.raises(error, match=pattern):
        load_scene(folder)


def test_load_scene_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_scene(tmp_path / "nope")


def test_to_unit_is_the_scorer_normalisation():
    np.testing.assert_allclose(to_unit(np.array([0, 16383, 65535])), [0, 16383 / 65535, 1])
    assert to_unit(np.array([16383]), max_value=16383)[0] == 1.0
    with pytest.raises(ValueError, match="max_value"):
        to_unit(np.zeros(2), max_value=-1)
