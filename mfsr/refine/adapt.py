"""Fine-tune the refinement network on your own bursts, without ground truth.

Usage::

    python -m mfsr.refine.adapt BURST_DIR [BURST_DIR ...] --out my-weights/ --scale 2 --minutes 10
    mfsr fuse BURST_DIR -o fused.png --scale 2 --refine-weights my-weights/

The shipped network learnt from simulated bursts; a camera's own noise, optics
and processing differ from them. Each frame of a real burst, left out of the
fusion, is an independent exposure of the scene: the refined fusion of the
other frames, re-degraded to its geometry (:mod:`mfsr.held_out`), should
predict it. The fine-tune minimises the training's loss (the log ratio of the
refined and the plain fusion's squared errors, examples made worse counting
``1 + harm_weight`` times), measured on the held-out frame's pixels, on patches
of all the bursts given.

Of each burst, up to ``holdouts`` frames other than the reference are held out
in turn; the last of them is kept for validation and never trained on. The
strength is then chosen on the validation frames by the rule of the shipped
real-capture limits (``benchmarks/bench_real.py --only strength``): the
largest of :data:`STRENGTHS` whose worst validation frame loses at most
:data:`MAX_LOSS_DB` against the plain fusion and whose mean gain is not below
that of a smaller accepted strength; 0 (no refinement) when none qualifies.

The output folder is a complete weight folder (what ``refine_image(...,
weights=DIR)``, ``fuse(..., refine_weights=DIR)`` and ``mfsr fuse
--refine-weights DIR`` take): the adapted network for the bursts' mode (grey,
RGB or Bayer), the base network for the other modes, and a ``manifest.json``
whose strength for the adapted mode is the validated one at the adapted scale
(and, having been measured there only, at every scale), with an ``adapt``
record of the run: command, bursts, steps, and the validation gains of the
base and the adapted network at every strength.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..alignment import align
from ..cfa import channel_map, check_pattern
from ..held_out import frame_centres, held_out_psnr
from ..merge import merge
from ..noise import estimate_noise
from ..registration import register
from ..validation import as_burst
from ._features import confidence_reference, global_features, pixel_features
from ._inference import native_bf16, refine_image
from ._network import RefineNet
from ._weights import MODES, WEIGHTS_DIR, load_refiner, refiner_ensemble, refiner_strength, save_weights

__all__ = ["HeldOutFrame", "AdaptResult", "held_out_frames", "degrade", "sampling_positions", "held_out_loss",
           "choose_strength", "adapt", "main"]

#: Strengths tried on the validation frames.
STRENGTHS = (0.1, 0.25, 0.5, 0.8, 1.0)
#: The most a validation frame may lose against the plain fusion, dB.
MAX_LOSS_DB = 0.05
#: Floor of the squared errors (the training's: 60 dB).
MSE_FLOOR = 1e-6
#: Extra weight on patches the network makes worse (the training's fine-tune value).
HARM_WEIGHT = 10.0
#: Patches per step, and their side in input px at scale 1 (divided by the scale).
BATCH = 8
PATCH_INPUT_PX = 48
#: Frame border left out of the validation scores, and of the training patches, input px.
BORDER = 16
PATCH_BORDER = 4
#: Name of the adapted network's file in the output folder.
ADAPTED_FILE = "refiner_{mode}_adapted.pt"


@dataclass
class HeldOutFrame:
    """One held-out frame and the plain fusion of the others.

    Attributes
    ----------
    burst : str
        Name of the burst (its folder).
    frame : int
        Index of the held-out frame in its burst.
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Plain fusion (``refine=False``) of the other frames at ``scale``.
    confidence : ndarray of float32, shape (H, W)
    noise : (float, float)
        The fusion's noise model.
    target : ndarray of float32, shape (h, w), (h, w, 3), or a (h, w) mosaic
        The held-out frame itself.
    flow : ndarray of float32, shape (h, w, 2)
        Its flow to the reference (:func:`mfsr.register`).
    cfa : str or None
        Bayer pattern of mosaic frames.
    scale : int
    """

    burst: str
    frame: int
    image: np.ndarray
    confidence: np.ndarray
    noise: tuple[float, float]
    target: np.ndarray
    flow: np.ndarray
    cfa: str | None
    scale: int

    @property
    def mode(self) -> str:
        return "cfa" if self.cfa is not None else ("grey" if self.image.ndim == 2 else "rgb")


@dataclass
class AdaptResult:
    """Outcome of :func:`adapt`.

    Attributes
    ----------
    out : Path
        The weight folder written.
    mode : str
        The mode adapted ("grey", "rgb" or "cfa").
    scale : int
    strength : float
        Chosen strength (0: the adapted network did not pass validation).
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall time of the fine-tune.
    validation : dict
        ``{"base": {strength: [mean, worst]}, "adapted": {...}, "base_default": [strength, mean, worst]}``:
        held-out-frame gains (dB) over the plain fusion on the validation frames.
    """

    out: Path
    mode: str
    scale: int
    strength: float
    steps: int
    seconds: float
    validation: dict


def _check_scale(scale) -> int:
    s = float(scale)
    if isinstance(scale, bool) or not np.isfinite(s) or s < 1 or s > 4 or s != round(s):
        raise ValueError(f"scale: expected an integer scale from 1 to 4 (held-out frames are predicted by "
                         f"integrating whole output pixels), got {scale!r}")
    return int(round(s))


def held_out_frames(
    frames: np.ndarray,
    *,
    scale: int,
    cfa: str | None = None,
    reference: int = 0,
    holdouts: int = 3,
    name: str = "burst",
) -> list[HeldOutFrame]:
    """Hold frames of one burst out in turn and fuse the others.

    Parameters
    ----------
    frames : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
        The burst, linear, nominally [0, 1] (Bayer mosaics with ``cfa``);
        N >= 3.
    scale : int
        Output scale, 1 to 4.
    cfa : str or None
        Bayer pattern of mosaic frames.
    reference : int
        Reference frame (never held out).
    holdouts : int
        How many frames to hold out, spread evenly over the non-reference ones.
    name : str
        Name of the burst in reports.

    Returns
    -------
    list of HeldOutFrame
        In burst order of the held-out frames.
    """
    s = _check_scale(scale)
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[3] != 3):
        raise ValueError(f"frames: expected (N, H, W) or (N, H, W, 3), got shape {frames.shape}")
    if cfa is not None:
        cfa = check_pattern(cfa)
        if frames.ndim != 3:
            raise ValueError(f"frames: Bayer mosaics must be (N, H, W), got shape {frames.shape}")
    n = frames.shape[0]
    if n < 3:
        raise ValueError(f"frames: held-out-frame adaptation needs at least 3 frames per burst, got {n} ({name})")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"frames: non-finite values in burst {name}")
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) or not 0 <= reference < n:
        raise ValueError(f"reference: expected a frame index in 0..{n - 1}, got {reference!r}")
    if isinstance(holdouts, bool) or not isinstance(holdouts, (int, np.integer)) or holdouts < 1:
        raise ValueError(f"holdouts: expected a positive integer, got {holdouts!r}")
    flows = register(frames, reference=reference, cfa=cfa)
    candidates = [k for k in range(n) if k != reference]
    spread = np.linspace(0, len(candidates) - 1, min(holdouts, len(candidates)))
    picks = sorted({candidates[int(np.floor(i + 0.5))] for i in spread})
    out = []
    for k in picks:
        others = [i for i in range(n) if i != k]
        # The align and merge stages as mfsr.fuse runs them, on the known flow.
        kept, kept_cfa, ref = as_burst(frames[others], cfa, others.index(reference))
        noise = tuple(float(v) for v in estimate_noise(kept[ref], kept_cfa))
        res = merge(kept, align(kept, kept_cfa, ref, flow=flows[others]), scale=s, cfa=kept_cfa, reference=ref,
                    noise=noise)
        out.append(HeldOutFrame(burst=name, frame=k, image=res.image, confidence=res.confidence, noise=noise,
                                target=np.ascontiguousarray(frames[k], np.float32), flow=flows[k], cfa=cfa, scale=s))
    return out


# ----------------------------------------------------------------------------- training


#: Cubic B-spline interpolation: the prefilter's pole, and its impulse
#: response truncated where it falls below 1e-6 (the same interpolation as
#: ``scipy.ndimage.map_coordinates(order=3)`` away from the borders).
_POLE = math.sqrt(3.0) - 2.0
_PREFILTER_RADIUS = 10


def _separable(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    r = (taps.numel() - 1) // 2
    c = image.shape[1]
    out = F.pad(image, (r, r, r, r), mode="replicate")
    out = F.conv2d(out, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _spline_sample(image: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    # Coefficients by the (truncated) inverse of the B-spline's [1, 4, 1] / 6,
    # then the 4 x 4 basis weights at every position.
    k = torch.arange(-_PREFILTER_RADIUS, _PREFILTER_RADIUS + 1, dtype=image.dtype)
    coef = _separable(image, math.sqrt(3.0) * _POLE ** k.abs())
    b, c, h, w = coef.shape
    flat = coef.reshape(b, c, h * w)
    y, x = pos[..., 0].reshape(b, -1), pos[..., 1].reshape(b, -1)
    iy, ix = torch.floor(y), torch.floor(x)
    ty, tx = y - iy, x - ix

    def basis(t):
        return ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)

    wy, wx = basis(ty), basis(tx)
    out = torch.zeros((b, c, y.shape[1]), dtype=image.dtype)
    for dy in range(4):
        rows = (iy.long() + dy - 1).clamp(0, h - 1)
        for dx in range(4):
            cols = (ix.long() + dx - 1).clamp(0, w - 1)
            idx = (rows * w + cols)[:, None, :].expand(b, c, -1)
            out = out + (wy[dy] * wx[dx])[:, None, :] * flat.gather(2, idx)
    return out.reshape(b, c, *pos.shape[1:3])


def degrade(image: torch.Tensor, pos: torch.Tensor, scale: int, blur: float = 0.0) -> torch.Tensor:
    """Blur, integrate over input pixels and sample at ``pos`` (torch twin of :func:`mfsr.held_out.predict_frame`).

    Parameters
    ----------
    image : tensor, shape (B, C, H, W)
    pos : tensor, shape (B, h, w, 2)
        ``(y, x)`` index coordinates on the box-integrated image (a box of
        ``scale`` px starting at index ``q``; see :func:`sampling_positions`).
    scale : int
    blur : float
        Gaussian sigma of the optics, output px (0: none).

    Returns
    -------
    tensor, shape (B, C, h, w)
        Cubic-spline samples, as ``scipy.ndimage.map_coordinates(order=3)``.
    """
    if blur > 0:
        r = max(1, int(4.0 * blur + 0.5))  # scipy's gaussian_filter radius
        x = torch.arange(-r, r + 1, dtype=image.dtype)
        g = torch.exp(-0.5 * (x / blur) ** 2)
        image = _separable(image, g / g.sum())
    pooled = F.avg_pool2d(image, scale, stride=1) if scale > 1 else image
    return _spline_sample(pooled, pos)


def sampling_positions(centres: np.ndarray, origin: tuple[int, int], scale: int) -> np.ndarray:
    """Index coordinates of output-px ``centres`` on a crop at ``origin``, after the box.

    A box of ``scale`` px whose window starts at index ``q`` is centred at
    ``q + (scale - 1) / 2``, so a centre ``c`` is index
    ``c - origin - (scale - 1) / 2`` of the box-integrated crop.
    """
    u = centres - np.asarray(origin, np.float32) - np.float32((scale - 1) / 2)
    return np.ascontiguousarray(u, np.float32)


class _Patches:
    """Random patches of held-out frames: network inputs, sampling grids, targets."""

    def __init__(self, examples: list[HeldOutFrame], margin: int) -> None:
        self.examples = examples
        s = examples[0].scale
        self.scale = s
        self.q = max(8, PATCH_INPUT_PX // s)
        side = s * self.q + 2 * margin + 8
        self.side = side + side % 2  # even: the network unshuffles by 2
        self.margin = margin
        self.prepared = []
        for ex in examples:
            h, w = ex.image.shape[:2]
            if h < self.side or w < self.side or min(ex.target.shape[:2]) < self.q + 2 * PATCH_BORDER + 2:
                raise ValueError(f"bursts: burst {ex.burst} is too small to adapt on at scale {s} "
                                 f"(fused {w}x{h}; need at least {self.side} px a side)")
            conf_ref = confidence_reference(ex.confidence)
            planes = pixel_features(ex.image, ex.confidence, conf_ref=conf_ref, noise=ex.noise)
            g = global_features(cfa=ex.cfa is not None, grey=ex.image.ndim == 2, scale=s, conf_ref=conf_ref)
            target = ex.target[..., None] if ex.target.ndim == 2 else ex.target
            chans = channel_map(ex.cfa, ex.target.shape) if ex.cfa is not None else None
            self.prepared.append((planes, g, frame_centres(ex.flow, s), np.moveaxis(target, -1, 0), chans))

    def batch(self, rng: np.random.Generator, size: int):
        planes, gl, grids, targets, masks, chans = [], [], [], [], [], []
        q, side, m, s = self.q, self.side, self.margin, self.scale
        b = PATCH_BORDER
        tries = 0
        while len(planes) < size:
            tries += 1
            if tries > 100 * size:
                raise ValueError("bursts: the held-out frames' pixels do not fall on the fused patches "
                                 "(a registration far off?); no training patch found")
            p, g, centres, target, ch = self.prepared[int(rng.integers(len(self.prepared)))]
            h, w = target.shape[1:]
            ly, lx = int(rng.integers(b, h - q - b + 1)), int(rng.integers(b, w - q - b + 1))
            c = centres[ly:ly + q, lx:lx + q]
            hh, ww = p.shape[1:]
            y0 = int(np.clip(np.floor(c[..., 0].min()) - m, 0, hh - side))
            x0 = int(np.clip(np.floor(c[..., 1].min()) - m, 0, ww - side))
            rel = c - np.array([y0, x0], np.float32)
            # Away from the crop's edges the network sees what it sees in the
            # whole image; at the image's own edges, only the box's support counts.
            lo = np.array([m if y0 > 0 else s + 2, m if x0 > 0 else s + 2], np.float32)
            hi = np.array([side - 1 - (m if y0 + side < hh else s + 2), side - 1 - (m if x0 + side < ww else s + 2)],
                          np.float32)
            ok = np.all((rel >= lo) & (rel <= hi), axis=-1)
            if ok.mean() < 0.5:
                continue
            planes.append(p[:, y0:y0 + side, x0:x0 + side])
            gl.append(g)
            grids.append(sampling_positions(c, (y0, x0), s))
            targets.append(target[:, ly:ly + q, lx:lx + q])
            masks.append(ok[None].astype(np.float32))
            if ch is not None:
                chans.append(ch[None, ly:ly + q, lx:lx + q].astype(np.int64))
        as_t = lambda xs: torch.from_numpy(np.ascontiguousarray(np.stack(xs)))  # noqa: E731
        return (as_t(planes), as_t(gl), as_t(grids), as_t(targets), as_t(masks), as_t(chans) if chans else None)


def held_out_loss(net: RefineNet, planes, gl, grid, target, mask, channels, *, scale: int, grey: bool,
                  harm_weight: float = HARM_WEIGHT, bf16: bool = False, blur: float = 0.0) -> torch.Tensor:
    """Mean log ratio of held-out-frame errors, refined over plain fusion, plus the harm term.

    Parameters
    ----------
    net : RefineNet
    planes : tensor (B, F, P, P)
        Network inputs of the fused patches (:func:`mfsr.refine._features.pixel_features`).
    gl : tensor (B, G)
    grid : tensor (B, q, q, 2)
        Where the held-out frame's pixels sample the box-integrated patch (:func:`sampling_positions`).
    target : tensor (B, C, q, q)
        The held-out frame's pixels (C = 1 for grey frames and mosaics).
    mask : tensor (B, 1, q, q)
        1 where the pixel counts.
    channels : tensor (B, 1, q, q) of int64 or None
        For mosaics: the colour each pixel records.
    scale : int
    grey : bool
        Grey frames: the refined image is scored on its channel mean.
    blur : float
        The optics' Gaussian blur in the prediction, output px (:func:`degrade`).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        resid = net(planes, gl)
    fused = planes[:, :3]
    out = fused + resid.float()
    if grey:
        fused, out = fused.mean(1, keepdim=True), out.mean(1, keepdim=True)
    pf, pr = degrade(fused, grid, scale, blur), degrade(out, grid, scale, blur)
    if channels is not None:
        pf, pr = pf.gather(1, channels), pr.gather(1, channels)
    n = mask.sum(dim=(1, 2, 3)) * target.shape[1]
    mse_f = ((pf - target).square() * mask).sum(dim=(1, 2, 3)) / n + MSE_FLOOR
    mse_r = ((pr - target).square() * mask).sum(dim=(1, 2, 3)) / n + MSE_FLOOR
    log_ratio = torch.log(mse_r / mse_f)
    return (log_ratio + harm_weight * F.relu(log_ratio)).mean()


