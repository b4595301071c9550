"""Fuse repeated satellite passes (GeoTIFF, JPEG2000, ...) into one finer GeoTIFF.

Pipeline of :func:`fuse_rasters`:

1. read every pass's metadata, check they can go together (bands, data
   type, CRS, overlap) and the output paths;
2. choose the working grid (the reference pass's, or ``dst_crs`` /
   ``resolution``) and place every pass on it: a translation of the grid is
   carried as a sub-pixel offset (no resampling), anything else is warped
   by GDAL on the fly (:mod:`mfsr.geo.grid`);
3. on a few sample windows (at most four of ``sample x sample`` px, so the
   cost does not grow with the raster): the working range of every band, the
   noise, and per pass the residual global shift and a per-band linear
   radiometric adjustment to the reference (:mod:`mfsr.geo.coregister`,
   :mod:`mfsr.geo.radiometry`);
4. cut the working grid into tiles with a halo; each tile task reads its
   windows of every pass and mask, fuses them with the masked kernel fusion
   (:mod:`mfsr.geo.masked_fusion`) and returns its core; tasks run on Dask
   (threads by default, or a ``dask.distributed`` cluster);
5. write the output (and the optional confidence and count rasters)
   atomically (:mod:`mfsr.geo.writer`).

:func:`fuse_arrays` runs steps 1 to 4 on passes held in memory (NumPy or
Dask arrays on one grid, read through :class:`mfsr.geo.passes.ArrayDataset`)
and returns the fused array instead of step 5; :func:`mfsr.geo.fuse_xarray`
wraps it for xarray stacks.

Conventions: DESIGN.md. Shifts are ``(dy, dx)`` in input (working-grid)
pixels: reference pixel ``(i, j)`` is found at ``(i + dy, j + dx)`` of the
pass, beyond what the geotransforms say.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from affine import Affine

from mfsr.fusion import FusionParams
from mfsr.memory_estimate import require_memory
from mfsr.validation import check_scale

from .coregister import MODELS, estimate_shift
from .grid import Grid, choose_grid, open_on_grid, output_grid, place_pass, scale_fraction
from .masked_fusion import (
    GUARD_MIN_SCALE,
    GUARD_ROUNDS,
    HALO,
    back_project,
    clamp_to_bounds,
    fill_from_neighbours,
    finish_window,
    fuse_window,
    masked_median,
    nearest_input,
    nyquist_guard,
    sample_radius_floor,
    upsample_cubic,
    warp_translate,
)
from .masks import MaskSpec, parse_masks, read_mask_window
from .pass_geometry import PassGeometry
from .pass_refinement import check_refine, refine_band, refines_scale, warn_unrefined
from .passes import IMPLAUSIBLE, ArrayDataset, PassInfo, check_compatible, read_pass_info, read_window
from .radiometry import fit_linear, masked_noise, working_range
from .tie_points import MIN_GRID, TiePoints, fit_model, measure_tie_points, node_grid, residual_field
from .tiles import TileTask, parse_scheduler, plan_tiles, run_tasks
from .band_metadata import fused_band_metadata
from .writer import RasterWriter, abort_all, check_output_path, commit_all, fill_nodata

__all__ = ["GeoFusionResult", "SATELLITE_PARAMS", "fuse_arrays", "fuse_rasters"]

#: Fusion parameters for passes: :class:`mfsr.FusionParams` without the
#: unsharp mask (back-projection restores the pass band instead: on synthetic
#: passes from Landsat 8 and Landsat 7 crops it scored 0.1 to 1.5 dB cPSNR
#: higher than unsharp mask plus back-projection) and with a wider base
#: kernel, 0.25 px instead of 0.15 (few passes, some of them partly masked,
#: leave gaps on the output grid: +0.5 dB on the Landsat 8 crop, -0.2 dB on
#: the Landsat 7 one, and no dotted texture on real Sentinel-2 dates).
SATELLITE_PARAMS = FusionParams(sharpen_amount=0.0, k_detail=0.25)

# Registration and radiometric fits use only values within this distance of
# the middle of the reference's working range [0, 1] (normalised units).
OUTLIER_RANGE = 1.0
# Output values stay within the local range of the accepted samples widened
# by this many noise standard deviations (see masked_fusion.clamp_to_bounds).
OVERSHOOT_SIGMAS = 3.0
# A registered pass whose band correlates less than this with the
# reference's (intensities, jointly clear pixels) gets a warning: another
# band or a changed scene, so its shift may be meaningless.
MIN_BAND_CORRELATION = 0.5
# Automatic reference: passes whose clear score is within this of the best
# one count as equally clear, and the sharpest of them is taken.
CLEAR_TIE = 0.02
# Centre wavelengths differing by more than this fraction: different bands.
WAVELENGTH_TOLERANCE = 0.1
# A global model beyond translation is used when its linear part moves some
# corner of the grid by more than this (px) and by more than
# MODEL_SIGMAS times its predicted standard deviation.
MIN_MODEL_PX = 0.05
MODEL_SIGMAS = 3.0
# Shifts are the mean of the pass registered to the reference and the
# negated reverse (antisymmetric); False: the forward fit alone.
SYMMETRIC_SHIFTS = True
# Defaults of fuse_rasters / fuse_arrays (see their docstrings).
DEFAULT_GEOMETRY = "affine"
DEFAULT_LOCAL = True


@dataclass
class GeoFusionResult:
    """What :func:`fuse_rasters` (or :func:`fuse_arrays`) did.

    Attributes
    ----------
    out_path : pathlib.Path or None
        The fused GeoTIFF; None for an in-memory fusion (:func:`fuse_arrays`).
    shifts : ndarray of float64, shape (N, 2)
        Estimated residual misregistration (dy, dx) of every pass, input
        (working-grid) px, after the geotransform; (0, 0) for the reference.
    grid_offsets : ndarray of float64, shape (N, 2)
        Offset (dy, dx) of every natively read pass's grid from the working
        grid given by the geotransforms, px ((0, 0) for warped passes).
    gains, offsets : ndarray of float64, shape (N, C)
        Per-band radiometric adjustment applied, in the pass's data units:
        ``adjusted = gain * value + offset``.
    valid_fractions : ndarray of float64, shape (N,)
        Fraction of valid (not nodata, not masked) pixels of each pass over
        the sample windows.
    shift_std : ndarray of float64, shape (N, 2)
        Predicted standard deviation of each shift (statistical), px.
    correlations : ndarray of float64, shape (N,)
        Correlation of each registered pass with the reference (gradient
        images over jointly clear pixels); NaN where not registered.
    registered : ndarray of bool, shape (N,)
        False where the registration failed or was refused and the
        geotransform alone places the pass.
    native : ndarray of bool, shape (N,)
        Whether each pass was read on its own grid (offset carried) or warped.
    scale : float
    reference : int
        Index of the reference pass (given, or chosen automatically).
    noise : (float, float)
        Noise model of the normalised samples.
    crs, transform, width, height :
        Output grid.
    bands : tuple of int
        1-based bands fused.
    confidence_path, count_path : pathlib.Path or None
    n_tiles : int
    transforms : ndarray of float64, shape (N, 3, 3)
        Global model of every pass as a matrix on ``(x, y, 1)`` working-grid
        px, reference -> pass (after the geotransform), as
        :mod:`mfsr.geometry` writes transforms (the identity with the shift
        for a translation).
    geometry : tuple of PassGeometry
        Every pass's displacement (global model plus local residual); see
        :meth:`displacement_at`.
    models : tuple of str
        Model used per pass: ``"translation"``, ``"similarity"`` or
        ``"affine"``, with ``"+local"`` where a local residual is used.
    model_std : ndarray of float64, shape (N,)
        Predicted standard deviation (px) of the global model at the corners
        of the region it was fitted on (the shift's for a translation).
    tie_points : tuple of (TiePoints or None)
        The local co-registration's nodes per pass (None where not run).
    displacement_path : pathlib.Path or None
    working_range : (ndarray, ndarray) of float64, shape (C,) each
        ``(lo, hi)`` per band, data units: the fusion works on
        ``(x - lo) / (hi - lo)`` (robust percentiles of the reference pass),
        the range ``noise`` is expressed in.
    """

    out_path: Path | None
    shifts: np.ndarray
    grid_offsets: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    valid_fractions: np.ndarray
    shift_std: np.ndarray
    correlations: np.ndarray
    registered: np.ndarray
    native: np.ndarray
    scale: float
    reference: int
    noise: tuple[float, float]
    crs: object
    transform: object
    width: int
    height: int
    bands: tuple[int, ...]
    confidence_path: Path | None = None
    count_path: Path | None = None
    n_tiles: int = 0
    reference_reason: str = ""
    clear_scores: np.ndarray | None = None
    transforms: np.ndarray | None = None
    geometry: tuple[PassGeometry, ...] | None = None
    models: tuple[str, ...] | None = None
    model_std: np.ndarray | None = None
    tie_points: tuple[TiePoints | None, ...] | None = None
    displacement_path: Path | None = None
    working_range: tuple[np.ndarray, np.ndarray] | None = None

    def displacement_at(self, k: int, rows, cols) -> np.ndarray:
        """Displacement (dy, dx) of pass ``k`` at working-grid coordinates (broadcast), px.

        Global model plus local residual (:class:`mfsr.geo.pass_geometry.PassGeometry`),
        the sign of ``shifts``: reference pixel ``(y, x)`` lies at
        ``(y + dy, x + dx)`` of the pass (after its geotransform).

        Returns
        -------
        ndarray of float64, shape ``broadcast(rows, cols) + (2,)``
        """
        if self.geometry is None:
            y, x = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
            return np.broadcast_to(self.shifts[k], y.shape + (2,)).copy()
        return self.geometry[k].displacement_at(rows, cols)

    def tags(self, names) -> dict[str, str]:
        """The ``MFSR_*`` metadata tags of the fused product (GeoTIFF tags, DataArray attrs).

        Parameters
        ----------
        names : sequence of str
            One label per pass (file names, dates).

        Returns
        -------
        dict of str to str
            ``MFSR_SCALE``, ``MFSR_PASSES`` (labels joined by ``;``),
            ``MFSR_REFERENCE`` (index), ``MFSR_REFERENCE_REASON`` and
            ``MFSR_SHIFTS`` (``dy,dx`` per pass, px, joined by ``;``).
        """
        return dict(
            MFSR_SCALE=f"{self.scale:g}",
            MFSR_PASSES=";".join(str(v) for v in names),
            MFSR_REFERENCE=str(self.reference),
            MFSR_REFERENCE_REASON=self.reference_reason,
            MFSR_SHIFTS=";".join(f"{dy:.4f},{dx:.4f}" for dy, dx in self.shifts),
        )

    def summary(self, paths=None) -> str:
        """Human-readable table of the per-pass shifts and adjustments, and the reference choice."""
        lines = ["pass  dy(px)   dx(px)   corr   gain    offset    valid"]
        for k in range(self.shifts.shape[0]):
            name = "" if paths is None else "  " + Path(str(paths[k])).name
            ref = " (reference)" if k == self.reference else ""
            lines.append(
                f"{k:4d} {self.shifts[k, 0]:+7.3f}  {self.shifts[k, 1]:+7.3f}  {self.correlations[k]:5.2f}  "
                f"{self.gains[k, 0]:6.3f}  {self.offsets[k, 0]:+8.3g}  {self.valid_fractions[k]:5.1%}"
                f"{name}{ref}"
            )
        if self.reference_reason:
            lines.append(f"reference: pass {self.reference} ({self.reference_reason})")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Pass:
    """A pass as the tile tasks read it (small and picklable)."""

    info: PassInfo
    native: bool
    total: tuple[float, float]  # working px -> pass px, geotransform + residual shift
    mask: MaskSpec | None
    gain: tuple[float, ...]  # on normalised values
    offset: tuple[float, ...]
    # In-memory pass (its mask is part of its validity), None for a file.
    source: ArrayDataset | None = None
    # Displacement beyond translation (working px, without the grid offset
    # in ``total``); None: ``total`` alone places the pass.
    geometry: PassGeometry | None = None
    grid_offset: tuple[float, float] = (0.0, 0.0)  # working px -> pass px, geotransform alone


@dataclass(frozen=True)
class _Context:
    passes: tuple[_Pass, ...]
    grid: Grid
    bands: tuple[int, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    scale: float
    out_height: int
    out_width: int
    noise: tuple[float, float]
    params: FusionParams = field(default_factory=FusionParams)
    robust: bool = True
    reference: int = 0
    back_projection: int = 2
    clip: tuple[float, float] | None = None
    margin: float = 0.0  # allowed overshoot beyond the local sample range, normalised
    refine: bool = False  # apply the satellite refinement network (mfsr.geo.pass_refinement)


def _read_pass(ps: _Pass, grid: Grid, bands, rows, cols, tally=None) -> tuple[np.ndarray, np.ndarray]:
    """Raw data and validity (nodata, internal and user masks) of a pass window in its own px.

    ``tally``: see :func:`mfsr.geo.passes.read_window`.
    """
    if ps.source is not None:  # always on its own grid: fuse_arrays passes share the working grid
        return read_window(ps.source, bands, rows, cols, tally=tally)
    with open_on_grid(ps.info.path, ps.native, grid) as src:
        data, valid = read_window(src, bands, rows, cols, tally=tally)
    if ps.mask is not None:
        valid &= ~read_mask_window(ps.mask, ps.info, ps.native, grid, rows, cols)
    return data, valid


def _normalise(data: np.ndarray, lo, hi, gain=None, offset=None) -> np.ndarray:
    lo = np.asarray(lo, np.float32)
    span = np.asarray(hi, np.float32) - lo
    out = (data - lo) / span
    if gain is not None:
        out = out * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
    return out.astype(np.float32, copy=False)


def _estimation_view(norm: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey image and the pixels the estimates use: valid and within OUTLIER_RANGE of the working range.

    Estimation leaves out values far outside the reference's working range
    (unmasked clouds, saturation): they would dominate gradients and the
    radiometric fit. The fusion's composite test handles them.
    """
    return norm.mean(axis=2), valid & np.all(np.abs(norm - 0.5) <= OUTLIER_RANGE, axis=2)


def _out_index(r: int, n: int, n_out: int, scale: float) -> int:
    # Output row of working row r (a multiple of the scale's denominator, or the grid end).
    return n_out if r >= n else int(round(r * scale))


def _fuse_tile(args) -> tuple[TileTask, np.ndarray, np.ndarray, np.ndarray]:
    """Tile task: read every pass's window, fuse, return the core (data units)."""
    task, ctx = args
    (r0, r1), (c0, c1) = task.win_rows, task.win_cols
    hr, wr = r1 - r0, c1 - c0
    frames, valids, fracs = [], [], []
    ref_frame = ref_valid = ref_pos = None
    fields = []
    for k, ps in enumerate(ctx.passes):
        # The pass's window, clipped to its raster (see fuse_window).
        ph, pw = (ps.info.height, ps.info.width) if ps.native else (ctx.grid.height, ctx.grid.width)
        pfield = None
        lo_d = hi_d = np.asarray(ps.total, np.float64)
        if ps.geometry is not None:
            # Placed by its displacement: the read covers where the
            # window's pixels land; the mean is the offset, the rest the field.
            disp = ps.geometry.window_field(r0, r1, c0, c1) + np.asarray(ps.grid_offset, np.float32)
            flat = disp.reshape(-1, 2)
            mean = flat.mean(axis=0).astype(np.float64)
            pfield = disp - mean.astype(np.float32)
            lo_d, hi_d = flat.min(axis=0), flat.max(axis=0)
        ay = int(np.floor(r0 + lo_d[0]))
        ax = int(np.floor(c0 + lo_d[1]))
        ya, yb = max(ay, 0), min(int(np.floor(r0 + hi_d[0])) + hr + 2, ph)
        xa, xb = max(ax, 0), min(int(np.floor(c0 + hi_d[1])) + wr + 2, pw)
        if yb <= ya or xb <= xa:
            continue
        data, valid = _read_pass(ps, ctx.grid, ctx.bands, (ya, yb), (xa, xb))
        frames.append(_normalise(data, ctx.lo, ctx.hi, ps.gain, ps.offset))
        valids.append(valid)
        fields.append(pfield)
        offset = ps.total if pfield is None else mean
        fracs.append((r0 + offset[0] - ya, c0 + offset[1] - xa))
        if k == ctx.reference:
            ref_pos = len(frames) - 1
        if k == ctx.reference and fracs[-1] == (0.0, 0.0) and data.shape[0] >= hr and data.shape[1] >= wr:
            ref_frame = frames[-1][:hr, :wr].copy()
            ref_valid = valid[:hr, :wr].copy()
    s = ctx.scale
    n_live = sum(bool(v.any()) for v in valids)
    if not frames:  # no pass reaches this tile (possible only off the reference's own grid)
        oh = _out_index(task.core_rows[1], ctx.grid.height, ctx.out_height, s) - _out_index(
            task.core_rows[0], ctx.grid.height, ctx.out_height, s)
        ow = _out_index(task.core_cols[1], ctx.grid.width, ctx.out_width, s) - _out_index(
            task.core_cols[0], ctx.grid.width, ctx.out_width, s)
        return (task, np.full((oh, ow, len(ctx.bands)), np.nan, np.float32),
                np.zeros((oh, ow), np.float32), np.zeros((oh, ow), np.uint16))
    o0 = (_out_index(r0, ctx.grid.height, ctx.out_height, s), _out_index(c0, ctx.grid.width, ctx.out_width, s))
    o1 = (_out_index(r1, ctx.grid.height, ctx.out_height, s), _out_index(c1, ctx.grid.width, ctx.out_width, s))
    out_shape = (o1[0] - o0[0], o1[1] - o0[1])
    if len(ctx.passes) == 1:
        # One pass: nothing to fuse; a cubic-spline interpolation is the
        # honest product (the fusion kernel is a local average, below it).
        img, den = upsample_cubic(frames[0], valids[0], fracs[0], out_shape, s)
        count = (den > 0).astype(np.uint16)
    else:
        num, den, count, lo_b, hi_b, covered = fuse_window(
            frames, valids, np.array(fracs), (hr, wr), out_shape, s,
            ctx.noise, ctx.params, composite_robustness=ctx.robust, reference=ref_pos,
            radius_floor=sample_radius_floor(n_live), reject_floor=False, return_bounds=True,
            fields=fields,
        )
        img = finish_window(num, den, s, ctx.noise, ctx.params)
        del num
        # Back-projection before the clamp and the guard: they then take
        # out its overshoot and whatever its correction leaves near the
        # output's Nyquist frequency; after them, its correction would
        # print the residual's sampling pattern back into the product.
        if ctx.back_projection > 0 and ref_frame is not None:
            img = back_project(img, ref_frame, ref_valid, s, ctx.back_projection)
        # Seen by some pass but every pass rejected there and the reference
        # invalid: filled from the accepted neighbours (count stays 0),
        # never from rejected content (where the reference is valid, its
        # own samples keep their floor weight in fuse_window).
        seen = covered[nearest_input(out_shape[0], s, hr)[:, None], nearest_input(out_shape[1], s, wr)[None, :]]
        img = fill_from_neighbours(img, seen & (den == 0))
        # Filled holes have no accepted sample nearby: no bound there (their
        # values are weighted means of accepted neighbours). The guard comes
        # after the clamp so that it also smooths the clamp's kinks; the
        # next clamp catches the guard's ripple where it passes a bound, but
        # its own kinks are hard steps in the slope, energy at the output
        # Nyquist frequency again. Each further round of guard and clamp
        # cuts only the previous guard's ripple, a fraction of the previous
        # cut, so after GUARD_ROUNDS the last clamp's kinks are too small to
        # print a pattern while every pixel stays within its bounds. A
        # single pass keeps its plain cubic interpolation (the spline's
        # peaks between samples are part of it).
        img = clamp_to_bounds(img, lo_b, hi_b, s, ctx.margin)
        if s >= GUARD_MIN_SCALE:  # below it the guard changes nothing and the clamp would only repeat itself
            for _ in range(GUARD_ROUNDS):
                img = clamp_to_bounds(nyquist_guard(img, s), lo_b, hi_b, s, ctx.margin)
        if ctx.refine:
            # On the whole tile (its halo covers the network's receptive
            # field). The network learnt detail up to the output's Nyquist
            # frequency from simulated truths; on real bands what it puts
            # there is pattern (Sentinel-2 B08: many times bicubic's
            # Nyquist-band energy unguarded, benchmarks/RESULTS.md), so the
            # guard runs again. Then the same local bounds: the network may
            # restore detail but never leave the accepted samples' range.
            refined = np.stack([refine_band(img[..., b], count, noise=ctx.noise, n_passes=len(ctx.passes), scale=s)
                                for b in range(img.shape[-1])], axis=-1)
            img = clamp_to_bounds(nyquist_guard(refined, s), lo_b, hi_b, s, ctx.margin)
    del frames, valids
    y0 = _out_index(task.core_rows[0], ctx.grid.height, ctx.out_height, s) - o0[0]
    y1 = _out_index(task.core_rows[1], ctx.grid.height, ctx.out_height, s) - o0[0]
    x0 = _out_index(task.core_cols[0], ctx.grid.width, ctx.out_width, s) - o0[1]
    x1 = _out_index(task.core_cols[1], ctx.grid.width, ctx.out_width, s) - o0[1]
    lo = np.asarray(ctx.lo, np.float32)
    span = np.asarray(ctx.hi, np.float32) - lo
    core = img[y0:y1, x0:x1] * span + lo
    if ctx.clip is not None:
        # Integer inputs cannot go beyond their type's range (back-projection
        # overshoots next to saturated pixels).
        core = np.clip(core, ctx.clip[0], ctx.clip[1])
    return task, core.astype(np.float32), den[y0:y1, x0:x1].copy(), count[y0:y1, x0:x1].copy()


def _sample_windows(h: int, w: int, size: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Up to 2 x 2 windows of ``size`` px spread over the grid (one if it is small)."""
    out = []
    sy, sx = min(h, size), min(w, size)
    ny = 1 if h <= 1.5 * size else 2
    nx = 1 if w <= 1.5 * size else 2
    for i in range(ny):
        for j in range(nx):
            cy = int(round((i + 0.5) * h / ny))
            cx = int(round((j + 0.5) * w / nx))
            y0 = min(max(cy - sy // 2, 0), h - sy)
            x0 = min(max(cx - sx // 2, 0), w - sx)
            out.append(((y0, y0 + sy), (x0, x0 + sx)))
    return out


def _as_paths(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise ValueError(f"paths: expected a sequence of raster files, got {paths!r}")
    out = [str(p) for p in paths]
    if not out:
        raise ValueError("paths: no pass given")
    return out


def fuse_rasters(
    paths,
    out_path,
    scale: float = 2.0,
    masks=None,
    reference: int | str | None = "auto",
    *,
    bands=None,
    tile: int = 1024,
    scheduler="threads",
    workers: int | None = None,
    overwrite: bool = False,
    cog: bool = False,
    radiometric: bool = True,
    robust: bool = True,
    save_confidence=None,
    save_count=None,
    progress: bool = False,
    dst_crs=None,
    resolution=None,
    nodata: float | None = None,
    shifts=None,
    max_shift: int = 8,
    min_correlation: float = 0.5,
    sample: int = 512,
    back_projection: int = 2,
    params: FusionParams | None = None,
    geometry: str = DEFAULT_GEOMETRY,
    local: bool = DEFAULT_LOCAL,
    save_displacement=None,
    refine: bool = False,
) -> GeoFusionResult:
    """Fuse several passes over one area into one finer, georeferenced GeoTIFF.

    Parameters
    ----------
    paths : sequence of path-like
        The passes: rasters GDAL reads (GeoTIFF, JPEG2000, ...), one or more
        bands each, all with a CRS, the same band count and data type, each
        overlapping the reference. They may differ in extent, CRS and grid.
    out_path : path-like
        Output GeoTIFF (float32, one band per fused band; values of integer
        passes are kept within their type's range).
    scale : float
        Output pixels per input pixel (e.g. 2 or 3); a ratio p/q with
        q <= 64.
    masks : sequence or None
        One entry per pass: None, a mask raster on the pass's grid (nonzero
        = cloud/invalid), ``(path, band)``, or an int band of the pass itself
        (see :mod:`mfsr.geo.masks`). nodata and internal masks are always
        honoured. Masked pixels never contribute.
    reference : int, "auto" or None
        Index of the reference pass (negative counts from the end): its grid
        and radiometry are the output's. ``"auto"`` (default) or None takes
        the best pass: the most pixels that are valid (not nodata, not
        masked) and agree with the other passes' per-pixel median (no
        unmasked cloud or change), and among passes within ``CLEAR_TIE`` of
        the best, the sharpest (mean gradient magnitude); the result's
        ``reference_reason`` says why.
    bands : sequence of int or None
        1-based bands to fuse (default: all, minus a band used as mask).
    tile : int
        Core tile side, input px; memory grows with its square.
    scheduler : str or distributed.Client
        ``"threads"`` (default), ``"sync"``, or ``"distributed://host:port"``
        to fan the tiles out over a ``dask.distributed`` cluster.
    workers : int or None
        Tiles processed at once with threads (default: half the CPU count,
        1 to 4).
    overwrite : bool
        Replace existing output files (refused otherwise).
    cog : bool
        Write Cloud-Optimized GeoTIFFs (tiled, overviews, DEFLATE).
    radiometric : bool
        Adjust every pass to the reference's radiometry with a per-band
        ``gain * x + offset`` fitted on jointly clear pixels.
    robust : bool
        Weigh passes by their agreement with the clear composite (rejects
        unmasked clouds and changes); False uses validity alone.
    save_confidence, save_count : path-like or None
        Companion GeoTIFFs on the output grid: total fusion weight
        (float32), and number of passes that contributed (uint16).
    progress : bool
        tqdm progress bars over the passes (registration) and the tiles.
    dst_crs, resolution :
        Working grid in another CRS / pixel size (the output pixel is then
        ``resolution / scale``); passes not on it are warped (bilinear).
    nodata : float or None
        Output nodata value (default NaN).
    shifts : array-like (N, 2) or None
        Known residual shifts (dy, dx) px; skips the registration.
    max_shift : int
        Largest residual misregistration searched, px (after the
        geotransform; products are usually within 2 px).
    min_correlation : float
        A pass whose registered gradient image correlates less than this
        with the reference's (another season, unmasked clouds) keeps the
        geotransform alone, with a warning (its content is then mostly
        rejected by the composite robustness anyway).
    sample : int
        Side of the sample windows used for the global estimates, px.
    back_projection : int
        Iterations of back-projection to the reference pass's valid pixels
        after the fusion (:func:`mfsr.geo.masked_fusion.back_project`, cubic
        spline upsampling of the residual); 0 disables it. The fused product
        is a composite of dates; back-projection makes it re-degrade to the
        reference date, well beyond what a bicubic upsampling of that date
        does, before the overshoot clamp and the Nyquist guard.
    params : FusionParams, optional
        Kernel, robustness and sharpening parameters of the fusion; default
        :data:`SATELLITE_PARAMS`.
    geometry : {"affine", "similarity", "translation"}
        Global model of each pass beyond the geotransform: fitted to the
        tie points with ``local``, else by a Gauss-Newton fit on the sample
        windows (masked, radiometrically normalised gradients). A
        model beyond translation is used only where it is significant (its
        linear part moves a corner of the grid by more than
        ``MIN_MODEL_PX`` and ``MODEL_SIGMAS`` standard deviations) and the
        grid is at least ``MIN_GRID`` px on each side; otherwise the pass
        keeps its translation. The translation itself is symmetric: the
        mean of the pass registered to the reference and the negated
        reverse.
    local : bool
        Measure a grid of tie points (:mod:`mfsr.geo.tie_points`) and add
        their smooth residual beyond the global model where it is
        significant (grids of at least ``MIN_GRID`` px). Each pass is still
        resampled once, by the fusion's kernels.
    save_displacement : path-like or None
        GeoTIFF of every pass's displacement (global model plus residual) on
        the tie-point grid: bands ``dy``, ``dx`` per pass (working-grid px,
        reference pixel ``(y, x)`` at ``(y + dy, x + dx)`` of the pass),
        for inspection like AROSICS' tie-point grid.
    refine : bool
        Apply the learned satellite refinement (:mod:`mfsr.geo.pass_refinement`,
        weights trained on simulated passes by :mod:`mfsr.geo.train_refiner`)
        to every band of the fused product, after the overshoot clamp and the
        Nyquist guard; the refined band is guarded again and clamped to the
        same local bounds of the accepted samples. Trained for scale 2 only:
        other scales keep the plain product (with a warning). A single pass
        is never refined. Default False (benchmarks/RESULTS.md has the
        measurements behind it).

    Returns
    -------
    GeoFusionResult
        Per-pass ``shifts`` (N, 2), gains/offsets, valid fractions, the
        output path and grid.

    Raises
    ------
    ValueError
        Bad input, naming the argument and file: unreadable or missing file,
        no CRS, different band counts or data types, a pass that does not
        overlap the reference, a bad mask, an existing output without
        ``overwrite``. Nothing is written then, and no partial output is left
        after any failure.

    Notes
    -----
    Memory is bounded independently of the raster size: per concurrent
    tile about ``4 * [N (C + 2) (T + 2h + 2)^2 + (C + 12) (T + 2h)^2 +
    (C + 4) s^2 (T + 2h)^2]`` bytes (``T = tile``, halo ``h = 24``, ``N``
    passes, ``C`` bands, scale ``s``): about 270 MB for ``T = 1024``,
    ``N = 8``, ``C = 1``, ``s = 2``; plus the sample windows of one pass at
    a time (``(C + 3) * 4 * (sample + 2 max_shift)^2`` bytes each, at most
    four) and up to ``2 * workers`` finished cores waiting to be written.
    Measured peak resident memory of the whole process (libraries
    included) for 8 passes at scale 2 with ``tile=1024``: 652 MiB with one
    worker, 844 MiB with two at 2000 x 2000 px, and 845 MiB (two workers,
    241 s on 2 cores) at 8000 x 8000 px (``benchmarks/bench_geo.py``).

    The model per pass is the geotransform, a global model (``geometry``)
    and a smooth local residual (``local``): see
    :mod:`mfsr.geo.pass_geometry`. ``GeoFusionResult.models`` says which
    each pass got.

    Examples
    --------
    >>> res = fuse_rasters(["p1.tif", "p2.tif", "p3.tif"], "fused.tif", scale=2)  # doctest: +SKIP
    >>> res.shifts  # doctest: +SKIP
    array([[ 0.   ,  0.   ],
           [ 0.312, -0.705],
           [-1.198,  0.402]])
    """
    path_list = _as_paths(paths)
    scale = check_scale(scale)
    frac = scale_fraction(scale)
    n = len(path_list)
    reference, tile, max_shift, min_correlation, back_projection, params = _check_options(
        n, reference, tile, max_shift, min_correlation, back_projection, params)
    _check_geometry(geometry, local)
    refine = _check_refine(refine, scale)
    parse_scheduler(scheduler)
    workers = _check_workers(workers)

    outputs = [("out_path", out_path)]
    if save_confidence is not None:
        outputs.append(("save_confidence", save_confidence))
    if save_count is not None:
        outputs.append(("save_count", save_count))
    if save_displacement is not None:
        outputs.append(("save_displacement", save_displacement))
    resolved_in = {Path(p).resolve() for p in path_list}
    seen = set()
    for name, p in outputs:
        check_output_path(p, overwrite, name)
        rp = Path(p).resolve()
        if rp in resolved_in:
            raise ValueError(f"{name}: {p} is one of the input passes")
        if rp in seen:
            raise ValueError(f"{name}: {p} is also another output")
        seen.add(rp)

    infos = [read_pass_info(p) for p in path_list]
    specs = parse_masks(masks, infos)
    own = {s.band for s in specs if s is not None and s.own_band}
    if bands is None and own:
        bands = [b for b in range(1, infos[0].count + 1) if b not in own]
    band_idx = check_compatible(infos, None if bands is None else tuple(bands))
    _check_same_bands(infos, band_idx)
    ctx, tasks, result = _plan_fusion(
        infos, specs, [None] * n, band_idx, scale, frac.denominator, reference,
        dst_crs=dst_crs, resolution=resolution, shifts=shifts, sample=sample, max_shift=max_shift,
        min_correlation=min_correlation, radiometric=radiometric, robust=robust,
        back_projection=back_projection, params=params, tile=tile, progress=progress,
        geometry=geometry, local=local,
    )
    ctx = replace(ctx, refine=refine)

    # --- Tiled fusion and output -------------------------------------------
    ref_info = infos[result.reference]
    out_grid = Grid(result.crs, result.transform, result.width, result.height)
    nb = len(band_idx)
    tags = dict(ref_info.tags)
    tags.update(result.tags([Path(p).name for p in path_list]))
    out_nodata = float("nan") if nodata is None else float(nodata)
    writers: list[RasterWriter] = []
    try:
        main = RasterWriter(out_path, out_grid, nb, "float32", out_nodata, tags=tags,
                            band_metadata=fused_band_metadata(ref_info, band_idx), cog=cog, overwrite=overwrite)
        writers.append(main)
        conf_w = count_w = None
        if save_confidence is not None:
            conf_w = RasterWriter(save_confidence, out_grid, 1, "float32", None,
                                  descriptions=["fusion weight"], tags={"MFSR_PRODUCT": "confidence"}, cog=cog,
                                  overwrite=overwrite)
            writers.append(conf_w)
        if save_count is not None:
            count_w = RasterWriter(save_count, out_grid, 1, "uint16", None,
                                   descriptions=["contributing passes"], tags={"MFSR_PRODUCT": "count"}, cog=cog,
                                   overwrite=overwrite)
            writers.append(count_w)
        for rows, cols, core, den, count in _run_tiles(ctx, tasks, scheduler, workers, progress):
            if nodata is not None:
                core = fill_nodata(core, out_nodata)
            main.write(rows, cols, core)
            if conf_w is not None:
                conf_w.write(rows, cols, den)
            if count_w is not None:
                count_w.write(rows, cols, count)
        if save_displacement is not None:
            writers.append(_write_displacement(save_displacement, ctx.grid, result, path_list, overwrite))
        commit_all(writers)
    except BaseException:
        abort_all(writers)
        raise
    return replace(
        result,
        out_path=Path(out_path),
        confidence_path=None if save_confidence is None else Path(save_confidence),
        count_path=None if save_count is None else Path(save_count),
        displacement_path=None if save_displacement is None else Path(save_displacement),
    )


def _write_displacement(path, grid: Grid, result: GeoFusionResult, names, overwrite: bool) -> RasterWriter:
    """The passes' displacements on the tie-point grid: bands (dy, dx) per pass, working px (uncommitted)."""
    rows, cols, spacing = node_grid(grid.height, grid.width)
    if rows.size == 0 or cols.size == 0:  # smaller than one cell: cells of its shorter side
        rows, cols, spacing = node_grid(grid.height, grid.width, min(grid.height, grid.width))
    ty, tx = rows.size, cols.size
    n = len(names)
    cells = Grid(grid.crs, grid.transform @ Affine.scale(spacing), tx, ty)
    desc, btags = [], []
    for k in range(n):
        for comp in ("dy", "dx"):
            desc.append(f"{Path(str(names[k])).name} {comp} (px)")
            btags.append({"MFSR_PASS": str(k), "MFSR_COMPONENT": comp, "MFSR_MODEL": result.models[k]})
    writer = RasterWriter(path, cells, 2 * n, "float32", None, descriptions=desc, band_tags=btags,
                          tags={"MFSR_PRODUCT": "displacement", "MFSR_UNITS": "working-grid px",
                                "MFSR_REFERENCE": str(result.reference),
                                "MFSR_CONVENTION": "reference pixel (y, x) lies at (y + dy, x + dx) of the pass"},
                          overwrite=overwrite)
    try:
        data = np.empty((ty, tx, 2 * n), np.float32)
        for k in range(n):
            data[..., 2 * k : 2 * k + 2] = result.displacement_at(k, rows[:, None], cols[None, :])
        writer.write((0, ty), (0, tx), data)
    except BaseException:
        writer.abort()
        raise
    return writer


def fuse_arrays(
    data,
    crs,
    transform,
    scale: float = 2.0,
    invalid=None,
    reference: int | str | None = "auto",
    *,
    nodata: float | None = None,
    names=None,
    tile: int = 1024,
    workers: int | None = None,
    radiometric: bool = True,
    robust: bool = True,
    progress: bool = False,
    shifts=None,
    max_shift: int = 8,
    min_correlation: float = 0.5,
    sample: int = 512,
    back_projection: int = 2,
    params: FusionParams | None = None,
    geometry: str = DEFAULT_GEOMETRY,
    local: bool = DEFAULT_LOCAL,
    refine: bool = False,
    return_count: bool = False,
):
    """Fuse passes held in memory (NumPy or Dask) on one grid, as :func:`fuse_rasters` fuses files.

    The same engine: every pass becomes an in-memory
    :class:`mfsr.geo.passes.ArrayDataset` read by the same windowed reader,
    then the automatic reference, the registration and radiometric fit on
    sample windows, the tiled masked fusion, the clamp and the hole fill
    are those of :func:`fuse_rasters`; only the output is an array instead
    of a GeoTIFF. :func:`mfsr.geo.fuse_xarray` wraps it for DataArrays.

    Parameters
    ----------
    data : array-like, shape (N, C, H, W)
        ``N`` passes of ``C`` bands on one grid, real integer or float data
        (NumPy, or a Dask array: only the windows read are computed, so it
        need not fit in memory). Non-finite values (NaN) are invalid.
    crs : rasterio.crs.CRS or str
        CRS of the grid (anything ``CRS.from_user_input`` accepts).
    transform : affine.Affine
        Pixel (col, row) -> map (x, y) of pixel upper-left corners.
    scale : float
        Output pixels per input pixel; a ratio p/q with q <= 64.
    invalid : array-like of bool, shape (N, H, W), or None
        True (nonzero) where a pass holds no valid data (cloud, shadow, bad
        pixel): the meaning of a nonzero pixel of a mask raster in
        :func:`fuse_rasters`. Invalid samples never contribute.
    reference : int, "auto" or None
        As in :func:`fuse_rasters`.
    nodata : float or None
        Input samples equal to it are invalid (the passes' nodata value).
    names : sequence of str or None
        A label per pass for warnings and the result's tags (default
        ``data[k]``).
    tile, workers, radiometric, robust, progress, shifts, max_shift, min_correlation, sample, back_projection, params :
        As in :func:`fuse_rasters` (tiles run on Dask's threaded scheduler).
    geometry, local, refine :
        As in :func:`fuse_rasters`.
    return_count : bool
        Also return the number of contributing passes per output pixel (what
        ``save_count`` writes for :func:`fuse_rasters`).

    Returns
    -------
    fused : ndarray of float32, shape (C, round(H * scale), round(W * scale))
        The fused bands on the output grid (``result.transform``), NaN where
        no pass has data.
    result : GeoFusionResult
        As :func:`fuse_rasters` reports it, with ``out_path`` None.
    count : ndarray of uint16, shape (round(H * scale), round(W * scale))
        Only with ``return_count``.

    Raises
    ------
    ValueError
        Naming the argument: wrong shapes, non-numeric data, bad CRS or
        transform, and every error of :func:`fuse_rasters`'s options.
    """
    from rasterio.crs import CRS

    shape = tuple(int(v) for v in getattr(data, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"data: expected an array of shape (N, C, H, W), got shape {shape or type(data).__name__}")
    n, nb, h, w = shape
    if min(shape) < 1:
        raise ValueError(f"data: every dimension of (N, C, H, W) must be at least 1, got {shape}")
    kind = np.dtype(data.dtype).kind
    if kind not in "uif":
        raise ValueError(f"data: data type {data.dtype}; expected real integer or float values")
    if invalid is not None:
        ishape = tuple(int(v) for v in getattr(invalid, "shape", ()))
        if ishape != (n, h, w):
            raise ValueError(f"invalid: expected shape (N, H, W) = {(n, h, w)}, got {ishape}")
        if np.dtype(invalid.dtype).kind not in "bui":
            raise ValueError(f"invalid: expected a boolean (or integer, nonzero = invalid) array, got {invalid.dtype}")
    try:
        crs = CRS.from_user_input(crs)
    except Exception as exc:
        raise ValueError(f"crs: not a CRS rasterio understands: {crs!r} ({exc})") from None
    if not isinstance(transform, Affine) or transform.is_degenerate:
        raise ValueError(f"transform: expected an invertible affine.Affine, got {transform!r}")
    names = [f"data[{k}]" for k in range(n)] if names is None else [str(v) for v in names]
    if len(names) != n:
        raise ValueError(f"names: expected {n} labels (one per pass), got {len(names)}")
    scale = check_scale(scale)
    frac = scale_fraction(scale)
    reference, tile, max_shift, min_correlation, back_projection, params = _check_options(
        n, reference, tile, max_shift, min_correlation, back_projection, params)
    _check_geometry(geometry, local)
    refine = _check_refine(refine, scale)
    workers = _check_workers(workers)
    nodata = None if nodata is None else float(nodata)

    infos = [PassInfo(path=names[k], crs=crs, transform=transform, width=w, height=h, count=nb,
                      dtype=str(np.dtype(data.dtype)), nodata=nodata) for k in range(n)]
    sources = [ArrayDataset(data[k], None if invalid is None else invalid[k], nodata) for k in range(n)]
    ctx, tasks, result = _plan_fusion(
        infos, [None] * n, sources, tuple(range(1, nb + 1)), scale, frac.denominator, reference,
        shifts=shifts, sample=sample, max_shift=max_shift, min_correlation=min_correlation,
        radiometric=radiometric, robust=robust, back_projection=back_projection, params=params,
        tile=tile, progress=progress, geometry=geometry, local=local,
    )
    ctx = replace(ctx, refine=refine)
    fused = np.full((nb, result.height, result.width), np.nan, np.float32)
    count = np.zeros((result.height, result.width), np.uint16) if return_count else None
    for rows, cols, core, _, cnt in _run_tiles(ctx, tasks, "threads", workers, progress):
        fused[:, rows[0] : rows[1], cols[0] : cols[1]] = np.moveaxis(core, -1, 0)
        if count is not None:
            count[rows[0] : rows[1], cols[0] : cols[1]] = cnt
    return (fused, result, count) if return_count else (fused, result)


def _check_options(n, reference, tile, max_shift, min_correlation, back_projection, params):
    """Checked options shared by fuse_rasters and fuse_arrays; ``reference`` None means automatic."""
    auto_reference = reference is None or (isinstance(reference, str) and reference == "auto")
    if auto_reference:
        reference = None
    else:
        if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)):
            raise TypeError(f"reference: expected an integer index, 'auto' or None, got {reference!r}")
        if not -n <= reference < n:
            raise ValueError(f"reference: index {reference} out of range for {n} passes")
        reference = int(reference) % n
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 16:
        raise ValueError(f"tile: expected an integer >= 16, got {tile!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or max_shift < 2:
        raise ValueError(f"max_shift: expected an integer >= 2, got {max_shift!r}")
    try:
        min_correlation = float(min_correlation)
    except (TypeError, ValueError):
        raise ValueError(f"min_correlation: expected a number, got {min_correlation!r}") from None
    if isinstance(back_projection, bool) or not isinstance(back_projection, (int, np.integer)) or back_projection < 0:
        raise ValueError(f"back_projection: expected an integer >= 0, got {back_projection!r}")
    if params is None:
        params = SATELLITE_PARAMS
    elif not isinstance(params, FusionParams):
        raise TypeError(f"params: expected FusionParams, got {type(params).__name__}")
    return reference, int(tile), int(max_shift), min_correlation, int(back_projection), params


def _check_geometry(geometry, local) -> None:
    if not isinstance(geometry, str) or geometry not in MODELS:
        raise ValueError(f"geometry: expected one of {', '.join(MODELS)}, got {geometry!r}")
    if not isinstance(local, (bool, np.bool_)):
        raise TypeError(f"local: expected True or False, got {local!r}")


def _check_refine(refine, scale: float) -> bool:
    """``refine`` checked (TypeError naming it); False, with a warning, at a scale the network does not know."""
    refine = check_refine(refine)
    if refine and not refines_scale(scale):
        warn_unrefined(scale)
        return False
    return refine


def _check_tile_memory(infos, n_bands: int, scale: float, tile: int) -> None:
    """Refuse a scale at which even one tile cannot fit in memory, before any pixel is read."""
    th = min(int(tile), max(i.height for i in infos)) + 2 * HALO
    tw = min(int(tile), max(i.width for i in infos)) + 2 * HALO
    out_px = (th * scale) * (tw * scale)
    # Per output pixel: sums, weights, count, bounds and the finishing copies,
    # about (C + 6) float32 maps three times over; per input pixel of every
    # pass its bands, validity and working maps.
    need = 12.0 * (n_bands + 6) * out_px + 4.0 * (n_bands + 12) * th * tw * len(infos)
    require_memory(need, f"scale: fusing tiles of {tw}x{th} input px at scale {scale:g}")


def _check_workers(workers) -> int:
    # The Numba kernels of one tile already use every core; a second tile
    # in flight overlaps I/O and single-threaded NumPy work (measured on 2
    # cores: 4 % faster for 50 % more memory, so one worker there).
    workers = max(1, min(4, (os.cpu_count() or 1) // 2)) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    return workers


def _run_tiles(ctx: _Context, tasks, scheduler, workers, progress):
    """Fuse every tile; yield its output rows, cols (output px), core (h, w, C), weight and count."""
    grid, s = ctx.grid, ctx.scale
    items = [(t, ctx) for t in tasks]
    for task, core, den, count in run_tasks(
        _fuse_tile, items, scheduler=scheduler, workers=workers, progress=progress, desc="fuse tiles"
    ):
        rows = (_out_index(task.core_rows[0], grid.height, ctx.out_height, s),
                _out_index(task.core_rows[1], grid.height, ctx.out_height, s))
        cols = (_out_index(task.core_cols[0], grid.width, ctx.out_width, s),
                _out_index(task.core_cols[1], grid.width, ctx.out_width, s))
        yield rows, cols, core, den, count


def _plan_fusion(
    infos, specs, sources, band_idx, scale, step, reference, *, dst_crs=None, resolution=None, shifts=None,
    sample, max_shift, min_correlation, radiometric, robust, back_projection, params, tile, progress,
    geometry="translation", local=False,
) -> tuple[_Context, list[TileTask], GeoFusionResult]:
    """Reference, working grid, global estimates and tiles: everything before the tiled fusion.

    ``sources`` holds an :class:`ArrayDataset` per in-memory pass, None for
    a file read by its path; ``reference`` None chooses it automatically.
    The result's output paths are None.
    """
    n = len(infos)
    _check_tile_memory(infos, len(band_idx), scale, tile)
    clear_scores = None
    if reference is None:
        reference, reason, clear_scores = _choose_reference(
            infos, specs, sources, band_idx, dst_crs, resolution, int(sample))
    else:
        reason = "given"
    ref_info = infos[reference]
    grid = choose_grid(ref_info, dst_crs, resolution)
    placements = [place_pass(info, grid) for info in infos]
    nb = len(band_idx)
    if shifts is not None:
        shifts = np.asarray(shifts, np.float64)
        if shifts.shape != (n, 2) or not np.all(np.isfinite(shifts)):
            raise ValueError(f"shifts: expected a finite (N, 2) = ({n}, 2) array, got shape {shifts.shape}")

    # --- Global estimates on sample windows -------------------------------
    windows = _sample_windows(grid.height, grid.width, int(sample))
    base = [
        _Pass(info, pl.native, pl.offset, spec, (1.0,) * nb, (0.0,) * nb, src)
        for info, pl, spec, src in zip(infos, placements, specs, sources)
    ]

    ref_pass = base[reference]
    ref_raw, ref_valid, ref_tally = [], [], []
    for rows, cols in windows:
        d, v = _read_pass(ref_pass, grid, band_idx, _shift_window(rows, ref_pass.total[0]),
                          _shift_window(cols, ref_pass.total[1]), ref_tally)
        ref_raw.append(d)
        ref_valid.append(v)
    _warn_implausible(ref_info, ref_tally)
    lo, hi = working_range(ref_raw, ref_valid)
    ref_norm = [_normalise(d, lo, hi) for d in ref_raw]
    ref_grey, ref_est = (list(t) for t in zip(*[_estimation_view(d, v) for d, v in zip(ref_norm, ref_valid)]))
    noise = masked_noise(ref_grey, ref_valid)
    del ref_raw
    # The reference's windows widened by the search margin: the backward
    # half of the symmetric shift registers them to the pass.
    ref_wide = []
    if SYMMETRIC_SHIFTS and shifts is None:
        m_ = int(max_shift)
        for rows, cols in windows:
            d, v = _read_pass(ref_pass, grid, band_idx,
                              _shift_window((rows[0] - m_, rows[1] + m_), ref_pass.total[0]),
                              _shift_window((cols[0] - m_, cols[1] + m_), ref_pass.total[1]))
            ref_wide.append(_estimation_view(_normalise(d, lo, hi), v))

    est_shift = np.zeros((n, 2))
    shift_std = np.zeros((n, 2))
    gains = np.ones((n, nb))
    offs = np.zeros((n, nb))
    valid_frac = np.zeros(n)
    correlations = np.full(n, np.nan)
    correlations[reference] = 1.0
    registered = np.ones(n, bool)
    valid_frac[reference] = float(np.mean([v.mean() for v in ref_valid]))
    geometries: list[PassGeometry | None] = [None] * n
    models = ["translation"] * n
    model_std = np.zeros(n)
    tie_points: list[TiePoints | None] = [None] * n
    margin = int(max_shift)
    order = range(n)
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order, desc="register passes", unit="pass")
    for k in order:
        ps = base[k]
        if k == reference:
            continue
        movs, mvalids, fr, tally = [], [], None, []
        for rows, cols in windows:
            ay = int(np.floor(rows[0] + ps.total[0]))
            ax = int(np.floor(cols[0] + ps.total[1]))
            fr = (rows[0] + ps.total[0] - ay, cols[0] + ps.total[1] - ax)
            d, v = _read_pass(
                ps, grid, band_idx,
                (ay - margin, ay + rows[1] - rows[0] + margin),
                (ax - margin, ax + cols[1] - cols[0] + margin),
                tally,
            )
            movs.append(_normalise(d, lo, hi))
            mvalids.append(v)
        valid_frac[k] = float(np.mean([v[margin:-margin, margin:-margin].mean() for v in mvalids]))
        _warn_implausible(infos[k], tally)
        mov_grey, mov_est = (list(t) for t in zip(*[_estimation_view(m, v) for m, v in zip(movs, mvalids)]))
        # Every window has the same fractional offset (its start is an integer).
        if shifts is not None:
            total = np.asarray(fr) + shifts[k] - np.asarray(shifts[reference])
        else:
            try:
                if sum(int(v.sum()) for v in mov_est) < 64:
                    raise ValueError("fewer than 64 clear pixels within the reference's value range: "
                                     "cloud, nodata or masked")
                est = estimate_shift(ref_grey, ref_est, mov_grey, mov_est, margin)
                if not est.correlation >= min_correlation:
                    raise ValueError(
                        f"the registered images correlate at {est.correlation:.2f} < min_correlation "
                        f"{min_correlation:g}: too different from the reference for a shift"
                    )
                total = est.shift
                if ref_wide:
                    total = _symmetric_shift(total, mov_grey, mov_est, ref_wide, margin)
                shift_std[k] = est.std
                model_std[k] = float(np.max(est.std))
                correlations[k] = est.correlation
            except ValueError as exc:
                warnings.warn(
                    f"{infos[k].path}: no registration ({exc}); using the geotransform alone",
                    stacklevel=3,
                )
                total = np.asarray(fr, np.float64)
                registered[k] = False
        est_shift[k] = total - np.asarray(fr)
        band_corr = []
        for b in range(nb):
            g_sum, o_sum, r_b = _fit_band(ref_norm, ref_est, movs, mov_est, b, total, margin)
            if radiometric:
                gains[k, b], offs[k, b] = g_sum, o_sum
            band_corr.append(r_b)
        if registered[k] and shifts is None:
            low = [(band_idx[b], r) for b, r in enumerate(band_corr) if r < MIN_BAND_CORRELATION]
            if low:
                worst = min(low, key=lambda t: t[1])
                warnings.warn(
                    f"{infos[k].path}: after registration, band {worst[0]} correlates at {worst[1]:.2f} "
                    f"with the reference's (< {MIN_BAND_CORRELATION:g}): another band or a changed scene; "
                    f"its shift ({est_shift[k, 0]:+.2f}, {est_shift[k, 1]:+.2f}) px may be meaningless",
                    stacklevel=3,
                )
        if registered[k] and shifts is None and (geometry != "translation" or local):
            geom, models[k], std_k, tie_points[k] = _fit_pass_geometry(
                ref_pass, ps, grid, band_idx, lo, hi, windows, ref_grey, ref_est,
                mov_grey, mov_est, margin, total, fr, geometry, local, min_correlation)
            if geom is not None:
                geometries[k] = geom
                model_std[k] = std_k
        del movs, mvalids

    passes = []
    for k, ps in enumerate(base):
        t = (ps.total[0] + est_shift[k, 0], ps.total[1] + est_shift[k, 1])
        passes.append(_Pass(ps.info, ps.native, t, ps.mask, tuple(gains[k]), tuple(offs[k]), ps.source,
                            geometries[k], ps.total))
    out_grid = output_grid(grid, scale)
    ctx = _Context(
        tuple(passes), grid, band_idx, tuple(lo), tuple(hi), scale,
        out_grid.height, out_grid.width, noise, params, bool(robust), reference, int(back_projection),
        _dtype_range(ref_info.dtype), OVERSHOOT_SIGMAS * float(np.sqrt(noise[0] * 0.5 + noise[1])),
    )

    tasks = plan_tiles(grid.height, grid.width, int(tile), HALO, step)
    full_geometry = [g if g is not None else PassGeometry.translation(*est_shift[k]) for k, g in enumerate(geometries)]
    span = hi - lo
    # gain/offset found on normalised values, reported in data units:
    # adjusted = lo + span * (g * (x - lo) / span + o)
    gains_data = gains.copy()
    offs_data = lo[None, :] + span[None, :] * offs - gains * lo[None, :]
    result = GeoFusionResult(
        out_path=None,
        shifts=est_shift,
        grid_offsets=np.array([pl.offset for pl in placements], np.float64),
        gains=gains_data,
        offsets=offs_data,
        valid_fractions=valid_frac,
        shift_std=shift_std,
        correlations=correlations,
        registered=registered,
        native=np.array([pl.native for pl in placements]),
        scale=scale,
        reference=reference,
        noise=noise,
        crs=out_grid.crs,
        transform=out_grid.transform,
        width=out_grid.width,
        height=out_grid.height,
        bands=band_idx,
        n_tiles=len(tasks),
        reference_reason=reason,
        clear_scores=clear_scores,
        transforms=np.stack([g.transform() for g in full_geometry]),
        geometry=tuple(full_geometry),
        models=tuple(models),
        model_std=model_std,
        tie_points=tuple(tie_points),
        working_range=(np.asarray(lo, np.float64), np.asarray(hi, np.float64)),
    )
    return ctx, tasks, result


def _warn_implausible(info: PassInfo, tally: list[int]) -> None:
    """Warn when a pass's sample windows held values that cannot be data (read_window masks them like nodata)."""
    n = sum(tally)
    if n:
        warnings.warn(
            f"{info.path}: {n} pixels of the sample windows hold non-finite values or values beyond "
            f"+-{IMPLAUSIBLE:g} (an undeclared fill value?): treated as nodata",
            stacklevel=4,
        )


def _symmetric_shift(forward, mov_grey, mov_est, ref_wide, margin) -> np.ndarray:
    """Mean of the forward shift and the negated backward one (pass registered to the reference).

    ``forward`` places reference pixel ``i`` of a window at ``i + margin +
    forward`` of the pass's widened window. The backward fit registers the
    pass's window at the nearest integer shift ``q`` to the reference's
    widened windows; its shift ``e`` gives ``q - e`` for the same quantity.
    The mean is antisymmetric by construction (registering j to i gives
    exactly the negative of i to j) and cancels the part of the estimator's
    bias that comes from interpolating only the moving image. Falls back to
    the forward shift where the backward fit fails.
    """
    q = np.rint(np.asarray(forward, np.float64)).astype(int)
    if np.any(np.abs(q) > margin - 2):
        return forward
    refs, rvs, wides, wvs = [], [], [], []
    for grey, mv, (g, gv) in zip(mov_grey, mov_est, ref_wide):
        h, w = g.shape[0] - 2 * margin, g.shape[1] - 2 * margin
        refs.append(grey[margin + q[0] : margin + q[0] + h, margin + q[1] : margin + q[1] + w])
        rvs.append(mv[margin + q[0] : margin + q[0] + h, margin + q[1] : margin + q[1] + w])
        wides.append(g)
        wvs.append(gv)
    try:
        back = estimate_shift(refs, rvs, wides, wvs, margin, initial=q - np.asarray(forward))
    except ValueError:
        return forward
    return 0.5 * (np.asarray(forward, np.float64) + (q - back.shift))


def _significant(matrix: np.ndarray, std: float, h: int, w: int) -> bool:
    """Whether a model's linear part moves a corner of the grid beyond MIN_MODEL_PX and MODEL_SIGMAS std."""
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], np.float64) - centre
    moved = float(np.abs(corners @ matrix[:, :2].T).max())
    return moved > max(MIN_MODEL_PX, MODEL_SIGMAS * std)


