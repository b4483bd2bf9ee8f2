"""Promises of the vector index and its planner that no other test pinned down: each test names one.

They were written against the mutants of `vecsearch/vectors.py` and `vecsearch/plan.py` that survived
`tests/test_plan.py` and `tests/test_hostile.py` (see scripts/results/mutation-vectors-survivors.md): each
fails on a change to the code that breaks the promise it names. Everything runs on real FAISS with small,
seeded data; sizes of indexes too large to build are checked against what FAISS says one entry takes.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

import vecsearch.plan as plan_module
import vecsearch.vectors as vectors_module
from vecsearch import faults
from vecsearch.errors import IndexCorruptError
from vecsearch.plan import (
    EXACT,
    EXACT_MAX_VECTORS,
    MAX_TRAIN_POINTS,
    MIN_PQ_TRAINING,
    PLATEAU,
    TRAIN_POINTS_PER_LIST,
    BudgetError,
    SearchFn,
    candidate,
    choose,
    default_budget,
    exact_top_k,
    nlist_for,
    outgrown,
    recall_at_k,
    training_sample,
    tune,
)
from vecsearch.sizes import parse_size
from vecsearch.vectors import VectorIndex, file_sha256

GiB = 1 << 30
NO_LATENCY_LIMIT = 1e9  # ms: for the promises of the memory budget alone
ID_BYTES = np.dtype(np.int64).itemsize  # FAISS keeps each vector's id as a 64-bit integer


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """FAISS on one thread: k-means and graph building are then the same on every run."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# --- the plan: which index, and what it costs --------------------------------------------------------


def test_up_to_50000_vectors_are_searched_exactly_and_the_reason_past_that_is_true() -> None:
    """Exact search up to 50,000 vectors (50,000 included), never past that, and (docs/cli.md) "exact
    search too is held to the latency budget"."""
    assert EXACT_MAX_VECTORS == 50_000
    assert choose(50_000, 512, 8 * GiB, max_latency_ms=NO_LATENCY_LIMIT).family == "exact"
    assert choose(50_001, 512, 8 * GiB, max_latency_ms=NO_LATENCY_LIMIT).family == "ivf-flat"
    # 50,000 vectors that do not fit exactly: the reason is the budget, not the count
    tight = choose(50_000, 512, 50 << 20, max_latency_ms=NO_LATENCY_LIMIT)
    assert tight.approximate and "exact search needs" in tight.reason and "more than" not in tight.reason
    # The default 10 ms: a scan of 50,000 x 384 is predicted at ~9 ms, of 50,000 x 512 at ~12 ms
    exact = candidate("exact", 50_000, 384)
    assert (
        plan_module.predicted_latency_ms(exact, 50_000, 384)
        <= 10
        < plan_module.predicted_latency_ms(exact, 50_000, 512)
    )
    assert choose(50_000, 384, 8 * GiB).family == "exact"
    assert choose(50_000, 512, 8 * GiB).family == "ivf-flat"


def test_an_index_that_needs_exactly_the_budget_fits_it() -> None:
    """A budget is a maximum: each family is chosen at exactly its size, and not one byte below it."""
    unlimited = {"max_latency_ms": NO_LATENCY_LIMIT}
    exact = candidate("exact", 10_000, 512).memory(10_000)
    assert choose(10_000, 512, exact, **unlimited).family == "exact"
    assert choose(10_000, 512, exact - 1, **unlimited).family != "exact"
    flat = candidate("ivf-flat", 1_000_000, 512).memory(1_000_000)
    assert choose(1_000_000, 512, flat, **unlimited).family == "ivf-flat"
    assert choose(1_000_000, 512, flat - 1, **unlimited).family == "ivf-sq8"
    sq8 = candidate("ivf-sq8", 1_000_000, 512).memory(1_000_000)
    assert choose(1_000_000, 512, sq8, **unlimited).family == "ivf-sq8"
    assert choose(1_000_000, 512, sq8 - 1, **unlimited).factory.endswith(",PQ64")
    # 8-bit PQ by decreasing sub-quantisers, after an OPQ rotation (dim² floats) from a million vectors;
    # the fast-scan codes (PQ64x4fs, 40 bytes for 512 dimensions, no rotation) come after PQ32 (as many
    # bytes a vector), so a byte below PQ32's size they fit, and a byte below theirs PQ16 does.
    sizes = {m: candidate("ivf-pq", 10_000_000, 512, m).memory(10_000_000) for m in (64, 32, 16, 8)}
    assert all(candidate("ivf-pq", 10_000_000, 512, m).factory.startswith(f"OPQ{m}_512,") for m in sizes)
    fast_size = candidate("ivf-pqfs", 10_000_000, 512).memory(10_000_000)
    assert fast_size == sizes[32] - 512 * 512 * 4
    for larger, smaller in ((64, 32), (16, 8)):
        assert choose(10_000_000, 512, sizes[larger], **unlimited).factory.endswith(f",PQ{larger}")
        assert choose(10_000_000, 512, sizes[larger] - 1, **unlimited).factory.endswith(f",PQ{smaller}")
    assert choose(10_000_000, 512, sizes[32], **unlimited).factory.endswith(",PQ32")
    assert choose(10_000_000, 512, sizes[32] - 1, **unlimited).factory.endswith(",PQ64x4fs")
    assert choose(10_000_000, 512, fast_size - 1, **unlimited).factory.endswith(",PQ16")
    assert choose(10_000_000, 512, sizes[8], **unlimited).factory.endswith(",PQ8")
    # With a latency budget that PQ64 and PQ32 miss, the fast-scan codes at exactly their size; a byte
    # less, the next option that is both small and fast enough (PQ16 is predicted too slow: PQ8).
    latency = {
        m: plan_module.predicted_latency_ms(candidate("ivf-pq", 10_000_000, 512, m), 10_000_000, 512) for m in sizes
    }
    fast_scan = candidate("ivf-pqfs", 10_000_000, 512)
    budget_ms = plan_module.predicted_latency_ms(fast_scan, 10_000_000, 512)
    assert min(latency[64], latency[32], latency[16]) > budget_ms >= latency[8]
    at_size = choose(10_000_000, 512, fast_scan.memory(10_000_000), max_latency_ms=budget_ms)
    assert at_size.family == "ivf-pqfs" and at_size.factory.endswith(",PQ64x4fs")
    below = choose(10_000_000, 512, fast_scan.memory(10_000_000) - 1, max_latency_ms=budget_ms)
    assert below.family == "ivf-pq" and below.factory.endswith(",PQ8")


