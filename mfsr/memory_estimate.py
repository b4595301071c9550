"""Up-front memory estimate of a fusion, so that work that cannot fit is refused before it starts.

A fusion's peak memory grows with the burst and, above all, with the output
(the accumulators, the normalised image and the detail restoration each hold
it). Asking for ``scale=1000`` on small frames, or fusing frames whose header
declares a huge size, would otherwise run the machine out of memory minutes
later, or get the process killed. The coefficients are upper bounds fitted
to the peak resident memory measured by ``benchmarks/bench_speed.py``
(see ``benchmarks/RESULTS.md``).

The limit is the memory available to this process (``MemAvailable``, and a
cgroup limit when one is set). ``MFSR_MAX_MEMORY`` (GiB) replaces it; ``0``
switches the check off.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["available_memory", "check_fusion_memory", "fusion_memory", "require_memory"]

_GIB = 1 << 30
# Peak bytes per byte of the float32 burst, and per output pixel: 2.5 float32
# copies of each output channel plus the weight sums, confidence and
# detail-restoration buffers, which do not shrink with the channels.
_PER_BURST_BYTE = 3.5
_PER_OUTPUT_CHANNEL_BYTES = 10.0
_PER_OUTPUT_PIXEL_BYTES = 16.0


def fusion_memory(n_frames: int, height: int, width: int, channels: int, out_height: int, out_width: int,
                  out_channels: int) -> int:
    """Estimated peak memory of :func:`mfsr.fuse` beyond what the process already holds, in bytes.

    Parameters
    ----------
    n_frames, height, width, channels : int
        Burst size: N frames of H x W samples with C channels (1 for grey
        and Bayer mosaics, 3 for RGB).
    out_height, out_width, out_channels : int
        Output image size (3 channels for a Bayer burst).

    Returns
    -------
    int
    """
    burst = 4.0 * n_frames * height * width * channels
    out_px = float(out_height) * out_width
    return int(_PER_BURST_BYTE * burst + out_px * (_PER_OUTPUT_CHANNEL_BYTES * out_channels + _PER_OUTPUT_PIXEL_BYTES))


def available_memory() -> int | None:
    """Memory this process may still use, in bytes, or None if unknown or unlimited.

    ``MFSR_MAX_MEMORY`` (GiB, a number) overrides the measurement; ``0``
    means no limit.
    """
    override = os.environ.get("MFSR_MAX_MEMORY")
    if override is not None:
        try:
            gib = float(override)
        except ValueError:
            raise ValueError(f"MFSR_MAX_MEMORY: expected a number of GiB (0: no limit), got {override!r}") from None
        if not gib >= 0:
            raise ValueError(f"MFSR_MAX_MEMORY: expected a number of GiB >= 0 (0: no limit), got {override!r}")
        return None if gib == 0 else int(gib * _GIB)
    limits = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(limits) if limits else None


def check_fusion_memory(n_frames: int, height: int, width: int, channels: int, out_height: int, out_width: int,
                        out_channels: int, *, scale: float) -> None:
    """Raise if the estimated peak memory of a fusion exceeds the available memory.

    Parameters
    ----------
    n_frames, height, width, channels, out_height, out_width, out_channels : int
        As for :func:`fusion_memory`.
    scale : float
        The requested zoom, for the message.

    Raises
    ------
    MemoryError
        Naming ``scale`` and the frame size, the estimate and what is
        available, and how to override it.
    """
    need = fusion_memory(n_frames, height, width, channels, out_height, out_width, out_channels)
    require_memory(need, f"scale: fusing {n_frames} frame(s) of {width}x{height} at scale {scale:g} "
                         f"({out_width}x{out_height} output)")


def require_memory(need: float, what: str) -> None:
    """Raise if ``need`` bytes exceed the available memory.

    Parameters
    ----------
    need : float
        Estimated bytes.
    what : str
        The work, starting with the argument that sets its size
        (``"scale: fusing ..."``), for the message.

    Raises
    ------
    MemoryError
    """
    limit = available_memory()
    if limit is not None and need > limit:
        raise MemoryError(
            f"{what} needs about {need / _GIB:.1f} GiB of memory, {limit / _GIB:.1f} GiB are available; "
            "use a smaller scale or fewer/smaller inputs (MFSR_MAX_MEMORY=GiB overrides the limit, "
            "0 switches the check off)"
        )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    # cgroup v2: a container's limit, less what the container already uses.
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None
