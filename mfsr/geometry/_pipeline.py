"""Global geometry inside the fusion pipeline: estimate, register the residual, compose.

For every frame ``k`` a global map ``M_k`` from (rectified) reference pixels
to frame pixels is estimated first: ``M_k = L_k o H_k`` with ``H_k`` the
global transform and ``L_k`` the known lens (``distortion=`` coefficients,
then ``H_k`` acts on rectified coordinates), a relative radial distortion
(``distortion="estimate"``) or nothing. The local tile registration then
starts every tile from ``M_k`` (:func:`mfsr.registration.align_frame` with
``prior=``) and finds only the residual ``r_k`` on the frame itself -- no
frame is resampled for registration (resampling one image and not the other
biases the residual on aliased frames). Residual tiles
within their own noise are shrunk towards the global model
(``GeometryParams.residual_shrinkage``). Without a known lens the flow
fusion uses is, on the reference grid::

    flow_k(p) = M_k(p) - p + r_k(p)        (input px, convention of docs/conventions.md)

With a known lens the output grid is the *rectified* reference geometry: the
flow ``G_k`` found on the (distorted) reference grid is carried to it through
the lens ``D``::

    flow_k(u) = D(u) + G_k(D(u)) - u

so the reference's own flow is ``D(u) - u`` (nonzero), and the robustness
guide and the low-weight fallback of the fusion use the reference resampled
onto the rectified grid. Either way fusion resamples every frame once, from
its original samples.

For CFA input registration works on the 2x2-binned grey (grey pixel ``i``
centred at raw coordinate ``2 i + 0.5``); all maps, transforms and flows are
in raw px.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from kornia.geometry.transform import remap

from ..cfa import demosaic_bilinear, mosaic
from ..registration import align_frame, dense_flow, flow_irregularity, prepare_reference, registration_image
from ._estimate import (
    FrameMap,
    GeometryParams,
    fit_transform,
    refine_photometric,
    single_torch_thread,
    tile_matches,
)
from ._lens import BrownConrady, check_distortion
from ._reliability import UnreliableTransformWarning, assess_transform, check_simplification, unassessed
from ._warp import MODELS, check_model, check_transform, pixel_grid

__all__ = ["GlobalGeometry", "check_geometry_args", "global_registration", "resample"]


@dataclass
class GlobalGeometry:
    """What :func:`global_registration` returns to the fusion.

    Attributes
    ----------
    flows : ndarray of float32, shape (N, H, W, 2)
        Composed flows (global map and local residual), input px.
    spreads : list
        Per frame ``(flow_irregularity, TileMotion)`` of the *residual*
        registration (None for the reference).
    transforms : ndarray of float64, shape (N, 3, 3), or None
        ``H_k`` (rectified coordinates with a known lens).
    distortion : ndarray of float64, shape (N, 5), or None
        Lens coefficients of each frame: the known lens, or the estimated
        relative radial distortion (zero for the reference).
    reference_frame : ndarray of float32 or None
        The reference frame resampled onto the rectified grid (same layout
        as the input frame; a re-mosaiced image for CFA), None without a
        known lens.
    transform_uncertainty : ndarray of float64, shape (N,), or None
        Corner uncertainty of the model each frame reports in
        ``transforms``, input px (:class:`TransformUncertainty`; 0 for the
        reference); for a frame on the local registration alone, that of
        the requested model's estimate (``inf`` where none could be
        fitted). None without a global model.
    transform_reliable : ndarray of bool, shape (N,), or None
        Whether each frame's reported model is reliable (True for the
        reference). With ``GeometryParams.fallback`` a frame whose requested
        model is not reports the first reliable simpler model
        (``transform_models``), else the unreliable estimate it started its
        local registration from (``start_from_unreliable``, flagged False),
        else the identity (the local registration alone, False too; its
        ``distortion`` the known lens or zero).
    uncertainties : list of (TransformUncertainty or None), length N, or None
        The full assessment of each frame's reported model (of the
        requested model's estimate for an identity; None for the
        reference).
    transform_models : tuple of str, length N, or None
        The model each frame's ``transforms`` entry is: the requested one,
        a simpler one of the fallback chain, or ``"identity"`` for the
        local registration alone (the requested model for the reference).
    attempts : list, length N, or None
        Per frame (None for the reference), every model tried in order, the
        requested one first: ``(model, FrameMap, theta or None,
        TransformUncertainty)``.
    """

    flows: np.ndarray
    spreads: list
    transforms: np.ndarray | None
    distortion: np.ndarray | None
    reference_frame: np.ndarray | None
    transform_uncertainty: np.ndarray | None = None
    transform_reliable: np.ndarray | None = None
    uncertainties: list | None = None
    transform_models: tuple | None = None
    attempts: list | None = None


def check_geometry_args(geometry, distortion, shape) -> tuple[str | None, str | None, tuple | None]:
    """Validate ``fuse``'s ``geometry`` and ``distortion``.

    Returns ``(model, mode, lens)``: the model name or None, ``"estimate"``,
    ``"known"`` or None, and ``(coeffs (5,), K)`` for a known lens.
    """
    model = None if geometry is None else check_model(geometry, "geometry")
    if distortion is None:
        return model, None, None
    if isinstance(distortion, str):
        if distortion != "estimate":
            raise ValueError(
                f"distortion: expected None, 'estimate' or Brown-Conrady coefficients, got {distortion!r}"
            )
        return model, "estimate", None
    c, K = check_distortion(distortion, shape, None, "distortion")
    return model, "known", (c, K)


def resample(image: np.ndarray, fn, grid_factor: int, mode: str = "bicubic") -> np.ndarray:
    """Sample an image at mapped positions: ``out(i) = image(fn(P(i)))``.

    Parameters
    ----------
    image : ndarray of float32, shape (h, w) or (h, w, C)
        Pixel ``i`` centred at input coordinate ``grid_factor * (i + 0.5) - 0.5``.
    fn : callable
        (M, 2) float64 ``(x, y)`` input px tensor -> (M, 2) input px.
    grid_factor : int
    mode : str
        ``grid_sample`` interpolation.

    Returns
    -------
    ndarray of float32, same shape as ``image`` (borders replicated).
    """
    img = np.asarray(image, np.float32)
    chans = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
    h, w = chans.shape[-2:]
    out = np.empty_like(chans)
    rows = max(1, (1 << 20) // w)
    t = torch.as_tensor(np.ascontiguousarray(chans))[None]
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        ys = grid_factor * (torch.arange(r0, r1, dtype=torch.float64) + 0.5) - 0.5
        xs = grid_factor * (torch.arange(w, dtype=torch.float64) + 0.5) - 0.5
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        with torch.no_grad():
            q = fn(torch.stack([xx, yy], -1).reshape(-1, 2))
        q = (q + 0.5) / grid_factor - 0.5
        mx = q[:, 0].reshape(1, r1 - r0, w).float()
        my = q[:, 1].reshape(1, r1 - r0, w).float()
        with torch.no_grad():
            out[:, r0:r1] = remap(t, mx, my, mode=mode, padding_mode="border", align_corners=True)[0].numpy()
    return out[0] if img.ndim == 2 else np.moveaxis(out, 0, -1).copy()


def _compose(fn, residual: np.ndarray | None, out: np.ndarray) -> None:
    """``out(p) = fn(p + r(p)) - p`` on the input grid, (dy, dx) order."""
    h, w = out.shape[:2]
    rows = max(1, (1 << 20) // w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        yy, xx = np.meshgrid(
            np.arange(r0, r1, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
        )
        py, px = yy, xx
        if residual is not None:
            py = yy + residual[r0:r1, :, 0]
            px = xx + residual[r0:r1, :, 1]
        with torch.no_grad():
            q = fn(torch.as_tensor(np.stack([px, py], -1).reshape(-1, 2))).numpy()
        out[r0:r1, :, 0] = q[:, 1].reshape(r1 - r0, w) - yy
        out[r0:r1, :, 1] = q[:, 0].reshape(r1 - r0, w) - xx


def _photometric_image(frame: np.ndarray, cfa: str | None, full: bool = True) -> np.ndarray:
    """Grey image for the photometric refinement: for a mosaic, the mean of a
    bilinear demosaic at raw resolution (``full``) or the 2x2-binned grey."""
    if cfa is not None and full:
        return np.ascontiguousarray(demosaic_bilinear(frame, cfa).mean(axis=-1), dtype=np.float32)
    return registration_image(frame, cfa)


def _dense(fn, shape) -> np.ndarray:
    """``fn(p) - p`` on the input grid: (H, W, 2) float32, (dy, dx)."""
    out = np.empty((*shape, 2), np.float32)
    _compose(fn, None, out)
    return out


def _sample_flow(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples (M, 2) (dy, dx) of a flow at (M, 2) (x, y) input px."""
    from scipy.ndimage import map_coordinates

    return np.stack(
        [map_coordinates(flow[..., c], [pts[:, 1], pts[:, 0]], order=1, mode="nearest") for c in range(2)], 1
    )


