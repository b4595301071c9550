"""Tiled CPU inference of the refinement network."""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ..cfa import PATTERNS
from ..kernels.overshoot import limit_overshoot
from ..validation import check_psf_sigma, check_scale
from ._features import confidence_reference, global_features, pixel_features
from ._network import RefineNet
from ._weights import load_refiner, refiner_ensemble, refiner_strength

__all__ = ["refine_image", "native_bf16", "DC_SIGMA", "ENSEMBLES", "PRECISIONS", "SCALE_RANGE"]

#: Scales the network is trained on (mfsr.refine.train draws 1, 2 and
#: U(1.25, 4)); :func:`mfsr.fuse` does not refine outside them.
SCALE_RANGE = (1.0, 4.0)

#: Gaussian sigma (output px) of the local mean the refinement may not move:
#: the network's residual is high-passed at this scale. The fusion measures
#: local brightness well; the network is there to restore detail, and an
#: unfiltered residual shifts the brightness of flat fields. With the filter
#: local means are the fusion's (only a small zero-mean 2x2 pattern of the
#: pixel shuffle remains on flat fields), at no measurable cost to the
#: held-out gains.
DC_SIGMA = 8.0


#: Views of the geometric self-ensemble for each size: (quarter turns
#: counter-clockwise, then a left-right flip). The network is not exactly
#: equivariant to them, so its errors partly average out; the worst
#: validation bursts then lose less, which lets the calibration give the
#: refinement more strength (the figures are in benchmarks/RESULTS.md).
_VIEWS = {
    1: ((0, False),),
    2: ((0, False), (1, False)),
    4: tuple((k, False) for k in range(4)),
    8: tuple((k, f) for f in (False, True) for k in range(4)),
}
#: Allowed ``ensemble`` sizes of :func:`refine_image`.
ENSEMBLES = tuple(_VIEWS)
#: Allowed ``precision`` values of :func:`refine_image`.
PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX; Linux's /proc/cpuinfo).

    There the network's convolutions run several times faster in bfloat16;
    elsewhere bfloat16 is emulated and slower than float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def _check_inputs(image, confidence):
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"image: expected float values (linear light), got dtype {img.dtype}")
    if min(img.shape[:2]) < 2:
        raise ValueError(f"image: at least 2x2 pixels needed, got {img.shape[:2]}")
    conf = np.asarray(confidence)
    if conf.shape != img.shape[:2]:
        raise ValueError(f"confidence: expected shape {img.shape[:2]}, got {conf.shape}")
    if not np.issubdtype(conf.dtype, np.number):
        raise TypeError(f"confidence: expected a numeric array, got dtype {conf.dtype}")
    return np.asarray(img, np.float32), np.asarray(conf, np.float32)


