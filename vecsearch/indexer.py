"""Crawling ⇒ indexing: bring an index in line with folders on disk, embedding only what changed.

Per file: same size and mtime → unchanged (nothing read). Otherwise the content is hashed on worker
threads: same hash → only touched; the hash of a file that disappeared in this crawl → a rename (the item
keeps its id and vector); the hash of a file already indexed → a duplicate (its vector is copied). Only
then is a picture decoded (on the workers, ahead of the model) and embedded.

Work is committed in chunks (after every model batch). A chunk is all or nothing: an interrupt rolls back
the open chunk and keeps the committed ones, and the next run picks up from there.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import faults
from .captions import CaptionSync
from .chunks import ChunkWriter
from .crawl import WalkResult, display_path, read_captions_source, walk
from .encoders import IMAGE
from .images import DEFAULT_MAX_MEGAPIXELS
from .model import IndexModel
from .pathutil import is_within, relative_posix
from .pipeline import (
    HELD_BYTES_LIMIT,
    HeldBytes,
    Pending,
    Prefill,
    decode,
    decode_size,
    hash_pending,
    hash_prefilled,
    ordered_map,
    prepare_item,
    progress_bar,
)
from .results import CrawlReport, SkippedFile
from .roots import RootPlanner, Scope
from .store import FileRow, Store
from .vector_file import VectorFile

log = logging.getLogger(__name__)
FIRST_BATCH = 8  # pictures in a crawl's first model call (SETTLE_BATCH: enough to check the modes on)
__all__ = ["CrawlSettings", "Crawler", "IndexingInterrupted", "Planned", "Prefill", "decode_size"]


# Scopes and what walking them found, when the caller walked them already (in parallel, elsewhere).
Planned = tuple[list[Scope], list[WalkResult]]


class IndexingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a crawl, after the finished work was committed; carries the partial report."""

    def __init__(self, report: CrawlReport) -> None:
        super().__init__("indexing interrupted")
        self.report = report


@dataclass(frozen=True)
class CrawlSettings:
    progress: bool = False
    workers: int | None = None  # threads that hash and decode; default up to 4
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS


