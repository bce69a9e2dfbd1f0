"""Pretraining data: Major-TOM and GeoTIFF-folder sources, curation, sampling, multi-crop views.

See ``docs/data.md``. Submodules are imported on use; this package has no import-time side effects.
"""
