"""The FAISS side of an index: vectors keyed by database item id, saved atomically.

Vectors are L2-normalised, so inner product is cosine similarity. The exact index (`IDMap2,Flat`) is
the default; `search` accepts the set of ids a filter allows and FAISS skips the rest while scanning,
so a filtered top-k is still the exact top-k among the allowed items.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexCorruptError

EXACT = "IDMap2,Flat"


class VectorIndex:
    """A FAISS index whose ids are item ids."""

    def __init__(self, index: Any, kind: str = EXACT) -> None:
        self.index = index
        self.kind = kind

    @classmethod
    def create(cls, dim: int, kind: str = EXACT) -> "VectorIndex":
        import faiss

        if kind != EXACT:
            raise ValueError(f"unsupported FAISS index type {kind!r} (supported: {EXACT})")
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), kind)

    @classmethod
    def from_vectors(cls, dim: int, ids: np.ndarray, vectors: np.ndarray, kind: str = EXACT) -> "VectorIndex":
        index = cls.create(dim, kind)
        index.add(ids, vectors)
        return index

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best per query; missing slots have id -1."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        scores, ids = self.index.search(queries, k, params=params)
        return scores, ids

    def ids(self) -> np.ndarray:
        import faiss

        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, kind: str = EXACT) -> "VectorIndex":
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexCorruptError(f"vector file unreadable ({str(exc).splitlines()[0][:200]})") from exc
        return cls(index, kind)

    def save(self, path: Path) -> str:
        """Write atomically (temporary file, fsync, rename); returns the file's SHA-256."""
        data = self.to_bytes()
        atomic_write(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path, kind: str = EXACT, expected_sha256: str | None = None) -> "VectorIndex":
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise IndexCorruptError(f"vector file missing: {path}") from exc
        if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
            raise IndexCorruptError(f"vector file checksum mismatch: {path}")
        return cls.from_bytes(data, kind)


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
