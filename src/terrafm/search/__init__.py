"""Similarity search and change maps over ``terrafm embed`` outputs (docs/search.md).

- :func:`build_index` / :class:`SearchIndex`: a faiss cosine index over the window embeddings of
  one or many embed tables, exact or approximate with a measured recall; it records the model,
  weights and sensors and refuses to mix embeddings that are not comparable.
- :func:`window_query`, :func:`places_query`, :func:`write_hits`, :func:`score_maps`: queries
  by example windows or places, hits as GeoParquet, score maps as PNG.
- :func:`change_map`: per-patch cosine distance between two embedding rasters of one grid.
"""

from terrafm.search.change import ChangeError, ChangeReport, change_map
from terrafm.search.index import BuildReport, SearchIndex, build_index
from terrafm.search.query import (
    Query,
    QueryError,
    hits_table,
    load_places,
    places_query,
    score_maps,
    window_query,
    write_hits,
)
from terrafm.search.tables import Identity, IdentityError, TableError, open_table

__all__ = [
    "BuildReport",
    "ChangeError",
    "ChangeReport",
    "Identity",
    "IdentityError",
    "Query",
    "QueryError",
    "SearchIndex",
    "TableError",
    "build_index",
    "change_map",
    "hits_table",
    "load_places",
    "open_table",
    "places_query",
    "score_maps",
    "window_query",
    "write_hits",
]
