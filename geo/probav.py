"""PROBA-V super-resolution scenes: folder reader, cPSNR scorer and baseline.

The ESA Kelvins "PROBA-V Super Resolution" challenge (2018-2019) distributes
one folder per scene::

    imgset0000/
        LR000.png  LR001.png ...   low-resolution frames, 128x128, 16-bit grey
        QM000.png  QM001.png ...   their quality maps (nonzero = clear pixel)
        HR.png                     high-resolution target, 384x384, 16-bit grey
        SM.png                     its status map (nonzero = clear pixel)

Test scenes have no ``HR.png``/``SM.png``. The scale between the two grids is 3.
Samples are 14-bit digital numbers stored in 16-bit PNGs; they are returned
unchanged (as float32) and the scorer normalises them the way the challenge did,
by the 16-bit full scale 65535 (:data:`PNG_MAX`).

This module gives:

- :func:`load_scene` -> :class:`ProbaVScene`: read and check one scene folder.
- :func:`cmse_grid`, :func:`cpsnr`, :func:`challenge_score`: the challenge's
  shift- and brightness-compensated, cloud-masked PSNR and its normalised score.
- :func:`mean_clear_baseline`: the challenge baseline (cubic upsampling of the
  mean of the clearest frames).
- :func:`to_unit`: the conversion of digital numbers to the scorer's [0, 1] scale.

References
----------
.. [1] M. Märtens, D. Izzo, A. Krzic, D. Cox, "Super-Resolution of PROBA-V
   Images Using Convolutional Neural Networks", Astrodynamics 3(4):387-402,
   2019. arXiv:1907.01821.
.. [2] ESA Advanced Concepts Team, "PROBA-V Super Resolution" competition,
   Kelvins, https://kelvins.esa.int/proba-v-super-resolution/ (pages "Data" and
   "Scoring").
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mfsr.validation import all_finite

__all__ = [
    "PNG_MAX",
    "PROBAV_SCALE",
    "ProbaVScene",
    "load_scene",
    "to_unit",
    "cmse_grid",
    "cpsnr",
    "challenge_score",
    "clear_fractions",
    "mean_clear_baseline",
]

#: Full scale of the 16-bit PNG samples; the challenge scored images divided by it.
PNG_MAX = 65535.0
#: Ratio between the HR (100 m) and LR (300 m) grids of the challenge data.
PROBAV_SCALE = 3

_LR_NAME = re.compile(r"^LR(\d+)\.png$", re.IGNORECASE)
_QM_NAME = re.compile(r"^QM(\d+)\.png$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class ProbaVScene:
    """One PROBA-V scene: low-resolution frames, their masks, optional target.

    Attributes
    ----------
    lr : ndarray of float32, shape (N, h, w)
        Low-resolution frames in raw digital numbers (14-bit data in a 16-bit
        container, so values in [0, 16383] in the challenge data; nothing is
        rescaled). Frames are in increasing order of their file index
        (``LR000``, ``LR001``, ...).
    qm : ndarray of bool, shape (N, h, w)
        Quality maps: True where the pixel of ``lr`` is clear (no cloud,
        shadow, ice, water or missing data).
    hr : ndarray of float32, shape (h * scale, w * scale), or None
        High-resolution target in digital numbers; None for test scenes.
    sm : ndarray of bool, shape (h * scale, w * scale), or None
        Status map of ``hr``: True where the target pixel is clear.
    name : str
        Scene identifier, the folder name (e.g. ``"imgset0000"``).
    scale : int
        Integer ratio between the HR and LR grids (3 for PROBA-V).
    frames : tuple of str
        The LR file names, in the order of ``lr``.
    """

    lr: np.ndarray
    qm: np.ndarray
    hr: np.ndarray | None
    sm: np.ndarray | None
    name: str
    scale: int = PROBAV_SCALE
    frames: tuple[str, ...] = ()

    @property
    def clear_fraction(self) -> np.ndarray:
        """Fraction of clear pixels of each LR frame, float64 shape (N,)."""
        return clear_fractions(self.qm)


def _open_png(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable PNG ({exc})") from None
    if im.format != "PNG":
        raise ValueError(f"{path}: expected a PNG file, found {im.format}")
    return im


def _read_values(path: Path) -> np.ndarray:
    """Read a 16-bit greyscale PNG as float32 digital numbers, shape (H, W)."""
    im = _open_png(path)
    if im.mode.startswith("I;16"):
        data = np.asarray(im).astype(np.uint16)
    elif im.mode == "I":
        # Pillow may hand 16-bit grey over as 32-bit integers.
        data = np.asarray(im)
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise ValueError(f"{path}: samples outside the 16-bit range")
    else:
        raise ValueError(
            f"{path}: expected a 16-bit greyscale PNG, found Pillow mode {im.mode!r}"
        )
    return data.astype(np.float32)


def _read_mask(path: Path) -> np.ndarray:
    """Read a quality/status map PNG as bool (nonzero = clear), shape (H, W)."""
    im = _open_png(path)
    if im.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(
            f"{path}: expected a greyscale or bilevel mask PNG, found Pillow mode {im.mode!r}"
        )
    return np.asarray(im) != 0


def load_scene(
    folder: str | os.PathLike,
    *,
    lr_shape: tuple[int, int] | None = (128, 128),
    scale: int = PROBAV_SCALE,
) -> ProbaVScene:
    """Read one PROBA-V scene folder.

    Parameters
    ----------
    folder : str or path-like
        Folder holding ``LR<k>.png`` and ``QM<k>.png`` for every frame index
        ``k`` (same indices for both), and optionally ``HR.png`` with
        ``SM.png`` (both or neither). Other files are ignored.
    lr_shape : (int, int) or None
        Required (h, w) of every LR frame: (128, 128) for challenge data;
        None accepts any size shared by all frames.
    scale : int
        Ratio of the HR grid to the LR grid: ``HR.png`` must be
        ``(h * scale, w * scale)``.

    Returns
    -------
    scene : ProbaVScene
        ``lr`` float32 (N, h, w) digital numbers, ``qm`` bool (N, h, w),
        ``hr`` float32 / ``sm`` bool (h * scale, w * scale) or None.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist, or holds no LR frame.
    ValueError
        A frame without its quality map (or the reverse), ``HR.png`` without
        ``SM.png`` (or the reverse), a file that is not a readable PNG of the
        expected kind, or an image of the wrong shape. The message names the file.

    Notes
    -----
    Values stay raw digital numbers (no silent rescaling); :func:`to_unit` gives
    the [0, 1] scale used by the challenge scorer. A 16-bit PNG is read with
    Pillow, which returns it as mode ``I;16`` (uint16) without loss.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder: {root} is not a directory")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1, got {scale!r}")

    lr_files: dict[int, Path] = {}
    qm_files: dict[int, Path] = {}
    for entry in root.iterdir():
        for pattern, table in ((_LR_NAME, lr_files), (_QM_NAME, qm_files)):
            m = pattern.match(entry.name)
            if m:
                k = int(m.group(1))
                if k in table:
                    raise ValueError(
                        f"{root}: two files for frame index {k}: {table[k].name}, {entry.name}"
                    )
                table[k] = entry
    if not lr_files:
        raise FileNotFoundError(f"{root}: no LR*.png frame found")
    for k in sorted(set(lr_files) - set(qm_files)):
        raise ValueError(
            f"{lr_files[k]}: no matching quality map (expected QM{lr_files[k].name[2:]})"
        )
    for k in sorted(set(qm_files) - set(lr_files)):
        raise ValueError(
            f"{qm_files[k]}: quality map without a matching LR{qm_files[k].name[2:]}"
        )

    indices = sorted(lr_files)
    lr_list, qm_list = [], []
    expected = tuple(lr_shape) if lr_shape is not None else None
    for k in indices:
        frame = _read_values(lr_files[k])
        if expected is None:
            expected = frame.shape
        if frame.shape != expected:
            raise ValueError(f"{lr_files[k]}: shape {frame.shape}, expected {expected}")
        mask = _read_mask(qm_files[k])
        if mask.shape != expected:
            raise ValueError(f"{qm_files[k]}: shape {mask.shape}, expected {expected}")
        lr_list.append(frame)
        qm_list.append(mask)

    hr_path, sm_path = _find(root, "HR.png"), _find(root, "SM.png")
    hr = sm = None
    if (hr_path is None) != (sm_path is None):
        present, missing = ("HR.png", "SM.png") if sm_path is None else ("SM.png", "HR.png")
        raise ValueError(f"{root}: {present} present but {missing} missing; both or neither")
    if hr_path is not None:
        hr_shape = (expected[0] * scale, expected[1] * scale)
        hr = _read_values(hr_path)
        if hr.shape != hr_shape:
            raise ValueError(f"{hr_path}: shape {hr.shape}, expected {hr_shape} (scale {scale})")
        sm = _read_mask(sm_path)
        if sm.shape != hr_shape:
            raise ValueError(f"{sm_path}: shape {sm.shape}, expected {hr_shape}")

    return ProbaVScene(
        lr=np.stack(lr_list),
        qm=np.stack(qm_list),
        hr=hr,
        sm=sm,
        name=root.resolve().name,
        scale=int(scale),
        frames=tuple(lr_files[k].name for k in indices),
    )


