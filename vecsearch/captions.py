"""Caption items kept in line with where captions come from: a picture's sidecar file and captions files.

A caption is an item of its own (text → image and image → text search both use it). New captions are
queued and embedded together just before their chunk commits, reusing the vector of any text the index
already holds, so a caption shared by many pictures is embedded once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .chunks import ChunkWriter
from .crawl import FoundFile, read_sidecar, text_hash
from .model import IndexModel
from .results import CrawlReport
from .store import Store

SIDECAR = "sidecar"
TEXT_VECTORS_KEPT = 50_000  # vectors of texts seen in this crawl, kept to be reused


@dataclass
class CaptionJob:
    file_id: int
    text: str
    source: str
    position: int


class CaptionSync:
    def __init__(
        self,
        store: Store,
        writer: ChunkWriter,
        model: IndexModel,
        report: CrawlReport,
        skip: Callable[[str, str], None],
        known_text: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.model = model
        self.report = report
        self.skip = skip
        self.known_text = known_text  # vectors embedded elsewhere (a distributed job), by text hash
        self.queued: list[CaptionJob] = []
        self._text_vectors: dict[str, np.ndarray] = {}

    def forget_texts(self) -> None:
        self._text_vectors = {}

    def sync_sidecar(self, file_id: int, found: FoundFile, recorded: str | None) -> None:
        """Bring a file's sidecar captions up to date. The sidecar is recorded as read in the same
        chunk as its captions (they are flushed before every commit). A refused sidecar is not recorded
        as read: every crawl tries it again and reports it again, as it does a picture it skips."""
        captions: list[str] = list(found.captions or ())
        sig = found.sidecar_sig
        if found.captions is None and found.sidecar is not None:
            captions, reason = read_sidecar(found.sidecar)
            if reason:
                self.skip(str(found.sidecar), reason)
                sig = None
        self.sync(file_id, captions, SIDECAR)
        if sig != recorded:
            self.writer.begin()
            self.store.set_sidecar_sig(file_id, sig)

    def sync(self, file_id: int, wanted: list[str], source: str) -> None:
        existing = self.store.captions_of(file_id, source)
        have = [text for _, text, _ in existing]
        if have == wanted:
            return
        stale = [item_id for item_id, text, _ in existing if text not in wanted]
        if stale:
            self.writer.remove_items(stale)
            self.report.captions_removed += len(stale)
        for position, text in enumerate(wanted):
            if text not in have:
                self.queued.append(CaptionJob(file_id, text, source, position))

    def flush(self) -> None:
        """Embed queued captions (reusing vectors of texts already known) and add their items."""
        jobs, self.queued = self.queued, []
        if not jobs:
            return
        missing: list[str] = []
        for job in jobs:
            digest = text_hash(job.text)
            if digest in self._text_vectors:
                continue
            stored = self.store.vector_for_text(digest)
            if stored is None and self.known_text is not None:
                stored = self.known_text(digest)
            if stored is not None:
                self._text_vectors[digest] = stored
            elif job.text not in missing:
                missing.append(job.text)
        if missing:
            vectors = self.model.encoder.embed_texts(missing)
            self.report.embedded_captions += len(missing)
            for text, vector in zip(missing, vectors, strict=True):
                self._text_vectors[text_hash(text)] = vector
        chunk = self.writer.begin()
        for job in jobs:
            digest = text_hash(job.text)
            vector = self._text_vectors[digest]
            item_id = self.store.add_item(
                "caption",
                job.file_id,
                vector,
                chunk.gen,
                text=job.text,
                source=job.source,
                position=job.position,
                text_hash=digest,
            )
            self.writer.add(item_id, vector)
            self.report.captions_added += 1
        if len(self._text_vectors) > TEXT_VECTORS_KEPT:
            self._text_vectors.clear()
