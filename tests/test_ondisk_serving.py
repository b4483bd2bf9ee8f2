"""An index kept on disk: built by shards through the index's own save path, memory-mapped read-only by
readers, queried with raw vectors, and served without a pause while a new one is built beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vecsearch import Index, QueryError, VecsearchError
from vecsearch.index import brute_force_search
from vecsearch.manifest import read_manifest
from vecsearch.serve import create_app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from synthetic_vectors import ClusteredVectors, fill_index  # noqa: E402

COUNT = 6000


@pytest.fixture
def disk_index(tmp_path: Path, tiny_encoder, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("vecsearch.shard_build.SHARD_SIZE", 2000)  # three shards
    folder = tmp_path / "disk"
    index = Index.create(folder, encoder=tiny_encoder, index_type="ivf-sq8", storage="disk")
    vectors = ClusteredVectors(dim=tiny_encoder.dim, topics=40, seed=3).chunk(0, COUNT)
    fill_index(index, vectors, caption_every=3)
    index.close()
    return folder


def test_an_on_disk_index_is_mapped_read_only_and_answers_like_exact_search(disk_index: Path, tiny_encoder) -> None:
    info = read_manifest(disk_index)["faiss"]
    assert info["on_disk"] and info["family"] == "ivf-sq8" and info["lists_bytes"] > 0
    assert (disk_index / info["file"]).with_suffix(".ivfdata").is_file()
    assert not (disk_index / "jobs" / "faiss").exists()  # the build's work went with the commit
    assert info["tuning"]["text"]["queries"] == "captions" and info["tuning"]["image"]["recall@10"] > 0.5
    with Index.open(disk_index, encoder=tiny_encoder) as index:
        vectors = index.vectors
        assert vectors.on_disk and vectors.mapped
        with pytest.raises(VecsearchError, match="read-only"):
            vectors.add(np.array([10**9]), np.ones((1, index.dim), dtype=np.float32))
        ids, stored = index.store.vectors_of(index.store.sample_item_ids(20, kind="image"))
        found = index.search_vectors(stored, k=5, kind="any")
        assert len(found) == 20
        agree = [hits[0].id == brute_force_search(index, q, 1)[0][0] for q, hits in zip(stored, found, strict=True)]
        assert sum(agree) >= 18  # approximate, tuned to recall@10 0.95


def test_query_vectors_are_validated(disk_index: Path, tiny_encoder) -> None:
    with Index.open(disk_index, encoder=tiny_encoder) as index:
        one = np.ones(index.dim, dtype=np.float64) * 3  # normalised on the way in
        hits = index.search_vectors(one, k=3)
        assert len(hits) == 3 and all(h.kind == "image" for h in hits)
        for bad, message in [
            (np.ones(index.dim + 1), "shape"),
            (np.ones((2, 3, index.dim)), "shape"),
            (np.ones(index.dim, dtype=np.int64), "floating point"),
            (np.full(index.dim, np.nan), "finite"),
            (np.zeros(index.dim), "length zero"),
            ("a cat", "floating point"),
        ]:
            with pytest.raises(QueryError, match=message):
                index.search_vectors(bad)
        with pytest.raises(QueryError, match="k must be"):
            index.search_vectors(one, k=0)


def test_a_batch_of_query_vectors_equals_one_query_at_a_time(disk_index: Path, tiny_encoder) -> None:
    with Index.open(disk_index, encoder=tiny_encoder) as index:
        queries = ClusteredVectors(dim=index.dim, topics=40, seed=3).queries(8, text_like=True)
        batch = index.search_vectors(queries, k=6, kind="any")
        for query, hits in zip(queries, batch, strict=True):
            single = index.search_vectors(query, k=6, kind="any")
            assert [h.id for h in hits] == [h.id for h in single]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)


WRITER = """
import sys, numpy as np
sys.path.insert(0, {scripts!r})
import vecsearch.shard_build
vecsearch.shard_build.SHARD_SIZE = 1000
from synthetic_vectors import ClusteredVectors, fill_index
from vecsearch import Index, load_encoder
index = Index.open({folder!r}, encoder=load_encoder({spec!r}, device="cpu", inference="fp32"))
more = ClusteredVectors(dim=index.dim, topics=40, seed=4).chunk(1, {more})
fill_index(index, more, root="more")
print("committed", flush=True)
"""


def test_serve_keeps_answering_while_a_new_on_disk_index_is_built_and_then_switches(
    disk_index: Path, tiny_encoder, tiny_model_dir: Path
) -> None:
    index = Index.open(disk_index, encoder=tiny_encoder)
    client = TestClient(create_app(index), base_url="http://127.0.0.1")
    before = read_manifest(disk_index)["faiss"]
    first = client.get("/api/v1/info").json()
    assert first["counts"]["items"] == COUNT
    script = WRITER.format(
        scripts=str(ROOT / "scripts"), folder=str(disk_index), spec=f"local-dir:{tiny_model_dir}", more=3000
    )
    env = {**os.environ, "VECSEARCH_FAULT": "shard-added:1:slow"}  # a quarter second a shard: a long build
    writer = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    answered_during_build = 0
    try:
        while writer.poll() is None:
            response = client.post("/api/v1/search", json={"terms": ["a red apple"], "k": 5, "kind": "any"})
            assert response.status_code == 200, response.text
            if read_manifest(disk_index)["faiss"]["file"] == before["file"]:
                answered_during_build += 1
            time.sleep(0.05)
    finally:
        out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0 and "committed" in out
    assert answered_during_build >= 5
    after = read_manifest(disk_index)["faiss"]
    assert after["file"] != before["file"] and after["on_disk"] and after["ntotal"] == COUNT + 3000
    assert not (disk_index / before["file"]).exists()  # the old files went once the new one was named
    info = client.get("/api/v1/info").json()
    assert info["counts"]["items"] == COUNT + 3000
    hits = client.post("/api/v1/search", json={"terms": ["a red apple"], "k": 5, "kind": "any"}).json()
    assert len(hits["hits"]) == 5
    new_ids = {h["id"] for h in hits["hits"]}
    with Index.open(disk_index, encoder=tiny_encoder) as fresh:
        assert fresh.vectors.ntotal == COUNT + 3000
        assert new_ids == {h.id for h in fresh.search("a red apple", k=5, kind="any")}
    index.close()
    json.dumps(info)  # the answer is plain JSON


def test_info_prints_what_tuning_measured_for_both_kinds_of_query(disk_index: Path) -> None:
    from click.testing import CliRunner

    from vecsearch.cli import main

    result = CliRunner().invoke(main, ["info", str(disk_index)])
    assert result.exit_code == 0, result.output
    tuning = read_manifest(disk_index)["faiss"]["tuning"]
    assert "on disk (memory-mapped)" in result.output
    text_line = next(line for line in result.output.splitlines() if line.startswith("text-like queries"))
    assert f"recall@10 {tuning['text']['recall@10']:.3f}" in text_line and "(captions)" in text_line
    image_line = next(line for line in result.output.splitlines() if line.startswith("image-like queries"))
    assert f"p50 {tuning['image']['p50_ms']:.2f} ms" in image_line
    assert "budgets" in result.output and f"{tuning['max_latency_ms']:g} ms" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["info", str(disk_index), "--json"]).output)
    assert as_json["faiss"]["tuning"] == tuning