def global_registration(
    burst: np.ndarray,
    cfa: str | None,
    reference: int,
    geometry,
    distortion,
    registration=None,
    params: GeometryParams | None = None,
    frames=None,
) -> GlobalGeometry:
    """Global model, residual registration and composed flow of every frame.

    Parameters
    ----------
    burst : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
        Validated burst (:func:`mfsr.validation.as_burst`).
    cfa : str or None
    reference : int
    geometry : {None, "translation", "similarity", "affine", "homography"}
    distortion : None, sequence of float or "estimate"
        See :func:`mfsr.fuse`. ``"estimate"`` without ``geometry`` uses a
        homography: breathing changes the magnification too, and a model
        without the hand's perspective change lets the radial term absorb
        that change, which biases the estimated k1.
    registration : RegistrationParams, optional
    params : GeometryParams, optional
    frames : iterable of int, optional
        Frame order (e.g. a progress bar over ``range(N)``).

    Returns
    -------
    GlobalGeometry

    Warns
    -----
    UnreliableTransformWarning
        When a frame's requested model is unreliable, naming the frames,
        their corner uncertainty and why, and (with
        ``GeometryParams.fallback``) what each fell back to: a reliable
        simpler model, the unreliable estimate as the start of its local
        registration, or the local registration alone.

    Raises
    ------
    ValueError
        With ``GeometryParams(fallback=False)``: a frame whose model cannot
        be fitted or is degenerate (``geometry``).

    Notes
    -----
    Per frame: (1) tile registration of the frame to the reference, (2) a
    robust fit of the global map to the tile motion (tile centres and their
    displaced positions undistorted first with a known lens, so ``H`` lives
    in rectified coordinates), (3) photometric refinement of the map on the
    reference's own pixels, with its covariance, (4) the reliability of the
    model (:func:`mfsr.geometry.assess_transform`: corner uncertainty and
    model checks), (5) a second tile registration that starts
    every tile from the global map (``align_frame(..., prior=...)``) and
    finds the residual on the original frame, without resampling it, and
    (6) the composition. Without a known lens the flow is ``prior +
    residual`` on the reference grid. With one, the flow ``G`` found on the
    (distorted) reference grid is carried to the rectified output grid:
    ``flow(u) = D(u) + G(D(u)) - u`` (``G`` sampled bilinearly).

    A frame whose requested model is unreliable falls back
    (``GeometryParams.fallback``), in this order:

    1. the fallback chain (``fallback_chain``): the simpler models below the
       requested one (affine, similarity, translation), each fitted to the
       same tile matches of step (1) and refined as in steps (2) to (4);
       the first reliable one is used and reported. Reliable includes
       agreeing with every richer estimate at the corners within what that
       estimate resolves (:func:`mfsr.geometry.check_simplification`): a
       simpler model's small uncertainty does not cover the motion it
       cannot represent.
    2. otherwise (``start_from_unreliable="if better"``, the default) the
       requested model's estimate, unless degenerate, still starts the
       local registration of step (5), which corrects it where the tiles
       find texture, and that flow is kept where it aligns the frame with
       the reference significantly better than the local registration
       alone (:func:`_aligns_better`: mean absolute photometric residual,
       two block-robust standard errors). The frame's ``transforms`` entry
       is then that estimate, flagged unreliable (``transform_reliable``
       False, ``transform_models`` the requested model): the flow is
       ``transforms[k](p) - p + residual(p)`` exactly as for a reliable
       frame, but the estimate itself may be several px off and is not a
       geometry to use. ``"always"`` keeps that flow regardless.
    3. otherwise what the fusion does without ``geometry=``: the flow of
       step (1)'s tile motion alone, or with a known lens the lens map plus
       a residual registration (``transform_models`` ``"identity"``, the
       identity transform, flagged unreliable).

    So every transform reported reliable passed its own checks, and none
    reported unreliable is silent (the warning names it). Where the tiles
    find too little texture the estimate, though off at the corners, often
    fuses better than the tile motion alone, which is why step 2 exists;
    benchmarks/RESULTS.md measures every step. ``fallback=False`` uses the
    requested estimate whatever its reliability.
    """
    params = GeometryParams() if params is None else params
    with single_torch_thread():
        out = _global_registration(burst, cfa, reference, geometry, distortion, registration, params, frames)
    if out.transform_reliable is not None:
        msg = _unreliable_message(out, params)
        if msg:
            warnings.warn(msg, UnreliableTransformWarning, stacklevel=2)
    return out


