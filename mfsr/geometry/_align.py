"""Array-level alignment of two images by a global transform.

For uses outside the burst pipeline, e.g. satellite passes already put on a
common grid by their geotransforms, which still differ by a small affine or
perspective transform (view angle, sensor differences): estimate it with
:func:`estimate_transform` and resample with :func:`warp`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..deprecation import renamed_argument
from ..registration import RegistrationParams, align_frame, prepare_reference
from ._estimate import (
    FrameMap,
    GeometryParams,
    fit_transform,
    refine_photometric,
    single_torch_thread,
    tile_matches,
)
from ._reliability import UnreliableTransformWarning, assess_transform
from ._warp import check_model, check_transform, warp_image

__all__ = ["estimate_transform", "warp"]


def _grey(image, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = a.mean(axis=2)
    if a.ndim != 2 or min(a.shape) < 8:
        raise ValueError(
            f"{name}: expected an (H, W) or (H, W, C) image of at least 8x8, got {np.shape(image)}"
        )
    if not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a.astype(np.float32)


def estimate_transform(
    reference,
    moving,
    model: str = "affine",
    *,
    valid=None,
    mask=None,
    registration: RegistrationParams | None = None,
    params: GeometryParams | None = None,
    return_uncertainty: bool = False,
):
    """Global transform taking reference pixels to their position in ``moving``.

    The moving image is registered to the reference by tile matching
    (:mod:`mfsr.registration`); the model is fitted robustly to the tile
    displacements (:func:`fit_transform`, weighted by each tile's predicted
    uncertainty, outliers rejected) and refined photometrically
    (:func:`refine_photometric`), which also gives its covariance.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        Images on the same grid (same shape), linear values; NaN marks
        missing data (both images).
    model : {"translation", "similarity", "affine", "homography"}
    valid : ndarray of bool, shape (H, W), optional
        True where the reference pixel holds usable data (e.g. a clear-sky
        mask); tiles and pixels outside it are ignored.
    mask : ndarray of bool, shape (H, W), optional
        Deprecated name of ``valid`` (same polarity: True = used); warns
        with a ``DeprecationWarning``.
    registration : RegistrationParams, optional
    params : GeometryParams, optional
    return_uncertainty : bool
        Also return the transform's :class:`TransformUncertainty`.

    Returns
    -------
    H : ndarray of float64, shape (3, 3)
        Pixel coordinates, ``(x, y, 1)`` column vectors: reference pixel to
        moving-image pixel. ``warp(moving, H)`` resamples ``moving`` onto the
        reference grid.
    uncertainty : TransformUncertainty
        Only with ``return_uncertainty``: covariance, corner uncertainty
        (input px) and whether the estimate is reliable.

    Warns
    -----
    UnreliableTransformWarning
        When the estimate is unreliable (corner uncertainty above
        ``params.max_corner_uncertainty`` or a failed model check); it is
        returned all the same.

    Raises
    ------
    ValueError
        On mismatched shapes, an unknown model, too little valid data, or a
        degenerate result.
    TypeError
        If both ``valid`` and ``mask`` are given.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.ndimage import gaussian_filter
    >>> rng = np.random.default_rng(0)
    >>> ref = gaussian_filter(rng.random((96, 96)), 2).astype(np.float32)
    >>> H = np.array([[1, 0, 1.5], [0, 1, -0.5], [0, 0, 1.0]])
    >>> moved = warp(ref, np.linalg.inv(H))
    >>> np.round(estimate_transform(ref, moved, "translation")[:2, 2], 1)
    array([ 1.5, -0.5])
    """
    given = renamed_argument("estimate_transform", "mask", mask, "valid", valid)
    argname = "mask" if mask is not None else "valid"
    model = check_model(model, "model")
    params = GeometryParams() if params is None else params
    ref = _grey(reference, "reference")
    mov = _grey(moving, "moving")
    if ref.shape != mov.shape:
        raise ValueError(f"moving: shape {mov.shape} differs from the reference shape {ref.shape}")
    valid = np.isfinite(ref) & np.isfinite(mov)
    if given is not None:
        m = np.asarray(given, bool)
        if m.shape != ref.shape:
            raise ValueError(f"{argname}: expected shape {ref.shape}, got {m.shape}")
        valid &= m
    if valid.mean() < 0.05:
        raise ValueError(f"{argname}: fewer than 5% of the pixels are valid")
    fill = float(np.median(ref[valid]))
    ref = np.where(np.isfinite(ref), ref, fill).astype(np.float32)
    mov = np.where(np.isfinite(mov), mov, fill).astype(np.float32)
    shape = ref.shape
    motion = align_frame(prepare_reference(ref, None, registration), mov)
    src, dst, wts = tile_matches(motion, params.min_sigma)
    if not valid.all():
        from scipy.ndimage import uniform_filter

        frac = uniform_filter(valid.astype(np.float32), motion.tile_size, mode="constant")
        iy = np.clip(np.rint(src[:, 1]).astype(int), 0, shape[0] - 1)
        ix = np.clip(np.rint(src[:, 0]).astype(int), 0, shape[1] - 1)
        wts = wts * (frac[iy, ix] > 0.9)
    fit = fit_transform(src, dst, model, shape, weights=wts, params=params)
    fmap = FrameMap(model, shape)
    theta, cov = fit.theta, fit.covariance
    if params.photometric:
        theta, cov = refine_photometric(ref, mov, fmap, theta, mask=None if valid.all() else valid, params=params,
                                        return_covariance=True)
    H = fmap.matrix(theta).numpy()
    check_transform(H, shape, "model")
    unc = assess_transform(fmap, theta, cov, src, dst, np.where(np.isfinite(wts), wts, 0.0), fit.weights, params)
    if not unc.reliable:
        warnings.warn(f"estimate_transform: the {model} estimate is unreliable ({unc.reason})",
                      UnreliableTransformWarning, stacklevel=2)
    return (H, unc) if return_uncertainty else H


def warp(image, H, shape: tuple[int, int] | None = None, *, mode: str = "bicubic",
         fill: float | None = None) -> np.ndarray:
    """Resample ``image`` onto the reference grid: ``out(p) = image(H p)``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    H : array_like, shape (3, 3)
        Reference pixel to image pixel, ``(x, y, 1)`` convention (as returned
        by :func:`estimate_transform` and ``FusionResult.transforms``).
    shape : (int, int), optional
        Output (Ho, Wo); the image's by default.
    mode : {"bicubic", "bilinear", "nearest"}
    fill : float or None
        Value outside the image (e.g. ``np.nan`` for nodata); None replicates
        the border.

    Returns
    -------
    ndarray of float32, shape (Ho, Wo) or (Ho, Wo, C)
    """
    a = np.asarray(image, np.float32)
    if a.ndim not in (2, 3):
        raise ValueError(f"image: expected (H, W) or (H, W, C), got shape {a.shape}")
    out_shape = a.shape[:2] if shape is None else (int(shape[0]), int(shape[1]))
    Hm = check_transform(H, a.shape[:2], "H")[0]
    chans = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    t = torch.as_tensor(np.ascontiguousarray(chans))[None]
    Ht = torch.as_tensor(Hm)[None]
    with torch.no_grad(), single_torch_thread():
        out = warp_image(t, Ht, out_shape, mode=mode, padding_mode="border")[0]
        if fill is not None:
            ones = torch.ones(1, 1, *a.shape[:2])
            inside = warp_image(ones, Ht, out_shape, mode="bilinear", padding_mode="zeros")[0, 0]
            out[:, inside < 0.999] = fill
    out = out.numpy()
    return out[0] if a.ndim == 2 else np.moveaxis(out, 0, -1).copy()
