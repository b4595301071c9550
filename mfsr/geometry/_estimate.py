"""Robust estimation of a global transform (and relative radial distortion).

Two stages, as for any global motion fit to a noisy local motion field:

1. :func:`fit_transform` fits the model to point matches (the registration's
   tile centres and displacements, weighted by each tile's predicted
   Lucas-Kanade uncertainty): RANSAC on minimal samples finds the dominant
   motion, then iteratively reweighted Gauss-Newton with Tukey's biweight
   (scale from the median absolute residual) refits it on the geometric
   error, so moving objects, flat or aliased tiles and local motion carry
   little or no weight.
2. :func:`refine_photometric` polishes the parameters by direct photometric
   alignment of the frame to the reference: coarse-to-fine over a pyramid of
   the (prefiltered) grey images, a Cauchy loss on the intensity residual
   scaled by its median absolute deviation, minimised with L-BFGS through
   the differentiable warp (torch autograd).

Transforms map reference pixels to moving-frame pixels, ``(x, y, 1)``
column vectors, input px (see :mod:`mfsr.geometry._warp`).

References
----------
M. A. Fischler, R. C. Bolles, "Random sample consensus", CACM 24(6), 1981.
P. J. Huber, E. M. Ronchetti, "Robust Statistics", 2nd ed., Wiley 2009
(M-estimators, iteratively reweighted least squares).
S. Baker, I. Matthews, "Lucas-Kanade 20 years on: a unifying framework",
IJCV 56(3), 2004.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from kornia.geometry.calibration import distort_points
from kornia.geometry.transform import remap

from ._lens import default_camera_matrix
from ._warp import N_PARAMS, check_model, matrix_to_params, normalization, params_to_matrix

__all__ = [
    "GeometryParams",
    "FitResult",
    "FrameMap",
    "corner_sd",
    "fit_transform",
    "refine_photometric",
    "single_torch_thread",
    "tile_matches",
]


#: Values of ``GeometryParams.start_from_unreliable``.
START_FROM_UNRELIABLE = ("if better", "always", "never")


@dataclass(frozen=True)
class GeometryParams:
    """Settings of the global-model estimation.

    Attributes
    ----------
    ransac_iterations : int
        Minimal samples drawn (weighted by confidence).
    ransac_threshold : float
        Inlier distance of RANSAC, input px.
    irls_iterations : int
        Reweighted Gauss-Newton iterations after RANSAC.
    tukey_c : float
        Tukey biweight cut-off in units of the robust residual scale.
    min_sigma : float
        Floor of the robust residual scale (and uncertainty floor of a tile),
        input px: below it all tiles count as equally exact.
    photometric : bool
        Refine by photometric alignment after the fit.
    photometric_iterations : int
        Maximum Gauss-Newton iterations per pyramid level.
    photometric_levels : int
        Pyramid levels of the photometric refinement (finest first, each
        halving the size; fewer when the image is small).
    max_size : int
        The photometric refinement starts at the level whose longer side is
        at most this (grey px), so large frames cost no more than this.
    prefilter_sigma : float
        Gaussian blur of both grey images before photometric alignment,
        grey px (noise and aliasing).
    residual_shrinkage : float
        The residual tile motion found after the global model is shrunk
        towards zero where it is within this many times its predicted
        standard deviation (0 disables it; see
        :func:`mfsr.geometry.global_registration`). Stronger shrinkage
        lowers the flow error of noisy bursts but costs a little fused
        quality on clean low-texture ones, where the residual is real
        detail; the default is a compromise between the two.
    photometric_full_resolution : bool
        For CFA input, refine on the grey of a bilinear demosaic at raw
        resolution instead of the 2x2-binned registration grey: twice the
        samples along each axis make the fitted transform more exact.
    seed : int
        RANSAC sampling seed.
    max_corner_uncertainty : float
        A transform is reliable only while its corner uncertainty (the
        largest 1-sigma error of an image corner implied by the fit's
        covariance, :class:`mfsr.geometry.TransformUncertainty`) is at
        most this, input px; ``inf`` leaves only the model checks. The
        default is the accuracy asked of a global model, 0.1 px at the
        corners: a frame whose own noise alone could move a corner by more
        is not trusted (the measured trade-off against other thresholds is
        in benchmarks/RESULTS.md). The uncertainty covers the noise, not
        the interpolation bias of the photometric refinement nor motion the
        model cannot represent, so errors of reliable frames can exceed it.
    fallback : bool
        Where a frame's transform is unreliable,
        :func:`mfsr.geometry.global_registration` (and so ``fuse``) does
        not report it as reliable: it tries the simpler models
        (``fallback_chain``), then starts the local registration from the
        unreliable estimate (``start_from_unreliable``) or uses the local
        registration alone (identity global model), and warns; False uses
        the estimate anyway (the flag is still reported) and raises where
        it is degenerate.
    fallback_chain : bool
        With ``fallback``, an unreliable frame tries the simpler models in
        turn (homography, affine, similarity, translation, starting below
        the requested one), each fitted to the same tile matches and
        refined the same way, and uses the first that is reliable: its own
        corner uncertainty and checks, and agreement with every richer
        estimate (:func:`mfsr.geometry.check_simplification`).
    start_from_unreliable : {"if better", "always", "never"}
        With ``fallback``, a frame for which no model is reliable:
        ``"if better"`` also starts its local registration from the
        requested model's estimate (unless it is degenerate), which the
        tile registration then corrects, and keeps that flow where it
        aligns the frame with the reference significantly better than the
        local registration alone (a mean absolute photometric residual
        lower by two standard errors);
        ``"always"`` keeps it regardless; ``"never"`` uses the local
        registration alone (identity). A kept estimate is reported in
        ``transforms`` and flagged unreliable.
    """

    ransac_iterations: int = 300
    ransac_threshold: float = 1.0
    irls_iterations: int = 15
    tukey_c: float = 4.685
    min_sigma: float = 0.05
    photometric: bool = True
    photometric_iterations: int = 10
    photometric_levels: int = 3
    max_size: int = 1024
    prefilter_sigma: float = 1.0
    residual_shrinkage: float = 0.5
    photometric_full_resolution: bool = True
    seed: int = 0
    max_corner_uncertainty: float = 0.1
    fallback: bool = True
    fallback_chain: bool = True
    start_from_unreliable: str = "if better"

    def __post_init__(self) -> None:
        for names, low in (
            (("ransac_iterations", "photometric_levels", "max_size"), 1),
            (("irls_iterations", "photometric_iterations", "seed"), 0),
        ):
            for name in names:
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                    raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
        # NaN fails every comparison, so each test below rejects it too
        for names, ok, expected in (
            (("ransac_threshold", "tukey_c", "min_sigma"), lambda v: 0 < v < np.inf, "a finite number > 0"),
            (("prefilter_sigma", "residual_shrinkage"), lambda v: 0 <= v < np.inf, "a finite number >= 0"),
            (("max_corner_uncertainty",), lambda v: v > 0, "a number > 0 (inf allowed)"),
        ):
            for name in names:
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not ok(v):
                    raise ValueError(f"{name}: expected {expected}, got {v!r}")
        if self.start_from_unreliable not in START_FROM_UNRELIABLE:
            raise ValueError(f"start_from_unreliable: expected one of {', '.join(map(repr, START_FROM_UNRELIABLE))}, "
                             f"got {self.start_from_unreliable!r}")
        for name in ("photometric", "photometric_full_resolution", "fallback", "fallback_chain"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {v!r}")


@dataclass
class FitResult:
    """Output of :func:`fit_transform`.

    Attributes
    ----------
    matrix : ndarray of float64, shape (3, 3)
        Reference to moving-frame pixel transform.
    radial : float
        Relative radial coefficient k1 applied after the transform (0 unless
        ``radial=True``).
    theta : ndarray of float64, shape (P,)
        The scaled parameter vector (see :class:`FrameMap`).
    weights : ndarray of float64, shape (M,)
        Final robust weight of each match in [0, 1] (0: outlier).
    sigma : float
        Robust residual scale, input px.
    covariance : ndarray of float64, shape (P, P), or None
        Covariance of ``theta`` (scaled parameters squared): the weighted
        least-squares covariance of the final reweighted fit, its residual
        variance estimated from the inlier residuals (see Notes of
        :func:`fit_transform`). Infinite on its diagonal where the inliers
        do not determine the parameters.
    corner_uncertainty : float
        The largest, over the four image corners, standard deviation of the
        corner's mapped position implied by ``covariance`` (``sqrt`` of the
        trace of its 2x2 covariance: the RMS of its displacement error),
        input px (:func:`mfsr.geometry.corner_sd`).
    """

    matrix: np.ndarray
    radial: float
    theta: np.ndarray
    weights: np.ndarray
    sigma: float
    covariance: np.ndarray | None = None
    corner_uncertainty: float = float("nan")


class FrameMap:
    """Point map ``p -> L(H_theta(p))`` from reference to moving-frame pixels.

    ``H_theta`` is the global model (:func:`mfsr.geometry.params_to_matrix`);
    ``L`` is either nothing, a known lens (distortion of rectified
    coordinates, so ``p`` are then rectified reference pixels), or a
    relative radial distortion ``k1`` about the principal point, learnable
    (focus breathing; a second radial term was too correlated with the
    first and with the magnification to be recovered from a burst). The
    radial parameter is scaled so that one unit moves the farthest image
    corner by about one pixel.

    Parameters
    ----------
    model : str
    shape : (int, int)
        (H, W) of the input grid, px.
    lens : (coeffs (5,), K (3, 3)) or None
        Known lens applied after the transform.
    radial : bool
        Append a learnable relative radial coefficient k1.
    camera_matrix : ndarray (3, 3), optional
        For ``radial``; :func:`default_camera_matrix` if None.
    """

    def __init__(self, model: str, shape, lens=None, radial: bool = False, camera_matrix=None):
        self.model = check_model(model, "geometry")
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_h = N_PARAMS[self.model]
        self.radial = bool(radial)
        self.n = self.n_h + (1 if radial else 0)
        self.lens = None
        if lens is not None:
            c, K = lens
            self.lens = (torch.as_tensor(c, dtype=torch.float64)[None],
                         torch.as_tensor(K, dtype=torch.float64)[None])
        K = default_camera_matrix(self.shape) if camera_matrix is None else np.asarray(camera_matrix)
        self.K = torch.as_tensor(K, dtype=torch.float64)[None]
        h, w = self.shape
        rc = np.hypot(max(K[0, 2], w - 1 - K[0, 2]) / K[0, 0], max(K[1, 2], h - 1 - K[1, 2]) / K[1, 1])
        self.radial_scale = np.array([1.0 / (K[0, 0] * rc**3)])

    def matrix(self, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        return params_to_matrix(self.model, theta[None, : self.n_h], self.shape)[0]

    def radial_coeffs(self, theta) -> np.ndarray:
        """(5,) Brown-Conrady coefficients of the relative radial part."""
        out = np.zeros(5)
        if self.radial:
            t = np.asarray(torch.as_tensor(theta).detach(), np.float64)
            out[0] = t[self.n_h] * self.radial_scale[0]
        return out

    def apply(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Map (N, 2) ``(x, y)`` float64 points; differentiable in ``theta``."""
        H = params_to_matrix(self.model, theta[None, : self.n_h], self.shape)[0]
        q = ((points @ H[:2, :2].T + H[:2, 2]) / (points @ H[2, :2] + H[2, 2])[:, None])[None]
        if self.radial:
            k = theta[self.n_h :] * float(self.radial_scale[0])
            dist = torch.cat([k, theta.new_zeros(4)])[None]
            q = distort_points(q, self.K, dist)
        if self.lens is not None:
            q = distort_points(q, self.lens[1], self.lens[0])
        return q[0]

    def theta_from(self, matrix, radial=(0.0,)) -> np.ndarray:
        th = matrix_to_params(self.model, matrix, self.shape)[0]
        if self.radial:
            th = np.concatenate([th, np.asarray(radial, np.float64)[:1] / self.radial_scale[0]])
        return th


