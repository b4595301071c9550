"""Benchmark of global geometry correction (mfsr.geometry) inside fuse().

Prints markdown tables to stdout:

1. homography bursts (per-frame homographies, corners displaced up to
   ``max_shift + corner_shift`` px, small local warp, noise): corner error of
   ``FusionResult.transforms``, flow EPE and PSNR with and without
   ``geometry="homography"``, in ordinary and hard conditions;
2. ordinary bursts (:func:`mfsr.synth.simulate_burst`: translation and small
   rotation): PSNR without / with ``geometry="homography"``;
3. Brown-Conrady lens: PSNR against the rectified ground truth, fusion
   without correction vs ``distortion=coefficients``;
4. focus breathing: recovered relative k1 and flow EPE with
   ``distortion="estimate"``.

Run: ``.venv/bin/python benchmarks/bench_geometry.py [--quick]``.

Every ``fuse`` call here is the kernel fusion (``refine=False``), so the
geometry's own effect is measured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mfsr import fuse
from mfsr.metrics import corner_error, flow_epe, psnr
from mfsr.synth import sample_image, simulate_burst, simulate_geometric_burst


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def homography_table(scenes, n_frames, size):
    conds = [
        ("moderate noise", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-3, beta=2e-4)),
        ("no local warp", dict(max_shift=3, corner_shift=5, local_warp=0.0, alpha=2e-3, beta=2e-4)),
        ("local warp 0.1 px", dict(max_shift=3, corner_shift=5, local_warp=0.1, alpha=2e-3, beta=2e-4)),
        ("heavy noise", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-2, beta=2e-3)),
        ("large motion", dict(max_shift=8, corner_shift=8, local_warp=0.05, alpha=2e-3, beta=2e-4)),
        ("CFA RGGB", dict(max_shift=3, corner_shift=5, local_warp=0.05, alpha=2e-3, beta=2e-4, cfa="RGGB")),
    ]
    print("## Homography bursts (scale 2, %d frames, %d px frames)\n" % (n_frames, size // 2))
    print("| scene | condition | corner err median / max (px) | flow EPE none / homography (px) "
          "| PSNR none / homography (dB) | gain (dB) | time none / homography (s) |")
    print("|---|---|---|---|---|---|---|")
    allerr = []
    for scene in scenes:
        grey = scene in ("camera", "moon")
        img = sample_image(scene, size=size, grey=grey)
        for label, kw in conds:
            if grey and "cfa" in kw:
                continue
            b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, seed=11, **kw)
            r0, t0 = timed(lambda: fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=b.noise))
            r1, t1 = timed(lambda: fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=b.noise, geometry="homography"))
            e = corner_error(b.params["homographies"][1:], r1.transforms[1:], b.frames.shape[1:3])
            if label == "moderate noise":
                allerr.append(e.ravel())
            p0 = psnr(r0.image, b.ground_truth, crop=8)
            p1 = psnr(r1.image, b.ground_truth, crop=8)
            print(f"| {scene} | {label} | {np.median(e):.3f} / {e.max():.3f} | "
                  f"{flow_epe(r0.flow[1:], b.flow[1:]):.3f} / {flow_epe(r1.flow[1:], b.flow[1:]):.3f} | "
                  f"{p0:.2f} / {p1:.2f} | {p1 - p0:+.2f} | {t0:.1f} / {t1:.1f} |", flush=True)
    print(f"\nMedian corner error over all 'moderate noise' frames and corners: "
          f"{np.median(np.concatenate(allerr)):.3f} px\n")


def ordinary_table(scenes, n_frames, size):
    print("## Ordinary bursts (simulate_burst: shifts up to 3 px, rotation up to 0.5 deg, blur 0.5)\n")
    print("| scene | input | PSNR none (dB) | PSNR homography (dB) | difference (dB) |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for scene in scenes:
        for label, kw in (("RGB", {}), ("Bayer", dict(cfa="RGGB")),
                          ("Bayer noisy", dict(cfa="RGGB", alpha=4e-3, beta=2e-4)), ("grey", {})):
            grey = label == "grey" or scene in ("camera", "moon")
            if grey and label != "grey":
                continue
            img = sample_image(scene, size=size, grey=grey)
            b = simulate_burst(img, n_frames=n_frames, scale=2, max_shift=3, max_rotation=0.5,
                               blur_sigma=0.5, seed=5, **kw)
            noise = b.noise if b.noise[0] > 0 else None
            p0 = psnr(fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=noise).image, b.ground_truth, crop=8)
            p1 = psnr(fuse(b.frames, refine=False, scale=2, cfa=b.cfa, noise=noise, geometry="homography").image,
                      b.ground_truth, crop=8)
            worst = min(worst, p1 - p0)
            print(f"| {scene} | {label} | {p0:.3f} | {p1:.3f} | {p1 - p0:+.3f} |", flush=True)
    print(f"\nWorst difference: {worst:+.3f} dB\n")


def lens_table(scenes, n_frames, size):
    print("## Known Brown-Conrady lens (PSNR against the rectified ground truth)\n")
    print("| scene | lens (k1, k2) | no correction (dB) | distortion=coeffs (dB) | gain (dB) | "
          "rectified-flow EPE (px) |")
    print("|---|---|---|---|---|---|")
    for scene in scenes:
        img = sample_image(scene, size=size, grey=scene in ("camera", "moon"))
        for lens in ([0.05], [0.1], [-0.08, 0.01]):
            b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, max_shift=2, corner_shift=1,
                                         distortion=lens, alpha=1e-3, beta=1e-4, seed=7)
            p0 = psnr(fuse(b.frames, refine=False, scale=2, noise=b.noise).image, b.ground_truth, crop=8)
            r = fuse(b.frames, refine=False, scale=2, noise=b.noise, distortion=lens, geometry="homography")
            p1 = psnr(r.image, b.ground_truth, crop=8)
            epe = flow_epe(r.flow, b.params["rectified_flow"])
            print(f"| {scene} | {tuple(lens)} | {p0:.2f} | {p1:.2f} | {p1 - p0:+.2f} | {epe:.3f} |",
                  flush=True)
    print()


def breathing_table(scenes, n_frames, size):
    print("## Focus breathing (base k1 = 0.05, per-frame k1 +- 0.02), distortion='estimate'\n")
    print("| scene | max abs k1 error | flow EPE none / estimate (px) |")
    print("|---|---|---|")
    for scene in scenes:
        img = sample_image(scene, size=size, grey=scene in ("camera", "moon"))
        b = simulate_geometric_burst(img, n_frames=n_frames, scale=2, max_shift=2, corner_shift=0.5,
                                     distortion=[0.05], breathing=0.02, alpha=1e-3, beta=1e-4, seed=9)
        r0 = fuse(b.frames, refine=False, scale=2, noise=b.noise)
        r = fuse(b.frames, refine=False, scale=2, noise=b.noise, geometry="homography", distortion="estimate")
        err = np.abs(r.distortion[:, 0] - (b.params["distortion"][:, 0] - 0.05)).max()
        print(f"| {scene} | {err:.4f} | {flow_epe(r0.flow[1:], b.flow[1:]):.3f} / "
              f"{flow_epe(r.flow[1:], b.flow[1:]):.3f} |", flush=True)
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer scenes")
    args = ap.parse_args()
    scenes = ["astronaut", "coffee"] if args.quick else ["astronaut", "coffee", "dead_leaves", "moon"]
    n, size = 6, 256
    homography_table(scenes, n, size)
    ordinary_table(scenes, n, size)
    lens_table(scenes[:2] if args.quick else scenes[:3], n, size)
    breathing_table(scenes, n, size)


if __name__ == "__main__":
    main()
