"""Speed and memory of registration and fusion on a 12-megapixel 8-frame Bayer burst.

Usage::

    .venv/bin/python benchmarks/bench_speed.py                 # 3000 x 4000, 8 frames
    .venv/bin/python benchmarks/bench_speed.py --rows 1500 --cols 2000
    .venv/bin/python benchmarks/bench_speed.py --frames-sweep      # memory for 4, 8, 16 frames

The burst is simulated once (RGGB, hand-shake motion, moderate noise) and cached
in ``benchmarks/out/``. Every measurement then runs in a fresh child process so
that its peak resident memory is its own:

- JIT: the first ``fuse`` call on a tiny burst with an empty Numba cache
  (compile) and with the cache filled (load), each in a new process;
- for scale 1 and 2: the whole kernel fusion (``fuse(refine=False)``:
  registration + merge) first, so its peak RSS is its own; then the default
  ``fuse`` (refinement included) with the network forced to float32, as on CPUs
  without bfloat16 units; then ``register`` alone and ``fuse`` given that flow
  (merge alone). A warm-up call on a tiny burst keeps compilation out of the
  timings. Peak RSS of the process after the kernel fusion, and the peak of
  NumPy allocations measured by tracemalloc, against the goal of 3x (burst
  bytes + output bytes).
- the unit of the CPU-independent goals: one ``scipy.ndimage.zoom`` of one
  frame by 2 with cubic splines (``order=3``), timed in every child.

With ``--frames-sweep`` only the kernel fusion runs, for bursts of 4, 8 and
16 frames (default size 1500 x 2000): its peak RSS above the process's
resident memory before the burst was loaded, minus the burst itself, is the
fusion's working memory, which should not grow with the number of frames
(issue 18: within 10 %).

The markdown table is printed and written to ``benchmarks/out/speed.md``
(``speed_frames.md`` for the sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"
N_FRAMES = 8
GOALS_S = {1.0: 4.0, 2.0: 12.0}
# Goals in units of one cubic 2x zoom of one frame timed in the same run (any
# CPU): (kernel fusion, default fuse with the network in float32), issue 18.
ZOOM_GOALS = {1.0: (1.2, 3.0), 2.0: (3.5, 6.0)}


def burst_path(rows: int, cols: int, n_frames: int = N_FRAMES) -> Path:
    suffix = "" if n_frames == N_FRAMES else f"_n{n_frames}"
    return OUT / f"burst_{rows}x{cols}_rggb{suffix}.npy"


def make_burst(rows: int, cols: int, n_frames: int = N_FRAMES) -> Path:
    """Simulate (once) and cache the benchmark burst."""
    path = burst_path(rows, cols, n_frames)
    if path.exists():
        return path
    from scipy.ndimage import zoom

    from mfsr.synth import sample_image, simulate_burst

    photo = sample_image("astronaut")
    # A photo enlarged to sensor size is smooth; add fine texture so the
    # registration and robustness work as on a real capture.
    scene = zoom(photo, (rows / photo.shape[0], cols / photo.shape[1], 1), order=1)
    rng = np.random.default_rng(0)
    scene = (0.85 * scene + 0.15 * rng.random(scene.shape, dtype=np.float32)).astype(np.float32)
    t0 = time.perf_counter()
    burst = simulate_burst(
        scene, n_frames=n_frames, scale=1.0, cfa="RGGB", max_shift=3.0, max_rotation=0.3,
        blur_sigma=0.5, alpha=2e-4, beta=2e-6, seed=0,
    )
    print(f"simulated {burst.frames.shape} in {time.perf_counter() - t0:.1f} s", flush=True)
    OUT.mkdir(exist_ok=True)
    np.save(path, burst.frames)
    return path


def _rss_mb(field: str) -> float:
    # /proc/self/status, not getrusage: ru_maxrss survives exec, so a child
    # would report its parent's high-water mark.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _tiny_burst() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((3, 64, 64), dtype=np.float32)


def child_jit() -> dict:
    t0 = time.perf_counter()
    import mfsr  # noqa: F401  (import time is part of what a user waits for)

    t1 = time.perf_counter()
    from mfsr.fusion import fuse

    fuse(_tiny_burst(), refine=False, scale=2.0, cfa="RGGB")
    t2 = time.perf_counter()
    fuse(_tiny_burst(), refine=False, scale=1.0)
    return {"import_s": t1 - t0, "first_call_s": t2 - t1, "first_grey_call_s": time.perf_counter() - t2}


def child_run(path: str, scale: float) -> dict:
    import tracemalloc

    from mfsr.fusion import fuse
    from mfsr.registration import register

    import mfsr.refine._inference as inference
    from scipy.ndimage import zoom

    fuse(_tiny_burst(), refine=False, scale=scale, cfa="RGGB")  # compile / load kernels outside timing
    rss_before = _rss_mb("VmRSS")
    frames = np.load(path)
    t0 = time.perf_counter()
    zoom(frames[0], 2, order=3)
    t_zoom = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fuse(frames, refine=False, scale=scale, cfa="RGGB")
    t_total = time.perf_counter() - t0
    _, peak_fuse = tracemalloc.get_traced_memory()
    rss_fuse = _rss_mb("VmHWM")
    out_bytes = result.image.nbytes
    del result
    tracemalloc.stop()
    inference.native_bf16 = lambda: False  # precision="auto" then runs float32, as without bfloat16 units
    fuse(_tiny_burst(), scale=scale, cfa="RGGB")
    t0 = time.perf_counter()
    fuse(frames, scale=scale, cfa="RGGB")
    t_default = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    flow = register(frames, cfa="RGGB")
    t_reg = time.perf_counter() - t0
    _, peak_reg = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    fuse(frames, refine=False, scale=scale, cfa="RGGB", flow=flow)
    t_fusion = time.perf_counter() - t0
    tracemalloc.stop()
    return {
        "scale": scale,
        "register_s": t_reg,
        "fusion_only_s": t_fusion,
        "total_s": t_total,
        "default_fp32_s": t_default,
        "zoom_s": t_zoom,
        "burst_mb": frames.nbytes / 2**20,
        "output_mb": out_bytes / 2**20,
        "numpy_peak_mb": peak_fuse / 2**20,
        "rss_peak_mb": rss_fuse,
        "rss_before_mb": rss_before,
    }


def child_memory(path: str, scale: float) -> dict:
    from mfsr.fusion import fuse

    fuse(_tiny_burst(), refine=False, scale=scale, cfa="RGGB")
    rss_before = _rss_mb("VmRSS")
    frames = np.load(path)
    t0 = time.perf_counter()
    fuse(frames, refine=False, scale=scale, cfa="RGGB")
    return {"n": int(frames.shape[0]), "scale": scale, "s": time.perf_counter() - t0,
            "burst_mb": frames.nbytes / 2**20, "peak_above_mb": _rss_mb("VmHWM") - rss_before}


def frames_sweep(rows: int, cols: int) -> list[str]:
    """Kernel-fusion working memory for 4, 8 and 16 frames (module docstring)."""
    lines = [f"Kernel fusion of {cols}x{rows} RGGB bursts ({rows * cols / 1e6:.1f} MP): peak RSS above the "
             "process before loading the burst, minus the burst's own bytes.", "",
             "| scale | frames | burst | peak above start | working memory (peak - burst) | vs 8 frames | time |",
             "|---|---|---|---|---|---|---|"]
    for scale in (1.0, 2.0):
        runs = [spawn(["--child", "memory", "--path", str(make_burst(rows, cols, n)), "--scale", str(scale)])
                for n in (4, 8, 16)]
        ref = next(r for r in runs if r["n"] == 8)
        ref_work = ref["peak_above_mb"] - ref["burst_mb"]
        for r in runs:
            work = r["peak_above_mb"] - r["burst_mb"]
            lines.append(f"| {scale:g} | {r['n']} | {r['burst_mb']:.0f} MB | {r['peak_above_mb']:.0f} MB | "
                         f"{work:.0f} MB | {100 * (work / ref_work - 1):+.1f} % | {r['s']:.2f} s |")
    return lines


def spawn(args: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--cols", type=int, default=4000)
    parser.add_argument("--frames-sweep", action="store_true",
                        help="kernel-fusion memory for 4, 8 and 16 frames (default size 1500 x 2000)")
    parser.add_argument("--child", choices=("jit", "run", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "jit":
        print(json.dumps(child_jit()))
        return
    if args.child == "run":
        print(json.dumps(child_run(args.path, args.scale)))
        return
    if args.child == "memory":
        print(json.dumps(child_memory(args.path, args.scale)))
        return
    if args.frames_sweep:
        rows, cols = (1500, 2000) if (args.rows, args.cols) == (3000, 4000) else (args.rows, args.cols)
        lines = frames_sweep(rows, cols) + ["", f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
                                            f"Python {platform.python_version()}."]
        OUT.mkdir(exist_ok=True)
        (OUT / "speed_frames.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return

    path = make_burst(args.rows, args.cols)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = spawn(["--child", "jit"], env)
        warm = spawn(["--child", "jit"], env)
    runs = [spawn(["--child", "run", "--path", str(path), "--scale", str(s)]) for s in (1.0, 2.0)]

    mp = args.rows * args.cols / 1e6
    lines = [
        f"Burst: {N_FRAMES} frames {args.cols}x{args.rows} RGGB ({mp:.1f} MP), float32.",
        "",
        f"JIT: import {cold['import_s']:.2f} s; first fuse call with an empty Numba cache "
        f"(compile) {cold['first_call_s']:.1f} s; with the cache filled (load) "
        f"{warm['first_call_s']:.2f} s.",
        "",
        "| scale | registration per frame | merge per frame | kernel fusion (8 frames) | goal | "
        "default fuse, network in float32 | one cubic 2x zoom | kernel fusion / zoom (goal) | "
        "default / zoom (goal) | peak RSS of the kernel fusion | NumPy peak | 3x (burst + output) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        budget = 3 * (r["burst_mb"] + r["output_mb"])
        s = r["scale"]
        lines.append(
            f"| {s:g} | {r['register_s'] / N_FRAMES:.3f} s | "
            f"{r['fusion_only_s'] / N_FRAMES:.3f} s | {r['total_s']:.2f} s | "
            f"< {GOALS_S[s]:.0f} s | {r['default_fp32_s']:.2f} s | {r['zoom_s']:.2f} s | "
            f"{r['total_s'] / r['zoom_s']:.2f} (<= {ZOOM_GOALS[s][0]:g}) | "
            f"{r['default_fp32_s'] / r['zoom_s']:.2f} (<= {ZOOM_GOALS[s][1]:g}) | {r['rss_peak_mb']:.0f} MB "
            f"({r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB above start) | "
            f"{r['numpy_peak_mb']:.0f} MB | {budget:.0f} MB |"
        )
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, NUMBA_NUM_THREADS="
        f"{os.environ.get('NUMBA_NUM_THREADS', 'default')}.",
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
