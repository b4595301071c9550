"""Camera bursts end to end: synthetic DNG bursts written here, read, fused, written."""

import numpy as np
import pytest
import tifffile

pytest.importorskip("rawpy")

from mfsr.baselines import single_frame_upscale  # noqa: E402
from mfsr.camera import develop, fuse_raw  # noqa: E402
from mfsr.cli import main  # noqa: E402
from mfsr.dng import write_dng  # noqa: E402
from mfsr.image_io import read_image  # noqa: E402
from mfsr.metrics import psnr  # noqa: E402
from mfsr.raw_io import read_raw  # noqa: E402
from mfsr.synth import sample_image, simulate_burst  # noqa: E402

WB = (2.0, 1.0, 1.5)
CAM_TO_SRGB = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]])
NOISE = (2e-4, 2e-6)


def _write_burst(folder, burst, noise_profile=(NOISE,), black=64, white=4095, shape=None, cfa=None):
    folder.mkdir(exist_ok=True)
    for k, frame in enumerate(burst.frames):
        write_dng(
            folder / f"IMG_{k:04d}.dng", frame if shape is None else frame[: shape[0], : shape[1]],
            cfa=cfa or burst.cfa, black_level=black, white_level=white, wb_multipliers=WB,
            color_matrix=CAM_TO_SRGB, noise_profile=noise_profile, orientation=1,
        )
    return folder


@pytest.fixture(scope="module")
def burst():
    # camera RGB scene: the sRGB photo seen through the inverse white balance
    scene = sample_image("astronaut", size=128) / np.asarray(WB, np.float32)
    return simulate_burst(scene, n_frames=6, scale=2, cfa="GRBG", max_shift=2.0, max_rotation=0.3,
                          blur_sigma=0.5, alpha=NOISE[0], beta=NOISE[1], seed=3)


@pytest.fixture(scope="module")
def dng_dir(tmp_path_factory, burst):
    return _write_burst(tmp_path_factory.mktemp("dng"), burst)


def test_round_trip_read_fuse_write(dng_dir, burst, tmp_path):
    first = read_raw(sorted(dng_dir.glob("*.dng"))[0])
    assert first.cfa == "GRBG" and first.white_level == 4095
    np.testing.assert_array_equal(first.black_level, np.full((2, 2), 64.0))
    np.testing.assert_allclose(first.mosaic, burst.frames[0], atol=0.5 / 4031 + 1e-6)

    cam = fuse_raw(dng_dir, scale=2, reference=0)
    assert cam.noise_source == "DNG NoiseProfile"
    assert cam.fusion.noise == pytest.approx(NOISE)
    assert cam.fusion.cfa == "GRBG" and cam.fusion.image.shape == (128, 128, 3)
    truth = burst.ground_truth
    single = single_frame_upscale(burst.frames[0], 2, cfa="GRBG")
    gain = psnr(cam.fusion.image, truth, crop=8) - psnr(single, truth, crop=8)
    assert gain > 1.5, f"fusion gains only {gain:.2f} dB over one frame"

    # linear DNG out, read back: values, white balance and colour matrix carried
    out = tmp_path / "fused.dng"
    assert main(["fuse", str(dng_dir), "-o", str(out), "--scale", "2", "--reference", "0", "-q"]) == 0
    with tifffile.TiffFile(out) as tif:
        stored = tif.pages[0].asarray() / 65535.0
        assert tif.pages[0].photometric == 34892
    inside = (cam.fusion.image >= 0) & (cam.fusion.image <= 1)
    np.testing.assert_allclose(stored[inside], cam.fusion.image[inside], atol=1e-4)
    import rawpy

    with rawpy.imread(str(out)) as raw:
        wb = np.asarray(raw.camera_whitebalance)[:3]
        np.testing.assert_allclose(wb / wb[1], WB, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(raw.color_matrix)[:3, :3], CAM_TO_SRGB, atol=1e-5)

    # finished sRGB PNG: the colour pipeline turns camera RGB back into the photo
    png = tmp_path / "fused.png"
    assert main(["fuse", str(dng_dir), "-o", str(png), "--scale", "2", "--reference", "0", "-q"]) == 0
    shown, info = read_image(png)
    assert info.dtype == "uint8" and shown.shape == (128, 128, 3)
    developed = develop(cam.fusion.image, cam.reference_info)
    np.testing.assert_allclose(developed, cam.fusion.image * WB @ CAM_TO_SRGB.T, rtol=1e-4, atol=1e-5)

    # 16-bit linear TIFF keeps camera RGB
    tif_path = tmp_path / "fused.tif"
    assert main(["fuse", str(dng_dir), "-o", str(tif_path), "--scale", "2", "--linear",
                 "--reference", "0", "-q"]) == 0
    linear, info = read_image(tif_path)
    assert info.dtype == "uint16"
    np.testing.assert_allclose(linear[inside], cam.fusion.image[inside], atol=1e-4)


