"""How far an estimated global transform can be trusted.

Every transform estimated by :mod:`mfsr.geometry` comes with a
:class:`TransformUncertainty`: the covariance of its parameters (from the
robust fit, see :func:`mfsr.geometry.fit_transform` and
:func:`mfsr.geometry.refine_photometric`), propagated to the image corners
(:func:`mfsr.geometry.corner_sd`), and a model check for what a local
covariance cannot see: a fit resting on too few matches, on matches bunched
in one part of the image or along a line, or one that most of the tile
motions it came from contradict (a photometric refinement caught in a wrong
basin). The transform is reliable when the largest corner uncertainty is at
most ``GeometryParams.max_corner_uncertainty`` and every check passes.

A *simpler* model fitted in place of an unreliable one (the fallback chain of
:func:`mfsr.geometry.global_registration`) has one more check,
:func:`check_simplification`: its own small uncertainty says nothing about
the motion it cannot represent (a translation fitted to a perspective change
is precise and several px wrong at the corners), so it must agree with every
richer estimate tried before it, at every corner, within what that
estimate's own uncertainty can resolve.

Units: input px; matches and transforms as in :mod:`mfsr.geometry._warp`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ._estimate import FrameMap, GeometryParams, corner_sd

__all__ = [
    "CHAIN_AGREEMENT",
    "CHAIN_MAX_TOLERANCE",
    "MIN_CONSENSUS",
    "MIN_INLIERS_PER_PARAMETER",
    "MIN_SPREAD",
    "TransformUncertainty",
    "UnreliableTransformWarning",
    "assess_transform",
    "check_simplification",
    "unassessed",
]

#: Inlier matches (positive robust and prior weight) needed per parameter of
#: the model: each match gives two equations, so a fit on fewer than this
#: is at most four times over-determined and its residual variance (hence
#: its covariance) is itself too uncertain to trust.
MIN_INLIERS_PER_PARAMETER = 2

#: Smallest spread of the inlier matches: the standard deviation of their
#: positions along their least spread direction over that of points
#: uniform over the image's shorter side (a full grid of tiles gives about
#: 0.9; matches along a line or in one corner give less than 0.3, and a
#: homography is then an extrapolation).
MIN_SPREAD = 0.3

#: Smallest share of the usable tile motions (finite predicted uncertainty)
#: that the final transform must explain within three of their predicted
#: standard deviations (``GeometryParams.min_sigma`` added). The point fit
#: reaches it by construction; a refinement that lost it has left the
#: motion the tiles saw. Textured frames keep at least 0.7 even under heavy
#: noise, so half leaves a wide margin.
MIN_CONSENSUS = 0.5

#: A simpler model agrees with a richer estimate when every image corner of
#: the two lies within this many of the richer estimate's corner standard
#: deviations (:func:`check_simplification`): with the corner error about
#: Gaussian, a correct simplification fails it at a given corner with a
#: chance of 0.3 % at most (all the error along one axis; 1e-4 when it is
#: isotropic).
CHAIN_AGREEMENT = 3.0

#: Largest agreement tolerance (``CHAIN_AGREEMENT`` times the richer
#: estimate's corner standard deviation), input px: the richer estimate can
#: only reveal a model error larger than its tolerance, so a simplification
#: tested against a vaguer estimate could carry a larger error unseen.
#: 1 px keeps every undetected model error under a pixel ("never a silent
#: 3 px error") and is what a 0.33 px corner uncertainty resolves.
CHAIN_MAX_TOLERANCE = 1.0


class UnreliableTransformWarning(UserWarning):
    """A global transform was estimated but judged unreliable
    (:class:`TransformUncertainty`); the warning says which frame and why."""


@dataclass(frozen=True)
class TransformUncertainty:
    """Reliability of one estimated global transform.

    Attributes
    ----------
    covariance : ndarray of float64, shape (P, P)
        Covariance of the transform's scaled parameter vector
        (:class:`mfsr.geometry.FrameMap`; one unit moves the image edge by
        about one input px): from the photometric refinement's normal matrix
        when it ran, else from the point fit. Infinite (diagonal) where the
        data do not determine it.
    corner_sd : ndarray of float64, shape (4,)
        Per image corner (top-left, top-right, bottom-right, bottom-left),
        the RMS length of the error of its mapped position implied by
        ``covariance``, input px (comparable with
        :func:`mfsr.metrics.corner_error`).
    corner_uncertainty : float
        ``corner_sd.max()``, input px.
    reliable : bool
        The corner uncertainty is within ``max_corner_uncertainty`` and
        every model check passed.
    reason : str
        Why it is unreliable ("" when reliable): the failed checks, in words.
    inliers : int
        Matches kept by the robust point fit (0 when it failed).
    spread : float
        Spread of the inlier matches (:data:`MIN_SPREAD`).
    consensus : float
        Share of the usable tile motions the transform explains
        (:data:`MIN_CONSENSUS`).
    checks_passed : bool
        Every model check passed (inliers, spread, consensus and, for a
        simplified model, :func:`check_simplification`), whatever the
        corner uncertainty.
    """

    covariance: np.ndarray
    corner_sd: np.ndarray
    corner_uncertainty: float
    reliable: bool
    reason: str = ""
    inliers: int = 0
    spread: float = float("nan")
    consensus: float = float("nan")
    checks_passed: bool = False


def unassessed(n_params: int, reason: str) -> TransformUncertainty:
    """The uncertainty of a transform that could not be estimated at all
    (infinite, unreliable, ``reason`` says why)."""
    return TransformUncertainty(
        covariance=np.diag(np.full(n_params, np.inf)),
        corner_sd=np.full(4, np.inf),
        corner_uncertainty=float("inf"),
        reliable=False,
        reason=reason,
    )


def _spread(src: np.ndarray, weights: np.ndarray, shape) -> float:
    """Weighted spread of match positions (:data:`MIN_SPREAD`)."""
    if weights.sum() <= 0 or (weights > 0).sum() < 3:
        return 0.0
    mu = (weights[:, None] * src).sum(0) / weights.sum()
    d = src - mu
    cov = (d.T * weights) @ d / weights.sum()
    return float(np.sqrt(max(np.linalg.eigvalsh(cov)[0], 0.0)) / (min(shape) / np.sqrt(12.0)))


def assess_transform(
    fmap: FrameMap,
    theta,
    covariance,
    src,
    dst,
    prior,
    robust,
    params: GeometryParams,
) -> TransformUncertainty:
    """Corner uncertainty and model checks of one estimated transform.

    Parameters
    ----------
    fmap : FrameMap
        Parameterisation of the transform (with its lens, if any): the
        corners are mapped through it.
    theta : array_like, shape (P,)
        Final parameters.
    covariance : array_like, shape (P, P)
        Their covariance.
    src, dst : ndarray of float64, shape (M, 2)
        The point matches the fit was made from, ``(x, y)`` input px (both
        rectified with a known lens).
    prior : ndarray of float64, shape (M,)
        Their prior weights, inverse variance in input px^-2 (0 for
        unusable matches; :func:`mfsr.geometry._estimate.tile_matches`).
    robust : ndarray of float64, shape (M,)
        The fit's final robust weights (``FitResult.weights``).
    params : GeometryParams

    Returns
    -------
    TransformUncertainty
    """
    theta = np.asarray(theta, np.float64)
    cov = np.asarray(covariance, np.float64)
    sd = corner_sd(fmap, theta, cov)
    unc = float(sd.max())
    reasons = []
    if not unc <= params.max_corner_uncertainty:
        reasons.append(f"corner uncertainty {unc:.3g} px > {params.max_corner_uncertainty:g} px")
    n_unc = len(reasons)
    usable = prior > 0
    inl = usable & (robust > 0)
    n_in = int(inl.sum())
    if n_in < MIN_INLIERS_PER_PARAMETER * fmap.n:
        reasons.append(f"{n_in} inlier matches, fewer than {MIN_INLIERS_PER_PARAMETER * fmap.n}")
    spread = _spread(src[inl], (prior * robust)[inl] / max(prior[inl].max(initial=0.0), 1e-300), fmap.shape)
    if spread < MIN_SPREAD:
        reasons.append(f"inlier matches spread {spread:.2f} < {MIN_SPREAD:g} (bunched or on a line)")
    # the transform against the tile motions it came from, on the fit's own
    # (rectified) matches: the known lens is not part of that map
    plain = FrameMap(fmap.model, fmap.shape, radial=fmap.radial)
    with torch.no_grad():
        q = plain.apply(torch.as_tensor(theta), torch.as_tensor(src)).numpy()
    consensus = float("nan")
    if usable.any():
        sd_tile = np.sqrt(1.0 / prior[usable])  # (the floor min_sigma is in the prior)
        z = np.linalg.norm(q[usable] - dst[usable], axis=1) / sd_tile
        consensus = float((z < 3.0).mean())
        if consensus < MIN_CONSENSUS:
            reasons.append(f"explains {consensus:.0%} of the tile motions (< {MIN_CONSENSUS:.0%})")
    return TransformUncertainty(
        covariance=cov,
        corner_sd=sd,
        corner_uncertainty=unc,
        reliable=not reasons,
        reason="; ".join(reasons),
        inliers=n_in,
        spread=spread,
        consensus=consensus,
        checks_passed=len(reasons) == n_unc,
    )


def _corners(fmap: FrameMap, theta) -> np.ndarray:
    """(4, 2) mapped image corners (order of :func:`corner_sd`), input px."""
    h, w = fmap.shape
    c = torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=torch.float64)
    with torch.no_grad():
        return fmap.apply(torch.as_tensor(np.asarray(theta, np.float64)), c).numpy()


def check_simplification(
    fmap: FrameMap,
    theta,
    uncertainty: TransformUncertainty,
    richer: list,
) -> TransformUncertainty:
    """Whether a simpler model may stand in for the richer ones tried before it.

    Parameters
    ----------
    fmap : FrameMap
        Parameterisation of the simpler model (same shape, lens and radial
        term as the richer ones).
    theta : array_like, shape (P,)
        Its estimate.
    uncertainty : TransformUncertainty
        Its own assessment (:func:`assess_transform`).
    richer : list of (str, FrameMap, ndarray or None, TransformUncertainty)
        ``(model, fmap, theta, assessment)`` of every richer model tried for
        the frame, the requested one first (``theta`` None where it could
        not be estimated).

    Returns
    -------
    TransformUncertainty
        ``uncertainty``, made unreliable (``checks_passed`` False, the
        reason appended) unless every richer estimate exists, passed its
        own model checks, has a finite corner uncertainty with
        :data:`CHAIN_AGREEMENT` times it at most
        :data:`CHAIN_MAX_TOLERANCE`, and agrees with the simpler model at
        every corner within :data:`CHAIN_AGREEMENT` of its corner standard
        deviations.

    Notes
    -----
    A nested-model (Wald-type) test on the corners: where the richer model's
    extra freedom is not needed, its estimate scatters around the simpler
    one by its own noise; a larger departure is motion the simpler model
    cannot represent. The richer estimate's tolerance bounds the model error
    that can pass unseen, so a simplification is never certified against an
    estimate too vague to show a pixel of model error
    (:data:`CHAIN_MAX_TOLERANCE`), nor against one that failed its own model
    checks (a wrong basin is no reference). The tolerance uses the richer
    estimate's deviation alone, not that of the difference (smaller for
    nested fits on the same data), which errs towards accepting by at most
    the simpler model's own deviation.
    """
    reasons = []
    mine = _corners(fmap, theta)
    for model, fm, th, unc in richer:
        if th is None or not unc.checks_passed:
            reasons.append(f"the {model} it simplifies failed its own checks, nothing to test it against")
            break
        tol = CHAIN_AGREEMENT * np.asarray(unc.corner_sd, np.float64)
        if not np.isfinite(tol).all() or tol.max() > CHAIN_MAX_TOLERANCE:
            reasons.append(f"the {model} it simplifies is too uncertain to test it ({CHAIN_AGREEMENT:g} sd = "
                           f"{tol.max():.3g} px > {CHAIN_MAX_TOLERANCE:g} px)")
            break
        d = np.linalg.norm(mine - _corners(fm, th), axis=1)
        if np.any(d > tol):
            c = int(np.argmax(d / tol))
            reasons.append(f"departs from the {model} estimate by {d[c]:.3g} px at a corner "
                           f"(> {CHAIN_AGREEMENT:g} sd = {tol[c]:.3g} px)")
            break
    if not reasons:
        return uncertainty
    reason = "; ".join(([uncertainty.reason] if uncertainty.reason else []) + reasons)
    return replace(uncertainty, reliable=False, checks_passed=False, reason=reason)
