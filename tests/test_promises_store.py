"""Promises of the index database that no other test pinned down: each test names one.

They were written against the mutants of `vecsearch/store.py` that survived `tests/test_indexing.py` and
`tests/test_check.py` (see scripts/results/mutation-store-survivors.md): each fails on a change to the
code that breaks the promise it names. Most use a Store on a real SQLite file with rows made by hand;
the crawls that only show a promise end to end use a real Index with the tiny model.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_image

from vecsearch import Index, IndexCorruptError
from vecsearch.schema import SCHEMA_VERSION, FileRow, ItemRow
from vecsearch.store import IN_CHUNK, Store

DIM = 4


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "db.sqlite", create=True)
    yield opened
    opened.close()


def vec(seed: int) -> np.ndarray:
    """A unit vector of DIM float32s, different for each seed."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def root_paths(store: Store) -> list[str]:
    return [root.path for root in store.roots()]


def committed_roots(path: Path) -> list[str]:
    """The roots another connection sees: what is committed, not what this one holds."""
    with closing(sqlite3.connect(path)) as other:
        return [r[0] for r in other.execute("SELECT path FROM roots ORDER BY id")]


def add_files(store: Store, root_id: int, relpaths: list[str], sha256: str | None = None) -> dict[str, int]:
    with store.transaction():
        return {rel: store.add_file(root_id, rel, 10, 20, sha256 or f"hash-{rel}") for rel in relpaths}


def layout(index: Index) -> dict[str, int | None]:
    """relpath -> the file's image item id, straight from SQLite."""
    files: dict[str, int | None] = {}
    for relpath, image in index.store.conn.execute(
        "SELECT f.relpath, i.id FROM files f LEFT JOIN items i ON i.file_id = f.id AND i.kind = 'image'"
    ):
        files[relpath] = image
    return files


# --- transactions: atomic, durable, nested -------------------------------------------------------


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    """transaction() is one atomic write: on the first use of a store, after a commit and after a
    rollback alike, an exception inside it rolls back everything it wrote."""
    path = tmp_path / "db.sqlite"
    store = Store.open(path, create=True)
    try:
        with pytest.raises(RuntimeError), store.transaction():
            store.add_root("/first", "first", {})
            raise RuntimeError("crash inside the first write")
        assert root_paths(store) == [] and committed_roots(path) == []

        with pytest.raises(RuntimeError), store.transaction():
            store.add_root("/after-a-rollback", "x", {})
            raise RuntimeError("crash after a rollback")
        assert root_paths(store) == [] and committed_roots(path) == []

        with store.transaction():
            store.add_root("/kept", "kept", {})
        assert committed_roots(path) == ["/kept"]  # on disk for everyone once the block ends

        with pytest.raises(RuntimeError), store.transaction():
            store.add_root("/after-a-commit", "x", {})
            raise RuntimeError("crash after a commit")
        assert root_paths(store) == ["/kept"] and committed_roots(path) == ["/kept"]
    finally:
        store.close()


def test_a_transaction_inside_a_long_write_joins_it(store: Store) -> None:
    """A chunk is begun, written through nested transaction() and snapshot() blocks, and ended by the
    chunk: the nested blocks neither commit it early nor fail for being inside it."""
    store.begin()
    with store.transaction():
        store.add_root("/inside", "inside", {})
        with store.snapshot():
            assert root_paths(store) == ["/inside"]
    with store.snapshot():
        assert root_paths(store) == ["/inside"]
    store.rollback()
    assert root_paths(store) == []

    store.begin()
    with store.transaction():
        store.add_root("/kept", "kept", {})
    store.commit()
    assert root_paths(store) == ["/kept"]


def test_an_index_opened_in_one_thread_answers_in_another(tmp_path: Path) -> None:
    """`vecsearch serve` opens the index once and answers each request on a worker thread (one at a
    time): the database connection must work from a thread other than the one that opened it."""
    store = Store.open(tmp_path / "db.sqlite", create=True)
    with store.transaction():
        store.add_root("/photos", "photos", {})
    seen: list[Any] = []

    def read() -> None:
        try:
            with store.snapshot():
                seen.append((store.generation, root_paths(store)))
        except Exception as exc:  # handed back to the test's thread
            seen.append(exc)

    worker = threading.Thread(target=read)
    worker.start()
    worker.join()
    store.close()
    assert seen == [(0, ["/photos"])]


# --- generations and the removal log --------------------------------------------------------------


def test_the_generation_counts_commits(store: Store) -> None:
    """`index.generation` is the database's commit count: a new database is at 0, each committed
    bump adds one, a rolled-back one adds nothing."""
    assert store.generation == 0
    for expected in (1, 2, 3):
        with store.transaction():
            assert store.bump_generation() == expected
        assert store.generation == expected
    with pytest.raises(RuntimeError), store.transaction():
        store.bump_generation()
        raise RuntimeError("rolled back")
    assert store.generation == 3


