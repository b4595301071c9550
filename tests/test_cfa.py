import numpy as np
import pytest

from mfsr.cfa import PATTERNS, cell_channels, channel_map, check_pattern, demosaic_bilinear, mosaic


@pytest.mark.parametrize(
    "pattern, cell",
    [("RGGB", [[0, 1], [1, 2]]), ("BGGR", [[2, 1], [1, 0]]), ("GRBG", [[1, 0], [2, 1]]),
     ("GBRG", [[1, 2], [0, 1]])],
)
def test_cell_channels(pattern, cell):
    np.testing.assert_array_equal(cell_channels(pattern), cell)
    np.testing.assert_array_equal(cell_channels(pattern.lower()), cell)


def test_unknown_pattern_names_argument():
    with pytest.raises(ValueError, match="cfa: unknown CFA pattern 'RGBG'"):
        check_pattern("RGBG")
    with pytest.raises(ValueError, match="pattern"):
        check_pattern(None, "pattern")


def test_mosaic_picks_one_channel_per_sample():
    rgb = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    for p in PATTERNS:
        raw = mosaic(rgb, p)
        ch = channel_map(p, (5, 7))
        assert raw.shape == (5, 7) and raw.dtype == np.float32
        np.testing.assert_array_equal(raw, np.take_along_axis(rgb, ch[..., None], 2)[..., 0])


def test_demosaic_bilinear_keeps_samples_and_flat_fields():
    rgb = np.ones((8, 10, 3), np.float32) * np.array([0.2, 0.5, 0.9], np.float32)
    for p in PATTERNS:
        out = demosaic_bilinear(mosaic(rgb, p), p)
        np.testing.assert_allclose(out, rgb, atol=1e-6)
    rng = np.random.default_rng(1)
    rgb = rng.random((8, 10, 3)).astype(np.float32)
    raw = mosaic(rgb, "GBRG")
    out = demosaic_bilinear(raw, "GBRG")
    ch = channel_map("GBRG", raw.shape)
    np.testing.assert_array_equal(np.take_along_axis(out, ch[..., None], 2)[..., 0], raw)
