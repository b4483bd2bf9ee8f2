"""Crawling ⇒ indexing: bring an index in line with folders on disk, embedding only what changed.

Per file: same size and mtime → unchanged (nothing read). Otherwise the content is hashed: same hash →
only touched; the hash of a file that disappeared in this crawl → a rename (the item keeps its id and
vector); the hash of a file already indexed → a duplicate (its vector is copied); else the picture is
decoded (on worker threads, ahead of the model) and embedded. Work is committed in chunks, so an
interrupted crawl keeps what it finished and the next run picks up from there.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .crawl import FoundFile, WalkResult, file_sha256, read_captions_file, read_sidecar, text_hash, walk
from .encoders import IMAGE
from .errors import ImageError, VecsearchError
from .images import DEFAULT_MAX_MEGAPIXELS, is_image_path, load_image
from .results import CrawlReport, SkippedFile
from .store import FileRow, RootRow

if TYPE_CHECKING:
    from .index import Index

SIDECAR = "sidecar"
COMMIT_EVERY_ITEMS = 1000
COMMIT_EVERY_SECONDS = 30.0


class IndexingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a crawl, after the finished work was committed; carries the partial report."""

    def __init__(self, report: CrawlReport) -> None:
        super().__init__("indexing interrupted")
        self.report = report


@dataclass
class Scope:
    """One part of one root to crawl: the whole root, a subfolder, or single files."""

    root: RootRow
    folder: Path
    starts: list[Path]
    prefixes: list[str]
    exclude: list[str]
    include_hidden: bool


@dataclass
class Pending:
    """A file whose content changed or is new, after hashing (and decoding when needed)."""

    root_id: int
    found: FoundFile
    row: FileRow | None
    sha256: str = ""
    prepared: Any = None
    error: str | None = None


@dataclass
class CaptionJob:
    file_id: int
    text: str
    source: str
    position: int


