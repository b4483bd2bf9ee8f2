"""The FAISS side of an index: vectors keyed by database item id, saved atomically.

Vectors are L2-normalised, so inner product is cosine similarity. Small indexes are exact
(`IDMap2,Flat`); large ones are IVF indexes chosen by `plan.choose` (their ids live in the inverted
lists, so they need no id map). `search` accepts the set of ids a filter allows and FAISS skips the rest
while scanning, so a filtered top-k of the exact index is still the exact top-k among the allowed items.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import faults
from .errors import IndexCorruptError, VecsearchError
from .plan import EXACT, HNSW_QUANTIZER_FROM_LISTS
from .rerank import RerankCodes

# An OPQ rotation trains on this many points at most: more buys nothing measurable and costs minutes.
OPQ_TRAIN_POINTS = 65_536

# Files at least this big are memory-mapped by readers where the index type allows it.
MMAP_MIN_BYTES = 64 << 20


class VectorIndex:
    """A FAISS index whose ids are item ids, with its search parameters."""

    def __init__(self, index: Any, kind: str = EXACT, nprobe: int = 1, rerank: int = 1) -> None:
        self.index = index
        self.kind = kind
        self.nprobe = nprobe
        self.rerank = rerank  # PQ indexes: candidates per wanted hit, re-scored by the caller
        self.mapped = False
        self.on_disk = False  # inverted lists in a memory-mapped file beside the index file
        self.refine: RerankCodes | None = None  # re-ranking codes, where the index has them
        self.path: Path | None = None  # the file of an on-disk index (its lists and codes beside it)

    @classmethod
    def create(cls, dim: int, kind: str = EXACT) -> VectorIndex:
        faiss = _faiss()

        if kind == EXACT:
            return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), kind)
        if not kind.startswith(("IVF", "OPQ")):
            raise ValueError(f"unsupported FAISS index type {kind!r}")
        return cls(faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT), kind)

    @classmethod
    def from_vectors(cls, dim: int, ids: np.ndarray, vectors: np.ndarray, kind: str = EXACT) -> VectorIndex:
        index = cls.create(dim, kind)
        index.add(ids, vectors)
        return index

    @property
    def approximate(self) -> bool:
        return self.kind != EXACT

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        faiss = _faiss()

        return int(faiss.extract_index_ivf(self.index).nlist) if self.approximate else 0

    @property
    def _graph_quantizer(self) -> bool:
        return self.approximate and "_HNSW" in self.kind

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray, iterations: int = 10, seed: int = 0) -> None:
        """k-means for the lists (and the rotation and codebooks of PQ), seeded. Many lists are trained
        in two levels: flat k-means of 65,536 lists would take hours on a few cores."""
        faiss = _faiss()

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))
        ivf.cp.niter = iterations
        ivf.cp.seed = seed
        ivf.cp.min_points_per_centroid = 1  # a small sample is a choice, not a mistake: no warnings
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.pq.cp.min_points_per_centroid = 1
            ivf.pq.cp.seed = seed
            ivf.do_polysemous_training = False  # only for Hamming filtering, which we do not use; slow
        if hasattr(ivf, "pq"):
            ivf.pq.cp.seed = seed
        index = faiss.downcast_index(self.index)
        if isinstance(index, faiss.IndexPreTransform):
            rng = np.random.default_rng(seed)
            for step in range(index.chain.size()):
                transform = index.chain.at(step)
                if not transform.is_trained:
                    rotation = faiss.downcast_VectorTransform(transform)
                    if isinstance(rotation, faiss.OPQMatrix):
                        rotation.niter = 15  # FAISS's 50 rounds cost minutes and gain little recall
                    sample = vectors
                    if len(vectors) > OPQ_TRAIN_POINTS:
                        sample = vectors[np.sort(rng.choice(len(vectors), OPQ_TRAIN_POINTS, replace=False))]
                    transform.train(sample)
                vectors = transform.apply(vectors)
            index.is_trained = True
        if ivf.nlist >= HNSW_QUANTIZER_FROM_LISTS and ivf.quantizer.ntotal == 0:
            ivf.quantizer.add(two_level_kmeans(vectors, ivf.nlist, iterations, seed))
        ivf.train(vectors)  # the codes (SQ8, PQ); the lists too, unless trained above
        if isinstance(index, faiss.IndexPreTransform):
            index.is_trained = True

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self.on_disk:  # FAISS would abort the process, not raise: its mapped lists are read-only
            raise VecsearchError("an on-disk vector index is read-only: it is rebuilt by shards, never added to")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        faiss = _faiss()

        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best per query; missing slots have id -1."""
        faiss = _faiss()

        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        params: Any = None
        if self.approximate:
            probes = min(nprobe or self.nprobe, self.nlist)
            params = faiss.SearchParametersIVF(nprobe=probes)
            if self._graph_quantizer:
                # The graph must explore well beyond the lists it returns, or it misses near ones. (Held in
                # a local as well: older FAISS builds do not keep nested parameters alive on their own.)
                quantizer_params = faiss.SearchParametersHNSW(efSearch=max(64, 2 * probes))
                params.quantizer_params = quantizer_params
            if selector is not None:
                params.sel = selector
            if isinstance(self.index, faiss.IndexPreTransform):
                params = faiss.SearchParametersPreTransform(index_params=params)
        elif selector is not None:
            params = faiss.SearchParameters(sel=selector)
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def search_refined(
        self, queries: np.ndarray, k: int, depth: int | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best per query: `k·depth` candidates from the index, re-scored on the
        re-ranking codes (`refine`). Without codes, the index's own scores."""
        depth = depth or self.rerank
        if self.refine is None or depth <= 1:
            return self.search(queries, k, nprobe=nprobe)
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        _, candidates = self.search(queries, k * depth, nprobe=nprobe)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = found[found >= 0]
            scores = self.refine.scores(query, found)
            order = np.argsort(-scores, kind="stable")[:k]
            out_scores[row, : len(order)] = scores[order]
            out_ids[row, : len(order)] = found[order]
        return out_scores, out_ids

    def ids(self) -> np.ndarray:
        """The ids held, in no particular order."""
        faiss = _faiss()

        if not self.approximate:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        invlists = faiss.extract_index_ivf(self.index).invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(invlists.nlist)
            if invlists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def save(self, path: Path) -> str:
        """Write atomically (temporary file, fsync, rename); returns the file's SHA-256."""
        faiss = _faiss()

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self.index, str(tmp))
            faults.point("faiss-write")
            digest = file_sha256(tmp, fsync=True)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_dir(path.parent)
        return digest

    @classmethod
    def load(
        cls,
        path: Path,
        kind: str = EXACT,
        expected_sha256: str | None = None,
        *,
        expected_bytes: int | None = None,
        mmap: bool = False,
    ) -> VectorIndex:
        """Read a saved index, verified against the manifest.

        With `mmap`, a large file is mapped rather than read (FAISS pages in what a search touches) and
        read-only; its size is checked instead of its checksum, which would read all of it.
        """
        faiss = _faiss()

        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"vector file missing: {path}") from exc
        if expected_bytes is not None and size != expected_bytes:
            raise IndexCorruptError(f"vector file has {size} bytes, the manifest says {expected_bytes}: {path}")
        mmap_flag = getattr(faiss, "IO_FLAG_MMAP" if kind != EXACT else "IO_FLAG_MMAP_IFC", None)
        mapped = (
            mmap
            and size >= MMAP_MIN_BYTES
            and expected_bytes is not None
            and mmap_flag is not None
            and os.name != "nt"  # FAISS cannot map inverted lists on Windows
        )
        index = None
        if mapped:
            try:
                index = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY | mmap_flag)
            except RuntimeError:
                mapped = False  # this build of FAISS cannot map it: read it whole (and check it whole)
        if not mapped and expected_sha256 and file_sha256(path) != expected_sha256:
            raise IndexCorruptError(f"vector file checksum mismatch: {path}")
        if index is None:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise IndexCorruptError(f"vector file unreadable ({str(exc).splitlines()[0][:200]})") from exc
        if not _holds_kind(index, kind):
            raise IndexCorruptError(f"vector file {path} does not hold the {kind} index the manifest names")
        vectors = cls(index, kind)
        vectors.mapped = mapped
        return vectors


