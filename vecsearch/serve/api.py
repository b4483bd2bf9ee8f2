"""The JSON API's routes, version 1: what a client may send and what it gets back.

Mounted under API_PREFIX by `create_app`; a later, incompatible version would get a prefix of its own
while this one keeps answering.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from .. import DEFAULT_TEMPLATES, KINDS, MAX_K, CancelledQueryError, ImageError
from .. import Query as ParsedQuery
from ..images import is_image_path, load_image
from ..query import POSITIVE_TERM_PATTERN, UPLOAD_PREFIX
from ..thumbnails import MAX_SIZE, render_thumbnail, snap_size
from .schemas import (
    ERRORS,
    MAX_JSON_INT,
    POSITIVE_TERM,
    ClassifyRequest,
    ClassifyResponse,
    DescribeRequest,
    DescribeResponse,
    Health,
    ItemIdParam,
    ItemResponse,
    Kind,
    PathGlob,
    SearchRequest,
    SearchResponse,
    TagsResponse,
    Term,
    UploadResponse,
)
from .service import (
    API_PREFIX,
    NotFound,
    Service,
    TooLarge,
    check_path_glob,
    hit_out,
    thumbnail_url,
)

# A query picture is decoded whole (then shrunk for the model): above this a request is refused.
MAX_UPLOAD_MEGAPIXELS = 100.0

# Item ids are SQLite row ids; the API takes those a JSON number carries exactly. A larger number is refused
# as the schema says, never passed to the database (where one above 2^63 would overflow).
ItemId = Annotated[int, PathParameter(ge=1, le=MAX_JSON_INT, description="An item id from a search result.")]


def invalid(where: str, field: str, message: str) -> NoReturn:
    """A request the schema refuses but FastAPI cannot check by itself: 422 naming the field."""
    raise RequestValidationError([{"type": "value_error", "loc": (where, field), "msg": message, "input": None}])


def api_router(service: Service) -> APIRouter:
    """The version-1 routes over one service."""
    router = APIRouter()

    @router.get("/health", response_model=Health, tags=["index"])
    def health() -> dict[str, Any]:
        with service.current() as idx:
            return {
                "status": "ok",
                "generation": idx.generation,
                "items": idx.counts()["items"],
                "worker": os.getpid(),
            }

    @router.get("/info", tags=["index"])
    def info() -> dict[str, Any]:
        """The index's manifest with live counts, and the server's limits."""
        with service.current() as idx:
            data = idx.info()
        data["name"] = idx.name
        data["model"] = str(idx.spec)
        data["modalities"] = sorted(idx.modalities)
        data["kinds"] = list(KINDS)
        data["max_k"] = MAX_K
        data["max_upload_bytes"] = service.max_upload_bytes
        return data

    @router.get("/tags", response_model=TagsResponse, tags=["index"])
    def tag_counts() -> dict[str, Any]:
        """The zero-shot tags of the index's pictures (`vecsearch tag`): pictures per label."""
        with service.current() as idx:
            tag_set, counts = idx.tag_set(), idx.tag_counts()
            tagged, pictures = idx.tagged_count(), idx.counts()["images"]
        return {
            "labels": [{"label": label, "pictures": count} for label, count in counts.items()],
            "templates": list(tag_set.templates) if tag_set else [],
            "top": tag_set.top if tag_set else None,
            "tagged": tagged,
            "pictures": pictures,
        }

    def run_search(request: SearchRequest) -> dict[str, Any]:
        start = time.perf_counter()
        query = ParsedQuery.parse(request.terms, like=request.like, unlike=request.unlike, local=False)
        pattern = check_path_glob(request.path)
        pictures = service.pictures_of(query)
        note = None
        with service.current() as idx:
            try:
                hits = idx.search(
                    query,
                    request.k,
                    kind=request.kind.value if request.kind else None,
                    path=pattern,
                    min_score=request.min_score,
                    within=request.within,
                    pictures=pictures,
                    tag=request.tag,
                )
            except CancelledQueryError as exc:  # well formed, and nothing matches it: no error of the client's
                hits, note = [], str(exc)
            generation = idx.generation
        return {
            "query": request.model_dump(),
            "hits": [hit_out(h) for h in hits],
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
            "generation": generation,
            "note": note,
        }

    @router.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search(request: SearchRequest) -> dict[str, Any]:
        """Text, image (`upload:`), item (`id:`) and mixed weighted queries, refined and filtered."""
        return run_search(request)

    @router.get("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_get(
        q: Annotated[
            list[Term],
            Query(
                description="Query terms (repeat for more); at least one without a leading minus.",
                min_length=1,
                json_schema_extra={"contains": {"type": "string", "pattern": POSITIVE_TERM_PATTERN}},
            ),
        ],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Kind | None = None,
        path: PathGlob | None = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        within: Annotated[float | None, Query(ge=0, le=2)] = None,
        like: Annotated[list[ItemIdParam], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
        unlike: Annotated[list[ItemIdParam], Query()] = [],  # noqa: B006
        tag: str | None = None,
    ) -> dict[str, Any]:
        """The same search with the query in the URL (for links and curl)."""
        if not any(POSITIVE_TERM.match(term) for term in q):
            invalid("query", "q", "nothing to search for: give a term without a leading minus")
        return run_search(
            SearchRequest(
                terms=q,
                k=k,
                kind=kind,
                path=path,
                min_score=min_score,
                within=within,
                like=like,
                unlike=unlike,
                tag=tag,
            )
        )

    def read_upload(file: UploadFile) -> tuple[str, bytes, int, int]:
        data = file.file.read(service.max_upload_bytes + 1)
        if len(data) > service.max_upload_bytes:
            raise TooLarge(f"picture over {service.max_upload_bytes:,} bytes (the server's upload limit)")
        if not data:
            invalid("body", "file", "the upload is empty")
        try:
            picture = load_image(data, max_megapixels=MAX_UPLOAD_MEGAPIXELS)
        except ImageError as exc:
            raise ImageError(f"cannot use the uploaded file {file.filename or ''}: {exc}".replace("  ", " ")) from exc
        return service.uploads.add(data), data, picture.width, picture.height

    @router.post("/uploads", response_model=UploadResponse, status_code=201, responses=ERRORS, tags=["search"])
    def upload(
        file: Annotated[UploadFile, File(description="A picture (JPEG, PNG, WebP, GIF, BMP, TIFF).")],
    ) -> dict[str, Any]:
        """Send a picture to search by; the answer names it for queries (`upload:<sha256>`)."""
        digest, data, width, height = read_upload(file)
        with service.current() as idx:
            same = sorted(idx.items_with_content([data]))
        return {
            "upload": UPLOAD_PREFIX + digest,
            "sha256": digest,
            "width": width,
            "height": height,
            "bytes": len(data),
            "items": same,
        }

    @router.post("/search/image", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_image(
        file: Annotated[UploadFile, File(description="The picture to search by.")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Kind | None = None,
        path: PathGlob | None = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        within: Annotated[float | None, Query(ge=0, le=2)] = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """Upload a picture and search by it in one request."""
        digest, _, _, _ = read_upload(file)
        terms = [UPLOAD_PREFIX + digest]
        return run_search(
            SearchRequest(terms=terms, k=k, kind=kind, path=path, min_score=min_score, within=within, tag=tag)
        )

    @router.post("/describe", response_model=DescribeResponse, responses=ERRORS, tags=["image"])
    def describe(request: DescribeRequest) -> dict[str, Any]:
        """Image → text: the nearest distinct captions in the index."""
        start = time.perf_counter()
        picture = service.picture(request.image)
        with service.current() as idx:
            hits = idx.describe(picture, request.k)
        return {
            "image": request.image,
            "hits": [hit_out(h) for h in hits],
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
        }

    @router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["image"])
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        """Zero-shot classification of a picture over the given labels."""
        start = time.perf_counter()
        picture = service.picture(request.image)
        templates = request.templates if request.templates is not None else list(DEFAULT_TEMPLATES)
        with service.current() as idx:
            labels = idx.classify(picture, request.labels, templates)
        return {
            "image": request.image,
            "labels": [label.to_dict() for label in labels],
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
        }

    @router.get("/items/{item_id}", response_model=ItemResponse, responses=ERRORS, tags=["items"])
    def item(item_id: ItemId) -> dict[str, Any]:
        """An item with its file and all the captions of its picture."""
        with service.current() as idx:
            found = idx.item(item_id)
        if found is None:
            raise NotFound(f"no item with id {item_id} in this index")
        data = found.to_dict()
        data["thumbnail"] = thumbnail_url(found.id if found.kind == "image" else found.image, found.relpath)
        if data["thumbnail"] is None and is_image_path(found.relpath):
            data["thumbnail"] = f"{API_PREFIX}/items/{found.id}/thumbnail"
        return data

    @router.get(
        "/items/{item_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS},
        tags=["items"],
    )
    def thumbnail(
        request: Request,
        item_id: ItemId,
        size: Annotated[
            int, Query(ge=16, le=MAX_SIZE, description="Longest side; rounded up to 64/128/256/512/1024.")
        ] = 256,
    ) -> Response:
        """A JPEG preview of the item's picture (a caption item gives its picture's)."""
        with service.current() as idx:
            found = idx.item(item_id)
        if found is None:
            raise NotFound(f"no item with id {item_id} in this index")
        if not is_image_path(found.relpath):
            raise NotFound(f"item {item_id} has no picture")
        path = Path(found.path)
        picture: bytes | None = None
        try:
            stat = path.stat()
            key = (f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}", snap_size(size))
        except OSError as exc:
            with service.current() as idx:  # a member of a tar shard, a URI: read from its source
                picture = idx.picture_data(item_id)
            if picture is None:
                raise NotFound(f"the picture of item {item_id} is gone from disk ({exc.strerror or exc})") from exc
            key = (f"{found.path}\0{found.sha256}", snap_size(size))
        size = key[1]
        etag = '"' + hashlib.sha256(key[0].encode("utf-8", "surrogateescape")).hexdigest()[:20] + f'-{size}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        data = service.thumbnails.get(key)
        if data is None:
            try:
                data = render_thumbnail(picture if picture is not None else path, size)
            except ImageError as exc:
                raise NotFound(f"cannot make a thumbnail of item {item_id}: {exc}") from exc
            service.thumbnails.put(key, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    @router.get(
        "/uploads/{sha256}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}, **ERRORS},
        tags=["search"],
    )
    def upload_thumbnail(
        request: Request,
        sha256: Annotated[str, PathParameter(pattern="^[0-9a-fA-F]{64}$", description="From POST /uploads.")],
        size: Annotated[
            int, Query(ge=16, le=MAX_SIZE, description="Longest side; rounded up to 64/128/256/512/1024.")
        ] = 256,
    ) -> Response:
        """A JPEG preview of a picture the server holds (so that a link naming an upload can show it)."""
        digest, size = sha256.lower(), snap_size(size)
        etag = f'"{digest[:20]}-{size}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag and service.uploads.get(digest) is not None:
            return Response(status_code=304, headers=headers)
        picture = service.pictures_of(ParsedQuery.parse([UPLOAD_PREFIX + digest], local=False))[UPLOAD_PREFIX + digest]
        key = (f"upload\0{digest}", size)
        data = service.thumbnails.get(key)
        if data is None:
            data = render_thumbnail(picture, size)
            service.thumbnails.put(key, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    return router
