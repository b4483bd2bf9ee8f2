"""manifest.json: what an index is (format, model, vector file) in a form people and tools can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import IndexCorruptError, IndexNotFoundError
from .vectors import atomic_write

FORMAT = "vecsearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "items.sqlite"
VECTORS = "vectors.faiss"
LOCK = ".lock"


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
    return data


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(folder / MANIFEST, text.encode("utf-8"))