# ----------------------------------------------------------------------------- validation


def choose_strength(gains: dict, max_loss: float = MAX_LOSS_DB) -> float:
    """The largest strength whose worst gain is >= ``-max_loss`` and mean not below a smaller accepted one's.

    Parameters
    ----------
    gains : dict
        strength -> sequence of gains (dB) over the plain fusion, one per case.

    Returns
    -------
    float
        0.0 when no strength qualifies.
    """
    chosen, best_mean = 0.0, 0.0
    for st in sorted(gains):
        g = np.asarray(gains[st], float)
        if st <= 0 or g.size == 0 or not np.all(np.isfinite(g)):
            continue
        if g.min() >= -max_loss and g.mean() >= best_mean:
            chosen, best_mean = float(st), float(g.mean())
    return chosen


def _gains(weights, examples: list[HeldOutFrame], plain: list[float], strengths, ensemble: int | None,
           blur: float) -> dict:
    # Held-out gains over the plain fusion, whose scores ``plain`` are given.
    out = {st: [] for st in strengths}
    for ex, base in zip(examples, plain):
        for st in strengths:
            refined = refine_image(ex.image, ex.confidence, cfa=ex.cfa, scale=ex.scale, noise=ex.noise,
                                   weights=weights, strength=st, ensemble=ensemble)
            out[st].append(held_out_psnr(refined, ex.flow, ex.target, ex.scale, cfa=ex.cfa, crop=BORDER, blur=blur)
                           - base)
    return out


