"""Global parametric warps (translation, similarity, affine, homography).

Transforms are 3x3 matrices in *pixel* coordinates of the input grid acting on
``(x, y, 1)`` column vectors (the OpenCV / kornia convention; pixel centres at
integers), mapping a point of the reference frame to its position in the
moving frame. Warping a moving image into the reference geometry therefore
samples it at ``H p`` for every reference pixel ``p``: ``out(p) = img(H p)``.

Parameter vectors are well scaled for optimisation: with ``T`` the
normalisation ``x_n = (x - cx) / s`` (centre of the image, ``s`` half its
longer side) the normalised matrix is ``T H T^-1 = I + E(theta) / s``, so one
unit of any parameter moves the image edge by about one pixel.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import remap

__all__ = [
    "MODELS",
    "GlobalWarp",
    "check_model",
    "check_transform",
    "matrix_to_params",
    "normalization",
    "params_to_matrix",
    "pixel_grid",
    "warp_image",
]

#: Global motion models, from the fewest degrees of freedom to the most.
MODELS: tuple[str, ...] = ("translation", "similarity", "affine", "homography")
N_PARAMS = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8}


def check_model(model, argname: str = "geometry") -> str:
    """Validate a model name; return it."""
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"{argname}: expected one of {', '.join(map(repr, MODELS))}, got {model!r}")
    return model


def normalization(shape: tuple[int, int]) -> np.ndarray:
    """Matrix ``T`` (3, 3) float64 with ``(x_n, y_n, 1) = T (x, y, 1)``: the
    image centre goes to 0 and half the longer side to 1."""
    h, w = (int(v) for v in shape[:2])
    s = max(h, w) / 2.0
    return np.array(
        [[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1]], np.float64
    )


def params_to_matrix(model: str, theta: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Pixel-coordinate matrices of parameter vectors.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    theta : Tensor, shape (B, P)
        P = 2, 4, 6 or 8 parameters (see the module docstring); zeros give
        the identity.
    shape : (int, int)
        (H, W) of the image grid the transform lives on.

    Returns
    -------
    H : Tensor, shape (B, 3, 3), dtype of ``theta``
        Reference pixel (x, y, 1) to moving-frame pixel.
    """
    model = check_model(model, "model")
    b = theta.shape[0]
    s = max(int(shape[0]), int(shape[1])) / 2.0
    z = theta.new_zeros(b)
    t = theta / s
    if model == "translation":
        e = [z, z, t[:, 0], z, z, t[:, 1], z, z]
    elif model == "similarity":
        e = [t[:, 0], -t[:, 1], t[:, 2], t[:, 1], t[:, 0], t[:, 3], z, z]
    elif model == "affine":
        e = [t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4], t[:, 5], z, z]
    else:
        e = [t[:, k] for k in range(8)]
    hn = torch.stack(e + [z], dim=1).reshape(b, 3, 3) + torch.eye(3, dtype=theta.dtype)
    tm = torch.as_tensor(normalization(shape), dtype=theta.dtype)
    H = torch.linalg.inv(tm) @ hn @ tm
    return H / H[:, 2:3, 2:3]


def matrix_to_params(model: str, H, shape: tuple[int, int]) -> np.ndarray:
    """Parameters (B, P) float64 of pixel matrices (B, 3, 3) (least-squares
    projection onto the model for matrices outside it)."""
    model = check_model(model, "model")
    H = np.asarray(H, np.float64).reshape(-1, 3, 3)
    tm = normalization(shape)
    hn = tm @ H @ np.linalg.inv(tm)
    hn = hn / hn[:, 2:3, 2:3]
    s = max(int(shape[0]), int(shape[1])) / 2.0
    e = (hn - np.eye(3)) * s
    if model == "translation":
        return np.stack([e[:, 0, 2], e[:, 1, 2]], 1)
    if model == "similarity":
        return np.stack(
            [(e[:, 0, 0] + e[:, 1, 1]) / 2, (e[:, 1, 0] - e[:, 0, 1]) / 2, e[:, 0, 2], e[:, 1, 2]], 1
        )
    if model == "affine":
        return e[:, :2, :].reshape(-1, 6).copy()
    return e.reshape(-1, 9)[:, :8].copy()


