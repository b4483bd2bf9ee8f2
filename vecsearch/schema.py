"""The index database's schema and the typed rows the store hands out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

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
    source    TEXT,                   -- 'sidecar' or the captions file it came from
    position  INTEGER NOT NULL DEFAULT 0,
    text_hash TEXT,
    added_gen INTEGER NOT NULL
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
