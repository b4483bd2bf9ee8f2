"""Indexes larger than memory, on a small scale: built by shards, merged (in memory or on disk), memory-mapped,
re-ranked on SQ8 codes, resumed after an interruption, planned against memory and latency budgets, and
tuned against a recall target and a latency budget for image-like and text-like queries.

Real FAISS, real SQLite where an Index is involved; the vectors are made up (scripts/synthetic_vectors.py)
and small (32 dimensions, a few thousand), so that every test takes seconds. FAISS runs on one thread
where results are compared: k-means is then the same on every run, and a busy machine does not slow it.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from vecsearch import Index, faults
from vecsearch.check import check_index
from vecsearch.index import brute_force_search
from vecsearch.plan import (
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_MIN_RECALL,
    ON_DISK_FAMILIES,
    TUNE_K,
    TUNE_QUERIES,
    BudgetError,
    candidate,
    choose,
    exact_top_k,
    predicted_latency_ms,
    recall_at_k,
    training_sample,
)
from vecsearch.rerank import RerankCodes
from vecsearch.shard_build import BuildReport, add_to_copy, build_sharded, open_on_disk
from vecsearch.sizes import parse_size
from vecsearch.tuning import STAND_IN, QuerySet, tune_for_budget
from vecsearch.vectors import VectorIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from synthetic_vectors import ClusteredVectors, fill_index  # noqa: E402

GiB = 1 << 30
DIM = 32
COUNT = 3000
NLIST = 16
SCORE_ATOL = 1e-5  # the same codes scored by the same FAISS code: equal up to float rounding
SQ8_ERROR = 0.01  # an inner product of unit vectors from 8-bit codes is this close to the exact one


class ArraySource:
    """Vectors in memory as a shard source: positions are ranks in id order."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids = ids
        self.vectors = vectors
        self.count = len(ids)
        self.shards_read: list[tuple[int, int]] = []

    def sample(self, positions: np.ndarray) -> np.ndarray:
        return self.vectors[positions]

    def shard(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        self.shards_read.append((start, stop))
        return self.ids[start:stop], self.vectors[start:stop]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def collection() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, queries): ids ascending with gaps, as a database's are."""
    generator = ClusteredVectors(dim=DIM, topics=30, subtopics=4, seed=11)
    vectors = generator.chunk(0, COUNT)
    ids = np.arange(COUNT, dtype=np.int64) * 3 + 7
    return ids, vectors, generator.queries(40)


def one_piece(factory: str, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
    """The same index built the plain way: trained on the same sample with the same seed, filled at once."""
    index = VectorIndex.create(DIM, factory)
    index.train(vectors[training_sample(len(vectors), NLIST)], seed=0)
    index.add(ids, vectors)
    return index


def sharded(
    tmp_path: Path, factory: str, collection: tuple[np.ndarray, np.ndarray, np.ndarray], on_disk: bool, **options
) -> tuple[VectorIndex, BuildReport, Path]:
    ids, vectors, _ = collection
    target = tmp_path / "out" / "vectors-g1-test.faiss"
    target.parent.mkdir(parents=True, exist_ok=True)
    options.setdefault("shard_size", COUNT // 3)
    options.setdefault("rerank", False)
    source = ArraySource(ids, vectors)
    built, report = build_sharded(
        tmp_path / "work", target, factory, DIM, source, training_sample(COUNT, NLIST), on_disk=on_disk, **options
    )
    return built, report, target


def assert_same_answers(got: VectorIndex, want: VectorIndex, queries: np.ndarray, nprobe: int = 4) -> None:
    got_scores, got_ids = got.search(queries, 10, nprobe=nprobe)
    want_scores, want_ids = want.search(queries, 10, nprobe=nprobe)
    assert (want_ids >= 0).all()
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=SCORE_ATOL)


# --- building by shards -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "on_disk"),
    [
        (f"IVF{NLIST},SQ8", True),
        (f"IVF{NLIST},PQ4", True),
        (f"OPQ4_{DIM},IVF{NLIST},PQ4", True),
        (f"IVF{NLIST},PQ8x4fs", False),
    ],
)
def test_a_merged_index_of_three_shards_answers_like_one_built_in_one_piece(
    tmp_path: Path, collection: tuple[np.ndarray, np.ndarray, np.ndarray], factory: str, on_disk: bool
) -> None:
    ids, vectors, queries = collection
    built, report, target = sharded(tmp_path, factory, collection, on_disk)
    assert report == BuildReport(shards=3, reused=0, trained_reused=False)
    assert built.ntotal == COUNT and built.on_disk == on_disk and built.kind == factory
    assert target.is_file() and target.with_suffix(".ivfdata").is_file() == on_disk
    assert not (tmp_path / "work").exists()  # the work goes once the index is written
    assert_same_answers(built, one_piece(factory, ids, vectors), queries)
    assert_same_answers(built, one_piece(factory, ids, vectors), queries, nprobe=NLIST)
    if not on_disk:  # the in-memory merge is saved at the target: it loads and answers the same
        assert_same_answers(VectorIndex.load(target, factory), built, queries)


