"""Prompts as queries: parse terms, embed them, and combine them into one query vector.

A term is text, an image (path or http(s) URL) or an indexed item (`id:42`), with an optional sign and
weight: `cat`, `+hat`, `-dog`, `2:cat`, `-0.5:./dog.jpg`, `text:notes.jpg`, `image:scan`, `id:42`.
The query vector is the normalised sum of `sign * weight * embedding` over the terms (rclip's
arithmetic); relevance feedback adds liked items and subtracts unliked ones the same way (Rocchio).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CancelledQueryError, ImageError, NotInIndexError, QueryError
from .images import DEFAULT_MAX_MEGAPIXELS, is_image_path, load_image

TEXT, IMAGE, URL, ITEM = "text", "image", "url", "item"
LIKE_WEIGHT = 1.0
UNLIKE_WEIGHT = 0.5
MAX_URL_BYTES = 50 << 20
# Weights outside this range are typing mistakes, and a sum over them would lose the other terms.
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6
# Item ids are SQLite integers; a longer number can name no item (and would overflow SQLite).
MAX_ITEM_ID = 2**63 - 1
# In queries from a web request, a picture sent earlier: `upload:` and the SHA-256 of its bytes.
UPLOAD_PREFIX = "upload:"

_WEIGHT = re.compile(r"^(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?):(?P<rest>.*)$", re.S)
# Things that look like a weight but are not one: '1.2.3:', '1e:', '-2:' after a sign, ':cat' (no
# number at all) and the words Python's float() would take ('inf:', 'nan:').
_BAD_WEIGHT = re.compile(r"^(?:[-+]?[0-9.eE]*[0-9][0-9.eE]*|[-+]?(?:inf|infinity|nan)|):", re.I)
# Text that, written bare, would parse as something else: it needs the `text:` prefix to round-trip.
_NEEDS_TEXT_PREFIX = re.compile(r"^(?:text:|image:|id:|https?://)", re.I)


# The grammar of a term sent by a web request (`parse_term(..., local=False)`), as regular expressions an
# OpenAPI schema can state: every string they match parses; they are stricter than the parser in one way
# (a weight is a plain decimal from 0.000001 to 999999.999999, no exponent). Written without inline flags,
# so that a JSON Schema (ECMA-262) validator reads them as Python does.
# Whitespace as Python's str.strip() and str.split() see it, spelled out: `\s` means less in ECMA-262
# (no \x1c-\x1f, no \x85) and more (U+FEFF).
_SPACES = r"\t-\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
SPACE, NON_SPACE = f"[{_SPACES}]", f"[^{_SPACES}]"


def _caseless(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


_ANY = r"[\s\S]"
_REMOTE_WEIGHT = rf"(?=[0-9.]*[1-9])(?:[0-9]{{1,6}}(?:\.[0-9]{{1,6}})?|\.[0-9]{{1,6}}):{SPACE}*"
_REMOTE_ITEM = _caseless("id:") + rf"{SPACE}*0*[1-9][0-9]{{0,17}}"
_REMOTE_UPLOAD = _caseless(UPLOAD_PREFIX) + rf"{SPACE}*[0-9a-fA-F]{{64}}"
_NOT_PLAIN = "|".join(
    [_caseless(w) for w in ("image:", "text:", "id:", UPLOAD_PREFIX)]
    + [_caseless("http") + "[sS]?://", r"[-+]?[0-9.eE]*[0-9][0-9.eE]*:"]
    + [r"[-+]?(?:" + "|".join(_caseless(w) for w in ("infinity", "inf", "nan")) + "):", ":"]
)
_REMOTE_BODY = (
    rf"(?:{_caseless('text:')}{SPACE}*{NON_SPACE}{_ANY}*|{_REMOTE_ITEM}|{_REMOTE_UPLOAD}"
    rf"|(?!{_NOT_PLAIN}){NON_SPACE}{_ANY}*)"
)
_REMOTE_WEIGHTED = rf"(?:{_REMOTE_WEIGHT})?{_REMOTE_BODY}"
REMOTE_TERM_PATTERN = rf"^{SPACE}*(?:[+-]{SPACE}*{_REMOTE_WEIGHTED}|(?![+-]){_REMOTE_WEIGHTED}|[+-]){SPACE}*$"
# A term that adds to the query (no leading minus; a lone '-' is the text '-').
POSITIVE_TERM_PATTERN = rf"^{SPACE}*(?:[^{_SPACES}-]|-{SPACE}*$)"
# A picture named by a web request: an indexed item or an upload.
PICTURE_REF_PATTERN = rf"^{SPACE}*(?:{_REMOTE_ITEM}|{_REMOTE_UPLOAD}){SPACE}*$"


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
        """The term as a user would type it; `parse_term(str(term)) == term` for parsed terms."""
        sign = "-" if self.weight < 0 else "+"
        prefix = {TEXT: "", IMAGE: "image:", URL: "", ITEM: "id:"}[self.kind]
        if self.kind == TEXT and _text_needs_prefix(self.value):
            prefix = "text:"
        return f"{sign}{_format_weight(abs(self.weight))}:{prefix}{self.value}"


def _format_weight(weight: float) -> str:
    """Short when exact (`2`, `0.5`), else every digit: a printed query must mean the same query."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(weight)


