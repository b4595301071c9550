"""Held-out-frame prediction: judging a fusion on a real burst, without ground truth.

A frame left out of the fusion is an independent real exposure of the scene.
The fused image, re-degraded to that frame's geometry (its flow to the
reference, inverted, and the integration over one input pixel), predicts it;
a better fusion predicts it better, up to the frame's own noise and
processing. The real-capture benchmark (``benchmarks/bench_real.py``) scores
the defaults this way, and :mod:`mfsr.refine.adapt` fine-tunes the refinement
on a user's own bursts with it.

Geometry (the pixel-area convention of the whole package): input pixel ``r`` of the reference grid covers output pixels
``[s r, s (r + 1))``, so its centre is output coordinate ``s r + (s - 1)/2``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .cfa import channel_map

__all__ = ["frame_centres", "predict_frame", "held_out_psnr", "blur_fitted_psnr"]

#: Optical blurs (Gaussian sigma, output px) tried by :func:`blur_fitted_psnr`.
FITTED_BLURS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)

#: Fixed-point iterations that invert the flow (it is smooth and small, so a
#: few converge far below a hundredth of a pixel).
INVERSION_STEPS = 5


def _integer_scale(scale) -> int:
    s = float(scale)
    if not np.isfinite(s) or s < 1 or s != round(s):
        raise ValueError(f"scale: held-out-frame prediction needs an integer scale >= 1, got {scale!r}")
    return int(round(s))


def frame_centres(flow: np.ndarray, scale: int) -> np.ndarray:
    """Output-grid coordinates of the centres of a frame's pixels.

    Parameters
    ----------
    flow : ndarray of float32, shape (h, w, 2)
        The frame's flow to the reference (:func:`mfsr.register`): the content
        of reference pixel ``r`` is at ``r + flow(r)`` in the frame, input px.
    scale : int
        Output pixels per input pixel.

    Returns
    -------
    ndarray of float32, shape (h, w, 2)
        ``(y, x)`` in output px of the centre of every frame pixel: the
        reference position ``r`` with ``r + flow(r)`` = that pixel (found by
        fixed-point iteration), mapped to ``s r + (s - 1) / 2``.
    """
    s = _integer_scale(scale)
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow: expected shape (h, w, 2), got {flow.shape}")
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ry, rx = yy.copy(), xx.copy()
    for _ in range(INVERSION_STEPS):
        ry = yy - ndimage.map_coordinates(flow[..., 0], [ry, rx], order=1, mode="nearest")
        rx = xx - ndimage.map_coordinates(flow[..., 1], [ry, rx], order=1, mode="nearest")
    off = np.float32((s - 1) / 2)
    return np.stack([s * ry + off, s * rx + off], axis=-1).astype(np.float32)


def predict_frame(image: np.ndarray, flow: np.ndarray, scale: int, cfa: str | None = None,
                  blur: float = 0.0) -> np.ndarray:
    """Re-degrade a fused image to the geometry of the frame whose flow is ``flow``.

    The image is blurred by the optics' point spread function if one is
    given (``blur``), integrated over one input pixel (a box of ``scale``
    output px) and sampled with cubic splines at the frame's pixel centres
    (:func:`frame_centres`).

    Without ``blur`` the prediction of a frame is best made by the optical
    image itself (the scene as the lens delivered it): an estimate that also
    undoes the optics' blur predicts the frame worse, although it is closer
    to the scene. Give the optics' blur, when known, to judge deblurring.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, C)
        Fused image on the output grid (``H = scale * h``).
    flow : ndarray of float32, shape (h, w, 2)
    scale : int
    cfa : str or None
        Bayer pattern of a mosaic frame: the prediction is the mosaic, each
        pixel the channel its CFA site records (``image`` must be RGB).
    blur : float
        Standard deviation of a Gaussian point spread function of the
        optics, output px (0: none).

    Returns
    -------
    ndarray of float32, shape (h, w), (h, w, C), or (h, w) for a mosaic
    """
    s = _integer_scale(scale)
    img = np.asarray(image, np.float32)
    planes = img[..., None] if img.ndim == 2 else img
    if planes.ndim != 3:
        raise ValueError(f"image: expected shape (H, W) or (H, W, C), got {img.shape}")
    if not (np.isfinite(blur) and blur >= 0):
        raise ValueError(f"blur: expected a Gaussian sigma >= 0 (output px), got {blur!r}")
    c = frame_centres(flow, s)
    if blur > 0:
        planes = ndimage.gaussian_filter(planes, (blur, blur, 0), mode="nearest")
    box = ndimage.uniform_filter(planes, size=(s, s, 1), mode="nearest")
    # An even box's window [i - s/2, i + s/2) is centred at i - 1/2.
    shift = 0.5 if s % 2 == 0 else 0.0
    pos = [c[..., 0] + shift, c[..., 1] + shift]
    out = np.stack([ndimage.map_coordinates(box[..., k], pos, order=3, mode="nearest")
                    for k in range(planes.shape[2])], -1).astype(np.float32)
    if cfa is not None:
        if planes.shape[2] != 3:
            raise ValueError(f"image: a mosaic is predicted from an RGB image, got shape {img.shape}")
        ch = channel_map(cfa, out.shape[:2])
        return np.take_along_axis(out, ch[..., None].astype(np.intp), axis=-1)[..., 0]
    return out[..., 0] if img.ndim == 2 else out


def held_out_psnr(image: np.ndarray, flow: np.ndarray, frame: np.ndarray, scale: int, *,
                  cfa: str | None = None, crop: int = 16, blur: float = 0.0) -> float:
    """PSNR (dB, peak 1) of ``image`` re-degraded to ``frame``'s geometry against ``frame``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Fused image.
    flow : ndarray, shape (h, w, 2)
        ``frame``'s flow to the reference.
    frame : ndarray, shape (h, w), (h, w, C) or a (h, w) mosaic with ``cfa``
        The held-out frame, linear, nominally [0, 1].
    scale : int
    cfa : str or None
    crop : int
        Border of the frame left out of the score, input px.
    blur : float
        The optics' Gaussian blur, output px (see :func:`predict_frame`).
    """
    from .metrics import psnr

    pred = predict_frame(image, flow, scale, cfa=cfa, blur=blur)
    frame = np.asarray(frame, np.float32)
    if pred.shape != frame.shape:
        raise ValueError(f"frame: expected shape {pred.shape} (the flow's grid), got {frame.shape}")
    return psnr(pred, frame, crop=crop)


def blur_fitted_psnr(image: np.ndarray, flow: np.ndarray, frame: np.ndarray, scale: int, *,
                     cfa: str | None = None, crop: int = 16, blurs=FITTED_BLURS) -> tuple[float, float]:
    """Held-out PSNR with the optics' unknown blur fitted: the best over ``blurs``.

    Where the optics are unknown, the plain :func:`held_out_psnr` ranks an
    estimate that undoes their blur below the optical image; fitting the
    blur per estimate removes that bias (each is judged with the blur that
    makes it predict the frame best), at the cost of judging sharpening
    errors that a blur hides more leniently.

    Returns
    -------
    psnr : float
        dB.
    blur : float
        The fitted Gaussian sigma, output px.
    """
    return max((held_out_psnr(image, flow, frame, scale, cfa=cfa, crop=crop, blur=b), float(b)) for b in blurs)
