"""Camera bursts end to end: RAW files in, fused and developed image out.

:func:`fuse_raw` reads a RAW burst (DNG, camera RAW or headerless dumps),
picks the reference by a documented rule, takes the noise model from the
DNG NoiseProfile (or estimates it from the burst), and fuses the mosaics
directly (no demosaicking first). :func:`develop` then either finishes the
camera RGB for viewing (white balance, colour matrix, exposure, tone,
sharpening) or keeps it linear for measurement; :func:`save_camera_image`
writes PNG, TIFF or a linear DNG with the metadata carried over.

White balance and colour matrix come from the file, from the caller (which
overrides the file, e.g. for headerless dumps that carry none), or, for the
white balance of a file without one, from the image itself by grey world
(:func:`resolve_white_balance`), so that such files are not developed with a
colour cast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .finishing import apply_orientation, finish, grey_world_gains
from .fusion import FusionResult, fuse
from .image_io import write_image
from .raw_io import RawBurst, load_burst
from .sharpness import sharpest_frame
from .validation import check_color_matrix, check_reference, check_white_balance

#: How many of the first frames compete for the reference with ``reference="auto"``.
AUTO_REFERENCE_CANDIDATES = 3


@dataclass
class CameraResult:
    """A fused RAW burst and where its choices came from.

    Attributes
    ----------
    fusion : FusionResult
        The merge: ``fusion.image`` is linear camera RGB (H', W', 3), not
        white-balanced, in sensor orientation.
    burst : RawBurst
        The frames and their metadata.
    reference_rule : str
        ``"given"`` or ``"sharpest of the first 3"``.
    noise_source : str
        ``"given"``, ``"DNG NoiseProfile"`` or ``"estimated from the reference frame"``.
    """

    fusion: FusionResult
    burst: RawBurst
    reference_rule: str
    noise_source: str

    @property
    def reference_info(self):
        """Metadata (:class:`mfsr.raw_io.RawFrame`) of the reference frame."""
        return self.burst.info[self.fusion.reference]


def fuse_raw(
    source,
    *,
    scale: float = 2.0,
    reference: int | str = "auto",
    noise: tuple[float, float] | None = None,
    headerless: dict | None = None,
    white_balance=None,
    color_matrix=None,
    progress: bool = False,
    **fuse_options,
) -> CameraResult:
    """Read and fuse a RAW burst.

    Parameters
    ----------
    source : path-like or sequence of path-like
        A folder (its RAW files in name order) or files in burst order; see
        :func:`mfsr.raw_io.read_burst`.
    scale : float
        Output pixels per sensor pixel (1 merges and demosaicks, 2 zooms).
    reference : int or "auto"
        Index of the reference frame, or ``"auto"``: the sharpest
        (:func:`mfsr.sharpness.sharpest_frame`) of the first
        :data:`AUTO_REFERENCE_CANDIDATES` frames, never file-system order.
    noise : (alpha, beta), optional
        Noise model of the normalised samples. Default: the reference
        frame's DNG NoiseProfile, else estimated from the reference frame.
    headerless : dict, optional
        Read headerless dumps with these :func:`mfsr.raw_io.read_headerless`
        arguments (``width``, ``height``, ``bits``, ``cfa``...).
    white_balance : sequence of 3 float, optional
        Gains for camera (R, G, B), each finite and > 0, that replace the
        files' as-shot white balance in every frame's metadata (so
        :func:`develop` and :func:`save_camera_image` use them). Default: the
        files' own; :func:`develop` uses grey world for files without one.
    color_matrix : array_like, shape (3, 3) or (9,), optional
        White-balanced camera RGB -> linear sRGB, row-major
        (``srgb = color_matrix @ cam``), replacing the files' matrix in
        every frame's metadata. Default: the files' own (none for
        headerless dumps: identity).
    progress : bool
        Progress bars.
    **fuse_options
        Passed to :func:`mfsr.fuse` (``params``, ``registration``...).

    Returns
    -------
    CameraResult
    """
    # Checked before reading and fusing, which take long.
    wb = None if white_balance is None else check_white_balance(white_balance)
    cm = None if color_matrix is None else check_color_matrix(color_matrix)
    burst = load_burst(source, **(headerless or {}))
    for f in burst.info:
        if wb is not None:
            f.wb_multipliers = wb.copy()
            f.wb_known = True
        if cm is not None:
            f.color_matrix = cm.copy()
    if isinstance(reference, str):
        if reference != "auto":
            raise ValueError(f"reference: expected a frame index or 'auto', got {reference!r}")
        reference = sharpest_frame(burst.frames, burst.cfa, candidates=AUTO_REFERENCE_CANDIDATES)
        rule = f"sharpest of the first {min(AUTO_REFERENCE_CANDIDATES, len(burst))}"
    else:
        reference = check_reference(reference, len(burst))
        rule = "given"
    if noise is not None:
        source_name = "given"
    else:
        noise = burst.noise_model(reference)
        source_name = "DNG NoiseProfile" if noise is not None else "estimated from the reference frame"
    result = fuse(
        burst.frames,
        scale=scale,
        cfa=burst.cfa,
        reference=reference,
        noise=noise,
        progress=progress,
        **fuse_options,
    )
    return CameraResult(fusion=result, burst=burst, reference_rule=rule, noise_source=source_name)


def resolve_white_balance(camera_rgb: np.ndarray, info, white_balance=None) -> tuple[np.ndarray, str]:
    """The white-balance gains :func:`develop` applies, and where they come from.

    Parameters
    ----------
    camera_rgb : ndarray of float, shape (H, W, 3)
        Linear camera RGB (a fused RAW burst), 1 = white level.
    info : RawFrame
        Metadata of the reference frame.
    white_balance : sequence of 3 float, optional
        Gains given by the caller; they win over the file.

    Returns
    -------
    gains : ndarray of float64, shape (3,)
        Multipliers of (R, G, B).
    source : {"given", "file", "grey world"}
        ``"grey world"`` (:func:`mfsr.finishing.grey_world_gains` of
        ``camera_rgb``) when nothing was given and the file has no white
        balance (``info.wb_known`` False).
    """
    if white_balance is not None:
        return check_white_balance(white_balance), "given"
    if getattr(info, "wb_known", True):
        return np.asarray(info.wb_multipliers, np.float64), "file"
    return grey_world_gains(camera_rgb), "grey world"


def develop(
    camera_rgb: np.ndarray,
    info,
    *,
    linear: bool = False,
    exposure: float = 0.0,
    tone: str = "none",
    sharpen: float = 0.0,
    white_balance=None,
    color_matrix=None,
) -> np.ndarray:
    """Camera RGB -> linear sRGB for viewing, or unchanged for ``linear``.

    Parameters
    ----------
    camera_rgb : ndarray of float32, shape (H, W, 3)
        Linear camera RGB (a fused RAW burst).
    info : RawFrame
        Metadata with ``wb_multipliers``, ``wb_known`` and ``color_matrix``.
    linear : bool
        Keep linear camera RGB: no white balance, colour matrix, exposure,
        tone or sharpening (the engineer's output).
    exposure, tone, sharpen
        See :func:`mfsr.finishing.finish`.
    white_balance : sequence of 3 float, optional
        Gains for camera (R, G, B), each finite and > 0, overriding the
        file's. Default: the file's as-shot gains, or, for a file without
        white balance (headerless dumps), grey-world gains of ``camera_rgb``
        (see :func:`resolve_white_balance`, which also says which was used).
    color_matrix : array_like, shape (3, 3) or (9,), optional
        White-balanced camera RGB -> linear sRGB, row-major
        (``srgb = color_matrix @ cam``), overriding ``info.color_matrix``.
        Default: the file's; identity when it has none.

    Returns
    -------
    ndarray of float32, shape (H, W, 3)
    """
    cm = info.color_matrix if color_matrix is None else check_color_matrix(color_matrix)
    if white_balance is not None:
        check_white_balance(white_balance)
    if linear:
        return camera_rgb
    gains, _ = resolve_white_balance(camera_rgb, info, white_balance)
    return finish(
        camera_rgb,
        wb_multipliers=gains,
        color_matrix=cm,
        exposure=exposure,
        tone=tone,
        sharpen=sharpen,
    )


def save_camera_image(
    path: str | os.PathLike,
    image: np.ndarray,
    info,
    *,
    linear: bool,
    dtype: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a developed (or linear) camera image with its metadata, atomically.

    Parameters
    ----------
    path : path-like
        ``.png``, ``.tif``/``.tiff`` or ``.dng``.
    image : ndarray of float32, shape (H, W, 3)
        Output of :func:`develop`: linear sRGB, or linear camera RGB when
        ``linear``. A ``.dng`` needs the linear camera RGB.
    info : RawFrame
        Reference frame's metadata (white balance, colour matrix,
        orientation, ISO, exposure, noise profile).
    linear : bool
        Whether ``image`` is linear camera RGB. Linear PNG/TIFF are written
        without any transfer curve; finished ones with the sRGB curve.
    dtype : {"uint8", "uint16", "float32"}, optional
        Sample type (default: uint8 for finished PNG, uint16 otherwise).
    overwrite : bool
        Replace an existing file; if False it is created exclusively
        (``FileExistsError`` if it exists).

    Returns
    -------
    Path

    Notes
    -----
    TIFF and DNG carry the orientation as a tag and keep sensor orientation;
    a finished PNG, which has no such tag, is turned upright.
    """
    path = Path(path)
    if path.suffix.lower() == ".dng":
        if not linear:
            raise ValueError(
                f"{path}: a DNG holds linear camera RGB; use --linear (the reader develops it)"
            )
        from .dng import write_dng

        return write_dng(
            path,
            image,
            wb_multipliers=info.wb_multipliers,
            color_matrix=info.color_matrix,
            noise_profile=info.noise_profile,
            orientation=info.orientation,
            iso=info.iso,
            exposure_time=info.exposure_time,
            overwrite=overwrite,
        )
    transfer = "linear" if linear else "srgb"
    if path.suffix.lower() == ".png":
        if not linear:
            image = apply_orientation(image, info.orientation)
        return write_image(path, image, transfer=transfer, dtype=dtype, overwrite=overwrite)
    return write_image(path, image, transfer=transfer, dtype=dtype, orientation=info.orientation, overwrite=overwrite)
