"""Building a large FAISS index by shards: train once, add shards in parallel, merge, optionally on disk.

The recipe of FAISS's "indexes that do not fit in RAM": train an IVF index on a sample and keep it
empty; add each shard of vectors to a copy of it (in threads here, or in Ray tasks through a runner);
then merge the shards' inverted lists, in memory, or on disk into one `.ivfdata` file that searches
memory-map read-only. Merging always goes into a fresh empty copy of the trained index (merging into a
filled on-disk index corrupts it, faiss #3498). Every step leaves a file and a done-marker in the work
folder, so a build that is interrupted resumes where it stopped; nothing the manifest names is touched
until the caller commits the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from . import faults
from .rerank import RerankCodes
from .vectors import VectorIndex, atomic_write, fsync_dir

SHARD_SIZE = 250_000  # vectors a shard: 500 MB of float32 input at 512-d, a few in flight at once


class ShardSource(Protocol):
    """Where the vectors come from: a count, a training sample, and shards in ascending id order."""

    count: int

    def sample(self, positions: np.ndarray) -> np.ndarray: ...

    def shard(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, unit vectors) of the vectors at positions start..stop, ids ascending."""
        ...


# Adds shards to copies of the trained index: (trained index bytes, shards as (number, ids, vectors))
# -> (number, filled shard index bytes), in any order.
ShardRunner = Callable[[bytes, Iterator[tuple[int, np.ndarray, np.ndarray]]], Iterator[tuple[int, bytes]]]


@dataclass(frozen=True)
class BuildReport:
    shards: int
    reused: int  # shards a previous, interrupted build had already written
    trained_reused: bool


def add_to_copy(trained: bytes, ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """One shard: the trained empty index, filled with the shard's vectors, serialised with its inverted
    lists only (its centroids and graph, 170 MB at 65,536 lists, are the trained index's: the merge takes
    them from there)."""
    import faiss

    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    ivf = faiss.extract_index_ivf(index)
    centroids, placeholder = ivf.quantizer, faiss.IndexFlat(ivf.d, ivf.metric_type)
    ivf.quantizer = placeholder  # an empty stand-in while serialising
    try:
        return bytes(faiss.serialize_index(ivf))
    finally:
        ivf.quantizer = centroids  # the index owns (and frees) its own quantizer again


def thread_runner(workers: int) -> ShardRunner:
    """Shards added in `workers` threads (FAISS releases the GIL while it adds)."""

    def run(trained: bytes, shards: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, bytes]]:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: dict[Future[bytes], int] = {}
            for number, ids, vectors in shards:
                pending[pool.submit(add_to_copy, trained, ids, vectors)] = number
                while len(pending) > workers:  # at most one shard waiting: memory stays bounded
                    yield from _collect(pending)
            while pending:
                yield from _collect(pending)

    return run


def _collect(pending: dict[Future[bytes], int]) -> Iterator[tuple[int, bytes]]:
    """The shards that have finished (at least one; waits for it)."""
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    for future in done:
        number = pending.pop(future)
        yield number, future.result()


def build_id(factory: str, count: int, extra: str = "") -> str:
    """Names a build's work folder: the same index of the same vectors resumes in the same folder."""
    return hashlib.sha256(f"{factory}|{count}|{extra}".encode()).hexdigest()[:16]