def test_vectors_since_a_generation_with_nothing_new_is_empty(store: Store) -> None:
    """A commit that only removed items: catching a vector file up adds no vector, and the (ids,
    vectors) pair agrees row for row."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        item = store.add_item("image", file_id, vec(1), gen)
    with store.transaction():
        later = store.bump_generation()
        store.delete_file(file_id, later)
    ids, vectors = store.vectors_since(gen)
    assert len(ids) == 0 and len(vectors) == 0
    assert store.removed_since(gen).tolist() == [item]


# --- the schema check ------------------------------------------------------------------------------


def test_a_foreign_database_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """Another program's SQLite file is no index: the error says the database has no vecsearch schema."""
    path = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    with pytest.raises(IndexCorruptError, match="no vecsearch schema"):
        Store.open(path)


def test_a_database_without_a_schema_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('generation', '0')")
    with pytest.raises(IndexCorruptError, match="(?i)no schema version"):
        Store.open(path)


def test_a_database_from_a_newer_vecsearch_is_refused_with_an_upgrade_hint(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    Store.open(path, create=True).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(IndexCorruptError, match=r"newer than this vecsearch understands.*upgrade vecsearch"):
        Store.open(path)


# --- rows read back as written ---------------------------------------------------------------------


def test_file_and_item_rows_read_back_as_written(store: Store) -> None:
    """What the store hands out is what the database holds: every field of a file and of an item."""
    with store.transaction():
        gen = store.bump_generation()
        store.add_root("/other", "other", {})  # so that root ids and file ids differ
        root = store.add_root("/photos", "photos", {"exclude": ["raw"]})
        file_id = store.add_file(root, "trips/beach.png", 1234, 5678, "beef")
        store.set_sidecar_sig(file_id, "12:34")
        image = store.add_item("image", file_id, vec(1), gen)
        caption = store.add_item(
            "caption", file_id, vec(2), gen, text="a beach", source="sidecar", position=3, text_hash="t"
        )
    want = FileRow(file_id, root, "trips/beach.png", 1234, 5678, "beef", "12:34")
    assert store.file_at(root, "trips/beach.png") == want
    assert store.files_under(root) == {"trips/beach.png": want}
    assert store.file_by_hash("beef") == want
    assert store.items([image, caption]) == {
        image: ItemRow(image, "image", file_id, None, None, 0, root, "trips/beach.png"),
        caption: ItemRow(caption, "caption", file_id, "a beach", "sidecar", 3, root, "trips/beach.png"),
    }


def test_a_vector_is_stored_as_little_endian_float32_whatever_it_came_as(store: Store) -> None:
    """The blob is float32, little-endian (schema.py): a vector handed over as float64 or as big-endian
    float32 is stored in that format and reads back with the same values."""
    wanted = vec(7)
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        ids = [
            store.add_item("image", file_id, wanted.astype(np.float64), gen),
            store.add_item("caption", file_id, wanted.astype(">f4"), gen, text="x"),
        ]
    for item_id in ids:
        blob = store.conn.execute("SELECT data FROM vectors WHERE item_id = ?", (item_id,)).fetchone()[0]
        assert blob == wanted.astype("<f4").tobytes()
        np.testing.assert_array_equal(store.vector(item_id), wanted)


# --- what filters and lookups let through ----------------------------------------------------------


@pytest.fixture
def three_files(store: Store) -> dict[str, Any]:
    """Three files of two roots, each with an image and a caption item."""
    with store.transaction():
        gen = store.bump_generation()
        roots = [store.add_root("/a", "a", {}), store.add_root("/b", "b", {})]
        made: dict[str, Any] = {"files": [], "images": [], "captions": [], "roots": roots}
        for n, (root, rel) in enumerate([(roots[0], "x.png"), (roots[0], "sub/y.png"), (roots[1], "z.png")]):
            file_id = store.add_file(root, rel, 1, 1, f"hash{n}")
            made["files"].append(file_id)
            made["images"].append(store.add_item("image", file_id, vec(n), gen))
            made["captions"].append(store.add_item("caption", file_id, vec(10 + n), gen, text=f"caption {n}"))
    return made


def test_a_filter_by_kind_and_files_lets_only_those_items_through(store: Store, three_files: dict[str, Any]) -> None:
    """`--path`/`--under` with `--kind`: the allowed set is the items of that kind of those files."""
    f, images, captions = three_files["files"], three_files["images"], three_files["captions"]
    assert sorted(store.item_ids("image", [f[0], f[1]])) == [images[0], images[1]]
    assert store.item_ids("caption", [f[1]]) == [captions[1]]
    assert sorted(store.item_ids(None, [f[2]])) == [images[2], captions[2]]
    assert store.item_ids("image", []) == []
    assert sorted(store.item_ids("image")) == images


def test_a_kind_filter_is_skipped_only_when_every_item_is_of_that_kind(store: Store) -> None:
    """Search hands FAISS no id list for `--kind image` when every item is an image; as soon as one
    item of another kind exists the filter applies."""
    assert not store.has_other_kinds("image")
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        store.add_item("image", file_id, vec(1), gen)
    assert not store.has_other_kinds("image")
    assert store.has_other_kinds("caption")
    with store.transaction():
        store.add_item("caption", file_id, vec(2), gen, text="a caption")
    assert store.has_other_kinds("image")
    assert store.has_other_kinds("caption")


def test_path_filters_see_every_file_with_its_root(store: Store, three_files: dict[str, Any]) -> None:
    f, roots = three_files["files"], three_files["roots"]
    assert sorted(store.all_files()) == [
        (f[0], roots[0], "x.png"),
        (f[1], roots[0], "sub/y.png"),
        (f[2], roots[1], "z.png"),
    ]


def test_a_query_image_finds_the_picture_items_with_its_content(store: Store) -> None:
    """A query image never comes back as its own hit: the image items of every file with its content
    (not their captions, not other pictures) are the ones left out."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        same = [store.add_file(root, rel, 1, 1, "same") for rel in ("a.png", "copy-of-a.png")]
        other = store.add_file(root, "b.png", 1, 1, "other")
        images = [store.add_item("image", file_id, vec(file_id), gen) for file_id in same]
        for file_id in same:
            store.add_item("caption", file_id, vec(50 + file_id), gen, text="a caption")
        store.add_item("image", other, vec(99), gen)
    assert sorted(store.image_items_with_hash("same")) == images
    assert store.image_items_with_hash("unknown") == []


def test_a_file_without_a_picture_item_has_no_image_item(store: Store) -> None:
    """In a text-only index a file has captions but no image item: looking up its picture says so."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        text_only = store.add_file(root, "a.png", 1, 1, "h1")
        store.add_item("caption", text_only, vec(1), gen, text="only a caption")
        pictured = store.add_file(root, "b.png", 1, 1, "h2")
        image = store.add_item("image", pictured, vec(2), gen)
    assert store.image_item_of(text_only) is None
    assert store.image_item_of(pictured) == image


def test_the_captions_of_a_file_come_from_every_source_in_their_order(store: Store) -> None:
    """`index.item(id)` lists every caption of the picture (sidecar and captions files), in order."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        second = store.add_item("caption", file_id, vec(1), gen, text="second", source="sidecar", position=1)
        first = store.add_item("caption", file_id, vec(2), gen, text="first", source="sidecar", position=0)
        listed = store.add_item("caption", file_id, vec(3), gen, text="listed", source="/c.csv", position=0)
    assert store.captions_of(file_id) == [
        (first, "first", "sidecar"),
        (listed, "listed", "/c.csv"),
        (second, "second", "sidecar"),
    ]
    assert store.captions_of(file_id, "sidecar") == [(first, "first", "sidecar"), (second, "second", "sidecar")]


# --- long id lists, chunked reads, samples ---------------------------------------------------------


def test_ids_in_long_lists_are_each_found_once(store: Store) -> None:
    """Id lists longer than one SQLite IN list (filters of thousands of files, removals of whole
    folders) are read in chunks: no id past the first chunk is dropped, and none comes back twice."""
    count = 2 * IN_CHUNK + 200
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        files = [store.add_file(root, f"{n}.png", 1, 1, f"h{n}") for n in range(count)]
        images = [store.add_item("image", file_id, vec(n), gen) for n, file_id in enumerate(files)]
    assert sorted(store.item_ids("image", files)) == images
    assert sorted(store.items(images)) == images
    assert store.image_items_of_files(files) == dict(zip(files, images, strict=True))
    ids, vectors = store.vectors_of(np.array(images[::-1]))
    assert ids.tolist() == images
    np.testing.assert_array_equal(vectors[-1], vec(count - 1))

    few, _ = store.vectors_of(np.array(images[:3]))
    assert few.tolist() == images[:3]

    with store.transaction():
        removal = store.bump_generation()
        store.delete_items(images, removal)
    assert store.counts()["items"] == 0
    assert sorted(store.removed_since(gen).tolist()) == images


def test_a_rebuild_reads_every_vector_in_chunks(store: Store) -> None:
    """Rebuilding the vector file reads the stored vectors chunk by chunk, to the last one."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        items = [store.add_item("caption", file_id, vec(n), gen, text=str(n)) for n in range(5)]
    chunks = list(store.iter_vectors(chunk_size=2))
    assert [ids.tolist() for ids, _ in chunks] == [items[0:2], items[2:4], items[4:5]]
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), np.stack([vec(n) for n in range(5)]))


