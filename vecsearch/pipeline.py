"""The crawl's per-file work on worker threads: hash, decode, prepare for the model, in bounded memory.

A file whose size or modification time changed is hashed first (its content decides whether it needs
the model at all); only then is a picture decoded, at the size the model needs, and preprocessed, ahead
of the thread that runs the model. The bytes read for hashing are kept to be decoded without a second
read, within a cap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .crawl import FoundFile, hash_file
from .errors import ImageError
from .images import DECODE_OVERSAMPLE, decode_size, load_image  # noqa: F401 - decode_size: used from here
from .store import FileRow

HELD_BYTES_LIMIT = 256 << 20  # hashed file contents kept in memory for decoding, all files together


class Prefill(Protocol):
    """Work done before the crawl, elsewhere (the distributed crawl's shards): the crawl takes hashes,
    reasons and vectors from it where it matches, and applies its own rules to them unchanged."""

    def content(self, root_id: int, found: FoundFile) -> tuple[str, str | None] | None:
        """(content hash, why it could not be decoded) of the file as it was read for the shard (same
        size and modification time), or None. An empty hash means the file could not be read."""

    def image_vector(self, sha256: str) -> np.ndarray | None:
        """The picture vector of a content, if a shard holds it."""

    def text_vector(self, digest: str) -> np.ndarray | None:
        """The vector of a caption text (by `text_hash`), if a shard holds it."""

    def read(self, root_id: int, found: FoundFile) -> bytes | None:
        """The bytes of a file that is not on this machine's disk (a tar member, a URI); None for a local
        file. Raises OSError when it cannot be read."""


@dataclass
class Pending:
    """A file whose content changed or is new: hashed, then (if it must be embedded) decoded."""

    root_id: int
    found: FoundFile
    row: FileRow | None
    sha256: str = ""
    data: bytes | None = None
    prepared: Any = None  # the model's input, or the decoded picture while `raw`
    raw: bool = False
    error: str | None = None
    known_error: str | None = None  # why it did not decode where a distributed crawl read it


class HeldBytes:
    """A cap on the bytes of hashed files kept in memory to be decoded without a second read.

    Without it, memory would grow with the files' sizes times the number in flight (128 photos of 50 MB
    is 6.4 GB); past the cap, a picture is simply read again from disk when it is decoded.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def keep(self, size: int) -> bool:
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def release(self, item: Pending) -> None:
        """Let go of an item's bytes (once: the item forgets them)."""
        data, item.data = item.data, None
        if data is not None:
            with self._lock:
                self.held -= len(data)


def hash_pending(item: Pending, budget: HeldBytes | None = None) -> Pending:
    """Hash a file on a worker thread. The size and modification time recorded with the hash are the
    ones it had while it was read, so a file changed since the walk is recorded as what was hashed."""
    try:
        content = hash_file(item.found.path)
    except FileNotFoundError:
        item.error = "file vanished during the crawl"
        return item
    except OSError as exc:
        item.error = f"cannot read file ({exc.strerror or exc})"
        return item
    if not content.stable:
        item.error = "file changed while being read"
        return item
    item.sha256 = content.sha256
    if content.data is not None and (budget is None or budget.keep(len(content.data))):
        item.data = content.data
    if (content.size, content.mtime_ns) != (item.found.size, item.found.mtime_ns):
        item.found = dataclasses.replace(item.found, size=content.size, mtime_ns=content.mtime_ns)
    return item


def hash_prefilled(prefill: Prefill, hash_local: Callable[[Pending], Pending], item: Pending) -> Pending:
    """The hash a shard recorded for this very file (same size and time), else the file's own."""
    known = prefill.content(item.root_id, item.found)
    if known is not None:
        item.sha256, item.known_error = known
        if not item.sha256:
            item.error = item.known_error or "cannot read file"
        return item
    try:
        data = prefill.read(item.root_id, item.found)
    except OSError as exc:
        item.error = f"cannot read file ({exc.strerror or exc})"
        return item
    if data is None:
        return hash_local(item)
    item.sha256, item.data = hashlib.sha256(data).hexdigest(), data
    return item


def decode(
    item: Pending,
    prepare: Callable[[Any], Any] | None,
    max_megapixels: float,
    min_size: int | None = None,
    budget: HeldBytes | None = None,
) -> Pending:
    """Decode (and, once the model is loaded, preprocess) one picture on a worker thread.

    A file too big to keep in memory is decoded from disk after it was hashed: if it changed in between,
    the picture is not the hashed content, and it is skipped rather than stored under the wrong hash.
    """
    try:
        if item.data is not None:
            item.prepared = load_image(item.data, max_megapixels, min_size)
        else:
            item.prepared = load_image(item.found.path, max_megapixels, min_size)
            if _changed_since_hashed(item):
                raise ImageError("file changed while being read")
        item.raw = True
    except ImageError as exc:
        item.prepared = None
        item.error = "file vanished during the crawl" if str(exc) == "file not found" else str(exc)
    finally:
        if budget is not None:
            budget.release(item)
        item.data = None
    if prepare is not None and item.raw:
        prepare_item(item, prepare)
    return item


def _changed_since_hashed(item: Pending) -> bool:
    try:
        info = os.stat(item.found.path)
    except OSError:
        return True
    return (info.st_size, info.st_mtime_ns) != (item.found.size, item.found.mtime_ns)


def prepare_item(item: Pending, prepare: Callable[[Any], Any]) -> None:
    try:
        item.prepared = prepare(item.prepared)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:  # a preprocess failure on one odd image
        item.prepared = None
        item.error = f"cannot prepare image ({type(exc).__name__}: {exc})"
    item.raw = False


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int) -> Iterator[Any]:
    """Like pool.map, but with at most `window` tasks in flight, so memory stays bounded."""
    queue: deque[Future[Any]] = deque()
    iterator = iter(items)
    for item in iterator:
        queue.append(pool.submit(fn, item))
        if len(queue) >= window:
            break
    while queue:
        result = queue.popleft().result()
        nxt = next(iterator, None)
        if nxt is not None:
            queue.append(pool.submit(fn, nxt))
        yield result


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", dynamic_ncols=True, leave=False, disable=not enabled)
