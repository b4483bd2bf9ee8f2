"""The typed values the API returns: search hits, zero-shot labels and crawl reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One search result.

    `path` is the picture the item is about (for a caption, the image it describes); `image` is the id
    of that picture's image item (None in a captions-only index), so a caption hit can be refined with
    `--like`; `source` says where a caption came from (its sidecar file, a captions file, or the field
    of the picture that holds it, such as `xmp:dc:description`), `language` its language where known;
    `tags` are the picture's zero-shot tags, most likely first, where the index has tags (`Index.tag`).
    """

    rank: int
    id: int
    score: float
    kind: str
    path: str
    relpath: str
    caption: str | None
    image: int | None
    source: str | None = None
    language: str | None = None
    tags: tuple[LabelScore, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(data["tags"])  # as JSON has it
        return data


@dataclass(frozen=True)
class LabelScore:
    """Zero-shot result for one label: softmax probability over the labels, and the raw cosine."""

    label: str
    probability: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Caption:
    id: int
    text: str
    source: str | None
    language: str | None = None


@dataclass(frozen=True)
class Item:
    """One indexed item with its file: what a result leads to.

    `text` is a caption item's own text; `captions` are every caption of the item's picture, so a page
    can show an image with all it is known by; `image` is the id of the picture's image item.
    """

    id: int
    kind: str
    path: str
    relpath: str
    text: str | None
    image: int | None
    captions: tuple[Caption, ...]
    bytes: int
    mtime_ns: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PicturePage:
    """A page of the collection's pictures (`Index.browse`): `items` are image items from position
    `offset` of the `total` pictures, in `order` (shuffled by `seed` when the order is random)."""

    items: tuple[Item, ...]
    total: int
    offset: int
    order: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["items"] = [item.to_dict() for item in self.items]
        return data


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class CrawlReport:
    """What one `index` run did. Counts are of image files unless they say captions."""

    added: int = 0
    updated: int = 0
    renamed: int = 0
    reused: int = 0  # new files whose content was already indexed: vector copied, not recomputed
    removed: int = 0
    unchanged: int = 0
    captions_added: int = 0
    captions_removed: int = 0
    embedded_images: int = 0
    embedded_captions: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    vector_index: str | None = None  # what was done to the FAISS index type (rebuilt, retuned), if anything
    inference: dict[str, Any] | None = None  # the image tower's inference mode and its check against fp32
    text_export: str | None = None  # the text tower exported for torch-free text queries, if it was now
    # A distributed crawl's own figures (engine, shards written and reused, pictures its model embedded,
    # seconds per phase); None for the local crawler.
    distributed: dict[str, Any] | None = None
    tagged: int = 0  # pictures given zero-shot tags after the crawl (where the index has tags)

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.updated
            or self.renamed
            or self.reused
            or self.removed
            or self.captions_added
            or self.captions_removed
        )

    @property
    def indexed_nothing(self) -> bool:
        """Files were found but none could be indexed (and none were already): a failed run."""
        seen = self.added + self.updated + self.renamed + self.reused + self.unchanged
        return seen == 0 and bool(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [asdict(s) for s in self.skipped]
        return data
