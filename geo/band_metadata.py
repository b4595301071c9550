"""Per-band metadata of the fused bands, taken from the reference pass (issue 19).

A fused band is the reference pass's band on a finer grid, in the same data
units (the fusion maps every band back from its working range,
docs/conventions.md), so what the reference pass says about the band stays
true of the output: its description, colour interpretation, scale and offset
(physical value = stored value * scale + offset), units and band tags. What
it says about its *values* does not: GDAL's ``STATISTICS_*`` tags are
dropped. :func:`fused_band_metadata` selects that metadata for the fused
bands, in output order, from a :class:`mfsr.geo.passes.PassInfo`;
:class:`mfsr.geo.writer.RasterWriter` writes it (``band_metadata=``).

Nodata is not part of it: the output's nodata is the caller's choice (NaN
by default), not the reference pass's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from rasterio.enums import ColorInterp

__all__ = ["BandMetadata", "STALE_TAG_PREFIXES", "fused_band_metadata"]

#: Band tags that describe a band's values (GDAL's computed statistics):
#: they are wrong for the fused values, so :func:`fused_band_metadata` drops them.
STALE_TAG_PREFIXES = ("STATISTICS_",)

# A fused band has no role of these: the output marks its holes with its own
# nodata, so a fused alpha band is data, not a mask (declared alpha, GDAL
# would mask the other bands with it); and fused palette indices are
# interpolated numbers, with no colour table copied to index.
_NO_ROLE = (ColorInterp.alpha, ColorInterp.palette)


# Names in any case: GDAL's YCbCr members are spelled "Y", "Cb", "Cr".
_BY_NAME = {name.lower(): member for name, member in ColorInterp.__members__.items()}


def _colorinterp(value) -> ColorInterp | None:
    """``value`` (a ColorInterp, its name in any case, or None) as a ColorInterp or None."""
    if value is None or isinstance(value, ColorInterp):
        return value
    if isinstance(value, str) and value.strip().lower() in _BY_NAME:
        return _BY_NAME[value.strip().lower()]
    raise ValueError(
        f"colorinterp: expected a rasterio.enums.ColorInterp, its name ({', '.join(c.name for c in ColorInterp)}) "
        f"or None, got {value!r}"
    )


@dataclass(frozen=True)
class BandMetadata:
    """What a raster says about one band, as rasterio reads and writes it.

    Attributes
    ----------
    description : str or None
        Band description (``src.descriptions``); None: none.
    colorinterp : rasterio.enums.ColorInterp or None
        Colour interpretation (``src.colorinterp``); a name such as ``"red"``
        is accepted. None: not known (the writer leaves GDAL's default).
    scale, offset : float
        ``physical = stored * scale + offset`` (``src.scales``,
        ``src.offsets``); 1 and 0 when the raster declares none.
    units : str or None
        Units of the physical value (``src.units``), e.g. ``"W m-2 sr-1 um-1"``;
        None: none.
    tags : dict of str to str
        Band tags of the default domain (``src.tags(bidx)``), e.g.
        ``{"wavelength": "665"}``.

    Raises
    ------
    ValueError
        Naming the field: an unknown colour interpretation, a non-finite
        scale or offset.
    TypeError
        A description or units that is not a string, tags that are not a
        mapping.
    """

    description: str | None = None
    colorinterp: ColorInterp | None = None
    scale: float = 1.0
    offset: float = 0.0
    units: str | None = None
    tags: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise in place once, on construction
        for name in ("description", "units"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{name}: expected a string or None, got {type(v).__name__}")
            set_(self, name, v or None)  # rasterio reads a missing unit as "" or None
        set_(self, "colorinterp", _colorinterp(self.colorinterp))
        for name, default in (("scale", 1.0), ("offset", 0.0)):
            v = getattr(self, name)
            try:
                f = default if v is None else float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: expected a finite number, got {v!r}") from None
            if not math.isfinite(f):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
            set_(self, name, f)
        tags = {} if self.tags is None else self.tags
        if not isinstance(tags, Mapping):
            raise TypeError(f"tags: expected a dict of str to str, got {type(tags).__name__}")
        set_(self, "tags", {str(k): str(v) for k, v in tags.items()})


def _entry(values: tuple, b: int, default=None):
    """1-based entry ``b`` of a per-band tuple, ``default`` past its end (PassInfos built without it)."""
    return values[b - 1] if b - 1 < len(values) else default


def fused_band_metadata(info, bands) -> tuple[BandMetadata, ...]:
    """The reference pass's metadata of the fused bands, in output order.

    Parameters
    ----------
    info : mfsr.geo.passes.PassInfo
        The reference pass (:func:`mfsr.geo.passes.read_pass_info`). An
        in-memory pass without band metadata gives the defaults.
    bands : sequence of int
        1-based band indexes of ``info`` in output order (output band ``k``
        is ``bands[k - 1]``), any subset in any order.

    Returns
    -------
    tuple of BandMetadata, one per entry of ``bands``
        Description, colour interpretation, scale, offset, units and band
        tags of each band, except that ``STATISTICS_*`` tags
        (:data:`STALE_TAG_PREFIXES`) are dropped and an ``alpha`` or
        ``palette`` interpretation becomes ``undefined``: a fused alpha band
        is data (the output's holes are its nodata), fused palette indices
        are interpolated numbers.

    Raises
    ------
    ValueError
        If a band index is not in ``1..info.count``.
    """
    out = []
    for b in bands:
        b = int(b)
        if not 1 <= b <= info.count:
            raise ValueError(f"bands: band {b} is not in 1..{info.count} of {info.path}")
        ci = _entry(info.colorinterp, b)
        if ci is not None and _colorinterp(ci) in _NO_ROLE:
            ci = ColorInterp.undefined
        tags = {k: v for k, v in _entry(info.band_tags, b, {}).items()
                if not str(k).upper().startswith(STALE_TAG_PREFIXES)}
        out.append(BandMetadata(
            description=_entry(info.descriptions, b),
            colorinterp=ci,
            scale=_entry(info.scales, b, 1.0),
            offset=_entry(info.offsets, b, 0.0),
            units=_entry(info.units, b),
            tags=tags,
        ))
    return tuple(out)
