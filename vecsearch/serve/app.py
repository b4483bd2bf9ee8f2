"""The web application: the JSON API under /api/v1 (its schema at /openapi.json) and the page at /."""

from __future__ import annotations

import os
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
from .auth import MAX_FAILURES, protect
from .browse import browse_router
from .contract import allowed_methods, install_schema, is_versioned, operation_id
from .service import (
    API_PREFIX,
    BODY_OVERHEAD,
    BodyLimit,
    Service,
    error_response,
    status_of,
    validation_message,
)
from .uploads import Uploads

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
    token: str | None = None,
    token_attempts: int = MAX_FAILURES,
    upload_folder: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """The web application over an open index.

    `allowed_hosts` are the host names requests may be addressed to (default: loopback names only,
    which stops other web sites from reaching the API through DNS rebinding); pass ["*"] to allow any.
    With a `token` (16+ printable characters), every request but the health check, the page and its
    static files needs it as `Authorization: Bearer <token>` or the session cookie (`serve/auth.py`);
    an address that sends more than `token_attempts` wrong tokens a minute gets 429 for the rest of it.
    Uploads are kept in `upload_folder` (shared by the workers of `serve`; default: a private temporary one).
    """
    uploads = Uploads(upload_cache_bytes, upload_folder)
    service = Service(index, uploads, ThumbnailCache(thumbnail_cache_bytes), max_upload_bytes)
    app = FastAPI(
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: not on a server that holds
        # someone's pictures (and not offline). The schema itself is at /openapi.json.
        docs_url=None,
        redoc_url=None,
        title="vecsearch",
        version=__version__,
        description="Prompt-as-search over one vecsearch index: text, image and mixed queries, refinement, "
        "describe, zero-shot classification, thumbnails.",
        # Operation ids are the route functions' names (`search`, `upload`, `describe`): what a generated
        # client calls its functions, so they stay put when a path changes.
        generate_unique_id_function=operation_id,
    )
    app.state.service = service
    install_schema(app, max_upload_bytes, protected=token is not None)
    # The last added runs first: the Host check, then the token (before any body is read), then the body limit.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + BODY_OVERHEAD)
    if token is not None:
        protect(app, token, token_attempts)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_NAMES))

    @app.exception_handler(VecsearchError)
    async def vecsearcherror_response(_request: Request, exc: VecsearchError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def validationerror_response(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = allowed_methods(app, request.url.path)
            headers["Allow"] = ", ".join(methods)
            return error_response(405, f"{request.method} is not allowed here; use {' or '.join(methods)}", headers)
        if exc.status_code == 404 and request.url.path.startswith("/api/") and not is_versioned(request.url.path):
            return error_response(404, f"no such endpoint: this server's API is under {API_PREFIX}/", headers)
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        # The page needs nothing from elsewhere: say so to the browser, so that nothing else can run in it.
        return HTMLResponse((WEB / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=str(WEB)), name="static")

    app.include_router(api_router(service), prefix=API_PREFIX)
    app.include_router(browse_router(service), prefix=API_PREFIX)

    return app
