"""Checks on output paths, made before any work starts.

A fusion can run for minutes; an output that cannot be written (missing or
read-only folder, unknown suffix) or must not be (an input, another output of
the same run, an existing file without ``--overwrite``) is refused up front,
with the option that named it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutputRequest", "check_outputs"]


@dataclass(frozen=True)
class OutputRequest:
    """One file a run is asked to write.

    Attributes
    ----------
    option : str
        The option or argument that named it (``"-o"``, ``"--save-confidence"``),
        used in every message.
    path : Path
    suffixes : tuple of str
        Accepted lower-case suffixes, with the dot.
    """

    option: str
    path: Path
    suffixes: tuple[str, ...]


def check_outputs(
    outputs: Sequence[OutputRequest],
    inputs: Iterable[str | os.PathLike] = (),
    *,
    overwrite: bool = False,
) -> None:
    """Refuse outputs that cannot or must not be written.

    Parameters
    ----------
    outputs : sequence of OutputRequest
        Every file the run will write (main and extra outputs).
    inputs : iterable of path-like
        Every file the run reads (frames, passes, masks).
    overwrite : bool
        Whether existing outputs may be replaced.

    Raises
    ------
    ValueError
        Naming the option: unknown suffix, a folder as output, missing or
        read-only folder, the path is one of the inputs, two outputs share a
        path, or it exists and ``overwrite`` is False.
    """
    input_ids = {_identity(Path(p)) for p in inputs}
    seen: dict[tuple, str] = {}
    for req in outputs:
        p = Path(req.path)
        if p.suffix.lower() not in req.suffixes:
            raise ValueError(f"{req.option}: expected a {', '.join(req.suffixes)} path, got {p}")
        if p.is_dir():
            raise ValueError(f"{req.option}: {p} is a folder; expected a file name")
        folder = p.parent
        if not folder.is_dir():
            raise ValueError(f"{req.option}: the folder of {p} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{req.option}: cannot write to the folder of {p} (permission denied)")
        ident = _identity(p)
        if ident in input_ids:
            raise ValueError(f"{req.option}: {p} is one of the inputs; choose another output name")
        if ident in seen:
            raise ValueError(f"{req.option}: {p} is also the {seen[ident]} output; give each output its own name")
        seen[ident] = req.option
        if p.exists() and not overwrite:
            raise ValueError(f"{req.option}: {p} exists; give --overwrite to replace it")


def _identity(p: Path) -> tuple:
    # The same file reached through a link, a relative path or another
    # spelling is the same file: compare device and inode where it exists.
    try:
        st = p.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(p.resolve()))