class Crawler:
    """One crawl of an index: given the index's database, vector file, model and roots, never the Index."""

    def __init__(
        self,
        store: Store,
        vector_file: VectorFile,
        model: IndexModel,
        roots: RootPlanner,
        settings: CrawlSettings = CrawlSettings(),
        prefill: Prefill | None = None,
    ) -> None:
        self.store = store
        self.prefill = prefill
        self.vector_file = vector_file
        self.model = model
        self.roots = roots
        self.progress = settings.progress
        self.workers = max(1, settings.workers or min(4, os.cpu_count() or 1))
        self.max_megapixels = settings.max_megapixels
        self.report = CrawlReport()
        self.embeds_images = IMAGE in model.modalities
        self.writer = ChunkWriter(store, vector_file, self.report)
        self.captions = CaptionSync(
            store, self.writer, model, self.report, self._skip, prefill.text_vector if prefill else None
        )
        self._new_hashes: dict[str, int] = {}
        self._decode_size: int | None = None
        self._known: list[dict[str, FileRow]] = []
        self._held_bytes = HeldBytes(HELD_BYTES_LIMIT)

    # --- the run -------------------------------------------------------------------------------

    def run(
        self,
        paths: list[Path],
        captions_files: list[Path],
        exclude: list[str],
        include_hidden: bool,
        planned: Planned | None = None,
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
            self._crawl(paths, exclude, include_hidden, caption_sources, planned)
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
        inference = getattr(self.model.loaded, "inference", None)
        if inference is not None and (inference.checks or (inference.mode and self.report.embedded_images)):
            self.report.inference = inference.describe()
        return self.report

    def _crawl(
        self,
        paths: list[Path],
        exclude: list[str],
        include_hidden: bool,
        caption_sources: list[tuple[str, dict[Path, list[str]]]],
        planned: Planned | None = None,
    ) -> None:
        """The crawl itself; what it builds per file (walk, plan, pending list) dies when it returns,
        before the vector index is saved (and perhaps rebuilt), which is when memory peaks."""
        if planned is not None:
            scopes, walks = planned
            for walked in walks:
                for skip in walked.skipped:
                    self._skip(skip.path, skip.reason)
        else:
            scopes = self.plan(paths, exclude, include_hidden)
            walks = [self._walk(scope) for scope in scopes]
        candidates = self._plan_deletions(scopes, walks)
        pending = self._classify(scopes, walks, candidates)
        self._process(pending, candidates)
        self._delete(candidates)
        self._apply_caption_sources(caption_sources)
        self._commit()

    def plan(self, paths: list[Path], exclude: list[str], include_hidden: bool) -> list[Scope]:
        """The scopes to crawl: the roots the paths fall in (recorded now), or every folder root."""
        with self.store.transaction():
            self.roots.refresh_locations()
            if paths:
                return self.roots.scopes_for_paths(paths, exclude, include_hidden)
            return self.roots.scopes_for_all(self._skip)

    def _save(self) -> None:
        self._known, self._new_hashes = [], {}  # per-crawl caches: not needed now
        self.captions.forget_texts()
        if self.vector_file.needs_saving():
            note = self.vector_file.save()
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
        for scope, walked in zip(scopes, walks, strict=True):
            unlisted = [Path(s.path) for s in walked.skipped if s.reason.startswith("cannot list folder")]
            known: dict[str, FileRow] = {}
            for prefix in scope.prefixes:
                known.update(self.store.files_under(scope.root.id, prefix))
            for row in known.values():
                if not any(is_within(scope.folder / row.relpath, folder) for folder in unlisted):
                    candidates[row.id] = row
            self._known.append(known)  # the same rows, by path, for _classify: read once, held once
        return candidates

    def _classify(self, scopes: list[Scope], walks: list[WalkResult], candidates: dict[int, FileRow]) -> list[Pending]:
        pending: list[Pending] = []
        for number, (scope, walked) in enumerate(zip(scopes, walks, strict=True)):
            existing = self._known[number]
            for found in walked.files:
                row = existing.get(found.relpath)
                if row is None:  # a file outside the scope's prefixes (should not happen): ask the database
                    row = self.store.file_at(scope.root.id, found.relpath)
                if row is not None:
                    candidates.pop(row.id, None)
                if row is not None and row.size == found.size and row.mtime_ns == found.mtime_ns:
                    self.report.unchanged += 1
                    if self.captions.signature(found) != row.sidecar_sig:
                        self.captions.sync_sidecar(row.id, found, row.sidecar_sig)
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
        batch_size = self.model.batch_size
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
                    prepare = self.model.encoder.prepare_image
                    self._decode_size = decode_size(self.model.encoder)
                    start_loading = getattr(self.model.encoder, "start_loading", None)
                    if start_loading is not None:  # exported towers: sessions load while pictures decode
                        start_loading(images=True, crawl=True)
                prepare_item(item, prepare)
            if item.error:
                failed[item.sha256] = item.error
                self._skip_changed(item, item.error)
                return
            batch.append(item)
            # The first batch is small: a crawl shows progress (and settles its inference mode) sooner.
            if len(batch) >= (batch_size if self.report.embedded_images else min(batch_size, FIRST_BATCH)):
                self._embed(batch)
                batch = []
                self._place_twins(twins, by_hash, candidates, failed)

        bar = progress_bar(len(pending), "indexing", self.progress)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vecsearch-crawl")
        try:
            hash_one = functools.partial(hash_pending, budget=self._held_bytes)
            if self.prefill is not None:
                hash_one = functools.partial(hash_prefilled, self.prefill, hash_one)
            for item in ordered_map(pool, hash_one, pending, window):
                bar.update(1)
                submitted = False
                if item.error:
                    self._skip(str(item.found.path), item.error)
                elif self._reuse(item, by_hash, candidates):
                    self._maybe_commit()
                elif not self.embeds_images:
                    self._write_file(item, None)
                    self._maybe_commit()
                elif item.known_error is not None:  # it did not decode where the shard was made
                    failed[item.sha256] = item.known_error
                    self._skip_changed(item, item.known_error)
                elif (vector := self._prefilled_vector(item)) is not None:
                    self._write_file(item, vector)
                    self._maybe_commit()
                elif item.sha256 in in_flight:
                    twins.append(item)  # same content as a file on its way to the model
                else:
                    submitted = True
                    in_flight.add(item.sha256)
                    decoding.append(
                        pool.submit(decode, item, prepare, self.max_megapixels, self._decode_size, self._held_bytes)
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

    def _prefilled_vector(self, item: Pending) -> np.ndarray | None:
        return self.prefill.image_vector(item.sha256) if self.prefill is not None else None

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
            self.writer.begin()
            self.store.update_file(row.id, size=found.size, mtime_ns=found.mtime_ns)
            self.report.unchanged += 1
            if self.captions.signature(found) != row.sidecar_sig:
                self.captions.sync_sidecar(row.id, found, row.sidecar_sig)
            return True
        moved = by_hash.get(item.sha256)
        if moved:
            old = moved.pop()
            candidates.pop(old.id, None)
            self.writer.begin()
            if row is not None:  # the renamed file replaced another one at its new place
                self._remove_file(row.id)
            self.store.update_file(
                old.id, root_id=item.root_id, relpath=found.relpath, size=found.size, mtime_ns=found.mtime_ns
            )
            self.report.renamed += 1
            if self.captions.signature(found) != old.sidecar_sig:
                self.captions.sync_sidecar(old.id, found, old.sidecar_sig)
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
        vectors = self.model.encoder.embed_prepared_images([item.prepared for item in batch])
        if not self.report.embedded_images:  # benchmarks time a crawl's start-up by this line
            log.info("first %d pictures embedded", len(batch))
        faults.point("embed")
        for item, vector in zip(batch, vectors, strict=True):
            item.prepared = None
            self._write_file(item, vector)
        self.report.embedded_images += len(batch)
        self._commit()

    def _write_file(self, item: Pending, vector: np.ndarray | None, reused: bool = False) -> None:
        """Record a new or changed file with its image vector (None for text-only models)."""
        found, row = item.found, item.row
        chunk = self.writer.begin()
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
            self.writer.add(item_id, vector)
            if item.sha256 not in self._new_hashes:
                self._new_hashes[item.sha256] = item_id
                chunk.new_hashes.append(item.sha256)
        if row is None or self.captions.signature(found) != row.sidecar_sig:
            self.captions.sync_sidecar(file_id, found, row.sidecar_sig if row is not None else None)

    # --- captions ------------------------------------------------------------------------------

    def _apply_caption_sources(self, sources: list[tuple[str, dict[Path, list[str]]]]) -> None:
        for source, captions in sources:
            matched: set[int] = set()
            for image, lines in captions.items():
                file_id = self._file_id_for(image)
                if file_id is None:
                    self._skip(str(image), f"named in captions file {source} but not in the index")
                    continue
                matched.add(file_id)
                self.writer.begin()
                self.captions.sync(file_id, lines, source)
                self._maybe_commit()
            for file_id in self.store.files_with_captions_from(source) - matched:
                self.writer.begin()
                self.captions.sync(file_id, [], source)
            self._maybe_commit()

    def _file_id_for(self, image: Path) -> int | None:
        for root in self.store.roots():
            location = self.roots.location(root)
            for base in {location, self.roots.root_path(root)}:
                if is_within(image, base):
                    row = self.store.file_at(root.id, relative_posix(image, base))
                    if row is not None:
                        return row.id
        return None

    # --- deletions -----------------------------------------------------------------------------

    def _delete(self, candidates: dict[int, FileRow]) -> None:
        for row in candidates.values():
            self._remove_file(row.id)
            self.report.removed += 1
            self._maybe_commit()

    def _remove_file(self, file_id: int) -> None:
        self.writer.remove_file(file_id)

    def _remove_items(self, item_ids: list[int]) -> None:
        self.writer.remove_items(item_ids)

    # --- chunks --------------------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        if self.writer.due(len(self.captions.queued)):
            self._commit()

    def _commit(self) -> None:
        """Embed the captions queued for the open chunk, then commit it."""
        if self.captions.queued:
            self.captions.flush()
        self.writer.commit()

    def _rollback(self) -> None:
        """Drop the open chunk, and with it the captions queued for it and the contents it embedded."""
        self.captions.queued = []
        chunk = self.writer.rollback()
        for digest in chunk.new_hashes if chunk is not None else ():
            self._new_hashes.pop(digest, None)

    def _skip(self, path: str, reason: str) -> None:
        self.report.skipped.append(SkippedFile(path, reason))
