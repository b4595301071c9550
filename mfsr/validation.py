"""Input checks shared by the public functions.

Every check raises :class:`ValueError` or :class:`TypeError` whose message starts
with the offending argument's name, so a user sees at once what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cfa import check_pattern
from .invalid_samples import SANE_LIMIT


def as_burst(
    frames: np.ndarray | Sequence[np.ndarray],
    cfa: str | None = None,
    reference: int = 0,
) -> tuple[np.ndarray, str | None, int]:
    """Validate a burst and return it as one float32 array.

    Parameters
    ----------
    frames : ndarray or sequence of ndarray
        (N, H, W) grey or CFA mosaics, (N, H, W, 3) RGB, or a sequence of
        (H, W) / (H, W, 3) arrays of one shape. Linear values, nominally in
        [0, 1]; values outside that range are kept (nothing is clipped).
    cfa : str or None
        Bayer pattern of mosaic input, one of ``RGGB, BGGR, GRBG, GBRG``.
    reference : int
        Index of the reference frame; negative values count from the end.

    Returns
    -------
    burst : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
        C-contiguous; a view of ``frames`` when it already was such an array.
    cfa : str or None
        Upper-cased pattern.
    reference : int
        Non-negative reference index.
    """
    if isinstance(frames, np.ndarray):
        burst = frames
    elif isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if len(frames) == 0:
            raise ValueError("frames: empty burst; expected at least one frame")
        arrays = []
        for i, f in enumerate(frames):
            if not isinstance(f, np.ndarray):
                raise TypeError(f"frames[{i}]: expected a numpy array, got {type(f).__name__}")
            if f.shape != frames[0].shape:
                raise ValueError(
                    f"frames[{i}]: shape {f.shape} differs from frames[0] shape "
                    f"{frames[0].shape}; all frames must have one shape"
                )
            arrays.append(f)
        if arrays[0].ndim not in (2, 3):
            raise ValueError(
                f"frames: each frame must be (H, W) or (H, W, 3), got shape {arrays[0].shape}"
            )
        burst = np.stack(arrays)
    else:
        raise TypeError(
            f"frames: expected an array (N, H, W[, 3]) or a sequence of arrays, "
            f"got {type(frames).__name__}"
        )

    if burst.size == 0 and burst.ndim >= 1 and burst.shape[0] == 0:
        raise ValueError("frames: empty burst; expected at least one frame")
    if burst.ndim not in (3, 4):
        raise ValueError(
            f"frames: expected shape (N, H, W) or (N, H, W, 3), got ndim={burst.ndim} "
            f"shape {burst.shape}"
        )
    if burst.ndim == 4 and burst.shape[3] != 3:
        raise ValueError(
            f"frames: colour frames must have 3 channels in the last axis, got shape {burst.shape}"
        )
    if not (np.issubdtype(burst.dtype, np.floating) or np.issubdtype(burst.dtype, np.integer)):
        raise TypeError(f"frames: expected a real numeric dtype, got {burst.dtype}")
    n, h, w = burst.shape[:3]
    if h < 2 or w < 2:
        raise ValueError(f"frames: each frame must be at least 2x2 pixels, got {h}x{w}")

    if np.issubdtype(burst.dtype, np.integer):
        raise TypeError(
            f"frames: got integer dtype {burst.dtype}; pass linear float values in [0, 1] "
            "(divide by the white level after subtracting the black level)"
        )
    burst = np.ascontiguousarray(burst, dtype=np.float32)
    if not all_finite(burst):
        bad = [k for k in range(n) if not all_finite(burst[k])]
        raise ValueError(
            f"frames: NaN or infinite values in frame(s) {bad}; mask or fill them first "
            "(mfsr.invalid_samples.fill_invalid)"
        )
    if max(-float(burst.min()), float(burst.max())) > SANE_LIMIT:
        bad = [k for k in range(n) if np.abs(burst[k]).max() > SANE_LIMIT]
        raise ValueError(
            f"frames: values beyond +-{SANE_LIMIT:g} in frame(s) {bad}, which no normalised sample "
            "(0 black, 1 white) can have: an undeclared fill value? mask or fill them first "
            "(mfsr.invalid_samples.fill_invalid)"
        )

    if cfa is not None:
        cfa = check_pattern(cfa)
        if burst.ndim != 3:
            raise ValueError(
                f"cfa: a CFA pattern ({cfa}) needs single-channel mosaics (N, H, W), "
                f"got frames of shape {burst.shape}"
            )
        if h < 4 or w < 4:
            raise ValueError(f"frames: CFA mosaics must be at least 4x4 samples, got {h}x{w}")

    reference = check_reference(reference, n)
    return burst, cfa, reference


def all_finite(array: np.ndarray) -> bool:
    """True when ``array`` holds no NaN or infinity.

    Checks the extremes (NaN propagates through min/max) instead of building
    a boolean array as large as a whole burst.
    """
    return bool(np.isfinite(array.min()) and np.isfinite(array.max()))


def check_reference(reference: int, n: int) -> int:
    """Return ``reference`` as a non-negative index into ``n`` frames."""
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)):
        raise TypeError(f"reference: expected an integer frame index, got {reference!r}")
    if not -n <= reference < n:
        raise ValueError(
            f"reference: index {reference} out of range for a burst of {n} frame(s)"
        )
    return int(reference) % n


def check_orientation(orientation: int) -> int:
    """Return an EXIF/TIFF orientation code (1 to 8), or raise naming ``orientation``."""
    if orientation not in range(1, 9):
        raise ValueError(f"orientation: expected an EXIF orientation code 1 to 8, got {orientation!r}")
    return int(orientation)


def check_scale(scale: float) -> float:
    """Return ``scale`` as a float, or raise if it is not a finite positive number."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale: expected a positive number, got {scale!r}") from None
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
    return s


