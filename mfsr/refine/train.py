"""Train the refinement network on simulated bursts fused by the real pipeline.

Usage::

    python -m mfsr.refine.train --out DIR [--minutes M] [--seed S] [--bursts N]
    python -m mfsr.refine.train --out DIR --init SHARED.pt --minutes 0 --cfa-minutes M2   # Bayer stage only

Two phases, and an optional third:

1. **Cache**: ``--bursts`` bursts are simulated with
   :func:`mfsr.synth.simulate_burst` over a wide randomised degradation range
   (Bayer with a random pattern, grey or RGB in the shares
   :data:`MODE_SHARES`, scale 1 to 4, 2 to 16 frames, shifts up to 4 px,
   rotations up to 1 degree, optional smooth local warp and moving object,
   optical blur 0 to 1 HR px, Poisson-Gaussian noise from none to strong) from
   random crops of the training photographs
   (:data:`mfsr.refine.heldout.TRAIN_IMAGES`, random flips, colour gains and
   exposure; grey photos colourised with a smooth random colour field) and
   dead-leaves textures (:func:`draw_burst`, :func:`training_scenes`), and
   fused with :func:`mfsr.fuse` exactly as a user calls it (its own
   registration, estimated noise model, default
   :class:`mfsr.fusion.FusionParams`, so including its final unsharp mask):
   the network learns to correct what users actually get. Each burst's fused
   image, confidence and ground truth are kept in memory as network input
   planes (:mod:`mfsr.refine._features`).
2. **Training** for ``--minutes``: Adam, cosine learning-rate decay over the
   time budget, log MSE-ratio loss with a harm penalty (see :func:`loss_fn`)
   on random 64x64 crops with random flips / 90-degree rotations (the fused
   image is RGB already, so this is exact for CFA bursts too; all four Bayer
   phases are in the data), batches of 16, under bfloat16 autocast with
   float32 weights (``--precision bf16``, the default, for CPUs with
   bfloat16 units, where a time budget then does more steps; ``--precision
   fp32`` for others). A fixed validation set (other seeds, training images)
   is refined through :func:`mfsr.refine.refine_image` every few minutes.
   This network serves every mode. Half the examples of each batch
   (:data:`PSF_KNOWN_SHARE`, drawn anew at every step) are told their true
   optical blur as a global input (``psf_sigma`` of
   :func:`mfsr.refine.refine_image`), the others see "unknown": one network
   for users who know their optics and for those who do not. ``--init`` of
   a network trained before that input existed widens it with zero weights.
3. **Bayer fine-tuning** (optional, ``--cfa-minutes`` > 0; off by default):
   a copy of the shared network trained on ``--cfa-bursts`` Bayer bursts only
   (``--cfa-data all``: fresh bursts of every mode; ``--cfa-harm-weight``: its
   own harm weight) in a cache of their own, learning rate :data:`CFA_LR` with cosine decay,
   optionally with a gated linear filter bank (``--cfa-filters``); it then
   serves Bayer fusions (``refiner_cfa.pt``). Not shipped: it gains on
   simulated bursts and held-out photographs but loses against the plain
   fusion on real sensor texture (the openISP check of
   ``tests/test_realdata_camera.py``; figures in benchmarks/RESULTS.md).

Outputs in ``DIR``: ``refiner.pt`` (and ``refiner_cfa.pt`` after phase 3), ``manifest.json`` (SHA-256,
architecture, the full training configuration, duration, final losses),
``training.csv`` and ``training.png`` (curves of both stages, drawn with
Pillow). Copy the weight files and ``manifest.json`` into
``mfsr/refine/weights/`` to ship them (or pass ``--out mfsr/refine/weights``), then run
``python -m mfsr.refine.calibrate --dir mfsr/refine/weights --ensemble cfa=2`` to fit the
per-mode, per-scale strength of the residual on validation bursts (Bayer
fusions refined as the average of two views of the image).

The shipped weights take two runs: ``--minutes 60 --bursts 1500 --seed 0``
(the network for every mode), then ``--init`` of it with ``--minutes 12
--seed 1 --bursts 1000 --lr 3e-4 --harm-weight 10 --cfa-only``: a fine-tune on
fresh bursts that harms its worst validation bursts less, so the calibration
gives Bayer fusions more of it. It serves grey fusions worse than the shared
network, hence Bayer only. The same layout in one run (``--minutes 48
--bursts 1500 --seed 0 --cfa-minutes 12 --cfa-bursts 1000 --cfa-data all
--cfa-harm-weight 10``) made weaker networks, its shared stage having fewer
steps. The comparisons are in benchmarks/RESULTS.md.

Reproducibility: all randomness comes from ``--seed``; the number of steps
done in ``--minutes`` depends on the machine, so ``--steps`` and
``--cfa-steps`` fix them for a bit-for-bit rerun on the same software.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..alignment import align
from ..merge import merge
from ..metrics import psnr, ssim
from ..noise import estimate_noise
from ..pixel_area import block_mean
from ..synth import dead_leaves, sample_image, simulate_burst
from ..transfer import REC709_LUMA, srgb_to_linear
from ..validation import as_burst
from ._features import PSF_FEATURE_MAX, confidence_reference, global_features, pixel_features
from ._network import RefineNet, n_globals_of, widen_globals
from ._weights import MODES, save_weights, sha256_file, weights_entry
from .heldout import HELDOUT_IMAGES, TRAIN_DEAD_LEAVES_SEEDS, TRAIN_EXTRA_PHOTOS, TRAIN_IMAGES

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
#: Output (ground-truth) side of a training burst, HR px, before rounding.
HR_SIDE = 144
MIN_LR_SIDE = 40
PATCH = 64
BATCH = 16


@dataclass
class Example:
    """One fused training burst as network inputs and target."""

    planes: np.ndarray  # (5, H, W) float32
    globals_: np.ndarray  # (N_GLOBAL_FEATURES,) float32, blur unknown (see _globals_with_blur)
    truth: np.ndarray  # (3, H, W) float32 (grey replicated)
    grey: bool
    info: dict

    def images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fused image, confidence and truth as :func:`mfsr.refine.refine_image` takes them.

        Images are (H, W) for grey examples, (H, W, 3) otherwise. The
        confidence is rebuilt from its plane and the global reference level,
        so it is clipped at 16 times that level, which changes nothing the
        network sees.
        """
        conf_ref = math.expm1(2.0 * float(self.globals_[3]))
        conf = np.expm1(self.planes[3]) * conf_ref
        if self.grey:
            return self.planes[0], conf, self.truth[0]
        return np.moveaxis(self.planes[:3], 0, 2), conf, np.moveaxis(self.truth, 0, 2)


