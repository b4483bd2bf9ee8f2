"""The web application: a JSON API under /api (its schema at /openapi.json) and the page at /."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import (
    DEFAULT_TEMPLATES,
    KINDS,
    MAX_K,
    ImageError,
    Index,
    VecsearchError,
    __version__,
)
from .. import Query as ParsedQuery
from ..images import is_image_path, load_image
from ..query import MAX_ITEM_ID, UPLOAD_PREFIX
from ..thumbnails import MAX_SIZE, ThumbnailCache, render_thumbnail, snap_size
from .schemas import (
    ERRORS,
    ClassifyRequest,
    ClassifyResponse,
    DescribeRequest,
    DescribeResponse,
    Health,
    ItemResponse,
    Kind,
    SearchRequest,
    SearchResponse,
    TagsResponse,
    UploadResponse,
)
from .service import (
    BODY_OVERHEAD,
    BodyLimit,
    NotFound,
    Service,
    TooLarge,
    Uploads,
    check_path_glob,
    error_response,
    hit_out,
    status_of,
    thumbnail_url,
    validation_message,
)

DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
# Uploaded pictures are kept (by content) so that later queries can refine them; oldest go first.
DEFAULT_UPLOAD_CACHE_BYTES = 256 << 20
DEFAULT_THUMBNAIL_CACHE_BYTES = 64 << 20
# A query picture is decoded whole (then shrunk for the model): above this a request is refused.
MAX_UPLOAD_MEGAPIXELS = 100.0
WEB = resources.files("vecsearch") / "web"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# Item ids are SQLite row ids: positive 64-bit integers. A larger number is refused as the schema says,
# never passed to the database (where it would overflow).
ItemId = Annotated[int, PathParameter(ge=1, le=MAX_ITEM_ID, description="An item id from a search result.")]


def create_app(
    index: Index,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    upload_cache_bytes: int = DEFAULT_UPLOAD_CACHE_BYTES,
    thumbnail_cache_bytes: int = DEFAULT_THUMBNAIL_CACHE_BYTES,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The web application over an open index.

    `allowed_hosts` are the host names requests may be addressed to (default: loopback names only,
    which stops other web sites from reaching the API through DNS rebinding); pass ["*"] to allow any.
    """
    service = Service(index, Uploads(upload_cache_bytes), ThumbnailCache(thumbnail_cache_bytes), max_upload_bytes)
    app = FastAPI(
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: not on a server that holds
        # someone's pictures (and not offline). The schema itself is at /openapi.json.
        docs_url=None,
        redoc_url=None,
        title="vecsearch",
        version=__version__,
        description="Prompt-as-search over one vecsearch index: text, image and mixed queries, refinement, "
        "describe, zero-shot classification, thumbnails.",
    )
    app.state.service = service
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_NAMES))
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + BODY_OVERHEAD)

    @app.exception_handler(VecsearchError)
    async def vecsearcherror_response(_request: Request, exc: VecsearchError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validationerror_response(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        # The page needs nothing from elsewhere: say so to the browser, so that nothing else can run in it.
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")

    @app.get("/api/health", response_model=Health, tags=["index"])
    def health() -> dict[str, Any]:
        with service.current() as idx:
            return {"status": "ok", "generation": idx.generation, "items": idx.counts()["items"]}

    @app.get("/api/info", tags=["index"])
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

    @app.get("/api/tags", response_model=TagsResponse, tags=["index"])
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
        with service.current() as idx:
            hits = idx.search(
                query,
                request.k,
                kind=request.kind,
                path=pattern,
                min_score=request.min_score,
                within=request.within,
                pictures=pictures,
                tag=request.tag,
            )
            generation = idx.generation
        return {
            "query": request.model_dump(),
            "hits": [hit_out(h) for h in hits],
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
            "generation": generation,
        }

    @app.post("/api/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search(request: SearchRequest) -> dict[str, Any]:
        """Text, image (`upload:`), item (`id:`) and mixed weighted queries, refined and filtered."""
        return run_search(request)

    @app.get("/api/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_get(
        q: Annotated[list[str], Query(description="Query terms (repeat for more).")] = [],  # noqa: B006
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Kind | None = None,
        path: str | None = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        within: Annotated[float | None, Query(ge=0, le=2)] = None,
        like: Annotated[list[int], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
        unlike: Annotated[list[int], Query()] = [],  # noqa: B006
        tag: str | None = None,
    ) -> dict[str, Any]:
        """The same search with the query in the URL (for links and curl)."""
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
            raise ImageError("the upload is empty")
        try:
            picture = load_image(data, max_megapixels=MAX_UPLOAD_MEGAPIXELS)
        except ImageError as exc:
            raise ImageError(f"cannot use the uploaded file {file.filename or ''}: {exc}".replace("  ", " ")) from exc
        return service.uploads.add(data), data, picture.width, picture.height

    @app.post("/api/uploads", response_model=UploadResponse, status_code=201, responses=ERRORS, tags=["search"])
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

    @app.post("/api/search/image", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_image(
        file: Annotated[UploadFile, File(description="The picture to search by.")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Kind | None = None,
        path: str | None = None,
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

    @app.post("/api/describe", response_model=DescribeResponse, responses=ERRORS, tags=["image"])
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

    @app.post("/api/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["image"])
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

    @app.get("/api/items/{item_id}", response_model=ItemResponse, responses=ERRORS, tags=["items"])
    def item(item_id: ItemId) -> dict[str, Any]:
        """An item with its file and all the captions of its picture."""
        with service.current() as idx:
            found = idx.item(item_id)
        if found is None:
            raise NotFound(f"no item with id {item_id} in this index")
        data = found.to_dict()
        data["thumbnail"] = thumbnail_url(found.id if found.kind == "image" else found.image, found.relpath)
        if data["thumbnail"] is None and is_image_path(found.relpath):
            data["thumbnail"] = f"/api/items/{found.id}/thumbnail"
        return data

    @app.get(
        "/api/items/{item_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **ERRORS},
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

    return app