@pytest.mark.parametrize(
    ("count", "dim", "m"),
    [(10_000_000, 512, 16), (10_000_000, 512, 8), (1_000_000, 128, 64), (1_000_000, 40, 8)],
)
def test_pq_gets_the_most_sub_quantisers_that_fit_and_split_the_dimension(count: int, dim: int, m: int) -> None:
    """IVF-PQ with the most sub-quantisers (the best recall) within the budget, m dividing the dimension
    and at most half of it (PQ64 on 128 dimensions; on 40 dimensions only PQ8 splits it). The 4-bit
    fast-scan codes come after the 8-bit codes of their size or larger (byte for byte those rank better):
    on memory alone they never displace PQm from a budget of exactly PQm's size, even where they fit it."""
    budget = candidate("ivf-pq", count, dim, m).memory(count)
    plan = choose(count, dim, budget, max_latency_ms=NO_LATENCY_LIMIT)
    assert plan.family == "ivf-pq" and plan.factory.endswith(f",PQ{m}")
    assert plan.memory(count) <= budget
    larger = [k for k in (64, 32, 16, 8) if k > m and dim % k == 0 and k <= dim // 2]
    assert all(candidate("ivf-pq", count, dim, k).memory(count) > budget for k in larger)
    assert VectorIndex.create(dim, plan.factory).nlist == plan.nlist  # FAISS builds what was planned


def test_fast_scan_codes_smaller_than_every_8_bit_size_are_the_last_resort_in_memory() -> None:
    """Where the fast-scan codes are smaller than every 8-bit PQ that splits the dimension (40
    dimensions: PQ4x4fs, 10 bytes, against PQ8's 16), they come last: chosen just below PQ8's size."""
    count, dim = 100_000, 40
    pq8 = candidate("ivf-pq", count, dim, 8).memory(count)
    fast_scan = candidate("ivf-pqfs", count, dim)
    assert fast_scan.factory.endswith(",PQ4x4fs") and fast_scan.memory(count) < pq8
    assert choose(count, dim, pq8, max_latency_ms=NO_LATENCY_LIMIT).factory.endswith(",PQ8")
    below = choose(count, dim, pq8 - 1, max_latency_ms=NO_LATENCY_LIMIT)
    assert below.family == "ivf-pqfs" and below.factory == fast_scan.factory
    assert choose(count, dim, fast_scan.memory(count), max_latency_ms=NO_LATENCY_LIMIT).family == "ivf-pqfs"
    with pytest.raises(BudgetError):
        choose(count, dim, fast_scan.memory(count) - 1, max_latency_ms=NO_LATENCY_LIMIT)


def test_a_requested_pq_index_uses_a_size_that_splits_the_dimension_or_says_none_does() -> None:
    assert choose(100_000, 40, 8 * GiB, "ivf-pq").factory.endswith(",PQ8")
    with pytest.raises(BudgetError, match="dimension 12"):
        choose(100_000, 12, 8 * GiB, "ivf-pq")


def test_pq_is_planned_only_with_enough_vectors_to_train_its_codebooks() -> None:
    """PQ's codebooks (8-bit, and the 4-bit fast-scan ones) train on 4,096 points at least: fewer
    vectors get no PQ plan of either kind."""
    assert MIN_PQ_TRAINING == 4096
    pq32 = candidate("ivf-pq", 4096, 512, 32).memory(4096)
    assert choose(4096, 512, pq32).factory.endswith(",PQ32")
    # the fast-scan codes, as large as PQ32's, where PQ32 is predicted too slow
    fast_scan = candidate("ivf-pqfs", 4096, 512)
    budget_ms = plan_module.predicted_latency_ms(fast_scan, 4096, 512)
    assert plan_module.predicted_latency_ms(candidate("ivf-pq", 4096, 512, 32), 4096, 512) > budget_ms
    assert fast_scan.memory(4096) == pq32
    assert choose(4096, 512, pq32, max_latency_ms=budget_ms).family == "ivf-pqfs"
    pq8 = candidate("ivf-pq", 4096, 512, 8).memory(4096)  # smaller than the fast-scan codes
    assert choose(4096, 512, pq8).factory.endswith(",PQ8")
    for budget in (candidate("ivf-pqfs", 4095, 512).memory(4095), candidate("ivf-pq", 4095, 512, 8).memory(4095)):
        with pytest.raises(BudgetError):
            choose(4095, 512, budget)
        with pytest.raises(BudgetError):
            choose(4095, 512, budget, max_latency_ms=NO_LATENCY_LIMIT)


def test_the_reason_says_what_was_asked_for_or_which_budget_the_index_fits() -> None:
    """The reason goes in the manifest and is printed (docs/cli.md)."""
    assert "ivf-sq8" in choose(100_000, 384, 4 * GiB, "ivf-sq8").reason
    assert choose(1_000_000, 512, 8 * GiB).reason.endswith("fits the 8.0 GiB budget")


@pytest.mark.parametrize(
    ("count", "dim", "smallest", "storage"),
    [
        (4_000, 512, "IVF-SQ8", "auto"),  # too few vectors to train PQ of either kind
        (4_096, 512, "IVF-PQ8", "auto"),  # 16 bytes a vector; the fast-scan codes take 40
        (1_000_000, 512, "IVF-PQ8", "memory"),  # from a million, "auto" would go on disk
        (1_000_000, 40, r"IVF-PQ\d+x4fs", "memory"),  # 4-bit codes, in pairs that split 40
        (1_000_000, 16, "IVF-PQ2x4fs", "memory"),  # 9 bytes, less than PQ8's 16
        (100_000, 20, "IVF-PQ2x4fs", "auto"),  # 8 and 16 do not divide 20: no 8-bit PQ, but fast-scan PQ2
        (100_000, 12, "IVF-PQ2x4fs", "auto"),  # likewise
        (1, 512, "exact", "auto"),
    ],
)
def test_a_budget_error_names_the_smallest_index_and_a_budget_that_is_enough(
    count: int, dim: int, smallest: str, storage: str
) -> None:
    """The error asks the user to raise --max-memory: to the size it names, which must be enough (and
    not much more than needed). The smallest is the smallest of every in-memory option, and FAISS
    builds it."""
    with pytest.raises(BudgetError) as error:
        choose(count, dim, 64, storage=storage)
    message = str(error.value)
    assert "raise --max-memory" in message and re.search(f"the smallest, {smallest},", message), message
    found = re.search(r"needs about ([0-9.]+) (B|KiB|MiB|GiB)", message)
    assert found is not None, message
    stated = parse_size(found.group(1) + found.group(2))  # printed to one decimal: within 5 %
    enough = int(stated * 1.06)
    plan = choose(count, dim, enough, storage=storage)
    assert plan.memory(count) <= enough
    VectorIndex.create(dim, plan.factory)  # a plan FAISS can build
    with pytest.raises(BudgetError):
        choose(count, dim, int(stated * 0.94), storage=storage)


def test_list_counts_are_about_four_root_n_and_each_list_has_its_training_points() -> None:
    """docs/cli.md: about 4·√n lists (16·√n from a million vectors, at most 65,536), a power of two; never
    more lists than 32 points each can train (so one or a few vectors get one list), nor more than the
    capped training sample gives 4 points each."""
    for count in (0, 1, 2, 3, 10, 31, 63, 64, 100, 1_000, 5_000):
        lists = nlist_for(count)
        assert lists == 1 << int(math.log2(lists))
        assert lists <= max(1, count // TRAIN_POINTS_PER_LIST), count
    for count in (50_000, 100_000, 999_999):  # where 32 points a list allow it
        assert abs(math.log2(nlist_for(count)) - math.log2(4 * math.sqrt(count))) <= 0.5, count
    for count in (1_000_000, 3_000_000, 10_000_000):
        assert abs(math.log2(nlist_for(count)) - math.log2(16 * math.sqrt(count))) <= 0.5, count
    assert nlist_for(100_000_000) == 65536  # 16·√n would be 160,000
    assert nlist_for(100_000) == 1024  # the IVF1024 of docs/benchmarks.md
    assert MAX_TRAIN_POINTS // nlist_for(10**9) >= 4


FAMILIES = [("exact", 10_000), ("ivf-flat", 100_000), ("ivf-sq8", 100_000), ("ivf-pq", 100_000), ("ivf-pqfs", 100_000)]


@pytest.mark.parametrize(("family", "count"), FAMILIES)
@pytest.mark.parametrize("dim", [32, 512])
def test_the_plan_counts_what_the_faiss_index_it_names_holds(family: str, count: int, dim: int) -> None:
    """The memory a plan is chosen by is the FAISS index's: each code and its id per vector, the
    centroids once (exact: the vectors, ids and a reverse-map entry, nothing fixed), and its list count
    is the built index's."""
    plan = choose(count, dim, 64 * GiB, family)
    built = VectorIndex.create(dim, plan.factory)
    assert plan.nlist == built.nlist
    if family == "exact":
        stored = faiss.downcast_index(built.index.index).code_size + ID_BYTES
        # plus an entry of the reverse id map (key, value, next pointer, allocator header, bucket)
        assert stored + 16 <= plan.bytes_per_vector <= stored + 48
        assert plan.fixed_bytes == 0
        return
    ivf = faiss.extract_index_ivf(built.index)
    assert plan.bytes_per_vector == ivf.code_size + ID_BYTES
    assert plan.fixed_bytes == plan.nlist * faiss.downcast_index(ivf.quantizer).code_size


# --- graph quantiser (from 16,384 lists) -------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_index() -> tuple[VectorIndex, np.ndarray]:
    """An IVF index whose 2,048 lists are found through an HNSW graph, with 4 vectors a list."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        data = unit_rows(8192, 32, seed=5)
        index = VectorIndex.create(32, "IVF2048_HNSW32,Flat")
        index.train(data, iterations=4)
        index.add(np.arange(len(data), dtype=np.int64), data)
    finally:
        faiss.omp_set_num_threads(before)
    return index, unit_rows(50, 32, seed=6)


def test_a_graph_quantizer_is_counted_with_its_links(graph_index: tuple[VectorIndex, np.ndarray]) -> None:
    """From 16,384 lists the centroids sit in an HNSW graph: the plan counts each node's links, at least
    FAISS's level-0 links and at most all it holds a node (upper levels, level and offset)."""
    plan = choose(1_000_000, 16, 64 * GiB, "ivf-flat")
    assert plan.nlist == 16384 and "_HNSW32" in plan.factory
    planned = VectorIndex.create(16, plan.factory)  # held: the quantizer lives as long as its index
    graph = faiss.downcast_index(faiss.extract_index_ivf(planned.index).quantizer)
    links = (plan.fixed_bytes - plan.nlist * faiss.downcast_index(graph.storage).code_size) / plan.nlist
    built = faiss.downcast_index(faiss.extract_index_ivf(graph_index[0].index).quantizer)
    hnsw = built.hnsw
    held = sum(faiss.vector_to_array(a).nbytes for a in (hnsw.neighbors, hnsw.levels, hnsw.offsets)) / built.ntotal
    assert hnsw.nb_neighbors(0) * 4 <= links <= held


@pytest.mark.parametrize("nprobe", [16, 128])
def test_a_graph_quantizer_finds_the_nearest_lists(
    graph_index: tuple[VectorIndex, np.ndarray], nprobe: int, one_thread: None
) -> None:
    """The graph is searched well beyond the lists it must return (docs/benchmarks.md: with too narrow a
    search it missed near lists and recall plateaued): the lists probed are the nearest ones, as an
    exhaustive search of the graph finds them."""
    index, queries = graph_index
    _, found = index.search(queries, index.ntotal, nprobe=nprobe)  # every vector of the probed lists
    params = faiss.SearchParametersIVF(nprobe=nprobe)
    wide = faiss.SearchParametersHNSW(efSearch=index.nlist)
    params.quantizer_params = wide
    _, truth = index.index.search(queries, index.ntotal, params=params)
    covered = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / (t >= 0).sum()
        for f, t in zip(found, truth, strict=True)
    ]
    assert np.mean(covered) >= 0.999


# --- default budget ----------------------------------------------------------------------------------


def _machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pages: int | None, v2: str | None, v1: str | None
) -> None:
    """A machine with `pages` pages of 4 KiB (None: it cannot say) and these cgroup limit files."""
    files = {}
    for name, text in (("/sys/fs/cgroup/memory.max", v2), ("/sys/fs/cgroup/memory/memory.limit_in_bytes", v1)):
        if text is not None:
            files[name] = tmp_path / f"limit{len(files)}"
            files[name].write_text(text + "\n")
    monkeypatch.setattr(plan_module, "Path", lambda name: files.get(name, tmp_path / "absent"))
    if pages is None:
        monkeypatch.delattr(os, "sysconf", raising=False)
        return

    def sysconf(name: str) -> int:
        sizes = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": pages}
        if name not in sizes:
            raise ValueError(f"unrecognized configuration name {name!r}")
        return sizes[name]

    monkeypatch.setattr(os, "sysconf", sysconf)


