"""The built-in demonstration behind ``mfsr demo``.

A photo bundled with scikit-image is turned into a simulated handheld Bayer
burst (random hand shake, optics blur, pixel integration, mosaic, sensor noise),
fused, refined by the shipped network, and compared with what one frame gives.
Everything is written to one folder so a newcomer can look at it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .baselines import single_frame_upscale
from .cfa import demosaic_bilinear
from .fusion import fuse
from .image_io import write_image
from .metrics import psnr, ssim
from .report import comparison_picture, difference_map
from .synth import sample_image, simulate_burst

#: Simulation settings of the demo: an 8-frame RGGB burst with moderate noise.
DEMO_SETTINGS = dict(
    cfa="RGGB",
    max_shift=2.0,
    max_rotation=0.5,
    blur_sigma=0.5,
    alpha=2e-4,
    beta=2e-6,
)


def run_demo(
    output: str | Path = "mfsr-demo",
    *,
    image: str = "astronaut",
    scale: float = 2.0,
    n_frames: int = 8,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, float]:
    """Simulate a burst from a bundled photo, fuse and refine it, write the comparison.

    Parameters
    ----------
    output : path-like
        Folder to write into (created): ``frames/``, ``single_frame.png``,
        ``fused.png`` (kernel fusion alone), ``refined.png`` (plus the learned
        refinement), ``refinement.png`` (what the network changed),
        ``truth.png``, ``comparison.png`` and ``report.txt``.
    image : str
        Name of a photo in :data:`mfsr.synth.SAMPLE_IMAGES`.
    scale : float
        Zoom factor of the fusion (and decimation factor of the simulation).
    n_frames : int
        Burst length.
    seed : int
        Seed of the simulated hand shake and noise.
    quiet : bool
        No progress bar or printed summary.

    Returns
    -------
    dict
        PSNR (dB) and SSIM of the single-frame baseline (``single_frame_*``),
        the kernel fusion (``fused_*``) and the refined fusion
        (``refined_*``); ``seconds``: fusion and refinement time.
    """
    out = Path(output)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    truth_image = sample_image(image)
    burst = simulate_burst(truth_image, n_frames=n_frames, scale=scale, seed=seed, **DEMO_SETTINGS)
    for k, frame in enumerate(burst.frames):
        # Mosaics are shown demosaicked so the frames can be looked at.
        write_image(
            out / "frames" / f"frame-{k:03d}.png",
            demosaic_bilinear(frame, burst.cfa),
            transfer="srgb",
            clip=True,
        )

    t0 = time.perf_counter()
    result = fuse(burst.frames, scale=scale, cfa=burst.cfa, refine=True, progress=not quiet)
    seconds = time.perf_counter() - t0
    single = single_frame_upscale(burst.frames[burst.reference], scale, cfa=burst.cfa)
    # outside the network's trained scales fuse warns and does not refine
    change = result.refinement if result.refinement is not None else np.zeros_like(result.image)
    fused = result.image - change
    truth = burst.ground_truth

    crop = 8
    scores = {"seconds": seconds}
    for name, picture in (("single_frame", single), ("fused", fused), ("refined", result.image)):
        scores[f"{name}_psnr"] = psnr(picture, truth, crop=crop)
        scores[f"{name}_ssim"] = ssim(picture, truth, crop=crop)
    for name, picture in (("single_frame", single), ("fused", fused), ("refined", result.image), ("truth", truth)):
        write_image(out / f"{name}.png", picture, transfer="srgb", clip=True)
    change, limit = difference_map(result.image, fused)
    write_image(out / "refinement.png", change / 255.0, transfer="linear", dtype="uint8")
    ho, wo = result.image.shape[:2]
    side = min(ho, wo) // 3
    picture = comparison_picture(
        [
            ("one frame, demosaicked + bicubic", single),
            (f"mfsr, {n_frames} frames fused + refined", result.image),
            ("ground truth", truth),
        ],
        crop=((ho - side) // 4, (wo - side) // 2, side),
    )
    # comparison_picture returns sRGB bytes already: store them unchanged
    write_image(out / "comparison.png", picture / 255.0, transfer="linear", dtype="uint8")
    h, w = burst.frames.shape[1:3]
    lines = [
        f"mfsr demo: {n_frames}-frame {burst.cfa} burst {w}x{h} simulated from '{image}', "
        f"fused and refined at scale {scale:g} to {wo}x{ho} in {seconds:.2f} s",
        "",
        f"{'method':<34}{'PSNR (dB)':>10}{'SSIM':>8}",
        f"{'one frame, demosaicked + bicubic':<34}{scores['single_frame_psnr']:>10.2f}"
        f"{scores['single_frame_ssim']:>8.3f}",
        f"{'mfsr kernel fusion':<34}{scores['fused_psnr']:>10.2f}{scores['fused_ssim']:>8.3f}",
        f"{'mfsr fusion + learned refinement':<34}{scores['refined_psnr']:>10.2f}{scores['refined_ssim']:>8.3f}",
        "",
        f"pictures in {out}/: comparison.png (before/after), single_frame.png, fused.png, refined.png, "
        f"refinement.png (what the network changed; full colour at {limit:.3f}), truth.png, frames/",
    ]
    (out / "report.txt").write_text("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))
    return scores
