"""Benchmark of vector search at scale: the index types vecsearch chooses from, on clustered vectors.

    .venv/bin/python scripts/bench_search.py [--sizes 100000 1000000] [--dim 512] [--json results.json]

For each collection size it builds, through vecsearch's own code (plan.choose, VectorIndex.train/add,
plan.tune), every index family: exact, IVF-Flat, IVF-SQ8 and IVF-PQ (re-scored from the exact vectors, as
the index does from its database). Search parameters are tuned the way an index tunes itself: on 200 of
the collection's own vectors. Recall@10 against exact search is then measured on 500 held-out queries of
two kinds: image-like (drawn like the collection) and text-like (shifted by a modality gap). Latency is
single-query (p50/p99 over those queries) and batch throughput is all of them in one call.
See scripts/synthetic_vectors.py for how the vectors are made. Prints what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_vectors import ClusteredVectors  # noqa: E402

from vecsearch.plan import (  # noqa: E402
    TUNE_K,
    TUNE_QUERIES,
    candidate,
    choose,
    exact_top_k,
    recall_at_k,
    training_sample,
    tune,
)
from vecsearch.sizes import human_bytes, parse_size  # noqa: E402
from vecsearch.vectors import VectorIndex  # noqa: E402

HELD_OUT = 500


def rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def build(family: str, data: np.ndarray, ids: np.ndarray) -> tuple[VectorIndex, float, Any]:
    plan = candidate(family, len(data), data.shape[1])
    start = time.perf_counter()
    index = VectorIndex.create(data.shape[1], plan.factory)
    if index.approximate:
        index.train(data[training_sample(len(ids), plan.nlist)])
    for begin in range(0, len(data), 100_000):
        index.add(ids[begin : begin + 100_000], data[begin : begin + 100_000])
    return index, time.perf_counter() - start, plan


def searcher(index: VectorIndex, data: np.ndarray, reranks: bool):
    """(queries, k, nprobe, depth) -> ids, re-scoring PQ candidates with the exact vectors."""

    def run(queries: np.ndarray, k: int, nprobe: int, depth: int, exclude: np.ndarray | None = None) -> np.ndarray:
        fetch = k * depth + (1 if exclude is not None else 0)
        _, found = index.search(queries, fetch, nprobe=nprobe)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, candidates in enumerate(found):
            candidates = candidates[candidates >= 0]
            if exclude is not None:
                candidates = candidates[candidates != exclude[row]]
            if reranks and len(candidates):
                candidates = candidates[np.argsort(-(data[candidates] @ queries[row]), kind="stable")]
            out[row, : min(k, len(candidates))] = candidates[:k]
        return out

    return run


def measure(size: int, dim: int, results: list[dict[str, Any]]) -> None:
    generator = ClusteredVectors(dim=dim, topics=max(50, size // 1000), seed=0)
    start = time.perf_counter()
    data = np.concatenate(list(generator.collection(size)))
    ids = np.arange(size, dtype=np.int64)  # ids equal row numbers, so re-scoring can index `data`
    made = time.perf_counter() - start
    print(f"\n== {size:,} vectors of dimension {dim} (generated in {made:.0f} s)")
    query_sets = {"image-like": generator.queries(HELD_OUT), "text-like": generator.queries(HELD_OUT, text_like=True)}
    exact = VectorIndex.from_vectors(dim, ids, data)
    truth = {name: exact.search(q, TUNE_K)[1] for name, q in query_sets.items()}
    tuning_ids = np.sort(np.random.default_rng(1).choice(size, TUNE_QUERIES, replace=False))
    tuning_truth = exact_top_k([(ids, data)], data[tuning_ids], tuning_ids, TUNE_K)
    for budget in (None, 1 << 30):
        chosen = choose(size, dim, budget)
        print(
            f"auto choice with {'default budget' if budget is None else human_bytes(budget) + ' budget'}: "
            f"{chosen.factory} ({chosen.reason})"
        )
    print(
        f"{'index':<24}{'build s':>9}{'memory':>11}{'nprobe':>8}{'depth':>7}{'R@10 tune':>11}"
        f"{'R@10 img':>10}{'R@10 txt':>10}{'p50 ms':>9}{'p99 ms':>9}{'batch QPS':>11}"
    )
    for family in ("exact", "ivf-flat", "ivf-sq8", "ivf-pq"):
        gc.collect()
        before = rss()
        index, seconds, plan = (
            (exact, 0.0, candidate("exact", size, dim)) if family == "exact" else build(family, data, ids)
        )
        memory = len(__import__("faiss").serialize_index(index.index)) if family != "exact" else size * dim * 4
        grown = rss() - before
        run = searcher(index, data, plan.reranks)
        nprobe, depth, tuned = 0, 1, 1.0
        if index.approximate:
            setting = tune(
                lambda q, k, p, d, run=run: run(q, k, p, d, exclude=tuning_ids),
                data[tuning_ids],
                tuning_truth,
                index.nlist,
                plan.reranks,
            )
            nprobe, depth, tuned = setting.nprobe, setting.rerank, setting.recall
        recalls = {name: recall_at_k(run(q, TUNE_K, nprobe or 1, depth), truth[name]) for name, q in query_sets.items()}
        latencies = []
        for query in query_sets["text-like"]:
            began = time.perf_counter()
            run(query[None, :], TUNE_K, nprobe or 1, depth)
            latencies.append((time.perf_counter() - began) * 1000)
        latencies.sort()
        batch = np.concatenate(list(query_sets.values()))
        began = time.perf_counter()
        run(batch, TUNE_K, nprobe or 1, depth)
        qps = len(batch) / (time.perf_counter() - began)
        row = {
            "vectors": size,
            "dim": dim,
            "index": plan.factory,
            "family": family,
            "build_seconds": round(seconds, 1),
            "memory_bytes": memory,
            "rss_growth_bytes": grown,
            "nprobe": nprobe,
            "rerank_depth": depth,
            "recall@10_tuning": round(tuned, 4),
            "recall@10_image_like": round(recalls["image-like"], 4),
            "recall@10_text_like": round(recalls["text-like"], 4),
            "p50_ms": round(latencies[len(latencies) // 2], 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
            "batch_qps": round(qps, 1),
        }
        results.append(row)
        print(
            f"{plan.factory:<24}{seconds:>9.1f}{human_bytes(memory):>11}{nprobe:>8}{depth:>7}{tuned:>11.3f}"
            f"{recalls['image-like']:>10.3f}{recalls['text-like']:>10.3f}{row['p50_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{qps:>11.0f}",
            flush=True,
        )
        if family != "exact":
            del index
    del exact, data


def measure_streaming(size: int, dim: int, budget: int, results: list[dict[str, Any]]) -> None:
    """The index `choose` picks for `budget`, built chunk by chunk: for sizes whose raw vectors do not fit
    in memory. Exact answers for the held-out queries are computed over the same stream."""
    generator = ClusteredVectors(dim=dim, topics=max(50, size // 1000), seed=0)
    plan = choose(size, dim, budget)
    print(
        f"\n== {size:,} vectors of dimension {dim}, streamed; budget {human_bytes(budget)}: {plan.factory} "
        f"({plan.reason})",
        flush=True,
    )
    queries = {"image-like": generator.queries(HELD_OUT), "text-like": generator.queries(HELD_OUT, text_like=True)}
    tuning = generator.chunk(0)[:TUNE_QUERIES]  # the collection's first vectors, ids 0..199
    tuning_ids = np.arange(TUNE_QUERIES, dtype=np.int64)
    start = time.perf_counter()
    index = VectorIndex.create(dim, plan.factory)
    sample_chunks = max(1, -(-len(training_sample(size, plan.nlist)) // 100_000))
    sample = np.concatenate([generator.chunk(n) for n in range(sample_chunks)])
    index.train(sample[training_sample(len(sample), plan.nlist)])
    del sample
    trained = time.perf_counter() - start
    print(f"  trained in {trained:.0f} s", flush=True)
    best = {
        name: (np.full((len(q), TUNE_K), -np.inf, np.float32), np.full((len(q), TUNE_K), -1, np.int64))
        for name, q in {**queries, "tuning": tuning}.items()
    }
    generate_seconds = 0.0
    for number, begin in enumerate(range(0, size, 100_000)):
        t0 = time.perf_counter()
        chunk = generator.chunk(number)
        generate_seconds += time.perf_counter() - t0
        ids = np.arange(begin, begin + len(chunk), dtype=np.int64)
        index.add(ids, chunk)
        for name, q in {**queries, "tuning": tuning}.items():
            chunk_truth = exact_top_k(
                [(ids, chunk)], q, tuning_ids if name == "tuning" else np.full(len(q), -1), TUNE_K
            )
            scores = np.take_along_axis(q @ chunk.T, chunk_truth - begin, axis=1)
            all_scores = np.concatenate([best[name][0], scores], axis=1)
            all_ids = np.concatenate([best[name][1], chunk_truth], axis=1)
            top = np.argsort(-all_scores, axis=1, kind="stable")[:, :TUNE_K]
            best[name] = (np.take_along_axis(all_scores, top, axis=1), np.take_along_axis(all_ids, top, axis=1))
        if number % 10 == 9:
            print(f"  {begin + len(chunk):,} added, {time.perf_counter() - start:.0f} s", flush=True)
    build = time.perf_counter() - start - generate_seconds
    memory = rss()
    run = searcher(index, np.zeros((0, dim), np.float32), False)
    setting = tune(
        lambda q, k, p, d: run(q, k, p, d, exclude=tuning_ids), tuning, best["tuning"][1], index.nlist, False
    )
    recalls = {name: recall_at_k(run(q, TUNE_K, setting.nprobe, 1), best[name][1]) for name, q in queries.items()}
    curve = [
        (nprobe, recall_at_k(run(queries["text-like"], TUNE_K, nprobe, 1), best["text-like"][1]))
        for nprobe in (1, 4, 16, 64, 256)
    ]
    print(
        "  recall@10 of text-like queries by nprobe: "
        + ", ".join(f"{nprobe}: {recall:.3f}" for nprobe, recall in curve),
        flush=True,
    )
    latencies = []
    for query in queries["text-like"]:
        began = time.perf_counter()
        run(query[None, :], TUNE_K, setting.nprobe, 1)
        latencies.append((time.perf_counter() - began) * 1000)
    latencies.sort()
    batch = np.concatenate(list(queries.values()))
    began = time.perf_counter()
    run(batch, TUNE_K, setting.nprobe, 1)
    qps = len(batch) / (time.perf_counter() - began)
    size_bytes = len(__import__("faiss").serialize_index(index.index))
    row = {
        "vectors": size,
        "dim": dim,
        "index": plan.factory,
        "family": plan.family,
        "budget_bytes": budget,
        "build_seconds": round(build, 1),
        "train_seconds": round(trained, 1),
        "memory_bytes": size_bytes,
        "process_rss_bytes": memory,
        "nprobe": setting.nprobe,
        "recall@10_tuning": round(setting.recall, 4),
        "recall@10_image_like": round(recalls["image-like"], 4),
        "recall@10_text_like": round(recalls["text-like"], 4),
        "p50_ms": round(latencies[len(latencies) // 2], 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "batch_qps": round(qps, 1),
        "text_like_recall_by_nprobe": dict(curve),
    }
    results.append(row)
    print(
        f"  {plan.factory}: build {build:.0f} s (training {trained:.0f} s, generation excluded), index "
        f"{human_bytes(size_bytes)}, process RSS {human_bytes(memory)}; nprobe {setting.nprobe}: recall@10 "
        f"{setting.recall:.3f} tuning, {recalls['image-like']:.3f} image-like, {recalls['text-like']:.3f} text-like; "
        f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, batch {qps:.0f} QPS",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--stream",
        type=int,
        nargs="*",
        default=[],
        help="Sizes to build streamed, with the index chosen for --budget (e.g. 10000000).",
    )
    parser.add_argument("--budget", default="8G", help="Memory budget for the streamed sizes.")
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON here.")
    args = parser.parse_args()
    import faiss

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, numpy {np.__version__}"
    )
    results: list[dict[str, Any]] = []
    for size in args.sizes:
        measure(size, args.dim, results)
    for size in args.stream:
        measure_streaming(size, args.dim, parse_size(args.budget), results)
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
