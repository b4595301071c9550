"""Reading and writing ordinary image files (PNG, TIFF, JPEG).

Reading returns linear float32 values: integer samples are normalised by the
black and white levels, and sRGB-encoded files (8-bit by default) are decoded to
linear light. Writing is atomic: the image goes to a temporary file beside the
target, which is renamed over it only once complete, so an interrupted run never
leaves a half-written output.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic_file import atomic_output
from .transfer import linear_to_srgb, srgb_to_linear
from .validation import check_orientation

READ_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: Largest frame :func:`read_image` decodes, in pixels (``max_pixels=`` or
#: ``MFSR_MAX_PIXELS`` overrides it). A small file can declare a huge image
#: (a compressed "decompression bomb"); the size is read from the header and
#: refused before anything is decoded.
MAX_PIXELS = 1 << 28
WRITE_SUFFIXES = (".png", ".tif", ".tiff")
TRANSFERS = ("auto", "srgb", "linear")


@dataclass(frozen=True)
class ImageInfo:
    """What was found in an image file.

    Attributes
    ----------
    path : Path
    dtype : str
        Sample type stored in the file (``uint8``, ``uint16``, ``float32``...).
    shape : tuple of int
        (H, W) or (H, W, 3) as returned.
    transfer : str
        ``"srgb"`` if the values were decoded from sRGB, else ``"linear"``.
    """

    path: Path
    dtype: str
    shape: tuple[int, ...]
    transfer: str


def _png_bit_depth(path: Path) -> int:
    # Pillow silently reduces 16-bit colour PNGs to 8 bits, so look at the
    # header (IHDR bit depth is byte 24) to know which reader keeps the data.
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file (bad signature)")
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    import png

    reader = png.Reader(filename=str(path))
    width, height, rows, meta = reader.asDirect()
    planes = meta["planes"]
    data = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    data = data.reshape(height, width, planes)
    return data[..., 0] if planes == 1 else data


def header_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """Image size declared by a file's header, without decoding its samples.

    Parameters
    ----------
    path : path-like
        A ``.png``, ``.tif``/``.tiff`` or ``.jpg``/``.jpeg`` file.

    Returns
    -------
    (height, width, samples_per_pixel) : tuple of int

    Raises
    ------
    ValueError
        If the header cannot be read; the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel)
        if suffix == ".png":
            with open(path, "rb") as f:
                head = f.read(26)
            if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
                raise ValueError("not a PNG file (bad signature)")
            width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            planes = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(head[25], 1)
            return height, width, planes
        from PIL import Image

        with Image.open(path) as im:
            width, height = im.size
            return height, width, len(im.getbands())
    except Exception as exc:  # any reader's error is about this file
        raise ValueError(f"{path}: cannot read image header ({_describe(exc)})") from exc


