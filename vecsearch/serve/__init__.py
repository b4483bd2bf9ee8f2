"""`vecsearch serve`: the index and its model kept loaded behind a JSON API and a web page.

Loading the model is most of a cold query's time; a server pays it once and then answers in
milliseconds. Requests never reach the file system with a path of their own: query terms are text,
item ids or `upload:` names of pictures sent to the server, thumbnails are made only of files in the
index (found by item id), and a `path` filter is a glob over indexed paths, matched in memory.

`create_app(index)` returns the ASGI application (FastAPI), for tests and for embedding in another
server; `vecsearch serve` runs it with uvicorn. The index is used by one request at a time (a SQLite
connection and a FAISS index are not shared across threads); before each request it catches up with
what a crawl committed meanwhile, so an index can be re-crawled while it is served.

The parts: `schemas` (the JSON shapes), `service` (state between requests, errors, body limits),
`uploads` (pictures sent to the server, on disk), `auth` (the optional token and session cookie),
`app` (the routes) and `workers` (several server processes over one index).
"""

from __future__ import annotations

import ipaddress

from .. import Index
from .app import DEFAULT_MAX_UPLOAD_BYTES, LOOPBACK_NAMES, create_app
from .auth import MAX_FAILURES
from .workers import default_workers, run_workers

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "default_workers", "is_loopback", "serve"]


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
    token: str | None = None,
    token_attempts: int = MAX_FAILURES,
    workers: int | None = None,
    device: str | None = None,
) -> None:
    """Run the server until interrupted. On a loopback address only loopback host names are answered;
    on any other address, any (the user chose to share the index). With a `token`, requests need it
    (see `create_app`).

    `workers` processes answer (default: one per core; see `serve/workers.py`): each opens the index
    again by its path and loads the model of its manifest on `device`. One worker serves `index` itself.
    """
    import uvicorn

    hosts = list(LOOPBACK_NAMES) + [host] if is_loopback(host) else ["*"]
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    if workers > 1:
        run_workers(
            index,
            host,
            port,
            workers=workers,
            allowed_hosts=hosts,
            max_upload_bytes=max_upload_bytes,
            device=device,
            warm=warm,
            log_level=log_level,
            token=token,
            token_attempts=token_attempts,
        )
        return
    app = create_app(
        index, max_upload_bytes=max_upload_bytes, allowed_hosts=hosts, token=token, token_attempts=token_attempts
    )
    if warm:
        app.state.service.warm()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
