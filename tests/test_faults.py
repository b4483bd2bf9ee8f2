"""Fault injection: a real `vecsearch index` process is killed (SIGKILL, no cleanup runs) at many points,
then the promises are checked against what it had committed.

The process stops itself at named points (`vecsearch/faults.py`) or is killed from outside at a moment
chosen by the test. Its `-v` log says after every commit which generation it committed and how many items
the database then held, which is the record the survivors are checked against: after the kill the index
opens, answers queries exactly like a brute-force scan, holds exactly what was committed, and the next
run finishes the job without embedding again any picture that was committed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import index_command, make_image

from vecsearch import Index, Query
from vecsearch.check import check_index
from vecsearch.faults import ENV
from vecsearch.index import brute_force_search
from vecsearch.manifest import read_manifest

COMMITTED = re.compile(r"committed generation (\d+): (\d+) items")


def _run_index(
    scenario: dict[str, Any], index_dir: Path, model_dir: Path, fault: str | None = None, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`vecsearch index` of the scenario's tree run to its end (with a fault armed, if given)."""
    command = index_command(scenario["tree"], index_dir, model_dir)
    return subprocess.run(command, capture_output=True, text=True, env=_environment(fault), timeout=120, **options)


# Resets a signal or a limit and then becomes the command (exec). A `preexec_fn` would run Python in a
# fork of this multi-threaded test process (Ray's gRPC threads, ONNX Runtime's pools), where a lock another
# thread held at the fork can never be released: the child hangs before it execs.
LAUNCHER = (
    "import os, resource, signal, sys\n"
    "limit = int(sys.argv[1])\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "if limit >= 0:\n"
    "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing\n"
    "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def launched(command: list[str], file_size_limit: int = -1) -> list[str]:
    """`command`, started by LAUNCHER: SIGINT at its default, and files limited to `file_size_limit` bytes."""
    return [sys.executable, "-c", LAUNCHER, str(file_size_limit), *command]


def _environment(fault: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    return env


def _commits(stderr: str) -> list[tuple[int, int]]:
    return [(int(g), int(n)) for g, n in COMMITTED.findall(stderr)]


def _bump(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def _contents(index: Index) -> dict[tuple[str, str, str], np.ndarray]:
    """Everything an index holds, keyed by what it is rather than by id: (path, kind, caption) → vector."""
    ids = index.store.item_ids()
    rows = index.store.items(ids)
    found = {}
    for item_id in ids:
        row = rows[item_id]
        vector = index.store.vector(item_id)
        assert vector is not None, f"item {item_id} has no vector"
        found[(row.relpath, row.kind, row.text or "")] = vector
    return found


def _image_hashes(tree: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in tree.rglob("*.png")}


def _assert_answers_like_brute_force(index: Index) -> None:
    assert index.vectors.ntotal == index.counts()["items"]
    for text in ("a red circle", "a blue square"):
        vector = index.query_vector(Query.parse(text))
        expected = brute_force_search(index, vector, 10)
        hits = index.search(text, k=10, kind="any")
        assert [h.id for h in hits] == [i for i, _ in expected]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> dict[str, Path]:
    """An index of a first tree, the tree after a day of changes, and a clean index of the changed tree."""
    base = tmp_path_factory.mktemp("faults")
    tree = base / "tree"
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    for i in range(14):
        make_image(tree / f"set{i % 3}" / f"p{i:02d}.png", colours[i % 6], ("circle", "square")[i % 2], seed=i)
    (tree / "set0" / "p00.txt").write_text("a red circle on white\n")
    (tree / "set1" / "p01.txt").write_text("a green square\nsecond caption\n")
    before = base / "index-before"
    with Index.create(before, encoder=tiny_encoder) as index:
        index.add(tree)

    # the changes the killed run must apply: additions, edits, a rename, deletions, caption changes
    for i in range(14, 30):
        make_image(tree / "new" / f"n{i:02d}.png", colours[i % 6], ("square", "circle")[i % 2], seed=100 + i)
    (tree / "new" / "n14.txt").write_text("a fresh caption\n")
    make_image(tree / "set2" / "p02.png", "orange", "circle", seed=77)
    _bump(tree / "set2" / "p02.png")
    (tree / "set0" / "p03.png").rename(tree / "set0" / "moved.png")
    (tree / "set1" / "p04.png").unlink()
    (tree / "set0" / "p00.txt").write_text("a red circle, edited\n")
    _bump(tree / "set0" / "p00.txt")

    reference = base / "index-reference"
    with Index.create(reference, encoder=tiny_encoder) as index:
        index.add(tree)
    return {"tree": tree, "before": before, "reference": reference}


def _killed_run(
    scenario,
    tmp_path: Path,
    tiny_model_dir: Path,
    fault: str | None,
    *,
    fresh: bool = False,
    kill_after_commits: int | None = None,
    delay: float = 0.0,
) -> tuple[Path, str]:
    index_dir = tmp_path / "index"
    if not fresh:
        shutil.copytree(scenario["before"], index_dir)
    command = index_command(scenario["tree"], index_dir, tiny_model_dir)
    if kill_after_commits is None:
        done = subprocess.run(command, capture_output=True, text=True, env=_environment(fault), timeout=120)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        return index_dir, done.stderr
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_environment(None)
    )
    assert process.stderr is not None
    lines = []
    seen = 0
    for line in process.stderr:
        lines.append(line)
        if COMMITTED.search(line):
            seen += 1
            if seen == kill_after_commits:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
    lines.append(process.stderr.read())
    assert process.wait(timeout=60) == -signal.SIGKILL, "".join(lines)[-2000:]
    return index_dir, "".join(lines)


def _check_survivors_and_resume(
    scenario, index_dir: Path, stderr: str, tiny_encoder, fresh: bool, outside: bool = False
) -> None:
    """`outside`: stopped by a signal from another process, at a moment the log cannot pin down exactly."""
    commits = _commits(stderr)
    survived = check_index(index_dir)  # items and vectors agree, files are intact
    assert survived.ok, survived.to_dict()
    with Index.open(index_dir, encoder=tiny_encoder) as survivor:
        if commits:
            generation, items = commits[-1]
            if outside and survivor.store.generation == generation + 1:
                pass  # killed from outside between a commit and its log line: that commit is kept too
            else:
                assert survivor.store.generation == generation
                assert survivor.counts()["items"] == items
        elif not fresh:
            with Index.open(scenario["before"], encoder=tiny_encoder) as before:
                assert survivor.store.generation == before.store.generation
                assert _contents(survivor).keys() == _contents(before).keys()
        _assert_answers_like_brute_force(survivor)
        committed_hashes = {row[0] for row in survivor.store.conn.execute("SELECT sha256 FROM files")}
        report = survivor.add(scenario["tree"])
        # Nothing committed is embedded again: only pictures whose content the index did not hold yet.
        assert report.embedded_images == len(_image_hashes(scenario["tree"]) - set(committed_hashes))
        _assert_answers_like_brute_force(survivor)
        with Index.open(scenario["reference"], encoder=tiny_encoder) as reference:
            got, want = _contents(survivor), _contents(reference)
            assert got.keys() == want.keys()
            for key, vector in want.items():
                np.testing.assert_allclose(got[key], vector, atol=1e-6)
    manifest = read_manifest(index_dir)
    assert sorted(p.name for p in index_dir.glob("*.faiss")) == [manifest["faiss"]["file"]]
    assert not list(index_dir.glob(".*.tmp"))
    finished = check_index(index_dir)
    assert finished.ok and not finished.leftovers and not finished.notes, finished.to_dict()


# Every named point, at the first and at a later hit: walking, embedding a batch, just before and just
# after the SQLite commit, after the FAISS file is written but before it is renamed, after the rename but
# before the manifest names it, and after the manifest.
@pytest.mark.parametrize(
    "fault",
    [
        "walk:3",
        "embed:1",
        "embed:3",
        "commit:1",
        "commit:4",
        "committed:1",
        "committed:3",
        "faiss-write:1",
        "faiss-renamed:1",
        "manifest-written:1",
    ],
)
def test_killed_update_keeps_what_was_committed(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder, fault: str
) -> None:
    index_dir, stderr = _killed_run(scenario, tmp_path, tiny_model_dir, fault)
    _check_survivors_and_resume(scenario, index_dir, stderr, tiny_encoder, fresh=False)


@pytest.mark.parametrize("commits, delay", [(1, 0.0), (2, 0.03)])
def test_killed_from_outside_mid_crawl(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder, commits: int, delay: float
) -> None:
    index_dir, stderr = _killed_run(scenario, tmp_path, tiny_model_dir, None, kill_after_commits=commits, delay=delay)
    _check_survivors_and_resume(scenario, index_dir, stderr, tiny_encoder, fresh=False, outside=True)


@pytest.mark.parametrize("fault", ["faiss-write:1", "walk:2", "committed:2"])
def test_killed_first_crawl_of_a_new_index(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder, fault: str
) -> None:
    index_dir, stderr = _killed_run(scenario, tmp_path, tiny_model_dir, fault, fresh=True)
    if fault == "faiss-write:1":  # died while creating the index, before its manifest existed
        assert not (index_dir / "manifest.json").exists()
        # the next run starts the creation again instead of calling the folder someone else's
        done = _run_index(scenario, index_dir, tiny_model_dir)
        assert done.returncode == 0, done.stderr[-2000:]
        with (
            Index.open(index_dir, encoder=tiny_encoder) as index,
            Index.open(scenario["reference"], encoder=tiny_encoder) as reference,
        ):
            assert _contents(index).keys() == _contents(reference).keys()
            _assert_answers_like_brute_force(index)
        return
    _check_survivors_and_resume(scenario, index_dir, stderr, tiny_encoder, fresh=True)


def test_full_disk_while_saving_keeps_the_previous_state(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(scenario["before"], index_dir)
    manifest_before = (index_dir / "manifest.json").read_bytes()
    done = _run_index(scenario, index_dir, tiny_model_dir, fault="faiss-write:1:enospc")
    assert done.returncode == 1
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    # The database committed its chunks; the old vector file and manifest stay as they were, and
    # readers bring the old file up to date from the database.
    assert (index_dir / "manifest.json").read_bytes() == manifest_before
    assert not list(index_dir.glob(".*.tmp"))
    _check_survivors_and_resume(scenario, index_dir, done.stderr, tiny_encoder, fresh=False)


def test_ctrl_c_mid_crawl_exits_promptly_and_keeps_what_was_committed(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder
) -> None:
    """A real SIGINT, as a terminal sends it, in the middle of a crawl."""
    index_dir = tmp_path / "index"
    shutil.copytree(scenario["before"], index_dir)
    # A job started in the background inherits SIGINT ignored; a terminal's Ctrl-C is what is tested here.
    process = subprocess.Popen(
        launched(index_command(scenario["tree"], index_dir, tiny_model_dir)),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_environment(None),
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if COMMITTED.search(line):
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=60)
    waited = time.monotonic() - sent
    stderr = "".join(lines) + rest
    assert process.returncode == 130, stderr[-2000:]
    assert waited < 10, f"took {waited:.1f} s to stop"
    assert "the work done so far is saved" in stderr and "Traceback" not in stderr
    # A clean stop saves the vector file and manifest of the last commit on its way out.
    with Index.open(index_dir, encoder=tiny_encoder) as stopped:
        assert read_manifest(index_dir)["faiss"]["generation"] == stopped.store.generation
    _check_survivors_and_resume(scenario, index_dir, stderr, tiny_encoder, fresh=False, outside=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limits")
@pytest.mark.parametrize("headroom", [0, 16_384, 65_536])
def test_files_that_cannot_grow_keep_the_previous_state(
    scenario, tmp_path: Path, tiny_model_dir: Path, tiny_encoder, headroom: int
) -> None:
    """A real write failure from the kernel, as on a full disk: no file of the process may grow past a
    limit (RLIMIT_FSIZE), so SQLite's or FAISS's next write that needs more room fails mid-crawl."""
    index_dir = tmp_path / "index"
    shutil.copytree(scenario["before"], index_dir)
    limit = max(p.stat().st_size for p in index_dir.iterdir() if p.is_file()) + headroom
    command = launched(index_command(scenario["tree"], index_dir, tiny_model_dir), file_size_limit=limit)
    done = subprocess.run(command, capture_output=True, text=True, env=_environment(None), timeout=120)
    assert done.returncode in (1, 3), done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "is the disk full?" in last
    _check_survivors_and_resume(scenario, index_dir, done.stderr, tiny_encoder, fresh=False)