def test_the_on_disk_index_opens_memory_mapped_read_only_and_answers(
    tmp_path: Path, collection: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids, vectors, queries = collection
    factory = f"IVF{NLIST},SQ8"
    built, _, target = sharded(tmp_path, factory, collection, on_disk=True)
    lists = target.with_suffix(".ivfdata")
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (target, lists)}
    opened = open_on_disk(target, factory)
    assert opened.on_disk and opened.mapped and opened.path == target
    assert opened.ntotal == COUNT and opened.approximate and opened.nlist == NLIST
    assert_same_answers(opened, built, queries)
    assert_same_answers(opened, one_piece(factory, ids, vectors), queries)
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (target, lists)} == digests


@pytest.mark.parametrize("change", ["add", "remove"])
def test_changing_an_on_disk_index_raises_and_leaves_its_files_alone(
    tmp_path: Path, collection: tuple[np.ndarray, np.ndarray, np.ndarray], change: str
) -> None:
    """The lists are mapped read-only: an add or a removal is an error the caller can catch (in a
    process of its own here, since FAISS aborts a process whose parallel code throws)."""
    factory = f"IVF{NLIST},SQ8"
    _, _, target = sharded(tmp_path, factory, collection, on_disk=True)
    lists = target.with_suffix(".ivfdata")
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (target, lists)}
    script = f"""
import sys
import numpy as np
from vecsearch.shard_build import open_on_disk
index = open_on_disk(__import__("pathlib").Path({str(target)!r}), {factory!r})
try:
    if {change!r} == "add":
        index.add(np.array([1], dtype=np.int64), np.ones((1, {DIM}), dtype=np.float32) / {DIM} ** 0.5)
    else:
        index.remove(np.array([7, 10], dtype=np.int64))
except Exception as exc:
    print("raised", type(exc).__name__, exc)
    sys.exit(0)
print("no error")
sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("raised"), (done.returncode, done.stdout, done.stderr[-500:])
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (target, lists)} == digests
    assert open_on_disk(target, factory).ntotal == COUNT


# --- re-ranking codes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fp16", "sq8"])
def rerank_codes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    collection: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> RerankCodes:
    ids, vectors, _ = collection
    prefix = tmp_path_factory.mktemp(f"rerank-{request.param}") / "vectors-g1"
    scale = RerankCodes.train(vectors, precision=request.param)
    codes = RerankCodes.encode(vectors, scale)
    parts = [(ids[:1000], codes[:1000]), (ids[1000:1000], codes[1000:1000]), (ids[1000:], codes[1000:])]
    RerankCodes.write(prefix, parts, COUNT, vectors.shape[1], scale)
    return RerankCodes.open(prefix)


@pytest.mark.skipif(
    not Path("/proc/self/smaps").exists(), reason="the kernel's mapping flags are read from Linux's smaps"
)
def test_rerank_codes_are_mapped_without_read_ahead(rerank_codes: RerankCodes, tmp_path: Path) -> None:
    """Queries read scattered rows: the codes' mapping is advised random ("rr" in smaps), so a cold query
    pages in the rows it scores rather than 128 KiB around each."""
    blocks = Path("/proc/self/smaps").read_text().split("\n")
    flags = [
        next(line for line in blocks[at:] if line.startswith("VmFlags:"))
        for at, line in enumerate(blocks)
        if line.endswith(".codes.npy") and str(tmp_path.parent) in line
    ]
    assert flags and all(" rr" in line for line in flags)


def test_rerank_codes_score_like_exact_inner_products(
    rerank_codes: RerankCodes, collection: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ids, vectors, queries = collection
    assert rerank_codes.ntotal == COUNT
    # Mapped read-only, not read into memory: the array's buffer is the file's mapping.
    assert isinstance(rerank_codes.codes.base, mmap.mmap) and not rerank_codes.codes.flags.writeable
    rng = np.random.default_rng(2)
    for query in queries[:10]:
        picked = rng.choice(COUNT, size=200, replace=False)  # in no particular order
        scores = rerank_codes.scores(query, ids[picked])
        np.testing.assert_allclose(scores, vectors[picked] @ query, atol=SQ8_ERROR)
    unknown = rerank_codes.scores(queries[0], np.array([ids[0], 8, ids[-1] + 3], dtype=np.int64))
    assert np.isfinite(unknown[0]) and np.isneginf(unknown[1:]).all()  # 8 is no id: ids are 7, 10, ...
    empty = tmp_path / "empty"
    RerankCodes.write(empty, [], 0, vectors.shape[1], None)
    assert np.isneginf(RerankCodes.open(empty).scores(queries[0], ids[:3])).all()  # nothing to score: no error


def test_rerank_codes_are_written_only_in_ascending_id_order(tmp_path: Path) -> None:
    scale = np.stack([np.zeros(4, np.float32), np.full(4, 0.01, np.float32)])
    codes = np.zeros((2, 4), np.uint8)
    with pytest.raises(ValueError, match="ascending"):
        RerankCodes.write(tmp_path / "v", [(np.array([5, 6]), codes), (np.array([6, 9]), codes)], 4, 4, scale)
    with pytest.raises(ValueError, match="expected"):
        RerankCodes.write(tmp_path / "v", [(np.array([5, 6]), codes)], 3, 4, scale)


def test_refined_search_returns_the_exact_best_of_its_candidates(
    rerank_codes: RerankCodes, collection: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids, vectors, queries = collection
    index = one_piece(f"IVF{NLIST},PQ4", ids, vectors)  # rough codes: the order of candidates is not exact
    plain = index.search(queries, 10, nprobe=4)
    np.testing.assert_array_equal(index.search_refined(queries, 10, depth=4, nprobe=4)[1], plain[1])  # no codes
    index.refine = rerank_codes
    depth, k = 4, 10
    scores, found = index.search_refined(queries, k, depth=depth, nprobe=4)
    _, candidates = index.search(queries, k * depth, nprobe=4)
    by_id = dict(zip(ids.tolist(), range(COUNT), strict=True))
    reordered = overlap = 0
    rows = zip(queries, scores, found, candidates, plain[1], strict=True)
    for query, row_scores, row_found, row_candidates, row_plain in rows:
        row_candidates = row_candidates[row_candidates >= 0]
        exact = vectors[[by_id[i] for i in row_candidates.tolist()]] @ query
        order = np.argsort(-exact, kind="stable")
        best, kth = set(row_candidates[order[:k]].tolist()), exact[order[k - 1]]
        assert set(row_found.tolist()) <= set(row_candidates.tolist())
        np.testing.assert_allclose(row_scores, vectors[[by_id[i] for i in row_found.tolist()]] @ query, atol=SQ8_ERROR)
        assert list(row_scores) == sorted(row_scores, reverse=True)
        for item in set(row_found.tolist()) - best:  # only near-ties with the k-th best may trade places
            assert vectors[by_id[item]] @ query >= kth - 2 * SQ8_ERROR
        overlap += len(best & set(row_found.tolist()))
        reordered += set(row_found.tolist()) != set(row_plain.tolist())
    assert overlap >= 0.95 * k * len(queries)
    assert reordered  # the re-ranking changed what PQ alone ranks first: a refine that did nothing would not


# --- resuming an interrupted build --------------------------------------------------------------------


def _interrupting_runner(trained: bytes, shards: Iterator[tuple[int, np.ndarray, np.ndarray]]):
    for done, (number, ids, vectors) in enumerate(shards):
        if done == 2:
            raise RuntimeError("worker lost")
        yield number, add_to_copy(trained, ids, vectors)


@pytest.mark.parametrize("how", ["runner", "fault-point"])
def test_an_interrupted_build_resumes_from_the_shards_it_had_added(
    tmp_path: Path,
    collection: tuple[np.ndarray, np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    ids, vectors, queries = collection
    factory = f"IVF{NLIST},SQ8"
    if how == "runner":
        with pytest.raises(RuntimeError, match="worker lost"):
            sharded(tmp_path, factory, collection, on_disk=True, runner=_interrupting_runner)
    else:
        monkeypatch.setattr(faults, "_hits", {})
        monkeypatch.setenv(faults.ENV, "shard-added:2:interrupt")
        with pytest.raises(KeyboardInterrupt):
            sharded(tmp_path, factory, collection, on_disk=True)
        monkeypatch.delenv(faults.ENV)
    work = tmp_path / "work"
    assert (work / "trained.faiss.done").is_file()
    assert len(list(work.glob("shard-*.faiss.done"))) == 2
    source = ArraySource(ids, vectors)
    target = tmp_path / "out" / "vectors-g1-test.faiss"
    resumed, report = build_sharded(
        work, target, factory, DIM, source, training_sample(COUNT, NLIST), on_disk=True, rerank=False,
        shard_size=COUNT // 3,
    )  # fmt: skip
    assert report == BuildReport(shards=3, reused=2, trained_reused=True)
    assert len(source.shards_read) == 1  # only the missing shard was read again
    assert resumed.ntotal == COUNT and resumed.on_disk
    assert_same_answers(resumed, one_piece(factory, ids, vectors), queries)
    assert_same_answers(resumed, one_piece(factory, ids, vectors), queries, nprobe=NLIST)


# --- planning against the budgets ---------------------------------------------------------------------


def test_a_tight_latency_budget_moves_40000_vectors_from_exact_search_to_ivf() -> None:
    relaxed = choose(40_000, 512, 8 * GiB)
    assert relaxed.family == "exact" and relaxed.predicted_ms <= DEFAULT_MAX_LATENCY_MS
    tight = choose(40_000, 512, 8 * GiB, max_latency_ms=1)
    assert tight.approximate and tight.family != "exact"
    assert tight.predicted_ms <= 1 < predicted_latency_ms(candidate("exact", 40_000, 512), 40_000, 512)
    assert tight.predicted_ms == pytest.approx(predicted_latency_ms(tight, 40_000, 512), abs=1e-3)


def test_a_tight_memory_budget_moves_2m_vectors_from_sq8_to_pq_codes_and_a_tight_latency_to_fast_scan() -> None:
    count, dim = 2_000_000, 512
    roomy = choose(count, dim, 2 * GiB, max_latency_ms=50)  # Flat (4 GB) does not fit; SQ8 (1 GB) does
    assert roomy.family == "ivf-sq8" and roomy.memory(count) <= 2 * GiB
    assert roomy.reranks  # SQ8 candidates are re-scored too
    assert candidate("ivf-flat", count, dim).memory(count) > 2 * GiB
    tight = choose(count, dim, 512 << 20, max_latency_ms=50)
    assert tight.family == "ivf-pq" and tight.factory.endswith(",PQ64") and tight.reranks
    assert tight.memory(count) <= 512 << 20 < candidate("ivf-sq8", count, dim).memory(count)
    assert tight.storage == "memory" and tight.reason.endswith("fits the 512.0 MiB budget")
    # Byte for byte 8-bit codes rank candidates better: the fast-scan codes (PQ64x4fs, 40 bytes) come after
    # PQ64 and PQ32 (72 and 40 bytes) and before PQ16, so they win where those two are predicted too slow.
    pq = {m: predicted_latency_ms(candidate("ivf-pq", count, dim, m), count, dim) for m in (64, 32, 16, 8)}
    fast_scan = predicted_latency_ms(candidate("ivf-pqfs", count, dim), count, dim)
    assert fast_scan < min(pq[64], pq[32])
    latency = (fast_scan + min(pq[64], pq[32])) / 2
    fast = choose(count, dim, 512 << 20, max_latency_ms=latency)
    assert fast.family == "ivf-pqfs" and fast.factory.endswith(",PQ64x4fs") and fast.reranks
    assert fast.predicted_ms == pytest.approx(fast_scan, abs=1e-3)
    assert fast.predicted_ms <= latency < min(pq[64], pq[32])
    assert fast.memory(count) <= 512 << 20 and fast.reason.endswith("fits the 512.0 MiB budget")
    # PQ16 and PQ8 are predicted within that budget too: the fast-scan codes win by coming before them
    assert max(pq[16], pq[8]) <= latency


def test_disk_storage_keeps_only_the_centroids_in_memory() -> None:
    count, dim = 2_000_000, 512
    plan = choose(count, dim, 8 * GiB, storage="disk")
    assert plan.storage == "disk" and plan.family in ON_DISK_FAMILIES and plan.name.endswith(" on disk")
    centroids = plan.nlist * dim * 4
    assert plan.memory(count) == plan.memory(0) == plan.fixed_bytes
    assert centroids <= plan.fixed_bytes <= centroids * 1.2  # the centroids, and the graph's links
    assert plan.fixed_bytes == candidate(plan.family, count, dim).fixed_bytes
    # From a million vectors, a budget nothing fits in memory is met on disk without being asked
    quantizer = candidate("ivf-sq8", 1_000_000, dim).fixed_bytes
    auto = choose(1_000_000, dim, quantizer + (1 << 20))
    assert auto.storage == "disk" and auto.memory(1_000_000) <= quantizer + (1 << 20)
    assert "kept on disk" in auto.reason
    with pytest.raises(BudgetError):
        choose(1_000_000, dim, quantizer + (1 << 20), storage="memory")
    with pytest.raises(BudgetError, match="cannot be kept on disk"):
        choose(count, dim, 8 * GiB, "ivf-pqfs", storage="disk")  # fast-scan lists cannot be merged on disk


@pytest.mark.parametrize(
    ("count", "dim", "storage"),
    [(500_000, 512, "auto"), (2_000_000, 512, "memory"), (2_000_000, 512, "auto"), (10_000_000, 64, "disk")],
)
def test_a_budget_error_names_a_budget_that_is_enough(count: int, dim: int, storage: str) -> None:
    with pytest.raises(BudgetError) as error:
        choose(count, dim, 1024, storage=storage)
    message = str(error.value)
    assert "raise --max-memory" in message
    sizes = re.findall(r"([0-9.]+) (B|KiB|MiB|GiB)\b", message.replace("1.0 KiB", ""))
    assert sizes, f"the error names no budget that is enough: {message}"
    enough = int(parse_size("".join(sizes[-1])) * 1.06)  # printed to one decimal
    plan = choose(count, dim, enough, storage=storage)
    assert plan.memory(count) <= enough


# --- tuning against a recall target and a latency budget ----------------------------------------------


def _queries(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Query vectors whose first value is their row, and their made-up true top-10 ids."""
    vectors = np.zeros((count, 4), dtype=np.float32)
    vectors[:, 0] = np.arange(count)
    truth = np.arange(count * 10, dtype=np.int64).reshape(count, 10)
    return vectors, truth