def _frames(ks) -> str:
    return ("frame " if len(ks) == 1 else "frames ") + ", ".join(str(k) for k in ks)


def _unreliable_message(out: GlobalGeometry, params: GeometryParams) -> str:
    """The warning naming every frame whose requested model was unreliable
    and what it fell back to ("" when there is none)."""
    n = len(out.transform_models)
    bad = [k for k in range(n) if out.attempts[k] is not None and not out.attempts[k][0][3].reliable]
    if not bad:
        return ""
    model = out.attempts[bad[0]][0][0]
    what = "; ".join(f"frame {k}: {out.attempts[k][0][3].reason}" for k in bad)
    if not params.fallback:
        then = "the estimates are used anyway (GeometryParams.fallback=False)"
    else:
        groups: dict = {}
        for k in bad:
            groups.setdefault(out.transform_models[k], []).append(k)
        parts = []
        for name, ks in groups.items():
            one = len(ks) == 1
            if name == "identity":
                tried = any(len(out.attempts[k]) > 1 for k in ks)
                parts.append(f"{_frames(ks)} {'uses' if one else 'use'} the local registration alone (identity "
                             "global model" + ("; no simpler model was reliable either)" if tried else ")"))
            elif name == model:
                parts.append(f"{_frames(ks)} {'starts' if one else 'start'} the local registration from the "
                             f"unreliable {model}, reported as unreliable")
            else:
                parts.append(f"{_frames(ks)} {'falls' if one else 'fall'} back to a reliable {name}")
        then = "; ".join(parts)
    return (f"geometry: the {model} estimated for {len(bad)} of {n - 1} frames is unreliable ({what}); "
            f"{then}. FusionResult.transform_models, transform_reliable and transform_uncertainty give every "
            "frame's model, flag and corner uncertainty (input px)")


