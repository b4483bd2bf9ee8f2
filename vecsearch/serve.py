"""`vecsearch serve`: the index and its model kept loaded behind a JSON API and a web page.

Loading the model is most of a cold query's time; a server pays it once and then answers in
milliseconds. Requests never reach the file system with a path of their own: query terms are text,
item ids or `upload:` names of pictures sent to the server, thumbnails are made only of files in the
index (found by item id), and a `path` filter is a glob over indexed paths, matched in memory.

`create_app(index)` returns the ASGI application (FastAPI), for tests and for embedding in another
server; `vecsearch serve` runs it with uvicorn. The index is used by one request at a time (a SQLite
connection and a FAISS index are not shared across threads); before each request it catches up with
what a crawl committed meanwhile, so an index can be re-crawled while it is served.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping, Sequence

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .classify import DEFAULT_TEMPLATES
from .encoders import IMAGE as IMAGE_MODALITY
from .errors import (
    ImageError,
    IndexCorruptError,
    IndexLockedError,
    IndexNotFoundError,
    ModelError,
    QueryError,
    UnsupportedModalityError,
    VecsearchError,
)
from .images import is_image_path, load_image
from .index import KINDS, MAX_K, Index
from .query import IMAGE as IMAGE_TERM
from .query import UPLOAD_PREFIX
from .query import Query as ParsedQuery
from .results import Hit
from .thumbnails import MAX_SIZE, ThumbnailCache, render_thumbnail, snap_size

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
# Uploaded pictures are kept (by content) so that later queries can refine them; oldest go first.
DEFAULT_UPLOAD_CACHE_BYTES = 256 << 20
DEFAULT_THUMBNAIL_CACHE_BYTES = 64 << 20
# A query picture is decoded whole (then shrunk for the model): above this a request is refused.
MAX_UPLOAD_MEGAPIXELS = 100.0
# Room for the multipart envelope around an upload, and the cap on any other request body.
BODY_OVERHEAD = 64 << 10
WEB = resources.files("vecsearch") / "web"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
Kind = Literal["image", "caption", "any"]
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- the API's JSON shapes (they make the OpenAPI schema) ---------------------------------------


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


class HitOut(BaseModel):
    rank: int
    id: int
    score: float
    kind: str
    path: str
    relpath: str
    caption: str | None
    image: int | None
    source: str | None
    thumbnail: str | None = Field(description="URL of the picture's thumbnail, if it has one.")


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


class LabelOut(BaseModel):
    label: str
    probability: float
    score: float


class ClassifyResponse(BaseModel):
    image: str
    labels: list[LabelOut]
    took_ms: float


class UploadResponse(BaseModel):
    upload: str = Field(description="The term that names this picture in queries.")
    sha256: str
    width: int
    height: int
    bytes: int
    items: list[int] = Field(description="Indexed images with the same content.")


class CaptionOut(BaseModel):
    id: int
    text: str
    source: str | None


class ItemResponse(BaseModel):
    id: int
    kind: str
    path: str
    relpath: str
    text: str | None
    image: int | None
    captions: list[CaptionOut]
    bytes: int
    mtime_ns: int
    sha256: str
    thumbnail: str | None


class Health(BaseModel):
    status: str
    generation: int
    items: int


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422, 503)}


# --- state held between requests ------------------------------------------------------------------


class Uploads:
    """Pictures sent to the server, by the SHA-256 of their bytes, bounded in total bytes (oldest out)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pictures: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._pictures:
                self._pictures.move_to_end(digest)
                return digest
            self._pictures[digest] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._pictures) > 1:
                _, old = self._pictures.popitem(last=False)
                self._bytes -= len(old)
        return digest

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._pictures.get(digest)
            if data is not None:
                self._pictures.move_to_end(digest)
            return data


class NotFound(VecsearchError):
    """An item or upload a request names does not exist (404)."""


class TooLarge(VecsearchError):
    """A request body over the server's limit (413)."""


