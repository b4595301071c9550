"""Synthetic satellite passes with known misregistration, radiometry and clouds.

Used by the tests and the benchmark: a high-resolution georeferenced image
is the truth; every pass is that image translated by a known sub-pixel
shift, integrated over the low-resolution pixel area (block mean over
``scale x scale`` high-resolution pixels), given a linear radiometric change
and noise, covered by random clouds, and written as a GeoTIFF with the low
resolution transform (and a cloud-mask GeoTIFF).

Shift convention (docs/conventions.md): pass ``k`` holds at low-res pixel
``(i + dy, j + dx)`` the content of reference pixel ``(i, j)``; of that
shift, ``grid_offsets[k]`` is written into the pass's geotransform (known to
the fusion) and the rest is misregistration it must estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

from mfsr.pixel_area import block_mean

__all__ = ["SyntheticPasses", "block_mean", "cloud_mask", "simulate_passes"]


@dataclass
class SyntheticPasses:
    """Files and ground truth of :func:`simulate_passes`.

    Attributes
    ----------
    paths, mask_paths : list of pathlib.Path
    shifts : ndarray (N, 2)
        Misregistration (dy, dx) beyond the geotransform, low-res px,
        relative to pass 0.
    grid_offsets : ndarray (N, 2)
        Offsets written into the geotransforms, low-res px.
    gains, offsets : ndarray (N,)
        ``pass = gain * truth + offset`` (before noise).
    masks : ndarray of bool (N, h, w)
        True = cloud.
    lr_transform : affine.Affine
        Transform of the reference low-res grid.
    truth : ndarray of float32 (H, W)
        High-resolution truth on the output grid.
    """

    paths: list
    mask_paths: list
    shifts: np.ndarray
    grid_offsets: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    masks: np.ndarray
    lr_transform: Affine
    truth: np.ndarray


def cloud_mask(shape: tuple[int, int], fraction: float, rng: np.random.Generator, blob: float = 6.0) -> np.ndarray:
    """Random smooth blobs covering about ``fraction`` of the pixels (True = cloud)."""
    if fraction <= 0:
        return np.zeros(shape, bool)
    field = gaussian_filter(rng.standard_normal(shape), blob, mode="wrap")
    return field > np.quantile(field, 1.0 - fraction)


def simulate_passes(
    hr: np.ndarray,
    hr_transform: Affine,
    crs,
    out_dir,
    *,
    n: int = 8,
    scale: int = 2,
    margin: int = 16,
    max_shift: float = 1.5,
    grid_offsets=None,
    gain_range: tuple[float, float] = (0.85, 1.15),
    offset_range: tuple[float, float] = (-0.05, 0.05),
    noise: float = 0.003,
    cloud_fractions=None,
    masked_value: float | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> SyntheticPasses:
    """Make ``n`` low-resolution passes of a high-resolution image.

    Parameters
    ----------
    hr : ndarray (H + 2 margin * scale, W + 2 margin * scale)
        High-resolution truth with a margin of ``margin`` low-res px on every
        side (shifted content comes from there); values nominally [0, 1].
    hr_transform : Affine
        Transform of ``hr``'s pixel (0, 0) corner (margin included).
    crs : CRS or str
    out_dir : path-like
        Where ``pass_XX.tif`` and ``mask_XX.tif`` go.
    n, scale : int
    margin : int
        Low-res px of margin around the output region.
    max_shift : float
        Misregistration drawn uniformly in [-max_shift, max_shift] (pass 0
        has none), low-res px.
    grid_offsets : array (n, 2) or None
        Offsets written into each pass's transform (default zeros).
    gain_range, offset_range : (float, float)
        Radiometric change of passes 1.. (pass 0 has gain 1, offset 0).
    noise : float
        Gaussian noise standard deviation.
    cloud_fractions : sequence of float or None
        Cloud cover per pass (default 0, 0.1, 0.2, ... capped at 0.4).
    masked_value : float or None
        Value written into clouded pixels (default: a bright cloud, 1.0).
    dtype : str
    seed : int

    Returns
    -------
    SyntheticPasses
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    s = int(scale)
    hr = np.asarray(hr, np.float64)
    h = hr.shape[0] // s - 2 * margin
    w = hr.shape[1] // s - 2 * margin
    offs = np.zeros((n, 2)) if grid_offsets is None else np.asarray(grid_offsets, np.float64)
    mis = rng.uniform(-max_shift, max_shift, (n, 2))
    mis[0] = 0.0
    gains = np.r_[1.0, rng.uniform(*gain_range, n - 1)]
    offsets = np.r_[0.0, rng.uniform(*offset_range, n - 1)]
    fracs = [min(0.4, 0.1 * k) for k in range(n)] if cloud_fractions is None else list(cloud_fractions)
    lr_t = hr_transform @ Affine.scale(s) @ Affine.translation(margin, margin)
    paths, mpaths, masks = [], [], []
    for k in range(n):
        d = offs[k] + mis[k]
        shifted = nd_shift(hr, s * d, order=3, mode="nearest")
        lr = block_mean(shifted, s)[margin : margin + h, margin : margin + w]
        lr = gains[k] * lr + offsets[k] + noise * rng.standard_normal(lr.shape)
        m = cloud_mask(lr.shape, fracs[k], rng)
        lr[m] = 1.0 if masked_value is None else masked_value
        t = lr_t @ Affine.translation(-offs[k, 1], -offs[k, 0])
        p = out_dir / f"pass_{k:02d}.tif"
        mp = out_dir / f"mask_{k:02d}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype,
                           crs=crs, transform=t) as dst:
            dst.write(lr.astype(dtype), 1)
            dst.set_band_description(1, "synthetic band")
            dst.update_tags(SOURCE="mfsr.geo.synth", PASS=str(k))
        with rasterio.open(mp, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                           crs=crs, transform=t) as dst:
            dst.write(m.astype(np.uint8), 1)
        paths.append(p)
        mpaths.append(mp)
        masks.append(m)
    truth = hr[margin * s : (margin + h) * s, margin * s : (margin + w) * s].astype(np.float32)
    return SyntheticPasses(paths, mpaths, mis, offs, gains, offsets, np.array(masks), lr_t, truth)
