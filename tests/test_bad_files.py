"""Bad input never stops a crawl and never corrupts an index.

A corpus of broken, odd and hostile files is built here (real files, written by PIL, libvips or by hand),
crawled together through `Index.create(...).add(...)` with the tiny encoder, and every file's outcome is
checked: skipped with its reason, or indexed with the vector of what it really shows. The index must stay
consistent (SQLite and FAISS agree, search works) and a second crawl must change nothing. Files that
vanish or change during a crawl are made to do so for real, from a function the crawler calls between
walking and decoding.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image
from PIL import Image

from vecsearch import Index, crawl, pipeline
from vecsearch.cli import main
from vecsearch.crawl import MAX_CAPTION_FILE_BYTES, MAX_CAPTIONS_FILE_BYTES
from vecsearch.images import STREAM_ABOVE_MEGAPIXELS, load_image
from vecsearch.indexer import decode_size

pyvips = pytest.importorskip("pyvips")

BLUE, RED = (30, 60, 220), (220, 30, 30)
ONLY_STREAMED = f"above {STREAM_ABOVE_MEGAPIXELS:.0f} MP only PNG, JPEG, WebP and TIFF pictures are decoded"


# --- building bad files ----------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"), mode="RGB")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width`×`height` grey pixels, followed by four rows of data: a few
    hundred bytes that would decompress to width × height bytes if the data were all there."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def bmp_claiming(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming `width`×`height` pixels, with no pixel data at all."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def marked(size: tuple[int, int] = (90, 60)) -> Image.Image:
    """Red, with a blue strip along the stored left edge: where the strip ends up shows the rotation."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (0, 0, size[0] // 6, size[1]))
    return image


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(image, "JPEG", exif=exif, quality=95)


