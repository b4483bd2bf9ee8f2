"""Prompt vectors of zero-shot labels, remembered per model weights.

`classify` embeds every label in eight prompt templates: for a model's text tower that is most of a cold
command's work, and scripts classify picture after picture, each in a new process, with the same labels.
So the vectors of those prompts are kept in a small SQLite file per weights fingerprint, in the cache
folder, keyed by the exact prompt text. They are the text tower's own output (a cache of what the model
computes, not of any answer), and nothing depends on them: a damaged or unreadable file is ignored, and
VECSEARCH_LABEL_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DISABLE_ENV = "VECSEARCH_LABEL_CACHE"
MAX_PROMPTS = 50_000  # per model: ~100 MB at 512 dimensions
log = logging.getLogger(__name__)


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def cache_path(fingerprint: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    from .encoders import hub

    return hub.vecsearch_cache(cache_dir) / "labels" / f"{fingerprint}.sqlite"


def cached_prompt_vectors(
    fingerprint: str, dim: int, prompts: Sequence[str], cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray]:
    """The remembered vectors of those prompts that have one (never raises)."""
    path = cache_path(fingerprint, cache_dir)
    if disabled() or not fingerprint or not path.is_file():
        return {}
    found: dict[str, np.ndarray] = {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            wanted = sorted(set(prompts))
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows = db.execute(
                    f"SELECT text, vector FROM prompts WHERE text IN ({','.join('?' * len(part))})", part
                ).fetchall()
                for text, blob in rows:
                    vector = np.frombuffer(blob, dtype="<f4")
                    if len(vector) == dim and np.isfinite(vector).all():
                        found[str(text)] = vector.astype(np.float32)
    except (sqlite3.Error, OSError, ValueError) as exc:
        log.info("label cache %s not used: %s", path, exc)
        return {}
    return found


def remember_prompt_vectors(
    fingerprint: str, prompts: Sequence[str], vectors: np.ndarray, cache_dir: str | os.PathLike[str] | None = None
) -> None:
    """Keep these prompts' vectors for later commands (never fails a command)."""
    if disabled() or not fingerprint or not len(prompts):
        return
    path = cache_path(fingerprint, cache_dir)
    now = time.time()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS prompts (text TEXT PRIMARY KEY, vector BLOB NOT NULL, used REAL)")
            db.executemany(
                "INSERT OR REPLACE INTO prompts (text, vector, used) VALUES (?, ?, ?)",
                [
                    (text, np.ascontiguousarray(v, dtype="<f4").tobytes(), now)
                    for text, v in zip(prompts, vectors, strict=True)
                ],
            )
            (count,) = db.execute("SELECT count(*) FROM prompts").fetchone()
            if count > MAX_PROMPTS:
                db.execute(
                    "DELETE FROM prompts WHERE text IN (SELECT text FROM prompts ORDER BY used LIMIT ?)",
                    (count - MAX_PROMPTS,),
                )
    except (sqlite3.Error, OSError) as exc:
        log.info("could not remember label vectors in %s: %s", path, exc)
