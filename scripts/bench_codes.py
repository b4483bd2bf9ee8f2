"""Which codes rank candidates well enough: index families side by side on the calibrated vectors.

    .venv/bin/python scripts/bench_codes.py [--count 200000] [--lists 2048] > scripts/results/bench_codes.txt

Why: the planner's order of families (8-bit PQ after an OPQ rotation before 4-bit fast-scan codes, SQ8
re-ranked too, re-ranking on half-precision rather than SQ8 codes) rests on these measurements. Each
family is built with vecsearch's own `VectorIndex` (its training: seeded sample, OPQ iterations, two-level
k-means where the lists are many) over `RealisticVectors`; 300 held-out text-like and 300 image-like
queries fetch `10 × depth` candidates, re-scored exactly (or on SQ8 re-ranking codes: the "sq8-codes"
rows), and recall@10 is the overlap with exact search. The time is the mean of 100 text-like queries run
one at a time on one thread, re-scoring included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]
from realistic_vectors import RealisticVectors  # noqa: E402

from vecsearch.rerank import RerankCodes  # noqa: E402
from vecsearch.vectors import VectorIndex  # noqa: E402

FAMILIES = {  # factory (with {n} lists) -> (nprobes, depths)
    "IVF{n},SQ8": ((16, 64, 256), (1, 2, 4)),
    "IVF{n},PQ64x4fs": ((16, 64, 256), (1, 10, 40)),
    "IVF{n},PQ128x4fs": ((16, 64, 256), (10, 40)),
    "IVF{n},PQ64": ((16, 64, 256), (10, 40)),
    "OPQ64_512,IVF{n},PQ64": ((16, 64, 256), (10, 40)),
    "HNSW32_SQ8": ((32, 64, 128, 256, 512), (1, 4)),
}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--lists", type=int, default=2048)
    parser.add_argument("--only", nargs="*", help="factories to run (default: all)")
    args = parser.parse_args()
    gen = RealisticVectors(512, 0)
    data = np.concatenate(list(gen.collection(args.count)))
    queries = {"text": gen.text_queries(300), "image": gen.image_queries(300)}
    truth = {kind: np.argsort(-(q @ data.T), axis=1)[:, :10] for kind, q in queries.items()}
    ids = np.arange(args.count, dtype=np.int64)
    scale = RerankCodes.train(data, precision="sq8")
    sq8 = RerankCodes(ids, RerankCodes.encode(data, scale), scale)
    sample = data[np.random.default_rng(0).choice(args.count, min(args.count, 32 * args.lists), replace=False)]
    print(f"{args.count:,} calibrated 512-d vectors, {args.lists} lists, faiss {faiss.__version__}", flush=True)
    for pattern, (depths_of_search, depths) in FAMILIES.items():
        key = pattern.format(n=args.lists)
        if args.only and key not in args.only and pattern not in args.only:
            continue
        start = time.perf_counter()
        if key.startswith("HNSW"):
            index: Any = faiss.IndexHNSWSQ(512, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)  # type: ignore[arg-type]
            index.train(sample)
            index.add(data)
        else:
            vectors = VectorIndex.create(512, key)
            vectors.train(sample)
            vectors.add(ids, data)
            index = vectors.index
        print(f"{key}: built in {time.perf_counter() - start:.0f} s", flush=True)
        for breadth in depths_of_search:
            if key.startswith("HNSW"):
                index.hnsw.efSearch = breadth
            else:
                faiss.extract_index_ivf(index).nprobe = breadth
            cells = []
            for depth in depths:
                for rescore in ("exact", "sq8-codes") if depth > 1 and key[-4:] == "PQ64" else ("exact",):
                    scores: dict[str, float] = {}
                    for kind, batch in queries.items():
                        _, found = index.search(batch, 10 * depth)
                        if depth > 1:
                            found = np.stack(
                                [_rescored(row, q, data, sq8, rescore) for row, q in zip(found, batch, strict=True)]
                            )
                        scores[kind] = recall(found[:, :10], truth[kind])
                    faiss.omp_set_num_threads(1)
                    began = time.perf_counter()
                    for query in queries["text"][:100]:
                        _, found = index.search(query[None], 10 * depth)
                        if depth > 1:
                            _rescored(found[0], query, data, sq8, rescore)
                    mean_ms = (time.perf_counter() - began) / 100 * 1000
                    faiss.omp_set_num_threads(2)
                    label = f"depth {depth}" + (f" on {rescore}" if rescore != "exact" else "")
                    cells.append(f"{label}: text {scores['text']:.3f} image {scores['image']:.3f} {mean_ms:.2f} ms")
            name = "efSearch" if key.startswith("HNSW") else "nprobe"
            print(f"  {name} {breadth}: " + " | ".join(cells), flush=True)
    return 0


def _rescored(found: np.ndarray, query: np.ndarray, data: np.ndarray, sq8: RerankCodes, how: str) -> np.ndarray:
    found = found[found >= 0]
    scores = data[found] @ query if how == "exact" else sq8.scores(query, found)
    best = np.full(10, -1, dtype=np.int64)
    kept = found[np.argsort(-scores, kind="stable")[:10]]
    best[: len(kept)] = kept
    return best


if __name__ == "__main__":
    raise SystemExit(main())
