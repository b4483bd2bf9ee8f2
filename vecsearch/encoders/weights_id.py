"""Which weights a model spec stands for, known without loading them: a cheap fingerprint.

Loading a model only to learn that it is the one an index was built with costs seconds (torch's import,
the checkpoint), and users re-run the same `vecsearch index ... --model M --pretrained CKPT` from cron.
So whenever a model is loaded, the files it was read from are recorded with their size, mtime and
SHA-256, beside the fingerprint the loaded weights gave. Later, a spec whose files still have the same
size and mtime has that fingerprint; a file whose mtime changed but whose size did not is hashed again
(a copy or a `touch` keeps its fingerprint); anything else is unknown and the caller loads the model.
The record lives in the cache (`weights.json`) and holds nothing a model load cannot rebuild.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import ModelSpec

FILE_NAME = "weights.json"
MAX_ENTRIES = 512
WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt")
log = logging.getLogger(__name__)


def record_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    from . import hub

    return hub.vecsearch_cache(cache_dir) / FILE_NAME


def folder_files(folder: Path) -> list[Path]:
    """The files of a model folder that can hold its config or weights."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    except OSError:
        return []


def remember(
    spec: ModelSpec, files: Iterable[Path], fingerprint: str, cache_dir: str | os.PathLike[str] | None = None
) -> None:
    """Record the files a spec was just loaded from and the fingerprint they gave (never fails a load)."""
    from .text_onnx import sha256_file

    path = record_path(cache_dir)
    entries = _read(path)
    previous = entries.get(str(spec), {})
    try:
        described = [_describe(Path(f), previous, sha256_file) for f in files]
    except OSError as exc:
        log.info("could not record the weights of %s: %s", spec, exc)
        return
    if not described:
        return
    entries.pop(str(spec), None)
    entries[str(spec)] = {"files": described, "fingerprint": fingerprint}
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    _write(path, entries)


def has_record(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Was this spec loaded on this machine (with this cache) before?"""
    return str(spec) in _read(record_path(cache_dir))


def known_fingerprint(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The fingerprint of the weights `spec` names, if its files are as they were when it was last
    loaded (size and mtime; the content hash when only the mtime moved); None when unknown."""
    from .text_onnx import sha256_file

    path = record_path(cache_dir)
    entries = _read(path)
    entry = entries.get(str(spec))
    if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
        return None
    touched = False
    try:
        for file in entry["files"]:
            stat = os.stat(file["path"])
            if stat.st_size != file["bytes"]:
                return None
            if stat.st_mtime_ns != file["mtime_ns"]:
                if sha256_file(Path(file["path"])) != file["sha256"]:
                    return None
                file["mtime_ns"] = stat.st_mtime_ns
                touched = True
    except (OSError, KeyError, TypeError):
        return None
    if touched:
        _write(path, entries)
    return str(entry["fingerprint"])


def _describe(path: Path, previous: dict[str, Any], sha256_file: Any) -> dict[str, Any]:
    stat = path.stat()
    for file in previous.get("files", []):  # unchanged since it was last hashed: no need to hash again
        if (
            file.get("path") == str(path)
            and file.get("bytes") == stat.st_size
            and file.get("mtime_ns") == stat.st_mtime_ns
        ):
            return dict(file)
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, entries: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.info("could not write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
