"""The inference-mode decision, remembered per weights, CPU and runtime versions.

Checking which fast mode matches fp32 costs a crawl seconds (every mode embeds the same pictures) and
gives the same answer on the same machine for the same weights. So the decision is kept in a small JSON
file in the cache, under a key made of the weights' fingerprint, the CPU (model name, the instruction
sets it offers, the architecture) and the versions of the runtimes that compute the vectors. Any change
of these checks again. The file holds nothing that a crawl cannot rebuild: a damaged one is ignored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_NAME = "inference-modes.json"
MAX_ENTRIES = 256
log = logging.getLogger(__name__)


@functools.cache
def cpu_identity() -> str:
    """The CPU as far as it decides which kernels run: model name, feature flags and architecture."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Processor", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    digest = hashlib.blake2b(flags.encode(), digest_size=6).hexdigest()
    return f"{model or platform.processor() or 'unknown CPU'} [{platform.machine()}, flags {digest}]"


def runtime_versions(*modules: str) -> dict[str, str]:
    """Installed versions of the runtimes that compute vectors (read from the package metadata, so
    nothing is imported)."""
    from importlib import metadata

    versions = {}
    for module in modules:
        try:
            versions[module] = metadata.version(module)
        except metadata.PackageNotFoundError:
            versions[module] = "missing"
    return versions


def decision_key(fingerprint: str, engine: str, runtimes: dict[str, str]) -> dict[str, Any]:
    """What a decision depends on."""
    return {
        "fingerprint": fingerprint,
        "engine": engine,
        "cpu": cpu_identity(),
        "runtimes": dict(sorted(runtimes.items())),
    }


def _key_text(key: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=12).hexdigest()


def memory_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    from . import hub

    return hub.vecsearch_cache(cache_dir) / FILE_NAME


def recall(key: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The decision made earlier under exactly this key, or None."""
    entry = _read(memory_path(cache_dir)).get(_key_text(key))
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("mode"), str):
        return None
    return entry


def remember(
    key: dict[str, Any], mode: str, checks: list[dict[str, Any]], cache_dir: str | os.PathLike[str] | None = None
) -> None:
    """Record a decision (never fails a crawl: an unwritable cache only means checking again next time)."""
    path = memory_path(cache_dir)
    entries = _read(path)
    entries[_key_text(key)] = {
        "key": key,
        "mode": mode,
        "checks": checks,
        "decided": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.info("could not remember the inference mode in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
