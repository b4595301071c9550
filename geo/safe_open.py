"""Opening rasters without letting a file read other files or the network.

GDAL formats such as VRT are recipes: a crafted ``.vrt`` can copy any file
the process may read (``/etc/passwd`` as a raw raster) into the output, and
``/vsicurl/`` or WMS sources make the process fetch URLs, including internal
ones. Satellite passes are read here only through drivers that hold their
own pixels, from local paths, with GDAL's network access switched off.
``MFSR_ALLOW_VRT=1`` (the CLI's ``--allow-vrt``) admits VRT files that the
user trusts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio

__all__ = ["SAFE_DRIVERS", "check_local_raster", "open_raster"]

#: GDAL drivers of formats that store their own pixels (no references to other files or URLs).
SAFE_DRIVERS: tuple[str, ...] = (
    "GTiff", "COG", "JP2OpenJPEG", "JP2ECW", "JP2KAK", "JPEG2000", "HFA", "ENVI", "PNG", "JPEG",
)  # fmt: skip

# GDAL's virtual file systems that reach the network (or cloud storage).
_NETWORK_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift", "/vsiwebhdfs",
                     "/vsihdfs")
# The network switched off for everything GDAL opens through rasterio here.
# (GDAL has no single switch: /vsicurl/ fetches only files of the allowed
# extensions, and none is allowed.)
_OFFLINE = dict(GDAL_HTTP_MAX_RETRY="0", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".mfsr-no-network")


def vrt_allowed() -> bool:
    """Whether ``MFSR_ALLOW_VRT`` admits VRT inputs (set by ``--allow-vrt``)."""
    return os.environ.get("MFSR_ALLOW_VRT", "").strip().lower() in ("1", "true", "yes")


def check_local_raster(path, argument: str = "paths") -> str:
    """Refuse URLs, GDAL virtual-file-system paths and (unless allowed) VRT files.

    Parameters
    ----------
    path : path-like
    argument : str
        Name of the argument, for the message.

    Returns
    -------
    str
        The path.

    Raises
    ------
    ValueError
    """
    p = str(path)
    if "://" in p or p.startswith("/vsi"):
        kind = "network" if p.startswith(_NETWORK_PREFIXES) or "://" in p else "GDAL virtual"
        raise ValueError(f"{argument}: {p} is a {kind} path; mfsr reads local raster files only")
    kind = _recipe_kind(Path(p))
    if kind == "VRT" and not vrt_allowed():
        raise ValueError(
            f"{argument}: {p} is a GDAL VRT, which can read other files and URLs; "
            "it is refused unless trusted (--allow-vrt, or MFSR_ALLOW_VRT=1)"
        )
    if kind == "XML":
        raise ValueError(f"{argument}: {p} is an XML dataset description, not a raster that holds its own pixels")
    return p


@contextmanager
def open_raster(path, argument: str = "paths") -> Iterator[rasterio.io.DatasetReader]:
    """Open a local raster for reading through :data:`SAFE_DRIVERS` only, offline.

    Parameters
    ----------
    path : path-like
    argument : str
        Name of the argument, for the messages.

    Yields
    ------
    rasterio dataset

    Raises
    ------
    ValueError
        From :func:`check_local_raster`.
    rasterio.errors.RasterioIOError
        If no safe driver opens the file.
    """
    from rasterio.errors import NotGeoreferencedWarning

    p = check_local_raster(path, argument)
    drivers = SAFE_DRIVERS + (("VRT",) if vrt_allowed() else ())
    with rasterio.Env(**_OFFLINE), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(p) as src:
            # Recipes other than VRT (WMS, tile indexes, ...) start as text and
            # are refused before opening; this catches what slipped past.
            if src.driver not in drivers:
                raise ValueError(
                    f"{argument}: {p} is a {src.driver} dataset; mfsr reads rasters that hold their own "
                    f"pixels ({', '.join(SAFE_DRIVERS)})"
                )
            yield src


def _recipe_kind(p: Path) -> str | None:
    """"VRT" for a VRT file, "XML" for another XML dataset description, else None."""
    try:
        with open(p, "rb") as f:
            head = f.read(512).lstrip()
    except OSError:
        head = b""
    if p.suffix.lower() == ".vrt" or b"<VRTDataset" in head:
        return "VRT"
    if head.startswith(b"<"):
        return "XML"
    return None
