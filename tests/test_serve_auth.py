"""`vecsearch serve` with a token: every operation of the app's own OpenAPI schema refuses requests without
it (so a new endpoint is covered as soon as it exists), the page's session cookie carries thumbnails,
wrong tokens are rate-limited, and the Host check and the path-traversal refusals still hold.

Real application over a real tiny index (FastAPI's test client, raw ASGI calls where the body matters),
and one real `vecsearch serve --token-file` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import index_of, make_collection
from fastapi import FastAPI
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from vecsearch import Index
from vecsearch.serve import create_app
from vecsearch.serve.auth import SESSION_COOKIE, SESSION_SECONDS, FailedAttempts, TokenAuth, check_token

TOKEN = "correct-horse-battery-staple-42"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer correct-horse-battery-staple-43"}
OPEN = {("get", "/api/v1/health")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    photos = make_collection(
        tmp_path_factory.mktemp("auth-photos"),
        ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "night", "snow"],
        extra=0,
    )
    return index_of(tmp_path_factory.mktemp("auth-index") / "index", photos, tiny_encoder)


@pytest.fixture(scope="module")
def index(folder: Path, tiny_encoder) -> Iterator[Index]:
    with Index.open(folder, encoder=tiny_encoder) as opened:
        yield opened


@pytest.fixture
def app(index: Index) -> FastAPI:
    """A fresh application for each test: its own count of failed attempts."""
    return create_app(index, token=TOKEN)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, URL) of every operation in the app's schema, path parameters filled with 1 (item 1)."""
    found = []
    for path, methods in app.openapi()["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        found += [(method, url) for method in methods if method in ("get", "post", "put", "patch", "delete")]
    return sorted(found)


def call(client: TestClient, method: str, url: str, headers: dict[str, str] | None = None) -> Any:
    return client.request(method.upper(), url, headers=headers or {})


def assert_unauthorized(response: Any, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:200]}"
    assert response.headers["www-authenticate"].startswith('Bearer realm="vecsearch"'), what
    assert set(response.json()) == {"error"}, what
    assert "--" not in response.json()["error"], what  # HTTP terms, never the command line's options


# --- every endpoint -------------------------------------------------------------------------------------


def test_every_operation_needs_the_token(app: FastAPI, client: TestClient) -> None:
    ops = operations(app)
    # The schema holds what must be protected; the ones named here must be among them.
    for expected in [("get", "/api/v1/items/1/thumbnail"), ("post", "/api/v1/uploads"), ("post", "/api/v1/session")]:
        assert expected in ops
    assert len(ops) >= 12 and set(ops) >= OPEN
    for number, (method, url) in enumerate(ops):
        if (method, url) in OPEN:
            continue
        # One client address per operation: the wrong tokens stay below the rate limit (tested on its own).
        one = TestClient(app, base_url="http://127.0.0.1", client=(f"192.0.2.{number + 1}", 40000))
        assert_unauthorized(call(one, method, url), f"{method} {url} without a token")
        assert_unauthorized(call(one, method, url, WRONG), f"{method} {url} with a wrong token")
        response = call(one, method, url, BEARER)
        assert response.status_code not in (401, 403, 429), f"{method} {url} with the token: {response.text[:200]}"
    for url in ("/openapi.json", "/api/v1/nothing-here", "/api/v2/search", "/anything"):
        assert_unauthorized(client.get(url), url)
    assert client.get("/openapi.json", headers=BEARER).status_code == 200
    assert client.get("/api/v1/nothing-here", headers=BEARER).status_code == 404


def test_right_token_answers_as_without_authentication(index: Index, client: TestClient) -> None:
    open_client = TestClient(create_app(index), base_url="http://127.0.0.1")
    body = {"terms": ["a red apple"], "k": 3}
    with_token = client.post("/api/v1/search", json=body, headers=BEARER).json()
    without = open_client.post("/api/v1/search", json=body).json()
    assert [h["id"] for h in with_token["hits"]] == [h["id"] for h in without["hits"]]
    thumbnail = client.get(with_token["hits"][0]["thumbnail"], headers=BEARER)
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert_unauthorized(client.get(with_token["hits"][0]["thumbnail"]), "thumbnail without a token")


def test_health_page_and_static_files_stay_open(client: TestClient) -> None:
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_schema_lists_the_session_only_with_a_token(index: Index, app: FastAPI) -> None:
    assert "/api/v1/session" in app.openapi()["paths"]
    assert "/api/v1/session" not in create_app(index).openapi()["paths"]


# --- the page's session cookie --------------------------------------------------------------------------


