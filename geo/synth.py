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
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.ndimage import shift as nd_shift

from mfsr.pixel_area import block_mean

__all__ = [
    "PassWarp", "SyntheticPasses", "block_mean", "cloud_layer", "cloud_mask", "render_warped", "simulate_passes",
]


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


# Passes with a rotation and a smooth local displacement (benchmarks/bench_passes.py,
# mfsr.geo.train_refiner): their exact geometry, the rendering of a scene through it, clouds.


@dataclass
class PassWarp:
    """A pass's exact geometry: pass -> reference map ``G(p) = R(theta)(p - c) + c + t + L(p)``.

    Low-res px, (y, x) arrays, ``c`` the grid's centre, ``R`` a rotation.

    ``L(p)_a = sum_m amp[m, a] sin(2 pi (freq[m, 0] p_y / h + freq[m, 1] p_x / w) + phase[m, a])``.
    """

    theta: float
    t: np.ndarray  # (2,) (ty, tx)
    amp: np.ndarray  # (M, 2)
    freq: np.ndarray  # (M, 2) cycles per image along y, x
    phase: np.ndarray  # (M, 2)
    shape: tuple[int, int]

    @property
    def centre(self):
        return (self.shape[0] - 1) / 2.0, (self.shape[1] - 1) / 2.0

    def local(self, py, px):
        h, w = self.shape
        ly = np.zeros(np.broadcast(py, px).shape)
        lx = np.zeros_like(ly)
        for m in range(self.amp.shape[0]):
            arg = 2 * np.pi * (self.freq[m, 0] * py / h + self.freq[m, 1] * px / w)
            if self.amp[m, 0]:
                ly += self.amp[m, 0] * np.sin(arg + self.phase[m, 0])
            if self.amp[m, 1]:
                lx += self.amp[m, 1] * np.sin(arg + self.phase[m, 1])
        return ly, lx

    def to_ref(self, py, px):
        """Reference coordinates of pass coordinates ``(py, px)``."""
        cy, cx = self.centre
        c, s = np.cos(self.theta), np.sin(self.theta)
        ly, lx = self.local(py, px)
        ry = cy + s * (px - cx) + c * (py - cy) + self.t[0] + ly
        rx = cx + c * (px - cx) - s * (py - cy) + self.t[1] + lx
        return ry, rx

    def to_pass(self, ry, rx, iterations: int = 30):
        """Pass coordinates of reference coordinates (inverse of :meth:`to_ref`, fixed point)."""
        cy, cx = self.centre
        c, s = np.cos(self.theta), np.sin(self.theta)
        py, px = np.array(ry, float), np.array(rx, float)
        for _ in range(iterations):
            ly, lx = self.local(py, px)
            uy = ry - cy - self.t[0] - ly
            ux = rx - cx - self.t[1] - lx
            py, px = cy + c * uy - s * ux, cx + s * uy + c * ux  # rotation by -theta
        return py, px

    def to_dict(self):
        return dict(theta_deg=float(np.degrees(self.theta)), t=self.t.tolist(), amp=self.amp.tolist(),
                    freq=self.freq.tolist(), phase=self.phase.tolist())


def render_warped(coef, geom: PassWarp, shape, cell: float, n: int, s: int, m: int) -> np.ndarray:
    """Mean of the spline scene over the footprint of every pixel of a grid.

    Pixel ``(i, j)`` of the rendered grid has its centre at own low-res
    coordinate ``((i + 0.5) cell - 0.5, (j + 0.5) cell - 0.5)`` and covers a
    square of side ``cell``; ``n x n`` points on it are mapped to the
    reference by ``geom`` and then to the scene's HR array coordinate
    ``s (r + 0.5) - 0.5 + m``.
    """
    h, w = shape
    q = ((np.arange(n) + 0.5) / n - 0.5) * cell
    cx = (np.arange(w) + 0.5) * cell - 0.5
    px = (cx[:, None] + q[None, :]).ravel()
    strip = max(1, int(2**20 // (w * n * n)))
    out = np.empty(shape, np.float32)
    for r0 in range(0, h, strip):
        r1 = min(h, r0 + strip)
        cy = (np.arange(r0, r1) + 0.5) * cell - 0.5
        py = (cy[:, None] + q[None, :]).ravel()
        ry, rx = geom.to_ref(py[:, None], px[None, :])
        hy = s * (ry + 0.5) - 0.5 + m
        hx = s * (rx + 0.5) - 0.5 + m
        v = map_coordinates(coef, [hy.ravel(), hx.ravel()], order=3, mode="mirror", prefilter=False)
        out[r0:r1] = v.reshape(r1 - r0, n, w, n).mean(axis=(1, 3))
    return out


def cloud_layer(rng, shape, fraction: float, size_divisor: float = 24.0):
    """Bright smooth blobs: (opacity in [0, 1], brightness) over ``fraction`` of the pass.

    Blobs are about ``max(shape) / size_divisor`` px across, their brightness
    varies on half that scale.
    """
    if fraction <= 0:
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    f = gaussian_filter(rng.standard_normal(shape), max(shape) / size_divisor, mode="wrap")
    f /= f.std()
    thr = np.quantile(f, 1 - fraction)
    alpha = np.clip((f - thr) / 0.3, 0, 1) ** 0.5
    b = gaussian_filter(rng.standard_normal(shape), max(shape) / (2 * size_divisor), mode="wrap")
    bright = 0.9 + 0.15 * b / b.std()
    return alpha.astype(np.float32), bright.astype(np.float32)
