"""Raster I/O shared by pretraining, evaluation, embedding and the built-in world.

- :mod:`terrafm.io.geotiff`: GeoTIFF / PNG encoding and decoding (in memory and on disk), CRS
  repair, window reads of a band onto a finer grid.
- :mod:`terrafm.io.resample`: the one resampling between grids of one footprint (bilinear with
  aligned pixel centres, nearest for masks), for whole rasters, windows and streamed scenes.
"""
