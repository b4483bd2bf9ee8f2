"""Load benchmark of `vecsearch serve --workers N`: queries per second and latency under concurrent clients.

    .venv/bin/python scripts/bench_serve_load.py [--workers 1 2] [--clients 1 8 32 64] [--seconds 8]
        [--max-queries 4000] [--work DIR] [--json scripts/results/serve_load.json] [--label TEXT]
        [--threads N] [--client asyncio|threads]

The index is the offline demo's (scripts/demo.sh): the bundled starter model over examples/openclipart,
built once in `--work` (default: a temporary folder). For each worker count the real command
(`vecsearch serve INDEX --workers N -q`, a new process) is started on a loopback port; once every worker
has answered, each level of concurrency runs for `--seconds` (or `--max-queries`, whichever comes first)
after a short warm-up. Every query is a different text prompt (the server's term cache never answers
one), sent as POST /api/v1/search with k=10 over kept-alive connections, one per client; each is timed
from send to the last byte of the answer. Errors are answers other than 200 and broken connections.

The client runs on the same cores as the server, so it is kept lean: one asyncio loop with raw sockets
and minimal HTTP parsing (`--client threads`: http.client, one thread per client, for comparison). Its
own CPU time is measured and reported with the server's (parent and workers, from /proc), and the
machine's load average before each run is recorded. `--threads` sets OMP_NUM_THREADS for the server
(default: what `serve` chooses, cores / workers).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "small",
    "large",
    "old",
    "new",
    "bright",
    "dark",
    "round",
    "square",
    "apple",
    "car",
    "dog",
    "cat",
    "house",
    "tree",
    "flag",
    "star",
    "sun",
    "moon",
    "bird",
    "fish",
    "boat",
    "bicycle",
    "chair",
    "table",
    "lamp",
    "book",
    "guitar",
    "clock",
    "bridge",
    "castle",
    "flower",
    "computer",
    "icon",
    "arrow",
    "heart",
    "music",
    "phone",
    "key",
    "cloud",
    "rain",
    "snow",
    "fire",
    "map",
    "train",
]
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def prompts(count: int, seed: int) -> list[str]:
    """Distinct prompts of three to five words."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        text = "a " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 6)), replace=False))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def demo_index(work: Path) -> Path:
    """The demo's index (starter model, examples/openclipart), built once."""
    folder = work / "home" / "demo"
    if not (folder / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "vecsearch", "--home", str(work / "home"), "index", str(ROOT / "examples" / "openclipart"),
             "--name", "demo", "--model", "starter", "-q"],
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/api/v1/health")
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


def start_server(index: Path, workers: int, threads: int | None) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    command = [sys.executable, "-m", "vecsearch", "serve", str(index), "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen([*command, "-q"], env=env, stdout=subprocess.DEVNULL)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < workers:
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(seen)} answered")
        try:
            seen.add(int(health(port)["worker"]))
        except OSError:
            time.sleep(0.1)
    return process, port, time.perf_counter() - started


