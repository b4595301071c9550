"""mfsr.dng: CFA and linear DNG files, read back by LibRaw and tifffile."""

import numpy as np
import pytest
import tifffile

rawpy = pytest.importorskip("rawpy")

from mfsr.dng import write_dng  # noqa: E402
from mfsr.raw_io import read_raw  # noqa: E402

CAM_TO_SRGB = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]])


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_cfa_dng_round_trip_through_libraw(tmp_path, cfa):
    rng = np.random.default_rng(0)
    mosaic = rng.uniform(-0.01, 1.0, (40, 60)).astype(np.float32)
    black = [[64, 65], [66, 67]]
    path = write_dng(
        tmp_path / "a.dng", mosaic, cfa=cfa, black_level=black, white_level=4095,
        wb_multipliers=(2.0, 1.0, 1.5), color_matrix=CAM_TO_SRGB, noise_profile=[[1e-4, 2e-6]],
        orientation=6, iso=200, exposure_time=0.01,
    )
    f = read_raw(path)
    assert f.cfa == cfa and f.white_level == 4095 and f.orientation == 6 and f.iso == 200
    np.testing.assert_array_equal(f.black_level, black)
    # one digital number of quantisation over a ~4030 DN range
    np.testing.assert_allclose(f.mosaic, mosaic, atol=0.5 / 4028 + 1e-6)
    np.testing.assert_allclose(f.wb_multipliers, [2.0, 1.0, 1.5], rtol=1e-5)
    np.testing.assert_allclose(f.color_matrix, CAM_TO_SRGB, atol=1e-5)
    np.testing.assert_allclose(f.noise_profile, [[1e-4, 2e-6]])
    assert f.exposure_time == pytest.approx(0.01, rel=1e-5)


def test_linear_dng_round_trip(tmp_path):
    rgb = np.random.default_rng(1).random((30, 50, 3)).astype(np.float32)
    path = write_dng(tmp_path / "b.dng", rgb, wb_multipliers=(2.0, 1.0, 1.5), color_matrix=CAM_TO_SRGB)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric == 34892  # LinearRaw
        np.testing.assert_allclose(page.asarray() / 65535.0, rgb, atol=0.5 / 65535 + 1e-7)
        assert page.tags[50717].value == 65535
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Stack
        np.testing.assert_allclose(raw.raw_image[..., :3] / 65535.0, rgb, atol=1e-4)
        np.testing.assert_allclose(np.asarray(raw.color_matrix)[:3, :3], CAM_TO_SRGB, atol=1e-5)
        wb = np.asarray(raw.camera_whitebalance)[:3]
        np.testing.assert_allclose(wb / wb[1], [2.0, 1.0, 1.5], rtol=1e-5)
        developed = raw.postprocess(output_bps=16, user_flip=0)
        assert developed.shape == (30, 50, 3)


def test_write_dng_is_atomic_and_checks_input(tmp_path):
    target = tmp_path / "x.dng"
    with pytest.raises(ValueError, match="image: contains NaN"):
        write_dng(target, np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="linear DNG takes an"):
        write_dng(target, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="unknown CFA pattern|cfa"):
        write_dng(target, np.zeros((8, 8), np.float32), cfa="RGBX")
    with pytest.raises(ValueError, match="black_level"):
        write_dng(target, np.zeros((8, 8), np.float32), cfa="RGGB", black_level=5000, white_level=4095)
    with pytest.raises(ValueError, match="wb_multipliers"):
        write_dng(target, np.zeros((8, 8, 3), np.float32), wb_multipliers=(1, 0, 1))
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_out_of_range_values_warn(tmp_path):
    rgb = np.full((4, 4, 3), 1.5, np.float32)
    with pytest.warns(UserWarning, match="48 sample"):
        write_dng(tmp_path / "c.dng", rgb)