class FakeSearch:
    """A search whose recall and latency the test sets: each query of a kind finds `recall(nprobe, depth)`
    of its true top 10 and takes `ms_per_probe` · nprobe milliseconds."""

    def __init__(self, image_full_at: int, text_full_at: int, text_cap: float = 1.0, ms_per_probe: float = 1.0):
        self.image_full_at, self.text_full_at, self.text_cap = image_full_at, text_full_at, text_cap
        self.ms_per_probe = ms_per_probe
        self.calls: list[tuple[int, int]] = []
        self.image_truth = _queries(8)[1]
        self.text_truth = self.image_truth + 10_000
        self.depth_needed = 1

    def __call__(self, batch: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        self.calls.append((nprobe, depth))
        time.sleep(self.ms_per_probe * nprobe / 1000)
        text = batch[:, 1] > 0
        rows = batch[:, 0].astype(int)
        found = np.where(text[:, None], self.text_truth[rows], self.image_truth[rows])
        out = np.full((len(batch), k), -1, dtype=np.int64)
        out[:, :10] = found
        for row, is_text in enumerate(text):
            full_at = self.text_full_at if is_text else self.image_full_at
            share = 1.0 if nprobe >= full_at and depth >= self.depth_needed else min(0.5, nprobe / (2 * full_at))
            if is_text:
                share = min(share, self.text_cap)
            out[row, int(round(share * 10)) : 10] = -1
        return out

    def sets(self) -> tuple[QuerySet, QuerySet]:
        image, truth = _queries(8)
        text = image.copy()
        text[:, 1] = 1.0  # marks the text-like queries
        return QuerySet(image, truth), QuerySet(text, self.text_truth)


def test_tuning_takes_the_cheapest_setting_that_meets_recall_for_both_kinds_within_the_latency_budget() -> None:
    search = FakeSearch(image_full_at=4, text_full_at=8, ms_per_probe=1.0)
    image, text = search.sets()
    tuned = tune_for_budget(search, image, text, 64, False, 0.95, 40.0, latency_queries=3)
    assert tuned.met and tuned.note == "" and (tuned.nprobe, tuned.rerank) == (8, 1)  # image alone: 4
    assert tuned.image.recall == 1.0 and tuned.text.recall == 1.0 and tuned.recall == 1.0
    assert 8.0 <= tuned.text.p50_ms <= 40.0 and tuned.image.p50_ms >= 8.0 and tuned.p50_ms >= 8.0
    assert max(nprobe for nprobe, _ in search.calls) == 8  # the cheapest: nothing past it was tried


def test_tuning_with_re_ranking_tries_deeper_candidates_before_more_lists() -> None:
    search = FakeSearch(image_full_at=2, text_full_at=2, ms_per_probe=0.2)
    search.depth_needed = 8
    image, text = search.sets()
    tuned = tune_for_budget(search, image, text, 64, True, 0.95, 50.0, latency_queries=2)
    assert tuned.met and (tuned.nprobe, tuned.rerank) == (2, 8)


def test_tuning_within_an_impossible_latency_budget_says_it_was_not_met() -> None:
    search = FakeSearch(image_full_at=2, text_full_at=2, ms_per_probe=1.0)
    image, text = search.sets()
    tuned = tune_for_budget(search, image, text, 64, False, 0.95, 0.1, latency_queries=3)
    assert not tuned.met
    assert "0.1 ms" in tuned.note and tuned.note.startswith("no setting answers within 0.1 ms")
    assert tuned.p50_ms > 0.1
    assert max(nprobe for nprobe, _ in search.calls) < 64  # it stopped once more lists only cost more


def test_tuning_keeps_going_while_text_like_queries_miss_the_target() -> None:
    """Image-like queries reach the target at nprobe 2; text-like ones never pass 0.8: tuning does not
    stop at the image-like success, and reports the text-like recall it could not raise."""
    search = FakeSearch(image_full_at=2, text_full_at=2, text_cap=0.8, ms_per_probe=0.1)
    image, text = search.sets()
    tuned = tune_for_budget(search, image, text, 64, False, 0.95, 50.0, latency_queries=2)
    assert not tuned.met
    assert tuned.image.recall == 1.0 and tuned.text.recall == pytest.approx(0.8) and tuned.recall == pytest.approx(0.8)
    assert max(nprobe for nprobe, _ in search.calls) > 2
    assert "target 0.95 not reached within 50 ms" in tuned.note and "text-like 0.800" in tuned.note
    assert tuned.nprobe == 2  # the cheapest within the plateau of the best recall seen


# --- the index's vector file: tuning recorded in the manifest ------------------------------------------


def _tuning_recall(index: Index, kind: str, seed: int, nprobe: int) -> float:
    """recall@10 of an index's own items of one kind as queries, each left out of what it finds, as the
    tuning measures it."""
    store = index.store
    query_ids, queries = store.vectors_of(store.sample_item_ids(TUNE_QUERIES, seed=seed, kind=kind))
    truth = exact_top_k(store.iter_vectors(), queries, query_ids, TUNE_K)
    _, found = index.vectors.search(queries, TUNE_K + 1, nprobe=nprobe)
    kept = np.array(
        [[i for i in row if i != own and i >= 0][:TUNE_K] for row, own in zip(found, query_ids, strict=True)]
    )
    return recall_at_k(kept, truth)


@pytest.mark.parametrize("caption_every", [3, 0])
def test_the_manifest_records_recall_and_latency_of_image_and_text_like_queries(
    tmp_path: Path, tiny_encoder: object, caption_every: int
) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder, index_type="ivf-flat")  # type: ignore[arg-type]
    generator = ClusteredVectors(dim=index.dim, topics=40, subtopics=5, seed=7)
    fill_index(index, generator.chunk(0, 6000), caption_every=caption_every)
    info = json.loads((index.path / "manifest.json").read_text())["faiss"]
    tuning = info["tuning"]
    assert info["family"] == "ivf-flat" and info["tuned_on"] == 6000
    for kind in ("image", "text"):
        assert set(tuning[kind]) >= {"recall@10", "p50_ms", "p99_ms"}
        assert 0 < tuning[kind]["recall@10"] <= 1 and 0 < tuning[kind]["p50_ms"] <= tuning[kind]["p99_ms"]
    assert tuning["text"]["queries"] == ("captions" if caption_every else STAND_IN)
    assert (tuning["min_recall"], tuning["max_latency_ms"]) == (DEFAULT_MIN_RECALL, DEFAULT_MAX_LATENCY_MS)
    worst = min(tuning["image"]["recall@10"], tuning["text"]["recall@10"])
    assert info["recall@10"] == pytest.approx(worst, abs=1e-4)
    slowest = max(tuning["image"]["p50_ms"], tuning["text"]["p50_ms"])
    assert tuning["met"] == (worst >= DEFAULT_MIN_RECALL and slowest <= DEFAULT_MAX_LATENCY_MS)
    assert tuning["met"] == (tuning["note"] == "")
    # What was recorded is what was measured: the index's own items of each kind at the recorded nprobe
    assert index.vectors.nprobe == info["nprobe"]
    image = _tuning_recall(index, "image", 0, info["nprobe"])
    assert image == pytest.approx(tuning["image"]["recall@10"], abs=1e-4)
    if caption_every:
        assert _tuning_recall(index, "caption", 1, info["nprobe"]) == pytest.approx(
            tuning["text"]["recall@10"], abs=1e-4
        )
    index.close()


