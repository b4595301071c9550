"""Burst simulator: synthetic low-resolution bursts with exact ground truth and flow.

The sensor model
----------------
The high-resolution ``image`` (H, W[, 3]) is the scene. Each of its pixels is
taken as uniform over its unit square (a piecewise-constant scene), so the
value of a low-resolution pixel is the *exact* mean of the scene over the
pixel's footprint; for the reference frame of an integer scale this is the
block mean of the truth, and for any scale it equals
``mfsr.metrics.degrade(ground_truth, scale)``. The scene is optionally blurred
first (Gaussian optics, ``blur_sigma`` in high-resolution pixels).

Geometry (see docs/conventions.md): frame ``k`` pixel ``p = (y, x)`` (low
resolution, pixel centres at integers) maps to the reference frame at::

    r = R(theta_k) (p - c) + c + t_k + d_k(p)

with ``c = ((h - 1) / 2, (w - 1) / 2)`` the frame centre, ``t_k`` a translation,
``R`` a rotation acting on (y, x) vectors, ``R = [[cos, -sin], [sin, cos]]``
(a positive angle turns counter-clockwise as displayed with rows going down),
and ``d_k`` an optional smooth random displacement field. Reference coordinate
``r`` sits at high-resolution (and output-grid) coordinate ``(r + 0.5) s - 0.5``,
so the output grid of scale ``s`` coincides with the scene's pixel grid and the
ground truth is the top-left ``round(h s) x round(w s)`` crop of ``image``.

The footprint of a low-resolution pixel is its unit square in its own frame,
i.e. rotated with the frame. Pure translations are integrated exactly with
separable fractional-area weights (the fast path; the sampling functions are
those of :mod:`mfsr.pixel_area`). Otherwise the footprint is
split into ``q x q`` sub-squares (``q >= ceil(s)``, see ``subsamples``) whose centres
are mapped exactly and each of which is integrated exactly as an axis-aligned
square of side ``s / q`` scene pixels; only the rotation of these small
sub-squares is neglected. A local warp moves each footprint by the field's value
at the pixel centre (the field is nearly constant over one pixel).

True flow (docs/conventions.md): ``flow[k, i, j] = T_k^{-1}((i, j)) - (i, j)``, the
position in frame ``k`` of the content of reference pixel (i, j), minus (i, j);
closed form for rigid motion, fixed-point iterations to 1e-6 px with a warp.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .cfa import cell_channels, check_pattern
from .pixel_area import apply_separable, area_weights, box_coordinate, box_sample
from .validation import check_reference, check_scale
from .transfer import REC709_LUMA, srgb_to_linear

__all__ = [
    "SAMPLE_IMAGES",
    "SimulatedBurst",
    "box_sample",
    "dead_leaves",
    "lowres_shape",
    "sample_image",
    "simulate_burst",
    "simulate_geometric_burst",
]

#: Names accepted by :func:`sample_image`: photographs bundled with
#: scikit-image (no download) plus the procedural ``"dead_leaves"``.
SAMPLE_IMAGES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "text",
    "dead_leaves",
)


def sample_image(
    name: str = "astronaut",
    *,
    grey: bool = False,
    size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Load a bundled sample photograph as linear-light float32.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLE_IMAGES`.
    grey : bool
        Return (H, W) luminance (Rec. 709 weights on linear RGB). Grey
        photographs (camera, brick, ...) are always (H, W).
    size : int or None
        Centre-crop to at most ``size x size`` pixels. For ``"dead_leaves"``
        it is the side of the generated square image (default 512).
    seed : int
        Seed of the procedural ``"dead_leaves"`` image; ignored otherwise.

    Returns
    -------
    image : ndarray of float32, shape (H, W, 3) or (H, W)
        Linear light (inverse sRGB transfer applied), in [0, 1].
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(
            f"name: unknown sample image {name!r}; expected one of {', '.join(SAMPLE_IMAGES)}"
        )
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 1):
        raise ValueError(f"size: expected a positive integer or None, got {size!r}")
    if name == "dead_leaves":
        img = dead_leaves(int(size) if size is not None else 512, seed=seed, grey=grey)
        return img
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        raw = left if name == "motorcycle_left" else right
    else:
        raw = getattr(data, name)()
    raw = np.asarray(raw)
    if raw.dtype == bool:
        img = raw.astype(np.float32)
    else:
        img = raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)
    if img.ndim == 3:
        img = img[..., :3]
    img = srgb_to_linear(img)
    if grey and img.ndim == 3:
        img = (img @ REC709_LUMA).astype(np.float32)
    if size is not None:
        h, w = img.shape[:2]
        ch, cw = min(h, size), min(w, size)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        img = img[y0 : y0 + ch, x0 : x0 + cw]
    return np.ascontiguousarray(img, dtype=np.float32)


def dead_leaves(
    size: int = 512,
    *,
    seed: int = 0,
    grey: bool = False,
    r_min: float = 2.0,
    r_max: float | None = None,
    n_leaves: int | None = None,
) -> np.ndarray:
    """Procedural dead-leaves image: occluding disks with power-law radii.

    Disk radii follow the scale-invariant density ``p(r) ~ r^-3`` on
    ``[r_min, r_max]``; later disks are drawn underneath earlier ones, so the
    image is complete once enough disks are drawn (after ``n_leaves`` disks
    any uncovered speck takes the colour of the nearest leaf). Its statistics
    resemble natural images (edges at all scales and orientations).

    Parameters
    ----------
    size : int
        Side of the square image in pixels.
    seed : int
        Seed of ``np.random.default_rng``.
    grey : bool
        One channel instead of independent RGB colours.
    r_min, r_max : float
        Radius range in pixels; ``r_max`` defaults to ``size / 4``.
    n_leaves : int or None
        Maximum number of disks drawn (default grows with ``size / r_min``).

    Returns
    -------
    image : ndarray of float32, shape (size, size, 3) or (size, size)
        Linear values in [0.02, 0.98].
    """
    rng = np.random.default_rng(seed)
    r_max = float(r_max) if r_max is not None else size / 4.0
    n = int(n_leaves) if n_leaves is not None else int(60 * (size / r_min) ** 0.9) + 200
    nch = 1 if grey else 3
    out = np.zeros((size, size, nch), np.float32)
    filled = np.zeros((size, size), bool)
    # inverse CDF of r^-3 on [r_min, r_max]
    u = rng.random(n)
    a, b = r_min**-2, r_max**-2
    radii = (a - u * (a - b)) ** -0.5
    centres = rng.uniform(-r_max / 2, size + r_max / 2, (n, 2))
    colours = rng.uniform(0.02, 0.98, (n, nch)).astype(np.float32)
    for r, (cy, cx), col in zip(radii, centres, colours):
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, size)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, size)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~filled[y0:y1, x0:x1]
        out[y0:y1, x0:x1][disk] = col
        filled[y0:y1, x0:x1] |= disk
        if filled.all():
            break
    if not filled.all():
        # the last uncovered specks take the colour of the nearest leaf
        _, (iy, ix) = ndimage.distance_transform_edt(~filled, return_indices=True)
        out = out[iy, ix]
    return out[..., 0] if grey else out


@dataclass
class SimulatedBurst:
    """A simulated burst with everything needed to score a reconstruction.

    Attributes
    ----------
    frames : ndarray of float32, shape (N, h, w) or (N, h, w, 3)
        Grey or CFA mosaic frames, or RGB frames; linear light. Noise may take
        values outside [0, 1] (nothing is clipped except by JPEG).
    ground_truth : ndarray of float32, shape (round(h s), round(w s)[, 3])
        The sharp scene on the output grid of scale ``s`` of the reference frame
        (always RGB for CFA bursts).
    flow : ndarray of float32, shape (N, h, w, 2)
        True camera flow (dy, dx), convention of docs/conventions.md; zero
        for the reference. It ignores the moving object (see ``motion_mask``).
    scale : float
    cfa : str or None
    reference : int
    noise : (alpha, beta)
        Poisson-Gaussian model, variance = alpha * x + beta.
    motion_mask : ndarray of bool, shape (round(h s), round(w s)), or None
        Output-grid pixels whose content differs in some frame because an
        object moved; None without a moving object.
    params : dict
        What was drawn: ``shifts`` (N, 2) low-res px, ``angles`` (N,) degrees,
        ``warp`` (per-frame sinusoid coefficients or None), ``moving_object``,
        ``q`` sub-squares per axis, ``path`` ("separable" or "general").
    """

    frames: np.ndarray
    ground_truth: np.ndarray
    flow: np.ndarray
    scale: float
    cfa: str | None
    reference: int
    noise: tuple[float, float]
    motion_mask: np.ndarray | None
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# motion model


class _Motion:
    """Frame-to-reference mapping ``r = R (p - c) + c + t + d(p)`` of one frame.

    ``d`` is a sum of low-frequency sinusoids per axis:
    ``d_a(p) = sum_j amp[a, j] sin(2 pi (fy[a, j] y / h + fx[a, j] x / w) + phase[a, j])``.
    """

    def __init__(self, shift, angle_deg, centre, warp=None, shape=None):
        self.t = np.asarray(shift, np.float64)
        th = math.radians(angle_deg)
        self.R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        self.c = np.asarray(centre, np.float64)
        self.warp = warp
        self.shape = shape

    def displacement(self, y, x):
        """Local warp ``d(p)`` at frame coordinates (y, x): two arrays."""
        if self.warp is None:
            return 0.0, 0.0
        h, w = self.shape
        out = []
        for a in range(2):
            acc = np.zeros(np.broadcast(y, x).shape)
            for amp, fy, fx, ph in zip(*(self.warp[key][a] for key in ("amp", "fy", "fx", "phase"))):
                acc += amp * np.sin(2 * np.pi * (fy * y / h + fx * x / w) + ph)
            out.append(acc)
        return out[0], out[1]

    def forward(self, y, x):
        """Reference coordinates of frame coordinates (y, x)."""
        (r00, r01), (r10, r11) = self.R
        yc, xc = y - self.c[0], x - self.c[1]
        dy, dx = self.displacement(y, x)
        return (
            r00 * yc + r01 * xc + self.c[0] + self.t[0] + dy,
            r10 * yc + r11 * xc + self.c[1] + self.t[1] + dx,
        )

    def inverse(self, ry, rx, tol=1e-6, max_iter=200):
        """Frame coordinates whose image is reference coordinates (ry, rx)."""
        (r00, r01), (r10, r11) = self.R

        def rigid_inv(vy, vx):
            vy, vx = vy - self.c[0] - self.t[0], vx - self.c[1] - self.t[1]
            # R^T
            return r00 * vy + r10 * vx + self.c[0], r01 * vy + r11 * vx + self.c[1]

        py, px = rigid_inv(ry, rx)
        if self.warp is None:
            return py, px
        for _ in range(max_iter):
            dy, dx = self.displacement(py, px)
            ny, nx = rigid_inv(ry - dy, rx - dx)
            err = max(np.abs(ny - py).max(), np.abs(nx - px).max())
            py, px = ny, nx
            if err < tol:
                break
        return py, px


def _draw_warp(rng, amplitude, n_comp=3):
    """Random sinusoid coefficients whose sum is bounded by ``amplitude`` per axis."""
    amp = rng.uniform(0.5, 1.0, (2, n_comp))
    amp *= amplitude / amp.sum(axis=1, keepdims=True)
    amp *= rng.choice([-1.0, 1.0], (2, n_comp))
    # 0.3 to 1.2 cycles across the frame: smooth, so the inverse converges fast
    fy = rng.uniform(0.3, 1.2, (2, n_comp)) * rng.choice([-1.0, 1.0], (2, n_comp))
    fx = rng.uniform(0.3, 1.2, (2, n_comp)) * rng.choice([-1.0, 1.0], (2, n_comp))
    phase = rng.uniform(0, 2 * np.pi, (2, n_comp))
    return {"amp": amp, "fy": fy, "fx": fx, "phase": phase}


def lowres_shape(hr_shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """Largest low-res frame size (h, w) with ``round(h s) <= H`` and ``round(w s) <= W``."""
    out = []
    for n in hr_shape:
        m = int(math.floor(n / scale + 1e-9))
        while m > 0 and round(m * scale) > n:
            m -= 1
        out.append(m)
    return out[0], out[1]


# ---------------------------------------------------------------------------
# rendering


def _render_separable(chan, motion, scale, rows, cols):
    """Exact area integration for a pure translation (fast path).

    rows, cols : slices of the low-res frame to render (for CFA parities).
    """
    H, W = chan.shape
    iy, wy = area_weights(rows.stop, H, scale, motion.t[0])
    ix, wx = area_weights(cols.stop, W, scale, motion.t[1])
    return apply_separable(chan, iy[rows], wy[rows], ix[cols], wx[cols])


def _render_general(chan, motion, scale, ys, xs, q, chunk=1 << 21):
    """Sub-square integration of rotated / warped footprints.

    ys, xs : 1-D arrays of low-res row and column indices to render.
    """
    out = np.empty((ys.size, xs.size), np.float32)
    side = scale / q
    (r00, r01), (r10, r11) = motion.R
    rows_per = max(1, chunk // max(xs.size, 1))
    offs = (np.arange(q) + 0.5) / q - 0.5
    for r0 in range(0, ys.size, rows_per):
        y = ys[r0 : r0 + rows_per, None].astype(np.float64)
        x = xs[None, :].astype(np.float64)
        ry, rx = motion.forward(y, x)
        ry = np.broadcast_to(ry, (y.shape[0], xs.size))
        rx = np.broadcast_to(rx, (y.shape[0], xs.size))
        acc = np.zeros(ry.shape, np.float32)
        for oy in offs:
            for ox in offs:
                # sub-square centre rotated with the frame, then to high-res coordinates
                uy = (ry + (r00 * oy + r01 * ox) + 0.5) * scale - 0.5
                ux = (rx + (r10 * oy + r11 * ox) + 0.5) * scale - 0.5
                acc += ndimage.map_coordinates(
                    chan,
                    [box_coordinate(uy, side), box_coordinate(ux, side)],
                    order=1,
                    mode="reflect",
                    output=np.float32,
                )
        out[r0 : r0 + rows_per] = acc / np.float32(q * q)
    return out


def _render_channel(chan, c, out, motion, scale, cfa, separable, q):
    """Render the pixels of colour channel ``c`` of one frame into ``out``.

    ``chan`` is that channel of the (blurred) scene, (H, W); ``out`` is the
    frame, (h, w) grey or mosaic, or (h, w, 3) RGB (written in place).
    """
    h, w = out.shape[:2]
    if cfa is None:
        target = out if out.ndim == 2 else out[..., c]
        if separable:
            target[...] = _render_separable(chan, motion, scale, slice(0, h), slice(0, w))
        else:
            target[...] = _render_general(chan, motion, scale, np.arange(h), np.arange(w), q)
        return
    cell = cell_channels(cfa)
    for py in range(2):
        for px in range(2):
            if int(cell[py, px]) != c:
                continue
            if separable:
                out[py::2, px::2] = _render_separable(chan, motion, scale, slice(py, h, 2), slice(px, w, 2))
            else:
                out[py::2, px::2] = _render_general(
                    chan, motion, scale, np.arange(py, h, 2), np.arange(px, w, 2), q
                )


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    q8 = np.clip(np.round(frame * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(q8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / np.float32(255.0)


def _check_scene(image, scale, n_frames, reference, cfa):
    """Validated ``(image float32, scale, n, reference, cfa)`` of a simulation."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"image: expected linear float values in [0, 1], got dtype {img.dtype}")
    img = np.ascontiguousarray(img, dtype=np.float32)
    if not np.isfinite(img).all():
        raise ValueError("image: NaN or infinite values")
    s = check_scale(scale)
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames: expected a positive integer, got {n_frames!r}")
    n = int(n_frames)
    ref = check_reference(reference, n)
    if cfa is not None:
        cfa = check_pattern(cfa)
        if img.ndim != 3:
            raise ValueError(f"cfa: a CFA burst ({cfa}) needs an RGB image (H, W, 3), got {img.shape}")
    return img, s, n, ref, cfa


