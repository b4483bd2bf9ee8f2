"""An index's FAISS file built and tuned from its database: the vectors as shards, the queries to tune on.

The database holds every vector, so it is the shard source of a build (`shard_build.py`): shards are
ranges of item ids, read in id order. Tuning draws its queries from it too: image items as image-like
queries and caption items as text-like ones, each with itself left out of the truth.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from . import shard_build
from .plan import EXACT, TUNE_K, TUNE_QUERIES, Plan, exact_top_k, training_sample
from .shard_build import ShardRunner, build_sharded
from .store import Store
from .tuning import STAND_IN, BudgetTuning, QuerySet, text_like_stand_in, tune_for_budget
from .vectors import VectorIndex

# Stored vectors are scanned in chunks this size when an index is tuned: ~15 MB of 384-d vectors at a
# time, which keeps the end-of-crawl peak flat however large the collection.
TUNE_CHUNK = 10_000
BUILDS = Path("jobs") / "faiss"  # under the index folder: the work of builds in progress
MIN_CAPTION_QUERIES = 20  # fewer captions than this say little about text queries: use the stand-in


class StoreSource:
    """The database's vectors as a shard source: positions are ranks in id order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ids = store.vector_ids()
        self.count = len(self.ids)

    def sample(self, positions: np.ndarray) -> np.ndarray:
        return self.store.vectors_of(self.ids[positions])[1]

    def shard(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.vectors_between(int(self.ids[start]), int(self.ids[stop - 1]))


def build_from_store(
    folder: Path,
    store: Store,
    dim: int,
    plan: Plan,
    target: Path,
    runner: ShardRunner | None = None,
    progress: bool = False,
) -> VectorIndex:
    """The planned index over every stored vector, trained on a seeded sample and filled by shards. An
    on-disk plan is written at `target` (lists and re-ranking codes beside it); an in-memory one is
    returned for the caller to save."""
    source = StoreSource(store)
    factory = plan.factory if source.count else EXACT
    if factory == EXACT:
        vectors = VectorIndex.create(dim, EXACT)
        for ids, vecs in store.iter_vectors():
            vectors.add(ids, vecs)
        return vectors
    on_disk = plan.storage == "disk"
    key = f"{factory}|{plan.storage}|{source.count}|{store.generation}|{source.ids[-1]}"
    work = folder / BUILDS / hashlib.sha256(key.encode()).hexdigest()[:16]
    for stale in (folder / BUILDS).glob("*") if (folder / BUILDS).is_dir() else ():
        if stale != work:  # an interrupted build of another generation or plan: it cannot be resumed
            shutil.rmtree(stale, ignore_errors=True)
    sample = training_sample(source.count, plan.nlist or 1)
    where = target if on_disk else work / "merged.faiss"
    vectors, _ = build_sharded(
        work, where, factory, dim, source, sample, on_disk=on_disk, rerank=on_disk and plan.reranks,
        runner=runner, progress=progress, keep_work=True, shard_size=shard_build.SHARD_SIZE,
    )  # fmt: skip
    if not on_disk:
        where.unlink(missing_ok=True)  # the caller saves it under its own name
    return vectors


def tune_stored(
    store: Store, vectors: VectorIndex, reranks: bool, min_recall: float, max_latency_ms: float
) -> tuple[BudgetTuning, str]:
    """Search parameters for the index, measured on its own image and caption vectors; returns the tuning
    and where the text-like queries came from."""
    image_ids, image_vectors = store.vectors_of(store.sample_item_ids(TUNE_QUERIES, kind="image"))
    if len(image_ids) == 0:
        image_ids, image_vectors = store.vectors_of(store.sample_item_ids(TUNE_QUERIES))
    caption_ids, caption_vectors = store.vectors_of(store.sample_item_ids(TUNE_QUERIES, seed=1, kind="caption"))
    text_source = "captions"
    if len(caption_ids) < MIN_CAPTION_QUERIES:
        text_source = STAND_IN
        caption_vectors = text_like_stand_in(image_vectors, TUNE_QUERIES)
        caption_ids = np.full(len(caption_vectors), -1, dtype=np.int64)
    queries = np.concatenate([image_vectors, caption_vectors])
    query_ids = np.concatenate([image_ids, caption_ids])
    truth = exact_top_k(store.iter_vectors(TUNE_CHUNK), queries, query_ids, TUNE_K)
    image = QuerySet(image_vectors, truth[: len(image_ids)], image_ids)
    text = QuerySet(caption_vectors, truth[len(image_ids) :], caption_ids)

    def run(batch: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        if depth <= 1:
            return vectors.search(batch, k, nprobe=nprobe)[1]
        if vectors.refine is not None:
            return vectors.search_refined(batch, k, depth, nprobe)[1]
        found = np.full((len(batch), k), -1, dtype=np.int64)
        _, ids = vectors.search(batch, k * depth, nprobe=nprobe)
        for row, (vector, candidates) in enumerate(zip(batch, ids, strict=True)):
            cand_ids, cand_vectors = store.vectors_of(candidates[candidates >= 0])
            order = np.argsort(-(cand_vectors @ vector), kind="stable")[:k]
            found[row, : len(order)] = cand_ids[order]
        return found

    tuning = tune_for_budget(run, image, text, vectors.nlist, reranks, min_recall, max_latency_ms)
    return tuning, text_source
