"""What the server keeps between requests (the index, uploads, thumbnails), and how errors and
request bodies are bounded and answered."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import (
    Hit,
    ImageError,
    Index,
    IndexCorruptError,
    IndexLockedError,
    IndexNotFoundError,
    ModelError,
    NotInIndexError,
    Query,
    QueryError,
    UnsupportedModalityError,
    VecsearchError,
)
from ..encoders import IMAGE as IMAGE_MODALITY
from ..images import is_image_path
from ..query import IMAGE as IMAGE_TERM
from ..query import ITEM, UPLOAD_PREFIX
from ..thumbnails import ThumbnailCache
from .uploads import Uploads

# Where version 1 of the JSON API lives; the version is in the path so that a later one can sit beside it.
API_PREFIX = "/api/v1"

# Room for the multipart envelope around an upload, and the cap on any other request body.
BODY_OVERHEAD = 64 << 10


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

    def pictures_of(self, query: Query) -> dict[str, bytes]:
        pictures = {}
        for term in query.terms:
            if term.kind == IMAGE_TERM and term.value.startswith(UPLOAD_PREFIX):
                data = self.uploads.get(term.value[len(UPLOAD_PREFIX) :])
                if data is None:
                    raise NotFound(
                        f"no uploaded picture {term.value[:20]}...: uploads are kept while the server runs and "
                        "room allows; upload it again"
                    )
                pictures[term.value] = data
        return pictures

    def picture(self, ref: str) -> str | bytes:
        """An image argument (`id:42` or `upload:<sha>`) as the index takes it."""
        query = Query.parse([ref.strip()], local=False)
        term = query.terms[0]
        if term.kind == IMAGE_TERM:
            return self.pictures_of(query)[term.value]
        if term.kind == ITEM:
            return f"id:{term.value}"
        raise QueryError(f"'{ref[:100]}' names no picture: give id:N or an upload: term")

    def warm(self) -> None:
        """Load what the first query would (vectors, text model, and the exported image tower) before
        anyone waits for it. Without an image export, import the libraries of the full model in the
        background instead (most of a first picture query's wait)."""
        with self.current() as index:
            index.warm()
            if IMAGE_MODALITY in index.modalities and not index.model.has_picture_exports():
                threading.Thread(target=_import_image_libraries, name="vecsearch-preload", daemon=True).start()


def _import_image_libraries() -> None:
    with contextlib.suppress(Exception):  # the first picture query will report what is wrong
        import open_clip  # noqa: F401  (torch, torchvision, open_clip: seconds that nobody waits for now)


def hit_out(hit: Hit) -> dict[str, Any]:
    data = hit.to_dict()
    data["thumbnail"] = thumbnail_url(hit.id if hit.kind == "image" else hit.image, hit.relpath)
    return data


def thumbnail_url(item_id: int | None, relpath: str) -> str | None:
    if item_id is None or not is_image_path(relpath):
        return None
    return f"{API_PREFIX}/items/{item_id}/thumbnail"


def check_path_glob(pattern: str | None) -> str | None:
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


def status_of(exc: Exception) -> int:
    if isinstance(exc, NotFound | IndexNotFoundError | NotInIndexError):
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


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it was, not which field
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's wording of ours
        parts.append(f"{where}: {message}" if where else message)
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
            await error_response(413, self._message())(scope, receive, send)
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
            await error_response(413, self._message())(scope, receive, send)

    def _message(self) -> str:
        return f"request body over {self.max_bytes - BODY_OVERHEAD:,} bytes (the server's upload limit)"
