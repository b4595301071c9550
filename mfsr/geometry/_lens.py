"""Brown-Conrady lens distortion (radial k1, k2, k3; tangential p1, p2).

Model (OpenCV's, coefficient order ``(k1, k2, p1, p2, k3)``): an undistorted
pixel ``(x, y)`` has normalised coordinates ``(u, v) = ((x - cx)/fx, (y -
cy)/fy)``; with ``r^2 = u^2 + v^2`` the distorted normalised point is::

    u_d = u (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 u v + p2 (r^2 + 2 u^2)
    v_d = v (1 + k1 r^2 + k2 r^4 + k3 r^6) + p1 (r^2 + 2 v^2) + 2 p2 u v

and the distorted pixel is ``(fx u_d + cx, fy v_d + cy)``. Positive ``k1``
pushes points outwards (pincushion), negative pulls them in (barrel). The
default camera matrix puts the principal point at the image centre ``((W -
1)/2, (H - 1)/2)`` with ``fx = fy = max(H, W)`` px (about a 53 degree field of
view across the longer side). Undistorted and distorted images share the
camera matrix, so the rectified image has the same pixel grid and scale.

Distortion maps points in closed form (kornia's ``distort_points``);
undistortion inverts it iteratively (kornia's fixed-point ``undistort_points``
with enough iterations (20) for 1e-6 px at k1 = 0.1).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.calibration import distort_points, undistort_points
from kornia.geometry.transform import remap

from ._warp import pixel_grid

__all__ = ["BrownConrady", "check_distortion", "default_camera_matrix"]

_UNDISTORT_ITERATIONS = 20


def default_camera_matrix(shape: tuple[int, int]) -> np.ndarray:
    """(3, 3) float64: principal point at the image centre, focal length
    ``max(H, W)`` px."""
    h, w = (int(v) for v in shape[:2])
    f = float(max(h, w))
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float64)


def _pad_coeffs(coeffs, argname: str) -> np.ndarray:
    if isinstance(coeffs, str):
        raise ValueError(f"{argname}: expected distortion coefficients, got the string {coeffs!r}")
    try:
        c = np.asarray(coeffs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname}: expected a sequence of numbers, got {coeffs!r}") from None
    if c.ndim != 1 or c.size not in (1, 2, 4, 5):
        raise ValueError(
            f"{argname}: expected 1, 2, 4 or 5 Brown-Conrady coefficients in OpenCV order "
            f"(k1[, k2[, p1, p2[, k3]]]), got shape {c.shape}"
        )
    if not np.isfinite(c).all():
        raise ValueError(f"{argname}: NaN or infinite coefficients")
    out = np.zeros(5)
    out[: c.size] = c
    return out


def _fmt(c: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(x):.6g}" for x in c) + ")"


def _np_distort(u: np.ndarray, v: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k1, k2, p1, p2, k3 = c
    r2 = u * u + v * v
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    return (u * rad + 2 * p1 * u * v + p2 * (r2 + 2 * u * u),
            v * rad + p1 * (r2 + 2 * v * v) + 2 * p2 * u * v)


def check_distortion(
    coeffs, shape: tuple[int, int], camera_matrix=None, argname: str = "distortion"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a lens; return ``(coeffs (5,), K (3, 3))`` float64.

    The lens must map the image one-to-one: the radial profile ``r (1 + k1
    r^2 + k2 r^4 + k3 r^6)`` must increase up to the radius that reaches the
    farthest image corner, and the distortion's Jacobian determinant must
    stay positive over the undistorted footprint of the image. Coefficients
    that fold the image (e.g. strong barrel ``k1 < 0`` whose profile turns
    back before the corners) are rejected.

    Parameters
    ----------
    coeffs : sequence of float
        1, 2, 4 or 5 coefficients, OpenCV order ``(k1, k2, p1, p2, k3)``;
        missing ones are zero.
    shape : (int, int)
        (H, W) of the images, px.
    camera_matrix : array_like (3, 3), optional
        Pixel camera matrix; :func:`default_camera_matrix` if None.

    Raises
    ------
    ValueError
        Naming ``argname`` and the reason.
    """
    c = _pad_coeffs(coeffs, argname)
    if camera_matrix is None:
        K = default_camera_matrix(shape)
    else:
        K = np.asarray(camera_matrix, np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all():
            raise ValueError(f"{argname}: camera matrix must be a finite (3, 3) array, got {K.shape}")
        if not (K[0, 0] > 0 and K[1, 1] > 0) or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise ValueError(
                f"{argname}: camera matrix must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0"
            )
    h, w = (int(v) for v in shape[:2])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cu = (np.array([0, w - 1, w - 1, 0]) - cx) / fx
    cv = (np.array([0, 0, h - 1, h - 1]) - cy) / fy
    r_corner = float(np.sqrt(cu**2 + cv**2).max())
    k1, k2, p1, p2, k3 = c
    r = np.linspace(0, 4 * r_corner, 8001)
    prof = r * (1 + k1 * r**2 + k2 * r**4 + k3 * r**6)
    slope = 1 + 3 * k1 * r**2 + 5 * k2 * r**4 + 7 * k3 * r**6
    target = 1.05 * r_corner
    reach = np.nonzero(prof >= target)[0]
    if reach.size == 0 or (slope[: reach[0] + 1] <= 0).any():
        raise ValueError(
            f"{argname}: coefficients {_fmt(c)} fold the image: the radial mapping is not "
            f"monotonic up to the image corners (normalised radius {r_corner:.3f})"
        )
    r_u = r[reach[0]]
    # Jacobian of the full (tangential included) map over the undistorted disc
    g = np.linspace(-r_u, r_u, 81)
    u, v = np.meshgrid(g, g)
    inside = u * u + v * v <= r_u * r_u
    e = 1e-6
    du = [(a - b) / (2 * e) for a, b in zip(_np_distort(u + e, v, c), _np_distort(u - e, v, c))]
    dv = [(a - b) / (2 * e) for a, b in zip(_np_distort(u, v + e, c), _np_distort(u, v - e, c))]
    det = du[0] * dv[1] - du[1] * dv[0]
    if not (det[inside] > 0).all():
        raise ValueError(
            f"{argname}: coefficients {_fmt(c)} fold the image (the distortion's Jacobian "
            "changes sign inside the image)"
        )
    return c, K


class BrownConrady(torch.nn.Module):
    """Differentiable Brown-Conrady lens: distort or undistort points and images.

    Parameters
    ----------
    coeffs : array_like, shape (5,) or (B, 5) (or 1, 2, 4 leading entries)
        OpenCV order ``(k1, k2, p1, p2, k3)`` (see the module docstring).
    shape : (int, int)
        (H, W) of the images, px.
    camera_matrix : array_like, shape (3, 3), optional
        Pixel camera matrix; :func:`default_camera_matrix` when None.
    learnable : bool
        Make the coefficients a trainable ``Parameter``.
    check : bool
        Reject lenses that fold the image (:func:`check_distortion`).

    Notes
    -----
    Points are ``(x, y)`` pixel coordinates of shape (B, N, 2) (or (N, 2));
    images are (B, C, H, W). ``undistort_image`` gives the rectified image
    on the same pixel grid (``out(p) = img(distort(p))``) and
    ``distort_image`` the inverse (``out(p) = img(undistort(p))``). Both
    sample with ``align_corners=True`` in pixel coordinates; zero
    coefficients reproduce the image exactly.
    """

    def __init__(self, coeffs, shape: tuple[int, int], camera_matrix=None,
                 learnable: bool = False, check: bool = True) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]))
        c = np.asarray(coeffs, np.float64)
        rows = c.reshape(-1, c.shape[-1]) if c.ndim == 2 else c[None]
        padded = []
        for row in rows:
            if check:
                row, K = check_distortion(row, self.shape, camera_matrix, "coeffs")
            else:
                row = _pad_coeffs(row, "coeffs")
            padded.append(row)
        if camera_matrix is None:
            K = default_camera_matrix(self.shape)
        else:
            K = np.asarray(camera_matrix, np.float64)
        t = torch.as_tensor(np.stack(padded), dtype=torch.float64)
        if learnable:
            self.coeffs = torch.nn.Parameter(t)
        else:
            self.register_buffer("coeffs", t)
        self.register_buffer("K", torch.as_tensor(K, dtype=torch.float64))

    def _args(self, points: torch.Tensor):
        b = points.shape[0]
        dist = self.coeffs.to(points.dtype)
        if dist.shape[0] == 1 and b > 1:
            dist = dist.expand(b, -1)
        return self.K.to(points.dtype).expand(b, 3, 3), dist

    def distort_points(self, points: torch.Tensor) -> torch.Tensor:
        """Undistorted pixel points (B, N, 2) ``(x, y)`` to distorted ones."""
        squeeze = points.ndim == 2
        pts = points[None] if squeeze else points
        K, dist = self._args(pts)
        out = distort_points(pts, K, dist)
        return out[0] if squeeze else out

    def undistort_points(self, points: torch.Tensor) -> torch.Tensor:
        """Distorted pixel points (B, N, 2) ``(x, y)`` to undistorted ones."""
        squeeze = points.ndim == 2
        pts = points[None] if squeeze else points
        K, dist = self._args(pts)
        out = undistort_points(pts, K, dist, num_iters=_UNDISTORT_ITERATIONS)
        return out[0] if squeeze else out

    def _sample(self, image: torch.Tensor, fn, mode: str) -> torch.Tensor:
        b = image.shape[0]
        h, w = image.shape[-2:]
        grid = pixel_grid((h, w), torch.float64).expand(b, -1, -1)
        pts = fn(grid).to(image.dtype)
        return remap(image, pts[..., 0].reshape(b, h, w), pts[..., 1].reshape(b, h, w),
                     mode=mode, padding_mode="border", align_corners=True)

    def undistort_image(self, image: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Rectify (B, C, H, W) images taken through the lens."""
        return self._sample(image, self.distort_points, mode)

    def distort_image(self, image: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Apply the lens to (B, C, H, W) rectified images."""
        return self._sample(image, self.undistort_points, mode)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.undistort_image(image)
