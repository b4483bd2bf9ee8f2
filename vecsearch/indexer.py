"""Crawling ⇒ indexing: bring an index in line with folders on disk, embedding only what changed.

Per file: same size and mtime → unchanged (nothing read). Otherwise the content is hashed on worker
threads: same hash → only touched; the hash of a file that disappeared in this crawl → a rename (the item
keeps its id and vector); the hash of a file already indexed → a duplicate (its vector is copied). Only
then is a picture decoded (on the workers, ahead of the model) and embedded.

Work is committed in chunks (after every model batch). A chunk is all or nothing: an interrupt rolls back
the open chunk and keeps the committed ones, and the next run picks up from there.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from . import faults
from .crawl import (
    FoundFile,
    WalkResult,
    display_path,
    hash_file,
    read_captions_source,
    read_sidecar,
    text_hash,
    walk,
)
from .encoders import IMAGE
from .errors import ImageError
from .images import DEFAULT_MAX_MEGAPIXELS, load_image
from .pathutil import is_within, relative_posix
from .results import CrawlReport, SkippedFile
from .roots import RootPlanner, Scope
from .store import FileRow

if TYPE_CHECKING:
    from .index import Index

SIDECAR = "sidecar"
COMMIT_EVERY_ITEMS = 500
COMMIT_EVERY_SECONDS = 10.0
DECODE_OVERSAMPLE = 3
HELD_BYTES_LIMIT = 256 << 20  # hashed file contents kept in memory for decoding, all files together
_log = logging.getLogger(__name__)
_COUNTERS = [f.name for f in dataclasses.fields(CrawlReport) if f.type == "int"]


class IndexingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a crawl, after the finished work was committed; carries the partial report."""

    def __init__(self, report: CrawlReport) -> None:
        super().__init__("indexing interrupted")
        self.report = report


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


@dataclass
class CaptionJob:
    file_id: int
    text: str
    source: str
    position: int


@dataclass
class _Chunk:
    """The open transaction: its generation, and what FAISS must mirror once it commits."""

    gen: int
    counters: dict[str, int]
    add_ids: list[int] = field(default_factory=list)
    add_vectors: list[np.ndarray] = field(default_factory=list)
    remove_ids: list[int] = field(default_factory=list)
    new_hashes: list[str] = field(default_factory=list)


