"""The built-in demonstration behind ``mfsr demo``.

A photo bundled with scikit-image is turned into a simulated handheld Bayer
burst (random hand shake, optics blur, pixel integration, mosaic, sensor noise),
fused, refined by the shipped network, and compared with what one frame gives.
Everything is written to one folder so a newcomer can look at it.

A first run (empty Numba cache) spends most of its time compiling the
kernels; with two cores or more it compiles the registration's in a second
process while this one compiles the merge's (:class:`_ParallelCompile`).
"""

from __future__ import annotations

import os
import subprocess
import sys
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


# Frames of the tiny burst that compiles a fusion's kernels (big enough for
# two pyramid levels of at least 2x2 tiles, so every kernel runs).
_WARM_UP_SIDE = 64


def _warm_up(stage: str, cfa: str | None, scale: float) -> None:
    """Run one stage of a fusion on a tiny burst, so its Numba kernels compile
    (or load from Numba's cache) for exactly the types a real fusion uses.

    ``stage``: ``"align"`` (the registration, and the refinement's overshoot
    limit) or ``"merge"`` (the kernel fusion of a burst whose flow is given).
    """
    rng = np.random.default_rng(0)
    shape = (2, _WARM_UP_SIDE, _WARM_UP_SIDE) + (() if cfa is not None else (3,))
    frames = rng.random(shape, dtype=np.float32)
    if stage == "align":
        from .kernels.overshoot import limit_overshoot
        from .registration import register

        register(frames, cfa=cfa)
        image = rng.random((8, 8, 3), dtype=np.float32)
        limit_overshoot(image, image.copy(), 0.25)
    else:
        flow = np.zeros(shape[:3] + (2,), np.float32)
        fuse(frames, scale=scale, cfa=cfa, flow=flow, noise=(1e-3, 1e-5), refine=False)


def _is_compiled(kernel, *args) -> bool:
    """Whether ``kernel`` has machine code for ``args``' types, in this process
    or in Numba's on-disk cache (False when that cannot be told)."""
    try:
        import numba

        sig = tuple(numba.typeof(a) for a in args)
        if sig in kernel.overloads:
            return True
        return kernel._cache.load_overload(sig, kernel.targetctx) is not None
    except Exception:
        return False


def _stages_to_compile(cfa: str | None) -> list[str]:
    """The stages whose kernels are not all compiled yet, judged by one
    kernel of every module each stage uses."""
    from .kernels import (
        accumulate,
        block_matching,
        lucas_kanade,
        overshoot,
        pyramid,
        robustness,
        separable_filter,
        structure_tensor,
        tile_interp,
    )

    f2 = np.zeros((2, 2), np.float32)
    f3 = np.zeros((2, 2, 2), np.float32)
    f1 = np.zeros(2, np.float32)
    cell = np.zeros((2, 2), np.int64)
    probes = {
        "align": [
            (lucas_kanade.gradients, f2),
            (block_matching.reject_outliers, np.zeros((2, 2, 2), np.int32), 1.0),
            (tile_interp.smooth_tiles, f3, 2, 0.5),
            (separable_filter.separable_filter, f3, f1),
            (overshoot.limit_overshoot, f3, f3, 0.25),
        ]
        + ([(pyramid.bin2x2, f2)] if cfa is not None else []),
        "merge": [
            (structure_tensor.grey_image, f3, 1),
            (robustness._min_filter, f2, 5),
            (accumulate.normalize, f3, f3, f3, True, cell, 2.0, 1.0, 0.02, f3),
        ],
    }
    return [stage for stage, checks in probes.items() if not all(_is_compiled(*c) for c in checks)]


class _ParallelCompile:
    """Compile a fusion's kernels on two cores: a second Python process
    compiles the registration's kernels (writing them to Numba's cache)
    while this one compiles the merge's in :meth:`finish`.

    On a first run (empty Numba cache) the kernels take far longer to
    compile, one after the other, than the demo takes to run; the fusion
    then loads the other process's kernels from the cache.
    """

    def __init__(self, cfa: str | None, scale: float):
        self.cfa, self.scale = cfa, scale
        # a fresh interpreter (not multiprocessing): nothing of the caller's
        # main script is run again, and it finds mfsr where this one did
        code = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            f"from mfsr.demo import _warm_up; _warm_up('align', {cfa!r}, {float(scale)!r})"
        )
        self.worker = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> None:
        """Compile the merge's kernels here, then wait for the other process
        (whatever it could not do, the fusion compiles itself)."""
        try:
            _warm_up("merge", self.cfa, self.scale)
        finally:
            self.worker.wait()

    def stop(self) -> None:
        """End the other process if it still runs (after an error)."""
        if self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()


def _compile_in_parallel(cfa: str | None, scale: float) -> _ParallelCompile | None:
    """Start compiling the kernels of a fusion on two cores, or None when that
    gains nothing: the kernels are compiled or cached already, one core, no
    JIT."""
    import numba

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if numba.config.DISABLE_JIT or cores < 2:
        return None
    if sorted(_stages_to_compile(cfa)) != ["align", "merge"]:
        return None
    try:
        return _ParallelCompile(cfa, scale)
    except OSError:
        return None


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
    # a first run compiles the kernels, two stages side by side
    compiling = _compile_in_parallel(DEMO_SETTINGS["cfa"], scale)
    try:
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
        if compiling is not None:
            compiling.finish()
    finally:
        if compiling is not None:
            compiling.stop()

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