def _fit_pass_geometry(ref_pass, ps, grid, band_idx, lo, hi, windows, ref_grey, ref_est, mov_grey, mov_est,
                       margin, total, fr, model, local, min_correlation):
    """Global model beyond translation and local residual of one registered pass.

    ``total`` is the translation estimate in the sample windows' frame
    (``fr`` their fractional grid offset). Returns the pass's geometry (None
    when the translation stays: no model or residual is significant), the
    model's name, its corner standard deviation and the tie points.
    """
    shift = np.asarray(total, np.float64) - np.asarray(fr, np.float64)
    geom = PassGeometry.translation(*shift)
    name, std = "translation", float("nan")
    h, w = grid.height, grid.width
    large = min(h, w) >= MIN_GRID
    points = None
    if local and large:
        # Tie points from the translation; the global model is then fitted
        # to them (cheap, and it covers the whole grid, not only the sample
        # windows), and the residual is measured against it.
        iy = int(np.floor(ps.total[0]))
        ix = int(np.floor(ps.total[1]))
        frac = np.array([ps.total[0] - iy, ps.total[1] - ix])

        def read(p, dy, dx):
            def reader(rows, cols):
                d, v = _read_pass(p, grid, band_idx, (rows[0] + dy, rows[1] + dy), (cols[0] + dx, cols[1] + dx))
                return _estimation_view(_normalise(d, lo, hi), v)
            return reader

        ry, rx = int(np.floor(ref_pass.total[0])), int(np.floor(ref_pass.total[1]))
        start = PassGeometry(geom.matrix + np.array([[0, 0, frac[0]], [0, 0, frac[1]]]))
        points = measure_tie_points(read(ref_pass, ry, rx), read(ps, iy, ix), start, h, w,
                                    min_correlation=min_correlation)
        points.shifts -= frac
        if model != "translation":
            fit = fit_model(points, model, h, w)
            if fit is not None and _significant(fit[0], fit[1], h, w):
                geom, name, std = PassGeometry(fit[0]), model, fit[1]
        residual, _ = residual_field(points, geom)
        if residual is not None:
            geom = PassGeometry(geom.matrix, points.rows, points.cols, residual)
            name += "+local"
    elif model != "translation" and large:
        try:
            est = estimate_shift(ref_grey, ref_est, mov_grey, mov_est, margin, model=model,
                                 positions=[(rows[0], cols[0]) for rows, cols in windows], initial=total)
        except ValueError:
            est = None
        if est is not None:
            m = est.matrix.copy()
            m[:, 2] -= np.asarray(fr, np.float64)
            if _significant(m, est.model_std, h, w):
                geom, name, std = PassGeometry(m), model, est.model_std
    if geom.is_translation:
        return None, name, std, points
    return geom, name, std, points



