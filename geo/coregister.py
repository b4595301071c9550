"""Global sub-pixel co-registration of a pass to the reference, masks respected.

After the geotransform has placed a pass on the working grid, what is left is
a small misregistration (typically 0.1 to 2 px, geolocation error of the
products), which for orthorectified passes is a translation. It is estimated
in two steps on windows of the reference and the pass:

Both work on gradient magnitudes by default (``features="gradient"``), which
seasons change less than intensities.

1. **Coarse**: the core registration (:func:`mfsr.register`: pyramid block
   matching + Lucas-Kanade per tile) on standardised images (zero mean, unit
   variance over valid pixels, invalid pixels set to the mean, so a linear
   radiometric difference between dates does not matter), and the median of
   its dense flow over the pixels both images see clear.
2. **Fine**: a global Gauss-Newton fit of ``ref(x) ~ gain * pass(x + d) +
   offset`` (translation plus a linear radiometric change) over the jointly
   clear pixels of all windows, on lightly blurred images (Gaussian sigma 1
   px against noise and aliasing) with cubic-spline interpolation and Cauchy
   weights on the residuals (unmasked clouds and land changes fall out).
   Pixels within 3 px of an invalid one are excluded, so the blur never
   brings cloud values in.

Conventions (docs/conventions.md): ``d = (dy, dx)`` means reference pixel ``(i, j)`` is
found at ``(i + dy, j + dx)`` of the pass, in working-grid pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, minimum_filter, spline_filter

__all__ = ["MODELS", "ShiftEstimate", "corner_std", "estimate_shift", "model_basis", "model_matrix"]


@dataclass
class ShiftEstimate:
    """Result of :func:`estimate_shift`.

    Attributes
    ----------
    shift : ndarray of float64, shape (2,)
        (dy, dx), working-grid px.
    coarse : ndarray of float64, shape (2,)
        Median of the core registration's flow (step 1).
    gain, offset : float
        Radiometric fit ``ref ~ gain * pass + offset`` of the grey images.
    n_pixels : int
        Jointly clear pixels used by the fine fit.
    std : ndarray of float64, shape (2,)
        Predicted standard deviation of ``shift`` (px) from the fit's
        residual and Hessian (statistical only; aliasing adds bias).
    correlation : float
        Correlation of the registered images over the pixels used,
        weighted by the fit's robust weights: near 1
        for the same scene, low when the dates differ too much (season,
        unmasked clouds) for the shift to mean anything.
    matrix : ndarray of float64, shape (2, 3)
        The fitted displacement as an affine function of position:
        ``(dy, dx) = matrix @ (y, x, 1)``, with ``(y, x)`` in the
        coordinates of ``positions`` (a constant for ``model="translation"``).
    model_std : float
        Largest predicted standard deviation (px, either component) of the
        modelled displacement over the corners of the windows' extent: the
        reliability of the model where it is least constrained.
    """

    shift: np.ndarray
    coarse: np.ndarray
    gain: float
    offset: float
    n_pixels: int
    std: np.ndarray
    correlation: float = float("nan")
    matrix: np.ndarray | None = None
    model_std: float = float("nan")


def _standardise(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if not valid.any():
        return np.zeros(img.shape, np.float32)
    v = img[valid]
    sd = float(v.std()) or 1.0
    return np.where(valid, (img - float(v.mean())) / sd, 0.0).astype(np.float32)


def _coarse(ref, ref_valid, mov, mov_valid, margin) -> np.ndarray:
    from mfsr.registration import register

    h, w = ref.shape
    if min(h, w) < 16:
        return np.zeros(2)
    crop = mov[margin : margin + h, margin : margin + w]
    crop_valid = mov_valid[margin : margin + h, margin : margin + w]
    joint = ref_valid & crop_valid
    if joint.sum() < 64:
        return np.zeros(2)
    flow = register([_standardise(ref, ref_valid), _standardise(crop, crop_valid)])[1]
    return np.median(flow[joint], axis=0).astype(np.float64)


def _gradient_feature(img: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude (Gaussian sigma 1 px) and the validity it keeps (eroded by 3 px)."""
    from scipy.ndimage import gaussian_gradient_magnitude

    fill = float(img[valid].mean()) if valid.any() else 0.0
    g = gaussian_gradient_magnitude(np.where(valid, img, fill).astype(np.float64), 1.0, mode="nearest")
    # Beyond the array is not data either, but the derivative filter
    # replicates the edge there (mode "nearest") instead of mixing in a fill
    # value, so only invalid pixels inside the array erode the validity.
    return g.astype(np.float32), minimum_filter(valid, size=7, mode="constant", cval=True)