def build_sharded(
    work: Path,
    target: Path,
    factory: str,
    dim: int,
    source: ShardSource,
    training: np.ndarray,
    *,
    on_disk: bool,
    rerank: bool,
    runner: ShardRunner | None = None,
    shard_size: int = SHARD_SIZE,
    seed: int = 0,
    progress: bool = False,
    keep_work: bool = False,
) -> tuple[VectorIndex, BuildReport]:
    """Build `factory` over every vector of `source` and write it at `target` (with `target`'s stem for
    the `.ivfdata` lists and the re-ranking codes). `training` holds the positions to train on.

    `work` keeps what an interrupted build has done (the trained index, each shard); it is removed once
    the index is written, unless `keep_work` (a caller that commits later removes it after its commit,
    so that a crash before the commit still resumes from the shards).
    """
    work.mkdir(parents=True, exist_ok=True)
    trained_path = work / "trained.faiss"
    trained_reused = _done(trained_path)
    if trained_reused:
        empty = VectorIndex.load(trained_path, factory)
        scale = np.load(work / "rerank-range.npy") if (work / "rerank-range.npy").is_file() else None
    else:
        sample = source.sample(training)
        empty = VectorIndex.create(dim, factory)
        empty.train(sample, seed=seed)
        scale = RerankCodes.train(sample) if rerank else None
        del sample
        if scale is not None:
            with open(work / "rerank-range.npy", "wb") as handle:
                np.save(handle, scale)
        empty.save(trained_path)
        _mark(trained_path)
    trained = _serialise(empty.index)
    bounds = [(start, min(start + shard_size, source.count)) for start in range(0, source.count, shard_size)]
    paths = [work / f"shard-{number:05d}.faiss" for number in range(len(bounds))]
    todo = [number for number, path in enumerate(paths) if not _done(path)]
    bar = tqdm(total=source.count, desc="adding shards", unit="vec", disable=not progress, leave=False)
    bar.update(source.count - sum(bounds[number][1] - bounds[number][0] for number in todo))

    def shards() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for number in todo:
            ids, vectors = source.shard(*bounds[number])
            if rerank:
                codes = RerankCodes.encode(vectors, scale)
                _save_npy(work / f"shard-{number:05d}.ids.npy", np.asarray(ids, dtype=np.int64))
                _save_npy(work / f"shard-{number:05d}.codes.npy", codes)
            yield number, ids, vectors

    for number, data in (runner or thread_runner(max(1, os.cpu_count() or 1)))(trained, shards()):
        atomic_write(paths[number], data)
        _mark(paths[number])
        bar.update(bounds[number][1] - bounds[number][0])
        faults.point("shard-added")
    bar.close()
    vectors = _merge(empty.index, factory, paths, target, on_disk)
    faults.point("shards-merged")
    if rerank:
        parts = (
            (np.load(work / f"shard-{n:05d}.ids.npy"), np.load(work / f"shard-{n:05d}.codes.npy", mmap_mode="r"))
            for n in range(len(paths))
        )
        prefix = target.with_suffix("")
        RerankCodes.write(prefix, parts, source.count, dim, scale)
        vectors.refine = RerankCodes.open(prefix)
    fsync_dir(target.parent)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return vectors, BuildReport(len(paths), len(paths) - len(todo), trained_reused)


def _merge(empty: Any, kind: str, paths: list[Path], target: Path, on_disk: bool) -> VectorIndex:
    """The shards' lists in one index: on disk into `target`'s `.ivfdata` (then mapped read-only), or
    in memory (then saved to `target`)."""
    import faiss

    fresh = faiss.deserialize_index(faiss.serialize_index(empty))
    if on_disk:
        from faiss.contrib.ondisk import merge_ondisk

        lists = target.with_suffix(".ivfdata")
        lists.unlink(missing_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with quiet_stdout():  # FAISS prints each file it resizes
            merge_ondisk(fresh, [str(path) for path in paths], str(lists))
            faiss.write_index(fresh, str(tmp))
        del fresh
        for path in (lists, tmp):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        return open_on_disk(target, kind)
    ivf: Any = faiss.extract_index_ivf(fresh)
    for path in paths:
        whole = faiss.read_index(str(path))  # held: the IVF part below does not own it
        shard: Any = faiss.extract_index_ivf(whole)  # lists only: their centroids are the trained index's
        if (shard.nlist, shard.code_size) != (ivf.nlist, ivf.code_size):
            raise ValueError(f"shard {path.name} does not match the trained index")
        ivf.invlists.merge_from(shard.invlists, 0)
        ivf.ntotal += shard.ntotal
        del shard, whole
    fresh.ntotal = ivf.ntotal
    vectors = VectorIndex(fresh, kind)
    vectors.save(target)
    return vectors


def open_on_disk(path: Path, kind: str) -> VectorIndex:
    """An index whose inverted lists stay in the `.ivfdata` file beside it, memory-mapped read-only."""
    import faiss

    with quiet_stdout():  # FAISS prints the folder it found the lists in
        index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    vectors = VectorIndex(index, kind)
    vectors.on_disk = vectors.mapped = True
    vectors.path = path
    return vectors


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence what C++ code prints on file descriptor 1, which would corrupt `--json` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _serialise(index: Any) -> bytes:
    import faiss

    return bytes(faiss.serialize_index(index))


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _done(path: Path) -> bool:
    return path.is_file() and path.with_name(path.name + ".done").is_file()


def _mark(path: Path) -> None:
    atomic_write(path.with_name(path.name + ".done"), b"")