def _dtype_range(dtype: str) -> tuple[float, float] | None:
    """(min, max) of an integer data type, None for floats."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return None


def _shift_window(rng: tuple[int, int], offset: float) -> tuple[int, int]:
    a = int(np.floor(rng[0] + offset + 0.5))
    return a, a + rng[1] - rng[0]


def _fit_band(ref_norm, ref_valid, movs, mvalids, b, total, margin) -> tuple[float, float, float]:
    """Radiometric gain/offset of band ``b`` (normalised values) after the shift, and their correlation."""
    refs, movw, wts = [], [], []
    iy, ix = int(np.floor(total[0])), int(np.floor(total[1]))
    f = (total[0] - iy, total[1] - ix)
    for r, rv, m, mv in zip(ref_norm, ref_valid, movs, mvalids):
        h, w = rv.shape
        y0, x0 = margin + iy, margin + ix
        if y0 < 0 or x0 < 0 or y0 + h + 1 > m.shape[0] or x0 + w + 1 > m.shape[1]:
            continue
        sub = m[y0 : y0 + h + 1, x0 : x0 + w + 1, b]
        sv = mv[y0 : y0 + h + 1, x0 : x0 + w + 1]
        ok = rv & sv[:h, :w] & sv[1:, :w] & sv[:h, 1:] & sv[1:, 1:]
        refs.append(r[..., b][ok])
        movw.append(warp_translate(sub, f, (h, w))[ok])
        wts.append(np.ones(int(ok.sum())))
    if not refs:
        return 1.0, 0.0, float("nan")
    r_all, m_all = np.concatenate(refs), np.concatenate(movw)
    g, o = fit_linear(r_all, m_all, np.concatenate(wts))
    corr = float("nan")
    if r_all.size >= 16 and r_all.std() > 0 and m_all.std() > 0:
        corr = float(np.corrcoef(r_all, m_all)[0, 1])
    return g, o, corr


_BAND_TOKEN = re.compile(r"(?:^|[_\-.\s])(?:B|BAND)0*(\d{1,2}A?)(?=[_\-.\s]|$)", re.IGNORECASE)
_WAVELENGTH_KEYS = ("wavelength", "central_wavelength", "center_wavelength", "wavelength_nm")


def _band_label(info: PassInfo, b: int) -> tuple[str | None, str | None]:
    """(description, band token of the file name) of 1-based band ``b`` of a one-band file, lower case."""
    desc = info.descriptions[b - 1] if b - 1 < len(info.descriptions) else None
    token = None
    if info.count == 1:
        m = _BAND_TOKEN.findall(Path(info.path).stem)
        token = m[-1].upper() if len(m) == 1 else None
    return (desc.strip().lower() if desc else None), token


def _wavelength(info: PassInfo, b: int) -> float | None:
    tags = info.band_tags[b - 1] if b - 1 < len(info.band_tags) else {}
    for key, value in tags.items():
        if key.lower() in _WAVELENGTH_KEYS:
            try:
                return float(str(value).split()[0])
            except ValueError:
                return None
    return None


def _check_same_bands(infos: list[PassInfo], bands: tuple[int, ...]) -> None:
    """Refuse or flag passes whose bands are not the reference's same bands.

    Centre wavelengths (band tags) more than ``WAVELENGTH_TOLERANCE`` apart
    raise: no registration or radiometric fit makes a red band a near
    infrared one. Different band descriptions, or band numbers in
    one-band file names (``..._B4.tif`` against ``..._B8.tif``), warn:
    names are not always reliable, but a registration between different
    bands reports a shift that is not one.
    """
    first = infos[0]
    for info in infos[1:]:
        for b in bands:
            w0, w1 = _wavelength(first, b), _wavelength(info, b)
            if w0 and w1 and abs(w1 - w0) > WAVELENGTH_TOLERANCE * max(w0, w1):
                raise ValueError(
                    f"paths: band {b} of {info.path} is centred at {w1:g} but band {b} of {first.path} "
                    f"at {w0:g}: different spectral bands cannot be fused (select the same band with bands=)"
                )
            (d0, t0), (d1, t1) = _band_label(first, b), _band_label(info, b)
            if d0 and d1 and d0 != d1:
                warnings.warn(
                    f"{info.path}: band {b} is described as {d1!r} but band {b} of {first.path} as {d0!r}: "
                    "different bands? A shift between different bands is not a misregistration",
                    stacklevel=3,
                )
            elif t0 and t1 and t0 != t1:
                warnings.warn(
                    f"{info.path}: its file name says band {t1} but {first.path}'s says band {t0}: "
                    "different bands? A shift between different bands is not a misregistration",
                    stacklevel=3,
                )


def _choose_reference(infos, specs, sources, band_idx, dst_crs, resolution, sample) -> tuple[int, str, np.ndarray]:
    """The best pass as reference: clearest (valid and agreeing with the others), then sharpest.

    Every pass is read on the sample windows of the first pass's working
    grid (the geotransforms place them; a residual misregistration of a
    pixel or two hardly changes the scores). Bands are normalised with one
    range pooled over all passes; a pixel of a pass is *clear* where it is
    valid and its grey value lies within 3 robust standard deviations (at
    least 0.02) of the per-pixel median of the valid passes.

    Returns
    -------
    reference : int
    reason : str
    clear : ndarray of float64, shape (N,)
        Fraction of clear pixels of every pass over the sample windows.
    """
    from scipy.ndimage import gaussian_gradient_magnitude

    n = len(infos)
    if n == 1:
        return 0, "the only pass", np.ones(1)
    grid = choose_grid(infos[0], dst_crs, resolution)
    windows = _sample_windows(grid.height, grid.width, sample)
    nb = len(band_idx)
    data = []  # per window: (N, h, w, C), (N, h, w)
    passes = []
    for info, spec, src in zip(infos, specs, sources):
        pl = place_pass(info, grid)
        passes.append(_Pass(info, pl.native, pl.offset, spec, (1.0,) * nb, (0.0,) * nb, src))
    for rows, cols in windows:
        ds, vs = [], []
        for ps in passes:
            d, v = _read_pass(ps, grid, band_idx, _shift_window(rows, ps.total[0]), _shift_window(cols, ps.total[1]))
            ds.append(d)
            vs.append(v)
        data.append((np.stack(ds), np.stack(vs)))
    pooled = [d[v] for d, v in data if v.any()]
    if not pooled:
        return 0, "no pass has a valid pixel on the sample windows: the first", np.zeros(n)
    allv = np.concatenate(pooled).astype(np.float64)
    lo = np.percentile(allv, 1, axis=0)
    hi = np.percentile(allv, 99, axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    greys, devs = [], []
    for d, v in data:
        g = ((d - lo) / (hi - lo)).mean(axis=-1).astype(np.float32)
        med, _ = masked_median(g, v)
        greys.append(g)
        devs.append(np.abs(g - med[None]))
    dv = np.concatenate([dev[v] for dev, (_, v) in zip(devs, data)])
    tol = max(3.0 * 1.4826 * float(np.median(dv)) if dv.size else 0.0, 0.02)
    clear_n = np.zeros(n)
    total = 0
    grad_sum = np.zeros(n)
    grad_n = np.zeros(n)
    for g, dev, (_, v) in zip(greys, devs, data):
        ok = v & (dev <= tol)
        clear_n += ok.reshape(n, -1).sum(axis=1)
        total += v[0].size
        for k in range(n):
            if ok[k].any():
                gm = gaussian_gradient_magnitude(np.where(v[k], g[k], np.median(g[k][v[k]]) if v[k].any() else 0.0)
                                                 .astype(np.float64), 1.0, mode="nearest")
                grad_sum[k] += gm[ok[k]].sum()
                grad_n[k] += ok[k].sum()
    clear = clear_n / max(total, 1)
    sharp = np.where(grad_n > 0, grad_sum / np.maximum(grad_n, 1), 0.0)
    best = float(clear.max())
    cand = np.flatnonzero(clear >= best - CLEAR_TIE)
    ref = int(cand[np.argmax(sharp[cand])])
    others = ", ".join(f"{k}: {clear[k]:.0%}" for k in range(n) if k != ref)
    reason = (f"automatic: {clear[ref]:.0%} of its pixels valid and agreeing with the other passes "
              f"(others {others})")
    if len(cand) > 1:
        reason += f"; sharpest of the {len(cand)} clearest"
    return ref, reason, clear
