"""Tests for mfsr.raw_io on synthetic DNG files written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("rawpy")

from mfsr.raw_io import RawFrame, read_burst, read_headerless, read_raw, stack  # noqa: E402

DATA = Path(__file__).parents[2] / "shared" / "data"
OPENISP = DATA / "bayer_openisp" / "openISP_test_1920x1080_RGGB_10bit_u16le.RAW"

# DNG CFAPattern codes: 0 red, 1 green, 2 blue.
_CFA_CODES = {"R": 0, "G": 1, "B": 2}
# LibRaw's sRGB -> XYZ (D65) matrix, used to predict its camera -> sRGB matrix.
_XYZ_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)


def _rationals(values, den: int = 10000) -> list[int]:
    out = []
    for v in values:
        out += [int(round(v * den)), den]
    return out


def write_dng(
    path: Path,
    data: np.ndarray,
    cfa: str = "RGGB",
    black=(64, 64, 64, 64),
    white: int = 4095,
    neutral=(0.5, 1.0, 2 / 3),
    noise_profile=(1e-4, 2e-6),
    exposure=(1, 100),
    extra=(),
) -> Path:
    """Minimal uncompressed CFA DNG (LibRaw needs both sides >= 22 px)."""
    tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(_CFA_CODES[c] for c in cfa), True),  # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "mfsr synthetic", True),  # UniqueCameraModel
        (50713, "H", 2, (2, 2), True),  # BlackLevelRepeatDim
        (50714, "H", 4, tuple(black), True),  # BlackLevel, row-major over the 2x2 cell
        (50717, "H", 1, white, True),  # WhiteLevel
        (50721, "2i", 9, _rationals(np.eye(3).ravel()), True),  # ColorMatrix1: camera = XYZ
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
        (50728, "2I", 3, _rationals(neutral), True),  # AsShotNeutral
        (33434, "2I", 1, exposure, True),  # ExposureTime
        (34855, "H", 1, 400, True),  # ISO
    ]
    tags += list(extra)
    if noise_profile is not None:
        tags.append((51041, "d", len(noise_profile), tuple(noise_profile), True))
    tifffile.imwrite(
        path, data.astype(np.uint16), photometric=32803, subfiletype=0, extratags=tags, metadata=None
    )
    return path


def _random_raw(seed: int, shape=(32, 48), lo=0, hi=4095) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(np.uint16)


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_dng_round_trip(tmp_path, cfa):
    data = _random_raw(0)
    black = (60, 61, 62, 63)
    path = write_dng(tmp_path / "a.dng", data, cfa=cfa, black=black, white=4000)
    f = read_raw(path)
    assert isinstance(f, RawFrame)
    assert f.cfa == cfa
    assert f.path == path
    assert f.mosaic.dtype == np.float32 and f.mosaic.shape == data.shape
    np.testing.assert_array_equal(f.black_level, np.reshape(black, (2, 2)))
    assert f.white_level == 4000
    bl = np.tile(np.reshape(black, (2, 2)), (16, 24)).astype(np.float64)
    expected = (data - bl) / (4000 - bl)
    np.testing.assert_allclose(f.mosaic, expected, rtol=1e-6, atol=1e-7)
    # Not clipped: below black is negative, above white exceeds 1.
    assert f.mosaic.min() < 0 and f.mosaic.max() > 1


def test_dng_active_area_odd_origin(tmp_path):
    # DNG CFAPattern is relative to the ActiveArea origin, here (1, 3): raw
    # (2, 4) is then the B of the RGGB cell. LibRaw moves the visible crop to
    # even offsets (2, 4), and the reported pattern must describe that crop.
    data = _random_raw(5, shape=(40, 50), lo=100)
    area = (50829, "I", 4, (1, 3, 37, 47), True)  # ActiveArea: top, left, bottom, right
    f = read_raw(write_dng(tmp_path / "a.dng", data, cfa="RGGB", black=(64,) * 4, extra=[area]))
    assert f.cfa == "BGGR"
    np.testing.assert_allclose(f.mosaic, (data[2:37, 4:47] - 64.0) / (4095 - 64), rtol=1e-6, atol=1e-7)


def test_dng_metadata(tmp_path):
    path = write_dng(tmp_path / "a.dng", _random_raw(1), noise_profile=(1e-4, 2e-6))
    f = read_raw(path)
    np.testing.assert_allclose(f.noise_profile, [[1e-4, 2e-6]])
    # Gains are the reciprocal of the neutral (0.5, 1, 2/3), green = 1.
    np.testing.assert_allclose(f.wb_multipliers, [2.0, 1.0, 1.5], rtol=1e-4)
    assert f.exposure_time == pytest.approx(0.01, rel=1e-6)
    assert f.iso == 400
    # ColorMatrix1 = identity (camera = XYZ): LibRaw's camera -> sRGB is the
    # inverse of its row-normalised sRGB -> XYZ matrix.
    cam_rgb = _XYZ_RGB / _XYZ_RGB.sum(1, keepdims=True)
    np.testing.assert_allclose(f.color_matrix, np.linalg.inv(cam_rgb), atol=1e-4)
    np.testing.assert_allclose(f.color_matrix.sum(1), 1.0, atol=1e-5)


def test_dng_per_plane_noise_profile_and_absent(tmp_path):
    prof = (1e-4, 1e-6, 2e-4, 2e-6, 3e-4, 3e-6)
    f = read_raw(write_dng(tmp_path / "a.dng", _random_raw(2), noise_profile=prof))
    np.testing.assert_allclose(f.noise_profile, np.reshape(prof, (3, 2)))
    f = read_raw(write_dng(tmp_path / "b.dng", _random_raw(2), noise_profile=None))
    assert f.noise_profile is None


def test_burst_folder_order_and_stack(tmp_path):
    datas = [_random_raw(s) for s in range(3)]
    for i, d in enumerate(datas):
        write_dng(tmp_path / f"IMG_{2 - i:04d}.DNG", d)  # written out of name order
    (tmp_path / "notes.txt").write_text("ignored: not a RAW suffix")
    frames = read_burst(tmp_path)
    assert [f.path.name for f in frames] == ["IMG_0000.DNG", "IMG_0001.DNG", "IMG_0002.DNG"]
    burst = stack(frames)
    assert burst.shape == (3, 32, 48) and burst.dtype == np.float32
    np.testing.assert_allclose(burst[0], (datas[2] - 64.0) / (4095 - 64), rtol=1e-6, atol=1e-7)
    # An explicit list keeps its order.
    frames = read_burst([tmp_path / "IMG_0002.DNG", tmp_path / "IMG_0000.DNG"])
    np.testing.assert_array_equal(stack(frames)[0], burst[2])


def test_burst_mixed_sizes_and_patterns(tmp_path):
    a = write_dng(tmp_path / "a.dng", _random_raw(0))
    b = write_dng(tmp_path / "b.dng", _random_raw(1, shape=(32, 50)))
    c = write_dng(tmp_path / "c.dng", _random_raw(2), cfa="BGGR")
    with pytest.raises(ValueError, match="b.dng.*size"):
        read_burst([a, b])
    with pytest.raises(ValueError, match="c.dng.*CFA"):
        read_burst([a, c])
    with pytest.raises(ValueError, match="c.dng"):
        stack([read_raw(a), read_raw(c)])


def test_burst_non_raw_among_raws(tmp_path):
    write_dng(tmp_path / "a.dng", _random_raw(0))
    (tmp_path / "b.dng").write_text("this is not a raw file\n")
    with pytest.raises(ValueError, match="b.dng"):
        read_burst(tmp_path)


def test_read_raw_errors(tmp_path):
    good = write_dng(tmp_path / "good.dng", _random_raw(0)).read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.dng"):
        read_raw(tmp_path / "missing.dng")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        read_burst(tmp_path / "missing_dir")
    (tmp_path / "folder.dng").mkdir()
    with pytest.raises(ValueError, match="folder.dng"):
        read_raw(tmp_path / "folder.dng")
    (tmp_path / "trunc.dng").write_bytes(good[: len(good) - 1000])
    with pytest.raises(ValueError, match="trunc.dng"):
        read_raw(tmp_path / "trunc.dng")
    (tmp_path / "header_only.dng").write_bytes(good[:600])
    with pytest.raises(ValueError, match="header_only.dng"):
        read_raw(tmp_path / "header_only.dng")
    corrupt = bytearray(good)
    corrupt[8:400] = np.random.default_rng(0).integers(0, 256, 392, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.dng").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt.dng"):
        read_raw(tmp_path / "corrupt.dng")
    (tmp_path / "text.dng").write_text("hello\n")
    with pytest.raises(ValueError, match="text.dng"):
        read_raw(tmp_path / "text.dng")


def test_read_raw_rejects_linear_dng(tmp_path):
    rgb = _random_raw(0, shape=(32, 48, 3))
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50708, "s", 0, "mfsr synthetic", True),
        (50717, "H", 1, 4095, True),
        (50721, "2i", 9, _rationals(np.eye(3).ravel()), True),
        (50778, "H", 1, 21, True),
    ]
    path = tmp_path / "linear.dng"
    tifffile.imwrite(path, rgb, photometric=34892, subfiletype=0, extratags=tags, metadata=None)
    with pytest.raises(ValueError, match="linear.dng.*[Bb]ayer"):
        read_raw(path)


def _write_u16(path: Path, data: np.ndarray, byteorder: str = "<") -> Path:
    data.astype(f"{byteorder}u2").tofile(path)
    return path


def test_headerless_round_trip(tmp_path):
    data = _random_raw(3, shape=(6, 10), hi=1023)
    path = _write_u16(tmp_path / "frame.raw", data)
    f = read_headerless(path, width=10, height=6, bits=10, cfa="grbg", black_level=64)
    assert f.cfa == "GRBG" and f.white_level == 1023 and f.color_matrix is None
    np.testing.assert_allclose(f.mosaic, (data - 64.0) / (1023 - 64), rtol=1e-6, atol=1e-7)
    black = np.array([[60, 61], [62, 63]])
    big = _write_u16(tmp_path / "frame_be.raw", data, ">")
    f = read_headerless(
        big, width=10, height=6, bits=12, cfa="BGGR", black_level=black, white_level=1000, byteorder=">"
    )
    tiled = np.tile(black, (3, 5))
    np.testing.assert_allclose(f.mosaic, (data - tiled) / (1000.0 - tiled), rtol=1e-6, atol=1e-7)


def test_headerless_errors(tmp_path):
    data = _random_raw(4, shape=(6, 10), hi=1023)
    path = _write_u16(tmp_path / "frame.raw", data)
    with pytest.raises(ValueError, match=r"frame.raw.*\b120\b.*\b128\b"):
        read_headerless(path, width=8, height=8, bits=10, cfa="RGGB")
    data[2, 3] = 1024
    over = _write_u16(tmp_path / "over.raw", data)
    with pytest.raises(ValueError, match="over.raw.*1024"):
        read_headerless(over, width=10, height=6, bits=10, cfa="RGGB")
    with pytest.raises(ValueError, match="cfa"):
        read_headerless(path, width=10, height=6, bits=10, cfa="RGBG")
    with pytest.raises(ValueError, match="bits"):
        read_headerless(path, width=10, height=6, bits=11, cfa="RGGB")
    with pytest.raises(FileNotFoundError, match="nothing.raw"):
        read_headerless(tmp_path / "nothing.raw", width=10, height=6, bits=10, cfa="RGGB")


def test_headerless_openisp():
    if not OPENISP.is_file():
        pytest.skip(f"../shared/data not found ({OPENISP})")
    f = read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB")
    assert f.mosaic.shape == (1080, 1920) and f.mosaic.dtype == np.float32
    assert 0.0 <= f.mosaic.min() and f.mosaic.max() <= 1.0 and f.mosaic.std() > 0.01
    raw = np.fromfile(OPENISP, dtype="<u2").reshape(1080, 1920)
    np.testing.assert_array_equal(np.round(f.mosaic * 1023).astype(np.uint16), raw)
    with pytest.raises(ValueError, match="openISP_test.*4147200"):
        read_headerless(OPENISP, width=1920, height=1088, bits=10, cfa="RGGB")
    # Byte-swapped 10-bit samples overflow 10 bits.
    with pytest.raises(ValueError, match="openISP_test.*exceeds"):
        read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB", byteorder=">")
    # The green sites of a natural RGGB image agree more with each other than with R or B.
    g1, g2 = f.mosaic[0::2, 1::2], f.mosaic[1::2, 0::2]
    r = f.mosaic[0::2, 0::2]
    assert np.abs(g1 - g2).mean() < np.abs(g1 - r).mean()