def _find(root: Path, name: str) -> Path | None:
    """The file ``name`` in ``root``, matched case-insensitively, or None."""
    hits = [p for p in root.iterdir() if p.name.lower() == name.lower() and p.is_file()]
    if len(hits) > 1:
        raise ValueError(f"{root}: several files named {name} (differing in case)")
    return hits[0] if hits else None


def to_unit(values: np.ndarray, max_value: float = PNG_MAX) -> np.ndarray:
    """Digital numbers to the [0, 1] scale of the challenge scorer.

    Parameters
    ----------
    values : ndarray
        Raw 16-bit digital numbers, any shape.
    max_value : float
        Full scale; 65535 (the 16-bit PNG container) is what the challenge used,
        so PROBA-V's 14-bit data occupy [0, 0.25]. Use 16383 to map the 14-bit
        range onto [0, 1] instead (cPSNR values then differ by
        ``20 log10(65535 / 16383)`` = 12.04 dB).

    Returns
    -------
    ndarray of float32, same shape
        ``values / max_value``.
    """
    if not (np.isfinite(max_value) and max_value > 0):
        raise ValueError(f"max_value: expected a finite number > 0, got {max_value!r}")
    return (np.asarray(values, dtype=np.float64) / max_value).astype(np.float32)


def _check_scoring_inputs(sr, hr, mask, border, max_value):
    sr = np.asarray(sr)
    hr = np.asarray(hr)
    mask = np.asarray(mask)
    for name, a in (("sr", sr), ("hr", hr)):
        if a.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (H, W) image, got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    if sr.shape != hr.shape:
        raise ValueError(f"sr: shape {sr.shape} differs from hr shape {hr.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(
            f"mask: expected a boolean status map (True = clear), got dtype {mask.dtype}; "
            "convert it with `mask != 0`"
        )
    if mask.shape != hr.shape:
        raise ValueError(f"mask: shape {mask.shape} differs from hr shape {hr.shape}")
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise ValueError(f"border: expected an integer >= 0, got {border!r}")
    h, w = hr.shape
    if 2 * border >= h or 2 * border >= w:
        raise ValueError(f"border: {border} px leaves nothing of a {h}x{w} image")
    if not (np.isfinite(max_value) and max_value > 0):
        raise ValueError(f"max_value: expected a finite number > 0, got {max_value!r}")
    if not all_finite(sr):
        raise ValueError("sr: contains NaN or infinite values")
    if not all_finite(hr):
        raise ValueError("hr: contains NaN or infinite values")
    return sr, hr, mask


