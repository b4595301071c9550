"""Renamed arguments: the old name keeps working, with a ``DeprecationWarning``.

The vocabulary is one across the package (docs/conventions.md): ``valid=``
is True where a sample may be used, ``mask=``/``masks=`` is nonzero where it
is invalid (cloud and quality masks), ``cfa=`` is a Bayer pattern name or
None. Where an older argument meant the same with another name, it is
accepted and warned about, not broken.
"""

from __future__ import annotations

import warnings

__all__ = ["renamed_argument"]

_UNSET = object()


def renamed_argument(func: str, old: str, old_value, new: str, new_value, *, default=None, stacklevel: int = 3):
    """The value of a renamed argument, warning when the old name was used.

    Parameters
    ----------
    func : str
        Name of the function, for the message.
    old, new : str
        Old and new argument names.
    old_value, new_value
        What the caller passed under each name (``default`` when not given).
    default
        The arguments' default.
    stacklevel : int
        Passed to :func:`warnings.warn`, so the warning points at the caller.

    Returns
    -------
    The value to use.

    Raises
    ------
    TypeError
        If both names were given.
    """
    if old_value is default:
        return new_value
    if new_value is not default:
        raise TypeError(f"{func}: give {new}= only ({old}= is its old name)")
    warnings.warn(f"{func}: {old}= is deprecated, use {new}= (same meaning)", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value
