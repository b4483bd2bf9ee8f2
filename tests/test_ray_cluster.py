"""The distributed crawl on a multi-node cluster on this machine (`ray.cluster_utils.Cluster`: a head with
no CPU of its own and two worker nodes of one CPU each): a worker node that dies mid-job costs only its
in-flight work; a pool Ray cannot place says so instead of hanging; a driver killed with SIGKILL loses
nothing and embeds no finished shard again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_collection, write_tiny_model

from vecsearch import Index, RayOptions

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]
NAMES = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
NODE = {"num_cpus": 1, "object_store_memory": 150 << 20}
# A dead node is noticed after about 3 s instead of Ray's default 15 s or so.
FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 2,
    "health_check_timeout_ms": 1000,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # The nodes' processes inherit this: each batch the model actor embeds takes a quarter of a second
    # longer, so that the job is still running when a test takes a node away.
    saved = os.environ.get("VECSEARCH_FAULT")
    os.environ["VECSEARCH_FAULT"] = "ray-embed:1:slow"
    head = {
        "num_cpus": 0,
        "object_store_memory": 150 << 20,
        "include_dashboard": False,
        "_system_config": FAST_HEALTH_CHECKS,
    }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    if saved is None:
        os.environ.pop("VECSEARCH_FAULT")
    else:
        os.environ["VECSEARCH_FAULT"] = saved
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(autouse=True)
def two_workers(cluster: Cluster) -> Iterator[None]:
    """Every test starts and ends with two live worker nodes, whatever it removed."""
    yield
    while len(list(cluster.worker_nodes)) < 2:
        add_slow_node(cluster)
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local-dir:{write_tiny_model(tmp_path_factory.mktemp('tiny'))}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_collection(tmp_path_factory.mktemp("pictures") / "tree", NAMES, 56)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tree: Path, spec: str) -> Iterator[Index]:
    with Index.create(tmp_path_factory.mktemp("ref") / "local", spec, device="cpu", inference="fp32") as index:
        index.add(tree)
        yield index


def pictures(index: Index) -> dict[str, np.ndarray]:
    found = {}
    for item_id in index.store.item_ids("image"):
        item = index.item(item_id)
        assert item is not None
        found[item.path] = index.store.vector(item_id)
    return found


def assert_exact(index: Index, reference: Index) -> None:
    """Every picture present exactly once, with the vector the local crawl gives it."""
    got, wanted = pictures(index), pictures(reference)
    assert len(index.store.item_ids("image")) == len(got) == len(wanted)
    assert sorted(got) == sorted(wanted)
    for path, vector in wanted.items():
        assert float(np.dot(got[path], vector)) >= 0.9999
    assert index.counts() == reference.counts()


def model_node(cluster: Cluster) -> Any:
    """The worker node that runs the model's actor, from Ray's own actor table (the state API needs the
    dashboard, which these tests do not start)."""
    from ray._private import state

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for actor in state.actors().values():
            if "MapWorker" in actor.get("ActorClassName", "") and actor.get("State") == "ALIVE":
                node_id = actor["Address"]["NodeID"]
                return next(node for node in cluster.worker_nodes if node.node_id == node_id)
        time.sleep(0.05)
    names = [(a.get("ActorClassName"), a.get("State")) for a in state.actors().values()]
    raise AssertionError(f"no model actor is alive: {names}")


def add_slow_node(cluster: Cluster) -> None:
    os.environ["VECSEARCH_FAULT"] = "ray-embed:1:slow"
    try:
        cluster.add_node(**NODE)
    finally:
        os.environ.pop("VECSEARCH_FAULT")


def wait_for_a_shard(folder: Path, running: Any) -> None:
    deadline = time.monotonic() + 90
    while not list((folder / "jobs" / "ray").glob("*.done")) and time.monotonic() < deadline and running():
        time.sleep(0.02)
    assert running(), "the job finished before a node could be lost: give it more pictures"


def test_a_worker_node_lost_mid_job_costs_only_its_work(
    cluster: Cluster, tmp_path: Path, tree: Path, spec: str, reference: Index
) -> None:
    folder = tmp_path / "ray"
    result: dict[str, Any] = {}

    def crawl() -> None:
        with Index.create(folder, spec, device="cpu", batch_size=4, inference="fp32") as index:
            result["report"] = index.add(tree, engine="ray", ray=RayOptions(shard_size=4))

    worker = threading.Thread(target=crawl)
    worker.start()
    wait_for_a_shard(folder, worker.is_alive)
    cluster.remove_node(model_node(cluster), allow_graceful=False)  # the model's node, with its work in flight
    add_slow_node(cluster)  # a replacement, as an autoscaler would start
    worker.join(timeout=150)
    assert not worker.is_alive()
    report = result["report"]
    with Index.open(folder) as index:
        assert_exact(index, reference)
    assert report.added == len(pictures(reference)) and not report.skipped


def command(tree: Path, folder: Path, spec: str, address: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vecsearch", "index", str(tree), "--index", str(folder), "--model", spec,
        "--inference", "fp32", "--batch-size", "4", "--engine", "ray", "--address", address,
        "--shard-size", "4", "--json", *extra,
    ]  # fmt: skip


def test_a_pool_that_never_gets_its_cpus_stops_with_a_reason_instead_of_hanging(
    cluster: Cluster, tmp_path: Path, tree: Path, spec: str, reference: Index
) -> None:
    """Ray waits without an error for resources that never come: an actor larger than any node (or a
    cluster that a lost node left too small). The driver notices that nothing comes back and says so."""
    folder = tmp_path / "ray"
    args = command(tree, folder, spec, cluster.address)
    started = time.monotonic()
    stuck = subprocess.run(
        [*args, "--actor-cpus", "1.5", "--stall-timeout", "5"], capture_output=True, text=True, timeout=120
    )
    assert stuck.returncode == 1, stuck.stderr[-2000:]
    assert "no picture came back from Ray for 5 s" in stuck.stderr
    assert "run the same command again" in stuck.stderr
    assert time.monotonic() - started < 60
    again = subprocess.run(args, capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr[-2000:]
    with Index.open(folder) as index:
        assert_exact(index, reference)


def test_a_killed_driver_resumes_without_embedding_a_finished_shard_again(
    cluster: Cluster, tmp_path: Path, tree: Path, spec: str, reference: Index
) -> None:
    folder = tmp_path / "ray"
    args = command(tree, folder, spec, cluster.address)
    env = {**os.environ, "VECSEARCH_FAULT": "shard-written:3:kill"}  # SIGKILL right after the third shard
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=150)
    assert killed.returncode == -9, killed.stderr[-2000:]
    import pyarrow.parquet as pq

    finished = sorted((folder / "jobs" / "ray").glob("shard-*.parquet.done"))
    assert len(finished) == 3
    embedded_before = sum(
        pq.read_table(str(done)[: -len(".done")], columns=["vector"])
        .column("vector")
        .is_valid()
        .to_pylist()
        .count(True)
        for done in finished
    )
    assert embedded_before == 12
    first = pq.read_table(str(finished[0])[: -len(".done")]).to_pylist()
    assert [Path(row["path"]).parent for row in first] == [tree] * 4 and {r["root_kind"] for r in first} == {"folder"}
    env.pop("VECSEARCH_FAULT")
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    total = len(pictures(reference))
    # The model embedded exactly what the finished shards did not hold: nothing twice.
    assert report["distributed"]["embedded_by_cluster"] == total - embedded_before
    assert report["distributed"]["shards_reused"] == 3
    assert report["added"] == total
    with Index.open(folder) as index:
        assert_exact(index, reference)
    assert not (folder / "jobs").exists()
