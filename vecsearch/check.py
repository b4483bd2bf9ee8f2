"""`vecsearch check`: verify that an index keeps its promises, and repair what can be rebuilt.

The database is the source of truth and the FAISS file a cache of its vectors, so most damage is
repairable: a damaged, missing or inconsistent vector file is rebuilt from the stored vectors; rows that
lost their partner (an item without a vector, a vector without an item) are dropped, and a file whose
items were damaged is forgotten so that the next crawl indexes it again. What cannot be rebuilt (a
database that is not a database, a manifest without the copy of its model the database keeps) is
reported and left as it is: repair never deletes data it cannot replace.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexCorruptError, IndexLockedError, VecsearchError
from .home import locate
from .lock import WriterLock
from .manifest import (
    DATABASE,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    VECTORS,
    leftover_files,
    read_manifest,
    write_manifest,
)
from .pathutil import is_safe_relpath
from .plan import EXACT
from .roots import FOLDER, locate_root, root_kind
from .store import Store
from .vector_file import VectorFile, open_checked_on_disk
from .vectors import VectorIndex
from .version import __version__

# How many stored vectors are compared with what the exact FAISS file holds for them.
SAMPLE_VECTORS = 2_000


@dataclass
class Finding:
    """One broken promise: where, what, and what `--repair` does about it (None: it cannot)."""

    area: str
    problem: str
    repair: str | None
    repaired: bool = False


@dataclass
class CheckReport:
    path: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    repaired: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing is (still) wrong."""
        return all(f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def check_index(
    ref: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None, repair: bool = False
) -> CheckReport:
    """Check an index's files and their agreement; with `repair`, rebuild what is damaged and check again.

    Checking needs no lock (a crawl may run meanwhile); repairing takes the writer lock, so it waits for
    no one: an index being updated raises IndexLockedError.
    """
    started = time.monotonic()
    folder = locate(ref, home)
    if not repair:
        report = _inspect(folder)
        report.seconds = time.monotonic() - started
        return report
    with WriterLock(folder / LOCK, str(folder)):
        first = _inspect(folder, writer=True)
        if first.findings or first.leftovers:
            _repair(folder, first)
            after = _inspect(folder, writer=True)
            still = {(f.area, f.problem) for f in after.findings}
            for finding in first.findings:
                finding.repaired = (finding.area, finding.problem) not in still and finding.repair is not None
            first.findings += [
                f for f in after.findings if (f.area, f.problem) not in {(g.area, g.problem) for g in first.findings}
            ]
            first.counts = after.counts
            first.notes = after.notes + [f"deleted {name}" for name in first.leftovers]
            first.leftovers = after.leftovers
            first.repaired = True
    first.seconds = time.monotonic() - started
    return first


# --- inspection ------------------------------------------------------------------------------------


def _inspect(folder: Path, writer: bool = False) -> CheckReport:
    report = CheckReport(str(folder))
    manifest = _check_manifest(folder, report)
    if not _check_database(folder, report):
        return report
    try:
        store = Store.open(folder / DATABASE)
    except IndexCorruptError as exc:
        report.findings.append(Finding("database", str(exc), None))
        return report
    try:
        report.counts = store.counts()
        identity = manifest or _identity(store)
        _check_rows(store, identity.get("dim"), identity.get("model", {}).get("modalities"), report)
        if manifest is not None:
            _check_vector_file(folder, manifest, store, report)
        _check_sources(folder, identity.get("location"), store, report)
    finally:
        store.close()
    busy = not writer and _writer_active(folder)
    if busy:
        report.notes.append("another process is updating the index: its working files were not checked")
    else:
        keep = manifest["faiss"].get("file", VECTORS) if manifest else ""
        report.leftovers = [path.name for path in leftover_files(folder, keep=keep)]
        if report.leftovers:
            report.notes.append(
                f"{len(report.leftovers)} leftover files of a writer that stopped "
                f"({', '.join(report.leftovers)}): harmless; the next crawl or --repair "
                "deletes them"
            )
    return report


def _check_manifest(folder: Path, report: CheckReport) -> dict[str, Any] | None:
    try:
        return read_manifest(folder)
    except IndexCorruptError as exc:
        report.findings.append(Finding("manifest", str(exc), "write it again from the database's copy"))
        return None


def _check_database(folder: Path, report: CheckReport) -> bool:
    """Is the SQLite file a sound database? Returns whether row checks can go on."""
    path = folder / DATABASE
    if not path.is_file():
        report.findings.append(Finding("database", f"database missing: {path.name}", None))
        return False
    with open(path, "rb") as handle:
        is_sqlite = handle.read(16) == b"SQLite format 3\x00"
    if not is_sqlite:
        report.findings.append(Finding("database", "not a readable SQLite database (no SQLite header)", None))
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows != ["ok"]:
        detail = "; ".join(rows[:3]) + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")
        report.findings.append(Finding("database", f"damaged: {detail}", "copy out every readable row"))
        return False
    return True


def _check_rows(store: Any, dim: int | None, modalities: list[str] | None, report: CheckReport) -> None:
    conn = store.conn
    queries = {
        "items without a vector": "SELECT COUNT(*) FROM items WHERE id NOT IN (SELECT item_id FROM vectors)",
        "vectors without an item": "SELECT COUNT(*) FROM vectors WHERE item_id NOT IN (SELECT id FROM items)",
        "items of a file that is not recorded": "SELECT COUNT(*) FROM items WHERE file_id NOT IN (SELECT id FROM files)",
        "files of a crawled folder that is not recorded": "SELECT COUNT(*) FROM files WHERE root_id NOT IN (SELECT id FROM roots)",
    }
    if modalities is not None and "image" in modalities:
        queries["files without an image item"] = (
            "SELECT COUNT(*) FROM files WHERE id NOT IN (SELECT file_id FROM items WHERE kind = 'image')"
        )
    counts = {problem: int(conn.execute(sql).fetchone()[0]) for problem, sql in queries.items()}
    counts[_OUTSIDE] = len(_unsafe_files(store))
    for problem, count in counts.items():
        if count:
            report.findings.append(Finding("items", f"{count} {problem}", _ROW_REPAIRS[problem]))
    if dim:
        bad = len(_bad_vectors(store, dim))
        if bad:
            report.findings.append(
                Finding(
                    "items",
                    f"{bad} stored vectors of the wrong size, not finite or not unit length",
                    _ROW_REPAIRS["bad vectors"],
                )
            )


_OUTSIDE = "files outside their folder (absolute or '..' paths)"
_FORGET = "forget their files, so that the next `vecsearch index` indexes them again"
_ROW_REPAIRS = {
    "items without a vector": _FORGET,
    "vectors without an item": "drop those vectors",
    "items of a file that is not recorded": "drop those items",
    "files of a crawled folder that is not recorded": "forget those files",
    _OUTSIDE: "forget those files",
    "files without an image item": _FORGET,
    "bad vectors": _FORGET,
}


def _unsafe_files(store: Any) -> list[int]:
    """Files whose path would leave their folder. Roots that are not folders (listings name absolute
    paths and URIs; tar members and remote files are never opened through the root) are not checked."""
    elsewhere = {root.id for root in store.roots() if root_kind(root) != FOLDER}
    return [
        file_id
        for file_id, root_id, relpath in store.conn.execute("SELECT id, root_id, relpath FROM files")
        if root_id not in elsewhere and not is_safe_relpath(relpath)
    ]


def _bad_vectors(store: Any, dim: int) -> list[int]:
    bad = []
    for item_id, blob in store.conn.execute("SELECT item_id, data FROM vectors"):
        if len(blob) != dim * 4:
            bad.append(item_id)
            continue
        vector = np.frombuffer(blob, dtype="<f4")
        if not np.isfinite(vector).all() or abs(float(np.dot(vector, vector)) - 1.0) > 1e-3:
            bad.append(item_id)
    return bad


def _check_vector_file(folder: Path, manifest: dict[str, Any], store: Any, report: CheckReport) -> None:
    info = manifest["faiss"]
    rebuild = "rebuild it from the vectors in the database"
    path = folder / info.get("file", VECTORS)
    try:
        if info.get("on_disk"):
            vectors = open_checked_on_disk(path, info)
        else:
            vectors = VectorIndex.load(path, info.get("type", EXACT), expected_sha256=info.get("sha256"))
    except IndexCorruptError as exc:
        report.findings.append(Finding("vectors", str(exc), rebuild))
        return
    if vectors.dim != manifest["dim"]:
        report.findings.append(
            Finding("vectors", f"vector file has dimension {vectors.dim}, the manifest says {manifest['dim']}", rebuild)
        )
        return
    with store.snapshot():
        db_gen, file_gen = store.generation, int(info.get("generation", -1))
        if file_gen > db_gen:
            report.findings.append(
                Finding(
                    "vectors",
                    f"vector file (generation {file_gen}) is newer than the database (generation {db_gen})",
                    rebuild,
                )
            )
            return
        if file_gen < db_gen:
            report.notes.append(
                f"the vector file lags the database by {db_gen - file_gen} generations; "
                "readers catch it up, the next crawl saves it"
            )
            if vectors.on_disk:  # read-only: the next crawl rebuilds it, and what it holds is checked then
                return
            vectors.remove(np.concatenate([store.removed_since(file_gen), store.vectors_since(file_gen)[0]]))
            vectors.add(*store.vectors_since(file_gen))
        stored = store.vector_ids()
    held = np.sort(vectors.ids())
    if held.shape != stored.shape or not np.array_equal(held, np.sort(stored)):
        missing = np.setdiff1d(stored, held).size
        extra = np.setdiff1d(held, stored).size
        report.findings.append(
            Finding(
                "vectors",
                f"vector file disagrees with the database: {missing} stored "
                f"vectors missing from it, {extra} ids in it that the database lacks",
                rebuild,
            )
        )
        return
    if not vectors.approximate and stored.size:
        sample = np.random.default_rng(0).choice(stored, size=min(SAMPLE_VECTORS, stored.size), replace=False)
        ids, wanted = store.vectors_of(np.sort(sample))
        got = np.stack([vectors.index.reconstruct(int(i)) for i in ids])
        if not np.allclose(got, wanted, atol=1e-5):
            report.findings.append(
                Finding("vectors", "vector file holds vectors that differ from the database's", rebuild)
            )


def _check_sources(folder: Path, location: str | None, store: Any, report: CheckReport) -> None:
    """Indexed files that are gone from disk are not damage (the next crawl drops them): a note."""
    recorded = store.roots()
    roots = {root.id: locate_root(folder, location, root) for root in recorded if root_kind(root) == FOLDER}
    elsewhere = {root.id for root in recorded if root_kind(root) != FOLDER}  # tar shards, listings, URIs
    missing = sum(
        1
        for root_id, relpath in store.conn.execute("SELECT root_id, relpath FROM files")
        if root_id not in elsewhere and (root_id not in roots or not (roots[root_id] / relpath).exists())
    )
    if missing:
        report.notes.append(f"{missing} indexed files are no longer on disk; the next `vecsearch index` removes them")


def _writer_active(folder: Path) -> bool:
    lock = WriterLock(folder / LOCK, str(folder))
    try:
        lock.acquire()
    except IndexLockedError:
        return True
    except OSError:
        return False
    lock.release()
    return False


def _identity(store: Any) -> dict[str, Any]:
    row = store.conn.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
    if row is None:
        return {}
    try:
        value = json.loads(row[0])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --- repair ----------------------------------------------------------------------------------------


def _repair(folder: Path, report: CheckReport) -> None:
    areas = {f.area for f in report.findings if f.repair is not None}
    if any(f.area == "database" and f.repair is None for f in report.findings):
        return  # nothing else can be trusted, or rebuilt, without the database
    if "database" in areas:
        _salvage_database(folder)
    store = Store.open(folder / DATABASE)
    try:
        if "manifest" in areas:
            _rewrite_manifest(folder, store)
        if "items" in areas or "database" in areas:
            manifest = read_manifest(folder)
            _repair_rows(store, manifest["dim"], manifest["model"].get("modalities", []))
    finally:
        store.close()
    for path in leftover_files(folder, keep=read_manifest(folder)["faiss"].get("file", VECTORS)):
        path.unlink(missing_ok=True)
    store = Store.open(folder / DATABASE)
    try:
        vector_file = VectorFile(folder, store, read_manifest(folder))
        vector_file.rebuild()
        vector_file.save()
    finally:
        store.close()


def _salvage_database(folder: Path) -> None:
    """Copy every row SQLite can still read into a new database; the damaged file is kept beside it.

    Rows are read in rowid order; where a damaged page stops the scan, the scan jumps ahead in growing
    steps until it reads again, so one bad page costs the rows on it, not the rest of the table.
    """
    path = folder / DATABASE
    salvage = folder / (DATABASE + ".salvage")
    salvage.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = sqlite3.connect(str(salvage), isolation_level=None)
    try:
        try:
            schema = source.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            sequences = source.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
        except sqlite3.DatabaseError as exc:
            raise VecsearchError(f"the database's schema is unreadable ({exc}); it cannot be salvaged") from exc
        target.execute("BEGIN")
        for kind, name, sql in schema:
            if kind == "table":
                target.execute(sql)
                _copy_rows(source, target, name)
        for kind, _name, sql in schema:
            if kind == "index":
                target.execute(sql)
        target.execute("DELETE FROM sqlite_sequence")
        target.executemany("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", sequences)
        target.execute("COMMIT")
    finally:
        source.close()
        target.close()
    kept = folder / f"{DATABASE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = folder / (DATABASE + suffix)
        if side.exists():
            os.replace(side, folder / (kept.name + suffix))
    os.replace(salvage, path)


def _copy_rows(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> None:
    quoted = '"' + table.replace('"', '""') + '"'
    columns = [row[1] for row in source.execute(f"PRAGMA table_info({quoted})")]
    insert = f"INSERT INTO {quoted} VALUES ({', '.join('?' * len(columns))})"
    select = f"SELECT rowid, * FROM {quoted} WHERE rowid > ? ORDER BY rowid LIMIT 1000"
    lookup = f"SELECT rowid, * FROM {quoted} WHERE rowid = ?"
    last, step, damaged_from = -(2**63), 1, None
    while True:
        try:
            rows = source.execute(select, (last,)).fetchall()
        except sqlite3.DatabaseError:
            if damaged_from is None:
                damaged_from = last
                if last < 0:  # stopped at the start: our tables' rowids are positive
                    last = 0
                    continue
            if last + step >= 2**63 - 1:
                return
            last, step = last + step, step * 2
            continue
        if damaged_from is not None:
            # The jump may have stepped over readable rows after the damage: look them up one by one.
            for rowid in range(max(damaged_from, 0) + 1, last + 1):
                try:
                    row = source.execute(lookup, (rowid,)).fetchone()
                except sqlite3.DatabaseError:
                    continue
                if row is not None:
                    target.execute(insert, row[1:])
            damaged_from, step = None, 1
        if not rows:
            return
        target.executemany(insert, [row[1:] for row in rows])
        last = rows[-1][0]


def _rewrite_manifest(folder: Path, store: Any) -> None:
    identity = _identity(store)
    if not identity:
        raise VecsearchError("the manifest cannot be rebuilt: this database keeps no copy of the index's model")
    write_manifest(
        folder,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vecsearch_version": __version__,
            **identity,
            "faiss": {"type": EXACT, "family": "exact", "requested": "auto", "file": VECTORS, "generation": -1},
            "counts": store.counts(),
            "roots": [root.path for root in store.roots()],
        },
    )


def _repair_rows(store: Any, dim: int, modalities: list[str]) -> None:
    conn = store.conn
    with store.transaction():
        gen = store.bump_generation()
        forget: set[int] = set()
        forget |= {
            r[0] for r in conn.execute("SELECT file_id FROM items WHERE id NOT IN (SELECT item_id FROM vectors)")
        }
        forget |= (
            {
                r[0]
                for r in conn.execute(
                    "SELECT id FROM files WHERE id NOT IN (SELECT file_id FROM items WHERE kind = 'image')"
                )
            }
            if "image" in modalities
            else set()
        )
        forget |= {r[0] for r in conn.execute("SELECT id FROM files WHERE root_id NOT IN (SELECT id FROM roots)")}
        forget |= set(_unsafe_files(store))
        bad = _bad_vectors(store, dim)
        for chunk in (bad[i : i + 500] for i in range(0, len(bad), 500)):
            marks = ",".join("?" * len(chunk))
            forget |= {r[0] for r in conn.execute(f"SELECT file_id FROM items WHERE id IN ({marks})", chunk)}
        for file_id in sorted(forget):
            store.delete_file(file_id, gen)
        orphans = [r[0] for r in conn.execute("SELECT id FROM items WHERE file_id NOT IN (SELECT id FROM files)")]
        store.delete_items(orphans, gen)
        conn.execute("DELETE FROM vectors WHERE item_id NOT IN (SELECT id FROM items)")
