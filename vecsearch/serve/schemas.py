"""The API's JSON shapes: they make the OpenAPI schema, and FastAPI checks requests against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import MAX_K, Hit, Item, LabelScore

# Answers are the library's own result types (vecsearch.results), so that the API and the library cannot
# drift apart; a thumbnail URL is all the server adds.
Thumbnail = Annotated[str | None, Field(description="URL of the picture's thumbnail, if it has one.")]
# Every field is in every answer, defaults or not: the schema says so.
ANSWER = ConfigDict(json_schema_serialization_defaults_required=True)

Kind = Literal["image", "caption", "any"]


class SearchRequest(BaseModel):
    terms: list[str] = Field(
        default_factory=list,
        description="Query terms as the CLI reads them: text (`a red apple`, `-0.5:green`), `id:42`, or "
        "`upload:<sha256>` from POST /api/uploads. Paths and URLs are refused.",
        examples=[["a red apple", "-0.5:green"]],
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many results.")
    kind: Kind | None = Field(
        None, description="Which items to return (default: images, or captions in a text-only index)."
    )
    path: str | None = Field(None, description="Glob over the indexed files' paths (`trips/*.jpg`).")
    min_score: float | None = Field(None, ge=-1, le=1, description="Cosine floor.")
    within: float | None = Field(None, ge=0, le=2, description="Keep results within this of the best score.")
    like: list[int] = Field(default_factory=list, description="Item ids to move towards (more like this).")
    unlike: list[int] = Field(default_factory=list, description="Item ids to move away from (less like this).")
    tag: str | None = Field(None, description="Only pictures carrying this zero-shot tag (GET /api/tags lists them).")


@dataclass(frozen=True)
class HitOut(Hit):
    __pydantic_config__ = ANSWER
    thumbnail: Thumbnail = None


class SearchResponse(BaseModel):
    query: SearchRequest
    hits: list[HitOut]
    took_ms: float
    generation: int


class PictureRequest(BaseModel):
    image: str = Field(description="`id:42` (an indexed item) or `upload:<sha256>` (an uploaded picture).")


class DescribeRequest(PictureRequest):
    k: int = Field(5, ge=1, le=MAX_K)


class DescribeResponse(BaseModel):
    image: str
    hits: list[HitOut]
    took_ms: float


class ClassifyRequest(PictureRequest):
    labels: list[str] = Field(min_length=1, examples=[["cat", "dog", "car"]])
    templates: list[str] | None = Field(None, description="Prompt templates with `{}` for the label.")


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


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422, 503)}
