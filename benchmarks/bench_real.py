"""Real captures: every default of the engine judged on real data.

Usage::

    .venv/bin/python benchmarks/bench_real.py                  # every default section
    .venv/bin/python benchmarks/bench_real.py --quick          # fewer frames / crops
    .venv/bin/python benchmarks/bench_real.py --only openisp   # one section (repeatable)
    .venv/bin/python benchmarks/bench_real.py --only strength  # the refinement strength sweep
    .venv/bin/python benchmarks/bench_real.py --only strength --write-limit WEIGHTS_DIR  # ... into a manifest
    .venv/bin/python benchmarks/bench_real.py --cpu            # only the machine header line

The data are the real captures in ``../shared/data`` (beside the repository;
never copied into it). A section whose data is absent prints why and is
skipped. Every number is measured on the code as it is: the script hard-codes
no result and no default of the engine (it calls ``mfsr.fuse`` and
``mfsr.geo.fuse_rasters`` with their defaults, plus the named variants).
Markdown tables are printed and written to ``benchmarks/out/real_<section>.md``
(and ``benchmarks/out/real.md`` when every section ran). The functions
(``hdrplus_section``, ``openisp_section``, ... and the measures below) are
importable.

``--quick`` holds out only the last HDR+ frame, fuses all HDR+ frames for
the crush / halo table with the default and ``refine=False`` only (not
without sharpening), and uses a 2 x 2 openISP crop grid instead of 3 x 5;
the satellite sections are the same in both modes (they take seconds).

Header (``--cpu``)
    CPU model (``/proc/cpuinfo``), whether it has bfloat16 units (flags
    ``avx512_bf16`` or ``amx_bf16``: where absent, the refinement's
    ``precision="auto"`` runs float32), cores, torch / Numba threads and the
    git commit (with a note when the working tree differs from it).

Sections and measures
---------------------
hdrplus
    The HDR+ handheld burst (7 real JPEG frames, read through the inverse sRGB
    curve by :func:`mfsr.image_io.read_frames`), centre crop 800 x 600.

    *Held-out-frame prediction* (:func:`mfsr.held_out.held_out_psnr`): frame k is held out,
    the other six are fused with :func:`mfsr.fuse` (its own registration;
    reference = frame 0, or frame 1 when 0 is held out). The fused image is
    re-degraded to frame k's geometry (:func:`mfsr.held_out.predict_frame`:
    the flow of frame k to the reference from :func:`mfsr.register` on all
    seven frames is inverted by fixed-point iteration, the image is integrated
    over one input pixel (box filter of ``scale`` px) and sampled with cubic
    splines at the frame's pixel centres) and compared with frame k itself: PSNR (dB, linear
    [0, 1]) without a 16 px border. Frame k is a real, independent exposure,
    so a better fusion predicts it better, up to its own noise and JPEG
    artefacts. Variants: ``fuse`` with its defaults (refinement on),
    ``refine=False``, ``refine=False`` with ``FusionParams(sharpen_amount=0)``,
    and the reference frame upsampled (:func:`mfsr.baselines.single_frame_upscale`,
    cubic B-spline) predicted the same way. Mean and worst over held-out frames.
    The prediction applies no optical blur, so it ranks the optical image
    above an estimate that undoes the lens's blur; a second column fits that
    blur per case (:func:`mfsr.held_out.blur_fitted_psnr`, Gaussian sigma 0 to
    1.5 output px) and reports the mean score and the median blur fitted.

    *Black-crush share* (:func:`black_crush_share`): all seven frames fused
    (reference 0) and written as ``mfsr fuse DIR -o out.png`` writes them
    (sRGB encode, clip to [0, 1], round to 8 bits): the fraction of pixels
    whose every channel is <= 1 (1/255). The reference frame's own share (same
    encode) is the yardstick: more than it means shadows were pushed to black
    (undershoot of sharpening or refinement below zero, then clipped).

    *Halo amplitude* (:func:`halo_amplitude`), in 8-bit sRGB levels (0..255,
    before rounding, after clipping to [0, 1] as the PNG does): ``base`` is the
    reference frame upsampled (cubic B-spline; the frame itself at scale 1),
    ``lo``/``hi`` its per-channel minimum / maximum over a square of side
    ``2 r + 1``, ``r = ceil(2 * scale)`` output px. The overshoot of an output
    pixel's channel is ``max(out - hi, 0) + max(lo - out, 0)``: how far it
    leaves the range of values the reference shows around it. Measured near
    strong edges only: pixels within ``r`` px of an edge pixel, an edge pixel
    being in the top 5 % of the Sobel gradient magnitude of ``base``'s channel
    mean (16 px border excluded). Reported: the mean over those pixels and
    channels ("mean"), the 99th percentile of the per-pixel maximum over
    channels ("p99") and the share of those pixels overshooting by more than
    4 levels in some channel ("> 4"). A noisy reference widens its own
    ``[lo, hi]``, so denoising alone does not count as a halo; ringing from
    sharpening or refinement does. The reference upsampled scores 0 by
    construction.

openisp
    A real 10-bit RGGB mosaic (1920 x 1080). Truth = its RGGB cells as RGB
    pixels (960 x 540), cut into 192 x 192 crops on a regular grid over the
    whole chart (near-flat crops, mean absolute gradient below 0.005, are
    skipped). Each crop is re-mosaicked into 8-frame bursts by
    :func:`mfsr.synth.simulate_burst` (shifts up to 2 px, rotation up to
    0.5 degree, blur 0.3, RGGB; seed = crop index) at scales 1 and 2, clean
    (alpha, beta = 0, 0) and noisy (2e-4, 2e-6). Per crop: PSNR (8 px border
    excluded) of ``fuse`` with its defaults (refined), ``refine=False``, and
    the single frame bilinear-demosaicked and upsampled
    (``single_frame_upscale(frames[0], s, cfa="RGGB")``). Reported per (scale,
    noise): mean PSNRs, the refinement's effect (default minus ``refine=False``:
    mean, worst crop, crops losing more than 0.1 dB) and the mean gain of the
    default over the single frame. ``fuse`` calls
    :func:`mfsr.refine.refine_image` with its default ``precision="auto"``
    (bfloat16 where the CPU has bfloat16 units, float32 elsewhere); the header
    says which ran. On a CPU with bfloat16 units the refinement is also run in
    forced float32 (``refine_image(..., precision="fp32")`` on the unrefined
    fusion) and reported beside it.

sentinel2, cbers4
    Real satellite passes written as GeoTIFFs in a temporary folder (as
    ``tests/test_geo_realdata.py`` does): Sentinel-2 (5 dates, bands B02, B03,
    B04, B08; dates 0 and 1 cloudy, no masks) and CBERS-4 AWFI (the 5
    dry-season dates, bands B13 to B16 in one file per date, with the CMASK
    cloud masks). Fused by :func:`mfsr.geo.fuse_rasters` at scale 2.

    *Held-out-date prediction* (:func:`held_out_date_psnr`): for every clear
    date d, all other dates are fused (reference: the usual reference date, or
    the next clear one when it is d), the product is area-downscaled by 2 back
    to the native grid (:func:`mfsr.metrics.degrade`: exact pixel-area means)
    and compared with date d over its valid pixels (not masked, not nodata,
    2 px border excluded) after a least-squares gain and offset per band
    (dates differ in radiometry). PSNR in units of date d's band range (0.1 to
    99.9 percentile), averaged over bands. Baseline: the reference date
    itself (no interpolation at all), scored the same way. A second pair of
    columns compensates date d's sub-pixel misregistration (the shift
    ``fuse_rasters`` estimates for it when all dates are fused with the same
    reference), applied to both predictions by cubic-spline shifting, so the
    comparison measures detail rather than geometry.

    *Downscale consistency* (:func:`mfsr.metrics.downscale_consistency`, 2 px
    border): all dates fused on the usual reference; the product degraded
    back to the reference grid vs the reference date (both normalised by the
    reference's 0.1 to 99.9 percentiles), per band, against the same for the
    reference upsampled bicubically (skimage ``resize(order=3)``).

    *Sentinel-2 automatic reference*: ``fuse_rasters`` called without a
    ``reference`` argument: the date it used (``GeoFusionResult.reference``),
    the parameter's default, and the product's B02 mean against the clear
    dates' mean and the cloudy dates' mean (the product keeps its reference's
    radiometry: a cloudy reference shows as a bright B02).

modis
    MODIS NDVI, 12 dates (int16 JPEG2000, no nodata) fused at scale 2 with
    ``fuse_rasters``' defaults (``save_count`` when available). Reported: the
    output's value range against the inputs' (all dates and pixels), the share
    of output pixels with count 0, and the number of valid (finite) output
    values outside ``[min - 3 sigma, max + 3 sigma]``: globally (min / max of
    all inputs; sigma = noise standard deviation of the inputs, median over
    dates of the MAD of horizontal first differences / (0.6745 sqrt 2)) and
    locally (min / max over all dates of the 3 x 3 native pixels around the
    output pixel: overshoot no input shows there).

strength (only with ``--only strength``)
    The sweep behind the manifest's ``real_capture_limit``: the refinement
    (:func:`mfsr.refine.refine_image` with ``strength`` = each of
    ``STRENGTHS``, default ensemble and precision) applied to the plain
    fusion (``refine=False``) of the real cases above. Grey and RGB: the HDR+
    held-out frames (grey = the frames' channel mean), scales 1 and 2; Bayer:
    the openISP crops, clean and noisy pooled, scales 1 and 2. Per (mode,
    scale) and strength: the mean and worst gain over the plain fusion. The
    limit is the largest strength whose worst case loses no more than
    ``LIMIT_LOSS`` dB and whose mean gain is not below that of a smaller
    accepted strength (0 if none), printed beside the manifest's.

Problems (exceptions in the engine on these data) are caught per case, shown
in the tables as "error" and listed at the end.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out"

HDRPLUS = DATA / "hdrplus_burst"
OPENISP = DATA / "bayer_openisp" / "openISP_test_1920x1080_RGGB_10bit_u16le.RAW"
S2_DIR = DATA / "sentinel2_eolearn"
CBERS_DIR = DATA / "cbers4_awfi"
MODIS_DIR = DATA / "modis_ndvi"

SECTIONS = ("hdrplus", "openisp", "sentinel2", "cbers4", "modis")
#: Sections run only when named with --only.
EXTRA_SECTIONS = ("strength",)
#: Refinement strengths of the sweep, and the worst loss (dB) a limit may allow.
STRENGTHS = (0.0, 0.1, 0.25, 0.5, 0.8, 1.0)
LIMIT_LOSS = 0.05

#: HDR+ centre crop (rows, cols) of the 1200 x 1600 frames: 600 x 800.
HDR_CROP = (slice(300, 900), slice(400, 1200))
HDR_BORDER = 16
#: openISP crops, burst simulation and scoring.
ISP_CROP = 192
ISP_GRID = (3, 5)  # rows x cols of the crop grid (default run)
ISP_GRID_QUICK = (2, 2)
ISP_FLAT = 0.005  # mean |gradient| below which a crop is skipped as near-flat
ISP_BORDER = 8
ISP_NOISE = {"clean": (0.0, 0.0), "noisy": (2e-4, 2e-6)}
ISP_BURST = dict(n_frames=8, cfa="RGGB", max_shift=2.0, max_rotation=0.5, blur_sigma=0.3)
#: Sentinel-2: bands B02, B03, B04, B08 of the 13; dates 0 and 1 are cloudy (data README).
S2_BANDS = (1, 2, 3, 7)
S2_NAMES = ("B02", "B03", "B04", "B08")
S2_CLEAR = (2, 3, 4)
S2_REF = 2
#: CBERS-4 AWFI: the dry-season dates (one landscape) and their usual reference.
CBERS_DATES = ("2018-06-10", "2018-06-26", "2018-07-12", "2018-07-28", "2018-08-13")
CBERS_BANDS = ("B13", "B14", "B15", "B16")
CBERS_REF = 2
SAT_BORDER = 2

#: Engine problems met while running (exceptions on real data), listed at the end.
PROBLEMS: list[str] = []


# ----------------------------------------------------------------------------- helpers


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table from a header and rows of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def fmt(x, digits: int = 2, signed: bool = False) -> str:
    """A number for a table; "error"/"n/a" for None or NaN."""
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if not np.isfinite(x):
        return "n/a" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _skipped(lines: list[str], needed: Path, shown: Path) -> list[str] | None:
    """The section's lines with a skip note when ``needed`` is absent (printed too), else None."""
    if needed.exists():
        return None
    msg = f"skipped: {shown} not found (the ../shared/data folder is absent)"
    print(msg)
    return lines + [msg]


