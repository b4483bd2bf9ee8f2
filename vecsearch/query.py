"""Prompts as queries: parse terms, embed them, and combine them into one query vector.

A term is text, an image (path or http(s) URL) or an indexed item (`id:42`), with an optional sign and
weight: `cat`, `+hat`, `-dog`, `2:cat`, `-0.5:./dog.jpg`, `text:notes.jpg`, `image:scan`, `id:42`.
The query vector is the normalised sum of `sign * weight * embedding` over the terms (rclip's
arithmetic); relevance feedback adds liked items and subtracts unliked ones the same way (Rocchio).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import ImageError, QueryError
from .images import DEFAULT_MAX_MEGAPIXELS, is_image_path, load_image

TEXT, IMAGE, URL, ITEM = "text", "image", "url", "item"
LIKE_WEIGHT = 1.0
UNLIKE_WEIGHT = 0.5
MAX_URL_BYTES = 50 << 20

_WEIGHT = re.compile(r"^(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?):(?P<rest>.*)$", re.S)
_BAD_WEIGHT = re.compile(r"^[-+]?[0-9.eE]*[0-9][0-9.eE]*:")


@dataclass(frozen=True)
class Term:
    """One part of a query. `weight` carries the sign: negative terms pull the query away."""

    kind: str
    value: str
    weight: float = 1.0

    @property
    def item_id(self) -> int:
        return int(self.value)

    def __str__(self) -> str:
        sign = "-" if self.weight < 0 else "+"
        prefix = {TEXT: "", IMAGE: "image:", URL: "", ITEM: "id:"}[self.kind]
        return f"{sign}{abs(self.weight):g}:{prefix}{self.value}"


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = field(default_factory=tuple)

    @classmethod
    def parse(
        cls,
        terms: Sequence[str] | str = (),
        *,
        add: Sequence[str] = (),
        subtract: Sequence[str] = (),
        like: Sequence[int | str] = (),
        unlike: Sequence[int | str] = (),
        base: Path | None = None,
    ) -> "Query":
        """Build a query from what a user typed. Raises QueryError with the reason when it can't."""
        if isinstance(terms, str):
            terms = [terms]
        parsed: list[Term] = []
        for token in terms:
            parsed.append(parse_term(token, base=base))
        for token in add:
            parsed.append(parse_term(token, sign=1.0, base=base, signed=False))
        for token in subtract:
            parsed.append(parse_term(token, sign=-1.0, base=base, signed=False))
        for ref in like:
            parsed.append(_feedback_term(ref, LIKE_WEIGHT))
        for ref in unlike:
            parsed.append(_feedback_term(ref, -UNLIKE_WEIGHT))
        query = cls(tuple(parsed))
        query.validate()
        return query

    def validate(self) -> None:
        if not self.terms:
            raise QueryError("empty query: give text, an image path or --like ID")
        if not any(t.weight > 0 for t in self.terms):
            raise QueryError("the query has only negative terms; add something to search for")

    @property
    def item_ids(self) -> list[int]:
        """Indexed items the query is made of; they are left out of its results."""
        return [t.item_id for t in self.terms if t.kind == ITEM]

    def with_terms(self, extra: Iterable[Term]) -> "Query":
        return Query(self.terms + tuple(extra))


def parse_term(token: str, sign: float = 1.0, base: Path | None = None, signed: bool = True) -> Term:
    """Read one term: [+|-][weight:][text:|image:|id:]body."""
    raw = token
    text = token.strip()
    if signed and text[:1] in "+-" and len(text) > 1:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:].lstrip()
    weight = 1.0
    match = _WEIGHT.match(text)
    if match:
        weight = float(match.group("w"))
        text = match.group("rest").strip()
        if not math.isfinite(weight) or weight <= 0 or weight > 1e6:
            raise QueryError(f"weight must be a positive number in '{raw}'")
    elif _BAD_WEIGHT.match(text) and not text.lower().startswith(("http:", "https:")):
        raise QueryError(f"malformed weight in '{raw}' (write it as 2:cat or 0.5:cat)")
    if not text:
        raise QueryError(f"empty query term '{raw}'")
    signed_weight = sign * weight
    lowered = text.lower()
    if lowered.startswith("text:"):
        body = text[5:].strip()
        if not body:
            raise QueryError(f"empty text in '{raw}'")
        return Term(TEXT, body, signed_weight)
    if lowered.startswith("id:"):
        return _item_term(text[3:].strip(), signed_weight, raw)
    if lowered.startswith(("http://", "https://")):
        return Term(URL, text, signed_weight)
    if lowered.startswith("image:"):
        return _image_term(text[6:].strip(), signed_weight, raw, base, explicit=True)
    # A bare word stays text even if a file of that name exists; paths need an image extension or a slash.
    looks_like_path = "/" in text or "\\" in text
    if "\n" not in text and (is_image_path(text) or (looks_like_path and _resolve(text, base).is_file())):
        return _image_term(text, signed_weight, raw, base, explicit=False)
    return Term(TEXT, text, signed_weight)