def _weighted_correlation(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """Pearson correlation with weights (the fit's Cauchy weights: outliers count little)."""
    sw = w.sum()
    if sw <= 0:
        return float("nan")
    ma, mb = (w * a).sum() / sw, (w * b).sum() / sw
    va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
    if va <= 0 or vb <= 0:
        return float("nan")
    return float((w * (a - ma) * (b - mb)).sum() / np.sqrt(va * vb))


def _blur_filled(img: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    fill = float(img[valid].mean()) if valid.any() else 0.0
    return gaussian_filter(np.where(valid, img, fill).astype(np.float64), sigma, mode="nearest")


MODELS = ("translation", "similarity", "affine")
# Corners of the normalised extent.
_CORNERS = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


def model_basis(model: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of (dy, dx) with respect to the model's parameters at normalised positions (u, v).

    Parameters are (dy, dx) at the centre, then the linear part:
    similarity ``(a, b)``: ``dy += a u + b v``, ``dx += -b u + a v`` (scale
    and rotation); affine ``(a11, a12, a21, a22)``: ``dy += a11 u + a12 v``,
    ``dx += a21 u + a22 v``.
    """
    one, zero = np.ones_like(u), np.zeros_like(u)
    if model == "translation":
        return np.stack([one, zero]), np.stack([zero, one])
    if model == "similarity":
        return np.stack([one, zero, u, v]), np.stack([zero, one, v, -u])
    return np.stack([one, zero, u, v, zero, zero]), np.stack([zero, one, zero, zero, u, v])


def estimate_shift(
    refs: list[np.ndarray],
    ref_valids: list[np.ndarray],
    movs: list[np.ndarray],
    mov_valids: list[np.ndarray],
    margin: int,
    *,
    sigma: float | None = None,
    iterations: int = 30,
    tolerance: float = 1e-4,
    features: str = "gradient",
    model: str = "translation",
    positions=None,
    initial=None,
) -> ShiftEstimate:
    """Global translation (or similarity / affine displacement, and grey gain/offset) of a pass.

    Parameters
    ----------
    refs : list of ndarray of float32, shape (h_i, w_i)
        Grey windows of the reference pass (normalised).
    ref_valids : list of ndarray of bool, shape (h_i, w_i)
    movs : list of ndarray of float32, shape (h_i + 2 margin, w_i + 2 margin)
        The same windows of the pass, widened by ``margin`` px on each side:
        reference pixel (i, j) of window n is at ``(i + margin, j + margin)``
        of ``movs[n]`` before the shift.
    mov_valids : list of ndarray of bool, same shapes as ``movs``
    margin : int
        Largest shift (px) that can be found.
    sigma : float or None
        Gaussian prefilter of the fine fit, px. Default: 0 on gradient
        magnitudes (their Gaussian derivative already smooths, and less
        smoothing makes the pairwise shifts of real dates more
        self-consistent: a smaller closure error ``s_ik - s_ij - s_jk``), 1
        on intensities.
    iterations : int
        Maximum Gauss-Newton iterations.
    tolerance : float
        Stop when the shift update is below this (px).
    features : {"gradient", "intensity"}
        Register the gradient magnitudes (Gaussian derivatives, sigma 1 px)
        or the intensities. Gradient magnitude ignores contrast inversions
        between seasons (a field darker than its surroundings in one date
        and brighter in another), so on real dates it agrees better with
        phase correlation; on synthetic passes, which have no such changes,
        both serve.
    model : {"translation", "similarity", "affine"}
        The displacement's form over the windows: one shift, or an affine
        function of position (with ``positions``) with a scale and rotation
        (similarity) or a general linear part (affine).
    positions : sequence of (int, int), optional
        Top-left reference pixel ``(y, x)`` of each window on one common
        grid (working px). Needed for a model other than translation.
    initial : (float, float), optional
        Starting (dy, dx), px: skips the coarse step (for windows whose
        displacement a model already predicts).

    Returns
    -------
    ShiftEstimate
        ``shift`` is the displacement at the centre of the windows' extent.

    Raises
    ------
    ValueError
        If the pass and the reference share no clear pixel, or the shift
        reaches ``margin``.
    """
    if features not in ("intensity", "gradient"):
        raise ValueError(f"features: expected 'intensity' or 'gradient', got {features!r}")
    if model not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {model!r}")
    if positions is None:
        if model != "translation":
            raise ValueError(f"positions: required for model={model!r}")
        positions = [(0, 0)] * len(refs)
    positions = np.asarray(positions, np.float64).reshape(len(refs), 2)
    if sigma is None:
        sigma = 0.0 if features == "gradient" else 1.0
    # Normalised coordinates: centre and half-extent of the windows' union,
    # so the linear parameters are displacements at the extent's edge (px).
    top = positions.min(axis=0)
    bottom = np.max([positions[i] + np.array(r.shape) - 1 for i, r in enumerate(refs)], axis=0)
    centre = 0.5 * (top + bottom)
    half = np.maximum(0.5 * (bottom - top), 1.0)
    if features == "gradient":
        refs, ref_valids = zip(*[_gradient_feature(r, v) for r, v in zip(refs, ref_valids)])
        movs, mov_valids = zip(*[_gradient_feature(m, v) for m, v in zip(movs, mov_valids)])
    if initial is not None:
        d0 = np.asarray(initial, np.float64).reshape(2).copy()
    else:
        # Step 1 on the window with the most clear reference pixels.
        best = int(np.argmax([v.sum() for v in ref_valids]))
        d0 = _coarse(refs[best], ref_valids[best], movs[best], mov_valids[best], margin)

    # Step 2 data: per window, clear reference pixels, their model basis and
    # the pass's spline.
    er = int(np.ceil(3 * sigma))
    parts = []
    for (py, px), r, rv, m, mv in zip(positions, refs, ref_valids, movs, mov_valids):
        rb = _blur_filled(r, rv, sigma)
        rok = minimum_filter(rv, size=2 * er + 1, mode="constant", cval=True)
        ii, jj = np.nonzero(rok)
        if ii.size == 0:
            continue
        ky, kx = model_basis(model, (ii + py - centre[0]) / half[0], (jj + px - centre[1]) / half[1])
        mb = _blur_filled(m, mv, sigma)
        gy, gx = np.gradient(mb)
        mok = minimum_filter(mv, size=2 * er + 1, mode="constant", cval=True)
        parts.append((rb[ii, jj], ii + margin, jj + margin, ky, kx, spline_filter(mb, order=3), gy, gx, mok))
    n_par = 2 if model == "translation" else (4 if model == "similarity" else 6)
    theta = np.zeros(n_par)
    theta[:2] = d0
    gain, offset = 1.0, 0.0
    n_used = 0
    cov = None
    for _ in range(iterations):
        a = np.zeros((n_par + 2, n_par + 2))
        b = np.zeros(n_par + 2)
        resid_all, w_all = [], []
        cache = []
        for rv, yi, xi, ky, kx, coef, gy, gx, mok in parts:
            y = yi + theta @ ky
            x = xi + theta @ kx
            hm, wm = mok.shape
            inside = (y >= 1) & (y <= hm - 2) & (x >= 1) & (x <= wm - 2)
            yn = np.clip(np.rint(y).astype(np.intp), 0, hm - 1)
            xn = np.clip(np.rint(x).astype(np.intp), 0, wm - 1)
            ok = inside & mok[yn, xn]
            if not ok.any():
                cache.append(None)
                continue
            yo, xo = y[ok], x[ok]
            mvals = map_coordinates(coef, [yo, xo], order=3, prefilter=False, mode="nearest")
            jy = map_coordinates(gy, [yo, xo], order=1, mode="nearest")
            jx = map_coordinates(gx, [yo, xo], order=1, mode="nearest")
            e = rv[ok] - (gain * mvals + offset)
            cache.append((e, gain * (jy * ky[:, ok] + jx * kx[:, ok]), mvals))
            resid_all.append(e)
        if not resid_all:
            raise ValueError("no jointly clear pixels")
        res = np.concatenate(resid_all)
        ref_used = np.concatenate([it[0] + gain * it[2] + offset for it in cache if it is not None])
        mov_used = np.concatenate([it[2] for it in cache if it is not None])
        scale = 1.4826 * np.median(np.abs(res)) + 1e-9
        c = 2.385 * scale
        n_used = res.size
        for item in cache:
            if item is None:
                continue
            e, jgeo, mvals = item
            w = 1.0 / (1.0 + (e / c) ** 2)
            jac = np.concatenate([jgeo, np.stack([mvals, np.ones_like(mvals)])])
            a += (jac * w) @ jac.T
            b += (jac * w) @ e
            w_all.append(w)
        try:
            delta = np.linalg.solve(a + 1e-12 * np.eye(n_par + 2), b)
        except np.linalg.LinAlgError:
            break
        theta += delta[:n_par]
        gain += delta[n_par]
        offset += delta[n_par + 1]
        wsum = np.concatenate(w_all).sum()
        sigma2 = float((np.concatenate([it[0] for it in cache if it is not None]) ** 2
                        * np.concatenate(w_all)).sum() / max(wsum - n_par - 2, 1))
        try:
            cov = sigma2 * np.linalg.inv(a)[:n_par, :n_par]
        except np.linalg.LinAlgError:
            pass
        if np.max(np.abs(delta[:n_par])) < tolerance:
            break
        if _largest_displacement(model, theta) > margin - 2:
            break
    if not np.all(np.isfinite(theta)) or _largest_displacement(model, theta) > margin - 2:
        raise ValueError(
            f"estimated shift {tuple(np.round(theta[:2], 2))} px reaches the search margin ({margin} px)"
        )
    corr = _weighted_correlation(ref_used, mov_used, np.concatenate(w_all)) if ref_used.size > 2 else float("nan")
    std = np.full(2, np.inf)
    model_std = float("inf")
    if cov is not None:
        std = np.sqrt(np.abs(np.diag(cov)[:2]))
        model_std = corner_std(model, cov, _CORNERS[:, 0], _CORNERS[:, 1])
    return ShiftEstimate(theta[:2].copy(), d0, float(gain), float(offset), int(n_used), std, corr,
                         model_matrix(model, theta, centre, half), model_std)


def _largest_displacement(model: str, theta: np.ndarray) -> float:
    """Largest |dy| or |dx| of the model over the corners of the normalised extent."""
    ky, kx = model_basis(model, _CORNERS[:, 0], _CORNERS[:, 1])
    return float(max(np.abs(theta @ ky).max(), np.abs(theta @ kx).max()))


def corner_std(model: str, cov: np.ndarray, u, v) -> float:
    """Largest standard deviation (px, either component) of the modelled displacement at points (u, v).

    ``cov`` is the covariance of the parameters of :func:`model_basis`;
    ``(u, v)`` are normalised positions as there.
    """
    ky, kx = model_basis(model, np.asarray(u, np.float64), np.asarray(v, np.float64))
    var = np.concatenate([np.einsum("pi,pq,qi->i", k, cov, k) for k in (ky, kx)])
    return float(np.sqrt(np.abs(var).max()))


def model_matrix(model: str, theta: np.ndarray, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    """The model's (2, 3) displacement matrix, ``(dy, dx) = M @ (y, x, 1)``.

    ``theta`` holds the parameters of :func:`model_basis` at positions
    normalised as ``((y, x) - centre) / half``.
    """
    if model == "similarity":
        a, b = theta[2], theta[3]
        lin = np.array([[a, b], [-b, a]])
    elif model == "affine":
        lin = theta[2:].reshape(2, 2)
    else:
        lin = np.zeros((2, 2))
    lin = lin / half[None, :]
    out = np.zeros((2, 3))
    out[:, :2] = lin
    out[:, 2] = theta[:2] - lin @ centre
    return out
