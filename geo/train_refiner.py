"""Train the satellite refinement network (:mod:`mfsr.geo.pass_refinement`) on simulated passes.

Command that made the shipped weights (CPU, 2 threads; fixed seeds, fixed
step count, so a rerun gives the same weights up to the floating-point
order of the CPU's kernels)::

    .venv/bin/python -m mfsr.geo.train_refiner --out geo/weights --stacks 300 --steps 3000 --seed 0

**Data.** Pass stacks simulated from real rasters of ``../shared/data``
(never copied into the repository), each band used as grey:

- the Landsat 8 panchromatic band ``landsat8_pan/l8_B8.tif`` (15 m) **minus
  the bottom-centre crop** that ``benchmarks/bench_passes.py`` evaluates on
  at scale 2 (its 512 x 512-pass scene with its margin: rows ``H - 1072`` to
  ``H``, columns ``(W - 1072) // 2`` plus 1072), and the same area of the
  red band ``l8_B4.tif`` (30 m);
- the three bands of the Landsat 7 subset ``RGB.byte.tif`` (nodata border
  excluded);
- three dates of the MODIS NDVI stack ``modis_ndvi/`` (public-domain NASA
  data).

The Sentinel-2 and CBERS-4 stacks are **not** used: they are the real-data
evaluation (``benchmarks/bench_real.py``).

**Passes** (the degradations of ``benchmarks/bench_passes.py``, re-implemented
here): a high-resolution crop (side ``2 L`` plus a margin, ``L`` in 48 to
128), normalised by its 0.5 / 99.5 percentiles, for half the stacks blurred
by a Gaussian of sigma 0.3 to 1.2 HR px (a softer sensor), is taken as a continuous scene through its
cubic spline; ``N`` passes (4 to 8) of ``L x L`` px at scale 2 are the
scene's mean over each pass pixel's footprint (``2 s`` samples per axis),
placed by ``G_k(p) = R(theta)(p - c) + c + t + L(p)``: rotation up to 0.1
degree, translation up to 1 px, a smooth local field (three sinusoids per
axis, largest vector up to 0.4 px); gain 0.85 to 1.15 and offset -0.05 to
0.05 (pass 0: the reference, identity); bright smooth clouds over 0 to 30 %
of passes 2 and up with their masks; Poisson-Gaussian noise with ``alpha``
log-uniform in [2e-5, 5e-4] and ``beta`` in [1e-6, 3e-5]. The truth on the
output grid is the scene's mean over each output pixel.

Every stack goes through the real fusion engine (:func:`mfsr.geo.fuse_arrays`'s
planning and tiles, reference pass 0, its defaults, ``refine=False``); the
network's input is the normalised product (the working range
``(x - lo) / (hi - lo)`` of :mod:`mfsr.geo.radiometry`), the count of
contributing passes and the estimated noise; its target the truth in the
same units.

**Network and loss.** :class:`mfsr.refine.RefineNet` (32 channels, 4
blocks: receptive field 22 output px), initialised from the burst network's
grey/RGB weights (``mfsr/refine/weights/refiner.pt``: its deblurring filters
are a better start than zeros), trained with L1 on the residual over random
96 x 96 crops (even offsets: the pixel-unshuffle phase of the output grid),
flips and quarter turns, Adam with a cosine decay, bfloat16 autocast where
the CPU has it (float32 weights; inference is float32).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .synth import PassWarp, cloud_layer, render_warped

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCALE = 2
MARGIN = 8  # HR px of scene around the reference area (displacements up to ~3 LR px)
CROP = 96  # training crop, output px
BATCH = 8
BORDER = 4  # output px excluded from the loss (array edges see the padding)
BURST_INIT = Path(__file__).resolve().parents[1] / "mfsr" / "refine" / "weights" / "refiner.pt"

# Held-out area of benchmarks/bench_passes.py (scale 2, 512 x 512 passes, MARGIN 24 HR px).
BENCH_SIDE = 512 * 2 + 2 * 24


# --------------------------------------------------------------------------- sources


def _bench_holdout(shape) -> tuple[slice, slice]:
    """Rows and columns of the Landsat 8 pan band that bench_passes.py evaluates on."""
    h, w = shape
    r0 = h - BENCH_SIDE
    c0 = (w - BENCH_SIDE) // 2
    return slice(r0, h), slice(c0, c0 + BENCH_SIDE)


def load_sources(data: Path = DATA) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, image float64 (H, W), valid bool (H, W), sampling weight) of every training raster."""
    import rasterio
    from scipy.ndimage import binary_erosion

    out = []
    pan_path = data / "landsat8_pan" / "l8_B8.tif"
    with rasterio.open(pan_path) as src:
        pan = src.read(1).astype(np.float64)
    valid = np.ones(pan.shape, bool)
    rs, cs = _bench_holdout(pan.shape)
    valid[rs, cs] = False
    out.append(("landsat8_pan l8_B8 (bench crop held out)", pan, valid, 2.0))
    with rasterio.open(data / "landsat8_pan" / "l8_B4.tif") as src:
        red = src.read(1).astype(np.float64)
    valid = np.ones(red.shape, bool)
    # the same ground as the pan band's held-out crop (half the pixels)
    valid[rs.start // 2 :, cs.start // 2 : (cs.stop + 1) // 2] = False
    out.append(("landsat8_pan l8_B4 (same area held out)", red, valid, 0.5))
    with rasterio.open(data / "RGB.byte.tif") as src:
        rgb = src.read().astype(np.float64)
    valid = binary_erosion(np.all(rgb != 0, axis=0), iterations=3)
    for b in range(3):
        out.append((f"RGB.byte.tif band {b + 1}", rgb[b], valid, 1.5))
    for p in sorted((data / "modis_ndvi").glob("*.jp2"))[::4]:
        with rasterio.open(p) as src:
            v = src.read(1).astype(np.float64)
        out.append((f"modis_ndvi {p.name}", v, np.ones(v.shape, bool), 0.3))
    return out


def _random_crop(rng, img, valid, side, tries: int = 200):
    """A fully valid ``side`` square of ``img`` (None when none is found)."""
    h, w = img.shape
    if side > min(h, w):
        return None
    ii = np.pad(np.cumsum(np.cumsum(~valid, 0), 1), ((1, 0), (1, 0)))
    for _ in range(tries):
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        bad = ii[y + side, x + side] - ii[y, x + side] - ii[y + side, x] + ii[y, x]
        if bad == 0:
            return img[y : y + side, x : x + side]
    return None


# --------------------------------------------------------------------------- simulator


def _random_warp(rng, size: int, identity: bool = False) -> PassWarp:
    """A pass's geometry: rotation up to 0.1 deg, shift up to 1 px, local field up to 0.4 px (identity for pass 0)."""
    zero = np.zeros((0, 2))
    if identity:
        return PassWarp(0.0, np.zeros(2), zero, zero, zero, (size, size))
    theta = math.radians(rng.uniform(-0.1, 0.1))
    t = rng.uniform(-1.0, 1.0, 2)
    m = 3
    freq = rng.uniform(0.5, 2.0, (m, 2)) * rng.choice([-1, 1], (m, 2))
    phase = rng.uniform(0, 2 * np.pi, (m, 2))
    amp = rng.uniform(0.3, 1.0, (m, 2))
    warp = PassWarp(theta, t, amp, freq, phase, (size, size))
    yy, xx = np.mgrid[0:size:4, 0:size:4].astype(float)
    ly, lx = warp.local(yy, xx)
    warp.amp = amp * rng.uniform(0.0, 0.4) / max(np.hypot(ly, lx).max(), 1e-9)
    return warp


def simulate_stack(rng, scene: np.ndarray, size: int, n_passes: int):
    """Passes, invalid masks and truth of one stack from an HR crop of side ``SCALE * size + 2 MARGIN``.

    Returns
    -------
    passes : ndarray of float32, shape (N, size, size)
    invalid : ndarray of bool, shape (N, size, size)
    truth : ndarray of float32, shape (SCALE size, SCALE size)
        The scene's mean over each output pixel, in pass 0's units.
    noise : (alpha, beta)
    """
    from scipy.ndimage import binary_dilation, spline_filter

    s = SCALE
    coef = spline_filter(scene, order=3, mode="mirror")
    truth = render_warped(coef, _random_warp(rng, size, identity=True), (size * s, size * s), 1.0 / s, 2, s, MARGIN)
    alpha = 10 ** rng.uniform(math.log10(2e-5), math.log10(5e-4))
    beta = 10 ** rng.uniform(-6.0, math.log10(3e-5))
    passes = np.empty((n_passes, size, size), np.float32)
    invalid = np.zeros((n_passes, size, size), bool)
    for k in range(n_passes):
        g = _random_warp(rng, size, identity=(k == 0))
        v = render_warped(coef, g, (size, size), 1.0, 2 * s, s, MARGIN)
        if k:
            v = rng.uniform(0.85, 1.15) * v + rng.uniform(-0.05, 0.05)
        if k >= 2:
            a, bright = cloud_layer(rng, (size, size), rng.uniform(0.0, 0.3), size_divisor=12.0)
            v = (1 - a) * v + a * bright
            invalid[k] = binary_dilation(a > 0, iterations=1)
        passes[k] = v + np.sqrt(alpha * np.maximum(v, 0) + beta) * rng.standard_normal(v.shape)
    return passes, invalid, truth, (alpha, beta)


def fuse_stack(passes: np.ndarray, invalid: np.ndarray):
    """The engine's product of a stack, in its working range, with the count and noise it used.

    :func:`mfsr.geo.fuse_arrays` with its defaults (reference pass 0, no
    refinement), with the count of contributing passes.

    Returns
    -------
    product : ndarray of float32, shape (SCALE H, SCALE W), working range
    count : ndarray of uint16, same shape
    noise : (alpha, beta) in working-range units
    lo, hi : float
        The working range (data units).
    """
    from affine import Affine
    from rasterio.crs import CRS

    from .pipeline import fuse_arrays

    tr = Affine(30.0, 0, 500000.0, 0, -30.0, 4000000.0)
    fused, result, count = fuse_arrays(passes[:, None], CRS.from_epsg(32616), tr, float(SCALE), invalid,
                                       reference=0, workers=1, return_count=True)
    lo, hi = float(result.working_range[0][0]), float(result.working_range[1][0])
    product = fused[0]
    return (product - lo) / (hi - lo), count, result.noise, lo, hi


def make_examples(n_stacks: int, seed: int, sources, log=print):
    """``n_stacks`` (features, globals, product, truth) examples, all in working-range units."""
    from scipy.ndimage import gaussian_filter

    from .pass_refinement import pass_features

    rng = np.random.default_rng(seed)
    weights = np.array([s[3] for s in sources])
    weights = weights / weights.sum()
    out = []
    t0 = time.perf_counter()
    while len(out) < n_stacks:
        name, img, valid, _ = sources[int(rng.choice(len(sources), p=weights))]
        fits = [v for v in (48, 64, 96, 128) if SCALE * v + 2 * MARGIN <= min(img.shape)]
        size = int(rng.choice(fits))
        crop = _random_crop(rng, img, valid, SCALE * size + 2 * MARGIN)
        if crop is None:
            continue
        lo, hi = np.percentile(crop, [0.5, 99.5])
        if hi - lo <= 1e-9:
            continue
        crop = (crop - lo) / (hi - lo)
        if rng.random() < 0.5:
            # a softer scene (a sensor MTF below the raster's): the product's
            # blur then varies beyond the sources' own
            crop = gaussian_filter(crop, rng.uniform(0.3, 1.2), mode="mirror")
        k = int(rng.integers(4))
        crop = np.rot90(crop, k)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        n_passes = int(rng.integers(4, 9))
        passes, invalid, truth, _ = simulate_stack(rng, np.ascontiguousarray(crop), size, n_passes)
        product, count, noise, plo, phi = fuse_stack(passes, invalid)
        if not np.all(np.isfinite(product)):
            continue
        feats, g = pass_features(product, count, noise=noise, n_passes=n_passes, scale=SCALE)
        out.append((feats, g, product, ((truth - plo) / (phi - plo)).astype(np.float32), name))
        if len(out) % 50 == 0:
            log(f"  {len(out)} stacks, {time.perf_counter() - t0:.0f} s")
    return out


# --------------------------------------------------------------------------- training


def _batch(rng, examples):
    """Random crops (even offsets), flips and quarter turns: (pixels, globals, product, truth) tensors."""
    import torch

    px, gs, pr, tr = [], [], [], []
    for _ in range(BATCH):
        f, g, p, t, _ = examples[int(rng.integers(len(examples)))]
        h, w = p.shape
        c = min(CROP, h, w) // 2 * 2
        y = 2 * int(rng.integers(0, (h - c) // 2 + 1))
        x = 2 * int(rng.integers(0, (w - c) // 2 + 1))
        ff, pp, tt = f[:, y : y + c, x : x + c], p[y : y + c, x : x + c], t[y : y + c, x : x + c]
        k = int(rng.integers(4))
        flip = rng.random() < 0.5
        ff, pp, tt = (np.rot90(a, k, axes=(-2, -1)) for a in (ff, pp, tt))
        if flip:
            ff, pp, tt = (a[..., ::-1] for a in (ff, pp, tt))
        if c < CROP:  # small stacks: pad (the padded area is outside the loss mask)
            pad = ((0, CROP - c), (0, CROP - c))
            ff = np.pad(ff, ((0, 0),) + pad, mode="edge")
            pp, tt = np.pad(pp, pad, mode="edge"), np.pad(tt, pad, mode="edge")
        px.append(np.ascontiguousarray(ff))
        gs.append(g)
        pr.append(np.ascontiguousarray(pp))
        tr.append(np.ascontiguousarray(tt))
    return (torch.from_numpy(np.stack(px)), torch.from_numpy(np.stack(gs)), torch.from_numpy(np.stack(pr)),
            torch.from_numpy(np.stack(tr)))


def _validate(net, examples) -> tuple[float, float]:
    """Mean PSNR (dB, range 1) of the products and of the refined products, BORDER px excluded."""
    import torch

    a, b = [], []
    b_ = BORDER
    with torch.inference_mode():
        for f, g, p, t, _ in examples:
            res = net(torch.from_numpy(f)[None], torch.from_numpy(g)[None])[0].mean(0).numpy()
            t_ = t[b_:-b_, b_:-b_]
            a.append(10 * np.log10(1 / np.mean((p[b_:-b_, b_:-b_] - t_) ** 2)))
            b.append(10 * np.log10(1 / np.mean((p[b_:-b_, b_:-b_] + res[b_:-b_, b_:-b_] - t_) ** 2)))
    return float(np.mean(a)), float(np.mean(b))


def train(out: Path, stacks: int, steps: int, seed: int, lr: float, val_stacks: int, max_minutes: float,
          precision: str, command: str) -> dict:
    import torch

    from mfsr.refine import RefineNet, native_bf16

    from .pass_refinement import ARCHITECTURE, MANIFEST, RADIUS, SCALES, WEIGHT_FILE

    t_all = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    sources = load_sources()
    print(f"sources: {', '.join(s[0] for s in sources)}", flush=True)
    t0 = time.perf_counter()
    examples = make_examples(stacks, seed, sources, log=lambda m: print(m, flush=True))
    val = make_examples(val_stacks, seed + 10_000, sources)
    data_s = time.perf_counter() - t0
    print(f"{len(examples)} training and {len(val)} validation stacks in {data_s:.0f} s", flush=True)

    net = RefineNet(**ARCHITECTURE)
    net.load_state_dict(torch.load(BURST_INIT, map_location="cpu", weights_only=True))
    init_sha = hashlib.sha256(BURST_INIT.read_bytes()).hexdigest()
    net.eval()
    v0 = _validate(net, val)
    print(f"validation before: product {v0[0]:.2f} dB, burst network {v0[1]:.2f} dB", flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    use_bf16 = precision == "bf16" or (precision == "auto" and native_bf16())
    rng = np.random.default_rng(seed + 1)
    mask = torch.zeros(CROP, CROP)
    mask[BORDER:-BORDER, BORDER:-BORDER] = 1
    curve = []
    t0 = time.perf_counter()
    done = 0
    net.train()
    for step in range(steps):
        px, gs, pr, tr = _batch(rng, examples)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            res = net(px, gs)
        res = res.float().mean(dim=1)
        # L1 on the residual (the refined product against the truth); the
        # padded area of small stacks is within the border mask or a copy
        loss = ((pr + res - tr).abs() * mask).sum() / (mask.sum() * BATCH)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        if done % 250 == 0 or done == steps:
            net.eval()
            v = _validate(net, val)
            net.train()
            el = time.perf_counter() - t0
            curve.append((done, float(loss), v[0], v[1], el))
            print(f"step {done}: loss {float(loss):.5f}, validation {v[0]:.2f} -> {v[1]:.2f} dB, {el:.0f} s",
                  flush=True)
        if time.perf_counter() - t0 > 60 * max_minutes:
            print(f"time cap reached after {done} steps", flush=True)
            break
    train_s = time.perf_counter() - t0
    net.eval()
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHT_FILE).write_bytes(blob)
    vf = _validate(net, val)
    manifest = {
        "format": 1,
        "files": {WEIGHT_FILE: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                                 "architecture": dict(ARCHITECTURE),
                                 "parameters": int(sum(p.numel() for p in net.parameters()))}},
        "receptive_field_radius_output_px": RADIUS,
        "scales": list(SCALES),
        "training": {
            "command": command,
            "seed": seed,
            "stacks": len(examples),
            "validation_stacks": len(val),
            "steps": done,
            "steps_asked": steps,
            "batch": BATCH,
            "crop": CROP,
            "lr": lr,
            "precision": "bf16 autocast, float32 weights" if use_bf16 else "fp32",
            "init": {"file": "mfsr/refine/weights/refiner.pt (the burst network)", "sha256": init_sha},
            "sources": [s[0] for s in sources],
            "held_out": "landsat8_pan/l8_B8.tif bottom-centre crop of benchmarks/bench_passes.py at scale 2 "
                        f"({BENCH_SIDE} x {BENCH_SIDE} px) and the same ground in l8_B4.tif; Sentinel-2 and "
                        "CBERS-4 stacks (real-data evaluation) unused",
            "degradations": "see mfsr/geo/train_refiner.py simulate_stack",
            "loss": "L1 of (product + residual - truth), working range, 4 px border excluded",
            "validation_psnr_db": {"product": vf[0], "burst_init": v0[1], "refined": vf[1]},
            "curve": [dict(step=c[0], loss=c[1], val_product=c[2], val_refined=c[3], seconds=c[4]) for c in curve],
            "data_seconds": round(data_s, 1),
            "train_seconds": round(train_s, 1),
            "total_seconds": round(time.perf_counter() - t_all, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} cpu",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"validation after: product {vf[0]:.2f} dB, refined {vf[1]:.2f} dB; wrote {out}", flush=True)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for pass_refiner.pt and manifest.json")
    ap.add_argument("--stacks", type=int, default=360, help="simulated training stacks")
    ap.add_argument("--val-stacks", type=int, default=24)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="safety cap on the optimisation time")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    args = ap.parse_args(argv)
    cmd = "python -m mfsr.geo.train_refiner " + " ".join(sys.argv[1:] if argv is None else argv)
    train(args.out, args.stacks, args.steps, args.seed, args.lr, args.val_stacks, args.max_minutes,
          args.precision, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
