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

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter

from .cfa import cell_channels
from .kernels.accumulate import accumulate_frame, accumulate_frame_cfa, normalize, sharpen
from .kernels.robustness import guide_image, local_stats, robustness, warp_guide
from .kernels.structure_tensor import (
    gaussian_weights,
    grey_image,
    kernel_inverse_covariance,
    structure_tensor,
)
from .memory_estimate import check_fusion_memory
from .noise import estimate_noise
from .registration import (
    RegistrationParams,
    align_frame,
    dense_flow,
    flow_irregularity,
    prepare_reference,
)
from .validation import all_finite, as_burst, check_noise_model, check_psf_sigma, check_scale

_NO_CELL = np.zeros((2, 2), np.int64)


@dataclass(frozen=True)
class FusionParams:
    """Parameters of the kernel fusion, with defaults tuned on simulated bursts.

    Tuned on :func:`mfsr.synth.simulate_burst` bursts of 8 frames (shifts up
    to 3 px, rotations up to 0.5 degrees, optical blur 0.5 high-res px) of
    four scenes (astronaut, coffee, chelsea, dead leaves; camera and brick
    for grey), for Bayer at scale 1 and 2, noisy Bayer (``alpha = 4e-3``,
    ``beta = 2e-4``) at scale 1 and grey at scale 2, maximising the PSNR gain
    over :func:`mfsr.baselines.single_frame_upscale`.

    Lengths of the kernel are in pixels of the frame's grey image: the
    2x2-binned half-resolution grey for CFA input (one grey pixel = two raw
    pixels), the frame itself otherwise.

    Attributes
    ----------
    k_detail : float
        Base kernel radius (standard deviation), grey px. Small radii keep
        the detail the burst's sub-pixel offsets bring; the paper's 0.25 to
        0.33 blur it, most visibly at scale 1.
    k_denoise : float
        Factor on ``k_detail`` for the isotropic radius in flat or noisy
        regions (``D = 1``).
    k_stretch : float
        Radius along an edge: ``k_detail * k_stretch * A`` with the
        anisotropy ``A`` in [1, 2].
    k_shrink : float
        Radius across an edge: ``k_detail / (k_shrink * A)``. Stronger
        stretch/shrink (the paper's 4 and 2) smears texture of no dominant
        orientation.
    d_th : float
        Offset of the detail/denoise blend ``D = clamp(1 - sqrt(l1) / T +
        d_th, 0, 1)``, dimensionless.
    d_tr : float
        ``T = d_tr * sigma_g``: gradient threshold in units of the grey
        image's noise standard deviation ``sigma_g`` at the local intensity
        (from the noise model), so denoising follows the noise level.
    radius_min, radius_max : float
        Clamp of both kernel radii, grey px (keeps covariances well
        conditioned).
    tensor_sigma : float
        Gaussian smoothing of the structure tensor, grey px.
    robustness_t : float
        Threshold ``t`` in ``R = clamp(s * exp(-d^2 / sigma^2) - t, 0, 1)``.
    robustness_s : float
        Gain ``s`` where the flow is regular.
    robustness_s_irregular : float
        Gain ``s`` where the local flow spread exceeds
        ``irregularity_threshold``.
    robustness_mean_taps : tuple of float
        Separable weights of the local means compared by the robustness (on
        the guide grid; an odd number of them, summing to 1). ``(1/4, 1/2,
        1/4)`` cancels the Nyquist frequency, where the frame-to-frame
        aliasing lives, so fine texture is falsely rejected less often than
        with the paper's 3x3 box (the aliasing-induced rejections of the
        paper's supplement S.3).
    robustness_sigma_gain : float
        Factor on ``sigma^2`` (local variance + noise variance); 2 here
        rejects a moved object as well as 1 but fewer aliased textures.
    irregularity_threshold : float
        Flow spread (max - min of either flow component over a 3x3 tile
        neighbourhood), input px.
    irregularity_cell : int
        Cell size, input px, of the spread measured on a given ``flow`` (the
        registration's own tile grid is used when ``fuse`` registers).
    min_filter : int
        Side of the local-minimum window applied to the robustness, guide px
        (odd).
    fallback_radius : float
        Radius of the reference-frame interpolation used where the
        accumulated weight of a channel is below ``min_weight``, input px.
    min_weight : float
        Accumulated weight under which the fallback is blended in.
    sharpen_amount : float
        Gain of the final unsharp mask that compensates the integration of
        every sample over one input pixel (0 disables it), where that blur
        is undone in full: for CFA input at every scale (each colour is
        sampled sparsely, so its merge kernels are wide), for grey and RGB
        frames from ``sharpen_full_scale`` up (see :func:`sharpen_gain`).
        The default suits optics that blur by about 0.5 output px. The
        refinement network was trained on it; told the blur
        (``fuse(..., psf_sigma=...)``) it undoes an over-sharpening.
    sharpen_sigma : float
        Its Gaussian, input px.
    sharpen_noise_gate : float
        Its gain falls where the detail energy is below this many times the
        noise variance, so flat noisy regions are not sharpened.
    sharpen_overshoot : float
        How far a sharpened channel may leave the range of its unsharpened
        3x3 neighbourhood, as a fraction of that range, and below it as a
        fraction of the neighbourhood's minimum too (0: not at all; ``inf``:
        no limit; :func:`mfsr.kernels.overshoot.limit_overshoot`). Without
        the limit the mask crushes dark pixels beside bright edges to black
        and rings around highlights; a little excursion keeps restored edges
        steep.
    sharpen_full_scale : float
        Scale from which grey and RGB frames get the full ``sharpen_amount``.
        An output pixel of scale ``s`` integrates the scene over ``1/s`` of
        an input pixel, so what is left to undo is the box blur's excess
        variance, ``(s^2 - 1) / 12`` output px^2: the gain grows as ``s^2 -
        1`` from 0 at scale 1 (the frames' own integration is the output's)
        to the full amount here. 1 gives the full amount at every scale.
    """

    k_detail: float = 0.15
    k_denoise: float = 3.0
    k_stretch: float = 1.0
    k_shrink: float = 1.0
    d_th: float = 0.3
    d_tr: float = 2.0
    radius_min: float = 0.08
    radius_max: float = 2.0
    tensor_sigma: float = 1.0
    robustness_t: float = 0.12
    robustness_s: float = 12.0
    robustness_s_irregular: float = 2.0
    robustness_mean_taps: tuple[float, ...] = (0.25, 0.5, 0.25)
    robustness_sigma_gain: float = 2.0
    irregularity_threshold: float = 0.8
    irregularity_cell: int = 16
    min_filter: int = 5
    fallback_radius: float = 1.0
    min_weight: float = 0.02
    sharpen_amount: float = 0.6
    sharpen_sigma: float = 0.8
    sharpen_noise_gate: float = 0.3
    sharpen_overshoot: float = 0.25
    sharpen_full_scale: float = 2.0

    def __post_init__(self) -> None:
        # NaN fails every comparison, so each test below rejects it too
        for names, ok, expected in (
            (
                ("k_detail", "k_denoise", "k_stretch", "k_shrink", "d_tr", "radius_min", "radius_max",
                 "robustness_s", "robustness_s_irregular", "robustness_sigma_gain",
                 "fallback_radius", "min_weight", "sharpen_sigma", "sharpen_full_scale"),
                lambda v: 0 < v < np.inf,
                "a finite number > 0",
            ),
            (
                ("tensor_sigma", "robustness_t", "sharpen_amount", "sharpen_noise_gate"),
                lambda v: 0 <= v < np.inf,
                "a finite number >= 0",
            ),
            (("d_th",), lambda v: -np.inf < v < np.inf, "a finite number"),
            (("irregularity_threshold",), lambda v: v > 0, "a number > 0 (inf: no flow counts as irregular)"),
            (("sharpen_overshoot",), lambda v: v >= 0, "a number >= 0 (inf: no limit)"),
        ):
            for name in names:
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not ok(v):
                    raise ValueError(f"{name}: expected {expected}, got {v!r}")
        if self.radius_max < self.radius_min:
            raise ValueError(f"radius_max: expected a number >= radius_min ({self.radius_min!r}), got {self.radius_max!r}")
        v = self.irregularity_cell
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"irregularity_cell: expected an integer >= 1, got {v!r}")
        v = self.min_filter
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 or v % 2 == 0:
            raise ValueError(f"min_filter: expected an odd integer >= 1, got {v!r}")
        taps = self.robustness_mean_taps
        try:
            t = np.asarray(taps, dtype=np.float64)
        except (TypeError, ValueError):
            t = np.zeros(0)
        if t.ndim != 1 or t.size % 2 == 0 or not np.isfinite(t).all() or abs(t.sum() - 1.0) > 1e-3:
            raise ValueError(
                f"robustness_mean_taps: expected an odd number of finite weights summing to 1, "
                f"e.g. (0.25, 0.5, 0.25), got {taps!r}"
            )
        # a tuple whatever sequence was given, so the frozen params stay hashable
        object.__setattr__(self, "robustness_mean_taps", tuple(float(x) for x in t))