def _extra_photo(package: str, relpath: str, factor: int) -> np.ndarray:
    """One :data:`TRAIN_EXTRA_PHOTOS` file as linear-light float32, area-downsampled."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"training needs the photographs bundled with {package!r}: pip install 'mfsr[train]'"
        )
    path = Path(spec.submodule_search_locations[0]) / relpath
    if path.suffix == ".npz":
        with np.load(path) as z:
            raw = z[z.files[0]]
    else:
        with Image.open(path) as im:
            raw = np.asarray(im.convert("RGB"))
    img = srgb_to_linear(raw.astype(np.float32) / 255.0)
    if factor > 1:
        img = block_mean(img, factor)
    return np.ascontiguousarray(img, np.float32)


#: Draw weights of the natural photographs (others: 1). The held-out test is
#: natural photographs; scenes that are mostly microscopy, a star field, text
#: and textures teach what does not carry over to them.
PHOTO_WEIGHTS = {"china": 3.0, "flower": 3.0, "camera": 2.0, "aero": 2.0, "ascent": 2.0}
#: Share of bursts drawn from dead-leaves textures: their piecewise-constant
#: statistics reward edge snapping that natural images punish.
TEXTURE_SHARE = 0.1


def training_scenes() -> tuple[list[tuple[str, np.ndarray, float]], list[tuple[str, np.ndarray]]]:
    """The scenes training bursts are drawn from (the ``pool`` of :func:`draw_burst`).

    Returns
    -------
    photos : list of (str, ndarray, float)
        Name, image and draw weight (:data:`PHOTO_WEIGHTS`, 1 by default) of
        every training photograph (:data:`mfsr.refine.heldout.TRAIN_IMAGES`
        and :data:`~mfsr.refine.heldout.TRAIN_EXTRA_PHOTOS`); images are
        linear-light float32, (H, W) or (H, W, 3).
    textures : list of (str, ndarray)
        Name and image of the dead-leaves textures
        (:data:`~mfsr.refine.heldout.TRAIN_DEAD_LEAVES_SEEDS`), 384 x 384.
    """
    photos = [(name, sample_image(name), PHOTO_WEIGHTS.get(name, 1.0)) for name in TRAIN_IMAGES]
    for name, package, relpath, factor in TRAIN_EXTRA_PHOTOS:
        photos.append((name, _extra_photo(package, relpath, factor), PHOTO_WEIGHTS.get(name, 1.0)))
    textures = [(f"dead_leaves:{s}", dead_leaves(384, seed=s, grey=(s % 4 == 3))) for s in TRAIN_DEAD_LEAVES_SEEDS]
    return photos, textures


def _smooth_tint(rng, h: int, w: int) -> np.ndarray:
    """A slowly varying random colour field, shape (h, w, 3), values in [0.4, 1].

    Grey photographs are colourised with it: one global tint would make
    chroma an exact copy of luminance, which teaches the network a colour
    prior that real scenes (and held-out photographs) break.
    """
    from scipy.ndimage import zoom

    coarse = rng.uniform(0.4, 1.0, (3, 3, 3)).astype(np.float32)
    field = zoom(coarse, (h / 3, w / 3, 1), order=1, mode="nearest", grid_mode=True)
    return np.clip(field[:h, :w], 0.4, 1.0)


def _draw_scene(rng, pool, side: int, want_grey: bool) -> tuple[str, np.ndarray]:
    """A random crop of a random training scene, with random flips and colour."""
    photos, textures = pool
    if rng.random() >= TEXTURE_SHARE:
        weights = np.array([p[2] for p in photos])
        name, img, _ = photos[int(rng.choice(len(photos), p=weights / weights.sum()))]
    else:
        name, img = textures[int(rng.integers(len(textures)))]
    h, w = img.shape[:2]
    if h < side or w < side:
        reps = (math.ceil(side / h), math.ceil(side / w)) + ((1,) if img.ndim == 3 else ())
        img = np.tile(img, reps)
        h, w = img.shape[:2]
    y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = img[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    crop = np.rot90(crop, int(rng.integers(4)))
    if want_grey:
        if crop.ndim == 3:
            crop = crop @ REC709_LUMA
    else:
        if crop.ndim == 2:
            crop = crop[..., None] * _smooth_tint(rng, side, side)
        else:
            crop = crop * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    peak = max(float(crop.max()), 1e-3)
    # random exposure; never above 1 (the sensor clips, the simulator does not)
    crop = crop * np.float32(rng.uniform(0.35, 1.0) / max(peak, 1.0))
    return name, np.ascontiguousarray(crop, np.float32)


#: Share of bursts per mode. Bayer bursts come first: they are the camera
#: engineers' case and the hardest one; a larger Bayer share trades some grey
#: gain for fewer Bayer bursts made worse.
MODE_SHARES = {"cfa": 0.55, "grey": 0.27, "rgb": 0.18}
#: Share of bursts at scale 1 and 2; the rest is U(1.25, 4).
SCALE_SHARES = {1.0: 0.4, 2.0: 0.35}


def _draw_config(rng, pool, mode: str | None = None, scale: float | None = None) -> tuple[dict, np.ndarray]:
    """Degradation parameters and scene of one burst (``mode``/``scale`` force those draws)."""
    u = rng.random()
    drawn_mode = "cfa" if u < MODE_SHARES["cfa"] else ("grey" if u < 1.0 - MODE_SHARES["rgb"] else "rgb")
    u = rng.random()
    drawn_scale = 1.0 if u < SCALE_SHARES[1.0] else (
        2.0 if u < SCALE_SHARES[1.0] + SCALE_SHARES[2.0] else float(np.round(rng.uniform(1.25, 4.0), 2)))
    mode = drawn_mode if mode is None else mode
    scale = drawn_scale if scale is None else float(scale)
    lr = max(MIN_LR_SIDE, int(round(HR_SIDE / scale)))
    lr += lr % 2
    side = int(math.ceil(lr * scale)) + 1
    name, scene = _draw_scene(rng, pool, side, mode == "grey")
    alpha = 0.0 if rng.random() < 0.2 else float(10 ** rng.uniform(-5, -2))
    beta = 0.0 if rng.random() < 0.25 else float(10 ** rng.uniform(-7, -3))
    cfg = dict(
        mode=mode,
        scene=name,
        scale=scale,
        n_frames=int(rng.integers(2, 17)),
        cfa=PATTERNS[int(rng.integers(4))] if mode == "cfa" else None,
        max_shift=float(rng.uniform(0.5, 4.0)),
        max_rotation=0.0 if rng.random() < 0.3 else float(rng.uniform(0.0, 1.0)),
        local_warp=0.0 if rng.random() < 0.8 else float(rng.uniform(0.0, 0.5)),
        moving_object=bool(rng.random() < 0.1),
        blur_sigma=float(rng.uniform(0.0, 1.0)),
        alpha=alpha,
        beta=beta,
        seed=int(rng.integers(2**31)),
    )
    return cfg, scene


def draw_burst(rng, pool, mode: str | None = None, scale: float | None = None) -> tuple[dict, np.ndarray, object]:
    """One random training burst: degradation parameters, scene and simulated burst.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw (scene, crop, degradation, noise seed).
    pool : (photos, textures)
        Scenes as returned by :func:`training_scenes` (``textures`` may be
        empty).
    mode : {"cfa", "grey", "rgb"} or None
        Forces the burst's mode; drawn from :data:`MODE_SHARES` when None.
    scale : float or None
        Forces the scale; drawn from :data:`SCALE_SHARES` when None.

    Returns
    -------
    cfg : dict
        Keyword arguments of :func:`mfsr.synth.simulate_burst` plus
        ``mode`` and ``scene`` (the scene's name).
    scene : ndarray of float32, shape (S, S) or (S, S, 3)
        The cropped, flipped and recoloured scene, linear light.
    burst : mfsr.synth.SimulatedBurst
    """
    cfg, scene = _draw_config(rng, pool, mode, scale)
    kw = {k: v for k, v in cfg.items() if k not in ("mode", "scene")}
    try:
        burst = simulate_burst(scene, **kw)
    except ValueError:  # e.g. no room for a moving object
        kw["moving_object"] = cfg["moving_object"] = False
        burst = simulate_burst(scene, **kw)
    return cfg, scene, burst


def make_example(burst, cfg: dict) -> Example:
    """Fuse a simulated burst with the default pipeline and build the network inputs."""
    t0 = time.perf_counter()
    # The align and merge stages exactly as mfsr.fuse runs them before its refinement.
    frames, cfa, ref = as_burst(burst.frames, burst.cfa, 0)
    noise = tuple(float(v) for v in estimate_noise(frames[ref], cfa))
    res = merge(frames, align(frames, cfa, ref), scale=burst.scale, cfa=cfa, reference=ref, noise=noise)
    dt = time.perf_counter() - t0
    grey = res.image.ndim == 2
    conf_ref = confidence_reference(res.confidence)
    planes = pixel_features(res.image, res.confidence, conf_ref=conf_ref, noise=noise)
    g = global_features(cfa=burst.cfa is not None, grey=grey, scale=burst.scale, conf_ref=conf_ref)
    truth = burst.ground_truth
    truth = np.repeat(truth[None], 3, 0) if truth.ndim == 2 else np.moveaxis(truth, 2, 0)
    info = dict(cfg, fuse_s=dt, noise_est=noise)
    return Example(planes, g, np.ascontiguousarray(truth, np.float32), grey, info)


def build_cache(n: int, seed: int, log=print, mode: str | None = None) -> tuple[list[Example], float]:
    """Simulate and fuse ``n`` bursts (all of ``mode`` if given); returns the examples and the total fuse time (s)."""
    rng = np.random.default_rng(seed)
    pool = training_scenes()
    out, fuse_total = [], 0.0
    t0 = time.perf_counter()
    for i in range(n):
        cfg, _, burst = draw_burst(rng, pool, mode=mode)
        ex = make_example(burst, cfg)
        fuse_total += ex.info["fuse_s"]
        out.append(ex)
        if (i + 1) % max(1, n // 10) == 0:
            log(f"cache {i + 1}/{n}: {time.perf_counter() - t0:.0f} s (fuse {fuse_total:.0f} s)")
    return out, fuse_total


#: Share of training examples that are told their optical blur (the others
#: see "unknown"), so one network serves users who know their optics and
#: users who do not.
PSF_KNOWN_SHARE = 0.5


def _globals_with_blur(ex: Example, known: bool) -> np.ndarray:
    """The example's global features, told its true optical blur or not."""
    g = ex.globals_.copy()
    if known:
        # blur_sigma is in HR pixels, i.e. output pixels: the feature's unit
        g[4], g[5] = 1.0, min(float(ex.info["blur_sigma"]), PSF_FEATURE_MAX)
    return g


def _batch(rng, cache: list[Example], batch: int, patch: int):
    planes, gl, truth, grey = [], [], [], []
    for _ in range(batch):
        ex = cache[int(rng.integers(len(cache)))]
        _, h, w = ex.planes.shape
        y0, x0 = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        p = ex.planes[:, y0 : y0 + patch, x0 : x0 + patch]
        t = ex.truth[:, y0 : y0 + patch, x0 : x0 + patch]
        k = int(rng.integers(4))
        flip = rng.random() < 0.5
        p, t = np.rot90(p, k, axes=(1, 2)), np.rot90(t, k, axes=(1, 2))
        if flip:
            p, t = p[:, :, ::-1], t[:, :, ::-1]
        planes.append(np.ascontiguousarray(p))
        truth.append(np.ascontiguousarray(t))
        gl.append(_globals_with_blur(ex, bool(rng.random() < PSF_KNOWN_SHARE)))
        grey.append(ex.grey)
    return (
        torch.from_numpy(np.stack(planes)),
        torch.from_numpy(np.stack(gl)),
        torch.from_numpy(np.stack(truth)),
        torch.tensor(grey),
    )


#: Floor of the per-example mean squared error (linear light): 60 dB, so
#: flat, already perfect patches cannot dominate the log ratio.
MSE_FLOOR = 1e-6
#: Extra weight on examples the network makes worse (the do-no-harm term).
#: Training from scratch needs a small one: with 10, the network stays at the
#: identity (benchmarks/RESULTS.md). A fine-tune with 10
#: (``--init``, ``--harm-weight 10``) makes it harm its worst validation bursts
#: less, so the calibration can give it more strength (module docstring).
HARM_WEIGHT = 1.0


def loss_fn(net: RefineNet, planes, gl, truth, grey, *, bf16: bool = False,
            harm_weight: float = HARM_WEIGHT) -> torch.Tensor:
    """Mean log MSE ratio (refined over fused), plus a penalty on harm.

    ``log(mse_refined / mse_fused)`` is, up to the factor ``-10 / ln 10``,
    the example's PSNR gain, so the mean of it is the quantity the
    acceptance measures (the mean dB gain), with every example weighted by
    its *relative* improvement: a plain L1 or L2 is dominated by the hardest
    examples (strong noise, scale 4) and teaches the network to sharpen clean
    scale-1 bursts, which it then harms. Examples the
    network makes worse count ``1 + harm_weight`` times (fidelity first: the
    refinement must not lose on any image). Grey examples are scored on the
    channel mean, as inferred. ``bf16`` runs the network under bfloat16
    autocast (the residual is added and scored in float32).
    """
    with torch.autocast(planes.device.type, dtype=torch.bfloat16, enabled=bf16):
        resid = net(planes, gl)
    out = planes[:, :3] + resid.float()
    g = grey[:, None, None, None]
    out = torch.where(g, out.mean(dim=1, keepdim=True).expand_as(out), out)
    fused = planes[:, :3]
    fused = torch.where(g, fused.mean(dim=1, keepdim=True).expand_as(fused), fused)
    mse_f = (fused - truth).square().mean(dim=(1, 2, 3)) + MSE_FLOOR
    mse_r = (out - truth).square().mean(dim=(1, 2, 3)) + MSE_FLOOR
    log_ratio = torch.log(mse_r / mse_f)
    return (log_ratio + harm_weight * F.relu(log_ratio)).mean()


def evaluate(net: RefineNet, examples: list[Example]) -> dict:
    """Mean L1 and PSNR (8 px border excluded) of fused and refined validation images."""
    from ._inference import refine_image

    l1_f, l1_r, p_f, p_r = [], [], [], []
    for ex in examples:
        img, conf, truth = ex.images()
        out = refine_image(
            img, conf, cfa="RGGB" if ex.globals_[0] > 0.5 else None, scale=ex.info["scale"],
            noise=ex.info["noise_est"], weights=net,
        )
        l1_f.append(float(np.abs(img - truth).mean()))
        l1_r.append(float(np.abs(out - truth).mean()))
        p_f.append(psnr(img, truth, crop=8))
        p_r.append(psnr(out, truth, crop=8))
    return dict(
        val_l1_fused=float(np.mean(l1_f)), val_l1_refined=float(np.mean(l1_r)),
        val_psnr_fused=float(np.mean(p_f)), val_psnr_refined=float(np.mean(p_r)),
    )


#: Training precisions: bfloat16 autocast or plain float32.
PRECISIONS = ("bf16", "fp32")
#: Loss (natural-log MSE ratio) to decibels of PSNR gain.
LOSS_TO_DB = -10.0 / math.log(10.0)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training objective and validation PSNR gain (dB) against step, drawn with Pillow."""
    from PIL import Image, ImageDraw

    W, H, m = 800, 480, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)

    def column(key, stage=None):
        pts = [(r["step"], r[key]) for r in rows
               if r.get(key) not in (None, "") and (stage is None or r.get("stage", "shared") == stage)]
        return [x for x, _ in pts], [float(y) for _, y in pts]

    def val_gain(stage):
        x, ref = column("val_psnr_refined", stage)
        _, fus = column("val_psnr_fused", stage)
        return x, [r - f for r, f in zip(ref, fus)]

    # each stage validates on its own bursts (all modes, then Bayer only): two curves
    series = {
        "train objective (dB gain)": (*column("train_gain_db"), (31, 119, 180)),
        "validation PSNR gain, blind (dB)": (*val_gain("shared"), (214, 39, 40)),
        "Bayer stage: Bayer validation": (*val_gain("cfa"), (255, 127, 14)),
    }
    xs = [x for s in series.values() for x in s[0]]
    ys = [y for s in series.values() for y in s[1] if math.isfinite(y)] + [0.0]
    if not xs:
        img.save(path)
        return
    x_max = max(max(xs), 1)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-6:
        y_lo, y_hi = y_lo - 0.1, y_hi + 0.1

    def px(x, y):
        return (m + (W - 2 * m) * x / x_max, H - m - (H - 2 * m) * (y - y_lo) / (y_hi - y_lo))

    d.rectangle([m, m, W - m, H - m], outline="black")
    cfa_steps = [r["step"] for r in rows if r.get("stage") == "cfa"]
    if cfa_steps:  # where the Bayer fine-tune starts
        x0 = px(min(cfa_steps), y_lo)[0]
        d.line([(x0, m), (x0, H - m)], fill=(150, 150, 150))
    d.line([px(0, 0.0), px(x_max, 0.0)], fill=(180, 180, 180))
    for k in range(5):
        yv = y_lo + (y_hi - y_lo) * k / 4
        _, yy = px(0, yv)
        d.text((4, yy - 6), f"{yv:+.2f}", fill="black")
        xv = x_max * k / 4
        xx, _ = px(xv, y_lo)
        d.text((xx - 10, H - m + 6), f"{int(xv)}", fill="black")
    d.text((W // 2 - 20, H - 24), "step", fill="black")
    d.text((m, 16), "dB (higher is better); refined against fused", fill="black")
    series = {label: v for label, v in series.items() if v[0]}  # no legend for a stage that did not run
    for i, (label, (sx, sy, col)) in enumerate(series.items()):
        pts = [px(x, y) for x, y in zip(sx, sy) if math.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        elif pts:
            d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=col)
        d.text((m + 230 * i, m - 18), label, fill=col)  # legend above the frame, off the curves
    img.save(path)


#: Learning rate at the start of the Bayer fine-tuning stage (cosine decay to 1e-5).
CFA_LR = 3e-4
#: Seed offset of the Bayer fine-tuning cache (its bursts differ from the shared cache's).
CFA_SEED_OFFSET = 20_000
#: What the Bayer stage trains on: Bayer bursts only, or bursts of every mode.
CFA_DATA = ("cfa", "all")
CSV_FIELDS = ["stage", "step", "elapsed_s", "lr", "train_gain_db", "val_l1_fused", "val_l1_refined",
              "val_psnr_fused", "val_psnr_refined"]


def _fit(net: RefineNet, cache: list[Example], val: list[Example], *, stage: str, seconds: float,
         steps: int | None, lr: float, rng, bf16: bool, writer, csv_file, step0: int, eval_every_s: float,
         checkpoint: Path, log, harm_weight: float = HARM_WEIGHT) -> tuple[list[dict], int, dict, float]:
    """One training stage: Adam with cosine decay over ``seconds`` (or ``steps``).

    Returns the logged rows, the number of steps done, the final validation
    and the stage's wall time (s). Steps are logged as ``step0 + step`` so the
    curves of consecutive stages continue one another.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rows: list[dict] = []
    t0 = time.time()
    last_eval = t0
    step, acc, acc_n, cur_lr = 0, 0.0, 0, lr
    while True:
        frac = step / steps if steps is not None else (time.time() - t0) / seconds if seconds > 0 else 1.0
        if frac >= 1.0:
            break
        cur_lr = 1e-5 + 0.5 * (lr - 1e-5) * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        planes, gl, truth, grey = _batch(rng, cache, BATCH, PATCH)
        planes = planes.contiguous(memory_format=torch.channels_last)
        net.train()
        loss = loss_fn(net, planes, gl, truth, grey, bf16=bf16, harm_weight=harm_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc += loss.item()
        acc_n += 1
        if step % 100 == 0:
            row = dict(stage=stage, step=step0 + step, elapsed_s=round(time.time() - t0, 1), lr=cur_lr,
                       train_gain_db=LOSS_TO_DB * acc / acc_n)
            acc, acc_n = 0.0, 0
            if time.time() - last_eval > eval_every_s:
                row.update(evaluate(net, val))
                # a checkpoint, so a crash late in the run loses little
                torch.save(net.state_dict(), checkpoint)
                last_eval = time.time()
                log(f"step {step0 + step} {row}")
            rows.append(row)
            writer.writerow(row)
            csv_file.flush()  # the curves survive a crash
    final = evaluate(net, val)
    row = dict(stage=stage, step=step0 + step, elapsed_s=round(time.time() - t0, 1), lr=cur_lr,
               train_gain_db=LOSS_TO_DB * acc / acc_n if acc_n else (rows[-1]["train_gain_db"] if rows else float("nan")))
    row.update(final)
    rows.append(row)
    writer.writerow(row)
    return rows, step, final, time.time() - t0


def _cache_summary(cache: list[Example], fuse_total: float, seconds: float) -> dict:
    modes = [ex.info["mode"] for ex in cache]
    return {
        "bursts": len(cache),
        "bursts_by_mode": {m: modes.count(m) for m in MODES},
        "cache_seconds": round(seconds, 1),
        "fuse_seconds_total": round(fuse_total, 1),
        "fuse_seconds_per_burst_mean": round(float(np.mean([ex.info["fuse_s"] for ex in cache])), 4) if cache else None,
    }


def train(
    out: Path,
    *,
    minutes: float = 60.0,
    seed: int = 0,
    bursts: int = 1500,
    val_bursts: int = 24,
    steps: int | None = None,
    cfa_minutes: float = 0.0,
    cfa_bursts: int = 600,
    cfa_steps: int | None = None,
    cfa_filters: int = 0,
    init: Path | None = None,
    channels: int = 32,
    blocks: int = 4,
    lr: float = 1e-3,
    eval_every_s: float = 300.0,
    precision: str = "bf16",
    harm_weight: float = HARM_WEIGHT,
    cfa_only: bool = False,
    cfa_data: str = "cfa",
    cfa_harm_weight: float | None = None,
    log=print,
) -> dict:
    """Build the caches, train, and write weights, manifest and curves to ``out``.

    Two stages. **Shared**: one network for all modes (grey, RGB, Bayer),
    ``minutes`` (or ``steps``) on ``bursts`` bursts of every mode.
    **Bayer** (optional, off by default): a copy of it fine-tuned for
    ``cfa_minutes`` (or ``cfa_steps``) on ``cfa_bursts`` Bayer bursts only,
    at a lower learning rate (:data:`CFA_LR`), with ``cfa_filters`` gated
    linear filters added (:class:`RefineNet`), written as ``refiner_cfa.pt``
    and mapped to the "cfa" mode; grey and RGB keep the shared
    ``refiner.pt``. It gains on simulated bursts and held-out photographs
    but loses on real-sensor texture (module docstring), so the shipped
    weights do without it.

    ``init`` starts the shared network from a weight file; with
    ``minutes=0`` the shared stage is skipped and only the Bayer stage runs
    (the init file's manifest, if beside it, is recorded as the shared
    stage's provenance).

    ``cfa_data="all"`` trains the Bayer stage on fresh bursts of every mode
    (:data:`MODE_SHARES`) instead of Bayer bursts only, and
    ``cfa_harm_weight`` (default: ``harm_weight``) is its loss's harm weight:
    with ``"all"`` and 10 the stage is the kind of fine-tune that made the
    shipped Bayer network, in the same run as the shared stage (module
    docstring).

    ``cfa_only`` (needs ``init``, not with the Bayer stage) keeps the
    trained network for Bayer fusions only (``refiner_cfa.pt``); grey and RGB
    fusions keep the ``init`` network, written beside it as ``refiner.pt``:
    the same Bayer fine-tune as a second run.

    ``precision="bf16"`` trains under bfloat16 autocast (float32 weights and
    optimiser): on CPUs with bfloat16 units (AVX512-BF16, AMX) a step is
    faster, so the time budget does more steps, and a step gains as much as
    one in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if init is None and minutes <= 0 and not steps:
        raise ValueError("minutes: the shared stage needs a positive budget (or steps) unless init is given")
    if cfa_only and (init is None or cfa_minutes > 0 or cfa_steps):
        raise ValueError("cfa_only: needs init (the network grey and RGB keep) and no Bayer stage (cfa_minutes)")
    if cfa_data not in CFA_DATA:
        raise ValueError(f"cfa_data: expected one of {CFA_DATA}, got {cfa_data!r}")
    if cfa_harm_weight is None:
        cfa_harm_weight = harm_weight
    bf16 = precision == "bf16"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    torch.manual_seed(seed)
    log(f"torch threads: {torch.get_num_threads()}")
    net = RefineNet(channels, blocks)
    init_info = None
    if init is not None:
        init = Path(init)
        # a network from before the optical blur became an input starts with zero weights on it
        init_state = torch.load(init, map_location="cpu", weights_only=True)
        net.load_state_dict(widen_globals(init_state))
        init_info = {"file": str(init), "sha256": sha256_file(init)}
        beside = init.parent / "manifest.json"
        if beside.is_file():
            init_info["manifest_training"] = json.loads(beside.read_text()).get("training")
    # channels-last: oneDNN's fast convolution layout on CPU (1.5x per step)
    net = net.to(memory_format=torch.channels_last)
    val, _ = build_cache(val_bursts, seed + 10_000, log=lambda *_: None)
    run_shared = minutes > 0 or bool(steps)
    run_cfa = cfa_minutes > 0 or bool(cfa_steps)

    files: dict[str, dict] = {}
    rows: list[dict] = []
    stages: dict[str, dict] = {}
    csv_path = out / "training.csv"
    with open(csv_path, "w", newline="") as fcsv:
        writer = csv.DictWriter(fcsv, fieldnames=CSV_FIELDS)
        writer.writeheader()
        step_total = 0
        if run_shared:
            t0 = time.time()
            cache, fuse_total = build_cache(bursts, seed, log)
            t_cache = time.time() - t0
            log(f"cache ready: {len(cache)} bursts in {t_cache:.0f} s (fuse total {fuse_total:.0f} s)")
            r, n, final, t_train = _fit(
                net, cache, val, stage="shared", seconds=minutes * 60.0, steps=steps, lr=lr,
                rng=np.random.default_rng(seed + 1), bf16=bf16, writer=writer, csv_file=fcsv, step0=0,
                eval_every_s=eval_every_s, checkpoint=out / "refiner_partial.pt", log=log, harm_weight=harm_weight)
            rows += r
            step_total += n
            log(f"shared stage: {n} steps in {t_train:.0f} s; final {final}")
            stages["shared"] = dict(_cache_summary(cache, fuse_total, t_cache), steps=n, minutes_budget=minutes,
                                    lr=lr, train_seconds=round(t_train, 1), final_validation=final,
                                    final_train_gain_db=r[-1]["train_gain_db"])
            del cache
        if cfa_only:
            # the init file itself, byte for byte, so its hash stays the one it was shipped with
            shutil.copyfile(init, out / "refiner.pt")
            base = RefineNet(channels, blocks, n_globals=n_globals_of(init_state))
            base.load_state_dict(init_state)
            files["refiner.pt"] = weights_entry(base, out / "refiner.pt")
            files["refiner_cfa.pt"] = save_weights(net, out / "refiner_cfa.pt")
        else:
            files["refiner.pt"] = save_weights(net, out / "refiner.pt")
        if run_cfa:
            t0 = time.time()
            cache, fuse_total = build_cache(cfa_bursts, seed + CFA_SEED_OFFSET, log,
                                            mode="cfa" if cfa_data == "cfa" else None)
            t_cache = time.time() - t0
            log(f"Bayer cache ready: {len(cache)} bursts in {t_cache:.0f} s")
            val_cfa = [ex for ex in val if ex.info["mode"] == "cfa"] or val
            if cfa_filters:
                # the shared network plus a gated linear filter bank that starts at zero
                grown = RefineNet(channels, blocks, filters=cfa_filters)
                missing, unexpected = grown.load_state_dict(net.state_dict(), strict=False)
                assert not unexpected and all(k.startswith(("bank", "gate")) for k in missing)
                net = grown.to(memory_format=torch.channels_last)
            r, n, final, t_train = _fit(
                net, cache, val_cfa, stage="cfa", seconds=cfa_minutes * 60.0, steps=cfa_steps, lr=CFA_LR,
                rng=np.random.default_rng(seed + CFA_SEED_OFFSET + 1), bf16=bf16, writer=writer,
                csv_file=fcsv, step0=step_total, eval_every_s=eval_every_s, checkpoint=out / "refiner_cfa_partial.pt", log=log,
                harm_weight=cfa_harm_weight)
            rows += r
            log(f"Bayer stage: {n} steps in {t_train:.0f} s; final (Bayer validation bursts) {final}")
            stages["cfa"] = dict(_cache_summary(cache, fuse_total, t_cache), steps=n, minutes_budget=cfa_minutes,
                                 lr=CFA_LR, data=cfa_data, harm_weight=cfa_harm_weight,
                                 train_seconds=round(t_train, 1), validation_bursts=len(val_cfa),
                                 final_validation=final, final_train_gain_db=r[-1]["train_gain_db"])
            files["refiner_cfa.pt"] = save_weights(net, out / "refiner_cfa.pt")
    plot_curves(rows, out / "training.png")
    command = (f"python -m mfsr.refine.train --out {out} --minutes {minutes} --seed {seed} --bursts {bursts} "
               f"--cfa-minutes {cfa_minutes} --cfa-bursts {cfa_bursts} --precision {precision}"
               + (f" --steps {steps}" if steps else "") + (f" --cfa-steps {cfa_steps}" if cfa_steps else "")
               + (f" --cfa-filters {cfa_filters}" if cfa_filters else "")
               + (f" --init {init}" if init is not None else "") + (f" --lr {lr:g}" if lr != 1e-3 else "")
               + (f" --harm-weight {harm_weight:g}" if harm_weight != HARM_WEIGHT else "")
               + (" --cfa-only" if cfa_only else "")
               + (f" --cfa-data {cfa_data}" if cfa_data != "cfa" else "")
               + (f" --cfa-harm-weight {cfa_harm_weight:g}" if cfa_harm_weight != harm_weight else ""))
    manifest = {
        "format": 1,
        "modes": {m: ("refiner_cfa.pt" if m == "cfa" and (run_cfa or cfa_only) else "refiner.pt") for m in MODES},
        "files": files,
        "training": {
            "command": command,
            "seed": seed,
            "init": init_info,
            "stages": stages,
            "train_images": list(TRAIN_IMAGES) + [f"{n} ({pkg}/{rel}, /{f})" for n, pkg, rel, f in TRAIN_EXTRA_PHOTOS],
            "dead_leaves_seeds": list(TRAIN_DEAD_LEAVES_SEEDS),
            "photo_weights": dict(PHOTO_WEIGHTS),
            "texture_share": TEXTURE_SHARE,
            "psf_known_share": PSF_KNOWN_SHARE,
            "heldout_images": list(HELDOUT_IMAGES),
            "validation_bursts": len(val),
            "hr_side": HR_SIDE, "patch": PATCH, "batch": BATCH,
            "degradations": "see mfsr/refine/train.py _draw_config: scale 1, 2 or U(1.25, 4) (scale_shares); "
                            "2-16 frames; shift U(0.5, 4) px; rotation 0 (30%) or U(0, 1) deg; local warp "
                            "U(0, 0.5) px (20%); moving object (10%); blur U(0, 1) HR px; alpha 0 (20%) or "
                            "10^U(-5, -2); beta 0 (25%) or 10^U(-7, -3); fuse() defaults (sharpening on), "
                            "noise model estimated by fuse",
            "fusion_params": "mfsr.fusion.FusionParams() defaults (sharpen_amount=0.6)",
            "loss": f"mean log(MSE refined / MSE fused) (+{MSE_FLOOR:g} each) + {harm_weight:g} x its positive part, "
                    "linear light"
                    + (f"; Bayer stage: {cfa_harm_weight:g} x" if run_cfa and cfa_harm_weight != harm_weight else ""),
            "optimizer": "Adam, cosine decay to 1e-5 over each stage's budget (learning rates per stage)",
            "precision": precision + (" autocast, float32 weights" if bf16 else ""),
            "mode_shares": dict(MODE_SHARES),
            "scale_shares": {f"{k:g}": v for k, v in SCALE_SHARES.items()},
            "total_seconds": round(time.time() - t_start, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor() or 'cpu'}",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {', '.join(files)} and manifest.json to {out}")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train the mfsr refinement network (CPU, about an hour).")
    parser.add_argument("--out", required=True, type=Path, help="output folder for weights, manifest, curves")
    parser.add_argument("--minutes", type=float, default=60.0, help="training-phase budget (after the cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bursts", type=int, default=1500, help="simulated and fused bursts in the cache")
    parser.add_argument("--steps", type=int, default=None, help="fixed step count instead of the time budget")
    parser.add_argument("--cfa-minutes", type=float, default=0.0,
                        help="Bayer fine-tuning stage budget (default 0: one shared network for every mode)")
    parser.add_argument("--cfa-bursts", type=int, default=600, help="Bayer bursts in the fine-tuning cache")
    parser.add_argument("--cfa-steps", type=int, default=None, help="fixed step count of the Bayer stage")
    parser.add_argument("--cfa-filters", type=int, default=0,
                        help="gated linear filters added to the Bayer network (0: none)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this weight file (with --minutes 0: run only the Bayer stage)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="learning rate at the start of the shared stage (cosine decay to 1e-5)")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16",
                        help="bf16: bfloat16 autocast, about 1.5x the steps of fp32 on CPUs with bf16 units")
    parser.add_argument("--harm-weight", type=float, default=HARM_WEIGHT,
                        help="extra loss weight on examples the network makes worse (10 suits a fine-tune "
                             "with --init; from scratch it keeps the network at the identity)")
    parser.add_argument("--cfa-only", action="store_true",
                        help="the trained network serves Bayer fusions only (refiner_cfa.pt); grey and RGB keep "
                             "the --init network (written as refiner.pt)")
    parser.add_argument("--cfa-data", choices=CFA_DATA, default="cfa",
                        help="bursts of the Bayer stage: Bayer only, or every mode (fresh bursts)")
    parser.add_argument("--cfa-harm-weight", type=float, default=None,
                        help="harm weight of the Bayer stage (default: --harm-weight)")
    args = parser.parse_args(argv)
    train(args.out, minutes=args.minutes, seed=args.seed, bursts=args.bursts, steps=args.steps,
          cfa_minutes=args.cfa_minutes, cfa_bursts=args.cfa_bursts, cfa_steps=args.cfa_steps,
          cfa_filters=args.cfa_filters, init=args.init,
          channels=args.channels, blocks=args.blocks, lr=args.lr, precision=args.precision,
          harm_weight=args.harm_weight, cfa_only=args.cfa_only, cfa_data=args.cfa_data,
          cfa_harm_weight=args.cfa_harm_weight,
          log=lambda *a: print(*a, flush=True))


if __name__ == "__main__":
    main()