def test_noise_profile_drives_denoising(burst, tmp_path):
    # Same frames, a NoiseProfile 25x stronger: the kernel fusion must smooth more.
    quiet = fuse_raw(_write_burst(tmp_path / "q", burst), scale=1, reference=0, refine=False).fusion.image
    loud_dir = _write_burst(tmp_path / "l", burst, noise_profile=((NOISE[0] * 25, NOISE[1] * 25),))
    loud = fuse_raw(loud_dir, scale=1, reference=0, refine=False).fusion.image

    def roughness(img):
        g = img.mean(axis=2)
        return float(np.mean(np.abs(np.diff(g, axis=0))) + np.mean(np.abs(np.diff(g, axis=1))))

    assert roughness(loud) < 0.95 * roughness(quiet)
    # without a profile the model is estimated from the burst itself
    est = fuse_raw(_write_burst(tmp_path / "e", burst, noise_profile=None), scale=1, reference=0)
    assert est.noise_source.startswith("estimated")
    # The single-frame estimate counts some of this small crop's texture as
    # noise: the noise std at mid-grey is within a factor 3 (not exact).
    alpha, beta = est.fusion.noise
    ratio = np.sqrt((alpha * 0.25 + beta) / (NOISE[0] * 0.25 + NOISE[1]))
    assert 1 / 3 < ratio < 3


def test_auto_reference_is_the_sharpest_of_the_first_three(burst, tmp_path):
    from scipy.ndimage import gaussian_filter
    from mfsr.cfa import mosaic

    frames = burst.frames.copy()
    # frames 0 and 2 blurred by "hand shake" -> frame 1 must be chosen
    for k in (0, 2):
        rgb = single_frame_upscale(frames[k], 1, cfa="GRBG")
        frames[k] = mosaic(gaussian_filter(rgb, (1.5, 1.5, 0)), "GRBG")
    blurred = type(burst)(**{**burst.__dict__, "frames": frames})
    cam = fuse_raw(_write_burst(tmp_path / "b", blurred), scale=1)
    assert cam.fusion.reference == 1 and cam.reference_rule == "sharpest of the first 3"


def test_cli_raw_outputs_report_flow_and_headerless(dng_dir, burst, tmp_path, capsys):
    out = tmp_path / "o.png"
    rc = main(["fuse", str(dng_dir), "-o", str(out), "--scale", "1", "--report", str(tmp_path / "r.png"),
               "--save-flow", str(tmp_path / "f.png"), "--save-confidence", str(tmp_path / "c.png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 GRBG frames; reference frame" in text and "DNG NoiseProfile" in text
    report, _ = read_image(tmp_path / "r.png", transfer="linear")
    assert report.shape[1] > 3 * 64  # three panels side by side
    for name in ("f.png", "c.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert main(["fuse", str(dng_dir), "-o", str(out), "--save-flow", str(tmp_path / "f.npy"),
                 "--reference", "0", "-q", "--overwrite"]) == 0
    flow = np.load(tmp_path / "f.npy")
    assert flow.shape == (6, 64, 64, 2) and np.all(flow[0] == 0)

    # headerless dumps: 12-bit words, explicit size, bits and pattern
    raw_dir = tmp_path / "dumps"
    raw_dir.mkdir()
    for k, frame in enumerate(burst.frames):
        np.rint(np.clip(frame, 0, 1) * 4095).astype("<u2").tofile(raw_dir / f"f{k}.raw")
    rc = main(["fuse", str(raw_dir), "-o", str(tmp_path / "h.tif"), "--raw-size", "64x64",
               "--raw-bits", "12", "--cfa", "GRBG", "--linear", "--scale", "1", "-q"])
    assert rc == 0
    assert main(["fuse", str(raw_dir), "-o", str(tmp_path / "h.tif"), "--raw-size", "64x64", "-q"]) == 2
    assert "needs --raw-bits, --cfa" in capsys.readouterr().err


def _bad_folder(tmp_path, burst, case):
    d = _write_burst(tmp_path / case, burst)
    files = sorted(d.glob("*.dng"))
    if case == "truncated":
        data = files[2].read_bytes()
        files[2].write_bytes(data[: len(data) // 2])
        return [str(d)], files[2].name
    if case == "corrupt":
        files[3].write_bytes(b"II*\x00" + bytes(range(256)) * 20)
        return [str(d)], files[3].name
    if case == "sizes":
        write_dng(files[4], burst.frames[4][:60, :62], cfa="GRBG", black_level=64, white_level=4095)
        return [str(d)], files[4].name
    if case == "cfa":
        write_dng(files[1], burst.frames[1], cfa="RGGB", black_level=64, white_level=4095)
        return [str(d)], files[1].name
    if case == "not_raw":
        png = d / "note.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        return [str(files[0]), str(png), str(files[1])], "note.png"
    if case == "missing":
        return [str(files[0]), str(d / "IMG_9999.dng")], "IMG_9999.dng"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated", "corrupt", "sizes", "cfa", "not_raw", "missing"])
def test_cli_bad_raw_input_names_the_file(burst, tmp_path, capsys, case):
    argv, name = _bad_folder(tmp_path, burst, case)
    out = tmp_path / "out" / "fused.png"
    out.parent.mkdir()
    assert main(["fuse", *argv, "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfsr: error:") and name in err, err
    assert list(out.parent.iterdir()) == []  # nothing (half-)written


def test_cli_rejects_cfa_for_dng_and_dng_output_for_images(dng_dir, tmp_path, capsys):
    assert main(["fuse", str(dng_dir), "-o", str(tmp_path / "x.png"), "--cfa", "RGGB", "-q"]) == 2
    assert "RAW files carry their own CFA" in capsys.readouterr().err
    assert main(["fuse", str(dng_dir), "-o", str(tmp_path / "x.dng"), "--finish", "-q"]) == 2
    assert "use --linear" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.dng").exists()
