"""Learned refinement after the kernel fusion (issue 5).

A compact residual CNN (:class:`RefineNet`) corrects what the kernel fusion
leaves (residual blur from pixel integration and optics, aliasing, noise),
given the fused image, its confidence, the noise model and, when the user
knows it, the optical blur (``psf_sigma``). Weights ship inside
the package (``weights/``, with a manifest holding their SHA-256 and the
training configuration) and are trained by ``python -m mfsr.refine.train``;
``python -m mfsr.refine.calibrate`` then fits, on validation bursts of the
training photographs, how much of the network's residual to apply per mode
and scale, blind and with the blur known (``refine_image(..., strength=None)``
uses it), and stores how many geometric views of the image each mode's
refinement averages (``ensemble``: two for Bayer fusions). On CPUs with
bfloat16 units the network runs in bfloat16 (``precision="auto"``).

:func:`mfsr.fuse` applies it by default (``refine=True``) at scales in
:data:`SCALE_RANGE`.

Public API: :func:`refine_image`, :func:`load_refiner`, :class:`RefineNet`,
:class:`RefinerWeightsError`, :data:`SCALE_RANGE`, :data:`WEIGHTS_DIR` (the
shipped weights and their ``manifest.json``).
"""

from ._inference import SCALE_RANGE, native_bf16, refine_image
from ._network import RefineNet
from ._weights import MODES, WEIGHTS_DIR, RefinerWeightsError, load_refiner

__all__ = [
    "MODES", "SCALE_RANGE", "WEIGHTS_DIR", "RefineNet", "RefinerWeightsError", "load_refiner", "native_bf16",
    "refine_image",
]
