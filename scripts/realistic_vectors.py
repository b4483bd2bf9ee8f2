"""Unit vectors shaped like a real CLIP-style collection, hard to index: for benchmarks at 1M-20M vectors.

`synthetic_vectors.ClusteredVectors` (the easy case) is kinder than real embeddings. This generator is
fitted to a real collection (scripts/calibrate_vectors.py; docs/benchmarks.md, "Benchmark vectors
calibrated to a real collection"): 8,486 clip-art pictures of openclipart-png and tuxpaint-stamps-default
embedded with vecsearch's starter model (384-d), with English captions as text queries.

The model. Every vector lives in a low-dimensional semantic subspace (96 directions whose variance falls
as rank ** -0.8: most of it in a few dozen directions, like real embeddings) plus a little noise beside
it, and is normalised at the end:

    image = normalise(common + topic + sub-topic + family + spread * tightness(topic) * tail * draw + noise)

- a deep hierarchy with heavy tails: 1,000 topics (Zipf 1.1) x 64 sub-topics (Zipf 1.0) x 16 families
  (Zipf 1.3). Families are the near-duplicates of clip art and photo collections (series, recolourings,
  edits): their offsets come from a table of 65,536 rows indexed by a hash of (topic, sub-topic, family),
  so nothing grows with the collection;
- each topic has its own tightness (log-normal, sigma 2: some topics are series of near-copies, others
  loose) and each vector its own distance from its family (log-normal, sigma 1: a few lie far out);
- a weak shared direction (0.35): random pairs average cosine ~0.05 as in the real set (a real CLIP
  model's image cone is stronger, 0.4-0.5; the recall curves depend little on it);
- noise of length 0.08 in 128 further directions.

Text-like queries sit off the image manifold (the modality gap): a unit step along one fixed direction
that no image uses, plus a caption's meaning of length 0.6: its sub-topic and half its family offset,
moved by "wording" drift (2.25 x a draw with the images' spectrum) within the semantic subspace, plus
isotropic noise (0.65). Their nearest image has cosine ~0.25, as the real captions' does, and their true
neighbours lie in more IVF lists than an image query's.

What was calibrated (at the real collection's size, 7,986 vectors, IVF256,Flat, 500 held-out queries of
each kind): recall@10 against nprobe for image and text queries, the cosine of each query to its nearest
and 10th-nearest image, random-pair cosines, the PCA spectrum and the skew of IVF list sizes. At 384-d
recall@10 is within 0.04 of the real set's for image queries at every nprobe; text queries match within
0.02 at nprobe 1-2 and from 64 on, but are up to 0.06 easier at nprobe 8-32 (the real curve has a longer
tail). The real set has more near-duplicates (median nearest-image cosine 0.96 against 0.84) and less
skewed k-means lists (Gini 0.25 against 0.37; the largest list 3.9x the mean in both). docs/benchmarks.md has the side-by-side tables.

Other dimensions: every parameter is a length or a count in the semantic subspace, not per coordinate.
Images use 96 + 128 directions and the gap one more, embedded in `dim` by a random orthonormal basis; so
at any dim >= 225 the collection is the same up to a rotation, and only text queries' noise (spread over
all `dim` coordinates, fixed total length) changes, by little. Measured at 512-d the recall curves stay within
0.03 of the 384-d ones.

Chunks are generated from (seed, chunk number), so any part of a 20M set can be made again without the
rest; image queries and text queries come from their own streams, never from the collection's.
About 60,000 vectors/s at 512-d on 2 shared cores: 10M in under 3 minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

CHUNK = 100_000

# Streams of the random generator: the collection, held-out image queries, held-out text queries.
_COLLECTION, _IMAGE_QUERIES, _TEXT_QUERIES = 1, 2, 3


@dataclass(frozen=True)
class Params:
    """The model's parameters; lengths are relative (every vector is normalised at the end)."""

    semantic_dim: int = 96  # rank of the semantic subspace (the "manifold"), independent of `dim`
    decay: float = 0.8  # variance of semantic direction j falls as j ** -decay
    topics: int = 1000  # top-level topics
    subtopics: int = 64  # sub-topics of each topic
    families: int = 16  # families of variants (near-duplicates: series, recolourings) in each sub-topic
    zipf_topics: float = 1.1  # topic sizes ~ rank ** -zipf
    zipf_subtopics: float = 1.0
    zipf_families: float = 1.3
    common: float = 0.35  # shared direction of every image vector
    topic: float = 1.0  # length of a topic centre
    subtopic: float = 0.41  # length of a sub-topic offset
    family: float = 0.6  # length of a family offset
    spread: float = 0.03  # spread of a vector around its family (semantic subspace)
    topic_tightness: float = 2.0  # log-normal sigma of each topic's spread: tight series, loose topics
    tail: float = 1.0  # log-normal sigma of each vector's spread: a few vectors lie far from their family
    noise: float = 0.08  # isotropic noise outside the manifold (length of the whole noise vector)
    # text-like queries
    text_semantic: float = 0.6  # weight of the caption's meaning against the modality gap (length 1)
    text_common: float = 0.0  # the shared image direction, as seen from text
    text_level: float = 0.5  # 1: a caption names its family; 0: only its sub-topic
    text_drift: float = 2.25  # semantic noise of a caption (its wording): moves it within the semantic subspace
    text_tail: float = 0.0  # log-normal sigma of each caption's drift: a few captions are far off
    text_tilt: float = 1.0  # spectrum of that noise: 1 like the images' (along the manifold), 0 flat (across it)
    text_noise: float = 0.65  # isotropic noise of a caption