def test_the_default_budget_is_half_the_machines_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _machine(monkeypatch, tmp_path, 1_000_000, None, None)
    assert default_budget() == 4096 * 1_000_000 // 2
    _machine(monkeypatch, tmp_path, 1_000_000, "max", None)  # cgroup v2 without a limit
    assert default_budget() == 4096 * 1_000_000 // 2


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_default_budget_is_half_a_containers_lower_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str
) -> None:
    limit = str(1 << 30)
    _machine(monkeypatch, tmp_path, 1_000_000, limit if version == "v2" else None, limit if version == "v1" else None)
    assert default_budget() == 1 << 29


def test_a_system_that_cannot_report_its_memory_still_gets_a_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without sysconf (Windows) a size is assumed: the budget is still a size, and a container's limit
    still caps it."""
    _machine(monkeypatch, tmp_path, None, None, None)
    assert default_budget() >= 1 << 30
    _machine(monkeypatch, tmp_path, None, str(2 << 30), None)
    assert default_budget() == 1 << 30


# --- re-planning and training ------------------------------------------------------------------------


def test_lists_are_retrained_after_four_fold_growth_only() -> None:
    """docs/cli.md: later crawls add to the lists without retraining, until four-fold growth (even from
    one vector); lists with no record of their training are always retrained."""
    assert not outgrown(1, 2) and not outgrown(1, 3) and outgrown(1, 5)
    assert outgrown(0, 100)


def test_the_training_sample_is_seeded_distinct_and_sized_by_the_rule() -> None:
    """k-means trains on a seeded sample (docs/cli.md) of 32 points a list, at least 4,096 and at most
    1,048,576 distinct vectors; all of them when there are fewer."""
    sample = training_sample(100_000, 1024)
    assert len(sample) == 1024 * TRAIN_POINTS_PER_LIST
    assert len(np.unique(sample)) == len(sample) and sample.min() >= 0 and sample.max() < 100_000
    assert np.array_equal(sample, training_sample(100_000, 1024))
    assert len(training_sample(100_000, 16)) == MIN_PQ_TRAINING
    assert len(training_sample(1_000_000, 16384)) == 16384 * TRAIN_POINTS_PER_LIST
    assert len(training_sample(10_000_000, 65536)) == MAX_TRAIN_POINTS == 16 * 65536
    assert np.array_equal(training_sample(3_000, 64), np.arange(3_000))


# --- tuning and recall ---------------------------------------------------------------------------------


def _recalls(by_nprobe: dict[int, int], total: int, tried: list[tuple[int, int]]) -> tuple[SearchFn, np.ndarray]:
    """A search whose recall at each nprobe is by_nprobe[nprobe] / total (one query of `total` ids)."""
    truth = np.arange(total).reshape(1, total)

    def search(queries: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        tried.append((nprobe, depth))
        found = truth.copy()
        found[0, by_nprobe.get(nprobe, max(by_nprobe.values())) :] = -1
        return found

    return search, truth


def test_indexes_without_codes_to_rescore_are_tuned_without_rerank() -> None:
    """docs/cli.md: the re-rank depth is tuned for PQ only."""
    tried: list[tuple[int, int]] = []
    search, truth = _recalls({1: 5, 2: 9, 4: 10}, 10, tried)
    result = tune(search, np.zeros((1, 4)), truth, nlist=64, reranks=False, target=0.95)
    assert result.rerank == 1 and {depth for _, depth in tried} == {1}
    assert result.nprobe == 4


def test_a_gain_of_exactly_the_plateau_is_a_gain() -> None:
    """Gains "smaller than" PLATEAU do not pay: one of exactly PLATEAU does, and tuning goes on."""
    gain = 2 / 1000 - 0 / 1000
    assert gain == PLATEAU  # exactly, in floats: the boundary itself
    tried: list[tuple[int, int]] = []
    search, truth = _recalls({1: 0, 2: 2, 4: 2, 8: 990}, 1000, tried)
    result = tune(search, np.zeros((1, 4)), truth, nlist=64, reranks=False)
    assert result.nprobe == 8 and result.recall >= 0.98


def test_a_recall_that_just_reaches_the_target_stops_the_tuning() -> None:
    tried: list[tuple[int, int]] = []
    search, truth = _recalls({1: 2, 2: 4, 4: 5, 8: 10}, 10, tried)
    result = tune(search, np.zeros((1, 4)), truth, nlist=64, reranks=False, target=0.5)
    assert result.nprobe == 4 and [n for n, _ in tried] == [1, 2, 4]


def test_out_of_reach_tuning_takes_the_cheapest_setting_within_the_plateau_of_the_best() -> None:
    """The cheapest setting "within PLATEAU of the best" may be exactly PLATEAU below it."""
    best, cheapest = 402 / 1000, 400 / 1000
    assert best - PLATEAU == cheapest  # exactly, in floats: the boundary itself
    tried: list[tuple[int, int]] = []
    search, truth = _recalls({1: 400, 2: 402, 4: 402, 8: 402}, 1000, tried)
    result = tune(search, np.zeros((1, 4)), truth, nlist=64, reranks=False)
    assert result.nprobe == 1 and result.recall == pytest.approx(0.4)


def test_a_one_list_index_is_tuned_at_one_probe() -> None:
    """nprobe counts lists the index has: one list, one probe."""
    tried: list[tuple[int, int]] = []
    search, truth = _recalls({1: 10}, 10, tried)
    result = tune(search, np.zeros((1, 4)), truth, nlist=1, reranks=False)
    assert result.nprobe == 1 and [n for n, _ in tried] == [1]


def test_recall_without_true_neighbours_is_one_and_rows_must_pair_up() -> None:
    """A query with nothing else in the index has nothing to miss; results and truth that do not pair up
    query for query are an error, not a recall over the rows that happen to pair."""
    empty = np.full((2, 10), -1, dtype=np.int64)
    assert recall_at_k(empty, empty) == 1.0
    truth = np.arange(20).reshape(2, 10)
    with pytest.raises(ValueError):
        recall_at_k(truth[:1], truth)


def test_exact_top_k_leaves_each_query_out_even_with_fewer_items_than_k() -> None:
    """Each query's own id is left out, and slots with no item hold -1 (as FAISS's do), even when the
    collection has fewer items than k."""
    data = unit_rows(20, 4, seed=0)
    ids = np.arange(20, dtype=np.int64) * 2 + 1
    chunks = [(ids[i : i + 7], data[i : i + 7]) for i in range(0, 20, 7)]
    found = exact_top_k(chunks, data, ids, 300)
    assert not (found == ids[:, None]).any()
    assert (found[:, 19:] == -1).all()
    for row, own, query in zip(found, ids, data, strict=True):
        assert set(row[:19].tolist()) == set(ids.tolist()) - {int(own)}  # every other item, once
        scores = data[(row[:19] - 1) // 2] @ query
        assert np.all(np.diff(scores) <= 1e-6)  # best first


def test_exact_top_k_is_exact_for_any_chunking() -> None:
    """Top 1 of a chunk whose best sits anywhere, and a chunk one wider than k."""
    n = 500
    values = np.arange(n, dtype=np.float32)
    for order in (
        np.concatenate([values[n // 2 :], values[: n // 2]]),
        np.concatenate([values[::2], values[1::2][::-1]]),
    ):
        data = (order / n)[:, None]
        ids = np.arange(n, dtype=np.int64)
        found = exact_top_k([(ids, data)], np.ones((1, 1), np.float32), np.array([-1]), 1)
        assert order[found[0, 0]] == n - 1
    data = unit_rows(300, 8, seed=2)
    ids = np.arange(300, dtype=np.int64)
    queries = unit_rows(5, 8, seed=3)
    found = exact_top_k([(ids[:11], data[:11]), (ids[11:], data[11:])], queries, np.full(5, -1), 10)
    scores = queries @ data.T
    want = -np.sort(-scores, axis=1)[:, :10]
    np.testing.assert_allclose(-np.sort(-np.take_along_axis(scores, found, axis=1), axis=1), want, atol=1e-5)


# --- the FAISS index: adding, removing, searching -----------------------------------------------------


def test_a_single_vector_is_added_and_removed() -> None:
    data = unit_rows(10, 8)
    index = VectorIndex.create(8)
    index.add(np.array([42]), data[:1])
    assert index.ntotal == 1 and index.search(data[:1], 1)[1][0, 0] == 42
    index.add(np.arange(1, 10), data[1:])
    assert index.remove(np.array([42])) == 1
    assert index.ntotal == 9 and 42 not in index.search(data[:1], 9)[1]
    assert index.remove(np.array([], dtype=np.int64)) == 0 and index.ntotal == 9


def test_search_returns_k_results_per_query() -> None:
    data = unit_rows(50, 8)
    index = VectorIndex.from_vectors(8, np.arange(50), data)
    scores, ids = index.search(data[:3], 1)
    assert ids.shape == (3, 1) and scores.shape == (3, 1)
    assert ids[:, 0].tolist() == [0, 1, 2]


def test_a_filtered_exact_search_is_the_exact_top_k_among_the_allowed_items() -> None:
    """vectors.py: FAISS skips the ids the filter does not allow, so the result is the exact top-k of the
    allowed items."""
    data = unit_rows(200, 8)
    ids = np.arange(200, dtype=np.int64) * 5
    index = VectorIndex.from_vectors(8, ids, data)
    allowed = ids[1::3]
    queries = unit_rows(4, 8, seed=9)
    scores, found = index.search(queries, 10, allowed)
    assert np.isin(found, allowed).all()
    best = -np.sort(-(queries @ data[1::3].T), axis=1)[:, :10]
    np.testing.assert_allclose(scores, best, atol=1e-5)


def test_an_ivf_index_behind_a_transform_filters_and_probes_as_asked(tmp_path: Path) -> None:
    """Indexes made by earlier versions put a rotation in front of the lists (OPQ): their searches keep
    the filter and the number of lists probed."""
    data = unit_rows(400, 16, seed=4)
    ids = np.arange(400, dtype=np.int64) + 1000
    kind = "RR16,IVF8,Flat"
    built = VectorIndex(faiss.index_factory(16, kind, faiss.METRIC_INNER_PRODUCT), kind)
    built.train(data)
    built.add(ids, data)
    path = tmp_path / "rotated.faiss"
    index = VectorIndex.load(path, kind, built.save(path))
    allowed = ids[::4]
    scores, found = index.search(data[:5], 10, allowed, nprobe=8)
    assert np.isin(found, allowed).all()
    best = -np.sort(-(data[:5] @ data[::4].T), axis=1)[:, :10]
    np.testing.assert_allclose(scores, best, atol=1e-4)  # all 8 lists probed: exact among the allowed


def test_an_ivf_index_searches_before_it_is_tuned() -> None:
    data = unit_rows(300, 8)
    index = VectorIndex.create(8, "IVF4,Flat")
    index.train(data)
    index.add(np.arange(300), data)
    _, found = index.search(data[:3], 5)  # no nprobe given, none tuned yet
    assert (found[:, 0] == np.arange(3)).all()


def test_an_ivf_index_is_never_handed_back_untrained_or_as_another_kind() -> None:
    with pytest.raises(RuntimeError):
        VectorIndex.from_vectors(8, np.arange(10), unit_rows(10, 8), "IVF4,Flat")


def test_ids_are_the_item_ids_held_exactly() -> None:
    """ids() gives the 64-bit item ids, exactly (even past 2**53), and an empty index none."""
    big = np.array([2**53 + 1, 2**62 + 3], dtype=np.int64)
    data = unit_rows(300, 8)
    exact = VectorIndex.from_vectors(8, big, data[:2])
    assert exact.ids().dtype == np.int64 and sorted(exact.ids().tolist()) == big.tolist()
    ivf = VectorIndex.create(8, "IVF4,Flat")
    ivf.train(data)
    empty = ivf.ids()
    assert empty.dtype == np.int64 and len(empty) == 0
    ivf.add(big, data[:2])
    assert ivf.ids().dtype == np.int64 and sorted(ivf.ids().tolist()) == big.tolist()


# --- saving and loading ------------------------------------------------------------------------------


def _saved(tmp_path: Path, kind: str = EXACT, name: str = "vectors.faiss") -> tuple[Path, str, VectorIndex]:
    data = unit_rows(600, 16, seed=1)
    index = VectorIndex.create(16, kind)
    if kind != EXACT:
        index.train(data)
    index.add(np.arange(600, dtype=np.int64) + 7, data)
    path = tmp_path / name
    return path, index.save(path), index


def _damage(path: Path) -> None:
    """Change one byte in the middle of the file (its vectors): same size, still a readable index."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _reads_from_the_file(vectors: VectorIndex) -> bool:
    """Whether FAISS reads the vectors from the mapped file rather than from memory it owns."""
    if vectors.approximate:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(vectors.index).invlists)
        return isinstance(lists, faiss.OnDiskInvertedLists)
    return not faiss.downcast_index(vectors.index.index).codes.is_owned


