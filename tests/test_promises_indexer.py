"""Promises of the crawl's incremental rules (vecsearch/indexer.py, chunks.py, pipeline.py, captions.py)
that no other test pinned down: each test names one.

They were written against the mutants that survived `tests/test_indexing.py`, `tests/test_interrupt.py` and
`tests/test_bad_files.py` (see scripts/results/mutation-indexer-survivors.md and
mutation-chunks-survivors.md), starting with one found by hand: a file is unchanged only when both its size
and its modification time are; either alone is not enough.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vecsearch import Index, faults, indexer, pipeline
from vecsearch.chunks import COMMIT_EVERY_ITEMS, COMMIT_EVERY_SECONDS, ChunkWriter
from vecsearch.crawl import FileContent, FoundFile
from vecsearch.indexer import IndexingInterrupted
from vecsearch.pipeline import (
    DECODE_OVERSAMPLE,
    HeldBytes,
    Pending,
    decode,
    decode_size,
    hash_pending,
    ordered_map,
    prepare_item,
)
from vecsearch.results import CrawlReport


def _bmp(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    """An uncompressed picture: its byte size depends on its dimensions only, not on what it shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    pixels = (rng.random((size[1], size[0], 3)) * 40).astype("uint8") + np.array(colour, dtype="uint8") // 2
    Image.fromarray(pixels).save(path, format="BMP")
    return path


@pytest.fixture
def crawled(tmp_path: Path, tiny_encoder: object) -> Iterator[tuple[Index, Path]]:
    folder = tmp_path / "pictures"
    _bmp(folder / "a.bmp", (200, 30, 30))
    _bmp(folder / "b.bmp", (30, 200, 30))
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    index.add(folder)
    yield index, folder
    index.close()


def _image_vector(index: Index, name: str) -> np.ndarray:
    (item_id,) = [
        int(row[0])
        for row in index.store.conn.execute(
            "SELECT i.id FROM items i JOIN files f ON f.id = i.file_id WHERE f.relpath = ? AND i.kind = 'image'",
            (name,),
        )
    ]
    vector = index.store.vector(item_id)
    assert vector is not None
    return vector


