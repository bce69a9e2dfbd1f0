"""The built-in synthetic multi-sensor world: a small Earth in the Major-TOM layout, with held-out tasks.

Entry point: :func:`terrafm.world.generate.make_world` (``terrafm make-world``; see
``docs/synthetic_world.md``). Modules: ``generate`` (the world and its manifest), ``grid`` (Major-TOM
cell names and UTM grids), ``landcover`` (WorldCover maps), ``spectra`` and ``atmosphere`` (surface
reflectance, L1C through an atmosphere), ``fields`` (spatially correlated fields), ``sar`` (S1
backscatter with speckle), ``clouds``, ``cells`` (one cell's sensors), ``tasks`` (the classification
and segmentation task folders). The world is written through :mod:`terrafm.data.majortom`, so the
pretraining readers see it exactly as they see real Major-TOM data. Submodules are imported on use.
"""
