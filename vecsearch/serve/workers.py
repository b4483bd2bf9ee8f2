"""`vecsearch serve --workers N`: N server processes over one index, under uvicorn's own supervisor.

A worker answers one request at a time (a SQLite connection and a FAISS index are not shared across
threads), so more processes answer more queries at once. The parent checks the index, makes the private
folder the workers keep uploads in, splits the cores between the workers and hands uvicorn an import
string of `worker_app`, which every worker calls: it reads its `WorkerOptions` from an environment
variable, opens the index by its path (a large vector file memory-mapped read-only, so the workers share
it through the page cache), loads its own copy of the model and answers on the socket the parent bound.
Each worker catches up with a crawl's commits on its own, as one server does. uvicorn stops every worker
on Ctrl-C or SIGTERM; a worker that cannot start stops them all, and `serve` raises its error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import Index, VecsearchError
from .. import errors as error_types
from .app import DEFAULT_MAX_UPLOAD_BYTES, create_app
from .auth import MAX_FAILURES

# Where the parent puts a worker's options (JSON); a worker takes it out of its environment at once.
OPTIONS_VARIABLE = "VECSEARCH_SERVE_WORKER"
# uvicorn's exit status for a worker that failed before serving: its supervisor stops instead of restarting.
STARTUP_FAILURE = 3
# The first worker that cannot start says why here, in the shared folder, for the parent to raise.
FAILURE_FILE = "startup-failure.json"
UPLOADS_FOLDER = "uploads"
# A worker with requests waiting asks one client in this many to reconnect (see Rebalance): every one
# costs a connection a query; one in 16 spreads a burst of connections too slowly (measured).
RECONNECT_EVERY = 4
log = logging.getLogger("uvicorn.error")  # the server's own log, set up by uvicorn in each worker


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to make the application: sent by the parent as JSON."""

    index: str  # the index folder's absolute path
    folder: str  # the private folder the parent made: shared uploads, a failure report
    allowed_hosts: list[str] = field(default_factory=list)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    device: str | None = None
    warm: bool = True
    token: str | None = None
    token_attempts: int = MAX_FAILURES
    parent: int = 0  # the parent's process id: a worker whose parent is gone stops

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerOptions:
        return cls(**json.loads(text))


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per core this process may use."""
    return max(1, available_cores())


def threads_per_worker(workers: int) -> int:
    """The cores shared out between the workers, at least one thread each."""
    return max(1, available_cores() // max(1, workers))


def run_workers(
    index: Index,
    host: str,
    port: int,
    *,
    workers: int,
    allowed_hosts: Sequence[str],
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    device: str | None = None,
    warm: bool = True,
    log_level: str = "info",
    token: str | None = None,
    token_attempts: int = MAX_FAILURES,
) -> None:
    """Serve `index` from `workers` processes until interrupted; raises the error of a worker that could
    not start. The parent loads no model: it checks the vectors once (a damaged index is one error here,
    not workers failing one after another) and leaves them to the workers."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with Index.open(index.path) as probe:
        _ = probe.vectors  # read (or mapped) and checked, then let go
    folder = Path(tempfile.mkdtemp(prefix="vecsearch-serve-"))
    options = WorkerOptions(
        index=str(index.path.resolve()),
        folder=str(folder),
        allowed_hosts=list(allowed_hosts),
        max_upload_bytes=max_upload_bytes,
        device=device,
        warm=warm,
        token=token,
        token_attempts=token_attempts,
        parent=os.getpid(),
    )
    saved = {name: os.environ.get(name) for name in (OPTIONS_VARIABLE, "OMP_NUM_THREADS")}
    os.environ[OPTIONS_VARIABLE] = options.to_json()
    # Threads for FAISS, torch and ONNX Runtime in each worker; a value the user set is kept.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_worker(workers)))
    try:
        config = uvicorn.Config(
            f"{__name__}:worker_app",
            factory=True,
            host=host.strip("[]"),
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=log_level == "debug",
        )
        # What uvicorn.run does for workers, with the socket fixed: uvicorn binds it with protocol 0, so
        # asyncio never sets TCP_NODELAY on the connections it accepts, and every answer on a kept-alive
        # connection waits about 40 ms for the client's delayed ACK (uvicorn issue #3149).
        bound = config.bind_socket()
        listener = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
        try:
            Multiprocess(config, sockets=[listener]).run()
        finally:
            listener.close()
        failure = _read_failure(folder)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)
    if failure is not None:
        raise failure


def worker_app() -> FastAPI:
    """The application of one worker (uvicorn calls it in each worker process)."""
    text = os.environ.pop(OPTIONS_VARIABLE, None)  # nothing this process starts inherits the token
    if text is None:
        raise RuntimeError(f"{OPTIONS_VARIABLE} is not set: start workers with vecsearch.serve.serve(workers=N)")
    options = WorkerOptions.from_json(text)
    _stop_when_orphaned(options.parent)
    try:
        index = Index.open(options.index, device=options.device)
        app = create_app(
            index,
            max_upload_bytes=options.max_upload_bytes,
            allowed_hosts=options.allowed_hosts,
            upload_folder=Path(options.folder) / UPLOADS_FOLDER,
            token=options.token,
            token_attempts=options.token_attempts,
        )
        if options.warm:
            app.state.service.warm()
        app.add_middleware(Rebalance)
    except Exception as exc:
        _write_failure(Path(options.folder), exc)
        log.error("worker %d could not start: %s", os.getpid(), exc)
        sys.stderr.flush()
        # Now: unwinding the libraries a model loaded can take seconds, and the supervisor would take a
        # worker that does not answer for a hung one and start another.
        os._exit(STARTUP_FAILURE)
    return app


class Rebalance:
    """Asks clients to reconnect (`Connection: close` on one answer in RECONNECT_EVERY) while this worker
    has other requests waiting.

    The workers accept connections from one socket, and whichever wakes first takes every connection
    waiting: clients that connect at once may all land on one worker and stay there, kept alive, while
    the others idle. A client told to reconnect is accepted again by whichever worker is quicker, most
    often an idle one, so the connections spread out as the load does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.active = 0  # requests this worker is answering or has queued (one event loop: no lock)
        self.crowded = 0  # answers given while others waited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and self.active > 1:
                self.crowded += 1
                if self.crowded % RECONNECT_EVERY == 0:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        self.active += 1
        try:
            await self.app(scope, receive, sending)
        finally:
            self.active -= 1


def _write_failure(folder: Path, exc: Exception) -> None:
    report = {"kind": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    with contextlib.suppress(OSError), open(folder / FAILURE_FILE, "x", encoding="utf-8") as handle:
        json.dump(report, handle)  # "x": the first worker's reason is kept


def _read_failure(folder: Path) -> VecsearchError | None:
    try:
        report: dict[str, Any] = json.loads((folder / FAILURE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = getattr(error_types, str(report.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, VecsearchError)):
        kind = VecsearchError
    return kind(f"the server's workers could not start: {report.get('message')}")


def _stop_when_orphaned(parent: int) -> None:
    """Stop this worker (as SIGTERM does) if its parent dies without stopping it."""
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vecsearch-parent-watch", daemon=True).start()