def test_save_returns_the_sha256_of_the_file_it_wrote(tmp_path: Path) -> None:
    path, digest, _ = _saved(tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_a_save_that_fails_leaves_the_previous_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves are atomic: a write that fails (here a full disk, injected after FAISS wrote the temporary
    file) leaves the old file as it was."""
    path, _, index = _saved(tmp_path)
    before = path.read_bytes()
    index.add(np.array([5000]), unit_rows(1, 16, seed=8))
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setenv(faults.ENV, "faiss-write:1:enospc")
    with pytest.raises(OSError) as error:
        index.save(path)
    assert error.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_save_is_on_disk_before_it_replaces_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary file, fsync, rename, then the folder's fsync: after a crash the file is the old one or
    the whole new one."""
    path, _, index = _saved(tmp_path)
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    index.save(path)
    new, folder = path.stat().st_ino, tmp_path.stat().st_ino
    assert ("replace", new) in events
    replaced = events.index(("replace", new))
    assert ("fsync", new) in events[:replaced]
    assert ("fsync", folder) in events[replaced:]


def test_a_damaged_file_of_the_recorded_size_is_refused_by_its_checksum(tmp_path: Path) -> None:
    """docs/reliability.md: a damaged vector file is refused with a clear error. Files read whole (all
    that writers read, and small ones) are checked against their SHA-256."""
    path, digest, _ = _saved(tmp_path)
    size = path.stat().st_size
    _damage(path)
    for mmap in (False, True):  # a small file is read whole even by a reader
        with pytest.raises(IndexCorruptError, match="checksum mismatch"):
            VectorIndex.load(path, EXACT, digest, expected_bytes=size, mmap=mmap)


def test_a_missing_or_unreadable_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexCorruptError, match="vector file missing"):
        VectorIndex.load(tmp_path / "gone.faiss")
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"not a faiss index" * 64)
    with pytest.raises(IndexCorruptError, match="vector file unreadable"):
        VectorIndex.load(garbage)