@dataclass
class Service:
    """The index behind the API, one request at a time."""

    index: Index
    uploads: Uploads
    thumbnails: ThumbnailCache
    max_upload_bytes: int

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def current(self) -> Iterator[Index]:
        """The index, caught up with the last committed crawl, for one request."""
        with self._lock:
            self.index.refresh()
            yield self.index

    def pictures_of(self, query: ParsedQuery) -> dict[str, bytes]:
        pictures = {}
        for term in query.terms:
            if term.kind == IMAGE_TERM and term.value.startswith(UPLOAD_PREFIX):
                data = self.uploads.get(term.value[len(UPLOAD_PREFIX):])
                if data is None:
                    raise NotFound(
                        f"no uploaded picture {term.value[:20]}...: uploads are kept while the server runs and "
                        "room allows; upload it again"
                    )
                pictures[term.value] = data
        return pictures

    def picture(self, ref: str) -> str | bytes:
        """An image argument (`id:42` or `upload:<sha>`) as the index takes it."""
        query = ParsedQuery.parse([ref.strip()], local=False)
        term = query.terms[0]
        if term.kind == IMAGE_TERM:
            return self.pictures_of(query)[term.value]
        if term.kind == "item":
            return f"id:{term.value}"
        raise QueryError(f"'{ref[:100]}' names no picture: give id:N or an upload: term")

    def warm(self) -> None:
        """Load what the first query would (vectors, text model) before anyone waits for it, and import
        the libraries of the image model in the background (most of a first picture query's wait)."""
        with self.current() as index:
            _ = index.vectors
            index.query_vector(ParsedQuery.parse(["a photo"]))
            if IMAGE_MODALITY in index.modalities:
                threading.Thread(target=_import_image_libraries, name="vecsearch-preload", daemon=True).start()


def _import_image_libraries() -> None:
    try:
        import open_clip  # noqa: F401  (torch, torchvision, open_clip: seconds that nobody waits for now)
    except Exception:  # the first picture query will report what is wrong
        pass


def _hit_out(hit: Hit) -> dict[str, Any]:
    data = hit.to_dict()
    data["thumbnail"] = _thumbnail_url(hit.id if hit.kind == "image" else hit.image, hit.relpath)
    return data


def _thumbnail_url(item_id: int | None, relpath: str) -> str | None:
    if item_id is None or not is_image_path(relpath):
        return None
    return f"/api/items/{item_id}/thumbnail"


def _check_path_glob(pattern: str | None) -> str | None:
    """A path filter from a request: a glob over indexed paths, never a place on this machine."""
    if pattern is None or not pattern.strip():
        return None
    if pattern.startswith(("/", "~", "\\")) or (len(pattern) > 1 and pattern[1] == ":"):
        raise QueryError(
            "path is a glob over the indexed files' paths inside their folders (like trips/*.jpg or */2024/*), "
            "not an absolute path"
        )
    return pattern


# --- errors -----------------------------------------------------------------------------------------