def _global_registration(burst, cfa, reference, geometry, distortion, registration, params, frames):
    n, h, w = burst.shape[:3]
    model, mode, lens = check_geometry_args(geometry, distortion, (h, w))
    if mode == "estimate" and model is None:
        model = "homography"
    g = 2 if cfa is not None else 1
    fmap = None
    if model is not None:
        fmap = FrameMap(model, (h, w), lens=lens, radial=(mode == "estimate"))
    lens_map = None if lens is None else FrameMap("translation", (h, w), lens=lens)
    bc = None if lens is None else BrownConrady(lens[0], (h, w), lens[1], check=False)
    zero = torch.zeros(2, dtype=torch.float64)

    ref_grey = _photometric_image(burst[reference], cfa, params.photometric_full_resolution)
    gp = 1 if (cfa is not None and params.photometric_full_resolution) else g
    ref_pyr = prepare_reference(burst[reference], cfa, registration)
    undist = None  # undistorted position of every reference pixel (x, y), input px
    if bc is not None:
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        with torch.no_grad():
            undist = bc.undistort_points(torch.as_tensor(np.stack([xx, yy], -1).reshape(-1, 2)))

    flows = np.zeros((n, h, w, 2), np.float32)
    spreads: list = [None] * n
    transforms = np.tile(np.eye(3), (n, 1, 1)) if fmap is not None else None
    uncert = np.zeros(n) if fmap is not None else None
    reliable = np.ones(n, bool) if fmap is not None else None
    assessed: list = [None] * n
    attempts: list = [None] * n
    names = [model if fmap is not None else None] * n
    ref_full = None  # the reference's raw-resolution grey, for _aligns_better
    coeffs = None
    if mode == "known":
        coeffs = np.tile(lens[0], (n, 1))
    elif mode == "estimate":
        coeffs = np.zeros((n, 5))
    # rectified output grid: D(u) for every output pixel u
    dist_pts = None if lens_map is None else lens_map.apply(zero, _grid_points(h, w)).numpy()
    for k in range(n) if frames is None else frames:
        if k == reference:
            if dist_pts is not None:
                flows[k, ..., 0] = (dist_pts[:, 1] - _grid_points(h, w)[:, 1].numpy()).reshape(h, w)
                flows[k, ..., 1] = (dist_pts[:, 0] - _grid_points(h, w)[:, 0].numpy()).reshape(h, w)
            continue

        def residual(fn):
            """Local registration started from ``fn``: (TileMotion, flow on the reference grid)."""
            # prior on the reference's own grid: p -> fn(U(p)) with a lens
            if undist is None:
                prior = _dense(fn, (h, w))
            else:
                with torch.no_grad():
                    q = fn(undist).numpy()
                pts = _grid_points(h, w).numpy()
                prior = np.ascontiguousarray(np.stack([q[:, 1] - pts[:, 1], q[:, 0] - pts[:, 0]], -1)
                                             .reshape(h, w, 2), dtype=np.float32)
            mo = _shrink(align_frame(ref_pyr, burst[k], prior=prior), params.residual_shrinkage)
            return mo, prior + dense_flow(mo, (h, w))

        def without_model(motion):
            """What the fusion does without geometry=: the plain tile motion,
            or with a known lens the lens map plus a residual registration."""
            if lens_map is None:
                return motion, dense_flow(motion, (h, w))
            return residual(lambda p: lens_map.apply(zero, p))

        if fmap is None:  # a known lens alone
            mo, total = without_model(None)
        else:
            motion = align_frame(ref_pyr, burst[k])
            attempts[k], chosen = _frame_model(
                motion, burst[k], ref_grey, fmap, bc, model, (h, w), cfa, gp, params, k
            )
            first = attempts[k][0]
            if chosen is not None:
                name, fm, theta, unc = attempts[k][chosen]
            elif first[2] is not None and (not params.fallback or params.start_from_unreliable != "never"):
                name, fm, theta, unc = first  # the unreliable estimate, flagged
            else:
                name, fm, theta, unc = "identity", fmap, None, first[3]
            if theta is not None:
                th = torch.as_tensor(theta)
                mo, total = residual(lambda p, th=th, fm=fm: fm.apply(th, p))
                if chosen is None and params.fallback and params.start_from_unreliable == "if better":
                    # started from an unreliable estimate: kept only where it
                    # aligns the frame significantly better than the local registration alone
                    if ref_full is None:
                        ref_full = _photometric_image(burst[reference], cfa)
                    mo_id, total_id = without_model(motion)
                    if not _aligns_better(ref_full, _photometric_image(burst[k], cfa), total, total_id,
                                          params.prefilter_sigma):
                        name, theta, mo, total = "identity", None, mo_id, total_id
            else:
                mo, total = without_model(motion)
            names[k] = name
            assessed[k] = unc
            uncert[k] = unc.corner_uncertainty
            reliable[k] = chosen is not None
            if theta is not None:
                transforms[k] = fm.matrix(theta).numpy()
                if mode == "estimate":
                    coeffs[k] = fm.radial_coeffs(theta)
        spreads[k] = (flow_irregularity(mo), mo)
        if dist_pts is None:
            flows[k] = total
        else:
            smp = _sample_flow(total, dist_pts)
            grid = _grid_points(h, w).numpy()
            flows[k, ..., 0] = (dist_pts[:, 1] + smp[:, 0] - grid[:, 1]).reshape(h, w)
            flows[k, ..., 1] = (dist_pts[:, 0] + smp[:, 1] - grid[:, 0]).reshape(h, w)

    ref_frame = None
    if lens_map is not None:
        def fn0(p):
            return lens_map.apply(zero, p)
        if cfa is not None:
            rgb = resample(demosaic_bilinear(burst[reference], cfa), fn0, 1, "bilinear")
            ref_frame = mosaic(rgb, cfa).astype(np.float32)
        else:
            ref_frame = resample(burst[reference], fn0, 1, "bilinear")
    if fmap is None:
        return GlobalGeometry(flows, spreads, transforms, coeffs, ref_frame)
    names[reference] = model
    return GlobalGeometry(flows, spreads, transforms, coeffs, ref_frame, uncert, reliable, assessed,
                          tuple(names), attempts)


