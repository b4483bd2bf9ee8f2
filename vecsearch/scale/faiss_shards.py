"""A large FAISS index's shards added in Ray tasks: the build of `shard_build.py`, spread over a cluster.

The driver reads each shard's vectors from the database and hands them to a task with the trained empty
index (put in Ray's object store once); the task fills a copy and returns it serialised, and the driver
writes it to the build's work folder. Tasks are retried by Ray when a node is lost; at most two shards a
CPU are in flight, so the driver's memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..shard_build import ShardRunner, add_to_copy
from .ray_pipeline import RayOptions, connect, import_ray


def ray_shard_runner(options: RayOptions) -> ShardRunner:
    """Adds shards in Ray tasks on the cluster `options` names (Ray starts here when it names none)."""

    def run(trained: bytes, shards: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, bytes]]:
        ray = import_ray()
        started = connect(options)
        try:
            add = ray.remote(num_cpus=1, max_retries=options.attempts)(add_to_copy)
            trained_ref = ray.put(trained)
            limit = max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
            pending: dict[Any, int] = {}
            for number, ids, vectors in shards:
                pending[add.remote(trained_ref, ids, vectors)] = number
                while len(pending) >= limit:
                    yield from _finished(ray, pending)
            while pending:
                yield from _finished(ray, pending)
        finally:
            if started:
                ray.shutdown()

    return run


def _finished(ray: Any, pending: dict[Any, int]) -> Iterator[tuple[int, bytes]]:
    done, _ = ray.wait(list(pending), num_returns=1)
    for ref in done:
        yield pending.pop(ref), ray.get(ref)