def _text_needs_prefix(value: str) -> bool:
    """Would this text, written bare, be read as an image, an item or a URL?"""
    return bool(_NEEDS_TEXT_PREFIX.match(value)) or "/" in value or "\\" in value or is_image_path(value)


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
        local: bool = True,
    ) -> Query:
        """Build a query from what a user typed. Raises QueryError with the reason when it can't.

        A single string (or id) in any of the lists is one term, not a sequence of characters.
        `local=False` reads terms that came from elsewhere (a web request): see `parse_term`.
        """
        terms, add, subtract = _listed(terms), _listed(add), _listed(subtract)
        like, unlike = _listed(like), _listed(unlike)
        parsed: list[Term] = []
        for token in terms:
            parsed.append(parse_term(token, base=base, local=local))
        for token in add:
            parsed.append(parse_term(token, sign=1.0, base=base, signed=False, local=local))
        for token in subtract:
            parsed.append(parse_term(token, sign=-1.0, base=base, signed=False, local=local))
        for ref in like:
            parsed.append(_feedback_term(ref, LIKE_WEIGHT))
        for ref in unlike:
            parsed.append(_feedback_term(ref, -UNLIKE_WEIGHT))
        query = cls(tuple(parsed))
        query.validate()
        return query

    def tokens(self) -> list[str]:
        """The query as terms a user could type: `Query.parse(query.tokens()) == query`."""
        return [str(term) for term in self.terms]

    def validate(self) -> None:
        """Refuse queries with nothing to search for (constructed ones too, not only parsed)."""
        if not self.terms:
            raise QueryError("empty query: give text, an image, or an item id to search like")
        if not any(t.weight > 0 for t in self.terms):
            raise QueryError("the query has only negative terms; add something to search for")

    @property
    def item_ids(self) -> list[int]:
        """Indexed items the query is made of; they are left out of its results."""
        return [t.item_id for t in self.terms if t.kind == ITEM]

    def with_terms(self, extra: Iterable[Term]) -> Query:
        return Query(self.terms + tuple(extra))


def _shown(text: str, limit: int = 200) -> str:
    """A user's text as it goes into an error message: one line (control characters escaped), and
    not a whole pasted document."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _listed(values: Sequence[Any] | str | int) -> Sequence[Any]:
    """`add="hat"` or `like=17` means one term; a string must not be read as its characters."""
    return [values] if isinstance(values, (str, int)) else values


def parse_term(
    token: str, sign: float = 1.0, base: Path | None = None, signed: bool = True, local: bool = True
) -> Term:
    """Read one term: [+|-][weight:][text:|image:|id:]body.

    Raises only QueryError, whatever the text: a term that cannot be read is the user's to fix.
    With `local=False` (terms from a web request) no term reads the file system or the network: bare
    words are always text, `image:` paths and URLs are refused, and `upload:NAME` names a picture the
    caller holds (an image term whose bytes are passed to the search).
    """
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
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            limits = f"from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}"
            raise QueryError(f"weight must be a positive number {limits} in '{_shown(raw)}'")
    elif _BAD_WEIGHT.match(text) and not text.lower().startswith(("http:", "https:")):
        raise QueryError(f"malformed weight in '{_shown(raw)}' (write it as 2:cat or 0.5:cat)")
    if not text:
        raise QueryError(f"empty query term '{_shown(raw)}'")
    signed_weight = sign * weight
    lowered = text.lower()
    if lowered.startswith("text:"):
        body = text[5:].strip()
        if not body:
            raise QueryError(f"empty text in '{_shown(raw)}'")
        return Term(TEXT, body, signed_weight)
    if lowered.startswith("id:"):
        return _item_term(text[3:].strip(), signed_weight, raw)
    if not local:
        if lowered.startswith(("image:", "http://", "https://")):
            raise QueryError(
                f"'{_shown(raw)}': a query sent to the server cannot name a file or a URL; send the picture "
                "itself (upload it) and use the upload: term the server returns"
            )
        if lowered.startswith(UPLOAD_PREFIX):
            name = text[len(UPLOAD_PREFIX) :].strip()
            if not re.fullmatch(r"[0-9a-fA-F]{64}", name):
                raise QueryError(f"'{_shown(raw)}' is not an upload: term (upload: and 64 hex digits)")
            return Term(IMAGE, UPLOAD_PREFIX + name.lower(), signed_weight)
        return Term(TEXT, text, signed_weight)
    if lowered.startswith(("http://", "https://")):
        return Term(URL, text, signed_weight)
    if lowered.startswith("image:"):
        return _image_term(text[6:].strip(), signed_weight, raw, base, explicit=True)
    # A bare word stays text even if a file of that name exists; paths need an image extension or a slash.
    looks_like_path = "/" in text or "\\" in text
    if "\n" not in text and (is_image_path(text) or (looks_like_path and _is_file(_resolve(text, base)))):
        return _image_term(text, signed_weight, raw, base, explicit=False)
    return Term(TEXT, text, signed_weight)


def _resolve(text: str, base: Path | None) -> Path:
    path = Path(text)
    with contextlib.suppress(RuntimeError):  # '~someone' with no such user: the name is taken literally
        path = path.expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def _is_file(path: Path) -> bool:
    """Like Path.is_file, but a name the system refuses (too long, no permission) is no file either."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _image_term(text: str, weight: float, raw: str, base: Path | None, explicit: bool) -> Term:
    if not text:
        raise QueryError(f"empty image path in '{_shown(raw)}'")
    path = _resolve(text, base)
    try:
        if path.is_dir():
            raise QueryError(f"'{_shown(text)}' is a folder, not an image")
        if not path.is_file():
            hint = "" if explicit else f" (to search for the words, write text:{_shown(text)})"
            raise QueryError(f"query image not found: {_shown(text)}{hint}")
        return Term(IMAGE, str(path.resolve()), weight)
    except (OSError, RuntimeError, ValueError) as exc:  # a name too long, a folder we may not enter, a loop
        reason = getattr(exc, "strerror", None) or exc
        raise QueryError(f"cannot use query image {_shown(text)} ({reason})") from exc