def write_huge_png(path: Path, side: int) -> None:
    """A real PNG of side² pixels, transparent except for a blue strip on the left quarter, written by
    libvips row by row (never held whole in memory)."""
    x = pyvips.Image.xyz(side, side)[0]
    strip = (x < side // 4).ifthenelse([*BLUE, 255], [255, 255, 255, 0]).cast("uchar")
    strip.copy(interpretation="srgb").pngsave(str(path), compression=1)


HUGE_SIDE = int((STREAM_ABOVE_MEGAPIXELS * 1e6) ** 0.5) + 10  # just over PIL's limit: streamed by libvips


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    write_huge_png(path, HUGE_SIDE)
    return path


def make_fifo(path: Path) -> bool:
    if not hasattr(os, "mkfifo"):
        return False
    os.mkfifo(path)
    return True


def make_unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000; where that does not stop reads (root, as in CI), opening that one path is made to
    fail with the same PermissionError the system gives everyone else."""
    path.chmod(0)
    if not os.access(path, os.R_OK):
        return
    real = crawl.open_regular

    def refusing(target: Path, allow_pipe: bool = False):
        if Path(target) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real(target, allow_pipe)

    monkeypatch.setattr(crawl, "open_regular", refusing)


def build_corpus(
    root: Path, monkeypatch: pytest.MonkeyPatch, huge: Path | None = None
) -> tuple[dict[str, str], list[str], list[Path]]:
    """Write the corpus (with a copy of `huge`, a picture over PIL's limit, when given). Returns
    (path -> expected skip reason, as a regex), relpaths that must be indexed, --captions files."""
    root.mkdir(parents=True)
    skipped: dict[str, str] = {}
    indexed: list[str] = []

    def put(name: str, data: bytes, reason: str | None = None) -> Path:
        path = root / name
        path.write_bytes(data)
        if reason is None:
            indexed.append(name)
        else:
            skipped[str(path)] = reason
        return path

    for i, colour in enumerate(("red", "green", "blue")):
        make_image(root / f"good{i}.png", colour, "circle" if i % 2 else "square", seed=i)
        indexed.append(f"good{i}.png")
    (root / "good0.txt").write_text("a red square\n")

    # nothing there, cut short, or no picture at all
    put("empty.png", b"", re.escape("empty file"))
    jpeg, png = _encoded(_noise(200, 150, 1), "JPEG"), _encoded(_noise(200, 150, 2), "PNG")
    put("truncated.jpg", jpeg[: len(jpeg) // 2], r"cannot decode image \(image file is truncated")
    put("truncated.png", png[: len(png) // 2], r"cannot decode image \(image file is truncated")
    put("text.jpg", b"<html>this is a web page, not a photo</html>\n", "^not a readable image$")
    put("random.png", np.random.default_rng(3).bytes(5000), "^not a readable image$")
    # decompression bombs: tiny files claiming huge pictures
    put(
        "bomb.png",
        png_claiming(100_000, 100_000),
        re.escape("image too large (100000x100000, 10000 MP > limit 1000 MP)"),
    )
    put("bomb.bmp", bmp_claiming(30_000, 30_000), re.escape(f"image too large (900 MP: {ONLY_STREAMED})"))
    put("cut_huge.png", png_claiming(20_000, 20_000), r"^cannot decode image \(vipspng: ")
    # odd but valid pictures
    grey16 = np.linspace(1000, 3000, 60 * 40).reshape(40, 60).astype(np.uint16)
    put("grey16.png", _encoded(Image.fromarray(grey16), "PNG"))
    rgb16 = np.dstack([np.full((40, 60), v, np.uint16) for v in (60000, 1000, 30000)])
    put("rgb16.png", pyvips.Image.new_from_array(rgb16).copy(interpretation="rgb16").pngsave_buffer())
    cmyk = Image.new("CMYK", (60, 40), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 30, 40))
    put("cmyk.jpg", _encoded(cmyk, "JPEG", quality=95))
    palette = Image.new("P", (60, 40), 0)
    palette.putpalette([0, 200, 0, 10, 10, 10] + [0, 0, 0] * 254)
    palette.paste(1, (30, 0, 60, 40))
    put("palette.png", _encoded(palette, "PNG", transparency=1))
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (*RED, 255)
    put("transparent.png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    frames = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE, (0, 255, 0))]
    put("anim.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50))
    put("anim.webp", _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True))
    put("exif6.jpg", with_orientation(marked(), 6))
    put("exif8.jpg", with_orientation(marked(), 8))
    if huge is not None:
        put("huge.png", huge.read_bytes())
    # files that cannot be read, loops, names that are not UTF-8, things that are not files
    put("unreadable.png", _encoded(_noise(30, 20, 4), "PNG"), re.escape("cannot read file (Permission denied)"))
    make_unreadable(root / "unreadable.png", monkeypatch)
    os.symlink(root / "loop_b.png", root / "loop_a.png")
    os.symlink(root / "loop_a.png", root / "loop_b.png")
    for name in ("loop_a.png", "loop_b.png"):
        skipped[str(root / name)] = re.escape("cannot read file (Too many levels of symbolic links)")
    (root / "sub").mkdir()
    os.symlink(root, root / "sub" / "back_to_root")  # a folder loop: never followed, nothing to report
    bad_name = os.fsencode(root) + b"/caf\xe9.png"
    with open(bad_name, "wb") as handle:
        handle.write(_encoded(_noise(30, 20, 5), "PNG"))
    skipped[str(root / "caf\ufffd.png")] = re.escape("file name is not valid UTF-8")
    make_fifo(root / "pipe.png")  # a FIFO named like a picture: not a file, never opened
    # caption sidecars: bad encoding, absurd size, not a file; their pictures are still indexed
    make_image(root / "latin1.png", "orange", seed=7)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    skipped[str(root / "latin1.txt")] = re.escape("caption file is not UTF-8 text")
    make_image(root / "long.png", "purple", seed=8)
    with open(root / "long.txt", "wb") as handle:
        handle.truncate(MAX_CAPTION_FILE_BYTES * 50)
    skipped[str(root / "long.txt")] = re.escape(
        f"caption file too large ({MAX_CAPTION_FILE_BYTES * 50} bytes > {MAX_CAPTION_FILE_BYTES})"
    )
    make_image(root / "piped.png", "yellow", seed=9)
    if make_fifo(root / "piped.txt"):
        skipped[str(root / "piped.txt")] = re.escape("cannot read caption file (not a regular file)")
    indexed += ["latin1.png", "long.png", "piped.png"]
    # --captions files: one good, one not UTF-8, one absurdly large (sparse: its size is all it has)
    extra = root.parent / "captions"
    extra.mkdir()
    (extra / "good.jsonl").write_text(json.dumps({"path": str(root / "good1.png"), "caption": "a green circle"}) + "\n")
    (extra / "latin1.csv").write_bytes(f"{root / 'good2.png'},caf\xe9\n".encode("latin-1"))
    with open(extra / "huge.csv", "wb") as handle:
        handle.truncate(MAX_CAPTIONS_FILE_BYTES + 1)
    skipped[str(extra / "latin1.csv")] = re.escape("captions file is not UTF-8 text")
    skipped[str(extra / "huge.csv")] = re.escape(
        f"captions file too large ({MAX_CAPTIONS_FILE_BYTES + 1} bytes > {MAX_CAPTIONS_FILE_BYTES})"
    )
    captions = [extra / "good.jsonl", extra / "latin1.csv", extra / "huge.csv"]
    return skipped, indexed, captions


# --- checking an index -----------------------------------------------------------------------------


def image_rows(index: Index) -> dict[str, tuple[str, int, int, int | None]]:
    """relpath -> (sha256, size, mtime_ns, image item id) straight from SQLite."""
    rows = index.store.conn.execute(
        "SELECT f.relpath, f.sha256, f.size, f.mtime_ns, i.id FROM files f "
        "LEFT JOIN items i ON i.file_id = f.id AND i.kind = 'image'"
    )
    return {r[0]: (r[1], int(r[2]), int(r[3]), None if r[4] is None else int(r[4])) for r in rows}


def assert_consistent(index: Index) -> None:
    """SQLite and FAISS hold the same items, and a search reaches every one of them."""
    in_db = set(index.store.item_ids())
    in_faiss = set(index.vectors.ids().tolist())
    assert in_db == in_faiss
    assert index.counts()["items"] == len(in_db) == index.vectors.ntotal
    assert {hit.id for hit in index.search("a picture", k=1000, kind="any")} == in_db


def expected_vector(encoder: Any, data: bytes) -> np.ndarray:
    picture = load_image(data, min_size=decode_size(encoder))
    return encoder.embed_images([picture])[0]


def assert_vectors_match_content(index: Index, encoder: Any, contents: list[bytes]) -> None:
    """Every image item's vector is the embedding of the content whose hash its file records: never a
    vector of some other content."""
    by_hash = {hashlib.sha256(data).hexdigest(): data for data in contents}
    for relpath, (sha256, _, _, item_id) in image_rows(index).items():
        assert item_id is not None, relpath
        assert sha256 in by_hash, f"{relpath}: recorded hash of content never written"
        vector = index.store.vector(item_id)
        assert np.allclose(vector, expected_vector(encoder, by_hash[sha256]), atol=1e-4), relpath


def skips(report: Any) -> dict[str, str]:
    return {s.path: s.reason for s in report.skipped}


# --- the corpus, crawled -------------------------------------------------------------------------


def test_bad_files_are_skipped_with_reasons_and_good_ones_indexed_correctly(
    tmp_path: Path, tiny_encoder, huge_png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    expected_skips, expected_indexed, captions = build_corpus(root, monkeypatch, huge_png)

    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        report = index.add(root, captions=captions)

        got = skips(report)
        assert set(got) == set(expected_skips), set(got) ^ set(expected_skips)
        for path, pattern in expected_skips.items():
            assert re.search(pattern, got[path]), (path, got[path])
        assert len(report.skipped) == len(got)  # each file once
        rows = image_rows(index)
        assert sorted(rows) == sorted(expected_indexed)
        assert report.added == len(expected_indexed) and report.embedded_images == len(expected_indexed)
        assert report.captions_added == 2  # the good sidecar and the good captions file
        assert_consistent(index)
        contents = [(root / name).read_bytes() for name in expected_indexed]
        assert_vectors_match_content(index, tiny_encoder, contents)
        for name in expected_indexed:  # and the recorded hash is that of the file as it is
            assert rows[name][0] == hashlib.sha256((root / name).read_bytes()).hexdigest()

        captions_of = {h.caption for h in index.search("a picture", k=100, kind="caption")}
        assert captions_of == {"a red square", "a green circle"}
        layout = (image_rows(index), sorted(index.store.item_ids()))

        again = index.add(root, captions=captions)
        assert not again.changed
        assert again.unchanged == len(expected_indexed)
        assert skips(again) == got
        assert (image_rows(index), sorted(index.store.item_ids())) == layout
        assert_consistent(index)


def test_cli_reports_every_skip_and_exits_0(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    root = tmp_path / "pics"
    expected_skips, expected_indexed, captions = build_corpus(root, monkeypatch)
    args = ["index", str(root), "--index", str(tmp_path / "idx"), "--model", f"local-dir:{tiny_model_dir}"]
    for captions_file in captions:
        args += ["--captions", str(captions_file)]

    result = CliRunner().invoke(main, args, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert f": {len(expected_indexed)} added," in first and first.endswith(f", {len(expected_skips)} skipped")
    printed = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(printed) == len(expected_skips)
    for path, pattern in expected_skips.items():
        line = next(line for line in printed if line.startswith(f"skipped {path}: "))
        assert re.search(pattern, line[len(f"skipped {path}: ") :]), line


# --- what the indexed pictures look like ---------------------------------------------------------

STREAMED, PIL_ONLY = 0.0, 1e9  # stream_above_megapixels: through libvips always, or never


@pytest.mark.parametrize("stream_above", [PIL_ONLY, STREAMED], ids=["pil", "libvips"])
@pytest.mark.parametrize("orientation, strip_at", [(6, "top"), (8, "bottom"), (3, "right"), (1, "left")])
def test_exif_orientation_turns_the_pixels(orientation: int, strip_at: str, stream_above: float) -> None:
    data = with_orientation(marked(), orientation)
    pixels = np.asarray(load_image(data, stream_above_megapixels=stream_above), dtype=np.int32)
    turned = orientation in (6, 8)
    assert pixels.shape == ((90, 60, 3) if turned else (60, 90, 3))
    edges = {"top": pixels[:5], "bottom": pixels[-5:], "left": pixels[:, :5], "right": pixels[:, -5:]}
    for edge, values in edges.items():
        mean = values.reshape(-1, 3).mean(axis=0)
        if edge == strip_at:
            assert mean[2] > 180 and mean[0] < 60, (edge, mean)  # the blue strip
        else:
            assert mean[0] > 180 and mean[2] < 120, (edge, mean)  # red elsewhere


@pytest.mark.parametrize("stream_above", [PIL_ONLY, STREAMED], ids=["pil", "libvips"])
def test_transparency_becomes_white_on_both_paths(stream_above: float) -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (*RED, 255)
    rgba[:, 30:] = (*BLUE, 0)  # transparent blue: its hidden colour must not show
    palette = Image.new("P", (60, 40), 0)
    palette.putpalette([0, 200, 0, 10, 10, 10] + [0, 0, 0] * 254)
    palette.paste(1, (30, 0, 60, 40))
    for data, left in (
        (_encoded(Image.fromarray(rgba, "RGBA"), "PNG"), RED),
        (_encoded(palette, "PNG", transparency=1), (0, 200, 0)),
    ):
        pixels = np.asarray(load_image(data, stream_above_megapixels=stream_above), dtype=np.int32)
        assert (pixels[:, 30:] == 255).all()
        assert (pixels[:, :30] == left).all()


@pytest.mark.parametrize("stream_above", [PIL_ONLY, STREAMED], ids=["pil", "libvips"])
def test_16_bit_cmyk_and_animations_decode_to_what_they_show(stream_above: float) -> None:
    grey16 = np.linspace(1000, 3000, 60 * 40).reshape(40, 60).astype(np.uint16)
    pixels = np.asarray(load_image(_encoded(Image.fromarray(grey16), "PNG"), stream_above_megapixels=stream_above))
    assert pixels.min() == 0 and pixels.max() == 255  # scaled by its own range, not cut to white
    assert pixels[0].mean() < pixels[-1].mean()
    rgb16 = np.dstack([np.full((4, 6), v, np.uint16) for v in (60000, 1000, 30000)])
    data = pyvips.Image.new_from_array(rgb16).copy(interpretation="rgb16").pngsave_buffer()
    assert np.abs(np.asarray(load_image(data, stream_above_megapixels=stream_above))[0, 0] - (233, 4, 117)).max() <= 2
    cmyk = Image.new("CMYK", (60, 40), (0, 0, 0, 0))
    cmyk.paste((0, 255, 255, 0), (0, 0, 30, 40))
    pixels = np.asarray(load_image(_encoded(cmyk, "JPEG", quality=95), stream_above_megapixels=stream_above))
    left, right = pixels[:, :20].reshape(-1, 3).mean(axis=0), pixels[:, 40:].reshape(-1, 3).mean(axis=0)
    assert left[0] > 200 and left[1] < 60 and left[2] < 60, left  # red (libvips converts with a colour profile)
    assert (right > 245).all(), right
    frames = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE)]
    webp = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert (np.asarray(load_image(webp, stream_above_megapixels=stream_above)) == RED).all()  # the first frame


def test_huge_png_is_streamed_to_the_size_asked(huge_png: Path) -> None:
    picture = load_image(huge_png, min_size=96)
    assert picture.size == (96, 96) and picture.mode == "RGB"
    pixels = np.asarray(picture, dtype=np.int32)
    assert (np.abs(pixels[:, :20] - BLUE) <= 2).all()  # the strip, in place
    assert (pixels[:, 30:] == 255).all()  # transparent -> white


# --- files that vanish or change while a crawl runs ------------------------------------------------


def _hook_hashing(
    patch: pytest.MonkeyPatch,
    target: Path,
    before: Callable[[], None] | None = None,
    after: Callable[[], None] | None = None,
) -> None:
    """Run `before`/`after` around the crawler's hashing of `target`: the moment between walking the
    folder and decoding the picture."""
    real = pipeline.hash_file

    def hooked(path: Path):
        if Path(path) == target and before:
            before()
        content = real(path)
        if Path(path) == target and after:
            after()
        return content

    patch.setattr(pipeline, "hash_file", hooked)


def _rewrite(path: Path, seed: int) -> Callable[[], None]:
    def rewrite() -> None:
        stat = path.stat()
        make_image(path, "blue", "circle", size=(80, 50), seed=seed)  # other pixels, other size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    return rewrite


@pytest.mark.parametrize(
    "case, keep_in_memory, reason",
    [
        ("vanish before hashing", True, "file vanished during the crawl"),
        ("vanish before decoding", False, "file vanished during the crawl"),
        ("rewritten before hashing", True, None),
        ("rewritten after hashing, decoded from memory", True, None),
        ("rewritten after hashing, decoded from disk", False, "file changed while being read"),
        ("growing while hashed", True, "file changed while being read"),
    ],
)
def test_files_vanishing_or_changing_during_the_crawl(
    tmp_path: Path, tiny_encoder, make_images, case: str, keep_in_memory: bool, reason: str | None
) -> None:
    root = tmp_path / "pics"
    make_images(root, 3)
    target = root / "img1.png"
    original = target.read_bytes()
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        with pytest.MonkeyPatch.context() as patch:
            if not keep_in_memory:  # as a file too big to keep in memory: decoded from disk after hashing
                patch.setattr(crawl, "KEEP_BYTES_BELOW", 1)
            if case.startswith("vanish"):
                _hook_hashing(patch, target, **{"before" if keep_in_memory else "after": target.unlink})
            elif case == "rewritten before hashing":
                _hook_hashing(patch, target, before=_rewrite(target, seed=50))
            elif case.startswith("rewritten after hashing"):
                _hook_hashing(patch, target, after=_rewrite(target, seed=51))
            else:
                _grow_while_read(patch, target)
            report = index.add(root)

        assert_consistent(index)
        now = target.read_bytes() if target.exists() else b""
        others = [p.read_bytes() for p in root.iterdir() if p != target]
        assert_vectors_match_content(index, tiny_encoder, [original, now, *others])
        rows = image_rows(index)
        if reason:
            assert skips(report) == {str(target): reason}
            assert "img1.png" not in rows and len(rows) == 2
        else:
            assert report.skipped == [] and len(rows) == 3
            read = original if "after hashing" in case else now
            assert rows["img1.png"][0] == hashlib.sha256(read).hexdigest()

        # the next crawl brings the index in line with the disk, whatever happened
        index.add(root)
        rows = image_rows(index)
        assert sorted(rows) == sorted(p.name for p in root.iterdir())
        for path in root.iterdir():
            info = path.stat()
            recorded = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_size, info.st_mtime_ns)
            assert rows[path.name][:3] == recorded
        assert_vectors_match_content(index, tiny_encoder, [p.read_bytes() for p in root.iterdir()])
        assert_consistent(index)
        assert not index.add(root).changed


def _grow_while_read(patch: pytest.MonkeyPatch, target: Path) -> None:
    """The file grows between the crawler's two looks at it while it hashes it."""
    real_open = crawl.open_regular

    class Growing:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

        def __enter__(self) -> Growing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            with open(target, "ab") as grow:
                grow.write(b"\0" * 10)
            return self.handle.read(size)

    def opening(path: Path, allow_pipe: bool = False) -> Any:
        handle = real_open(path, allow_pipe)
        return Growing(handle) if Path(path) == target else handle

    patch.setattr(crawl, "open_regular", opening)


def test_file_rewritten_before_hashing_is_recorded_as_read(tmp_path: Path, tiny_encoder, make_images) -> None:
    """Rewritten between the walk and the hashing: what is recorded (size, time, hash, vector) is the new
    content, so the next crawl has nothing left to do."""
    root = tmp_path / "pics"
    make_images(root, 2)
    target = root / "img0.png"
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        with pytest.MonkeyPatch.context() as patch:
            _hook_hashing(patch, target, before=_rewrite(target, seed=60))
            index.add(root)
        again = index.add(root)
        assert again.unchanged == 2 and not again.changed and again.embedded_images == 0


# --- the real huge PNGs of openclipart-png -----------------------------------------------------------

OPENCLIPART = Path("/usr/share/openclipart/png")


def _largest_png(folder: Path) -> tuple[Path, int, int] | None:
    best: tuple[int, Path, int, int] | None = None
    for path in folder.rglob("*.png"):
        with open(path, "rb") as handle:
            head = handle.read(24)
        width, height = struct.unpack(">II", head[16:24])
        if best is None or width * height > best[0]:
            best = (width * height, path, width, height)
    return None if best is None else best[1:]


@pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="openclipart-png is not installed")
def test_largest_openclipart_png_decodes_with_bounded_memory() -> None:
    found = _largest_png(OPENCLIPART)
    assert found is not None
    path, width, height = found
    assert width * height > 500e6  # the 623-megapixel stop signs
    script = textwrap.dedent("""
        import json, resource, sys, time
        import numpy as np
        from vecsearch.images import load_image
        start = time.perf_counter()
        picture = load_image(sys.argv[1], min_size=672)
        seconds = time.perf_counter() - start
        try:  # this process's own high-water mark (ru_maxrss would include the forking parent's)
            status = open("/proc/self/status").read()
            peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        except (OSError, IndexError):
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        pixels = np.asarray(picture, dtype=np.int32)
        red = float(((pixels[..., 0] > 150) & (pixels[..., 1] < 90)).mean())
        corners = [pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]]
        white_corners = all(int(c.min()) == 255 for c in corners)
        print(json.dumps({"size": picture.size, "seconds": seconds, "peak_mb": peak_mb, "red": red,
                          "white_corners": white_corners}))
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert min(result["size"]) == 672
    assert abs(max(result["size"]) - 672 * max(width, height) / min(width, height)) <= 1
    # a red stop sign in the middle of a transparent (so white) page: really decoded, not a grey blank
    assert 0.05 < result["red"] < 0.5 and result["white_corners"], result
    # decoded whole, the picture would need 2.5 GB as RGBA; streamed, the process stays small
    assert result["peak_mb"] < 600, result
    assert time.monotonic() - started < 30, result