def _frame_model(motion, frame, ref_grey, fmap, bc, model, shape, cfa, gp, params, k):
    """Global model of one frame, its reliability and the fallback chain.

    Returns ``(attempts, chosen)``: ``attempts`` lists ``(model, FrameMap,
    theta or None, TransformUncertainty)`` for every model tried, the
    requested one first (theta None where no model could be fitted or the
    fitted one is degenerate, unreliable then); ``chosen`` indexes the
    reliable one (None where none is). The simpler models are tried only
    where the requested one is unreliable and ``params.fallback`` and
    ``params.fallback_chain`` are set, from the one just below it down to
    the translation, each on the same tile matches and refined the same
    way, until one is reliable (:func:`check_simplification` included).
    With ``params.fallback`` off a fit failure or a degenerate estimate
    raises instead, as before the fallback existed.
    """
    src, dst, wts = tile_matches(motion, params.min_sigma)
    if bc is not None:
        with torch.no_grad():
            src = bc.undistort_points(torch.as_tensor(src)).numpy()
            dst = bc.undistort_points(torch.as_tensor(dst)).numpy()
    moving = _photometric_image(frame, cfa, params.photometric_full_resolution) if params.photometric else None
    wfit = np.where(np.isfinite(wts) & (wts > 0), wts, 0.0)
    attempts = []
    models = [model]
    if params.fallback and params.fallback_chain:
        models += list(MODELS[: MODELS.index(model)][::-1])
    for i, m in enumerate(models):
        fm = fmap if i == 0 else FrameMap(m, shape, lens=_lens_of(fmap), radial=fmap.radial)
        theta, unc = _fit_one(fm, m, src, dst, wts, wfit, moving, ref_grey, bc, shape, gp, params, k)
        if i and theta is not None and unc.reliable:
            unc = check_simplification(fm, theta, unc, attempts)
        attempts.append((m, fm, theta, unc))
        if theta is not None and unc.reliable:
            return attempts, i
    return attempts, None


