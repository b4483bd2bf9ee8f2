"""Crawling folders into an Index: incremental updates, captions, roots, moves, crash safety, errors.

Everything is real: the tiny open_clip model (tiny_encoder), SQLite, FAISS; a few checks use the real
all-MiniLM-L6-v2 text model (minilm_encoder).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, write_tiny_model

from vecsearch import (
    Index,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    Query,
    SkippedFile,
    UnsupportedModalityError,
    VecsearchError,
)
from vecsearch.index import brute_force_search
from vecsearch.lock import WriterLock

PHOTO_CAPTIONS = {
    "apple.png": ["a red apple", "an apple on a table"],
    "car.jpg": ["a blue car"],
    "trips/beach.png": ["a sunny beach with sand"],
    "trips/forest.PNG": [],
}


# --- helpers ---------------------------------------------------------------------------------------


def layout(index: Index) -> dict[str, dict]:
    """relpath -> {'image': image item id or None, 'captions': {text: item id}} straight from SQLite."""
    files: dict[str, dict] = {}
    for file_id, relpath in index.store.conn.execute("SELECT id, relpath FROM files"):
        files[relpath] = {"file": int(file_id), "image": None, "captions": {}}
    rows = index.store.conn.execute(
        "SELECT i.id, i.kind, i.text, f.relpath FROM items i JOIN files f ON f.id = i.file_id"
    )
    for item_id, kind, text, relpath in rows:
        if kind == "image":
            files[relpath]["image"] = int(item_id)
        else:
            files[relpath]["captions"][text] = int(item_id)
    return files


def all_hits(index: Index, query: str = "a photo", kind: str = "any"):
    """Every item of a kind, found through the FAISS search path."""
    return index.search(query, k=1000, kind=kind)


def hits_by_id(index: Index, kind: str = "any"):
    return {h.id: h for h in all_hits(index, kind=kind)}


def bump_mtime(path: Path, seconds: int = 100) -> None:
    """Make a change visible even on file systems with coarse timestamps."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 1_000_000_000))


