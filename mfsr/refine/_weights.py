"""Shipped weights of the refinement network: location, hash check, loading.

``mfsr/refine/weights/manifest.json`` names the weight file of each mode, its
SHA-256, the architecture and the training configuration that produced it.
Weights are a ``state_dict`` saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)`` (no pickled code runs).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ._network import RefineNet, n_globals_of

__all__ = ["MODES", "RefinerWeightsError", "WEIGHTS_DIR", "load_refiner", "refiner_ensemble", "refiner_strength",
           "save_weights", "sha256_file", "weights_entry"]

#: Modes of :func:`load_refiner`: fusion of grey frames, of RGB frames, of Bayer mosaics.
MODES = ("grey", "rgb", "cfa")
WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = "manifest.json"
_FALLBACK = "fuse(..., refine=False) still works (the classical fusion without the network)"


class RefinerWeightsError(RuntimeError):
    """A weight file of the refinement network is missing, corrupt or does not match its manifest."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RefinerWeightsError(f"refiner manifest {path} is unreadable ({exc}); {_FALLBACK}") from None


def _resolve(mode: str, weights) -> tuple[Path, dict | None]:
    """Weight file for ``mode`` and the manifest entry that describes it (if any)."""
    folder = WEIGHTS_DIR if weights is None else Path(os.fspath(weights))
    if weights is None or folder.is_dir():
        # a folder: its manifest names each mode's file
        manifest = _read_manifest(folder)
        if manifest is None:
            raise RefinerWeightsError(f"refiner manifest {folder / MANIFEST} is missing; {_FALLBACK}")
        try:
            name = manifest["modes"][mode]
        except (KeyError, TypeError):
            raise RefinerWeightsError(
                f"refiner manifest {folder / MANIFEST} has no weights for mode {mode!r}; {_FALLBACK}"
            ) from None
        return folder / name, manifest
    path = folder
    # a manifest beside a custom file is honoured when it describes that file
    manifest = _read_manifest(path.parent)
    if manifest is not None and path.name not in manifest.get("files", {}):
        manifest = None
    return path, manifest


_CACHE: dict[tuple, RefineNet] = {}


def load_refiner(mode: str, weights: str | os.PathLike | None = None) -> RefineNet:
    """Load the refinement network for one mode, offline, with a hash check.

    Parameters
    ----------
    mode : {"grey", "rgb", "cfa"}
        Kind of fusion the image came from (grey frames, RGB frames, Bayer
        mosaics). The shipped manifest maps all three to one shared network
        (the mode is one of its inputs); the mapping allows separate weight
        sets (:mod:`mfsr.refine.train` can fine-tune one for Bayer).
    weights : path or None
        None: the shipped weights. A folder: the weights its
        ``manifest.json`` names for ``mode`` (what
        ``python -m mfsr.refine.train --out DIR`` writes). A file: that
        ``state_dict`` (saved by ``torch.save``); a ``manifest.json`` beside
        it that lists the file is honoured (hash and architecture),
        otherwise the default architecture is assumed.

    Returns
    -------
    RefineNet
        In eval mode, on the CPU. Loaded models are cached by path, size and
        modification time; treat the returned module as read-only.

    Raises
    ------
    ValueError
        Unknown ``mode``.
    RefinerWeightsError
        (a ``RuntimeError``) The weight file is missing, fails its SHA-256
        check, cannot be read by ``torch.load(weights_only=True)`` or does not
        fit the architecture. The message names the file; the classical
        fusion, ``fuse(..., refine=False)``, does not need it.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    path, manifest = _resolve(mode, weights)
    try:
        st = path.stat()
    except OSError:
        raise RefinerWeightsError(f"refiner weight file {path} is missing; {_FALLBACK}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    entry = (manifest or {}).get("files", {}).get(path.name, {})
    expected = entry.get("sha256")
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected:
            raise RefinerWeightsError(
                f"refiner weight file {path} is corrupt: SHA-256 {actual[:16]}... does not match "
                f"the manifest's {expected[:16]}...; reinstall mfsr. {_FALLBACK}"
            )
    arch = entry.get("architecture", {})
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # files from before the optical blur became an input read 4 global features
        net = RefineNet(**{"n_globals": n_globals_of(state), **arch})
        net.load_state_dict(state)
    except Exception as exc:  # torch raises several types for bad files
        raise RefinerWeightsError(
            f"refiner weight file {path} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {_FALLBACK}"
        ) from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net = net.to(memory_format=torch.channels_last)
    _CACHE[key] = net
    return net


def refiner_strength(mode: str, scale: float, weights: str | os.PathLike | None = None, *,
                     psf_known: bool = False) -> float:
    """Calibrated strength of the residual for ``mode`` at ``scale``.

    ``manifest["strength"][mode]`` maps scales to the factor ``a`` in
    ``fused + a * residual`` chosen on validation bursts
    (:mod:`mfsr.refine.calibrate`); it is interpolated linearly in
    ``log2(scale)`` and held constant beyond the calibrated range. With
    ``psf_known`` (the optical blur is given to the network) the table
    ``manifest["strength_known_psf"]`` is used where the manifest has one.
    1.0 when the manifest has no calibration (e.g. a bare weight file).

    The simulated validation bursts do not cover everything real captures
    hold (processed JPEG frames, real sensor texture), so the manifest may
    also hold ``manifest["real_capture_limit"][mode]``, a table of the same
    form measured on real captures (``benchmarks/bench_real.py``): the
    strength never exceeds it, blur given or not.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    _, manifest = _resolve(mode, weights)
    manifest = manifest or {}
    key = "strength_known_psf" if psf_known and "strength_known_psf" in manifest else "strength"
    strength = _interp_table(manifest.get(key, {}).get(mode), scale)
    return min(strength, _interp_table(manifest.get("real_capture_limit", {}).get(mode), scale))


def _interp_table(table: dict | None, scale: float) -> float:
    """A manifest table {scale: value}, interpolated linearly in log2(scale), clipped to [0, 1]; 1 without one."""
    if not table:
        return 1.0
    pts = sorted((float(k), float(v)) for k, v in table.items())
    xs = np.log2([p[0] for p in pts])
    ys = np.clip([p[1] for p in pts], 0.0, 1.0)
    return float(np.interp(np.log2(float(scale)), xs, ys))


def refiner_ensemble(mode: str, weights: str | os.PathLike | None = None) -> int | None:
    """Self-ensemble size the strength of ``mode`` was calibrated with (:func:`mfsr.refine.refine_image`).

    ``manifest["ensemble"][mode]``, written by :mod:`mfsr.refine.calibrate`;
    1 for a calibration from before the ensemble existed; None when the
    manifest holds no calibrated strength for ``mode`` (or there is no manifest).
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    _, manifest = _resolve(mode, weights)
    manifest = manifest or {}
    if not manifest.get("strength", {}).get(mode):
        return None
    return int(manifest.get("ensemble", {}).get(mode, 1))


def weights_entry(net: RefineNet, path: Path) -> dict:
    """Manifest ``files`` entry of the weight file ``path`` holding ``net``."""
    arch = {"channels": net.channels, "blocks": net.blocks, "n_globals": net.n_globals}
    if net.filters:
        arch.update(filters=net.filters, filter_size=net.filter_size)
    return {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "architecture": arch,
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }


def save_weights(net: RefineNet, path: Path) -> dict:
    """Write ``net``'s state_dict to ``path`` (a temporary file, then renamed) and return its ``files`` entry."""
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return weights_entry(net, path)
