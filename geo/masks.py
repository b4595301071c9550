"""User cloud / quality masks of the passes.

Every pass may come with a mask: a raster on the pass's own pixel grid (same
width and height) whose nonzero pixels are invalid (cloud, shadow, bad data),
or a band of the pass itself. Together with nodata and the dataset's internal
mask (:func:`mfsr.geo.passes.read_window`), the mask becomes a weight of zero:
a masked pixel never contributes to the fused output.

Accepted forms of one entry of ``masks`` (one entry per pass):

- ``None``: no user mask;
- a path: band 1 of that raster;
- ``(path, band)``: band ``band`` (1-based) of that raster;
- an int ``band``: band ``band`` of the pass itself (it is then not fused).

The mask file's own nodata pixels count as invalid too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .grid import Grid, open_on_grid
from .safe_open import open_raster
from .passes import PassInfo

__all__ = ["MaskSpec", "parse_masks", "read_mask_window"]


@dataclass(frozen=True)
class MaskSpec:
    """One pass's mask: ``path`` (the pass's own file for a band mask) and 1-based ``band``."""

    path: str
    band: int
    own_band: bool = False


def parse_masks(masks, infos: list[PassInfo]) -> list[MaskSpec | None]:
    """Check the ``masks`` argument against the passes.

    Parameters
    ----------
    masks : None or sequence
        One entry per pass (see the module docstring).
    infos : list of PassInfo

    Returns
    -------
    list of MaskSpec or None, one per pass

    Raises
    ------
    ValueError
        Wrong number of entries, unreadable file, band out of range, or a
        mask whose size differs from its pass.
    """
    n = len(infos)
    if masks is None:
        return [None] * n
    if isinstance(masks, (str, Path)) or not hasattr(masks, "__len__"):
        raise ValueError(f"masks: expected a sequence with one entry per pass ({n}), got {masks!r}")
    if len(masks) != n:
        raise ValueError(f"masks: expected {n} entries (one per pass, None for none), got {len(masks)}")
    out: list[MaskSpec | None] = []
    for k, (m, info) in enumerate(zip(masks, infos)):
        if m is None:
            out.append(None)
            continue
        if isinstance(m, (int, np.integer)) and not isinstance(m, bool):
            if not 1 <= int(m) <= info.count:
                raise ValueError(
                    f"masks[{k}]: band {m} is not a band of {info.path} (1..{info.count})"
                )
            out.append(MaskSpec(info.path, int(m), own_band=True))
            continue
        if isinstance(m, tuple) and len(m) == 2:
            path, band = str(m[0]), int(m[1])
        elif isinstance(m, (str, Path)):
            path, band = str(m), 1
        else:
            raise ValueError(f"masks[{k}]: expected None, a path, (path, band) or a band index, got {m!r}")
        if not Path(path).exists():
            raise ValueError(f"masks[{k}]: file not found: {path}")
        try:
            with open_raster(path, f"masks[{k}]") as src:
                shape, count = (src.height, src.width), src.count
        except RasterioIOError as exc:
            raise ValueError(f"masks[{k}]: cannot read {path} as a raster: {exc}") from None
        if not 1 <= band <= count:
            raise ValueError(f"masks[{k}]: band {band} is not a band of {path} (1..{count})")
        if shape != (info.height, info.width):
            raise ValueError(
                f"masks[{k}]: {path} is {shape[0]}x{shape[1]} px but its pass {info.path} is "
                f"{info.height}x{info.width}; a mask must be on its pass's pixel grid"
            )
        out.append(MaskSpec(path, band))
    return out


def read_mask_window(
    spec: MaskSpec | None,
    info: PassInfo,
    native: bool,
    grid: Grid,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> np.ndarray:
    """Invalid (masked) pixels of one pass's mask over a window.

    Parameters
    ----------
    spec : MaskSpec or None
    info : PassInfo
        The pass the mask belongs to (its georeferencing is assumed for a
        mask file that has none).
    native : bool
        Window in the pass's own pixels (True) or on ``grid`` (False: the
        mask is warped there with nearest-neighbour resampling).
    grid : Grid
    rows, cols : (int, int)
        Half-open window, possibly beyond the raster (nothing masked there:
        the data read marks it invalid anyway).

    Returns
    -------
    masked : ndarray of bool, shape (rows[1] - rows[0], cols[1] - cols[0])
    """
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    masked = np.zeros((h, w), bool)
    if spec is None:
        return masked
    with open_on_grid(
        spec.path, native, grid, resampling=Resampling.nearest,
        src_crs=info.crs, src_transform=info.transform,
    ) as src:
        a0, a1 = max(rows[0], 0), min(rows[1], src.height)
        b0, b1 = max(cols[0], 0), min(cols[1], src.width)
        if a1 <= a0 or b1 <= b0:
            return masked
        win = Window(b0, a0, b1 - b0, a1 - a0)
        m = src.read(spec.band, window=win)
        bad = m != 0
        if not spec.own_band:
            # The mask's own nodata (e.g. CBERS CMASK 255) and, when warped,
            # pixels the warp could not fill count as invalid.
            bad |= src.read_masks(spec.band, window=win) == 0
        masked[a0 - rows[0] : a1 - rows[0], b0 - cols[0] : b1 - cols[0]] = bad
    return masked
