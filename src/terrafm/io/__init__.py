"""Raster I/O shared by pretraining, evaluation, embedding and the built-in world.

- :mod:`terrafm.io.geotiff`: GeoTIFF / PNG encoding and decoding (in memory and on disk), CRS
  repair, window reads of a band onto a finer grid, the chip writer.
- :mod:`terrafm.io.resample`: the one resampling between grids of one footprint (bilinear with
  aligned pixel centres, nearest for masks), for whole rasters, windows and streamed scenes.
- :mod:`terrafm.io.scene`: scenes of several sensors on one grid: band discovery (multi-band
  files, one file per band, SAFE JP2 sets), grid checks across sensors, window reads.
- :mod:`terrafm.io.taskfolder`: the task-folder writer (the evaluation's folder layout).

docs/design.md, "Raster I/O".
"""
