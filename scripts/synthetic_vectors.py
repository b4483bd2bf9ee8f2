"""The easy case, kept for the old benchmark: clustered vectors and a bulk loader; realistic_vectors.py is harder.

Real embedding sets are not uniform noise: they share a common direction (cosines between unrelated
pictures are around 0.3-0.5, not 0), they form topics of very different sizes, with sub-topics inside,
and their variance falls off across directions. The generator draws each vector as

    normalise(common + topic centre + sub-topic offset + noise with a 1/sqrt(rank) spectrum)

with topic sizes from a Zipf law. Chunks are generated from (seed, chunk number), so any part of a 10M
set can be made again without the rest. Text-like queries add a fixed offset (CLIP's "modality gap").
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

CHUNK = 100_000


class ClusteredVectors:
    def __init__(self, dim: int = 512, topics: int = 1000, subtopics: int = 20, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 0])
        self.dim = dim
        self.seed = seed
        self.common = _unit(rng.standard_normal(dim)) * 1.0
        self.centres = _unit(rng.standard_normal((topics, dim))) * 0.9
        self.offsets = _unit(rng.standard_normal((topics, subtopics, dim))) * 0.5
        weights = 1.0 / np.arange(1, topics + 1) ** 0.8
        self.topic_p = weights / weights.sum()
        spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
        self.noise_scale = (spectrum / np.linalg.norm(spectrum) * 0.55).astype(np.float32)
        self.rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        self.gap = _unit(rng.standard_normal(dim)) * 0.35

    def chunk(self, number: int, size: int = CHUNK, stream: int = 1) -> np.ndarray:
        """Vectors of chunk `number` (stream 1: the collection; other streams: held-out queries)."""
        rng = np.random.default_rng([self.seed, stream, number])
        topics = rng.choice(len(self.centres), size=size, p=self.topic_p)
        subtopics = rng.integers(0, self.offsets.shape[1], size=size)
        noise = (rng.standard_normal((size, self.dim)).astype(np.float32) * self.noise_scale) @ self.rotation
        vectors = self.common + self.centres[topics] + self.offsets[topics, subtopics] + noise
        return _unit(vectors).astype(np.float32)

    def collection(self, count: int) -> Iterator[np.ndarray]:
        for number, start in enumerate(range(0, count, CHUNK)):
            yield self.chunk(number, min(CHUNK, count - start))

    def queries(self, count: int, text_like: bool = False) -> np.ndarray:
        vectors = self.chunk(0, count, stream=2)
        if text_like:
            vectors = _unit(vectors + self.gap)
        return vectors.astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def fill_index(
    index: Any, vectors: np.ndarray | Iterator[np.ndarray], caption_every: int = 0, root: str = "synthetic"
) -> int:
    """Insert vectors as image items (and every n-th as a caption) of made-up files, then save.

    Goes through the index's own store and save path, as a crawl does, minus the model; for benchmarks
    and tests that need more items than a model could embed quickly.
    """
    store = index.store
    chunks = [vectors] if isinstance(vectors, np.ndarray) else vectors
    added = 0
    with store.transaction():
        root_id = store.add_root(os.fspath(index.path / root), root, {})
        gen = store.bump_generation()
        now = time.time_ns()
        for chunk in chunks:
            for vector in chunk:
                file_id = store.add_file(root_id, f"{added:08d}.jpg", 1, now, f"{added:064x}")
                if caption_every and added % caption_every == caption_every - 1:
                    store.add_item("caption", file_id, vector, gen, text=f"caption {added}", source="synthetic")
                else:
                    store.add_item("image", file_id, vector, gen)
                added += 1
    index.vector_file.rebuild()
    index.vector_file.save()
    return added