class Crawler:
    def __init__(
        self,
        index: "Index",
        *,
        progress: bool = False,
        workers: int | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.index = index
        self.store = index.store
        self.roots = RootPlanner(index)
        self.progress = progress
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.max_megapixels = max_megapixels
        self.report = CrawlReport()
        self.embeds_images = IMAGE in index.modalities
        self._chunk: _Chunk | None = None
        self._last_commit = time.monotonic()
        self._captions: list[CaptionJob] = []
        self._new_hashes: dict[str, int] = {}
        self._text_vectors: dict[str, np.ndarray] = {}
        self._decode_size: int | None = None
        self._known: list[dict[str, FileRow]] = []
        self._held_bytes = HeldBytes(HELD_BYTES_LIMIT)

    # --- the run -------------------------------------------------------------------------------

    def run(
        self, paths: list[Path], captions_files: list[Path], exclude: list[str], include_hidden: bool
    ) -> CrawlReport:
        started = time.monotonic()
        caption_sources = []
        for captions_file in captions_files:
            captions, reason = read_captions_source(captions_file.expanduser())
            if reason:
                self._skip(display_path(captions_file), reason)
            else:
                caption_sources.append((str(captions_file.expanduser().resolve()), captions))
        try:
            self._crawl(paths, exclude, include_hidden, caption_sources)
        except KeyboardInterrupt:
            self._rollback()
            self._save()
            self.report.interrupted = True
            self.report.seconds = time.monotonic() - started
            raise IndexingInterrupted(self.report) from None
        except BaseException:
            self._rollback()
            self._save()
            raise
        self._save()
        self.report.seconds = time.monotonic() - started
        inference = getattr(self.index._encoder, "inference", None)
        if inference is not None and inference.checks:
            self.report.inference = inference.describe()
        return self.report

    def _crawl(
        self, paths: list[Path], exclude: list[str], include_hidden: bool,
        caption_sources: list[tuple[str, dict[Path, list[str]]]],
    ) -> None:
        """The crawl itself; what it builds per file (walk, plan, pending list) dies when it returns,
        before the vector index is saved (and perhaps rebuilt), which is when memory peaks."""
        with self.store.transaction():
            self.roots.refresh_locations()
            if paths:
                scopes = self.roots.scopes_for_paths(paths, exclude, include_hidden)
            else:
                scopes = self.roots.scopes_for_all(self._skip)
        walks = [self._walk(scope) for scope in scopes]
        candidates = self._plan_deletions(scopes, walks)
        pending = self._classify(scopes, walks, candidates)
        self._process(pending, candidates)
        self._delete(candidates)
        self._apply_caption_sources(caption_sources)
        self._commit()

    def _save(self) -> None:
        self._known, self._new_hashes, self._text_vectors = [], {}, {}  # per-crawl caches: not needed now
        if self.index.needs_saving():
            note = self.index.save_vectors()
            if note:
                self.report.vector_index = note

    # --- walking and planning ------------------------------------------------------------------

    def _walk(self, scope: Scope) -> WalkResult:
        merged = WalkResult()
        seen: set[str] = set()
        for start in scope.starts:
            if not start.exists():
                continue
            result = walk(scope.folder, start, scope.exclude, scope.include_hidden)
            for found in result.files:
                faults.point("walk")
                if found.relpath not in seen:
                    seen.add(found.relpath)
                    merged.files.append(found)
            merged.skipped.extend(result.skipped)
        for skip in merged.skipped:
            self._skip(skip.path, skip.reason)
        return merged

    def _plan_deletions(self, scopes: list[Scope], walks: list[WalkResult]) -> dict[int, FileRow]:
        """Indexed files in the crawled scopes, to be removed unless seen again. Files under folders
        that could not be listed are kept as they are, and never taken for renames."""
        candidates: dict[int, FileRow] = {}
        self._known = []
        for scope, walked in zip(scopes, walks):
            unlisted = [Path(s.path) for s in walked.skipped if s.reason.startswith("cannot list folder")]
            known: dict[str, FileRow] = {}
            for prefix in scope.prefixes:
                known.update(self.store.files_under(scope.root.id, prefix))
            for row in known.values():
                if not any(is_within(scope.folder / row.relpath, folder) for folder in unlisted):
                    candidates[row.id] = row
            self._known.append(known)  # the same rows, by path, for _classify: read once, held once
        return candidates

    def _classify(
        self, scopes: list[Scope], walks: list[WalkResult], candidates: dict[int, FileRow]
    ) -> list[Pending]:
        pending: list[Pending] = []
        for number, (scope, walked) in enumerate(zip(scopes, walks)):
            existing = self._known[number]
            for found in walked.files:
                row = existing.get(found.relpath)
                if row is None:  # a file outside the scope's prefixes (should not happen): ask the database
                    row = self.store.file_at(scope.root.id, found.relpath)
                if row is not None:
                    candidates.pop(row.id, None)
                if row is not None and row.size == found.size and row.mtime_ns == found.mtime_ns:
                    self.report.unchanged += 1
                    if found.sidecar_sig != row.sidecar_sig:
                        self._sync_sidecar(row.id, found, row.sidecar_sig)
                        self._maybe_commit()
                    continue
                pending.append(Pending(scope.root.id, found, row))
        return pending

    # --- hashing, decoding and embedding -------------------------------------------------------

    def _process(self, pending: list[Pending], candidates: dict[int, FileRow]) -> None:
        if not pending:
            return
        by_hash: dict[str, list[FileRow]] = {}
        for row in candidates.values():
            by_hash.setdefault(row.sha256, []).append(row)
        batch_size = self.index.batch_size
        window = max(4 * batch_size, 8 * self.workers)
        decoding: deque[Future[Pending]] = deque()
        in_flight: set[str] = set()
        twins: list[Pending] = []
        failed: dict[str, str] = {}
        batch: list[Pending] = []
        prepare: Callable[[Any], Any] | None = None

        def take(item: Pending) -> None:
            nonlocal batch, prepare
            if item.raw:
                # The first picture that decodes loads the model, in this thread: its errors reach the
                # caller, and a crawl that meets only known or broken files never loads it.
                if prepare is None:
                    prepare = self.index.encoder.prepare_image
                    self._decode_size = decode_size(self.index.encoder)
                _prepare(item, prepare)
            if item.error:
                failed[item.sha256] = item.error
                self._skip_changed(item, item.error)
                return
            batch.append(item)
            if len(batch) >= batch_size:
                self._embed(batch)
                batch = []
                self._place_twins(twins, by_hash, candidates, failed)

        bar = _progress(len(pending), "indexing", self.progress)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vecsearch-crawl")
        try:
            hash_one = functools.partial(_hash_file, budget=self._held_bytes)
            for item in _ordered_map(pool, hash_one, pending, window):
                bar.update(1)
                submitted = False
                if item.error:
                    self._skip(str(item.found.path), item.error)
                elif self._reuse(item, by_hash, candidates):
                    self._maybe_commit()
                elif not self.embeds_images:
                    self._write_file(item, None)
                    self._maybe_commit()
                elif item.sha256 in in_flight:
                    twins.append(item)  # same content as a file on its way to the model
                else:
                    submitted = True
                    in_flight.add(item.sha256)
                    decoding.append(
                        pool.submit(_decode, item, prepare, self.max_megapixels, self._decode_size, self._held_bytes)
                    )
                    # Until the model is loaded, take each picture as it decodes: once one decodes the
                    # model loads, and every later picture is decoded at the size the model needs and
                    # preprocessed on the workers, not on this thread.
                    while decoding and prepare is None:
                        take(decoding.popleft().result())
                    while len(decoding) > window:
                        take(decoding.popleft().result())
                if not submitted:
                    self._held_bytes.release(item)  # not decoded from its bytes: they go now, not at the end
            while decoding:
                take(decoding.popleft().result())
            if batch:
                self._embed(batch)
            self._place_twins(twins, by_hash, candidates, failed)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)

    def _place_twins(
        self,
        twins: list[Pending],
        by_hash: dict[str, list[FileRow]],
        candidates: dict[int, FileRow],
        failed: dict[str, str],
    ) -> None:
        """Files that waited for a twin: copy its vector once it is in, or share its failure."""
        waiting = []
        for twin in twins:
            if twin.sha256 in failed:
                self._skip_changed(twin, failed[twin.sha256])
            elif twin.sha256 in self._new_hashes:
                self._reuse(twin, by_hash, candidates)
            else:
                waiting.append(twin)
        twins[:] = waiting

    def _skip_changed(self, item: Pending, reason: str) -> None:
        """A file whose new content cannot be decoded: skipped, and if the index held its old content,
        that leaves too (its vector no longer describes the file; a fresh index would not hold it)."""
        self._skip(str(item.found.path), reason)
        if item.row is not None:
            self._remove_file(item.row.id)
            self.report.removed += 1
            self._maybe_commit()

    def _reuse(self, item: Pending, by_hash: dict[str, list[FileRow]], candidates: dict[int, FileRow]) -> bool:
        """Handle a file whose content is already known; True when nothing needs embedding."""
        found, row = item.found, item.row
        if row is not None and row.sha256 == item.sha256:
            self._begin()
            self.store.update_file(row.id, size=found.size, mtime_ns=found.mtime_ns)
            self.report.unchanged += 1
            if found.sidecar_sig != row.sidecar_sig:
                self._sync_sidecar(row.id, found, row.sidecar_sig)
            return True
        moved = by_hash.get(item.sha256)
        if moved:
            old = moved.pop()
            candidates.pop(old.id, None)
            self._begin()
            if row is not None:  # the renamed file replaced another one at its new place
                self._remove_file(row.id)
            self.store.update_file(
                old.id, root_id=item.root_id, relpath=found.relpath, size=found.size, mtime_ns=found.mtime_ns
            )
            self.report.renamed += 1
            if found.sidecar_sig != old.sidecar_sig:
                self._sync_sidecar(old.id, found, old.sidecar_sig)
            return True
        if not self.embeds_images:
            return False
        source_id = self._new_hashes.get(item.sha256)
        if source_id is None:
            same = self.store.file_by_hash(item.sha256)
            source_id = self.store.image_item_of(same.id) if same else None
        vector = self.store.vector(source_id) if source_id is not None else None
        if vector is None:
            return False
        self._write_file(item, vector, reused=True)
        return True

    def _embed(self, batch: list[Pending]) -> None:
        vectors = self.index.encoder.embed_prepared_images([item.prepared for item in batch])
        faults.point("embed")
        for item, vector in zip(batch, vectors):
            item.prepared = None
            self._write_file(item, vector)
        self.report.embedded_images += len(batch)
        self._commit()

    def _write_file(self, item: Pending, vector: np.ndarray | None, reused: bool = False) -> None:
        """Record a new or changed file with its image vector (None for text-only models)."""
        found, row = item.found, item.row
        chunk = self._begin()
        if row is None:
            file_id = self.store.add_file(item.root_id, found.relpath, found.size, found.mtime_ns, item.sha256)
            if reused:
                self.report.reused += 1
            else:
                self.report.added += 1
        else:
            file_id = row.id
            old_image = self.store.image_item_of(file_id)
            if old_image is not None:
                self._remove_items([old_image])
            self.store.update_file(file_id, size=found.size, mtime_ns=found.mtime_ns, sha256=item.sha256)
            self.report.updated += 1
        if vector is not None:
            item_id = self.store.add_item("image", file_id, vector, chunk.gen)
            chunk.add_ids.append(item_id)
            chunk.add_vectors.append(np.asarray(vector, dtype=np.float32))
            if item.sha256 not in self._new_hashes:
                self._new_hashes[item.sha256] = item_id
                chunk.new_hashes.append(item.sha256)
        if row is None or found.sidecar_sig != row.sidecar_sig:
            self._sync_sidecar(file_id, found, row.sidecar_sig if row is not None else None)

    # --- captions ------------------------------------------------------------------------------

    def _sync_sidecar(self, file_id: int, found: FoundFile, recorded: str | None) -> None:
        """Bring a file's sidecar captions up to date. The sidecar is recorded as read in the same
        chunk as its captions (they are flushed before every commit). A refused sidecar is not recorded
        as read: every crawl tries it again and reports it again, as it does a picture it skips."""
        captions: list[str] = []
        sig = found.sidecar_sig
        if found.sidecar is not None:
            captions, reason = read_sidecar(found.sidecar)
            if reason:
                self._skip(str(found.sidecar), reason)
                sig = None
        self._sync_captions(file_id, captions, SIDECAR)
        if sig != recorded:
            self._begin()
            self.store.set_sidecar_sig(file_id, sig)

    def _sync_captions(self, file_id: int, wanted: list[str], source: str) -> None:
        existing = self.store.captions_of(file_id, source)
        have = [text for _, text, _ in existing]
        if have == wanted:
            return
        stale = [item_id for item_id, text, _ in existing if text not in wanted]
        if stale:
            self._remove_items(stale)
            self.report.captions_removed += len(stale)
        for position, text in enumerate(wanted):
            if text not in have:
                self._captions.append(CaptionJob(file_id, text, source, position))

    def _apply_caption_sources(self, sources: list[tuple[str, dict[Path, list[str]]]]) -> None:
        for source, captions in sources:
            matched: set[int] = set()
            for image, lines in captions.items():
                file_id = self._file_id_for(image)
                if file_id is None:
                    self._skip(str(image), f"named in captions file {source} but not in the index")
                    continue
                matched.add(file_id)
                self._begin()
                self._sync_captions(file_id, lines, source)
                self._maybe_commit()
            for file_id in self.store.files_with_captions_from(source) - matched:
                self._begin()
                self._sync_captions(file_id, [], source)
            self._maybe_commit()

    def _file_id_for(self, image: Path) -> int | None:
        for root in self.store.roots():
            location = self.roots.location(root)
            for base in {location, self.index.root_path(root)}:
                if is_within(image, base):
                    row = self.store.file_at(root.id, relative_posix(image, base))
                    if row is not None:
                        return row.id
        return None

    def _flush_captions(self) -> None:
        """Embed queued captions (reusing vectors of texts already known) and add their items."""
        jobs, self._captions = self._captions, []
        if not jobs:
            return
        missing: list[str] = []
        for job in jobs:
            digest = text_hash(job.text)
            if digest in self._text_vectors:
                continue
            stored = self.store.vector_for_text(digest)
            if stored is not None:
                self._text_vectors[digest] = stored
            elif job.text not in missing:
                missing.append(job.text)
        if missing:
            vectors = self.index.encoder.embed_texts(missing)
            self.report.embedded_captions += len(missing)
            for text, vector in zip(missing, vectors):
                self._text_vectors[text_hash(text)] = vector
        chunk = self._begin()
        for job in jobs:
            digest = text_hash(job.text)
            vector = self._text_vectors[digest]
            item_id = self.store.add_item(
                "caption", job.file_id, vector, chunk.gen,
                text=job.text, source=job.source, position=job.position, text_hash=digest,
            )
            chunk.add_ids.append(item_id)
            chunk.add_vectors.append(np.asarray(vector, dtype=np.float32))
            self.report.captions_added += 1
        if len(self._text_vectors) > 50_000:
            self._text_vectors.clear()

    # --- deletions -----------------------------------------------------------------------------

    def _delete(self, candidates: dict[int, FileRow]) -> None:
        for row in candidates.values():
            self._remove_file(row.id)
            self.report.removed += 1
            self._maybe_commit()

    def _remove_file(self, file_id: int) -> None:
        chunk = self._begin()
        chunk.remove_ids.extend(self.store.delete_file(file_id, chunk.gen))

    def _remove_items(self, item_ids: list[int]) -> None:
        chunk = self._begin()
        self.store.delete_items(item_ids, chunk.gen)
        chunk.remove_ids.extend(item_ids)

    # --- chunks --------------------------------------------------------------------------------

    def _begin(self) -> _Chunk:
        if self._chunk is None:
            self.store.begin()
            counters = {name: getattr(self.report, name) for name in _COUNTERS}
            self._chunk = _Chunk(self.store.bump_generation(), counters)
        return self._chunk

    def _maybe_commit(self) -> None:
        chunk = self._chunk
        if chunk is None:
            return
        size = len(chunk.add_ids) + len(chunk.remove_ids) + len(self._captions)
        if size >= COMMIT_EVERY_ITEMS or time.monotonic() - self._last_commit > COMMIT_EVERY_SECONDS:
            self._commit()

    def _commit(self) -> None:
        """Commit the database, then mirror the same changes into the in-memory FAISS index."""
        if self._captions:
            self._flush_captions()
        chunk, self._chunk = self._chunk, None
        if chunk is None:
            return
        faults.point("commit")
        self.store.commit()
        if _log.isEnabledFor(logging.INFO):  # the fault-injection tests read what was committed here
            _log.info("committed generation %d: %d items", chunk.gen, self.store.counts()["items"])
        faults.point("committed")
        vectors = self.index.vectors  # never held here: a rebuild at the end must be able to free it
        vectors.remove(np.array(chunk.remove_ids, dtype=np.int64))
        if chunk.add_ids:
            vectors.add(np.array(chunk.add_ids, dtype=np.int64), np.stack(chunk.add_vectors))
        self._last_commit = time.monotonic()

    def _rollback(self) -> None:
        """Drop the open chunk: the database, the counters and the caches go back to the last commit."""
        chunk, self._chunk = self._chunk, None
        self._captions = []
        try:
            self.store.rollback()
        except sqlite3.Error:
            pass
        if chunk is None:
            return
        for name, value in chunk.counters.items():
            setattr(self.report, name, value)
        for digest in chunk.new_hashes:
            self._new_hashes.pop(digest, None)

    def _skip(self, path: str, reason: str) -> None:
        self.report.skipped.append(SkippedFile(path, reason))


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


