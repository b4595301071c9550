"""Global geometry and lens distortion with spatial transformer modules.

Differentiable, batched ``torch.nn.Module`` building blocks on kornia's
warping and grid sampling, and their use for burst and satellite alignment:

- :class:`GlobalWarp` -- one global transform per frame (translation,
  similarity, affine, homography), in pixel coordinates of the input grid,
  ``(x, y, 1)`` column vectors (OpenCV/kornia), mapping reference pixels to
  moving-frame pixels; ``GlobalWarp(...)(images)`` resamples moving images
  into the reference geometry.
- :class:`BrownConrady` -- radial (k1, k2, k3) and tangential (p1, p2) lens
  distortion with a camera matrix: distort / undistort points and images.
- :func:`fit_transform` -- robust (RANSAC + Tukey IRLS, confidence-weighted)
  fit of a model to point matches; :func:`refine_photometric` -- robust
  coarse-to-fine photometric refinement; :func:`estimate_transform` -- both
  from two images (satellite passes after geotransform alignment);
  :func:`warp` -- resample an array with a transform.
- :func:`global_registration` -- what :func:`mfsr.fuse` calls for
  ``geometry=`` / ``distortion=``: global model first, local registration of
  the residual, one composed flow per frame.
- :class:`TransformUncertainty` -- every estimated transform's reliability:
  parameter covariance, corner uncertainty (:func:`corner_sd`) and model
  checks (:func:`assess_transform`); an unreliable frame falls back to the
  first reliable simpler model (:func:`check_simplification`), else to the
  local registration alone, with an :class:`UnreliableTransformWarning`.

Conventions: docs/conventions.md; transforms as in :mod:`mfsr.geometry._warp`, lens
model as in :mod:`mfsr.geometry._lens`.
"""

from ._align import estimate_transform, warp
from ._estimate import FitResult, FrameMap, GeometryParams, corner_sd, fit_transform, refine_photometric
from ._lens import BrownConrady, check_distortion, default_camera_matrix
from ._pipeline import GlobalGeometry, check_geometry_args, global_registration
from ._reliability import (
    TransformUncertainty,
    UnreliableTransformWarning,
    assess_transform,
    check_simplification,
)
from ._warp import (
    MODELS,
    GlobalWarp,
    check_model,
    check_transform,
    matrix_to_params,
    params_to_matrix,
    warp_image,
)

__all__ = [
    "MODELS",
    "BrownConrady",
    "FitResult",
    "FrameMap",
    "GeometryParams",
    "GlobalGeometry",
    "GlobalWarp",
    "TransformUncertainty",
    "UnreliableTransformWarning",
    "assess_transform",
    "check_distortion",
    "check_geometry_args",
    "check_model",
    "check_simplification",
    "check_transform",
    "corner_sd",
    "default_camera_matrix",
    "estimate_transform",
    "fit_transform",
    "global_registration",
    "matrix_to_params",
    "params_to_matrix",
    "refine_photometric",
    "warp",
    "warp_image",
]
