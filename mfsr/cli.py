"""The ``mfsr`` command line.

::

    mfsr fuse FRAMES... -o OUT --scale S [--cfa P]   fuse a burst of PNG/TIFF files
    mfsr simulate -o DIR [...]                       make a synthetic burst with known motion
    mfsr demo [-o DIR]                               simulate, fuse and compare on a bundled photo

Errors in the input end the program with a one-line message on stderr and exit
status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import sys
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
        help="fuse a burst of PNG/TIFF/JPEG frames",
        description="Register and fuse a burst of frames (files in the order given, or "
        "the image files of a folder sorted by name). 8-bit files are read as sRGB and "
        "16-bit/float files as linear unless --transfer says otherwise.",
    )
    f.add_argument("frames", nargs="+", metavar="FRAMES", help="image files or one folder")
    f.add_argument("-o", "--output", required=True, help="output .png, .tif or .tiff")
    f.add_argument("--scale", type=_positive_float, default=2.0, help="zoom factor (default 2)")
    f.add_argument("--cfa", type=_cfa, help="Bayer pattern of single-channel mosaics")
    f.add_argument("--reference", type=int, default=0, help="index of the reference frame")
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
    f.add_argument("--black-level", type=float, default=0.0, help="raw black level")
    f.add_argument("--white-level", type=float, help="raw white level (default: dtype max)")
    f.add_argument("--save-confidence", metavar="PATH", help="also write the confidence map")
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


def _cmd_fuse(args: argparse.Namespace) -> int:
    from .fusion import fuse
    from .image_io import read_frames, write_image

    out = Path(args.output)
    frames, infos = read_frames(
        args.frames,
        transfer=args.transfer,
        black_level=args.black_level,
        white_level=args.white_level,
    )
    if args.cfa is None and frames.ndim == 3 and not args.quiet:
        print("mfsr: single-channel frames without --cfa are fused as grey images", file=sys.stderr)
    t0 = time.perf_counter()
    result = fuse(
        frames,
        scale=args.scale,
        cfa=args.cfa,
        reference=args.reference,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    transfer = args.output_transfer or infos[0].transfer
    write_image(out, result.image, transfer=transfer, dtype=args.dtype)
    if args.save_confidence:
        conf_path = Path(args.save_confidence)
        if conf_path.suffix.lower() in (".tif", ".tiff"):
            write_image(conf_path, result.confidence, dtype="float32")
        else:  # integer formats get the map scaled to its maximum
            conf = result.confidence / max(float(result.confidence.max()), 1e-12)
            write_image(conf_path, conf, dtype="uint16")
    if not args.quiet:
        h, w = frames.shape[1:3]
        ho, wo = result.image.shape[:2]
        print(
            f"fused {len(frames)} frames {w}x{h} -> {wo}x{ho} (scale {args.scale:g}) "
            f"in {elapsed:.2f} s: {out}"
        )
    return 0


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
    # float32 TIFF keeps noise below black and above white exactly as simulated
    for k, frame in enumerate(burst.frames):
        write_image(out / f"frame-{k:03d}.tif", frame, dtype="float32")
    write_image(out / "truth.tif", burst.ground_truth, dtype="float32")
    np.save(out / "flow.npy", burst.flow)
    meta = {
        "frames": len(burst.frames),
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mfsr`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    commands = {"fuse": _cmd_fuse, "simulate": _cmd_simulate, "demo": _cmd_demo}
    with warnings.catch_warnings():
        # Show each warning as one plain line, like the errors.
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, *a, **k: print(f"mfsr: warning: {msg}", file=sys.stderr)
        try:
            return commands[args.command](args)
        except (ValueError, TypeError, OSError) as exc:
            print(f"mfsr: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("mfsr: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
