"""The README's real-capture picture: HDR+ burst crops, one frame against the default fusion.

Usage (from the repository root, with ``../shared/data`` beside it)::

    .venv/bin/mfsr fuse ../shared/data/hdrplus_burst -o hdrplus.png --scale 2
    .venv/bin/python docs/hdrplus_figure.py hdrplus.png docs/hdrplus-crops.jpg

Each row shows one 320 x 320 px region at 100 %: the reference frame (frame
0) upsampled by 2 with a cubic B-spline, and the fused output as the command
above wrote it (defaults: registration, robust merge, sharpening,
refinement).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mfsr.baselines import single_frame_upscale
from mfsr.image_io import read_frames, read_image
from mfsr.report import comparison_picture

BURST = Path(__file__).resolve().parents[2] / "shared" / "data" / "hdrplus_burst"
#: (row, col) of each 320 px region in the 3200 x 2400 output: branches over
#: the sky and the rock face's rim; dark foliage.
REGIONS = ((1080, 700), (700, 2200))
SIZE = 320


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fused", help="the output of `mfsr fuse hdrplus_burst -o FUSED --scale 2`")
    parser.add_argument("out", help="picture to write (.jpg or .png)")
    args = parser.parse_args(argv)
    from PIL import Image

    fused, _ = read_image(args.fused)
    frames, _ = read_frames([BURST])
    if fused.shape[:2] != (2 * frames.shape[1], 2 * frames.shape[2]):
        raise SystemExit(f"fused: expected the scale-2 fusion of {BURST} ({2 * frames.shape[2]}x"
                         f"{2 * frames.shape[1]}), got {fused.shape[1]}x{fused.shape[0]}")
    single = single_frame_upscale(frames[0], 2)
    rows = []
    for y, x in REGIONS:
        crop = (slice(y, y + SIZE), slice(x, x + SIZE))
        rows.append(comparison_picture([("frame 0, cubic x2", single[crop]),
                                        ("mfsr fuse, 7 frames (defaults)", fused[crop])]))
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([rows[0], gap, rows[1]], axis=0)
    Image.fromarray(picture).save(args.out, quality=88)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
