"""Satellite passes: GeoTIFF reading, common grids, masks and tiled fusion.

This subpackage is filled by the satellite-passes work (rasterio side of mfsr);
the burst fusion core it builds on lives in :mod:`mfsr` and :mod:`mfsr.kernels`.
"""
