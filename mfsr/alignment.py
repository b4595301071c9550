"""The align stage: where every frame's content lies relative to the reference.

:func:`align` registers a burst (the tile-wise pyramid registration of
:mod:`mfsr.registration`, or a global model plus local residual with
``geometry=`` / ``distortion=``, see :mod:`mfsr.geometry`) or takes a given
flow, and hands the merge stage an :class:`Alignment`: a dense flow per frame
and, where the registration was tile-wise, each frame's tile motion and its
irregularity, which the robustness uses to distrust broken alignment.

Conventions (docs/conventions.md): ``flows[k, i, j] = (dy, dx)``, the content
of reference pixel ``(i, j)`` is at ``(i + dy, j + dx)`` in frame ``k``,
input pixels; zero for the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .registration import (
    RegistrationParams,
    TileMotion,
    align_frame,
    dense_flow,
    flow_irregularity,
    prepare_reference,
)
from .validation import all_finite

if TYPE_CHECKING:  # (mfsr.geometry imports torch; only a global model needs it)
    from .geometry import GeometryParams

__all__ = ["Alignment", "TileSpread", "align", "check_geometry_params", "frame_progress"]


@dataclass(frozen=True)
class TileSpread:
    """A frame's tile-wise motion and how irregular it is.

    Attributes
    ----------
    irregularity : ndarray of float32, shape (Ty, Tx)
        Per tile, the spread of the neighbouring tiles' displacements, input px
        (:func:`mfsr.registration.flow_irregularity`).
    motion : TileMotion
        The tile grid the irregularity lives on.
    """

    irregularity: np.ndarray
    motion: TileMotion


@dataclass
class Alignment:
    """Output of :func:`align`, input of :func:`mfsr.merge.merge`.

    A tile-wise registration is kept at tile resolution: the dense flow of
    frame ``k`` is made when the merge needs it (:meth:`frame_flow`, into a
    buffer reused across frames), and the whole (N, H, W, 2) array only when
    :attr:`flows` is read. That keeps the merge's memory flat in the number
    of frames.

    Attributes
    ----------
    frame_shape : (int, int)
        (H, W) of the input frames (the mosaic for CFA input).
    spreads : list of (TileSpread or None), length N
        Tile motion of each frame where the registration was tile-wise; None
        for the reference, for a given flow and for a single frame (the
        merge then measures the irregularity on the dense flow).
    dense : ndarray of float32, shape (N, H, W, 2), or None
        The dense flow where it exists from the start (a given flow, a
        global model) or once :attr:`flows` was read.
    transforms : ndarray of float64, shape (N, 3, 3), or None
        Global transforms with ``geometry=`` (see :class:`mfsr.FusionResult`).
    distortion : ndarray of float64, shape (N, 5), or None
        Lens coefficients with ``distortion=``.
    reference_frame : ndarray of float32, or None
        With known lens coefficients, the reference resampled onto the
        rectified output grid (the merge's guide); None otherwise.
    transform_uncertainty : ndarray of float64, shape (N,), or None
        Corner uncertainty of each frame's global model, input px
        (:class:`mfsr.geometry.GlobalGeometry`); None without one.
    transform_reliable : ndarray of bool, shape (N,), or None
        Whether each frame's reported global model (``transforms``) is
        reliable (:class:`mfsr.geometry.GlobalGeometry`). None without one.
    transform_models : tuple of str, length N, or None
        The model of each frame's ``transforms`` entry: the requested one, a
        simpler one the fallback chose, or ``"identity"`` (the local
        registration alone). None without a global model.
    """

    frame_shape: tuple[int, int]
    spreads: list = field(default_factory=list)
    dense: np.ndarray | None = None
    transforms: np.ndarray | None = None
    distortion: np.ndarray | None = None
    reference_frame: np.ndarray | None = None
    transform_uncertainty: np.ndarray | None = None
    transform_reliable: np.ndarray | None = None
    transform_models: tuple | None = None

    def frame_flow(self, k: int, out: np.ndarray | None = None) -> np.ndarray:
        """Dense flow of frame ``k``, shape (H, W, 2), (dy, dx) input px.

        ``out`` (float32, C-contiguous, (H, W, 2)) is filled and returned
        when the flow has to be made from tile motion; otherwise a view of
        :attr:`dense` (or zeros for a frame without motion) is returned.
        """
        if self.dense is not None:
            return self.dense[k]
        spread = self.spreads[k]
        if spread is None:
            if out is None:
                return np.zeros((*self.frame_shape, 2), np.float32)
            out[...] = 0.0
            return out
        return dense_flow(spread.motion, self.frame_shape, out=out)

    @property
    def flows(self) -> np.ndarray:
        """Dense flow of every frame, float32 (N, H, W, 2); made on first access and kept."""
        if self.dense is None:
            n = len(self.spreads)
            dense = np.empty((n, *self.frame_shape, 2), np.float32)
            for k in range(n):
                self.frame_flow(k, out=dense[k])
            self.dense = dense
        return self.dense


def align(
    burst: np.ndarray,
    cfa: str | None,
    reference: int,
    *,
    flow: np.ndarray | None = None,
    registration: RegistrationParams | None = None,
    geometry: str | None = None,
    distortion=None,
    progress: bool = False,
    geometry_params: GeometryParams | None = None,
) -> Alignment:
    """Register every frame of a validated burst to its reference.

    Parameters
    ----------
    burst : ndarray of float32, shape (N, H, W) or (N, H, W, 3)
        Frames as returned by :func:`mfsr.validation.as_burst`.
    cfa : str or None
        Bayer pattern of single-channel mosaics.
    reference : int
        Index of the reference frame.
    flow : ndarray, shape (N, H, W, 2), optional
        A precomputed flow to use instead of registering (zero for the
        reference).
    registration : RegistrationParams, optional
    geometry, distortion
        As for :func:`mfsr.fuse`: a global model and lens correction first,
        local registration of the residual.
    progress : bool
        Show a progress bar over the frames.
    geometry_params : mfsr.geometry.GeometryParams, optional
        Settings of the global model (with ``geometry`` / ``distortion``),
        e.g. its reliability threshold and fallback; unused without them.

    Returns
    -------
    Alignment

    Raises
    ------
    ValueError
        On a flow of the wrong shape, with NaN, with a nonzero reference, or
        given together with ``geometry`` / ``distortion``.
    TypeError
        If ``geometry_params`` is not a ``GeometryParams``.
    """
    n, h, w = burst.shape[:3]
    check_geometry_params(geometry_params)
    if geometry is not None or distortion is not None:
        from .geometry import check_geometry_args, global_registration

        check_geometry_args(geometry, distortion, (h, w))
        if flow is not None:
            raise ValueError(
                "flow: a precomputed flow cannot be combined with geometry= or distortion= "
                "(the global model is estimated from the registration)"
            )
        glob = global_registration(
            burst, cfa, reference, geometry, distortion, registration, params=geometry_params,
            frames=frame_progress(n, progress, "register"),
        )
        return Alignment((h, w), [None if s is None else TileSpread(*s) for s in glob.spreads], glob.flows,
                         glob.transforms, glob.distortion, glob.reference_frame,
                         glob.transform_uncertainty, glob.transform_reliable, glob.transform_models)
    if flow is not None:
        return Alignment((h, w), [None] * n, _check_flow(flow, n, h, w, reference))
    spreads: list = [None] * n
    if n > 1:
        ref_pyr = prepare_reference(burst[reference], cfa, registration)
        for k in frame_progress(n, progress, "register"):
            if k != reference:
                motion = align_frame(ref_pyr, burst[k])
                spreads[k] = TileSpread(flow_irregularity(motion), motion)
    return Alignment((h, w), spreads)


def check_geometry_params(geometry_params) -> None:
    """Raise ``TypeError`` unless ``geometry_params`` is None or a
    :class:`mfsr.geometry.GeometryParams` (imported only then)."""
    if geometry_params is None:
        return
    from .geometry import GeometryParams

    if not isinstance(geometry_params, GeometryParams):
        raise TypeError(
            f"geometry_params: expected mfsr.geometry.GeometryParams or None, got {type(geometry_params).__name__}"
        )


def frame_progress(n: int, progress: bool, desc: str):
    """``range(n)``, with a tqdm bar labelled ``desc`` when ``progress``."""
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, unit="frame")


def _check_flow(flow, n: int, h: int, w: int, reference: int) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.shape != (n, h, w, 2):
        raise ValueError(f"flow: expected shape {(n, h, w, 2)} (N, H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.number):
        raise TypeError(f"flow: expected a numeric array, got dtype {flow.dtype}")
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if not all_finite(flow):
        raise ValueError("flow: NaN or infinite values")
    if np.abs(flow[reference]).max() > 1e-6:
        raise ValueError(
            f"flow: the reference frame ({reference}) must have zero flow, "
            f"got max |flow| {np.abs(flow[reference]).max():.3g} px"
        )
    return flow
