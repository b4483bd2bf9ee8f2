"""Optional authentication: a bearer token, or a session cookie the page gets for it.

A pure ASGI middleware, not a FastAPI dependency: FastAPI reads and parses a request's body before its
dependencies run, so a dependency would take in a 20 MB upload from anyone before refusing it. Here a
request without credentials is answered before a byte of its body is read.

What stays open: the health check, the page and its static files (code, no data: the page must load to
ask for the token). Everything else, thumbnails and the OpenAPI schema included, needs
`Authorization: Bearer <token>` or the session cookie. The cookie exists because an `<img>` cannot send
a header; its value is derived from the token with HMAC, so every worker process accepts the cookie any
of them issued, and changing the token ends every session. Wrong tokens are counted per client address
and refused with 429 past a limit, so a token cannot be guessed at network speed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from .schemas import ErrorOut
from .service import API_PREFIX, error_response

MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "vecsearch_session"
SESSION_PATH = API_PREFIX + "/session"
# A session cookie is accepted this long after it was issued; then the page asks for the token again.
SESSION_SECONDS = 24 * 3600
# Wrong tokens from one address (an IPv6 /64 counts as one) within the window, before 429.
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 4096
OPEN_PATHS = ("/", API_PREFIX + "/health")
OPEN_PREFIXES = ("/static/",)
CHALLENGE = 'Bearer realm="vecsearch"'


def check_token(token: str) -> str:
    """The token, if a server may use it; ValueError says what is wrong without showing it."""
    if not token:
        raise ValueError("the token is empty")
    if not re.fullmatch(r"[!-~]+", token):
        raise ValueError("the token must be printable ASCII without spaces (it travels in an HTTP header)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS}")
    return token


class TokenAuth:
    """Checks bearer tokens and issues and checks session cookies, in constant time."""

    def __init__(self, token: str, clock: Callable[[], float] = time.time) -> None:
        token = check_token(token)
        # Compared as digests, so that neither the time taken nor anything else depends on its length.
        self._digest = hashlib.sha256(token.encode()).digest()
        self._session_key = hmac.new(token.encode(), b"vecsearch session cookie 1", hashlib.sha256).digest()
        self.clock = clock

    def bearer_ok(self, given: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest(), self._digest)

    def issue(self) -> str:
        issued = str(int(self.clock()))
        return f"{issued}.{self._mac(issued)}"

    def session(self, value: str) -> str:
        """'valid', 'expired' (issued by this token, too long ago) or 'invalid'."""
        issued, _, mac = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(mac.encode(), self._mac(issued).encode()):
            return "invalid"
        age = self.clock() - int(issued)
        return "valid" if -60 <= age <= SESSION_SECONDS else "expired"

    def _mac(self, issued: str) -> str:
        return hmac.new(self._session_key, issued.encode(), hashlib.sha256).hexdigest()


class FailedAttempts:
    """Wrong tokens per client address in a sliding window; memory bounded (the oldest addresses go).

    Counted in one process: with several worker processes each counts its own."""

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_addresses, self.clock = limit, window, max_addresses, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> int:
        """Seconds until this address may try again; 0 if it may now."""
        failures = self._failures.get(_bucket(address))
        if failures is None or len(failures) < self.limit:
            return 0
        wait = failures[0] + self.window - self.clock()
        return math.ceil(wait) if wait > 0 else 0

    def record(self, address: str) -> None:
        now, key = self.clock(), _bucket(address)
        failures = self._failures.pop(key, None) or deque(maxlen=self.limit)
        failures.append(now)
        self._failures[key] = failures
        while self._failures:  # least recently failed first: drop those whose failures are all stale
            oldest = next(iter(self._failures.values()))
            if len(self._failures) <= self.max_addresses and oldest[-1] > now - self.window:
                break
            self._failures.popitem(last=False)


def _bucket(address: str) -> str:
    """IPv6 clients usually hold a whole /64: count it as one address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else address


def route_path(scope: Scope) -> str:
    """The path the router matches (Starlette's rule for a root_path), so that what is open here is
    exactly what the open routes answer."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class Authentication:
    """Lets through requests with the token or a valid session cookie; answers the rest with 401 (429
    when an address sent too many wrong tokens)."""

    def __init__(self, app: ASGIApp, auth: TokenAuth, failures: FailedAttempts) -> None:
        self.app, self.auth, self.failures = app, auth, failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_open(route_path(scope)):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(HTTPConnection(scope), route_path(scope), scope.get("method"))
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, conn: HTTPConnection, path: str, method: str | None) -> Response | None:
        """None if the request may pass, else the answer."""
        header = conn.headers.get("authorization")
        address = conn.client.host if conn.client else ""
        if header is not None:
            wait = self.failures.retry_after(address)
            if wait:
                return error_response(
                    429,
                    f"too many wrong tokens from this address; try again in {wait} s",
                    {"Retry-After": str(wait)},
                )
            scheme, _, given = header.strip().partition(" ")
            if scheme.lower() == "bearer" and self.auth.bearer_ok(given.strip()):
                return None
            self.failures.record(address)
            return unauthorized("wrong token", 'error="invalid_token"')
        # Only a header signs in: a session cannot renew itself past its age.
        cookie = conn.cookies.get(SESSION_COOKIE) if (path, method) != (SESSION_PATH, "POST") else None
        if cookie is not None:
            # Not counted as failures: a cookie's HMAC cannot be guessed, and a page open from before a
            # token changed sends its old cookie with every request.
            state = self.auth.session(cookie)
            if state == "valid":
                return None
            return unauthorized(f"the session is {state}; sign in again", 'error="invalid_token"')
        return unauthorized("authentication required: send 'Authorization: Bearer <token>' or sign in on the page")


def unauthorized(message: str, detail: str = "") -> Response:
    return error_response(401, message, {"WWW-Authenticate": f"{CHALLENGE}, {detail}" if detail else CHALLENGE})


def session_router(auth: TokenAuth) -> APIRouter:
    """Sign-in and sign-out for the page: the token (as a bearer header) for a session cookie."""
    router = APIRouter()
    refusals: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "No token, or a wrong one"},
        429: {"model": ErrorOut, "description": "Too many wrong tokens from this address; see Retry-After"},
    }

    @router.post("/session", status_code=204, response_class=Response, responses=refusals, tags=["session"])
    def sign_in(request: Request) -> Response:
        """Exchange the token (`Authorization: Bearer`, required here) for a session cookie, which then
        carries every request, pictures in `<img>` included. It lasts while the browser keeps it, at
        most a day."""
        response = Response(status_code=204)
        response.set_cookie(
            SESSION_COOKIE,
            auth.issue(),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.delete("/session", status_code=204, response_class=Response, responses=refusals, tags=["session"])
    def sign_out(request: Request) -> Response:
        """Forget the session cookie in this browser."""
        response = Response(status_code=204)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    return router


def protect(app: FastAPI, token: str, attempts: int = MAX_FAILURES) -> None:
    """Require the token on `app`, allowing `attempts` wrong tokens a minute from one address. Call it between
    adding the body limit and the Host check, so that the Host check comes first and no body is read before
    the token is checked."""
    auth = TokenAuth(token)
    app.state.failed_attempts = FailedAttempts(limit=attempts)
    app.include_router(session_router(auth), prefix=API_PREFIX)
    app.add_middleware(Authentication, auth=auth, failures=app.state.failed_attempts)
