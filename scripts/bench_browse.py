#!/usr/bin/env python
"""Browsing the collection (`Index.browse`, GET /api/v1/pictures): time per page on a large index.

    .venv/bin/python scripts/bench_browse.py                      # 100,000 pictures
    .venv/bin/python scripts/bench_browse.py --pictures 20000 --repeats 5

An index of the bundled starter model is filled through its own store, as a crawl would, minus the model:
`--pictures` image files in 100 folders with random modified times, every second one with a caption,
random unit vectors (browsing never reads them). Then each kind of page is asked for `--repeats` times
after one warm-up and the median is reported: the shuffle's first, middle and last pages, 1,000 pictures
at once, newest first and by path, the whole endpoint through FastAPI's test client (tags and JSON
included), and a walk through every page of one shuffle (checked to show each picture once). For
comparison, the way the shuffle was not built: every picture id read into Python and shuffled by numpy.
Results go to scripts/results/bench_browse.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import vecsearch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_browse.json"


def fill(index: vecsearch.Index, pictures: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    store = index.store
    now = time.time_ns()
    vectors = rng.standard_normal((1000, index.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.transaction():
        root_id = store.add_root(str(index.path / "photos"), "photos", {})
        gen = store.bump_generation()
        for n in range(pictures):
            mtime = now - int(rng.integers(0, 10**17))
            file_id = store.add_file(root_id, f"folder{n % 100:03d}/{n:08d}.jpg", 1000, mtime, f"{n:064x}")
            store.add_item("image", file_id, vectors[n % 1000], gen)
            if n % 2:
                store.add_item("caption", file_id, vectors[(n + 1) % 1000], gen, text=f"caption {n}", source="sidecar")
    index.vector_file.rebuild()
    index.vector_file.save()


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from vecsearch.serve import create_app

    results: dict[str, Any] = {
        "pictures": args.pictures,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "vecsearch": vecsearch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp, vecsearch.Index.create(Path(tmp) / "index", model="starter") as index:
        start = time.perf_counter()
        fill(index, args.pictures)
        results["fill_seconds"] = round(time.perf_counter() - start, 1)
        last = max(0, args.pictures - 24)
        timings = {
            "random, first page of 24": lambda: index.browse(24, 0, seed=7),
            "random, page of 24 at the middle": lambda: index.browse(24, args.pictures // 2, seed=7),
            "random, last page of 24": lambda: index.browse(24, last, seed=7),
            "random, 1,000 at once": lambda: index.browse(1000, 0, seed=7),
            "newest, first page of 24": lambda: index.browse(24, 0, order="newest"),
            "path, first page of 24": lambda: index.browse(24, 0, order="path"),
        }
        results["ms"] = {name: median_ms(run, args.repeats) for name, run in timings.items()}
        client = TestClient(create_app(index), base_url="http://127.0.0.1")
        results["ms"]["GET /api/v1/pictures?limit=24 (test client)"] = median_ms(
            lambda: client.get("/api/v1/pictures", params={"limit": 24, "seed": 7}).raise_for_status(), args.repeats
        )

        def numpy_shuffle() -> np.ndarray:
            rows = index.store.conn.execute("SELECT id FROM items WHERE kind = 'image'").fetchall()
            ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            return np.random.default_rng(7).permutation(ids)[:24]

        results["ms"]["not used: every id into Python, numpy permutation, first 24"] = median_ms(
            numpy_shuffle, args.repeats
        )
        start = time.perf_counter()
        seen: list[int] = []
        for offset in range(0, args.pictures, 10_000):
            seen += [item.id for item in index.browse(10_000, offset, seed=11).items]
        results["walk"] = {
            "pages_of_10000_seconds": round(time.perf_counter() - start, 2),
            "pictures_seen": len(seen),
            "distinct": len(set(seen)),
        }
    assert results["walk"]["distinct"] == args.pictures == results["walk"]["pictures_seen"]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
