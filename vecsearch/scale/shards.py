"""Shards of a distributed crawl: fixed lists of inputs, each written atomically as Parquet with a
done-marker once all its rows are embedded. They are what a killed job keeps: the next run of the same
command takes every finished shard's hashes and vectors instead of embedding those pictures again.

A shard row: `id` (int64, unique in the job), `root_id`, `root` (the source's location), `root_kind`,
`key` (path in the source), `path` (where the picture is, as search results show it), `size`,
`mtime_ns`, `sha256`, `error` (why it was skipped), `captions`, `vector` (float32 × dim, null when there
is none) and `caption_vectors` (one per caption). `vecsearch export` writes the same columns.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..crawl import FoundFile, text_hash

SHARD = "shard-{:06d}.parquet"
DONE = ".done"
JOB_INFO = "job.json"


def shard_schema(dim: int) -> Any:
    import pyarrow as pa

    vector = pa.list_(pa.float32(), dim)
    return pa.schema(
        [
            ("id", pa.int64()),
            ("root_id", pa.int64()),
            ("root", pa.string()),
            ("root_kind", pa.string()),
            ("key", pa.string()),
            ("path", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("sha256", pa.string()),
            ("error", pa.string()),
            ("captions", pa.list_(pa.string())),
            ("vector", vector),
            ("caption_vectors", pa.list_(vector)),
        ]
    )


class ShardFolder:
    """The shards of one index's distributed crawl, in `<index>/jobs/ray/`. Only one crawl writes an
    index at a time (the writer lock), so one folder is enough; it goes once the job is committed."""

    def __init__(self, folder: Path, fingerprint: str, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        info = folder / JOB_INFO
        if info.exists():
            recorded = json.loads(info.read_text())
            if recorded.get("fingerprint") != fingerprint or recorded.get("dim") != dim:
                shutil.rmtree(folder)  # shards of another model: of no use to this one
        folder.mkdir(parents=True, exist_ok=True)
        if not info.exists():
            _write_atomic(info, json.dumps({"fingerprint": fingerprint, "dim": dim}).encode())

    def finished(self) -> list[int]:
        return sorted(int(p.name[6:12]) for p in self.folder.glob("shard-*.parquet") if _done(p).exists())

    def next_number(self) -> int:
        numbers = [int(p.name[6:12]) for p in self.folder.glob("shard-*.parquet*")]
        return max(numbers, default=-1) + 1

    def next_id(self) -> int:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        top = -1
        for number in self.finished():
            ids = pq.read_table(self.path(number), columns=["id"]).column("id")
            if len(ids):
                top = max(top, int(pc.max(ids).as_py()))
        return top + 1

    def path(self, number: int) -> Path:
        return self.folder / SHARD.format(number)

    def write(self, number: int, rows: list[dict[str, Any]]) -> None:
        """Write a shard whole (temporary file, fsync, rename), then its done-marker."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=shard_schema(self.dim))
        target = self.path(number)
        temporary = target.with_name(target.name + ".tmp")
        pq.write_table(table, temporary)
        _fsync(temporary)
        os.replace(temporary, target)
        _write_atomic(_done(target), b"")

    def read(self, number: int) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(self.path(number))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


class ShardPrefill:
    """What the finished shards know, for the crawl that commits them (the `Prefill` of
    `vecsearch.indexer`): a file's hash by root and path (when its size and time still match), and
    vectors by content hash and by caption text. Held in memory: about dim × 4 bytes a picture."""

    def __init__(self, reader: Any = None) -> None:
        self.files: dict[tuple[int, str], tuple[int, int, str, str | None]] = {}
        self.images: dict[str, np.ndarray] = {}
        self.texts: dict[str, np.ndarray] = {}
        self.reader = reader  # (root_id, FoundFile) → bytes or None, for sources not on a local disk

    def load(self, table: Any) -> int:
        """Take in one shard; returns how many of its pictures have a vector."""
        columns = {
            name: table.column(name).to_pylist()
            for name in ("root_id", "key", "size", "mtime_ns", "sha256", "error", "captions")
        }
        vectors = table.column("vector")
        caption_vectors = table.column("caption_vectors")
        embedded = 0
        for row in range(table.num_rows):
            sha = columns["sha256"][row] or ""
            key = (int(columns["root_id"][row]), columns["key"][row])
            self.files[key] = (int(columns["size"][row]), int(columns["mtime_ns"][row]), sha, columns["error"][row])
            vector = vectors[row]
            if vector.is_valid:
                self.images.setdefault(sha, np.asarray(vector.values.to_numpy(zero_copy_only=False), dtype=np.float32))
                embedded += 1
            texts = columns["captions"][row] or []
            held = caption_vectors[row]
            if held.is_valid and len(held) == len(texts):
                for text, text_vector in zip(texts, held.values, strict=True):
                    self.texts.setdefault(
                        text_hash(text), np.asarray(text_vector.values.to_numpy(zero_copy_only=False), dtype=np.float32)
                    )
        return embedded

    def has(self, root_id: int, found: FoundFile) -> bool:
        known = self.files.get((root_id, found.relpath))
        return known is not None and (known[0], known[1]) == (found.size, found.mtime_ns)

    # the Prefill protocol

    def content(self, root_id: int, found: FoundFile) -> tuple[str, str | None] | None:
        known = self.files.get((root_id, found.relpath))
        if known is None or (known[0], known[1]) != (found.size, found.mtime_ns):
            return None
        return known[2], known[3]

    def image_vector(self, sha256: str) -> np.ndarray | None:
        return self.images.get(sha256)

    def text_vector(self, digest: str) -> np.ndarray | None:
        return self.texts.get(digest)

    def read(self, root_id: int, found: FoundFile) -> bytes | None:
        return self.reader(root_id, found) if self.reader is not None else None


def _done(path: Path) -> Path:
    return path.with_name(path.name + DONE)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
