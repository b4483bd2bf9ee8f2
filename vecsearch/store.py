"""SQLite metadata of an index: crawl roots, files, items (images and captions) and their vectors.

The database is the source of truth. Every commit bumps a generation number; the FAISS file records the
generation it reflects, and items/removals are stamped with theirs, so a stale FAISS file (after a crash
between the two writes) is brought up to date from here. Item ids never repeat (AUTOINCREMENT), so an
id printed by one search still means the same item later or nothing at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexCorruptError
from .schema import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    FileRow,
    ItemRow,
    RootRow,
    chunks,
    file_row,
    from_blob,
    stack_rows,
    to_blob,
)

__all__ = ["FileRow", "ItemRow", "RootRow", "Store"]

IN_CHUNK = 500  # ids in one IN list: SQLite's default limit on parameters is 999 in older builds


class Store:
    """Typed access to the index database. Takes a connection, so tests can hand in `:memory:`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.conn.row_factory = sqlite3.Row
        self._depth = 0

    @classmethod
    def open(cls, path: Path, create: bool = False) -> Store:
        if not create and not path.is_file():
            raise IndexCorruptError(f"index database missing: {path}")
        try:
            conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns, so it survives a power cut as well as a crash
            # (NORMAL in WAL mode may lose the last commits then). One fsync per chunk costs little.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn)
            if create:
                store.initialise()
            store.check_schema()
            return store
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"index database unreadable: {path} ({exc})") from exc

    def initialise(self) -> None:
        self.conn.executescript(SCHEMA)  # idempotent; executescript cannot run inside BEGIN
        with self.transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?), ('generation', '0')",
                (str(SCHEMA_VERSION),),
            )

    def set_identity(self, identity: dict[str, Any]) -> None:
        """Keep a copy of what the manifest says the index is (its model, dimension), so that a lost or
        damaged manifest can be written again from the database."""
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('identity', ?)", (json.dumps(identity, sort_keys=True),)
        )

    def check_schema(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"index database has no vecsearch schema ({exc})") from exc
        if row is None:
            raise IndexCorruptError("index database has no schema version")
        version = int(row["value"])
        if version < SCHEMA_VERSION:
            self._upgrade()
        elif version > SCHEMA_VERSION:
            raise IndexCorruptError(
                f"index database schema {version} is newer than this vecsearch understands "
                f"({SCHEMA_VERSION}); upgrade vecsearch"
            )

    def _upgrade(self) -> None:
        """Bring an older database to this schema, once, whichever process opens it first."""
        with self.transaction():
            version = int(self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    self.conn.execute(statement)
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write; nested use joins the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def begin(self) -> None:
        """Start a long write that the caller ends with commit() or rollback()."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1

    def commit(self) -> None:
        self._depth = 0
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self._depth = 0
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A consistent read of several queries while a writer in another process commits."""
        if self._depth:
            yield
            return
        self.conn.execute("BEGIN")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self.conn.execute("COMMIT")

    # --- generations -------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def bump_generation(self) -> int:
        """Start the next generation; call inside the transaction whose changes it stamps."""
        gen = self.generation + 1
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
        return gen

    # --- roots ---------------------------------------------------------------------------------

    def roots(self) -> list[RootRow]:
        rows = self.conn.execute("SELECT id, path, relpath, options FROM roots ORDER BY id").fetchall()
        return [RootRow(r["id"], r["path"], r["relpath"], json.loads(r["options"])) for r in rows]

    def add_root(self, path: str, relpath: str, options: dict[str, Any]) -> int:
        cur = self.conn.execute(
            "INSERT INTO roots(path, relpath, options) VALUES (?, ?, ?)", (path, relpath, json.dumps(options))
        )
        return _rowid(cur)

    def update_root(self, root_id: int, path: str, relpath: str, options: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE roots SET path = ?, relpath = ?, options = ? WHERE id = ?",
            (path, relpath, json.dumps(options), root_id),
        )

    def split_root(self, outer_id: int, inner_id: int, prefix: str) -> None:
        """Move a root's files below `prefix/` to a new root made for that folder."""
        self.conn.execute(
            "UPDATE files SET root_id = ?, relpath = substr(relpath, ?) WHERE root_id = ?"
            " AND relpath >= ? AND relpath < ?",
            (inner_id, len(prefix) + 2, outer_id, prefix + "/", prefix + "0"),
        )

    def merge_root(self, inner_id: int, outer_id: int, prefix: str) -> None:
        """Fold a root into one that contains it: its files move under `prefix/`."""
        self.conn.execute(
            "UPDATE files SET root_id = ?, relpath = ? || '/' || relpath WHERE root_id = ?",
            (outer_id, prefix, inner_id),
        )
        self.conn.execute("DELETE FROM roots WHERE id = ?", (inner_id,))

    # --- files ---------------------------------------------------------------------------------

    def files_under(self, root_id: int, prefix: str = "") -> dict[str, FileRow]:
        """Files of a root, optionally only those at or below a relative folder or file."""
        if prefix:
            # relpath in [prefix + "/", prefix + "0"): everything below the folder ("0" follows "/").
            rows = self.conn.execute(
                "SELECT * FROM files WHERE root_id = ? AND relpath = ?"
                " UNION ALL SELECT * FROM files WHERE root_id = ? AND relpath >= ? AND relpath < ?",
                (root_id, prefix, root_id, prefix + "/", prefix + "0"),
            ).fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM files WHERE root_id = ?", (root_id,)).fetchall()
        return {r["relpath"]: file_row(r) for r in rows}

    def file_at(self, root_id: int, relpath: str) -> FileRow | None:
        row = self.conn.execute("SELECT * FROM files WHERE root_id = ? AND relpath = ?", (root_id, relpath)).fetchone()
        return file_row(row) if row else None

    def files_with_captions_from(self, source: str) -> set[int]:
        return {
            int(r[0])
            for r in self.conn.execute(
                "SELECT DISTINCT file_id FROM items WHERE kind = 'caption' AND source = ?", (source,)
            )
        }

    def file_by_hash(self, sha256: str) -> FileRow | None:
        row = self.conn.execute("SELECT * FROM files WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        return file_row(row) if row else None

    def add_file(self, root_id: int, relpath: str, size: int, mtime_ns: int, sha256: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO files(root_id, relpath, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?)",
            (root_id, relpath, size, mtime_ns, sha256),
        )
        return _rowid(cur)

    def update_file(
        self,
        file_id: int,
        *,
        root_id: int | None = None,
        relpath: str | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        sha256: str | None = None,
    ) -> None:
        fields = {"root_id": root_id, "relpath": relpath, "size": size, "mtime_ns": mtime_ns, "sha256": sha256}
        sets = {k: v for k, v in fields.items() if v is not None}
        if not sets:
            return
        assignments = ", ".join(f"{k} = ?" for k in sets)
        self.conn.execute(f"UPDATE files SET {assignments} WHERE id = ?", (*sets.values(), file_id))

    def set_sidecar_sig(self, file_id: int, sig: str | None) -> None:
        self.conn.execute("UPDATE files SET sidecar_sig = ? WHERE id = ?", (sig, file_id))

    def delete_file(self, file_id: int, gen: int) -> list[int]:
        """Remove a file and every item of it; returns the ids of the items that went."""
        ids = self.item_ids(file_ids=[file_id])
        self.delete_items(ids, gen)
        self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return ids

    def file_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    # --- items ---------------------------------------------------------------------------------

    def add_item(
        self,
        kind: str,
        file_id: int,
        vector: np.ndarray,
        gen: int,
        *,
        text: str | None = None,
        source: str | None = None,
        position: int = 0,
        text_hash: str | None = None,
        language: str | None = None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO items(kind, file_id, text, source, position, text_hash, added_gen, lang)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, file_id, text, source, position, text_hash, gen, language),
        )
        item_id = _rowid(cur)
        self.conn.execute("INSERT INTO vectors(item_id, data) VALUES (?, ?)", (item_id, to_blob(vector)))
        return item_id

    def delete_items(self, item_ids: Sequence[int], gen: int) -> None:
        for chunk in chunks(list(item_ids), IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM vectors WHERE item_id IN ({marks})", chunk)
            self.conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
            self.conn.executemany(
                "INSERT OR REPLACE INTO removed(item_id, gen) VALUES (?, ?)", [(i, gen) for i in chunk]
            )

    def image_items_with_hash(self, sha256: str) -> list[int]:
        """Image items of the files with this content."""
        rows = self.conn.execute(
            "SELECT i.id FROM items i JOIN files f ON f.id = i.file_id WHERE f.sha256 = ? AND i.kind = 'image'",
            (sha256,),
        )
        return [int(row[0]) for row in rows]

    def image_item_of(self, file_id: int) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM items WHERE file_id = ? AND kind = 'image' LIMIT 1", (file_id,)
        ).fetchone()
        return int(row[0]) if row else None

    def captions_of(self, file_id: int, source: str | None = None) -> list[tuple[int, str, str]]:
        """(item id, text, source) of a file's captions, in their order."""
        sql = "SELECT id, text, source FROM items WHERE file_id = ? AND kind = 'caption'"
        args: tuple[Any, ...] = (file_id,)
        if source is not None:
            sql += " AND source = ?"
            args = (file_id, source)
        rows = self.conn.execute(sql + " ORDER BY position, id", args).fetchall()
        return [(int(r[0]), r[1], r[2]) for r in rows]

    def vector_for_text(self, text_hash: str) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT v.data FROM items i JOIN vectors v ON v.item_id = i.id WHERE i.text_hash = ? LIMIT 1",
            (text_hash,),
        ).fetchone()
        return from_blob(row[0]) if row else None

    def vector(self, item_id: int) -> np.ndarray | None:
        row = self.conn.execute("SELECT data FROM vectors WHERE item_id = ?", (item_id,)).fetchone()
        return from_blob(row[0]) if row else None

    def items(self, item_ids: Iterable[int], kind: str | None = None) -> dict[int, ItemRow]:
        rows = self._rows_in(
            "SELECT i.id, i.kind, i.file_id, i.text, i.source, i.position, f.root_id, f.relpath, i.lang"
            " FROM items i JOIN files f ON f.id = i.file_id WHERE i.id IN ({marks})" + (" AND i.kind = ?" * bool(kind)),
            item_ids,
            *([kind] if kind else []),
        )
        return {
            int(r["id"]): ItemRow(
                int(r["id"]),
                r["kind"],
                int(r["file_id"]),
                r["text"],
                r["source"],
                int(r["position"]),
                int(r["root_id"]),
                r["relpath"],
                r["lang"],
            )
            for r in rows
        }

    def first_captions(self, file_ids: Iterable[int]) -> dict[int, str]:
        """The first caption of each file, to show next to image hits."""
        found: dict[int, str] = {}
        # Last first within each chunk, so that the first caption is the one left standing.
        sql = "SELECT file_id, text FROM items WHERE kind = 'caption' AND file_id IN ({marks}) ORDER BY position DESC, id DESC"
        for r in self._rows_in(sql, set(file_ids)):
            found[int(r[0])] = r[1]
        return found

    def image_items_of_files(self, file_ids: Iterable[int]) -> dict[int, int]:
        rows = self._rows_in(
            "SELECT file_id, id FROM items WHERE kind = 'image' AND file_id IN ({marks})", set(file_ids)
        )
        return {int(r[0]): int(r[1]) for r in rows}

    def item_ids(self, kind: str | None = None, file_ids: Iterable[int] | None = None) -> list[int]:
        """Ids of items of a kind, optionally only of some files: the allowed set of a filter."""
        if file_ids is None:
            if kind is None:
                return [int(r[0]) for r in self.conn.execute("SELECT id FROM items")]
            return [int(r[0]) for r in self.conn.execute("SELECT id FROM items WHERE kind = ?", (kind,))]
        if kind is None:
            rows = self._rows_in("SELECT id FROM items WHERE file_id IN ({marks})", set(file_ids))
        else:
            rows = self._rows_in("SELECT id FROM items WHERE file_id IN ({marks}) AND kind = ?", set(file_ids), kind)
        return [int(r[0]) for r in rows]

    def has_other_kinds(self, kind: str) -> bool:
        """Is any item of a kind other than `kind`? (Cheap: uses the kind index.)"""
        return (
            self.conn.execute("SELECT EXISTS(SELECT 1 FROM items WHERE kind < ? OR kind > ?)", (kind, kind)).fetchone()[
                0
            ]
            == 1
        )

    def all_files(self) -> list[tuple[int, int, str]]:
        """(file id, root id, relpath) of every file: input of path filters."""
        return [(int(r[0]), int(r[1]), r[2]) for r in self.conn.execute("SELECT id, root_id, relpath FROM files")]

    def files_from(self, after: int, limit: int) -> list[FileRow]:
        """Files by id, `limit` of them after id `after`: an export walks the whole index this way."""
        rows = self.conn.execute("SELECT * FROM files WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [file_row(r) for r in rows]

    def item_vectors_of_files(self, first: int, last: int, kind: str) -> list[tuple[int, int, str | None, bytes]]:
        """(file id, item id, text, vector bytes) of the items of one kind of files `first`..`last`, in
        file and caption order."""
        sql = (
            "SELECT i.file_id, i.id, i.text, v.data FROM items i JOIN vectors v ON v.item_id = i.id "
            "WHERE i.kind = ? AND i.file_id BETWEEN ? AND ? ORDER BY i.file_id, i.position, i.id"
        )
        return [(int(r[0]), int(r[1]), r[2], bytes(r[3])) for r in self.conn.execute(sql, (kind, first, last))]

    def content_hashes(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT DISTINCT sha256 FROM files")]

    def counts(self) -> dict[str, int]:
        rows = dict(self.conn.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind").fetchall())
        images, captions = int(rows.get("image", 0)), int(rows.get("caption", 0))
        return {"items": images + captions, "images": images, "captions": captions, "files": self.file_count()}

    def vectors_since(self, gen: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of items added after generation `gen`; gen -1 means all of them."""
        rows = self.conn.execute(
            "SELECT i.id, v.data FROM items i JOIN vectors v ON v.item_id = i.id WHERE i.added_gen > ? ORDER BY i.id",
            (gen,),
        ).fetchall()
        return stack_rows(rows)

    def vectors_of(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the given items that exist, in id order: the exact vectors to re-score with."""
        rows = list(
            self._rows_in("SELECT item_id, data FROM vectors WHERE item_id IN ({marks})", {int(i) for i in item_ids})
        )
        rows.sort(key=lambda r: int(r[0]))
        return stack_rows(rows)

    def iter_vectors(self, chunk_size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) in chunks, so a scan of a large index never holds all of it."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT item_id, data FROM vectors WHERE item_id > ? ORDER BY item_id LIMIT ?", (last, chunk_size)
            ).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            yield stack_rows(rows)

    def vector_ids(self) -> np.ndarray:
        """Every item id that has a vector, in id order."""
        rows = self.conn.execute("SELECT item_id FROM vectors ORDER BY item_id")
        return np.array([int(r[0]) for r in rows], dtype=np.int64)

    def vectors_between(self, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the items with ids from `low` to `high`, in id order: one shard of a build."""
        rows = self.conn.execute(
            "SELECT item_id, data FROM vectors WHERE item_id BETWEEN ? AND ? ORDER BY item_id", (low, high)
        ).fetchall()
        return stack_rows(rows)

    def sample_item_ids(self, count: int, seed: int = 0, kind: str | None = None) -> np.ndarray:
        """A seeded sample of item ids (all when there are fewer), of one kind if given."""
        if kind is None:
            ids = self.vector_ids()
        else:
            rows = self.conn.execute(
                "SELECT v.item_id FROM vectors v JOIN items i ON i.id = v.item_id WHERE i.kind = ? ORDER BY v.item_id",
                (kind,),
            )
            ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
        if len(ids) <= count:
            return np.sort(ids)
        return np.sort(np.random.default_rng(seed).choice(ids, size=count, replace=False))

    def removed_since(self, gen: int) -> np.ndarray:
        rows = self.conn.execute("SELECT item_id FROM removed WHERE gen > ?", (gen,)).fetchall()
        return np.array([int(r[0]) for r in rows], dtype=np.int64)

    def forget_removals(self, up_to: int) -> None:
        """Drop the removal log up to a generation that every vector file still in use reflects."""
        self.conn.execute("DELETE FROM removed WHERE gen <= ?", (up_to,))

    def _rows_in(self, sql: str, ids: Iterable[Any], *args: Any) -> Iterator[sqlite3.Row]:
        """Rows of `sql`, whose `{marks}` is an IN list of the ids, for any number of ids: run in chunks
        that stay under SQLite's limit on parameters, with `args` after each chunk's ids."""
        for chunk in chunks(list(ids), IN_CHUNK):
            yield from self.conn.execute(sql.format(marks=",".join("?" * len(chunk))), [*chunk, *args])


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return int(cursor.lastrowid)