def cmse_grid(
    sr: np.ndarray,
    hr: np.ndarray,
    mask: np.ndarray,
    *,
    border: int = 3,
    max_value: float = PNG_MAX,
) -> np.ndarray:
    """Bias-corrected clear MSE of ``sr`` against every shifted crop of ``hr``.

    Parameters
    ----------
    sr : ndarray, shape (H, W)
        Super-resolved image, in the same units as ``hr`` (digital numbers by
        default).
    hr : ndarray, shape (H, W)
        Target image.
    mask : ndarray of bool, shape (H, W)
        Status map of ``hr``: True where the target pixel is clear.
    border : int
        Crop margin b; shifts of up to b pixels each way are searched.
    max_value : float
        Full scale dividing both images before the error is taken (65535, as in
        the challenge; use 1.0 for images already in [0, 1]).

    Returns
    -------
    cmse : ndarray of float64, shape (2b + 1, 2b + 1)
        ``cmse[u, v]`` compares ``SR = sr[b:H-b, b:W-b]`` with
        ``HR_uv = hr[u:u+H-2b, v:v+W-2b]`` over the clear pixels of
        ``mask[u:u+H-2b, v:v+W-2b]``; NaN where that crop has no clear pixel.
        The minimum at (u, v) means that the content of ``sr`` pixel (i, j) is
        best matched by ``hr`` pixel (i + u - b, j + v - b).

    Notes
    -----
    For each shift, with C the clear pixels of the crop and values divided by
    ``max_value``, ``bias = mean_C(HR_uv - SR)`` and
    ``cMSE = mean_C((HR_uv - (SR + bias))^2)``: the per-shift brightness bias is
    removed before the squared error. See :func:`cpsnr`.
    """
    sr, hr, mask = _check_scoring_inputs(sr, hr, mask, border, max_value)
    h, w = hr.shape
    ch, cw = h - 2 * border, w - 2 * border
    s = sr[border : border + ch, border : border + cw].astype(np.float64) / max_value
    t = hr.astype(np.float64) / max_value
    n_shift = 2 * border + 1
    out = np.full((n_shift, n_shift), np.nan)
    # One vectorised pass per shift (49 for the challenge): exact float64 sums,
    # memory of one crop. A correlation (FFT) form would cancel catastrophically.
    for u in range(n_shift):
        for v in range(n_shift):
            m = mask[u : u + ch, v : v + cw]
            n = np.count_nonzero(m)
            if n == 0:
                continue
            d = t[u : u + ch, v : v + cw][m] - s[m]
            d -= d.mean()
            out[u, v] = np.dot(d, d) / n
    return out


