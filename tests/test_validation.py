import numpy as np
import pytest

from mfsr.validation import as_burst, check_reference, check_scale


def test_array_and_sequence_give_the_same_burst():
    rng = np.random.default_rng(0)
    frames = rng.random((3, 8, 9)).astype(np.float64)
    a, cfa, ref = as_burst(frames)
    b, _, _ = as_burst(list(frames))
    assert a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)
    assert cfa is None and ref == 0


def test_values_outside_unit_range_are_kept():
    frames = np.full((2, 4, 4), -0.25, np.float32)
    frames[1] = 1.5
    out, _, _ = as_burst(frames)
    assert out.min() == -0.25 and out.max() == 1.5


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((8, 8)), "frames: expected shape"),
        (np.zeros((2, 8, 8, 3, 1)), "frames: expected shape"),
        (np.zeros((2, 8, 8, 4)), "3 channels"),
        (np.zeros((0, 8, 8)), "empty burst"),
        ([], "empty burst"),
        ([np.zeros((8, 8)), np.zeros((8, 9))], r"frames\[1\]: shape"),
        (np.zeros((2, 8, 8), np.uint16), "integer dtype"),
        (np.zeros((2, 1, 8)), "at least 2x2"),
    ],
)
def test_bad_frames(frames, message):
    with pytest.raises((ValueError, TypeError), match=message):
        as_burst(frames)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_frame(bad):
    frames = np.zeros((3, 8, 8), np.float32)
    frames[2, 4, 4] = bad
    with pytest.raises(ValueError, match=r"frames: NaN or infinite values in frame\(s\) \[2\]"):
        as_burst(frames)


def test_cfa_checks():
    with pytest.raises(ValueError, match="cfa: unknown CFA pattern"):
        as_burst(np.zeros((2, 8, 8)), cfa="XYZW")
    with pytest.raises(ValueError, match="cfa: a CFA pattern"):
        as_burst(np.zeros((2, 8, 8, 3)), cfa="RGGB")
    _, cfa, _ = as_burst(np.zeros((2, 8, 8)), cfa="bggr")
    assert cfa == "BGGR"


def test_reference_and_scale():
    assert check_reference(-1, 4) == 3
    with pytest.raises(ValueError, match="reference: index 4 out of range"):
        check_reference(4, 4)
    with pytest.raises(ValueError, match="reference"):
        check_reference(-5, 4)
    with pytest.raises(TypeError, match="reference"):
        check_reference(1.0, 4)
    assert check_scale(1.5) == 1.5
    for bad in (0, -2, np.nan, np.inf):
        with pytest.raises(ValueError, match="scale"):
            check_scale(bad)
    with pytest.raises(TypeError, match="scale"):
        check_scale("two")


def test_check_orientation():
    from mfsr.validation import check_orientation

    assert [check_orientation(k) for k in range(1, 9)] == list(range(1, 9))
    for bad in (0, 9, 2.5, "6"):
        with pytest.raises(ValueError, match="orientation"):
            check_orientation(bad)
