"""Database rows turned into what a user sees: search hits and items, with the paths of their files as
they are now (a moved index finds its folders relative to itself)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from .crawl import SIDECAR_SUFFIXES
from .errors import IndexCorruptError
from .pathutil import is_safe_relpath
from .query import MAX_ITEM_ID
from .results import Caption, Hit, Item
from .roots import FOLDER, item_location, root_kind
from .store import ItemRow, RootRow, Store
from .tags import tags_of


class ItemLookup:
    def __init__(self, store: Store, root_path: Callable[[RootRow], Path], folder: Path) -> None:
        self.store = store
        self.root_path = root_path
        self.folder = folder  # the index's, for messages

    def hits(
        self, pairs: list[tuple[int, float]], distinct_text: bool, kind: str | None = None, limit: int | None = None
    ) -> list[Hit]:
        """Hits for (item id, score) pairs, best first, at most `limit`; items a writer removed meanwhile are
        left out, and with `distinct_text` so is every caption whose text an earlier hit had. Captions, tags and
        places are looked up for the hits kept only (a text prompt's nearest items are mostly captions)."""
        chosen: list[tuple[int, float, ItemRow]] = []
        seen_texts: set[str] = set()
        with self.store.snapshot():
            rows = self.store.items((i for i, _ in pairs), kind)  # of that kind only
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
                chosen.append((item_id, score, row))
                if limit is not None and len(chosen) >= limit:
                    break
            file_ids = [row.file_id for _, _, row in chosen]
            first_captions = self.store.first_captions(file_ids)
            image_items = self.store.image_items_of_files(file_ids)
            tags = tags_of(self.store, image_items.values())
            roots = {root.id: root for root in self.store.roots()}
        hits: list[Hit] = []
        places: dict[int, Path] = {}  # where each root is now: found once, not once a hit (it stats folders)
        for item_id, score, row in chosen:
            root = roots[row.root_id]
            if root.id not in places:
                places[root.id] = self.root_path(root)
            image_path = self._location(root, row.relpath, places[root.id])
            caption = row.text if row.kind == "caption" else first_captions.get(row.file_id)
            source = None
            if row.kind == "caption":
                on_disk = root_kind(root) == FOLDER
                source = sidecar_path(Path(image_path)) if row.source == "sidecar" and on_disk else row.source
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    id=item_id,
                    score=score,
                    kind=row.kind,
                    path=image_path,
                    relpath=row.relpath,
                    caption=caption,
                    image=image_items.get(row.file_id),
                    source=source,
                    language=row.language,
                    tags=tags.get(image_items.get(row.file_id, -1), ()),
                )
            )
        return hits

    def item(self, item_id: int) -> Item | None:
        """An indexed item with its file and captions; None when there is no such item."""
        if not 0 < int(item_id) <= MAX_ITEM_ID:  # never an id (SQLite's are positive 64-bit integers)
            return None
        with self.store.snapshot():
            row = self.store.items([int(item_id)]).get(int(item_id))
            if row is None:
                return None
            file = self.store.file_at(row.root_id, row.relpath)
            captions = self.store.captions_of(row.file_id)
            caption_rows = self.store.items(i for i, _, _ in captions)
            image = self.store.image_item_of(row.file_id)
            root = next((r for r in self.store.roots() if r.id == row.root_id), None)
        if file is None or root is None:
            return None
        return Item(
            id=row.id,
            kind=row.kind,
            path=self._location(root, row.relpath),
            relpath=row.relpath,
            text=row.text if row.kind == "caption" else None,
            image=image,
            captions=tuple(Caption(i, text, source, caption_rows[i].language) for i, text, source in captions),
            bytes=file.size,
            mtime_ns=file.mtime_ns,
            sha256=file.sha256,
        )

    def with_content(self, contents: Iterable[bytes]) -> set[int]:
        """Image items with the same content as the given pictures."""
        found: set[int] = set()
        for data in contents:
            found.update(self.store.image_items_with_hash(hashlib.sha256(data).hexdigest()))
        return found

    def _location(self, root: RootRow, relpath: str, where: Path | None = None) -> str:
        if root_kind(root) == FOLDER:
            self.check_relpath(relpath)
        return item_location(root, self.root_path(root) if where is None else where, relpath)

    def check_relpath(self, relpath: str) -> None:
        if not is_safe_relpath(relpath):
            raise IndexCorruptError(
                f"index database names a file outside its folder ({relpath!r}); run "
                f"`vecsearch check --repair {self.folder}`"
            )


def sidecar_path(image_path: Path) -> str:
    """The caption sidecar of a picture: the one on disk, else where the first kind would be."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = image_path.with_name(image_path.stem + suffix)
        if candidate.exists():
            return str(candidate)
    return str(image_path.with_name(image_path.stem + SIDECAR_SUFFIXES[0]))
