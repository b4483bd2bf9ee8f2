"""The API's JSON shapes: they make the OpenAPI schema, and FastAPI checks requests against them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from .. import MAX_K, Hit, Item, LabelScore
from ..query import NON_SPACE, PICTURE_REF_PATTERN, POSITIVE_TERM_PATTERN, REMOTE_TERM_PATTERN

# Answers are the library's own result types (vecsearch.results), so that the API and the library cannot
# drift apart; a thumbnail URL is all the server adds.
Thumbnail = Annotated[str | None, Field(description="URL of the picture's thumbnail, if it has one.")]
# Every field is in every answer, defaults or not: the schema says so.
ANSWER = ConfigDict(json_schema_serialization_defaults_required=True)


class Kind(StrEnum):
    """Which items a search returns (a named type in the schema, so generated clients get one enum)."""

    IMAGE = "image"
    CAPTION = "caption"
    ANY = "any"


# Every constraint the server enforces is stated here, so that a request the schema allows is answered.
# Patterns are checked with Python's `re` (pydantic's default engine has no lookahead) and stated in
# the schema as they are.
def ecma(pattern: str) -> re.Pattern[str]:
    """A schema pattern as JSON Schema reads it: found anywhere, `$` only at the very end (in Python it
    also matches before a final newline)."""
    return re.compile(pattern.replace("$", r"\Z"))


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    compiled = ecma(pattern)

    def check(value: str) -> str:
        if not compiled.search(value):
            raise ValueError(what)
        return value

    return check


def pattern_of(pattern: str, what: str, description: str, **extra: Any) -> Any:
    """A string type that must match `pattern`, stated in the schema."""
    schema = {"pattern": pattern, **extra}
    return Annotated[
        str, AfterValidator(_matching(pattern, what)), Field(description=description, json_schema_extra=schema)
    ]


Term = pattern_of(
    REMOTE_TERM_PATTERN,
    "not a query term: text (`a red apple`, `-0.5:green`, `text:...`), `id:N` or `upload:<sha256>`; a weight is "
    "a decimal from 0.000001 to 999999.999999; paths and URLs are refused",
    "A query term: text (`a red apple`, `-0.5:green`), `id:42`, or `upload:<sha256>` from POST /api/v1/uploads.",
)
PictureRef = pattern_of(
    PICTURE_REF_PATTERN,
    "names no picture: give id:N (an indexed item) or upload:<sha256> (an uploaded picture)",
    "`id:42` (an indexed item) or `upload:<sha256>` (an uploaded picture).",
)
# A glob over indexed paths, never a place on this machine: no absolute paths, no `~`, no drive letters.
PATH_GLOB_PATTERN = r"^(?![/~\\])(?![\s\S]:)[\s\S]*$"
PathGlob = pattern_of(
    PATH_GLOB_PATTERN,
    "a glob over the indexed files' paths inside their folders (like trips/*.jpg or */2024/*), not an absolute path",
    "Glob over the indexed files' paths inside their folders (`trips/*.jpg`).",
)
# The largest whole number a JSON number carries exactly (JavaScript's Number.MAX_SAFE_INTEGER): ids and
# counts above it would be rounded by clients (and by validators that read JSON numbers as doubles).
MAX_JSON_INT = 2**53 - 1


def _whole(value: Any) -> Any:
    """JSON has one number type: 12.0 is the integer 12 (as JSON Schema says), while true and "12" are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema reads one; strict otherwise (no booleans, no numeric strings). Field first:
# after a validator, pydantic writes its bounds into the schema under the wrong names.
JsonInt = Annotated[int, Field(strict=True), BeforeValidator(_whole)]
ItemIdValue = Annotated[int, Field(strict=True, ge=1, le=MAX_JSON_INT), BeforeValidator(_whole)]
# The same in a URL's query string, where every value arrives as text.
ItemIdParam = Annotated[int, Field(ge=1, le=MAX_JSON_INT)]
# One label as `classify` uses it: words separated by single spaces (so distinct strings are distinct labels).
Label = pattern_of(
    rf"^{NON_SPACE}+(?: {NON_SPACE}+)*$", "a label is words separated by single spaces", "A label (`a cat`)."
)
Template = pattern_of(
    r"^[^{}]*\{\}[^{}]*$",
    "a prompt template has one {} where the label goes and no other braces",
    "A prompt template with one `{}` for the label (`a photo of a {}.`).",
)
POSITIVE_TERM = ecma(POSITIVE_TERM_PATTERN)
# A query needs something to search for: a term without a leading minus, or an item to search like.
SOMETHING_TO_SEARCH: JsonDict = {
    # (if/then rather than anyOf: code generators read a top-level anyOf as a union of two request types)
    "if": {"properties": {"like": {"maxItems": 0}}},
    "then": {
        "required": ["terms"],
        "properties": {"terms": {"contains": {"type": "string", "pattern": POSITIVE_TERM_PATTERN}}},
    },
}