def cpsnr(
    sr: np.ndarray,
    hr: np.ndarray,
    mask: np.ndarray,
    *,
    border: int = 3,
    max_value: float = PNG_MAX,
) -> float:
    """Clear PSNR of the PROBA-V challenge (shift- and bias-compensated, masked).

    Parameters
    ----------
    sr : ndarray, shape (H, W)
        Super-resolved image (384x384 for the challenge), same units as ``hr``
        (raw digital numbers by default). Not quantised: the challenge scored
        16-bit PNG submissions, so round ``sr`` to integers to reproduce a
        submitted file exactly.
    hr : ndarray, shape (H, W)
        Target image.
    mask : ndarray of bool, shape (H, W)
        Status map ``SM`` of ``hr``: True where the target pixel is clear;
        other pixels never count.
    border : int
        Crop margin (3 in the challenge): ``sr`` is cropped to
        (H - 2 border, W - 2 border) and compared with every crop of ``hr``
        shifted by 0 .. 2 border pixels each way.
    max_value : float
        Full scale; both images are divided by it first. 65535 reproduces the
        challenge (whose scorer read the 16-bit PNGs as floats in [0, 1]); 1.0
        scores images already in [0, 1].

    Returns
    -------
    cpsnr : float
        In dB, the best over all shifts; ``inf`` if some shift matches
        exactly (after bias correction).

    Raises
    ------
    ValueError
        Mismatched shapes, NaN/inf values, a border too large for the image,
        or no clear pixel in any shifted crop.
    TypeError
        ``mask`` not boolean.

    Notes
    -----
    With b = ``border``, SR the centre crop ``sr[b:H-b, b:W-b]``, and for all
    u, v in {0, ..., 2b}, HR_uv = ``hr[u:u+H-2b, v:v+W-2b]`` with its clear set
    C_uv from ``mask`` (values divided by ``max_value``):

    .. math::

        b_{uv} = \\frac{1}{|C_{uv}|} \\sum_{C_{uv}} (HR_{uv} - SR)

        cMSE_{uv} = \\frac{1}{|C_{uv}|} \\sum_{C_{uv}} (HR_{uv} - (SR + b_{uv}))^2

        cPSNR = \\max_{u,v} -10 \\log_{10} cMSE_{uv}

    This follows the challenge's scoring page [2]_: 3-pixel border, 378x378
    crops, u, v in {0, ..., 6} (7 x 7 = 49 shifts), bias over clear pixels, and
    pixel values taken in [0, 1]. The 16-bit samples are divided by 65535 (the
    page's "[0, 1]" reading of the PNGs, as in the widely used community
    re-implementation of the scorer), which matches the magnitudes of the
    organisers' baseline cPSNRs (``norm.csv``: mostly 40-55 dB); dividing by the
    14-bit full scale instead would add 12.04 dB to every value.
    Shifts whose crop has no clear pixel are skipped. Some public
    re-implementations search only u, v in {0, ..., 5} (36 shifts); this one
    searches the page's full 7 x 7 grid, so it can only score higher or equal.

    References
    ----------
    .. [1] M. Märtens, D. Izzo, A. Krzic, D. Cox, "Super-Resolution of PROBA-V
       Images Using Convolutional Neural Networks", Astrodynamics 3(4), 2019.
    .. [2] ESA Kelvins, "PROBA-V Super Resolution: Scoring",
       https://kelvins.esa.int/proba-v-super-resolution/scoring/
    """
    grid = cmse_grid(sr, hr, mask, border=border, max_value=max_value)
    if np.all(np.isnan(grid)):
        raise ValueError("mask: no clear pixel in any shifted crop of hr")
    best = float(np.nanmin(grid))
    if best <= 0.0:
        return math.inf
    return -10.0 * math.log10(best)