def _status(exc: Exception) -> int:
    if isinstance(exc, NotFound | IndexNotFoundError):
        return 404
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, ImageError):
        return 415
    if isinstance(exc, QueryError | UnsupportedModalityError):
        return 400
    if isinstance(exc, IndexCorruptError | IndexLockedError):
        return 503
    if isinstance(exc, ModelError):
        return 500
    return 400


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class BodyLimit:
    """Refuses request bodies over a limit while they arrive, before anything spools them to disk."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(413, self._message())(scope, receive, send)
            return
        seen, exceeded, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise TooLarge(self._message())
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the application says about a body it could not finish reading
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _error(413, self._message())(scope, receive, send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes - BODY_OVERHEAD:,} bytes (the server's --max-upload)"



# --- the application ---------------------------------------------------------------------------------


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
    async def vecsearch_error(_request: Request, exc: VecsearchError) -> JSONResponse:
        return _error(_status(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        # The page needs nothing from elsewhere: say so to the browser, so that nothing else can run in it.
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")

    @app.get("/api/health", response_model=Health, tags=["index"])
    def health() -> dict[str, Any]:
        with service.current() as idx:
            return {"status": "ok", "generation": idx.store.generation, "items": idx.counts()["items"]}

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

    def run_search(request: SearchRequest) -> dict[str, Any]:
        start = time.perf_counter()
        query = ParsedQuery.parse(request.terms, like=request.like, unlike=request.unlike, local=False)
        pattern = _check_path_glob(request.path)
        pictures = service.pictures_of(query)
        with service.current() as idx:
            hits = idx.search(
                query, request.k, kind=request.kind, path=pattern, min_score=request.min_score,
                within=request.within, pictures=pictures,
            )
            generation = idx.store.generation
        return {
            "query": request.model_dump(),
            "hits": [_hit_out(h) for h in hits],
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
    ) -> dict[str, Any]:
        """The same search with the query in the URL (for links and curl)."""
        return run_search(SearchRequest(
            terms=q, k=k, kind=kind, path=path, min_score=min_score, within=within, like=like, unlike=unlike
        ))

    def read_upload(file: UploadFile) -> tuple[str, bytes, int, int]:
        data = file.file.read(service.max_upload_bytes + 1)
        if len(data) > service.max_upload_bytes:
            raise TooLarge(f"picture over {service.max_upload_bytes:,} bytes (the server's --max-upload)")
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
        return {"upload": UPLOAD_PREFIX + digest, "sha256": digest, "width": width, "height": height,
                "bytes": len(data), "items": same}

    @app.post("/api/search/image", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_image(
        file: Annotated[UploadFile, File(description="The picture to search by.")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        kind: Kind | None = None,
        path: str | None = None,
        min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
        within: Annotated[float | None, Query(ge=0, le=2)] = None,
    ) -> dict[str, Any]:
        """Upload a picture and search by it in one request."""
        digest, _, _, _ = read_upload(file)
        return run_search(SearchRequest(
            terms=[UPLOAD_PREFIX + digest], k=k, kind=kind, path=path, min_score=min_score, within=within
        ))

    @app.post("/api/describe", response_model=DescribeResponse, responses=ERRORS, tags=["image"])
    def describe(request: DescribeRequest) -> dict[str, Any]:
        """Image → text: the nearest distinct captions in the index."""
        start = time.perf_counter()
        picture = service.picture(request.image)
        with service.current() as idx:
            hits = idx.describe(picture, request.k)
        return {"image": request.image, "hits": [_hit_out(h) for h in hits],
                "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.post("/api/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["image"])
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        """Zero-shot classification of a picture over the given labels."""
        start = time.perf_counter()
        picture = service.picture(request.image)
        templates = request.templates if request.templates is not None else list(DEFAULT_TEMPLATES)
        with service.current() as idx:
            labels = idx.classify(picture, request.labels, templates)
        return {"image": request.image, "labels": [label.to_dict() for label in labels],
                "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.get("/api/items/{item_id}", response_model=ItemResponse, responses=ERRORS, tags=["items"])
    def item(item_id: int) -> dict[str, Any]:
        """An item with its file and all the captions of its picture."""
        with service.current() as idx:
            found = idx.item(item_id)
        if found is None:
            raise NotFound(f"no item with id {item_id} in this index")
        data = found.to_dict()
        data["thumbnail"] = _thumbnail_url(found.id if found.kind == "image" else found.image, found.relpath)
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
        item_id: int,
        size: Annotated[int, Query(ge=16, le=MAX_SIZE, description="Longest side; rounded up to 64/128/256/512/1024.")] = 256,
    ) -> Response:
        """A JPEG preview of the item's picture (a caption item gives its picture's)."""
        with service.current() as idx:
            found = idx.item(item_id)
        if found is None:
            raise NotFound(f"no item with id {item_id} in this index")
        if not is_image_path(found.relpath):
            raise NotFound(f"item {item_id} has no picture")
        path = Path(found.path)
        try:
            stat = path.stat()
        except OSError as exc:
            raise NotFound(f"the picture of item {item_id} is gone from disk ({exc.strerror or exc})") from exc
        size = snap_size(size)
        key = (f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}", size)
        etag = '"' + hashlib.sha256(key[0].encode("utf-8", "surrogateescape")).hexdigest()[:20] + f'-{size}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        data = service.thumbnails.get(key)
        if data is None:
            try:
                data = render_thumbnail(path, size)
            except ImageError as exc:
                raise NotFound(f"cannot make a thumbnail of item {item_id}: {exc}") from exc
            service.thumbnails.put(key, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    return app


# --- running it -----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    index: Index,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    warm: bool = True,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted. On a loopback address only loopback host names are answered;
    on any other address, any (the user chose to share the index)."""
    import uvicorn

    hosts = list(LOOPBACK_NAMES) + [host] if is_loopback(host) else ["*"]
    app = create_app(index, max_upload_bytes=max_upload_bytes, allowed_hosts=hosts)
    if warm:
        app.state.service.warm()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