def test_a_file_of_another_kind_than_the_manifest_names_is_refused(tmp_path: Path) -> None:
    path, digest, _ = _saved(tmp_path)
    with pytest.raises(IndexCorruptError, match="does not hold"):
        VectorIndex.load(path, "IVF8,Flat", digest)


@pytest.mark.parametrize("kind", [EXACT, "IVF8,Flat"])
def test_readers_map_files_of_the_threshold_size_and_writers_read_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """docs/storage.md: readers memory-map vector files of 64 MiB or more, exact and IVF alike (FAISS then
    reads the vectors from the file); a writer, which must change the index, reads it whole."""
    path, digest, index = _saved(tmp_path, kind)
    size = path.stat().st_size
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", size)  # this file is exactly the threshold
    mapped = VectorIndex.load(path, kind, digest, expected_bytes=size, mmap=True)
    assert mapped.mapped and _reads_from_the_file(mapped)
    whole = VectorIndex.load(path, kind, digest, expected_bytes=size)
    assert not whole.mapped and not _reads_from_the_file(whole)
    queries = unit_rows(3, 16, seed=2)
    for loaded in (mapped, whole):
        loaded.nprobe = index.nprobe = 8
        assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", size + 1)
    small = VectorIndex.load(path, kind, digest, expected_bytes=size, mmap=True)
    assert not small.mapped and not _reads_from_the_file(small)


