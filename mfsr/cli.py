"""The ``mfsr`` command line.

::

    mfsr fuse FRAMES... -o OUT --scale S [--cfa P]   fuse a burst: RAW/DNG, PNG/TIFF/JPEG files
    mfsr simulate -o DIR [...]                       make a synthetic burst with known motion
    mfsr demo [-o DIR]                               simulate, fuse and compare on a bundled photo

Errors in the input end the program with a one-line message on stderr and exit
status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .cfa import PATTERNS

EXIT_BAD_INPUT = 2


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _cfa(text: str) -> str:
    if text.upper() not in PATTERNS:
        raise argparse.ArgumentTypeError(
            f"unknown CFA pattern {text!r}; expected one of {', '.join(PATTERNS)}"
        )
    return text.upper()


def _reference(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame index or 'auto', got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return w, h


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfsr",
        description="Multi-frame super-resolution: fuse a burst into one sharper, "
        "cleaner, higher-resolution image.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mfsr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser(
        "fuse",
        help="fuse a burst of RAW/DNG or PNG/TIFF/JPEG frames",
        description="Register and fuse a burst of frames (files in the order given, or "
        "the frames of a folder sorted by name). Camera RAW files (DNG, CR2, NEF, ARW...) "
        "are fused from their mosaics and finished to sRGB unless --linear. Image files: "
        "8-bit is read as sRGB and 16-bit/float as linear unless --transfer says otherwise.",
    )
    f.add_argument("frames", nargs="+", metavar="FRAMES", help="image files or one folder")
    f.add_argument("-o", "--output", required=True, help="output .png, .tif or .tiff")
    f.add_argument("--scale", type=_positive_float, default=2.0, help="zoom factor (default 2)")
    f.add_argument("--cfa", type=_cfa, help="Bayer pattern of single-channel mosaics")
    f.add_argument(
        "--reference",
        type=_reference,
        help="index of the reference frame, or 'auto': the sharpest of the first 3 "
        "(default: auto for RAW bursts, 0 for image files; for georeferenced passes auto, "
        "the clearest and sharpest pass)",
    )
    f.add_argument(
        "--transfer",
        choices=("auto", "srgb", "linear"),
        default="auto",
        help="how input values relate to light (default auto: 8-bit sRGB, else linear)",
    )
    f.add_argument(
        "--output-transfer",
        choices=("srgb", "linear"),
        help="encoding of the output (default: that of the inputs)",
    )
    f.add_argument(
        "--dtype",
        choices=("uint8", "uint16", "float32"),
        help="output sample type (default uint8 for sRGB PNG, else uint16)",
    )
    f.add_argument("--black-level", type=float, help="raw black level (image files, headerless raw)")
    f.add_argument("--white-level", type=float, help="raw white level (default: dtype max)")
    f.add_argument(
        "--noise",
        type=float,
        nargs=2,
        metavar=("ALPHA", "BETA"),
        help="noise model of the normalised samples, variance = ALPHA * x + BETA "
        "(default: the DNG NoiseProfile, else estimated from the reference frame)",
    )
    f.add_argument(
        "--merge-sharpen",
        type=float,
        metavar="AMOUNT",
        help="gain of the fusion's final unsharp mask (default 0.6, for optics that blur by about half an "
        "output pixel; 0 for sharp optics, where 0.6 over-sharpens grey frames at scale 1)",
    )
    raw = f.add_argument_group("camera RAW bursts (DNG, CR2, NEF, ARW, ... or headerless dumps)")
    mode = raw.add_mutually_exclusive_group()
    mode.add_argument(
        "--finish",
        dest="linear",
        action="store_false",
        default=None,
        help="develop for viewing: white balance, colour matrix to sRGB, sRGB curve "
        "(default for RAW bursts, except .dng outputs)",
    )
    mode.add_argument(
        "--linear",
        dest="linear",
        action="store_true",
        help="keep linear camera RGB (no white balance, matrix or curve); .dng outputs always are",
    )
    raw.add_argument("--exposure", type=float, default=0.0, help="exposure compensation, stops (--finish)")
    raw.add_argument(
        "--tone",
        choices=("none", "soft"),
        default="none",
        help="highlight handling of --finish: none clips above white, soft rolls off",
    )
    raw.add_argument("--sharpen", type=float, default=0.0, help="unsharp-mask amount of --finish (0.3 is mild)")
    raw.add_argument(
        "--raw-size",
        type=_size,
        metavar="WxH",
        help="read headerless raw dumps of this size (16-bit words; needs --raw-bits and --cfa)",
    )
    raw.add_argument("--raw-bits", type=int, choices=(10, 12, 14, 16), help="bits per headerless sample")
    raw.add_argument(
        "--white-balance",
        type=float,
        nargs=3,
        metavar=("R", "G", "B"),
        help="white-balance gains of camera R, G, B, overriding the file's (default: the file's as-shot "
        "gains; for files without any, e.g. headerless dumps, grey world, with a note)",
    )
    raw.add_argument(
        "--color-matrix",
        type=float,
        nargs=9,
        metavar="M",
        help="white-balanced camera RGB -> linear sRGB as 9 numbers, row-major (each row gives one sRGB "
        "channel), overriding the file's (default: the file's; identity for headerless dumps)",
    )
    geo = f.add_argument_group("satellite passes (georeferenced GeoTIFF, JPEG2000, ...)")
    geo.add_argument(
        "--mask",
        nargs="+",
        action="extend",
        metavar="MASK",
        help="cloud/quality mask per pass, in pass order (nonzero = invalid)",
    )
    geo.add_argument("--tile", type=int, help="tile size in input pixels (default 1024)")
    geo.add_argument(
        "--scheduler",
        help="'threads' (default, this machine) or distributed://host:port (a dask cluster)",
    )
    geo.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    geo.add_argument(
        "--allow-vrt",
        action="store_true",
        help="read GDAL VRT inputs you trust (refused by default: a VRT can read other files and URLs)",
    )
    geo.add_argument("--save-count", metavar="PATH", help="also write the number of valid passes per pixel")
    geo.add_argument(
        "--geometry",
        choices=("affine", "similarity", "translation"),
        help="global model of each pass beyond its geotransform, used where significant (default affine)",
    )
    local = geo.add_mutually_exclusive_group()
    local.add_argument("--local", dest="local", action="store_true", default=None,
                       help="add a tie-point grid's smooth local residual where significant (default)")
    local.add_argument("--no-local", dest="local", action="store_false",
                       help="global models only, no local residual")
    geo.add_argument(
        "--save-displacement",
        metavar="PATH",
        help="also write every pass's displacement (dy, dx bands per pass, working-grid px) on the "
        "tie-point grid, as a GeoTIFF",
    )
    learned = f.add_argument_group("learned refinement (camera bursts and image files; --refine/--no-refine "
                                   "also for satellite passes)")
    ref = learned.add_mutually_exclusive_group()
    ref.add_argument(
        "--refine",
        dest="refine",
        action="store_true",
        default=None,
        help="apply the shipped refinement network after the fusion (default: mfsr.fuse's default; for "
        "satellite passes the satellite network of mfsr.geo.pass_refinement, default off, scale 2 only)",
    )
    ref.add_argument("--no-refine", dest="refine", action="store_false", help="keep the plain kernel fusion")
    learned.add_argument(
        "--save-refinement",
        metavar="PATH",
        help="also write what the network changed: a .png difference map (red brighter, blue darker) "
        "or a float32 .tif / .npy of refined minus fused (implies --refine)",
    )
    learned.add_argument(
        "--psf-sigma",
        type=float,
        metavar="PX",
        help="optical blur of the camera, if known: Gaussian sigma in sensor pixels (lens and anti-aliasing "
        "filter, without the pixel aperture); tells the network how much blur to undo (default: unknown)",
    )
    learned.add_argument(
        "--refine-weights",
        metavar="DIR",
        help="weight folder of the refinement, e.g. one fine-tuned on your own bursts by "
        "python -m mfsr.refine.adapt (default: the shipped weights)",
    )
    extra = f.add_argument_group("extra outputs")
    extra.add_argument("--save-confidence", metavar="PATH", help="also write the confidence map")
    extra.add_argument(
        "--save-flow",
        metavar="PATH",
        help="also write the registration: a .png colour picture of every frame's flow, "
        "or a .npy array (N, H, W, 2) of (dy, dx) in input pixels",
    )
    extra.add_argument(
        "--report",
        metavar="PATH",
        help="also write a .png comparison: one frame vs fused, their difference, crops at 100%%",
    )
    extra.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist (default: refuse them before any work)",
    )
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")

    s = sub.add_parser(
        "simulate",
        help="make a synthetic burst with known motion",
        description="Degrade a bundled photo (or an image file) into a burst: random "
        "translation and rotation, blur, pixel integration, optional Bayer mosaic and "
        "noise. Writes 16-bit linear TIFF frames, the ground truth and the true flow.",
    )
    s.add_argument("-o", "--output", required=True, help="output folder (created)")
    s.add_argument("--image", default="astronaut", help="bundled photo name or image file")
    s.add_argument("--frames", type=int, default=8, help="burst length (default 8)")
    s.add_argument("--scale", type=_positive_float, default=2.0, help="decimation factor")
    s.add_argument("--cfa", type=_cfa, help="make Bayer mosaics with this pattern")
    s.add_argument("--shift", type=float, default=2.0, help="max translation, low-res px")
    s.add_argument("--rotation", type=float, default=0.5, help="max rotation, degrees")
    s.add_argument("--blur", type=float, default=0.5, help="optical blur sigma, high-res px")
    s.add_argument(
        "--noise",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("ALPHA", "BETA"),
        help="Poisson-Gaussian noise: variance = ALPHA * x + BETA",
    )
    s.add_argument("--size", type=int, help="centre-crop the photo to at most SIZE px")
    s.add_argument(
        "--format",
        choices=("tiff", "dng"),
        default="tiff",
        help="frames as float32 TIFF (default) or as 12-bit CFA DNG with a NoiseProfile (needs --cfa)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-q", "--quiet", action="store_true")

    d = sub.add_parser(
        "demo",
        help="simulate a Bayer burst from a bundled photo, fuse it, compare",
        description="Run the whole pipeline on a built-in example and write the frames, "
        "the single-frame baseline, the fused image and a before/after picture.",
    )
    d.add_argument("-o", "--output", default="mfsr-demo", help="output folder (default mfsr-demo)")
    d.add_argument("--image", default="astronaut", help="bundled photo name")
    d.add_argument("--scale", type=_positive_float, default=2.0)
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-q", "--quiet", action="store_true")
    return parser


def _fuse_raw(args: argparse.Namespace, files: list[Path], options: dict, headerless: dict | None):
    """Fuse a RAW burst (``headerless`` from :func:`_headerless`); returns (result, frames, cfa, develop)."""
    from dataclasses import replace

    from .camera import develop, fuse_raw, resolve_white_balance, save_camera_image
    from .validation import check_color_matrix, check_white_balance

    # Checked here, before the fusion, so the message names the option.
    wb = None if args.white_balance is None else check_white_balance(args.white_balance, "--white-balance")
    cm = None if args.color_matrix is None else check_color_matrix(args.color_matrix, "--color-matrix")
    out = Path(args.output)
    linear = args.linear if args.linear is not None else out.suffix.lower() == ".dng"
    cam = fuse_raw(
        files,
        scale=args.scale,
        reference="auto" if args.reference is None else args.reference,
        noise=None if args.noise is None else tuple(args.noise),
        headerless=headerless,
        white_balance=wb,
        color_matrix=cm,
        progress=not args.quiet,
        **options,
    )
    info = cam.reference_info
    # One set of gains for everything developed (the output, the report's
    # single frame): grey world measured on the fused image, not per picture.
    gains, wb_source = resolve_white_balance(cam.fusion.image, info)
    if wb_source == "grey world":
        # A DNG output carries the gains as its AsShotNeutral, so readers develop it without a cast.
        info = replace(info, wb_multipliers=gains, wb_known=True)
        if not args.quiet and (not linear or out.suffix.lower() == ".dng" or args.report):
            name = info.path.name if info.path else "the input"
            print(
                f"mfsr: note: no white balance in {name}; grey-world gains "
                f"{gains[0]:.3f} {gains[1]:.3f} {gains[2]:.3f} used; give --white-balance to override",
                file=sys.stderr,
            )

    def dev(image: np.ndarray, *, for_viewing: bool = False) -> np.ndarray:
        return develop(
            image, info, linear=linear and not for_viewing,
            exposure=args.exposure, tone=args.tone, sharpen=args.sharpen, white_balance=gains,
        )

    save_camera_image(out, dev(cam.fusion.image), info, linear=linear, dtype=args.dtype, overwrite=args.overwrite)
    if not args.quiet:
        alpha, beta = cam.fusion.noise
        print(
            f"{len(cam.burst)} {cam.burst.cfa} frames; reference frame {cam.fusion.reference} "
            f"({cam.reference_rule}: {info.path.name if info.path else '?'}); noise alpha {alpha:.3g}, "
            f"beta {beta:.3g} ({cam.noise_source}); output {'linear camera RGB' if linear else 'finished sRGB'}"
        )
    return cam.fusion, cam.burst.frames, cam.burst.cfa, dev


def _headerless(args: argparse.Namespace) -> dict | None:
    """The layout of headerless raw dumps (None for RAW files), checked before any work."""
    if args.raw_size is None and args.raw_bits is None:
        if args.cfa is not None:
            raise ValueError("--cfa: RAW files carry their own CFA pattern (--cfa is for headerless dumps)")
        return None
    missing = [n for n, v in (("--raw-size", args.raw_size), ("--raw-bits", args.raw_bits), ("--cfa", args.cfa)) if v is None]
    if missing:
        raise ValueError(f"headerless raw input needs {', '.join(missing)}")
    w, h = args.raw_size
    headerless = dict(width=w, height=h, bits=args.raw_bits, cfa=args.cfa)
    if args.black_level is not None:
        headerless["black_level"] = args.black_level
    if args.white_level is not None:
        headerless["white_level"] = args.white_level
    return headerless


def _fuse_options(args: argparse.Namespace) -> dict:
    """``refine=``, ``psf_sigma=``, ``refine_weights=`` and ``params=`` for :func:`mfsr.fuse`, only where the command line chose (else fuse's defaults)."""
    from .fusion import FusionParams

    options = {}
    if args.save_refinement is not None:
        if args.refine is False:
            raise ValueError("--save-refinement: needs the refinement; drop --no-refine")
        options["refine"] = True
    elif args.refine is not None:
        options["refine"] = args.refine
    if args.merge_sharpen is not None:
        if not (np.isfinite(args.merge_sharpen) and args.merge_sharpen >= 0):
            raise ValueError(f"--merge-sharpen: expected a finite amount >= 0, got {args.merge_sharpen}")
        options["params"] = FusionParams(sharpen_amount=args.merge_sharpen)
    if args.psf_sigma is not None:
        if args.refine is False:
            raise ValueError("--psf-sigma: informs the refinement network; drop --no-refine")
        if not (np.isfinite(args.psf_sigma) and args.psf_sigma >= 0):
            raise ValueError(f"--psf-sigma: expected a finite blur >= 0 (sensor pixels), got {args.psf_sigma}")
        options["psf_sigma"] = args.psf_sigma
    if args.refine_weights is not None:
        if args.refine is False:
            raise ValueError("--refine-weights: weights of the refinement network; drop --no-refine")
        if not Path(args.refine_weights).is_dir():
            raise ValueError(f"--refine-weights: expected a weight folder with a manifest.json, got {args.refine_weights}")
        options["refine_weights"] = args.refine_weights
    return options


def _check_memory_from_headers(files: list[Path], scale: float, cfa: str | None) -> None:
    """Refuse a fusion that cannot fit in memory before any frame is decoded."""
    from .image_io import checked_header_shape
    from .memory_estimate import check_fusion_memory

    for p in files[1:]:
        checked_header_shape(p)
    h, w, c = checked_header_shape(files[0])
    c = 1 if c in (1, 2) else 3  # an opaque alpha channel is dropped
    ho, wo = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    check_fusion_memory(len(files), h, w, c, ho, wo, 3 if cfa is not None or c == 3 else 1, scale=scale)


def _fill_invalid_samples(frames: np.ndarray, infos, cfa: str | None) -> np.ndarray:
    """Replace samples that cannot be data (NaN, inf, fill values), with a warning that counts them."""
    from .invalid_samples import SANE_LIMIT, fill_invalid, invalid_mask

    invalid = invalid_mask(frames)
    counts = invalid.reshape(len(frames), -1).sum(axis=1)
    if not counts.any():
        return frames
    where = ", ".join(f"{infos[k].path.name}: {c}" for k, c in enumerate(counts) if c)
    warnings.warn(
        f"{int(counts.sum())} sample(s) are NaN, infinite or beyond +-{SANE_LIMIT:g} (fill values?) "
        f"and were replaced from the other frames or their neighbours ({where})",
        stacklevel=2,
    )
    return fill_invalid(frames, invalid, cfa)


def _fuse_images(args: argparse.Namespace, files: list[Path], options: dict):
    """Fuse PNG/TIFF/JPEG frames; returns (result, frames, cfa, develop)."""
    from .fusion import fuse
    from .image_io import read_frames, write_image
    from .sharpness import sharpest_frame

    for flag, value in (("--white-balance", args.white_balance), ("--color-matrix", args.color_matrix)):
        if value is not None:
            raise ValueError(f"{flag}: only for camera RAW bursts (image files are already developed)")
    _check_memory_from_headers(files, args.scale, args.cfa)
    frames, infos = read_frames(
        files,
        transfer=args.transfer,
        black_level=0.0 if args.black_level is None else args.black_level,
        white_level=args.white_level,
        keep_invalid=True,
    )
    frames = _fill_invalid_samples(frames, infos, args.cfa)
    if args.cfa is None and frames.ndim == 3 and not args.quiet:
        print("mfsr: single-channel frames without --cfa are fused as grey images", file=sys.stderr)
    reference = 0 if args.reference is None else args.reference
    if reference == "auto":
        reference = sharpest_frame(frames, args.cfa)
    result = fuse(
        frames,
        scale=args.scale,
        cfa=args.cfa,
        reference=reference,
        noise=None if args.noise is None else tuple(args.noise),
        progress=not args.quiet,
        **options,
    )
    transfer = args.output_transfer or infos[0].transfer
    write_image(args.output, result.image, transfer=transfer, dtype=args.dtype, overwrite=args.overwrite)
    return result, frames, args.cfa, lambda image, for_viewing=False: image


def _fuse_geo(args: argparse.Namespace, passes: list[Path]) -> int:
    import os

    if args.allow_vrt:
        os.environ["MFSR_ALLOW_VRT"] = "1"  # read by every raster open, also in the tile threads
        try:
            return _fuse_passes(args, passes)
        finally:
            os.environ.pop("MFSR_ALLOW_VRT", None)
    return _fuse_passes(args, passes)


def _fuse_passes(args: argparse.Namespace, passes: list[Path]) -> int:
    from .geo import fuse_rasters

    t0 = time.perf_counter()
    res = fuse_rasters(
        passes,
        args.output,
        scale=args.scale,
        masks=args.mask,
        # No --reference (or 'auto'): the clearest, sharpest pass.
        reference="auto" if args.reference is None else args.reference,
        tile=1024 if args.tile is None else args.tile,
        scheduler="threads" if args.scheduler is None else args.scheduler,
        overwrite=args.overwrite,
        cog=args.cog,
        save_confidence=args.save_confidence,
        save_count=args.save_count,
        save_displacement=args.save_displacement,
        progress=not args.quiet,
        **({} if args.geometry is None else {"geometry": args.geometry}),
        **({} if args.local is None else {"local": args.local}),
        **({} if args.refine is None else {"refine": args.refine}),
    )
    if not args.quiet:
        print(f"{'pass':<40}{'dy (px)':>9}{'dx (px)':>9}{'valid':>8}  {'model':<17}{'rot (deg)':>10}{'scale-1':>10}")
        for k, p in enumerate(passes):
            dy, dx = res.shifts[k]
            tag = " (reference)" if k == res.reference else ("" if res.registered[k] else " (geotransform only)")
            m = res.transforms[k]
            rot = np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))
            zoom = 0.5 * np.hypot(m[0, 0] + m[1, 1], m[1, 0] - m[0, 1]) - 1.0
            print(f"{p.name[:39]:<40}{dy:>9.3f}{dx:>9.3f}{res.valid_fractions[k]:>8.1%}  {res.models[k]:<17}"
                  f"{rot:>10.4f}{zoom:>10.1e}{tag}")
        print(f"reference: pass {res.reference} ({passes[res.reference].name}): {res.reference_reason}")
        print(
            f"fused {len(passes)} passes -> {res.width}x{res.height} px (scale {args.scale:g}, "
            f"{res.n_tiles} tile(s)) in {time.perf_counter() - t0:.1f} s: {res.out_path}"
        )
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    from .image_io import expand_inputs, write_image
    from .input_route import InputRoute, select_route
    from .raw_io import RAW_SUFFIXES

    out = Path(args.output)
    if args.raw_size is not None or args.raw_bits is not None:
        route = InputRoute("raw", expand_inputs(args.frames, suffixes=RAW_SUFFIXES))
    else:
        route = select_route(args.frames)
    _check_options(args, route.kind)
    headerless = _headerless(args) if route.kind == "raw" else None
    options = {} if route.kind == "geo" else _fuse_options(args)
    _check_output_paths(args, route)
    if route.kind == "geo":
        return _fuse_geo(args, route.files)
    t0 = time.perf_counter()
    if route.kind == "raw":
        result, frames, cfa, dev = _fuse_raw(args, route.files, options, headerless)
    else:
        result, frames, cfa, dev = _fuse_images(args, route.files, options)
    elapsed = time.perf_counter() - t0
    if args.save_confidence:
        conf_path = Path(args.save_confidence)
        if conf_path.suffix.lower() in (".tif", ".tiff"):
            write_image(conf_path, result.confidence, dtype="float32", overwrite=args.overwrite)
        else:  # integer formats get the map scaled to its maximum
            conf = result.confidence / max(float(result.confidence.max()), 1e-12)
            write_image(conf_path, conf, dtype="uint16", overwrite=args.overwrite)
    if args.save_flow:
        _save_flow(Path(args.save_flow), result.flow, args.overwrite)
    if args.save_refinement:
        _save_refinement(Path(args.save_refinement), result, args.overwrite)
    if args.report:
        _save_report(Path(args.report), result, frames, cfa, dev, args.overwrite)
    if not args.quiet:
        h, w = frames.shape[1:3]
        ho, wo = result.image.shape[:2]
        print(
            f"fused {len(frames)} frames {w}x{h} -> {wo}x{ho} (scale {args.scale:g}) "
            f"in {elapsed:.2f} s: {out}"
        )
    return 0


