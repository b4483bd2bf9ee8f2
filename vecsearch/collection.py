"""Jobs over the whole collection rather than one query: near-duplicate groups and zero-shot tags for
every picture. The Index takes these methods from here so that its own module stays about one query."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import IndexModel
    from .retrieval import Retrieval
    from .store import Store
    from .vector_file import VectorFile


class CollectionJobs:
    """Mixed into `Index`; uses its store, vector file, retrieval and model."""

    store: Store
    vector_file: VectorFile
    model: IndexModel
    _retrieval: Retrieval
