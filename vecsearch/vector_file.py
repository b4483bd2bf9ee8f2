"""The FAISS file of an index, kept in step with the database: load, verify, repair, save, re-plan, tune.

The database is the source of truth and the FAISS file a cache of its vectors. The manifest records
which file holds them, for which database generation, with its checksum and search settings. A file
that lags the database (a crash between the two writes) is brought up to date from the database's
change log; a damaged one is an error for readers and rebuilt by writers. Every save writes a new file
under a new name, then the manifest, so a crash at any point leaves a consistent pair on disk.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import faults, shard_build
from .encoders import Encoder
from .errors import IndexCorruptError, IndexExistsError
from .lock import WriterLock
from .manifest import (
    DATABASE,
    LOCK,
    MANIFEST,
    VECTORS,
    identity,
    leftover_files,
    new_manifest,
    read_manifest,
    require_free,
    vector_file_name,
    write_manifest,
)
from .plan import (
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_MIN_RECALL,
    EXACT,
    EXACT_MAX_VECTORS,
    MIN_PQ_TRAINING,
    RERANKED,
    TUNE_QUERIES,
    BudgetError,
    Plan,
    check_index_settings,
    choose,
    outgrown,
    training_sample,
)
from .rerank import RerankCodes
from .shard_build import ShardRunner, open_on_disk
from .store import Store
from .vector_build import BUILDS, build_from_store, tune_stored
from .vectors import VectorIndex, file_sha256
from .version import __version__


class VectorFile:
    """An index folder's FAISS file and manifest, seen through one database.

    `manifest` is the manifest as last read or written by this object; readers load the vectors lazily
    (`vectors`), writers call `open_for_writing` under the index's writer lock, mirror each committed
    chunk (`mirror`) and `save` at the end.
    """

    def __init__(self, folder: Path, store: Store, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.store = store
        self.manifest = manifest
        self._vectors: VectorIndex | None = None
        self._unsaved = False
        self._replan_forced = False
        self._disk_stale = False  # changes committed that the read-only on-disk index does not hold
        self._target: Path | None = None  # where the save in progress writes an on-disk build
        self.shard_runner: ShardRunner | None = None  # adds a build's shards (threads when None)
        self.progress = False

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def loaded(self) -> VectorIndex | None:
        """The vectors if they are in memory, without loading them."""
        return self._vectors

    def use(self, vectors: VectorIndex) -> None:
        """Take vectors already in memory that the saved file holds too (a new index's empty ones)."""
        self._vectors = vectors

    @property
    def vectors(self) -> VectorIndex:
        if self._vectors is None:
            for attempt in range(3):
                used = self.manifest["faiss"]
                try:
                    self._vectors = self._load()
                    break
                except IndexCorruptError:
                    # A writer may have saved a new generation while we read: start again from it.
                    self.manifest = read_manifest(self.folder)
                    if attempt == 2 or self.manifest["faiss"] == used:
                        raise
        assert self._vectors is not None
        return self._vectors

    # --- writers -----------------------------------------------------------------------------------

    def open_for_writing(
        self,
        max_memory: int | None = None,
        index_type: str | None = None,
        *,
        max_latency_ms: float | None = None,
        min_recall: float | None = None,
        storage: str | None = None,
    ) -> None:
        """Under the writer lock: the manifest as it is now, no leftovers of writers that died, and the
        vectors loaded (rebuilt where damaged). New settings (memory and latency budgets, recall target,
        index type, storage) are recorded and make the next save re-plan the index."""
        self.manifest = read_manifest(self.folder)
        self.remove_leftovers()  # no other writer can be using them now
        self._vectors = self._load(repair=True)
        check_index_settings(index_type or "auto", max_memory, max_latency_ms, min_recall, storage)
        faiss_info = dict(self.manifest["faiss"])
        changed = False
        if max_memory is not None and faiss_info.get("max_memory") != max_memory:
            faiss_info["max_memory"], changed = max_memory, True
        if index_type is not None and (faiss_info.get("requested") or "auto") != index_type:
            faiss_info["requested"], changed = index_type, True
        for key, value in (("max_latency_ms", max_latency_ms), ("min_recall", min_recall), ("storage", storage)):
            if value is not None and faiss_info.get(key) != value:
                faiss_info[key], changed = value, True
        if changed:
            self.manifest = {**self.manifest, "faiss": faiss_info}
            self._replan_forced = True

    def mirror(self, remove_ids: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray | None) -> None:
        """Apply a chunk the database has just committed to the vectors in memory."""
        if self.manifest["faiss"].get("on_disk"):
            self._disk_stale = True  # an on-disk index is read-only: the save rebuilds it by shards
            return
        vectors = self.vectors  # never held by the caller: a rebuild at the end must be able to free it
        vectors.remove(remove_ids)
        if len(add_ids) and add_vectors is not None:
            vectors.add(add_ids, add_vectors)

    def needs_saving(self) -> bool:
        """Does the vector file or manifest on disk lag what this writer holds?"""
        faiss_info = self.manifest["faiss"]
        return (
            self._unsaved
            or self._replan_forced
            or self._disk_stale
            or faiss_info.get("generation") != self.store.generation
            or (self._vectors is not None and faiss_info.get("ntotal") != self._vectors.ntotal)
            or self.manifest.get("location") != str(self.folder.resolve())
            or self.manifest.get("roots") != [root.path for root in self.store.roots()]
        )

    def rebuild(self) -> None:
        """Build the vectors again from the database (the next `save` writes them)."""
        self._vectors = None
        self._vectors = self._rebuild()

    def save(self) -> str | None:
        """Write the FAISS file and the manifest for the database's current generation.

        First re-plan the FAISS index for the collection's size and memory budget: rebuild it when it
        has outgrown its type, retune it when its size changed much. Returns a sentence saying what was
        done to the index type, or None.
        """
        generation = self.store.generation
        counts = self.store.counts()
        file_name = vector_file_name(generation)
        path = self.folder / file_name
        self._target = path
        on_disk = bool(self.manifest["faiss"].get("on_disk"))
        if not on_disk and self.vectors.ntotal != counts["items"]:  # e.g. interrupted between commit and mirror
            self.rebuild()
        faiss_info, note = self._replan()
        vectors = self.vectors
        manifest = dict(self.manifest)
        if vectors.on_disk:
            # Written where the build put it (or, unchanged, where it was): lists and codes beside it.
            file_name = vectors.path.name if vectors.path is not None else faiss_info["file"]
            path = self.folder / file_name
            built = file_name != self.manifest["faiss"].get("file")
            sha256 = file_sha256(path, fsync=True) if built else faiss_info.get("sha256")
            lists = path.with_suffix(".ivfdata")
            faiss_info["lists_bytes"] = lists.stat().st_size if lists.exists() else 0
            faiss_info["rerank_codes"] = vectors.refine is not None
            faults.point("faiss-renamed")
        else:
            sha256 = vectors.save(path)
            faiss_info.pop("lists_bytes", None)
            faiss_info["rerank_codes"] = False
        faiss_info["on_disk"] = vectors.on_disk
        manifest["faiss"] = {
            **faiss_info,
            "file": file_name,
            "generation": generation,
            "ntotal": vectors.ntotal,
            "sha256": sha256,
            "bytes": path.stat().st_size,
        }
        manifest["counts"] = counts
        manifest["roots"] = [root.path for root in self.store.roots()]
        manifest["updated"] = now()
        manifest["location"] = str(self.folder.resolve())
        manifest["vecsearch_version"] = __version__
        previous = int(self.manifest["faiss"].get("generation") or 0)
        faults.point("faiss-renamed")
        write_manifest(self.folder, manifest)
        faults.point("manifest-written")
        self.manifest = manifest
        self.remove_leftovers()
        shutil.rmtree(self.folder / BUILDS, ignore_errors=True)  # the build is committed: its work goes
        self._unsaved = False
        self._replan_forced = False
        self._disk_stale = False
        # The file holds every removal up to now. Keep one saved generation of history, so that the file
        # saved before this one can still be brought up to date; forget what is older.
        with self.store.transaction():
            self.store.forget_removals(min(previous, generation))
            self.store.set_identity(identity(manifest))
        return note

    def remove_leftovers(self) -> None:
        """Delete vector files the manifest no longer names (a reader that still maps one keeps its
        copy on POSIX; where the system refuses, the next save tries again)."""
        for path in leftover_files(self.folder, keep=self.manifest["faiss"].get("file", VECTORS)):
            with contextlib.suppress(OSError):
                path.unlink()

    # --- loading -----------------------------------------------------------------------------------

    def _load(self, repair: bool = False) -> VectorIndex:
        """Load the FAISS file and bring it up to the database's generation.

        A damaged file is an error for readers and rebuilt by writers (`repair`). Readers memory-map
        large files, so one query does not read the whole index.
        """
        info = self.manifest["faiss"]
        path = self.folder / info.get("file", VECTORS)
        kind = info.get("type", EXACT)
        if info.get("on_disk"):
            return self._load_on_disk(path, repair)

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
                return self._rebuild()
            raise self._damaged(str(exc)) from exc
        if vectors.dim != self.dim:
            raise IndexCorruptError(f"vector file has dimension {vectors.dim}, the manifest says {self.dim}")
        with self.store.snapshot():
            db_gen = self.store.generation
            file_gen = int(info.get("generation", -1))
            if file_gen > db_gen:
                if repair:
                    return self._rebuild()
                raise self._damaged(f"vector file is newer than the database at {self.folder}")
            if file_gen < db_gen:
                if vectors.mapped:  # a mapped index is read-only: read it whole to replay into it
                    vectors = load(mmap=False)
                self._unsaved = True
                removed = self.store.removed_since(file_gen)
                ids, vecs = self.store.vectors_since(file_gen)
                vectors.remove(np.concatenate([removed, ids]))
                vectors.add(ids, vecs)
            expected = self.store.counts()["items"]
        if vectors.ntotal != expected:
            if repair:
                return self._rebuild()
            raise self._damaged(f"vector file holds {vectors.ntotal} vectors but the database {expected} items")
        return vectors

    def _load_on_disk(self, path: Path, repair: bool) -> VectorIndex:
        """An on-disk index, mapped read-only. One that lags the database (a crawl is committing, or
        crashed before its save) still answers for what it holds; the writer's save rebuilds it."""
        info = self.manifest["faiss"]
        try:
            vectors = open_checked_on_disk(path, info)
        except (IndexCorruptError, RuntimeError) as exc:
            if repair:
                return self._rebuild()
            raise self._damaged(str(exc)) from exc
        vectors.nprobe = int(info.get("nprobe") or 1)
        vectors.rerank = int(info.get("rerank") or 1)
        with self.store.snapshot():
            file_gen, db_gen = int(info.get("generation", -1)), self.store.generation
        if file_gen > db_gen:
            if repair:
                return self._rebuild()
            raise self._damaged(f"vector file is newer than the database at {self.folder}")
        if file_gen < db_gen and repair:
            self._disk_stale = True
        return vectors

    def _damaged(self, detail: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"{detail}; the vectors are intact in the database: run `vecsearch index --index {self.folder}` "
            "to rebuild the file"
        )

    def _rebuild(self) -> VectorIndex:
        """The FAISS index of the recorded type, built again from the vectors in the database."""
        self._unsaved = True
        info = self.manifest["faiss"]
        on_disk = bool(info.get("on_disk"))
        vectors = self._build(info.get("type", EXACT), int(info.get("nlist") or 0), info.get("family", ""), on_disk)
        vectors.nprobe = int(info.get("nprobe") or 1)
        vectors.rerank = int(info.get("rerank") or 1)
        return vectors

    def _build(self, factory: str, nlist: int = 0, family: str = "", on_disk: bool = False) -> VectorIndex:
        """A FAISS index of the given type over every stored vector, read in chunks (so a compressed index
        never needs all the raw vectors in memory at once), trained on a seeded sample. Large and on-disk
        indexes are built by shards (`shard_build.py`), in parallel, resumable."""
        count = self.store.counts()["items"]
        if factory != EXACT and count and (on_disk or count > shard_build.SHARD_SIZE):
            plan = Plan(family, factory, nlist, 0, 0, "", "disk" if on_disk else "memory")
            if self._target is None:
                self._target = self.folder / vector_file_name(self.store.generation)
            vectors = build_from_store(
                self.folder, self.store, self.dim, plan, self._target, self.shard_runner, self.progress
            )
            if not on_disk:  # nothing of the build is needed once the index is in memory
                shutil.rmtree(self.folder / BUILDS, ignore_errors=True)
            return vectors
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

    # --- planning and tuning -----------------------------------------------------------------------

    def _replan(self) -> tuple[dict[str, Any], str | None]:
        """The manifest's FAISS settings for the collection as it is now, rebuilding what must be."""
        info = dict(self.manifest["faiss"])
        count = self.store.counts()["items"] if self._disk_stale else self.vectors.ntotal
        requested = info.get("requested") or "auto"
        current = info.get("family") or ("exact" if info.get("type", EXACT) == EXACT else "")
        current_storage = "disk" if info.get("on_disk") else "memory"
        max_latency = float(info.get("max_latency_ms") or DEFAULT_MAX_LATENCY_MS)
        min_recall = float(info.get("min_recall") or DEFAULT_MIN_RECALL)
        warning = None
        try:
            plan = choose(
                count, self.dim, info.get("max_memory"), requested, max_latency, info.get("storage") or "auto"
            )
        except (BudgetError, ValueError) as exc:
            # Nothing fits: keep the index type (still retrained when outgrown, and retuned), and say so.
            warning = f"warning: {exc}; keeping the {info.get('type')} index"
            plan = Plan(current or "exact", info.get("type", EXACT), int(info.get("nlist") or 0), 0, 0, warning)
            plan = replace(plan, storage=current_storage)
        if plan.approximate and count < (MIN_PQ_TRAINING if "PQ" in plan.factory else 1):
            plan = Plan(
                "exact", EXACT, 0, 0, 0, f"exact until there are {MIN_PQ_TRAINING:,} vectors to train {requested} on"
            )
        if current != "exact" and plan.family == "exact" and requested == "auto" and count > EXACT_MAX_VECTORS // 2:
            # Hysteresis: a collection that shrinks a little below the threshold keeps its index.
            plan = Plan(current, info["type"], int(info.get("nlist") or 0), 0, 0, "", current_storage)
        rebuild = self._replan_forced and (plan.factory != info.get("type") or plan.storage != current_storage)
        rebuild = rebuild or plan.family != current or self._disk_stale
        rebuild = rebuild or (plan.approximate and outgrown(int(info.get("trained_on") or 0), count))
        note = None
        if rebuild:
            self._vectors = None  # the old index goes before the new one is built: half the peak memory
            self._vectors = vectors = self._build(plan.factory, plan.nlist, plan.family, plan.storage == "disk")
            self._unsaved = True
            self._disk_stale = False
            info.update(
                type=vectors.kind,
                family=plan.family if vectors.approximate else "exact",
                nlist=vectors.nlist,
                trained_on=count if vectors.approximate else 0,
                reason=plan.reason,
                on_disk=vectors.on_disk,
            )
            for key in ("nprobe", "rerank", "recall@10", "tuned_on", "tuning_queries", "tuning"):
                info.pop(key, None)
            note = f"vector index is now {vectors.kind}" + (" on disk" if vectors.on_disk else "") + f": {plan.reason}"
        vectors = self.vectors
        tuned_on = int(info.get("tuned_on") or 0)
        retune = rebuild or count >= 2 * tuned_on or 2 * count <= tuned_on or self._replan_forced
        if vectors.approximate and retune:
            tuning, text_source = tune_stored(
                self.store, vectors, info.get("family") in RERANKED, min_recall, max_latency
            )
            vectors.nprobe, vectors.rerank = tuning.nprobe, tuning.rerank
            info.update(
                {
                    "nprobe": tuning.nprobe,
                    "rerank": tuning.rerank,
                    "recall@10": round(tuning.recall, 4),
                    "tuned_on": count,
                    "tuning_queries": TUNE_QUERIES,
                    "tuning": {
                        "image": tuning.image.to_dict(),
                        "text": {**tuning.text.to_dict(), "queries": text_source},
                        "min_recall": min_recall,
                        "max_latency_ms": max_latency,
                        "met": tuning.met,
                        "note": tuning.note,
                    },
                }
            )
            tuned = f"nprobe {tuning.nprobe}" + (f", re-rank depth {tuning.rerank}" if tuning.rerank > 1 else "")
            note = (note + "; " if note else f"vector index {vectors.kind} retuned: ") + (
                f"{tuned} gives recall@10 {tuning.text.recall:.3f} (text-like) / {tuning.image.recall:.3f} "
                f"(image-like) at {tuning.p50_ms:.2f} ms a query"
            )
            if tuning.note:
                note += f"; {tuning.note}"
        elif not vectors.approximate:
            info.pop("tuning", None)
        if warning and (note is None or warning not in note):
            note = f"{warning}; {note}" if note else warning
        return info, note


def open_checked_on_disk(path: Path, info: dict[str, Any]) -> VectorIndex:
    """An on-disk index as the manifest describes it, mapped read-only: its `.faiss` file checked by
    SHA-256 (it is small), its lists by size (a checksum would read all of them)."""
    lists = path.with_suffix(".ivfdata")
    if not path.is_file() or file_sha256(path) != info.get("sha256"):
        raise IndexCorruptError(f"vector file missing or damaged: {path}")
    if not lists.is_file() or lists.stat().st_size != info.get("lists_bytes"):
        raise IndexCorruptError(f"inverted lists missing or of the wrong size: {lists}")
    try:
        vectors = open_on_disk(path, info.get("type", EXACT))
        if info.get("rerank_codes"):
            vectors.refine = RerankCodes.open(path.with_suffix(""))
    except RuntimeError as exc:
        raise IndexCorruptError(f"vector file unreadable ({str(exc).splitlines()[0][:200]})") from exc
    return vectors


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_new_index(
    folder: Path, encoder: Encoder, index_type: str, max_memory: int | None, planning: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Store, VectorIndex]:
    """The files of a new, empty index: database, empty vector file, and the manifest last (until it
    exists, the folder is no index). A failure leaves the folder as it was."""
    created_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(folder / LOCK, str(folder))
    lock.acquire()  # another process creating the same index owns it: leave its files alone
    store: Store | None = None
    vector_file = vector_file_name(0)
    try:
        for leftover in require_free(folder):  # again, now that no one else can be writing here
            leftover.unlink()  # a creation that died before its manifest: start it again
        store = Store.open(folder / DATABASE, create=True)
        vectors = VectorIndex.create(encoder.dim)
        manifest = new_manifest(folder, encoder, index_type, max_memory, vector_file, store.counts())
        manifest["faiss"].update({key: value for key, value in (planning or {}).items() if value is not None})
        with store.transaction():
            store.set_identity(identity(manifest))
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
    return manifest, store, vectors