#: Options of one route only: (flag, attribute, the routes it serves).
_ROUTE_OPTIONS = (
    ("--mask", "mask", ("geo",)),
    ("--save-count", "save_count", ("geo",)),
    ("--tile", "tile", ("geo",)),
    ("--scheduler", "scheduler", ("geo",)),
    ("--cog", "cog", ("geo",)),
    ("--allow-vrt", "allow_vrt", ("geo",)),
    ("--geometry", "geometry", ("geo",)),
    ("--local/--no-local", "local", ("geo",)),
    ("--save-displacement", "save_displacement", ("geo",)),
    ("--cfa", "cfa", ("raw", "image")),
    ("--report", "report", ("raw", "image")),
    ("--save-flow", "save_flow", ("raw", "image")),
    ("--linear/--finish", "linear", ("raw",)),
    ("--raw-size", "raw_size", ("raw",)),
    ("--raw-bits", "raw_bits", ("raw",)),
    ("--white-balance", "white_balance", ("raw",)),
    ("--color-matrix", "color_matrix", ("raw",)),
    ("--refine/--no-refine", "refine", ("raw", "image", "geo")),
    ("--save-refinement", "save_refinement", ("raw", "image")),
    ("--merge-sharpen", "merge_sharpen", ("raw", "image")),
    ("--psf-sigma", "psf_sigma", ("raw", "image")),
    ("--refine-weights", "refine_weights", ("raw", "image")),
)

