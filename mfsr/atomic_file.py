"""Atomic file output: write to a temporary file beside the target, then rename.

A crash, an exception or Ctrl-C while writing never leaves a half-written
file at the target path: either the old content (or nothing) or the complete
new file is there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Parameters
    ----------
    path : path-like
        Final file. Its folder must exist; the temporary file is created in
        the same folder so the final rename is atomic on POSIX and Windows.

    Yields
    ------
    Path
        Temporary file (exists, empty) to write the content to. It is
        removed if the block raises. The final file gets the mode a newly
        created file gets (0o666 less the umask), not the temporary file's
        private 0o600.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"{path.parent}: output folder does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    # The only portable way to read it is to set it; it is restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
