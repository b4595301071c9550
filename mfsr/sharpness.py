"""Choosing the reference frame of a burst: the sharpest of the first few.

The reference fixes the output geometry and is the frame every other frame is
compared with, so a frame blurred by hand shake makes a poor reference. The
rule (as in HDR+ and Wronski et al.) is to take the sharpest of the first few
frames, which keeps the reference close in time to the shutter press.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .kernels.structure_tensor import grey_image
from .validation import as_burst


def sharpness(frame: np.ndarray, cfa: str | None = None) -> float:
    """Mean gradient energy of a frame, relative to its mean brightness.

    Parameters
    ----------
    frame : ndarray, shape (H, W) or (H, W, 3)
        Linear values; a Bayer mosaic when ``cfa`` is given (it is binned 2x2
        first, so the mosaic pattern does not count as detail).
    cfa : str or None
        Bayer pattern of a mosaic.

    Returns
    -------
    float
        ``mean(|grad g|^2) / mean(g)^2`` of the grey image ``g`` after a
        light Gaussian smoothing (sigma 1 px) that keeps pixel noise from
        dominating; dimensionless, comparable between frames of one burst.
    """
    f = np.ascontiguousarray(frame, np.float32)
    # the fusion's own grey: 2x2-binned mosaic, or the channel mean
    g = grey_image(f if f.ndim == 3 else f[..., None], 2 if cfa is not None else 1)
    g = gaussian_filter(g, 1.0, mode="nearest")
    gy, gx = np.gradient(g)
    energy = float(np.mean(gy * gy + gx * gx))
    return energy / max(float(np.mean(g)) ** 2, 1e-12)


def sharpest_frame(frames, cfa: str | None = None, *, candidates: int = 3) -> int:
    """Index of the sharpest of the first ``candidates`` frames.

    Parameters
    ----------
    frames : ndarray or sequence of ndarray
        Burst (N, H, W) or (N, H, W, 3), in capture order.
    cfa : str or None
        Bayer pattern of mosaic frames.
    candidates : int
        How many of the first frames compete (>= 1); ties go to the earlier.

    Returns
    -------
    int
        Index of the chosen reference frame.
    """
    if candidates < 1:
        raise ValueError(f"candidates: expected at least 1, got {candidates}")
    burst, cfa, _ = as_burst(frames, cfa, 0)
    scores = [sharpness(burst[k], cfa) for k in range(min(candidates, len(burst)))]
    return int(np.argmax(scores))
