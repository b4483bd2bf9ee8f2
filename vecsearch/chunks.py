"""A crawl's changes committed in chunks: each chunk all or nothing, the database first, then the same
changes mirrored into the FAISS vectors in memory.

A chunk opens with the first change after a commit and takes the next generation number, which stamps
every item it adds or removes. An interrupt rolls back the open chunk (the report's counters with it)
and keeps the committed ones, so the next run picks up from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import time
from dataclasses import dataclass, field

import numpy as np

from . import faults
from .results import CrawlReport
from .store import Store
from .vector_file import VectorFile

COMMIT_EVERY_ITEMS = 500
COMMIT_EVERY_SECONDS = 10.0
_COUNTERS = [f.name for f in dataclasses.fields(CrawlReport) if f.type == "int"]
_log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """The open transaction: its generation, the report's counters when it opened, and what FAISS
    must mirror once it commits."""

    gen: int
    counters: dict[str, int]
    add_ids: list[int] = field(default_factory=list)
    add_vectors: list[np.ndarray] = field(default_factory=list)
    remove_ids: list[int] = field(default_factory=list)
    new_hashes: list[str] = field(default_factory=list)  # contents first embedded in this chunk

    @property
    def size(self) -> int:
        return len(self.add_ids) + len(self.remove_ids)


class ChunkWriter:
    def __init__(self, store: Store, vector_file: VectorFile, report: CrawlReport) -> None:
        self.store = store
        self.vector_file = vector_file
        self.report = report
        self.open: Chunk | None = None
        self._last_commit = time.monotonic()

    def begin(self) -> Chunk:
        """The open chunk, opened now if there is none."""
        if self.open is None:
            self.store.begin()
            counters = {name: getattr(self.report, name) for name in _COUNTERS}
            self.open = Chunk(self.store.bump_generation(), counters)
        return self.open

    def add(self, item_id: int, vector: np.ndarray) -> None:
        chunk = self.begin()
        chunk.add_ids.append(item_id)
        chunk.add_vectors.append(np.asarray(vector, dtype=np.float32))

    def remove_file(self, file_id: int) -> None:
        chunk = self.begin()
        chunk.remove_ids.extend(self.store.delete_file(file_id, chunk.gen))

    def remove_items(self, item_ids: list[int]) -> None:
        chunk = self.begin()
        self.store.delete_items(item_ids, chunk.gen)
        chunk.remove_ids.extend(item_ids)

    def due(self, waiting: int = 0) -> bool:
        """Is the open chunk big or old enough to commit (with `waiting` more changes queued for it)?"""
        if self.open is None:
            return False
        size = self.open.size + waiting
        return size >= COMMIT_EVERY_ITEMS or time.monotonic() - self._last_commit > COMMIT_EVERY_SECONDS

    def commit(self) -> None:
        """Commit the database, then mirror the same changes into the in-memory FAISS index."""
        chunk = self.open
        if chunk is None:
            return
        faults.point("commit")
        self.store.commit()
        self.open = None  # only now: an interrupt before the commit must still roll the chunk back
        if _log.isEnabledFor(logging.INFO):  # the fault-injection tests read what was committed here
            _log.info("committed generation %d: %d items", chunk.gen, self.store.counts()["items"])
        faults.point("committed")
        self.vector_file.mirror(
            np.array(chunk.remove_ids, dtype=np.int64),
            np.array(chunk.add_ids, dtype=np.int64),
            np.stack(chunk.add_vectors) if chunk.add_vectors else None,
        )
        self._last_commit = time.monotonic()

    def rollback(self) -> Chunk | None:
        """Drop the open chunk: the database and the report's counters go back to the last commit.
        Returns the dropped chunk, so that the caller can forget what it learnt in it."""
        chunk, self.open = self.open, None
        with contextlib.suppress(sqlite3.Error):  # a connection that failed mid-write has nothing open
            self.store.rollback()
        if chunk is not None:
            for name, value in chunk.counters.items():
                setattr(self.report, name, value)
        return chunk
