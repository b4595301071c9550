"""Parameters of the kernel fusion: :class:`FusionParams` and the sharpening gain they imply.

Shared by the merge stage (:mod:`mfsr.merge`), :func:`mfsr.fuse` and the
satellite route (:mod:`mfsr.geo`); the measurements behind the defaults are in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FusionParams", "sharpen_gain"]


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
