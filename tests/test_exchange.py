"""Shards as the exchange format: `vecsearch export` (Parquet, clip-retrieval's layout) and `vecsearch index
--from-embeddings`, which builds the same index again without embedding a picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SCORE_ATOL, make_collection, write_tiny_model

from vecsearch import Index, ModelMismatchError, VecsearchError
from vecsearch.cli import main

NAMES = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
QUERIES = ["a red apple", "fruit", "the sea", "a purple car on the road", "a tent", "snow", "a dark night", "leaf"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local-dir:{write_tiny_model(tmp_path_factory.mktemp('tiny'))}"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, spec: str) -> Path:
    """An index of a collection with sidecars (apple has two captions), a captions file and a duplicate."""
    base = tmp_path_factory.mktemp("exchange")
    tree = make_collection(base / "tree", NAMES, 12)
    (tree / "copy.png").write_bytes((tree / "sun.png").read_bytes())
    (base / "more.csv").write_text(f"path,caption\n{tree / 'more' / 'm1.jpg'},a picture from the captions file\n")
    with Index.create(base / "index", spec, device="cpu", inference="fp32") as index:
        index.add(tree, captions=[base / "more.csv"])
    return base / "index"


def answers(index: Index) -> dict[str, list[tuple[tuple[str, str, str | None], float]]]:
    """Every query's hits as (path, kind, caption) with scores: what a user sees, without item ids."""
    seen = {}
    for query in QUERIES:
        seen[query] = [((h.path, h.kind, h.caption), h.score) for h in index.search(query, k=20)]
    return seen


def assert_same_answers(got: Index, want: Index, atol: float = SCORE_ATOL) -> None:
    mine, theirs = answers(got), answers(want)
    for query in QUERIES:
        assert len(mine[query]) == len(theirs[query]), query
        np.testing.assert_allclose([s for _, s in mine[query]], [s for _, s in theirs[query]], atol=atol)
        scores = dict(theirs[query])
        for (key, score), (want_key, _) in zip(mine[query], theirs[query], strict=True):
            assert key == want_key or abs(scores.get(key, -9) - score) <= 2 * atol, (query, key, want_key)
    assert got.counts() == want.counts()


def test_a_parquet_export_comes_back_as_the_same_index(tmp_path: Path, source: Path) -> None:
    exported = CliRunner().invoke(main, ["export", str(source), str(tmp_path / "out"), "--shard-size", "8", "--json"])
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    with Index.open(source) as index:
        counts = index.counts()
    assert (report["pictures"], report["captions"], report["files"]) == (counts["images"], counts["captions"], 3)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "shard-000000.parquet")
    assert {"id", "path", "key", "sha256", "size", "mtime_ns", "captions", "vector"} <= set(table.column_names)
    assert str(table.schema.field("vector").type) == "fixed_size_list<element: float>[16]"  # the tiny model: 16-d
    built = CliRunner().invoke(
        main, ["index", "--from-embeddings", str(tmp_path / "out"), "--index", str(tmp_path / "again"), "--json"]
    )
    assert built.exit_code == 0, built.output
    result = json.loads(built.stdout)
    assert result["embedded_images"] == 0 and result["embedded_captions"] == 0  # nothing embedded again
    with Index.open(source) as original, Index.open(tmp_path / "again") as again:
        assert again.fingerprint == original.fingerprint
        assert_same_answers(again, original, atol=1e-6)
        for item_id in again.store.item_ids("image"):
            item = again.item(item_id)
            assert item is not None and Path(item.path).exists()
            twin = [i for i in original.store.item_ids("image") if original.item(i).path == item.path]
            assert np.array_equal(again.store.vector(item_id), original.store.vector(twin[0]))


def test_clip_retrieval_layout_round_trips(tmp_path: Path, source: Path, spec: str) -> None:
    with Index.open(source) as index:
        report = index.export(tmp_path / "cr", format="clip-retrieval", shard_size=10)
        images = index.counts()["images"]
    out = tmp_path / "cr"
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == [
        "img_emb_00000.npy",
        "img_emb_00001.npy",
        "img_emb_00002.npy",
    ]
    import pyarrow.parquet as pq

    metadata = pq.read_table(out / "metadata" / "metadata_00000.parquet")
    assert metadata.column_names[:2] == ["image_path", "caption"]
    vectors = np.load(out / "img_emb" / "img_emb_00000.npy")
    assert vectors.shape == (10, 16) and vectors.dtype == np.float32
    assert np.load(out / "text_emb" / "text_emb_00000.npy").shape == (10, 16)
    assert report.pictures == images
    with (
        Index.create(tmp_path / "again", spec, device="cpu", inference="fp32") as again,
        Index.open(source) as original,
    ):
        result = again.add_embeddings(out)
        assert result.embedded_images == 0
        # clip-retrieval keeps one text vector a picture: the second caption of apple is embedded again
        assert result.embedded_captions == 1
        assert_same_answers(again, original)