def test_a_picture_edited_in_place_to_the_same_byte_size_is_embedded_again(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    path = folder / "a.bmp"
    before, old_size, old_mtime = _image_vector(index, "a.bmp"), path.stat().st_size, path.stat().st_mtime_ns
    _bmp(path, (30, 30, 200))  # a blue picture where the red one was: same dimensions, same byte size
    os.utime(path, ns=(old_mtime + 5_000_000_000, old_mtime + 5_000_000_000))
    assert path.stat().st_size == old_size
    report = index.add()
    assert (report.updated, report.unchanged, report.embedded_images) == (1, 1, 1)
    assert not np.allclose(_image_vector(index, "a.bmp"), before, atol=1e-4)


def test_a_picture_replaced_by_one_of_another_size_and_the_old_time_is_embedded_again(
    crawled: tuple[Index, Path],
) -> None:
    index, folder = crawled
    path = folder / "a.bmp"
    before, old = _image_vector(index, "a.bmp"), path.stat()
    _bmp(path, (30, 30, 200), size=(48, 36))  # as a copy tool that keeps times would leave it
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert path.stat().st_size != old.st_size and path.stat().st_mtime_ns == old.st_mtime_ns
    report = index.add()
    assert (report.updated, report.unchanged, report.embedded_images) == (1, 1, 1)
    assert not np.allclose(_image_vector(index, "a.bmp"), before, atol=1e-4)


# --- chunks: what a commit holds, and what an interrupt takes back ----------------------------------------


@pytest.mark.parametrize("point", ["commit", "embed"])
def test_an_interrupted_crawl_reports_only_what_it_committed(
    tmp_path: Path, tiny_encoder: object, make_images: object, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    make_images(tmp_path / "pictures", 20)  # type: ignore[operator]
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    monkeypatch.setenv(faults.ENV, f"{point}:2:interrupt")  # Ctrl-C in the second batch: embedded, or committing
    monkeypatch.setattr(faults, "_hits", {})
    with pytest.raises(IndexingInterrupted) as interrupted:
        index.add(tmp_path / "pictures")
    report = interrupted.value.report
    committed = index.store.counts()
    assert 0 < committed["images"] < 20
    assert (report.added, report.embedded_images) == (committed["images"], committed["images"])
    assert report.interrupted and report.seconds is not None and 0 < report.seconds < 600
    index.close()
    reader = Index.open(tmp_path / "idx")  # what another process sees: the same, and a vector file that matches
    assert reader.store.counts() == committed and reader.vectors.ntotal == committed["items"]
    reader.close()


def _writer(index: Index) -> ChunkWriter:
    return ChunkWriter(index.store, index.vector_file, CrawlReport())


def test_a_chunk_is_due_at_its_size_or_its_age_and_not_before(index_of_two: Index) -> None:
    writer = _writer(index_of_two)
    assert not writer.due()  # nothing open
    chunk = writer.begin()
    chunk.add_ids.extend(range(COMMIT_EVERY_ITEMS - 2))
    assert not writer.due() and not writer.due(waiting=1)
    assert writer.due(waiting=2)  # what waits for the chunk counts with it
    chunk.add_ids.append(0)
    assert not writer.due() and writer.due(waiting=1)
    chunk.add_ids.append(0)
    assert writer.due()  # exactly the size
    chunk.add_ids.clear()
    assert not writer.due()
    writer._last_commit -= COMMIT_EVERY_SECONDS + 1
    assert writer.due()  # old enough, however small
    writer.rollback()


def test_a_rollback_restores_the_reports_counters_even_when_the_connection_failed(index_of_two: Index) -> None:
    writer = _writer(index_of_two)
    writer.report.added = 3
    writer.begin()
    writer.report.added, writer.report.removed = 7, 2
    index_of_two.store.conn.close()  # as a connection that failed mid-write: nothing left to roll back
    assert writer.rollback() is not None
    assert (writer.report.added, writer.report.removed) == (3, 0)


@pytest.fixture
def index_of_two(crawled: tuple[Index, Path]) -> Index:
    return crawled[0]


# --- pipeline: bounded memory, decoding at the model's size, one bad file one row ------------------------


def test_bytes_up_to_exactly_the_cap_are_kept_and_no_more() -> None:
    held = HeldBytes(10)
    assert held.keep(10) and not held.keep(1)


def test_pictures_are_decoded_at_three_times_the_models_input(tiny_encoder: object) -> None:
    size = tiny_encoder.input_size  # type: ignore[attr-defined]
    assert decode_size(tiny_encoder) == DECODE_OVERSAMPLE * size == 3 * size
    assert decode_size(object()) is None  # an encoder that does not say: full size


def test_a_large_jpeg_read_again_from_disk_is_decoded_reduced(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    Image.fromarray((np.random.default_rng(0).random((1200, 1600, 3)) * 255).astype("uint8")).save(path, quality=80)
    stat = path.stat()
    item = Pending(1, FoundFile("large.jpg", tmp_path, stat.st_size, stat.st_mtime_ns), None)  # no bytes held
    decode(item, None, max_megapixels=100, min_size=150)
    assert item.error is None and item.raw
    assert min(item.prepared.size) >= 150 and max(item.prepared.size) < 1600  # JPEG draft: a fraction of 1600


def test_a_picture_the_model_cannot_prepare_costs_one_row_with_its_reason(tmp_path: Path) -> None:
    item = Pending(1, FoundFile("odd.png", tmp_path, 1, 1), None, raw=True, prepared="picture")

    def refuse(picture: object) -> object:
        raise ValueError("a mode the model cannot take")

    prepare_item(item, refuse)
    assert item.prepared is None and not item.raw
    assert item.error == "cannot prepare image (ValueError: a mode the model cannot take)"


def test_an_interrupt_between_the_database_commit_and_the_mirror_leaves_a_consistent_index(
    tmp_path: Path, tiny_encoder: object, make_images: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_images(tmp_path / "pictures", 12)  # type: ignore[operator]
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    monkeypatch.setenv(faults.ENV, "committed:1:interrupt")
    monkeypatch.setattr(faults, "_hits", {})
    with pytest.raises(IndexingInterrupted) as interrupted:
        index.add(tmp_path / "pictures")
    committed = index.store.counts()["images"]
    assert 0 < committed < 12 and interrupted.value.report.added == committed
    index.close()
    reader = Index.open(tmp_path / "idx")
    assert reader.vectors.ntotal == reader.store.counts()["items"]
    reader.close()


def test_each_commit_is_logged_with_its_generation_and_item_count(
    crawled: tuple[Index, Path], caplog: pytest.LogCaptureFixture
) -> None:
    index, folder = crawled
    _bmp(folder / "c.bmp", (90, 90, 90))
    with caplog.at_level(logging.INFO, logger="vecsearch.chunks"):
        index.add()
    assert f"committed generation {index.store.generation}: 3 items" in caplog.messages


def test_a_commit_mirrors_the_chunk_into_the_vectors_in_memory(crawled: tuple[Index, Path]) -> None:
    index, _ = crawled
    vectors = index.vector_file.vectors
    before = vectors.ntotal
    writer = _writer(index)
    chunk = writer.begin()
    (file_id,) = [int(r[0]) for r in index.store.conn.execute("SELECT id FROM files WHERE relpath = 'b.bmp'")]
    new_vector = np.ones(index.dim, dtype=np.float32) / np.sqrt(index.dim)
    item_id = index.store.add_item("caption", file_id, new_vector, chunk.gen, text="added", source="test")
    writer.add(item_id, new_vector)
    writer.commit()
    assert vectors.ntotal == before + 1
    _, found = vectors.search(new_vector[None, :], 1)
    assert found[0][0] == item_id


def test_a_file_that_vanishes_before_it_is_hashed_costs_one_row_saying_so(tmp_path: Path) -> None:
    item = hash_pending(Pending(1, FoundFile("gone.png", tmp_path, 10, 10), None))
    assert item.error == "file vanished during the crawl" and item.sha256 == ""


def test_a_file_that_changes_while_it_is_hashed_costs_one_row_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write racing the read cannot be timed from a test; the hash says what hash_file saw.
    monkeypatch.setattr(pipeline, "hash_file", lambda path: FileContent("0" * 64, b"x", 1, 1, stable=False))
    item = hash_pending(Pending(1, FoundFile("busy.png", tmp_path, 1, 1), None))
    assert item.error == "file changed while being read" and item.sha256 == ""


def test_a_file_changed_since_the_walk_is_recorded_as_it_was_hashed(tmp_path: Path) -> None:
    path = _bmp(tmp_path / "a.bmp", (10, 20, 30))
    walked = path.stat()
    _bmp(path, (10, 20, 30), size=(50, 50))  # rewritten after the walk saw it
    os.utime(path, ns=(walked.st_mtime_ns + 7_000_000_000, walked.st_mtime_ns + 7_000_000_000))
    now = path.stat()
    item = hash_pending(Pending(1, FoundFile("a.bmp", tmp_path, walked.st_size, walked.st_mtime_ns), None))
    assert item.error is None
    assert (item.found.size, item.found.mtime_ns) == (now.st_size, now.st_mtime_ns)


def test_ordered_map_gives_every_result_in_order_with_at_most_a_window_in_flight() -> None:
    lock = threading.Lock()
    running, peak = 0, 0

    def square(number: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)
        with lock:
            running -= 1
        return number * number

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(ordered_map(pool, square, range(60), window=3))
    assert results == [n * n for n in range(60)]
    assert peak <= 3


# --- captions ---------------------------------------------------------------------------------------------


def test_captions_are_embedded_once_each_across_many_commits(tmp_path: Path, tiny_encoder: object) -> None:
    folder = tmp_path / "pictures"
    batch = tiny_encoder.batch_size  # type: ignore[attr-defined]
    for number in range(batch + 1):  # two batches of pictures: two commits, two caption flushes
        _bmp(folder / f"{number:02d}.bmp", (20 * number, 100, 200 - 20 * number))
        (folder / f"{number:02d}.txt").write_text(f"picture number {number}\n")
    (folder / "00.txt").write_text("a shared caption\n")
    (folder / f"{batch:02d}.txt").write_text("a shared caption\nonly on the last\n")  # known first, then new
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    report = index.add(folder)
    assert report.embedded_images == batch + 1
    assert (report.captions_added, report.embedded_captions) == (batch + 2, batch + 1)  # each text embedded once
    assert index.store.counts()["captions"] == batch + 2
    index.close()


def test_pictures_that_turn_unreadable_leave_the_index_and_are_counted_as_removed(
    crawled: tuple[Index, Path],
) -> None:
    index, folder = crawled
    _bmp(folder / "c.bmp", (90, 90, 90))
    index.add()
    for name in ("a.bmp", "b.bmp"):  # rewritten with something no decoder takes
        path = folder / name
        mtime = path.stat().st_mtime_ns + 5_000_000_000
        path.write_bytes(b"BM this was a picture")
        os.utime(path, ns=(mtime, mtime))
    report = index.add()
    assert report.removed == 2 and sorted(Path(s.path).name for s in report.skipped) == ["a.bmp", "b.bmp"]
    assert index.store.counts()["images"] == 1 and index.vector_file.vectors.ntotal == 1


def test_captions_removed_from_several_sidecars_are_all_counted(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    for name in ("a", "b"):
        (folder / f"{name}.txt").write_text(f"first of {name}\nsecond of {name}\n")
    assert index.add().captions_added == 4
    for name in ("a", "b"):
        (folder / f"{name}.txt").write_text(f"first of {name}\n")
    report = index.add()
    assert (report.captions_removed, report.captions_added) == (2, 0)


def test_a_refused_sidecar_is_reported_with_its_path_and_reason(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    (folder / "a.txt").write_bytes(b"\xff\xfe not text")
    report = index.add()
    assert [(s.path, s.reason) for s in report.skipped] == [(str(folder / "a.txt"), "caption file is not UTF-8 text")]


def _edit(path: Path, colour: tuple[int, int, int]) -> None:
    mtime = path.stat().st_mtime_ns + 5_000_000_000
    _bmp(path, colour)
    os.utime(path, ns=(mtime, mtime))


def test_an_edited_picture_is_recorded_as_it_now_is(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    _edit(folder / "a.bmp", (0, 0, 250))
    _edit(folder / "b.bmp", (250, 250, 0))
    assert index.add().updated == 2
    third = index.add()  # nothing changed since: not even hashed again
    assert (third.unchanged, third.updated, third.embedded_images) == (2, 0, 0)
    (folder / "copy of a.bmp").write_bytes((folder / "a.bmp").read_bytes())
    fourth = index.add()  # the new content is known by its hash: reused, not embedded
    assert (fourth.reused, fourth.embedded_images) == (1, 0)


def test_a_picture_and_its_sidecar_changed_together_both_follow(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    (folder / "a.txt").write_text("the old caption\n")
    index.add()
    _edit(folder / "a.bmp", (0, 0, 250))
    (folder / "a.txt").write_text("the new caption\n")
    report = index.add()
    assert (report.updated, report.captions_added, report.captions_removed) == (1, 1, 1)
    row = index.store.file_at(index.store.roots()[0].id, "a.bmp")
    assert row is not None
    assert [text for _, text, _ in index.store.captions_of(row.id)] == ["the new caption"]


def test_a_captions_file_row_for_a_missing_picture_does_not_stop_the_rows_after_it(
    crawled: tuple[Index, Path], tmp_path: Path
) -> None:
    index, folder = crawled
    captions = tmp_path / "captions.csv"
    captions.write_text(f"path,caption\n{folder / 'ghost.bmp'},a ghost\n{folder / 'a.bmp'},a red picture\n")
    report = index.add(captions=[captions])
    assert report.captions_added == 1
    assert [s.path for s in report.skipped] == [str(folder / "ghost.bmp")]


# --- walking --------------------------------------------------------------------------------------------


def test_pictures_under_a_folder_that_cannot_be_listed_stay_in_the_index(
    crawled: tuple[Index, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, folder = crawled
    _bmp(folder / "share" / "c.bmp", (90, 90, 90))
    assert index.add().added == 1
    real_scandir = os.scandir

    def scandir(path: object) -> object:  # the share went offline (a permission error root never gets)
        if Path(str(path)) == folder / "share":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    report = index.add()
    monkeypatch.undo()
    assert [(s.path, s.reason) for s in report.skipped] == [
        (str(folder / "share"), f"cannot list folder ({os.strerror(errno.EACCES)})")
    ]
    assert report.removed == 0 and index.store.counts()["images"] == 3


def test_a_file_named_twice_in_one_crawl_is_indexed_once(crawled: tuple[Index, Path], tmp_path: Path) -> None:
    index, folder = crawled
    _bmp(folder / "sub" / "c.bmp", (90, 90, 90))
    report = index.add([folder / "sub", folder / "sub" / "c.bmp"])
    assert (report.added, report.skipped) == (1, [])
    assert index.store.counts()["images"] == 3


def test_hidden_pictures_are_indexed_when_asked_for(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    _bmp(folder / ".hidden.bmp", (90, 90, 90))
    assert index.add(folder).added == 0
    assert index.add(folder, include_hidden=True).added == 1


def test_an_interrupt_while_walking_adds_nothing(
    tmp_path: Path, tiny_encoder: object, make_images: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_images(tmp_path / "pictures", 3)  # type: ignore[operator]
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    monkeypatch.setenv(faults.ENV, "walk:2:interrupt")
    monkeypatch.setattr(faults, "_hits", {})
    with pytest.raises(IndexingInterrupted) as interrupted:
        index.add(tmp_path / "pictures")
    assert interrupted.value.report.added == 0 and index.store.counts()["images"] == 0
    index.close()


# --- twins: files whose content is on its way to the model --------------------------------------------------


def test_copies_of_a_picture_still_being_embedded_reuse_its_vector(tmp_path: Path, tiny_encoder: object) -> None:
    folder = tmp_path / "pictures"
    batch = tiny_encoder.batch_size  # type: ignore[attr-defined]
    for number in range(batch + 1):
        _bmp(folder / f"{number:02d}.bmp", (20 * number, 100, 200 - 20 * number))
    last = f"{batch:02d}.bmp"  # in the second batch: its copy waits while the first batch is placed
    for original in ("00.bmp", last):  # hashed while the original is on its way to the model
        (folder / f"zz copy of {original}").write_bytes((folder / original).read_bytes())
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    report = index.add(folder)
    assert (report.added, report.reused, report.embedded_images) == (batch + 1, 2, batch + 1)
    for original in ("00.bmp", last):
        assert np.array_equal(_image_vector(index, f"zz copy of {original}"), _image_vector(index, original))
    index.close()


def test_copies_of_an_undecodable_file_are_each_skipped_with_the_reason(tmp_path: Path, tiny_encoder: object) -> None:
    folder = tmp_path / "pictures"
    _bmp(folder / "good.bmp", (10, 200, 10))
    for name in ("broken.bmp", "broken copy.bmp"):
        (folder / name).write_bytes(b"BM but nothing after the magic")
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    report = index.add(folder)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"broken.bmp", "broken copy.bmp"}
    assert reasons["broken.bmp"] == reasons["broken copy.bmp"] and isinstance(reasons["broken.bmp"], str)
    assert reasons["broken.bmp"].startswith("cannot")
    index.close()


@pytest.mark.parametrize(("workers", "threads_seen"), [(1, 1), (2, 2), (None, 4)])
def test_hashing_and_decoding_run_on_as_many_worker_threads_as_asked(
    tmp_path: Path, tiny_encoder: object, monkeypatch: pytest.MonkeyPatch, workers: int | None, threads_seen: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)  # the default is one a core, up to 4
    folder = tmp_path / "pictures"
    for number in range(12):
        _bmp(folder / f"{number:02d}.bmp", (20 * number, 100, 200 - 10 * number))
    threads: set[str] = set()
    real_hash = indexer.hash_pending

    def hash_and_note(*args: object, **kwargs: object) -> Pending:  # the real work, seen from its thread
        threads.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough for every worker to take a file
        return real_hash(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(indexer, "hash_pending", hash_and_note)
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    assert index.add(folder, workers=workers).added == 12
    assert len(threads) == threads_seen and all(name.startswith("vecsearch-crawl") for name in threads)
    index.close()


def test_a_crawl_of_more_pictures_than_are_in_flight_at_once_takes_them_all(
    tmp_path: Path, tiny_encoder: object
) -> None:
    folder = tmp_path / "pictures"
    count = 4 * tiny_encoder.batch_size + 9  # type: ignore[attr-defined]  # past the decoding window of one worker
    for number in range(count):
        _bmp(folder / f"{number:03d}.bmp", (number * 5 % 250, 100, 250 - number * 5 % 250), size=(16, 12))
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    report = index.add(folder, workers=1)
    assert (report.added, report.embedded_images, report.skipped) == (count, count, [])
    index.close()


def test_a_picture_that_vanishes_before_it_is_hashed_is_skipped_saying_so(
    crawled: tuple[Index, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index, folder = crawled
    _edit(folder / "a.bmp", (0, 0, 250))
    real_hash = indexer.hash_pending

    def delete_then_hash(item: Pending, **kwargs: object) -> Pending:  # deleted after the walk saw it
        item.found.path.unlink()
        return real_hash(item, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(indexer, "hash_pending", delete_then_hash)
    report = index.add()
    assert [(s.path, s.reason) for s in report.skipped] == [(str(folder / "a.bmp"), "file vanished during the crawl")]


# --- touched and renamed files -------------------------------------------------------------------------


def _captions(index: Index, name: str) -> list[str]:
    rows = index.store.conn.execute(
        "SELECT i.text FROM items i JOIN files f ON f.id = i.file_id WHERE f.relpath = ? AND i.kind = 'caption'"
        " ORDER BY i.position",
        (name,),
    )
    return [row[0] for row in rows]


def test_a_touched_picture_whose_sidecar_changed_gets_the_new_captions(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    (folder / "a.txt").write_text("before\n")
    index.add()
    path = folder / "a.bmp"
    mtime = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(mtime, mtime))  # the same picture, touched
    (folder / "a.txt").write_text("after\n")
    report = index.add()
    assert (report.updated, report.embedded_images, report.captions_added, report.captions_removed) == (0, 0, 1, 1)
    assert _captions(index, "a.bmp") == ["after"]


def test_renamed_pictures_keep_their_items_and_are_all_counted(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    (folder / "a.txt").write_text("the caption of a\n")
    index.add()
    vectors = {name: _image_vector(index, name) for name in ("a.bmp", "b.bmp")}
    (folder / "a.bmp").rename(folder / "renamed a.bmp")
    (folder / "a.txt").unlink()
    (folder / "renamed a.txt").write_text("a new caption of a\n")  # moved with an edited sidecar
    (folder / "b.bmp").rename(folder / "renamed b.bmp")
    report = index.add()
    assert (report.renamed, report.embedded_images, report.removed) == (2, 0, 0)
    assert np.array_equal(_image_vector(index, "renamed a.bmp"), vectors["a.bmp"])
    assert np.array_equal(_image_vector(index, "renamed b.bmp"), vectors["b.bmp"])
    assert _captions(index, "renamed a.bmp") == ["a new caption of a"]


def test_a_picture_renamed_over_another_replaces_it(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    vector_a = _image_vector(index, "a.bmp")
    (folder / "a.bmp").replace(folder / "b.bmp")
    report = index.add()
    assert report.renamed == 1 and index.store.counts()["images"] == 1 and index.vector_file.vectors.ntotal == 1
    assert np.array_equal(_image_vector(index, "b.bmp"), vector_a)


def test_a_picture_moved_to_another_root_is_found_there(tmp_path: Path, tiny_encoder: object) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _bmp(first / "a.bmp", (200, 30, 30))
    _bmp(second / "b.bmp", (30, 200, 30))
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    index.add([first, second])
    (first / "a.bmp").rename(second / "a.bmp")
    report = index.add()
    assert (report.renamed, report.embedded_images, report.removed) == (1, 0, 0)
    paths = {hit.path for hit in index.search("a picture", k=10, kind="image")}
    assert paths == {str(second / "a.bmp"), str(second / "b.bmp")}
    index.close()


# --- what the report says -------------------------------------------------------------------------------


def test_the_report_says_how_long_the_crawl_took(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    _bmp(folder / "c.bmp", (90, 90, 90))
    report = index.add()
    assert report.seconds is not None and 0 < report.seconds < 600


def test_the_report_names_a_captions_file_it_could_not_use(crawled: tuple[Index, Path], tmp_path: Path) -> None:
    index, _ = crawled
    unusable = tmp_path / "captions.csv"
    unusable.write_bytes(b"path,caption\n\xff\xfe\n")
    report = index.add(captions=[unusable])
    assert [(s.path, s.reason) for s in report.skipped] == [(str(unusable), "captions file is not UTF-8 text")]


def test_the_report_says_when_the_vector_index_changed(tmp_path: Path, tiny_encoder: object) -> None:
    folder = tmp_path / "pictures"
    _bmp(folder / "a.bmp", (200, 30, 30))
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder, index_type="ivf-flat")  # type: ignore[arg-type]
    report = index.add(folder)
    assert report.vector_index and report.vector_index.startswith("vector index is now IVF")
    index.close()
