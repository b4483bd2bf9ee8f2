"""The Index: one directory holding a manifest, the SQLite items and the FAISS vectors, and the
searches over them (text → image, image → text, image → image, mixed and refined queries)."""

from __future__ import annotations

import fnmatch
import hashlib
import operator
import os
import shutil
import sqlite3
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import __version__, faults
from .classify import DEFAULT_TEMPLATES, classify
from .encoders import IMAGE, TEXT, Encoder, ModelSpec, load_encoder, resolve_spec
from .errors import (
    IndexCorruptError,
    IndexExistsError,
    ModelMismatchError,
    QueryError,
    UnsupportedModalityError,
    VecsearchError,
)
from .home import locate
from .images import DEFAULT_MAX_MEGAPIXELS
from .lock import WriterLock
from .manifest import (
    DATABASE,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    VECTORS,
    leftover_files,
    read_manifest,
    vector_file_name,
    write_manifest,
)
from .pathutil import is_safe_relpath, is_within
from .plan import (
    EXACT,
    EXACT_MAX_VECTORS,
    INDEX_TYPES,
    MIN_PQ_TRAINING,
    TUNE_K,
    TUNE_QUERIES,
    BudgetError,
    Plan,
    Tuning,
    choose,
    exact_top_k,
    outgrown,
    training_sample,
    tune,
)
from .query import IMAGE as IMAGE_TERM
from .query import ITEM, URL, Query, Term, combine, fetch_url, parse_term
from .query import TEXT as TEXT_TERM
from .results import Caption, CrawlReport, Hit, Item, LabelScore
from .store import RootRow, Store
from .vectors import VectorIndex

KINDS = ("image", "caption", "any")
# Stored vectors are scanned in chunks this size when an index is tuned: ~15 MB of 384-d vectors at a
# time, which keeps the end-of-crawl peak flat however large the collection.
TUNE_CHUNK = 10_000
MAX_K = 10_000
# An approximate index answers a narrow filter (a folder, a glob) by an exact scan of the allowed items'
# stored vectors up to this many: cheaper than probing lists that hold few of them, and exact.
EXACT_FILTER_MAX = 20_000
# A kind filter (images or captions) whose kind is at least this share of the items is applied to the
# results rather than given to FAISS as a list of every allowed id.
POST_FILTER_SHARE = 0.2
# Query terms whose vectors an open index remembers (a few hundred KB at most).
TERM_CACHE_SIZE = 256


