"""Caption items kept in line with where captions come from: a picture's sidecar file, the caption fields
embedded in the picture (XMP, IPTC, EXIF), and captions files.

A caption is an item of its own (text → image and image → text search both use it). New captions are
queued and embedded together just before their chunk commits, reusing the vector of any text the index
already holds, so a caption shared by many pictures is embedded once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .chunks import ChunkWriter
from .crawl import FoundFile, clean_sidecar_captions, read_sidecar, text_hash
from .embedded_captions import FIELDS, read_embedded
from .errors import VecsearchError
from .model import IndexModel
from .results import CrawlReport
from .sidecars import DEFAULT_LANGUAGES, SidecarCaption, parse_languages
from .store import Store

SIDECAR = "sidecar"
TEXT_VECTORS_KEPT = 50_000  # vectors of texts seen in this crawl, kept to be reused
# Recorded with each file's sidecar signature: a file whose captions were read by another version of the
# readers, or with other settings, is read again once (how Tux Paint lines lost their prefixes).
READER_VERSION = 2
_SETTINGS_KEY = "caption_settings"


@dataclass(frozen=True)
class CaptionSettings:
    """How an index reads captions: the languages kept, and whether fields embedded in pictures count."""

    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    embedded: bool = True

    @property
    def tag(self) -> str:
        return f"c{READER_VERSION};{','.join(sorted(self.languages))};{'e' if self.embedded else '-'}"


def caption_settings(store: Store) -> CaptionSettings:
    """The caption settings recorded in an index (the defaults for one that never set any)."""
    row = store.conn.execute("SELECT value FROM meta WHERE key = ?", (_SETTINGS_KEY,)).fetchone()
    if row is None:
        return CaptionSettings()
    data = json.loads(row[0])
    return CaptionSettings(tuple(data.get("languages", DEFAULT_LANGUAGES)), bool(data.get("embedded", True)))


def record_caption_settings(
    store: Store, languages: str | Sequence[str] | None = None, embedded: bool | None = None
) -> CaptionSettings:
    """Record new caption settings (None keeps the recorded one); later crawls use them, and a change
    has every picture's captions read again on the next crawl."""
    settings = caption_settings(store)
    if languages is not None:
        try:
            settings = CaptionSettings(parse_languages(languages), settings.embedded)
        except ValueError as exc:
            raise VecsearchError(f"caption languages: {exc}") from exc
    if embedded is not None:
        settings = CaptionSettings(settings.languages, embedded)
    if settings == caption_settings(store):
        return settings
    value = json.dumps({"languages": list(settings.languages), "embedded": settings.embedded})
    with store.transaction():
        store.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (_SETTINGS_KEY, value))
    return settings


@dataclass
class CaptionJob:
    file_id: int
    text: str
    source: str
    position: int
    language: str | None = None


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
        self.settings = caption_settings(store)
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

    def signature(self, found: FoundFile) -> str:
        """What a file's captions were last read from: the readers and settings, the sidecar's size and
        time and, when embedded captions are read, the picture's own (they live in it)."""
        picture = f"{found.size}:{found.mtime_ns}" if self.settings.embedded and found.captions is None else ""
        return f"{self.settings.tag}|{found.sidecar_sig or ''}|{picture}"

    def sync_sidecar(self, file_id: int, found: FoundFile, recorded: str | None) -> None:
        """Bring a file's own captions (its sidecar, the fields embedded in it) up to date. They are
        recorded as read in the same chunk as the captions (flushed before every commit). A refused
        sidecar is not recorded as read: every crawl tries it again and reports it again, as it does a
        picture it skips."""
        languages = self.settings.languages
        captions = [SidecarCaption(text) for text in found.captions or ()]
        sig: str | None = self.signature(found)
        if found.captions is None and found.sidecar is not None:
            captions, reason = read_sidecar(found.sidecar, languages)
            if reason:
                self.skip(str(found.sidecar), reason)
                sig = None
        by_source: dict[str, list[SidecarCaption]] = {SIDECAR: captions, **{field: [] for field in FIELDS}}
        if self.settings.embedded and found.captions is None:
            for caption in read_embedded(found.path, languages):
                by_source[caption.field].append(SidecarCaption(caption.text, caption.language))
            by_source = {source: clean_sidecar_captions(texts) for source, texts in by_source.items()}
        existing: dict[str, list[tuple[int, str]]] = {}
        for item_id, text, source in self.store.captions_of(file_id):
            existing.setdefault(source, []).append((item_id, text))
        for source, wanted in by_source.items():
            self.sync(file_id, wanted, source, existing.get(source, []))
        if sig != recorded:
            self.writer.begin()
            self.store.set_sidecar_sig(file_id, sig)

    def sync(
        self,
        file_id: int,
        wanted: Sequence[str | SidecarCaption],
        source: str,
        existing: list[tuple[int, str]] | None = None,
    ) -> None:
        """Make a file's captions from one source these, in this order, embedding only new texts."""
        if existing is None:
            existing = [(item_id, text) for item_id, text, _ in self.store.captions_of(file_id, source)]
        captions = [SidecarCaption(c) if isinstance(c, str) else c for c in wanted]
        texts = [caption.text for caption in captions]
        have = [text for _, text in existing]
        if have == texts:
            return
        stale = [item_id for item_id, text in existing if text not in texts]
        if stale:
            self.writer.remove_items(stale)
            self.report.captions_removed += len(stale)
        for position, caption in enumerate(captions):
            if caption.text not in have:
                self.queued.append(CaptionJob(file_id, caption.text, source, position, caption.language))

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
                language=job.language,
            )
            self.writer.add(item_id, vector)
            self.report.captions_added += 1
        if len(self._text_vectors) > TEXT_VECTORS_KEPT:
            self._text_vectors.clear()
