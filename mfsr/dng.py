"""Writing DNG files: Bayer mosaics (CFA) and linear demosaicked images.

Two kinds of DNG (Adobe DNG specification 1.4) are written with ``tifffile``,
uncompressed, so that raw converters (Lightroom, darktable, RawTherapee,
LibRaw/rawpy) develop them with the camera's colour and white balance:

- a **CFA DNG** of a Bayer mosaic (``PhotometricInterpretation`` 32803), used
  by ``mfsr simulate --format dng`` to make test bursts;
- a **linear DNG** of a demosaicked image in camera RGB
  (``PhotometricInterpretation`` 34892, LinearRaw), the engineer's output of
  a fused RAW burst.

Colour is recorded the DNG way: ``ColorMatrix1`` maps CIE XYZ (D65) to the
camera's native RGB and ``AsShotNeutral`` is the camera RGB of a neutral
(white-balance gains are its reciprocal). They are derived from the
camera -> sRGB matrix and the white-balance gains of :class:`mfsr.raw_io.RawFrame`,
so reading the file back with :func:`mfsr.raw_io.read_raw` (LibRaw) gives
the same matrix and gains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic_file import atomic_output
from .cfa import check_pattern
from .image_io import quantize
from .validation import check_orientation

# Linear sRGB (D65) -> CIE XYZ, IEC 61966-2-1.
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_RATIONAL_DEN = 1_000_000


def _rationals(values, den: int = _RATIONAL_DEN) -> list[int]:
    out: list[int] = []
    for v in np.ravel(values):
        out += [int(round(float(v) * den)), den]
    return out


def _colour_tags(wb_multipliers, color_matrix) -> list[tuple]:
    """ColorMatrix1 (XYZ -> camera native) and AsShotNeutral from gains and camera -> sRGB."""
    wb = np.asarray(wb_multipliers, np.float64).reshape(3)
    if not np.all(np.isfinite(wb)) or np.any(wb <= 0):
        raise ValueError(f"wb_multipliers: expected three positive gains, got {wb.tolist()}")
    cam_to_srgb = np.eye(3) if color_matrix is None else np.asarray(color_matrix, np.float64)
    if cam_to_srgb.shape != (3, 3) or not np.all(np.isfinite(cam_to_srgb)):
        raise ValueError(f"color_matrix: expected a finite (3, 3) matrix, got shape {cam_to_srgb.shape}")
    if abs(np.linalg.det(cam_to_srgb)) < 1e-9:
        raise ValueError("color_matrix: singular matrix")
    # white-balanced camera = inv(cam_to_srgb) @ sRGB; native camera = wb-balanced / gains
    xyz_to_cam = np.diag(1.0 / wb) @ np.linalg.inv(cam_to_srgb) @ np.linalg.inv(_SRGB_TO_XYZ)
    neutral = 1.0 / wb
    neutral = neutral / neutral.max()
    return [
        (50721, "2i", 9, _rationals(xyz_to_cam), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, _rationals(neutral), True),  # AsShotNeutral
    ]


def write_dng(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    cfa: str | None = None,
    black_level: float | np.ndarray = 0.0,
    white_level: int = 65535,
    wb_multipliers=(1.0, 1.0, 1.0),
    color_matrix: np.ndarray | None = None,
    noise_profile: np.ndarray | None = None,
    orientation: int = 1,
    iso: float | None = None,
    exposure_time: float | None = None,
    camera_model: str = "mfsr",
    overwrite: bool = True,
) -> Path:
    """Write a Bayer mosaic or a linear RGB image as a DNG file, atomically.

    Parameters
    ----------
    path : path-like
        Output ``.dng`` file; its folder must exist.
    image : ndarray of float, shape (H, W) with ``cfa`` or (H, W, 3) without
        Normalised linear values: 0 is black, 1 the white level. A mosaic is
        stored as ``round(image * (white - black) + black)``; an RGB image
        (camera RGB, *not* white-balanced, as :func:`mfsr.fuse` returns for a
        mosaic burst) as ``round(image * white)``. Values that do not fit
        the integer range are clipped with a warning that counts them.
    cfa : str or None
        Bayer pattern of a mosaic; None writes a linear (demosaicked) DNG.
    black_level : float or ndarray of shape (2, 2)
        Black level in digital numbers, per CFA position for a mosaic. Must be
        0 for an RGB image.
    white_level : int
        Saturation level in digital numbers, at most 65535.
    wb_multipliers : sequence of 3 float
        As-shot white-balance gains for (R, G, B); stored as ``AsShotNeutral``.
    color_matrix : ndarray, shape (3, 3), optional
        White-balanced camera RGB -> linear sRGB matrix
        (:attr:`mfsr.raw_io.RawFrame.color_matrix`); identity when None.
    noise_profile : ndarray, shape (P, 2), optional
        DNG ``NoiseProfile``: ``(alpha, beta)`` per plane for normalised values.
    orientation : int
        EXIF orientation code (1 to 8).
    iso, exposure_time : float, optional
        ISO speed and exposure time in seconds, when known.
    camera_model : str
        ``UniqueCameraModel`` (and ``Model``) string.
    overwrite : bool
        Replace an existing file (default); if False it is created
        exclusively (``FileExistsError`` if it exists).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        On a wrong shape, unknown pattern, levels out of range, or a
        non-finite image; the message names the argument.
    """
    import tifffile

    path = Path(path)
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image: expected normalised float values, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image: contains NaN or infinite values")
    if not 0 < int(white_level) <= 65535:
        raise ValueError(f"white_level: expected 1 to 65535, got {white_level}")
    check_orientation(orientation)
    white = int(white_level)
    if cfa is not None:
        cfa = check_pattern(cfa)
        if image.ndim != 2:
            raise ValueError(f"image: a CFA DNG takes an (H, W) mosaic, got shape {image.shape}")
        black = np.broadcast_to(np.asarray(black_level, np.float64), (2, 2))
        if np.any(black < 0) or np.any(black >= white):
            raise ValueError(f"black_level: expected 0 <= black < white_level ({white}), got {black.tolist()}")
        h, w = image.shape
        tiled = np.tile(black, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
        dn = (image * (white - tiled) + tiled) / 65535.0
        tags = [
            (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
            (33422, "B", 4, tuple(_CFA_CODES[c] for c in cfa), True),  # CFAPattern
            (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
            (50711, "H", 1, 1, True),  # CFALayout: rectangular
            (50713, "H", 2, (2, 2), True),  # BlackLevelRepeatDim
            (50714, "2I", 4, _rationals(black.ravel(), 100), True),  # BlackLevel
        ]
        photometric = 32803
    else:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image: a linear DNG takes an (H, W, 3) image, got shape {image.shape}")
        if np.any(np.asarray(black_level) != 0):
            raise ValueError("black_level: must be 0 for a linear RGB image")
        dn = image * (white / 65535.0)
        tags = []
        photometric = 34892
    data = quantize(dn, 16, path)
    tags += [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, camera_model, True),  # UniqueCameraModel
        (272, "s", 0, camera_model, True),  # Model
        (274, "H", 1, orientation, True),  # Orientation
        (50717, "I", 1, white, True),  # WhiteLevel
    ]
    tags += _colour_tags(wb_multipliers, color_matrix)
    if noise_profile is not None:
        prof = np.asarray(noise_profile, np.float64)
        if prof.ndim != 2 or prof.shape[1] != 2 or not np.all(np.isfinite(prof)):
            raise ValueError(f"noise_profile: expected (P, 2) finite pairs, got shape {prof.shape}")
        tags.append((51041, "d", prof.size, tuple(prof.ravel()), True))
    if iso is not None:
        tags.append((34855, "H", 1, int(round(iso)), True))
    if exposure_time is not None:
        tags.append((33434, "2I", 1, _rationals([exposure_time]), True))
    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            photometric=photometric,
            planarconfig="contig" if data.ndim == 3 else None,
            subfiletype=0,
            software="mfsr",
            extratags=tags,
            metadata=None,
        )
    return path
