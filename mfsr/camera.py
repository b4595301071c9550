"""Camera bursts end to end: RAW files in, fused and developed image out.

:func:`fuse_raw` reads a RAW burst (DNG, camera RAW or headerless dumps),
picks the reference by a documented rule, takes the noise model from the
DNG NoiseProfile (or estimates it from the burst), and fuses the mosaics
directly (no demosaicking first). :func:`develop` then either finishes the
camera RGB for viewing (white balance, colour matrix, exposure, tone,
sharpening) or keeps it linear for measurement; :func:`save_camera_image`
writes PNG, TIFF or a linear DNG with the metadata carried over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .finishing import apply_orientation, finish
from .fusion import FusionResult, fuse
from .image_io import write_image
from .raw_io import RawBurst, load_burst
from .sharpness import sharpest_frame
from .validation import check_reference

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
    progress : bool
        Progress bars.
    **fuse_options
        Passed to :func:`mfsr.fuse` (``params``, ``registration``...).

    Returns
    -------
    CameraResult
    """
    burst = load_burst(source, **(headerless or {}))
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


def develop(
    camera_rgb: np.ndarray,
    info,
    *,
    linear: bool = False,
    exposure: float = 0.0,
    tone: str = "none",
    sharpen: float = 0.0,
) -> np.ndarray:
    """Camera RGB -> linear sRGB for viewing, or unchanged for ``linear``.

    Parameters
    ----------
    camera_rgb : ndarray of float32, shape (H, W, 3)
        Linear camera RGB (a fused RAW burst).
    info : RawFrame
        Metadata with ``wb_multipliers`` and ``color_matrix``.
    linear : bool
        Keep linear camera RGB: no white balance, colour matrix, exposure,
        tone or sharpening (the engineer's output).
    exposure, tone, sharpen
        See :func:`mfsr.finishing.finish`.

    Returns
    -------
    ndarray of float32, shape (H, W, 3)
    """
    if linear:
        return camera_rgb
    return finish(
        camera_rgb,
        wb_multipliers=info.wb_multipliers,
        color_matrix=info.color_matrix,
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
        )
    transfer = "linear" if linear else "srgb"
    if path.suffix.lower() == ".png":
        if not linear:
            image = apply_orientation(image, info.orientation)
        return write_image(path, image, transfer=transfer, dtype=dtype)
    return write_image(path, image, transfer=transfer, dtype=dtype, orientation=info.orientation)