def _local_mean(x: np.ndarray) -> np.ndarray:
    """Gaussian-like local mean of ``x`` (H, W[, C]) at scale :data:`DC_SIGMA`.

    Computed on a 4x coarser grid (4x4 area means, a Gaussian of
    ``DC_SIGMA / 4`` there, bilinear interpolation back), which is several
    times faster than the full-resolution filter on 12-megapixel images and
    just as exact on constants: a flat input comes back unchanged.
    """
    f = 4
    h, w = x.shape[:2]
    hp, wp = -(-h // f) * f, -(-w // f) * f
    # reflect, not edge: keeps the phase of periodic patterns in the last block
    xp = np.pad(x, ((0, hp - h), (0, wp - w)) + ((0, 0),) * (x.ndim - 2), mode="reflect")
    coarse = xp.reshape(hp // f, f, wp // f, f, *x.shape[2:]).mean(axis=(1, 3))
    sigma = (DC_SIGMA / f, DC_SIGMA / f) + ((0.0,) if x.ndim == 3 else ())
    coarse = gaussian_filter(coarse, sigma, mode="reflect", truncate=3.0)
    t = torch.from_numpy(np.ascontiguousarray(coarse if x.ndim == 3 else coarse[..., None]))
    t = t.permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(hp, wp), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    up = up[:h, :w].numpy()
    return up if x.ndim == 3 else up[..., 0]


def _check_cfa(cfa) -> bool:
    """Whether ``cfa`` names a Bayer mosaic; the old ``True``/``False`` form warns.

    The refinement is the same for every pattern: the fusion has already
    merged the mosaic's samples into an RGB image, so only "mosaic or not"
    selects the network and its features. The pattern is still what the
    caller passes, as to every other ``cfa=`` of the package
    (docs/conventions.md), and it is checked.
    """
    if isinstance(cfa, (bool, np.bool_)):
        instead = (f"the mosaics' Bayer pattern, one of {', '.join(map(repr, PATTERNS))} (the cfa= given to "
                   "mfsr.fuse; the refinement is the same for every pattern)") if cfa else (
                   "cfa=None (a grey or RGB fusion)")
        # stacklevel 3: the warning points at the caller of refine_image
        warnings.warn(f"refine_image: cfa={bool(cfa)} is deprecated; pass {instead}", DeprecationWarning,
                      stacklevel=3)
        return bool(cfa)
    if cfa is None:
        return False
    if not isinstance(cfa, str) or cfa.upper() not in PATTERNS:
        raise ValueError(f"cfa: expected a Bayer pattern ({', '.join(PATTERNS)}, any case) or None, got {cfa!r}")
    return True


def _spans(n: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of length ``n`` padded by ``margin`` on both sides.

    Returns (read_start, read_stop, core_start, core_stop) in padded
    coordinates; the cores cover ``[margin, margin + n)``.
    """
    out = []
    for c0 in range(margin, margin + n, core):
        c1 = min(c0 + core, margin + n)
        out.append((c0 - margin, c1 + margin, c0, c1))
    return out


def refine_image(
    image: np.ndarray,
    confidence: np.ndarray,
    *,
    cfa: str | None,
    scale: float,
    noise: tuple[float, float],
    tile: int = 512,
    progress: bool = False,
    weights: str | os.PathLike | RefineNet | None = None,
    strength: float | None = None,
    psf_sigma: float | None = None,
    ensemble: int | None = None,
    precision: str = "auto",
    overshoot: float = 1.0,
) -> np.ndarray:
    """Refine a fused image with the learned residual network.

    The network predicts a correction (residual blur, aliasing, noise) that is
    added to the fused image; it sees the normalised confidence, so where
    few samples were merged it stays close to the fusion.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Fused image (:attr:`mfsr.FusionResult.image`), grey or RGB, linear
        light nominally in [0, 1].
    confidence : ndarray of float32, shape (H, W)
        :attr:`mfsr.FusionResult.confidence` (total kernel weight). It is
        divided by its median over the whole image (its level depends on
        scale and burst length) and enters as ``log1p(min(c / median, 16))``;
        ``log1p(median)`` enters as a global feature. See
        :mod:`mfsr.refine._features`.
    cfa : {"RGGB", "BGGR", "GRBG", "GBRG"} or None
        Bayer pattern of the mosaics the image was fused from (case-insensitive;
        the image is then RGB), as given to :func:`mfsr.fuse`
        (:attr:`mfsr.FusionResult.cfa`); None for a fusion of grey or RGB
        frames. Every pattern is refined alike. *Deprecated:* ``True`` /
        ``False`` (mosaic or not) still work, with a ``DeprecationWarning``;
        pass the pattern or None instead.
    scale : float
        Scale of the fusion (output pixels per input pixel).
    noise : (float, float)
        Noise model ``(alpha, beta)`` of the input frames
        (:attr:`mfsr.FusionResult.noise`): variance ``alpha * I + beta``.
    tile : int
        Side of the tiles' cores, output pixels (rounded up to even). Each
        tile is read with a margin of the network's receptive field and only
        its core is kept, so the output does not depend on the tiling.
    progress : bool
        Show a tqdm progress bar (when there is more than one tile).
    weights : path, RefineNet or None
        Weight file or folder (see :func:`load_refiner`), an already built
        network, or None for the shipped weights.
    strength : float or None
        Factor on the network's residual, in [0, 1]. None takes the strength
        calibrated for this mode and scale on validation bursts
        (:func:`mfsr.refine.calibrate`, stored in the weights' manifest; 1.0
        for a network or weight file without calibration): where the network
        did not improve validation bursts, it shrinks the correction towards
        the plain fusion.
    psf_sigma : float or None
        Optical blur of the camera, if known: standard deviation of a
        Gaussian point spread function (lens, anti-aliasing filter), in
        *input* pixels, without the pixel's own aperture. The network then
        knows how much blur to undo instead of guessing it from the image
        (it cannot tell a sharp lens from a soft one well), and the strength
        comes from the manifest's ``"strength_known_psf"`` table. None
        (default): unknown. Networks trained before this input existed
        ignore it.
    ensemble : {1, 2, 4, 8} or None
        Geometric self-ensemble: the network's residual is averaged over this
        many views of the image (2: the image and its quarter turn; 4: the
        four quarter turns; 8: those and their mirror images), at that many
        times the cost. None takes the size stored for this mode in the
        weights' manifest (``"ensemble"``; 1 where it has none), the size the
        calibrated strength was fitted with; another size with
        ``strength=None`` warns (recalibrate a copy of the weights for it,
        :mod:`mfsr.refine.calibrate`).
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the network's layers (its fixed high-pass filter and
        the result stay float32). "auto" (default): bfloat16 on CPUs that
        compute it in hardware (:func:`native_bf16`; the network was trained
        under bfloat16), which is faster there, float32 elsewhere.
    overshoot : float
        Bound on the change: each refined channel stays within the range of
        the fused image's 3x3 neighbourhood, widened by this fraction of that
        range, and non-negative where that neighbourhood is
        (:func:`mfsr.kernels.overshoot.limit_overshoot`). A correction can
        steepen an edge or restore a peak the fusion flattened, but not ring
        around it, crush a shadow to black, or run away on inputs unlike its
        training data. ``inf`` lifts the bound.

    Returns
    -------
    refined : ndarray of float32, same shape as ``image``
        Not clipped to [0, 1] (like the fusion, values may leave it
        slightly where the fusion's own neighbourhood does).

    Raises
    ------
    ValueError, TypeError
        Invalid arguments (the message names the argument).
    RefinerWeightsError
        A ``RuntimeError`` naming the weight file when it is missing or
        corrupt; ``fuse(..., refine=False)`` still works.

    Notes
    -----
    The network's residual is high-passed (minus its local mean, about a Gaussian of sigma
    :data:`DC_SIGMA` px), so local mean brightness is the fusion's and a
    flat field keeps its level. Memory is one tile's activations (about
    ``(tile + 2 * margin)^2 * 64`` float32 at ``tile = 512``: about 30 MB)
    plus three arrays of the output's size; torch uses
    ``torch.get_num_threads()`` threads. Odd sizes are reflect-padded by one
    pixel (the network works on 2x2 blocks). Inference runs under
    ``torch.inference_mode``; on one machine with one ``precision`` the same
    input gives the same output. bfloat16 and float32 outputs differ
    slightly (benchmarks/RESULTS.md).
    """
    img, conf = _check_inputs(image, confidence)
    scale = check_scale(scale)
    try:
        alpha, beta = (float(v) for v in noise)
    except (TypeError, ValueError):
        raise TypeError(f"noise: expected a pair (alpha, beta) of numbers, got {noise!r}") from None
    if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha < 0 or beta < 0:
        raise ValueError(f"noise: alpha and beta must be finite and >= 0, got {noise!r}")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 2:
        raise ValueError(f"tile: expected an integer >= 2, got {tile!r}")
    psf_sigma = check_psf_sigma(psf_sigma)
    mosaic = _check_cfa(cfa)
    grey = img.ndim == 2
    if mosaic and grey:
        raise ValueError(f"cfa: a fusion of Bayer mosaics ({cfa!r}) gives an RGB image, got a grey (H, W) image")
    mode = "cfa" if mosaic else ("grey" if grey else "rgb")
    if isinstance(weights, RefineNet):
        net = weights
    else:
        net = load_refiner(mode, weights)
    calibrated_views = None if isinstance(weights, RefineNet) else refiner_ensemble(mode, weights)
    if ensemble is None:
        ensemble = calibrated_views or 1
    if isinstance(ensemble, bool) or ensemble not in _VIEWS:
        raise ValueError(f"ensemble: expected one of {ENSEMBLES}, got {ensemble!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if strength is None:
        strength = 1.0 if isinstance(weights, RefineNet) else refiner_strength(
            mode, scale, weights, psf_known=psf_sigma is not None)
        if calibrated_views is not None and ensemble != calibrated_views:
            warnings.warn(
                f"ensemble: the {mode} strength ({strength:g}) was calibrated for {calibrated_views} view(s), "
                f"not {ensemble}; pass strength= or recalibrate a copy of the weights "
                f"(python -m mfsr.refine.calibrate --dir COPY --ensemble {mode}={ensemble})",
                stacklevel=2,
            )
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength: expected a number in [0, 1], got {strength!r}")
    if isinstance(overshoot, bool) or not isinstance(overshoot, (int, float, np.integer, np.floating)) \
            or not overshoot >= 0:
        raise ValueError(f"overshoot: expected a number >= 0 (inf for no bound), got {overshoot!r}")
    if strength == 0.0:
        # the default where real captures showed no gain: no network run at all
        return img.copy()
    bf16 = precision == "bf16" or (precision == "auto" and native_bf16())

    h, w = img.shape[:2]
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        pad = ((0, ph - h), (0, pw - w))
        img = np.pad(img, pad + ((0, 0),) * (img.ndim - 2), mode="reflect")  # _check_inputs: >= 2x2
        conf = np.pad(conf, pad, mode="reflect")
    conf_ref = confidence_reference(conf[:h, :w])
    g = torch.from_numpy(global_features(
        cfa=mosaic, grey=grey, scale=scale, conf_ref=conf_ref, psf_sigma=psf_sigma))[None]
    views = _VIEWS[int(ensemble)]
    margin = net.radius + net.radius % 2
    core = int(tile) + int(tile) % 2
    n_tiles = len(_spans(ph, core, margin)) * len(_spans(pw, core, margin))
    bar = None
    if progress and n_tiles > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tiles, desc="refine", unit="tile")
    # Mirror the image beyond its borders (instead of the convolutions' zero
    # padding), so border pixels get the same treatment as inner ones.
    padded = np.pad(img, ((margin, margin),) * 2 + ((0, 0),) * (img.ndim - 2), mode="reflect")
    conf = np.pad(conf, margin, mode="reflect")
    was_training = net.training
    net.eval()
    try:
        resid = _residual(net, padded, conf, g, alpha=alpha, beta=beta, conf_ref=conf_ref, margin=margin,
                          core=core, views=views, bf16=bf16, bar=bar)
    finally:
        net.train(was_training)
        if bar is not None:
            bar.close()
    del padded, conf
    # High-pass over the whole assembled residual (after tiling, so the tiles
    # cannot show): the refinement adds detail, never a local brightness shift.
    resid = np.ascontiguousarray(resid[:h, :w])
    resid -= _local_mean(resid)
    resid *= np.float32(strength / len(views))
    fused = img[:h, :w]
    resid += fused
    if overshoot < np.inf:
        limit_overshoot(_as3(resid), _as3(np.ascontiguousarray(fused)), float(overshoot))
    return resid


def _as3(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1) view; (H, W, C) unchanged."""
    return a[..., None] if a.ndim == 2 else a


def _residual(net: RefineNet, img: np.ndarray, conf: np.ndarray, g: torch.Tensor, *, alpha: float, beta: float,
              conf_ref: float, margin: int, core: int, views, bf16: bool, bar) -> np.ndarray:
    """The network's residual, summed over ``views``, for an image padded by ``margin`` on every side.

    ``img`` and ``conf`` hold the padded image (H + 2 margin, W + 2 margin[, 3],
    H and W even) and confidence. Each tile is read with ``margin`` pixels of
    context and only its core is kept, so the result, shape (H, W[, 3]), does
    not depend on the tiling; hence turning each tile is turning the image.
    """
    grey = img.ndim == 2
    ph, pw = img.shape[0] - 2 * margin, img.shape[1] - 2 * margin
    resid = np.empty((ph, pw) if grey else (ph, pw, 3), np.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for y0, y1, cy0, cy1 in _spans(ph, core, margin):
            for x0, x1, cx0, cx1 in _spans(pw, core, margin):
                planes = pixel_features(
                    img[y0:y1, x0:x1], conf[y0:y1, x0:x1], conf_ref=conf_ref, noise=(alpha, beta)
                )
                # plain (N, C, H, W) input: the network's first concatenations and
                # pixel unshuffle run faster on it than on channels-last
                x = torch.from_numpy(planes)[None]
                total = None
                for turns, flip in views:
                    v = torch.rot90(x.flip(3) if flip else x, turns, dims=(2, 3)).contiguous()
                    out = torch.rot90(net(v, g).float(), -turns, dims=(2, 3))
                    out = out.flip(3) if flip else out
                    total = out if total is None else total + out
                res = total[0].numpy()[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
                core_px = res.mean(axis=0) if grey else np.moveaxis(res, 0, 2)
                resid[cy0 - margin : cy1 - margin, cx0 - margin : cx1 - margin] = core_px
                if bar is not None:
                    bar.update()
    return resid
