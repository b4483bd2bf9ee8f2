"""Jobs over the whole collection rather than one query: near-duplicate groups, zero-shot tags for
every picture, and browsing its pictures a page at a time. The Index takes these methods from here so
that its own module stays about one query."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import duplicates as dups
from . import tags
from .browse import picture_page
from .classify import DEFAULT_TEMPLATES, label_vectors, needs_text_tower
from .duplicates import DuplicateReport
from .encoders import IMAGE
from .errors import UnsupportedModalityError
from .lock import WriterLock
from .manifest import LOCK
from .pipeline import progress_bar
from .results import CrawlReport, LabelScore, PicturePage
from .roots import FOLDER, item_location, root_kind
from .tags import TagReport, TagRow, TagSet

if TYPE_CHECKING:
    from .lookup import ItemLookup
    from .model import IndexModel
    from .retrieval import Retrieval
    from .store import RootRow, Store
    from .vector_file import VectorFile


class CollectionJobs:
    """Mixed into `Index`; uses its store, vector file, retrieval and model."""

    store: Store
    vector_file: VectorFile
    model: IndexModel
    _retrieval: Retrieval
    _lookup: ItemLookup
    path: Path

    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...

        def root_path(self, root: RootRow) -> Path: ...

    # --- near-duplicate pictures ---------------------------------------------------------------

    def duplicates(
        self,
        threshold: float | None = None,
        *,
        under: str | os.PathLike[str] | None = None,
        path: str | None = None,
        keep: str = "largest",
        method: str = "auto",
        progress: bool = False,
    ) -> DuplicateReport:
        """Groups of near-duplicate pictures (image vectors at a cosine of at least `threshold`, a floor,
        that are each other's nearest picture or at 0.98 and up; default: `vecsearch.DUPLICATE_THRESHOLDS`
        for the index's model) and exact copies (same content), each with
        the picture to keep first (`keep`: largest, newest or oldest). `under` and `path` filter as in
        `search`. `method` is auto, exact (FAISS range search) or ann (k-NN search of the index's own FAISS
        index, approximate; auto above 100,000 pictures when that index is an IVF one).
        Reads the stored vectors only: nothing is embedded, and no file is ever deleted or moved."""
        started = time.perf_counter()
        if IMAGE not in self.model.modalities:
            raise UnsupportedModalityError(f"index {self.name} holds text only; duplicates need a CLIP model")
        chosen = dups.check_request(
            dups.default_threshold(self.model.spec) if threshold is None else threshold, keep, method
        )
        with self.store.snapshot():
            allowed = self._retrieval.allowed_ids("image", path, under)
            pictures, vectors = dups.indexed_pictures(self.store, allowed, self._locator())
        ann = method == "ann" or (method == "auto" and len(pictures) > dups.EXACT_UP_TO)
        own = self.vector_file.vectors if ann else None
        groups, label = dups.group_duplicates(pictures, vectors, chosen, keep, method, progress, own)
        return DuplicateReport(groups, len(pictures), chosen, label, time.perf_counter() - started, keep)

    def _locator(self) -> Callable[[int, str], str]:
        """(root id, relpath) to a file's path as `Hit.path` has it, each root located once (not per file)."""
        roots = {root.id: (root, self.root_path(root), root_kind(root) == FOLDER) for root in self.store.roots()}

        def locate(root_id: int, relpath: str) -> str:
            root, where, on_disk = roots[root_id]
            if on_disk:
                self._lookup.check_relpath(relpath)
            return item_location(root, where, relpath)

        return locate

    # --- browsing ----------------------------------------------------------------------------------

    def browse(self, limit: int = 24, offset: int = 0, *, order: str = "random", seed: int = 0) -> PicturePage:
        """`limit` pictures from position `offset` of the collection, with the total: `order` is random (a
        shuffle fixed by `seed`, 0 to 2**32 - 1: paging through it shows every picture once), newest (by
        the file's modified time) or path. Each is an `Item` with its captions. Bad arguments are a
        `QueryError`."""
        with self.store.snapshot():
            return picture_page(self.store, limit, offset, order, seed, self._locator())

    # --- zero-shot tags for every picture ----------------------------------------------------------

    def tag(
        self,
        labels: str | Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        top: int = 1,
        *,
        progress: bool = False,
    ) -> TagReport:
        """Tag every picture with its `top` most likely labels (zero-shot, as `classify` scores them),
        from the vectors in the index: no picture is embedded again. Pictures already tagged with the
        same labels, templates and `top` are kept; anything else re-tags them all. Later crawls tag the
        pictures they add."""
        started = time.perf_counter()
        if IMAGE not in self.model.modalities:
            raise UnsupportedModalityError(f"index {self.name} holds text only; tagging needs a CLIP model")
        names, chosen, top = tags.prepare(labels, templates, top)
        with WriterLock(self.path / LOCK, self.name):
            self.store.check_schema()
            with self.store.snapshot():
                current = tags.read_tag_set(self.store)
            reason = tags.settings_change(current, names, chosen, top)
            if current is not None and current.fingerprint != self.model.fingerprint:
                reason = "model changed"
            report = TagReport(labels=len(names), top=top, retagged=reason is not None, reason=reason)
            if reason is not None:
                encoder = self.model.query_encoder()
                start_loading = getattr(encoder, "start_loading", None)
                if start_loading is not None and needs_text_tower(encoder, names, chosen):
                    start_loading(images=False, text=True)
                vectors = label_vectors(encoder, names, chosen)
                report.label_seconds = time.perf_counter() - started
                tags.replace_tag_set(
                    self.store, names, chosen, top, self.model.fingerprint, encoder.logit_scale, vectors
                )
            report.tagged = self._tag_untagged(progress)
            report.pictures = self.store.counts().get("images", 0)
        report.seconds = time.perf_counter() - started
        return report

    def tag_set(self) -> TagSet | None:
        """The labels the pictures are tagged with, and how; None when they never were."""
        with self.store.snapshot():
            return tags.read_tag_set(self.store)

    def tag_counts(self) -> dict[str, int]:
        """How many pictures carry each label, in the tag set's order ({} when nothing is tagged)."""
        with self.store.snapshot():
            return tags.counts(self.store)

    def tagged_count(self) -> int:
        """How many pictures carry tags."""
        with self.store.snapshot():
            return tags.tagged_count(self.store)

    def tags_of(self, item_ids: Iterable[int]) -> dict[int, tuple[LabelScore, ...]]:
        """The tags of these image items, most likely first; untagged items are left out."""
        with self.store.snapshot():
            return tags.tags_of(self.store, item_ids)

    def tag_rows(self) -> Iterator[TagRow]:
        """Every tag of every picture with the picture's path, for export (CSV, JSON lines)."""
        return tags.rows(self.store, self.root_path)

    def untag(self) -> bool:
        """Forget the tag set and every tag; False when there were none. Later crawls tag nothing."""
        with WriterLock(self.path / LOCK, self.name):
            return tags.clear(self.store)

    def _tag_untagged(self, progress: bool = False) -> int:
        """Tag the pictures that have no tags yet, with the recorded tag set (the writer lock is held)."""
        tags.forget_removed(self.store)
        with self.store.snapshot():
            tag_set = tags.read_tag_set(self.store)
            waiting = tags.untagged_count(self.store) if tag_set is not None else 0
        if tag_set is None or not waiting or tag_set.fingerprint != self.model.fingerprint:
            return 0
        with progress_bar(waiting, "tagging", progress) as bar:
            return tags.tag_untagged(self.store, tag_set, bar.update)

    def _tag_arrivals(self, report: CrawlReport) -> CrawlReport:
        """After a crawl (the writer lock still held): tag what it added, when the index has tags."""
        report.tagged = self._tag_untagged() if tags.has_tables(self.store) else 0
        return report
