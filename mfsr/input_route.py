"""Which pipeline a set of input files goes to: camera RAW, image files or georeferenced passes.

The choice is made from every input, never from the first alone: a run
fuses one kind of file, and an input of another kind (a plain TIFF among
georeferenced passes, a DNG in a folder of TIFFs) is an error that names
it, not a silent choice of one kind over the other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .image_io import READ_SUFFIXES, expand_inputs
from .raw_io import RAW_SUFFIXES

__all__ = ["GEO_SUFFIXES", "InputRoute", "select_route"]

#: Suffixes of rasters the satellite route reads (when georeferenced).
GEO_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2", ".img", ".vrt")

_KIND_NAMES = {"raw": "camera RAW", "image": "plain image (no georeference)", "geo": "georeferenced raster"}


@dataclass(frozen=True)
class InputRoute:
    """The inputs of one run, expanded and classified.

    Attributes
    ----------
    kind : {"raw", "image", "geo"}
        Camera RAW burst, image files, or georeferenced satellite passes.
    files : list of Path
        The input files in fusion order (folders expanded).
    """

    kind: str
    files: list[Path]


def select_route(paths: Sequence[str | os.PathLike], *, argname: str = "frames") -> InputRoute:
    """Expand and classify the inputs of a run.

    Parameters
    ----------
    paths : sequence of path-like
        Files and folders as the user gave them. A folder contributes its
        RAW, image and raster files sorted by name (or the frames its
        ``burst.json`` lists, see :func:`mfsr.image_io.expand_inputs`).
    argname : str
        Name of the argument, for the messages.

    Returns
    -------
    InputRoute

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    ValueError
        If the inputs are of more than one kind; the message names the first
        input of each kind. A ``.tif`` counts as georeferenced when it has a
        CRS or a geotransform.
    """
    known = tuple(dict.fromkeys(RAW_SUFFIXES + READ_SUFFIXES + GEO_SUFFIXES))
    files = expand_inputs(paths, suffixes=known, argname=argname)
    for p in files:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    kinds = [_kind(p) for p in files]
    first: dict[str, Path] = {}
    for p, k in zip(files, kinds):
        first.setdefault(k, p)
    if len(first) > 1:
        (k1, p1), (k2, p2) = list(first.items())[:2]
        where = ""
        folders = {str(Path(a)) for a in paths if Path(a).is_dir()}
        if folders:
            where = f" (in {', '.join(sorted(folders))})"
        raise ValueError(
            f"{argname}: {p2} is a {_KIND_NAMES[k2]} but {p1} is a {_KIND_NAMES[k1]}{where}; "
            "a run fuses one kind of input: list the files of one kind"
        )
    return InputRoute(kinds[0], files)


def _kind(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in RAW_SUFFIXES:
        return "raw"
    if suffix in GEO_SUFFIXES:
        from .geo import is_georaster  # rasterio and dask load only for raster-like inputs

        if is_georaster(p):
            return "geo"
        if suffix not in READ_SUFFIXES:
            return "geo"  # a .jp2/.img/.vrt is only ever a raster: its reader says what is wrong
    return "image"
