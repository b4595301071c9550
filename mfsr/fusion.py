"""Robust anisotropic kernel fusion of a burst (Wronski et al. 2019).

:func:`fuse` merges a burst of grey, RGB or Bayer-mosaic frames into one image
on an output grid of any scale. Every input sample of every frame is added,
at its aligned position, into the output pixels around it with an
anisotropic Gaussian weight shaped by the local image structure, times a
per-pixel robustness weight that rejects misaligned or moving content. CFA
samples feed only their own colour channel, so the merge replaces
demosaicking.

Beyond the paper: the kernel's detail/denoise switch thresholds the gradient
in units of the noise model; the robustness compares Nyquist-cancelling local
means and normalises by the smaller of the reference's and the frame's local
variance (fewer false rejections in aliased texture, no leak of moved objects
across reference edges); a final noise-gated unsharp mask compensates the
integration of every sample over one input pixel. :class:`FusionParams`
documents each choice and why it was made (the measurements behind the
defaults are in benchmarks/RESULTS.md).

Conventions (docs/conventions.md): arrays are (row, col) = (y, x);
``flow[k, i, j] = (dy, dx)`` means the content of reference pixel ``(i, j)``
is at ``(i + dy, j + dx)`` in frame ``k`` (input pixels); output pixel ``(y,
x)`` at scale ``s`` is centred at reference coordinate ``((y + 0.5)/s - 0.5,
(x + 0.5)/s - 0.5)``; values are float32 linear light, nominally [0, 1].
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .alignment import Alignment, align, check_geometry_params
from .fusion_params import FusionParams, sharpen_gain
from .memory_estimate import check_fusion_memory
from .merge import merge
from .noise import estimate_noise
from .registration import RegistrationParams
from .validation import as_burst, check_noise_model, check_psf_sigma, check_scale

if TYPE_CHECKING:  # (mfsr.geometry imports torch; only a global model needs it)
    from .geometry import GeometryParams

__all__ = ["FusionParams", "FusionResult", "fuse", "sharpen_gain"]


@dataclass
class FusionResult:
    """Output of :func:`fuse`.

    Attributes
    ----------
    image : ndarray of float32, shape (Ho, Wo) or (Ho, Wo, 3)
        The merged image: grey for grey input, RGB for RGB or CFA input.
    confidence : ndarray of float32, shape (Ho, Wo)
        Total kernel weight accumulated at each output pixel over all frames
        and samples (all colour channels for CFA input).
    flow : ndarray of float32, shape (N, H, W, 2)
        Flow used for each frame (convention of docs/conventions.md), zero
        for the reference. After a tile-wise registration it is made from
        the tile motion on first access (``alignment``), so a fusion that
        never reads it never holds N dense flows.
    scale : float
        Output pixels per input pixel.
    cfa : str or None
        Bayer pattern of the input mosaics.
    reference : int
        Index of the reference frame.
    noise : tuple of float
        Noise model ``(alpha, beta)`` used: variance ``alpha * I + beta``.
    robustness : ndarray of float32, shape (N,)
        Mean robustness weight of each frame (1 for the reference): the
        fraction of it that was merged.
    transforms : ndarray of float64, shape (N, 3, 3), or None
        Global transforms estimated with ``geometry=``: in input pixel
        coordinates (raw px for CFA input), (x, y, 1) column vectors
        (OpenCV/kornia convention), mapping a point of the reference frame to
        its position in frame k (identity for the reference). With known
        lens coefficients they act on rectified (undistorted) coordinates.
        None when no global model was asked for (``geometry=None``, unless
        ``distortion="estimate"``, which fits a homography).
    refinement : ndarray of float32, same shape as ``image``, or None
        What the refinement network changed: ``image`` minus the plain fusion
        (None with ``refine=False``), so users can see where detail was added.
    distortion : ndarray of float64, shape (N, 5), or None
        Brown-Conrady coefficients (OpenCV order k1, k2, p1, p2, k3) of each
        frame: the given lens with ``distortion=`` coefficients, the
        estimated radial distortion relative to the reference (k1 only, zero
        for the reference) with ``distortion="estimate"``; None otherwise.
    alignment : Alignment or None
        The align stage's result (tile motion per frame) that ``flow`` is
        made from when read.
    transform_uncertainty : ndarray of float64, shape (N,), or None
        With a global model: per frame, the largest 1-sigma error of an
        image corner under the reported transform, input px (0 for the
        reference; :class:`mfsr.geometry.TransformUncertainty`); for a frame
        on the local registration alone, that of the requested model's
        estimate. None without one.
    transform_reliable : ndarray of bool, shape (N,), or None
        With a global model: whether each frame's reported transform is
        reliable (corner uncertainty within
        ``GeometryParams.max_corner_uncertainty`` and the model checks
        passed). Where the requested model is not, the frame reports the
        first reliable simpler model (``transform_models``), or else,
        flagged False and named in the warning, either the unreliable
        estimate its local registration started from (the flow is still
        ``transforms[k](p) - p`` plus the residual tile motion, which
        corrects the estimate where the frame has texture) or the identity
        (the local registration alone, as without ``geometry=``); see
        :func:`mfsr.geometry.global_registration`.
    transform_models : tuple of str, length N, or None
        With a global model: the model of each frame's ``transforms`` entry
        (the requested one, a simpler one of the fallback chain, or
        ``"identity"``). None without one.
    """

    image: np.ndarray
    confidence: np.ndarray
    flow: np.ndarray | None = field(repr=False)
    scale: float
    cfa: str | None
    reference: int
    noise: tuple[float, float]
    robustness: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    transforms: np.ndarray | None = None
    refinement: np.ndarray | None = None
    distortion: np.ndarray | None = None
    alignment: Alignment | None = field(default=None, repr=False, compare=False)
    transform_uncertainty: np.ndarray | None = None
    transform_reliable: np.ndarray | None = None
    transform_models: tuple | None = None


def _result_flow(self: FusionResult) -> np.ndarray | None:
    if self._flow is None and self.alignment is not None:
        self._flow = self.alignment.flows
    return self._flow


def _set_result_flow(self: FusionResult, value) -> None:
    self._flow = value


# A property over the dataclass field: the constructor still takes flow=,
# reading it makes the dense flow from the alignment only then.
FusionResult.flow = property(_result_flow, _set_result_flow, doc="Flow of every frame, (N, H, W, 2) float32.")


def _check_noise(noise) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in noise)
    except (TypeError, ValueError):
        raise TypeError(f"noise: expected a pair (alpha, beta) of numbers, got {noise!r}") from None
    if not (np.isfinite(a) and np.isfinite(b)) or a < 0 or b < 0:
        raise ValueError(f"noise: alpha and beta must be finite and >= 0, got {noise!r}")
    return a, b


def fuse(
    frames,
    *,
    scale: float = 2.0,
    cfa: str | None = None,
    reference: int = 0,
    refine: bool = True,
    noise: tuple[float, float] | None = None,
    flow: np.ndarray | None = None,
    params: FusionParams | None = None,
    registration: RegistrationParams | None = None,
    geometry: str | None = None,
    distortion=None,
    progress: bool = False,
    psf_sigma: float | None = None,
    refine_weights: str | os.PathLike | None = None,
    geometry_params: GeometryParams | None = None,
) -> FusionResult:
    """Merge a burst into one image at any scale with robust kernel fusion.

    Each frame is registered to the reference (unless ``flow`` is given),
    then accumulated one at a time into per-channel numerator and denominator
    buffers of the output grid: every output pixel gathers the input samples
    around its aligned position in the frame (3x3 pixels, or 4x4 raw samples
    of a mosaic, each feeding its own colour channel) with the weight
    ``R * exp(-0.5 d^T Omega^-1 d)``. ``Omega`` is the anisotropic kernel
    covariance from the frame's structure tensor (long along edges, short
    across them, wide where the image is flat or noisy compared with the
    noise model); ``R`` is the frame's robustness (low where it disagrees
    with the reference beyond noise, e.g. moving objects or misalignment).
    The result is the ratio of the buffers per channel; channels with almost
    no weight fall back smoothly to an interpolation of the reference. A
    noise-gated unsharp mask of the luminance finally compensates the
    pixel-area integration of the samples (``FusionParams.sharpen_amount``;
    0 gives the plain merge).

    Parameters
    ----------
    frames : ndarray or sequence of ndarray
        (N, H, W) grey or CFA mosaics, or (N, H, W, 3) RGB, float, linear
        light nominally in [0, 1]. One frame is valid (kernel interpolation /
        demosaicking of that frame).
    scale : float
        Output pixels per input pixel, any value > 0 (1 for demosaicking or
        denoising, 2 for super-resolution; beyond about 2 the gain in
        resolution is limited by pixel integration).
    cfa : str or None
        Bayer pattern of mosaic input (``"RGGB"``, ``"BGGR"``, ``"GRBG"``,
        ``"GBRG"``), None for grey/RGB.
    reference : int
        Index of the reference frame (negative counts from the end); the
        output is in its geometry.
    refine : bool
        Apply the learned refinement network (:func:`mfsr.refine.refine_image`)
        after the fusion (default); ``FusionResult.refinement`` then holds
        what it changed (its gains on held-out photographs and real captures
        are in benchmarks/RESULTS.md). Its strength is calibrated per mode
        and scale so that no validation burst loses more than 0.1 dB
        (:data:`mfsr.refine.calibrate.WORST_ALLOWED`) and capped where real
        captures lose; where that leaves nothing, e.g. grey frames at scale
        1 without ``psf_sigma``, the network does not run. The network is trained for scales
        :data:`mfsr.refine.SCALE_RANGE`; outside them the fusion is returned
        unrefined, with a warning. ``refine=False`` gives the pure kernel
        fusion.
    noise : (float, float) or None
        Noise model ``(alpha, beta)``, variance ``alpha * I + beta`` of one
        input sample; estimated from the reference frame
        (:func:`mfsr.noise.estimate_noise`) when None.
    flow : ndarray of float, shape (N, H, W, 2), optional
        Precomputed flow in input pixels (convention of
        docs/conventions.md; zero for the reference). When None the burst is
        registered with :mod:`mfsr.registration`.
    params : FusionParams, optional
        Fusion parameters; tuned defaults when None.
    registration : RegistrationParams, optional
        Registration parameters, when ``flow`` is None.
    geometry : {None, "translation", "similarity", "affine", "homography"}
        Global motion model estimated before the local registration
        (:mod:`mfsr.geometry`): fitted robustly to the tile motion (RANSAC,
        then Tukey-weighted Gauss-Newton with the tiles' LK uncertainty as
        prior weights) and refined by robust photometric alignment; the
        local registration then starts every tile from it and finds only the
        residual, and fusion uses the composed flow (each frame resampled
        once). The returned ``transforms`` hold the model. A frame whose
        model is unreliable (``transform_reliable``; an estimate that is
        degenerate included) uses the first reliable simpler model, else
        the unreliable estimate as the start of its local registration
        where that aligns it significantly better, else the local
        registration alone (``transform_models`` says which; see
        :func:`mfsr.geometry.global_registration`), with an
        :class:`mfsr.geometry.UnreliableTransformWarning`.
    distortion : None, sequence of float or "estimate"
        Lens distortion. Known Brown-Conrady coefficients, OpenCV order
        ``(k1[, k2[, p1, p2[, k3]]])`` (1, 2, 4 or 5 values) in normalised
        coordinates of the default camera matrix (principal point at the
        frame centre, focal length ``max(H, W)`` input px): the output is
        then *rectified*, on the undistorted pixel grid of the reference, so
        the reference's own flow is nonzero. ``"estimate"``: a relative
        radial distortion per frame (focus breathing), returned in
        ``FusionResult.distortion``; the output stays in the reference's
        geometry.
    progress : bool
        Show a progress bar per frame.
    psf_sigma : float or None
        Optical blur of the camera, if known (lens calibration, MTF data
        sheet): standard deviation of a Gaussian point spread function in
        input pixels, without the pixel's own aperture. It tells the
        refinement network how much blur to undo (from the image alone it
        cannot tell a sharp lens from a soft one); see
        :func:`mfsr.refine.refine_image`. Unused with ``refine=False``.
    refine_weights : path or None
        Weight folder of the refinement (its ``manifest.json`` names the
        network and strength of each mode), e.g. one written by
        ``python -m mfsr.refine.adapt`` from your own bursts. Default: the
        shipped weights. Unused with ``refine=False``.
    geometry_params : mfsr.geometry.GeometryParams or None
        Settings of the global model with ``geometry`` / ``distortion``
        (robust fit, photometric refinement, reliability threshold
        ``max_corner_uncertainty`` and the fallback of unreliable frames);
        the defaults when None. Unused without a global model.

    Returns
    -------
    FusionResult
        ``image`` (Ho, Wo) or (Ho, Wo, 3) float32 with ``(Ho, Wo) =
        (round(H * scale), round(W * scale))``, ``confidence`` (Ho, Wo), the
        ``flow`` used, and the noise model.

    Raises
    ------
    ValueError, TypeError
        On invalid input; the message names the argument (``frames``,
        ``cfa``, ``reference``, ``scale``, ``flow``, ``noise``,
        ``geometry``, ``distortion``, ``geometry_params``): an unknown
        model, a wrong number of coefficients, a lens that folds the image,
        ``flow`` given together with ``geometry`` or ``distortion``, or
        ``geometry_params`` not a ``GeometryParams``.
    mfsr.refine.RefinerWeightsError
        If ``refine`` is True and the shipped weights are missing or corrupt
        (``refine=False`` still works).

    Notes
    -----
    Memory is two (Ho, Wo, C) float32 buffers plus one frame's intermediate
    maps, independent of N (apart from the input burst and the returned
    flows). When ``fuse`` registers the burst, the robustness gain drops
    where the registration's own tile motion is irregular
    (:func:`mfsr.registration.flow_irregularity`); with a given ``flow`` the
    same spread is measured on ``irregularity_cell``-px cells of it (with
    ``geometry``/``distortion``, the spread of the *residual* tile motion, so
    a smooth global warp does not lower the robustness). With a known lens
    the robustness guide and the low-weight fallback use the reference
    resampled onto the rectified grid (a re-mosaiced bilinear demosaic for
    CFA input), consistent with its nonzero flow. The anisotropic
    kernel uses the corrected anisotropy ``A = 1 + sqrt((l1 - l2)/(l1 + l2))``
    and thresholds the gradient in units of the noise, so the same
    parameters serve clean and noisy bursts.

    References
    ----------
    B. Wronski, I. Garcia-Dorado, M. Ernst, D. Kelly, M. Krainin, C.-K.
    Liang, M. Levoy, P. Milanfar, "Handheld Multi-Frame Super-Resolution",
    ACM Transactions on Graphics 38(4), 2019 (SIGGRAPH).

    Examples
    --------
    >>> import numpy as np
    >>> from mfsr.fusion import fuse
    >>> burst = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    >>> res = fuse(burst, scale=2.0, flow=np.zeros((4, 32, 32, 2), np.float32))
    >>> res.image.shape, res.confidence.shape
    ((64, 64), (64, 64))
    """
    burst, cfa, reference = as_burst(frames, cfa, reference)
    scale = check_scale(scale)
    psf_sigma = check_psf_sigma(psf_sigma)
    if params is None:
        params = FusionParams()
    elif not isinstance(params, FusionParams):
        raise TypeError(f"params: expected FusionParams, got {type(params).__name__}")
    check_geometry_params(geometry_params)
    p = params
    n, h, w = burst.shape[:3]
    ho, wo = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    check_fusion_memory(n, h, w, 1 if burst.ndim == 3 else burst.shape[3], ho, wo,
                        3 if cfa is not None or burst.ndim == 4 else 1, scale=scale)
    if noise is None:
        alpha, beta = estimate_noise(burst[reference], cfa)
    else:
        alpha, beta = _check_noise(noise)
        check_noise_model(alpha, beta, burst[reference])
    alignment = align(burst, cfa, reference, flow=flow, registration=registration, geometry=geometry,
                      distortion=distortion, progress=progress, geometry_params=geometry_params)
    merged = merge(burst, alignment, scale=scale, cfa=cfa, reference=reference, noise=(alpha, beta), params=p,
                   progress=progress)
    image, confidence = merged.image, merged.confidence
    refinement = None
    if refine:
        from .refine import SCALE_RANGE, refine_image

        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            warnings.warn(
                f"refine: the refinement network is trained for scales {SCALE_RANGE[0]:g} to "
                f"{SCALE_RANGE[1]:g}; scale {scale:g} is returned without refinement (refine=False "
                "silences this)",
                stacklevel=2,
            )
            refine = False
    if refine:
        refined = refine_image(image, confidence, cfa=cfa, scale=scale, noise=(float(alpha), float(beta)),
                               progress=progress, psf_sigma=psf_sigma, weights=refine_weights)
        refinement = refined - image
        image = refined
    return FusionResult(
        image=image,
        confidence=confidence,
        flow=alignment.dense,
        scale=scale,
        cfa=cfa,
        reference=reference,
        noise=(float(alpha), float(beta)),
        robustness=merged.robustness,
        transforms=alignment.transforms,
        distortion=alignment.distortion,
        refinement=refinement,
        alignment=alignment,
        transform_uncertainty=alignment.transform_uncertainty,
        transform_reliable=alignment.transform_reliable,
        transform_models=alignment.transform_models,
    )