def test_the_tuning_sample_is_distinct_ids_of_the_index_and_the_same_every_time(store: Store) -> None:
    """An IVF index is tuned on queries drawn from the index by a seeded sample: distinct items,
    sorted, reproducible; all of them when the index holds no more than asked for."""
    with store.transaction():
        gen = store.bump_generation()
        root = store.add_root("/p", "p", {})
        file_id = store.add_file(root, "a.png", 1, 1, "h")
        items = [store.add_item("caption", file_id, vec(n), gen, text=str(n)) for n in range(100)]
    sample = store.sample_item_ids(30)
    assert len(sample) == 30 and len(set(sample.tolist())) == 30
    assert set(sample.tolist()) <= set(items)
    assert sample.tolist() == sorted(sample.tolist())
    np.testing.assert_array_equal(store.sample_item_ids(30), sample)
    assert store.sample_item_ids(100).tolist() == items
    assert store.sample_item_ids(500).tolist() == items


# --- roots: a folder below recorded single files, a subfolder beside its namesake ----------------


def test_splitting_a_root_moves_exactly_the_files_below_the_folder(store: Store) -> None:
    """Crawling a folder inside a root of single files gives the folder its own root: the files below
    it move there (same rows, so same items), paths made relative to it; its neighbours stay."""
    with store.transaction():
        outer = store.add_root("/photos", "photos", {"files_only": True})
    ids = add_files(store, outer, ["apple.png", "trips/beach.png", "trips/sub/x.png", "trips2/y.png", "tripsA.png"])
    with store.transaction():
        inner = store.add_root("/photos/trips", "photos/trips", {})
        store.split_root(outer, inner, "trips")
    assert {rel: row.id for rel, row in store.files_under(inner).items()} == {
        "beach.png": ids["trips/beach.png"],
        "sub/x.png": ids["trips/sub/x.png"],
    }
    assert sorted(store.files_under(outer)) == ["apple.png", "trips2/y.png", "tripsA.png"]


