"""Numba kernels of mfsr: pure functions, arrays in and arrays out.

No I/O, no torch, no rasterio here. Every kernel is ``@njit(cache=True)`` and
has a plain NumPy twin in ``tests/`` that it must match. Conventions (row/col
order, flow direction, pixel-area grid) are those of ``docs/conventions.md``,
summarised in :mod:`mfsr`'s docstring.
"""
