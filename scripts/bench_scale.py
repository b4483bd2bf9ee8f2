"""Benchmark of vecsearch's large FAISS indexes at 1M, 10M and 20M (on disk) vectors, queried as users query.

Why: the planner (plan.choose), the sharded build (shard_build.build_sharded) and the tuning
(tuning.tune_for_budget) promise memory, recall and latency goals at scale; this measures them on
calibrated synthetic vectors (scripts/realistic_vectors.py, else scripts/synthetic_vectors.py: --generator)
and, with --autofaiss, side by side with autofaiss (scripts/setup_autofaiss.sh makes .venv-autofaiss).

    .venv/bin/python scripts/bench_scale.py --sizes 1000000 10000000 --disk-sizes 20000000 --autofaiss \\
        --json scripts/results/bench_scale.json > scripts/results/bench_scale.txt
    .venv/bin/python scripts/bench_scale.py --sizes 200000 --disk-sizes 300000 --json /tmp/bench_scale.json
    .venv/bin/python scripts/bench_scale.py --real /tmp/realcoll_vectors.npz --sizes

Per size: plan, build by shards (timed; peak RSS from VmHWM, reset through /proc/self/clear_refs), exact
truth for every query set in one streaming pass, tuning on 200 image-like (the collection's own vectors,
self left out) and 200 text-like queries, then 500 held-out queries of each kind timed one at a time on one
thread (FAISS and BLAS). Re-ranked families re-score candidates as vecsearch does: on SQ8 codes on disk,
on the exact vectors in memory (fetched here by pread from the cached collection; vecsearch reads SQLite).
On-disk indexes are also timed cold: reopened after evicting their files from the page cache. The
collection is the generator's vectors rounded to float16, cached in --workdir as one .npy file when the
disk has room (autofaiss's input too), otherwise made again for each pass.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]
from vecsearch import plan as planner  # noqa: E402
from vecsearch.rerank import SUFFIXES, RerankCodes  # noqa: E402
from vecsearch.shard_build import build_sharded, open_on_disk  # noqa: E402
from vecsearch.tuning import QuerySet, single_thread, tune_for_budget  # noqa: E402

CHUNK, K, GIB = 100_000, 10, 1 << 30
GOALS: dict[str, dict[str, float]] = {  # rss: serving peak; image_p50: 0 = no own latency goal
    "1M": {"rss": 1 * GIB, "text": 0.97, "p50": 1, "p99": 3, "image": 0.98, "image_p50": 0, "build": 120},
    "10M": {"rss": 8 * GIB, "text": 0.95, "p50": 5, "p99": 15, "image": 0.98, "image_p50": 3, "build": 900},
    "20M disk": {"rss": 4 * GIB, "text": 0.90, "p50": 20, "p99": 60, "image": 0.95, "image_p50": 0, "build": 2400},
}
Search = Callable[[np.ndarray, int, int, int], np.ndarray]
AUTOFAISS_ARGS: list[str] = []  # extra options for scripts/autofaiss_build.py (--autofaiss-args)
AUTOFAISS_TIMEOUT = [7200.0]


def latency_budget(args: argparse.Namespace, goals: str | None) -> float:
    """--max-latency, else the goal's p50 for this size (1 ms at 1M, 5 at 10M, 20 at 20M on disk)."""
    if args.max_latency is not None:
        return float(args.max_latency)
    return float(GOALS[goals]["p50"]) if goals else planner.DEFAULT_MAX_LATENCY_MS


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class Generator:
    """Collection chunks and held-out queries: RealisticVectors, or ClusteredVectors ('easy')."""

    def __init__(self, kind: str, dim: int, seed: int) -> None:
        if kind == "realistic":
            from realistic_vectors import RealisticVectors

            self.real: Any = RealisticVectors(dim=dim, seed=seed)
        else:
            from synthetic_vectors import ClusteredVectors

            self.easy: Any = ClusteredVectors(dim=dim, seed=seed)
        self.kind = kind

    def chunk(self, number: int, size: int) -> np.ndarray:
        made = self.real.chunk(number, size) if self.kind == "realistic" else self.easy.chunk(number, size)
        return made.astype(np.float16)  # the collection is float16-rounded everywhere (cache, build, truth)

    def queries(self, count: int, text: bool) -> np.ndarray:
        if self.kind == "realistic":
            return self.real.text_queries(count) if text else self.real.image_queries(count)
        made = self.easy.chunk(0, count, stream=4 if text else 3)  # streams apart from the collection's (1)
        return unit(made + self.easy.gap) if text else made