@dataclass
class _Staged:
    gen: int | None = None
    add_ids: list[int] = field(default_factory=list)
    add_vectors: list[np.ndarray] = field(default_factory=list)
    remove_ids: list[int] = field(default_factory=list)
    count: int = 0


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
        self.vectors = index.vectors
        self.progress = progress
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.max_megapixels = max_megapixels
        self.report = CrawlReport()
        self.embeds_images = IMAGE in index.modalities
        self._staged = _Staged()
        self._last_commit = time.monotonic()
        self._captions: list[CaptionJob] = []
        self._new_hashes: dict[str, int] = {}
        self._text_vectors: dict[str, np.ndarray] = {}

    # --- the run -------------------------------------------------------------------------------

    def run(
        self, paths: list[Path], captions_files: list[Path], exclude: list[str], include_hidden: bool
    ) -> CrawlReport:
        started = time.monotonic()
        caption_sources = [(str(p.expanduser().resolve()), read_captions_file(p.expanduser())) for p in captions_files]
        try:
            scopes = self._scopes(paths, exclude, include_hidden)
            walks = [self._walk(scope) for scope in scopes]
            candidates, protected = self._plan_deletions(scopes, walks)
            pending = self._classify(scopes, walks, candidates)
            self._process(pending, candidates)
            self._apply_caption_sources(caption_sources)
            self._flush_captions()
            self._delete(candidates, protected)
            self._commit()
        except KeyboardInterrupt:
            self._commit()
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
        return self.report

    def _save(self) -> None:
        if self.index.needs_saving():
            self.index.save_vectors()

    # --- roots and scopes ----------------------------------------------------------------------

    def _scopes(self, paths: list[Path], exclude: list[str], include_hidden: bool) -> list[Scope]:
        roots = self.store.roots()
        if not paths:
            if not roots:
                raise VecsearchError(f"index {self.index.name} has no folders yet: give the folders to crawl")
            scopes = []
            for root in roots:
                folder = self.index.root_path(root)
                if not folder.is_dir():
                    self._skip(str(folder), "folder not found (a disk not mounted?); its items are kept")
                    continue
                scopes.append(self._scope_for_root(root, folder))
            return scopes
        targets = []
        for raw in paths:
            path = Path(os.path.abspath(raw.expanduser()))
            if path.exists():
                path = path.resolve()
            if not path.exists():
                raise VecsearchError(f"path not found: {raw}")
            if path.is_file() and not is_image_path(path):
                raise VecsearchError(f"not an image file: {raw} (crawl its folder, or give images)")
            if not path.is_dir() and not path.is_file():
                raise VecsearchError(f"not a folder or file: {raw}")
            targets.append(path)
        by_root: dict[int, Scope] = {}
        with self.store.transaction():
            for path in targets:
                root, folder = self._root_for(path, exclude, include_hidden)
                scope = by_root.get(root.id)
                if scope is None:
                    scope = by_root[root.id] = Scope(
                        root, folder, [], [], list(root.options.get("exclude", [])),
                        bool(root.options.get("include_hidden", False)),
                    )
                scope.root = root
                scope.exclude = list(root.options.get("exclude", []))
                scope.include_hidden = bool(root.options.get("include_hidden", False))
                scope.starts.append(path)
                scope.prefixes.append(_relative(path, folder))
        return list(by_root.values())

    def _scope_for_root(self, root: RootRow, folder: Path) -> Scope:
        options = root.options
        if options.get("files_only"):
            files = self.store.files_under(root.id)
            starts = [folder / rel for rel in files]
            prefixes = list(files)
        else:
            starts, prefixes = [folder], [""]
        return Scope(root, folder, starts, prefixes, list(options.get("exclude", [])),
                     bool(options.get("include_hidden", False)))

    def _root_for(self, path: Path, exclude: list[str], include_hidden: bool) -> tuple[RootRow, Path]:
        """The root that contains `path`, creating it (and folding roots inside it into it) if needed."""
        folder = path if path.is_dir() else path.parent
        files_only = not path.is_dir()
        for root in self.store.roots():
            location = self.index.root_path(root).resolve() if self.index.root_path(root).exists() else Path(root.path)
            if _is_within(path.resolve(), location):
                options = _merge_options(root.options, exclude, include_hidden)
                if path.is_dir() and _relative(path.resolve(), location) == "":
                    options["files_only"] = False
                self._record_root(root.id, location, options)
                return self._root(root.id), location
        root_id = self.store.add_root(
            str(folder.resolve()), os.path.relpath(folder.resolve(), self.index.path.resolve()),
            _merge_options({"files_only": files_only}, exclude, include_hidden),
        )
        for root in self.store.roots():
            if root.id == root_id:
                continue
            location = self.index.root_path(root)
            if location.exists() and _is_within(location.resolve(), folder.resolve()):
                self.store.merge_root(root.id, root_id, _relative(location.resolve(), folder.resolve()))
                merged = _merge_options(self._root(root_id).options, root.options.get("exclude", []),
                                        bool(root.options.get("include_hidden", False)))
                merged["files_only"] = files_only
                self._record_root(root_id, folder.resolve(), merged)
        return self._root(root_id), folder.resolve()

    def _record_root(self, root_id: int, location: Path, options: dict[str, Any]) -> None:
        self.store.update_root(
            root_id, str(location), os.path.relpath(location, self.index.path.resolve()), options
        )

    def _root(self, root_id: int) -> RootRow:
        return next(r for r in self.store.roots() if r.id == root_id)

    # --- walking and planning ------------------------------------------------------------------

    def _walk(self, scope: Scope) -> WalkResult:
        merged = WalkResult()
        seen: set[str] = set()
        for start in scope.starts:
            if not start.exists():
                continue
            result = walk(scope.folder, start, scope.exclude, scope.include_hidden)
            for found in result.files:
                if found.relpath not in seen:
                    seen.add(found.relpath)
                    merged.files.append(found)
            merged.skipped.extend(result.skipped)
        for skip in merged.skipped:
            self._skip(skip.path, skip.reason)
        return merged

    def _plan_deletions(
        self, scopes: list[Scope], walks: list[WalkResult]
    ) -> tuple[dict[int, FileRow], list[Path]]:
        """Indexed files in the crawled scopes, to be removed unless seen again; and folders that
        could not be listed, whose files are kept rather than dropped."""
        candidates: dict[int, FileRow] = {}
        protected: list[Path] = []
        for scope, walked in zip(scopes, walks):
            for prefix in scope.prefixes:
                for row in self.store.files_under(scope.root.id, prefix).values():
                    candidates[row.id] = row
            protected.extend(Path(s.path) for s in walked.skipped if s.reason.startswith("cannot list folder"))
        return candidates, protected

    def _classify(
        self, scopes: list[Scope], walks: list[WalkResult], candidates: dict[int, FileRow]
    ) -> list[Pending]:
        pending: list[Pending] = []
        for scope, walked in zip(scopes, walks):
            existing = self.store.files_under(scope.root.id)
            for found in walked.files:
                row = existing.get(found.relpath)
                if row is not None:
                    candidates.pop(row.id, None)
                if row is not None and row.size == found.size and row.mtime_ns == found.mtime_ns:
                    self.report.unchanged += 1
                    if found.sidecar_sig != row.sidecar_sig:
                        self._sync_sidecar(row.id, found)
                    continue
                pending.append(Pending(scope.root.id, found, row))
        return pending

    # --- hashing, decoding and embedding -------------------------------------------------------

    def _process(self, pending: list[Pending], candidates: dict[int, FileRow]) -> None:
        if not pending:
            return
        known = {row[0] for row in self.store.conn.execute("SELECT sha256 FROM files")}
        decode = self.embeds_images
        model_lock = threading.Lock()

        def prepare(picture: Any) -> Any:
            # The model loads on first need, so a crawl that only meets broken or known files never loads it.
            with model_lock:
                encoder = self.index.encoder
            return encoder.prepare_image(picture)

        def work(item: Pending) -> Pending:
            try:
                item.sha256, data = file_sha256(item.found.path)
            except OSError as exc:
                item.error = f"cannot read file ({exc.strerror or exc})"
                return item
            if not decode or item.sha256 in known:
                return item
            try:
                picture = load_image(data if data is not None else item.found.path, self.max_megapixels)
                item.prepared = prepare(picture)
            except ImageError as exc:
                item.error = str(exc)
            except Exception as exc:  # a preprocess failure on one odd image must not stop the crawl
                item.error = f"cannot prepare image ({type(exc).__name__}: {exc})"
            return item

        by_hash: dict[str, list[FileRow]] = {}
        for row in candidates.values():
            by_hash.setdefault(row.sha256, []).append(row)
        batch: list[Pending] = []
        twins: list[Pending] = []
        batch_size = self.index.batch_size if decode else 1
        bar = _progress(len(pending), "indexing", self.progress)
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vecsearch-decode") as pool:
                for item in _ordered_map(pool, work, pending, window=max(4 * batch_size, 8 * self.workers)):
                    bar.update(1)
                    if item.error:
                        self._skip(str(item.found.path), item.error)
                        continue
                    if self._reuse(item, by_hash, candidates):
                        continue
                    if not decode:
                        self._write_file(item, None)
                        continue
                    if item.prepared is None:  # its hash was known, but no vector of it could be reused
                        item.prepared = _late_prepare(item, prepare, self.max_megapixels)
                        if item.prepared is None:
                            self._skip(str(item.found.path), "cannot decode image")
                            continue
                    if any(other.sha256 == item.sha256 for other in batch):
                        twins.append(item)  # same content as one in this batch: copy its vector after
                        continue
                    batch.append(item)
                    if len(batch) >= batch_size:
                        self._embed(batch)
                        batch = self._place_twins(twins, by_hash, candidates)
                if batch:
                    self._embed(batch)
                    self._place_twins(twins, by_hash, candidates)
        finally:
            bar.close()

    def _place_twins(
        self, twins: list[Pending], by_hash: dict[str, list[FileRow]], candidates: dict[int, FileRow]
    ) -> list[Pending]:
        """Write the files that waited for a twin in the last batch; returns a fresh, empty batch."""
        for twin in twins:
            if not self._reuse(twin, by_hash, candidates):
                self._embed([twin])
        twins.clear()
        return []

    def _reuse(self, item: Pending, by_hash: dict[str, list[FileRow]], candidates: dict[int, FileRow]) -> bool:
        """Handle files whose content is already known; True when nothing needs embedding."""
        found, row = item.found, item.row
        if row is not None and row.sha256 == item.sha256:
            self._stage_write(
                lambda: self.store.update_file(row.id, size=found.size, mtime_ns=found.mtime_ns)
            )
            self.report.unchanged += 1
            if found.sidecar_sig != row.sidecar_sig:
                self._sync_sidecar(row.id, found)
            return True
        moved = by_hash.get(item.sha256)
        if moved:
            old = moved.pop()
            candidates.pop(old.id, None)
            if row is not None:  # the renamed file replaced another one at its new place
                self._remove_file(row.id)
            self._stage_write(
                lambda: self.store.update_file(
                    old.id, root_id=item.root_id, relpath=found.relpath, size=found.size, mtime_ns=found.mtime_ns
                )
            )
            self.report.renamed += 1
            if found.sidecar_sig != old.sidecar_sig:
                self._sync_sidecar(old.id, found)
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
        self.report.embedded_images += len(batch)
        for item, vector in zip(batch, vectors):
            item.prepared = None
            self._write_file(item, vector)
        self._maybe_commit()

    def _write_file(self, item: Pending, vector: np.ndarray | None, reused: bool = False) -> None:
        """Record a new or changed file with its image vector (None for text-only models)."""
        found, row = item.found, item.row
        self._begin()
        gen = self._staged.gen
        assert gen is not None
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
            item_id = self.store.add_item("image", file_id, vector, gen)
            self._staged.add_ids.append(item_id)
            self._staged.add_vectors.append(np.asarray(vector, dtype=np.float32))
            self._staged.count += 1
            self._new_hashes.setdefault(item.sha256, item_id)
        if row is None or found.sidecar_sig != row.sidecar_sig:
            self._sync_sidecar(file_id, found)

    # --- captions ------------------------------------------------------------------------------

    def _sync_sidecar(self, file_id: int, found: FoundFile) -> None:
        captions: list[str] = []
        if found.sidecar is not None:
            captions, reason = read_sidecar(found.sidecar)
            if reason:
                self._skip(str(found.sidecar), reason)
        self._sync_captions(file_id, captions, SIDECAR)
        self._stage_write(lambda: self.store.set_sidecar_sig(file_id, found.sidecar_sig))

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
        if len(self._captions) >= 256:
            self._flush_captions()

    def _apply_caption_sources(self, sources: list[tuple[str, dict[Path, list[str]]]]) -> None:
        for source, captions in sources:
            matched: set[int] = set()
            for image, lines in captions.items():
                file_id = self._file_id_for(image)
                if file_id is None:
                    self._skip(str(image), f"named in captions file {source} but not in the index")
                    continue
                matched.add(file_id)
                self._sync_captions(file_id, lines, source)
            stale_files = {
                int(r[0])
                for r in self.store.conn.execute(
                    "SELECT DISTINCT file_id FROM items WHERE kind = 'caption' AND source = ?", (source,)
                )
            }
            for file_id in stale_files - matched:
                self._sync_captions(file_id, [], source)

    def _file_id_for(self, image: Path) -> int | None:
        for root in self.store.roots():
            location = self.index.root_path(root)
            for base in {location, location.resolve()}:
                if _is_within(image, base):
                    row = self.store.files_under(root.id, _relative(image, base)).get(_relative(image, base))
                    if row is not None:
                        return row.id
        return None

    def _flush_captions(self) -> None:
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
        self._begin()
        gen = self._staged.gen
        assert gen is not None
        for job in jobs:
            digest = text_hash(job.text)
            vector = self._text_vectors[digest]
            item_id = self.store.add_item(
                "caption", job.file_id, vector, gen,
                text=job.text, source=job.source, position=job.position, text_hash=digest,
            )
            self._staged.add_ids.append(item_id)
            self._staged.add_vectors.append(np.asarray(vector, dtype=np.float32))
            self._staged.count += 1
            self.report.captions_added += 1
        if len(self._text_vectors) > 50_000:
            self._text_vectors.clear()
        self._maybe_commit()

    # --- deletions -----------------------------------------------------------------------------

    def _delete(self, candidates: dict[int, FileRow], protected: list[Path]) -> None:
        roots = {root.id: self.index.root_path(root) for root in self.store.roots()}
        for row in candidates.values():
            path = roots[row.root_id] / row.relpath
            if any(_is_within(path, folder) for folder in protected):
                continue
            self._remove_file(row.id)
            self.report.removed += 1
        self._maybe_commit()

    def _remove_file(self, file_id: int) -> None:
        self._begin()
        ids = [int(r[0]) for r in self.store.conn.execute("SELECT id FROM items WHERE file_id = ?", (file_id,))]
        self._remove_items(ids)
        self.store.conn.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def _remove_items(self, item_ids: Sequence[int]) -> None:
        self._begin()
        assert self._staged.gen is not None
        self.store.delete_items(item_ids, self._staged.gen)
        self._staged.remove_ids.extend(item_ids)
        self._staged.count += len(item_ids)

    # --- transactions --------------------------------------------------------------------------

    def _begin(self) -> None:
        if self._staged.gen is None:
            self.store.begin()
            self._staged.gen = self.store.bump_generation()

    def _stage_write(self, write: Callable[[], None]) -> None:
        self._begin()
        write()

    def _maybe_commit(self) -> None:
        if self._staged.count >= COMMIT_EVERY_ITEMS or time.monotonic() - self._last_commit > COMMIT_EVERY_SECONDS:
            self._commit()

    def _commit(self) -> None:
        """Commit the database first, then mirror the same changes into the in-memory FAISS index."""
        staged = self._staged
        if staged.gen is None:
            return
        self.store.commit()
        self.vectors.remove(np.array(staged.remove_ids, dtype=np.int64))
        if staged.add_ids:
            self.vectors.add(np.array(staged.add_ids, dtype=np.int64), np.stack(staged.add_vectors))
        self._staged = _Staged()
        self._last_commit = time.monotonic()

    def _rollback(self) -> None:
        if self._staged.gen is not None:
            self.store.rollback()
            self._staged = _Staged()

    def _skip(self, path: str, reason: str) -> None:
        self.report.skipped.append(SkippedFile(path, reason))


def _late_prepare(item: Pending, prepare: Callable[[Any], Any], max_megapixels: float) -> Any:
    try:
        return prepare(load_image(item.found.path, max_megapixels))
    except (ImageError, OSError):
        return None


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


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", dynamic_ncols=True, leave=False)


def _merge_options(options: dict[str, Any], exclude: Sequence[str], include_hidden: bool) -> dict[str, Any]:
    merged = dict(options)
    patterns = list(merged.get("exclude", []))
    for pattern in exclude:
        if pattern not in patterns:
            patterns.append(pattern)
    merged["exclude"] = patterns
    merged["include_hidden"] = bool(merged.get("include_hidden", False) or include_hidden)
    return merged


def _relative(path: Path, base: Path) -> str:
    rel = path.relative_to(base)
    return rel.as_posix() if rel.parts else ""


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False