def _lens_of(fmap):
    """``(coeffs, K)`` of a FrameMap's known lens, or None."""
    if fmap.lens is None:
        return None
    return fmap.lens[0][0].numpy(), fmap.lens[1][0].numpy()


def _fit_one(fmap, model, src, dst, wts, wfit, moving, ref_grey, bc, shape, gp, params, k):
    """Point fit, photometric refinement and assessment of one model on one
    frame's matches: ``(theta or None, TransformUncertainty)``."""
    try:
        fit = fit_transform(src, dst, model, shape, weights=wts, radial=fmap.radial, params=params)
    except ValueError as err:
        if not params.fallback:
            raise ValueError(f"geometry: no {model} could be fitted to frame {k} ({err})") from None
        return None, unassessed(fmap.n, f"no fit ({err})")
    theta = fit.theta if fmap.radial else fmap.theta_from(fit.matrix)
    cov = fit.covariance  # (the same parameter vector as fmap's; the lens has none)
    if params.photometric:
        theta, cov = refine_photometric(
            ref_grey, moving, fmap, theta, grid_factor=gp,
            params=params, points_map=None if bc is None else bc.undistort_points,
            return_covariance=True,
        )
    try:
        check_transform(fmap.matrix(theta).numpy(), shape, "geometry")
    except ValueError as err:
        if not params.fallback:
            raise ValueError(
                f"geometry: the {model} estimated for frame {k} is unusable ({err}); the frame "
                "may not show the reference scene"
            ) from None
        return None, unassessed(fmap.n, f"degenerate ({err})")
    return theta, assess_transform(fmap, theta, cov, src, dst, wfit, fit.weights, params)


