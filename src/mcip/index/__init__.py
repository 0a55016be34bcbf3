"""Single-embedding search: index images once, query them by text, by image, or both.

    from mcip.index import build_index, SearchIndex

    build_index("runs/mcip-rea/model", "photos/", "photos.index")          # FAISS Flat (exact)
    with SearchIndex.open("photos.index") as index:                         # loads the same model
        hits = index.search(text="a red bicycle", k=10)                    # Hits: a sequence of Hit
        hits = index.search(text="at night", image="query.jpg", alpha=0.7)

Layout of an index folder: ``mcip.index.store``; backends: ``mcip.index.backends``.
"""

from mcip.index.backends import create_backend, list_index_backends
from mcip.index.build import add_to_index, build_index, index_embeddings
from mcip.index.check import check_index
from mcip.index.hits import Hit, Hits, IndexedImage, UnknownId
from mcip.index.lock import IndexBusyError
from mcip.index.query import MAX_K, MAX_TEXT_CHARS
from mcip.index.records import IndexRecord, load_index_records
from mcip.index.search import SearchIndex
from mcip.index.store import index_info

__all__ = [
    "MAX_K",
    "MAX_TEXT_CHARS",
    "Hit",
    "Hits",
    "IndexBusyError",
    "IndexRecord",
    "IndexedImage",
    "SearchIndex",
    "UnknownId",
    "add_to_index",
    "build_index",
    "check_index",
    "create_backend",
    "index_embeddings",
    "index_info",
    "list_index_backends",
    "load_index_records",
]
