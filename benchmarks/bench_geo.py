"""Memory and time of the tiled satellite-pass fusion on a large raster.

Usage::

    .venv/bin/python benchmarks/bench_geo.py                   # 8000 x 8000, 8 passes, scale 2
    .venv/bin/python benchmarks/bench_geo.py --size 2000       # a quick check first
    .venv/bin/python benchmarks/bench_geo.py --size 2000 --tile 512 --workers 1

Eight synthetic passes (float32 GeoTIFFs, tiled 512 px, with cloud-mask
files) are generated once into ``benchmarks/out/geo_<size>/`` strip by strip
(a real Landsat 8 panchromatic crop mirrored over the area when
``../shared/data`` is present, a procedural texture otherwise; sub-pixel
shifts, gains, 0 to 30 % clouds). The fusion then runs in a fresh child
process (after a warm-up on a tiny raster so no Numba compilation is timed)
that reports its own peak resident memory (``VmHWM`` of
``/proc/self/status``) and wall time; the goal is a peak under 2 GB whatever
the raster size. The markdown table is printed and written to
``benchmarks/out/geo.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOAL_BYTES = 2 * 1024**3
N_PASSES = 8
STRIP = 512


def _texture(size_hr: int):
    """A function (rows, cols) -> HR values in [0, 1] over a ``size_hr`` square."""
    pan = DATA / "landsat8_pan" / "l8_B8.tif"
    if pan.exists():
        import rasterio

        with rasterio.open(pan) as src:
            img = src.read(1).astype(np.float32)
        img = (img - img.min()) / (img.max() - img.min())

        def sample(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            # Mirror tiling: index i maps to a reflected position in the crop.
            def mirror(i, n):
                i = np.mod(i, 2 * n)
                return np.where(i < n, i, 2 * n - 1 - i)

            return img[mirror(rows, img.shape[0])[:, None], mirror(cols, img.shape[1])[None, :]]

        return sample

    def sample(rows, cols):
        y = rows[:, None].astype(np.float32)
        x = cols[None, :].astype(np.float32)
        return (0.5 + 0.2 * np.sin(y / 7.3) * np.cos(x / 5.1) + 0.2 * np.sin((x + y) / 13.7)).astype(np.float32)

    return sample


def generate(size: int, folder: Path, scale: int = 2, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Write the passes and masks (once); memory is one strip at a time."""
    import rasterio
    from affine import Affine
    from scipy.ndimage import gaussian_filter, zoom
    from scipy.ndimage import shift as nd_shift

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"pass_{k}.tif" for k in range(N_PASSES)]
    masks = [folder / f"mask_{k}.tif" for k in range(N_PASSES)]
    done = folder / "done.json"
    if done.exists():
        return paths, masks
    rng = np.random.default_rng(seed)
    tex = _texture(size * scale)
    transform = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 5000000.0)
    shifts = rng.uniform(-1.5, 1.5, (N_PASSES, 2))
    shifts[0] = 0
    gains = np.r_[1.0, rng.uniform(0.85, 1.15, N_PASSES - 1)]
    offsets = np.r_[0.0, rng.uniform(-0.05, 0.05, N_PASSES - 1)]
    prof = dict(driver="GTiff", width=size, height=size, count=1, crs="EPSG:32633", transform=transform,
                tiled=True, blockxsize=512, blockysize=512)
    m = 4  # LR margin of every strip (shift room)
    for k in range(N_PASSES):
        coarse = gaussian_filter(rng.standard_normal((size // 16 + 2, size // 16 + 2)), 3, mode="wrap")
        thr = np.quantile(coarse, 1 - min(0.3, 0.05 * k))
        with rasterio.open(paths[k], "w", dtype="float32", **prof) as dp, \
                rasterio.open(masks[k], "w", dtype="uint8", **prof) as dm:
            for r0 in range(0, size, STRIP):
                r1 = min(size, r0 + STRIP)
                rows = np.arange((r0 - m) * scale, (r1 + m) * scale)
                cols = np.arange(-m * scale, (size + m) * scale)
                hr = tex(rows, cols)
                hr = nd_shift(hr, scale * shifts[k], order=1, mode="nearest")
                h, w = hr.shape[0] // scale, hr.shape[1] // scale
                lr = hr.reshape(h, scale, w, scale).mean(axis=(1, 3))[m:-m, m:-m]
                lr = gains[k] * lr + offsets[k] + 0.003 * rng.standard_normal(lr.shape).astype(np.float32)
                cz = zoom(coarse, 16, order=1)[r0:r1, :size]
                cloud = cz > thr if k else np.zeros_like(cz, bool)
                lr[cloud] = 5.0
                win = rasterio.windows.Window(0, r0, size, r1 - r0)
                dp.write(lr.astype(np.float32), 1, window=win)
                dm.write(cloud.astype(np.uint8), 1, window=win)
    done.write_text(json.dumps({"shifts": shifts.tolist(), "gains": gains.tolist()}))
    return paths, masks


def _child(args) -> None:
    """Run in a fresh process: warm up, fuse, print JSON with time and peak RSS."""
    import tempfile

    from mfsr.geo import fuse_rasters
    from mfsr.geo.synth import simulate_passes

    with tempfile.TemporaryDirectory() as tmp:
        from affine import Affine

        rng = np.random.default_rng(0)
        sp = simulate_passes(rng.random((80, 80)), Affine(10, 0, 0, 0, -10, 0), "EPSG:32633", tmp, n=3,
                             margin=4, seed=0)
        fuse_rasters(sp.paths, Path(tmp) / "w.tif", scale=2, masks=sp.mask_paths, tile=32)
    meta = json.loads((Path(args.folder) / "done.json").read_text())
    paths = sorted(Path(args.folder).glob("pass_*.tif"))
    masks = sorted(Path(args.folder).glob("mask_*.tif"))
    out = Path(args.folder) / "fused.tif"
    t0 = time.perf_counter()
    res = fuse_rasters(paths, out, scale=args.scale, masks=masks, tile=args.tile, workers=args.workers,
                       scheduler=args.scheduler, overwrite=True, progress=args.progress)
    wall = time.perf_counter() - t0
    status = Path("/proc/self/status").read_text()
    hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024
    err = np.abs(res.shifts - np.asarray(meta["shifts"])).max()
    print(json.dumps({"wall_s": wall, "peak_rss": hwm, "tiles": res.n_tiles, "shift_err": float(err),
                      "out_bytes": out.stat().st_size}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000, help="pass side, px (default 8000)")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=None, help="tiles in flight (default: fuse_rasters')")
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    folder = OUT / f"geo_{args.size}"
    t0 = time.perf_counter()
    generate(args.size, folder)
    gen = time.perf_counter() - t0
    cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--scale", str(args.scale),
           "--tile", str(args.tile), "--scheduler", args.scheduler]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.progress:
        cmd.append("--progress")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(proc.returncode)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    mpx = args.size * args.size / 1e6
    lines = [
        f"# Satellite-pass fusion: {args.size} x {args.size} px, {N_PASSES} passes, scale {args.scale:g}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}; "
        f"tile {args.tile}, workers {args.workers or 'default'}, scheduler {args.scheduler}.",
        "",
        "| input | output | tiles | wall time | per input Mpx (x8 passes) | peak RSS | goal | max shift error |",
        "|---|---|---|---|---|---|---|---|",
        f"| {N_PASSES} x {args.size}^2 float32 | {int(args.size * args.scale)}^2 float32 "
        f"({r['out_bytes'] / 2**30:.2f} GiB) | {r['tiles']} | {r['wall_s']:.1f} s | "
        f"{r['wall_s'] / mpx:.2f} s | {r['peak_rss'] / 2**20:.0f} MiB | "
        f"{'<' if r['peak_rss'] < GOAL_BYTES else '>'} 2048 MiB | {r['shift_err']:.3f} px |",
        "",
        f"(pass generation, not timed above: {gen:.0f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    (OUT / "geo.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
