"""Promises of the crawl that no other test pinned down: each test names one, on real files.

They were written against the mutants of `vecsearch/crawl.py` that survived `tests/test_crawl.py` and
`tests/test_bad_files.py` (see scripts/results/mutation-crawl-survivors.md): each fails on a change to the
code that breaks the promise it names.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image, touch

from vecsearch import CaptionsFileError, Index
from vecsearch.crawl import (
    MAX_CAPTION_FILE_BYTES,
    Skip,
    hash_file,
    read_captions_file,
    read_captions_source,
    read_sidecar,
    walk,
)
from vecsearch.sidecars import SidecarCaption


def relpaths(result: Any) -> list[str]:
    return sorted(f.relpath for f in result.files)


# --- walking: what is found, what is skipped and why ------------------------------------------------


def test_a_single_file_given_that_is_empty_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """`vecsearch index empty.png` walks the file's folder from that file: it is reported, not dropped."""
    empty = touch(tmp_path / "empty.png", b"")
    result = walk(tmp_path, start=empty)
    assert result.files == []
    assert result.skipped == [Skip(str(empty), "empty file")]


def test_a_single_file_given_that_is_not_an_image_is_skipped_with_its_reason(tmp_path: Path) -> None:
    notes = touch(tmp_path / "notes.txt", b"not a picture")
    result = walk(tmp_path, start=notes)
    assert result.files == []
    assert result.skipped == [Skip(str(notes), "not an image file extension")]


def _folder_too_deep_to_list(top: Path) -> Path:
    """A real folder whose path is longer than the system allows (PATH_MAX): it shows in its parent's
    listing, but listing it fails, for root too (unlike chmod 000). Built through folder descriptors,
    since no path to it can be used."""
    name = "d" * 200
    depth = 0
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(str(top)) + depth * (len(name) + 1) <= 4200:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
            depth += 1
    finally:
        os.close(fd)
    return Path(os.path.join(top, *[name] * depth))


def test_a_folder_that_cannot_be_listed_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    """The indexer keeps the items under a folder reported as "cannot list folder" (a disk error must
    not delete them): so the skip names the folder and says so, and the folders after it are walked."""
    root = tmp_path / "root"
    touch(root / "top.png")
    deep_top = root / "a_deep"
    deep_top.mkdir()
    touch(root / "b_after" / "later.png")  # listed after a_deep: lost if the walk stopped there
    try:
        unlisted = _folder_too_deep_to_list(deep_top)
        result = walk(root)
        assert relpaths(result) == ["b_after/later.png", "top.png"]
        assert result.skipped == [Skip(str(unlisted), f"cannot list folder ({os.strerror(errno.ENAMETOOLONG)})")]
    finally:
        shutil.rmtree(deep_top)  # works through folder descriptors, whatever the depth


def test_a_sidecar_that_is_a_dangling_link_leaves_the_picture_found_without_captions(tmp_path: Path) -> None:
    touch(tmp_path / "cat.jpg")
    os.symlink(tmp_path / "nowhere.txt", tmp_path / "cat.txt")
    result = walk(tmp_path)
    assert relpaths(result) == ["cat.jpg"]
    assert result.skipped == []
    found = result.files[0]
    assert found.sidecar is None and found.sidecar_sig is None


class _EntryWithoutType:
    """A directory entry as a file system that reports no entry types (d_type) gives it: asking whether
    it is a folder needs an lstat of its own."""

    def __init__(self, entry: os.DirEntry[str]) -> None:
        self._entry = entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._entry, name)

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        info = os.stat(self._entry.path) if follow_symlinks else os.lstat(self._entry.path)
        return stat.S_ISDIR(info.st_mode)


