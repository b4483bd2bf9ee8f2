"""The pure crawl module: walking folders, sidecars and captions files (no model, no index)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import touch

from vecsearch import CaptionsFileError
from vecsearch.crawl import (
    MAX_CAPTION_FILE_BYTES,
    Skip,
    read_captions_file,
    read_sidecar,
    walk,
)
from vecsearch.sidecars import SidecarCaption


def relpaths(result) -> list[str]:
    return sorted(f.relpath for f in result.files)


# --- walk: what counts as an image -----------------------------------------------------------------


def test_walk_finds_every_image_extension_in_any_case_recursively(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in [
        "a.jpg",
        "b.JPEG",
        "c.png",
        "sub/d.WebP",
        "sub/e.gif",
        "sub/deeper/f.BMP",
        "sub/deeper/g.tif",
        "h.TIFF",
        "i.Jpg",
        "j.jpeg",
    ]:
        touch(root / rel)
    for rel in ["notes.txt", "k.heic", "l.jpg.bak", "m", "sub/n.svg", "sub/deeper/o.md"]:
        touch(root / rel)
    result = walk(root)
    assert relpaths(result) == sorted(
        [
            "a.jpg",
            "b.JPEG",
            "c.png",
            "h.TIFF",
            "i.Jpg",
            "j.jpeg",
            "sub/d.WebP",
            "sub/e.gif",
            "sub/deeper/f.BMP",
            "sub/deeper/g.tif",
        ]
    )
    assert result.skipped == []
    found = {f.relpath: f for f in result.files}
    a = found["a.jpg"]
    assert a.path == root / "a.jpg"
    assert a.size == 1
    assert a.mtime_ns == (root / "a.jpg").stat().st_mtime_ns
    assert a.sidecar is None and a.sidecar_sig is None


def test_walk_from_a_start_folder_keeps_paths_relative_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "top.png")
    touch(root / "sub" / "inner.png")
    touch(root / "sub" / "deeper" / "deep.png")
    result = walk(root, start=root / "sub")
    assert relpaths(result) == ["sub/deeper/deep.png", "sub/inner.png"]
    single = walk(root, start=root / "sub" / "inner.png")
    assert relpaths(single) == ["sub/inner.png"]


# --- walk: hidden, excluded, default excludes ----------------------------------------------------


def test_walk_skips_hidden_files_and_folders_unless_asked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "seen.png")
    touch(root / ".dotfile.png")
    touch(root / ".hidden" / "secret.png")
    touch(root / "sub" / ".cache" / "thumb.jpg")
    touch(root / "sub" / "visible.jpg")
    assert relpaths(walk(root)) == ["seen.png", "sub/visible.jpg"]
    assert relpaths(walk(root, include_hidden=True)) == [
        ".dotfile.png",
        ".hidden/secret.png",
        "seen.png",
        "sub/.cache/thumb.jpg",
        "sub/visible.jpg",
    ]


def test_walk_exclude_patterns_match_names_and_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "keep.png")
    touch(root / "anim.gif")
    touch(root / "trips" / "beach.png")
    touch(root / "trips" / "beach.jpg")
    touch(root / "trips" / "inner" / "x.png")
    touch(root / "other" / "trips" / "y.png")
    touch(root / "other" / "z.png")

    # a bare name matches that folder (or file) anywhere in the tree
    assert relpaths(walk(root, exclude=["trips"])) == ["anim.gif", "keep.png", "other/z.png"]
    # a glob on the name
    assert "anim.gif" not in relpaths(walk(root, exclude=["*.gif"]))
    assert len(relpaths(walk(root, exclude=["*.gif"]))) == 6
    # a glob on the path relative to the root: only trips/beach.*, not other names or other/trips
    assert relpaths(walk(root, exclude=["trips/beach.*"])) == [
        "anim.gif",
        "keep.png",
        "other/trips/y.png",
        "other/z.png",
        "trips/inner/x.png",
    ]
    # an exact relative path of a folder prunes it
    assert relpaths(walk(root, exclude=["other/trips"])) == [
        "anim.gif",
        "keep.png",
        "other/z.png",
        "trips/beach.jpg",
        "trips/beach.png",
        "trips/inner/x.png",
    ]


def test_walk_default_excludes_skip_thumbnail_and_dependency_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "photo.jpg")
    touch(root / "@eaDir" / "photo.jpg" / "SYNOPHOTO_THUMB_M.jpg")
    touch(root / "@eaDir" / "thumb.jpg")
    touch(root / "web" / "node_modules" / "pkg" / "icon.png")
    touch(root / "web" / "logo.png")
    touch(root / "__pycache__" / "x.png")
    assert relpaths(walk(root)) == ["photo.jpg", "web/logo.png"]
    # the defaults apply even with hidden files included and extra patterns given
    assert relpaths(walk(root, exclude=["nothing"], include_hidden=True)) == ["photo.jpg", "web/logo.png"]


# --- walk: sidecars ---------------------------------------------------------------------------------


def test_walk_detects_caption_sidecars(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "cat.jpg")
    touch(root / "cat.txt", b"a cat\n")
    touch(root / "dog.png")
    touch(root / "dog.TXT", b"a dog on grass\n")
    touch(root / "bird.png")
    touch(root / "fish.txt", b"a fish with no picture\n")
    found = {f.relpath: f for f in walk(root).files}
    assert sorted(found) == ["bird.png", "cat.jpg", "dog.png"]
    cat, dog, bird = found["cat.jpg"], found["dog.png"], found["bird.png"]
    assert cat.sidecar == root / "cat.txt"
    side = (root / "cat.txt").stat()
    assert cat.sidecar_sig == f"{side.st_size}:{side.st_mtime_ns}"
    assert dog.sidecar == root / "dog.TXT"
    side = (root / "dog.TXT").stat()
    assert dog.sidecar_sig == f"{side.st_size}:{side.st_mtime_ns}"
    assert bird.sidecar is None and bird.sidecar_sig is None


def test_walk_of_a_single_file_finds_its_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "cat.jpg")
    touch(root / "cat.txt", b"a cat\n")
    result = walk(root, start=root / "cat.jpg")
    assert [f.sidecar for f in result.files] == [root / "cat.txt"]


def test_walk_reports_empty_image_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "full.png")
    touch(root / "empty.png", b"")
    touch(root / "sub" / "empty.JPG", b"")
    result = walk(root)
    assert relpaths(result) == ["full.png"]
    assert sorted(result.skipped, key=lambda s: s.path) == [
        Skip(str(root / "empty.png"), "empty file"),
        Skip(str(root / "sub" / "empty.JPG"), "empty file"),
    ]


# --- walk: symlinks and unreadable folders -----------------------------------------------------


def test_walk_survives_a_folder_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "a.png")
    touch(root / "sub" / "b.png")
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> root: following it would never end
    os.symlink(root / "sub", root / "sub" / "self")
    result = walk(root)
    assert relpaths(result) == ["a.png", "sub/b.png"]
    assert result.skipped == []


def test_walk_does_not_follow_symlinked_folders_but_follows_file_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "elsewhere.png")
    touch(outside / "nested" / "deep.png")
    root = tmp_path / "root"
    touch(root / "own.png")
    os.symlink(outside, root / "linked_folder")
    os.symlink(outside / "elsewhere.png", root / "linked_file.png")
    os.symlink(tmp_path / "nowhere.png", root / "dangling.png")
    result = walk(root)
    assert relpaths(result) == ["linked_file.png", "own.png"]
    linked = next(f for f in result.files if f.relpath == "linked_file.png")
    assert linked.size == 1
    assert [s.path for s in result.skipped] == [str(root / "dangling.png")]
    assert result.skipped[0].reason.startswith("cannot read file")


def test_walk_reports_unreadable_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root / "ok.png")
    locked = root / "locked"
    touch(locked / "hidden_away.png")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that can read a chmod 000 folder (root)")
        result = walk(root)
        assert relpaths(result) == ["ok.png"]
        assert len(result.skipped) == 1
        assert result.skipped[0].path == str(locked)
        assert result.skipped[0].reason.startswith("cannot list folder")
    finally:
        locked.chmod(0o755)


# --- read_sidecar ----------------------------------------------------------------------------------


def test_read_sidecar_one_caption_per_line_cleaned(tmp_path: Path) -> None:
    side = tmp_path / "cat.txt"
    side.write_bytes(
        "\ufeffa  red\tapple \n\n   \nan apple on a table\r\na red apple\n  a   red apple  \nlast line".encode()
    )
    captions, reason = read_sidecar(side)
    assert reason is None
    assert captions == [SidecarCaption(t) for t in ("a red apple", "an apple on a table", "last line")]


def test_read_sidecar_empty_file_gives_no_captions(tmp_path: Path) -> None:
    side = tmp_path / "cat.txt"
    side.write_text("\n  \n\t\n")
    assert read_sidecar(side) == ([], None)


def test_read_sidecar_refuses_non_utf8(tmp_path: Path) -> None:
    side = tmp_path / "cat.txt"
    side.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    captions, reason = read_sidecar(side)
    assert captions == []
    assert reason == "caption file is not UTF-8 text"


def test_read_sidecar_refuses_huge_files(tmp_path: Path) -> None:
    side = tmp_path / "cat.txt"
    size = MAX_CAPTION_FILE_BYTES + 1
    side.write_bytes(b"a" * (size - 1) + b"\n")
    captions, reason = read_sidecar(side)
    assert captions == []
    assert reason == f"caption file too large ({size} bytes > {MAX_CAPTION_FILE_BYTES})"


def test_read_sidecar_missing_file_gives_a_reason(tmp_path: Path) -> None:
    captions, reason = read_sidecar(tmp_path / "gone.txt")
    assert captions == []
    assert reason is not None and reason.startswith("cannot read caption file")


# --- read_captions_file ----------------------------------------------------------------------------


def test_captions_csv_with_header(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    csv_file = folder / "captions.csv"
    csv_file.write_text(
        'path,caption\napple.png,a red apple\nsub/car.jpg,"a blue car, parked"\napple.png,an apple on a table\n'
    )
    assert read_captions_file(csv_file) == {
        folder / "apple.png": ["a red apple", "an apple on a table"],
        folder / "sub" / "car.jpg": ["a blue car, parked"],
    }


def test_captions_csv_header_columns_in_any_order_and_names(tmp_path: Path) -> None:
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text("Text,Image\na red apple,apple.png\n")
    assert read_captions_file(csv_file) == {tmp_path / "apple.png": ["a red apple"]}


def test_captions_csv_without_header(tmp_path: Path) -> None:
    csv_file = tmp_path / "captions.csv"
    absolute = tmp_path / "elsewhere" / "x.png"
    csv_file.write_text(f"apple.png,a red apple\n\n{absolute},  an   x \napple.png,a red apple\n")
    assert read_captions_file(csv_file) == {
        tmp_path / "apple.png": ["a red apple"],  # duplicate rows collapse
        absolute: ["an x"],
    }


def test_captions_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "meta"
    folder.mkdir()
    jsonl = folder / "captions.jsonl"
    rows = [
        {"path": "../photos/apple.png", "caption": "a red apple"},
        {"path": "../photos/apple.png", "caption": "fruit"},
        {"path": "car.jpg", "caption": "a blue car", "extra": 1},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_captions_file(jsonl) == {
        tmp_path / "photos" / "apple.png": ["a red apple", "fruit"],
        folder / "car.jpg": ["a blue car"],
    }


def test_captions_relative_paths_resolve_against_the_captions_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    csv_file = folder / "captions.csv"
    csv_file.write_text("path,caption\nimg/a.png,first\n")
    jsonl = folder / "captions.jsonl"
    jsonl.write_text(json.dumps({"path": "img/a.png", "caption": "second"}) + "\n")
    assert read_captions_file(csv_file) == {folder / "img" / "a.png": ["first"]}
    assert read_captions_file(jsonl) == {folder / "img" / "a.png": ["second"]}


def test_captions_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text(json.dumps({"path": "a.png", "caption": "ok"}) + "\n{not json\n")
    with pytest.raises(CaptionsFileError, match=rf"^{_re(jsonl)}:2: not valid JSON"):
        read_captions_file(jsonl)


def test_captions_jsonl_without_the_fields_names_file_and_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("\n" + json.dumps({"path": "a.png"}) + "\n")
    with pytest.raises(CaptionsFileError, match=rf"^{_re(jsonl)}:2: needs string fields 'path' and 'caption'"):
        read_captions_file(jsonl)
    jsonl.write_text("[1, 2]\n")
    with pytest.raises(CaptionsFileError, match=rf"^{_re(jsonl)}:1: expected an object"):
        read_captions_file(jsonl)


def test_captions_csv_with_one_column_names_file_and_line(tmp_path: Path) -> None:
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text("apple.png\n")
    with pytest.raises(CaptionsFileError, match=rf"^{_re(csv_file)}:1: expected two columns: path,caption"):
        read_captions_file(csv_file)
    csv_file.write_text("path,caption\napple.png,a red apple\ncar.jpg\n")
    with pytest.raises(CaptionsFileError, match=rf"^{_re(csv_file)}:3: expected two columns"):
        read_captions_file(csv_file)


def test_captions_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(CaptionsFileError, match=rf"captions file not found: {_re(missing)}"):
        read_captions_file(missing)


def test_captions_non_utf8_file(tmp_path: Path) -> None:
    csv_file = tmp_path / "captions.csv"
    csv_file.write_bytes("a.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CaptionsFileError, match="not UTF-8"):
        read_captions_file(csv_file)


def _re(path: Path) -> str:
    import re

    return re.escape(str(path))


# --- reading files that are not what they claim ------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifos_are_refused_without_waiting_on_them(tmp_path: Path) -> None:
    from vecsearch.crawl import hash_file

    os.mkfifo(tmp_path / "cat.txt")
    os.mkfifo(tmp_path / "dog.png")
    captions, reason = read_sidecar(tmp_path / "cat.txt")  # would block forever if it were opened for reading
    assert captions == [] and reason == "cannot read caption file (not a regular file)"
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(tmp_path / "dog.png")


def test_read_sidecar_refuses_a_sparse_giant_without_reading_it(tmp_path: Path) -> None:
    side = tmp_path / "cat.txt"
    with open(side, "wb") as handle:
        handle.truncate(10 << 30)  # 10 GB claimed, nothing stored
    assert read_sidecar(side) == ([], f"caption file too large ({10 << 30} bytes > {MAX_CAPTION_FILE_BYTES})")


def test_captions_source_gives_reasons_for_bad_data_and_raises_for_bad_syntax(tmp_path: Path) -> None:
    from vecsearch.crawl import MAX_CAPTIONS_FILE_BYTES, read_captions_source

    latin = tmp_path / "latin.csv"
    latin.write_bytes("a.png,caf\xe9\n".encode("latin-1"))
    assert read_captions_source(latin) == ({}, "captions file is not UTF-8 text")
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_CAPTIONS_FILE_BYTES + 1)
    assert read_captions_source(huge) == (
        {},
        f"captions file too large ({MAX_CAPTIONS_FILE_BYTES + 1} bytes > {MAX_CAPTIONS_FILE_BYTES})",
    )
    with pytest.raises(CaptionsFileError, match="too large"):
        read_captions_file(huge)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(CaptionsFileError, match=r"bad\.jsonl:1"):
        read_captions_source(bad)
    with pytest.raises(CaptionsFileError, match="not found"):
        read_captions_source(tmp_path / "missing.csv")


def test_hash_file_records_the_state_it_read(tmp_path: Path) -> None:
    from vecsearch import crawl
    from vecsearch.crawl import file_sha256, hash_file

    path = tmp_path / "a.png"
    path.write_bytes(b"0123456789")
    content = hash_file(path)
    info = path.stat()
    assert content.stable and content.data == b"0123456789"
    assert (content.size, content.mtime_ns) == (info.st_size, info.st_mtime_ns)
    assert content.sha256 == hashlib.sha256(b"0123456789").hexdigest() == file_sha256(path)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crawl, "KEEP_BYTES_BELOW", 4)
        big = hash_file(path)  # too big to keep: hashed in blocks, decoded from disk later
    assert big.data is None and big.sha256 == content.sha256


def test_read_sidecar_reads_tux_paint_lines_and_json(tmp_path: Path) -> None:
    stamp = tmp_path / "cat.txt"
    stamp.write_text("A black cat.\nfr.utf8=Un chat noir.\nes.utf8=Un gato negro.\n", encoding="utf-8")
    assert read_sidecar(stamp) == ([SidecarCaption("A black cat.")], None)
    assert read_sidecar(stamp, ("fr", "es")) == (
        [SidecarCaption("A black cat."), SidecarCaption("Un chat noir.", "fr"), SidecarCaption("Un gato negro.", "es")],
        None,
    )
    record = tmp_path / "dog.json"
    record.write_text('{"caption": "a  dog\\nin the snow", "status": "success"}', encoding="utf-8")
    assert read_sidecar(record) == ([SidecarCaption("a dog in the snow")], None)
    record.write_text("not json", encoding="utf-8")
    assert read_sidecar(record)[1] == "caption file is not valid JSON (line 1: Expecting value)"


def test_walk_takes_a_json_sidecar_when_there_is_no_text_one(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.json", b"{}")
    touch(tmp_path / "b.jpg")
    touch(tmp_path / "b.json", b"{}")
    touch(tmp_path / "b.txt", b"b")
    found = {f.relpath: f.sidecar_name for f in walk(tmp_path).files}
    assert found == {"a.jpg": "a.json", "b.jpg": "b.txt"}
