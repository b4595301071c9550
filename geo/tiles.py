"""Tiles of a large raster and their fan-out over a Dask scheduler.

The working grid is cut into square *core* tiles; each task reads its core
plus a halo of context from every pass (windowed reads inside the task: the
task carries paths and windows, never arrays), fuses, and returns only its
core's output. Cores tile the grid exactly and every core pixel sees the
same context whatever tile it falls in, so the result does not depend on the
tile size beyond float rounding ("core crop" blending: no seams, no
feathering needed).

Schedulers:

- ``"threads"`` (default): Dask's local threaded scheduler, ``workers``
  tiles at a time;
- ``"sync"``: one tile at a time in the calling thread (debugging);
- ``"distributed://host:port"`` (or ``"tcp://host:port"``, or a
  ``distributed.Client``): a ``dask.distributed`` cluster; tasks are
  submitted with at most ``2 * workers`` in flight so results never pile up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["TileTask", "plan_tiles", "run_tasks", "parse_scheduler"]

# How long to wait for a dask.distributed scheduler to answer.
CONNECT_TIMEOUT = "20s"


@dataclass(frozen=True)
class TileTask:
    """One tile: its core and its window (core + halo), working-grid px.

    Attributes
    ----------
    index : int
    core_rows, core_cols : (int, int)
        Half-open ranges of the pixels this tile outputs.
    win_rows, win_cols : (int, int)
        Half-open ranges read (core + halo, clipped to the grid).
    """

    index: int
    core_rows: tuple[int, int]
    core_cols: tuple[int, int]
    win_rows: tuple[int, int]
    win_cols: tuple[int, int]


def plan_tiles(height: int, width: int, tile: int, halo: int, step: int = 1) -> list[TileTask]:
    """Cut a ``height x width`` grid into cores of about ``tile`` px.

    Parameters
    ----------
    height, width : int
        Working grid size, px.
    tile : int
        Core side, px; rounded down to a multiple of ``step`` (at least
        ``step``). A tile of at least the grid's size gives one task.
    halo : int
        Context around each core, px; rounded up to a multiple of ``step``.
    step : int
        Tile and halo boundaries fall on multiples of it (the denominator of
        the scale, so every window's output grid starts on a whole output
        pixel).

    Returns
    -------
    list of TileTask, row-major
    """
    t = max(step, (int(tile) // step) * step)
    hl = -(-int(halo) // step) * step
    tasks = []
    idx = 0
    for r0 in range(0, height, t):
        r1 = min(r0 + t, height)
        for c0 in range(0, width, t):
            c1 = min(c0 + t, width)
            tasks.append(
                TileTask(
                    idx, (r0, r1), (c0, c1),
                    (max(0, r0 - hl), min(height, r1 + hl)),
                    (max(0, c0 - hl), min(width, c1 + hl)),
                )
            )
            idx += 1
    return tasks


def parse_scheduler(scheduler) -> tuple[str, object]:
    """``(kind, address_or_client)`` with kind ``"threads"``, ``"sync"`` or ``"distributed"``.

    Raises
    ------
    ValueError
        On anything else, naming the argument.
    """
    if scheduler is None or scheduler == "threads":
        return "threads", None
    if scheduler in ("sync", "synchronous"):
        return "sync", None
    if isinstance(scheduler, str):
        if scheduler.startswith("distributed://"):
            rest = scheduler[len("distributed://"):]
            address = rest if "://" in rest else "tcp://" + rest
            _check_address(address, scheduler)
            return "distributed", address
        if scheduler.startswith(("tcp://", "inproc://", "tls://")):
            _check_address(scheduler, scheduler)
            return "distributed", scheduler
    try:
        from distributed import Client

        if isinstance(scheduler, Client):
            return "distributed", scheduler
    except ImportError:  # pragma: no cover - distributed is optional
        pass
    raise ValueError(
        f"scheduler: expected 'threads', 'sync' or 'distributed://host:port', got {scheduler!r}"
    )


def _check_address(address: str, given: str) -> None:
    scheme, _, rest = address.partition("://")
    if scheme == "inproc":
        return
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"scheduler: expected distributed://host:port with a port number, got {given!r}")


#: Seconds to wait for a TCP connection and for the scheduler's first message.
PROBE_TIMEOUT = 10.0
# A Dask comm message starts with its total length (uint64, little-endian);
# a handshake is a few hundred bytes.
_MAX_HANDSHAKE = 1 << 20


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """Check that ``address`` answers like a Dask scheduler, within ``timeout`` seconds.

    A Dask scheduler sends its handshake as soon as a connection opens.
    Something else (a web server, which waits for a request, or a service
    with a text banner) would make the client wait for its own long timeout
    or try to allocate a "message" whose length is read from text; here it
    is refused at once.

    Parameters
    ----------
    address : str
        ``tcp://host:port`` (other schemes are not probed).
    timeout : float, optional
        Seconds for the connection and for the first message each
        (default :data:`PROBE_TIMEOUT`).

    Raises
    ------
    ValueError
        Naming ``scheduler``: nothing listening, no answer in time, or an
        answer that is not a Dask message.
    """
    import socket
    import struct

    scheme, _, rest = address.partition("://")
    if scheme != "tcp":
        return
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        raise ValueError(f"scheduler: cannot connect to {address}: {exc}") from None
    try:
        sock.settimeout(timeout)
        head = b""
        while len(head) < 8:
            chunk = sock.recv(8 - len(head))
            if not chunk:
                raise ValueError(f"scheduler: {address} closed the connection; it is not a Dask scheduler")
            head += chunk
    except TimeoutError:
        raise ValueError(
            f"scheduler: {address} sent no Dask handshake within {timeout:g} s; it is not a Dask scheduler"
        ) from None
    except OSError as exc:
        raise ValueError(f"scheduler: cannot talk to {address}: {exc}") from None
    finally:
        sock.close()
    (length,) = struct.unpack("<Q", head)
    if length == 0 or length > _MAX_HANDSHAKE:
        raise ValueError(f"scheduler: {address} does not speak the Dask protocol (first bytes {head!r})")


def run_tasks(
    func: Callable,
    items: Sequence,
    *,
    scheduler="threads",
    workers: int = 1,
    progress: bool = False,
    desc: str = "tiles",
) -> Iterator:
    """Apply ``func`` to every item on a Dask scheduler, yielding results as they finish.

    At most about ``2 * workers`` results exist at once, so memory stays
    bounded by that many tiles whatever the number of items.

    Parameters
    ----------
    func : callable
        Top-level (picklable) function of one item.
    items : sequence
    scheduler : str or distributed.Client
        See the module docstring.
    workers : int
        Concurrent tasks for ``"threads"``; in-flight budget for a cluster
        (its own thread count when larger).
    progress : bool
        Show a tqdm bar over the items.
    desc : str
        Label of the bar.

    Yields
    ------
    The results of ``func`` (completion order for a cluster, item order otherwise).
    """
    kind, target = parse_scheduler(scheduler)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="tile")
    try:
        if kind in ("threads", "sync"):
            import dask

            nw = max(1, int(workers)) if kind == "threads" else 1
            batch = nw if kind == "sync" else 2 * nw
            for i in range(0, len(items), batch):
                tasks = [dask.delayed(func, pure=False)(it) for it in items[i : i + batch]]
                if kind == "sync":
                    results = dask.compute(*tasks, scheduler="synchronous")
                else:
                    results = dask.compute(*tasks, scheduler="threads", num_workers=nw)
                for r in results:
                    if bar is not None:
                        bar.update(1)
                    yield r
            return
        yield from _run_distributed(func, items, target, workers, bar)
    finally:
        if bar is not None:
            bar.close()


def _run_distributed(func, items, target, workers, bar):
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - distributed is optional
        raise ValueError(
            "scheduler: a distributed scheduler needs the 'distributed' package "
            "(pip install mfsr[distributed])"
        ) from None
    own = not isinstance(target, Client)
    if own:
        probe_scheduler(target)
    try:
        client = Client(target, timeout=CONNECT_TIMEOUT, set_as_default=False) if own else target
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"scheduler: cannot connect to the dask scheduler at {target}: {exc}") from None
    try:
        nthreads = sum(client.nthreads().values()) or 1
        budget = 2 * max(int(workers), nthreads)
        it = iter(items)
        first = []
        for item in it:
            first.append(client.submit(func, item, pure=False))
            if len(first) >= budget:
                break
        if not first:
            return
        pending = as_completed(first, loop=client.loop)
        for fut in pending:
            result = fut.result()
            fut.release()
            nxt = next(it, None)
            if nxt is not None:
                pending.add(client.submit(func, nxt, pure=False))
            if bar is not None:
                bar.update(1)
            yield result
    finally:
        if own:
            client.close()
