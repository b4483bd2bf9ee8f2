"""The web application: the JSON API under /api/v1 (its schema at /openapi.json) and the page at /."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import Index, VecsearchError, __version__
from ..thumbnails import ThumbnailCache
from .api import api_router
from .service import (
    API_PREFIX,
    BODY_OVERHEAD,
    BodyLimit,
    Service,
    Uploads,
    error_response,
    status_of,
    validation_message,
)

DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
# Uploaded pictures are kept (by content) so that later queries can refine them; oldest go first.
DEFAULT_UPLOAD_CACHE_BYTES = 256 << 20
DEFAULT_THUMBNAIL_CACHE_BYTES = 64 << 20
WEB = resources.files("vecsearch") / "web"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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

    app.include_router(api_router(service), prefix=API_PREFIX)

    return app