def two_level_kmeans(vectors: np.ndarray, nlist: int, iterations: int = 10, seed: int = 0) -> np.ndarray:
    """`nlist` centroids: √nlist coarse clusters first, then each split into a share of the lists in
    proportion to its points. Costs about 2·√nlist distance computations a point instead of nlist."""
    faiss = _faiss()

    dim = vectors.shape[1]
    coarse_count = max(1, int(np.sqrt(nlist)))
    coarse = faiss.Kmeans(dim, coarse_count, niter=iterations, seed=seed, max_points_per_centroid=1024)
    coarse.cp.min_points_per_centroid = 1
    coarse.train(vectors)
    _, assigned = coarse.index.search(vectors, 1)
    assigned = assigned.ravel()
    sizes = np.bincount(assigned, minlength=coarse_count)
    # Lists per coarse cluster in proportion to its points (largest remainders), at most one per point.
    exact_share = sizes / sizes.sum() * nlist
    shares = np.minimum(np.floor(exact_share).astype(np.int64), sizes)
    for cluster in np.argsort(-(exact_share - shares), kind="stable"):
        if shares.sum() >= nlist:
            break
        if shares[cluster] < sizes[cluster]:
            shares[cluster] += 1
    while shares.sum() < nlist:  # tiny samples: give the rest to clusters that still have points
        room = np.flatnonzero(shares < sizes)
        if len(room) == 0:
            raise ValueError(f"{len(vectors)} training points cannot make {nlist} lists")
        shares[room[: nlist - int(shares.sum())]] += 1
    centroids = []
    for cluster in np.flatnonzero(shares):
        members = vectors[assigned == cluster]
        if shares[cluster] >= len(members):
            centroids.append(members[: shares[cluster]])
            continue
        fine = faiss.Kmeans(dim, int(shares[cluster]), niter=iterations, seed=seed + int(cluster) + 1)
        fine.cp.min_points_per_centroid = 1
        fine.train(np.ascontiguousarray(members))
        centroids.append(fine.centroids)
    return np.ascontiguousarray(np.concatenate(centroids), dtype=np.float32)


def _holds_kind(index: Any, kind: str) -> bool:
    faiss = _faiss()
    if kind == EXACT:
        return isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def _faiss() -> Any:
    """FAISS, imported on first use (importing it costs time a text query may not need)."""
    import faiss

    return faiss


def file_sha256(path: Path, fsync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a half-written one, even after a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
