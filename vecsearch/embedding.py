"""A query turned into the one unit vector it stands for: its terms read (pictures from files, URLs or
bytes), embedded with the index's model, and combined by their weights."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import IMAGE
from .errors import QueryError, UnsupportedModalityError
from .images import decode_size
from .model import IndexModel
from .query import IMAGE as IMAGE_TERM
from .query import ITEM, URL, Query, Term, combine, fetch_url, parse_term
from .query import TEXT as TEXT_TERM

# Query terms whose vectors are remembered (a few hundred KB at most).
TERM_CACHE_SIZE = 256


class QueryEmbedder:
    """Embeds queries for one index. Terms embedded lately are remembered (text by its words, pictures by
    their content): refining a query re-sends the same terms, and a server answers the same prompt again
    and again."""

    def __init__(self, model: IndexModel, lookup: Callable[[int], np.ndarray | None]) -> None:
        self.model = model
        self.lookup = lookup  # an indexed item's stored vector (for `id:N` terms)
        self._term_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def vector(self, query: Query, pictures: Mapping[str, bytes] | None = None) -> np.ndarray:
        """The unit vector a query stands for. `pictures` holds the query images' bytes, if read already."""
        if pictures is None:
            pictures = self.read_pictures(query)
        needs_model = any(t.kind != ITEM for t in query.terms)
        text_only = all(t.kind in (TEXT_TERM, ITEM) for t in query.terms)
        encoder: Any = None
        if needs_model:
            encoder = (text_only and self.model.text_tower()) or self.model.query_encoder()
            start_loading = getattr(encoder, "start_loading", None)
            if start_loading is not None:  # exported towers: their files are hashed while the pictures decode
                start_loading(images=not text_only, text=any(t.kind == TEXT_TERM for t in query.terms))
        # The exported towers and the full model agree to a cosine of 0.99999, not bit for bit.
        exported = "exported " if getattr(encoder, "torch_free", False) else ""
        picture_keys = [
            (f"{exported}picture", hashlib.sha256(pictures[t.value]).hexdigest())
            for t in query.terms
            if t.kind in (IMAGE_TERM, URL)
        ]
        text_key = f"{exported}text"

        def embed_texts(texts: Sequence[str]) -> np.ndarray:
            return self._cached([(text_key, t) for t in texts], lambda: encoder.embed_texts(texts))

        def embed_images(images: Sequence[object]) -> np.ndarray:  # in the order of the query's pictures
            return self._cached(picture_keys, lambda: encoder.embed_images(images))

        return combine(
            query,
            embed_texts=embed_texts,
            embed_images=embed_images,
            lookup=self.lookup,
            read_picture=lambda term: pictures[term.value],
            # A query picture is decoded as a crawl decodes it: a 12 MP JPEG at a reduced scale.
            min_size=decode_size(encoder) if picture_keys else None,
        )

    def read_pictures(self, query: Query, given: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
        """The bytes of every query image (files and URLs), read once for embedding and for hashing.
        Images in `given` (by term value) are taken from there."""
        wanted = [t for t in query.terms if t.kind in (IMAGE_TERM, URL)]
        if wanted and IMAGE not in self.model.modalities:
            raise UnsupportedModalityError(
                f"index {self.model.folder.name} was built with the text-only model {self.model.spec}; "
                "query it with text"
            )
        pictures: dict[str, bytes] = {}
        for term in wanted:
            if given is not None and term.value in given:
                pictures[term.value] = bytes(given[term.value])
                continue
            if term.kind == URL:
                pictures[term.value] = fetch_url(term.value)
                continue
            try:
                pictures[term.value] = Path(term.value).read_bytes()
            except OSError as exc:
                raise QueryError(f"cannot read query image {term.value} ({exc.strerror or exc})") from exc
        return pictures

    def _cached(self, keys: list[tuple[str, str]], embed: Callable[[], Any]) -> np.ndarray:
        """The vectors of query terms, from the cache when every one is there, else embedded together
        (one batch) and remembered."""
        cache = self._term_vectors
        if keys and all(key in cache for key in keys):
            for key in keys:
                cache.move_to_end(key)
            return np.stack([cache[key] for key in keys])
        vectors = np.asarray(embed(), dtype=np.float32)
        for key, vector in zip(keys, vectors, strict=True):
            cache[key] = vector
            cache.move_to_end(key)
        while len(cache) > TERM_CACHE_SIZE:
            cache.popitem(last=False)
        return vectors


def picture_term(image: str | os.PathLike[str] | bytes) -> tuple[Term, dict[str, bytes] | None]:
    """The query term for an image argument (a file, a URL, `id:N`, or bytes), and the bytes it stands
    for when it came as bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        name = f"bytes:{hashlib.sha256(data).hexdigest()}"
        return Term(IMAGE_TERM, name), {name: data}
    text = str(image)
    term = parse_term(text if text.lower().startswith(("id:", "http://", "https://")) else f"image:{text}")
    return Term(term.kind, term.value, 1.0), None
