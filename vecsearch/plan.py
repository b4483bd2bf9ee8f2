"""Which FAISS index an index should use, for its size and a memory budget, and how to tune it.

Small collections get exact search: it is fast enough and always right. Larger ones get an inverted
file (IVF) index, whose codes shrink as the memory budget demands: full vectors (Flat), 8-bit scalar
quantisation (SQ8), then product quantisation (PQ) whose candidates are re-scored from the exact vectors
kept in the database. (OPQ's rotation would raise PQ's recall a little, but its training took minutes
where PQ's takes seconds; re-scoring recovers the recall instead.) The search parameters (nprobe, and the re-rank depth for PQ) are the
smallest that reach a recall@10 target against exact search, measured on the index's own vectors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VecsearchError
from .sizes import human_bytes

EXACT = "IDMap2,Flat"
INDEX_TYPES = ("auto", "exact", "ivf-flat", "ivf-sq8", "ivf-pq")
# Exact search while the whole scan stays short: 50k x 512 floats is ~100 MB and a few ms a query.
EXACT_MAX_VECTORS = 50_000
# The aim is recall@10 >= 0.95 for new queries. The index's own vectors (each with itself left out) are
# easier queries than new ones: their neighbours sit in the lists they came from. Tuning to a higher
# recall on them leaves new queries at the aim (scripts/bench_search.py measures both).
TUNE_TARGET = 0.98
PLATEAU = 0.002  # recall gains smaller than this do not pay for doubling the work
TUNE_QUERIES = 200
TUNE_K = 10
# k-means is trained on a sample: this many points per list, at most (and at least, where there are).
TRAIN_POINTS_PER_LIST = 32
MAX_TRAIN_POINTS = 262_144  # k-means cost grows with lists x points: this keeps 16k lists to minutes
TRAIN_ITERATIONS = 10
# Re-plan when the collection is this many times larger or smaller than when the index was trained.
OUTGROWN_FACTOR = 4.0
# Many lists: find the nearest ones through a graph rather than a scan of every centroid. (At 4,096 lists
# the scan costs ~0.3 ms and finds the right lists; the graph would save little.)
HNSW_QUANTIZER_FROM_LISTS = 16384
PQ_SUBQUANTIZERS = (64, 32, 16, 8)
MIN_PQ_TRAINING = 256 * 16  # 8-bit PQ codebooks need a few thousand points to train on


class BudgetError(VecsearchError):
    """No index type fits the memory budget."""


@dataclass(frozen=True)
class Plan:
    """A FAISS index for `count` vectors: its factory string and why it was chosen."""

    family: str  # exact, ivf-flat, ivf-sq8 or ivf-pq
    factory: str
    nlist: int
    bytes_per_vector: float
    fixed_bytes: int
    reason: str

    @property
    def approximate(self) -> bool:
        return self.family != "exact"

    @property
    def reranks(self) -> bool:
        return self.family == "ivf-pq"

    def memory(self, count: int) -> int:
        return int(self.fixed_bytes + self.bytes_per_vector * count)

    @property
    def name(self) -> str:
        """How messages name the index: exact, IVF-Flat, IVF-SQ8 or IVF-PQ<m>."""
        return "exact" if self.family == "exact" else f"IVF-{self.factory.rsplit(',', 1)[-1]}"


def nlist_for(count: int) -> int:
    """About 4·√n lists (a power of two), with enough points per list to train and fill them."""
    if count < 2:
        return 1
    wanted = 4 * math.sqrt(count)
    nlist = 2 ** round(math.log2(wanted))
    nlist = min(nlist, max(1, count // TRAIN_POINTS_PER_LIST), 65536)
    return max(1, 2 ** int(math.log2(nlist)))


def _ivf_prefix(nlist: int) -> str:
    return f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_FROM_LISTS else f"IVF{nlist}"


def candidate(family: str, count: int, dim: int, pq_size: int | None = None) -> Plan:
    """The plan of one index family for `count` vectors of `dim` dimensions."""
    if family == "exact":
        # Raw vectors, plus the id map and its reverse hash table.
        return Plan("exact", EXACT, 0, 4 * dim + 40, 0, "")
    nlist = nlist_for(count)
    quantizer = nlist * dim * 4 + (nlist * 32 * 2 * 4 if nlist >= HNSW_QUANTIZER_FROM_LISTS else 0)
    prefix = _ivf_prefix(nlist)
    if family == "ivf-flat":
        return Plan(family, f"{prefix},Flat", nlist, 4 * dim + 8, quantizer, "")
    if family == "ivf-sq8":
        return Plan(family, f"{prefix},SQ8", nlist, dim + 8, quantizer, "")
    if family == "ivf-pq":
        m = pq_size or next((m for m in PQ_SUBQUANTIZERS if dim % m == 0 and m <= dim // 2), None)
        if m is None or dim % m:
            raise BudgetError(f"no product quantiser splits dimension {dim}")
        return Plan(family, f"{prefix},PQ{m}", nlist, m + 8, quantizer, "")
    raise ValueError(f"unknown index type {family!r} (choose from {', '.join(INDEX_TYPES)})")


def largest_fitting_pq(count: int, dim: int, budget: int) -> Plan | None:
    """IVF-PQ with the most sub-quantisers (the best recall) that fits the budget."""
    for m in PQ_SUBQUANTIZERS:
        if dim % m or m > dim // 2:
            continue
        plan = candidate("ivf-pq", count, dim, m)
        if plan.memory(count) <= budget:
            return plan
    return None


def default_budget() -> int:
    """Half of the memory this process may use (the machine's, or a container's limit if lower): room
    for the model, the database cache and everything else."""
    try:
        total = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total // 2


def choose(count: int, dim: int, max_memory: int | None = None, requested: str = "auto") -> Plan:
    """The index for `count` vectors within `max_memory` bytes (default: half this machine's memory)."""
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r} (choose from {', '.join(INDEX_TYPES)})")
    budget = max_memory if max_memory is not None else default_budget()
    size = human_bytes(budget)
    if requested != "auto":
        plan = candidate(requested, count, dim)
        return _with_reason(plan, f"{requested} was asked for")
    exact = candidate("exact", count, dim)
    if count <= EXACT_MAX_VECTORS and exact.memory(count) <= budget:
        return _with_reason(exact, f"{count:,} vectors: exact search is fast at this size")
    for family in ("ivf-flat", "ivf-sq8", "ivf-pq"):
        if family == "ivf-pq":
            fitting = largest_fitting_pq(count, dim, budget) if count >= MIN_PQ_TRAINING else None
            if fitting is None:
                break
            plan = fitting
        else:
            plan = candidate(family, count, dim)
        if plan.memory(count) <= budget:
            detail = (
                f"{count:,} vectors (more than {EXACT_MAX_VECTORS:,} for exact search)"
                if count > EXACT_MAX_VECTORS
                else f"{count:,} vectors: exact search needs {human_bytes(exact.memory(count))}"
            )
            return _with_reason(plan, f"{detail}; {human_bytes(plan.memory(count))} fits the {size} budget")
    smallest = _smallest_plan(count, dim)
    raise BudgetError(
        f"no index for {count:,} vectors of dimension {dim} fits in {size} (the smallest, {smallest.name}, needs "
        f"about {human_bytes(smallest.memory(count))}); raise --max-memory"
    )


