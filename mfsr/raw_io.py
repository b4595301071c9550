"""Reading camera RAW files (DNG and camera RAW via LibRaw, or headerless dumps).

Every reader returns a :class:`RawFrame`: the Bayer mosaic of the visible
sensor area as linear float32, with the black level of each CFA position
subtracted and divided by ``white - black`` (so 0 is black and 1 is the
saturation level; values are *not* clipped, read noise below black stays
negative), together with the CFA pattern and the metadata the fusion can use
(white balance, colour matrix, noise profile).

Camera RAW and DNG files are decoded with LibRaw through ``rawpy``. The DNG
``NoiseProfile`` tag, which LibRaw does not expose, is read with ``tifffile``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cfa import PATTERNS, check_pattern
from .image_io import expand_inputs

RAW_SUFFIXES: tuple[str, ...] = (
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
    ".orf", ".rw2", ".raw", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".mos",
    ".mrw", ".kdc", ".dcr", ".erf", ".mef", ".rwl", ".gpr",
)  # fmt: skip
"""File name suffixes (lower case) that :func:`read_burst` takes from a folder."""

_NOISE_PROFILE_TAG = 51041
_ISO_TAG = 34855
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_HEADERLESS_BITS = (10, 12, 14, 16)
# LibRaw's sizes.flip -> EXIF orientation code.
_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}


@dataclass
class RawFrame:
    """One RAW frame: a normalised Bayer mosaic and its metadata.

    Attributes
    ----------
    mosaic : ndarray of float32, shape (H, W)
        Linear raw samples of the visible area, ``(raw - black) / (white - black)``
        with the black level of each sample's CFA position. Not clipped:
        saturated samples are near 1 (above 1 if the white level is
        conservative) and noise can take dark samples below 0.
    cfa : str
        Bayer pattern of ``mosaic`` (one of :data:`mfsr.cfa.PATTERNS`): the
        colours of ``mosaic[0:2, 0:2]`` in row-major order. It describes the
        visible crop itself, whatever the parity of the sensor margins.
    black_level : ndarray of float64, shape (2, 2)
        Black level of each position of the 2x2 CFA cell, in raw digital
        numbers (``black_level[y % 2, x % 2]`` applies to sample (y, x)).
    white_level : float
        Saturation level in raw digital numbers.
    wb_multipliers : ndarray of float64, shape (3,)
        As-shot white-balance gains for (R, G, B), normalised so G = 1
        (all ones when the file has none).
    color_matrix : ndarray of float64, shape (3, 3), or None
        LibRaw's ``rgb_cam``: maps white-balanced camera RGB to linear sRGB
        (D65), ``srgb = color_matrix @ cam``; each row sums to 1. None when
        LibRaw has no colour profile for the camera and for headerless files.
    iso : float or None
        ISO speed, when recorded.
    exposure_time : float or None
        Exposure time in seconds, when recorded.
    noise_profile : ndarray of float64, shape (P, 2), or None
        DNG ``NoiseProfile`` (tag 0xC761): one ``(alpha, beta)`` pair per colour
        plane (P = 1 when one pair serves all planes), such that the variance of
        a normalised sample of mean ``x`` is ``alpha * x + beta``. None when
        absent.
    orientation : int
        EXIF/TIFF orientation code (1 = as stored, 3 = rotated 180 degrees,
        6 = rotate 90 degrees clockwise to view, 8 = counter-clockwise); the
        mosaic itself is always in sensor orientation.
    path : Path or None
        File the frame came from.
    wb_known : bool
        Whether ``wb_multipliers`` are known gains (the file's as-shot white
        balance, or given by the user) rather than the all-ones placeholder
        of a file without white balance (headerless dumps, RAW files without
        as-shot gains); :func:`mfsr.camera.develop` balances the latter by
        grey world.
    """

    mosaic: np.ndarray
    cfa: str
    black_level: np.ndarray
    white_level: float
    wb_multipliers: np.ndarray
    color_matrix: np.ndarray | None = None
    iso: float | None = None
    exposure_time: float | None = None
    noise_profile: np.ndarray | None = None
    orientation: int = 1
    path: Path | None = None
    wb_known: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the mosaic."""
        return self.mosaic.shape