class SearchRequest(BaseModel):
    model_config = ConfigDict(strict=True, json_schema_extra=SOMETHING_TO_SEARCH)

    terms: list[Term] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="Query terms: text (`a red apple`, `-0.5:green`), `id:42`, or `upload:<sha256>` from "
        "POST /api/v1/uploads. At least one term without a leading minus, unless `like` names an item.",
        examples=[["a red apple", "-0.5:green"]],
    )
    k: JsonInt = Field(10, ge=1, le=MAX_K, description="How many results.")
    kind: Kind | None = Field(  # its JSON string is the enum's value (strict would want an instance)
        None, strict=False, description="Which items to return (default: images, or captions in a text-only index)."
    )
    path: PathGlob | None = None  # type: ignore[valid-type]
    min_score: float | None = Field(None, ge=-1, le=1, description="Cosine floor.")
    within: float | None = Field(None, ge=0, le=2, description="Keep results within this of the best score.")
    like: list[ItemIdValue] = Field(default_factory=list, description="Item ids to move towards (more like this).")
    unlike: list[ItemIdValue] = Field(default_factory=list, description="Item ids to move away from (less like this).")
    tag: str | None = Field(
        None, description="Only pictures carrying this zero-shot tag (GET /api/v1/tags lists them)."
    )

    @model_validator(mode="after")
    def _has_something_to_search(self) -> SearchRequest:
        if not self.like and not any(POSITIVE_TERM.match(term) for term in self.terms):
            raise ValueError("terms: nothing to search for; give a term without a leading minus, or an item in like")
        return self


@dataclass(frozen=True)
class HitOut(Hit):
    __pydantic_config__ = ANSWER
    thumbnail: Thumbnail = None


class SearchResponse(BaseModel):
    query: SearchRequest
    hits: list[HitOut]
    took_ms: float
    generation: int
    note: str | None = Field(None, description="Why there are no hits when the query itself is the reason.")


class PictureRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    image: PictureRef  # type: ignore[valid-type]


class DescribeRequest(PictureRequest):
    k: JsonInt = Field(5, ge=1, le=MAX_K)


class DescribeResponse(BaseModel):
    image: str
    hits: list[HitOut]
    took_ms: float


class ClassifyRequest(PictureRequest):
    labels: list[Label] = Field(  # type: ignore[valid-type]
        min_length=2, json_schema_extra={"uniqueItems": True}, examples=[["cat", "dog", "car"]]
    )
    templates: list[Template] | None = Field(None, description="Prompt templates; default: the library's.")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _distinct_labels(self) -> ClassifyRequest:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: each label once")
        return self


class ClassifyResponse(BaseModel):
    image: str
    labels: list[LabelScore]
    took_ms: float


class UploadResponse(BaseModel):
    upload: str = Field(description="The term that names this picture in queries.")
    sha256: str
    width: int
    height: int
    bytes: int
    items: list[int] = Field(description="Indexed images with the same content.")


@dataclass(frozen=True)
class ItemResponse(Item):
    __pydantic_config__ = ANSWER
    thumbnail: Thumbnail = None


# How GET /api/v1/pictures may order the collection, and its shuffle's seeds (as Index.browse takes them).
BrowseOrder = Literal["random", "newest", "path"]
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class PictureOut(Item):
    __pydantic_config__ = ANSWER
    thumbnail: Thumbnail = None
    tags: tuple[LabelScore, ...] = ()


class PicturesResponse(BaseModel):
    pictures: list[PictureOut] = Field(description="Image items with their captions, tags and thumbnails.")
    total: int = Field(description="Pictures in the index.")
    offset: int
    limit: int
    order: BrowseOrder
    seed: int
    next_offset: int | None = Field(description="Where the next page starts; null after the last picture.")
    generation: int


class TagCount(BaseModel):
    label: str
    pictures: int = Field(description="Pictures carrying this tag among their kept labels.")


class TagsResponse(BaseModel):
    labels: list[TagCount] = Field(description="Every label of the tag set, in its order; empty without tags.")
    templates: list[str]
    top: int | None = Field(description="Labels kept per picture; null without tags.")
    tagged: int = Field(description="Pictures that carry tags.")
    pictures: int = Field(description="Pictures in the index.")


class Health(BaseModel):
    status: str
    generation: int
    items: int
    worker: int = Field(description="Process id of the server process (worker) that answered.")


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422, 503)}