# --- a crash between the merge of an on-disk build and its commit --------------------------------------


# What `vecsearch index --index DIR --storage disk` does to the vector file, without re-crawling the
# made-up files of the synthetic root (which are not on disk): under the writer lock, record the new
# storage and save, which rebuilds the index by shards on disk.
REPLAN_ON_DISK = """
import sys
from vecsearch import Index
from vecsearch.lock import WriterLock
from vecsearch.manifest import LOCK
with Index.open(sys.argv[1]) as index, WriterLock(index.path / LOCK, index.name):
    index.vector_file.open_for_writing(storage="disk")
    print(index.vector_file.save())
"""


def _hits(folder: Path, item_ids: list[int]) -> dict[int, list[int]]:
    with Index.open(folder) as index:
        return {item: [h.id for h in index.search(f"id:{item}", k=10, kind="any")] for item in item_ids}


def test_a_crash_between_the_shard_merge_and_the_commit_leaves_the_old_index_searchable(
    tmp_path: Path, tiny_encoder: object
) -> None:
    folder = tmp_path / "idx"
    index = Index.create(folder, encoder=tiny_encoder)  # type: ignore[arg-type]
    generator = ClusteredVectors(dim=index.dim, topics=40, subtopics=5, seed=7)
    fill_index(index, generator.chunk(0, 3000), caption_every=4)
    index.close()
    before = json.loads((folder / "manifest.json").read_text())
    assert before["faiss"]["type"].startswith("IDMap") and not before["faiss"].get("on_disk")
    probes = [1, 500, 1234, 2999]
    expected = _hits(folder, probes)
    command = [sys.executable, "-c", REPLAN_ON_DISK, str(folder)]
    env = {**os.environ, faults.ENV: "shards-merged"}
    killed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert any(folder.glob("*.ivfdata"))  # it did get as far as the merged lists
    assert any((folder / "jobs" / "faiss").iterdir())  # and kept its shards, for the next run to resume from

    assert json.loads((folder / "manifest.json").read_text()) == before  # nothing committed
    assert _hits(folder, probes) == expected

    env.pop(faults.ENV)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on disk" in done.stdout, done.stdout
    after = json.loads((folder / "manifest.json").read_text())["faiss"]
    assert after["on_disk"] is True and after["storage"] == "disk" and after["family"] in ON_DISK_FAMILIES
    file = folder / after["file"]
    assert file.is_file() and file.name != before["faiss"]["file"]
    assert file.with_suffix(".ivfdata").stat().st_size == after["lists_bytes"] > 0
    assert not (folder / before["faiss"]["file"]).exists()  # the old file, and the killed run's, are gone
    assert sorted(p.name for p in folder.glob("*.ivfdata")) == [file.with_suffix(".ivfdata").name]
    assert not (folder / "jobs" / "faiss").exists() or not any((folder / "jobs" / "faiss").iterdir())
    with Index.open(folder) as reopened:
        assert reopened.vectors.on_disk and reopened.vectors.ntotal == 3000
        found = 0
        for item in probes:
            hits = [h.id for h in reopened.search(f"id:{item}", k=10, kind="any")]
            truth = [i for i, _ in brute_force_search(reopened, reopened.store.vector(item), 11) if i != item][:10]
            found += len(set(hits) & set(truth))
        assert found >= 0.8 * 10 * len(probes)


