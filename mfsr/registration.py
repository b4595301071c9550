"""Sub-pixel burst registration: coarse-to-fine tile alignment (HDR+ style).

Every frame is aligned to a reference on a grey *registration image* (the
2x2-binned mean of a CFA mosaic, the channel mean of RGB, or the grey frame
itself):

1. Gaussian-like pyramid with downsampling factors (1, 2, 4, 4) level to level
   (fewer levels for small images); the finest level is lightly blurred
   against noise.
2. Tile block matching from the coarsest level down. Finest level: 16 px
   tiles with stride 8 (overlapping), search radius 1, L1 cost; coarser
   levels: 8 px tiles side by side, radius 4, L2 cost. Each tile starts from
   the cheapest of three upsampled coarser displacements (the coarse tile
   nearest its centre and the next coarse tiles along y and x, as in HDR+).
   Tiles disagreeing with their 3x3 median by more than 1 px take it.
3. A few iterations of inverse-compositional Lucas-Kanade per finest tile for
   the sub-pixel translation (Keys cubic resampling); reference gradients and
   Hessians are computed once (:func:`prepare_reference`). Tiles whose
   predicted error is large (flat, noisy or mismatched) take their
   neighbours' motion; then point-symmetric neighbour averaging removes
   per-tile noise without biasing locally affine motion.
4. Bilinear interpolation of tile displacements between tile centres to a
   dense flow on the input pixel grid (:func:`dense_flow`).

Flow convention (docs/conventions.md): ``flow[k, i, j] = (dy, dx)`` means
the content of reference pixel ``(i, j)`` is found at ``(i + dy, j + dx)`` in
frame ``k``, in input-frame pixels; a raw mosaic pixel ``(y, x)`` lies at
registration coordinate ``((y - 0.5)/2, (x - 0.5)/2)``.

Fusion uses the streaming form: ``ref = prepare_reference(frames[r], cfa)``
once, then ``dense_flow(align_frame(ref, frame), frame.shape[:2])`` frame by
frame. :func:`register` does the whole burst at once.

References
----------
S. W. Hasinoff et al., "Burst photography for high dynamic range and low-light
imaging on mobile cameras", ACM TOG 35(6), 2016 (supplement: alignment).
B. Wronski et al., "Handheld Multi-Frame Super-Resolution", ACM TOG 38(4), 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .cfa import check_pattern
from .kernels.block_matching import block_match, reject_outliers
from .kernels.lucas_kanade import gradients, lk_refine, tile_hessians
from .kernels.pyramid import bin2x2, downsample, separable_blur
from .kernels.tile_interp import interpolate_tiles, smooth_tiles
from .validation import as_burst

__all__ = [
    "RegistrationParams",
    "TileGrid",
    "ReferencePyramid",
    "TileMotion",
    "registration_image",
    "prepare_reference",
    "align_frame",
    "dense_flow",
    "flow_irregularity",
    "register",
]


@dataclass(frozen=True)
class RegistrationParams:
    """Settings of the coarse-to-fine tile alignment.

    Attributes
    ----------
    tile_size : int
        Tile side at the finest level, registration px (even, >= 2). 16 suits
        clean bursts; 32 or 64 average more pixels in noisy ones. Images
        smaller than a tile use one tile as large as they allow.
    coarse_tile_size : int
        Tile side at the coarser levels (even, >= 2).
    coarse_stride : int or None
        Tile spacing at the coarser levels. None means one tile
        (non-overlapping): coarse levels only provide integer guesses and
        each fine tile weighs three coarse candidates, so overlapping coarse
        tiles (``coarse_tile_size // 2``) cost more without making the
        result more accurate.
    search_radius : int
        Integer search radius at the coarse levels (L2 cost). With the default
        factors the coarsest level alone reaches +-4 * 32 registration px.
    fine_search_radius : int
        Search radius at the finest level (L1 cost). When the pyramid has a
        single level, ``search_radius`` is used there instead.
    factors : tuple of int
        Downsampling factor of each level relative to the previous one; the
        first entry (the finest level relative to the registration image)
        must be 1.
    lk_iterations : int
        Maximum Lucas-Kanade iterations per tile (0 keeps block matching's
        integer displacements).
    lk_tolerance : float
        LK stops when its update is below this many registration px.
    lk_max_deviation : float
        A tile whose LK result moves more than this (registration px, per
        component) from its block-matching displacement keeps the latter.
    lk_interpolation : {"cubic", "linear"}
        How LK resamples the moving image. Keys cubic costs more than
        linear but removes most of linear's pull towards integer shifts on
        sharp or aliased images (such as 2x2-binned mosaics).
    lk_window : float
        Weighting of tile pixels in LK, from 0 (uniform) to 1 (a tent that
        falls to zero at the tile edges, the same tent that interpolates tile
        motion between centres). Higher values make each tile's estimate
        describe its centre better under rotation or zoom, at the price of
        some noise.
    max_uncertainty : float or None
        Tiles whose predicted LK standard deviation (registration px:
        residual variance over the Hessian's smaller eigenvalue, scaled up
        for the noise correlation the prefilter introduces) exceeds this
        take the mean motion of their certain neighbours, growing inwards
        into large flat, noisy or mismatched areas. None disables it.
    smoothing_radius : int
        Final tile displacements are averaged over point-symmetric pairs of
        tiles within this many tiles (:func:`mfsr.kernels.tile_interp.smooth_tiles`):
        unbiased for locally affine motion, it averages out the per-tile
        noise and aliasing errors. 0 disables it.
    smoothing_threshold : float
        Pairs with a tile differing by more than this (registration px)
        from the centre tile are left out of the average, so motion
        boundaries stay sharp.
    prefilter_sigma : float
        Gaussian blur (registration px) applied to the finest level before
        matching; it removes noise without biasing translations (blurring
        commutes with shifting). 0 disables it.
    outlier_threshold : float or None
        After block matching at each level, a tile whose displacement
        differs from the median of its 3x3 tile neighbourhood by more than
        this many pixels of that level (either component) takes the median:
        in flat or noisy tiles block matching picks near-random minima that
        would otherwise propagate down the pyramid. A moving object of about
        one tile gets its neighbours' motion (fusion's robustness then
        rejects it). None disables it.
    """

    tile_size: int = 16
    coarse_tile_size: int = 8
    coarse_stride: int | None = None
    search_radius: int = 4
    fine_search_radius: int = 1
    factors: tuple[int, ...] = (1, 2, 4, 4)
    lk_iterations: int = 3
    lk_tolerance: float = 0.01
    lk_max_deviation: float = 1.5
    lk_interpolation: str = "cubic"
    lk_window: float = 0.5
    max_uncertainty: float | None = 0.25
    smoothing_radius: int = 2
    smoothing_threshold: float = 0.5
    prefilter_sigma: float = 1.0
    outlier_threshold: float | None = 1.0

    def __post_init__(self) -> None:
        for name in ("tile_size", "coarse_tile_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2 or v % 2:
                raise ValueError(f"{name}: expected an even integer >= 2, got {v!r}")
        for name in ("search_radius", "fine_search_radius", "lk_iterations", "smoothing_radius"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
        cs = self.coarse_stride
        if cs is not None and (isinstance(cs, bool) or not isinstance(cs, (int, np.integer)) or cs < 1):
            raise ValueError(f"coarse_stride: expected an integer >= 1 or None, got {cs!r}")
        f = tuple(self.factors)
        if (
            len(f) == 0
            or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 for x in f)
            or f[0] != 1
        ):
            raise ValueError(
                f"factors: expected positive integers starting with 1, e.g. (1, 2, 4, 4), got {f!r}"
            )
        object.__setattr__(self, "factors", tuple(int(x) for x in f))
        if not (np.isfinite(self.lk_tolerance) and self.lk_tolerance > 0):
            raise ValueError(f"lk_tolerance: expected a number > 0, got {self.lk_tolerance!r}")
        if self.lk_interpolation not in ("cubic", "linear"):
            raise ValueError(
                f"lk_interpolation: expected 'cubic' or 'linear', got {self.lk_interpolation!r}"
            )
        if self.max_uncertainty is not None and not (
            np.isfinite(self.max_uncertainty) and self.max_uncertainty > 0
        ):
            raise ValueError(
                f"max_uncertainty: expected a number > 0 or None, got {self.max_uncertainty!r}"
            )
        if not (np.isfinite(self.smoothing_threshold) and self.smoothing_threshold > 0):
            raise ValueError(
                f"smoothing_threshold: expected a number > 0, got {self.smoothing_threshold!r}"
            )
        if not (np.isfinite(self.lk_window) and 0 <= self.lk_window <= 1):
            raise ValueError(f"lk_window: expected a number in [0, 1], got {self.lk_window!r}")
        if not (np.isfinite(self.prefilter_sigma) and self.prefilter_sigma >= 0):
            raise ValueError(
                f"prefilter_sigma: expected a number >= 0, got {self.prefilter_sigma!r}"
            )
        if self.outlier_threshold is not None and not (
            np.isfinite(self.outlier_threshold) and self.outlier_threshold > 0
        ):
            raise ValueError(
                f"outlier_threshold: expected a number > 0 or None, got {self.outlier_threshold!r}"
            )
        if not (np.isfinite(self.lk_max_deviation) and self.lk_max_deviation > 0):
            raise ValueError(
                f"lk_max_deviation: expected a number > 0, got {self.lk_max_deviation!r}"
            )


@dataclass(frozen=True)
class TileGrid:
    """Regular grid of square tiles (overlapping when stride < tile) lying
    inside one image.

    Tile ``(ti, tj)`` covers rows ``origin_y + ti*stride .. + tile - 1`` and
    columns ``origin_x + tj*stride .. + tile - 1``; the grid is centred so the
    uncovered margins (< stride) are shared equally by opposite borders.
    """

    origin_y: int
    origin_x: int
    stride: int
    tile: int
    n_ty: int
    n_tx: int

    @classmethod
    def fit(cls, shape: tuple[int, int], tile: int, stride: int | None = None) -> TileGrid:
        """Largest grid of ``tile``-sized tiles in ``shape``, spaced by
        ``stride`` (default ``tile // 2``); both shrink to fit small images."""
        h, w = shape
        tile = max(1, min(tile, h, w))
        stride = max(1, tile // 2) if stride is None else max(1, min(stride, tile))
        n_ty = (h - tile) // stride + 1
        n_tx = (w - tile) // stride + 1
        oy = (h - tile - (n_ty - 1) * stride) // 2
        ox = (w - tile - (n_tx - 1) * stride) // 2
        return cls(oy, ox, stride, tile, n_ty, n_tx)

    @property
    def centre0(self) -> tuple[float, float]:
        """Centre (y, x) of tile (0, 0), in pixels of its image."""
        c = (self.tile - 1) / 2
        return self.origin_y + c, self.origin_x + c


@dataclass
class ReferencePyramid:
    """Everything about the reference frame that aligning a frame reuses.

    Built by :func:`prepare_reference`; treat as read-only.

    Attributes
    ----------
    params : RegistrationParams
    cfa : str or None
    input_shape : tuple
        Shape of the reference frame as given ((H, W) or (H, W, 3)).
    levels : list of ndarray of float32
        Pyramid of the registration image, finest first.
    factors : tuple of int
        Downsampling factor of each level relative to the previous one.
    grids : list of TileGrid
        Tile grid of each level.
    grad_y, grad_x : ndarray of float32
        Gradients of the finest level.
    hessian : ndarray of float32, shape (TY, TX, 3)
        LK Hessian of every finest tile.
    window : ndarray of float32, shape (tile,)
        Separable LK pixel weights of a finest tile.
    """

    params: RegistrationParams
    cfa: str | None
    input_shape: tuple[int, ...]
    levels: list[np.ndarray]
    factors: tuple[int, ...]
    grids: list[TileGrid]
    grad_y: np.ndarray = field(repr=False)
    grad_x: np.ndarray = field(repr=False)
    hessian: np.ndarray = field(repr=False)
    window: np.ndarray = field(repr=False)

    @property
    def grid_factor(self) -> int:
        """Input pixels per registration pixel: 2 for a CFA mosaic, else 1."""
        return 2 if self.cfa is not None else 1


@dataclass
class TileMotion:
    """Motion of one frame relative to the reference, per finest tile.

    Attributes
    ----------
    centre_y, centre_x : float
        Centre of tile (0, 0), registration-image px.
    stride : int
        Spacing of tile centres, registration-image px.
    tile_size : int
        Tile side, registration-image px.
    grid_factor : int
        Input pixels per registration pixel (2 for CFA, else 1).
    displacements : ndarray of float32, shape (TY, TX, 2)
        (dy, dx) per tile in registration-image px: the content of the
        reference tile is found displaced by (dy, dx) in the frame.
    uncertainty : ndarray of float32, shape (TY, TX), or None
        Predicted standard deviation of each tile's own LK estimate,
        registration px (infinite where LK could not run: flat tiles, a
        single edge, divergence). Tiles above ``max_uncertainty`` carry
        their neighbours' motion in ``displacements``. None without LK.
    """

    centre_y: float
    centre_x: float
    stride: int
    tile_size: int
    grid_factor: int
    displacements: np.ndarray
    uncertainty: np.ndarray | None = None

    @property
    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile-centre coordinates along y (TY,) and x (TX,), registration px."""
        ty, tx = self.displacements.shape[:2]
        return (
            self.centre_y + self.stride * np.arange(ty, dtype=np.float64),
            self.centre_x + self.stride * np.arange(tx, dtype=np.float64),
        )


def registration_image(frame: np.ndarray, cfa: str | None) -> np.ndarray:
    """Grey image that registration works on.

    Parameters
    ----------
    frame : ndarray, shape (H, W) or (H, W, 3)
        CFA mosaic (with ``cfa``), grey frame, or RGB frame; linear values.
    cfa : str or None
        Bayer pattern of a mosaic, or None.

    Returns
    -------
    grey : ndarray of float32
        Mosaic: (H // 2, W // 2), the mean of each 2x2 cell (pixel (i, j)
        centred at raw coordinate (2i + 0.5, 2j + 0.5)). RGB: (H, W), the
        channel mean. Grey: the frame itself as float32.
    """
    frame = np.asarray(frame)
    if cfa is not None:
        check_pattern(cfa)
        if frame.ndim != 2:
            raise ValueError(f"frame: a CFA mosaic must be (H, W), got shape {frame.shape}")
        if frame.shape[0] < 2 or frame.shape[1] < 2:
            raise ValueError(f"frame: a CFA mosaic needs at least 2x2 samples, got {frame.shape}")
        return bin2x2(np.ascontiguousarray(frame, dtype=np.float32))
    if frame.ndim == 3 and frame.shape[2] == 3:
        return np.ascontiguousarray(frame.mean(axis=2, dtype=np.float32))
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, dtype=np.float32)
    raise ValueError(f"frame: expected shape (H, W) or (H, W, 3), got {frame.shape}")


def _gaussian_taps(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (t / t.sum()).astype(np.float32)


def _lk_window(tile: int, strength: float) -> np.ndarray:
    # Blend of uniform weights and a tent reaching zero half a pixel beyond
    # the tile edges.
    u = (np.arange(tile) - (tile - 1) / 2) / (tile / 2)
    return ((1 - strength) + strength * (1 - np.abs(u))).astype(np.float32)


def _n_levels(shape: tuple[int, int], params: RegistrationParams) -> int:
    # A coarser level is kept only while it still holds at least 3x3 coarse
    # tiles; below that block matching has too little context to be useful.
    h, w = shape
    n = 1
    for f in params.factors[1:]:
        if min(h // f, w // f) < 2 * params.coarse_tile_size:
            break
        h, w = h // f, w // f
        n += 1
    return n


def _pyramid(grey: np.ndarray, params: RegistrationParams, n_levels: int) -> list[np.ndarray]:
    """Finest (prefiltered) level first, then ``n_levels - 1`` coarser ones."""
    if params.prefilter_sigma > 0:
        grey = separable_blur(grey, _gaussian_taps(params.prefilter_sigma))
    levels = [grey]
    for f in params.factors[1:n_levels]:
        levels.append(downsample(levels[-1], f))
    return levels


def _fill_uncertain(disp: np.ndarray, sd: np.ndarray, threshold: float | None) -> np.ndarray:
    """Give tiles whose LK uncertainty exceeds ``threshold`` the mean motion
    of their certain 3x3 neighbours, growing inwards pass by pass.

    Flat or very noisy tiles carry no motion information; taking their
    surroundings' motion keeps the flow (and fusion's flow-irregularity
    measure) smooth there instead of noisy.
    """
    if threshold is None:
        return disp
    from scipy.ndimage import uniform_filter

    good = sd <= threshold
    if good.all() or not good.any():
        return disp
    out = disp.copy()
    for _ in range(max(disp.shape[:2])):
        wgt = good.astype(np.float32)
        den = uniform_filter(wgt, size=3, mode="constant")
        grow = ~good & (den > 0)
        if not grow.any():
            break
        for c in range(2):
            num = uniform_filter(out[..., c] * wgt, size=3, mode="constant")
            out[..., c][grow] = num[grow] / den[grow]
        good = good | grow
    return out


def _prior_at_tiles(prior: np.ndarray, reference: ReferencePyramid) -> np.ndarray:
    """A dense input-px flow sampled (bilinearly) at the finest tile centres,
    in registration px: (TY, TX, 2) float32."""
    prior = np.asarray(prior)
    h, w = reference.input_shape[:2]
    if prior.shape != (h, w, 2):
        raise ValueError(f"prior: expected shape {(h, w, 2)} (H, W, 2), got {prior.shape}")
    if not np.isfinite(prior).all():
        raise ValueError("prior: NaN or infinite values")
    from scipy.ndimage import map_coordinates

    g = reference.grids[0]
    f = reference.grid_factor
    cy, cx = g.centre0
    yy, xx = np.meshgrid(
        f * (cy + g.stride * np.arange(g.n_ty) + 0.5) - 0.5,
        f * (cx + g.stride * np.arange(g.n_tx) + 0.5) - 0.5,
        indexing="ij",
    )
    out = np.empty((g.n_ty, g.n_tx, 2), np.float32)
    for c in range(2):
        out[..., c] = map_coordinates(prior[..., c].astype(np.float64), [yy, xx], order=1, mode="nearest") / f
    return out


def _reject_outliers(disp: np.ndarray, threshold: float | None) -> np.ndarray:
    """Replace tiles deviating from their 3x3 median by more than ``threshold``."""
    if threshold is None or min(disp.shape[:2]) < 2:
        return disp
    return reject_outliers(disp, float(threshold))


def prepare_reference(
    reference_frame: np.ndarray,
    cfa: str | None = None,
    params: RegistrationParams | None = None,
) -> ReferencePyramid:
    """Precompute the reference pyramid, tile grids and LK Hessians.

    Parameters
    ----------
    reference_frame : ndarray, shape (H, W) or (H, W, 3)
        The reference frame as the user gives it (mosaic, grey or RGB).
    cfa : str or None
        Bayer pattern when ``reference_frame`` is a mosaic.
    params : RegistrationParams, optional

    Returns
    -------
    ReferencePyramid
    """
    params = RegistrationParams() if params is None else params
    if not isinstance(params, RegistrationParams):
        raise TypeError(f"params: expected RegistrationParams, got {type(params).__name__}")
    cfa = None if cfa is None else check_pattern(cfa)
    frame = np.asarray(reference_frame)
    grey = registration_image(frame, cfa)
    n_levels = _n_levels(grey.shape, params)
    levels = _pyramid(grey, params, n_levels)
    factors = params.factors[:n_levels]
    grids = [
        TileGrid.fit(lv.shape, params.tile_size)
        if i == 0
        else TileGrid.fit(
            lv.shape,
            params.coarse_tile_size,
            params.coarse_tile_size if params.coarse_stride is None else params.coarse_stride,
        )
        for i, lv in enumerate(levels)
    ]
    gy, gx = gradients(levels[0])
    g0 = grids[0]
    window = _lk_window(g0.tile, params.lk_window)
    hess = tile_hessians(
        gy, gx, g0.origin_y, g0.origin_x, g0.stride, g0.tile, g0.n_ty, g0.n_tx, window
    )
    return ReferencePyramid(
        params=params,
        cfa=cfa,
        input_shape=tuple(frame.shape),
        levels=levels,
        factors=factors,
        grids=grids,
        grad_y=gy,
        grad_x=gx,
        hessian=hess,
        window=window,
    )


def _candidates(
    coarse_disp: np.ndarray, coarse: TileGrid, fine: TileGrid, factor: int
) -> np.ndarray:
    """Three integer displacement guesses per fine tile from the coarser level.

    For each fine tile, the fine-grid centre is mapped to the coarse grid
    (``u = (y + 0.5)/factor - 0.5``); the guesses are the upsampled
    displacements (``factor * d``) of the nearest coarse tile, of its
    neighbour along y on the side of the centre, and of its neighbour along
    x on that side (HDR+ evaluates such candidates because a tile straddling a
    motion boundary may follow either side).

    Returns
    -------
    candidates : ndarray of int32, shape (fine.n_ty, fine.n_tx, 3, 2)
    """

    def nearest(n_fine: int, c_fine: float, c_coarse: float, n_coarse: int):
        centres = c_fine + fine.stride * np.arange(n_fine)
        g = ((centres + 0.5) / factor - 0.5 - c_coarse) / coarse.stride
        i0 = np.clip(np.rint(g), 0, n_coarse - 1).astype(np.intp)
        i1 = np.clip(i0 + np.where(g >= i0, 1, -1), 0, n_coarse - 1)
        return i0, i1

    fcy, fcx = fine.centre0
    ccy, ccx = coarse.centre0
    y0, y1 = nearest(fine.n_ty, fcy, ccy, coarse.n_ty)
    x0, x1 = nearest(fine.n_tx, fcx, ccx, coarse.n_tx)
    d = coarse_disp.astype(np.int32) * np.int32(factor)
    cand = np.empty((fine.n_ty, fine.n_tx, 3, 2), np.int32)
    cand[:, :, 0] = d[y0[:, None], x0[None, :]]
    cand[:, :, 1] = d[y1[:, None], x0[None, :]]
    cand[:, :, 2] = d[y0[:, None], x1[None, :]]
    return cand


def align_frame(
    reference: ReferencePyramid, frame: np.ndarray, prior: np.ndarray | None = None
) -> TileMotion:
    """Tile motion of one frame relative to the prepared reference.

    Parameters
    ----------
    reference : ReferencePyramid
        From :func:`prepare_reference`.
    frame : ndarray
        Frame of the same shape and kind as the reference frame (mosaic,
        grey or RGB), linear float values.
    prior : ndarray of float, shape (H, W, 2), optional
        Known part of the flow on the input grid (input px, flow convention
        of docs/conventions.md), e.g. a global transform's
        (:mod:`mfsr.geometry`). The coarse levels are then skipped: each finest tile starts from the
        prior at its centre, block matching searches
        ``fine_search_radius`` integer px around it and Lucas-Kanade refines
        from there on the frame itself (no resampling), so only the
        residual is searched for. Neighbour filling of uncertain tiles and
        the smoothing act on the residual, so flat or noisy tiles follow the
        prior.

    Returns
    -------
    TileMotion
        Sub-pixel displacement of every finest tile; see :func:`dense_flow`.
        With ``prior`` the displacements are the *residual* (total minus
        the prior at the tile centres): the dense flow is ``prior +
        dense_flow(motion, shape)``.
    """
    if not isinstance(reference, ReferencePyramid):
        raise TypeError(
            f"reference: expected a ReferencePyramid from prepare_reference, "
            f"got {type(reference).__name__}"
        )
    frame = np.asarray(frame)
    if tuple(frame.shape) != reference.input_shape:
        raise ValueError(
            f"frame: shape {frame.shape} differs from the reference frame shape "
            f"{reference.input_shape}"
        )
    p = reference.params
    grey = registration_image(frame, reference.cfa)
    prior_tiles = None
    if prior is not None:
        prior_tiles = _prior_at_tiles(prior, reference)
        n_levels = 1
        levels = _pyramid(grey, p, 1)
        g = reference.grids[0]
        base = np.rint(prior_tiles).astype(np.int32)
        disp, _ = block_match(
            reference.levels[0], levels[0], g.origin_y, g.origin_x, g.stride, g.tile,
            np.ascontiguousarray(base[:, :, None, :]), p.fine_search_radius, True,
        )
        corr = _reject_outliers((disp - base).astype(np.int32), p.outlier_threshold)
        # start LK from the prior plus the integer correction block matching found
        disp = prior_tiles + corr
    else:
        n_levels = len(reference.levels)
        levels = _pyramid(grey, p, n_levels)
        disp = None
    for lv in range(n_levels - 1, -1, -1):
        if prior_tiles is not None:
            break
        g = reference.grids[lv]
        if disp is None:
            cand = np.zeros((g.n_ty, g.n_tx, 1, 2), np.int32)
        else:
            cand = _candidates(disp, reference.grids[lv + 1], g, reference.factors[lv + 1])
        finest = lv == 0
        radius = p.fine_search_radius if (finest and n_levels > 1) else p.search_radius
        disp, _ = block_match(
            reference.levels[lv], levels[lv], g.origin_y, g.origin_x, g.stride, g.tile,
            cand, radius, finest,
        )
        disp = _reject_outliers(disp, p.outlier_threshold)

    g = reference.grids[0]
    init = disp.astype(np.float32)
    if p.lk_iterations > 0:
        sub, sd = lk_refine(
            reference.levels[0], reference.grad_y, reference.grad_x, reference.hessian,
            levels[0], g.origin_y, g.origin_x, g.stride, g.tile, init,
            p.lk_iterations, p.lk_tolerance, p.lk_max_deviation,
            3 if p.lk_interpolation == "cubic" else 1, reference.window,
        )
        # The prefilter correlates the noise over ~4 pi sigma^2 pixels, so
        # the residual variance understates the white-noise variance that
        # drives the estimate's error by that factor.
        sd *= np.float32(max(1.0, np.sqrt(4 * np.pi) * p.prefilter_sigma))
        if prior_tiles is not None:
            sub = sub - prior_tiles
        sub = _fill_uncertain(sub, sd, p.max_uncertainty)
        if p.smoothing_radius > 0:
            sub = smooth_tiles(np.ascontiguousarray(sub, dtype=np.float32), p.smoothing_radius,
                               p.smoothing_threshold)
    else:
        sub, sd = init, None
        if prior_tiles is not None:
            sub = sub - prior_tiles
    cy, cx = g.centre0
    return TileMotion(
        centre_y=cy,
        centre_x=cx,
        stride=g.stride,
        tile_size=g.tile,
        grid_factor=reference.grid_factor,
        displacements=sub,
        uncertainty=sd,
    )


def dense_flow(
    motion: TileMotion, shape: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """Per-pixel flow of the input frame from tile motion.

    Parameters
    ----------
    motion : TileMotion
    shape : (int, int)
        (H, W) of the input frame (the mosaic for CFA input).
    out : ndarray of float32, shape (H, W, 2), optional
        C-contiguous buffer to write into (reusing one across frames saves
        allocating and page-faulting a full-size flow per frame).

    Returns
    -------
    flow : ndarray of float32, shape (H, W, 2)
        (dy, dx) in input px: bilinear between tile centres, constant beyond
        the outermost ones. ``out`` when it was given.
    """
    h, w = (int(s) for s in shape[:2])
    if out is None:
        out = np.empty((h, w, 2), np.float32)
    elif (
        not isinstance(out, np.ndarray)
        or out.shape != (h, w, 2)
        or out.dtype != np.float32
        or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"out: expected a C-contiguous float32 array of shape {(h, w, 2)}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    d = np.ascontiguousarray(motion.displacements, dtype=np.float32)
    interpolate_tiles(
        d, float(motion.centre_y), float(motion.centre_x), float(motion.stride),
        int(motion.grid_factor), float(motion.grid_factor), out,
    )
    return out


def flow_irregularity(motion: TileMotion) -> np.ndarray:
    """Local spread of tile motion, for fusion's robustness.

    Returns
    -------
    spread : ndarray of float32, shape (TY, TX)
        For each tile, max - min of its 3x3 tile neighbourhood's
        displacements (neighbourhood clipped at the grid edges), the larger
        of the dy and dx spreads, in input px. Wronski et al. lower the
        robustness scale where this exceeds about 0.8 px.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    d = motion.displacements
    size = (3, 3, 1)
    spread = maximum_filter(d, size=size, mode="nearest") - minimum_filter(
        d, size=size, mode="nearest"
    )
    return (spread.max(axis=2) * motion.grid_factor).astype(np.float32)


def register(
    frames: np.ndarray | Sequence[np.ndarray],
    *,
    cfa: str | None = None,
    reference: int = 0,
    params: RegistrationParams | None = None,
) -> np.ndarray:
    """Dense flow of every frame of a burst relative to the reference frame.

    Parameters
    ----------
    frames : ndarray or sequence of ndarray
        (N, H, W) grey or CFA mosaics, or (N, H, W, 3) RGB; linear float.
    cfa : str or None
        Bayer pattern of mosaic input.
    reference : int
        Index of the reference frame (negative counts from the end).
    params : RegistrationParams, optional

    Returns
    -------
    flow : ndarray of float32, shape (N, H, W, 2)
        ``flow[k, i, j] = (dy, dx)``: the content of reference pixel (i, j)
        is at (i + dy, j + dx) in frame k, input px; zero for the reference.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.ndimage import gaussian_filter, shift
    >>> rng = np.random.default_rng(0)
    >>> ref = gaussian_filter(rng.random((64, 64)), 2).astype(np.float32)
    >>> moved = shift(ref, (1.4, -0.6), mode="nearest").astype(np.float32)
    >>> flow = register([ref, moved])
    >>> np.round(np.median(flow[1, 16:-16, 16:-16], axis=(0, 1)), 1)
    array([ 1.4, -0.6], dtype=float32)
    """
    burst, cfa, reference = as_burst(frames, cfa, reference)
    n, h, w = burst.shape[:3]
    flow = np.zeros((n, h, w, 2), np.float32)
    if n == 1:
        return flow
    ref = prepare_reference(burst[reference], cfa, params)
    for k in range(n):
        if k != reference:
            dense_flow(align_frame(ref, burst[k]), (h, w), out=flow[k])
    return flow