def check_psf_sigma(psf_sigma: float | None) -> float | None:
    """Return ``psf_sigma`` as a float (None stays None), or raise if it is not a finite number >= 0."""
    if psf_sigma is None:
        return None
    if isinstance(psf_sigma, (bool, np.bool_)) or not isinstance(psf_sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"psf_sigma: expected None or a number (input pixels), got {psf_sigma!r}")
    s = float(psf_sigma)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"psf_sigma: expected a finite number >= 0 (input pixels), got {psf_sigma!r}")
    return s


def _numbers(value, name: str) -> np.ndarray:
    # Strings are sequences too; reject them rather than read their characters.
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected numbers, got {value!r}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected numbers, got {value!r}") from None


def check_white_balance(white_balance, name: str = "white_balance") -> np.ndarray:
    """Return white-balance gains as a float64 array of shape (3,), or raise naming ``name``.

    Parameters
    ----------
    white_balance : sequence of 3 numbers
        Multipliers of camera (R, G, B); each finite and > 0. They are used
        as given, not normalised.
    name : str
        The argument's name in error messages (``"--white-balance"`` on the
        command line).

    Returns
    -------
    ndarray of float64, shape (3,)
    """
    wb = _numbers(white_balance, name).reshape(-1)
    if wb.size != 3:
        raise ValueError(f"{name}: expected 3 gains (R G B), got {wb.size}")
    if not np.all(np.isfinite(wb)) or np.any(wb <= 0):
        raise ValueError(f"{name}: expected 3 finite gains > 0 (R G B), got {wb.tolist()}")
    return wb


def check_color_matrix(color_matrix, name: str = "color_matrix") -> np.ndarray:
    """Return a camera RGB -> linear sRGB matrix as float64 (3, 3), or raise naming ``name``.

    Parameters
    ----------
    color_matrix : array_like of 9 numbers, shape (3, 3) or (9,)
        Row-major: ``srgb = color_matrix @ camera_rgb`` for white-balanced
        camera RGB (each row gives one sRGB channel). All finite.
    name : str
        The argument's name in error messages (``"--color-matrix"`` on the
        command line).

    Returns
    -------
    ndarray of float64, shape (3, 3)
    """
    cm = _numbers(color_matrix, name)
    if cm.size != 9 or cm.shape not in ((9,), (3, 3)):
        raise ValueError(f"{name}: expected 9 numbers (a 3x3 matrix, row-major), got shape {cm.shape}")
    if not np.all(np.isfinite(cm)):
        raise ValueError(f"{name}: expected finite numbers, got {cm.ravel().tolist()}")
    return cm.reshape(3, 3)


def check_noise_model(alpha: float, beta: float, reference: np.ndarray, name: str = "noise") -> None:
    """Raise if a noise model cannot describe normalised samples like ``reference``.

    A model given in digital numbers instead of normalised units (0 black,
    1 white) implies a noise larger than the image itself; the fusion would
    then trust no frame and the refinement would amplify noise it believes
    is there. Pure noise spans about 6 sigma between its 0.1 and 99.9
    percentiles, so a sigma above half of the data's range (at least the
    nominal range 1) cannot be the noise of these samples.

    Parameters
    ----------
    alpha, beta : float
        Variance ``alpha * x + beta`` of a normalised sample ``x``.
    reference : ndarray
        The reference frame (normalised samples).
    name : str
        Argument name for the message.

    Raises
    ------
    ValueError
    """
    lo, hi = (float(v) for v in np.percentile(reference[:: max(1, reference.shape[0] // 512)], (0.1, 99.9)))
    span = max(hi - lo, 1.0)
    sigma = float(np.sqrt(max(alpha * max(hi, 0.0) + beta, 0.0)))
    if sigma > 0.5 * span:
        raise ValueError(
            f"{name}: alpha {alpha:.3g} and beta {beta:.3g} imply a noise sigma of {sigma:.3g} at the "
            f"brightest samples, more than half the data's range ({span:.3g}); give the model for "
            "normalised samples (0 black, 1 white), not in digital numbers"
        )