def _hash_file(item: Pending, budget: HeldBytes | None = None) -> Pending:
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


def decode_size(encoder: Any) -> int | None:
    """The smallest side a picture must keep when decoded for this encoder (None: decode at full size).

    Three times the model's input: reduced JPEG decoding then leaves the model's own resize enough
    pixels to filter, so the vectors match full decoding (at twice, a fine-textured test picture fell to
    cosine 0.998; tests/test_inference.py and scripts/bench_indexing.py measure it).
    """
    size = getattr(encoder, "input_size", None)
    return DECODE_OVERSAMPLE * int(size) if size else None


def _decode(
    item: Pending,
    prepare: Callable[[Any], Any] | None,
    max_megapixels: float,
    min_size: int | None = None,
    budget: "HeldBytes | None" = None,
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
        _prepare(item, prepare)
    return item


def _changed_since_hashed(item: Pending) -> bool:
    try:
        info = os.stat(item.found.path)
    except OSError:
        return True
    return (info.st_size, info.st_mtime_ns) != (item.found.size, item.found.mtime_ns)


def _prepare(item: Pending, prepare: Callable[[Any], Any]) -> None:
    try:
        item.prepared = prepare(item.prepared)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:  # a preprocess failure on one odd image
        item.prepared = None
        item.error = f"cannot prepare image ({type(exc).__name__}: {exc})"
    item.raw = False


def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int
) -> Iterator[Any]:
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


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", dynamic_ncols=True, leave=False, disable=not enabled)
