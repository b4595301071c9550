"""mfsr.atomic_file: all or nothing at the target, with an ordinary file mode."""

import os
import stat

import pytest

from mfsr.atomic_file import atomic_output


def test_output_replaces_the_target_with_the_umask_mode(tmp_path):
    target = tmp_path / "out.bin"
    old = os.umask(0o027)
    try:
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary file left


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(FileNotFoundError, match="output folder"):
        with atomic_output(tmp_path / "missing" / "x.bin"):
            pass