def challenge_score(
    sr: np.ndarray,
    hr: np.ndarray,
    sm: np.ndarray,
    baseline_cpsnr: float,
    *,
    border: int = 3,
    max_value: float = PNG_MAX,
) -> float:
    """Normalised score of one scene as ranked in the challenge (lower is better).

    Parameters
    ----------
    sr, hr : ndarray, shape (H, W)
        Super-resolved and target images (see :func:`cpsnr`).
    sm : ndarray of bool, shape (H, W)
        Status map of ``hr`` (True = clear).
    baseline_cpsnr : float
        N(HR), the baseline's cPSNR for this scene in dB (the challenge's
        ``norm.csv``, or :func:`cpsnr` of :func:`mean_clear_baseline`).
    border, max_value
        As in :func:`cpsnr`.

    Returns
    -------
    score : float
        ``baseline_cpsnr / cpsnr(sr, hr, sm)``: 1 for the baseline, below 1
        when ``sr`` beats it; 0 for an exact match. The challenge's final score
        is the mean of this over all scenes.
    """
    if not (np.isfinite(baseline_cpsnr) and baseline_cpsnr > 0):
        raise ValueError(f"baseline_cpsnr: expected a finite cPSNR > 0 dB, got {baseline_cpsnr!r}")
    value = cpsnr(sr, hr, sm, border=border, max_value=max_value)
    if value <= 0:
        raise ValueError(f"sr: cPSNR {value:.3g} dB <= 0; the normalised score is undefined")
    return float(baseline_cpsnr) / value