#: Side of the pixel blocks over which :func:`_aligns_better` lets the data
#: measure the spread of its residual difference (several times the
#: residuals' correlation length, as ``COVARIANCE_BLOCK`` of the
#: photometric covariance).
SELECT_BLOCK = 8
#: Standard errors by which the estimate-started flow must lower the mean
#: residual to be kept (:func:`_aligns_better`).
SELECT_Z = 2.0


def _aligns_better(ref: np.ndarray, frame: np.ndarray, flow: np.ndarray, other: np.ndarray,
                   sigma: float) -> bool:
    """Whether ``flow`` aligns ``frame`` with ``ref`` significantly better than ``other``.

    Both are (H, W, 2) (dy, dx) flows on the reference grid, input px; the
    grey images (H, W) are blurred by ``sigma`` px (noise, aliasing) and the
    frame is sampled bilinearly at ``p + flow(p)``. Better: the mean over
    the reference pixels both flows map inside the frame of ``d(p) =
    |ref(p) - frame(p + flow(p))| - |ref(p) - frame(p + other(p))|`` is
    below zero by more than :data:`SELECT_Z` of its standard error, which is
    measured from the sums of ``d`` over :data:`SELECT_BLOCK`-px blocks
    (neighbouring residuals are correlated). Where the flows agree ``d`` is
    zero; the test is decided where they differ and the image has texture
    to tell which is right, and a flat or dark frame keeps ``other``.
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    h, w = ref.shape
    if sigma > 0:
        ref = gaussian_filter(ref, sigma, mode="nearest")
        frame = gaussian_filter(frame, sigma, mode="nearest")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    res, inside = [], np.ones((h, w), bool)
    for f in (flow, other):
        y, x = yy + f[..., 0], xx + f[..., 1]
        inside &= (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
        res.append(np.abs(ref - map_coordinates(frame, [y, x], order=1, mode="nearest")))
    n = int(inside.sum())
    if n == 0:
        return False
    d = np.where(inside, res[0] - res[1], 0.0)
    mean = float(d.sum()) / n
    b = SELECT_BLOCK
    nby, nbx = -(-h // b), -(-w // b)
    pad = ((0, nby * b - h), (0, nbx * b - w))
    sums = np.pad(d, pad).reshape(nby, b, nbx, b).sum((1, 3)).ravel()
    counts = np.pad(inside, pad).reshape(nby, b, nbx, b).sum((1, 3)).ravel()
    used = counts > 0
    if used.sum() < 2:
        return False
    se = float(np.sqrt(((sums[used] - counts[used] * mean) ** 2).sum())) / n
    return mean < -SELECT_Z * se


def _shrink(motion, factor: float):
    """Shrink each tile's residual towards the global model by its noise:
    ``r |r|^2 / (|r|^2 + (factor sd)^2)`` (Wiener-like; ``sd`` the tile's
    predicted LK error). Residuals well above their noise (local motion)
    stay; those within it, mostly the LK noise itself, fade."""
    if factor <= 0 or motion.uncertainty is None:
        return motion
    r = motion.displacements.astype(np.float64)
    sd = np.where(np.isfinite(motion.uncertainty), motion.uncertainty, 1e6).astype(np.float64)
    e2 = (r**2).sum(-1)
    gain = e2 / (e2 + (factor * sd) ** 2 + 1e-30)
    return replace(motion, displacements=(r * gain[..., None]).astype(np.float32))


def _grid_points(h: int, w: int) -> torch.Tensor:
    """(H*W, 2) float64 (x, y) of every input pixel, row-major."""
    return pixel_grid((h, w), torch.float64)[0]