# ---------------------------------------------------------------------------
# linear fits (for RANSAC's minimal samples and the initial refit)


def _linear_fit(model: str, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """Weighted algebraic fit in normalised coordinates; (3, 3) or None."""
    sw = np.sqrt(w)[:, None]
    x, y = src[:, 0], src[:, 1]
    u, v = dst[:, 0], dst[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    if model == "translation":
        t = (w[:, None] * (dst - src)).sum(0) / max(w.sum(), 1e-300)
        return np.array([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1.0]])
    if model == "similarity":
        a = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
        b = np.concatenate([u, v])
        p, *_ = np.linalg.lstsq(a * np.concatenate([sw, sw]), b * np.concatenate([sw, sw])[:, 0], rcond=None)
        return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]], [0, 0, 1.0]])
    if model == "affine":
        a = np.stack([x, y, one], 1) * sw
        px, *_ = np.linalg.lstsq(a, u * sw[:, 0], rcond=None)
        py, *_ = np.linalg.lstsq(a, v * sw[:, 0], rcond=None)
        return np.array([px, py, [0, 0, 1.0]])
    rows = np.concatenate([
        np.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], 1),
        np.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], 1),
    ]) * np.concatenate([sw, sw])
    try:
        # (the null vector needs the full V when there are fewer rows than 9)
        _, s, vt = np.linalg.svd(rows, full_matrices=rows.shape[0] < 9)
    except np.linalg.LinAlgError:
        return None
    m = vt[-1].reshape(3, 3)
    if abs(m[2, 2]) < 1e-12:
        return None
    return m / m[2, 2]