CALIBRATED = Params()
NOISE_RANK = 128  # images' noise lies in this many further directions (cheaper than all of `dim`)
_TABLE = 1 << 16  # rows of the table of family offsets, indexed by a hash of (topic, sub-topic, family)


class RealisticVectors:
    def __init__(self, dim: int = 512, seed: int = 0, params: Params | None = None) -> None:
        p = params or CALIBRATED
        if p.semantic_dim > dim - 1:
            p = replace(p, semantic_dim=dim - 1)
        self.dim = dim
        self.seed = seed
        self.params = p
        rng = np.random.default_rng([seed, 0])
        s = p.semantic_dim
        self.noise_rank = min(NOISE_RANK, dim - s - 1)
        # orthonormal rows: s semantic directions, the modality gap, then the directions of the images' noise
        basis = np.linalg.qr(rng.standard_normal((dim, s + 1 + self.noise_rank)))[0].T.astype(np.float32)
        self.gap = basis[s].copy()
        basis[s + 1 :] *= np.float32(p.noise / np.sqrt(max(self.noise_rank, 1)))
        self.basis = np.ascontiguousarray(np.delete(basis, s, axis=0))  # (s + noise_rank, dim)
        scale = np.arange(1, s + 1, dtype=np.float64) ** (-p.decay / 2)
        self.scale = (scale / np.linalg.norm(scale)).astype(np.float32)  # a draw * scale has length ~1
        tilted = scale**p.text_tilt
        self.text_scale = (tilted / np.linalg.norm(tilted)).astype(np.float32)
        self.common = np.zeros(s, np.float32)
        self.common[0] = 1.0
        self.centres = (rng.standard_normal((p.topics, s)) * self.scale * p.topic).astype(np.float32)
        self.offsets = (rng.standard_normal((p.topics, p.subtopics, s)) * self.scale * p.subtopic).astype(np.float32)
        self.family_table = (rng.standard_normal((_TABLE, s)) * self.scale * p.family).astype(np.float32)
        self.tightness = np.exp(p.topic_tightness * rng.standard_normal(p.topics)).astype(np.float32)
        self.topic_cdf = _zipf_cdf(p.topics, p.zipf_topics)
        self.subtopic_cdf = _zipf_cdf(p.subtopics, p.zipf_subtopics)
        self.family_cdf = _zipf_cdf(p.families, p.zipf_families)

    def _semantic(self, rng: np.random.Generator, size: int, level: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(family centres, topic of each) of `size` vectors, in semantic coordinates."""
        p = self.params
        topics = np.searchsorted(self.topic_cdf, rng.random(size, dtype=np.float32))
        subtopics = np.searchsorted(self.subtopic_cdf, rng.random(size, dtype=np.float32))
        families = np.searchsorted(self.family_cdf, rng.random(size, dtype=np.float32))
        key = (topics.astype(np.uint64) * np.uint64(p.subtopics) + subtopics.astype(np.uint64)) * np.uint64(
            p.families
        ) + families.astype(np.uint64)
        row = ((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(48)).astype(np.intp)  # 16-bit hash
        centres = self.centres[topics] + self.offsets[topics, subtopics]
        centres += np.float32(level) * self.family_table[row]
        return centres, topics

    def _images(self, rng: np.random.Generator, size: int) -> np.ndarray:
        p = self.params
        centres, topics = self._semantic(rng, size)
        spread = self.tightness[topics, None] * np.exp(
            np.float32(p.tail) * rng.standard_normal((size, 1), dtype=np.float32)
        )
        # one draw for the spread in the semantic subspace and the noise beside it, one matrix product
        draws = rng.standard_normal((size, len(self.basis)), dtype=np.float32)
        semantic = draws[:, : p.semantic_dim]
        semantic *= self.scale * (np.float32(p.spread) * spread)
        semantic += centres
        semantic += np.float32(p.common) * self.common
        return _unit(draws @ self.basis)

    def chunk(self, number: int, size: int = CHUNK) -> np.ndarray:
        """Unit float32 vectors of collection chunk `number`: the same for the same (seed, number)."""
        return self._images(np.random.default_rng([self.seed, _COLLECTION, number]), size)

    def collection(self, count: int) -> Iterator[np.ndarray]:
        """The first `count` vectors of the collection, chunk by chunk (CHUNK vectors each, the last shorter)."""
        for number, start in enumerate(range(0, count, CHUNK)):
            yield self.chunk(number, min(CHUNK, count - start))

    def image_queries(self, count: int) -> np.ndarray:
        """Held-out queries drawn like the collection (not part of it)."""
        return self._images(np.random.default_rng([self.seed, _IMAGE_QUERIES]), count)

    def text_queries(self, count: int) -> np.ndarray:
        """Held-out text-like queries: a caption's view of a family or sub-topic, off the image manifold."""
        p = self.params
        rng = np.random.default_rng([self.seed, _TEXT_QUERIES])
        centres, _ = self._semantic(rng, count, level=p.text_level)
        drift = rng.standard_normal((count, p.semantic_dim), dtype=np.float32) * self.text_scale
        drift *= np.exp(np.float32(p.text_tail) * rng.standard_normal((count, 1), dtype=np.float32))
        semantic = centres + np.float32(p.text_drift) * drift + np.float32(p.text_common) * self.common
        semantic = _unit(semantic) * np.float32(p.text_semantic)
        vectors = semantic @ self.basis[: p.semantic_dim] + self.gap
        vectors += rng.standard_normal((count, self.dim), dtype=np.float32) * np.float32(
            p.text_noise / np.sqrt(self.dim)
        )
        return _unit(vectors)


def _zipf_cdf(count: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0 + 1e-6
    return cdf.astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    return vectors.astype(np.float32, copy=False)
