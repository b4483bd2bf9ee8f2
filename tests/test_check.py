"""`vecsearch check` finds each kind of damage and `--repair` rebuilds what can be rebuilt.

Every test damages a real index the way a crash, a disk or a person would, then checks what `check`
says, what `--repair` does, and that the repaired index answers queries like a brute-force scan.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image

from vecsearch import Index, Query
from vecsearch.check import check_index
from vecsearch.cli import EXIT_INDEX, main
from vecsearch.index import brute_force_search
from vecsearch.manifest import read_manifest


@pytest.fixture
def built(tmp_path: Path, tiny_encoder) -> tuple[Path, Path]:
    tree = tmp_path / "tree"
    for i, colour in enumerate(["red", "green", "blue", "yellow", "purple", "orange"]):
        make_image(tree / f"p{i}.png", colour, ("circle", "square")[i % 2], seed=i)
    (tree / "p0.txt").write_text("a red circle\n")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tree)
    return tmp_path / "idx", tree


def _vector_file(folder: Path) -> Path:
    return folder / read_manifest(folder)["faiss"]["file"]


def _answers_like_brute_force(folder: Path, encoder) -> None:
    with Index.open(folder, encoder=encoder) as index:
        assert index.vectors.ntotal == index.counts()["items"]
        vector = index.query_vector(Query.parse("a red circle"))
        expected = brute_force_search(index, vector, 10)
        assert [h.id for h in index.search("a red circle", k=10, kind="any")] == [i for i, _ in expected]


def _repair_fixes(folder: Path, area: str) -> None:
    found = check_index(folder)
    assert not found.ok and {f.area for f in found.findings} == {area}
    repaired = check_index(folder, repair=True)
    assert repaired.ok and repaired.repaired and all(f.repaired for f in repaired.findings)
    assert check_index(folder).ok


def test_a_sound_index_is_ok(built) -> None:
    folder, _ = built
    report = check_index(folder)
    assert report.ok and report.findings == [] and report.counts["images"] == 6
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 0 and result.stdout.startswith("ok: ")


def test_truncated_vector_file(built, tiny_encoder) -> None:
    folder, _ = built
    path = _vector_file(folder)
    path.write_bytes(path.read_bytes()[:100])
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == EXIT_INDEX
    assert "problem  [vectors]" in result.stdout and "--repair would rebuild it" in result.stdout
    _repair_fixes(folder, "vectors")
    _answers_like_brute_force(folder, tiny_encoder)


def test_vector_file_with_a_wrong_count_that_still_loads(built, tiny_encoder) -> None:
    """FAISS loads some damaged files silently; the check compares ids and vectors with the database."""
    folder, _ = built
    with Index.open(folder, encoder=tiny_encoder) as index:
        vectors = index.vectors
        vectors.remove(np.array(index.store.item_ids()[:2], dtype=np.int64))
        path = _vector_file(folder)
        digest = vectors.save(path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["faiss"]["sha256"], manifest["faiss"]["bytes"] = digest, path.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = check_index(folder)
    assert [f.area for f in report.findings] == ["vectors"]
    assert "2 stored vectors missing" in report.findings[0].problem
    _repair_fixes(folder, "vectors")
    _answers_like_brute_force(folder, tiny_encoder)


def test_items_and_vectors_that_lost_their_partner(built, tiny_encoder) -> None:
    folder, tree = built
    conn = sqlite3.connect(folder / "items.sqlite")
    image_id, file_id = conn.execute("SELECT id, file_id FROM items WHERE kind = 'image' LIMIT 1").fetchone()
    conn.execute("DELETE FROM vectors WHERE item_id = ?", (image_id,))
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO vectors(item_id, data) VALUES (9999, ?)", (np.ones(32, "<f4").tobytes(),))
    conn.commit()
    conn.close()
    problems = {f.problem for f in check_index(folder).findings}
    assert "1 items without a vector" in problems and "1 vectors without an item" in problems
    repaired = check_index(folder, repair=True)
    assert repaired.ok
    assert check_index(folder).ok
    with Index.open(folder, encoder=tiny_encoder) as index:
        assert index.counts()["images"] == 5  # the damaged file was forgotten ...
        report = index.add(tree)
        assert report.added == 1 and report.embedded_images == 1  # ... and the next crawl indexes it again
        assert index.counts()["images"] == 6
    _answers_like_brute_force(folder, tiny_encoder)


def test_garbage_manifest_is_written_again_from_the_database(built, tiny_encoder) -> None:
    folder, _ = built
    before = read_manifest(folder)
    (folder / "manifest.json").write_text("{ this is not json")
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == EXIT_INDEX and "problem  [manifest]" in result.stdout
    result = CliRunner().invoke(main, ["check", str(folder), "--repair", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["findings"][0]["area"] == "manifest" and data["findings"][0]["repaired"]
    after = read_manifest(folder)
    assert after["model"] == before["model"] and after["dim"] == before["dim"]
    _answers_like_brute_force(folder, tiny_encoder)


def test_damaged_database_pages_are_salvaged(built, tiny_encoder) -> None:
    folder, _ = built
    conn = sqlite3.connect(folder / "items.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("CREATE TABLE filler(x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(400)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # Overwrite a page near the end (the filler table's) with garbage: SQLite's own check finds it.
    path = folder / "items.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096
    start = len(data) - 3 * page
    data[start : start + page] = b"\xff" * page
    path.write_bytes(bytes(data))
    report = check_index(folder)
    assert [f.area for f in report.findings] == ["database"] and report.findings[0].repair
    repaired = check_index(folder, repair=True)
    assert repaired.ok, repaired.to_dict()
    assert list(folder.glob("items.sqlite.damaged-*")), "the damaged original is kept"
    with Index.open(folder, encoder=tiny_encoder) as index:
        assert index.counts()["images"] == 6
    _answers_like_brute_force(folder, tiny_encoder)


def test_a_file_that_is_not_a_database_is_not_repaired(built) -> None:
    folder, _ = built
    for suffix in ("-wal", "-shm"):
        (folder / f"items.sqlite{suffix}").unlink(missing_ok=True)
    (folder / "items.sqlite").write_bytes(b"garbage" * 1000)
    report = check_index(folder, repair=True)
    assert not report.ok and report.findings[0].area == "database" and report.findings[0].repair is None
    assert (folder / "items.sqlite").read_bytes() == b"garbage" * 1000  # nothing deleted or replaced
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == EXIT_INDEX and "not a readable SQLite database (no SQLite header)" in result.stdout


def test_leftovers_of_a_dead_writer(built) -> None:
    folder, _ = built
    (folder / ".vectors-g9-dead.faiss.4242.tmp").write_bytes(b"half")
    shutil.copy(_vector_file(folder), folder / "vectors-g1-00000000.faiss")
    report = check_index(folder)
    assert report.ok  # harmless: readers never look at them
    assert report.leftovers == [".vectors-g9-dead.faiss.4242.tmp", "vectors-g1-00000000.faiss"]
    repaired = check_index(folder, repair=True)
    assert repaired.ok and repaired.leftovers == [] and "deleted vectors-g1-00000000.faiss" in repaired.notes
    assert [p.name for p in folder.glob("*.faiss")] == [_vector_file(folder).name]
    assert not list(folder.glob(".*.tmp"))


def test_paths_outside_the_index_root_are_refused_and_forgotten(built, tiny_encoder) -> None:
    folder, _ = built
    conn = sqlite3.connect(folder / "items.sqlite")
    conn.execute("UPDATE files SET relpath = '../../etc/passwd' WHERE id = (SELECT MIN(id) FROM files)")
    conn.commit()
    conn.close()
    report = check_index(folder)
    assert any("outside their folder" in f.problem for f in report.findings)
    assert check_index(folder, repair=True).ok
    with Index.open(folder, encoder=tiny_encoder) as index:
        assert all(".." not in h.relpath for h in index.search("a red circle", k=20, kind="any"))


def test_repair_waits_for_no_one(built) -> None:
    from vecsearch.lock import WriterLock

    folder, _ = built
    with WriterLock(folder / ".lock", "idx"):
        result = CliRunner().invoke(main, ["check", str(folder), "--repair"])
        assert result.exit_code == EXIT_INDEX and "being updated by another vecsearch process" in result.stderr
        # a plain check still runs, and says it left the writer's files alone
        report = check_index(folder)
        assert report.ok and any("another process is updating" in n for n in report.notes)
