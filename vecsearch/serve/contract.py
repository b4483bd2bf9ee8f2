"""What the OpenAPI schema promises beyond what FastAPI writes by itself, and the HTTP answers that keep
the server to it: uploads described as non-empty binary pictures under the size limit, an `Allow` header
that lists every method a path has, and the status codes a client may meet."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from .auth import OPEN_PATHS, SESSION_COOKIE

# The picture types an upload may be; its bytes are checked by decoding them (415 when they are no picture).
PICTURE_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"


def install_schema(app: FastAPI, max_upload_bytes: int, *, protected: bool = False) -> None:
    """Make /openapi.json state the upload constraints the server enforces, and, on a server with a token,
    how every operation but the health check is authenticated."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            describe_uploads(schema, max_upload_bytes)
            if protected:
                describe_authentication(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_uploads(schema: dict[str, Any], max_upload_bytes: int) -> None:
    """File fields are binary strings (code generators make them file parameters) of at least one byte,
    sent as one of the picture types; the size limit is stated in words (a fuzzer cannot send 20 MB)."""
    components = schema.get("components", {}).get("schemas", {})
    for operation in _operations(schema):
        content = operation.get("requestBody", {}).get("content", {})
        form = content.get("multipart/form-data")
        if not form:
            continue
        body = components.get(form["schema"].get("$ref", "").rsplit("/", 1)[-1], form["schema"])
        encoding = form.setdefault("encoding", {})
        for name, field in body.get("properties", {}).items():
            if field.get("type") == "string" and "contentMediaType" in field:
                field.pop("contentMediaType")
                field.update(format="binary", minLength=1)
                field["description"] = f"{field.get('description', '')} At most {max_upload_bytes:,} bytes (413 above)."
                encoding[name] = {"contentType": PICTURE_TYPES}


def describe_authentication(schema: dict[str, Any]) -> None:
    """A bearer token or the session cookie `POST /session` sets; 401 without either, 429 after too many
    wrong tokens. The health check stays open."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["token"] = {"type": "http", "scheme": "bearer", "description": "The server's token."}
    schemes["session"] = {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}
    refusals = {
        "401": {"description": "No credentials, or wrong ones.", "content": _error_content()},
        "429": {
            "description": "Too many wrong tokens from this address; see Retry-After.",
            "content": _error_content(),
        },
    }
    for path, operations in schema.get("paths", {}).items():
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"token": []}, {"session": []}]
            for status, response in refusals.items():
                operation.setdefault("responses", {}).setdefault(status, response)


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for methods in schema.get("paths", {}).values() for op in methods.values() if isinstance(op, dict)]


def operation_id(route: APIRoute) -> str:
    return route.name


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the schema documents for this path (Starlette's own answer names one route's only)."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)), path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def is_versioned(path: str) -> bool:
    """Whether a path names a version of the API (`/api/v1/...`): other `/api/` paths are old or mistyped."""
    return re.match(r"^/api/v[0-9]+(/|$)", path) is not None