_MIN_SAMPLES = {"translation": 1, "similarity": 2, "affine": 3, "homography": 4}


def _project(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = pts @ m[:2, :2].T + m[:2, 2]
    wv = pts @ m[2, :2] + m[2, 2]
    return q / np.where(np.abs(wv) < 1e-12, 1e-12, wv)[:, None]


def _ransac(model, src_n, dst_n, w, threshold_n, iterations, rng):
    m_min = _MIN_SAMPLES[model]
    n = src_n.shape[0]
    prob = w / w.sum()
    best, best_score = None, -1.0
    needed = iterations
    it = 0
    while it < min(iterations, needed):
        it += 1
        idx = rng.choice(n, m_min, replace=False, p=prob)
        m = _linear_fit(model, src_n[idx], dst_n[idx], np.ones(m_min))
        if m is None or not np.isfinite(m).all():
            continue
        err = np.linalg.norm(_project(m, src_n) - dst_n, axis=1)
        score = w[err < threshold_n].sum()
        if score > best_score:
            best, best_score = m, score
            # adaptive stop: enough samples for a 99.9% chance of an all-inlier one
            good = min(float((prob * (err < threshold_n)).sum()), 1 - 1e-9) ** m_min
            needed = iterations if good < 1e-9 else max(20, int(np.ceil(np.log(1e-3) / np.log1p(-good))))
    return best


def tile_matches(motion, weight_floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point matches for :func:`fit_transform` from a frame's tile motion.

    Parameters
    ----------
    motion : mfsr.registration.TileMotion
        Tile registration of a frame to the reference.
    weight_floor : float
        Added (squared) to every tile's predicted standard deviation, input
        px, so that no tile counts as more exact than this
        (``GeometryParams.min_sigma``).

    Returns
    -------
    src : ndarray of float64, shape (M, 2)
        Tile centres on the reference, ``(x, y)`` input px (registration
        pixel ``i`` centred at input coordinate ``g (i + 0.5) - 0.5``, ``g``
        the grid factor).
    dst : ndarray of float64, shape (M, 2)
        The same points displaced by the tiles' motion, ``(x, y)`` input px.
    weights : ndarray of float64, shape (M,)
        Inverse variance ``1 / (sd^2 + weight_floor^2)`` from the
        Lucas-Kanade uncertainty (0 where it is infinite, 1 for every tile
        when the motion has none).
    """
    cy, cx = motion.centres
    g = float(motion.grid_factor)
    yy, xx = np.meshgrid(g * (cy + 0.5) - 0.5, g * (cx + 0.5) - 0.5, indexing="ij")
    d = motion.displacements.astype(np.float64) * g
    src = np.stack([xx.ravel(), yy.ravel()], 1)
    dst = src + np.stack([d[..., 1].ravel(), d[..., 0].ravel()], 1)
    if motion.uncertainty is None:
        wts = np.ones(len(src))
    else:
        sd = motion.uncertainty.astype(np.float64).ravel() * g
        wts = np.where(np.isfinite(sd), 1.0 / (sd**2 + weight_floor**2), 0.0)
    return src, dst, wts


def fit_transform(
    src,
    dst,
    model: str,
    shape: tuple[int, int],
    *,
    weights=None,
    radial: bool = False,
    lens=None,
    camera_matrix=None,
    params: GeometryParams | None = None,
) -> FitResult:
    """Robust fit of a global transform to point matches.

    Parameters
    ----------
    src, dst : array_like, shape (M, 2)
        Matching ``(x, y)`` points, input px: reference (``src``) and moving
        frame (``dst``).
    model : {"translation", "similarity", "affine", "homography"}
    shape : (int, int)
        (H, W) of the input grid (sets the parameter scaling).
    weights : array_like, shape (M,), optional
        Prior confidence of each match (e.g. inverse variance), >= 0.
    radial : bool
        Also fit a relative radial distortion k1 applied after the
        transform (focus breathing); RANSAC then fits the transform alone.
    lens : (coeffs, K), optional
        Known lens applied after the transform (``dst`` distorted, ``src``
        rectified).
    camera_matrix : ndarray (3, 3), optional
        Principal point and focal length of the radial model.
    params : GeometryParams, optional

    Returns
    -------
    FitResult
        ``weights`` has one entry per given match (0 for the matches dropped
        as unusable: non-finite, zero prior weight).

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite values, too few matches with
        positive weight for the model, or a degenerate result.

    Notes
    -----
    The covariance treats the final weights ``W_i = w_i u_i`` (prior ``w``
    relative to its maximum, Tukey weight ``u``) as fixed: the estimate
    solves ``sum_i W_i J_i^T r_i = 0``, so with ``Cov(r_i) = s^2 / w_i``
    (the prior weights right up to a common factor)::

        Cov(theta) = s^2 A^-1 B A^-1,   A = sum W_i J_i^T J_i,
                                        B = sum w_i u_i^2 J_i^T J_i,
        s^2 = max(sum W_i |r_i|^2 / (2 sum u_i - P), min_sigma^2 / 2)

    with ``J_i`` the (2, P) Jacobian of the mapped point ``i`` and ``r_i``
    its residual, input px. Without outliers it is the ordinary weighted
    least-squares covariance. ``GeometryParams.min_sigma`` floors ``s`` as
    it floors the robust scale (``/ 2``: per axis), so that an exact fit
    of a few matches does not pass for an exact transform.
    """
    params = GeometryParams() if params is None else params
    model = check_model(model, "model")
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"src, dst: expected two (M, 2) arrays, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != (len(src),):
        raise ValueError(f"weights: expected shape ({len(src)},), got {w.shape}")
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & np.isfinite(w) & (w > 0)
    fmap = FrameMap(model, shape, lens=lens, radial=radial, camera_matrix=camera_matrix)
    if ok.sum() < max(_MIN_SAMPLES[model] + 1, (fmap.n + 1) // 2 + 1):
        raise ValueError(
            f"src, dst: {int(ok.sum())} usable matches are too few for a {model} model"
        )
    n_all = len(src)
    src, dst, w = src[ok], dst[ok], w[ok] / w[ok].max()
    # the linear stages see undistorted moving points when the lens is known
    dst_lin = dst
    if lens is not None:
        from ._lens import BrownConrady

        bc = BrownConrady(lens[0], shape, lens[1], check=False)
        dst_lin = bc.undistort_points(torch.as_tensor(dst)).numpy()
    tm = normalization(shape)
    s = max(shape[0], shape[1]) / 2.0
    src_n = src @ tm[:2, :2].T + tm[:2, 2]
    dst_n = dst_lin @ tm[:2, :2].T + tm[:2, 2]
    rng = np.random.default_rng(params.seed)
    m_n = _ransac(model, src_n, dst_n, w, params.ransac_threshold / s, params.ransac_iterations, rng)
    if m_n is None:
        raise ValueError(f"src, dst: no {model} model fits the matches")
    err = np.linalg.norm(_project(m_n, src_n) - dst_n, axis=1) * s
    inl = err < 2 * params.ransac_threshold
    m_n = _linear_fit(model, src_n[inl], dst_n[inl], w[inl]) if inl.sum() > _MIN_SAMPLES[model] else m_n
    matrix = np.linalg.inv(tm) @ m_n @ tm
    theta = fmap.theta_from(matrix)
    src_t = torch.as_tensor(src)
    sigma = params.min_sigma
    rw = np.ones(len(src))
    with single_torch_thread():
        for _ in range(params.irls_iterations):
            q, J = _map_jacobian(fmap, theta, src_t)
            r = q.numpy() - dst
            e = np.linalg.norm(r, axis=1)
            sigma = max(params.min_sigma, 1.4826 * _weighted_median(e, w))
            c = params.tukey_c * sigma
            rw = np.where(e < c, (1 - (e / c) ** 2) ** 2, 0.0)
            wt = np.repeat(w * rw, 2)
            Jm = J.numpy().reshape(-1, fmap.n)
            A = Jm.T @ (wt[:, None] * Jm)
            g = Jm.T @ (wt * r.reshape(-1))
            lam = 1e-9 * np.trace(A) + 1e-12
            try:
                step = np.linalg.solve(A + lam * np.eye(len(g)), -g)
            except np.linalg.LinAlgError:
                break
            theta = theta + step
            if np.abs(step).max() < 1e-6:
                break
    th = np.asarray(theta, np.float64)
    with single_torch_thread():
        _, J = _map_jacobian(fmap, th, src_t)
        r = fmap.apply(torch.as_tensor(th), src_t).numpy() - dst
    cov = _match_covariance(J.numpy(), r, w, rw, params.min_sigma / np.sqrt(2.0))
    weights = np.zeros(n_all)
    weights[ok] = rw
    return FitResult(
        matrix=fmap.matrix(th).numpy(),
        radial=float(fmap.radial_coeffs(th)[0]),
        theta=th,
        weights=weights,
        sigma=float(sigma),
        covariance=cov,
        corner_uncertainty=float(corner_sd(fmap, th, cov).max()),
    )


def _match_covariance(J: np.ndarray, r: np.ndarray, w: np.ndarray, u: np.ndarray, floor: float) -> np.ndarray:
    """Covariance (P, P) of a reweighted point fit (Notes of :func:`fit_transform`).

    ``J`` (M, 2, P) Jacobians of the mapped points, ``r`` (M, 2) residuals
    (input px), ``w`` (M,) prior weights relative to their maximum, ``u``
    (M,) robust weights, ``floor`` the smallest residual standard deviation
    per axis of a match of weight 1 (input px). Infinite (diagonal) when the
    inliers leave no degree of freedom for the residual variance or do not
    determine every parameter.
    """
    p = J.shape[-1]
    Jm = J.reshape(-1, p)
    W = np.repeat(w * u, 2)
    A = Jm.T @ (W[:, None] * Jm)
    B = Jm.T @ (np.repeat(w * u * u, 2)[:, None] * Jm)
    dof = 2.0 * float(u.sum()) - p
    inf = np.diag(np.full(p, np.inf))
    if dof < 1.0:
        return inf
    # (floored like the robust scale: an exact fit of a few matches is no
    # proof of an exact transform)
    s2 = max(float((w * u * (r**2).sum(1)).sum()) / dof, floor**2)
    cov = _sandwich(A, B, s2)
    return inf if cov is None else cov


def _sandwich(bread: np.ndarray, meat: np.ndarray, factor: float) -> np.ndarray | None:
    """``factor * A^-1 M A^-1``, symmetrised; None where ``A`` is singular or ill-conditioned.

    (A relative conditioning test: a singular normal matrix has no covariance.)
    """
    try:
        if np.linalg.cond(bread) > 1e12:
            return None
        inv = np.linalg.inv(bread)
    except np.linalg.LinAlgError:
        return None
    cov = factor * inv @ meat @ inv
    return 0.5 * (cov + cov.T)


def corner_sd(fmap: "FrameMap", theta, covariance) -> np.ndarray:
    """Standard deviation of where the map sends each image corner.

    Parameters
    ----------
    fmap : FrameMap
        Parameterisation; its ``shape`` (H, W) gives the corners, the pixel
        centres ``(0, 0)``, ``(W - 1, 0)``, ``(W - 1, H - 1)``, ``(0, H - 1)``
        (``(x, y)``, the order of :func:`mfsr.metrics.corner_error`).
    theta : array_like, shape (P,)
        Parameters the covariance belongs to.
    covariance : array_like, shape (P, P)
        Covariance of ``theta``.

    Returns
    -------
    ndarray of float64, shape (4,)
        ``sqrt(trace(J_c C J_c^T))`` per corner, ``J_c`` the (2, P)
        Jacobian of the corner's mapped position: the RMS length of its
        displacement error, input px (comparable with ``corner_error``).
        Infinite where the covariance is.
    """
    cov = np.asarray(covariance, np.float64)
    h, w = fmap.shape
    corners = torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=torch.float64)
    if not np.isfinite(cov).all():
        return np.full(4, np.inf)
    with single_torch_thread():
        _, J = _map_jacobian(fmap, np.asarray(theta, np.float64), corners)
    J = J.numpy()
    var = np.einsum("cip,pq,ciq->c", J, cov, J)
    return np.sqrt(np.maximum(var, 0.0))


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x)
    cw = np.cumsum(w[o])
    return float(x[o][np.searchsorted(cw, 0.5 * cw[-1])])


# ---------------------------------------------------------------------------
# photometric refinement


def _level_grid(shape, step: float, dtype=torch.float64) -> torch.Tensor:
    """Input-px (x, y) centres of a level's pixels (``step`` input px each)."""
    h, w = shape
    ys = step * (torch.arange(h, dtype=dtype) + 0.5) - 0.5
    xs = step * (torch.arange(w, dtype=dtype) + 0.5) - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def _sample_at(img: torch.Tensor, pts: torch.Tensor, step: float, shape, mode: str) -> torch.Tensor:
    """Sample a (1, 1, h, w) level (``step`` input px per pixel) at input-px points."""
    h, w = shape
    q = (pts + 0.5) / step - 0.5
    return remap(img, q[:, 0].reshape(1, h, w).to(img.dtype), q[:, 1].reshape(1, h, w).to(img.dtype),
                 mode=mode, padding_mode="border", align_corners=True)


def refine_photometric(
    reference: np.ndarray,
    moving: np.ndarray,
    fmap: FrameMap,
    theta0,
    *,
    grid_factor: int = 1,
    mask: np.ndarray | None = None,
    params: GeometryParams | None = None,
    points_map=None,
    return_covariance: bool = False,
):
    """Refine a global model by robust coarse-to-fine photometric alignment.

    Minimises ``sum_p rho((R(p) - M(L_theta(p))) / sigma)`` over the
    reference pixels ``p`` whose mapped position falls inside the moving
    image, with the Cauchy loss ``rho(e) = log(1 + e^2)`` and ``sigma`` the
    median absolute residual at the start of each pyramid level, by
    iteratively reweighted Gauss-Newton (forward-additive Lucas-Kanade on
    the global parameters): the image gradients of the moving level are
    sampled at the mapped points (bicubic at the finest level) and chained
    with the Jacobian of the point map.

    Parameters
    ----------
    reference, moving : ndarray of float, shape (h, w)
        Grey images (the registration images: 2x2-binned for CFA input).
    fmap : FrameMap
        Parameterisation, in *input* px (``fmap.shape`` is the input grid).
    theta0 : array_like, shape (fmap.n,)
        Initial parameters (e.g. :func:`fit_transform`'s ``theta``).
    grid_factor : int
        Input px per grey px (2 for a binned mosaic): grey pixel ``i`` is
        centred at input coordinate ``grid_factor * (i + 0.5) - 0.5``.
    mask : ndarray of bool, shape (h, w), optional
        Reference pixels to use (e.g. valid data of a satellite pass).
    params : GeometryParams, optional
    points_map : callable, optional
        Fixed map applied to the reference pixel positions before ``fmap``
        ((M, 2) float64 tensor to (M, 2)), e.g. a known lens's
        undistortion when ``fmap`` works in rectified coordinates.
    return_covariance : bool
        Also return the covariance of the refined parameters.

    Returns
    -------
    theta : ndarray of float64, shape (fmap.n,)
    covariance : ndarray of float64, shape (fmap.n, fmap.n)
        Only with ``return_covariance``: covariance of ``theta`` from the
        Gauss-Newton normal matrix of the finest level (see Notes);
        infinite (diagonal) where the refinement stopped early for lack of
        overlapping pixels.

    Notes
    -----
    The covariance is the cluster-robust sandwich of the M-estimate at the
    finest level, evaluated at the final parameters::

        Cov = A^-1 (sum_b S_b S_b^T) A^-1 * G / (G - P),
        A = kappa sum_p w_p g_p g_p^T,   S_b = sum_{p in b} w_p e_p g_p,
        kappa = sum_p w_p^2 (1 - z_p^2) / sum_p w_p

    with ``g_p`` the derivative of the warped value at pixel ``p`` with
    respect to the parameters, ``e_p`` its residual, ``z_p = e_p / sigma``,
    ``w_p = 1 / (1 + z_p^2)`` its Cauchy weight, ``kappa`` the mean slope
    of the influence function relative to the weight (Huber's correction
    of the reweighted normal matrix) and ``b`` the ``G`` blocks of
    :data:`COVARIANCE_BLOCK` x :data:`COVARIANCE_BLOCK` pixels
    (``kappa`` floored at 0.05). The residuals of neighbouring pixels are
    correlated (the prefilter, the demosaic, the interpolation): the plain
    ``s^2 A^-1``, which takes them as independent, underestimates the
    covariance several times over; summing the scores over blocks wider
    than that correlation lets the data measure it, and the residuals' own
    level (noise, aliasing, local motion the model cannot follow) sets the
    scale. It describes the spread over noise draws around the minimum
    found, not a systematic error (the bilinear sampling's phase-dependent
    bias) nor a wrong basin of a flat or repetitive image.
    """
    params = GeometryParams() if params is None else params
    with single_torch_thread():
        theta, cov = _refine(reference, moving, fmap, theta0, grid_factor, mask, params, points_map,
                             return_covariance)
    return (theta, cov) if return_covariance else theta


#: Side of the pixel blocks of the photometric covariance (finest-level
#: pixels): several times the residuals' correlation length (the prefilter's
#: sigma of 1 px and the demosaic's reach), and small enough for many blocks
#: on a 64 px image.
COVARIANCE_BLOCK = 8


class single_torch_thread:
    """Context manager: run the enclosed torch operations on one thread.

    The global fits and warps work on many small tensors (per-point maps,
    Jacobians, one image at a time); the start-up cost of torch's thread
    pool outweighs their work, and on shared cores the pool's threads
    contend with the Numba kernels. The previous thread count is restored
    on exit.
    """

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _map_jacobian(fmap: FrameMap, theta: np.ndarray, pts: torch.Tensor, step: float = 1e-3):
    """Mapped points (M, 2) and their Jacobian (M, 2, P) by central differences
    (the parameters are scaled to about 1 px per unit, the map is smooth)."""
    th = torch.as_tensor(theta, dtype=torch.float64)
    with torch.no_grad():
        q = fmap.apply(th, pts)
        cols = []
        for i in range(len(theta)):
            e = torch.zeros_like(th)
            e[i] = step
            cols.append((fmap.apply(th + e, pts) - fmap.apply(th - e, pts)) / (2 * step))
    return q, torch.stack(cols, -1)


def _gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = F.pad(img, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    gy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return gx, gy


def _refine(reference, moving, fmap, theta0, grid_factor, mask, params, points_map=None, want_cov=False):
    ref = torch.as_tensor(np.ascontiguousarray(reference, np.float32))[None, None]
    mov = torch.as_tensor(np.ascontiguousarray(moving, np.float32))[None, None]
    if params.prefilter_sigma > 0:
        k = 2 * int(np.ceil(3 * params.prefilter_sigma)) + 1
        sg = (params.prefilter_sigma, params.prefilter_sigma)
        ref = gaussian_blur2d(ref, (k, k), sg, border_type="replicate")
        mov = gaussian_blur2d(mov, (k, k), sg, border_type="replicate")
    msk = None if mask is None else torch.as_tensor(np.asarray(mask, np.float32))[None, None]
    pyr = [(ref, mov, msk)]
    for _ in range(params.photometric_levels - 1):
        r, m, k_ = pyr[-1]
        if min(r.shape[-2:]) < 64:
            break
        pyr.append((F.avg_pool2d(r, 2), F.avg_pool2d(m, 2), None if k_ is None else F.avg_pool2d(k_, 2)))
    theta = np.asarray(theta0, np.float64).copy()
    finest = 0
    while finest < len(pyr) - 1 and max(pyr[finest][0].shape[-2:]) > params.max_size:
        finest += 1
    for lv in range(len(pyr) - 1, finest - 1, -1):
        r, m, k_ = pyr[lv]
        step = grid_factor * 2.0**lv
        h, w = r.shape[-2:]
        hm, wm = m.shape[-2:]
        pts = _level_grid((h, w), step)
        if points_map is not None:
            with torch.no_grad():
                pts = points_map(pts)
        rv = r.reshape(-1).double()
        keep = torch.ones_like(rv, dtype=torch.bool) if k_ is None else (k_.reshape(-1) > 0.999)
        # bilinear: torch's bicubic (a = -0.75) biased the fit on aliased
        # frames (0.024 px flow error against 0.010 bilinear, simulated bursts)
        mode = "bilinear"
        gx, gy = _gradients(m)
        stack = torch.cat([m, gx, gy], 1)
        sigma = None
        # the map's Jacobian barely changes over the sub-pixel updates of a
        # level: computed once per level (2P + 1 map evaluations), the image
        # gradients are resampled at every iteration
        q, J = _map_jacobian(fmap, theta, pts)
        theta_j = theta.copy()
        for it in range(params.photometric_iterations):
            if it:
                with torch.no_grad():
                    q = fmap.apply(torch.as_tensor(theta), pts)
                J_ok = np.abs(theta - theta_j).max() < 0.5
                if not J_ok:
                    q, J = _map_jacobian(fmap, theta, pts)
                    theta_j = theta.copy()
            s = _sample_at(stack, q, step, (h, w), mode)[0].reshape(3, -1).double()
            g = (q + 0.5) / step - 0.5
            inside = (g[:, 0] >= 1) & (g[:, 0] <= wm - 2) & (g[:, 1] >= 1) & (g[:, 1] <= hm - 2) & keep
            if int(inside.sum()) < 4 * len(theta):
                break
            e = (rv - s[0])[inside]
            if sigma is None:
                sigma = max(float(1.4826 * e.abs().median()), 1e-5)
            wt = 1.0 / (1.0 + (e / sigma) ** 2)
            # d value / d theta: level gradient (per level px) / step * d q / d theta
            Ji = (s[1, inside, None] * J[inside, 0] + s[2, inside, None] * J[inside, 1]) / step
            A = (Ji * wt[:, None]).T @ Ji
            b = (Ji * wt[:, None]).T @ e
            lam = 1e-6 * torch.trace(A) / len(theta) + 1e-12
            try:
                delta = torch.linalg.solve(A + lam * torch.eye(len(theta), dtype=A.dtype), b).numpy()
            except RuntimeError:
                break
            theta = theta + delta
            if np.abs(delta).max() < 1e-4 * step:
                break
        if want_cov and lv == finest:
            cov = _photometric_covariance(fmap, theta, pts, stack, step, (h, w), (hm, wm), keep, rv, sigma, mode)
    if not want_cov:
        return theta, None
    return theta, cov


def _photometric_covariance(fmap, theta, pts, stack, step, shape, mshape, keep, rv, sigma, mode):
    """Cluster-robust covariance (P, P) at ``theta`` (Notes of :func:`refine_photometric`)."""
    p = len(theta)
    inf = np.diag(np.full(p, np.inf))
    h, w = shape
    hm, wm = mshape
    q, J = _map_jacobian(fmap, theta, pts)
    s = _sample_at(stack, q, step, shape, mode)[0].reshape(3, -1).double()
    g = (q + 0.5) / step - 0.5
    inside = (g[:, 0] >= 1) & (g[:, 0] <= wm - 2) & (g[:, 1] >= 1) & (g[:, 1] <= hm - 2) & keep
    idx = torch.nonzero(inside)[:, 0]
    if len(idx) < 4 * p:
        return inf
    e = rv[idx] - s[0, idx]
    if sigma is None:  # (no iteration ran at this level)
        sigma = max(float(1.4826 * e.abs().median()), 1e-5)
    z2 = (e / sigma) ** 2
    wt = 1.0 / (1.0 + z2)
    Ji = (s[1, idx, None] * J[idx, 0] + s[2, idx, None] * J[idx, 1]) / step
    # the M-estimator's bread: the IRLS normal matrix times the mean slope
    # of the influence e w(e), (1 - z^2) / (1 + z^2)^2, over the mean weight
    # (without it the standard deviation of a Cauchy fit to Gaussian
    # residuals comes out about half the true one); a scalar, not per pixel: on
    # aliased frames the largest residuals sit on the strongest edges, and
    # per-pixel slopes (negative beyond z = 1) would cancel exactly the
    # pixels that carry the information
    slope = float(((1.0 - z2) * wt * wt).sum() / wt.sum())
    A = (Ji * wt[:, None]).T @ Ji * max(slope, 0.05)
    b = COVARIANCE_BLOCK
    nbx = (w + b - 1) // b
    block = (idx // w) // b * nbx + (idx % w) // b
    sums = torch.zeros(((h + b - 1) // b) * nbx, p, dtype=Ji.dtype)
    sums.index_add_(0, block, Ji * (wt * e)[:, None])
    sums = sums[(sums != 0).any(1)]
    n_blocks = sums.shape[0]
    if n_blocks <= p:
        return inf
    S = sums.numpy()
    cov = _sandwich(A.numpy(), S.T @ S, n_blocks / (n_blocks - p))
    return inf if cov is None else cov
