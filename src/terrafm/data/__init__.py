"""Pretraining data: Major-TOM and GeoTIFF-folder sources, curation, sampling, multi-crop views.

Entry point: :func:`terrafm.data.loader.build_pretrain_loader` (see ``docs/data.md``). Modules:
``majortom`` (writer + lazy reader), ``sources`` (paired Major-TOM cells), ``folder`` (GeoTIFF
folders), ``landcover``, ``curation``, ``sampling``, ``multicrop``, ``dataset``, ``loader``,
``skips``, ``inspect``, ``shards`` (pre-decoded training shards). The
built-in synthetic world is :mod:`terrafm.world`. Submodules are imported on use: no import-time side effects.
"""