_ROUTE_NAMES = {
    "geo": "georeferenced passes",
    "raw": "camera RAW bursts",
    "image": "image files (PNG/TIFF/JPEG without georeference)",
}


def _check_options(args: argparse.Namespace, kind: str) -> None:
    """Refuse options the chosen route would ignore."""
    for flag, attr, kinds in _ROUTE_OPTIONS:
        value = getattr(args, attr)
        if kind not in kinds and value is not None and value is not False:
            serves = " and ".join(_ROUTE_NAMES[k] for k in kinds)
            raise ValueError(f"{flag}: only for {serves}; these inputs are {_ROUTE_NAMES[kind]}")
    if kind == "image" and Path(args.output).suffix.lower() == ".dng":
        raise ValueError(f"-o: {args.output}: DNG output needs a RAW burst (PNG/TIFF inputs have no camera metadata)")


#: Accepted suffixes of every output option, per route.
_OUTPUT_SUFFIXES = {
    "output": ("-o", {"raw": (".png", ".tif", ".tiff", ".dng"), "image": (".png", ".tif", ".tiff"),
                      "geo": (".tif", ".tiff")}),
    "save_confidence": ("--save-confidence", {"raw": (".png", ".tif", ".tiff"), "image": (".png", ".tif", ".tiff"),
                                              "geo": (".tif", ".tiff")}),
    "save_count": ("--save-count", {"geo": (".tif", ".tiff")}),
    "save_displacement": ("--save-displacement", {"geo": (".tif", ".tiff")}),
    "save_flow": ("--save-flow", {"raw": (".png", ".npy"), "image": (".png", ".npy")}),
    "save_refinement": ("--save-refinement", {"raw": (".png", ".tif", ".tiff", ".npy"),
                                              "image": (".png", ".tif", ".tiff", ".npy")}),
    "report": ("--report", {"raw": (".png",), "image": (".png",)}),
}