def checked_header_shape(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int, int]:
    """:func:`header_shape`, refusing images of more than ``max_pixels`` pixels.

    Parameters
    ----------
    path : path-like
    max_pixels : int, optional
        Default :data:`MAX_PIXELS`, or ``MFSR_MAX_PIXELS``.

    Returns
    -------
    (height, width, samples_per_pixel) : tuple of int

    Raises
    ------
    ValueError
        Naming the file, if the header is unreadable or declares too many pixels.
    """
    h, w, c = header_shape(path)
    limit = _max_pixels(max_pixels)
    if h * w > limit:
        raise ValueError(
            f"{path}: the header declares {w}x{h} = {h * w:,} pixels, more than the limit of {limit:,} "
            "(MFSR_MAX_PIXELS raises it)"
        )
    return h, w, c


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get("MFSR_MAX_PIXELS")
    if text is None:
        return MAX_PIXELS
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"MFSR_MAX_PIXELS: expected a number of pixels, got {text!r}") from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _read_raw_samples(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path)
    elif suffix == ".png" and _png_bit_depth(path) == 16:
        data = _read_png16(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "LA", "1", "CMYK", "YCbCr"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            data = np.asarray(im)
    return data


def _drop_opaque_alpha(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 3 and data.shape[2] in (2, 4):
        alpha = data[..., -1]
        full = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else 1.0
        if not np.all(alpha == full):
            raise ValueError(
                f"{path}: image has a non-opaque alpha channel; flatten it before fusion"
            )
        data = data[..., :-1]
        if data.shape[2] == 1:
            data = data[..., 0]
    return data


def read_image(
    path: str | os.PathLike,
    *,
    transfer: str = "auto",
    black_level: float = 0.0,
    white_level: float | None = None,
    max_pixels: int | None = None,
    keep_invalid: bool = False,
) -> tuple[np.ndarray, ImageInfo]:
    """Read one PNG, TIFF or JPEG file as linear float32 values.

    Parameters
    ----------
    path : path-like
        A ``.png``, ``.tif``/``.tiff`` or ``.jpg``/``.jpeg`` file: grey,
        single-channel mosaic, or RGB (an opaque alpha channel is dropped).
    transfer : {"auto", "srgb", "linear"}
        How the stored values relate to light. ``"auto"`` treats 8-bit files
        as sRGB-encoded and everything else (16-bit, float) as linear.
    black_level, white_level : float
        Integer samples map to ``(v - black_level) / (white_level - black_level)``;
        ``white_level`` defaults to the largest value of the file's dtype.
        Float files are taken as they are.
    max_pixels : int, optional
        Refuse files whose header declares more pixels (default
        :data:`MAX_PIXELS`, or ``MFSR_MAX_PIXELS``).
    keep_invalid : bool
        Return NaN and infinite float samples as they are (for
        :func:`mfsr.invalid_samples.fill_invalid`) instead of raising.

    Returns
    -------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Linear values, nominally [0, 1]; nothing is clipped.
    info : ImageInfo

    Raises
    ------
    ValueError
        Naming the file: unreadable, truncated or corrupt data, too many
        pixels, an unsupported layout, or non-finite float samples.
    """
    path = Path(path)
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer: expected one of {', '.join(TRANSFERS)}, got {transfer!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected an image file")
    if path.suffix.lower() not in READ_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; expected one of "
            f"{', '.join(READ_SUFFIXES)}"
        )
    h, w, _ = checked_header_shape(path, max_pixels)
    try:
        data = _read_raw_samples(path)
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to decode a {w}x{h} image") from None
    except Exception as exc:  # truncated or corrupt data: every decoder has its own exception types
        raise ValueError(f"{path}: cannot read image ({_describe(exc)})") from exc

    data = _drop_opaque_alpha(np.asarray(data), path)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] != 3):
        raise ValueError(
            f"{path}: expected a grey (H, W) or RGB (H, W, 3) image, got shape {data.shape}"
        )

    stored = data.dtype
    if np.issubdtype(stored, np.integer):
        white = float(np.iinfo(stored).max) if white_level is None else float(white_level)
        if white <= black_level:
            raise ValueError(
                f"white_level: must exceed black_level ({black_level}), got {white}"
            )
        image = (data.astype(np.float32) - np.float32(black_level)) / np.float32(
            white - black_level
        )
    elif np.issubdtype(stored, np.floating):
        image = data.astype(np.float32)
        if not keep_invalid and not np.isfinite(image).all():
            raise ValueError(f"{path}: image contains NaN or infinite values")
    else:
        raise ValueError(f"{path}: unsupported sample type {stored}")

    if transfer == "auto":
        transfer = "srgb" if stored == np.uint8 else "linear"
    if transfer == "srgb":
        image = srgb_to_linear(image)
    return image, ImageInfo(path, str(stored), image.shape, transfer)


def read_frames(
    paths: Sequence[str | os.PathLike],
    *,
    transfer: str = "auto",
    black_level: float = 0.0,
    white_level: float | None = None,
    keep_invalid: bool = False,
) -> tuple[np.ndarray, list[ImageInfo]]:
    """Read a burst of image files of one shape and type.

    Parameters
    ----------
    paths : sequence of path-like
        Image files in burst order, or a single folder whose supported image
        files are taken in lexicographic order of their names.
    transfer, black_level, white_level, keep_invalid
        As for :func:`read_image`.

    Returns
    -------
    frames : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
    infos : list of ImageInfo
    """
    files = expand_inputs(paths)
    frames: list[np.ndarray] = []
    infos: list[ImageInfo] = []
    for p in files:
        image, info = read_image(
            p, transfer=transfer, black_level=black_level, white_level=white_level, keep_invalid=keep_invalid
        )
        if frames and (image.shape != frames[0].shape or info.dtype != infos[0].dtype):
            raise ValueError(
                f"{p}: shape {image.shape} ({info.dtype}) differs from {infos[0].path} "
                f"shape {frames[0].shape} ({infos[0].dtype}); all frames must match"
            )
        frames.append(image)
        infos.append(info)
    return np.stack(frames), infos


def expand_inputs(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    suffixes: Sequence[str] = READ_SUFFIXES,
    argname: str = "frames",
) -> list[Path]:
    """Turn the user's files and folders into an ordered file list.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        Files and folders. A folder contributes its files whose lower-cased
        suffix is in ``suffixes``, sorted by name; explicit files keep the
        order given (and are checked when read). A folder written by
        ``mfsr simulate`` holds a ``burst.json`` whose ``"frame_files"`` list
        names its frames; those are taken (in that order), so the ground
        truth beside them is not mistaken for a frame.
    suffixes : sequence of str
        Lower-case suffixes, with the dot, taken from folders.
    argname : str
        Name of the argument, for the error on an empty list.

    Returns
    -------
    list of Path
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError(f"{argname}: no input files given")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = _listed_frames(p, suffixes)
            if found is None:
                found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
            if not found:
                raise ValueError(f"{p}: folder holds no {'/'.join(suffixes)} files")
            files.extend(found)
        else:
            files.append(p)
    return files


def _listed_frames(folder: Path, suffixes: Sequence[str]) -> list[Path] | None:
    """The frames a folder's ``burst.json`` names, or None without such a list."""
    import json

    manifest = folder / "burst.json"
    if not manifest.is_file():
        return None
    try:
        names = json.loads(manifest.read_text()).get("frame_files")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{manifest}: unreadable burst manifest ({exc})") from exc
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise ValueError(f"{manifest}: \"frame_files\" must be a list of file names in {folder}")
    files = [folder / n for n in names if Path(n).suffix.lower() in suffixes]
    return files or None


