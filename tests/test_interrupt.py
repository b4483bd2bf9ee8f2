"""Ctrl-C during a crawl: what was committed stays, the index stays readable, the next run continues.

The interrupt is injected by an encoder that wraps the real tiny model and raises KeyboardInterrupt
on a chosen model call, exactly where a user's Ctrl-C would land during embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import InterruptingEncoder

import vecsearch.indexer
from vecsearch import Index, IndexingInterrupted
from vecsearch.cli import main
from vecsearch.index import brute_force_search


def test_interrupted_crawl_keeps_committed_work(tmp_path: Path, tiny_encoder, make_images) -> None:
    make_images(tmp_path / "pics", 20)
    wrapped = InterruptingEncoder(tiny_encoder, stop_at=3)  # batch size 8: two batches get through
    index = Index.create(tmp_path / "idx", encoder=wrapped)
    with pytest.raises(IndexingInterrupted) as stopped:
        index.add(tmp_path / "pics")
    report = stopped.value.report
    assert report.interrupted and report.added == 16 and report.embedded_images == 16
    index.close()

    reopened = Index.open(tmp_path / "idx", encoder=tiny_encoder)
    assert reopened.counts()["images"] == 16
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["faiss"]["ntotal"] == 16
    assert manifest["faiss"]["generation"] == reopened.store.generation
    vector = reopened.query_vector(vecsearch.Query.parse("a red square"))
    assert [h.id for h in reopened.search("a red square", k=16)] == [
        i for i, _ in brute_force_search(reopened, vector, 16)
    ]

    resumed = reopened.add(tmp_path / "pics")
    assert (resumed.added, resumed.unchanged, resumed.embedded_images) == (4, 16, 4)
    assert reopened.counts()["images"] == 20


def test_ctrl_c_in_the_command_exits_130_and_saves(
    tmp_path: Path, tiny_encoder, tiny_model_dir: Path, make_images, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_images(tmp_path / "pics", 12)
    Index.create(tmp_path / "idx", encoder=tiny_encoder).close()
    wrapped = InterruptingEncoder(tiny_encoder, stop_at=2)
    monkeypatch.setattr("vecsearch.model.load_encoder", lambda *args, **kwargs: wrapped)
    result = CliRunner().invoke(
        main, ["index", str(tmp_path / "pics"), "--index", str(tmp_path / "idx"), "--batch-size", "4"]
    )
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: interrupted; the work done so far is saved: run the same command to continue"
    )
    assert "4 added" in result.stdout  # the first batch of 4 was committed on the way out
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as index:
        assert index.counts()["images"] == 4
