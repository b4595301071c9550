"""Learned refinement of the fused satellite product (``fuse_rasters(..., refine=True)``).

The burst network (:mod:`mfsr.refine`) does not suit the satellite product:
its kernel fusion, back-projection, overshoot clamp and Nyquist guard leave
another blur and another noise than a burst fusion. This module runs a
network of the same architecture (:class:`mfsr.refine.RefineNet`,
public constructor) with its own weights (``mfsr/geo/weights/``), trained by
:mod:`mfsr.geo.train_refiner` on passes simulated from real rasters.

It works on one band of one tile at a time, in the pipeline's normalised
working range ``(x - lo) / (hi - lo)`` (:mod:`mfsr.geo.radiometry`), and
predicts a residual added to the product; the pipeline then applies its
Nyquist guard again (the network, trained on simulated truths with detail up
to the output's Nyquist frequency, puts pattern there on real bands) and
clamps the result to the local bounds of the accepted samples, so the
refinement never leaves the inputs' local range.

Tiled processing gives the whole-raster result: every input of the network
is local (the product, the per-pixel count of contributing passes, the noise
level and the pass count as constants), and its receptive field
(:data:`RADIUS` output px) is well inside the pipeline's halo.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "BLOCK", "MANIFEST", "RADIUS", "SCALES", "WEIGHTS", "WEIGHT_FILE",
    "check_refine", "load_pass_refiner", "pass_features", "refine_band", "refines_scale",
]

#: Folder of the shipped weights and their manifest.
WEIGHTS = Path(__file__).parent / "weights"
WEIGHT_FILE = "pass_refiner.pt"
MANIFEST = "manifest.json"
#: Architecture of the shipped network (RefineNet constructor arguments).
ARCHITECTURE = {"channels": 32, "blocks": 4, "n_globals": 6}
#: Receptive-field radius of the network, output px (RefineNet.radius for
#: ARCHITECTURE: 2 (2 blocks + 2) + 2).
RADIUS = 2 * (2 * ARCHITECTURE["blocks"] + 2) + 2
#: Scales the network is trained for; other scales keep the plain product.
SCALES = (2.0,)
#: Output px per side of the blocks the network runs on (memory bound);
#: each block is read with a margin of at least RADIUS px, so blocks give
#: the result of one pass over the whole tile.
BLOCK = 512
_MARGIN = 2 * math.ceil(RADIUS / 2)  # even: blocks keep the pixel-unshuffle phase
#: Gain on the noise standard deviation plane (as the burst network's).
SIGMA_GAIN = 10.0


def check_refine(refine) -> bool:
    """``refine`` as a bool; TypeError naming it otherwise."""
    if not isinstance(refine, (bool, np.bool_)):
        raise TypeError(f"refine: expected True or False, got {refine!r}")
    return bool(refine)


def refines_scale(scale: float) -> bool:
    """Whether the network is trained for ``scale`` (output px per input px)."""
    return any(abs(float(scale) - s) < 1e-9 for s in SCALES)


def warn_unrefined(scale: float) -> None:
    """The warning of a ``refine=True`` fusion at a scale the network is not trained for."""
    warnings.warn(f"refine: the satellite refinement is trained for scale {', '.join(f'{s:g}' for s in SCALES)} "
                  f"only; scale {float(scale):g} keeps the plain fusion", UserWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def load_pass_refiner():
    """The shipped network, in eval mode, float32, from the package (no network access).

    Returns
    -------
    net : mfsr.refine.RefineNet

    Raises
    ------
    FileNotFoundError
        The weights are not in the installed package.
    ValueError
        The file does not match its manifest (sha256).
    """
    import torch

    from mfsr.refine import RefineNet

    path = WEIGHTS / WEIGHT_FILE
    if not path.exists():
        raise FileNotFoundError(f"refine: the satellite refinement weights are missing ({path})")
    blob = path.read_bytes()
    manifest = json.loads((WEIGHTS / MANIFEST).read_text())
    want = manifest["files"][WEIGHT_FILE]["sha256"]
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ValueError(f"refine: {path} has sha256 {got}, the manifest says {want}")
    arch = manifest["files"][WEIGHT_FILE]["architecture"]
    net = RefineNet(channels=arch["channels"], blocks=arch["blocks"], n_globals=arch["n_globals"])
    import io

    net.load_state_dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))
    net.eval()
    if net.radius != RADIUS:
        raise ValueError(f"refine: the network's receptive field is {net.radius} px, this module assumes {RADIUS}")
    return net


def pass_features(image: np.ndarray, count: np.ndarray, *, noise: tuple[float, float], n_passes: int,
                  scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Input planes and constants of the network for one band.

    The same function builds the inputs at training and inference time.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Fused band in the working range (nominally [0, 1]), output grid;
        finite (fill holes first).
    count : ndarray of int, shape (H, W)
        Passes that contributed to each output pixel.
    noise : (alpha, beta)
        Noise model of one input sample in working-range units (variance
        ``alpha * I + beta``), as the pipeline estimated it.
    n_passes : int
        Passes fused.
    scale : float
        Output px per input px.

    Returns
    -------
    pixels : ndarray of float32, shape (5, H, W)
        The band three times (the network's RGB inputs), ``log1p(count /
        n_passes)`` and ``SIGMA_GAIN * sqrt(alpha * max(I, 0) + beta)``.
    globals_ : ndarray of float32, shape (6,)
        CFA flag 0, grey flag 1, ``log2(scale) / 2``, ``log1p(n_passes) / 2``,
        and two zeros (no known optical blur).
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape
    out = np.empty((5, h, w), np.float32)
    out[0:3] = img[None]
    out[3] = np.log1p(np.asarray(count, np.float32) / np.float32(max(int(n_passes), 1)))
    alpha, beta = float(noise[0]), float(noise[1])
    out[4] = np.float32(SIGMA_GAIN) * np.sqrt(np.float32(alpha) * np.maximum(img, 0.0) + np.float32(beta))
    g = np.array([0.0, 1.0, math.log2(float(scale)) / 2.0, math.log1p(float(n_passes)) / 2.0, 0.0, 0.0], np.float32)
    return out, g


def _fill_holes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """NaN pixels set to their nearest finite pixel (the network needs finite inputs); the NaN mask."""
    bad = ~np.isfinite(image)
    if not bad.any():
        return image, None
    if bad.all():
        return np.zeros_like(image), bad
    from scipy.ndimage import distance_transform_edt

    # Nearest, not a constant: a constant would print an edge into the
    # product next to every hole. Pixels within RADIUS of finite data take
    # values within RADIUS of it, so tiles agree with the whole raster.
    idx = distance_transform_edt(bad, return_distances=False, return_indices=True)
    return image[idx[0], idx[1]], bad


def refine_band(image: np.ndarray, count: np.ndarray, *, noise: tuple[float, float], n_passes: int,
                scale: float) -> np.ndarray:
    """One band of a fused tile with the network's residual added.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Fused band, working range, output grid (a tile with its halo); NaN
        where no pass has data (kept NaN).
    count : ndarray of int, shape (H, W)
        Contributing passes per output pixel.
    noise, n_passes, scale :
        As in :func:`pass_features`.

    Returns
    -------
    ndarray of float32, shape (H, W)
        ``image + residual``; neither guarded nor clamped (the pipeline does
        both).

    Notes
    -----
    Pixels within :data:`RADIUS` output px of the array's edge see the
    network's padding; the pipeline's halo keeps them out of every tile's
    core. Float32 arithmetic, blocks of :data:`BLOCK` px with an even margin
    of at least ``RADIUS`` px.
    """
    import torch

    net = load_pass_refiner()
    img, holes = _fill_holes(np.asarray(image, np.float32))
    pixels, g = pass_features(img, count, noise=noise, n_passes=n_passes, scale=scale)
    h, w = img.shape
    # RefineNet unshuffles by 2: pad to even sizes at the bottom / right
    # (replicate); the tile origin stays even, so the phase is the raster's.
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        pixels = np.pad(pixels, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    out = np.empty((ph, pw), np.float32)
    gt = torch.from_numpy(g)[None]
    m = _MARGIN
    with torch.inference_mode():
        for y0 in range(0, ph, BLOCK):
            y1 = min(y0 + BLOCK, ph)
            for x0 in range(0, pw, BLOCK):
                x1 = min(x0 + BLOCK, pw)
                ya, yb, xa, xb = max(y0 - m, 0), min(y1 + m, ph), max(x0 - m, 0), min(x1 + m, pw)
                block = torch.from_numpy(np.ascontiguousarray(pixels[:, ya:yb, xa:xb]))[None]
                res = net(block, gt)[0].mean(dim=0).numpy()
                out[y0:y1, x0:x1] = res[y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    refined = img + out[:h, :w]
    if holes is not None:
        refined[holes] = np.nan
    return refined.astype(np.float32, copy=False)
