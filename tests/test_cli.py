"""The ``mfsr`` command line, run in-process through ``mfsr.cli.main``."""

import json
import shutil

import numpy as np
import pytest

from mfsr.cli import main
from mfsr.image_io import read_image, write_image


@pytest.fixture(scope="module")
def burst_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("burst")
    rc = main(["simulate", "-o", str(out), "--image", "astronaut", "--size", "96",
               "--frames", "4", "--scale", "2", "--cfa", "RGGB", "--quiet"])
    assert rc == 0
    return out


def test_simulate_writes_frames_truth_flow(burst_dir):
    frames = sorted(burst_dir.glob("frame-*.tif"))
    assert len(frames) == 4
    meta = json.loads((burst_dir / "burst.json").read_text())
    assert meta["cfa"] == "RGGB" and meta["scale"] == 2.0
    img, _ = read_image(frames[0])
    assert img.shape == (48, 48)
    flow = np.load(burst_dir / "flow.npy")
    assert flow.shape == (4, 48, 48, 2) and np.all(flow[0] == 0)


def test_fuse_cli_folder_input(burst_dir, tmp_path, capsys):
    out = tmp_path / "fused.tif"
    conf = tmp_path / "conf.tif"
    # A plain folder that also holds truth.tif of another shape: a clear error, nothing written.
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in [*burst_dir.glob("frame-*.tif"), burst_dir / "truth.tif"]:
        shutil.copy(p, plain / p.name)
    rc = main(["fuse", str(plain), "-o", str(out), "--scale", "2", "--cfa", "rggb",
               "--save-confidence", str(conf), "--quiet"])
    assert rc == 2
    assert "truth.tif" in capsys.readouterr().err
    assert not out.exists() and not conf.exists()

    # The simulator's own folder names its frames in burst.json: the truth is not taken.
    rc = main(["fuse", str(burst_dir), "-o", str(out), "--scale", "2", "--cfa", "rggb", "--quiet"])
    assert rc == 0
    out.unlink()

    files = sorted(str(p) for p in burst_dir.glob("frame-*.tif"))
    rc = main(["fuse", *files, "-o", str(out), "--scale", "2", "--cfa", "RGGB",
               "--save-confidence", str(conf)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "fused 4 frames 48x48 -> 96x96" in captured.out
    fused, info = read_image(out)
    assert fused.shape == (96, 96, 3) and info.dtype == "uint16"
    c, _ = read_image(conf)
    assert c.shape == (96, 96) and c.min() > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fuse", "nope.png", "-o", "x.png"], "nope.png: no such file"),
        (["fuse", "{frame}", "-o", "{tmp}/x.png", "--cfa", "RGBX"], "unknown CFA pattern"),
        (["fuse", "{frame}", "-o", "{tmp}/x.png", "--scale", "0"], "expected a number > 0"),
        (["fuse", "{frame}", "-o", "{tmp}/x.png", "--reference", "3"], "reference: index 3"),
        (["fuse", "{frame}", "-o", "{tmp}/x.jpg"], "-o: expected a .png, .tif, .tiff path"),
    ],
)
def test_fuse_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    frame = tmp_path / "f.png"
    write_image(frame, np.full((16, 16), 0.5, np.float32), transfer="srgb")
    argv = [a.format(frame=frame, tmp=tmp_path) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects bad option values itself
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert not list(tmp_path.glob("x.*"))


def test_fuse_cli_png_srgb_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random((32, 32)).astype(np.float32)
    for k in range(3):
        write_image(tmp_path / f"in{k}.png", base, transfer="srgb")
    out = tmp_path / "out.png"
    assert main(["fuse", *(str(tmp_path / f"in{k}.png") for k in range(3)), "-o", str(out),
                 "--scale", "1", "-q"]) == 0
    fused, info = read_image(out)
    assert info.transfer == "srgb" and info.dtype == "uint8" and fused.shape == (32, 32)


def test_fuse_cli_refinement_outputs(burst_dir, tmp_path, capsys):
    files = sorted(str(p) for p in burst_dir.glob("frame-*.tif"))
    plain = tmp_path / "plain.tif"
    refined = tmp_path / "refined.tif"
    diff_tif, diff_png = tmp_path / "change.tif", tmp_path / "change.png"
    base = ["fuse", *files, "--scale", "2", "--cfa", "RGGB", "--output-transfer", "linear",
            "--dtype", "float32", "--quiet"]
    assert main([*base, "-o", str(plain), "--no-refine"]) == 0
    assert main([*base, "-o", str(refined), "--save-refinement", str(diff_tif)]) == 0
    assert main([*base, "-o", str(tmp_path / "r2.tif"), "--save-refinement", str(diff_png)]) == 0
    a, _ = read_image(plain)
    b, _ = read_image(refined)
    change, _ = read_image(diff_tif)
    # the saved map is exactly what the network added to the plain fusion
    assert change.shape == b.shape == (96, 96, 3)
    np.testing.assert_allclose(b - change, a, atol=1e-5)
    assert np.abs(change).max() > 1e-3 and change.min() < 0 < change.max()
    picture, _ = read_image(diff_png)
    assert picture.shape == (96, 96, 3)


def test_fuse_cli_merge_sharpen_reaches_the_fusion(burst_dir, tmp_path, capsys):
    from mfsr.fusion import FusionParams, fuse

    files = sorted(burst_dir.glob("frame-*.tif"))
    out = tmp_path / "soft.tif"
    assert main(["fuse", *map(str, files), "-o", str(out), "--scale", "2", "--cfa", "RGGB", "--no-refine",
                 "--merge-sharpen", "0", "--output-transfer", "linear", "--dtype", "float32", "--quiet"]) == 0
    frames = np.stack([read_image(f)[0] for f in files])
    soft = fuse(frames, scale=2, cfa="RGGB", refine=False, params=FusionParams(sharpen_amount=0.0)).image
    sharp = fuse(frames, scale=2, cfa="RGGB", refine=False).image
    got, _ = read_image(out)
    np.testing.assert_allclose(got, soft, atol=1e-6)
    assert np.abs(got - sharp).max() > 1e-3
    assert main(["fuse", *map(str, files), "-o", str(out), "--cfa", "RGGB", "--merge-sharpen", "-1"]) == 2
    assert "--merge-sharpen: expected a finite amount >= 0" in capsys.readouterr().err


def test_fuse_cli_psf_sigma_reaches_the_refinement(burst_dir, tmp_path, capsys):
    from mfsr.fusion import fuse

    files = sorted(burst_dir.glob("frame-*.tif"))
    out = tmp_path / "told.tif"
    assert main(["fuse", *map(str, files), "-o", str(out), "--scale", "2", "--cfa", "RGGB", "--psf-sigma", "0.3",
                 "--output-transfer", "linear", "--dtype", "float32", "--quiet"]) == 0
    frames = np.stack([read_image(f)[0] for f in files])
    told = fuse(frames, scale=2, cfa="RGGB", psf_sigma=0.3).image
    blind = fuse(frames, scale=2, cfa="RGGB").image
    got, _ = read_image(out)
    np.testing.assert_allclose(got, told, atol=1e-6)
    assert np.abs(told - blind).max() > 1e-4  # the shipped network reads the blur
    for extra, message in ((["--psf-sigma", "-0.2"], "--psf-sigma: expected a finite blur >= 0"),
                           (["--psf-sigma", "0.3", "--no-refine"], "--psf-sigma: informs the refinement")):
        assert main(["fuse", *map(str, files), "-o", str(out), "--cfa", "RGGB", *extra]) == 2
        assert message in capsys.readouterr().err


def test_fuse_cli_refine_weights_reach_the_refinement(burst_dir, tmp_path, capsys):
    import json
    import shutil

    from mfsr.fusion import fuse
    from mfsr.refine import WEIGHTS_DIR

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, weights)
    manifest = json.loads((weights / "manifest.json").read_text())
    manifest["strength"]["cfa"] = {"2": 0.3}  # another strength than the shipped one
    (weights / "manifest.json").write_text(json.dumps(manifest))
    files = sorted(burst_dir.glob("frame-*.tif"))
    out = tmp_path / "custom.tif"
    assert main(["fuse", *map(str, files), "-o", str(out), "--scale", "2", "--cfa", "RGGB", "--refine-weights",
                 str(weights), "--output-transfer", "linear", "--dtype", "float32", "--quiet"]) == 0
    frames = np.stack([read_image(f)[0] for f in files])
    custom = fuse(frames, scale=2, cfa="RGGB", refine_weights=weights).image
    shipped = fuse(frames, scale=2, cfa="RGGB").image
    got, _ = read_image(out)
    np.testing.assert_allclose(got, custom, atol=1e-6)
    assert np.abs(custom - shipped).max() > 1e-4
    for extra, message in ((["--refine-weights", str(tmp_path / "none")], "--refine-weights: expected a weight folder"),
                           (["--refine-weights", str(weights), "--no-refine"], "--refine-weights: weights of the")):
        assert main(["fuse", *map(str, files), "-o", str(out), "--cfa", "RGGB", *extra]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--save-refinement", "{tmp}/c.jpg"], "--save-refinement: expected a .png, .tif, .tiff, .npy path"),
        (["--save-refinement", "{tmp}/c.png", "--no-refine"], "--save-refinement: needs the refinement"),
        (["--report", "{tmp}/r.tif"], "--report: expected a .png path"),
        (["--save-flow", "{tmp}/f.tif"], "--save-flow: expected a .png, .npy path"),
    ],
)
def test_fuse_cli_extra_output_errors_come_before_the_fusion(burst_dir, tmp_path, capsys, extra, message):
    files = sorted(str(p) for p in burst_dir.glob("frame-*.tif"))
    out = tmp_path / "x.tif"
    argv = ["fuse", *files, "-o", str(out), "--cfa", "RGGB", *[e.format(tmp=tmp_path) for e in extra]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_writes_pictures_and_scores(tmp_path, capsys):
    from mfsr.demo import run_demo

    scores = run_demo(tmp_path / "demo", quiet=True)
    for name in ("comparison", "single_frame", "fused", "refined", "refinement", "truth"):
        assert (tmp_path / "demo" / f"{name}.png").is_file(), name
    assert len(list((tmp_path / "demo" / "frames").glob("frame-*.png"))) == 8
    report = (tmp_path / "demo" / "report.txt").read_text()
    assert "mfsr kernel fusion" in report and "learned refinement" in report
    # the fusion must beat one frame clearly (the demo's whole point)
    assert scores["fused_psnr"] > scores["single_frame_psnr"] + 2.0
    assert np.isfinite(scores["refined_psnr"]) and capsys.readouterr().out == ""