def test_checking_an_on_disk_index_that_lags_the_database_changes_none_of_its_files(
    tmp_path: Path, tiny_encoder: object
) -> None:
    """A crawl commits to the database before it saves the vector file: a check meanwhile (it takes no
    lock) must read the on-disk index, not write its catch-up into the mapped lists, and find nothing
    wrong with an index that only lags."""
    folder = tmp_path / "idx"
    index = Index.create(folder, encoder=tiny_encoder, storage="disk")  # type: ignore[arg-type]
    generator = ClusteredVectors(dim=index.dim, topics=40, subtopics=5, seed=7)
    fill_index(index, generator.chunk(0, 3000))
    assert index.manifest["faiss"]["on_disk"]
    store = index.store
    with store.transaction():  # a commit of the next crawl, not yet saved to the vector file
        root = next(r.id for r in store.roots())
        generation = store.bump_generation()
        for number, vector in enumerate(generator.chunk(1, 5)):
            store.add_item(
                "image", store.add_file(root, f"new{number}.jpg", 1, 0, f"{number:064x}"), vector, generation
            )
    index.close()
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("vectors*")}
    report = check_index(folder)
    assert not [f for f in report.findings if f.area == "vectors"], report.findings
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("vectors*")} == digests
    with Index.open(folder) as reopened:
        held = reopened.vectors.ids()
        assert len(held) == len(np.unique(held)) == 3000