def _normalise(raw: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    # Black per CFA position, tiled over the mosaic; computed in float32 to keep
    # memory at one float copy of the frame.
    h, w = raw.shape
    tiled = np.tile(black.astype(np.float32), ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    scale = np.float32(white) - tiled
    if np.any(scale <= 0):
        raise ValueError(f"white level {white} is not above the black level {black.tolist()}")
    out = raw.astype(np.float32)
    out -= tiled
    out /= scale
    return out


def _tiff_extras(path: Path) -> tuple[np.ndarray | None, float | None]:
    """NoiseProfile as (P, 2) pairs and ISO of a TIFF/DNG file (None where absent).

    LibRaw exposes neither the NoiseProfile nor an ISO written in IFD 0
    rather than in the EXIF IFD.
    """
    with open(path, "rb") as f:
        if f.read(4) not in _TIFF_MAGIC:
            return None, None
    import tifffile

    profile = iso = None
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                tag = page.tags.get(_NOISE_PROFILE_TAG)
                if profile is None and tag is not None:
                    values = np.asarray(tag.value, dtype=np.float64).ravel()
                    if values.size and values.size % 2 == 0:
                        profile = values.reshape(-1, 2)
                tag = page.tags.get(_ISO_TAG)
                if iso is None and tag is not None:
                    iso = float(np.ravel(tag.value)[0]) or None
    except Exception:  # noqa: BLE001 - metadata is optional; LibRaw has accepted the file
        pass
    return profile, iso


def _tiff_truncated(path: Path) -> bool:
    """True if a TIFF/DNG file ends before the image data its IFDs point to."""
    with open(path, "rb") as f:
        if f.read(4) not in _TIFF_MAGIC:
            return False
    import tifffile

    size = os.path.getsize(path)
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                for off, n in zip(page.dataoffsets, page.databytecounts):
                    if off + n > size:
                        return True
    except Exception:  # noqa: BLE001 - leave the verdict to LibRaw
        return False
    return False


def read_raw(path: str | os.PathLike) -> RawFrame:
    """Read a DNG or camera RAW file.

    Parameters
    ----------
    path : str or path-like
        Any Bayer RAW file LibRaw decodes (DNG, CR2, CR3, NEF, ARW, RAF
        (Bayer models), ORF, RW2, PEF, SRW...).

    Returns
    -------
    frame : RawFrame
        ``frame.mosaic`` has shape (H, W) = LibRaw's visible area
        (``raw_image_visible``), float32, normalised as described in
        :class:`RawFrame`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupt or not a RAW file, or if its sensor
        is not a 2x2 RGB Bayer mosaic (X-Trans, Foveon, linear/demosaicked DNG,
        four-colour CMYG sensors). The message names the file.
    """
    import rawpy

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a RAW file (see read_burst)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if _tiff_truncated(path):
        raise ValueError(f"{path}: truncated file (image data runs past the end of the file)")
    try:
        with rawpy.imread(str(path)) as raw:
            if raw.raw_type != rawpy.RawType.Flat:
                raise ValueError(
                    f"{path}: not a Bayer mosaic (LibRaw raw type {raw.raw_type.name}: "
                    "several samples per pixel, e.g. a linear DNG or a Foveon sensor)"
                )
            pattern = raw.raw_pattern
            desc = raw.color_desc.decode("ascii", "replace")
            if pattern is None or pattern.shape != (2, 2):
                shape = None if pattern is None else pattern.shape
                raise ValueError(
                    f"{path}: not a 2x2 Bayer sensor (CFA repeat {shape}, e.g. X-Trans)"
                )
            data = raw.raw_image_visible.copy()
            colors = raw.raw_colors_visible
            cell = colors[:2, :2].copy()
            cfa = "".join(desc[c] for c in cell.ravel())
            h, w = colors.shape
            if cfa not in PATTERNS or not np.array_equal(
                colors, np.tile(cell, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
            ):
                raise ValueError(f"{path}: not an RGB Bayer sensor (colours {desc!r}, cell {cfa!r})")
            black = np.asarray(raw.black_level_per_channel, np.float64)[cell]
            white = float(raw.white_level)
            cam_wb = np.asarray(raw.camera_whitebalance, np.float64)
            cm = np.asarray(raw.color_matrix, np.float64)[:3, :3]
            other = raw.other
            orientation = _FLIP_TO_EXIF.get(int(raw.sizes.flip), 1)
    except rawpy.LibRawError as exc:
        msg = exc.args[0] if exc.args else ""
        if isinstance(msg, bytes):
            msg = msg.decode(errors="replace")
        raise ValueError(
            f"{path}: cannot decode as a RAW file ({type(exc).__name__}: {msg})"
        ) from exc

    # White-balance gains follow color_desc; the second green (index 3) may be 0.
    wb = np.array([cam_wb[desc.index(c)] for c in "RGB"])
    wb_known = bool(np.all(wb > 0))
    wb = wb / wb[1] if wb_known else np.ones(3)
    profile, tiff_iso = _tiff_extras(path)
    return RawFrame(
        mosaic=_normalise(data, black, white),
        cfa=cfa,
        black_level=black,
        white_level=white,
        wb_multipliers=wb,
        color_matrix=cm if np.any(cm) else None,
        iso=float(other.iso_speed) if other.iso_speed > 0 else tiff_iso,
        exposure_time=float(other.shutter_speed) if other.shutter_speed > 0 else None,
        noise_profile=profile,
        orientation=orientation,
        path=path,
        wb_known=wb_known,
    )


def read_headerless(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    bits: int,
    cfa: str,
    black_level: float | np.ndarray = 0,
    white_level: float | None = None,
    byteorder: str = "<",
) -> RawFrame:
    """Read a headerless raw mosaic: ``height * width`` 16-bit words, row-major.

    Parameters
    ----------
    path : str or path-like
    width, height : int
        Mosaic size in samples (columns, rows).
    bits : int
        Significant bits per sample: 10, 12, 14 or 16 (samples right-aligned
        in their 16-bit words).
    cfa : str
        Bayer pattern of the first 2x2 cell, one of :data:`mfsr.cfa.PATTERNS`.
    black_level : float or array_like of shape (2, 2), optional
        Black level in digital numbers, one value or one per CFA position.
    white_level : float, optional
        Saturation level in digital numbers; default ``2**bits - 1``.
    byteorder : {"<", ">"}, optional
        Byte order of the words (default little-endian).

    Returns
    -------
    frame : RawFrame
        ``mosaic`` of shape (height, width) float32; no colour metadata
        (unit white balance with ``wb_known`` False, ``color_matrix``,
        ``iso``, ``exposure_time`` and ``noise_profile`` None).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file size is not ``width * height * 2`` bytes, if a sample
        exceeds ``2**bits - 1``, or on an unknown ``cfa``, ``bits`` or
        ``byteorder``. Messages name the file.
    """
    path = Path(path)
    cfa = check_pattern(cfa)
    if bits not in _HEADERLESS_BITS:
        raise ValueError(f"bits: expected one of {_HEADERLESS_BITS}, got {bits!r}")
    if byteorder not in ("<", ">"):
        raise ValueError(f"byteorder: expected '<' or '>', got {byteorder!r}")
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    expected = width * height * 2
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{path}: file size {actual} bytes does not match {width}x{height} 16-bit samples "
            f"(expected {expected} bytes)"
        )
    data = np.fromfile(path, dtype=np.dtype(f"{byteorder}u2")).reshape(height, width)
    vmax = 2**bits - 1
    if int(data.max()) > vmax:
        raise ValueError(
            f"{path}: sample value {int(data.max())} exceeds {vmax} for {bits}-bit data "
            "(wrong bits or byteorder?)"
        )
    black = np.broadcast_to(np.asarray(black_level, np.float64), (2, 2)).copy()
    white = float(vmax if white_level is None else white_level)
    try:
        mosaic = _normalise(data, black, white)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return RawFrame(
        mosaic=mosaic,
        cfa=cfa,
        black_level=black,
        white_level=white,
        wb_multipliers=np.ones(3),
        path=path,
        wb_known=False,
    )


def read_burst(paths_or_folder: str | os.PathLike | Sequence[str | os.PathLike]) -> list[RawFrame]:
    """Read a burst of RAW frames of one sensor.

    Parameters
    ----------
    paths_or_folder : path-like or sequence of path-like
        A folder, whose files with a RAW suffix (:data:`RAW_SUFFIXES`, any
        case) are read in order of file name (plain code-point order of the
        names, so ``IMG_0010`` follows ``IMG_0009`` but ``img_2`` follows
        ``img_10``: zero-pad numbers); other files are ignored. Or a sequence
        of files, read in the given order (the first is frame 0, commonly the
        reference). A single file path gives a burst of one.

    Returns
    -------
    frames : list of RawFrame
        All with the same mosaic shape (H, W) and CFA pattern.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the folder holds no RAW file, a file is not a readable Bayer RAW,
        or the frames differ in mosaic size or CFA pattern; the message names
        the offending file (and the first file it was compared with).
    """
    frames: list[RawFrame] = []
    for p in expand_inputs(paths_or_folder, suffixes=RAW_SUFFIXES, argname="paths_or_folder"):
        f = read_raw(p)
        if frames:
            ref = frames[0]
            if f.shape != ref.shape:
                raise ValueError(
                    f"{p}: mosaic size {f.shape} differs from {ref.shape} of {ref.path}"
                )
            if f.cfa != ref.cfa:
                raise ValueError(f"{p}: CFA pattern {f.cfa} differs from {ref.cfa} of {ref.path}")
        frames.append(f)
    return frames


@dataclass
class RawBurst:
    """A burst of RAW frames of one sensor: the stacked mosaics and their metadata.

    Attributes
    ----------
    frames : ndarray of float32, shape (N, H, W)
        Normalised mosaics (see :class:`RawFrame`), in burst order.
    cfa : str
        Bayer pattern shared by all frames.
    info : list of RawFrame
        Per-frame metadata; their ``mosaic`` attributes are views of
        ``frames``, not copies.
    """

    frames: np.ndarray
    cfa: str
    info: list[RawFrame]

    def __len__(self) -> int:
        return len(self.info)

    def noise_model(self, reference: int = 0) -> tuple[float, float] | None:
        """``(alpha, beta)`` from the reference frame's DNG NoiseProfile, or None.

        With one pair per colour plane the pairs are averaged: the fusion
        takes one model for all samples, and the planes of a Bayer sensor
        differ by their white-balance gain only in the developed image, not
        in the raw samples the profile describes.
        """
        profile = self.info[reference].noise_profile
        if profile is None:
            return None
        alpha, beta = np.asarray(profile, np.float64).mean(axis=0)
        return float(alpha), float(beta)


def load_burst(paths_or_folder, **headerless) -> RawBurst:
    """Read a RAW burst into one :class:`RawBurst`.

    Parameters
    ----------
    paths_or_folder : path-like or sequence of path-like
        As for :func:`read_burst`.
    **headerless
        When given (``width``, ``height``, ``bits``, ``cfa`` and optionally
        ``black_level``, ``white_level``, ``byteorder``), every file is read
        with :func:`read_headerless` instead of LibRaw.

    Returns
    -------
    RawBurst
    """
    if headerless:
        paths = expand_inputs(paths_or_folder, suffixes=RAW_SUFFIXES, argname="paths_or_folder")
        frames = [read_headerless(p, **headerless) for p in paths]
    else:
        frames = read_burst(paths_or_folder)
    mosaics = stack(frames)
    for k, f in enumerate(frames):
        f.mosaic = mosaics[k]
    return RawBurst(frames=mosaics, cfa=frames[0].cfa, info=frames)


def stack(frames: Sequence[RawFrame]) -> np.ndarray:
    """Stack the mosaics of a burst.

    Parameters
    ----------
    frames : sequence of RawFrame
        Same shape and CFA pattern (as :func:`read_burst` guarantees).

    Returns
    -------
    burst : ndarray of float32, shape (N, H, W)
    """
    if len(frames) == 0:
        raise ValueError("frames: empty burst")
    ref = frames[0]
    for i, f in enumerate(frames):
        if f.shape != ref.shape or f.cfa != ref.cfa:
            raise ValueError(
                f"frames[{i}] ({f.path}): shape {f.shape} / CFA {f.cfa} differs from "
                f"frames[0] ({ref.path}): {ref.shape} / {ref.cfa}"
            )
    return np.stack([f.mosaic for f in frames]).astype(np.float32, copy=False)
