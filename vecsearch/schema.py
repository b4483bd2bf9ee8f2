"""The index database's schema, the typed rows the store hands out, and how rows and vectors convert."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
# What each version adds to the one before, applied in order to an older database when it is opened.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE items ADD COLUMN lang TEXT",),  # the language of a caption, where its source says
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS roots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    path    TEXT NOT NULL UNIQUE,     -- absolute, as it was when crawled
    relpath TEXT NOT NULL,            -- the same place relative to the index directory
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS files (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    root_id     INTEGER NOT NULL REFERENCES roots(id),
    relpath     TEXT NOT NULL,        -- POSIX separators, relative to the root
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    sidecar_sig TEXT,                 -- size:mtime of the caption sidecar when last read
    UNIQUE (root_id, relpath)
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS items (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL CHECK (kind IN ('image', 'caption')),
    file_id   INTEGER NOT NULL REFERENCES files(id),
    text      TEXT,                   -- the caption, for caption items
    source    TEXT,                   -- 'sidecar', a field of the picture (xmp:dc:description) or a captions file
    position  INTEGER NOT NULL DEFAULT 0,
    text_hash TEXT,
    added_gen INTEGER NOT NULL,
    lang      TEXT                    -- the caption's language (fr, pt_BR), where its source says
);
CREATE INDEX IF NOT EXISTS items_file ON items(file_id, kind);
CREATE INDEX IF NOT EXISTS items_kind ON items(kind);
CREATE INDEX IF NOT EXISTS items_added_gen ON items(added_gen);
CREATE INDEX IF NOT EXISTS items_text_hash ON items(text_hash);
CREATE TABLE IF NOT EXISTS vectors (
    item_id INTEGER PRIMARY KEY REFERENCES items(id),
    data    BLOB NOT NULL             -- float32, little-endian, L2-normalised
);
CREATE TABLE IF NOT EXISTS removed (
    item_id INTEGER PRIMARY KEY,
    gen     INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class RootRow:
    id: int
    path: str
    relpath: str
    options: dict[str, Any]


@dataclass(frozen=True)
class FileRow:
    id: int
    root_id: int
    relpath: str
    size: int
    mtime_ns: int
    sha256: str
    sidecar_sig: str | None


@dataclass(frozen=True)
class ItemRow:
    id: int
    kind: str
    file_id: int
    text: str | None
    source: str | None
    position: int
    root_id: int
    relpath: str
    language: str | None = None


def file_row(r: sqlite3.Row) -> FileRow:
    return FileRow(
        int(r["id"]),
        int(r["root_id"]),
        r["relpath"],
        int(r["size"]),
        int(r["mtime_ns"]),
        r["sha256"],
        r["sidecar_sig"],
    )


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").reshape(-1).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def stack_rows(rows: list[sqlite3.Row]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    vectors = np.stack([from_blob(r[1]) for r in rows]).astype(np.float32)
    return ids, vectors


def chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
