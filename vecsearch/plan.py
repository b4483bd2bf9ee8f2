"""Which FAISS index an index should use, for its size and a memory budget, and how to tune it.

Small collections get exact search: it is fast enough and always right. Larger ones get an inverted
file (IVF) index, whose codes shrink as the memory budget demands: full vectors (Flat), 8-bit scalar
quantisation (SQ8), then product quantisation (PQ, after a learned OPQ rotation from a million vectors);
compressed codes rank candidates roughly, so the best of them are re-scored on better ones (the exact
vectors kept in the database, or the half-precision re-ranking codes of an on-disk index). Large
collections get many lists found through an HNSW graph (FAISS's advice: 65,536 lists from 1M vectors),
trained by two-level k-means; 4-bit fast-scan PQ codes are planned only where the 8-bit codes of their
size are predicted too slow. Past the memory budget an index is built by shards and kept on disk,
memory-mapped (`shard_build.py`).

A family qualifies when it fits the memory budget and a simple cost model (measured scan costs per code,
times the share of lists a search usually probes) predicts it answers within the latency budget. The
search parameters are then measured, not predicted: `tuning.py` finds the cheapest nprobe (and re-rank
depth) whose recall@10 on image-like and text-like queries reaches the target within the latency budget.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import VecsearchError
from .sizes import human_bytes

EXACT = "IDMap2,Flat"
INDEX_TYPES = ("auto", "exact", "ivf-flat", "ivf-sq8", "ivf-pq", "ivf-pqfs", "ivf-opqfs")
STORAGES = ("auto", "memory", "disk")
# Families whose scores are approximate: their candidates are re-scored on better codes. (SQ8 too: on
# collections with near-duplicates its error reorders the true top 10, measured in docs/benchmarks.md.)
RERANKED = ("ivf-sq8", "ivf-pq", "ivf-pqfs", "ivf-opqfs")
# Families whose inverted lists FAISS can merge on disk and memory-map (fast-scan codes are packed in
# blocks that the on-disk lists cannot hold).
ON_DISK_FAMILIES = ("ivf-flat", "ivf-sq8", "ivf-pq")
DEFAULT_MAX_LATENCY_MS = 10.0
DEFAULT_MIN_RECALL = 0.95
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
MAX_TRAIN_POINTS = 1_048_576  # 16 a list at 65,536 lists; two-level k-means keeps this to minutes
TRAIN_ITERATIONS = 10
# Re-plan when the collection is this many times larger or smaller than when the index was trained.
OUTGROWN_FACTOR = 4.0
# Many lists: find the nearest ones through a graph rather than a scan of every centroid. (At 4,096 lists
# the scan costs ~0.3 ms and finds the right lists; the graph would save little.)
HNSW_QUANTIZER_FROM_LISTS = 16384
# From a million vectors, many short lists (about 16·√n, FAISS's 65,536 for 1M-10M): a search then scans
# far fewer codes for the same recall, and the graph finds the lists.
MANY_LISTS_FROM = 1_000_000
# From a million vectors, 8-bit PQ codes come after an OPQ rotation: on vectors calibrated to a real
# collection it raised text-like recall@10 from 0.82 to 0.94 at the same depth (docs/benchmarks.md); its
# training (a few minutes on 65,536 points) is small beside a build of that size.
OPQ_FROM = 1_000_000
MAX_LISTS = 65536
# Scan cost per code on one core (ns), measured with FAISS 1.15 on the development machine (2 cores,
# 512-d): Flat 0.47 per dimension, SQ8 0.28 per dimension, 8-bit PQ 0.38 per sub-quantiser, 4-bit
# fast-scan 0.05 per sub-quantiser. Only ratios matter much: tuning measures the real latency.
SCAN_NS = {"ivf-flat": 0.47, "ivf-sq8": 0.28, "ivf-pq": 0.38, "ivf-pqfs": 0.05, "ivf-opqfs": 0.05}
RERANK_NS_PER_CANDIDATE = 400.0  # one SQ8 or float vector fetched and scored
PQ_SUBQUANTIZERS = (64, 32, 16, 8)
MIN_PQ_TRAINING = 256 * 16  # 8-bit PQ codebooks need a few thousand points to train on


class BudgetError(VecsearchError):
    """No index type fits the memory budget."""


class SettingsError(VecsearchError):
    """An index setting that cannot be (an unknown type, a budget below zero)."""


@dataclass(frozen=True)
class Plan:
    """A FAISS index for `count` vectors: its factory string and why it was chosen."""

    family: str  # exact or one of INDEX_TYPES' IVF families
    factory: str
    nlist: int
    bytes_per_vector: float
    fixed_bytes: int
    reason: str
    storage: str = "memory"  # memory, or disk: inverted lists merged on disk and memory-mapped
    predicted_ms: float = 0.0  # the cost model's single-query latency

    @property
    def approximate(self) -> bool:
        return self.family != "exact"

    @property
    def reranks(self) -> bool:
        return self.family in RERANKED

    def memory(self, count: int) -> int:
        return int(self.fixed_bytes + self.bytes_per_vector * count)

    @property
    def name(self) -> str:
        """How messages name the index: exact, IVF-Flat, IVF-SQ8 or IVF-PQ<m>."""
        if self.family == "exact":
            return "exact"
        codes = self.factory.rsplit(",", 1)[-1]
        return f"IVF-{codes}" + (" on disk" if self.storage == "disk" else "")


def nlist_for(count: int) -> int:
    """About 4·√n lists (16·√n from a million vectors; a power of two), with enough points per list to
    train and fill them."""
    if count < 2:
        return 1
    wanted = (16 if count >= MANY_LISTS_FROM else 4) * math.sqrt(count)
    nlist = 2 ** round(math.log2(wanted))
    nlist = min(nlist, max(1, count // TRAIN_POINTS_PER_LIST), MAX_LISTS)
    return max(1, 2 ** int(math.log2(nlist)))


def _ivf_prefix(nlist: int) -> str:
    return f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_FROM_LISTS else f"IVF{nlist}"


def fast_scan_size(dim: int) -> int | None:
    """Sub-quantisers of the 4-bit fast-scan codes: the largest even divisor of the dimension up to one
    per 8 dimensions (32 bytes a 512-d vector), enough ranking signal for the re-ranking stage to recover
    the rest. None where no even number divides the dimension (fast-scan packs codes in pairs)."""
    return next((m for m in range(max(2, dim // 8), 1, -1) if m % 2 == 0 and dim % m == 0), None)


def probe_share(nlist: int) -> float:
    """The share of lists a search usually probes for recall@10 near 0.95 on text-like queries: about
    4/√nlist (vectors calibrated to a real collection: 64 of 2,048 lists at 200k)."""
    return min(1.0, 4.0 / math.sqrt(max(1, nlist)))


def predicted_latency_ms(plan: Plan, count: int, dim: int) -> float:
    """A single query's cost by the scan-cost model: the codes scanned in the probed lists, the centroids
    compared (or walked through the graph), and the re-ranked candidates."""
    if plan.family == "exact":
        return count * dim * SCAN_NS["ivf-flat"] / 1e6
    scanned = probe_share(plan.nlist) * count
    units = dim if plan.family in ("ivf-flat", "ivf-sq8") else _pq_units(plan)
    quantizer = (64 * 32 if plan.nlist >= HNSW_QUANTIZER_FROM_LISTS else plan.nlist) * dim * SCAN_NS["ivf-flat"]
    rerank = 10 * 16 * RERANK_NS_PER_CANDIDATE if plan.reranks else 0.0
    return (scanned * units * SCAN_NS[plan.family] + quantizer + rerank) / 1e6


def _pq_units(plan: Plan) -> int:
    codes = plan.factory.rsplit(",", 1)[-1]
    return int(codes[2:].split("x", 1)[0])


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
        if count >= OPQ_FROM:  # a learned rotation first: measured +0.12 text recall at the same depth
            return Plan(family, f"OPQ{m}_{dim},{prefix},PQ{m}", nlist, m + 8, quantizer + dim * dim * 4, "")
        return Plan(family, f"{prefix},PQ{m}", nlist, m + 8, quantizer, "")
    if family in ("ivf-pqfs", "ivf-opqfs"):
        m = pq_size or fast_scan_size(dim)
        if m is None:
            raise BudgetError(f"no fast-scan product quantiser splits dimension {dim} (an odd number)")
        rotation = f"OPQ{m}_{dim}," if family == "ivf-opqfs" else ""
        fixed = quantizer + (dim * dim * 4 if rotation else 0)
        return Plan(family, f"{rotation}{prefix},PQ{m}x4fs", nlist, m / 2 + 8, fixed, "")
    raise ValueError(f"unknown index type {family!r} (choose from {', '.join(INDEX_TYPES)})")


def check_index_settings(
    index_type: str,
    max_memory: int | None,
    max_latency_ms: float | None = None,
    min_recall: float | None = None,
    storage: str | None = None,
) -> None:
    if index_type not in INDEX_TYPES:
        raise SettingsError(f"unknown index type {index_type!r} (choose from {', '.join(INDEX_TYPES)})")
    if max_memory is not None and max_memory <= 0:
        raise SettingsError(f"max memory must be a positive number of bytes (got {max_memory})")
    if max_latency_ms is not None and not (0 < max_latency_ms < 1e6):
        raise SettingsError(f"max latency must be a positive number of milliseconds (got {max_latency_ms})")
    if min_recall is not None and not (0 < min_recall <= 1):
        raise SettingsError(f"the recall target is a share from 0 to 1 (got {min_recall})")
    if storage is not None and storage not in STORAGES:
        raise SettingsError(f"unknown storage {storage!r} (choose from {', '.join(STORAGES)})")


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


def choose(
    count: int,
    dim: int,
    max_memory: int | None = None,
    requested: str = "auto",
    max_latency_ms: float | None = None,
    storage: str = "auto",
) -> Plan:
    """The index for `count` vectors within `max_memory` bytes (default: half this machine's memory) that
    the cost model predicts answers within `max_latency_ms`; kept on disk when asked, or when nothing of a
    million vectors or more fits in memory."""
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r} (choose from {', '.join(INDEX_TYPES)})")
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r} (choose from {', '.join(STORAGES)})")
    budget = max_memory if max_memory is not None else default_budget()
    latency = max_latency_ms if max_latency_ms is not None else DEFAULT_MAX_LATENCY_MS
    size = human_bytes(budget)
    if requested != "auto":
        plan = candidate(requested, count, dim)
        on_disk = storage == "disk" or (storage == "auto" and plan.memory(count) > budget and count >= MANY_LISTS_FROM)
        if on_disk and plan.family not in ON_DISK_FAMILIES:
            raise BudgetError(f"{requested} cannot be kept on disk (choose from {', '.join(ON_DISK_FAMILIES)})")
        plan = _on_disk(plan) if on_disk else plan
        return _with_reason(plan, f"{requested} was asked for", count, dim)
    if storage != "disk":
        fitting = [plan for plan in _memory_options(count, dim) if plan.memory(count) <= budget]
        timed = [(predicted_latency_ms(plan, count, dim), plan) for plan in fitting]
        detail = _size_detail(count, dim)
        for cost, plan in timed:
            if cost <= latency and plan.family == "exact":
                return _with_reason(plan, f"{count:,} vectors: exact search is fast at this size", count, dim)
            if cost <= latency:
                return _with_reason(
                    plan, f"{detail}; {human_bytes(plan.memory(count))} fits the {size} budget", count, dim
                )
        if timed:
            cost, plan = min(timed, key=lambda pair: pair[0])
            return _with_reason(
                plan,
                f"{detail}; no index within the {size} budget is predicted under {latency:g} ms a query: the "
                f"fastest, {plan.name}, about {cost:.1f} ms",
                count,
                dim,
            )
        if storage == "memory" or count < MANY_LISTS_FROM:
            smallest = _smallest_plan(count, dim)
            raise BudgetError(
                f"no index for {count:,} vectors of dimension {dim} fits in {size} (the smallest, {smallest.name}, "
                f"needs about {human_bytes(smallest.memory(count))}); raise --max-memory"
            )
    disk = [_on_disk(candidate("ivf-sq8", count, dim)), _on_disk(candidate("ivf-pq", count, dim))]
    disk = [plan for plan in disk if plan.memory(count) <= budget]
    if not disk:
        need = min(candidate("ivf-pq", count, dim).fixed_bytes, candidate("ivf-sq8", count, dim).fixed_bytes)
        raise BudgetError(
            f"not even the list centroids of an on-disk index for {count:,} vectors fit in {size} (they need "
            f"about {human_bytes(need)}); raise --max-memory"
        )
    why = "kept on disk as asked" if storage == "disk" else f"nothing fits the {size} budget in memory: kept on disk"
    timed = [(predicted_latency_ms(plan, count, dim), plan) for plan in disk]
    within = [plan for cost, plan in timed if cost <= latency]
    plan = within[0] if within else min(timed, key=lambda pair: pair[0])[1]
    return _with_reason(plan, f"{count:,} vectors, {why}", count, dim)


def _memory_options(count: int, dim: int) -> list[Plan]:
    """In-memory families in order of preference (best recall per query first)."""
    options = [candidate("exact", count, dim)] if count <= EXACT_MAX_VECTORS else []
    options += [candidate("ivf-flat", count, dim), candidate("ivf-sq8", count, dim)]
    if count >= MIN_PQ_TRAINING:
        pq = [candidate("ivf-pq", count, dim, m) for m in PQ_SUBQUANTIZERS if dim % m == 0 and m <= dim // 2]
        if fast_scan_size(dim) is not None:
            # Byte for byte 8-bit codes rank candidates better (measured), fast-scan ones scan faster: they
            # come after the 8-bit codes of their size, so they win where those are too slow.
            fast = candidate("ivf-pqfs", count, dim)
            where = next((i for i, p in enumerate(pq) if p.bytes_per_vector < fast.bytes_per_vector), len(pq))
            pq.insert(where, fast)
        options += pq
    return options


def _size_detail(count: int, dim: int) -> str:
    if count > EXACT_MAX_VECTORS:
        return f"{count:,} vectors (more than {EXACT_MAX_VECTORS:,} for exact search)"
    exact = candidate("exact", count, dim)
    return f"{count:,} vectors: exact search needs {human_bytes(exact.memory(count))}"


def _on_disk(plan: Plan) -> Plan:
    """The same index with its inverted lists on disk: only the centroids (and the graph) stay resident."""
    return Plan(plan.family, plan.factory, plan.nlist, 0.0, plan.fixed_bytes, plan.reason, "disk")


def _smallest_plan(count: int, dim: int) -> Plan:
    """The index `choose` would consider for `count` vectors that needs the least memory: the budget that
    a budget error asks for."""
    return min(_memory_options(count, dim), key=lambda plan: plan.memory(count))


def _with_reason(plan: Plan, reason: str, count: int = 0, dim: int = 0) -> Plan:
    cost = predicted_latency_ms(plan, count, dim) if count and dim else plan.predicted_ms
    return replace(plan, reason=reason, predicted_ms=round(cost, 3))


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
