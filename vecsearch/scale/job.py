"""One distributed crawl: list the sources (in parallel), cut what changed into shards, embed them on
Ray, then commit through the local crawler, which takes the shards' hashes and vectors instead of
computing them. The crawler's rules (unchanged, touched, renamed, duplicate, new, gone; bad files with
their reasons; captions) therefore apply unchanged, and the result equals a local crawl's.

Killed at any moment, the next run of the same command lists again, keeps every finished shard (what it
holds is never embedded again) and embeds only the rest.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..captions import caption_settings
from ..crawl import WalkResult, walk
from ..encoders import IMAGE, Encoder
from ..indexer import Crawler, CrawlSettings, IndexingInterrupted
from ..model import IndexModel, LoadSettings
from ..pipeline import decode_size, progress_bar
from ..results import CrawlReport, SkippedFile
from ..roots import FOLDER, LISTING, REMOTE_FOLDER, SOURCE_KINDS, WEBDATASET, RootPlanner, Scope
from ..store import Store
from ..vector_file import VectorFile
from .geometry import preprocess_geometry
from .ray_pipeline import RayOptions, connect, hash_prefixes, import_ray, run_shards
from .shards import ShardFolder, ShardPrefill
from .sources import Listed, Source, list_listing, list_remote_folder, list_tar, parse_source, read_entry

JOB_FOLDER = Path("jobs") / "ray"


@dataclass(frozen=True)
class ListingColumns:
    """Which columns of a listing file hold the path and the captions (default: found by name)."""

    path: str | None = None
    captions: tuple[str, ...] = ()


def crawl_distributed(
    store: Store,
    vector_file: VectorFile,
    model: IndexModel,
    roots: RootPlanner,
    sources: Sequence[str],
    *,
    captions_files: Sequence[Path] = (),
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    settings: CrawlSettings | None = None,
    options: RayOptions | None = None,
    columns: ListingColumns | None = None,
) -> CrawlReport:
    started = time.monotonic()
    settings = settings or CrawlSettings()
    options = options or RayOptions()
    columns = columns or ListingColumns()
    parsed = [parse_source(text) for text in sources]  # bad arguments fail before Ray starts
    started_ray = connect(options)
    try:
        startup = time.monotonic() - started
        skipped: list[SkippedFile] = []
        scopes = _scopes(store, roots, parsed, list(exclude), include_hidden, skipped)
        kinds = {scope.root.id: _kind(scope) for scope in scopes}
        languages = caption_settings(store).languages
        listed = _list(scopes, parsed, list(exclude), include_hidden, columns, languages)
        walks = [entry.walk for entry in listed]
        offsets = {scope.root.id: entry.offsets for scope, entry in zip(scopes, listed, strict=True)}
        listing_seconds = time.monotonic() - started - startup

        shards = ShardFolder(vector_file.folder / JOB_FOLDER, model.fingerprint, model.dim)
        located = {scope.root.id: (_kind(scope), scope.root.path) for scope in scopes}
        reader = functools.partial(_read_for_commit, located, offsets)
        prefill = ShardPrefill(reader)
        reused = shards.finished()
        for number in reused:
            prefill.load(shards.read(number))
        work = _work(store, scopes, walks, prefill)
        plan = _plan(work, kinds, offsets, shards, options.shard_size)
        embedded = attempts = 0
        inference: dict[str, Any] = {}
        timing: dict[str, float] = {}
        embed_started = time.monotonic()
        if plan:
            images = IMAGE in model.modalities
            # The driver loads the model (if making the index did not) for what the read tasks need of it:
            # the size to decode at, and the resize and crop of its preprocess.
            encoder = model.encoder if images else None
            min_size = decode_size(encoder) if encoder is not None else None
            geometry = preprocess_geometry(getattr(encoder, "preprocess", None)) if encoder is not None else None
            bar = progress_bar(len(work), "embedding on ray", settings.progress)
            skipped_rows = 0

            def on_rows(done: int, failed: int) -> None:
                nonlocal skipped_rows
                skipped_rows += failed
                bar.update(done)
                if failed:
                    bar.set_postfix(skipped=skipped_rows, refresh=False)

            try:
                embedded, attempts = run_shards(
                    plan,
                    shards,
                    functools.partial(load_model, model.folder, model.record, model.dim, model.settings),
                    options,
                    known=hash_prefixes(store.content_hashes()),
                    min_size=min_size,
                    max_megapixels=settings.max_megapixels,
                    images=images,
                    languages=languages,
                    batch_size=model.batch_size,
                    geometry=geometry,
                    on_rows=on_rows,
                    inference=inference,
                    timing=timing,
                )
            except KeyboardInterrupt:
                done = shards.finished()
                stopped = CrawlReport(interrupted=True, seconds=time.monotonic() - started)
                stopped.distributed = {"engine": "ray", "inputs": len(work), "shards_finished": len(done)}
                raise IndexingInterrupted(stopped) from None
            finally:
                bar.close()
            for number in sorted(plan):
                prefill.load(shards.read(number))
        embed_seconds = time.monotonic() - embed_started

        commit_started = time.monotonic()
        crawler = Crawler(store, vector_file, model, roots, settings, prefill=prefill)
        folders = [Path(s.location) for s in parsed if s.kind == FOLDER]
        report = crawler.run(folders, list(captions_files), list(exclude), include_hidden, planned=(scopes, walks))
        report.skipped[:0] = skipped
        report.embedded_images += embedded
        report.inference = report.inference or inference or None
        report.distributed = {
            "engine": "ray",
            "inputs": len(work),
            "shards_written": len(plan),
            "shards_reused": len(reused),
            "embedded_by_cluster": embedded,
            "ray_runs": attempts,
            "startup_seconds": round(startup, 3),
            "listing_seconds": round(listing_seconds, 3),
            "embedding_seconds": round(embed_seconds, 3),
            **timing,
            "commit_seconds": round(time.monotonic() - commit_started, 3),
        }
        report.seconds = time.monotonic() - started
        shards.remove()  # committed: the index holds everything the shards did
        return report
    finally:
        if started_ray:
            import_ray().shutdown()


def load_model(folder: Path, record: dict[str, Any], dim: int, settings: LoadSettings) -> Encoder:
    """In a model actor: the index's model, checked against its fingerprint, on the actor's GPU if it
    was given one."""
    import ray

    if settings.device is None and ray.get_gpu_ids():
        settings = LoadSettings("cuda", settings.batch_size, settings.cache_dir, settings.inference)
    return IndexModel(folder, record, dim, None, settings).encoder


# --- planning -----------------------------------------------------------------------------------------


def _kind(scope: Scope) -> str:
    return str(scope.root.options.get("source", FOLDER))


def _scopes(
    store: Store,
    roots: RootPlanner,
    parsed: list[Source],
    exclude: list[str],
    include_hidden: bool,
    skipped: list[SkippedFile],
) -> list[Scope]:
    with store.transaction():
        roots.refresh_locations()
        if not parsed:
            return roots.scopes_for_all(lambda path, reason: skipped.append(SkippedFile(path, reason)), SOURCE_KINDS)
        folders = [Path(s.location) for s in parsed if s.kind == FOLDER]
        scopes = roots.scopes_for_paths(folders, exclude, include_hidden) if folders else []
        for source in parsed:
            if source.kind != FOLDER:
                scopes.append(roots.scope_for_source(source.location, source.kind))
        return scopes


def _list(
    scopes: list[Scope],
    parsed: list[Source],
    exclude: list[str],
    include_hidden: bool,
    columns: ListingColumns,
    languages: tuple[str, ...],
) -> list[Listed]:
    """List every scope; folders and tar shards in parallel as Ray tasks."""
    ray = import_ray()
    remote_walk = ray.remote(num_cpus=0.25)(walk)
    remote_tar = ray.remote(num_cpus=0.25)(list_tar)
    pending: list[Any] = []
    for scope in scopes:
        kind = _kind(scope)
        if kind == FOLDER:
            parts: list[Any] = []
            for start in scope.starts:
                if not start.is_dir():
                    parts.append(walk(scope.folder, start, scope.exclude, scope.include_hidden))
                    continue
                top = walk(scope.folder, start, scope.exclude, scope.include_hidden, descend=False)
                parts.append(top)
                parts.extend(
                    remote_walk.remote(scope.folder, sub, scope.exclude, scope.include_hidden) for sub in top.folders
                )
            pending.append(parts)
        elif kind == WEBDATASET:
            pending.append(remote_tar.remote(Source(kind, scope.root.path), languages))
        elif kind == LISTING:
            pending.append(list_listing(Source(kind, scope.root.path), columns.path, columns.captions))
        else:
            source = Source(REMOTE_FOLDER, scope.root.path)
            hidden = include_hidden or scope.include_hidden
            pending.append(list_remote_folder(source, exclude or scope.exclude, hidden, languages))
    listed: list[Listed] = []
    for entry in pending:
        if isinstance(entry, list):
            merged, seen = WalkResult(), set()
            for part in entry:
                result = part if isinstance(part, WalkResult) else ray.get(part)
                for found in result.files:
                    if found.relpath not in seen:
                        seen.add(found.relpath)
                        merged.files.append(found)
                merged.skipped.extend(result.skipped)
            listed.append(Listed(merged))
        else:
            listed.append(entry if isinstance(entry, Listed) else ray.get(entry))
    return listed


def _work(store: Store, scopes: list[Scope], walks: list[WalkResult], prefill: ShardPrefill) -> list[tuple[Scope, Any]]:
    """Files the index does not hold as they are now (size and time) and no finished shard has read."""
    work = []
    for scope, walked in zip(scopes, walks, strict=True):
        known: dict[str, Any] = {}
        for prefix in scope.prefixes:
            known.update(store.files_under(scope.root.id, prefix))
        for found in walked.files:
            row = known.get(found.relpath)
            if row is not None and (row.size, row.mtime_ns) == (found.size, found.mtime_ns):
                continue
            if not prefill.has(scope.root.id, found):
                work.append((scope, found))
    return work


def _plan(
    work: list[tuple[Scope, Any]],
    kinds: dict[int, str],
    offsets: dict[int, dict[str, int]],
    shards: ShardFolder,
    shard_size: int,
) -> dict[int, list[dict[str, Any]]]:
    """Cut the work into shards of `shard_size` inputs, numbered after the finished ones."""
    first, next_id = shards.next_number(), shards.next_id()
    plan: dict[int, list[dict[str, Any]]] = {}
    for position, (scope, found) in enumerate(work):
        number = first + position // max(1, shard_size)
        kind = kinds[scope.root.id]
        plan.setdefault(number, []).append(
            {
                "id": next_id + position,
                "shard": number,
                "root_id": scope.root.id,
                "kind": kind,
                "root": str(scope.folder) if kind == FOLDER else scope.root.path,
                "key": found.relpath,
                "offset": offsets[scope.root.id].get(found.relpath, -1),
                "size": found.size,
                "mtime_ns": found.mtime_ns,
                "sidecar": found.sidecar_name or "",
                "captions": list(found.captions or ()),
            }
        )
    return plan


def _read_for_commit(
    sources: dict[int, tuple[str, str]], offsets: dict[int, dict[str, int]], root_id: int, found: Any
) -> bytes | None:
    """For the commit, when a picture is in no shard (it changed since it was read): its bytes, read
    here; None for a file in a local folder (the crawler reads those itself)."""
    kind, location = sources.get(root_id, (FOLDER, ""))
    if kind == FOLDER:
        return None
    return read_entry(kind, location, found.relpath, offsets.get(root_id, {}).get(found.relpath, -1), found.size)


__all__ = ["ListingColumns", "RayOptions", "crawl_distributed", "load_model"]