class Index:
    """A searchable collection of images and captions.

    Open one with `Index.open(name_or_path)` or make one with `Index.create(path, model=...)`; the model
    is loaded only when something needs embedding, and the vectors only when something is searched.
    """

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        store: Store,
        encoder: Encoder | None = None,
        *,
        device: str | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
        inference: str = "auto",
    ) -> None:
        self.path = folder
        self._inference = inference
        self._manifest = manifest
        self.store = store
        self._encoder = encoder
        self._text_tower: Any = None  # the cached torch-free text tower; False once known to be absent
        self._vectors: VectorIndex | None = None
        self._device = device
        self._batch_size = batch_size
        self._cache_dir = cache_dir
        self._vectors_unsaved = False
        self._replan_forced = False
        # What `refresh` compares with to see whether a writer committed since: the database's generation,
        # the manifest file's identity and the database file's identity (a replaced index is a new file).
        self._seen = self._state_key()
        # Query terms embedded lately (text by its words, pictures by their content): refining a query
        # re-sends the same terms, and a server answers the same prompt again and again.
        self._term_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        if encoder is not None:
            self._check_model(encoder)

    # --- opening and creating ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        model: str | ModelSpec | None = None,
        pretrained: str | None = None,
        *,
        encoder: Encoder | None = None,
        device: str | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
        max_memory: int | None = None,
        index_type: str = "auto",
        inference: str = "auto",
    ) -> "Index":
        """Make a new, empty index for a model (an Encoder you pass, or one loaded by name).

        `index_type` (auto, exact, ivf-flat, ivf-sq8, ivf-pq) and `max_memory` (bytes, default half this
        machine's memory) decide the FAISS index as the collection grows; see `vecsearch.plan`.
        """
        folder = Path(path).expanduser()
        _check_index_settings(index_type, max_memory)
        _require_free(folder)  # before a model is loaded for nothing
        if encoder is None:
            encoder = load_encoder(
                model, pretrained, device=device, batch_size=batch_size, cache_dir=cache_dir, inference=inference
            )
        elif model is not None and resolve_spec(model, pretrained) != encoder.spec:
            raise ModelMismatchError(f"model {model} given together with a different encoder {encoder.spec}")
        created_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(folder / LOCK, str(folder))
        lock.acquire()  # another process creating the same index owns it: leave its files alone
        store: Store | None = None
        try:
            for leftover in _require_free(folder):  # again, now that no one else can be writing here
                leftover.unlink()  # a creation that died before its manifest: start it again
            store = Store.open(folder / DATABASE, create=True)
            vectors = VectorIndex.create(encoder.dim)
            vector_file = vector_file_name(0)
            now = _now()
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "vecsearch_version": __version__,
                "created": now,
                "updated": now,
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
                "counts": store.counts(),
                "roots": [],
            }
            with store.transaction():
                store.set_identity(_identity(manifest))
            manifest["faiss"]["sha256"] = vectors.save(folder / vector_file)
            manifest["faiss"]["bytes"] = (folder / vector_file).stat().st_size
            write_manifest(folder, manifest)
        except BaseException as exc:
            if store is not None:
                store.close()
            if not isinstance(exc, IndexExistsError):
                if created_folder:
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    for name in (MANIFEST, DATABASE, DATABASE + "-wal", DATABASE + "-shm", vector_file):
                        (folder / name).unlink(missing_ok=True)
            raise
        finally:
            lock.release()
        index = cls(
            folder, manifest, store, encoder, device=device, batch_size=batch_size, cache_dir=cache_dir,
            inference=inference,
        )
        index._vectors = vectors
        return index

    @classmethod
    def open(
        cls,
        ref: str | os.PathLike[str],
        *,
        home: str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        model: str | ModelSpec | None = None,
        pretrained: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
        inference: str = "auto",
    ) -> "Index":
        """Open an index by name (in the home folder) or path.

        Pass `model`/`encoder` only to insist on one: a model other than the index's own is refused.
        """
        folder = locate(ref, home)
        manifest = read_manifest(folder)
        if encoder is None and model is not None:
            wanted = resolve_spec(model, pretrained)
            recorded = ModelSpec.from_dict(manifest["model"])
            if wanted != recorded:
                if not (_names_local_files(wanted) or _names_local_files(recorded)):
                    # Two different published models: no need to download one to know they differ.
                    raise ModelMismatchError(
                        f"index {folder.name} was built with {recorded}, not {wanted}; leave out --model to "
                        "use the index's own model, or build a separate index for the other model"
                    )
                encoder = load_encoder(
                    wanted, device=device, batch_size=batch_size, cache_dir=cache_dir, inference=inference
                )
        store = Store.open(folder / DATABASE)
        try:
            return cls(
                folder, manifest, store, encoder, device=device, batch_size=batch_size, cache_dir=cache_dir,
                inference=inference,
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def refresh(self) -> bool:
        """Catch up with what writers committed since this index was opened or last refreshed.

        A long-lived reader (the server) calls it before each request; it costs one row read and two
        stats when nothing changed. The vectors are reloaded on the next search. Returns True when the
        index changed. An index replaced by one of another model is refused: its queries would need the
        other model.
        """
        state = self._state_key()
        if state == self._seen:
            return False
        if state[2] != self._seen[2]:  # the database file was replaced (the index deleted and made again)
            store = Store.open(self.path / DATABASE)
            self.store.close()
            self.store = store
        manifest = read_manifest(self.path)
        if manifest["model"] != self._manifest["model"] or manifest["dim"] != self._manifest["dim"]:
            raise ModelMismatchError(
                f"index {self.name} was rebuilt with {ModelSpec.from_dict(manifest['model'])} while it was "
                "open; open it again"
            )
        self._manifest = manifest
        self._vectors = None
        self._vectors_unsaved = False
        self._seen = self._state_key()
        return True

    def _state_key(self) -> tuple[int, tuple[int, int, int], tuple[int, int]]:
        def identity(path: Path) -> os.stat_result | None:
            try:
                return path.stat()
            except OSError:
                return None

        manifest, database = identity(self.path / MANIFEST), identity(self.path / DATABASE)
        return (
            self.store.generation,
            (manifest.st_ino, manifest.st_mtime_ns, manifest.st_size) if manifest else (0, 0, 0),
            (database.st_dev, database.st_ino) if database else (0, 0),
        )

    def __enter__(self) -> "Index":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- what the index is ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self._manifest["model"])

    @property
    def batch_size(self) -> int:
        return int(getattr(self._encoder, "batch_size", self._batch_size))

    @property
    def fingerprint(self) -> str:
        return str(self._manifest["model"]["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self._manifest["model"].get("modalities", [IMAGE, TEXT]))

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def roots(self) -> list[Path]:
        return [self.root_path(root) for root in self.store.roots()]

    def info(self) -> dict[str, Any]:
        """The manifest with live counts, roots and the size on disk."""
        data = self.manifest
        data["path"] = str(self.path)
        data["counts"] = self.counts()
        data["roots"] = [str(p) for p in self.roots()]
        data["generation"] = self.store.generation
        data["bytes"] = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return data

    # --- the model -----------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded on first use and checked against the recorded fingerprint."""
        if self._encoder is None:
            encoder = load_encoder(
                self.spec, device=self._device, batch_size=self._batch_size, cache_dir=self._cache_dir,
                inference=self._inference,
            )
            self._check_model(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_model(self, encoder: Encoder) -> None:
        if encoder.fingerprint == self.fingerprint and encoder.dim == self.dim:
            return
        if encoder.fingerprint == self.fingerprint:
            raise IndexCorruptError(
                f"index manifest {self.path / MANIFEST} says dimension {self.dim}, but its model makes "
                f"{encoder.dim}-dimensional vectors"
            )
        recorded = f"{self.spec} (fingerprint {self.fingerprint[:12]})"
        given = f"{encoder.spec} (fingerprint {encoder.fingerprint[:12]})"
        if encoder.spec == self.spec:
            raise ModelMismatchError(
                f"index {self.name} was built with {recorded}, but those weights now load as {given}; "
                "the checkpoint changed since the index was built: rebuild the index or restore the weights"
            )
        raise ModelMismatchError(
            f"index {self.name} was built with {recorded}, not {given}; leave out --model to use the "
            "index's own model, or build a separate index for the other model"
        )

    # --- vectors -------------------------------------------------------------------------------

    @property
    def vectors(self) -> VectorIndex:
        if self._vectors is None:
            for attempt in range(3):
                used = self._manifest["faiss"]
                try:
                    self._vectors = self._load_vectors()
                    break
                except IndexCorruptError:
                    # A writer may have saved a new generation while we read: start again from it.
                    self._manifest = read_manifest(self.path)
                    if attempt == 2 or self._manifest["faiss"] == used:
                        raise
        assert self._vectors is not None
        return self._vectors

    def _load_vectors(self, repair: bool = False) -> VectorIndex:
        """Load the FAISS file and bring it up to the database's generation.

        The file may lag the database after a crash between the two writes; the missing changes are
        replayed from the database. A damaged file is an error for readers and rebuilt by writers
        (`repair`). Readers memory-map large files, so one query does not read the whole index.
        """
        info = self._manifest["faiss"]
        path = self.path / info.get("file", VECTORS)
        kind = info.get("type", EXACT)

        def load(mmap: bool) -> VectorIndex:
            vectors = VectorIndex.load(
                path, kind, expected_sha256=info.get("sha256"), expected_bytes=info.get("bytes"), mmap=mmap
            )
            vectors.nprobe = int(info.get("nprobe") or 1)
            vectors.rerank = int(info.get("rerank") or 1)
            return vectors

        try:
            vectors = load(mmap=not repair)
        except IndexCorruptError as exc:
            if repair:
                return self._rebuild_vectors()
            raise self._damaged(str(exc)) from exc
        if vectors.dim != self.dim:
            raise IndexCorruptError(f"vector file has dimension {vectors.dim}, the manifest says {self.dim}")
        with self.store.snapshot():
            db_gen = self.store.generation
            file_gen = int(info.get("generation", -1))
            if file_gen > db_gen:
                if repair:
                    return self._rebuild_vectors()
                raise self._damaged(f"vector file is newer than the database at {self.path}")
            if file_gen < db_gen:
                if vectors.mapped:  # a mapped index is read-only: read it whole to replay into it
                    vectors = load(mmap=False)
                self._vectors_unsaved = True
                removed = self.store.removed_since(file_gen)
                ids, vecs = self.store.vectors_since(file_gen)
                vectors.remove(np.concatenate([removed, ids]))
                vectors.add(ids, vecs)
            expected = self.store.counts()["items"]
        if vectors.ntotal != expected:
            if repair:
                return self._rebuild_vectors()
            raise self._damaged(f"vector file holds {vectors.ntotal} vectors but the database {expected} items")
        return vectors

    def _damaged(self, detail: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"{detail}; the vectors are intact in the database: run `vecsearch index --index {self.path}` "
            "to rebuild the file"
        )

    def _rebuild_vectors(self) -> VectorIndex:
        """The FAISS index of the recorded type, built again from the vectors in the database."""
        self._vectors_unsaved = True
        info = self._manifest["faiss"]
        vectors = self._build(info.get("type", EXACT), int(info.get("nlist") or 0))
        vectors.nprobe = int(info.get("nprobe") or 1)
        vectors.rerank = int(info.get("rerank") or 1)
        return vectors

    def _build(self, factory: str, nlist: int = 0) -> VectorIndex:
        """A FAISS index of the given type over every stored vector, read in chunks (so a compressed index
        never needs all the raw vectors in memory at once), trained on a seeded sample."""
        all_ids = self.store.vector_ids()
        if factory != EXACT and len(all_ids) == 0:
            factory = EXACT  # nothing to train on: exact until there are vectors
        vectors = VectorIndex.create(self.dim, factory)
        if factory != EXACT:
            sample = all_ids[training_sample(len(all_ids), nlist or vectors.nlist)]
            vectors.train(self.store.vectors_of(sample)[1])
        for ids, vecs in self.store.iter_vectors():
            vectors.add(ids, vecs)
        return vectors

    def save_vectors(self) -> str | None:
        """Write the FAISS file and the manifest for the database's current generation.

        First re-plan the FAISS index for the collection's size and memory budget: rebuild it when it
        has outgrown its type, retune it when its size changed much. Returns a sentence saying what was
        done to the index type, or None.
        """
        generation = self.store.generation
        counts = self.store.counts()
        if self.vectors.ntotal != counts["items"]:  # e.g. interrupted between commit and mirror
            self._vectors = None
            self._vectors = self._rebuild_vectors()
        faiss_info, note = self._replan()
        vectors = self.vectors
        file_name = vector_file_name(generation)
        path = self.path / file_name
        manifest = dict(self._manifest)
        manifest["faiss"] = {
            **faiss_info,
            "file": file_name,
            "generation": generation,
            "ntotal": vectors.ntotal,
            "sha256": vectors.save(path),
            "bytes": path.stat().st_size,
        }
        manifest["counts"] = counts
        manifest["roots"] = [root.path for root in self.store.roots()]
        manifest["updated"] = _now()
        manifest["location"] = str(self.path.resolve())
        manifest["vecsearch_version"] = __version__
        previous = int(self._manifest["faiss"].get("generation") or 0)
        faults.point("faiss-renamed")
        write_manifest(self.path, manifest)
        faults.point("manifest-written")
        self._manifest = manifest
        self._remove_leftovers()
        self._vectors_unsaved = False
        self._replan_forced = False
        # The file holds every removal up to now. Keep one saved generation of history, so that the file
        # saved before this one can still be brought up to date; forget what is older.
        with self.store.transaction():
            self.store.conn.execute("DELETE FROM removed WHERE gen <= ?", (min(previous, generation),))
            self.store.set_identity(_identity(manifest))
        return note

    def _remove_leftovers(self) -> None:
        """Delete vector files the manifest no longer names (a reader that still maps one keeps its
        copy on POSIX; where the system refuses, the next save tries again)."""
        for path in leftover_files(self.path, keep=self._manifest["faiss"]["file"]):
            try:
                path.unlink()
            except OSError:
                pass

    def _replan(self) -> tuple[dict[str, Any], str | None]:
        """The manifest's FAISS settings for the collection as it is now, rebuilding what must be."""
        info = dict(self._manifest["faiss"])
        count = self.vectors.ntotal
        requested = info.get("requested") or "auto"
        current = info.get("family") or ("exact" if info.get("type", EXACT) == EXACT else "")
        warning = None
        try:
            plan = choose(count, self.dim, info.get("max_memory"), requested)
        except BudgetError as exc:
            # Nothing fits: keep the index type (still retrained when outgrown, and retuned), and say so.
            warning = f"warning: {exc}; keeping the {info.get('type')} index"
            plan = Plan(current or "exact", info.get("type", EXACT), int(info.get("nlist") or 0), 0, 0, warning)
        if plan.approximate and count < (MIN_PQ_TRAINING if plan.reranks else 1):
            plan = Plan(
                "exact", EXACT, 0, 0, 0, f"exact until there are {MIN_PQ_TRAINING:,} vectors to train {requested} on"
            )
        if current != "exact" and plan.family == "exact" and requested == "auto" and count > EXACT_MAX_VECTORS // 2:
            # Hysteresis: a collection that shrinks a little below the threshold keeps its index.
            plan = Plan(current, info["type"], int(info.get("nlist") or 0), 0, 0, "")
        rebuild = self._replan_forced and plan.factory != info.get("type")
        rebuild = rebuild or plan.family != current
        rebuild = rebuild or (plan.approximate and outgrown(int(info.get("trained_on") or 0), count))
        note = None
        if rebuild:
            self._vectors = None  # the old index goes before the new one is built: half the peak memory
            self._vectors = vectors = self._build(plan.factory, plan.nlist)
            self._vectors_unsaved = True
            info.update(
                type=vectors.kind, family=plan.family if vectors.approximate else "exact", nlist=vectors.nlist,
                trained_on=count if vectors.approximate else 0, reason=plan.reason,
            )
            for key in ("nprobe", "rerank", "recall@10", "tuned_on", "tuning_queries"):
                info.pop(key, None)
            note = f"vector index is now {vectors.kind}: {plan.reason}"
        vectors = self.vectors
        if not vectors.approximate:
            return info, note
        tuned_on = int(info.get("tuned_on") or 0)
        if rebuild or count >= 2 * tuned_on or 2 * count <= tuned_on:
            tuning = self._tune(vectors, reranks=info.get("family") == "ivf-pq")
            vectors.nprobe, vectors.rerank = tuning.nprobe, tuning.rerank
            info.update(
                {"nprobe": tuning.nprobe, "rerank": tuning.rerank, "recall@10": round(tuning.recall, 4),
                 "tuned_on": count, "tuning_queries": tuning.queries}
            )
            tuned = f"nprobe {tuning.nprobe}" + (f", re-rank depth {tuning.rerank}" if tuning.rerank > 1 else "")
            note = (note + "; " if note else f"vector index {vectors.kind} retuned: ") + (
                f"{tuned} gives recall@10 {tuning.recall:.3f} against exact search"
            )
        if warning and (note is None or warning not in note):
            note = f"{warning}; {note}" if note else warning
        return info, note

    def _tune(self, vectors: VectorIndex, reranks: bool) -> Tuning:
        """Search parameters measured against exact search, with the index's own vectors as queries."""
        query_ids, queries = self.store.vectors_of(self.store.sample_item_ids(TUNE_QUERIES))
        truth = exact_top_k(self.store.iter_vectors(TUNE_CHUNK), queries, query_ids, TUNE_K)

        def run(batch: np.ndarray, k: int, nprobe: int, depth: int) -> np.ndarray:
            found = np.full((len(batch), k), -1, dtype=np.int64)
            _, ids = vectors.search(batch, k * depth + 1, nprobe=nprobe)
            for row, (vector, own, candidates) in enumerate(zip(batch, query_ids, ids)):
                candidates = candidates[(candidates >= 0) & (candidates != own)]
                if depth > 1:
                    cand_ids, cand_vectors = self.store.vectors_of(candidates)
                    candidates = cand_ids[np.argsort(-(cand_vectors @ vector), kind="stable")] if len(cand_ids) else cand_ids
                found[row, : min(k, len(candidates))] = candidates[:k]
            return found

        return tune(run, queries, truth, vectors.nlist, reranks)

    def needs_saving(self) -> bool:
        """Does the vector file or manifest on disk lag what this writer holds?"""
        faiss_info = self._manifest["faiss"]
        return (
            self._vectors_unsaved
            or self._replan_forced
            or faiss_info.get("generation") != self.store.generation
            or (self._vectors is not None and faiss_info.get("ntotal") != self._vectors.ntotal)
            or self._manifest.get("location") != str(self.path.resolve())
            or self._manifest.get("roots") != [root.path for root in self.store.roots()]
        )

    # --- crawling ------------------------------------------------------------------------------

    def add(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
        *,
        captions: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
        exclude: Sequence[str] = (),
        include_hidden: bool = False,
        progress: bool = False,
        workers: int | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        max_memory: int | None = None,
        index_type: str | None = None,
    ) -> CrawlReport:
        """Crawl folders (or files) into the index; with no paths, re-crawl every recorded root.

        Only new or changed files are embedded; renamed or duplicated files reuse their vectors; files
        gone from disk leave the index. Bad files are skipped and listed in the report. A new
        `max_memory` or `index_type` is recorded and the FAISS index re-planned for it.
        """
        from .indexer import Crawler

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(captions, (str, os.PathLike)):
            captions = [captions]
        with WriterLock(self.path / LOCK, self.name):
            self.store.check_schema()
            self._manifest = read_manifest(self.path)
            self._remove_leftovers()  # of a writer that died; no other writer can be using them now
            self._vectors = self._load_vectors(repair=True)
            self._set_index_settings(max_memory, index_type)
            crawler = Crawler(
                self,
                progress=progress,
                workers=workers,
                max_megapixels=max_megapixels,
            )
            report = crawler.run(
                [Path(p) for p in paths], [Path(c) for c in captions], list(exclude), include_hidden
            )
        report.text_export = self._export_text_tower()
        return report

    def _export_text_tower(self) -> str | None:
        """With the full model loaded by this crawl, export its text tower (once per weights) so that
        later text queries need no torch; a crawl that loaded no model exports nothing. Returns a
        sentence saying what was exported (also logged), or None."""
        if self._encoder is None:
            return None
        from .encoders.text_export import export_text_tower

        return export_text_tower(self._encoder, self._cache_dir)

    def _set_index_settings(self, max_memory: int | None, index_type: str | None) -> None:
        _check_index_settings(index_type or "auto", max_memory)
        faiss_info = dict(self._manifest["faiss"])
        changed = False
        if max_memory is not None and faiss_info.get("max_memory") != max_memory:
            faiss_info["max_memory"], changed = max_memory, True
        if index_type is not None and (faiss_info.get("requested") or "auto") != index_type:
            faiss_info["requested"], changed = index_type, True
        if changed:
            self._manifest = {**self._manifest, "faiss": faiss_info}
            self._replan_forced = True

    def root_path(self, root: RootRow) -> Path:
        """Where a crawl root is now (see `locate_root`)."""
        return locate_root(self.path, self._manifest.get("location"), root)

    # --- searching -----------------------------------------------------------------------------

    def search(
        self,
        query: str | Sequence[str] | Query,
        k: int = 10,
        *,
        kind: str | None = None,
        path: str | None = None,
        under: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        within: float | None = None,
        like: Sequence[int | str] = (),
        unlike: Sequence[int | str] = (),
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[Hit]:
        """Nearest items to a query, best first.

        `query` is a prompt string, a list of terms (`["cat", "+hat", "-dog", "2:./photo.jpg"]`) or a
        Query. Filters: `kind` (image, caption, any; default image, or caption in a text-only index), `path` (glob on the file path), `under` (a
        folder), `min_score` (cosine floor), `within` (keep hits within this much of the best score).
        `pictures` holds query images as bytes, by the value of the image terms that stand for them
        (`Term(IMAGE, "upload:1")`): those terms are never read from disk or the network.
        """
        if isinstance(query, Query):
            query = query.with_terms(Query.parse(like=like, unlike=unlike).terms) if (like or unlike) else query
            query.validate()
        else:
            query = Query.parse(query if query is not None else (), like=like, unlike=unlike)
        return self._search(
            query, k, kind=kind, path=path, under=under, min_score=min_score, within=within, given=pictures
        )

    def describe(self, image: str | os.PathLike[str] | bytes, k: int = 5) -> list[Hit]:
        """Image → text: the captions in the index nearest to an image (a file, `id:42`, or the picture's
        bytes), one per distinct text."""
        term, given = _picture_term(image)
        return self._search(Query((term,)), k, kind="caption", distinct_text=True, given=given)

    def similar(self, item_id: int, k: int = 10, *, kind: str | None = None) -> list[Hit]:
        """Items nearest to an indexed item (more like this)."""
        return self.search(Query((Term(ITEM, str(int(item_id))),)), k, kind=kind)

    def classify(
        self,
        image: str | os.PathLike[str] | bytes,
        labels: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> list[LabelScore]:
        """Zero-shot labels for an image file, an indexed item (`id:42`) or a picture's bytes, with the
        index's model."""
        if IMAGE not in self.modalities:
            raise UnsupportedModalityError(f"index {self.name} holds text only; classification needs a CLIP model")
        term, given = _picture_term(image)
        query = Query((term,))
        vector = self.query_vector(query, self._read_pictures(query, given))
        return classify(vector, labels, self.encoder, templates)

    def query_vector(self, query: Query, pictures: Mapping[str, bytes] | None = None) -> np.ndarray:
        """The unit vector a query stands for. `pictures` holds the query images' bytes, if read already."""
        if pictures is None:
            pictures = self._read_pictures(query)
        needs_model = any(t.kind != ITEM for t in query.terms)
        text_only = all(t.kind in (TEXT_TERM, ITEM) for t in query.terms)
        encoder: Any = None
        if needs_model:
            encoder = (text_only and self._torch_free_text_tower()) or self.encoder
        picture_keys = [
            ("picture", hashlib.sha256(pictures[t.value]).hexdigest())
            for t in query.terms
            if t.kind in (IMAGE_TERM, URL)
        ]

        # The exported text tower and the full model agree to a cosine of 0.99999, not bit for bit.
        text_key = "text" if encoder is self._encoder else "exported text"

        def embed_texts(texts: Sequence[str]) -> np.ndarray:
            return self._embed_cached([(text_key, t) for t in texts], lambda: encoder.embed_texts(texts))

        def embed_images(images: Sequence[object]) -> np.ndarray:  # in the order of the query's pictures
            return self._embed_cached(picture_keys, lambda: encoder.embed_images(images))

        return combine(
            query,
            embed_texts=embed_texts,
            embed_images=embed_images,
            lookup=self.store.vector,
            read_picture=lambda term: pictures[term.value],
        )

    def _embed_cached(self, keys: list[tuple[str, str]], embed: Any) -> np.ndarray:
        """The vectors of query terms, from the cache when every one is there, else embedded together
        (one batch) and remembered."""
        cache = self._term_vectors
        if keys and all(key in cache for key in keys):
            for key in keys:
                cache.move_to_end(key)
            return np.stack([cache[key] for key in keys])
        vectors = np.asarray(embed(), dtype=np.float32)
        for key, vector in zip(keys, vectors):
            cache[key] = vector
            cache.move_to_end(key)
        while len(cache) > TERM_CACHE_SIZE:
            cache.popitem(last=False)
        return vectors

    def _torch_free_text_tower(self) -> Any:
        """For a query of text (and items) while the full model is not loaded: the text tower exported
        by an earlier crawl of these weights, which embeds text without importing torch or loading the
        image tower. None when there is no valid export (the caller then loads the full model)."""
        if self._encoder is not None:
            return None
        if self._text_tower is None:
            from .encoders.text_export import load_text_encoder

            tower = load_text_encoder(self.fingerprint, self.dim, self._cache_dir, self._batch_size)
            self._text_tower = tower if tower is not None else False
        return self._text_tower or None

    def _read_pictures(self, query: Query, given: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
        """The bytes of every query image (files and URLs), read once for embedding and for hashing.
        Images in `given` (by term value) are taken from there."""
        wanted = [t for t in query.terms if t.kind in (IMAGE_TERM, URL)]
        if wanted and IMAGE not in self.modalities:
            raise UnsupportedModalityError(
                f"index {self.name} was built with the text-only model {self.spec}; query it with text"
            )
        pictures: dict[str, bytes] = {}
        for term in wanted:
            if given is not None and term.value in given:
                pictures[term.value] = bytes(given[term.value])
                continue
            if term.kind == URL:
                pictures[term.value] = fetch_url(term.value)
                continue
            try:
                pictures[term.value] = Path(term.value).read_bytes()
            except OSError as exc:
                raise QueryError(f"cannot read query image {term.value} ({exc.strerror or exc})") from exc
        return pictures

    def _search(
        self,
        query: Query,
        k: int,
        *,
        kind: str | None = None,
        path: str | None = None,
        under: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        within: float | None = None,
        distinct_text: bool = False,
        given: Mapping[str, bytes] | None = None,
    ) -> list[Hit]:
        if kind is None:
            kind = "image" if IMAGE in self.modalities else "caption"
        try:
            if isinstance(k, bool):
                raise TypeError
            k = operator.index(k)  # numpy integers are whole numbers too; floats and bools are not
        except TypeError:
            raise QueryError(f"k must be a whole number from 1 to {MAX_K} (got {k!r})") from None
        if k < 1 or k > MAX_K:
            raise QueryError(f"k must be a whole number from 1 to {MAX_K} (got {k})")
        if kind not in KINDS:
            raise QueryError(f"kind must be one of {', '.join(KINDS)} (got {kind})")
        if within is not None and not (0 <= within <= 2):
            raise QueryError(f"within is a cosine margin from 0 to 2 (got {within})")
        if min_score is not None and not (-1 <= min_score <= 1):
            raise QueryError(f"min-score is a cosine from -1 to 1 (got {min_score})")
        pictures = self._read_pictures(query, given)
        vector = self.query_vector(query, pictures)
        vectors = self.vectors
        post_kind = self._post_filter_kind(kind, path, under)
        with self.store.snapshot():
            exclude = set(query.item_ids) | self.items_with_content(pictures.values())
            allowed = self._allowed_ids("any" if post_kind else kind, path, under)
        if allowed is not None:
            allowed = np.setdiff1d(allowed, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            if len(allowed) == 0:
                return []
        share = self._kind_share(post_kind) if post_kind else 1.0
        fetch = int(np.ceil(k * (4 if distinct_text else 1) / share)) + (len(exclude) if allowed is None else 0)
        available = vectors.ntotal if allowed is None else len(allowed)
        while True:
            candidates = self._candidates(vectors, vector, fetch, allowed)
            pairs = [(i, s) for i, s in candidates if i not in exclude]
            exhausted = len(candidates) < fetch or fetch >= available
            hits = self._hits(pairs, distinct_text, post_kind)
            if len(hits) >= k or exhausted:
                break
            fetch = min(fetch * 4, available)
        hits = hits[:k]
        if min_score is not None:
            hits = [h for h in hits if h.score >= min_score]
        if within is not None and hits:
            best = hits[0].score
            hits = [h for h in hits if h.score >= best - within]
        return [_rerank(h, rank) for rank, h in enumerate(hits, start=1)]

    def _candidates(
        self, vectors: VectorIndex, vector: np.ndarray, fetch: int, allowed: np.ndarray | None
    ) -> list[tuple[int, float]]:
        """Up to `fetch` (id, cosine) pairs nearest the query, best first, among the allowed ids."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not vectors.approximate:
            scores, ids = vectors.search(vector, fetch, allowed)
            return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX:
            with self.store.snapshot():
                ids, stored = self.store.vectors_of(allowed)
            return _top(ids, stored @ vector if len(ids) else np.zeros(0, np.float32), fetch)
        available = vectors.ntotal if allowed is None else len(allowed)
        wanted = min(fetch * vectors.rerank, available)
        nprobe = vectors.nprobe
        if allowed is not None:  # fewer allowed items per list: probe proportionally more lists
            nprobe = min(vectors.nlist, nprobe * int(np.ceil(vectors.ntotal / max(1, len(allowed)))))
        while True:
            scores, ids = vectors.search(vector, wanted, allowed, nprobe)
            keep = ids[0] >= 0
            if keep.sum() >= wanted or nprobe >= vectors.nlist:
                break
            nprobe = min(vectors.nlist, nprobe * 2)  # the probed lists held too few: widen the search
        ids, scores = ids[0][keep], scores[0][keep]
        if vectors.rerank > 1:  # PQ scores are approximate: re-score the candidates exactly
            with self.store.snapshot():
                ids, stored = self.store.vectors_of(ids)
            scores = stored @ vector if len(ids) else np.zeros(0, np.float32)
        return _top(ids, scores, fetch)

    def _post_filter_kind(self, kind: str, path: str | None, under: object) -> str | None:
        """The kind to filter results by, when handing FAISS every id of that kind would cost more."""
        if kind == "any" or path is not None or under is not None:
            return None
        return kind if self._kind_share(kind) >= POST_FILTER_SHARE else None

    def _kind_share(self, kind: str) -> float:
        """The share of items of a kind, from the counts of the last save (an estimate that only sets
        how many candidates to fetch first, never which results are right)."""
        counts = self._manifest.get("counts") or {}
        total = int(counts.get("items") or 0)
        if total <= 0:
            return 1.0
        return max(int(counts.get(f"{kind}s") or 0) / total, 1e-6)

    def _hits(self, pairs: list[tuple[int, float]], distinct_text: bool, kind: str | None = None) -> list[Hit]:
        with self.store.snapshot():
            rows = self.store.items(i for i, _ in pairs)
            file_ids = [row.file_id for row in rows.values()]
            first_captions = self.store.first_captions(file_ids)
            image_items = self.store.image_items_of_files(file_ids)
            roots = {root.id: self.root_path(root) for root in self.store.roots()}
        hits: list[Hit] = []
        seen_texts: set[str] = set()
        for item_id, score in pairs:
            row = rows.get(item_id)
            if row is None:  # removed by a writer since the vectors were loaded
                continue
            if kind is not None and row.kind != kind:
                continue
            if distinct_text and row.text is not None:
                if row.text in seen_texts:
                    continue
                seen_texts.add(row.text)
            if not is_safe_relpath(row.relpath):
                raise IndexCorruptError(
                    f"index database names a file outside its folder ({row.relpath!r}); run "
                    f"`vecsearch check --repair {self.path}`"
                )
            image_path = roots[row.root_id] / row.relpath
            caption = row.text if row.kind == "caption" else first_captions.get(row.file_id)
            source = None
            if row.kind == "caption":
                source = _sidecar_path(image_path) if row.source == "sidecar" else row.source
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    id=item_id,
                    score=score,
                    kind=row.kind,
                    path=str(image_path),
                    relpath=row.relpath,
                    caption=caption,
                    image=image_items.get(row.file_id),
                    source=source,
                )
            )
        return hits

    def item(self, item_id: int) -> Item | None:
        """An indexed item with its file and captions; None when there is no such item."""
        with self.store.snapshot():
            row = self.store.items([int(item_id)]).get(int(item_id))
            if row is None:
                return None
            file = self.store.file_at(row.root_id, row.relpath)
            captions = self.store.captions_of(row.file_id)
            image = self.store.image_item_of(row.file_id)
            root = next((r for r in self.store.roots() if r.id == row.root_id), None)
        if file is None or root is None:
            return None
        if not is_safe_relpath(row.relpath):
            raise IndexCorruptError(
                f"index database names a file outside its folder ({row.relpath!r}); run "
                f"`vecsearch check --repair {self.path}`"
            )
        return Item(
            id=row.id,
            kind=row.kind,
            path=str(self.root_path(root) / row.relpath),
            relpath=row.relpath,
            text=row.text if row.kind == "caption" else None,
            image=image,
            captions=tuple(Caption(i, text, source) for i, text, source in captions),
            bytes=file.size,
            mtime_ns=file.mtime_ns,
            sha256=file.sha256,
        )

    def items_with_content(self, contents: Iterable[bytes]) -> set[int]:
        """Image items with the same content as a query image: a query never finds itself."""
        found: set[int] = set()
        for data in contents:
            digest = hashlib.sha256(data).hexdigest()
            for row in self.store.conn.execute(
                "SELECT i.id FROM items i JOIN files f ON f.id = i.file_id WHERE f.sha256 = ? AND i.kind = 'image'",
                (digest,),
            ):
                found.add(int(row[0]))
        return found

    def _allowed_ids(
        self, kind: str, pattern: str | None, under: str | os.PathLike[str] | None
    ) -> np.ndarray | None:
        """Ids a filter lets through, or None when nothing is filtered out."""
        kind_filter = None if kind == "any" else kind
        if pattern is None and under is None:
            if kind_filter is None or not self.store.has_other_kinds(kind_filter):
                return None
            return np.array(self.store.item_ids(kind_filter), dtype=np.int64)
        roots = {root.id: self.root_path(root) for root in self.store.roots()}
        folders: list[Path] = []
        if under is not None:
            folder = Path(os.path.abspath(Path(under).expanduser()))
            folders = [folder, folder.resolve()]  # roots are recorded resolved; the user may use a symlink
        patterns = _with_resolved_prefix(pattern) if pattern is not None else []
        file_ids = []
        for file_id, root_id, relpath in self.store.all_files():
            absolute = roots[root_id] / relpath
            if folders and not any(is_within(absolute, folder) for folder in folders):
                continue
            if patterns and not any(
                fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(absolute.as_posix(), p) for p in patterns
            ):
                continue
            file_ids.append(file_id)
        return np.array(self.store.item_ids(kind_filter, file_ids), dtype=np.int64)


def _with_resolved_prefix(pattern: str) -> list[str]:
    """A path glob, plus the same glob with its literal folder part resolved (symlinks followed)."""
    patterns = [pattern]
    expanded = os.path.expanduser(pattern)
    if os.path.isabs(expanded):
        parts = Path(expanded).parts
        literal = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
        head = Path(*parts[:literal])
        if literal and head.exists():
            rest = parts[literal:]
            patterns.append(Path(head.resolve(), *rest).as_posix() if rest else head.resolve().as_posix())
        if expanded != pattern:
            patterns.append(expanded)
    return patterns


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    return {key: manifest[key] for key in ("model", "dim", "metric", "created", "location") if key in manifest}


def locate_root(index_path: Path, location: str | None, root: RootRow) -> Path:
    """Where a crawl root is now: its recorded path, or the same place relative to the index when the
    index was moved (or copied) together with the tree (`location` is where the index was saved)."""
    absolute = Path(root.path)
    relative = Path(os.path.normpath(index_path.resolve() / root.relpath))
    moved = location != str(index_path.resolve())
    for candidate in ((relative, absolute) if moved else (absolute, relative)):
        if candidate.is_dir():
            return candidate
    return absolute


def _check_index_settings(index_type: str, max_memory: int | None) -> None:
    if index_type not in INDEX_TYPES:
        raise VecsearchError(f"unknown index type {index_type!r} (choose from {', '.join(INDEX_TYPES)})")
    if max_memory is not None and max_memory <= 0:
        raise VecsearchError(f"max memory must be a positive number of bytes (got {max_memory})")


def _require_free(folder: Path) -> list[Path]:
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


def _names_local_files(spec: ModelSpec) -> bool:
    """Does the spec load weights from a local file or folder (whose content a name cannot tell)?"""
    if spec.name.startswith("local-dir:") or Path(spec.name).is_absolute():
        return True
    if not spec.pretrained:
        return False
    return Path(spec.pretrained).is_absolute() or Path(spec.pretrained).exists()


def _picture_term(image: str | os.PathLike[str] | bytes) -> tuple[Term, dict[str, bytes] | None]:
    """The query term for an image argument, and the bytes it stands for when it came as bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        name = f"bytes:{hashlib.sha256(data).hexdigest()}"
        return Term(IMAGE_TERM, name), {name: data}
    return _image_or_item_term(image), None


def _image_or_item_term(image: str | os.PathLike[str]) -> Term:
    text = str(image)
    term = parse_term(text if text.lower().startswith(("id:", "http://", "https://")) else f"image:{text}")
    return Term(term.kind, term.value, 1.0)


def _sidecar_path(image_path: Path) -> str:
    from .crawl import SIDECAR_SUFFIXES

    for suffix in SIDECAR_SUFFIXES:
        candidate = image_path.with_name(image_path.stem + suffix)
        if candidate.exists():
            return str(candidate)
    return str(image_path.with_name(image_path.stem + SIDECAR_SUFFIXES[0]))



def _top(ids: np.ndarray, scores: np.ndarray, count: int) -> list[tuple[int, float]]:
    order = np.argsort(-scores, kind="stable")[:count]
    return [(int(ids[i]), float(scores[i])) for i in order]


def _rerank(hit: Hit, rank: int) -> Hit:
    if hit.rank == rank:
        return hit
    from dataclasses import replace

    return replace(hit, rank=rank)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def brute_force_search(
    index: Index, vector: np.ndarray, k: int, item_ids: Iterable[int] | None = None
) -> list[tuple[int, float]]:
    """Exact cosine top-k straight from the stored vectors: the reference the FAISS path must match."""
    ids, vectors = index.store.vectors_since(-1)
    if item_ids is not None:
        keep = np.isin(ids, np.fromiter(item_ids, dtype=np.int64))
        ids, vectors = ids[keep], vectors[keep]
    if len(ids) == 0:
        return []
    scores = vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


__all__ = ["Index", "KINDS", "VecsearchError", "brute_force_search"]
