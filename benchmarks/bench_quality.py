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
- ``mfsr``: ``mfsr.fuse`` with its own registration, kernel fusion alone
  (``refine=False``; the learned refinement is scored by ``bench_refine.py``);
- ``mfsr (true flow)``: ``mfsr.fuse`` given the simulator's true flow, which
  separates fusion quality from registration error;
- ``mfsr, no sharpening``: the plain merge (``FusionParams(sharpen_amount=0)``);
- ``single + sharpening``: the single-frame baseline passed through the same
  noise-gated unsharp mask that ``fuse`` applies, so the gain of the fusion
  over one frame is not just the sharpening.

The markdown table is printed and written to ``benchmarks/out/quality.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from mfsr.baselines import phase_correlation_average, single_frame_upscale
from mfsr.fusion import FusionParams, fuse, sharpen_gain
from mfsr.kernels.accumulate import sharpen
from mfsr.kernels.structure_tensor import gaussian_weights
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


def sharpened(image: np.ndarray, scale: float, noise: tuple[float, float], cfa: str | None) -> np.ndarray:
    """Apply fuse's final unsharp mask, with its default parameters, to ``image``."""
    p = FusionParams()
    out = np.ascontiguousarray(image if image.ndim == 3 else image[..., None], dtype=np.float32)
    out = out.copy()
    taps = gaussian_weights(p.sharpen_sigma * scale)
    gain = sharpen_gain(p, scale, cfa)
    if gain > 0:
        sharpen(out, taps, gain, noise[0], noise[1], p.sharpen_noise_gate, p.sharpen_overshoot)
    return out if image.ndim == 3 else out[..., 0]


def run_case(name: str, images: list[str], size: int) -> dict[str, list[tuple[float, float]]]:
    spec = dict(CASES[name])
    grey = spec.pop("grey")
    scores: dict[str, list[tuple[float, float]]] = {
        "single": [], "single + sharpening": [], "phasecorr+avg": [], "mfsr": [],
        "mfsr (true flow)": [], "mfsr, no sharpening": [],
    }
    for seed, image_name in enumerate(images):
        truth = sample_image(image_name, grey=grey, size=size)
        burst = simulate_burst(truth, seed=seed, **MOTION, **spec)
        cfa, scale = burst.cfa, burst.scale
        ref = burst.frames[burst.reference]
        fused = fuse(burst.frames, refine=False, scale=scale, cfa=cfa)
        single = single_frame_upscale(ref, scale, cfa=cfa)
        outputs = {
            "single": single,
            "single + sharpening": sharpened(single, scale, fused.noise, spec["cfa"]),
            "phasecorr+avg": phase_correlation_average(burst.frames, scale, cfa=cfa),
            "mfsr": fused.image,
            "mfsr (true flow)": fuse(burst.frames, refine=False, scale=scale, cfa=cfa, flow=burst.flow).image,
            "mfsr, no sharpening": fuse(
                burst.frames, scale=scale, cfa=cfa, flow=fused.flow, refine=False,
                params=FusionParams(sharpen_amount=0.0),
            ).image,
        }
        for method, out in outputs.items():
            scores[method].append(
                (psnr(out, burst.ground_truth, crop=CROP), ssim(out, burst.ground_truth, crop=CROP))
            )
    return scores


def run_moving_object(name: str, images: list[str], size: int) -> tuple[list[float], list[float]]:
    """PSNR inside the moved object's region: single frame vs mfsr."""
    spec = dict(CASES[name])
    grey = spec.pop("grey")
    single_scores, fused_scores = [], []
    for seed, image_name in enumerate(images):
        truth = sample_image(image_name, grey=grey, size=size)
        burst = simulate_burst(truth, seed=seed, moving_object=True, **MOTION, **spec)
        mask = burst.motion_mask.copy()
        mask[:CROP], mask[-CROP:], mask[:, :CROP], mask[:, -CROP:] = False, False, False, False
        single = single_frame_upscale(burst.frames[burst.reference], burst.scale, cfa=burst.cfa)
        fused = fuse(burst.frames, refine=False, scale=burst.scale, cfa=burst.cfa).image
        single_scores.append(psnr(single, burst.ground_truth, valid=mask))
        fused_scores.append(psnr(fused, burst.ground_truth, valid=mask))
    return single_scores, fused_scores


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
        "PSNR (dB) / SSIM, mean over the photos:",
        "",
        "| case | single | single + sharpening | phasecorr+avg | mfsr | mfsr (true flow) | "
        "mfsr, no sharpening | mfsr gain over single (min..max) | over single + sharpening "
        "| goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CASES:
        scores = run_case(name, images, args.size)
        mean = {m: np.mean(v, axis=0) for m, v in scores.items()}
        gains = [f[0] - s[0] for f, s in zip(scores["mfsr"], scores["single"])]
        fair = mean["mfsr"][0] - mean["single + sharpening"][0]
        cells = [f"{mean[m][0]:.2f} / {mean[m][1]:.3f}" for m in scores]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {np.mean(gains):+.2f} dB "
            f"({min(gains):+.2f}..{max(gains):+.2f}) | {fair:+.2f} dB | >= +{GOALS[name]} dB |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "Moving object (one frame shows a patch of the scene displaced by several px): PSNR "
        "(dB) inside the moved region, single frame vs mfsr, per photo:",
        "",
        "| case | single | mfsr | worst difference |",
        "|---|---|---|---|",
    ]
    for name in ("Bayer x1", "Bayer x2", "grey x2"):
        single_scores, fused_scores = run_moving_object(name, images, args.size)
        diffs = [f - s for f, s in zip(fused_scores, single_scores)]
        lines.append(
            f"| {name} | {' / '.join(f'{v:.2f}' for v in single_scores)} | "
            f"{' / '.join(f'{v:.2f}' for v in fused_scores)} | {min(diffs):+.2f} dB |"
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
