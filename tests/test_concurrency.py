"""Readers in one process while a real `vecsearch index` process writes: every reader sees one committed
state (never half a commit), answers like a brute-force scan of that state, and a second writer is
turned away with a clear message instead of corrupting anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import index_command, make_image

from vecsearch import Index, IndexLockedError, Query
from vecsearch.check import check_index
from vecsearch.cli import EXIT_INDEX, main
from vecsearch.index import brute_force_search

COMMITTED = re.compile(r"committed generation (\d+): (\d+) items")


def test_readers_see_committed_states_while_a_writer_crawls(tmp_path: Path, tiny_encoder, tiny_model_dir: Path) -> None:
    tree = tmp_path / "tree"
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    for i in range(6):
        make_image(tree / "old" / f"o{i}.png", colours[i], seed=i)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tree)
        start = (index.store.generation, index.counts()["items"])
    for i in range(60):
        make_image(tree / "new" / f"n{i:02d}.png", colours[i % 6], ("square", "circle")[i % 2], seed=100 + i)
        if i % 5 == 0:
            (tree / "new" / f"n{i:02d}.txt").write_text(f"caption number {i}\n")
    (tree / "old" / "o0.png").unlink()

    log = tmp_path / "writer.log"
    with open(log, "w") as stderr:
        writer = subprocess.Popen(
            index_command(tree, tmp_path / "idx", tiny_model_dir, batch_size=2),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ},
        )
        seen: list[tuple[int, int]] = []
        refused_writers = 0
        while writer.poll() is None:
            with Index.open(tmp_path / "idx", encoder=tiny_encoder) as reader:
                with reader.store.snapshot():  # one read transaction: one committed state throughout
                    state = (reader.store.generation, reader.counts()["items"])
                    assert reader.vectors.ntotal == state[1]  # the file, caught up to this very commit
                    vector = reader.query_vector(Query.parse("a red circle"))
                    expected = brute_force_search(reader, vector, 5)
                    hits = reader.search("a red circle", k=5, kind="any")
                    assert [h.id for h in hits] == [i for i, _ in expected]
                seen.append(state)
                if refused_writers < 2 and state != start and writer.poll() is None:
                    try:  # the writer has committed and is still crawling: it holds the lock
                        reader.add(tree)
                    except IndexLockedError as exc:
                        assert "being updated by another vecsearch process" in str(exc)
                        refused_writers += 1
        assert writer.wait() == 0, log.read_text()[-2000:]

    commits = {(int(g), int(n)) for g, n in COMMITTED.findall(log.read_text())}
    assert len(commits) >= 5
    # Every state a reader saw is the state before the crawl or the one right after one of its commits.
    assert set(seen) <= commits | {start}, (sorted(set(seen) - commits - {start}), sorted(commits))
    assert len(set(seen)) >= 2, "the readers ran while the writer committed"
    assert refused_writers >= 1
    assert check_index(tmp_path / "idx").ok


def test_second_writer_is_turned_away_with_a_clear_message(tmp_path: Path, tiny_encoder) -> None:
    from vecsearch.lock import WriterLock

    make_image(tmp_path / "tree" / "a.png", "red")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tmp_path / "tree")
    with WriterLock(tmp_path / "idx" / ".lock", "idx"):
        result = CliRunner().invoke(main, ["index", str(tmp_path / "tree"), "--index", str(tmp_path / "idx")])
        assert result.exit_code == EXIT_INDEX
        assert f"(pid {os.getpid()})" in result.stderr and "try again when it has finished" in result.stderr
        assert "Traceback" not in result.output
        with Index.open(tmp_path / "idx", encoder=tiny_encoder) as reader:
            assert len(reader.search("a red circle", k=1)) == 1
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as index:
        assert index.add(tmp_path / "tree").unchanged == 1  # the lock is gone with its holder


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")
def test_the_lock_dies_with_its_holder(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "tree" / "a.png", "red")
    Index.create(tmp_path / "idx", encoder=tiny_encoder).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from vecsearch.lock import WriterLock; "
            f"WriterLock(__import__('pathlib').Path({str(tmp_path / 'idx' / '.lock')!r}), 'idx').acquire(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as index:
        with pytest.raises(IndexLockedError):
            index.add(tmp_path / "tree")
        holder.kill()
        holder.wait()
        assert index.add(tmp_path / "tree").added == 1