def sharpen_gain(params: FusionParams, scale: float, cfa: str | None) -> float:
    """Gain of the final unsharp mask for one fusion.

    Parameters
    ----------
    params : FusionParams
        ``sharpen_amount`` and ``sharpen_full_scale`` are read.
    scale : float
        Output scale of the fusion.
    cfa : str or None
        Bayer pattern of the input, or None for grey and RGB frames.

    Returns
    -------
    float
        ``sharpen_amount`` for CFA input; for grey and RGB frames
        ``sharpen_amount * min(1, (scale^2 - 1) / (sharpen_full_scale^2 - 1))``
        (0 at scale 1 and below), the full amount when ``sharpen_full_scale``
        is 1 or less.
    """
    amount = float(params.sharpen_amount)
    full = float(params.sharpen_full_scale)
    if cfa is not None or full <= 1.0:
        return amount
    return amount * min(1.0, max(0.0, (scale * scale - 1.0) / (full * full - 1.0)))


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
        for the reference.
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
    """

    image: np.ndarray
    confidence: np.ndarray
    flow: np.ndarray
    scale: float
    cfa: str | None
    reference: int
    noise: tuple[float, float]
    robustness: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    transforms: np.ndarray | None = None
    refinement: np.ndarray | None = None
    distortion: np.ndarray | None = None


def _flow_spread(flow: np.ndarray, shape: tuple[int, int], guide_bin: int, cell: int) -> np.ndarray:
    """Irregularity of the flow on the guide grid, input px.

    The flow is sampled at the centres of ``cell``-px cells; the spread is the
    larger of the two components' max - min over each cell's 3x3
    neighbourhood (a smooth motion such as a translation or a small rotation
    has a small spread; broken or noisy alignment has a large one).
    """
    h, w = flow.shape[:2]
    c = max(1, int(cell))
    coarse = flow[c // 2 :: c, c // 2 :: c]
    if coarse.shape[0] == 0 or coarse.shape[1] == 0:
        coarse = flow[:1, :1]
    spread = np.zeros(coarse.shape[:2], np.float32)
    for k in range(2):
        comp = coarse[..., k]
        spread = np.maximum(
            spread, maximum_filter(comp, 3, mode="nearest") - minimum_filter(comp, 3, mode="nearest")
        )
    gy = np.minimum(((np.arange(shape[0]) + 0.5) * guide_bin) // c, spread.shape[0] - 1).astype(np.intp)
    gx = np.minimum(((np.arange(shape[1]) + 0.5) * guide_bin) // c, spread.shape[1] - 1).astype(np.intp)
    return np.ascontiguousarray(spread[gy[:, None], gx[None, :]], dtype=np.float32)


def _check_noise(noise) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in noise)
    except (TypeError, ValueError):
        raise TypeError(f"noise: expected a pair (alpha, beta) of numbers, got {noise!r}") from None
    if not (np.isfinite(a) and np.isfinite(b)) or a < 0 or b < 0:
        raise ValueError(f"noise: alpha and beta must be finite and >= 0, got {noise!r}")
    return a, b


def _check_flow(flow, n: int, h: int, w: int, reference: int) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.shape != (n, h, w, 2):
        raise ValueError(f"flow: expected shape {(n, h, w, 2)} (N, H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.number):
        raise TypeError(f"flow: expected a numeric array, got dtype {flow.dtype}")
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if not all_finite(flow):
        raise ValueError("flow: NaN or infinite values")
    if np.abs(flow[reference]).max() > 1e-6:
        raise ValueError(
            f"flow: the reference frame ({reference}) must have zero flow, "
            f"got max |flow| {np.abs(flow[reference]).max():.3g} px"
        )
    return flow


def _register(burst, cfa, reference, registration, progress):
    """Flow of every frame and, per frame, its tile-grid irregularity."""
    n, h, w = burst.shape[:3]
    flows = np.empty((n, h, w, 2), np.float32)
    flows[reference] = 0.0
    spreads: list = [None] * n
    ref_pyr = prepare_reference(burst[reference], cfa, registration)
    for k in _frames(n, progress, "register"):
        if k == reference:
            continue
        motion = align_frame(ref_pyr, burst[k])
        dense_flow(motion, (h, w), out=flows[k])
        spreads[k] = (flow_irregularity(motion), motion)
    return flows, spreads


def _tile_spread_on_guide(spread: np.ndarray, motion, shape: tuple[int, int], guide_bin: int) -> np.ndarray:
    """Nearest tile's irregularity (input px) at every guide pixel."""
    ty, tx = spread.shape
    g = float(motion.grid_factor)
    out = []
    for n_pix, centre, n_tiles in ((shape[0], motion.centre_y, ty), (shape[1], motion.centre_x, tx)):
        r = guide_bin * (np.arange(n_pix) + 0.5) - 0.5  # input px
        reg = (r + 0.5) / g - 0.5  # registration px
        out.append(np.clip(np.rint((reg - centre) / motion.stride), 0, n_tiles - 1).astype(np.intp))
    return np.ascontiguousarray(spread[out[0][:, None], out[1][None, :]], dtype=np.float32)