def test_a_faiss_without_the_mapping_flag_reads_files_whole_and_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older FAISS builds lack IO_FLAG_MMAP_IFC: exact files are then read whole, and checksummed."""
    path, digest, _ = _saved(tmp_path)
    size = path.stat().st_size
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    monkeypatch.delattr(faiss, "IO_FLAG_MMAP_IFC")
    loaded = VectorIndex.load(path, EXACT, digest, expected_bytes=size, mmap=True)
    assert not loaded.mapped and loaded.ntotal == 600
    _damage(path)
    with pytest.raises(IndexCorruptError, match="checksum"):
        VectorIndex.load(path, EXACT, digest, expected_bytes=size, mmap=True)


def test_a_file_faiss_cannot_map_is_read_whole_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where this FAISS cannot map a file, the reader reads it whole, and then checks its checksum."""
    path, digest, _ = _saved(tmp_path, "IVF8,Flat")
    size = path.stat().st_size
    read_index = faiss.read_index

    def unmappable(name: str, *flags: int) -> object:
        if flags:
            raise RuntimeError("Error in read_index: mapping not supported")
        return read_index(name)

    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    monkeypatch.setattr(faiss, "read_index", unmappable)
    loaded = VectorIndex.load(path, "IVF8,Flat", digest, expected_bytes=size, mmap=True)
    assert not loaded.mapped and loaded.ntotal == 600
    _damage(path)
    with pytest.raises(IndexCorruptError, match="checksum"):
        VectorIndex.load(path, "IVF8,Flat", digest, expected_bytes=size, mmap=True)


def test_on_windows_vector_files_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAISS cannot map inverted lists on Windows: readers there read the file whole (and check it)."""
    path, digest, _ = _saved(tmp_path, "IVF8,Flat")
    size = path.stat().st_size
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    monkeypatch.setattr(os, "name", "nt")
    loaded = VectorIndex.load(path, "IVF8,Flat", digest, expected_bytes=size, mmap=True)
    monkeypatch.undo()
    assert not loaded.mapped and not _reads_from_the_file(loaded)