def clear_fractions(qm: np.ndarray) -> np.ndarray:
    """Fraction of clear pixels of each frame.

    Parameters
    ----------
    qm : ndarray of bool, shape (N, h, w)

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    qm = _check_qm(qm)
    return qm.reshape(qm.shape[0], -1).mean(axis=1)


def _check_qm(qm) -> np.ndarray:
    qm = np.asarray(qm)
    if qm.dtype != np.bool_:
        raise TypeError(f"qm: expected boolean quality maps (True = clear), got dtype {qm.dtype}")
    if qm.ndim != 3 or qm.shape[0] == 0:
        raise ValueError(f"qm: expected shape (N, h, w) with N >= 1, got {qm.shape}")
    return qm


def mean_clear_baseline(
    lr: np.ndarray,
    qm: np.ndarray,
    scale: int = PROBAV_SCALE,
    *,
    k: int | None = None,
    exclude_masked: bool = True,
) -> np.ndarray:
    """Challenge baseline: cubic upsampling of the mean of the clearest frames.

    Parameters
    ----------
    lr : ndarray, shape (N, h, w)
        Low-resolution frames (any real dtype; digital numbers or [0, 1]).
    qm : ndarray of bool, shape (N, h, w)
        Quality maps, True = clear.
    scale : int
        Upsampling factor (3 for PROBA-V).
    k : int or None
        None (default): use every frame whose number of clear pixels equals the
        maximum ("maximal clearance", ties all kept). An integer: use the ``k``
        frames with the most clear pixels (ties broken by frame order).
    exclude_masked : bool
        True: average each pixel only over the selected frames where it is
        clear, falling back to the plain mean of the selected frames where none
        is clear. False: plain mean of the selected frames, as in the challenge
        baseline (identical when the selected frames are fully clear, as they
        usually are under "maximal clearance").

    Returns
    -------
    ndarray of float32, shape (h * scale, w * scale)
        Same units as ``lr``.

    Notes
    -----
    The challenge normalised each scene's score by the cPSNR of a bicubic
    upscaling of the LR frames with maximal clearance, averaged [1]_, [2]_. The
    upsampling here is cubic B-spline interpolation on the pixel-area grid
    (output pixel (y, x) samples input coordinate ((y + 0.5)/s - 0.5,
    (x + 0.5)/s - 0.5), half-sample symmetric boundary): ``scipy.ndimage.zoom``
    with ``order=3, grid_mode=True, mode="reflect"``, the same interpolant as
    :func:`mfsr.baselines.single_frame_upscale`. Interpolation is linear, so
    averaging before or after upsampling gives the same image. The exact
    bicubic kernel of the organisers is not published, so this reproduces their
    ``norm.csv`` values only approximately.

    References
    ----------
    .. [1] M. Märtens et al., "Super-Resolution of PROBA-V Images Using
       Convolutional Neural Networks", Astrodynamics 3(4), 2019.
    .. [2] ESA Kelvins, "PROBA-V Super Resolution: Scoring",
       https://kelvins.esa.int/proba-v-super-resolution/scoring/
    """
    lr = np.asarray(lr)
    if lr.ndim != 3 or lr.shape[0] == 0:
        raise ValueError(f"lr: expected shape (N, h, w) with N >= 1, got {lr.shape}")
    if not (np.issubdtype(lr.dtype, np.floating) or np.issubdtype(lr.dtype, np.integer)):
        raise TypeError(f"lr: expected a real-valued array, got dtype {lr.dtype}")
    qm = _check_qm(qm)
    if qm.shape != lr.shape:
        raise ValueError(f"qm: shape {qm.shape} differs from lr shape {lr.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale: expected an integer >= 1, got {scale!r}")
    if not all_finite(lr):
        raise ValueError("lr: contains NaN or infinite values")

    n = lr.shape[0]
    counts = qm.reshape(n, -1).sum(axis=1)
    if k is None:
        chosen = np.flatnonzero(counts == counts.max())
    else:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k: expected an integer in [1, {n}], got {k!r}")
        chosen = np.sort(np.argsort(-counts, kind="stable")[:k])

    frames = lr[chosen].astype(np.float64)
    plain = frames.mean(axis=0)
    if exclude_masked:
        w = qm[chosen]
        hits = w.sum(axis=0)
        clear_mean = np.where(w, frames, 0.0).sum(axis=0) / np.maximum(hits, 1)
        mean = np.where(hits > 0, clear_mean, plain)
    else:
        mean = plain
    if scale == 1:
        return mean.astype(np.float32)
    up = ndimage.zoom(mean, scale, order=3, mode="reflect", grid_mode=True)
    return up.astype(np.float32)