def _check_non_negative(**values: float) -> None:
    for name, v in values.items():
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")


def _add_noise(frame: np.ndarray, rng: np.random.Generator, alpha: float, beta: float) -> None:
    """Poisson-Gaussian noise in place: variance ``alpha * x + beta``."""
    if alpha > 0:
        lam = np.maximum(frame, 0.0).astype(np.float64) / alpha
        frame[...] = (alpha * rng.poisson(lam)).astype(np.float32)
    if beta > 0:
        frame += np.float32(math.sqrt(beta)) * rng.standard_normal(frame.shape, dtype=np.float32)


def simulate_burst(
    image: np.ndarray,
    *,
    n_frames: int = 8,
    scale: float = 2.0,
    cfa: str | None = None,
    reference: int = 0,
    max_shift: float = 2.0,
    max_rotation: float = 0.0,
    local_warp: float = 0.0,
    blur_sigma: float = 0.0,
    alpha: float = 0.0,
    beta: float = 0.0,
    jpeg_quality: int | None = None,
    moving_object: bool = False,
    seed: int = 0,
    subsamples: int | None = None,
    shifts: np.ndarray | None = None,
    angles: np.ndarray | None = None,
) -> SimulatedBurst:
    """Simulate a handheld burst of low-resolution frames of ``image``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        High-resolution linear-light scene (float; RGB required for ``cfa``).
    n_frames : int
        Number of frames N >= 1.
    scale : float
        Super-resolution factor s > 0 (1, 1.5, 2, ... ); frames are
        ``h = floor(H / s)`` by ``w = floor(W / s)`` (reduced until
        ``round(h s) <= H``).
    cfa : str or None
        Bayer pattern; frames are then mosaics (N, h, w) via the pattern.
    reference : int
        Index of the frame with identity motion.
    max_shift : float
        Translations are uniform in ``[-max_shift, max_shift]`` low-res px per axis.
    max_rotation : float
        Rotations about the frame centre, uniform in ``[-max_rotation, max_rotation]`` degrees.
    local_warp : float
        Amplitude bound (low-res px per axis) of a smooth random displacement
        field added to each non-reference frame (0.3 to 1.2 cycles per frame).
    blur_sigma : float
        Gaussian optical blur of the scene, in high-res px, before integration.
    alpha, beta : float
        Poisson-Gaussian noise: ``x_noisy = alpha Poisson(x / alpha) + sqrt(beta) N(0, 1)``
        (variance ``alpha x + beta``); a zero part is skipped. Applied after the mosaic.
    jpeg_quality : int or None
        JPEG-compress each (grey or RGB, not CFA) frame with Pillow at this
        quality: values are clipped to [0, 1] and quantised to 8 bits as they
        are (linear, no gamma), then decoded back to float.
    moving_object : bool
        Displace a square patch of the scene (side about 1/8 of the width) by
        3 to 6 low-res px per axis in the last non-reference frame.
    seed : int
        Seed of ``np.random.default_rng``: the only source of randomness.
    subsamples : int or None
        Sub-squares per axis ``q >= ceil(s)`` of the general (rotation/warp)
        path; default ``ceil(s)`` when all rotations are within 3 degrees, else
        ``2 ceil(s)``. Each sub-square is integrated exactly, only its own small
        rotation is neglected, an error that grows with the angle and shrinks
        with ``q`` (hence the finer default beyond 3 degrees). Pure
        translations and local warps move footprints without turning them:
        exact for any ``q``.
    shifts, angles : ndarray or None
        Explicit per-frame translations (N, 2) in low-res px (dy, dx) and
        rotations (N,) in degrees, overriding the random draws (the reference
        frame's entries are set to zero).

    Returns
    -------
    SimulatedBurst
        Frames are float32 and not clipped: noise may leave [0, 1].

    Notes
    -----
    The scene is treated as piecewise constant (each scene pixel uniform over
    its square), integrated exactly over each low-res pixel's footprint; see
    the module docstring. Cost: the translation-only fast path is a pair of
    banded separable products per channel; the general path samples ``q^2``
    sub-squares per pixel with ``scipy.ndimage.map_coordinates(order=1)``,
    several times slower; exact Poisson sampling adds a pass over every
    frame.
    """
    img, s, n, ref, cfa = _check_scene(image, scale, n_frames, reference, cfa)
    _check_non_negative(max_shift=max_shift, max_rotation=max_rotation, local_warp=local_warp,
                        blur_sigma=blur_sigma, alpha=alpha, beta=beta)
    if jpeg_quality is not None:
        if cfa is not None:
            raise ValueError("jpeg_quality: JPEG applies to grey or RGB frames, not CFA mosaics")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality: expected 1..100, got {jpeg_quality!r}")
    if alpha > 0 and img.min() < 0:
        raise ValueError("image: negative values cannot carry Poisson noise (alpha > 0)")

    H, W = img.shape[:2]
    h, w = lowres_shape((H, W), s)
    if h < 2 or w < 2:
        raise ValueError(f"image: {H}x{W} is too small for scale {s} (frames would be {h}x{w})")
    if cfa is not None and (h < 4 or w < 4):
        raise ValueError(f"image: CFA frames must be at least 4x4, got {h}x{w}")
    oh, ow = int(round(h * s)), int(round(w * s))
    q_min = int(math.ceil(s - 1e-9))
    if subsamples is not None:
        q = int(subsamples)
        if q < q_min:
            raise ValueError(
                f"subsamples: expected an integer >= ceil(scale) = {q_min}, got {subsamples!r}"
            )

    rng = np.random.default_rng(seed)
    drawn_shifts = rng.uniform(-max_shift, max_shift, (n, 2))
    drawn_angles = rng.uniform(-max_rotation, max_rotation, n)
    if shifts is not None:
        drawn_shifts = np.array(shifts, np.float64)
        if drawn_shifts.shape != (n, 2) or not np.isfinite(drawn_shifts).all():
            raise ValueError(f"shifts: expected finite values of shape {(n, 2)}, got {drawn_shifts.shape}")
    if angles is not None:
        drawn_angles = np.array(angles, np.float64)
        if drawn_angles.shape != (n,) or not np.isfinite(drawn_angles).all():
            raise ValueError(f"angles: expected finite values of shape {(n,)}, got {drawn_angles.shape}")
    drawn_shifts[ref] = 0.0
    drawn_angles[ref] = 0.0
    warps = [None] * n
    if local_warp > 0:
        for k in range(n):
            if k != ref:
                warps[k] = _draw_warp(rng, local_warp)
    centre = ((h - 1) / 2.0, (w - 1) / 2.0)
    motions = [
        _Motion(drawn_shifts[k], drawn_angles[k], centre, warps[k], (h, w)) for k in range(n)
    ]
    separable = local_warp == 0 and not np.any(drawn_angles != 0)
    if subsamples is None:
        # sub-squares are integrated exactly; only their own rotation is neglected,
        # which costs < 5e-4 RMS (white-noise scene) up to 3 degrees with q = ceil(s)
        q = q_min if np.abs(drawn_angles).max() <= 3.0 else 2 * q_min

    nch = 1 if img.ndim == 2 else 3

    # moving object: a patch of the scene moved in one non-reference frame
    obj = None
    motion_mask = None
    if moving_object:
        if n < 2:
            raise ValueError("moving_object: needs at least two frames")
        k_obj = max(k for k in range(n) if k != ref)
        side = max(4, int(round(ow / 8)))
        disp_lr = rng.uniform(3.0, 6.0, 2) * rng.choice([-1.0, 1.0], 2)
        disp = np.round(disp_lr * s).astype(int)
        margin = int(math.ceil(2 * s)) + 2
        lo_y, lo_x = margin + max(0, -disp[0]), margin + max(0, -disp[1])
        hi_y = oh - margin - side - max(0, disp[0])
        hi_x = ow - margin - side - max(0, disp[1])
        if hi_y < lo_y or hi_x < lo_x:
            raise ValueError(f"moving_object: image {oh}x{ow} too small for a moving patch")
        y0 = int(rng.integers(lo_y, hi_y + 1))
        x0 = int(rng.integers(lo_x, hi_x + 1))
        obj = {"frame": k_obj, "box": (y0, x0, side), "displacement": (int(disp[0]), int(disp[1]))}
        motion_mask = np.zeros((oh, ow), bool)
        motion_mask[y0 : y0 + side, x0 : x0 + side] = True
        motion_mask[y0 + disp[0] : y0 + disp[0] + side, x0 + disp[1] : x0 + disp[1] + side] = True
        grow = 2 + int(math.ceil(3 * blur_sigma)) + int(math.ceil(s))
        motion_mask = ndimage.binary_dilation(motion_mask, np.ones((2 * grow + 1,) * 2, bool))

    def moved_channel(sharp, blurred):
        """A scene channel with the object displaced, then blurred."""
        y0, x0, side = obj["box"]
        dy, dx = obj["displacement"]
        if blur_sigma == 0:
            out = sharp.copy()
            out[y0 + dy : y0 + dy + side, x0 + dx : x0 + dx + side] = sharp[y0 : y0 + side, x0 : x0 + side]
            return out
        # re-blur only a window around the new position
        r = int(math.ceil(4 * blur_sigma)) + 1
        wy0, wx0 = max(y0 + dy - 2 * r, 0), max(x0 + dx - 2 * r, 0)
        wy1, wx1 = min(y0 + dy + side + 2 * r, H), min(x0 + dx + side + 2 * r, W)
        win = sharp[wy0:wy1, wx0:wx1].copy()
        win[y0 + dy - wy0 : y0 + dy - wy0 + side, x0 + dx - wx0 : x0 + dx - wx0 + side] = sharp[
            y0 : y0 + side, x0 : x0 + side
        ]
        win = ndimage.gaussian_filter(win, blur_sigma, mode="reflect")
        out = blurred.copy()
        iy0, ix0 = max(y0 + dy - r, 0), max(x0 + dx - r, 0)
        iy1, ix1 = min(y0 + dy + side + r, H), min(x0 + dx + side + r, W)
        out[iy0:iy1, ix0:ix1] = win[iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0]
        return out

    frame_shape = (n, h, w) if (cfa is not None or nch == 1) else (n, h, w, 3)
    frames = np.empty(frame_shape, np.float32)
    # channel-outer: one scene channel (and its blurred copy) in memory at a time
    for c in range(nch):
        sharp = img if nch == 1 else np.ascontiguousarray(img[..., c])
        scene = ndimage.gaussian_filter(sharp, blur_sigma, mode="reflect") if blur_sigma > 0 else sharp
        for k in range(n):
            chan = scene
            if obj is not None and k == obj["frame"]:
                chan = moved_channel(sharp, scene)
            _render_channel(chan, c, frames[k], motions[k], s, cfa, separable, q)
        del sharp, scene, chan

    # noise, in place, frame by frame
    for k in range(n):
        _add_noise(frames[k], rng, alpha, beta)
        if jpeg_quality is not None:
            frames[k] = _jpeg(frames[k], jpeg_quality)

    # true flow on the reference grid
    flow = np.zeros((n, h, w, 2), np.float32)
    ry = np.arange(h, dtype=np.float64)[:, None]
    rx = np.arange(w, dtype=np.float64)[None, :]
    for k in range(n):
        if k == ref:
            continue
        rows_per = max(1, (1 << 21) // w)
        for r0 in range(0, h, rows_per):
            yy = np.broadcast_to(ry[r0 : r0 + rows_per], (min(rows_per, h - r0), w))
            xx = np.broadcast_to(rx, yy.shape)
            py, px = motions[k].inverse(yy, xx)
            flow[k, r0 : r0 + rows_per, :, 0] = py - yy
            flow[k, r0 : r0 + rows_per, :, 1] = px - xx

    ground_truth = np.ascontiguousarray(img[:oh, :ow])
    params = {
        "shifts": drawn_shifts,
        "angles": drawn_angles,
        "warp": warps if local_warp > 0 else None,
        "moving_object": obj,
        "q": q,
        "path": "separable" if separable else "general",
        "lowres_shape": (h, w),
        "blur_sigma": float(blur_sigma),
        "seed": seed,
    }
    return SimulatedBurst(
        frames=frames,
        ground_truth=ground_truth,
        flow=flow,
        scale=s,
        cfa=cfa,
        reference=ref,
        noise=(float(alpha), float(beta)),
        motion_mask=motion_mask,
        params=params,
    )


# ---------------------------------------------------------------------------
# global geometry: per-frame homographies and Brown-Conrady lenses


def _homography_from_corners(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) matrix mapping four (x, y) points ``src`` exactly onto ``dst``."""
    a = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(a, np.float64))
    m = vt[-1].reshape(3, 3)
    return m / m[2, 2]


def _apply_h(m: np.ndarray, x, y):
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    return (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w, (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w


def _lens_distort(x, y, coeffs, K):
    """Brown-Conrady (OpenCV order k1, k2, p1, p2, k3) on pixel (x, y)."""
    k1, k2, p1, p2, k3 = coeffs
    u, v = (x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1]
    r2 = u * u + v * v
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    ud = u * rad + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * rad + p1 * (r2 + 2 * v * v) + 2 * p2 * u * v
    return ud * K[0, 0] + K[0, 2], vd * K[1, 1] + K[1, 2]


def _lens_undistort(x, y, coeffs, K, iterations=50):
    """Inverse of :func:`_lens_distort` by fixed-point iteration (to ~1e-10 px)."""
    ux, uy = x, y
    for _ in range(iterations):
        dx, dy = _lens_distort(ux, uy, coeffs, K)
        ux, uy = ux - (dx - x), uy - (dy - y)
    return ux, uy


class _GeometricMotion:
    """Frame-to-reference mapping of a burst with homographies and a lens.

    Frame pixel ``p`` (distorted, low-res px) -> undistorted frame pixel
    ``U_k(p)`` -> rectified reference coordinate ``H_k^-1 U_k(p)``, plus an
    optional local warp ``d_k(p)``. ``H_k`` maps rectified reference (x, y)
    to rectified frame (x, y). ``R`` is the identity: the sub-squares of a
    footprint are not turned (the homographies here are close to identity).
    """

    def __init__(self, H, coeffs, K, warp, shape):
        self.H = np.asarray(H, np.float64)
        self.Hinv = np.linalg.inv(self.H)
        self.coeffs = None if coeffs is None else np.asarray(coeffs, np.float64)
        self.K = K
        self.R = np.eye(2)
        self._local = _Motion((0.0, 0.0), 0.0, (0.0, 0.0), warp, shape)

    def forward(self, y, x):
        if self.coeffs is not None:
            x, y = _lens_undistort(x, y, self.coeffs, self.K)
        rx, ry = _apply_h(self.Hinv, x, y)
        return ry, rx

    def _to_frame(self, ry, rx):
        x, y = _apply_h(self.H, rx, ry)
        if self.coeffs is not None:
            x, y = _lens_distort(x, y, self.coeffs, self.K)
        return y, x

    def inverse(self, ry, rx, tol=1e-7, max_iter=200):
        py, px = self._to_frame(ry, rx)
        if self._local.warp is None:
            return py, px
        for _ in range(max_iter):
            dy, dx = self._local.displacement(py, px)
            ny, nx = self._to_frame(ry - dy, rx - dx)
            err = max(np.abs(ny - py).max(), np.abs(nx - px).max())
            py, px = ny, nx
            if err < tol:
                break
        return py, px

    def full_forward(self, y, x):
        ry, rx = self.forward(y, x)
        dy, dx = self._local.displacement(y, x)
        return ry + dy, rx + dx


class _WarpedMotion:
    """Adapter giving :func:`_render_general` the full forward map."""

    def __init__(self, m: _GeometricMotion):
        self.m = m
        self.R = m.R

    def forward(self, y, x):
        return self.m.full_forward(y, x)


def simulate_geometric_burst(
    image: np.ndarray,
    *,
    n_frames: int = 8,
    scale: float = 2.0,
    cfa: str | None = None,
    reference: int = 0,
    max_shift: float = 2.0,
    corner_shift: float = 0.0,
    local_warp: float = 0.0,
    distortion=None,
    breathing: float = 0.0,
    camera_matrix: np.ndarray | None = None,
    blur_sigma: float = 0.0,
    alpha: float = 0.0,
    beta: float = 0.0,
    seed: int = 0,
) -> SimulatedBurst:
    """Simulate a burst with per-frame homographies and a Brown-Conrady lens.

    Frame ``k`` sees the scene through the homography ``H_k`` (rectified
    reference (x, y) px to rectified frame px, ``(x, y, 1)`` column vectors)
    and then the lens: frame pixel ``p`` shows the scene at rectified
    reference coordinate ``H_k^-1(U_k(p)) + d_k(p)``, with ``U_k`` the
    undistortion of frame ``k``'s lens (:mod:`mfsr.geometry` model and
    default camera matrix) and ``d_k`` an optional smooth local warp. The
    reference frame has ``H = I`` and no local warp. Footprints are
    integrated as in :func:`simulate_burst` (sub-squares, not turned).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Linear-light scene (RGB for ``cfa``).
    n_frames, scale, cfa, reference, blur_sigma, alpha, beta, seed
        As in :func:`simulate_burst`.
    max_shift : float
        Common translation of the four image corners, uniform in
        ``[-max_shift, max_shift]`` low-res px per axis.
    corner_shift : float
        Independent displacement of each corner on top of it, uniform in
        ``[-corner_shift, corner_shift]`` px per axis; ``H_k`` is the
        homography through the four displaced corners.
    local_warp : float
        Amplitude (px per axis) of a smooth random local displacement per
        non-reference frame (see :func:`simulate_burst`).
    distortion : sequence of float or None
        Lens coefficients, OpenCV order ``(k1, k2, p1, p2, k3)`` (1, 2, 4 or
        5 values), in the normalised coordinates of ``camera_matrix``.
    breathing : float
        Each non-reference frame's ``k1`` differs from the reference's by a
        uniform draw in ``[-breathing, breathing]`` (focus breathing).
    camera_matrix : ndarray (3, 3), optional
        Low-res pixel camera matrix; principal point at the centre and focal
        ``max(h, w)`` px by default.

    Returns
    -------
    SimulatedBurst
        ``ground_truth`` is the *rectified* scene on the output grid;
        ``flow`` is the true flow on the reference's (distorted) input grid
        (convention of docs/conventions.md, zero for the reference).
        ``params`` adds ``homographies`` (N, 3, 3), ``distortion`` (N, 5) per-frame
        coefficients (zeros without a lens), ``camera_matrix`` (3, 3) and
        ``rectified_flow`` (N, h, w, 2): for every frame (the reference
        included) the position in it of rectified reference pixel ``u``,
        minus ``u`` -- the flow a rectifying fusion uses.
    """
    img, s, n, ref, cfa = _check_scene(image, scale, n_frames, reference, cfa)
    _check_non_negative(max_shift=max_shift, corner_shift=corner_shift, local_warp=local_warp,
                        breathing=breathing, blur_sigma=blur_sigma, alpha=alpha, beta=beta)
    H_, W_ = img.shape[:2]
    h, w = lowres_shape((H_, W_), s)
    if h < 4 or w < 4:
        raise ValueError(f"image: {H_}x{W_} is too small for scale {s}")
    oh, ow = int(round(h * s)), int(round(w * s))
    K = (np.array([[max(h, w), 0, (w - 1) / 2], [0, max(h, w), (h - 1) / 2], [0, 0, 1]], np.float64)
         if camera_matrix is None else np.asarray(camera_matrix, np.float64))
    if distortion is None:
        base = None
    else:
        d = np.asarray(distortion, np.float64).ravel()
        if d.size not in (1, 2, 4, 5) or not np.isfinite(d).all():
            raise ValueError(f"distortion: expected 1, 2, 4 or 5 finite coefficients, got {distortion!r}")
        base = np.zeros(5)
        base[: d.size] = d
    if breathing > 0 and base is None:
        base = np.zeros(5)

    rng = np.random.default_rng(seed)
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    Hs = np.tile(np.eye(3), (n, 1, 1))
    coeffs = np.zeros((n, 5))
    motions = []
    for k in range(n):
        t = rng.uniform(-max_shift, max_shift, 2)
        jit = rng.uniform(-corner_shift, corner_shift, (4, 2))
        dk1 = rng.uniform(-breathing, breathing)
        warp = _draw_warp(rng, local_warp) if local_warp > 0 else None
        if k != ref:
            Hs[k] = _homography_from_corners(corners, corners + t + jit)
        else:
            warp, dk1 = None, 0.0
        c = None
        if base is not None:
            c = base.copy()
            c[0] += dk1
            coeffs[k] = c
        motions.append(_GeometricMotion(Hs[k], c, K, warp, (h, w)))

    nch = 1 if img.ndim == 2 else 3
    q = int(math.ceil(s - 1e-9))
    frame_shape = (n, h, w) if (cfa is not None or nch == 1) else (n, h, w, 3)
    frames = np.empty(frame_shape, np.float32)
    for c in range(nch):
        sharp = img if nch == 1 else np.ascontiguousarray(img[..., c])
        scene = ndimage.gaussian_filter(sharp, blur_sigma, mode="reflect") if blur_sigma > 0 else sharp
        for k in range(n):
            _render_channel(scene, c, frames[k], _WarpedMotion(motions[k]), s, cfa, False, q)
    for k in range(n):
        _add_noise(frames[k], rng, alpha, beta)

    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    flow = np.zeros((n, h, w, 2), np.float32)
    rect = np.zeros((n, h, w, 2), np.float32)
    ry, rx = motions[ref].forward(yy, xx)  # reference pixel -> rectified coordinate
    for k in range(n):
        py, px = motions[k].inverse(yy, xx)
        rect[k, ..., 0], rect[k, ..., 1] = py - yy, px - xx
        if k != ref:
            py, px = motions[k].inverse(ry, rx)
            flow[k, ..., 0], flow[k, ..., 1] = py - yy, px - xx
    params = {
        "homographies": Hs,
        "distortion": coeffs,
        "camera_matrix": K,
        "rectified_flow": rect,
        "warp": [m._local.warp for m in motions],
        "lowres_shape": (h, w),
        "blur_sigma": float(blur_sigma),
        "seed": seed,
        "q": q,
        "path": "general",
    }
    return SimulatedBurst(
        frames=frames,
        ground_truth=np.ascontiguousarray(img[:oh, :ow]),
        flow=flow,
        scale=s,
        cfa=cfa,
        reference=ref,
        noise=(float(alpha), float(beta)),
        motion_mask=None,
        params=params,
    )