def _summary(gains: dict) -> dict:
    return {f"{st:g}": [round(float(np.mean(g)), 3), round(float(np.min(g)), 3)] for st, g in gains.items()}


# ----------------------------------------------------------------------------- the run


def _write_folder(out: Path, net: RefineNet, mode: str, scale: int, strength: float, ensemble: int,
                  base, record: dict) -> None:
    base_dir = WEIGHTS_DIR if base is None else Path(base)
    manifest_path = base_dir / "manifest.json"
    if not base_dir.is_dir() or not manifest_path.is_file():
        raise ValueError(f"weights: expected a weight folder with a manifest.json, got {base_dir}")
    manifest = json.loads(manifest_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    name = ADAPTED_FILE.format(mode=mode)
    files = {}
    for other in MODES:
        if other == mode:
            continue
        fname = manifest["modes"][other]
        if fname not in files:
            if base_dir.resolve() != out.resolve():
                shutil.copyfile(base_dir / fname, out / fname)
            files[fname] = manifest["files"][fname]
    files[name] = save_weights(net, out / name)
    manifest["modes"] = {**manifest["modes"], mode: name}
    manifest["files"] = files
    table = {str(scale): strength}
    manifest.setdefault("strength", {})[mode] = table
    manifest.setdefault("strength_known_psf", {})[mode] = dict(table)
    manifest.setdefault("ensemble", {})[mode] = ensemble
    manifest.get("real_capture_limit", {}).pop(mode, None)  # this run's validation replaces it
    manifest["adapt"] = record
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")


def adapt(
    bursts: list[HeldOutFrame],
    out: str | os.PathLike,
    *,
    minutes: float | None = 10.0,
    steps: int | None = None,
    lr: float = 1e-4,
    harm_weight: float = HARM_WEIGHT,
    seed: int = 0,
    weights=None,
    psf_sigma: float | None = None,
    overwrite: bool = False,
    command: str = "",
    log=print,
) -> AdaptResult:
    """Fine-tune the refinement on held-out frames and write a weight folder.

    Parameters
    ----------
    bursts : list of HeldOutFrame
        From :func:`held_out_frames`, one mode and one scale. Of every burst,
        its last held-out frame validates; the others train (a burst with a
        single held-out frame only validates).
    out : path
        Folder to write (see the module docstring).
    minutes, steps
        Length of the fine-tune: ``steps`` optimiser steps if given, else
        ``minutes`` of wall time.
    lr : float
        Adam learning rate, decayed to 1e-6 by a cosine.
    harm_weight : float
        Extra weight of patches the network makes worse.
    seed : int
    weights : path or None
        Base weight folder (default: the shipped weights).
    psf_sigma : float or None
        The optics' blur, if known: Gaussian sigma in input px (as
        ``fuse(..., psf_sigma=)``). Held-out frames are then predicted
        through it, in training and validation, so that undoing it counts as
        a gain; unknown (None), the prediction has no optical blur and the
        fine-tune aims at the optical image rather than at the scene (see
        :func:`mfsr.held_out.predict_frame`). The network itself runs blind
        either way, as ``fuse`` runs it by default.
    overwrite : bool
        Replace a weight folder already at ``out``.
    command : str
        The command line, recorded in the manifest.
    log : callable

    Returns
    -------
    AdaptResult
    """
    if not bursts:
        raise ValueError("bursts: expected at least one held-out frame")
    modes = {ex.mode for ex in bursts}
    scales = {ex.scale for ex in bursts}
    if len(modes) != 1 or len(scales) != 1:
        raise ValueError(f"bursts: all of one mode and scale, got modes {sorted(modes)} and scales {sorted(scales)}")
    mode, scale = modes.pop(), scales.pop()
    out = Path(out)
    if (out / "manifest.json").exists() and not overwrite:
        raise ValueError(f"out: {out} already holds a weight folder; pass overwrite=True (--overwrite) to replace it")
    if steps is None and (minutes is None or not minutes > 0):
        raise ValueError(f"minutes: expected a duration > 0 (or give steps), got {minutes!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0):
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a learning rate > 0, got {lr!r}")
    if psf_sigma is not None and not (np.isfinite(psf_sigma) and psf_sigma >= 0):
        raise ValueError(f"psf_sigma: expected a Gaussian sigma >= 0 (input px), got {psf_sigma!r}")
    blur = 0.0 if psf_sigma is None else float(psf_sigma) * scale
    by_burst: dict[str, list[HeldOutFrame]] = {}
    for ex in bursts:
        by_burst.setdefault(ex.burst, []).append(ex)
    val = [exs[-1] for exs in by_burst.values()]
    train = [ex for exs in by_burst.values() for ex in exs[:-1]]
    if not train:
        raise ValueError("bursts: every burst gave a single held-out frame, kept for validation; hold out at least "
                         "2 frames (holdouts >= 2)")
    base_net = load_refiner(mode, weights)
    ensemble = refiner_ensemble(mode, weights) or 1
    default_strength = refiner_strength(mode, scale, weights)
    log(f"adapt: {mode} fusions at scale {scale}: {len(train)} training and {len(val)} validation frame(s) "
        f"from {len(by_burst)} burst(s)")

    plain = [held_out_psnr(ex.image, ex.flow, ex.target, ex.scale, cfa=ex.cfa, crop=BORDER, blur=blur) for ex in val]
    base_gains = _gains(weights, val, plain, STRENGTHS, ensemble, blur)
    if default_strength <= 0:
        default_gain = [0.0] * len(val)
    elif default_strength in base_gains:
        default_gain = base_gains[default_strength]
    else:
        default_gain = _gains(weights, val, plain, (default_strength,), ensemble, blur)[default_strength]

    net = copy.deepcopy(base_net)
    for p in net.parameters():
        p.requires_grad_(True)
    patches = _Patches(train, margin=net.radius + 4)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    bf16 = native_bf16()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t0 = time.time()
    step, acc, acc_n = 0, 0.0, 0
    grey = mode == "grey"
    while True:
        frac = step / steps if steps is not None else (time.time() - t0) / (60.0 * minutes)
        if (steps is not None and step >= steps) or frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = 1e-6 + 0.5 * (lr - 1e-6) * (1 + math.cos(math.pi * min(frac, 1.0)))
        planes, gl, grid, target, mask, chans = patches.batch(rng, BATCH)
        net.train()
        loss = held_out_loss(net, planes.contiguous(memory_format=torch.channels_last), gl, grid, target, mask,
                             chans, scale=scale, grey=grey, harm_weight=harm_weight, bf16=bf16, blur=blur)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc += loss.item()
        acc_n += 1
        if step % 50 == 0:
            log(f"step {step}: held-out gain {-10 / math.log(10) * acc / acc_n:+.3f} dB (training patches), "
                f"{time.time() - t0:.0f} s")
            acc, acc_n = 0.0, 0
    seconds = time.time() - t0
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    adapted_gains = _gains(net, val, plain, STRENGTHS, ensemble, blur)
    strength = choose_strength(adapted_gains)
    validation = {"base": _summary(base_gains), "adapted": _summary(adapted_gains),
                  "base_default": [default_strength, round(float(np.mean(default_gain)), 3),
                                   round(float(np.min(default_gain)), 3)]}
    record = {
        "command": command,
        "bursts": {name: [ex.frame for ex in exs] for name, exs in by_burst.items()},
        "validation_frames": {ex.burst: ex.frame for ex in val},
        "scale": scale,
        "steps": step,
        "seconds": round(seconds, 1),
        "lr": lr,
        "harm_weight": harm_weight,
        "psf_sigma": psf_sigma,
        "seed": seed,
        "precision": "bf16" if bf16 else "fp32",
        "rule": f"largest strength in {', '.join(f'{s:g}' for s in STRENGTHS)} whose worst validation frame loses "
                f"at most {MAX_LOSS_DB} dB against the plain fusion, its mean not below a smaller accepted one's",
        "validation_gain_db_mean_worst": validation,
        "strength": strength,
        "date": time.strftime("%Y-%m-%d"),
    }
    _write_folder(out, net, mode, scale, strength, ensemble, weights, record)
    return AdaptResult(out=out, mode=mode, scale=scale, strength=strength, steps=step, seconds=seconds,
                       validation=validation)


def _read_burst(folder: Path):
    """(frames, cfa) of a burst folder: RAW files, or image files."""
    from ..image_io import read_frames
    from ..raw_io import RAW_SUFFIXES, load_burst

    if folder.is_dir() and any(p.suffix.lower() in RAW_SUFFIXES for p in folder.iterdir() if p.is_file()):
        raw = load_burst(folder)
        return raw.frames, raw.cfa
    frames, _ = read_frames([folder])
    return frames, None


def _report(res: AdaptResult) -> str:
    v = res.validation
    lines = [f"validation: held-out-frame gain over the plain fusion, dB (mean / worst), {res.mode} at scale {res.scale}",
             "strength    shipped network    adapted network"]
    for st in v["adapted"]:
        b, a = v["base"][st], v["adapted"][st]
        lines.append(f"{st:>8}    {b[0]:+7.3f} / {b[1]:+7.3f}  {a[0]:+7.3f} / {a[1]:+7.3f}")
    d = v["base_default"]
    lines.append(f"shipped default (strength {d[0]:g}): {d[1]:+.3f} / {d[2]:+.3f}")
    if res.strength > 0:
        lines.append(f"chosen strength {res.strength:g}; weights in {res.out} (use --refine-weights {res.out})")
    else:
        lines.append(f"no strength passes validation: the folder {res.out} refines {res.mode} fusions at strength 0 "
                     "(off); more or longer bursts may help")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfsr.refine.adapt", description=__doc__.splitlines()[0])
    parser.add_argument("bursts", nargs="+", help="burst folders (RAW files, or image files of one size)")
    parser.add_argument("--out", required=True, help="weight folder to write")
    parser.add_argument("--scale", type=float, default=2.0, help="output scale, an integer 1 to 4 (default 2)")
    parser.add_argument("--minutes", type=float, default=10.0, help="fine-tune wall time (default 10)")
    parser.add_argument("--steps", type=int, help="fine-tune this many steps instead of --minutes")
    parser.add_argument("--holdouts", type=int, default=3, help="frames held out per burst (default 3; the last "
                        "validates)")
    parser.add_argument("--reference", type=int, default=0, help="reference frame of every burst (default 0)")
    parser.add_argument("--cfa", help="Bayer pattern, for bursts of mosaics stored as image files")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--harm-weight", type=float, default=HARM_WEIGHT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="base weight folder (default: the shipped weights)")
    parser.add_argument("--psf-sigma", type=float, metavar="PX",
                        help="the optics' blur, if known (Gaussian sigma, sensor px): held-out frames are predicted "
                        "through it, so undoing it counts (default: unknown, no optical blur in the prediction)")
    parser.add_argument("--overwrite", action="store_true", help="replace a weight folder already at --out")
    args = parser.parse_args(argv)
    try:
        scale = _check_scale(args.scale)
        examples = []
        for b in map(Path, args.bursts):
            if not b.exists():
                raise ValueError(f"bursts: {b} does not exist")
            frames, cfa = _read_burst(b)
            cfa = cfa or args.cfa
            print(f"{b}: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}"
                  f"{' ' + cfa if cfa else ''}; fusing with frames held out", flush=True)
            examples += held_out_frames(frames, scale=scale, cfa=cfa, reference=args.reference,
                                        holdouts=args.holdouts, name=b.name or str(b))
        res = adapt(examples, args.out, minutes=args.minutes, steps=args.steps, lr=args.lr,
                    harm_weight=args.harm_weight, seed=args.seed, weights=args.weights, psf_sigma=args.psf_sigma,
                    overwrite=args.overwrite,
                    command=" ".join(["python -m mfsr.refine.adapt", *(argv if argv is not None else sys.argv[1:])]),
                    log=lambda m: print(m, flush=True))
    except (ValueError, OSError) as exc:
        print(f"mfsr.refine.adapt: error: {exc}", file=sys.stderr)
        return 2
    print(_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
