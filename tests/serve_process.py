"""`vecsearch serve` as a process of its own, for tests that talk to it over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(index: Path, port: int, *args: str, env: dict[str, str] | None = None, wait_s: float = 90) -> Iterator[str]:
    """Serve `index` on 127.0.0.1:`port` until the block ends; yields the base URL once health answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vecsearch", "-q", "serve", str(index), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as response:
                    json.load(response)
                break
            except OSError:
                if process.poll() is not None:
                    error = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"vecsearch serve exited: {error}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("vecsearch serve did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