def process_tree_ticks(root: int) -> dict[int, int]:
    """CPU ticks (user + system) of a process and of each of its children, from /proc."""
    ticks = {}
    pids = [root]
    children = Path(f"/proc/{root}/task/{root}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def machine_busy_ticks() -> int:
    """CPU ticks every process of the machine spent busy so far (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def request_bytes(port: int, text: str) -> bytes:
    body = json.dumps({"terms": [text], "k": 10}).encode()
    head = (
        f"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _asyncio_client(
    port: int, queue: list[bytes], deadline: float, times: list[float], errors: list[str], opened: list[int]
) -> None:
    """One client: a kept-alive connection, opened again when the server asks (`Connection: close`)."""
    writer = None
    try:
        while queue and time.perf_counter() < deadline:
            data = queue.pop()
            start = time.perf_counter()
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                opened.append(1)
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            body = await reader.readexactly(length)
            elapsed = time.perf_counter() - start
            if head[9:12] == b"200" and b'"hits"' in body:
                times.append(elapsed)
            else:
                errors.append(head[9:12].decode() or "?")
            if close:
                writer.close()
                writer = None
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()


def run_asyncio(
    port: int, clients: int, requests: list[bytes], seconds: float
) -> tuple[list[float], list[str], float, int]:
    times: list[float] = []
    errors: list[str] = []
    opened: list[int] = []

    async def main() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(_asyncio_client(port, requests, deadline, times, errors, opened) for _ in range(clients))
        )
        return time.perf_counter() - start

    wall = asyncio.run(main())
    return times, errors, wall, len(opened)


def run_threads(port: int, clients: int, requests: list[str], seconds: float) -> tuple[list[float], list[str], float]:
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def work() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if not requests:
                        return
                    text = requests.pop()
                body = json.dumps({"terms": [text], "k": 10})
                begin = time.perf_counter()
                connection.request("POST", "/api/v1/search", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - begin
                if response.status == 200 and b'"hits"' in data:
                    times.append(elapsed)
                else:
                    errors.append(str(response.status))
        except OSError as exc:
            errors.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, errors, time.perf_counter() - start


def measure(port: int, server_pid: int, clients: int, texts: list[str], seconds: float, design: str) -> dict[str, Any]:
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    server_before = process_tree_ticks(server_pid)
    machine_before = machine_busy_ticks()
    if design == "asyncio":
        batch = [request_bytes(port, t) for t in texts]
        times, errors, wall, connections = run_asyncio(port, clients, batch, seconds)
    else:
        times, errors, wall = run_threads(port, clients, list(texts), seconds)
        connections = -1  # http.client reconnects on its own, uncounted
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    server_after = process_tree_ticks(server_pid)
    machine = (machine_busy_ticks() - machine_before) / TICKS
    per_process = {pid: server_after[pid] - server_before.get(pid, 0) for pid in server_after}
    server_ticks = sum(per_process.values())
    busiest = sorted((t for pid, t in per_process.items() if pid != server_pid), reverse=True)
    own = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    ms = np.array(times) * 1000 if times else np.array([float("nan")])
    return {
        "clients": clients,
        "queries": len(times),
        "errors": len(errors),
        "connections": connections,
        "error_kinds": sorted(set(errors)),
        "seconds": round(wall, 2),
        "qps": round(len(times) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "client_cpu_cores": round(own / wall, 2),
        "server_cpu_cores": round(server_ticks / TICKS / wall, 2),
        # Each worker's share of the server's CPU, busiest first: how evenly the connections were spread.
        "worker_cpu_cores": [round(t / TICKS / wall, 2) for t in busiest],
        # What everything else on the machine used meanwhile: other work skews the numbers.
        "other_cpu_cores": round(max(0.0, machine - own - server_ticks / TICKS) / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="Longest run of one level.")
    parser.add_argument("--max-queries", type=int, default=4000, help="Most queries of one level.")
    parser.add_argument("--work", type=Path, help="Keep the demo index here (default: temporary).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--label", default="", help="What this run tries (recorded with it).")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the server.")
    parser.add_argument("--client", choices=["asyncio", "threads"], default="asyncio")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        index = demo_index(work)
        items = json.loads((index / "manifest.json").read_text())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(
            f"vecsearch serve under load; {date.today()}, {platform.machine()}, {cores} cores; demo index "
            f"({items['model']['spec']}, {items['faiss']['type']}); {args.client} client; "
            f"up to {args.seconds:g} s or {args.max_queries} queries a level"
        )
        seed = 0
        runs = []
        for workers in args.workers:
            load_before = os.getloadavg()
            process, port, started = start_server(index, workers, args.threads)
            try:
                time.sleep(3)  # the background import of the image model's libraries
                seed += 1
                measure(port, process.pid, 8, prompts(200, seed), 2.0, args.client)  # warm-up
                levels = []
                for clients in args.clients:
                    seed += 1
                    result = measure(
                        port, process.pid, clients, prompts(args.max_queries, seed), args.seconds, args.client
                    )
                    levels.append(result)
                    print(
                        f"  {workers} worker(s), {clients:>3} clients: {result['qps']:6.1f} q/s  p50 "
                        f"{result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:7.1f} ms  errors {result['errors']}  conns {result['connections']}  "
                        f"cpu: server {result['server_cpu_cores']:.2f} {result['worker_cpu_cores']}, "
                        f"client {result['client_cpu_cores']:.2f}, others {result['other_cpu_cores']:.2f} cores"
                    )
            finally:
                process.send_signal(2)
                process.wait(timeout=60)
            runs.append(
                {
                    "workers": workers,
                    "server_start_s": round(started, 2),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "levels": levels,
                }
            )
        ratios = {}
        if len(runs) >= 2:
            base, most = runs[0], runs[-1]
            for one, other in zip(base["levels"], most["levels"], strict=True):
                ratios[str(one["clients"])] = round(other["qps"] / one["qps"], 2) if one["qps"] else None
            print(f"queries/s, {most['workers']} workers / {base['workers']}: " + ", ".join(
                f"{c} clients {r}x" for c, r in ratios.items()))  # fmt: skip
        report = {
            "date": str(date.today()),
            "label": args.label,
            "cores": cores,
            "client": args.client,
            "threads": args.threads,
            "seconds_per_level": args.seconds,
            "index": {"model": items["model"]["spec"], "faiss": items["faiss"]["type"]},
            "runs": runs,
            "ratio_qps": ratios,
        }
        if args.json:
            previous = json.loads(args.json.read_text()) if args.json.exists() else []
            previous = previous if isinstance(previous, list) else [previous]
            args.json.write_text(json.dumps([*previous, report], indent=2) + "\n")


if __name__ == "__main__":
    main()
