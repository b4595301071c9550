"""Tile layout and the Dask fan-out."""

import numpy as np
import pytest

from mfsr.geo.tiles import parse_scheduler, plan_tiles, run_tasks


@pytest.mark.parametrize("h, w, tile, halo, step", [(100, 97, 32, 16, 1), (50, 50, 1024, 24, 1),
                                                    (101, 64, 33, 24, 2), (7, 9, 4, 3, 3)])
def test_plan_tiles_covers_the_grid_exactly_once(h, w, tile, halo, step):
    tasks = plan_tiles(h, w, tile, halo, step)
    cover = np.zeros((h, w), int)
    for t in tasks:
        (r0, r1), (c0, c1) = t.core_rows, t.core_cols
        cover[r0:r1, c0:c1] += 1
        # Cores and windows start on multiples of step, windows hold the halo (clipped).
        assert r0 % step == 0 and c0 % step == 0
        assert t.win_rows[0] % step == 0 and t.win_cols[0] % step == 0
        assert t.win_rows[0] <= r0 and t.win_rows[1] >= r1 and t.win_rows[1] <= h
        assert t.win_rows[0] == 0 or r0 - t.win_rows[0] >= halo
        assert t.win_cols[1] == w or t.win_cols[1] - c1 >= halo
    assert (cover == 1).all()
    assert [t.index for t in tasks] == list(range(len(tasks)))


def test_parse_scheduler():
    assert parse_scheduler("threads") == ("threads", None)
    assert parse_scheduler(None) == ("threads", None)
    assert parse_scheduler("sync") == ("sync", None)
    assert parse_scheduler("distributed://10.0.0.1:8786") == ("distributed", "tcp://10.0.0.1:8786")
    assert parse_scheduler("distributed://tls://h:1") == ("distributed", "tls://h:1")
    assert parse_scheduler("tcp://h:1") == ("distributed", "tcp://h:1")
    with pytest.raises(ValueError, match="scheduler"):
        parse_scheduler("processes")


def _square(x):
    return x * x


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_run_tasks_returns_every_result(scheduler):
    out = list(run_tasks(_square, list(range(11)), scheduler=scheduler, workers=2, progress=True))
    assert sorted(out) == [x * x for x in range(11)]


def test_run_tasks_bad_cluster_address(monkeypatch):
    pytest.importorskip("distributed")
    import mfsr.geo.tiles as tiles

    monkeypatch.setattr(tiles, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ValueError, match="scheduler: cannot connect"):
        list(run_tasks(_square, [1], scheduler="distributed://127.0.0.1:1"))


def _serve_once(reply: bytes | None):
    """A TCP server on a free port that accepts one connection and sends ``reply`` (None: stays silent)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        if reply is not None:
            conn.sendall(reply)
        conn.recv(1)  # hold the connection until the client closes it
        conn.close()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


@pytest.mark.parametrize(
    "reply, message",
    [
        (None, "sent no Dask handshake within"),  # a web server waits for a request
        (b"SSH-2.0-OpenSSH_9.6\r\n", "does not speak the Dask protocol"),
        (b"HTTP/1.0 400 Bad Request\r\n\r\n", "does not speak the Dask protocol"),
    ],
)
def test_scheduler_that_is_not_dask_is_refused(reply, message, monkeypatch):
    import mfsr.geo.tiles as tiles

    pytest.importorskip("distributed")
    monkeypatch.setattr(tiles, "PROBE_TIMEOUT", 0.5)
    port = _serve_once(reply)
    with pytest.raises(ValueError, match=f"^scheduler: .*{message}"):
        list(run_tasks(_square, [1], scheduler=f"distributed://127.0.0.1:{port}"))


@pytest.mark.parametrize("address", ["distributed://", "distributed://host", "distributed://host:port", "tcp://:8786"])
def test_scheduler_address_needs_host_and_port(address):
    with pytest.raises(ValueError, match="^scheduler: expected distributed://host:port"):
        parse_scheduler(address)
