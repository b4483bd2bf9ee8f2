"""The Index: one directory holding a manifest, the SQLite items and the FAISS vectors, and the
searches over them (text → image, image → text, image → image, mixed and refined queries).

The Index is a facade. Each job lives in its own module, and the Index only wires them together:
`vector_file` (the FAISS file kept in step with the database), `model` (the index's model, loaded on
first use), `indexer` (crawling), `embedding` (a query to a vector), `retrieval` (a vector and filters to
hits) and `lookup` (rows to hits and items). docs/architecture.md draws the whole picture.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .captions import record_caption_settings
from .classify import DEFAULT_TEMPLATES, classify, needs_text_tower, parse_labels
from .collection import CollectionJobs
from .embedding import QueryEmbedder, picture_term
from .encoders import IMAGE, Encoder, ModelSpec, resolve_spec
from .errors import ModelMismatchError, UnsupportedModalityError, VecsearchError
from .home import locate
from .images import DEFAULT_MAX_MEGAPIXELS
from .indexer import Crawler, CrawlSettings
from .lock import WriterLock
from .lookup import ItemLookup
from .manifest import DATABASE, LOCK, folder_files_state, read_manifest, require_free
from .model import IndexModel, LoadSettings, same_weights
from .query import ITEM, Query, Term
from .results import CrawlReport, Hit, Item, LabelScore
from .retrieval import KINDS, Retrieval, brute_force_search, check_query_vectors, check_settings
from .roots import FOLDER, RootPlanner, locate_root, root_kind
from .scale.exchange import ExportReport, export_index, import_embeddings
from .scale.faiss_shards import ray_shard_runner
from .scale.job import ListingColumns, RayOptions, crawl_distributed
from .scale.sources import picture_of
from .store import RootRow, Store
from .vector_file import VectorFile, check_index_settings, write_new_index
from .vectors import VectorIndex


class Index(CollectionJobs):
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
        settings: LoadSettings | None = None,
    ) -> None:
        self.path = folder
        self.model = IndexModel(folder, manifest["model"], int(manifest["dim"]), encoder, settings or LoadSettings())
        self._embedder = QueryEmbedder(self.model, lambda item_id: self.store.vector(item_id))
        self._connect(store, manifest)

    def _connect(self, store: Store, manifest: dict[str, Any]) -> None:
        """Wire the parts that read the database and the vector file; note the state `refresh` compares."""
        previous: VectorFile | None = getattr(self, "vector_file", None)
        self.store = store
        self.vector_file = VectorFile(self.path, store, manifest)
        if previous and previous.loaded and previous.loaded.on_disk and previous.manifest["faiss"] == manifest["faiss"]:
            self.vector_file.use(previous.loaded)  # the same mapped file: no reload
        self._lookup = ItemLookup(store, self.root_path, self.path)
        self._retrieval = Retrieval(store, self.vector_file, self._lookup, self.root_path)
        self._seen = self._state_key()

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
        max_latency_ms: float | None = None,
        min_recall: float | None = None,
        storage: str | None = None,
    ) -> Index:
        """Make a new, empty index for a model (an Encoder you pass, or one loaded by name).

        `index_type` (`vecsearch.plan.INDEX_TYPES`), `max_memory` (bytes; default half the machine's),
        `max_latency_ms` (10), `min_recall` (recall@10, 0.95) and `storage` (auto, memory, disk) decide
        the FAISS index as the collection grows; see `vecsearch.plan`.
        """
        folder = Path(path).expanduser()
        check_index_settings(index_type, max_memory, max_latency_ms, min_recall, storage)
        require_free(folder)  # before a model is loaded for nothing
        settings = LoadSettings(device, batch_size, cache_dir, inference)
        if encoder is None:
            encoder = settings.load(model, pretrained)
        elif model is not None and resolve_spec(model, pretrained) != encoder.spec:
            raise ModelMismatchError(f"model {model} given together with a different encoder {encoder.spec}")
        planning = {"max_latency_ms": max_latency_ms, "min_recall": min_recall, "storage": storage}
        manifest, store, vectors = write_new_index(folder, encoder, index_type, max_memory, planning)
        index = cls(folder, manifest, store, encoder, settings)
        index.vector_file.use(vectors)  # no need to read back the file just written
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
    ) -> Index:
        """Open an index by name (in the home folder) or path.

        Pass `model`/`encoder` only to insist on one: a model other than the index's own is refused.
        """
        folder = locate(ref, home)
        manifest = read_manifest(folder)
        settings = LoadSettings(device, batch_size, cache_dir, inference)
        wanted = resolve_spec(model, pretrained) if encoder is None and model is not None else None
        if wanted is not None and not same_weights(folder, manifest, wanted, settings):
            encoder = settings.load(wanted)  # the weights are unknown: load them to compare fingerprints
        store = Store.open(folder / DATABASE)
        try:
            index = cls(folder, manifest, store, encoder, settings)
        except BaseException:
            store.close()
            raise
        index.model.load_as = wanted  # the same weights, perhaps by another path: load them from there
        return index

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
        store = self.store
        if state[2] != self._seen[2]:  # the database file was replaced (the index deleted and made again)
            store = Store.open(self.path / DATABASE)
        manifest = read_manifest(self.path)
        if manifest["model"] != self.model.record or manifest["dim"] != self.dim:
            if store is not self.store:
                store.close()
            raise ModelMismatchError(
                f"index {self.name} was rebuilt with {ModelSpec.from_dict(manifest['model'])} while it was "
                "open; open it again"
            )
        if store is not self.store:
            self.store.close()
        self._connect(store, manifest)
        return True

    def _state_key(self) -> tuple[int, tuple[int, int, int], tuple[int, int]]:
        return (self.store.generation, *folder_files_state(self.path))

    def __enter__(self) -> Index:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def batch_size(self) -> int:
        return self.model.batch_size

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def modalities(self) -> frozenset[str]:
        return self.model.modalities

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self.vector_file.manifest)

    @property
    def generation(self) -> int:
        """The database's commit count: it changes whenever a writer commits."""
        return self.store.generation

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded on first use and checked against the recorded fingerprint."""
        return self.model.encoder

    @property
    def vectors(self) -> VectorIndex:
        """The FAISS index, loaded (and brought up to the database's generation) on first use."""
        return self.vector_file.vectors

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def roots(self) -> list[Path]:
        return [self.root_path(root) for root in self.store.roots()]

    def root_path(self, root: RootRow) -> Path:
        """Where a crawl root is now (see `roots.locate_root`)."""
        return locate_root(self.path, self.vector_file.manifest.get("location"), root)

    def info(self) -> dict[str, Any]:
        """The manifest with live counts, roots and the size on disk."""
        data = self.manifest
        data["path"] = str(self.path)
        data["counts"] = self.counts()
        data["roots"] = [str(self.root_path(r)) if root_kind(r) == FOLDER else r.path for r in self.store.roots()]
        data["generation"] = self.store.generation
        data["bytes"] = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return data

    def warm(self) -> None:
        """Load the vectors and the query path of the model now (text, and pictures where the model's
        exports exist), so that the first query is quick."""
        self.model.warm_pictures(wait=False)  # the image tower's files are hashed while the rest loads
        _ = self.vectors
        self.query_vector(Query.parse(["a photo"]))
        self.model.warm_pictures()

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
        engine: str = "local",
        ray: RayOptions | None = None,
        columns: ListingColumns | None = None,
        max_latency_ms: float | None = None,
        min_recall: float | None = None,
        storage: str | None = None,
        caption_languages: str | Sequence[str] | None = None,
        embedded_captions: bool | None = None,
    ) -> CrawlReport:
        """Crawl folders (or files) into the index; with no paths, re-crawl every recorded root.

        Only new or changed files are embedded; renamed or duplicated files reuse their vectors; files
        gone from disk leave the index. Bad files are skipped and listed in the report. New FAISS
        settings (see `create`) are recorded and the FAISS index re-planned for them. So are the caption
        settings: the sidecar languages kept (`"en,fr"`) and whether captions embedded in pictures are read.

        `engine="ray"` embeds on a Ray cluster (`ray` says which and how, see `vecsearch.scale`), reads
        listings, WebDataset shards and URIs, and adds a large FAISS index's shards in Ray tasks.
        """
        if engine not in ("local", "ray"):
            raise VecsearchError(f"unknown engine {engine!r}: local or ray")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(captions, (str, os.PathLike)):
            captions = [captions]
        with WriterLock(self.path / LOCK, self.name):
            self.store.check_schema()
            record_caption_settings(self.store, caption_languages, embedded_captions)
            planning = {"max_latency_ms": max_latency_ms, "min_recall": min_recall, "storage": storage}
            self.vector_file.open_for_writing(max_memory, index_type, **planning)  # type: ignore[arg-type]
            self.vector_file.progress = progress
            self.vector_file.shard_runner = ray_shard_runner(ray or RayOptions()) if engine == "ray" else None
            settings = CrawlSettings(progress=progress, workers=workers, max_megapixels=max_megapixels)
            planner = RootPlanner(self.store, self.path, self.root_path)
            if engine == "ray":
                report = crawl_distributed(
                    self.store,
                    self.vector_file,
                    self.model,
                    planner,
                    [str(p) for p in paths],
                    captions_files=[Path(c) for c in captions],
                    exclude=exclude,
                    include_hidden=include_hidden,
                    settings=settings,
                    options=ray,
                    columns=columns,
                )
                self._tag_arrivals(report)
                report.text_export = self.model.export_towers()
                return report
            crawler = Crawler(self.store, self.vector_file, self.model, planner, settings)
            report = crawler.run([Path(p) for p in paths], [Path(c) for c in captions], list(exclude), include_hidden)
            self._tag_arrivals(report)  # a tagged index tags the pictures a crawl adds
        report.text_export = self.model.export_towers()
        return report

    def add_embeddings(self, folder: str | os.PathLike[str], *, progress: bool = False) -> CrawlReport:
        """Add the pictures of an embeddings folder (vecsearch Parquet shards from `export` or a
        distributed crawl, or clip-retrieval's output) with their vectors: nothing is embedded again."""
        with WriterLock(self.path / LOCK, self.name):
            self.store.check_schema()
            self.vector_file.open_for_writing()
            planner = RootPlanner(self.store, self.path, self.root_path)
            settings = CrawlSettings(progress=progress)
            report = import_embeddings(self.store, self.vector_file, self.model, planner, Path(folder), settings)
            return self._tag_arrivals(report)

    def export(
        self,
        folder: str | os.PathLike[str],
        *,
        format: str = "parquet",
        shard_size: int = 100_000,
        progress: bool = False,
    ) -> ExportReport:
        """Write every picture with its captions and vectors to a new folder, as Parquet shards or in
        clip-retrieval's layout (which autofaiss reads); `add_embeddings` reads either back."""
        model = self.model
        return export_index(self.store, self.root_path, model, Path(folder), format, shard_size, progress)

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
        tag: str | None = None,
    ) -> list[Hit]:
        """Nearest items to a query, best first.

        `query` is a prompt string, a list of terms (`["cat", "+hat", "-dog", "2:./photo.jpg"]`) or a
        Query. Filters: `kind` (image, caption, any; default image, or caption in a text-only index),
        `path` (glob on the file path), `under` (a folder), `tag` (pictures with this tag, see `tag`),
        `min_score` (cosine floor), `within` (keep hits within this much of the best score). `pictures`
        holds query images as bytes, by the value of the image terms that stand for them (`Term(IMAGE,
        "upload:1")`): those terms are never read from disk or the network.
        """
        if isinstance(query, Query):
            query = query.with_terms(Query.parse(like=like, unlike=unlike).terms) if (like or unlike) else query
            query.validate()
        else:
            query = Query.parse(query if query is not None else (), like=like, unlike=unlike)
        return self._search(
            query, k, kind=kind, path=path, under=under, min_score=min_score, within=within, given=pictures, tag=tag
        )

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        kind: str | None = None,
        path: str | None = None,
        under: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        within: float | None = None,
        tag: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Nearest items to raw query vectors (your own model's, in this index's space): one vector gives a
        list of hits, a batch (n × dim, one FAISS call) a list per row. Filters (`tag` too) and `k` as in
        `search`."""
        batch, single = check_query_vectors(vectors, self.dim)
        kind = kind or ("image" if IMAGE in self.modalities else "caption")
        k = check_settings(k, kind, min_score, within)
        found = self._retrieval.run_batch(
            batch, k, kind, path=path, under=under, min_score=min_score, within=within, tag=tag
        )
        return found[0] if single else found

    def describe(self, image: str | os.PathLike[str] | bytes, k: int = 5) -> list[Hit]:
        """Image → text: the captions nearest to an image (a file, `id:42`, or bytes), one per distinct text."""
        term, given = picture_term(image)
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
        """Zero-shot labels for an image file, an indexed item (`id:42`) or a picture's bytes."""
        if IMAGE not in self.modalities:
            raise UnsupportedModalityError(f"index {self.name} holds text only; classification needs a CLIP model")
        term, given = picture_term(image)
        query = Query((term,))
        encoder = self.model.query_encoder()
        start_loading = getattr(encoder, "start_loading", None)
        if start_loading is not None and needs_text_tower(encoder, parse_labels(labels), templates):
            start_loading(images=False, text=True)  # the labels' text tower loads while the picture embeds
        vector = self.query_vector(query, self._embedder.read_pictures(query, given))
        return classify(vector, labels, encoder, templates)

    def query_vector(self, query: Query, pictures: Mapping[str, bytes] | None = None) -> np.ndarray:
        """The unit vector a query stands for. `pictures` holds the query images' bytes, if read already."""
        return self._embedder.vector(query, pictures)

    def item(self, item_id: int) -> Item | None:
        """An indexed item with its file and captions; None when there is no such item."""
        return self._lookup.item(item_id)

    def picture_data(self, item_id: int) -> bytes | None:
        """The picture of an item whose file is not in a local folder (a tar shard's member, a listed URI,
        a remote folder's file), read from its source; None for a file on disk (open its `path`), for no
        such item, and when the source no longer holds the indexed content."""
        found = self.item(item_id)  # None for an id that cannot exist, before the database sees it
        row = self.store.items([int(item_id)]).get(int(item_id)) if found is not None else None
        root = next((r for r in self.store.roots() if row is not None and r.id == row.root_id), None)
        return None if found is None or root is None else picture_of(root, found.relpath, found.sha256)

    def items_with_content(self, contents: Iterable[bytes]) -> set[int]:
        """Image items with the same content as a query image: a query never finds itself."""
        return self._lookup.with_content(contents)

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
        tag: str | None = None,
    ) -> list[Hit]:
        if kind is None:
            kind = "image" if IMAGE in self.modalities else "caption"
        k = check_settings(k, kind, min_score, within)
        pictures = self._embedder.read_pictures(query, given)
        vector = self.query_vector(query, pictures)
        with self.store.snapshot():
            exclude = set(query.item_ids) | self.items_with_content(pictures.values())
        return self._retrieval.run(
            vector,
            k,
            kind,
            path=path,
            under=under,
            min_score=min_score,
            within=within,
            distinct_text=distinct_text,
            exclude=exclude,
            tag=tag,
        )


__all__ = ["KINDS", "Index", "brute_force_search"]