def test_session_cookie_carries_requests_and_thumbnails(client: TestClient) -> None:
    """What the page does: a 401, then the token for a cookie, then everything (pictures in <img>) with it."""
    assert_unauthorized(client.get("/api/v1/info"), "before signing in")
    signed_in = client.post("/api/v1/session", headers=BEARER)
    assert signed_in.status_code == 204
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert TOKEN not in cookie
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never come back
    assert client.get("/api/v1/info").status_code == 200
    hits = client.post("/api/v1/search", json={"terms": ["red"], "k": 2}).json()["hits"]
    thumbnail = client.get(hits[0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
    # A session does not renew itself: signing in takes the token.
    assert_unauthorized(client.post("/api/v1/session"), "renewing a session with its cookie")
    assert client.delete("/api/v1/session").status_code == 204
    assert SESSION_COOKIE not in client.cookies
    assert_unauthorized(client.get(hits[0]["thumbnail"]), "after signing out")


def test_cookie_is_secure_over_https_and_behind_a_tls_proxy(app: FastAPI) -> None:
    https = TestClient(app, base_url="https://127.0.0.1")
    assert "secure" in https.post("/api/v1/session", headers=BEARER).headers["set-cookie"].lower()
    # uvicorn trusts X-Forwarded-Proto from the proxies it is told to (127.0.0.1 by default).
    proxied = TestClient(ProxyHeadersMiddleware(app, trusted_hosts="*"), base_url="http://127.0.0.1")
    response = proxied.post("/api/v1/session", headers={**BEARER, "X-Forwarded-Proto": "https"})
    assert response.status_code == 204 and "secure" in response.headers["set-cookie"].lower()


def test_every_worker_accepts_the_cookie_another_issued(index: Index) -> None:
    """Worker processes share no memory: each derives the same cookie key from the token."""
    first = TestClient(create_app(index, token=TOKEN), base_url="http://127.0.0.1")
    second = TestClient(create_app(index, token=TOKEN), base_url="http://127.0.0.1")
    other_token = TestClient(create_app(index, token=TOKEN + "-new"), base_url="http://127.0.0.1")
    assert first.post("/api/v1/session", headers=BEARER).status_code == 204
    value = first.cookies[SESSION_COOKIE]
    second.cookies.set(SESSION_COOKIE, value)
    assert second.get("/api/v1/info").status_code == 200
    # A new token ends every session.
    other_token.cookies.set(SESSION_COOKIE, value)
    response = other_token.get("/api/v1/info")
    assert_unauthorized(response, "a cookie of the old token")
    assert "invalid" in response.json()["error"]


def test_sessions_expire_and_cannot_be_forged() -> None:
    now = [1_700_000_000.0]
    auth = TokenAuth(TOKEN, clock=lambda: now[0])
    cookie = auth.issue()
    assert auth.session(cookie) == "valid"
    issued, _, mac = cookie.partition(".")
    assert auth.session(f"{int(issued) + 3600}.{mac}") == "invalid"  # a later date needs a new HMAC
    assert auth.session(f"{issued}.{mac[:-1]}0" if mac[-1] != "0" else f"{issued}.{mac[:-1]}1") == "invalid"
    assert auth.session("") == "invalid" and auth.session("x.y") == "invalid"
    now[0] += SESSION_SECONDS + 1
    assert auth.session(cookie) == "expired"
    assert auth.bearer_ok(TOKEN) and not auth.bearer_ok(TOKEN[:-1]) and not auth.bearer_ok(TOKEN + "x")


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "empty"),
        ("short-token", "at least 16"),
        ("sixteen chars ok", "without spaces"),
        ("ünïcödé-tökén-xx", "ASCII"),
    ],
)
def test_unusable_tokens_are_refused(index: Index, token: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_token(token)
    with pytest.raises(ValueError, match=problem):
        create_app(index, token=token)


# --- failed attempts ------------------------------------------------------------------------------------


def test_wrong_tokens_are_rate_limited_and_the_limit_recovers(app: FastAPI, client: TestClient) -> None:
    now = time.monotonic()
    failures: FailedAttempts = app.state.failed_attempts
    failures.clock = lambda: now
    assert client.post("/api/v1/session", headers=BEARER).status_code == 204  # a session from before
    session = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    for _ in range(25):  # no credentials at all is no guess: never counted
        assert_unauthorized(client.get("/api/v1/info"), "no token")
    for attempt in range(failures.limit):
        assert_unauthorized(client.get("/api/v1/info", headers=WRONG), f"wrong token {attempt + 1}")
    refused = client.get("/api/v1/info", headers=WRONG)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "try again" in refused.json()["error"]
    # While the address is refused, the right token is refused too (else guessing would go on).
    assert client.get("/api/v1/info", headers=BEARER).status_code == 429
    # Its session still works (a cookie's HMAC is not guessable), and other addresses are not affected.
    same_address = TestClient(app, base_url="http://127.0.0.1", cookies={SESSION_COOKIE: session})
    assert same_address.get("/api/v1/info").status_code == 200
    elsewhere = TestClient(app, base_url="http://127.0.0.1", client=("192.0.2.7", 40000))
    assert elsewhere.get("/api/v1/info", headers=BEARER).status_code == 200
    now += 61
    assert client.get("/api/v1/info", headers=BEARER).status_code == 200
    assert client.get("/api/v1/health").status_code == 200


def test_the_number_of_attempts_is_a_setting(index: Index) -> None:
    client = TestClient(create_app(index, token=TOKEN, token_attempts=2), base_url="http://127.0.0.1")
    assert [client.get("/api/v1/info", headers=WRONG).status_code for _ in range(3)] == [401, 401, 429]


def test_failed_attempts_are_bounded_in_memory() -> None:
    now = [0.0]
    failures = FailedAttempts(limit=3, window=60, max_addresses=100, clock=lambda: now[0])
    for i in range(5000):
        failures.record(f"10.0.{i // 256}.{i % 256}")
    assert len(failures) == 100
    for _ in range(3):
        failures.record("2001:db8::1")
    # A whole IPv6 /64 counts as one address; another /64 does not share its count.
    assert failures.retry_after("2001:db8::ffff") == 60 and failures.retry_after("2001:db8:0:1::1") == 0
    now[0] += 61
    failures.record("10.9.9.9")
    assert len(failures) == 1  # stale addresses go


def test_a_body_is_not_read_before_the_token_is_checked(app: FastAPI) -> None:
    """The middleware answers before FastAPI would parse (or spool) a 30 MB upload from anyone."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/uploads",
        "raw_path": b"/api/v1/uploads",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"multipart/form-data; boundary=x")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and reads == 0


# --- the protections of before still hold ---------------------------------------------------------------


def test_host_check_comes_first_and_holds_with_a_token(index: Index, client: TestClient) -> None:
    """DNS rebinding: a page elsewhere cannot reach the API, with or without the token."""
    assert client.get("/api/v1/info", headers=BEARER).status_code == 200
    assert client.get("/api/v1/info", headers={**BEARER, "host": "localhost:8000"}).status_code == 200
    assert client.get("/api/v1/info", headers={**BEARER, "host": "attacker.example"}).status_code == 400
    assert client.get("/api/v1/info", headers={"host": "attacker.example"}).status_code == 400
    # Shared on the network (any host name), a rebound page has no token and no cookie of this site.
    shared = TestClient(create_app(index, allowed_hosts=["*"], token=TOKEN), base_url="http://attacker.example")
    assert_unauthorized(shared.get("/api/v1/info"), "a rebound page")
    assert shared.get("/api/v1/health").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/v1/items/1%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/static/..%2Fserve.py",
        "/static/../serve.py",
        "/static/%2e%2e/serve.py",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_is_refused_with_the_token(client: TestClient, url: str) -> None:
    response = client.get(url, headers=BEARER)
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content and b"def create_app" not in response.content


@pytest.mark.parametrize(
    "url",
    [
        "/static/../api/v1/info",
        "/static/%2e%2e/api/v1/info",
        "/static/..%2Fapi%2Fv1%2Finfo",
        "/api/v1/health/../info",
        "/api/v1/health%2F..%2Finfo",
        "//api/v1/info",
        "/api/v1//info",
        "/API/V1/INFO",
    ],
)
def test_open_paths_lead_nowhere_else(client: TestClient, url: str) -> None:
    """The open prefixes (/static/, the health check) cannot be walked out of into the API."""
    response = client.get(url)
    assert response.status_code in (401, 404), response.text
    assert b'"counts"' not in response.content


def test_a_root_path_does_not_open_the_api(index: Index) -> None:
    """Behind a proxy that mounts the server under a prefix, the open paths are those the router sees."""
    app = create_app(index, token=TOKEN)
    mounted = TestClient(app, base_url="http://127.0.0.1", root_path="/static")
    assert_unauthorized(mounted.get("/static/api/v1/info"), "the API under a root path")
    assert mounted.get("/static/api/v1/health").status_code == 200


# --- the command ----------------------------------------------------------------------------------------


def run_serve(*args: str, env: dict[str, str] | None = None) -> Any:
    from click.testing import CliRunner

    from vecsearch.cli import main

    return CliRunner().invoke(main, ["serve", *args], env=env)


def test_network_address_without_authentication_is_refused_before_loading(tmp_path: Path) -> None:
    """Exit 2 before the index is opened: a missing index would otherwise say so (exit 3)."""
    missing = str(tmp_path / "no-index")
    for host in ("0.0.0.0", "192.0.2.1", "::", "photos.lan"):
        result = run_serve(missing, "--host", host, "--port", "0")
        assert result.exit_code == 2, (host, result.output)
        assert "--token-file" in result.output and "--no-auth" in result.output
    # Accepted, and so on to opening the index (which is missing here).
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\nnot read\n")
    assert run_serve(missing, "--host", "0.0.0.0", "--port", "0", "--no-auth").exit_code == 3
    assert run_serve(missing, "--host", "0.0.0.0", "--port", "0", "--token-file", str(token_file)).exit_code == 3
    assert run_serve(missing, "--host", "0.0.0.0", "--port", "0", env={"VECSEARCH_TOKEN": TOKEN}).exit_code == 3
    assert run_serve(missing, "--host", "0.0.0.0", "--port", "0", "--new-token").exit_code == 3
    assert run_serve(missing, "--port", "0").exit_code == 3  # loopback needs nothing


def test_unusable_token_sources_are_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-index")
    cases = {"empty": "", "blank": "\n\n", "short": "abc\n", "spaces": "a token with spaces in it\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        result = run_serve(missing, "--port", "0", "--token-file", str(tmp_path / name))
        assert result.exit_code == 2, (name, result.output)
        assert "token file" in result.output and "secrets.token_urlsafe" in result.output
    assert "empty" in run_serve(missing, "--token-file", str(tmp_path / "blank")).output
    assert "at least 16" in run_serve(missing, "--token-file", str(tmp_path / "short")).output
    result = run_serve(missing, "--token-file", str(tmp_path / "absent"))
    assert result.exit_code == 2 and "cannot read" in result.output
    result = run_serve(missing, "--port", "0", env={"VECSEARCH_TOKEN": "short"})
    assert result.exit_code == 2 and "VECSEARCH_TOKEN" in result.output
    result = run_serve(missing, "--host", "0.0.0.0", "--no-auth", env={"VECSEARCH_TOKEN": TOKEN})
    assert result.exit_code == 2 and "--no-auth" in result.output
    result = run_serve(missing, "--new-token", "--token-file", str(tmp_path / "short"))
    assert result.exit_code == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def raw_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """A GET with the path sent exactly as written (no client tidies its dots away)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_serve_command_with_a_token_file_and_workers(folder: Path, tmp_path: Path) -> None:
    """Two worker processes: each refuses without the token, accepts the cookie either issued, and keeps
    the Host check and the path-traversal refusals."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vecsearch",
            "serve",
            str(folder),
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = fetch(f"{base}/api/v1/health")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, headers, body = fetch(f"{base}/api/v1/search?q=red&k=2")
        assert status == 401 and "error" in json.loads(body)
        assert headers["www-authenticate"].startswith("Bearer")
        status, _, body = fetch(f"{base}/api/v1/search?q=red&k=2", BEARER)
        assert status == 200 and len(json.loads(body)["hits"]) == 2
        status, headers, _ = fetch(f"{base}/api/v1/session", BEARER, method="POST")
        assert status == 204 and headers["set-cookie"].startswith(SESSION_COOKIE)
        assert fetch(f"{base}/api/v1/items/1/thumbnail")[0] == 401
        cookie = headers["set-cookie"].split(";")[0]
        for _ in range(6):  # new connections, answered by either worker
            assert fetch(f"{base}/api/v1/items/1/thumbnail", {"Cookie": cookie})[0] == 200
        assert fetch(f"{base}/api/v1/info", {**BEARER, "Host": "attacker.example"})[0] == 400
        for path in ("/static/../serve.py", "/static/%2e%2e/auth.py", "/static/..%2F..%2F..%2Fetc%2Fpasswd"):
            status, _, body = raw_get(port, path, BEARER)
            assert status in (404, 422) and b"import" not in body and b"root:" not in body, path
        status, _, body = raw_get(port, "/static/../api/v1/info", {})
        assert status in (401, 404) and b"counts" not in body
    finally:
        process.send_signal(2)
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, 130), err
    assert "requests need the token" in err and TOKEN not in err
