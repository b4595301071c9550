"""Colour filter array (Bayer) patterns.

A pattern string names the colours of the top-left 2x2 cell in row-major order,
e.g. ``"RGGB"``: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1).
Channel indices are 0 = R, 1 = G, 2 = B.
"""

from __future__ import annotations

import numpy as np

PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
_CHANNEL = {"R": 0, "G": 1, "B": 2}


def check_pattern(cfa: str, argname: str = "cfa") -> str:
    """Return the upper-cased pattern, or raise ``ValueError`` naming ``argname``."""
    if not isinstance(cfa, str) or cfa.upper() not in PATTERNS:
        raise ValueError(
            f"{argname}: unknown CFA pattern {cfa!r}; expected one of {', '.join(PATTERNS)}"
        )
    return cfa.upper()


def cell_channels(cfa: str) -> np.ndarray:
    """Channel index of each position of the 2x2 CFA cell.

    Returns
    -------
    cell : ndarray of int64, shape (2, 2)
        ``cell[y % 2, x % 2]`` is the colour channel (0 R, 1 G, 2 B) of raw
        sample (y, x).
    """
    cfa = check_pattern(cfa)
    return np.array([_CHANNEL[c] for c in cfa], dtype=np.int64).reshape(2, 2)


def channel_map(cfa: str, shape: tuple[int, int]) -> np.ndarray:
    """Channel index of every raw sample of a mosaic of ``shape`` (rows, cols)."""
    cell = cell_channels(cfa)
    h, w = shape
    return np.tile(cell, ((h + 1) // 2, (w + 1) // 2))[:h, :w]


def mosaic(rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter.

    Parameters
    ----------
    rgb : ndarray, shape (H, W, 3)
    cfa : str
        One of :data:`PATTERNS`.

    Returns
    -------
    raw : ndarray, shape (H, W), same dtype as ``rgb``
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected shape (H, W, 3), got {rgb.shape}")
    ch = channel_map(cfa, rgb.shape[:2])
    return np.take_along_axis(rgb, ch[..., None], axis=2)[..., 0]


def demosaic_bilinear(raw: np.ndarray, cfa: str) -> np.ndarray:
    """Bilinear demosaicking: each missing colour is the normalised average of
    the known samples of that colour in the 3x3 neighbourhood.

    This is the single-frame baseline the benchmarks compare against.

    Parameters
    ----------
    raw : ndarray, shape (H, W)
    cfa : str

    Returns
    -------
    rgb : ndarray of float32, shape (H, W, 3)
    """
    from scipy.ndimage import convolve

    if raw.ndim != 2:
        raise ValueError(f"raw: expected shape (H, W), got {raw.shape}")
    ch = channel_map(cfa, raw.shape)
    k = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    out = np.empty(raw.shape + (3,), np.float32)
    raw64 = raw.astype(np.float64)
    for c in range(3):
        m = (ch == c).astype(np.float64)
        num = convolve(raw64 * m, k, mode="mirror")
        den = convolve(m, k, mode="mirror")
        out[..., c] = np.where(m > 0, raw64, num / den)
    return out
