"""mfsr: multi-frame super-resolution for handheld bursts and satellite passes.

The public surface is small:

- :func:`mfsr.register` -- dense sub-pixel flow of every frame to the reference;
- :func:`mfsr.fuse` -- robust anisotropic kernel fusion at any scale, returning
  a :class:`FusionResult` (image, confidence, flow);
- :class:`FusionParams`, :class:`RegistrationParams` -- tuned defaults.

Conventions (docs/conventions.md), shared by every function:

- arrays are (row, col) = (y, x); frames are float32, linear light, nominally
  in [0, 1] (nothing is clipped);
- ``flow[k, i, j] = (dy, dx)``: the content of reference pixel (i, j) is found
  at (i + dy, j + dx) of frame k, in input pixels; zero for the reference;
- pixel-area grid: output pixel (y, x) at scale s is centred at reference
  coordinate ((y + 0.5)/s - 0.5, (x + 0.5)/s - 0.5);
- Bayer mosaics are (H, W) with a pattern string ``"RGGB"``, ``"BGGR"``,
  ``"GRBG"`` or ``"GBRG"``.
"""

from .fusion import FusionParams, FusionResult, fuse
from .registration import RegistrationParams, register

__version__ = "0.1.0"

__all__ = ["FusionParams", "FusionResult", "RegistrationParams", "fuse", "register", "__version__"]
