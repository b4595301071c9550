"""White balance and colour matrix of RAW bursts: given, from the file, or grey world."""

import numpy as np
import pytest

from mfsr.camera import develop, fuse_raw, resolve_white_balance
from mfsr.cfa import mosaic
from mfsr.cli import main
from mfsr.finishing import grey_world_gains
from mfsr.image_io import read_image, write_image
from mfsr.raw_io import RawFrame, read_headerless

CAST = np.array([0.6, 1.0, 0.8])  # camera response to grey: what a sensor without white balance records


def _cast_scene(seed: int = 0, size: int = 96) -> np.ndarray:
    """Neutral scene seen through CAST, with a black border and a clipped highlight."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(0.05, 0.9, (size // 8, size // 8))
    scene = np.repeat(np.repeat(grey, 8, 0), 8, 1)[..., None] * np.ones(3)
    # colourful patches that are grey on average, as grey world assumes
    tint = rng.uniform(-0.3, 0.3, (size // 8, size // 8, 3))
    tint -= tint.mean(axis=(0, 1))
    scene = scene * (1 + np.repeat(np.repeat(tint, 8, 0), 8, 1))
    img = np.clip(scene * CAST, 0, None)
    img[:, :12] = 0.0  # black border
    img[:16, -16:] = 1.0  # clipped in all channels
    return img.astype(np.float32)


def _info(wb=(1.0, 1.0, 1.0), known=False, cm=None):
    return RawFrame(mosaic=np.zeros((2, 2), np.float32), cfa="RGGB", black_level=np.zeros((2, 2)),
                    white_level=1023.0, wb_multipliers=np.asarray(wb, float), color_matrix=cm, wb_known=known)


def test_grey_world_gains_undo_a_cast():
    gains = grey_world_gains(_cast_scene())
    np.testing.assert_allclose(gains, 1 / CAST, rtol=0.03)
    assert gains[1] == 1.0
    # a nearly black frame still gets gains from its unclipped pixels; an empty one gets none
    dark = _cast_scene()
    dark[:16, -16:] = 0.0
    np.testing.assert_allclose(grey_world_gains(dark * 0.01), 1 / CAST, rtol=0.03)
    np.testing.assert_array_equal(grey_world_gains(np.zeros((8, 8, 3))), np.ones(3))
    with pytest.raises(ValueError, match="^image"):
        grey_world_gains(np.zeros((8, 8)))


def test_develop_white_balance_sources():
    img = _cast_scene()
    gains, source = resolve_white_balance(img, _info())
    assert source == "grey world"
    out = develop(img, _info())
    use = (img.min(-1) > 0.02) & (img.max(-1) < 0.95)
    means = out[use].mean(axis=0)
    assert np.ptp(means) / means.mean() < 0.01  # neutral on average: no cast
    # the file's gains win over grey world, given gains over the file's
    assert resolve_white_balance(img, _info((2, 1, 3), known=True))[1] == "file"
    np.testing.assert_allclose(develop(img, _info((2, 1, 3), known=True)), img * [2, 1, 3], rtol=1e-6)
    np.testing.assert_allclose(develop(img, _info(), white_balance=(1.5, 1, 1.25)), img * [1.5, 1, 1.25], rtol=1e-6)
    assert resolve_white_balance(img, _info(), (1.5, 1, 1.25))[1] == "given"
    # a colour matrix given as 9 numbers overrides the file's; rows apply to camera RGB
    swap = [0, 0, 1, 0, 1, 0, 1, 0, 0]
    out = develop(img, _info(known=True, cm=np.eye(3)), color_matrix=swap)
    np.testing.assert_allclose(out, img[..., ::-1], rtol=1e-6)
    np.testing.assert_array_equal(develop(img, _info(), linear=True), img)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(white_balance=(1, 1)), "^white_balance: expected 3 gains"),
        (dict(white_balance=(1, np.nan, 1)), "^white_balance: expected 3 finite gains > 0"),
        (dict(white_balance=(1, 0, 1)), "^white_balance: expected 3 finite gains > 0"),
        (dict(white_balance=(-1, 1, 1)), "^white_balance: expected 3 finite gains > 0"),
        (dict(color_matrix=np.eye(2)), "^color_matrix: expected 9 numbers"),
        (dict(color_matrix=[1, 0, 0, 0, 1, 0, 0, 0, np.inf]), "^color_matrix: expected finite"),
    ],
)
def test_develop_rejects_bad_colour_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        develop(np.zeros((4, 4, 3), np.float32), _info(), **kwargs)
    with pytest.raises(TypeError, match="^white_balance"):
        develop(np.zeros((4, 4, 3), np.float32), _info(), white_balance="1 1 1")


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """Three 10-bit headerless RGGB dumps of the cast scene (tiny shifts, light noise)."""
    folder = tmp_path_factory.mktemp("dumps")
    scene = _cast_scene(size=64)
    rng = np.random.default_rng(4)
    for k in range(3):
        frame = mosaic(np.roll(scene, k, axis=1), "RGGB") + 0.003 * rng.standard_normal((64, 64))
        np.rint(np.clip(frame, 0, 1) * 1023).astype("<u2").tofile(folder / f"f{k}.raw")
    return folder


HEADERLESS = ["--raw-size", "64x64", "--raw-bits", "10", "--cfa", "RGGB", "--scale", "1", "--no-refine"]


def test_fuse_raw_overrides_the_files_colour(dumps):
    headerless = dict(width=64, height=64, bits=10, cfa="RGGB")
    cam = fuse_raw(dumps, scale=1, headerless=headerless, refine=False, white_balance=(1.5, 1, 1.2),
                   color_matrix=np.eye(3).ravel())
    info = cam.reference_info
    assert info.wb_known and info.wb_multipliers.tolist() == [1.5, 1, 1.2]
    np.testing.assert_array_equal(info.color_matrix, np.eye(3))
    assert not read_headerless(dumps / "f0.raw", **headerless).wb_known
    # checked before anything is read
    with pytest.raises(ValueError, match="^white_balance"):
        fuse_raw(dumps / "missing", headerless=headerless, white_balance=(1, 1, 0))


def test_cli_grey_world_note_and_white_balance_option(dumps, tmp_path, capsys):
    out = tmp_path / "o.tif"
    assert main(["fuse", str(dumps), "-o", str(out), *HEADERLESS, "--dtype", "float32"]) == 0
    err = capsys.readouterr().err
    note = [line for line in err.splitlines() if line.startswith("mfsr: note: no white balance")]
    assert len(note) == 1 and ".raw;" in note[0] and "give --white-balance to override" in note[0]
    gains = np.array(note[0].split("gains ")[1].split(" used")[0].split(), float)
    np.testing.assert_allclose(gains, 1 / CAST, rtol=0.05)
    img, _ = read_image(out, transfer="srgb")
    use = (img.min(-1) > 0.05) & (img.max(-1) < 0.9)
    means = img[use].mean(axis=0)
    assert np.ptp(means) / means.mean() < 0.1  # the cast (0.6 : 1 : 0.8) is gone

    assert main(["fuse", str(dumps), "-o", str(out), *HEADERLESS, "--dtype", "float32", "--overwrite",
                 "--white-balance", "1", "1", "1", "--color-matrix", *"1 0 0 0 1 0 0 0 1".split()]) == 0
    assert "note" not in capsys.readouterr().err  # given gains: nothing guessed
    cast, _ = read_image(out, transfer="srgb")
    ratio = cast[use].mean(axis=0) / cast[use].mean(axis=0)[1]
    np.testing.assert_allclose(ratio, CAST, rtol=0.05)  # unit gains keep the cast


def test_cli_dng_output_carries_the_grey_world_gains(dumps, tmp_path, capsys):
    import tifffile

    out = tmp_path / "o.dng"
    assert main(["fuse", str(dumps), "-o", str(out), *HEADERLESS]) == 0
    assert "grey-world gains" in capsys.readouterr().err
    with tifffile.TiffFile(out) as tif:
        neutral = np.array(tif.pages[0].tags[50728].value, float).reshape(3, 2)  # AsShotNeutral rationals
    np.testing.assert_allclose(neutral[:, 1] / neutral[:, 0], 1 / CAST, rtol=0.05)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--white-balance", "2", "nan", "1"], "--white-balance: expected 3 finite gains > 0 (R G B), got [2.0, nan, 1.0]"),
        (["--white-balance", "2", "1", "0"], "--white-balance: expected 3 finite gains > 0"),
        (["--white-balance", "2", "-1", "1"], "--white-balance: expected 3 finite gains > 0"),
        (["--color-matrix", *"1 0 0 0 1 0 0 0 inf".split()], "--color-matrix: expected finite numbers"),
    ],
)
def test_cli_colour_option_values_are_checked_before_the_fusion(dumps, tmp_path, capsys, extra, message):
    out = tmp_path / "o.png"
    assert main(["fuse", str(dumps), "-o", str(out), *HEADERLESS, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mfsr: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--white-balance", "2", "1"], "argument --white-balance: expected 3 arguments"),
        (["--white-balance", "2", "x", "1"], "argument --white-balance: invalid float value: 'x'"),
        (["--color-matrix", "1", "0", "0"], "argument --color-matrix: expected 9 arguments"),
    ],
)
def test_cli_colour_option_counts_are_usage_errors(dumps, tmp_path, capsys, extra, message):
    # the count and the number syntax are argparse's: a usage error, exit status 2
    with pytest.raises(SystemExit) as exc:
        main(["fuse", str(dumps), "-o", str(tmp_path / "o.png"), *HEADERLESS, *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_colour_options_are_for_raw_only(tmp_path, capsys):
    frame = tmp_path / "f.png"
    write_image(frame, np.full((16, 16, 3), 0.5, np.float32), transfer="srgb")
    assert main(["fuse", str(frame), "-o", str(tmp_path / "x.png"), "--white-balance", "2", "1", "1"]) == 2
    assert "--white-balance: only for camera RAW bursts" in capsys.readouterr().err
