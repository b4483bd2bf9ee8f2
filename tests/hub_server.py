"""A Hugging Face hub on loopback, for tests that run the real download path of huggingface_hub.

It answers the endpoints the installed client calls, the way huggingface.co answers them:

- `HEAD|GET /{repo}/resolve/{revision}/{path}`: a regular file comes back directly, with its git blob id
  as ETag and the commit in X-Repo-Commit; an LFS file (weights) is a 302 to a CDN on another origin,
  the redirect carrying X-Linked-Etag (the file's sha256), X-Linked-Size and X-Repo-Commit, as the hub
  does; a missing file is a 404 with X-Error-Code: EntryNotFound;
- `GET /cdn/{sha256}` on the CDN origin: the LFS bytes, with Range support (206 + Content-Range);
- `GET /api/models/{repo}[/revision/{revision}]`: repository info with `sha` and `siblings`;
- `GET /api/models/{repo}/tree/{revision}[/{folder}]`: the file listing that snapshot_download and
  transformers read;
- `GET /api/agent-harnesses`: a registry huggingface_hub fetches for its user agent (empty here).

Every request is logged, and faults can be armed per file: cut the connection part-way through a body
(and then drop every later connection, as when a network goes away), or serve corrupted bytes. The CDN
is a second server on another port, so that the client treats it as the hub treats its CDN: it stops at
the redirect and reads the file's metadata there.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ot", ".model")
CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    """One file of a repository: its bytes stay on disk, so that a 600 MB checkpoint is not held twice."""

    path: Path
    lfs: bool
    size: int
    sha256: str

    @classmethod
    def from_path(cls, path: Path, name: str) -> HubFile:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        return cls(path, name.endswith(LFS_SUFFIXES), path.stat().st_size, digest.hexdigest())

    @property
    def git_blob(self) -> bytes:
        """What git stores: the file itself, or for an LFS file its pointer."""
        if self.lfs:
            return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()
        return self.path.read_bytes()

    @property
    def git_oid(self) -> str:
        blob = self.git_blob
        return hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()

    @property
    def etag(self) -> str:
        """What the hub announces: the sha256 for LFS files, the git blob id for the others."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Repo:
    files: dict[str, HubFile]
    commit: str


@dataclass(frozen=True)
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]
    status: int  # 0: dropped unanswered
    body_bytes: int  # bytes of file content sent


@dataclass
class Fault:
    """What goes wrong when a file's body is served.

    cut_after: send this many bytes of the first GET, then close the connection. What later GETs of the
    file get, until `heal()`, is `after_cut`: "drop", closed unanswered (the network went away: every
    retry fails); "503", Service Unavailable (the CDN is in trouble); "serve", the bytes (it came back).
    corrupt: serve bytes that differ from the announced sha256 (one byte flipped, same size).
    truncate_to: serve only this many bytes, and announce that size as the file's size.
    """

    cut_after: int | None = None
    after_cut: str = "drop"
    corrupt: bool = False
    truncate_to: int | None = None
    cuts: int = 0