def _problem(where: str, exc: BaseException) -> None:
    msg = f"{where}: {type(exc).__name__}: {exc}"
    PROBLEMS.append(msg)
    print(f"  ! {msg}", flush=True)


def _warning_notes(caught, label: str = "") -> list[str]:
    """Distinct warning messages (shortened) caught during a section (or one run of it: ``label``)."""
    seen: dict[str, int] = {}
    for w in caught:
        text = re.sub(r"\s+", " ", str(w.message))
        text = re.sub(r"/\S+/", "", text)  # drop temporary folders
        key = f"{w.category.__name__}: {text[:160]}"
        seen[key] = seen.get(key, 0) + 1
    return [f"- warning{label} ({n}x) {k}" for k, n in seen.items()]


def cpu_header() -> str:
    """One line: CPU model, bfloat16 units, cores, threads, git commit."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    model = m.group(1).strip() if m else "unknown CPU"
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", info)))
    bf16 = f"yes ({', '.join(flags)}): precision 'auto' = bfloat16" if flags else (
        "no (neither avx512_bf16 nor amx_bf16): precision 'auto' = float32")
    cores = os.cpu_count()
    try:
        import torch

        tthreads = torch.get_num_threads()
    except Exception:  # noqa: BLE001 - the header must not fail
        tthreads = "n/a"
    try:
        import numba

        nthreads = numba.get_num_threads()
    except Exception:  # noqa: BLE001
        nthreads = "n/a"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "mfsr", "kernels",
                                "geo"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        if dirty:
            commit += f" + uncommitted changes in {len(dirty.splitlines())} engine file(s)"
    except (OSError, subprocess.CalledProcessError):
        commit = "n/a"
    return (f"CPU: {model}; bfloat16 units: {bf16}; cores: {cores} (torch threads {tthreads}, "
            f"Numba threads {nthreads}); commit {commit}")


def has_bf16_units() -> bool:
    """Whether /proc/cpuinfo lists bfloat16 units (the rule of the refinement's "auto")."""
    try:
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:
        return False


def refinement_precision(bf16: bool) -> str:
    """Which arithmetic ``fuse``'s refinement runs in here, read from the signatures (not assumed)."""
    from mfsr import fuse
    from mfsr.refine import refine_image

    own = inspect.signature(fuse).parameters.get("precision")
    if own is not None:
        value, how = own.default, f"fuse's precision default {own.default!r}"
    else:
        rp = inspect.signature(refine_image).parameters.get("precision")
        value = rp.default if rp is not None else None
        how = f"fuse passes no precision: refine_image's default {value!r}"
    if value == "auto":
        return f"{how} = {'bfloat16' if bf16 else 'float32'} on this CPU"
    return how if value is not None else "n/a (refine_image has no precision parameter)"


# ----------------------------------------------------------------------------- camera measures


def srgb_levels(linear: np.ndarray) -> np.ndarray:
    """What an 8-bit sRGB PNG holds, before rounding: clip(sRGB(x), 0, 1) * 255."""
    from mfsr.transfer import linear_to_srgb

    return np.clip(linear_to_srgb(linear), 0.0, 1.0) * 255.0


def black_crush_share(linear: np.ndarray, crop: int = 0) -> float:
    """Fraction of pixels whose every channel is <= 1 in the 8-bit sRGB output."""
    q = np.rint(srgb_levels(linear))
    if crop:
        q = q[crop:-crop, crop:-crop]
    return float(np.all(q <= 1, axis=-1).mean())


def halo_amplitude(out: np.ndarray, base: np.ndarray, scale: float, crop: int = HDR_BORDER) -> dict:
    """Overshoot of ``out`` beyond the local range of ``base`` near strong edges (module docstring).

    Returns a dict: ``mean`` and ``p99`` (8-bit sRGB levels) and ``over4``
    (share of edge-region pixels overshooting by more than 4 levels).
    """
    o = srgb_levels(out)
    b = srgb_levels(base)
    r = int(math.ceil(2 * scale))
    size = (2 * r + 1, 2 * r + 1, 1)
    hi = ndimage.maximum_filter(b, size=size, mode="nearest")
    lo = ndimage.minimum_filter(b, size=size, mode="nearest")
    over = np.maximum(o - hi, 0) + np.maximum(lo - o, 0)
    luma = b.mean(axis=-1)
    grad = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    inner = np.zeros(luma.shape, bool)
    inner[crop:-crop, crop:-crop] = True
    edges = (grad >= np.percentile(grad[inner], 95)) & inner
    region = ndimage.binary_dilation(edges, structure=np.ones((2 * r + 1, 2 * r + 1), bool)) & inner
    per_pixel = over[region].max(axis=-1)
    return {"mean": float(over[region].mean()), "p99": float(np.percentile(per_pixel, 99)),
            "over4": float((per_pixel > 4).mean())}


# ----------------------------------------------------------------------------- hdrplus


def hdrplus_section(quick: bool = False) -> list[str]:
    """HDR+ burst: held-out-frame prediction, black crush and halos (module docstring)."""
    from mfsr import FusionParams, fuse, register
    from mfsr.baselines import single_frame_upscale
    from mfsr.held_out import blur_fitted_psnr, held_out_psnr
    from mfsr.image_io import read_frames

    lines = ["## hdrplus: HDR+ handheld burst (7 real JPEG frames, centre 800x600)", ""]
    if (skipped := _skipped(lines, HDRPLUS, HDRPLUS)) is not None:
        return skipped
    frames, _ = read_frames([HDRPLUS])
    frames = np.ascontiguousarray(frames[:, HDR_CROP[0], HDR_CROP[1]])
    n = len(frames)
    held = (n - 1,) if quick else tuple(range(n))
    scales = (1, 2)
    variants = {
        "default (refined)": dict(),
        "refine=False": dict(refine=False),
        "refine=False, sharpen_amount=0": dict(refine=False, params=FusionParams(sharpen_amount=0)),
    }
    flows = {}  # reference -> flows of all frames to it (mfsr.register)
    scores = {(s, v): [] for s in scales for v in [*variants, "reference upsampled"]}
    fitted = {key: [] for key in scores}  # (PSNR, blur) with the optics' blur fitted (mfsr.held_out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in held:
            ref = 0 if k != 0 else 1
            if ref not in flows:
                flows[ref] = register(frames, reference=ref)
            others = [i for i in range(n) if i != k]
            ridx = others.index(ref)
            for s in scales:
                for name, kw in variants.items():
                    t = time.perf_counter()
                    try:
                        hr = fuse(frames[others], scale=s, reference=ridx, **kw).image
                        score = held_out_psnr(hr, flows[ref][k], frames[k], s, crop=HDR_BORDER)
                        fitted[(s, name)].append(blur_fitted_psnr(hr, flows[ref][k], frames[k], s, crop=HDR_BORDER))
                    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                        _problem(f"hdrplus held-out frame {k}, scale {s}, {name}", exc)
                        score = float("nan")
                    scores[(s, name)].append(score)
                    print(f"  hdrplus held-out {k} x{s} {name}: {score:.2f} dB ({time.perf_counter() - t:.1f} s)",
                          flush=True)
                base = single_frame_upscale(frames[ref], s)
                scores[(s, "reference upsampled")].append(
                    held_out_psnr(base, flows[ref][k], frames[k], s, crop=HDR_BORDER))
                fitted[(s, "reference upsampled")].append(
                    blur_fitted_psnr(base, flows[ref][k], frames[k], s, crop=HDR_BORDER))

        rows = []
        for s in scales:
            ref_mean = np.mean(scores[(s, "reference upsampled")])
            for name in [*variants, "reference upsampled"]:
                v = np.asarray(scores[(s, name)], float)
                ok = v[np.isfinite(v)]
                worst_k = held[int(np.nanargmin(v))] if ok.size else None
                fit = np.asarray(fitted[(s, name)], float).reshape(-1, 2)
                rows.append([f"x{s}", name, fmt(ok.mean() if ok.size else None),
                             fmt(ok.min() if ok.size else None) + (f" (frame {worst_k})" if ok.size else ""),
                             fmt(ok.mean() - ref_mean if ok.size else None, signed=True),
                             fmt(fit[:, 0].mean() if fit.size else None),
                             fmt(float(np.median(fit[:, 1])) if fit.size else None)])
        lines += [f"Held-out-frame prediction: PSNR (dB) of the fusion of the other {n - 1} frames re-degraded "
                  f"to the held-out frame, {HDR_BORDER} px border excluded; held-out frames "
                  f"{', '.join(map(str, held))}. 'Blur-fitted': the same with the optics' Gaussian blur fitted "
                  "per case (mfsr.held_out.blur_fitted_psnr), which does not rank an image that undoes the "
                  "lens's blur below the optical image.", ""]
        lines += table(["scale", "variant", "mean", "worst", "mean vs reference upsampled", "blur-fitted mean",
                        "fitted blur (output px, median)"], rows)

        # black crush and halos: all frames fused, as `mfsr fuse DIR -o out.png`
        crush_variants = dict(list(variants.items())[:2]) if quick else dict(variants)
        rows = []
        ref_share = black_crush_share(frames[0], crop=HDR_BORDER)
        for s in scales:
            base = single_frame_upscale(frames[0], s)
            for name, kw in crush_variants.items():
                t = time.perf_counter()
                try:
                    out = fuse(frames, scale=s, reference=0, **kw).image
                except Exception as exc:  # noqa: BLE001
                    _problem(f"hdrplus all frames, scale {s}, {name}", exc)
                    rows.append([f"x{s}", name, "error", fmt(ref_share * 100, 3), "error", "error", "error"])
                    continue
                share = black_crush_share(out, crop=HDR_BORDER * s)
                halo = halo_amplitude(out, base, s, crop=HDR_BORDER * s)
                rows.append([f"x{s}", name, fmt(share * 100, 3), fmt(ref_share * 100, 3), fmt(halo["mean"], 3),
                             fmt(halo["p99"], 1), fmt(halo["over4"] * 100, 2)])
                print(f"  hdrplus all frames x{s} {name}: crush {share * 100:.3f} %, halo {halo} "
                      f"({time.perf_counter() - t:.1f} s)", flush=True)
            rows.append([f"x{s}", "reference upsampled", fmt(black_crush_share(base, crop=HDR_BORDER * s) * 100, 3),
                         fmt(ref_share * 100, 3), "0 (by definition)", "0", "0"])
        lines += ["", f"Black crush and halos: all {n} frames fused (reference 0), 8-bit sRGB output as the CLI "
                  "writes it. Crush = % of pixels with every channel <= 1/255 (reference frame: its own share). "
                  "Halo = overshoot beyond the reference's local range near strong edges, 8-bit sRGB levels "
                  "(module docstring).", ""]
        lines += table(["scale", "variant", "black crush %", "reference frame %", "halo mean (levels)",
                        "halo p99 (levels)", "> 4 levels (% of edge pixels)"], rows)
    lines += _warning_notes(caught)
    return lines


# ----------------------------------------------------------------------------- openisp


def openisp_truth() -> np.ndarray:
    """The real mosaic's RGGB cells as RGB pixels (540 x 960 x 3)."""
    from mfsr.raw_io import read_headerless

    m = read_headerless(OPENISP, width=1920, height=1080, bits=10, cfa="RGGB").mosaic
    return np.stack([m[0::2, 0::2], (m[0::2, 1::2] + m[1::2, 0::2]) / 2, m[1::2, 1::2]], axis=-1).astype(np.float32)


def crop_grid(shape, grid: tuple[int, int], size: int = ISP_CROP) -> list[tuple[int, int]]:
    """Top-left corners of ``grid`` crops of ``size`` spread evenly over an image of ``shape``."""
    h, w = shape[:2]
    return [(int(y), int(x)) for y in np.linspace(0, h - size, grid[0]).round().astype(int)
            for x in np.linspace(0, w - size, grid[1]).round().astype(int)]


def is_flat(crop: np.ndarray) -> bool:
    """Near-flat: mean absolute first difference of the channel mean below :data:`ISP_FLAT`."""
    c = crop.mean(axis=-1)
    return 0.5 * (np.abs(np.diff(c, axis=0)).mean() + np.abs(np.diff(c, axis=1)).mean()) < ISP_FLAT


def openisp_crops(truth: np.ndarray, grid: tuple[int, int], size: int = ISP_CROP) -> list[tuple[int, int]]:
    """Top-left corners of crops on a regular grid over the image, near-flat ones skipped."""
    return [(y, x) for y, x in crop_grid(truth.shape, grid, size) if not is_flat(truth[y:y + size, x:x + size])]


def openisp_section(quick: bool = False) -> list[str]:
    """Real sensor content re-mosaicked into bursts (module docstring)."""
    from mfsr import fuse
    from mfsr.baselines import single_frame_upscale
    from mfsr.metrics import psnr
    from mfsr.synth import simulate_burst

    lines = ["## openisp: real RGGB sensor content re-mosaicked into 8-frame bursts", ""]
    if (skipped := _skipped(lines, OPENISP, OPENISP)) is not None:
        return skipped
    bf16 = has_bf16_units()
    if bf16:
        from mfsr.refine import refine_image
    truth = openisp_truth()
    grid = ISP_GRID_QUICK if quick else ISP_GRID
    corners = openisp_crops(truth, grid)
    skipped = [c for c in crop_grid(truth.shape, grid) if c not in corners]
    n_cand = grid[0] * grid[1]
    res: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ci, (y, x) in enumerate(corners):
            scene = truth[y:y + ISP_CROP, x:x + ISP_CROP]
            t = time.perf_counter()
            for s in (1, 2):
                for nname, (alpha, beta) in ISP_NOISE.items():
                    burst = simulate_burst(scene, scale=s, alpha=alpha, beta=beta, seed=ci, **ISP_BURST)
                    gt = burst.ground_truth
                    row = {}
                    try:
                        r = fuse(burst.frames, scale=s, cfa="RGGB")
                        row["default"] = psnr(r.image, gt, crop=ISP_BORDER)
                        r0 = fuse(burst.frames, scale=s, cfa="RGGB", refine=False)
                        row["norefine"] = psnr(r0.image, gt, crop=ISP_BORDER)
                        if bf16:
                            f32 = refine_image(r0.image, r0.confidence, cfa="RGGB", scale=s, noise=r0.noise,
                                               precision="fp32")
                            row["fp32"] = psnr(f32, gt, crop=ISP_BORDER)
                    except Exception as exc:  # noqa: BLE001
                        _problem(f"openisp crop ({y}, {x}), scale {s}, {nname}", exc)
                    single = single_frame_upscale(burst.frames[0], s, cfa="RGGB")
                    row["single"] = psnr(single, gt, crop=ISP_BORDER)
                    res[(ci, s, nname)] = row
            print(f"  openisp crop {ci + 1}/{len(corners)} at ({y}, {x}): "
                  + ", ".join(f"x{s} {nn} {res[(ci, s, nn)].get('default', float('nan')) - res[(ci, s, nn)].get('norefine', float('nan')):+.2f}"
                              for s in (1, 2) for nn in ISP_NOISE)
                  + f" dB refinement ({time.perf_counter() - t:.1f} s)", flush=True)

    precision = refinement_precision(bf16)
    rows = []
    for s in (1, 2):
        for nname in ISP_NOISE:
            cells = [res[(ci, s, nname)] for ci in range(len(corners))]
            ok = [c for c in cells if "default" in c and "norefine" in c]
            if not ok:
                rows.append([f"x{s}", nname, len(corners)] + ["error"] * (9 if bf16 else 7))
                continue
            d = np.array([c["default"] - c["norefine"] for c in ok])
            worst = int(np.argmin(d))
            worst_corner = corners[cells.index(ok[worst])]
            gain = np.array([c["default"] - c["single"] for c in ok])
            row = [f"x{s}", nname, f"{len(ok)}/{len(corners)}",
                   fmt(np.mean([c["default"] for c in ok])), fmt(np.mean([c["norefine"] for c in ok])),
                   fmt(np.mean([c["single"] for c in ok])), fmt(d.mean(), signed=True),
                   f"{fmt(d[worst], signed=True)} ({worst_corner[0]}, {worst_corner[1]})",
                   f"{int((d < -0.1).sum())}", fmt(gain.mean(), signed=True)]
            if bf16:
                d32 = np.array([c["fp32"] - c["norefine"] for c in ok if "fp32" in c])
                row += [fmt(d32.mean(), signed=True), fmt(d32.min(), signed=True)] if d32.size else ["error"] * 2
            rows.append(row)
    header = ["scale", "noise", "crops", "default PSNR", "refine=False PSNR", "single frame PSNR",
              "default - refine=False: mean", "worst crop (y, x)", "crops < -0.1 dB", "default - single: mean"]
    if bf16:
        header += ["fp32 refinement - refine=False: mean", "fp32: worst crop"]
    lines += [f"{len(corners)} crops of {ISP_CROP}x{ISP_CROP} (of {n_cand} on a {grid[0]}x{grid[1]} grid; near-flat "
              f"skipped: {', '.join(map(str, skipped)) or 'none'}), truth = RGGB cells as RGB. PSNR dB, {ISP_BORDER} px border excluded. Refinement "
              f"precision: {precision}.", ""]
    lines += table(header, rows)
    lines += _warning_notes(caught)
    return lines


# ----------------------------------------------------------------------------- satellite helpers


def fit_gain_offset(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a * pred + b`` with (a, b) the least-squares fit of ``target`` (1-D arrays)."""
    a = np.vstack([pred, np.ones_like(pred)]).T
    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
    return a @ coef


def held_out_date_psnr(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
                       border: int = SAT_BORDER) -> float:
    """PSNR (dB) of ``pred`` vs ``target`` (H, W, C) after a per-band gain/offset fit.

    In units of the target band's 0.1..99.9 percentile range, over ``valid``
    pixels minus ``border``; the mean over bands.
    """
    inner = np.zeros(valid.shape, bool)
    inner[border:valid.shape[0] - border, border:valid.shape[1] - border] = True
    m = valid & inner & np.all(np.isfinite(pred), axis=-1) & np.all(np.isfinite(target), axis=-1)
    out = []
    for b in range(target.shape[-1]):
        t = target[..., b][m].astype(np.float64)
        p = pred[..., b][m].astype(np.float64)
        lo, hi = np.percentile(t, [0.1, 99.9])
        err = (t - fit_gain_offset(p, t)) / max(hi - lo, 1e-12)
        out.append(10 * np.log10(1.0 / max(np.mean(err ** 2), 1e-20)))
    return float(np.mean(out))


def _read_product(path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as o:
        return np.moveaxis(o.read().astype(np.float32), 0, -1)


def _downscale(product: np.ndarray, shape) -> np.ndarray:
    from mfsr.metrics import degrade

    filled = np.where(np.isfinite(product), product, np.nanmean(product))  # NaN would spread in the means
    return degrade(filled, 2, shape=shape)


def _shifted(img: np.ndarray, shift) -> np.ndarray:
    """Content moved by ``shift`` (dy, dx): out(q) = img(q - shift), cubic splines, per band."""
    return np.stack([ndimage.shift(img[..., b], shift, order=3, mode="nearest") for b in range(img.shape[-1])], -1)


def _bicubic_consistency(ref01: np.ndarray, scale: int = 2) -> float:
    from skimage.transform import resize

    from mfsr.metrics import downscale_consistency

    up = resize(ref01, (int(ref01.shape[0] * scale), int(ref01.shape[1] * scale)), order=3, mode="edge")
    return downscale_consistency(up.astype(np.float32), ref01, scale, crop=SAT_BORDER)


def satellite_tables(name: str, stack: np.ndarray, valid: np.ndarray, paths: list, masks, clear, ref: int,
                     tmp: Path, band_names) -> list[str]:
    """Held-out-date prediction and downscale consistency for one stack of passes.

    ``stack`` (N, H, W, C) native values, ``valid`` (N, H, W) bool, ``paths``
    the passes' GeoTIFFs, ``masks`` their mask files or None, ``clear`` the
    dates held out in turn, ``ref`` the usual reference.
    """
    from mfsr.geo import fuse_rasters
    from mfsr.metrics import downscale_consistency

    n = len(paths)
    h, w = stack.shape[1:3]
    lines = []
    counter = [0]

    def run(idx, reference):
        counter[0] += 1
        out = tmp / f"{name}_{counter[0]}.tif"
        kw = {} if masks is None else {"masks": [masks[i] for i in idx]}
        return fuse_rasters([paths[i] for i in idx], out, scale=2, reference=idx.index(reference), **kw)

    full = {}  # reference -> result of fusing every date

    def fused_all(reference):
        if reference not in full:
            full[reference] = run(list(range(n)), reference)
        return full[reference]

    rows = []
    for d in clear:
        r = ref if d != ref else next(c for c in clear if c != d)
        idx = [i for i in range(n) if i != d]
        try:
            res = run(idx, r)
            pred = _downscale(_read_product(res.out_path), (h, w))
            base = stack[r]
            f_psnr = held_out_date_psnr(pred, stack[d], valid[d])
            b_psnr = held_out_date_psnr(base, stack[d], valid[d])
            shift = np.asarray(fused_all(r).shifts[d], float)
            f_sh = held_out_date_psnr(_shifted(pred, shift), stack[d], valid[d])
            b_sh = held_out_date_psnr(_shifted(base.astype(np.float32), shift), stack[d], valid[d])
            rows.append([d, r, fmt(f_psnr), fmt(b_psnr), fmt(f_psnr - b_psnr, signed=True),
                         f"({shift[0]:+.2f}, {shift[1]:+.2f})", fmt(f_sh), fmt(b_sh), fmt(f_sh - b_sh, signed=True)])
        except Exception as exc:  # noqa: BLE001
            _problem(f"{name} held-out date {d}", exc)
            rows.append([d, r] + ["error"] * 7)
    if rows:
        good = [r for r in rows if r[2] != "error"]
        if good:
            rows.append(["mean", "", "", "", fmt(np.mean([float(r[4]) for r in good]), signed=True), "", "", "",
                         fmt(np.mean([float(r[8]) for r in good]), signed=True)])
    lines += [f"Held-out-date prediction: the other {n - 1} dates fused at scale 2, area-downscaled by 2, vs the "
              "held-out date (valid pixels, gain/offset fitted per band); PSNR dB in units of the date's band "
              "range, mean over bands. Baseline: the reference date itself. 'shift-compensated': both "
              "predictions moved by the held-out date's estimated shift.", ""]
    lines += table(["held-out date", "reference", "fused", "reference date", "fused - reference",
                    "shift (dy, dx) px", "fused, shift-comp.", "reference, shift-comp.", "difference"], rows)

    # downscale consistency of the fusion of every date
    try:
        res = fused_all(ref)
        product = _read_product(res.out_path)
        rows = []
        for b in range(stack.shape[-1]):
            lo, hi = np.percentile(stack[ref][..., b][valid[ref]], [0.1, 99.9])
            r01 = ((stack[ref][..., b] - lo) / (hi - lo)).astype(np.float32)
            f01 = ((product[..., b] - lo) / (hi - lo)).astype(np.float32)
            nan = int(np.isnan(f01).sum())
            f01 = np.where(np.isfinite(f01), f01, np.nanmean(f01)).astype(np.float32)
            ours = downscale_consistency(f01, r01, 2, crop=SAT_BORDER)
            base = _bicubic_consistency(r01)
            rows.append([band_names[b], fmt(ours), fmt(base), fmt(ours - base, signed=True), nan])
        lines += ["", f"Downscale consistency (dB, {SAT_BORDER} px border): all {n} dates fused on reference date {ref}; "
                  f"registered passes: {int(np.sum(res.registered))}/{n}; shifts (px): "
                  + ", ".join(f"{i}: ({s[0]:+.2f}, {s[1]:+.2f})" for i, s in enumerate(res.shifts)) + ".", ""]
        lines += table(["band", "fused", "bicubic reference date", "difference", "NaN output pixels"], rows)
    except Exception as exc:  # noqa: BLE001
        _problem(f"{name} fusion of every date", exc)
        lines += ["", "Downscale consistency: error (see problems)."]
    return lines


# ----------------------------------------------------------------------------- sentinel2


def sentinel2_passes(tmp: Path):
    """The Sentinel-2 stack (5, 101, 100, 4) and one 4-band GeoTIFF per date in ``tmp``."""
    import rasterio

    stack = np.load(S2_DIR / "REFERENCE_SCENES.npy")
    gj = json.loads((S2_DIR / "bbox.geojson").read_text())
    xs = [c[0] for c in gj["coordinates"][0]]
    ys = [c[1] for c in gj["coordinates"][0]]
    with warnings.catch_warnings():  # rasterio's own Affine "*" (not the engine's)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        t = rasterio.transform.from_bounds(min(xs), min(ys), max(xs), max(ys), width=100, height=101)
    paths = []
    for d in range(stack.shape[0]):
        p = tmp / f"s2_{d}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=100, height=101, count=len(S2_BANDS), dtype="float32",
                           crs="EPSG:32633", transform=t) as dst:
            dst.write(np.moveaxis(stack[d][..., list(S2_BANDS)], -1, 0))
            for i, nm in enumerate(S2_NAMES, start=1):
                dst.set_band_description(i, nm)
        paths.append(p)
    return stack[..., list(S2_BANDS)].astype(np.float32), paths


def sentinel2_section(quick: bool = False) -> list[str]:
    """Sentinel-2: held-out dates, downscale consistency, automatic reference (module docstring)."""
    from mfsr.geo import fuse_rasters

    lines = ["## sentinel2: Sentinel-2 L1C, 5 dates (0 and 1 cloudy), B02/B03/B04/B08, scale 2", ""]
    if (skipped := _skipped(lines, S2_DIR / "REFERENCE_SCENES.npy", S2_DIR)) is not None:
        return skipped
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tmp = Path(td)
        stack, paths = sentinel2_passes(tmp)
        valid = np.all(np.isfinite(stack), axis=-1)
        lines += satellite_tables("sentinel2", stack, valid, paths, None, S2_CLEAR, S2_REF, tmp, S2_NAMES)

        # without a reference argument
        default = inspect.signature(fuse_rasters).parameters.get("reference")
        default = "n/a (no reference parameter)" if default is None else repr(default.default)
        b02 = stack[..., 0].reshape(len(paths), -1).mean(axis=1)
        cloudy = [d for d in range(len(paths)) if d not in S2_CLEAR]
        try:
            with warnings.catch_warnings(record=True) as caught_auto:
                warnings.simplefilter("always")
                res = fuse_rasters(paths, tmp / "auto.tif", scale=2)
            chosen = getattr(res, "reference", None)
            prod_b02 = float(np.nanmean(_read_product(res.out_path)[..., 0]))
            chosen_s = "n/a" if chosen is None else f"{chosen} ({'clear' if chosen in S2_CLEAR else 'cloudy'})"
            row = [default, chosen_s, fmt(prod_b02, 4), fmt(b02[list(S2_CLEAR)].mean(), 4), fmt(b02[cloudy].mean(), 4),
                   fmt(b02[chosen], 4) if chosen is not None else "n/a"]
        except Exception as exc:  # noqa: BLE001
            _problem("sentinel2 without a reference argument", exc)
            row = [default, "error", "error", fmt(b02[list(S2_CLEAR)].mean(), 4), fmt(b02[cloudy].mean(), 4), "n/a"]
        lines += ["", "Without a reference argument: the date used and the product's B02 mean (TOA reflectance) "
                  "against the dates' own means.", ""]
        lines += table(["reference default", "date used", "product B02 mean", "clear dates' B02 mean",
                        "cloudy dates' B02 mean", "used date's B02 mean"], [row])
    lines += _warning_notes(caught)
    if "caught_auto" in locals():
        lines += _warning_notes(caught_auto, " (run without reference)")
    return lines


# ----------------------------------------------------------------------------- cbers4


def cbers_passes(tmp: Path):
    """The dry-season CBERS stack (5, 50, 50, 4), 4-band GeoTIFFs in ``tmp``, masks and validity."""
    import rasterio

    stack, paths, masks, valid = [], [], [], []
    for d in CBERS_DATES:
        bands, nodata, profile = [], None, None
        for b in CBERS_BANDS:
            with rasterio.open(next(CBERS_DIR.glob(f"*_{b}_{d}.tif"))) as src:
                bands.append(src.read(1))
                nodata, profile = src.nodata, src.profile
        mask_path = next(CBERS_DIR.glob(f"*_CMASK_{d}.tif"))
        with rasterio.open(mask_path) as src:
            cm = src.read(1)
        arr = np.stack(bands, -1)
        profile.update(count=len(CBERS_BANDS))
        p = tmp / f"cbers_{d}.tif"
        with rasterio.open(p, "w", **profile) as dst:
            dst.write(np.moveaxis(arr, -1, 0))
        ok = cm == 0
        if nodata is not None:
            ok &= np.all(arr != nodata, axis=-1)
        stack.append(arr.astype(np.float32))
        paths.append(p)
        masks.append(mask_path)
        valid.append(ok)
    return np.stack(stack), paths, masks, np.stack(valid)


def cbers4_section(quick: bool = False) -> list[str]:
    """CBERS-4 AWFI: held-out dates and downscale consistency (module docstring)."""
    lines = ["## cbers4: CBERS-4 AWFI, 5 dry-season dates, B13-B16, CMASK cloud masks, scale 2", ""]
    if (skipped := _skipped(lines, CBERS_DIR, CBERS_DIR)) is not None:
        return skipped
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tmp = Path(td)
        stack, paths, masks, valid = cbers_passes(tmp)
        lines += [f"Dates: {', '.join(f'{i} = {d}' for i, d in enumerate(CBERS_DATES))}; clear pixels per date: "
                  + ", ".join(f"{v.mean() * 100:.0f} %" for v in valid) + ".", ""]
        lines += satellite_tables("cbers4", stack, valid, paths, masks, tuple(range(len(paths))), CBERS_REF, tmp,
                                  CBERS_BANDS)
    lines += _warning_notes(caught)
    return lines


# ----------------------------------------------------------------------------- modis


def noise_sigma(img: np.ndarray) -> float:
    """Robust noise standard deviation: MAD of horizontal first differences / (0.6745 sqrt 2)."""
    d = np.diff(img.astype(np.float64), axis=1).ravel()
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / math.sqrt(2))


def modis_section(quick: bool = False) -> list[str]:
    """MODIS NDVI, 12 dates at scale 2: value range, count 0, out-of-range values (module docstring)."""
    import rasterio

    from mfsr.geo import fuse_rasters

    lines = ["## modis: MODIS Terra NDVI, 12 dates (int16 JPEG2000), scale 2", ""]
    files = sorted(MODIS_DIR.glob("*.jp2")) if MODIS_DIR.exists() else []
    if not files:
        msg = f"skipped: no *.jp2 in {MODIS_DIR} (the ../shared/data folder is absent)"
        print(msg)
        return lines + [msg]
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tmp = Path(td)
        inputs = []
        for f in files:
            with rasterio.open(f) as src:
                a = src.read(1).astype(np.float64)
                if src.nodata is not None:
                    a[a == src.nodata] = np.nan
                inputs.append(a)
        inputs = np.stack(inputs)
        count_path = tmp / "count.tif"
        try:
            try:
                res = fuse_rasters(files, tmp / "ndvi.tif", scale=2, save_count=count_path)
            except TypeError:  # no save_count in this version
                count_path = None
                res = fuse_rasters(files, tmp / "ndvi.tif", scale=2)
        except Exception as exc:  # noqa: BLE001
            _problem("modis fusion", exc)
            lines += ["error (see problems)"]
            return lines + _warning_notes(caught)
        out = _read_product(res.out_path)[..., 0].astype(np.float64)
        ok = np.isfinite(out)
        lo, hi = np.nanmin(inputs), np.nanmax(inputs)
        sig = float(np.median([noise_sigma(np.nan_to_num(a, nan=np.nanmean(a))) for a in inputs]))
        glob_out = ok & ((out < lo - 3 * sig) | (out > hi + 3 * sig))
        # local: min / max over dates of the 3x3 native pixels around the output pixel
        lmin = ndimage.minimum_filter(np.nanmin(inputs, axis=0), size=3, mode="nearest")
        lmax = ndimage.maximum_filter(np.nanmax(inputs, axis=0), size=3, mode="nearest")
        h, w = inputs.shape[1:]
        yy = np.minimum(np.arange(out.shape[0]) // 2, h - 1)
        xx = np.minimum(np.arange(out.shape[1]) // 2, w - 1)
        lmin, lmax = lmin[np.ix_(yy, xx)], lmax[np.ix_(yy, xx)]
        loc_out = ok & ((out < lmin - 3 * sig) | (out > lmax + 3 * sig))
        if count_path is not None and count_path.exists():
            with rasterio.open(count_path) as c:
                cnt = c.read(1)
            zero = fmt(float((cnt == 0).mean()) * 100, 3)
            cnt_s = f"{cnt.min()}..{cnt.max()} (median {np.median(cnt):.0f})"
        else:
            zero, cnt_s = "n/a", "n/a"
        rows = [[f"{lo:.0f}..{hi:.0f}", f"{np.nanmin(out):.0f}..{np.nanmax(out):.0f}", f"{sig:.1f}",
                 f"{(~ok).mean() * 100:.3f}", zero, cnt_s,
                 f"{int(glob_out.sum())} ({glob_out.sum() / max(ok.sum(), 1) * 100:.3f} %)",
                 f"{int(loc_out.sum())} ({loc_out.sum() / max(ok.sum(), 1) * 100:.3f} %)"]]
        lines += [f"{len(files)} dates fused with fuse_rasters' defaults (reference {res.reference}; registered "
                  f"{int(np.sum(res.registered))}/{len(files)}). Values in NDVI x 10000.", ""]
        lines += table(["inputs' range", "output range", "noise sigma", "NaN output %", "count 0 %",
                        "count range", "outside inputs' [min-3s, max+3s]", "outside local 3x3 [min-3s, max+3s]"],
                       rows)
    lines += _warning_notes(caught)
    return lines


# ----------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- refinement strength sweep


def strength_section(quick: bool = False, write_limit: Path | None = None) -> list[str]:
    """Refinement strength sweep on the real cases (module docstring).

    With ``write_limit`` (a weight folder), the limits found replace that
    folder's ``manifest.json`` ``real_capture_limit`` (with its source).
    """
    from mfsr import fuse, register
    from mfsr.held_out import blur_fitted_psnr, held_out_psnr
    from mfsr.image_io import read_frames
    from mfsr.metrics import psnr
    from mfsr.refine import WEIGHTS_DIR, refine_image
    from mfsr.refine.adapt import choose_strength
    from mfsr.synth import simulate_burst

    lines = ["## strength: refinement strength on real captures (gain over the plain fusion, dB)", ""]
    gains: dict = {}  # (mode, scale) -> strength -> list of gains

    def sweep(mode, s, image, conf, noise, score, label=None):
        plain = score(image)
        for st in STRENGTHS[1:]:
            out = refine_image(image, conf, cfa="RGGB" if mode == "cfa" else None, scale=s, noise=noise, strength=st)
            gains.setdefault((label or mode, s), {}).setdefault(st, []).append(score(out) - plain)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if HDRPLUS.exists():
            frames, _ = read_frames([HDRPLUS])
            frames = np.ascontiguousarray(frames[:, HDR_CROP[0], HDR_CROP[1]])
            n = len(frames)
            flows = {}
            for k in ((n - 1,) if quick else range(n)):
                ref = 0 if k != 0 else 1
                if ref not in flows:
                    flows[ref] = register(frames, reference=ref)
                others = [i for i in range(n) if i != k]
                for mode, stack in (("rgb", frames), ("grey", frames.mean(axis=-1))):
                    target = stack[k] if mode == "rgb" else stack[k][..., None]
                    for s in (1, 2):
                        r0 = fuse(stack[others], scale=s, reference=others.index(ref), refine=False)

                        def score(img, s=s, target=target, flow=flows[ref][k]):
                            return held_out_psnr(img if img.ndim == 3 else img[..., None], flow, target, s,
                                                 crop=HDR_BORDER)

                        def score_fit(img, s=s, target=target, flow=flows[ref][k]):
                            return blur_fitted_psnr(img if img.ndim == 3 else img[..., None], flow, target, s,
                                                    crop=HDR_BORDER)[0]

                        sweep(mode, s, r0.image, r0.confidence, r0.noise, score)
                        sweep(mode, s, r0.image, r0.confidence, r0.noise, score_fit, label=f"{mode}, blur-fitted")
                print(f"  strength: HDR+ held-out frame {k} done", flush=True)
        else:
            lines.append(f"HDR+ skipped: {HDRPLUS} not found")
        if OPENISP.exists():
            truth = openisp_truth()
            corners = openisp_crops(truth, ISP_GRID_QUICK if quick else ISP_GRID)
            for ci, (y, x) in enumerate(corners):
                scene = truth[y:y + ISP_CROP, x:x + ISP_CROP]
                for s in (1, 2):
                    for alpha, beta in ISP_NOISE.values():
                        burst = simulate_burst(scene, scale=s, alpha=alpha, beta=beta, seed=ci, **ISP_BURST)
                        r0 = fuse(burst.frames, scale=s, cfa="RGGB", refine=False)

                        def score(img, gt=burst.ground_truth):
                            return psnr(img, gt, crop=ISP_BORDER)

                        sweep("cfa", s, r0.image, r0.confidence, r0.noise, score)
                print(f"  strength: openISP crop {ci + 1}/{len(corners)} done", flush=True)
        else:
            lines.append(f"openISP skipped: {OPENISP} not found")

    manifest = json.loads((Path(WEIGHTS_DIR) / "manifest.json").read_text())
    shipped = manifest.get("real_capture_limit", {})
    rows, found = [], {}
    for (mode, s), by_st in sorted(gains.items()):
        limit = choose_strength(by_st, max_loss=LIMIT_LOSS)
        if mode in ("grey", "rgb", "cfa"):  # the blur-fitted rows are for comparison only
            found.setdefault(mode, {})[str(s)] = limit
        cells = [f"{fmt(np.mean(g), signed=True)} / {fmt(np.min(g), signed=True)}" for _, g in sorted(by_st.items())]
        rows.append([mode, f"x{s}", len(next(iter(by_st.values())))] + cells
                    + [fmt(limit, 2), fmt(shipped.get(mode, {}).get(str(s)), 2)])
    lines += [f"Each cell: mean / worst gain (dB) over the plain fusion. Limit: the largest strength whose worst "
              f"case loses no more than {LIMIT_LOSS} dB and whose mean is not below a smaller accepted strength's. "
              "The 'blur-fitted' rows score the same HDR+ cases with the optics' blur fitted "
              "(mfsr.held_out.blur_fitted_psnr), for comparison; the limits use the plain score. "
              f"Precision: {refinement_precision(has_bf16_units())}.", ""]
    lines += table(["mode", "scale", "cases"] + [f"strength {st:g}" for st in STRENGTHS[1:]]
                   + ["limit found", "manifest's limit"], rows)
    lines += ["", "As the manifest's `real_capture_limit`: `" + json.dumps(found, sort_keys=True) + "`"]
    if write_limit is not None:
        _write_limit(Path(write_limit), found, quick)
        lines.append(f"Written to {Path(write_limit) / 'manifest.json'}.")
    lines += _warning_notes(caught)
    return lines


def _write_limit(folder: Path, found: dict, quick: bool) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["real_capture_limit"] = found
    manifest["real_capture_limit_source"] = {
        "rule": f"largest strength in {', '.join(f'{st:g}' for st in STRENGTHS[1:])} whose worst real case loses "
                f"no more than {LIMIT_LOSS} dB against the plain fusion and whose mean gain is not below that of a "
                "smaller accepted strength (0 if none); held constant beyond the scales measured",
        "grey, rgb": f"HDR+ handheld burst (7 JPEG frames, centre 800x600): "
                     f"{'the last frame' if quick else 'each frame'} held out, predicted from the other 6 fused "
                     "(reference frame 0, or 1 when 0 is held out) (pixel integration + its flow); grey = the "
                     "frames' channel mean",
        "cfa": f"openISP real RGGB sensor content (RGGB cells as truth), crops of {ISP_CROP} px over the chart "
               f"({'2x2' if quick else '3x5'} grid, near-flat ones skipped), re-mosaicked 8-frame bursts (shifts 2 "
               "px, rotation 0.5 deg, blur 0.3), clean and alpha 2e-4 / beta 2e-6",
        "check": "python benchmarks/bench_real.py --only strength" + (" --quick" if quick else ""),
        "date": time.strftime("%Y-%m-%d"),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


SECTION_FUNCS = {
    "hdrplus": hdrplus_section,
    "openisp": openisp_section,
    "sentinel2": sentinel2_section,
    "cbers4": cbers4_section,
    "modis": modis_section,
    "strength": strength_section,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer held-out frames and crops (development)")
    parser.add_argument("--only", action="append", choices=SECTIONS + EXTRA_SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS + EXTRA_SECTIONS)}")
    parser.add_argument("--cpu", action="store_true", help="print only the machine header line")
    parser.add_argument("--write-limit", metavar="DIR", type=Path,
                        help="with --only strength: write the limits found into DIR/manifest.json "
                        "(real_capture_limit), e.g. a freshly trained and calibrated weight folder")
    args = parser.parse_args(argv)
    if args.write_limit is not None and (args.only or []) != ["strength"]:
        parser.error("--write-limit: goes with --only strength alone")
    if args.write_limit is not None and not (args.write_limit / "manifest.json").is_file():
        parser.error(f"--write-limit: expected a weight folder with a manifest.json, got {args.write_limit}")

    header = cpu_header()
    print(header, flush=True)
    if args.cpu:
        return 0
    if not DATA.exists():
        print(f"note: {DATA} not found; every section is skipped")
    OUT.mkdir(exist_ok=True)
    chosen = args.only or list(SECTIONS)
    mode = "quick" if args.quick else "full"
    all_lines = ["# Real captures", "", header, "", f"Mode: {mode}; sections: {', '.join(chosen)}.", ""]
    t_all = time.perf_counter()
    for name in chosen:
        t = time.perf_counter()
        print(f"\n[{name}] running ({mode})", flush=True)
        try:
            extra = {"write_limit": args.write_limit} if name == "strength" else {}
            lines = SECTION_FUNCS[name](quick=args.quick, **extra)
        except Exception as exc:  # noqa: BLE001 - one section's failure does not stop the others
            _problem(f"{name} section", exc)
            lines = [f"## {name}", "", f"error: {type(exc).__name__}: {exc}"]
        dt = time.perf_counter() - t
        lines += ["", f"({name}: {dt:.0f} s, {mode})", ""]
        text = "\n".join(lines)
        print("\n" + text, flush=True)
        (OUT / f"real_{name}{'_quick' if args.quick else ''}.md").write_text(header + "\n\n" + text + "\n")
        all_lines += lines
    total = time.perf_counter() - t_all
    all_lines += [f"Total: {total:.0f} s.", ""]
    if PROBLEMS:
        all_lines += ["## Problems", ""] + [f"- {p}" for p in PROBLEMS] + [""]
        print("\nProblems:\n" + "\n".join(f"- {p}" for p in PROBLEMS))
    print(f"\nTotal: {total:.0f} s")
    if set(chosen) == set(SECTIONS):
        (OUT / f"real{'_quick' if args.quick else ''}.md").write_text("\n".join(all_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
