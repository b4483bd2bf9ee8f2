"""`vecsearch serve --workers 2`: real worker processes under uvicorn's supervisor, over one index.

One server (the command, as a process of its own) serves a tiny index for the whole module; its workers
are told apart by the process id /api/v1/health reports, and reached one by one over kept-alive
connections. The server is stopped with SIGINT by the last test.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_same_ranking, index_of, make_collection, make_image

from vecsearch import Index

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and process ids as POSIX has them")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
    return make_collection(tmp_path_factory.mktemp("workers-photos"), names, extra=6, extra_seed=40)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder: Any) -> Path:
    return index_of(tmp_path_factory.mktemp("workers-index") / "index", photos, tiny_encoder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`vecsearch serve --workers 2` as a process of its own."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vecsearch", "serve", str(folder), "--port", str(self.port), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def wait_until_every_worker_answers(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.workers()) < 2:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)

    def workers(self, seconds: float = 10) -> dict[int, http.client.HTTPConnection]:
        """A kept-alive connection to each worker that answered a new connection within `seconds` (which
        process accepts one is the kernel's choice: an idle server may hand many in a row to one)."""
        found: dict[int, http.client.HTTPConnection] = {}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            connection = self.connect()
            try:
                status, health = request(connection, "GET", "/api/v1/health")
            except OSError:
                connection.close()
                return found
            assert status == 200, health
            if health["worker"] in found:
                connection.close()
            else:
                found[health["worker"]] = connection
            if len(found) == 2:
                break
            time.sleep(0.02)
        return found


def request(
    connection: http.client.HTTPConnection, method: str, path: str, body: Any = None, headers: dict | None = None
) -> tuple[int, Any]:
    sent = dict(headers or {})
    data = body
    if isinstance(body, dict):
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[Server]:
    running = Server(folder)
    try:
        running.wait_until_every_worker_answers()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.communicate(timeout=30)


@pytest.fixture
def workers(server: Server) -> Iterator[dict[int, http.client.HTTPConnection]]:
    found = server.workers()
    assert len(found) == 2, f"only worker {list(found)} answered"
    yield found
    for connection in found.values():
        connection.close()


def multipart(data: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "vecsearch-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_workers_are_processes_of_the_server(server: Server, workers: dict) -> None:
    assert server.process.pid not in workers and len(set(workers)) == 2
    if Path("/proc").is_dir():
        cores = len(os.sched_getaffinity(0))
        threads = os.environ.get("OMP_NUM_THREADS", str(max(1, cores // 2)))  # the cores shared out
        for pid in workers:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert parent == server.process.pid
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"OMP_NUM_THREADS={threads}".encode() in environment


def test_workers_must_be_one_or_more(folder: Path) -> None:
    from click.testing import CliRunner

    from vecsearch.cli import main

    result = CliRunner().invoke(main, ["serve", str(folder), "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_every_worker_answers_searches_as_the_library(workers: dict, folder: Path, tiny_encoder: Any) -> None:
    with Index.open(folder, encoder=tiny_encoder) as library:
        for body in ({"terms": ["a red apple"], "k": 5}, {"terms": ["sea", "-0.5:leaf"], "k": 4, "kind": "any"}):
            want = [(h.id, h.score) for h in library.search(body["terms"], k=body["k"], kind=body.get("kind"))]
            for connection in workers.values():
                status, answer = request(connection, "POST", "/api/v1/search", body)
                assert status == 200, answer
                assert_same_ranking([(h["id"], h["score"]) for h in answer["hits"]], want)


def test_an_upload_answered_by_one_worker_is_used_by_the_other(workers: dict, photos: Path) -> None:
    first, second = workers.values()
    body, headers = multipart((photos / "sun.png").read_bytes())
    status, uploaded = request(first, "POST", "/api/v1/uploads", body, headers)
    assert status == 201, uploaded
    assert len(uploaded["items"]) == 1  # the indexed picture with the same bytes
    query = {"terms": [uploaded["upload"]], "k": 5}
    answers = [request(connection, "POST", "/api/v1/search", query) for connection in (second, first)]
    assert [status for status, _ in answers] == [200, 200], answers
    # The workers run the same model the same way: the picture searches alike wherever it is used.
    rankings = [[(h["id"], h["score"]) for h in answer["hits"]] for _, answer in answers]
    assert_same_ranking(rankings[0], rankings[1])
    assert len(rankings[0]) == 5
    status, described = request(second, "POST", "/api/v1/describe", {"image": uploaded["upload"], "k": 1})
    assert status == 200, described
    unknown = "upload:" + "0" * 64
    status, error = request(first, "POST", "/api/v1/search", {"terms": [unknown]})
    assert status == 404 and "upload it again" in error["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/static/../serve/app.py",
        "/static/..%2Fserve%2Fapp.py",
        "/static/%2e%2e/%2e%2e/serve/app.py",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
    ],
)
def test_path_traversal_is_refused_by_every_worker(workers: dict, url: str) -> None:
    for connection in workers.values():
        status, body = request(connection, "GET", url)
        assert status in (404, 422)
        assert b"root:" not in json.dumps(body).encode() and b"def create_app" not in json.dumps(body).encode()


def test_other_host_names_are_refused_by_every_worker(workers: dict) -> None:
    for connection in workers.values():
        assert request(connection, "GET", "/api/v1/health", headers={"Host": "attacker.example"})[0] == 400
        assert request(connection, "GET", "/api/v1/health", headers={"Host": "localhost:8000"})[0] == 200


def test_a_crawl_committing_while_served_is_seen_by_every_worker(
    server: Server, workers: dict, folder: Path, photos: Path, tiny_encoder: Any
) -> None:
    before = {pid: request(c, "GET", "/api/v1/health")[1] for pid, c in workers.items()}
    make_image(photos / "new" / "late.png", "white", seed=77)
    with Index.open(folder, encoder=tiny_encoder) as writer:
        writer.add()  # the re-crawl commits while both workers hold the index open
        want = [(h.id, h.score) for h in writer.search("a white square", k=20)]
        generation = writer.generation
    for pid, connection in workers.items():
        status, health = request(connection, "GET", "/api/v1/health")
        assert status == 200 and health["worker"] == pid
        assert health["items"] == before[pid]["items"] + 1 and health["generation"] == generation
        status, answer = request(connection, "POST", "/api/v1/search", {"terms": ["a white square"], "k": 20})
        assert_same_ranking([(h["id"], h["score"]) for h in answer["hits"]], want)
        assert "new/late.png" in [h["relpath"] for h in answer["hits"]]


def test_sigint_stops_every_worker(folder: Path) -> None:
    server = Server(folder)  # a server of its own: the module's keeps serving the other tests, in any order
    try:
        server.wait_until_every_worker_answers()
        workers = server.workers()
        pids = list(workers)
        assert len(pids) == 2
        for connection in workers.values():
            connection.close()
        server.process.send_signal(signal.SIGINT)
        _, err = server.process.communicate(timeout=30)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate(timeout=30)
    assert server.process.returncode in (0, 130), err
    assert f"at http://127.0.0.1:{server.port}/ with 2 workers" in err
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_a_damaged_index_is_one_error_before_any_worker_starts(tmp_path: Path, folder: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    vectors = broken / manifest["faiss"]["file"]
    vectors.write_bytes(b"\0" * vectors.stat().st_size)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vecsearch", "serve", str(broken), "--port", str(free_port()), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("Error") == 1 and "Started server process" not in result.stderr
    assert time.monotonic() - started < 30


def test_a_worker_that_cannot_start_stops_the_server_with_its_reason(tmp_path: Path, folder: Path) -> None:
    """The model is loaded by the workers only: one that cannot load it stops them all, once, with why."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["model"]["name"] = f"local-dir:{tmp_path / 'gone'}"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [sys.executable, "-m", "vecsearch", "serve", str(moved), "--port", str(free_port()), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode not in (0, 1), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the server's workers could not start") and str(tmp_path / "gone") in last
    assert "died" not in result.stderr  # stopped, not restarted


def test_uploads_are_files_named_by_content_least_recently_used_out(tmp_path: Path) -> None:
    from vecsearch.serve.uploads import Uploads

    store = Uploads(max_bytes=250, folder=tmp_path / "uploads")
    a, b = store.add(b"a" * 100), store.add(b"b" * 100)
    assert store.get(a) == b"a" * 100  # used: now b is the least recently used
    c = store.add(b"c" * 100)  # 300 bytes > 250: b goes
    assert store.get(b) is None and store.get(c) == b"c" * 100
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == sorted([a, c])
    assert store.add(b"a" * 100) == a and len(a) == 64
    other_worker = Uploads(max_bytes=250, folder=tmp_path / "uploads")  # the same folder, another process
    big = other_worker.add(b"x" * 1000)  # alone over the limit: kept, everything else goes
    assert store.get(big) == b"x" * 1000 and store.get(a) is None and store.get(c) is None
    for name in ("../uploads/" + big, "/etc/passwd", big.upper(), big + "\n", ""):
        assert store.get(name) is None
    own = Uploads(max_bytes=10)  # no folder: a private temporary one, removed with the store
    assert own.folder.is_dir() and oct(own.folder.stat().st_mode & 0o777) == "0o700"
    own.add(b"z")
    own.close()
    assert not own.folder.exists()


def test_a_crowded_worker_asks_some_clients_to_reconnect() -> None:
    import asyncio

    from vecsearch.serve.workers import RECONNECT_EVERY, Rebalance

    async def query(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.01)  # answering: the requests that came meanwhile wait
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def closed_answers(app: Rebalance, at_once: int) -> int:
        closed = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b""}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                closed.append((b"connection", b"close") in message["headers"])

        await asyncio.gather(*(app({"type": "http"}, receive, send) for _ in range(at_once)))
        return sum(closed)

    async def scenario() -> tuple[int, int]:
        alone = Rebalance(query)
        one_by_one = sum([await closed_answers(alone, 1) for _ in range(3 * RECONNECT_EVERY)])
        crowded = await closed_answers(Rebalance(query), 2 * RECONNECT_EVERY + 1)
        return one_by_one, crowded

    one_by_one, crowded = asyncio.run(scenario())
    assert one_by_one == 0  # nobody waiting: connections stay open
    assert crowded == 2  # 2·N answers given while others waited (the last had none behind it): 2 closed
