"""The demo's parallel first-run compilation (mfsr.demo._compile_in_parallel)."""

import numpy as np
import pytest
from numba.core import event
from numba.core.registry import CPUDispatcher

from mfsr import demo


def test_warm_up_compiles_what_the_demo_uses_and_the_probes_see_it(tmp_path):
    # Each stage's tiny burst compiles the kernels for exactly the types of a
    # real fusion: after both, a demo compiles no kernel of its own, and the
    # cache probes find every stage compiled (so a warm run starts no
    # second process).
    for stage in ("align", "merge"):
        demo._warm_up(stage, "RGGB", 2.0)
    assert demo._stages_to_compile("RGGB") == []
    assert demo._compile_in_parallel("RGGB", 2.0) is None
    rec = event.RecordingListener()
    event.register("numba:compile", rec)
    try:
        demo.run_demo(tmp_path / "demo", n_frames=3, quiet=True)
    finally:
        event.unregister("numba:compile", rec)
    compiled = {
        e.data["dispatcher"].py_func.__qualname__
        for _, e in rec.buffer
        if e.is_start and e.data["dispatcher"].py_func.__module__.startswith("mfsr.kernels")
    }
    assert compiled == set()


def test_probes_are_false_for_types_never_compiled():
    from mfsr.kernels.pyramid import bin2x2

    assert isinstance(bin2x2, CPUDispatcher)
    # float16 frames are never passed to the kernels: neither compiled nor cached
    assert not demo._is_compiled(bin2x2, np.zeros((2, 2), np.float16))


def test_the_second_process_compiles_into_the_cache(monkeypatch):
    # The worker is a fresh interpreter running the align stage; it exits
    # cleanly (a failure would only cost the compile time it should save).
    job = demo._ParallelCompile("RGGB", 2.0)
    try:
        assert job.worker.wait(timeout=600) == 0
    finally:
        job.stop()
