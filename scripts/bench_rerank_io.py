"""Cold re-ranking reads from disk: the kernel's read-ahead on, as a plain mapping has it, against off.

    .venv/bin/python scripts/bench_rerank_io.py [--rows 4000000] [--dim 512] [--queries 100] [--depth 32]

Why: an on-disk index re-scores each query's 10 x depth candidates on half-precision codes that are
memory-mapped (vecsearch/rerank.py). The candidates are scattered over the whole file, and with read-ahead
each row read brings in up to 128 KiB around it. This writes a codes file like a built index's (random
contents; what is measured is I/O), evicts it from the page cache before each arm, scores the same random
candidates through `RerankCodes.scores` with each mapping, one query at a time, and reports per-query p50/p99
and how much of the file ended up in the page cache (util-linux fincore). Needs write access to
/proc/sys/vm/drop_caches for a truly cold start (root); without it, posix_fadvise(DONTNEED) alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vecsearch.rerank import RerankCodes  # noqa: E402

K = 10


def evict(paths: list[Path]) -> str:
    os.sync()
    for path in paths:
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "posix_fadvise(DONTNEED) + drop_caches"
    except OSError:
        return "posix_fadvise(DONTNEED) only"


def cached_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "-bno", "RES", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def write_codes(prefix: Path, rows: int, dim: int) -> None:
    rng = np.random.default_rng(0)

    def parts():  # type: ignore[no-untyped-def]
        step = 250_000
        block = rng.standard_normal((step, dim)).astype(np.float16)  # one block repeated: contents are not measured
        for start in range(0, rows, step):
            ids = np.arange(start, min(rows, start + step), dtype=np.int64)
            yield ids, block[: len(ids)]

    RerankCodes.write(prefix, parts(), rows, dim, None)


def arm(prefix: Path, mode: str, candidates: np.ndarray, query: np.ndarray) -> dict[str, float | str]:
    codes_path = Path(f"{prefix}.codes.npy")
    how = evict([codes_path, Path(f"{prefix}.ids.npy")])
    codes = RerankCodes.open(prefix)
    if mode == "read-ahead":  # the plain mapping, as np.load maps it: the kernel's default read-ahead
        codes.codes, codes.mapping = np.load(codes_path, mmap_mode="r"), None
    elif mode == "random":  # read-ahead off, but each row's page waited for in turn
        codes.mapping = None
    times = []  # "random + will-need" is RerankCodes as opened: read-ahead off, the rows' pages asked for at once
    for row in candidates:
        start = time.perf_counter()
        codes.scores(query, row)
        times.append((time.perf_counter() - start) * 1000)
    p50, p99 = np.percentile(times, [50, 99])
    cached = cached_bytes(codes_path)
    warm = []  # the same candidates again, now in the page cache: what the advice costs when it is not needed
    for row in candidates:
        start = time.perf_counter()
        codes.scores(query, row)
        warm.append((time.perf_counter() - start) * 1000)
    return {
        "eviction": how,
        "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(np.mean(times)), 3),
        "page_cache_bytes": cached,
        "warm_p50_ms": round(float(np.percentile(warm, 50)), 3),
        "rows_read_bytes": int(candidates.size * codes.codes.shape[1] * 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_rerank_io")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    prefix = args.workdir / "vectors"
    start = time.perf_counter()
    write_codes(prefix, args.rows, args.dim)
    written = time.perf_counter() - start
    rng = np.random.default_rng(1)
    candidates = rng.integers(0, args.rows, size=(args.queries, K * args.depth), dtype=np.int64)
    query = rng.standard_normal(args.dim).astype(np.float32)
    size = Path(f"{prefix}.codes.npy").stat().st_size
    print(f"codes file: {args.rows:,} x {args.dim} half precision, {size / 2**30:.2f} GiB (written in {written:.0f} s)")
    print(f"{args.queries} queries, {K * args.depth} candidates each, one at a time, cold start per arm")
    result = {"rows": args.rows, "dim": args.dim, "queries": args.queries, "candidates": K * args.depth}
    for name in ("read-ahead", "random", "random + will-need", "read-ahead"):
        got = arm(prefix, name, candidates, query)
        result.setdefault(name, []).append(got)
        print(
            f"{name:20} cold p50 {got['p50_ms']:8.3f} ms  p99 {got['p99_ms']:8.3f} ms  mean {got['mean_ms']:8.3f} ms  "
            f"warm p50 {got['warm_p50_ms']:6.3f} ms  "
            f"page cache {int(got['page_cache_bytes']) / 2**20:8.1f} MiB for {int(got['rows_read_bytes']) / 2**20:.1f} MiB "
            f"of rows ({got['eviction']})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for suffix in (".ids.npy", ".codes.npy"):
        Path(f"{prefix}{suffix}").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