def _check_output_paths(args: argparse.Namespace, route) -> None:
    """Every output checked before any work: suffix, folder, not an input, distinct, not existing."""
    from .output_paths import OutputRequest, check_outputs

    requests = []
    for attr, (flag, suffixes) in _OUTPUT_SUFFIXES.items():
        value = getattr(args, attr)
        if value is not None:
            requests.append(OutputRequest(flag, Path(value), suffixes[route.kind]))
    inputs = list(route.files) + [Path(m) for m in (args.mask or [])]
    check_outputs(requests, inputs, overwrite=args.overwrite)


def _save_npy(path: Path, array: np.ndarray, overwrite: bool) -> None:
    from .atomic_file import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _save_flow(path: Path, flow: np.ndarray, overwrite: bool) -> None:
    """``path`` suffix checked by :func:`_check_output_paths`."""
    from .image_io import write_image
    from .report import flow_overview

    if path.suffix.lower() == ".npy":
        _save_npy(path, flow, overwrite)
    else:
        write_image(path, flow_overview(flow) / 255.0, dtype="uint8", overwrite=overwrite)


def _save_refinement(path: Path, result, overwrite: bool) -> None:
    """What the network changed (``result.refinement``); suffix checked by :func:`_check_output_paths`."""
    from .image_io import write_image
    from .report import difference_map

    suffix = path.suffix.lower()
    if suffix == ".npy":
        _save_npy(path, result.refinement, overwrite)
    elif suffix == ".png":
        picture, _ = difference_map(result.image, result.image - result.refinement)
        write_image(path, picture / 255.0, dtype="uint8", overwrite=overwrite)
    else:
        write_image(path, result.refinement, dtype="float32", overwrite=overwrite)