def _frames(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, unit="frame")


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
        once). The returned ``transforms`` hold the model.
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
        ``geometry``, ``distortion``): an unknown model, a wrong number of
        coefficients, a lens that folds the image, an estimated transform
        that is degenerate, or ``flow`` given together with ``geometry`` or
        ``distortion``.
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
    spreads: list = [None] * n
    transforms = None
    lens = None
    ref_frame = burst[reference]
    if geometry is not None or distortion is not None:
        from .geometry import check_geometry_args, global_registration

        check_geometry_args(geometry, distortion, (h, w))
        if flow is not None:
            raise ValueError(
                "flow: a precomputed flow cannot be combined with geometry= or distortion= "
                "(the global model is estimated from the registration)"
            )
        glob = global_registration(
            burst, cfa, reference, geometry, distortion, registration,
            frames=_frames(n, progress, "register"),
        )
        flows, spreads, transforms, lens = glob.flows, glob.spreads, glob.transforms, glob.distortion
        if glob.reference_frame is not None:
            ref_frame = glob.reference_frame
    elif flow is None:
        if n == 1:
            flows = np.zeros((n, h, w, 2), np.float32)
        else:
            flows, spreads = _register(burst, cfa, reference, registration, progress)
    else:
        flows = _check_flow(flow, n, h, w, reference)

    is_cfa = cfa is not None
    cell = cell_channels(cfa) if is_cfa else _NO_CELL
    nc = 3 if (is_cfa or burst.ndim == 4) else 1
    grey_bin = 2 if is_cfa else 1
    # Noise of one grey / guide pixel relative to one input sample.
    grey_gain = 0.25 if is_cfa else (1.0 / 3.0 if nc == 3 else 1.0)
    channel_noise = np.array([1.0, 0.5, 1.0] if is_cfa else [1.0] * nc, np.float32)

    def as3(frame: np.ndarray) -> np.ndarray:
        return frame[..., None] if frame.ndim == 2 else frame

    taps = np.asarray(p.robustness_mean_taps, np.float32)
    # with a known lens the output grid is rectified: guide and fallback use
    # the reference resampled onto it (its own flow is nonzero then)
    ref3 = as3(ref_frame)
    ref_guide = guide_image(ref3, cell, is_cfa)
    ref_mean, ref_var = local_stats(ref_guide, taps)
    num = np.zeros((ho, wo, nc), np.float32)
    den = np.zeros((ho, wo, 3 if is_cfa else 1), np.float32)
    mean_rob = np.ones(n, np.float32)

    for k in _frames(n, progress, "fuse"):
        frame3 = as3(burst[k])
        grey = grey_image(frame3, grey_bin)
        tensor = structure_tensor(grey, p.tensor_sigma)
        inv_cov = kernel_inverse_covariance(
            tensor, grey, alpha * grey_gain, beta * grey_gain,
            p.k_detail, p.k_denoise, p.k_stretch, p.k_shrink, p.d_th, p.d_tr,
            p.radius_min, p.radius_max, float(grey_bin),
        )
        del tensor
        if k == reference:
            rob = np.ones(ref_guide.shape[1:], np.float32)
        else:
            warped = warp_guide(guide_image(frame3, cell, is_cfa), flows[k], grey_bin)
            if spreads[k] is not None:
                spread = _tile_spread_on_guide(*spreads[k], ref_guide.shape[1:], grey_bin)
            else:
                spread = _flow_spread(flows[k], ref_guide.shape[1:], grey_bin, p.irregularity_cell)
            rob = robustness(
                ref_mean, ref_var, warped, alpha, beta, channel_noise, spread,
                p.irregularity_threshold, p.robustness_s, p.robustness_s_irregular,
                p.robustness_t, p.min_filter, taps, p.robustness_sigma_gain,
            )
            del warped
            mean_rob[k] = rob.mean()
        if is_cfa:
            accumulate_frame_cfa(burst[k], cell, flows[k], inv_cov, grey_bin, rob, grey_bin, scale, num, den)
        else:
            accumulate_frame(frame3, flows[k], inv_cov, grey_bin, rob, grey_bin, scale, num, den)

    confidence = normalize(num, den, ref3, is_cfa, cell, scale, p.fallback_radius, p.min_weight, num)
    del den
    gain = sharpen_gain(p, scale, cfa)
    if gain > 0:
        sharpen(num, gaussian_weights(p.sharpen_sigma * scale), gain, alpha, beta, p.sharpen_noise_gate,
                p.sharpen_overshoot)
    image = num[..., 0] if nc == 1 else num
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
        refined = refine_image(image, confidence, cfa=is_cfa, scale=scale, noise=(float(alpha), float(beta)),
                               progress=progress, psf_sigma=psf_sigma, weights=refine_weights)
        refinement = refined - image
        image = refined
    return FusionResult(
        image=image,
        confidence=confidence,
        flow=flows,
        scale=scale,
        cfa=cfa,
        reference=reference,
        noise=(float(alpha), float(beta)),
        robustness=mean_rob,
        transforms=transforms,
        distortion=lens,
        refinement=refinement,
    )
