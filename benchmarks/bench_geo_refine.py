"""The satellite refinement on the real stacks: ``fuse_rasters(refine=False)`` against ``refine=True``.

Usage::

    .venv/bin/python benchmarks/bench_geo_refine.py

Runs ``benchmarks/bench_real.py``'s ``sentinel2_section()`` and
``cbers4_section()`` (held-out-date prediction PSNR and downscale
consistency, see that module's docstring) twice, with every ``fuse_rasters``
call given ``refine=False`` and then ``refine=True``, and prints both as
markdown; also the Nyquist-band energy (:func:`mfsr.geo.masked_fusion.nyquist_energy`)
of the Sentinel-2 B08 product (all dates, reference date 2, scale 2) against
the bicubic upsampling of the reference date, the checkerboard measure of
the satellite defaults. Written to ``benchmarks/out/geo_refine.md``. The
simulated passes are ``benchmarks/bench_passes.py``'s (its ``mfsr
refine=True`` row).
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import bench_real  # noqa: E402

import mfsr.geo  # noqa: E402


def nyquist_rows(refine: bool) -> list[str]:
    """Sentinel-2 B08 Nyquist energy of the product relative to bicubic (one markdown line)."""
    from skimage.transform import resize

    from mfsr.geo.masked_fusion import nyquist_energy

    with tempfile.TemporaryDirectory() as td:
        stack, paths = bench_real.sentinel2_passes(Path(td))
        res = mfsr.geo.fuse_rasters(paths, Path(td) / "all.tif", scale=2, reference=bench_real.S2_REF)
        prod = bench_real._read_product(res.out_path)[..., 3]
    ref = stack[bench_real.S2_REF][..., 3]
    bic = resize(ref, (2 * ref.shape[0], 2 * ref.shape[1]), order=3, mode="edge")
    m = 4
    e = nyquist_energy(prod[m:-m, m:-m]) / nyquist_energy(bic[m:-m, m:-m])
    return [f"Sentinel-2 B08, all dates fused on date {bench_real.S2_REF}: Nyquist-band energy "
            f"{e:.2f} x bicubic's (refine={refine}).", ""]


def main() -> int:
    original = mfsr.geo.fuse_rasters
    lines = [f"# Satellite refinement on real stacks ({time.strftime('%Y-%m-%d')}, {bench_real.cpu_header()})", ""]
    t_all = time.perf_counter()
    try:
        for refine in (False, True):
            mfsr.geo.fuse_rasters = functools.partial(original, refine=refine)
            t0 = time.perf_counter()
            lines += [f"## refine={refine}", ""]
            for section in (bench_real.sentinel2_section, bench_real.cbers4_section):
                lines += section() + [""]
            lines += nyquist_rows(refine)
            lines += [f"({time.perf_counter() - t0:.0f} s)", ""]
    finally:
        mfsr.geo.fuse_rasters = original
    lines += [f"Total {time.perf_counter() - t_all:.0f} s."]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "geo_refine.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