def test_a_file_that_vanishes_mid_listing_leaves_the_index_and_is_not_taken_for_a_folder(
    tmp_path: Path, tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that are gone leave the index; only the items under a folder that could not be listed are
    kept. A file deleted between the listing of its folder and the look at its type (on a file system
    without entry types, where that look is an lstat that fails) is gone, not an unlisted folder."""
    root = tmp_path / "pics"
    for i, colour in enumerate(("red", "blue")):
        make_image(root / f"img{i}.png", colour, seed=i)
    target = root / "img1.png"
    real_scandir = os.scandir

    class Listing:
        def __init__(self, folder: Any) -> None:
            self._listing = real_scandir(folder)
            self._typeless = Path(folder).resolve() == root.resolve()

        def close(self) -> None:
            self._listing.close()

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            self._listing.close()

        def __iter__(self) -> Iterator[Any]:
            entries = list(self._listing)
            if not self._typeless:
                return iter(entries)
            target.unlink()  # after the listing, before the walk looks at the entry
            return iter([_EntryWithoutType(entry) for entry in entries])

    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        assert index.add(root).added == 2
        monkeypatch.setattr(os, "scandir", Listing)
        report = index.add(root)
        monkeypatch.undo()
        assert [(s.path, s.reason) for s in report.skipped] == [
            (str(target), f"cannot read file ({os.strerror(errno.ENOENT)})")
        ]
        assert report.removed == 1
        assert {hit.relpath for hit in index.search("a picture", k=10)} == {"img0.png"}


# --- caption sidecars -------------------------------------------------------------------------------


def test_a_sidecar_of_exactly_the_size_limit_is_read_whole(tmp_path: Path) -> None:
    """Sidecars over the limit are refused; one of exactly the limit is read, to its last byte."""
    last = b"the last caption"
    side = touch(tmp_path / "cat.txt", b"\n" * (MAX_CAPTION_FILE_BYTES - len(last)) + last)
    assert side.stat().st_size == MAX_CAPTION_FILE_BYTES
    assert read_sidecar(side) == ([SidecarCaption("the last caption")], None)


def test_a_caption_with_a_nul_byte_is_dropped(tmp_path: Path) -> None:
    """A NUL is never part of a caption (it would end the text early in C code downstream); the line
    holding one is dropped, the others are kept."""
    side = touch(tmp_path / "cat.txt", b"a cat\x00 on a mat\na cat\n")
    assert read_sidecar(side) == ([SidecarCaption("a cat")], None)


# --- --captions files -------------------------------------------------------------------------------


def test_ndjson_captions_files_are_read_as_json_lines(tmp_path: Path) -> None:
    rows = [{"path": "a.png", "caption": "a cat"}, {"image": "b.png", "text": "a dog, asleep"}]
    for name in ("captions.ndjson", "CAPTIONS.NDJSON"):
        source = tmp_path / name
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
        assert read_captions_file(source) == {tmp_path / "a.png": ["a cat"], tmp_path / "b.png": ["a dog, asleep"]}


def _pipe_path(read_end: int) -> Path:
    """The path a shell's `<(command)` gives: the pipe's read end, opened again by name."""
    return Path(f"/proc/self/fd/{read_end}")


def _unread(write_end: int) -> int:
    """Bytes written to a pipe that its reader has not taken yet."""
    return int(struct.unpack("i", fcntl.ioctl(write_end, termios.FIONREAD, b"\0\0\0\0"))[0])


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc/self/fd here")
def test_a_captions_file_can_be_a_pipe_that_is_read_to_its_end(tmp_path: Path) -> None:
    """`--captions <(some command)`: a pipe, read until the command has written everything and closed
    it, even when its output comes in pieces."""
    first, rest = f"{tmp_path / 'a.png'},a cat\n".encode(), f"{tmp_path / 'b.png'},a dog\n".encode()
    read_end, write_end = os.pipe()
    returned = threading.Event()

    def writer() -> None:
        """Write the rest once the reader has taken the first piece, as a slow command would."""
        try:
            while _unread(write_end) and not returned.wait(0.01):
                pass
            time.sleep(0.05)
            if not returned.is_set():
                os.write(write_end, rest)
        except BrokenPipeError:  # the reader gave up early: the test fails on what it read
            pass
        finally:
            os.close(write_end)

    os.write(write_end, first)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        captions, reason = read_captions_source(_pipe_path(read_end))
    finally:
        returned.set()
        thread.join(10)
        os.close(read_end)
    assert reason is None
    assert captions == {tmp_path / "a.png": ["a cat"], tmp_path / "b.png": ["a dog"]}


def test_a_jsonl_row_without_a_path_stops_with_an_error_naming_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "captions.jsonl"
    source.write_text(json.dumps({"path": "a.png", "caption": "a cat"}) + "\n" + json.dumps({"caption": "x"}) + "\n")
    with pytest.raises(CaptionsFileError, match=rf"^{re.escape(str(source))}:2: needs string fields"):
        read_captions_source(source)


def test_a_csv_the_csv_reader_refuses_stops_with_an_error_naming_the_file(tmp_path: Path) -> None:
    """With several --captions files, the error must say which one is malformed."""
    source = tmp_path / "captions.csv"
    source.write_text("a.png," + "x" * 200_000 + "\n")  # a field over the csv module's limit
    with pytest.raises(CaptionsFileError, match=rf"^{re.escape(str(source))}: not a valid CSV file \("):
        read_captions_source(source)


def test_blank_and_whitespace_only_csv_rows_are_not_rows(tmp_path: Path) -> None:
    source = tmp_path / "captions.csv"
    source.write_text("path,caption\na.png,a cat\n   \n , \n\t\nb.png,a dog\n")
    assert read_captions_file(source) == {tmp_path / "a.png": ["a cat"], tmp_path / "b.png": ["a dog"]}


def test_a_csv_header_after_leading_blank_lines_is_a_header(tmp_path: Path) -> None:
    """The header is the first row that is not blank, wherever that row is: its names pick the columns."""
    source = tmp_path / "captions.csv"
    source.write_text("\n  \ncaption,path\na cat,a.png\n")
    assert read_captions_file(source) == {tmp_path / "a.png": ["a cat"]}


def test_only_the_first_csv_row_can_be_a_header(tmp_path: Path) -> None:
    """A later row whose cells happen to be column names is data: it does not re-map the columns."""
    source = tmp_path / "captions.csv"
    source.write_text("a.png,a cat\ntitle,file\nb.png,a dog\n")
    assert read_captions_file(source) == {
        tmp_path / "a.png": ["a cat"],
        tmp_path / "title": ["file"],
        tmp_path / "b.png": ["a dog"],
    }


@pytest.mark.parametrize("caption", ["Title", "image"])
def test_a_first_csv_row_naming_only_one_column_is_data(tmp_path: Path, caption: str) -> None:
    """Header optional: a first row is a header only when it names both a path and a caption column."""
    source = tmp_path / "captions.csv"
    source.write_text(f"cover.png,{caption}\nb.png,a dog\n")
    assert read_captions_file(source) == {tmp_path / "cover.png": [caption], tmp_path / "b.png": ["a dog"]}


# --- content hashes ---------------------------------------------------------------------------------


def test_the_hash_of_an_empty_file_is_the_sha256_of_no_bytes(tmp_path: Path) -> None:
    """A file emptied after the walk is hashed as what it is then: nothing."""
    content = hash_file(touch(tmp_path / "emptied.png", b""))
    assert content.sha256 == hashlib.sha256(b"").hexdigest()
    assert content.data == b"" and content.size == 0 and content.stable
