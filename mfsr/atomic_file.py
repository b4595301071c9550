"""Atomic, exclusive file output: write to a temporary file beside the target, then move it in.

A crash, an exception, Ctrl-C or SIGTERM while writing never leaves a
half-written file at the target path: either the old content (or nothing) or
the complete new file is there. Temporary files carry the writing process's
id in their name (``.<name>.mfsr-<pid>-<random>.tmp``), so one left behind by
a killed run (SIGKILL, power loss) is recognised and removed by the next run
that writes the same target.

Without ``overwrite`` the final step creates the target exclusively (a hard
link, which fails if the name exists), so two runs writing the same new file
at once cannot silently replace each other's result: the second one fails.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "commit_temporary", "remove_stale_temporaries", "temporary_path"]

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.mfsr-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def temporary_path(path: str | os.PathLike) -> Path:
    """Create an empty temporary file beside ``path`` and return its name.

    Parameters
    ----------
    path : path-like
        Final file; its folder must exist.

    Returns
    -------
    Path
        ``.<name>.mfsr-<pid>-<random>.tmp`` in the folder of ``path``, created
        with mode 0o600.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: output folder does not exist")
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.mfsr-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


def commit_temporary(tmp: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Move a finished temporary file to its final name.

    Parameters
    ----------
    tmp : path-like
        The complete temporary file (same folder as ``path``).
    path : path-like
        Final name.
    overwrite : bool
        Replace ``path`` if it exists (``os.replace``). If False the final
        name is created exclusively: when another process created it in the
        meantime, ``FileExistsError`` is raised and ``tmp`` is removed.

    Returns
    -------
    Path
        ``path``. It gets the mode a newly created file gets (0o666 less the
        umask), not the temporary file's private 0o600.
    """
    tmp, path = Path(tmp), Path(path)
    os.chmod(tmp, 0o666 & ~_umask())
    if overwrite:
        os.replace(tmp, path)
        return path
    try:
        os.link(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise FileExistsError(
            f"{path}: exists (another run created it meanwhile); nothing was replaced"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A filesystem without hard links: claim the name exclusively, then
        # move the content over the claim (the claim is ours, so nothing
        # another run wrote is replaced).
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise FileExistsError(
                f"{path}: exists (another run created it meanwhile); nothing was replaced"
            ) from None
        os.replace(tmp, path)
        return path
    tmp.unlink()
    return path


@contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``.

    Parameters
    ----------
    path : path-like
        Final file. Its folder must exist; the temporary file is created in
        the same folder so the final move is atomic.
    overwrite : bool
        Replace an existing ``path`` (default, as a Python writer does). The
        command line passes False unless ``--overwrite``: the file is then
        created exclusively (see :func:`commit_temporary`).

    Yields
    ------
    Path
        Temporary file (exists, empty) to write the content to. It is
        removed if the block raises (including ``KeyboardInterrupt`` and the
        ``SystemExit`` the command line raises on SIGTERM).

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist.
    FileExistsError
        If ``overwrite`` is False and ``path`` exists when the content is
        complete.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        commit_temporary(tmp, path, overwrite=overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``path`` left by runs that no longer exist.

    Only files named like this module's temporaries for this very target,
    whose writing process is gone, are touched; a concurrent run's file is
    left alone. Each removal is reported with a warning.

    Parameters
    ----------
    path : path-like
        Final file whose folder is searched.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m is None or m["name"] != path.name or _process_alive(int(m["pid"])):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    if removed:
        warnings.warn(
            f"{path}: removed {len(removed)} temporary file(s) left by an interrupted run "
            f"({', '.join(p.name for p in removed)})",
            stacklevel=3,
        )
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def _umask() -> int:
    # The only portable way to read it is to set it; it is restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