class ChunkSource:
    """A ShardSource over chunks: position p is row p % CHUNK of chunk p // CHUNK; ids[p] its id."""

    def __init__(self, make: Callable[[int], np.ndarray], count: int, dim: int, ids: np.ndarray | None = None):
        self.make, self.count, self.dim, self.seconds = make, count, dim, 0.0
        self.ids = ids if ids is not None else np.arange(count, dtype=np.int64)

    def chunk(self, number: int) -> np.ndarray:
        start = time.perf_counter()
        vectors = np.asarray(self.make(number), dtype=np.float32)
        self.seconds += time.perf_counter() - start
        return vectors

    def sample(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        out, numbers = np.empty((len(positions), self.dim), np.float32), positions // CHUNK
        for number in np.unique(numbers):  # only the chunks that hold a wanted position
            rows = numbers == number
            out[rows] = self.chunk(int(number))[positions[rows] % CHUNK]
        return out

    def shard(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.empty((stop - start, self.dim), np.float32)  # filled chunk by chunk: no second copy
        for number in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            low, high = max(start, number * CHUNK), min(stop, (number + 1) * CHUNK)
            vectors[low - start : high - start] = self.chunk(number)[low - number * CHUNK : high - number * CHUNK]
        return self.ids[start:stop], vectors

    def pieces(self, size: int = 25_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for number in range((self.count + CHUNK - 1) // CHUNK):
            vectors = self.chunk(number)
            for at in range(0, len(vectors), size):
                yield self.ids[number * CHUNK + at : number * CHUNK + at + size], vectors[at : at + size]


class Cache:
    """The float16 collection in one .npy file (autofaiss's input too), read with pread: no mapping that
    would count in this process's RSS. `pick` fetches rows by id as a store fetches re-ranking vectors."""

    def __init__(self, path: Path, gen: Generator, count: int, dim: int) -> None:
        with open(path, "wb") as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f2", "fortran_order": False, "shape": (count, dim)})
            self.offset = out.tell()
            for number in range((count + CHUNK - 1) // CHUNK):
                out.write(gen.chunk(number, min(CHUNK, count - number * CHUNK)).tobytes())
        self.fd, self.row, self.count, self.dim = os.open(path, os.O_RDONLY), dim * 2, count, dim

    def chunk(self, number: int) -> np.ndarray:
        rows = min(CHUNK, self.count - number * CHUNK)
        data = os.pread(self.fd, rows * self.row, self.offset + number * CHUNK * self.row)
        return np.frombuffer(data, np.float16).reshape(rows, self.dim)

    def pick(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), np.float32)
        for at in np.argsort(ids):  # ascending offsets
            out[at] = np.frombuffer(os.pread(self.fd, self.row, self.offset + int(ids[at]) * self.row), np.float16)
        return out


def memory() -> dict[str, int]:
    """VmHWM (peak since the last reset), VmRSS, RssAnon, RssFile of this process, in bytes."""
    lines = (line.partition(":") for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(v.split()[0]) * 1024 for k, _, v in lines if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


def reset_peak() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


class MemoryCap:
    """This process inside a memory cgroup (v1 or v2): serving an on-disk index as a machine with only the
    budget would, the kernel reclaiming mapped pages to stay under it. Pages already charged stay where they
    were (recent kernels move no charges), so the cgroup gets the budget less the process's anonymous memory
    at entry, and the index's files should be evicted first. Without a writable hierarchy it records why and
    limits nothing."""

    def __init__(self, budget: int) -> None:
        anon = memory()["RssAnon"]
        self.limit, self.group = max(budget - anon, 1 << 28), None
        self.info: dict[str, Any] = {
            "limit_bytes": budget,
            "anon_at_entry_bytes": anon,
            "cgroup_limit_bytes": self.limit,
        }
        root = Path("/sys/fs/cgroup")
        self.v2 = (root / "cgroup.controllers").exists()
        self.parent = root if self.v2 else root / "memory"

    def __enter__(self) -> MemoryCap:
        group = self.parent / f"bench_scale_{os.getpid()}"
        try:
            group.mkdir()
            if self.v2:
                (group / "memory.max").write_text(str(self.limit))
            else:
                (group / "memory.limit_in_bytes").write_text(str(self.limit))
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            self.info["error"] = f"no memory cgroup ({exc})"
            with contextlib.suppress(OSError):
                group.rmdir()
            return self
        self.group = group  # type: ignore[assignment]
        self.info["how"] = "cgroup v2 memory.max" if self.v2 else "cgroup v1 memory.limit_in_bytes"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.group is None:
            return
        group: Path = self.group
        with contextlib.suppress(OSError, ValueError):
            peak = group / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
            self.info["peak_charged_bytes"] = int(peak.read_text().split()[0])
        with contextlib.suppress(OSError):
            if self.v2:
                events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
                self.info["limit_hits"], self.info["oom_kills"] = int(events["max"]), int(events["oom_kill"])
            else:
                self.info["limit_hits"] = int((group / "memory.failcnt").read_text())
        (self.parent / "cgroup.procs").write_text(str(os.getpid()))
        with contextlib.suppress(OSError):
            group.rmdir()
        self.group = None


def parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def index_files(target: Path) -> list[Path]:
    prefix = target.with_suffix("")
    candidates = [target, target.with_suffix(".ivfdata"), *(Path(f"{prefix}{s}") for s in SUFFIXES)]
    return [path for path in candidates if path.exists()]


def evict(paths: list[Path]) -> str:
    """Drop the files' pages from the page cache (fadvise; also drop_caches when root and allowed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    used = "posix_fadvise(DONTNEED)"
    if os.geteuid() == 0:
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3")
            used += " + drop_caches=3"
        except OSError as exc:
            used += f" (drop_caches refused: {exc.strerror})"
    return used


def resident(paths: list[Path]) -> str:
    """Bytes of the files in the page cache (util-linux fincore), to show the eviction worked."""
    try:
        out = subprocess.run(["fincore", "-bno", "RES", *map(str, paths)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return f"{sum(int(n) for n in out.stdout.split())} bytes"


def timed(search: Search, queries: np.ndarray, truth: np.ndarray, nprobe: int, depth: int) -> dict[str, float]:
    """Each query alone on one thread: recall@10 of what the single searches found, p50/p99, first query."""
    found, times = [], []
    with single_thread(), threadpool_limits(1):
        for row in range(len(queries)):
            start = time.perf_counter()
            found.append(search(queries[row : row + 1], K, nprobe, depth)[0])
            times.append((time.perf_counter() - start) * 1000)
    p50, p99 = np.percentile(times, [50, 99])
    recall = planner.recall_at_k(np.array(found), truth)
    ms = {"p50_ms": p50, "p99_ms": p99, "first_ms": times[0]}
    return {"recall@10": round(recall, 4), **{name: round(float(value), 3) for name, value in ms.items()}}


def run_case(
    label: str, source: ChunkSource, sets: dict[str, tuple[np.ndarray, np.ndarray]], args: argparse.Namespace,
    budget: int, storage: str, goals: str | None, workdir: Path, extra: dict[str, Any],
    lookup: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, Any]:  # fmt: skip
    """Plan, build, truth, tune, measure one collection. `sets`: name -> (queries, query ids or -1);
    `lookup`: exact vectors by id, to re-rank in-memory indexes on as vecsearch re-ranks on its store."""
    count, dim = source.count, source.dim
    latency = latency_budget(args, goals)
    plan = planner.choose(count, dim, budget, args.index_type, latency, storage)
    on = args.rerank_on if args.rerank_on != "auto" else ("codes" if plan.storage == "disk" else "exact")
    on = on if plan.reranks and (on == "codes" or lookup is not None) else ("codes" if plan.reranks else "none")
    row: dict[str, Any] = {"label": label, "count": count, "dim": dim, "budget_bytes": budget, **extra}
    row["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())  # other work on the machine skews latency
    row.update(factory=plan.factory, family=plan.family, storage=plan.storage, nlist=plan.nlist)
    row.update(reranks=plan.reranks, rerank_on=on, predicted_ms=plan.predicted_ms, reason=plan.reason, goals=goals)
    row["resident_estimate_bytes_per_vector"] = round(plan.memory(count) / count, 2)
    print(f"[{label}] plan {plan.factory} ({plan.storage}): {plan.reason}", file=sys.stderr, flush=True)

    start, before = time.perf_counter(), source.seconds
    queries = np.concatenate([vectors for vectors, _ in sets.values()])
    query_ids = np.concatenate([ids for _, ids in sets.values()])
    truth_all = planner.exact_top_k(source.pieces(), queries, query_ids, K)  # one streaming pass for all sets
    truth, at = {}, 0
    for name, (vectors, _) in sets.items():
        truth[name], at = truth_all[at : at + len(vectors)], at + len(vectors)
    row["truth_s"] = round(time.perf_counter() - start, 1)
    row["truth_vector_s"] = round(source.seconds - before, 1)

    target = workdir / "index" / "vectors.faiss"
    target.parent.mkdir(parents=True, exist_ok=True)
    reset_peak()
    start, before = time.perf_counter(), source.seconds
    if plan.family == "exact":  # build_sharded trains an IVF index: exact search is built directly
        from vecsearch.vectors import VectorIndex

        index = VectorIndex.from_vectors(dim, *source.shard(0, count))
        index.save(target)
    else:
        training = planner.training_sample(count, plan.nlist)
        index, _ = build_sharded(
            workdir / "work", target, plan.factory, dim, source, training,
            on_disk=plan.storage == "disk", rerank=on == "codes", progress=True,
        )  # fmt: skip
    row["build_s"] = round(time.perf_counter() - start, 1)
    row["build_vector_s"] = round(source.seconds - before, 1)  # reading or making the vectors
    row["build_excl_vectors_s"] = round(row["build_s"] - row["build_vector_s"], 1)
    row["rss_build"] = memory()
    disk = sum(path.stat().st_size for path in index_files(target))
    row.update(disk_bytes=disk, disk_bytes_per_vector=round(disk / count, 2), ntotal=index.ntotal)

    opened = {"index": index}  # the cold run swaps in a freshly opened index

    def search(q: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
        index = opened["index"]
        if on != "exact" or depth <= 1:  # search_refined: on the SQ8 codes, or plain without them
            return (
                index.search_refined(q, k, depth, nprobe)[1] if on == "codes" else index.search(q, k, nprobe=nprobe)[1]
            )
        _, candidates = index.search(q, k * depth, nprobe=nprobe)
        out = np.full((len(q), k), -1, dtype=np.int64)
        for row, (vector, found) in enumerate(zip(q, candidates, strict=True)):
            found = found[found >= 0]
            best = found[np.argsort(-(lookup(found) @ vector), kind="stable")[:k]]  # type: ignore[misc]
            out[row, : len(best)] = best
        return out

    serving = contextlib.ExitStack()  # on disk: served under a memory cgroup of the budget, when one can be made
    cap = None
    if plan.storage == "disk" and args.cap_serving:
        row["serving_cap_eviction"] = evict(index_files(target))  # so that what serving pages in is charged
        cap = serving.enter_context(MemoryCap(budget))
    reset_peak()
    own = "own" in QuerySet.__dataclass_fields__  # newer tuning leaves an own vector out of what it finds
    row["tuning_self_excluded"] = own
    image, text = (
        QuerySet(sets[name][0], truth[name], *([sets[name][1]] if own else [])) for name in ("tune_image", "tune_text")
    )
    tuned = tune_for_budget(search, image, text, plan.nlist, plan.reranks, args.min_recall, latency)
    row.update(nprobe=tuned.nprobe, depth=tuned.rerank, tuning_met=tuned.met, tuning_note=tuned.note)
    row["tuning"] = {"image": tuned.image.to_dict(), "text": tuned.text.to_dict()}
    for kind in ("image", "text"):
        row[kind] = timed(search, sets[kind][0], truth[kind], tuned.nprobe, tuned.rerank)
    row["rss_search"] = memory()
    # The headroom: what more lists and deeper re-ranking would reach (a "best" for goals not met).
    wide, deep = min(max(1, plan.nlist), 4 * tuned.nprobe), 32 if plan.reranks else 1
    row["best"] = {"nprobe": wide, "depth": deep}
    for kind in ("image", "text"):
        row["best"][kind] = timed(search, sets[kind][0][:100], truth[kind][:100], wide, deep)
    # Deeper re-ranking than tuning tries: does the candidate count, rather than the lists, cap recall?
    row["deeper"] = []
    for more in args.deeper if plan.reranks else []:
        for probes in sorted({tuned.nprobe, wide}):
            got = {
                kind: timed(search, sets[kind][0][:100], truth[kind][:100], probes, more) for kind in ("image", "text")
            }
            row["deeper"].append({"nprobe": probes, "depth": more, **got})
    if plan.storage == "disk":
        del index, opened["index"]
        gc.collect()
        row["cold_eviction"] = evict(index_files(target))
        row["cold_resident"] = resident(index_files(target))
        start = time.perf_counter()
        opened["index"] = open_on_disk(target, plan.factory)
        if plan.reranks:
            opened["index"].refine = RerankCodes.open(target.with_suffix(""))
        row["cold_open_ms"] = round((time.perf_counter() - start) * 1000, 1)
        for kind in ("image", "text"):
            row[f"cold_{kind}"] = timed(search, sets[kind][0][:100], truth[kind][:100], tuned.nprobe, tuned.rerank)
    serving.close()
    if cap is not None:
        row["serving_cap"] = cap.info
    row["_truth"] = truth
    return row


def run_autofaiss(cache: Path, budget: int, row: dict[str, Any], sets: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """autofaiss's build and single-thread search (scripts/autofaiss_*.py, in .venv-autofaiss) on our files."""
    python = ROOT / ".venv-autofaiss" / "bin" / "python"
    if not python.exists():
        return {"error": "no .venv-autofaiss: run scripts/setup_autofaiss.sh"}
    tmp.mkdir(parents=True, exist_ok=True)
    built, index = tmp / "build.json", tmp / "knn.index"
    cmd = [str(python), str(ROOT / "scripts" / "autofaiss_build.py"), "--embeddings", str(cache)]
    cmd += ["--index-out", str(index), "--max-memory", f"{budget / GIB:g}G", "--max-latency-ms", "10"]
    cmd += ["--threads", str(os.cpu_count() or 1), "--metric", "ip", "--json", str(built), "--quiet"]
    cmd += AUTOFAISS_ARGS
    try:
        done = subprocess.run(cmd, stdout=sys.stderr, check=False, timeout=AUTOFAISS_TIMEOUT[0])
    except subprocess.TimeoutExpired:
        return {"error": f"autofaiss's build did not finish in {AUTOFAISS_TIMEOUT[0]:.0f} s (stopped)", "command": cmd}
    if done.returncode or not built.exists():
        return {"error": f"autofaiss_build.py exited {done.returncode}", "command": cmd}
    info = json.loads(built.read_text())
    queries = np.concatenate([sets["image"][0], sets["text"][0]]).astype(np.float32)
    np.save(tmp / "queries.npy", queries)
    cmd2 = [str(python), str(ROOT / "scripts" / "autofaiss_search.py"), "--index", str(index)]
    cmd2 += ["--build-json", str(built), "--queries", str(tmp / "queries.npy"), "--k", str(K)]
    cmd2 += ["--out", str(tmp / "found.npz"), "--threads", "1"]
    done = subprocess.run(cmd2, stdout=sys.stderr, check=False)
    if done.returncode:
        return {"error": f"autofaiss_search.py exited {done.returncode}", "command": cmd2}
    found = np.load(tmp / "found.npz")
    out: dict[str, Any] = {"index_key": info["index_key"], "index_param": info["index_param"], "options": cmd[3:]}
    out.update(build_s=info["build_seconds"], peak_rss_bytes=info["peak_rss_bytes"], disk_bytes=info["index_bytes"])
    out["disk_bytes_per_vector"] = round(info["index_bytes"] / row["count"], 2)
    out["train_vectors"], out["versions"] = info.get("train_vectors"), info.get("versions")
    n = len(sets["image"][0])
    for kind, rows in (("image", slice(0, n)), ("text", slice(n, None))):
        times = found["latencies_ms"][rows]
        recall = planner.recall_at_k(found["ids"][rows], row["_truth"][kind])
        p50, p99 = np.percentile(times, [50, 99])
        out[kind] = {"recall@10": round(recall, 4), "p50_ms": round(p50, 3), "p99_ms": round(p99, 3)}
    return out


def judge(row: dict[str, Any]) -> dict[str, str]:
    """Each goal of the row's table line: 'met' or 'NOT met (best ...)'."""
    goal, best = GOALS[row["goals"]], row["best"]
    image, text, verdicts = row["image"], row["text"], {}

    def say(ok: bool, why: str) -> str:
        return "met" if ok else f"NOT met (best {why})"

    peak, built = row["rss_search"]["VmHWM"] / GIB, row["rss_build"]["VmHWM"] / GIB
    verdicts["memory"] = ("met" if peak <= goal["rss"] / GIB else "NOT met") + f" (serving peak {peak:.2f} GiB RSS;"
    verdicts["memory"] += f" build peak {built:.2f} GiB)"
    cap = row.get("serving_cap", {})
    if "peak_charged_bytes" in cap:  # RSS counts mapped file pages the kernel may take back: the cap is the test
        used = (cap["anon_at_entry_bytes"] + cap["peak_charged_bytes"]) / GIB
        verdicts["memory"] = ("met" if used <= goal["rss"] / GIB else "NOT met") + (
            f" (served under a {cap['limit_bytes'] / GIB:.1f} GiB memory cgroup: {used:.2f} GiB at most, of which"
            f" {cap['anon_at_entry_bytes'] / GIB:.2f} anonymous before; RSS with mapped pages {peak:.2f} GiB;"
            f" build peak {built:.2f} GiB)"
        )
    for kind in ("text", "image"):
        got, top = row[kind]["recall@10"], best[kind]["recall@10"]
        ok = got >= goal[kind] and (kind == "text" or not goal["image_p50"] or image["p50_ms"] <= goal["image_p50"])
        verdicts[kind] = say(
            ok, f"{max(got, top):.3f}; tuned {got:.3f} at p50 {row[kind]['p50_ms']:.2f} ms, {top:.3f} at "
            f"nprobe {best['nprobe']} depth {best['depth']} p50 {best[kind]['p50_ms']:.2f} ms",
        )  # fmt: skip
    p50, p99 = max(image["p50_ms"], text["p50_ms"]), max(image["p99_ms"], text["p99_ms"])
    verdicts["latency"] = say(p50 <= goal["p50"] and p99 <= goal["p99"], f"p50 {p50:.2f} / p99 {p99:.2f} ms")
    if "cold_image" in row:  # the goals are for a warm cache; cold figures are reported beside them
        cold = [row["cold_image"], row["cold_text"]]
        p50, p99 = max(r["p50_ms"] for r in cold), max(r["p99_ms"] for r in cold)
        verdicts["latency"] += f" (warm; cold p50 {p50:.2f} / p99 {p99:.2f} ms)"
    verdicts["build"] = say(row["build_excl_vectors_s"] <= goal["build"], f"{row['build_excl_vectors_s']:.0f} s")
    return verdicts


def print_row(row: dict[str, Any]) -> None:
    g, af = GIB, row.get("autofaiss") or {}
    print(f"\n== {row['label']}: {row['count']:,} x {row['dim']} ({row['generator']}; load {row['load']}) ==")
    print(f"index {row['factory']} ({row['storage']}), nprobe {row['nprobe']}, re-rank depth {row['depth']}", end=" ")
    print(f"on {row['rerank_on']}" + ("" if row["tuning_self_excluded"] else " (tuning: own vectors NOT left out)"))
    print(f"plan: {row['reason']} (predicted {row['predicted_ms']} ms)")
    print(f"bytes/vector: files {row['disk_bytes_per_vector']}, resident estimate", end=" ")
    print(f"{row['resident_estimate_bytes_per_vector']}; on disk {row['disk_bytes'] / g:.2f} GiB")
    print(f"build {row['build_s']} s ({row['build_vector_s']} s reading/making vectors); truth {row['truth_s']} s")
    for phase, m in (("build", row["rss_build"]), ("search", row["rss_search"])):
        print(f"RSS {phase}: peak {m['VmHWM'] / g:.2f} GiB, after {m['VmRSS'] / g:.2f} GiB", end=" ")
        print(f"(anon {m['RssAnon'] / g:.2f}, file {m['RssFile'] / g:.2f})")
    print(f"tuning: {'met' if row['tuning_met'] else row['tuning_note']}")
    if "serving_cap" in row:
        cap = row["serving_cap"]
        got = cap.get("error") or (
            f"{cap['how']} {cap['cgroup_limit_bytes'] / g:.2f} GiB over {cap['anon_at_entry_bytes'] / g:.2f} GiB"
            f" anonymous at entry; peak charged {cap.get('peak_charged_bytes', 0) / g:.2f} GiB"
        )
        print(
            f"served under a {cap['limit_bytes'] / g:.1f} GiB memory limit: {got}, limit hits {cap.get('limit_hits')}"
        )
    if "cold_image" in row:
        print(f"cold: {row['cold_eviction']}; resident after: {row['cold_resident']}; open {row['cold_open_ms']} ms")
    print(f"{'':26} {'image recall':>12} {'p50 ms':>8} {'p99 ms':>8} {'text recall':>12} {'p50 ms':>8} {'p99 ms':>8}")
    lines = [("tuning (200 each)", row["tuning"]), ("held-out (500 each)", row)]
    lines.append((f"nprobe {row['best']['nprobe']} depth {row['best']['depth']} (100)", row["best"]))
    lines += [(f"nprobe {got['nprobe']} depth {got['depth']} (100)", got) for got in row.get("deeper", [])]
    if "cold_image" in row:
        lines.append(("cold (100 each)", {"image": row["cold_image"], "text": row["cold_text"]}))
    lines += [(f"autofaiss {af['index_key']}", af)] if "image" in af else []
    for name, got in lines:
        i, t = got["image"], got["text"]
        print(f"{name[:26]:26} {i['recall@10']:>12.4f} {i['p50_ms']:>8.3f} {i['p99_ms']:>8.3f}", end=" ")
        print(f"{t['recall@10']:>12.4f} {t['p50_ms']:>8.3f} {t['p99_ms']:>8.3f}")
    if "error" in af:
        print(f"autofaiss: {af['error']}")
    elif af:
        print(f"autofaiss: {af['index_key']} [{af['index_param']}], build {af['build_s']:.1f} s, peak RSS", end=" ")
        print(f"{af['peak_rss_bytes'] / g:.2f} GiB, {af['disk_bytes_per_vector']} bytes/vector")
    if row["goals"]:
        print(f"goals ({row['goals']} line{'' if row['goals_exact'] else ', other size'}):")
        for name, verdict in row["verdicts"].items():
            print(f"  {name:8} {verdict}")


def synthetic(count: int, disk: bool, args: argparse.Namespace, gen: Generator) -> dict[str, Any]:
    label, dim = f"{count / 1e6:g}M{' disk' if disk else ''}", args.dim
    workdir = args.workdir / label.replace(" ", "-")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    budget = parse_bytes(args.disk_memory if disk else (args.max_memory or ("1G" if count <= 1_000_000 else "8G")))
    goals = "20M disk" if disk else ("1M" if count <= 1_000_000 else "10M")
    latency = latency_budget(args, goals)
    family = planner.choose(count, dim, budget, args.index_type, latency, "disk" if disk else "memory")
    codes = planner.candidate(family.family, count, dim).bytes_per_vector if family.approximate else 4 * dim
    needed = count * dim * 2 + count * (2 * codes + (2 * dim if family.reranks else 0)) + (2 << 30)
    chunks, start, cache = (count + CHUNK - 1) // CHUNK, time.perf_counter(), None
    if shutil.disk_usage(workdir).free > needed:  # the collection, made once before anything is timed
        (workdir / "cache").mkdir()
        cache = Cache(workdir / "cache" / "collection.npy", gen, count, dim)
    made = time.perf_counter() - start

    def make(number: int) -> np.ndarray:
        return cache.chunk(number) if cache else gen.chunk(number, min(CHUNK, count - number * CHUNK))

    source = ChunkSource(make, count, dim)
    rng = np.random.default_rng(args.seed)
    # Image-like tuning queries: the collection's own vectors, from a few chunks (chunks are drawn alike,
    # so this is a uniform sample in distribution, and it regenerates 4 chunks rather than all of them).
    picked = rng.choice(chunks, size=min(4, chunks), replace=False)
    rows = np.concatenate([number * CHUNK + np.arange(min(CHUNK, count - number * CHUNK)) for number in picked])
    own = np.sort(rng.choice(rows, size=200, replace=False))
    texts = gen.queries(args.queries + 200, text=True)
    none = np.full(args.queries, -1, dtype=np.int64)
    sets = {
        "tune_image": (source.sample(own), own),
        "tune_text": (texts[:200], np.full(200, -1, dtype=np.int64)),
        "image": (gen.queries(args.queries, text=False), none),
        "text": (texts[200:], none),
    }
    exact = {"1M": 1_000_000, "10M": 10_000_000, "20M disk": 20_000_000}[goals] == count
    extra: dict[str, Any] = {"generator": gen.kind, "cache": "float16 .npy" if cache else "none (made per pass)"}
    extra.update(goals_exact=exact, collection_made_s=round(made, 1))
    lookup = cache.pick if cache else None
    row = run_case(label, source, sets, args, budget, "disk" if disk else "memory", goals, workdir, extra, lookup)
    if args.autofaiss and not disk and count <= args.autofaiss_max_size:
        shutil.rmtree(workdir / "index", ignore_errors=True)  # room for autofaiss's index
        if cache is None:
            row["autofaiss"] = {"error": "no float16 cache of the collection (not enough disk)"}
        else:
            row["autofaiss"] = run_autofaiss(workdir / "cache", budget, row, sets, workdir / "autofaiss")
    row["verdicts"] = judge(row)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return row


def real(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A real collection: index 90% of `images`, query with the other 10% and with `captions`."""
    data = np.load(path)
    images = unit(np.asarray(data["images"], dtype=np.float32))
    captions = unit(np.asarray(data["captions" if "captions" in data.files else "captions_en"], dtype=np.float32))
    rng = np.random.default_rng(args.seed)
    held = np.zeros(len(images), dtype=bool)
    held[rng.choice(len(images), size=max(1, len(images) // 10), replace=False)] = True
    kept = np.flatnonzero(~held)
    source = ChunkSource(lambda n: images[kept[n * CHUNK : (n + 1) * CHUNK]], len(kept), images.shape[1], kept)
    own = np.sort(rng.choice(len(kept), size=min(200, len(kept)), replace=False))
    order = rng.permutation(len(captions))[: 200 + max(args.queries, int(held.sum()))]
    sets = {
        "tune_image": (images[kept[own]], kept[own]),
        "tune_text": (captions[order[:200]], np.full(min(200, len(order)), -1, dtype=np.int64)),
        "image": (images[held], np.full(int(held.sum()), -1, dtype=np.int64)),
        "text": (captions[order[200:]], np.full(max(0, len(order) - 200), -1, dtype=np.int64)),
    }
    workdir = args.workdir / "real"
    shutil.rmtree(workdir, ignore_errors=True)
    budget = parse_bytes(args.max_memory or "1G")
    extra = {"source": str(path), "generator": "real", "goals_exact": False}
    lookup = lambda ids: images[ids]  # noqa: E731
    row = run_case(f"real {path.name}", source, sets, args, budget, "memory", None, workdir, extra, lookup)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000], help="in-memory sizes")
    parser.add_argument("--disk-sizes", type=int, nargs="*", default=[], help="sizes kept on disk")
    parser.add_argument("--max-memory", help="in-memory budget (default 1G up to 1M vectors, 8G above)")
    parser.add_argument("--disk-memory", default="4G", help="budget of on-disk sizes (default 4G)")
    parser.add_argument("--max-latency", type=float, help="latency budget, ms (default: each size's p50 goal)")
    parser.add_argument("--min-recall", type=float, default=0.95, help="tuning's recall@10 target (0.95)")
    parser.add_argument("--index-type", default="auto", choices=planner.INDEX_TYPES)
    parser.add_argument(
        "--rerank-on",
        choices=["auto", "codes", "exact"],
        default="auto",
        help="re-rank on SQ8 codes or exact vectors (auto: as vecsearch does, codes on disk, exact vectors in memory)",
    )
    parser.add_argument("--generator", choices=["realistic", "easy"], help="default: realistic when importable")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries of each kind (500)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--keep", action="store_true", help="keep each size's work folder")
    parser.add_argument("--autofaiss", action="store_true", help="also autofaiss at the in-memory sizes")
    parser.add_argument("--autofaiss-max-size", type=int, default=10**12, help="autofaiss only up to this size")
    parser.add_argument("--autofaiss-args", default="", help="extra options for autofaiss_build.py")
    parser.add_argument("--autofaiss-timeout", type=float, default=7200.0, help="stop its build after (s)")
    parser.add_argument(
        "--deeper", type=int, nargs="*", default=[], help="also re-rank depths past tuning's 32 (100 queries)"
    )
    parser.add_argument(
        "--cap-serving",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve on-disk sizes inside a memory cgroup of their budget (default on; needs a writable cgroup)",
    )
    parser.add_argument("--real", type=Path, help="npz with images and captions: benchmark it too")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    AUTOFAISS_ARGS[:] = args.autofaiss_args.split()
    AUTOFAISS_TIMEOUT[0] = args.autofaiss_timeout
    kind = args.generator or ("realistic" if importlib.util.find_spec("realistic_vectors") else "easy")
    gen = Generator(kind, args.dim, args.seed)
    meta = {"generator": kind, "argv": sys.argv[1:], "faiss": faiss.__version__, "numpy": np.__version__}
    meta.update(cpus=os.cpu_count(), python=platform.python_version(), started=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"bench_scale: generator {kind}, faiss {faiss.__version__}, {os.cpu_count()} cpus, {meta['started']}")
    rows = []
    runs = [(count, False) for count in args.sizes] + [(count, True) for count in args.disk_sizes]
    todo: list[Callable[[], dict[str, Any]]] = [partial(synthetic, count, disk, args, gen) for count, disk in runs]
    todo += [partial(real, args.real, args)] if args.real else []
    for run in todo:
        rows.append(run())
        rows[-1].pop("_truth", None)
        print_row(rows[-1])
        sys.stdout.flush()
        if args.json:  # after every size: a long run that fails later keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
