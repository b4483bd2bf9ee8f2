"""Edge cases of crawling and opening found in review: each test pins one behaviour that once failed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import InterruptingEncoder, make_image, write_tiny_model

from vecsearch import (
    CaptionsFileError,
    Index,
    IndexingInterrupted,
    IndexLockedError,
    ModelMismatchError,
    ModelNotFoundError,
    load_encoder,
)
from vecsearch.encoders import ModelSpec
from vecsearch.index import brute_force_search
from vecsearch.lock import WriterLock
from vecsearch.query import Query


def consistent(folder: Path, encoder) -> Index:
    """Open as a fresh reader and check that FAISS and the database agree."""
    index = Index.open(folder, encoder=encoder)
    hits = index.search("anything", k=10_000, kind="any")
    assert len(hits) == index.counts()["items"]
    vector = index.query_vector(Query.parse("anything"))
    assert [h.id for h in hits] == [i for i, _ in brute_force_search(index, vector, 10_000)]
    return index


def test_captions_file_naming_a_deleted_image_leaves_no_ghost_vectors(tmp_path: Path, tiny_encoder) -> None:
    pics = tmp_path / "pics"
    make_image(pics / "a.png", "red", seed=1)
    make_image(pics / "b.png", "blue", seed=2)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(pics)
    (pics / "b.png").unlink()
    captions = tmp_path / "caps.csv"
    captions.write_text(f"path,caption\n{pics / 'a.png'},a red thing\n{pics / 'b.png'},a blue thing\n")
    report = index.add(pics, captions=[captions])
    assert (report.removed, report.captions_added) == (1, 1)
    assert [s.reason for s in report.skipped] == [f"named in captions file {captions} but not in the index"]
    index.close()
    assert consistent(tmp_path / "idx", tiny_encoder).counts() == {"items": 2, "images": 1, "captions": 1, "files": 1}


def test_sidecar_captions_survive_an_interrupt(tmp_path: Path, tiny_encoder, make_images) -> None:
    pics = tmp_path / "pics"
    for i, path in enumerate(make_images(pics, 20)):
        path.with_suffix(".txt").write_text(f"picture number {i}\n")
    index = Index.create(tmp_path / "idx", encoder=InterruptingEncoder(tiny_encoder, 3))
    with pytest.raises(IndexingInterrupted) as stopped:
        index.add(pics)
    assert (stopped.value.report.added, stopped.value.report.captions_added) == (16, 16)
    index.close()
    resumed = Index.open(tmp_path / "idx", encoder=tiny_encoder)
    assert resumed.counts() == {"items": 32, "images": 16, "captions": 16, "files": 16}
    report = resumed.add(pics)
    assert (report.added, report.captions_added) == (4, 4)
    resumed.close()
    assert consistent(tmp_path / "idx", tiny_encoder).counts() == {
        "items": 40,
        "images": 20,
        "captions": 20,
        "files": 20,
    }


def test_an_interrupted_update_is_redone_next_time(tmp_path: Path, tiny_encoder) -> None:
    pics = tmp_path / "pics"
    make_image(pics / "a.png", "red", seed=1)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(pics)
    index.close()
    make_image(pics / "a.png", "green", seed=9)  # new content, same name
    interrupted = Index.open(tmp_path / "idx", encoder=InterruptingEncoder(tiny_encoder, 1))
    with pytest.raises(IndexingInterrupted):
        interrupted.add()
    interrupted.close()
    again = Index.open(tmp_path / "idx", encoder=tiny_encoder)
    assert again.counts()["images"] == 1  # the old picture is still there: the update rolled back whole
    report = again.add()
    assert (report.updated, report.embedded_images) == (1, 1)


def test_model_errors_stop_the_crawl_instead_of_skipping_files(tmp_path: Path, make_images) -> None:
    model = write_tiny_model(tmp_path / "model", seed=3)
    make_images(tmp_path / "pics", 3)
    with Index.create(tmp_path / "idx", model=f"local-dir:{model}") as index:
        index.add(tmp_path / "pics")
    write_tiny_model(model, seed=4)  # the weights change under the index
    make_images(tmp_path / "pics", 5, prefix="new")
    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(ModelMismatchError, match="the checkpoint changed since the index was built"):
            index.add()
        assert index.counts()["images"] == 3


def test_child_folder_given_before_its_parent(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "A" / "top.png", "red", seed=1)
    make_image(tmp_path / "A" / "b" / "inner.png", "blue", seed=2)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    report = index.add([tmp_path / "A" / "b", tmp_path / "A"])
    assert report.added == 2
    assert [r.path for r in index.store.roots()] == [str((tmp_path / "A").resolve())]


def test_single_file_then_new_files_in_a_recorded_folder(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "A" / "b" / "one.png", "red", seed=1)
    make_image(tmp_path / "A" / "x.png", "blue", seed=2)
    make_image(tmp_path / "A" / "not-given.png", "green", seed=3)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(tmp_path / "A" / "b")
    index.add(tmp_path / "A" / "x.png")
    make_image(tmp_path / "A" / "b" / "two.png", "white", seed=4)
    report = index.add()
    assert (report.added, report.unchanged) == (1, 2)  # two.png; not-given.png was never asked for
    assert sorted(h.relpath for h in index.search("x", k=10)) == ["one.png", "two.png", "x.png"]


def test_folder_inside_a_listed_files_root_becomes_a_full_root(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "A" / "x.png", "blue", seed=2)
    make_image(tmp_path / "A" / "sub" / "y.png", "red", seed=3)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add([tmp_path / "A" / "x.png", tmp_path / "A" / "sub" / "y.png"])
    ids = {h.relpath: h.id for h in index.search("x", k=10)}
    index.add(tmp_path / "A" / "sub")
    make_image(tmp_path / "A" / "sub" / "z.png", "green", seed=4)
    report = index.add()
    assert (report.added, report.unchanged) == (1, 2)
    after = {h.relpath: h.id for h in index.search("x", k=10)}
    assert after["y.png"] == ids["sub/y.png"]  # moved to the new root, same item
    assert set(after) == {"x.png", "y.png", "z.png"}


def test_exclude_patterns_are_relative_to_the_crawled_folder(tmp_path: Path, tiny_encoder) -> None:
    root = tmp_path / "R"
    make_image(root / "top.png", "red", seed=1)
    make_image(root / "sub" / "keep.png", "blue", seed=2)
    make_image(root / "sub" / "skip" / "s.png", "green", seed=3)
    make_image(root / "skip" / "elsewhere.png", "white", seed=4)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(root)
    report = index.add(root / "sub", exclude=["skip/*"])
    assert report.removed == 1
    assert sorted(h.relpath for h in index.search("x", k=10)) == ["skip/elsewhere.png", "sub/keep.png", "top.png"]
    assert index.add().removed == 0  # remembered, and still only for sub/


def test_folded_in_root_keeps_the_meaning_of_its_patterns(tmp_path: Path, tiny_encoder) -> None:
    outer = tmp_path / "P"
    make_image(outer / "inner" / "k.png", "red", seed=1)
    make_image(outer / "inner" / "skip" / "s.png", "blue", seed=2)
    make_image(outer / "inner" / "deep" / "raw" / "r.png", "green", seed=3)
    make_image(outer / "skip" / "t.png", "white", seed=4)
    make_image(outer / "raw" / "top.png", "black", seed=5)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(outer / "inner", exclude=["skip/*", "raw"])
    index.add(outer)
    assert sorted(h.relpath for h in index.search("x", k=10)) == ["inner/k.png", "raw/top.png", "skip/t.png"]


def test_creating_while_another_process_creates_leaves_its_files(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    with WriterLock(folder / ".lock", "idx"):  # another process, between its checks and its first write
        with pytest.raises(IndexLockedError):
            Index.create(folder, encoder=tiny_encoder)
        # Its lock file stays: removing it would let a third process in as a second writer.
        assert [p.name for p in folder.iterdir()] == [".lock"]


def test_copied_index_and_tree_can_crawl_the_original(tmp_path: Path, tiny_encoder) -> None:
    old = tmp_path / "old"
    make_image(old / "pics" / "a.png", "red", seed=1)
    with Index.create(old / "idx", encoder=tiny_encoder) as index:
        index.add(old / "pics")
    shutil.copytree(old, tmp_path / "new")
    with Index.open(tmp_path / "new" / "idx", encoder=tiny_encoder) as copy:
        assert copy.search("x")[0].path == str(tmp_path / "new" / "pics" / "a.png")
        report = copy.add(old / "pics")
        assert report.reused == 1
        assert sorted(h.path for h in copy.search("x")) == [
            str(tmp_path / "new" / "pics" / "a.png"),
            str(old / "pics" / "a.png"),
        ]


def test_captions_file_with_an_oversized_field(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "pics" / "a.png", "red", seed=1)
    captions = tmp_path / "caps.csv"
    captions.write_text('path,caption\na.png,"' + "x" * 200_000 + '"\n')
    with (
        Index.create(tmp_path / "idx", encoder=tiny_encoder) as index,
        pytest.raises(CaptionsFileError, match="not a valid CSV file"),
    ):
        index.add(tmp_path / "pics", captions=[captions])


@pytest.mark.parametrize("model", ["foo/bar/baz", "hf-hub:foo/bar/baz"])
def test_malformed_hub_ids_are_unknown_models(model: str) -> None:
    with pytest.raises(ModelNotFoundError, match="not a valid Hugging Face model id"):
        load_encoder(model)


def test_under_through_a_symlink(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "real" / "2024" / "a.png", "red", seed=1)
    make_image(tmp_path / "real" / "2023" / "b.png", "blue", seed=2)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tmp_path / "link")
        assert [h.relpath for h in index.search("x", under=tmp_path / "link" / "2024")] == ["2024/a.png"]
        assert [h.relpath for h in index.search("x", path=str(tmp_path / "link" / "2024" / "*"))] == ["2024/a.png"]


class Renamed:
    """The tiny encoder presented as a published model, to test refusals that need no download."""

    def __init__(self, inner: Any, spec: ModelSpec) -> None:
        self._inner, self.spec = inner, spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_another_published_model_is_refused_without_loading_it(tmp_path: Path, tiny_encoder) -> None:
    published = ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")
    Index.create(tmp_path / "idx", encoder=Renamed(tiny_encoder, published)).close()
    with pytest.raises(ModelMismatchError) as refused:
        Index.open(tmp_path / "idx", model="ViT-L-14", pretrained="laion2b_s32b_b82k")
    assert str(refused.value) == (
        "index idx was built with open_clip:ViT-B-32@laion2b_s34b_b79k, not "
        "open_clip:ViT-L-14@laion2b_s32b_b82k; leave out --model to use the index's own model, "
        "or build a separate index for the other model"
    )
