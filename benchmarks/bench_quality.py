"""Fusion quality on simulated 8-frame bursts against single-frame and naive baselines.

Usage::

    .venv/bin/python benchmarks/bench_quality.py            # full table (a few minutes)
    .venv/bin/python benchmarks/bench_quality.py --quick    # two images

Each case simulates bursts from several photos bundled with scikit-image
(linear light, see :func:`mfsr.synth.sample_image`) and scores, against the
ground truth (PSNR in dB and SSIM, 8-px border excluded):

- ``single``: the reference frame demosaicked bilinearly (Bayer) and
  bicubic-upsampled on the same pixel grid;
- ``phasecorr+avg``: global phase-correlation shift of every frame, average,
  bicubic upsampling (what one would script with scikit-image);
- ``mfsr``: ``mfsr.fuse`` with its own registration;
- ``mfsr (true flow)``: ``mfsr.fuse`` given the simulator's true flow, which
  separates fusion quality from registration error.

The markdown table is printed and written to ``benchmarks/out/quality.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from mfsr.baselines import phase_correlation_average, single_frame_upscale
from mfsr.fusion import fuse
from mfsr.metrics import psnr, ssim
from mfsr.synth import sample_image, simulate_burst

IMAGES = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left"]
CROP = 8
MOTION = dict(n_frames=8, max_shift=2.0, max_rotation=0.5, blur_sigma=0.5)
MODERATE = dict(alpha=2e-4, beta=2e-6)
STRONG = dict(alpha=4e-3, beta=1e-4)
CASES = {
    "Bayer x1": dict(cfa="RGGB", scale=1.0, grey=False, **MODERATE),
    "Bayer x2": dict(cfa="RGGB", scale=2.0, grey=False, **MODERATE),
    "grey x2": dict(cfa=None, scale=2.0, grey=True, **MODERATE),
    "noisy Bayer x1": dict(cfa="RGGB", scale=1.0, grey=False, **STRONG),
}
GOALS = {"Bayer x1": 3.0, "Bayer x2": 2.0, "grey x2": 0.8, "noisy Bayer x1": 4.0}


def run_case(name: str, images: list[str], size: int) -> dict[str, list[tuple[float, float]]]:
    spec = dict(CASES[name])
    grey = spec.pop("grey")
    scores: dict[str, list[tuple[float, float]]] = {
        "single": [], "phasecorr+avg": [], "mfsr": [], "mfsr (true flow)": []
    }
    for seed, image_name in enumerate(images):
        truth = sample_image(image_name, grey=grey, size=size)
        burst = simulate_burst(truth, seed=seed, **MOTION, **spec)
        cfa, scale = burst.cfa, burst.scale
        ref = burst.frames[burst.reference]
        outputs = {
            "single": single_frame_upscale(ref, scale, cfa=cfa),
            "phasecorr+avg": phase_correlation_average(burst.frames, scale, cfa=cfa),
            "mfsr": fuse(burst.frames, scale=scale, cfa=cfa).image,
            "mfsr (true flow)": fuse(burst.frames, scale=scale, cfa=cfa, flow=burst.flow).image,
        }
        for method, out in outputs.items():
            scores[method].append(
                (psnr(out, burst.ground_truth, crop=CROP), ssim(out, burst.ground_truth, crop=CROP))
            )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two images only")
    parser.add_argument("--size", type=int, default=384, help="ground-truth crop size (px)")
    args = parser.parse_args()
    images = IMAGES[:2] if args.quick else IMAGES

    t0 = time.perf_counter()
    lines = [
        f"Simulated 8-frame bursts, {len(images)} photos ({', '.join(images)}), "
        f"ground truth {args.size}x{args.size} px; shifts up to {MOTION['max_shift']} px, "
        f"rotation up to {MOTION['max_rotation']} deg, optical blur sigma "
        f"{MOTION['blur_sigma']} HR px; moderate noise alpha={MODERATE['alpha']}, "
        f"beta={MODERATE['beta']}; strong noise alpha={STRONG['alpha']}, beta={STRONG['beta']}.",
        "",
        "| case | single PSNR / SSIM | phasecorr+avg | mfsr | mfsr (true flow) | "
        "mfsr gain over single (min..max) | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CASES:
        scores = run_case(name, images, args.size)
        mean = {m: np.mean(v, axis=0) for m, v in scores.items()}
        gains = [f[0] - s[0] for f, s in zip(scores["mfsr"], scores["single"])]
        cells = [f"{mean[m][0]:.2f} / {mean[m][1]:.3f}" for m in scores]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {np.mean(gains):+.2f} dB "
            f"({min(gains):+.2f}..{max(gains):+.2f}) | >= +{GOALS[name]} dB |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}; total {time.perf_counter() - t0:.0f} s.",
    ]
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
