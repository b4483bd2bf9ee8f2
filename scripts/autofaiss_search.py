"""Search an index built by scripts/autofaiss_build.py, for a side-by-side benchmark against vecsearch.

Benchmark-only, like autofaiss_build.py: it runs inside .venv-autofaiss (faiss and numpy only; it never
imports vecsearch or autofaiss), and hands its results back as a file, so that the benchmark measures recall
against its own ground truth and computes the latency percentiles itself.

    .venv-autofaiss/bin/python scripts/autofaiss_search.py --index knn.index --build-json build.json \\
        --queries QUERIES.npy --k 10 --out RESULTS.npz [--ground-truth GT.npy]

It loads the index, applies the search parameters autofaiss chose (the index_param string from the build JSON,
or from autofaiss's infos file, or --index-param) with faiss.ParameterSpace().set_index_parameters, and runs
the queries one at a time on one thread (faiss.omp_set_num_threads(1)), timing each search call.

RESULTS.npz holds ids (int64, n x k; -1 where the index returned fewer than k), distances (float32, n x k:
inner products for an "ip" index) and latencies_ms (float64, n). The queries are used as given: normalise them
first for an inner-product index built on unit vectors. With --ground-truth (an n x >=k int array of the true
neighbours' row numbers) it also prints recall@k.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np


def read_index_param(build_json: Path | None, index: Path) -> str:
    """autofaiss's search-parameter string: from the build JSON, else from its infos file next to the index."""
    candidates = [build_json] if build_json else [index.with_name(index.name + ".infos.json")]
    for path in candidates:
        if path is not None and path.exists():
            return str(json.loads(path.read_text()).get("index_param") or "")
    raise SystemExit(f"no index_param found (looked in {', '.join(map(str, candidates))}); pass --index-param")


def search_parameters(index: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        out["nprobe"] = int(ivf.nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):
            out["quantizer_efSearch"] = int(quantizer.hnsw.efSearch)
        if hasattr(ivf, "polysemous_ht"):
            out["polysemous_ht"] = int(ivf.polysemous_ht)
    else:
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        inner = faiss.downcast_index(inner)
        if hasattr(inner, "hnsw"):
            out["efSearch"] = int(inner.hnsw.efSearch)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--build-json", type=Path, help="autofaiss_build.py's --json (default: INDEX.infos.json)")
    parser.add_argument("--index-param", help="search parameters to use instead of autofaiss's (e.g. nprobe=64)")
    parser.add_argument("--queries", required=True, type=Path, help=".npy (n, d) float32/float16")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", required=True, type=Path, help=".npz with ids, distances, latencies_ms")
    parser.add_argument("--warmup", type=int, default=10, help="untimed searches first (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="faiss threads (default 1)")
    parser.add_argument("--mmap", action="store_true", help="memory-map the index file instead of reading it")
    parser.add_argument("--ground-truth", type=Path, help=".npy (n, >=k) true neighbour ids: print recall@k")
    args = parser.parse_args(argv)

    index_param = args.index_param if args.index_param is not None else read_index_param(args.build_json, args.index)
    start = time.perf_counter()
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if args.mmap else 0
    index = faiss.read_index(str(args.index), flags)
    load_seconds = time.perf_counter() - start
    if index_param:
        faiss.ParameterSpace().set_index_parameters(index, index_param)
    faiss.omp_set_num_threads(args.threads)

    queries = np.ascontiguousarray(np.load(args.queries), dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise SystemExit(f"queries have shape {queries.shape}, the index has d={index.d}")
    n = queries.shape[0]
    for i in range(min(args.warmup, n)):
        index.search(queries[i : i + 1], args.k)

    ids = np.empty((n, args.k), dtype=np.int64)
    distances = np.empty((n, args.k), dtype=np.float32)
    latencies_ms = np.empty(n, dtype=np.float64)
    for i in range(n):
        t0 = time.perf_counter()
        d, x = index.search(queries[i : i + 1], args.k)
        latencies_ms[i] = (time.perf_counter() - t0) * 1000.0
        ids[i], distances[i] = x[0], d[0]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, ids=ids, distances=distances, latencies_ms=latencies_ms)
    summary: dict[str, Any] = {
        "index_param": index_param,
        "search_parameters": search_parameters(index),
        "queries": n,
        "k": args.k,
        "threads": args.threads,
        "load_seconds": round(load_seconds, 3),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 4),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 4),
        "mean_ms": round(float(latencies_ms.mean()), 4),
    }
    if args.ground_truth:
        truth = np.load(args.ground_truth)[:, : args.k]
        hits = sum(len(set(ids[i]) & set(truth[i])) for i in range(n))
        summary[f"recall@{args.k}"] = round(hits / (n * args.k), 4)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
