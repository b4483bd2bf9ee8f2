"""Promises of the vector file (vecsearch/vector_file.py) that no other test pinned down: each test names one.

They were written against the mutants of `vecsearch/vector_file.py` that survived `tests/test_plan.py`,
`tests/test_check.py` and `tests/test_indexing.py` (see scripts/results/mutation-vector_file-survivors.md):
each fails on a change to the code that breaks the promise it names. Real FAISS and a real database; the
vectors are made up (scripts/synthetic_vectors.py) so that collections of thousands need no model.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import vecsearch.plan as plan_module
import vecsearch.vectors as vectors_module
from vecsearch import Index, faults
from vecsearch.errors import IndexCorruptError, VecsearchError
from vecsearch.index import brute_force_search
from vecsearch.manifest import VECTORS
from vecsearch.plan import EXACT, MIN_PQ_TRAINING, recall_at_k
from vecsearch.vector_file import check_index_settings
from vecsearch.vectors import VectorIndex
from vecsearch.version import __version__

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from synthetic_vectors import ClusteredVectors  # noqa: E402

SMALL_EXACT_LIMIT = 1000  # the exact-search limit these tests plan against, so that thousands will do


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "EXACT_MAX_VECTORS", SMALL_EXACT_LIMIT)
    monkeypatch.setattr("vecsearch.vector_file.EXACT_MAX_VECTORS", SMALL_EXACT_LIMIT)


def _add(index: Index, count: int, seed: int = 0) -> list[int]:
    """`count` image items in one new committed generation, as a crawl would commit them (no save)."""
    store = index.store
    vectors = ClusteredVectors(dim=index.dim, topics=40, subtopics=5, seed=7).chunk(seed, count)
    ids = []
    with store.transaction():
        root = next((r.id for r in store.roots()), None)
        if root is None:
            root = store.add_root(str(index.path / "synthetic"), "synthetic", {})
        gen = store.bump_generation()
        for number, vector in enumerate(vectors):
            file_id = store.add_file(root, f"{seed:04d}-{number:06d}.jpg", 1, 0, f"{seed:08x}{number:056x}")
            ids.append(store.add_item("image", file_id, vector, gen))
    return ids


def _remove(index: Index, ids: list[int]) -> None:
    with index.store.transaction():
        index.store.delete_items(ids, index.store.bump_generation())


def _grown(index: Index, count: int, seed: int = 0) -> str | None:
    """Add `count` items, mirror them as a crawl does, and save: the note the save returns."""
    found, vectors = index.store.vectors_of(np.array(_add(index, count, seed), dtype=np.int64))
    index.vector_file.mirror(np.array([], dtype=np.int64), found, vectors)
    return index.vector_file.save()


def _shrunk(index: Index, ids: list[int]) -> str | None:
    _remove(index, ids)
    index.vector_file.mirror(np.array(ids, dtype=np.int64), np.array([], dtype=np.int64), None)
    return index.vector_file.save()


def _faiss(index: Index) -> dict:
    return json.loads((index.path / "manifest.json").read_text())["faiss"]


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: object) -> Iterator[Index]:
    made = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    yield made
    made.close()


@pytest.fixture
def pq_folder(tmp_path: Path, tiny_encoder: object) -> Path:
    """An ivf-pq index of exactly as many vectors as its codebooks need. Built for each test (1-2 s), not
    once a module: mutation testing runs only the tests that reached the mutated code, and a shared
    fixture is reached by whichever test happened to build it."""
    folder = tmp_path / "pq" / "idx"
    made = Index.create(folder, encoder=tiny_encoder, index_type="ivf-pq")  # type: ignore[arg-type]
    _grown(made, MIN_PQ_TRAINING)
    made.close()
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))  # so that a test may change or damage it


# --- writers: what is recorded and when a save is due --------------------------------------------------


def test_an_index_just_saved_and_opened_again_has_nothing_to_save(index: Index) -> None:
    _grown(index, 20)
    again = Index.open(index.path)
    assert not again.vector_file.needs_saving()
    again.vector_file.open_for_writing()  # no new settings: nothing forces a re-plan
    assert not again.vector_file.needs_saving()
    again.vector_file.open_for_writing(index_type="auto")  # the type it was made with
    assert not again.vector_file.needs_saving()
    again.close()


def test_a_new_memory_budget_is_recorded_kept_and_forces_one_re_plan(index: Index) -> None:
    _grown(index, 20)
    vector_file = index.vector_file
    vector_file.open_for_writing(max_memory=3 << 30)
    assert vector_file.manifest["faiss"]["max_memory"] == 3 << 30 and vector_file.needs_saving()
    vector_file.save()
    assert _faiss(index)["max_memory"] == 3 << 30
    vector_file.open_for_writing(max_memory=3 << 30)  # the same budget again: nothing new
    assert not vector_file.needs_saving()
    vector_file.open_for_writing()  # no budget given: the recorded one stays
    assert vector_file.manifest["faiss"]["max_memory"] == 3 << 30 and not vector_file.needs_saving()


def test_a_new_index_type_is_recorded_and_forces_a_re_plan(index: Index) -> None:
    _grown(index, 20)
    index.vector_file.open_for_writing(index_type="ivf-flat")
    assert index.vector_file.manifest["faiss"]["requested"] == "ivf-flat" and index.vector_file.needs_saving()
    index.vector_file.save()
    assert _faiss(index)["type"].startswith("IVF")


def test_the_same_index_type_asked_for_again_changes_nothing(index: Index) -> None:
    index.vector_file.open_for_writing(index_type="ivf-flat")
    _grown(index, 20)
    index.vector_file.open_for_writing(index_type="ivf-flat")
    assert not index.vector_file.needs_saving()


def test_bad_index_settings_are_refused_with_what_is_allowed(index: Index) -> None:
    with pytest.raises(VecsearchError, match=r"max memory must be a positive number of bytes \(got 0\)"):
        index.vector_file.open_for_writing(max_memory=0)
    with pytest.raises(VecsearchError) as refused:
        check_index_settings("hnsw", None)
    assert str(refused.value) == (
        "unknown index type 'hnsw' (choose from auto, exact, ivf-flat, ivf-sq8, ivf-pq, ivf-pqfs, ivf-opqfs)"
    )
    check_index_settings("auto", 1)  # one byte is a budget (nothing will fit it, which the planner says)


def test_vectors_handed_over_are_used_as_they_are(index: Index) -> None:
    vectors = VectorIndex.create(index.dim)
    index.vector_file.use(vectors)
    assert index.vector_file.loaded is vectors


def test_a_committed_chunk_is_mirrored_into_the_vectors_in_memory(index: Index) -> None:
    found, vectors = index.store.vectors_of(np.array(_add(index, 5), dtype=np.int64))
    index.vector_file.mirror(np.array([], dtype=np.int64), found, vectors)
    assert index.vector_file.loaded is not None and index.vector_file.loaded.ntotal == 5
    index.vector_file.mirror(found[:2], np.array([], dtype=np.int64), None)
    assert index.vector_file.loaded.ntotal == 3


def test_a_save_is_due_when_the_folder_moved_roots_changed_or_vectors_changed(index: Index, tmp_path: Path) -> None:
    _grown(index, 10)
    assert not index.vector_file.needs_saving()
    index.vector_file.vectors.add(np.array([999], dtype=np.int64), np.ones((1, index.dim), dtype=np.float32))
    assert index.vector_file.needs_saving()  # more vectors in memory than the saved file holds
    index.close()

    moved = Path(shutil.copytree(index.path, tmp_path / "moved"))
    reopened = Index.open(moved)
    assert reopened.vector_file.needs_saving()  # the manifest still names the old location
    reopened.vector_file.save()
    assert not reopened.vector_file.needs_saving()
    with reopened.store.transaction():
        reopened.store.add_root(str(tmp_path / "elsewhere"), "elsewhere", {})
    assert reopened.vector_file.needs_saving()  # a root the manifest does not list
    reopened.close()


# --- saving -----------------------------------------------------------------------------------------


def test_a_save_rebuilds_vectors_that_missed_a_commit(index: Index) -> None:
    _grown(index, 10)
    _add(index, 4, seed=1)  # committed, never mirrored (a crash between the two)
    index.vector_file.save()
    assert index.vector_file.vectors.ntotal == 14
    reader = Index.open(index.path)
    assert reader.vectors.ntotal == 14
    reader.close()


def test_a_saved_manifest_says_when_where_and_by_which_version(index: Index) -> None:
    _grown(index, 3)
    index.close()
    path = index.path / "manifest.json"
    stale = json.loads(path.read_text())
    stale.update(updated="2000-01-01T00:00:00+00:00", location="/somewhere/else", vecsearch_version="0.0.1")
    path.write_text(json.dumps(stale))
    before = datetime.now(UTC).replace(microsecond=0)
    moved = Index.open(index.path)
    assert moved.vector_file.needs_saving()  # its recorded location is not where it is
    moved.vector_file.save()
    moved.close()
    manifest = json.loads(path.read_text())
    updated = datetime.fromisoformat(manifest["updated"])
    assert updated.utcoffset() is not None and updated.utcoffset().total_seconds() == 0  # UTC, with its offset
    assert before <= updated <= datetime.now(UTC)
    assert manifest["location"] == str(index.path.resolve())
    assert manifest["vecsearch_version"] == __version__


def test_the_removal_log_keeps_one_saved_generation_of_history(index: Index) -> None:
    ids = _add(index, 6)
    index.vector_file.save()
    _shrunk(index, ids[:1])
    _shrunk(index, ids[1:2])
    # The file saved before the last one can still catch up (it needs the last removal); older ones go.
    assert index.store.removed_since(0).tolist() == ids[1:2]


@pytest.mark.parametrize("point", ["faiss-renamed", "manifest-written"])
def test_a_save_that_fails_between_its_writes_leaves_an_index_that_opens(
    index: Index, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    _grown(index, 5)
    _add(index, 3, seed=1)
    monkeypatch.setenv(faults.ENV, f"{point}:1:enospc")
    monkeypatch.setattr(faults, "_hits", {})
    with pytest.raises(OSError, match=f"injected at {point}"):
        index.vector_file.save()
    monkeypatch.delenv(faults.ENV)
    reader = Index.open(index.path)
    assert reader.vectors.ntotal == 8  # the old file caught up from the database, or the new one
    reader.close()
    files = sorted(p.name for p in index.path.glob("vectors*.faiss"))
    assert len(files) == 2  # the file the manifest names, and the other one until the next writer
    writer = Index.open(index.path)
    writer.vector_file.open_for_writing()
    assert len(list(index.path.glob("vectors*.faiss"))) == 1
    writer.close()


def test_a_leftover_file_the_system_will_not_delete_does_not_fail_the_save(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = index.path / "vectors-g99-deadbeef.faiss"
    stuck.write_bytes(b"mapped by a reader elsewhere")
    real_unlink = Path.unlink

    def refuse(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:  # as Windows refuses to delete a file another process has mapped
            raise PermissionError(13, "in use", str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    _grown(index, 3)
    assert stuck.exists() and _faiss(index)["ntotal"] == 3


# --- loading: checks, replay and the messages of refusals -------------------------------------------------


def _rewrite_manifest(folder: Path, **faiss: object) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["faiss"].update(faiss)
    path.write_text(json.dumps(manifest))


def test_a_manifest_from_before_versioned_vector_files_is_still_read(index: Index) -> None:
    _grown(index, 12)
    info = _faiss(index)
    index.close()
    (index.path / info["file"]).rename(index.path / VECTORS)
    path = index.path / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("file", "type", "family", "generation", "requested"):
        del manifest["faiss"][key]
    path.write_text(json.dumps(manifest))
    reader = Index.open(index.path)
    assert reader.vectors.ntotal == 12 and not reader.vectors.approximate
    reader.close()
    writer = Index.open(index.path)
    writer.vector_file.open_for_writing()
    assert (index.path / VECTORS).is_file()  # the file the manifest names by its old name is no leftover
    assert writer.vector_file.save() is None  # still exact, and known as exact: no re-plan
    writer.close()


def test_a_damaged_file_of_a_manifest_without_a_type_is_rebuilt_exact(index: Index) -> None:
    _grown(index, 12)
    info = _faiss(index)
    index.close()
    (index.path / info["file"]).write_bytes(b"damaged")
    path = index.path / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["faiss"]["type"]
    path.write_text(json.dumps(manifest))
    writer = Index.open(index.path)
    writer.vector_file.open_for_writing()
    assert writer.vector_file.vectors.kind == EXACT and writer.vector_file.vectors.ntotal == 12
    writer.close()


def test_a_damaged_file_of_the_right_size_is_refused_by_readers_and_rebuilt_by_writers(index: Index) -> None:
    _grown(index, 12)
    path = index.path / _faiss(index)["file"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a vector component, not the header: FAISS itself would read it without complaint
    path.write_bytes(bytes(data))
    index.close()
    reader = Index.open(index.path)
    with pytest.raises(IndexCorruptError) as refused:
        _ = reader.vectors
    assert "checksum" in str(refused.value) or "sha256" in str(refused.value)
    assert f"run `vecsearch index --index {index.path}` to rebuild the file" in str(refused.value)
    reader.close()
    writer = Index.open(index.path)
    writer.vector_file.open_for_writing()
    assert writer.vector_file.vectors.ntotal == 12
    writer.close()


def test_a_file_of_another_dimension_is_refused_saying_both(index: Index) -> None:
    _grown(index, 3)
    other = VectorIndex.create(index.dim + 8)
    name = _faiss(index)["file"]
    digest = other.save(index.path / name)
    _rewrite_manifest(index.path, sha256=digest, bytes=(index.path / name).stat().st_size)
    reader = Index.open(index.path)
    with pytest.raises(
        IndexCorruptError, match=f"vector file has dimension {index.dim + 8}, the manifest says {index.dim}"
    ):
        _ = reader.vectors
    reader.close()


def test_a_file_newer_than_its_database_is_refused_saying_so(index: Index) -> None:
    _grown(index, 3)
    _rewrite_manifest(index.path, generation=index.store.generation + 5)
    reader = Index.open(index.path)
    with pytest.raises(IndexCorruptError, match="vector file is newer than the database at .*vecsearch index --index"):
        _ = reader.vectors
    reader.close()


def test_a_file_holding_other_vectors_than_the_database_is_refused_with_both_counts(index: Index) -> None:
    _grown(index, 3)
    name = _faiss(index)["file"]
    digest = VectorIndex.create(index.dim).save(index.path / name)
    _rewrite_manifest(index.path, sha256=digest, bytes=(index.path / name).stat().st_size)
    reader = Index.open(index.path)
    with pytest.raises(IndexCorruptError, match="vector file holds 0 vectors but the database 3 items"):
        _ = reader.vectors
    reader.close()


def test_a_memory_mapped_reader_catches_up_with_commits_the_file_lacks(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    _grown(index, 10)
    new = _add(index, 2, seed=1)
    monkeypatch.setattr(vectors_module, "MMAP_MIN_BYTES", 1)
    reader = Index.open(index.path)
    assert reader.vectors.ntotal == 12 and not reader.vectors.mapped  # read whole to replay into it
    _, found = reader.vectors.search(reader.store.vector(new[0])[None, :], 1)
    assert found[0][0] == new[0]
    reader.close()


def test_a_reader_searches_with_the_recorded_probes_and_re_rank_depth(pq_folder: Path, tmp_path: Path) -> None:
    folder = _copy(pq_folder, tmp_path)
    info = json.loads((folder / "manifest.json").read_text())["faiss"]
    reader = Index.open(folder)
    assert (reader.vectors.nprobe, reader.vectors.rerank) == (info["nprobe"], info["rerank"]) and info["rerank"] > 1
    reader.close()


def test_a_writer_rebuilds_a_damaged_file_as_the_recorded_index(pq_folder: Path, tmp_path: Path) -> None:
    folder = _copy(pq_folder, tmp_path)
    info = json.loads((folder / "manifest.json").read_text())["faiss"]
    (folder / info["file"]).write_bytes(b"not a faiss file")
    writer = Index.open(folder)
    writer.vector_file.open_for_writing()
    rebuilt = writer.vector_file.vectors
    assert (rebuilt.kind, rebuilt.nlist, rebuilt.nprobe, rebuilt.rerank) == (
        info["type"],
        info["nlist"],
        info["nprobe"],
        info["rerank"],
    )
    assert rebuilt.ntotal == MIN_PQ_TRAINING
    writer.close()


def test_a_damaged_file_of_an_emptied_approximate_index_is_rebuilt_exact(index: Index) -> None:
    _rewrite_manifest(index.path, type="IVF4,Flat", family="ivf-flat", nlist=4)
    (index.path / _faiss(index)["file"]).write_bytes(b"damaged")
    index.close()
    writer = Index.open(index.path)
    writer.vector_file.open_for_writing()
    assert writer.vector_file.vectors.kind == EXACT and writer.vector_file.vectors.ntotal == 0
    writer.close()


# --- re-planning and tuning ---------------------------------------------------------------------------------


def test_the_tuned_recall_is_the_recall_searches_get(pq_folder: Path, tmp_path: Path) -> None:
    folder = _copy(pq_folder, tmp_path)
    info = json.loads((folder / "manifest.json").read_text())["faiss"]
    assert isinstance(info["recall@10"], float) and 0.5 < info["recall@10"] <= 1
    reader = Index.open(folder)
    ids = reader.store.sample_item_ids(40, seed=3)
    found, truth = [], []
    for item_id in ids:
        vector = reader.store.vector(int(item_id))
        hits = [h.id for h in reader.search(f"id:{item_id}", k=11, kind="any") if h.id != item_id][:10]
        found.append(hits + [-1] * (10 - len(hits)))
        truth.append([i for i, _ in brute_force_search(reader, vector, 11) if i != item_id][:10])
    measured = recall_at_k(np.array(found), np.array(truth))
    reader.close()
    assert abs(measured - info["recall@10"]) <= 0.08, (measured, info["recall@10"])


def test_a_pq_index_waits_for_enough_vectors_to_train_its_codebooks(index: Index) -> None:
    index.vector_file.open_for_writing(index_type="ivf-pq")
    assert _grown(index, 100) is None  # asked for, but 100 vectors cannot train 8-bit codebooks
    assert (_faiss(index)["type"], _faiss(index)["family"]) == (EXACT, "exact")


def test_an_sq8_index_is_built_without_waiting_for_pq_training_size(index: Index) -> None:
    """SQ8 candidates are re-scored like PQ ones, but SQ8 has no codebooks: the wait for 4,096 vectors
    applies to PQ factories only."""
    index.vector_file.open_for_writing(index_type="ivf-sq8")
    note = _grown(index, 100)
    info = _faiss(index)
    assert info["family"] == "ivf-sq8" and info["type"].endswith(",SQ8") and MIN_PQ_TRAINING > 100
    assert info["rerank"] > 1  # re-ranked, as every SQ8 index is
    assert note and note.startswith(f"vector index is now {info['type']}: ")


def test_a_pq_index_that_shrinks_below_its_training_size_goes_exact_and_says_why(
    pq_folder: Path, tmp_path: Path
) -> None:
    reader = Index.open(_copy(pq_folder, tmp_path))
    reader.vector_file.open_for_writing()
    note = _shrunk(reader, [int(reader.store.item_ids()[0])])
    info = _faiss(reader)
    reason = f"exact until there are {MIN_PQ_TRAINING:,} vectors to train ivf-pq on"
    assert (info["type"], info["family"], info["nlist"], info["reason"]) == (EXACT, "exact", 0, reason)
    assert note == f"vector index is now {EXACT}: {reason}"
    reader.close()


def test_a_pq_index_is_trained_once_there_are_exactly_enough_vectors(pq_folder: Path) -> None:
    info = json.loads((pq_folder / "manifest.json").read_text())["faiss"]
    assert info["family"] == "ivf-pq" and info["trained_on"] == MIN_PQ_TRAINING


def test_lists_are_built_from_the_first_vector(index: Index) -> None:
    index.vector_file.open_for_writing(index_type="ivf-flat")
    note = _grown(index, 1)
    info = _faiss(index)
    assert info["family"] == "ivf-flat" and info["type"].startswith("IVF") and note and "is now IVF" in note


def test_the_memory_budget_chooses_the_index(index: Index, small_limit: None) -> None:
    roomy = _grown(index, 3000)
    assert _faiss(index)["family"] == "ivf-flat", roomy
    index.vector_file.open_for_writing(max_memory=int(3000 * index.dim * 4 * 0.6))  # raw vectors do not fit
    note = index.vector_file.save()
    info = _faiss(index)
    assert info["family"] in ("ivf-sq8", "ivf-pq") and note and note.startswith(f"vector index is now {info['type']}: ")


def test_a_budget_nothing_fits_keeps_the_index_and_warns(index: Index, small_limit: None) -> None:
    _grown(index, 3000)
    kept = _faiss(index)
    index.vector_file.open_for_writing(max_memory=1)
    note = index.vector_file.save()
    info = _faiss(index)
    assert (info["type"], info["family"], info["trained_on"]) == (kept["type"], "ivf-flat", 3000)
    assert note and note.startswith("warning: ") and f"; keeping the {kept['type']} index" in note
    assert "is now" not in note
    grown = _grown(index, 3000, seed=1)  # doubled: retuned, and still warned about
    assert grown and grown.startswith("warning: ") and f"; vector index {kept['type']} retuned: nprobe" in grown


def test_a_budget_nothing_fits_keeps_an_exact_index_and_warns_once(index: Index, small_limit: None) -> None:
    _grown(index, 200)
    index.vector_file.open_for_writing(max_memory=1)
    note = index.vector_file.save()
    assert note and note.startswith("warning: ") and note.endswith(f"; keeping the {EXACT} index")
    assert note.count("warning") == 1 and _faiss(index)["type"] == EXACT


def test_lists_are_kept_while_the_collection_grows_less_than_four_fold(index: Index, small_limit: None) -> None:
    _grown(index, 1500)
    first = _faiss(index)
    assert first["family"] == "ivf-flat" and first["trained_on"] == 1500
    index.vector_file.open_for_writing(max_memory=8 << 30)  # a new budget the same index fits
    note = index.vector_file.save()
    assert (_faiss(index)["type"], _faiss(index)["trained_on"]) == (first["type"], 1500)
    assert note is None or "is now" not in note
    _grown(index, 1500, seed=1)  # twice the size: a plan would now ask for more lists
    after = _faiss(index)
    assert (after["type"], after["trained_on"]) == (first["type"], 1500)
    index.vector_file.open_for_writing(max_memory=4 << 30)  # a new budget re-plans for the size it is now
    note = index.vector_file.save()
    replanned = _faiss(index)
    assert replanned["type"] != first["type"] and replanned["trained_on"] == 3000
    assert note and note.startswith(f"vector index is now {replanned['type']}")


def test_retuning_happens_when_the_collection_doubles_or_halves(index: Index) -> None:
    index.vector_file.open_for_writing(index_type="ivf-flat")
    note = _grown(index, 1000)
    assert _faiss(index)["tuned_on"] == 1000
    assert note and re.fullmatch(
        r"vector index is now IVF\d+,Flat: .+; nprobe \d+ gives recall@10 \d\.\d{3} \(text-like\) / \d\.\d{3} "
        r"\(image-like\) at \d+\.\d{2} ms a query",
        note,
    ), note
    assert _grown(index, 999, seed=1) is None  # 1,999: less than double, not retuned
    note = _grown(index, 1, seed=2)  # 2,000: double
    assert _faiss(index)["tuned_on"] == 2000
    assert note and re.fullmatch(r"vector index IVF\d+,Flat retuned: nprobe \d+ gives recall@10 \d\.\d{3} .*", note)
    ids = sorted(int(i) for i in index.store.item_ids())
    assert _shrunk(index, ids[:999]) is None  # 1,001: more than half
    _shrunk(index, ids[999:1000])  # 1,000: half
    assert _faiss(index)["tuned_on"] == 1000


def test_a_pq_index_says_its_re_rank_depth_when_built(tmp_path: Path, tiny_encoder: object) -> None:
    made = Index.create(tmp_path / "idx", encoder=tiny_encoder, index_type="ivf-pq")  # type: ignore[arg-type]
    note = _grown(made, MIN_PQ_TRAINING)
    rerank = _faiss(made)["rerank"]
    assert note and f"nprobe {_faiss(made)['nprobe']}, re-rank depth {rerank} gives recall@10" in note
    made.close()


def test_exact_search_is_asked_for_back_on_a_large_index(index: Index, small_limit: None) -> None:
    _grown(index, 1200)
    assert _faiss(index)["family"] == "ivf-flat"
    index.vector_file.open_for_writing(index_type="exact")
    index.vector_file.save()
    assert _faiss(index)["type"] == EXACT


def test_a_collection_that_shrinks_a_little_keeps_its_lists_and_one_that_halves_goes_exact(
    index: Index, small_limit: None
) -> None:
    _grown(index, 1200)
    ivf = _faiss(index)
    ids = sorted(int(i) for i in index.store.item_ids())
    assert _shrunk(index, ids[:300]) is None
    kept = _faiss(index)
    assert (kept["type"], kept["family"]) == (ivf["type"], "ivf-flat")  # 900: below the limit, above half
    note = _shrunk(index, ids[300:700])  # 500: no longer more than half the limit
    info = _faiss(index)
    assert (info["type"], info["family"], info["nlist"], info["trained_on"]) == (EXACT, "exact", 0, 0)
    assert not {"nprobe", "rerank", "recall@10", "tuned_on", "tuning_queries"} & set(info)
    assert note == f"vector index is now {EXACT}: {info['reason']}"


def test_the_manifest_records_the_lists_the_index_has(index: Index, small_limit: None) -> None:
    _grown(index, 1100)
    info = _faiss(index)
    assert info["nlist"] == index.vector_file.vectors.nlist > 1 and info["type"] == f"IVF{info['nlist']},Flat"