@dataclass
class LoopbackHub:
    """The hub and its CDN, each a ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=lambda: {"hub": 0, "cdn": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _servers: dict[str, ThreadingHTTPServer] = field(default_factory=dict)

    def add_repo(self, repo_id: str, files: dict[str, Path]) -> Repo:
        """Serve these files as `repo_id` at a commit derived from their contents."""
        entries = {name: HubFile.from_path(path, name) for name, path in files.items()}
        commit = hashlib.sha1(repr(sorted((n, f.etag) for n, f in entries.items())).encode()).hexdigest()
        self.repos[repo_id] = Repo(entries, commit)
        return self.repos[repo_id]

    def start(self) -> LoopbackHub:
        for name in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _handler(self, name), self, name)
            self._servers[name] = server
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return _url(self._servers["hub"])

    @property
    def cdn(self) -> str:
        return _url(self._servers["cdn"])

    def arm(self, filename: str, fault: Fault) -> Fault:
        self.faults[filename] = fault
        return fault

    def heal(self) -> None:
        self.faults.clear()

    def body_gets(self, filename: str | None = None) -> list[Request]:
        """GETs that sent file content (of one file, or of any)."""
        with self._lock:
            return [
                r
                for r in self.log
                if r.method == "GET" and r.body_bytes > 0 and (filename is None or self.filename_of(r) == filename)
            ]

    def filename_of(self, request: Request) -> str | None:
        """The repository file a request was about (a CDN path names the file by its sha256)."""
        if request.server == "cdn":
            sha = request.path.rsplit("/", 1)[-1]
            for repo in self.repos.values():
                for name, entry in repo.files.items():
                    if entry.sha256 == sha:
                        return name
            return None
        match = _RESOLVE.match(request.path)
        return match.group("file") if match else None

    def requests_for(self, filename: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if self.filename_of(r) == filename]

    def clear(self) -> None:
        with self._lock:
            self.log.clear()
            self.connections.update(hub=0, cdn=0)


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_AGENTS = re.compile(r"^/api/agent-harnesses$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, hub: LoopbackHub, name: str) -> None:
        super().__init__(address, handler)
        self.hub = hub
        self.name = name

    def verify_request(self, request: object, client_address: object) -> bool:
        with self.hub._lock:
            self.hub.connections[self.name] += 1
        return True


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def _handler(hub: LoopbackHub, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _record(self, status: int, body_bytes: int = 0) -> None:
            with hub._lock:
                hub.log.append(
                    Request(
                        server_name,
                        self.command,
                        urlsplit(self.path).path,
                        dict(self.headers.items()),
                        status,
                        body_bytes,
                    )
                )

        def _answer(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            routes: list[tuple[re.Pattern[str], Callable[[re.Match[str], bool], None]]] = (
                [(_CDN, self._cdn)]
                if server_name == "cdn"
                else [(_RESOLVE, self._resolve), (_TREE, self._tree), (_INFO, self._info), (_AGENTS, self._agents)]
            )
            for pattern, route in routes:
                match = pattern.match(path)
                if match:
                    route(match, send_body)
                    return
            self._error(404, "RepoNotFound", send_body)

        # --- answers ---------------------------------------------------------------------------------

        def _repo(self, match: re.Match[str], send_body: bool) -> Repo | None:
            repo = hub.repos.get(match.group("repo"))
            if repo is None:
                self._error(401, "RepoNotFound", send_body)
                return None
            revision = match.groupdict().get("rev")
            if revision not in (None, "main", repo.commit):
                self._error(404, "RevisionNotFound", send_body, repo)
                return None
            return repo

        def _resolve(self, match: re.Match[str], send_body: bool) -> None:
            repo = self._repo(match, send_body)
            if repo is None:
                return
            entry = repo.files.get(match.group("file"))
            if entry is None:
                self._error(404, "EntryNotFound", send_body, repo)
                return
            fault = hub.faults.get(match.group("file"))
            size = fault.truncate_to if fault and fault.truncate_to is not None else entry.size
            if entry.lfs:
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn}/cdn/{entry.sha256}")
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{entry.git_oid}"')
                self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(302)
                return
            self._send_file(entry, match.group("file"), send_body, {"X-Repo-Commit": repo.commit})

        def _cdn(self, match: re.Match[str], send_body: bool) -> None:
            for repo in hub.repos.values():
                for name, entry in repo.files.items():
                    if entry.sha256 == match.group("sha"):
                        self._send_file(entry, name, send_body, {})
                        return
            self._error(404, "EntryNotFound", send_body)

        def _send_file(self, entry: HubFile, name: str, send_body: bool, extra: dict[str, str]) -> None:
            fault = hub.faults.get(name)
            if send_body and fault and fault.cuts and fault.after_cut == "drop":
                # The network is gone: read the request (logged), answer nothing.
                self._record(0)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if send_body and fault and fault.cuts and fault.after_cut == "503":
                self._error(503, "ServiceUnavailable", send_body)
                return
            size = fault.truncate_to if fault and fault.truncate_to is not None else entry.size
            start, end = 0, size - 1
            status = 200
            wanted = _RANGE.match(self.headers.get("Range", ""))
            if wanted:
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._record(416)
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{entry.etag}"')
            base = name.rsplit("/", 1)[-1]  # as the hub words it; the client labels its progress bar with it
            self.send_header("Content-Disposition", f"inline; filename*=UTF-8''{base}; filename=\"{base}\";")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if not send_body:
                self._record(status)
                return
            limit = end + 1
            if fault and fault.cut_after is not None and not fault.cuts:
                limit = min(limit, start + fault.cut_after)
            sent = self._stream(entry, start, limit, corrupt=bool(fault and fault.corrupt))
            self._record(status, sent)
            if limit <= end:  # the cut: close mid-body
                assert fault is not None
                fault.cuts += 1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def _stream(self, entry: HubFile, start: int, stop: int, corrupt: bool) -> int:
            sent = 0
            flip = entry.size // 2  # the corrupted byte: inside the tensor data, past any header
            with open(entry.path, "rb") as handle:
                handle.seek(start)
                position = start
                while position < stop:
                    block = bytearray(handle.read(min(CHUNK, stop - position)))
                    if not block:
                        break
                    if corrupt and position <= flip < position + len(block):
                        block[flip - position] ^= 0xFF
                    try:
                        self.wfile.write(block)
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    sent += len(block)
                    position += len(block)
            return sent

        def _info(self, match: re.Match[str], send_body: bool) -> None:
            repo = self._repo(match, send_body)
            if repo is None:
                return
            siblings = [
                {
                    "rfilename": name,
                    "size": f.size,
                    "blobId": f.git_oid,
                    **({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.git_blob)}} if f.lfs else {}),
                }
                for name, f in sorted(repo.files.items())
            ]
            self._json(
                {
                    "id": match.group("repo"),
                    "modelId": match.group("repo"),
                    "sha": repo.commit,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "siblings": siblings,
                },
                send_body,
            )

        def _tree(self, match: re.Match[str], send_body: bool) -> None:
            repo = self._repo(match, send_body)
            if repo is None:
                return
            folder = (match.group("sub") or "").strip("/")
            recursive = "recursive=true" in urlsplit(self.path).query.lower()
            entries: dict[str, dict[str, object]] = {}
            for name, f in sorted(repo.files.items()):
                if folder and not name.startswith(folder + "/"):
                    continue
                parts = name[len(folder) + 1 if folder else 0 :].split("/")
                base = f"{folder}/" if folder else ""
                for depth in range(1, len(parts)):
                    path = base + "/".join(parts[:depth])
                    entries[path] = {
                        "type": "directory",
                        "path": path,
                        "size": 0,
                        "oid": hashlib.sha1(path.encode()).hexdigest(),
                    }
                    if not recursive:
                        break
                if recursive or len(parts) == 1:
                    entries[name] = {
                        "type": "file",
                        "path": name,
                        "size": f.size,
                        "oid": f.git_oid,
                        **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": len(f.git_blob)}} if f.lfs else {}),
                    }
            if folder and not entries:
                self._error(404, "EntryNotFound", send_body, repo)
                return
            self._json(list(entries.values()), send_body)

        def _agents(self, match: re.Match[str], send_body: bool) -> None:
            """The registry huggingface_hub reads for its user agent (and keeps in $HF_HOME): empty here."""
            self._json({"standardEnvVars": [], "harnesses": {}}, send_body)

        def _json(self, data: object, send_body: bool) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)
            self._record(200)

        def _error(self, status: int, code: str, send_body: bool, repo: Repo | None = None) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if repo is not None:
                self.send_header("X-Repo-Commit", repo.commit)
            self.end_headers()
            if send_body:
                self.wfile.write(body)
            self._record(status)

    return Handler