def _item_id(value: str) -> int | None:
    """The id a string names, or None when it is not a whole number an item could have."""
    if not re.fullmatch(r"[0-9]+", value):
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_ITEM_ID)) or int(digits) > MAX_ITEM_ID:
        return None
    return int(digits)


def _item_term(value: str, weight: float, raw: str) -> Term:
    item_id = _item_id(value)
    if item_id is None:
        if re.fullmatch(r"[0-9]+", value):
            raise QueryError(f"item id too large in '{_shown(raw)}' (ids go up to {MAX_ITEM_ID})")
        raise QueryError(f"item id must be a whole number in '{_shown(raw)}'")
    return Term(ITEM, str(item_id), weight)


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
    item_id = _item_id(text.strip())
    if item_id is None or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise QueryError(f"like and unlike take item ids from search results (got '{_shown(str(ref))}')")
    return Term(ITEM, str(item_id), math.copysign(weight, default_weight))


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
    min_size: int | None = None,
) -> np.ndarray:
    """The normalised, weighted sum of the terms' embeddings.

    `read_picture` gives the bytes of an image or URL term; without it, image files are read from
    disk and URLs are refused. `min_size` lets a JPEG decode at a reduced scale, as a crawl does. The sum is taken in float64 and counts as cancelled when what is left
    is below a millionth of the total weight: a direction made of rounding errors is no query.
    """
    query.validate()
    texts = [t for t in query.terms if t.kind == TEXT]
    pictures = [t for t in query.terms if t.kind in (IMAGE, URL)]
    items = [t for t in query.terms if t.kind == ITEM]
    total: np.ndarray | None = None

    def accumulate(vector: np.ndarray, term: Term) -> None:
        nonlocal total
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if not np.isfinite(vector).all():
            raise QueryError(f"the model gave no usable vector for {_shown(str(term))}")
        norm = float(np.linalg.norm(vector))
        contribution = term.weight * (vector / norm if norm > 0 else vector)
        total = contribution if total is None else total + contribution

    # Items first: an unknown id is reported before any model runs.
    item_vectors = []
    for term in items:
        vector = lookup(term.item_id) if term.item_id <= MAX_ITEM_ID else None
        if vector is None:
            raise NotInIndexError(f"no item with id {term.item_id} in this index")
        item_vectors.append(vector)
    if texts:
        for term, vector in zip(texts, embed_texts([t.value for t in texts]), strict=True):
            accumulate(vector, term)
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
                images.append(load_image(source, max_megapixels=max_megapixels, min_size=min_size))
            except ImageError as exc:
                raise QueryError(f"cannot use query image {_shown(term.value)}: {exc}") from exc
        for term, vector in zip(pictures, embed_images(images), strict=True):
            accumulate(vector, term)
    for term, vector in zip(items, item_vectors, strict=True):
        accumulate(vector, term)
    if total is None:
        raise QueryError("the query has nothing to search for")
    norm = float(np.linalg.norm(total))
    scale = sum(abs(t.weight) for t in query.terms)
    if not math.isfinite(norm) or norm <= 1e-6 * scale:
        raise CancelledQueryError("the query terms cancel out; nothing is left to search for")
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
        raise QueryError(f"cannot download query image {_shown(url)} ({reason})") from exc
    if len(data) > MAX_URL_BYTES:
        raise QueryError(f"query image {_shown(url)} is larger than {MAX_URL_BYTES >> 20} MB")
    return data