def _smallest_plan(count: int, dim: int) -> Plan:
    """The index `choose` would consider for `count` vectors that needs the least memory: the budget that
    a budget error asks for. (Exact search only up to its threshold, PQ only with enough points to train
    its codebooks and a sub-quantiser count that splits the dimension; else 8-bit codes are the least.)"""
    options = [candidate("ivf-sq8", count, dim)]
    if count <= EXACT_MAX_VECTORS:
        options.append(candidate("exact", count, dim))
    splits = [m for m in PQ_SUBQUANTIZERS if dim % m == 0 and m <= dim // 2]
    if count >= MIN_PQ_TRAINING and splits:
        options.append(candidate("ivf-pq", count, dim, splits[-1]))
    return min(options, key=lambda plan: plan.memory(count))


def _with_reason(plan: Plan, reason: str) -> Plan:
    return Plan(plan.family, plan.factory, plan.nlist, plan.bytes_per_vector, plan.fixed_bytes, reason)


def outgrown(trained_on: int, count: int) -> bool:
    """Has the collection grown or shrunk so much that the lists no longer suit it?"""
    if trained_on <= 0:
        return True
    return count > trained_on * OUTGROWN_FACTOR or count * OUTGROWN_FACTOR < trained_on


def training_sample(count: int, nlist: int, seed: int = 0) -> np.ndarray:
    """Positions (of `count` vectors) that k-means trains on: a seeded sample, enough for every list."""
    wanted = min(max(nlist * TRAIN_POINTS_PER_LIST, MIN_PQ_TRAINING), MAX_TRAIN_POINTS)
    if count <= wanted:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=wanted, replace=False))


@dataclass(frozen=True)
class Tuning:
    nprobe: int
    rerank: int  # candidates fetched per wanted hit before exact re-scoring; 1 = none
    recall: float
    queries: int


SearchFn = Callable[[np.ndarray, int, int, int], np.ndarray]  # (queries, k, nprobe, rerank) -> ids


def tune(
    search: SearchFn,
    queries: np.ndarray,
    truth: np.ndarray,
    nlist: int,
    reranks: bool,
    target: float = TUNE_TARGET,
) -> Tuning:
    """The cheapest (nprobe, re-rank depth) whose recall@k against `truth` reaches `target`.

    Tries nprobe in powers of two; for re-ranked indexes each nprobe with growing depth. When the target
    is out of reach (compressed codes cap the recall, however many lists are probed), it stops once two
    doublings of nprobe gained less than PLATEAU and returns the cheapest setting within PLATEAU of the
    best it saw, so the recall recorded is always one that was measured.
    """
    depths = (4, 8, 16, 32) if reranks else (1,)
    seen: list[Tuning] = []
    previous: float | None = None
    flat = 0
    for nprobe in _powers_of_two(nlist):
        best_here = -1.0
        for depth in depths:
            score = recall_at_k(search(queries, truth.shape[1], nprobe, depth), truth)
            seen.append(Tuning(nprobe, depth, score, len(queries)))
            if score >= target:
                return seen[-1]
            best_here = max(best_here, score)
        flat = flat + 1 if previous is not None and best_here - previous < PLATEAU else 0
        if flat >= 2:
            break
        previous = best_here
    best = max(t.recall for t in seen)
    return next(t for t in seen if t.recall >= best - PLATEAU)


def _powers_of_two(limit: int) -> Iterable[int]:
    value = 1
    while value < limit:
        yield value
        value *= 2
    yield max(1, limit)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k ids that the approximate top-k holds, over all queries."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True))
    total = int((truth >= 0).sum())
    return hits / total if total else 1.0


def exact_top_k(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, query_ids: np.ndarray, k: int
) -> np.ndarray:
    """Exact top-k ids by inner product over vectors streamed in chunks, each query's own id left out."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for ids, vectors in chunks:
        scores = queries @ vectors.T
        scores[query_ids[:, None] == ids[None, :]] = -np.inf
        if scores.shape[1] > k:  # keep each chunk's own top k before the (small) merge
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(scores, part, axis=1)
            ids = np.take_along_axis(np.broadcast_to(ids, (len(queries), len(ids))), part, axis=1)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    return best_ids