def test_autofaiss_reads_the_clip_retrieval_export(tmp_path: Path, source: Path) -> None:
    from embedding_reader import EmbeddingReader

    with Index.open(source) as index:
        index.export(tmp_path / "cr", format="clip-retrieval", shard_size=10)
        wanted = {index.item(i).path: index.store.vector(i) for i in index.store.item_ids("image")}
    reader = EmbeddingReader(
        embeddings_folder=str(tmp_path / "cr" / "img_emb"),
        file_format="parquet_npy",
        metadata_folder=str(tmp_path / "cr" / "metadata"),
        meta_columns=["image_path", "caption"],
    )
    assert (reader.count, reader.dimension) == (len(wanted), 16)
    seen = 0
    for vectors, metadata in reader(batch_size=7, start=0, end=reader.count, show_progress=False):
        for vector, path in zip(vectors, metadata["image_path"], strict=True):
            assert np.array_equal(vector, wanted[path])
            seen += 1
    assert seen == len(wanted)


def test_foreign_clip_retrieval_output_needs_the_model_and_its_dimension(tmp_path: Path, spec: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "theirs"
    for folder in ("img_emb", "text_emb", "metadata"):
        (out / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(out / "img_emb" / "img_emb_0.npy", rng.standard_normal((3, 16)).astype(np.float16))
    np.save(out / "text_emb" / "text_emb_0.npy", rng.standard_normal((3, 16)).astype(np.float16))
    urls = [f"https://example.org/{i}.jpg" for i in range(3)]
    pq.write_table(
        pa.table({"image_path": urls, "caption": ["a cat", "", "a dog"]}), out / "metadata" / "metadata_0.parquet"
    )
    missing_model = CliRunner().invoke(main, ["index", "--from-embeddings", str(out), "--index", str(tmp_path / "i")])
    assert missing_model.exit_code == 1 and "give it with --model" in missing_model.output
    args = ["index", "--from-embeddings", str(out), "--index", str(tmp_path / "i"), "--model", spec, "--json"]
    built = CliRunner().invoke(main, [*args, "--inference", "fp32"])
    assert built.exit_code == 0, built.output
    with Index.open(tmp_path / "i") as index:
        assert index.counts()["images"] == 3 and index.counts()["captions"] == 2
        hit = index.search("a cat", k=1, kind="caption")[0]
        assert hit.path == urls[0] and hit.caption == "a cat"
        stored = index.store.vector(hit.id)
        wanted = np.load(out / "text_emb" / "text_emb_0.npy")[0].astype(np.float32)
        assert float(np.dot(stored, wanted / np.linalg.norm(wanted))) > 0.9999
    np.save(out / "img_emb" / "img_emb_0.npy", rng.standard_normal((3, 7)).astype(np.float32))
    with (
        Index.create(tmp_path / "j", spec, device="cpu") as index,
        pytest.raises(VecsearchError, match="7-dimensional"),
    ):
        index.add_embeddings(out)


def test_vectors_of_another_model_are_refused(tmp_path: Path, source: Path) -> None:
    with Index.open(source) as index:
        index.export(tmp_path / "out")
    other = f"local-dir:{write_tiny_model(tmp_path / 'other', seed=1)}"
    with (
        Index.create(tmp_path / "i", other, device="cpu") as index,
        pytest.raises(ModelMismatchError, match="another model"),
    ):
        index.add_embeddings(tmp_path / "out")


def test_export_refuses_a_folder_that_holds_files(tmp_path: Path, source: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["export", str(source), str(tmp_path / "busy")])
    assert result.exit_code == 1 and "not an empty folder" in result.output
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    nothing = CliRunner().invoke(
        main, ["index", "--from-embeddings", str(tmp_path / "busy"), "--index", str(tmp_path / "x")]
    )
    assert nothing.exit_code == 1 and "neither vecsearch shards" in nothing.output
