"""Choosing, building and tuning the FAISS index: real FAISS, real SQLite, checked against exact search."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vecsearch.plan as plan_module
import vecsearch.vectors as vectors_module
from vecsearch import Index
from vecsearch.cli import main
from vecsearch.errors import IndexCorruptError
from vecsearch.index import brute_force_search
from vecsearch.plan import (
    DEFAULT_MAX_LATENCY_MS,
    EXACT,
    BudgetError,
    candidate,
    choose,
    exact_top_k,
    nlist_for,
    outgrown,
    predicted_latency_ms,
    recall_at_k,
    tune,
)
from vecsearch.sizes import human_bytes, parse_size
from vecsearch.tuning import RERANK_DEPTHS
from vecsearch.vectors import VectorIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from synthetic_vectors import ClusteredVectors, fill_index  # noqa: E402

GiB = 1 << 30
NO_LATENCY_LIMIT = 1e9  # ms: for tests of the memory logic alone


def test_small_collections_are_searched_exactly() -> None:
    plan = choose(10_000, 512, 4 * GiB)
    assert plan.family == "exact" and plan.factory == EXACT and not plan.approximate
    assert "exact search is fast" in plan.reason


def test_larger_collections_get_an_ivf_index_that_fits_the_budget() -> None:
    # Memory alone (no latency budget to speak of): the first that fits of Flat, SQ8, then 8-bit PQ64 and
    # PQ32, the fast-scan PQ64x4fs (40 bytes a vector for 512 dimensions, as many as PQ32), PQ16, PQ8.
    flat = choose(1_000_000, 512, 8 * GiB, max_latency_ms=NO_LATENCY_LIMIT)
    assert flat.family == "ivf-flat" and flat.factory.startswith("IVF16384_HNSW32,")  # 16·√n from 1M
    assert flat.memory(1_000_000) <= 8 * GiB and not flat.reranks
    sq8 = choose(1_000_000, 512, 1 * GiB, max_latency_ms=NO_LATENCY_LIMIT)
    assert sq8.family == "ivf-sq8" and sq8.factory.endswith(",SQ8") and sq8.reranks
    pq64 = choose(10_000_000, 512, 1 * GiB, max_latency_ms=NO_LATENCY_LIMIT)
    assert pq64.family == "ivf-pq" and pq64.reranks and pq64.factory.endswith(",PQ64")
    assert pq64.memory(10_000_000) <= 1 * GiB < candidate("ivf-sq8", 10_000_000, 512).memory(10_000_000)
    # too little for PQ32 and the fast-scan codes (40 bytes a vector): PQ16 (24 bytes)
    pq = choose(10_000_000, 512, 512 << 20, max_latency_ms=NO_LATENCY_LIMIT)
    assert pq.family == "ivf-pq" and pq.reranks and pq.factory.endswith(",PQ16")
    assert pq.memory(10_000_000) <= 512 << 20
    for too_large in (candidate("ivf-pq", 10_000_000, 512, 32), candidate("ivf-pqfs", 10_000_000, 512)):
        assert too_large.memory(10_000_000) > 512 << 20
    # 10M vectors of 512 dimensions fit in 8 GiB as 8-bit scalar codes
    assert choose(10_000_000, 512, 8 * GiB, max_latency_ms=NO_LATENCY_LIMIT).family == "ivf-sq8"


def test_the_latency_budget_picks_the_first_family_predicted_fast_enough() -> None:
    def predicted(count: int, family: str, m: int | None = None) -> float:
        return predicted_latency_ms(candidate(family, count, 512, m), count, 512)

    # 1M x 512: Flat is predicted at ~8 ms a query, within the default 10 ms; SQ8 (~5 ms) only below that
    flat, sq8 = predicted(1_000_000, "ivf-flat"), predicted(1_000_000, "ivf-sq8")
    assert sq8 < flat <= DEFAULT_MAX_LATENCY_MS
    assert choose(1_000_000, 512, 8 * GiB).family == "ivf-flat"
    assert choose(1_000_000, 512, 8 * GiB, max_latency_ms=(flat + sq8) / 2).family == "ivf-sq8"
    # 10M x 512 (Flat does not fit 8 GiB): SQ8 is predicted at ~23 ms; PQ64 is the first within 10 ms
    plan = choose(10_000_000, 512, 8 * GiB)
    assert plan.family == "ivf-pq" and plan.factory.endswith(",PQ64")
    assert plan.predicted_ms <= DEFAULT_MAX_LATENCY_MS < predicted(10_000_000, "ivf-sq8")
    assert choose(10_000_000, 512, 8 * GiB, max_latency_ms=50).family == "ivf-sq8"
    # where PQ64 and PQ32 are predicted too slow, the fast-scan codes (next in line) are chosen
    pq32, fast_scan = predicted(10_000_000, "ivf-pq", 32), predicted(10_000_000, "ivf-pqfs")
    assert fast_scan < pq32 < predicted(10_000_000, "ivf-pq", 64)
    fast = choose(10_000_000, 512, 8 * GiB, max_latency_ms=(fast_scan + pq32) / 2)
    assert fast.family == "ivf-pqfs" and fast.factory.endswith(",PQ64x4fs") and fast.reranks
    assert fast.predicted_ms == pytest.approx(fast_scan, abs=1e-3)


def test_many_lists_are_found_through_a_graph() -> None:
    assert "_HNSW32" in choose(10_000_000, 512, 8 * GiB).factory
    assert "_HNSW32" in choose(1_000_000, 512, 8 * GiB).factory  # 16,384 lists from a million vectors
    assert "_HNSW32" not in choose(999_999, 512, 8 * GiB).factory  # 4,096 lists just below


def test_a_budget_too_small_for_any_index_is_an_error_that_says_so() -> None:
    with pytest.raises(BudgetError, match="raise --max-memory"):
        choose(10_000_000, 512, 50 << 20)


def test_exact_search_that_does_not_fit_falls_back_to_compressed_codes() -> None:
    plan = choose(40_000, 512, 30 << 20)
    assert plan.family in ("ivf-sq8", "ivf-pq")
    assert "exact search needs" in plan.reason


def test_requested_types_are_honoured() -> None:
    for family in ("exact", "ivf-flat", "ivf-sq8", "ivf-pq", "ivf-pqfs", "ivf-opqfs"):
        assert choose(100_000, 384, 4 * GiB, family).family == family
    with pytest.raises(ValueError):
        choose(10, 8, None, "hnsw-magic")


def test_list_counts_grow_with_the_square_root_and_stay_trainable() -> None:
    assert nlist_for(999_999) == 4096  # about 4·√n below a million vectors
    assert nlist_for(1_000_000) == 16384  # about 16·√n from a million
    assert nlist_for(10**9) == 65536  # at most 65,536
    assert nlist_for(100) <= 100 // 32 + 1
    counts = [nlist_for(n) for n in (10, 1_000, 100_000, 10_000_000)]
    assert counts == sorted(counts)
    assert outgrown(1000, 5000) and outgrown(1000, 200) and not outgrown(1000, 3000)


def test_sizes_parse_and_print() -> None:
    assert parse_size("8G") == 8 * GiB
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5gb") == int(1.5 * GiB)
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
    assert human_bytes(1536) == "1.5 KiB"


def test_exact_top_k_matches_a_full_sort_and_leaves_each_query_out() -> None:
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3000, 16)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64) * 7
    query_ids = ids[:20]
    queries = data[:20]
    chunks = [(ids[i : i + 700], data[i : i + 700]) for i in range(0, 3000, 700)]
    found = exact_top_k(chunks, queries, query_ids, 10)
    scores = queries @ data.T
    scores[np.arange(20), np.arange(20)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    expected = ids[order]
    # Chunks and the full matrix go through different BLAS shapes: the same scores up to rounding, so
    # compare the scores each rank holds rather than ids (two near-equal scores may trade places).
    found_scores = np.take_along_axis(scores, np.searchsorted(ids, found), axis=1)
    np.testing.assert_allclose(found_scores, np.take_along_axis(scores, order, axis=1), atol=1e-5)
    assert not (found == query_ids[:, None]).any()
    assert recall_at_k(found, expected) >= 0.99
    assert recall_at_k(found[:, ::-1], expected) == 1.0  # order inside the top k does not matter


def test_tuning_returns_the_first_setting_that_reaches_the_target() -> None:
    truth = np.arange(20).reshape(2, 10)
    tried: list[int] = []

    def search(queries: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        tried.append(nprobe)
        found = truth.copy()
        found[:, : max(0, 8 - nprobe)] = -1  # recall grows with nprobe: 0.2, 0.3, 0.5, 0.9, 1.0
        return found

    result = tune(search, np.zeros((2, 4)), truth, nlist=64, reranks=False, target=0.95)
    assert result.nprobe == 8 and result.recall == 1.0
    assert tried == [1, 2, 4, 8]


def test_tuning_reports_the_best_it_saw_when_the_target_is_out_of_reach() -> None:
    truth = np.arange(10).reshape(1, 10)

    def search(queries: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        found = truth.copy()
        found[0, :3] = -1
        return found

    result = tune(search, np.zeros((1, 4)), truth, nlist=4, reranks=True, target=0.95)
    assert result.recall == pytest.approx(0.7)


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    generator = ClusteredVectors(dim=64, topics=50, subtopics=5, seed=3)
    return generator.chunk(0, 6000), generator.queries(100)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16"])
def test_ivf_indexes_add_remove_save_and_memory_map(
    factory: str, clustered: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, queries = clustered
    ids = np.arange(len(data), dtype=np.int64) * 3 + 5
    index = VectorIndex.create(64, factory)
    index.train(data)
    index.add(ids, data)
    assert index.approximate and index.nlist == 64 and index.ntotal == len(data)
    assert index.remove(ids[:100]) == 100
    assert set(index.ids().tolist()) == set(ids[100:].tolist())
    index.nprobe = 64
    _, found = index.search(queries, 10)
    assert not np.isin(found, ids[:100]).any()
    allowed = ids[100:600]
    _, filtered = index.search(queries, 10, allowed)
    assert np.isin(filtered[filtered >= 0], allowed).all()

    path = tmp_path / "vectors.faiss"
    digest = index.save(path)
    size = path.stat().st_size
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    mapped = VectorIndex.load(path, factory, digest, expected_bytes=size, mmap=True)
    read = VectorIndex.load(path, factory, digest, expected_bytes=size)
    assert mapped.mapped and not read.mapped
    for loaded in (mapped, read):
        loaded.nprobe = 64
        assert np.array_equal(loaded.search(queries, 10)[1], found)
    with pytest.raises(IndexCorruptError, match="bytes"):
        VectorIndex.load(path, factory, digest, expected_bytes=size + 1, mmap=True)
    with pytest.raises(IndexCorruptError, match="does not hold"):
        VectorIndex.load(path, EXACT, digest)


def test_full_probing_of_an_ivf_flat_index_is_exact(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    data, queries = clustered
    ids = np.arange(len(data), dtype=np.int64)
    ivf = VectorIndex.create(64, "IVF32,Flat")
    ivf.train(data)
    ivf.add(ids, data)
    exact = VectorIndex.from_vectors(64, ids, data)
    _, approx_ids = ivf.search(queries, 10, nprobe=32)
    _, exact_ids = exact.search(queries, 10)
    assert recall_at_k(approx_ids, exact_ids) == 1.0


# --- the Index: building, re-planning and searching approximate indexes ------------------------------


def _synthetic_index(tmp_path: Path, encoder: object, count: int, **settings: object) -> Index:
    index = Index.create(tmp_path / "idx", encoder=encoder, **settings)  # type: ignore[arg-type]
    generator = ClusteredVectors(dim=index.dim, topics=40, subtopics=5, seed=7)
    fill_index(index, generator.chunk(0, count), caption_every=5)
    return index


def test_an_index_outgrowing_exact_search_is_rebuilt_tuned_and_recorded(
    tmp_path: Path, tiny_encoder: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "EXACT_MAX_VECTORS", 1000)
    monkeypatch.setattr("vecsearch.vector_file.EXACT_MAX_VECTORS", 1000)
    index = _synthetic_index(tmp_path, tiny_encoder, 3000)
    faiss_info = index.manifest["faiss"]
    assert faiss_info["family"] == "ivf-flat" and faiss_info["type"].startswith("IVF")
    assert faiss_info["recall@10"] >= 0.95 and faiss_info["tuning_queries"] == 200
    assert faiss_info["trained_on"] == 3000 and faiss_info["nprobe"] >= 1
    assert "more than 1,000" in faiss_info["reason"]

    reopened = Index.open(index.path)
    assert reopened.vectors.approximate and reopened.vectors.nprobe == faiss_info["nprobe"]
    stored_ids, stored = reopened.store.vectors_of(reopened.store.sample_item_ids(30, seed=5))
    found = 0
    for item_id, vector in zip(stored_ids, stored, strict=True):
        hits = reopened.search(f"id:{item_id}", k=10, kind="any")
        truth = [i for i, _ in brute_force_search(reopened, vector, 11) if i != item_id][:10]
        found += len({h.id for h in hits} & set(truth))
    assert found / (30 * 10) >= 0.9
    reopened.close()
    index.close()


def test_kind_and_path_filters_on_an_approximate_index_return_only_allowed_items(
    tmp_path: Path, tiny_encoder: object
) -> None:
    index = _synthetic_index(tmp_path, tiny_encoder, 2000, index_type="ivf-flat")
    assert index.vectors.approximate
    vector = index.store.vector(1)
    captions = index.search("id:1", k=15, kind="caption")
    assert len(captions) == 15 and all(h.kind == "caption" for h in captions)
    truth = brute_force_search(index, vector, 16, index.store.item_ids("caption"))
    assert [h.id for h in captions] == [i for i, _ in truth if i != 1][:15]  # narrow filter: exact scan
    images = index.search("id:1", k=10, kind="image")
    assert len(images) == 10 and all(h.kind == "image" for h in images)
    narrow = index.search("id:1", k=5, path="*/0000001*")
    assert narrow and all(h.relpath.startswith("0000001") for h in narrow)
    index.close()


def test_pq_indexes_rescore_candidates_with_the_stored_vectors(tmp_path: Path, tiny_encoder: object) -> None:
    index = _synthetic_index(tmp_path, tiny_encoder, 5000, index_type="ivf-pq")
    info = index.manifest["faiss"]
    assert info["family"] == "ivf-pq" and info["rerank"] in RERANK_DEPTHS and info["rerank"] > 1  # re-scored
    hits = index.search("id:10", k=5, kind="any")
    stored = {i: v for i, v in zip(*index.store.vectors_of(np.array([h.id for h in hits])), strict=True)}
    query = index.store.vector(10)
    for hit in hits:  # scores are exact cosines, not PQ estimates
        assert hit.score == pytest.approx(float(stored[hit.id] @ query), abs=1e-5)
    index.close()


def test_the_cli_records_a_memory_budget_and_index_type(
    tmp_path: Path, tiny_model_dir: Path, make_images: object
) -> None:
    folder = tmp_path / "pics"
    make_images(folder, 12)  # type: ignore[operator]
    target = tmp_path / "idx"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "index",
            str(folder),
            "--index",
            str(target),
            "--model",
            str(tiny_model_dir),
            "--max-memory",
            "2G",
            "--index-type",
            "ivf-flat",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert "IVF" in report["vector_index"] and "recall@10" in report["vector_index"]
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["faiss"]["max_memory"] == 2 * GiB and manifest["faiss"]["requested"] == "ivf-flat"
    info = runner.invoke(main, ["info", str(target)])
    assert "ivf-flat index type, memory budget 2.0 GiB" in info.output and "recall@10" in info.output
    search = runner.invoke(main, ["search", str(target), "red circle", "--json"])
    assert search.exit_code == 0 and len(json.loads(search.output)) == 10

    back = runner.invoke(main, ["index", "--index", str(target), "--index-type", "exact", "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads((target / "manifest.json").read_text())["faiss"]["type"] == EXACT

    bad = runner.invoke(main, ["index", "--index", str(target), "--max-memory", "lots"])
    assert bad.exit_code == 2 and "not a size" in bad.output


def test_readers_memory_map_large_vector_files_and_writers_read_them_whole(
    tmp_path: Path, tiny_encoder: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _synthetic_index(tmp_path, tiny_encoder, 2000, index_type="ivf-flat")
    expected = [h.id for h in index.search("id:3", k=10, kind="any")]
    index.close()
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    reader = Index.open(tmp_path / "idx")
    assert reader.vectors.mapped  # the size is checked instead of reading the file for its checksum
    assert [h.id for h in reader.search("id:3", k=10, kind="any")] == expected
    reader.close()
    writer = Index.open(tmp_path / "idx")
    writer.add([])  # a writer loads the file whole (it must be able to change it)
    assert not writer.vectors.mapped
    writer.close()
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["faiss"]["bytes"] += 1
    manifest_path.write_text(json.dumps(manifest))
    damaged = Index.open(tmp_path / "idx")
    with pytest.raises(IndexCorruptError, match="bytes"):
        damaged.search("id:3")
    damaged.close()


def test_later_crawls_add_to_the_lists_without_retraining(
    tmp_path: Path, tiny_encoder: object, make_images: object
) -> None:
    make_images(tmp_path / "a", 16, prefix="a")  # type: ignore[operator]
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder, index_type="ivf-flat")  # type: ignore[arg-type]
    first = index.add(tmp_path / "a")
    assert first.vector_index and "IVF" in first.vector_index
    trained = index.manifest["faiss"]
    make_images(tmp_path / "b", 10, prefix="b")  # type: ignore[operator]
    second = index.add(tmp_path / "b")
    after = index.manifest["faiss"]
    assert second.added + second.reused == 10 and index.vectors.ntotal == 26
    assert after["type"] == trained["type"] and after["trained_on"] == trained["trained_on"] == 16
    assert second.vector_index is None or "retuned" in second.vector_index  # never "is now": no rebuild
    new_id = max(index.store.item_ids("image"))
    vector = index.store.vector(new_id)
    _, ids = index.vectors.search(vector, 2, nprobe=index.vectors.nlist)
    assert new_id in ids[0]  # the new vector is in the lists (beside its duplicate's, which is the same)
    index.close()


def test_tuning_stops_where_recall_plateaus_and_takes_the_cheapest_setting_near_the_best() -> None:
    truth = np.arange(1000).reshape(1, 1000)
    tried: list[int] = []
    ceiling = {1: 600, 2: 800, 4: 900, 8: 940, 16: 941, 32: 941, 64: 941}

    def search(queries: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        tried.append(nprobe)
        found = truth.copy()
        found[0, ceiling.get(nprobe, 941) :] = -1  # the codes cap recall at 0.941
        return found

    result = tune(search, np.zeros((1, 4)), truth, nlist=4096, reranks=False)
    assert tried == [1, 2, 4, 8, 16, 32]  # two doublings without gain: stop, never scan 4,096 lists
    assert result.nprobe == 8 and result.recall == pytest.approx(0.940)
