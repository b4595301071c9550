"""sRGB transfer function (IEC 61966-2-1): encoded values <-> linear light.

Fusion works in linear light; 8-bit photographs (PNG, JPEG) are sRGB-encoded, so
they are decoded on reading and re-encoded on writing.
"""

from __future__ import annotations

import numpy as np

#: Relative luminance of linear sRGB / Rec. 709 primaries: ``Y = rgb @ REC709_LUMA``.
REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Decode sRGB values in [0, 1] to linear light, float32, same shape."""
    v = np.asarray(encoded, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0) + 0.055) / 1.055) ** 2.4).astype(
        np.float32
    )


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode linear light to sRGB, float32, same shape.

    Negative values (noise below black) map linearly, so nothing is clipped here.
    """
    v = np.asarray(linear, dtype=np.float32)
    return np.where(
        v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0) ** (1 / 2.4) - 0.055
    ).astype(np.float32)