def _resolve(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def _image_term(text: str, weight: float, raw: str, base: Path | None, explicit: bool) -> Term:
    path = _resolve(text, base)
    if path.is_dir():
        raise QueryError(f"'{text}' is a folder, not an image")
    if not path.is_file():
        hint = "" if explicit else f" (to search for the words, write text:{text})"
        raise QueryError(f"query image not found: {text}{hint}")
    return Term(IMAGE, str(path.resolve()), weight)


def _item_term(value: str, weight: float, raw: str) -> Term:
    if not re.fullmatch(r"[0-9]+", value):
        raise QueryError(f"item id must be a whole number in '{raw}'")
    return Term(ITEM, str(int(value)), weight)


def _feedback_term(ref: int | str, default_weight: float) -> Term:
    """`--like 42` or `--like 2:42` (weight 2)."""
    text = str(ref).strip()
    weight = abs(default_weight)
    match = _WEIGHT.match(text)
    if match:
        weight = float(match.group("w"))
        text = match.group("rest").strip()
    if text.lower().startswith("id:"):
        text = text[3:]
    if not re.fullmatch(r"[0-9]+", text) or weight <= 0 or not math.isfinite(weight):
        raise QueryError(f"--like/--unlike take an item id from a search result (got '{ref}')")
    return Term(ITEM, str(int(text)), math.copysign(weight, default_weight))


# --- turning terms into one vector ------------------------------------------------------------

TextEmbedder = Callable[[Sequence[str]], np.ndarray]
ImageEmbedder = Callable[[Sequence[object]], np.ndarray]
VectorLookup = Callable[[int], "np.ndarray | None"]


def combine(
    query: Query,
    embed_texts: TextEmbedder,
    embed_images: ImageEmbedder,
    lookup: VectorLookup,
    read_picture: Callable[[Term], bytes] | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """The normalised, weighted sum of the terms' embeddings.

    `read_picture` gives the bytes of an image or URL term; without it, image files are read from
    disk and URLs are refused.
    """
    texts = [t for t in query.terms if t.kind == TEXT]
    pictures = [t for t in query.terms if t.kind in (IMAGE, URL)]
    total: np.ndarray | None = None

    def accumulate(vector: np.ndarray, weight: float) -> None:
        nonlocal total
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        contribution = weight * (vector / norm if norm > 0 else vector)
        total = contribution if total is None else total + contribution

    if texts:
        for term, vector in zip(texts, embed_texts([t.value for t in texts])):
            accumulate(vector, term.weight)
    if pictures:
        images = []
        for term in pictures:
            if read_picture is not None:
                source: bytes | str = read_picture(term)
            elif term.kind == URL:
                raise QueryError("image URLs need the network, which this call does not allow")
            else:
                source = term.value
            try:
                images.append(load_image(source, max_megapixels=max_megapixels))
            except ImageError as exc:
                raise QueryError(f"cannot use query image {term.value}: {exc}") from exc
        for term, vector in zip(pictures, embed_images(images)):
            accumulate(vector, term.weight)
    for term in query.terms:
        if term.kind == ITEM:
            vector = lookup(term.item_id)
            if vector is None:
                raise QueryError(f"no item with id {term.item_id} in this index")
            accumulate(vector, term.weight)
    assert total is not None
    norm = float(np.linalg.norm(total))
    if not math.isfinite(norm) or norm < 1e-6:
        raise QueryError("the query terms cancel out; nothing is left to search for")
    return (total / norm).astype(np.float32)


def fetch_url(url: str, timeout: float = 10.0) -> bytes:
    """Download a query image (bounded in size and time)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "vecsearch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_URL_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise QueryError(f"cannot download query image {url} ({reason})") from exc
    if len(data) > MAX_URL_BYTES:
        raise QueryError(f"query image {url} is larger than {MAX_URL_BYTES >> 20} MB")
    return data