def _save_report(path: Path, result, frames: np.ndarray, cfa: str | None, dev, overwrite: bool) -> None:
    from .baselines import single_frame_upscale
    from .image_io import write_image
    from .report import comparison_picture, detail_crop, difference_map

    single = dev(single_frame_upscale(frames[result.reference], result.scale, cfa=cfa), for_viewing=True)
    fused = dev(result.image, for_viewing=True)
    diff, limit = difference_map(fused, single)
    picture = comparison_picture(
        [
            ("reference frame alone, " + ("demosaicked + bicubic" if cfa else "bicubic"), single),
            (f"mfsr, {len(frames)} frames fused", fused),
            (f"fused - single (red +, blue -, full at {limit:.2f})", diff),
        ],
        crop=detail_crop(fused, 256),
        zoom=1,
        max_width=1800,
    )
    write_image(path, picture / 255.0, dtype="uint8", overwrite=overwrite)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from .image_io import read_image, write_image
    from .synth import SAMPLE_IMAGES, sample_image, simulate_burst

    if args.frames < 1:
        raise ValueError(f"--frames: expected at least 1, got {args.frames}")
    if Path(args.image).suffix:
        image, _ = read_image(args.image)
    elif args.image in SAMPLE_IMAGES:
        image = sample_image(args.image, size=args.size)
    else:
        raise ValueError(
            f"--image: {args.image!r} is neither an image file nor a bundled photo "
            f"({', '.join(SAMPLE_IMAGES)})"
        )
    if args.format == "dng" and args.cfa is None:
        raise ValueError("--format dng: DNG frames are Bayer mosaics; give --cfa")
    burst = simulate_burst(
        image,
        n_frames=args.frames,
        scale=args.scale,
        cfa=args.cfa,
        max_shift=args.shift,
        max_rotation=args.rotation,
        blur_sigma=args.blur,
        alpha=args.noise[0],
        beta=args.noise[1],
        seed=args.seed,
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(burst.frames):
        if args.format == "dng":
            from .dng import write_dng

            # 12-bit with a black level of 64 keeps noise below black, as a sensor does
            write_dng(
                out / f"frame-{k:03d}.dng", frame, cfa=burst.cfa, black_level=64, white_level=4095,
                noise_profile=[burst.noise] if any(burst.noise) else None, camera_model="mfsr simulate",
            )
        else:  # float32 TIFF keeps noise below black and above white exactly as simulated
            write_image(out / f"frame-{k:03d}.tif", frame, dtype="float32")
    write_image(out / "truth.tif", burst.ground_truth, dtype="float32")
    np.save(out / "flow.npy", burst.flow)
    suffix = "dng" if args.format == "dng" else "tif"
    meta = {
        "frames": len(burst.frames),
        "frame_files": [f"frame-{k:03d}.{suffix}" for k in range(len(burst.frames))],
        "scale": burst.scale,
        "cfa": burst.cfa,
        "reference": burst.reference,
        "noise_alpha_beta": list(burst.noise),
        "frame_shape": list(burst.frames.shape[1:]),
        "truth_shape": list(burst.ground_truth.shape),
        "flow": "flow.npy: (N, H, W, 2) float32 (dy, dx), content of reference pixel "
        "(i, j) is at (i + dy, j + dx) in frame k",
    }
    (out / "burst.json").write_text(json.dumps(meta, indent=2) + "\n")
    if not args.quiet:
        h, w = burst.frames.shape[1:3]
        print(
            f"wrote {len(burst.frames)} frames {w}x{h}"
            f"{' ' + burst.cfa if burst.cfa else ''}, truth, flow.npy and burst.json to {out}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.output,
        image=args.image,
        scale=args.scale,
        n_frames=args.frames,
        seed=args.seed,
        quiet=args.quiet,
    )
    return 0


def _show_warning(message, *args, **kwargs) -> None:
    # Through tqdm so that a warning raised under a progress bar gets a line
    # of its own instead of sharing (and losing) the bar's.
    from tqdm.auto import tqdm

    tqdm.write(f"mfsr: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mfsr`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    commands = {"fuse": _cmd_fuse, "simulate": _cmd_simulate, "demo": _cmd_demo}
    with warnings.catch_warnings(), _terminate_cleanly():
        # Show each warning as one plain line, like the errors.
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return commands[args.command](args)
        except (ValueError, OSError) as exc:
            # Bad input, unreadable files and outputs that cannot be written;
            # anything else (TypeError, ...) is a bug and keeps its traceback.
            print(f"mfsr: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except MemoryError as exc:
            print(f"mfsr: error: {exc or 'out of memory; try a smaller --scale or fewer/smaller frames'}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("mfsr: interrupted", file=sys.stderr)
            return 130
        except _Terminated:
            print("mfsr: terminated", file=sys.stderr)
            return 143


class _Terminated(BaseException):
    """Raised by the SIGTERM handler so that every ``finally`` and temporary-file cleanup runs."""


@contextlib.contextmanager
def _terminate_cleanly():
    # SIGTERM's default action kills the process at once and leaves the
    # temporary files of an atomic write behind; turned into an exception
    # it unwinds like Ctrl-C. Only the main thread may set handlers.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