def check_transform(H, shape: tuple[int, int], argname: str = "transforms") -> np.ndarray:
    """Validate global transforms; return them as (N, 3, 3) float64.

    A transform is rejected when it is not finite, is (nearly) singular,
    sends part of the image to infinity or behind the camera (``w <= 0`` at
    an image corner), or flips the orientation (the image folds over).

    Raises
    ------
    ValueError
        Naming ``argname``, the frame and the reason.
    """
    H = np.asarray(H, np.float64)
    if H.ndim == 2:
        H = H[None]
    if H.ndim != 3 or H.shape[1:] != (3, 3):
        raise ValueError(f"{argname}: expected shape (N, 3, 3) or (3, 3), got {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError(f"{argname}: NaN or infinite values")
    h, w = (int(v) for v in shape[:2])
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64).T
    tm = normalization(shape)
    for k, m in enumerate(H):
        sv0 = np.linalg.svd(tm @ m @ np.linalg.inv(tm), compute_uv=False)
        if not sv0[-1] > 1e-6 * sv0[0]:
            raise ValueError(f"{argname}: transform {k} is singular (degenerate)")
        wv = (m @ corners)[2]
        if not ((wv > 0).all() or (wv < 0).all()) or np.abs(wv).min() < 1e-9 * np.abs(wv).max():
            raise ValueError(
                f"{argname}: transform {k} sends part of the image to infinity "
                "(the horizon crosses the frame)"
            )
        hn = tm @ m @ np.linalg.inv(tm)
        hn = hn * np.sign(wv[0])
        det = np.linalg.det(hn)
        sv = np.linalg.svd(hn, compute_uv=False)
        if not det > 0 or sv[-1] < 1e-6 * sv[0]:
            raise ValueError(
                f"{argname}: transform {k} is singular or mirrors the image "
                f"(det {det:.3g}, condition {sv[0] / max(sv[-1], 1e-300):.3g})"
            )
    return H


def pixel_grid(shape: tuple[int, int], dtype=torch.float32) -> torch.Tensor:
    """Coordinates of every pixel centre of an image, ``(x, y)`` order.

    Parameters
    ----------
    shape : (int, int)
        (H, W), px.
    dtype : torch.dtype

    Returns
    -------
    Tensor, shape (1, H * W, 2)
        ``(x, y)`` of pixel ``(i, j)`` (= ``(j, i)``, centres at integers)
        in row-major order: the points a transform on ``(x, y, 1)`` column
        vectors maps when an image is resampled.
    """
    h, w = shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys], -1).reshape(1, h * w, 2)


def warp_image(
    image: torch.Tensor,
    H: torch.Tensor,
    shape: tuple[int, int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Resample moving images into the reference geometry: ``out(p) = img(H p)``.

    Parameters
    ----------
    image : Tensor, shape (B, C, H, W)
    H : Tensor, shape (B, 3, 3)
        Reference pixel to moving pixel, (x, y, 1) convention.
    shape : (int, int), optional
        Output (Ho, Wo); the input's by default.
    mode, padding_mode : str
        As in ``torch.nn.functional.grid_sample`` ("bilinear", "bicubic",
        "nearest"; "zeros", "border", "reflection").

    Returns
    -------
    Tensor, shape (B, C, Ho, Wo)
        Differentiable with respect to ``image`` and ``H``. Sampling uses
        ``align_corners=True`` with pixel coordinates, so an identity matrix
        reproduces the image exactly.
    """
    b = image.shape[0]
    ho, wo = image.shape[-2:] if shape is None else shape
    grid = pixel_grid((ho, wo), H.dtype).expand(b, -1, -1)
    pts = transform_points(H, grid).to(image.dtype)
    mx = pts[..., 0].reshape(b, ho, wo)
    my = pts[..., 1].reshape(b, ho, wo)
    return remap(image, mx, my, mode=mode, padding_mode=padding_mode, align_corners=True)


class GlobalWarp(torch.nn.Module):
    """Spatial transformer with one global parametric transform per frame.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    shape : (int, int)
        (H, W) of the images, which sets the pixel grid of the transforms.
    batch : int
        Number of frames B (one parameter vector each).
    init : array_like, shape (B, 3, 3) or (3, 3), optional
        Initial pixel matrices (projected onto ``model``); identity if None.

    Attributes
    ----------
    theta : Parameter, shape (B, P), float64
        Scaled parameters (see the module docstring).

    Notes
    -----
    ``forward(images)`` resamples (B, C, H, W) moving images into the
    reference geometry, ``out(p) = img(H p)``; :meth:`matrix` gives the
    (B, 3, 3) reference-to-moving pixel matrices and
    :meth:`transform_points` applies them to (B, N, 2) ``(x, y)`` points.
    Everything is differentiable, so the parameters can be fitted with any
    torch optimiser (see :func:`mfsr.geometry.refine_photometric`).
    """

    def __init__(self, model: str, shape: tuple[int, int], batch: int = 1, init=None) -> None:
        super().__init__()
        self.model = check_model(model, "model")
        self.shape = (int(shape[0]), int(shape[1]))
        if init is None:
            theta = np.zeros((int(batch), N_PARAMS[self.model]))
        else:
            init = check_transform(init, self.shape, "init")
            if init.shape[0] == 1 and batch > 1:
                init = np.repeat(init, batch, 0)
            theta = matrix_to_params(self.model, init, self.shape)
        self.theta = torch.nn.Parameter(torch.as_tensor(theta, dtype=torch.float64))

    def matrix(self) -> torch.Tensor:
        """(B, 3, 3) float64 pixel matrices, reference to moving frame."""
        return params_to_matrix(self.model, self.theta, self.shape)

    def transform_points(self, points: torch.Tensor) -> torch.Tensor:
        """Reference ``(x, y)`` points (B, N, 2) to moving-frame points."""
        return transform_points(self.matrix().to(points.dtype), points)

    def forward(self, images: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        return warp_image(images, self.matrix().to(images.dtype), mode=mode)
