"""An index folder's files: manifest.json (what an index is: format, model, vector file, in a form people
and tools can read), the names of the others, and which leftovers a writer may delete."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .encoders.base import Encoder
from .errors import IndexCorruptError, IndexExistsError, IndexNotFoundError
from .plan import EXACT
from .vectors import atomic_write
from .version import __version__

FORMAT = "vecsearch-index"  # the manifest's "format"; FORMAT_VERSION goes up when the layout changes
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "items.sqlite"
VECTORS = "vectors.faiss"  # the name before vector files were versioned; still read
LOCK = ".lock"
_VECTOR_FILE = re.compile(r"vectors[A-Za-z0-9_.-]*\.faiss")


def vector_file_name(generation: int) -> str:
    """A name no earlier save used, so that a new file never replaces the one the manifest names:
    a crash between writing the file and writing the manifest leaves the old pair intact."""
    return f"vectors-g{generation}-{secrets.token_hex(4)}.faiss"


def leftover_files(folder: Path, keep: str) -> list[Path]:
    """Vector files no manifest names any more, and temporary files of writers that died.

    Only a writer holding the index's lock may delete these: no other writer can be using them then.
    """
    found = []
    companions = keep.removesuffix(".faiss") + "."  # an on-disk index's lists and re-ranking codes
    for path in folder.iterdir():
        name = path.name
        if name == keep or (keep and name.startswith(companions)) or not path.is_file():
            continue
        vector_file = name.startswith("vectors") and name.endswith((".faiss", ".ivfdata", ".npy"))
        if vector_file or (name.startswith(".") and name.endswith(".tmp")):
            found.append(path)
    return sorted(found)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexNotFoundError(f"no vecsearch index at {folder} (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"index manifest unreadable: {path} ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IndexCorruptError(f"{path} is not a vecsearch index manifest")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexCorruptError(
            f"index format {version} at {folder} is newer than this vecsearch reads ({FORMAT_VERSION}); "
            "upgrade vecsearch"
        )
    for key in ("model", "dim", "faiss"):
        if key not in data:
            raise IndexCorruptError(f"index manifest {path} lacks '{key}'")
    if not isinstance(data["dim"], int) or isinstance(data["dim"], bool) or data["dim"] <= 0:
        raise IndexCorruptError(f"index manifest {path} has an invalid dimension {data['dim']!r}")
    faiss_info = data["faiss"]
    if not isinstance(faiss_info, dict):
        raise IndexCorruptError(f"index manifest {path} has an invalid 'faiss' section")
    name = faiss_info.get("file", VECTORS)
    if not isinstance(name, str) or not _VECTOR_FILE.fullmatch(name):
        # A manifest only ever names a file inside its own folder; anything else is tampering.
        raise IndexCorruptError(f"index manifest {path} names a vector file outside the index: {name!r}")
    return data


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(folder / MANIFEST, text.encode("utf-8"))


def folder_files_state(folder: Path) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """What tells a reader that the manifest was rewritten or the database replaced since it looked."""

    def stat(path: Path) -> os.stat_result | None:
        try:
            return path.stat()
        except OSError:
            return None

    manifest, database = stat(folder / MANIFEST), stat(folder / DATABASE)
    return (
        (manifest.st_ino, manifest.st_mtime_ns, manifest.st_size) if manifest else (0, 0, 0),
        (database.st_dev, database.st_ino) if database else (0, 0),
    )


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the database keeps a copy of, so that a lost manifest can be written again from it."""
    return {key: manifest[key] for key in ("model", "dim", "metric", "created", "location") if key in manifest}


def require_free(folder: Path) -> list[Path]:
    """Refuse a folder that holds anything but the leftovers of a creation that died before its
    manifest was written (the manifest is written last); returns those leftovers."""
    if (folder / MANIFEST).exists():
        raise IndexExistsError(f"an index already exists at {folder}")
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise IndexExistsError(f"{folder} exists and is not an empty folder")
    entries = [p for p in folder.iterdir() if p.name != LOCK]
    leftovers = set(leftover_files(folder, keep=""))
    for name in (DATABASE, DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal"):
        if (folder / name).is_file():
            leftovers.add(folder / name)
    if any(p not in leftovers for p in entries) or not _empty_database(folder / DATABASE):
        raise IndexExistsError(f"{folder} exists and is not an empty folder")
    return sorted(leftovers)


def _empty_database(path: Path) -> bool:
    """True when there is no database, or one that holds no file and no item (all that create writes
    before its manifest); a database that cannot be read is never taken for empty."""
    if not path.exists():
        return True
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return all(
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
            for table in ("files", "items", "vectors")
            if table in tables
        )
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def new_manifest(
    folder: Path,
    encoder: Encoder,
    index_type: str,
    max_memory: int | None,
    vector_file: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    """What a new, empty index is: its model, its dimension and an empty exact vector file."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vecsearch_version": __version__,
        "created": created,
        "updated": created,
        "location": str(folder.resolve()),
        "model": {
            **encoder.spec.to_dict(),
            "spec": str(encoder.spec),
            "fingerprint": encoder.fingerprint,
            "modalities": sorted(encoder.modalities),
        },
        "dim": encoder.dim,
        "metric": "cosine",
        "faiss": {
            "type": EXACT,
            "family": "exact",
            "requested": index_type,
            "max_memory": max_memory,
            "file": vector_file,
            "generation": 0,
            "ntotal": 0,
            "sha256": None,
        },
        "counts": counts,
        "roots": [],
    }
