import numpy as np
import pytest

from mfsr.image_io import expand_inputs, read_frames, read_image, write_image


@pytest.fixture
def rgb():
    return np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "name, dtype, tol",
    [("a.png", "uint8", 1 / 255), ("a.png", "uint16", 1 / 65535), ("a.tif", "uint16", 1 / 65535),
     ("a.tif", "float32", 0.0)],
)
def test_round_trip_linear(tmp_path, rgb, name, dtype, tol):
    p = write_image(tmp_path / name, rgb, transfer="linear", dtype=dtype)
    back, info = read_image(p, transfer="linear")
    assert back.shape == rgb.shape and back.dtype == np.float32
    assert info.dtype == dtype
    np.testing.assert_allclose(back, rgb, atol=tol * 0.51 + 1e-7)
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_srgb_png_is_decoded_to_linear(tmp_path):
    grey = np.full((6, 6), 0.21404, np.float32)  # linear value of sRGB mid-grey
    p = write_image(tmp_path / "g.png", grey, transfer="srgb")
    raw = np.asarray(__import__("PIL.Image").Image.open(p))
    assert raw.dtype == np.uint8 and abs(int(raw[0, 0]) - 128) <= 1
    back, info = read_image(p)  # auto: 8-bit means sRGB
    assert info.transfer == "srgb"
    np.testing.assert_allclose(back, grey, atol=3e-3)


def test_black_and_white_levels(tmp_path):
    import tifffile

    data = np.array([[64, 1023], [543, 64]], np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", data)
    img, _ = read_image(tmp_path / "raw.tif", black_level=64, white_level=1023)
    np.testing.assert_allclose(img, (data - 64) / (1023 - 64), rtol=1e-6)
    with pytest.raises(ValueError, match="white_level"):
        read_image(tmp_path / "raw.tif", black_level=64, white_level=10)


def test_out_of_range_values_warn_when_clipped(tmp_path):
    img = np.array([[-0.1, 0.5], [1.2, 0.0]], np.float32)
    with pytest.warns(UserWarning, match="2 sample"):
        write_image(tmp_path / "c.png", img)
    write_image(tmp_path / "c.tif", img, dtype="float32")  # kept exactly, no warning
    back, _ = read_image(tmp_path / "c.tif")
    np.testing.assert_array_equal(back, img)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ValueError, match="corrupt.png"):
        read_image(bad)
    trunc = tmp_path / "trunc.tif"
    write_image(trunc, np.zeros((64, 64), np.float32), dtype="uint16")
    trunc.write_bytes(trunc.read_bytes()[:100])
    with pytest.raises(ValueError, match="trunc.tif"):
        read_image(trunc)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="output: unsupported"):
        write_image(tmp_path / "x.bmp", np.zeros((4, 4)))


def test_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError):
        write_image(target, np.zeros((4, 4, 2)))
    assert target.read_bytes() == b"previous"
    assert not list(tmp_path.glob(".*tmp"))


def test_read_frames_order_and_mismatch(tmp_path):
    for k in (2, 0, 1):
        write_image(tmp_path / f"f{k}.tif", np.full((4, 5), k / 4, np.float32), dtype="float32")
    frames, infos = read_frames([tmp_path])
    assert [i.path.name for i in infos] == ["f0.tif", "f1.tif", "f2.tif"]
    np.testing.assert_allclose(frames[:, 0, 0], [0, 0.25, 0.5])
    write_image(tmp_path / "f3.tif", np.zeros((4, 6), np.float32), dtype="float32")
    with pytest.raises(ValueError, match="f3.tif: shape"):
        read_frames([tmp_path])
    with pytest.raises(ValueError, match="no input files"):
        expand_inputs([])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: folder holds no"):
        expand_inputs([empty])
