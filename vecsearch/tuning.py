"""Search parameters measured against a recall target and a latency budget, for two kinds of query.

Text queries sit off the images' manifold (CLIP's modality gap): at a given nprobe they find fewer of
their true neighbours than picture queries do. So tuning measures both: image-like queries (the index's
own vectors, each with itself left out) and text-like ones (the index's own caption vectors, a free sample
of real text queries; without captions, a stand-in, see `text_like_stand_in`). For each setting, from the
cheapest up, it measures recall@10 (the overlap of the top-10 sets with exact search) in one batch, and
the latency of single queries on one thread, as a user's query runs. It returns the first setting that
meets both the recall target and the latency budget, or the best trade-off, with a note saying what was
not met.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .plan import PLATEAU, recall_at_k

LATENCY_QUERIES = 40  # single queries timed per kind and setting
# Past ten million vectors, near-duplicates crowd the PQ candidates: image-like recall@10 at 10M rose from
# 0.70 (depth 32) to 0.76, 0.82 and 0.86 at 64, 128 and 256 (docs/benchmarks.md). Deeper costs time, so a
# latency budget stops the climb.
RERANK_DEPTHS = (2, 4, 8, 16, 32, 64, 128)
STAND_IN = "stand-in: midpoints of random pairs of the index's vectors"

BatchSearch = Callable[[np.ndarray, int, int, int], np.ndarray]  # (queries, k, nprobe, depth) -> ids


@dataclass(frozen=True)
class Measured:
    recall: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, float]:
        return {"recall@10": round(self.recall, 4), "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3)}


@dataclass(frozen=True)
class BudgetTuning:
    nprobe: int
    rerank: int
    image: Measured
    text: Measured
    met: bool
    note: str

    @property
    def recall(self) -> float:
        return min(self.image.recall, self.text.recall)

    @property
    def p50_ms(self) -> float:
        return max(self.image.p50_ms, self.text.p50_ms)


@dataclass(frozen=True)
class QuerySet:
    """Queries of one kind with their exact top-k ids; `own` holds the ids of queries that are items of
    the index themselves (-1 for others), left out of what they find."""

    vectors: np.ndarray
    truth: np.ndarray
    own: np.ndarray | None = None

    def found(self, search: BatchSearch, rows: slice, nprobe: int, depth: int) -> np.ndarray:
        k = self.truth.shape[1]
        if self.own is None:
            return search(self.vectors[rows], k, nprobe, depth)
        ids = search(self.vectors[rows], k + 1, nprobe, depth)
        out = np.full((len(ids), k), -1, dtype=np.int64)
        for row, (found, own) in enumerate(zip(ids, self.own[rows], strict=True)):
            kept = found[(found != own) & (found >= 0)][:k]
            out[row, : len(kept)] = kept
        return out


def text_like_stand_in(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Text-like queries for an index without captions: normalised midpoints of random pairs of its
    vectors. Like text queries they fall between the pictures rather than on one, which makes them
    harder than the index's own vectors."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(vectors), size=count)
    second = rng.integers(0, len(vectors), size=count)
    mixed = vectors[first] + vectors[second]
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.maximum(norms, 1e-12)).astype(np.float32)


def tune_for_budget(
    search: BatchSearch,
    image: QuerySet,
    text: QuerySet,
    nlist: int,
    reranks: bool,
    min_recall: float,
    max_latency_ms: float,
    latency_queries: int = LATENCY_QUERIES,
) -> BudgetTuning:
    """The cheapest (nprobe, re-rank depth) whose recall@k reaches `min_recall` for both kinds of query
    with a single-query p50 within `max_latency_ms`; else the best trade-off, said in `note`."""
    seen: list[BudgetTuning] = []
    previous: float | None = None
    flat = 0
    for nprobe in _powers_of_two(nlist):
        best_here = -1.0
        for depth in RERANK_DEPTHS if reranks else (1,):
            tried = _measure(search, image, text, nprobe, depth, latency_queries)
            seen.append(tried)
            if tried.recall >= min_recall and tried.p50_ms <= max_latency_ms:
                return BudgetTuning(nprobe, depth, tried.image, tried.text, True, "")
            best_here = max(best_here, tried.recall)
            if tried.recall >= min_recall or tried.p50_ms > max_latency_ms:
                break  # deeper re-ranking only costs more
        if min(t.p50_ms for t in seen[-1:]) > 3 * max_latency_ms:
            break  # more lists only cost more
        flat = flat + 1 if previous is not None and best_here - previous < PLATEAU else 0
        if flat >= 2:
            break
        previous = best_here
    return _trade_off(seen, min_recall, max_latency_ms)


def _trade_off(seen: list[BudgetTuning], min_recall: float, max_latency_ms: float) -> BudgetTuning:
    within = [t for t in seen if t.p50_ms <= max_latency_ms]
    if within:
        best = max(t.recall for t in within)
        chosen = next(t for t in within if t.recall >= best - PLATEAU)
        note = (
            f"recall@10 target {min_recall:g} not reached within {max_latency_ms:g} ms: best {chosen.recall:.3f} "
            f"(text-like {chosen.text.recall:.3f}, image-like {chosen.image.recall:.3f}) at {chosen.p50_ms:.2f} ms"
        )
    else:
        reaching = [t for t in seen if t.recall >= min_recall]
        chosen = reaching[0] if reaching else min(seen, key=lambda t: t.p50_ms)
        note = (
            f"no setting answers within {max_latency_ms:g} ms (the quickest measured needs {chosen.p50_ms:.2f} ms, "
            f"recall@10 {chosen.recall:.3f})"
        )
    return BudgetTuning(chosen.nprobe, chosen.rerank, chosen.image, chosen.text, False, note)


def _measure(
    search: BatchSearch, image: QuerySet, text: QuerySet, nprobe: int, depth: int, latency_queries: int
) -> BudgetTuning:
    results = []
    for queries in (image, text):
        recall = recall_at_k(queries.found(search, slice(None), nprobe, depth), queries.truth)
        times = []
        with single_thread():
            for row in range(min(latency_queries, len(queries.vectors))):
                start = time.perf_counter()
                queries.found(search, slice(row, row + 1), nprobe, depth)
                times.append((time.perf_counter() - start) * 1000)
        p50, p99 = np.percentile(times, [50, 99]) if times else (0.0, 0.0)
        results.append(Measured(recall, float(p50), float(p99)))
    return BudgetTuning(nprobe, depth, results[0], results[1], False, "")


class single_thread:  # noqa: N801 - used as a context manager
    """FAISS on one thread for the duration: a single query is timed as a user's query runs."""

    def __enter__(self) -> None:
        import faiss

        self.faiss: Any = faiss
        self.threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        self.faiss.omp_set_num_threads(self.threads)


def _powers_of_two(limit: int) -> Iterable[int]:
    value = 1
    while value < limit:
        yield value
        value *= 2
    yield max(1, limit)