def quantize(image: np.ndarray, bits: int, path: Path, clip: bool = False) -> np.ndarray:
    """Round [0, 1] values to ``bits``-bit integers (uint8 or uint16).

    Values outside [0, 1] are clipped; unless ``clip`` is True a warning
    naming ``path`` counts them, so nothing is lost silently.
    """
    top = (1 << bits) - 1
    outside = np.count_nonzero((image < 0) | (image > 1))
    if outside and not clip:
        # Integer files cannot hold values outside [0, 1]; say so rather than
        # clip silently (float32 TIFF keeps everything).
        warnings.warn(
            f"{path}: {outside} sample(s) outside [0, 1] were clipped to fit "
            f"{bits}-bit output; write a .tif with dtype float32 to keep them",
            stacklevel=3,
        )
    q = np.rint(np.clip(image, 0, 1) * top)
    return q.astype(np.uint8 if bits == 8 else np.uint16)


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    transfer: str = "linear",
    dtype: str | None = None,
    clip: bool = False,
    orientation: int = 1,
    overwrite: bool = True,
) -> Path:
    """Write a linear float image atomically as PNG or TIFF.

    Parameters
    ----------
    path : path-like
        Target ``.png``, ``.tif`` or ``.tiff`` file; its folder must exist.
    image : ndarray, shape (H, W) or (H, W, 3)
        Linear values, nominally [0, 1].
    transfer : {"linear", "srgb"}
        Encode the stored values in sRGB (for viewing) or keep them linear.
    dtype : {"uint8", "uint16", "float32"} or None
        Stored sample type. Default: ``uint8`` for sRGB PNG, ``uint16``
        otherwise. ``float32`` is TIFF only and keeps out-of-range values.
    clip : bool
        Integer outputs cannot hold values outside [0, 1]. By default those
        are clipped with a warning that counts them; ``clip=True`` asks for
        the clipping (e.g. for previews) and silences the warning.
    orientation : int
        EXIF/TIFF orientation code (1 to 8) stored in a TIFF's Orientation
        tag, so viewers turn a sensor-oriented image upright; PNG has no such
        tag (rotate the pixels first with :func:`mfsr.finishing.apply_orientation`).
    overwrite : bool
        Replace an existing file (default). If False the file is created
        exclusively: ``FileExistsError`` if it exists when the image is
        complete, and nothing is replaced.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"output: unsupported file type {path.suffix!r}; expected one of "
            f"{', '.join(WRITE_SUFFIXES)}"
        )
    if transfer not in ("linear", "srgb"):
        raise ValueError(f"transfer: expected 'linear' or 'srgb', got {transfer!r}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {image.shape}")
    if dtype is None:
        dtype = "uint8" if (suffix == ".png" and transfer == "srgb") else "uint16"
    if dtype not in ("uint8", "uint16", "float32"):
        raise ValueError(f"dtype: expected uint8, uint16 or float32, got {dtype!r}")
    if dtype == "float32" and suffix == ".png":
        raise ValueError("dtype: PNG cannot store float32 samples; use a .tif output")
    check_orientation(orientation)
    if not path.parent.exists():
        raise FileNotFoundError(f"{path.parent}: output folder does not exist")

    values = linear_to_srgb(image) if transfer == "srgb" else image.astype(np.float32)
    if dtype == "float32":
        data = values.astype(np.float32)
    else:
        data = quantize(values, 8 if dtype == "uint8" else 16, path, clip)

    with atomic_output(path, overwrite=overwrite) as tmp:
        if suffix == ".png":
            _write_png(tmp, data)
        else:
            import tifffile

            tifffile.imwrite(
                tmp,
                data,
                photometric="rgb" if data.ndim == 3 else "minisblack",
                compression="zlib",
                metadata=None,
                extratags=[(274, "H", 1, orientation, True)] if orientation != 1 else (),
            )
    return path


def _write_png(path: Path, data: np.ndarray) -> None:
    if data.dtype == np.uint16 and data.ndim == 3:
        import png

        h, w, _ = data.shape
        writer = png.Writer(width=w, height=h, greyscale=False, bitdepth=16)
        with open(path, "wb") as f:
            writer.write(f, data.reshape(h, w * 3))
        return
    from PIL import Image

    Image.fromarray(data).save(path, format="PNG")