def read_manifest_file(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def indexed(tmp_path: Path, photo_tree: Path, tiny_encoder):
    """photo_tree crawled once into a fresh index beside it."""
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(photo_tree)
    yield index, photo_tree
    index.close()


# --- first and second crawl ------------------------------------------------------------------------


def test_first_crawl_report_and_counts(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    report = index.add(photo_tree)

    assert (report.added, report.updated, report.renamed, report.reused, report.removed, report.unchanged) == (
        4,
        0,
        0,
        0,
        0,
        0,
    )
    assert report.captions_added == 4
    assert report.captions_removed == 0
    assert report.embedded_images == 4
    assert report.embedded_captions == 4
    assert report.skipped == [SkippedFile(str(photo_tree / "broken.jpg"), "not a readable image")]
    assert report.changed and not report.indexed_nothing and not report.interrupted
    assert index.counts() == {"items": 8, "images": 4, "captions": 4, "files": 4}
    assert index.roots() == [photo_tree]

    files = layout(index)
    assert sorted(files) == sorted(PHOTO_CAPTIONS)  # no hidden file, no broken file, no notes.md
    for relpath, captions in PHOTO_CAPTIONS.items():
        assert files[relpath]["image"] is not None
        assert sorted(files[relpath]["captions"]) == sorted(captions)

    hits = all_hits(index)
    assert len(hits) == 8
    assert not any(".hidden" in h.path or "secret" in h.path for h in hits)
    for hit in hits:
        relpath = hit.relpath
        assert hit.path == str(photo_tree / relpath)
        assert hit.image == files[relpath]["image"]  # caption hits point at their picture's item
        if hit.kind == "image":
            assert hit.id == files[relpath]["image"]
            assert hit.source is None
            first = PHOTO_CAPTIONS[relpath][0] if PHOTO_CAPTIONS[relpath] else None
            assert hit.caption == first
        else:
            assert hit.kind == "caption"
            assert files[relpath]["captions"][hit.caption] == hit.id
            assert hit.source == str((photo_tree / relpath).with_suffix(".txt"))

    # A caption searched for itself comes first with cosine 1.
    best = index.search("a sunny beach with sand", k=1, kind="caption")[0]
    assert best.id == files["trips/beach.png"]["captions"]["a sunny beach with sand"]
    assert best.score == pytest.approx(1.0, abs=1e-5)
    assert best.path == str(photo_tree / "trips" / "beach.png")
    assert best.image == files["trips/beach.png"]["image"]
    assert {h.kind for h in index.search("a red apple", k=100)} == {"image"}  # the default kind


def test_second_crawl_without_changes_embeds_nothing(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    index.add(photo_tree)
    before = layout(index)
    generation = index.store.generation
    sha = read_manifest_file(index.path)["faiss"]["sha256"]
    index.close()

    # A fresh handle without a model: if the crawl needed the model it would have to load it.
    reopened = Index.open(tmp_path / "idx")
    report = reopened.add()
    assert report.unchanged == 4
    assert (report.added, report.updated, report.renamed, report.reused, report.removed) == (0, 0, 0, 0, 0)
    assert (report.captions_added, report.captions_removed) == (0, 0)
    assert report.embedded_images == 0 and report.embedded_captions == 0
    assert not report.changed
    assert reopened.model.loaded is None  # the model was never loaded
    assert reopened.store.generation == generation
    assert read_manifest_file(reopened.path)["faiss"]["sha256"] == sha
    assert layout(reopened) == before

    # Same with the paths given explicitly.
    again = reopened.add(photo_tree)
    assert again.unchanged == 4 and not again.changed and again.embedded_images == 0
    assert reopened.store.generation == generation
    reopened.close()


# --- changes to images -----------------------------------------------------------------------------


def test_modified_image_is_re_embedded_under_a_new_id(indexed) -> None:
    index, root = indexed
    before = layout(index)
    old_id = before["apple.png"]["image"]
    old_vector = index.store.vector(old_id)
    make_image(root / "apple.png", "purple", "square", seed=42)
    bump_mtime(root / "apple.png")

    report = index.add()
    assert report.updated == 1
    assert report.unchanged == 3
    assert (report.added, report.renamed, report.reused, report.removed) == (0, 0, 0, 0)
    assert report.embedded_images == 1
    assert (report.captions_added, report.captions_removed, report.embedded_captions) == (0, 0, 0)

    after = layout(index)
    new_id = after["apple.png"]["image"]
    assert new_id != old_id
    assert new_id > max(v["image"] for v in before.values())  # ids never repeat
    assert index.store.vector(old_id) is None
    assert not np.allclose(index.store.vector(new_id), old_vector)
    assert after["apple.png"]["captions"] == before["apple.png"]["captions"]
    ids = hits_by_id(index)
    assert old_id not in ids
    assert ids[new_id].path == str(root / "apple.png")
    # the captions now point at the new image item
    for caption_id in after["apple.png"]["captions"].values():
        assert ids[caption_id].image == new_id
    assert index.counts() == {"items": 8, "images": 4, "captions": 4, "files": 4}


def test_touched_image_is_not_re_embedded(indexed) -> None:
    index, root = indexed
    before = layout(index)
    bump_mtime(root / "car.jpg")
    report = index.add()
    assert report.unchanged == 4
    assert (report.added, report.updated, report.renamed, report.reused, report.removed) == (0, 0, 0, 0, 0)
    assert report.embedded_images == 0 and report.embedded_captions == 0
    assert layout(index) == before

    # the new mtime was recorded: the next crawl does not even hash the file
    third = index.add()
    assert third.unchanged == 4 and not third.changed
    generation = index.store.generation
    index.add()
    assert index.store.generation == generation


def test_renamed_file_keeps_its_item_and_vector(indexed) -> None:
    index, root = indexed
    before = layout(index)
    old = before["apple.png"]
    vector = index.store.vector(old["image"])
    (root / "apple.png").rename(root / "fruit.png")
    (root / "apple.txt").rename(root / "fruit.txt")

    report = index.add()
    assert report.renamed == 1
    assert report.unchanged == 3
    assert (report.added, report.updated, report.reused, report.removed) == (0, 0, 0, 0)
    assert report.embedded_images == 0 and report.embedded_captions == 0
    assert (report.captions_added, report.captions_removed) == (0, 0)

    after = layout(index)
    assert "apple.png" not in after
    assert after["fruit.png"]["image"] == old["image"]
    assert after["fruit.png"]["captions"] == old["captions"]
    np.testing.assert_array_equal(index.store.vector(old["image"]), vector)
    ids = hits_by_id(index)
    assert ids[old["image"]].path == str(root / "fruit.png")
    for caption_id in old["captions"].values():
        assert ids[caption_id].path == str(root / "fruit.png")
        assert ids[caption_id].source == str(root / "fruit.txt")
    assert index.counts() == {"items": 8, "images": 4, "captions": 4, "files": 4}


def test_renamed_into_another_folder(indexed) -> None:
    index, root = indexed
    old_id = layout(index)["car.jpg"]["image"]
    (root / "trips" / "garage").mkdir()
    (root / "car.jpg").rename(root / "trips" / "garage" / "car.jpg")
    (root / "car.txt").rename(root / "trips" / "garage" / "car.txt")
    report = index.add()
    assert report.renamed == 1 and report.removed == 0 and report.added == 0
    assert layout(index)["trips/garage/car.jpg"]["image"] == old_id
    assert hits_by_id(index)[old_id].path == str(root / "trips" / "garage" / "car.jpg")


def test_deleted_file_leaves_with_its_captions(indexed) -> None:
    index, root = indexed
    gone = layout(index)["apple.png"]
    gone_ids = {gone["image"], *gone["captions"].values()}
    assert len(gone_ids) == 3
    (root / "apple.png").unlink()
    (root / "apple.txt").unlink()

    report = index.add()
    assert report.removed == 1
    assert report.unchanged == 3
    assert (report.added, report.updated, report.renamed, report.reused) == (0, 0, 0, 0)
    assert report.embedded_images == 0
    assert index.counts() == {"items": 5, "images": 3, "captions": 2, "files": 3}
    ids = hits_by_id(index)
    assert len(ids) == 5
    assert not gone_ids & set(ids)
    assert all(h.path != str(root / "apple.png") for h in ids.values())
    for item_id in gone_ids:
        assert index.store.vector(item_id) is None
    assert index.vectors.ntotal == 5


def test_deleting_an_image_but_not_its_sidecar(indexed) -> None:
    index, root = indexed
    (root / "car.jpg").unlink()
    report = index.add()
    assert report.removed == 1
    assert index.counts() == {"items": 6, "images": 3, "captions": 3, "files": 3}
    assert "a blue car" not in {h.caption for h in all_hits(index, kind="caption")}


def test_duplicate_file_reuses_the_vector(indexed) -> None:
    index, root = indexed
    shutil.copy(root / "apple.png", root / "trips" / "apple copy.png")

    report = index.add()
    assert report.reused == 1
    assert report.embedded_images == 0
    assert report.unchanged == 4
    assert (report.added, report.updated, report.renamed, report.removed) == (0, 0, 0, 0)
    assert report.captions_added == 0  # the copy has no sidecar

    files = layout(index)
    original, copy = files["apple.png"]["image"], files["trips/apple copy.png"]["image"]
    assert copy != original
    np.testing.assert_array_equal(index.store.vector(copy), index.store.vector(original))
    assert index.counts() == {"items": 9, "images": 5, "captions": 4, "files": 5}
    ids = hits_by_id(index, kind="image")
    assert ids[copy].path == str(root / "trips" / "apple copy.png")
    assert ids[copy].score == pytest.approx(ids[original].score, abs=1e-6)


def test_duplicates_within_one_crawl_get_the_same_vector(tmp_path: Path, tiny_encoder) -> None:
    root = tmp_path / "pics"
    make_image(root / "one.png", "red", seed=7)
    shutil.copy(root / "one.png", root / "two.png")
    (root / "sub").mkdir()
    shutil.copy(root / "one.png", root / "sub" / "three.png")
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    report = index.add(root)
    assert (report.added, report.reused, report.embedded_images) == (1, 2, 1)
    vectors = [index.store.vector(v["image"]) for v in layout(index).values()]
    assert len(vectors) == 3
    for vector in vectors[1:]:
        np.testing.assert_array_equal(vector, vectors[0])


# --- sidecar captions ------------------------------------------------------------------------------


def test_edited_sidecar_updates_captions(indexed) -> None:
    index, root = indexed
    before = layout(index)["apple.png"]["captions"]
    (root / "apple.txt").write_text("a red apple\na green pear\nfruit on a plate\n")
    bump_mtime(root / "apple.txt")

    report = index.add()
    assert report.captions_added == 2
    assert report.captions_removed == 1
    assert report.embedded_captions == 2
    assert report.unchanged == 4 and report.embedded_images == 0

    after = layout(index)["apple.png"]["captions"]
    assert sorted(after) == ["a green pear", "a red apple", "fruit on a plate"]
    assert after["a red apple"] == before["a red apple"]  # kept, same item
    removed_id = before["an apple on a table"]
    ids = hits_by_id(index, kind="caption")
    assert removed_id not in ids
    assert index.store.vector(removed_id) is None
    pear = index.search("a green pear", k=1, kind="caption")[0]
    assert pear.id == after["a green pear"]
    assert pear.score == pytest.approx(1.0, abs=1e-5)
    assert pear.path == str(root / "apple.png")
    assert index.counts() == {"items": 9, "images": 4, "captions": 5, "files": 4}

    # nothing more happens on the next crawl
    again = index.add()
    assert not again.changed and again.embedded_captions == 0


def test_deleted_sidecar_removes_its_captions(indexed) -> None:
    index, root = indexed
    car_caption = layout(index)["car.jpg"]["captions"]["a blue car"]
    (root / "car.txt").unlink()
    report = index.add()
    assert report.captions_removed == 1
    assert report.captions_added == 0
    assert report.unchanged == 4
    assert layout(index)["car.jpg"]["captions"] == {}
    assert car_caption not in hits_by_id(index)
    assert index.counts() == {"items": 7, "images": 4, "captions": 3, "files": 4}
    image_hit = next(h for h in all_hits(index, kind="image") if h.relpath == "car.jpg")
    assert image_hit.caption is None


def test_new_sidecar_adds_captions_and_reuses_known_text_vectors(indexed) -> None:
    index, root = indexed
    (root / "trips" / "forest.txt").write_text("a blue car\ntall green trees\n")
    report = index.add()
    assert report.captions_added == 2
    assert report.embedded_captions == 1  # "a blue car" is already in the index
    captions = layout(index)["trips/forest.PNG"]["captions"]
    assert sorted(captions) == ["a blue car", "tall green trees"]
    np.testing.assert_array_equal(
        index.store.vector(captions["a blue car"]),
        index.store.vector(layout(index)["car.jpg"]["captions"]["a blue car"]),
    )


# --- captions files --------------------------------------------------------------------------------


def test_captions_csv_file(indexed, tmp_path: Path) -> None:
    index, root = indexed
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text(
        "path,caption\n"
        "photos/apple.png,a shiny fruit\n"
        "photos/apple.png,a red apple\n"
        "photos/car.jpg,a vehicle on the road\n"
        "photos/missing.png,a ghost\n"
    )
    report = index.add(root, captions=[csv_file])
    assert report.captions_added == 3
    assert report.embedded_captions == 2  # "a red apple" is known from the sidecar
    assert report.unchanged == 4
    assert (
        SkippedFile(str(root / "missing.png"), f"named in captions file {csv_file.resolve()} but not in the index")
        in report.skipped
    )
    assert index.counts() == {"items": 11, "images": 4, "captions": 7, "files": 4}

    files = layout(index)
    shiny = index.search("a shiny fruit", k=1, kind="caption")[0]
    assert shiny.path == str(root / "apple.png")
    assert shiny.image == files["apple.png"]["image"]
    assert shiny.source == str(csv_file.resolve())
    assert shiny.score == pytest.approx(1.0, abs=1e-5)
    sources = sorted(h.source for h in all_hits(index, kind="caption") if h.caption == "a red apple")
    assert sources == sorted([str(csv_file.resolve()), str(root / "apple.txt")])

    # the same file again: nothing to do
    again = index.add(captions=[csv_file])
    assert (again.captions_added, again.captions_removed, again.embedded_captions) == (0, 0, 0)

    # drop the car line: its caption leaves, the others stay
    vehicle_id = next(h.id for h in all_hits(index, kind="caption") if h.caption == "a vehicle on the road")
    csv_file.write_text("path,caption\nphotos/apple.png,a shiny fruit\nphotos/apple.png,a red apple\n")
    third = index.add(captions=[csv_file])
    assert third.captions_removed == 1
    assert third.captions_added == 0
    assert vehicle_id not in hits_by_id(index)
    assert index.counts() == {"items": 10, "images": 4, "captions": 6, "files": 4}
    assert layout(index)["car.jpg"]["captions"] == {"a blue car": files["car.jpg"]["captions"]["a blue car"]}


def test_captions_jsonl_file(indexed, tmp_path: Path) -> None:
    index, root = indexed
    jsonl = tmp_path / "meta" / "captions.jsonl"
    jsonl.parent.mkdir()
    rows = [
        {"path": "../photos/trips/forest.PNG", "caption": "tall green trees"},
        {"path": str(root / "trips" / "forest.PNG"), "caption": "a quiet forest"},
        {"path": "../photos/nowhere.jpg", "caption": "nothing"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = index.add(captions=jsonl)
    assert report.captions_added == 2
    assert report.embedded_captions == 2
    assert [s.path for s in report.skipped if "captions file" in s.reason] == [str(root / "nowhere.jpg")]
    files = layout(index)
    assert sorted(files["trips/forest.PNG"]["captions"]) == ["a quiet forest", "tall green trees"]
    forest_image = files["trips/forest.PNG"]["image"]
    for hit in all_hits(index, kind="caption"):
        if hit.caption in ("a quiet forest", "tall green trees"):
            assert hit.image == forest_image
            assert hit.path == str(root / "trips" / "forest.PNG")
            assert hit.source == str(jsonl.resolve())

    jsonl.write_text(json.dumps(rows[0]) + "\n")
    again = index.add(captions=jsonl)
    assert again.captions_removed == 1 and again.captions_added == 0
    assert sorted(layout(index)["trips/forest.PNG"]["captions"]) == ["tall green trees"]


def test_bad_captions_file_changes_nothing(indexed, tmp_path: Path) -> None:
    from vecsearch import CaptionsFileError

    index, root = indexed
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    generation = index.store.generation
    before = layout(index)
    with pytest.raises(CaptionsFileError, match=r"bad\.jsonl:1"):
        index.add(captions=bad)
    assert layout(index) == before
    assert index.store.generation == generation


# --- roots -----------------------------------------------------------------------------------------


def test_add_without_paths_recrawls_recorded_roots(indexed, tmp_path: Path) -> None:
    index, root = indexed
    other = tmp_path / "other"
    make_image(other / "x.png", "orange", seed=11)
    index.add(other)
    assert sorted(index.roots()) == sorted([root, other])

    make_image(root / "trips" / "new.png", "white", seed=12)
    make_image(other / "y.png", "purple", seed=13)
    report = index.add()
    assert report.added == 2
    assert report.unchanged == 5
    assert report.embedded_images == 2
    files = layout(index)
    assert {"trips/new.png", "x.png", "y.png"} <= set(files)
    assert index.counts()["images"] == 7


def test_add_without_paths_on_an_empty_index_is_an_error(tmp_path: Path, tiny_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    with pytest.raises(VecsearchError, match="has no folders yet"):
        index.add()


def test_add_of_a_subfolder_only_crawls_that_subtree(indexed) -> None:
    index, root = indexed
    before = layout(index)
    make_image(root / "top_new.png", "white", seed=20)
    make_image(root / "trips" / "trip_new.png", "orange", seed=21)
    (root / "car.jpg").unlink()  # outside the subtree: must stay indexed for now
    make_image(root / "apple.png", "black", seed=22)  # changed, but outside the subtree
    bump_mtime(root / "apple.png")

    report = index.add(root / "trips")
    assert report.added == 1
    assert report.unchanged == 2
    assert (report.updated, report.removed, report.renamed, report.reused) == (0, 0, 0, 0)
    assert index.roots() == [root]  # no new root for a folder inside one
    after = layout(index)
    assert "trips/trip_new.png" in after
    assert "top_new.png" not in after
    assert after["car.jpg"] == before["car.jpg"]
    assert after["apple.png"] == before["apple.png"]

    # a full crawl then catches up with the rest
    full = index.add()
    assert (full.added, full.updated, full.removed) == (1, 1, 1)


def test_add_of_a_single_file_inside_a_root(indexed) -> None:
    index, root = indexed
    make_image(root / "single.png", "green", seed=30)
    make_image(root / "ignored.png", "green", seed=31)
    report = index.add(root / "single.png")
    assert report.added == 1 and report.unchanged == 0 and report.removed == 0
    files = layout(index)
    assert "single.png" in files and "ignored.png" not in files
    assert index.roots() == [root]


def test_indexing_a_parent_folder_merges_roots(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    first = index.add(photo_tree / "trips")
    assert first.added == 2
    assert index.roots() == [photo_tree / "trips"]
    before = layout(index)
    assert sorted(before) == ["beach.png", "forest.PNG"]

    report = index.add(photo_tree)
    assert report.added == 2
    assert report.unchanged == 2
    assert (report.removed, report.renamed, report.updated) == (0, 0, 0)
    assert report.embedded_images == 2
    assert index.roots() == [photo_tree]
    after = layout(index)
    assert sorted(after) == sorted(PHOTO_CAPTIONS)
    assert after["trips/beach.png"]["image"] == before["beach.png"]["image"]
    assert after["trips/forest.PNG"]["image"] == before["forest.PNG"]["image"]
    assert after["trips/beach.png"]["captions"] == before["beach.png"]["captions"]
    ids = hits_by_id(index)
    assert ids[before["beach.png"]["image"]].path == str(photo_tree / "trips" / "beach.png")
    assert ids[before["beach.png"]["image"]].relpath == "trips/beach.png"

    again = index.add()
    assert again.unchanged == 4 and not again.changed


def test_exclude_patterns_are_remembered_per_root(indexed, tmp_path: Path) -> None:
    index, root = indexed
    other = tmp_path / "other"
    make_image(other / "trips" / "kept.png", "red", seed=40)
    index.add(other)

    report = index.add(root, exclude=["trips"])
    assert report.removed == 2
    assert report.unchanged == 2
    assert sorted(layout(index)) == ["apple.png", "car.jpg", "trips/kept.png"]  # the last one is other's
    assert not any(h.path.startswith(str(root / "trips")) for h in all_hits(index))
    assert index.counts() == {"items": 6, "images": 3, "captions": 3, "files": 3}
    options = {Path(r.path): r.options for r in index.store.roots()}
    assert options[root]["exclude"] == ["trips"]
    assert options[other]["exclude"] == []

    # the pattern stays with that root on later crawls, and only with that root
    make_image(root / "trips" / "later.png", "white", seed=41)
    make_image(other / "trips" / "more.png", "white", seed=42)
    later = index.add()
    assert later.added == 1
    assert later.removed == 0
    files = layout(index)
    assert "trips/later.png" not in files
    assert "trips/more.png" in files
    assert any(h.path == str(other / "trips" / "more.png") for h in all_hits(index))


def test_vanished_root_keeps_its_items(indexed, tmp_path: Path) -> None:
    index, root = indexed
    before = layout(index)
    counts = index.counts()
    generation = index.store.generation
    root.rename(tmp_path / "somewhere_else")

    report = index.add()
    assert [s.path for s in report.skipped] == [str(root)]
    assert "not found" in report.skipped[0].reason
    assert (report.added, report.removed, report.unchanged) == (0, 0, 0)
    assert index.counts() == counts
    assert layout(index) == before
    assert index.store.generation == generation
    assert len(all_hits(index)) == counts["items"]


def test_moving_the_tree_with_the_index_beside_it(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    _check_move(tmp_path, photo_tree, photo_tree.parent / "idx", tiny_encoder)


def test_moving_the_tree_with_the_index_inside_it(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    _check_move(tmp_path, photo_tree, photo_tree / ".vecsearch", tiny_encoder)


def _check_move(tmp_path: Path, photo_tree: Path, index_dir: Path, tiny_encoder) -> None:
    index = Index.create(index_dir, encoder=tiny_encoder)
    index.add(photo_tree)
    ids = layout(index)
    index.close()

    new_parent = tmp_path / "moved" / "deeper"
    new_parent.mkdir(parents=True)
    new_root = new_parent / "photos"
    shutil.move(str(photo_tree), str(new_root))
    new_index = new_root / ".vecsearch" if index_dir.parent == photo_tree else new_parent / "idx"
    if index_dir.parent != photo_tree:
        shutil.move(str(index_dir), str(new_index))
    assert not photo_tree.exists() and not index_dir.exists()

    moved = Index.open(new_index, encoder=tiny_encoder)
    hits = all_hits(moved)
    assert len(hits) == 8
    for hit in hits:
        assert hit.path == str(new_root / hit.relpath)
        assert Path(hit.path).is_file()
        assert hit.image == ids[hit.relpath]["image"]
    assert moved.roots() == [new_root]

    # a re-crawl at the new place finds every file unchanged
    report = moved.add()
    assert report.unchanged == 4
    assert not report.changed and report.embedded_images == 0
    assert layout(moved) == ids
    moved.close()
    reopened = Index.open(new_index)
    assert reopened.roots() == [new_root]
    reopened.close()


# --- text-only models ------------------------------------------------------------------------------


def test_text_only_model_indexes_captions_only(tmp_path: Path, photo_tree: Path, minilm_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=minilm_encoder)
    report = index.add(photo_tree)
    assert report.embedded_images == 0
    assert report.captions_added == 4
    assert report.embedded_captions == 4
    counts = index.counts()
    assert counts["images"] == 0
    assert counts["captions"] == 4
    assert counts["items"] == 4

    hits = index.search("a sunny beach with sand", k=10)
    assert len(hits) == 4
    assert {h.kind for h in hits} == {"caption"}
    assert all(h.image is None for h in hits)
    assert hits[0].caption == "a sunny beach with sand"
    assert hits[0].path == str(photo_tree / "trips" / "beach.png")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert index.search("a vehicle", k=1)[0].caption == "a blue car"

    with pytest.raises(UnsupportedModalityError, match="text-only"):
        index.search(str(photo_tree / "apple.png"))
    with pytest.raises(UnsupportedModalityError):
        index.search(["a red apple", "+image:" + str(photo_tree / "car.jpg")])

    again = index.add()
    assert not again.changed and again.embedded_captions == 0


# --- atomicity and consistency ---------------------------------------------------------------------


def test_manifest_matches_the_database_after_add(indexed) -> None:
    index, root = indexed
    manifest = read_manifest_file(index.path)
    assert manifest["faiss"]["generation"] == index.store.generation
    assert manifest["faiss"]["ntotal"] == index.counts()["items"] == 8
    assert manifest["counts"] == index.counts()
    assert manifest["roots"] == [str(root)]
    (root / "car.jpg").unlink()
    index.add()
    manifest = read_manifest_file(index.path)
    assert manifest["faiss"]["generation"] == index.store.generation
    assert manifest["faiss"]["ntotal"] == index.counts()["items"] == 6


def test_stale_vector_file_is_caught_up_from_the_database(indexed, tmp_path: Path, tiny_encoder) -> None:
    index, root = indexed
    aside = tmp_path / "aside"
    aside.mkdir()
    old_file = vector_file(index)
    shutil.copy2(old_file, aside / old_file.name)
    shutil.copy2(index.path / "manifest.json", aside / "manifest.json")
    old_generation = index.store.generation

    # a second crawl with additions, removals, an update and caption changes
    make_image(root / "trips" / "new.png", "white", seed=50)
    (root / "trips" / "new.txt").write_text("a brand new caption\n")
    (root / "car.jpg").unlink()
    make_image(root / "apple.png", "orange", seed=51)
    bump_mtime(root / "apple.png")
    (root / "trips" / "beach.txt").write_text("waves on the shore\n")
    bump_mtime(root / "trips" / "beach.txt")
    index.add()
    assert index.store.generation > old_generation
    expected_counts = index.counts()
    index.close()

    # the crash: the database committed, the FAISS file and manifest never got written
    assert not old_file.exists()  # the writer removed the file that its manifest no longer names
    shutil.copy2(aside / old_file.name, old_file)
    shutil.copy2(aside / "manifest.json", index.path / "manifest.json")
    assert read_manifest_file(index.path)["faiss"]["generation"] == old_generation

    reader = Index.open(index.path, encoder=tiny_encoder)
    assert reader.vectors.ntotal == expected_counts["items"]
    for text in ("a red apple", "waves on the shore", "a brand new caption"):
        hits = reader.search(text, k=100, kind="any")
        vector = reader.query_vector(Query.parse(text))
        reference = brute_force_search(reader, vector, 100)
        assert [h.id for h in hits] == [i for i, _ in reference]
        assert [h.score for h in hits] == pytest.approx([s for _, s in reference], abs=1e-5)
    relpaths = {h.relpath for h in all_hits(reader)}
    assert "car.jpg" not in relpaths and "trips/new.png" in relpaths
    assert "a blue car" not in {h.caption for h in all_hits(reader, kind="caption")}
    reader.close()

    # the next writer saves the caught-up file
    writer = Index.open(index.path, encoder=tiny_encoder)
    writer.add()
    manifest = read_manifest_file(writer.path)
    assert manifest["faiss"]["generation"] == writer.store.generation
    assert manifest["faiss"]["ntotal"] == expected_counts["items"]
    writer.close()


def vector_file(index: Index) -> Path:
    return index.path / read_manifest_file(index.path)["faiss"]["file"]


def test_saves_never_replace_the_file_the_manifest_names(indexed, tmp_path: Path) -> None:
    index, root = indexed
    first = vector_file(index)
    make_image(root / "later.png", "white", seed=60)
    index.add()
    second = vector_file(index)
    assert second != first and second.is_file() and not first.exists()
    assert sorted(p.name for p in index.path.glob("*.faiss")) == [second.name]


def test_search_matches_brute_force(indexed) -> None:
    index, _ = indexed
    for text in ("a red apple", "something else entirely"):
        vector = index.query_vector(Query.parse(text))
        image_ids = index.store.item_ids("image")
        hits = index.search(text, k=3)
        reference = brute_force_search(index, vector, 3, image_ids)
        assert [h.id for h in hits] == [i for i, _ in reference]


# --- corruption --------------------------------------------------------------------------------


def test_truncated_vector_file_is_an_error_for_readers_and_rebuilt_by_writers(indexed, tiny_encoder) -> None:
    index, _ = indexed
    expected = [h.id for h in all_hits(index)]
    index.close()
    vectors_file = vector_file(index)
    data = vectors_file.read_bytes()
    vectors_file.write_bytes(data[: len(data) // 2])

    reader = Index.open(index.path, encoder=tiny_encoder)
    with pytest.raises(IndexCorruptError, match="vecsearch index"):
        reader.search("a red apple")
    reader.close()

    writer = Index.open(index.path, encoder=tiny_encoder)
    report = writer.add()
    assert report.unchanged == 4
    assert [h.id for h in all_hits(writer)] == expected
    writer.close()

    # the rebuilt file is on disk: a new reader can search again
    fresh = Index.open(index.path, encoder=tiny_encoder)
    assert [h.id for h in all_hits(fresh)] == expected
    fresh.close()


def test_missing_vector_file_is_rebuilt_by_a_writer(indexed, tiny_encoder) -> None:
    index, _ = indexed
    expected = [h.id for h in all_hits(index)]
    index.close()
    vector_file(index).unlink()
    reader = Index.open(index.path, encoder=tiny_encoder)
    with pytest.raises(IndexCorruptError, match="vector file missing"):
        reader.search("a red apple")
    reader.close()
    writer = Index.open(index.path, encoder=tiny_encoder)
    writer.add()
    writer.close()
    fresh = Index.open(index.path, encoder=tiny_encoder)
    assert [h.id for h in all_hits(fresh)] == expected
    fresh.close()


def test_garbage_manifest_is_corrupt(indexed) -> None:
    index, _ = indexed
    index.close()
    (index.path / "manifest.json").write_text("{this is not json")
    with pytest.raises(IndexCorruptError, match="manifest unreadable"):
        Index.open(index.path)
    (index.path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexCorruptError, match="not a vecsearch index manifest"):
        Index.open(index.path)


def test_manifest_from_a_newer_version_is_refused(indexed) -> None:
    index, _ = indexed
    index.close()
    manifest = read_manifest_file(index.path)
    manifest["format_version"] = 999
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="newer") as caught:
        Index.open(index.path)
    assert "999" in str(caught.value)


def test_garbage_database_is_corrupt(indexed) -> None:
    index, _ = indexed
    index.close()
    for suffix in ("-wal", "-shm"):
        (index.path / f"items.sqlite{suffix}").unlink(missing_ok=True)
    (index.path / "items.sqlite").write_bytes(b"not a database at all " * 200)
    with pytest.raises(IndexCorruptError, match="database"):
        Index.open(index.path)


def test_missing_database_is_corrupt(indexed) -> None:
    index, _ = indexed
    index.close()
    (index.path / "items.sqlite").unlink()
    with pytest.raises(IndexCorruptError, match="database missing"):
        Index.open(index.path)


# --- locking, creating, opening --------------------------------------------------------------------


def test_add_while_another_writer_holds_the_lock(indexed) -> None:
    index, root = indexed
    generation = index.store.generation
    make_image(root / "new.png", "white", seed=60)
    with WriterLock(index.path / ".lock", "someone else"):
        with pytest.raises(IndexLockedError, match="being updated by another vecsearch process") as caught:
            index.add()
        assert f"(pid {os.getpid()})" in str(caught.value)
    assert index.store.generation == generation
    assert "new.png" not in layout(index)
    # once released, the crawl goes through
    assert index.add().added == 1


def test_readers_do_not_need_the_lock(indexed) -> None:
    index, _ = indexed
    with WriterLock(index.path / ".lock", "writer"):
        assert len(all_hits(index)) == 8


def test_create_over_an_existing_index(indexed, tiny_encoder) -> None:
    index, _ = indexed
    with pytest.raises(IndexExistsError, match="already exists"):
        Index.create(index.path, encoder=tiny_encoder)
    assert index.counts()["items"] == 8


def test_create_in_a_non_empty_folder(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "something.txt").write_text("x")
    with pytest.raises(IndexExistsError, match="not an empty folder"):
        Index.create(folder, encoder=tiny_encoder)
    assert sorted(p.name for p in folder.iterdir()) == ["something.txt"]


def test_open_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="unknown index 'nosuchindex'") as caught:
        Index.open("nosuchindex")
    assert "vecsearch list" in str(caught.value)
    with pytest.raises(IndexNotFoundError):
        Index.open(tmp_path / "nowhere")


def test_open_by_name_in_the_home(photo_tree: Path, tiny_encoder) -> None:
    home = Path(os.environ["VECSEARCH_HOME"])
    index = Index.create(home / "pictures", encoder=tiny_encoder)
    index.add(photo_tree)
    index.close()
    by_name = Index.open("pictures", encoder=tiny_encoder)
    assert by_name.path == home / "pictures"
    assert by_name.counts()["images"] == 4
    by_name.close()


def test_open_with_another_model_is_refused(indexed, tmp_path: Path, tiny_model_dir: Path) -> None:
    index, _ = indexed
    index.close()
    other = write_tiny_model(tmp_path / "other-tiny", seed=1)
    with pytest.raises(ModelMismatchError) as caught:
        Index.open(index.path, model=f"local-dir:{other}")
    message = str(caught.value)
    assert f"open_clip:local-dir:{tiny_model_dir.resolve()}" in message
    assert f"open_clip:local-dir:{other.resolve()}" in message
    # the index's own model is accepted
    same = Index.open(index.path, model=f"local-dir:{tiny_model_dir}")
    assert same.counts()["items"] == 8
    same.close()


def test_open_with_a_mismatched_encoder_is_refused(indexed, minilm_encoder) -> None:
    index, _ = indexed
    with pytest.raises(ModelMismatchError, match="not sentence-transformers:all-MiniLM-L6-v2"):
        Index.open(index.path, encoder=minilm_encoder)


# --- nothing to index, bad paths -------------------------------------------------------------------


def test_only_broken_images_indexes_nothing(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (folder / "c.png").write_bytes(b"")
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    report = index.add(folder)
    assert report.indexed_nothing
    assert report.added == 0 and report.embedded_images == 0
    assert sorted(s.path for s in report.skipped) == [str(folder / n) for n in ("a.jpg", "b.png", "c.png")]
    assert {s.path: s.reason for s in report.skipped}[str(folder / "c.png")] == "empty file"
    assert index.counts() == {"items": 0, "images": 0, "captions": 0, "files": 0}


def test_a_missing_path_changes_nothing(indexed, tmp_path: Path) -> None:
    index, root = indexed
    before = layout(index)
    generation = index.store.generation
    roots = index.roots()
    manifest = read_manifest_file(index.path)
    make_image(root / "new.png", "white", seed=70)
    missing = tmp_path / "does-not-exist"
    with pytest.raises(VecsearchError, match="path not found"):
        index.add([root, missing])
    assert layout(index) == before
    assert index.store.generation == generation
    assert index.roots() == roots
    assert read_manifest_file(index.path)["faiss"] == manifest["faiss"]
    assert len(all_hits(index)) == 8


def test_a_missing_path_on_a_new_index(tmp_path: Path, tiny_encoder) -> None:
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)
    with pytest.raises(VecsearchError, match=r"path not found: .*nope"):
        index.add(tmp_path / "nope")
    assert index.roots() == []
    assert index.counts()["items"] == 0


def test_a_non_image_file_is_refused(indexed) -> None:
    index, root = indexed
    with pytest.raises(VecsearchError, match="not an image file"):
        index.add(root / "notes.md")


def test_bytes_held_for_decoding_are_capped_and_all_let_go(
    tmp_path: Path, photo_tree: Path, tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashed file contents wait in memory to be decoded without a second read, within a cap; every one is
    let go as soon as it is decoded or found not to need decoding (touched, renamed, twin or broken)."""
    import vecsearch.indexer as indexer

    budgets: list[indexer.HeldBytes] = []

    class Recorded(indexer.HeldBytes):
        def __init__(self, limit: int) -> None:
            super().__init__(limit)
            self.most = 0
            budgets.append(self)

        def keep(self, size: int) -> bool:
            kept = super().keep(size)
            self.most = max(self.most, self.held)
            return kept

    monkeypatch.setattr(indexer, "HeldBytes", Recorded)
    with Index.create(tmp_path / "full", encoder=tiny_encoder) as full:
        full.add(photo_tree)
        reference = {h.relpath: full.store.vector(h.id) for h in all_hits(full)}
    assert budgets[-1].held == 0 and budgets[-1].most > 0

    # A cap of one byte: nothing is kept, every picture is read again from disk, with the same vectors.
    monkeypatch.setattr(indexer, "HELD_BYTES_LIMIT", 1)
    with Index.create(tmp_path / "capped", encoder=tiny_encoder) as capped:
        capped.add(photo_tree)
        assert budgets[-1].most == 0 and budgets[-1].held == 0
        got = {h.relpath: capped.store.vector(h.id) for h in all_hits(capped)}
        assert got.keys() == reference.keys()
        for relpath, vector in reference.items():
            np.testing.assert_allclose(got[relpath], vector, atol=1e-6)

    # A re-crawl of touched, duplicated and broken files decodes nothing new and holds nothing after.
    monkeypatch.setattr(indexer, "HELD_BYTES_LIMIT", 256 << 20)
    for path in (photo_tree / "apple.png", photo_tree / "car.jpg"):
        bump_mtime(path)
    shutil.copy2(photo_tree / "apple.png", photo_tree / "copy-of-apple.png")
    (photo_tree / "broken.png").write_bytes(b"not a picture")
    with Index.open(tmp_path / "full", encoder=tiny_encoder) as index:
        report = index.add(photo_tree)
        assert report.embedded_images == 0 and report.reused == 1
        assert budgets[-1].held == 0 and budgets[-1].most > 0


def test_tux_paint_and_json_sidecars_give_their_captions_not_their_markup(indexed) -> None:
    """A Tux Paint stamp's translations are not captions of their own (English and untagged lines are),
    and a JSON sidecar gives its caption field, as img2dataset writes it."""
    index, root = indexed
    (root / "trips" / "forest.txt").write_text(
        "Tall green trees.\nfr.utf8=De grands arbres verts.\nde.utf8=Hohe grüne Bäume.\nen_GB.utf8=Tall green trees.\n"
    )
    (root / "car.txt").unlink()
    (root / "car.json").write_text(json.dumps({"caption": "a blue car on a road", "key": "000001", "width": 64}))
    report = index.add()
    assert [s for s in report.skipped if not s.path.endswith("broken.jpg")] == []
    assert sorted(layout(index)["trips/forest.PNG"]["captions"]) == ["Tall green trees."]
    assert sorted(layout(index)["car.jpg"]["captions"]) == ["a blue car on a road"]
    hit = index.search("a blue car on a road", k=1, kind="caption")[0]
    assert hit.path == str(root / "car.jpg") and hit.source == str(root / "car.json")
    (root / "car.json").write_text('{"url": "http://example.org/car.jpg", "caption": null}')
    bump_mtime(root / "car.json")
    report = index.add()  # metadata without a caption: its old caption goes, nothing is reported
    assert [s for s in report.skipped if not s.path.endswith("broken.jpg")] == []
    assert layout(index)["car.jpg"]["captions"] == {}
    (root / "car.json").write_text("[not json")
    bump_mtime(root / "car.json")
    report = index.add()  # a broken one is reported, as a sidecar that is not UTF-8 is
    assert [(s.path, s.reason) for s in report.skipped if not s.path.endswith("broken.jpg")] == [
        (str(root / "car.json"), "caption file is not valid JSON (line 1: Expecting value)")
    ]