def test_the_files_under_a_folder_are_exactly_those_below_it(store: Store) -> None:
    """A crawl of a subfolder (or of one file) plans removals among the files it covers: those below
    the folder, or that file; never a neighbour whose name starts the same."""
    with store.transaction():
        root = store.add_root("/photos", "photos", {})
        elsewhere = store.add_root("/other", "other", {})
    names = ["apple.png", "trips/beach.png", "trips/sub/x.png", "trips2/y.png", "tripsA.png", "trips0.png"]
    add_files(store, root, names)
    add_files(store, elsewhere, ["trips/far.png"])
    assert sorted(store.files_under(root, "trips")) == ["trips/beach.png", "trips/sub/x.png"]
    assert sorted(store.files_under(root, "trips/beach.png")) == ["trips/beach.png"]
    assert sorted(store.files_under(root)) == sorted(names)


def test_crawling_a_subfolder_leaves_its_namesake_neighbour_alone(
    tmp_path: Path, photo_tree: Path, tiny_encoder
) -> None:
    """`vecsearch index photos/trips` updates only that subtree: a file gone from it leaves the index;
    the pictures of `photos/trips2` (not crawled) keep their items."""
    make_image(photo_tree / "trips2" / "far.png", "purple", seed=40)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(photo_tree)
        before = layout(index)
        (photo_tree / "trips" / "beach.png").unlink()
        report = index.add(photo_tree / "trips")
        after = layout(index)
    assert (report.removed, report.unchanged, report.added) == (1, 1, 0)
    assert "trips/beach.png" not in after
    assert before["trips2/far.png"] is not None
    assert after["trips2/far.png"] == before["trips2/far.png"]


def test_indexing_a_folder_below_single_files_keeps_their_items(tmp_path: Path, photo_tree: Path, tiny_encoder) -> None:
    """Single files recorded first, then the folder holding one of them: that picture keeps its item
    (it is not indexed a second time), and the folder's other pictures are added."""
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add([photo_tree / "apple.png", photo_tree / "trips" / "beach.png"])
        before = layout(index)
        report = index.add(photo_tree / "trips")
        after = layout(index)
        roots = index.roots()
        images = index.counts()["images"]
    assert (report.added, report.unchanged, report.reused) == (1, 1, 0)
    assert roots == [photo_tree, photo_tree / "trips"]
    assert images == 3
    assert sorted(after) == ["apple.png", "beach.png", "forest.PNG"]
    assert after["apple.png"] == before["apple.png"]
    assert after["beach.png"] == before["trips/beach.png"]  # moved to the new root with its item
    assert after["forest.PNG"] not in before.values()
