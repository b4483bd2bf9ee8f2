"""Walk folders into the image files and captions an index should hold.

Only `stat` happens here: a re-crawl of an unchanged tree reads no file contents. Hashing and decoding
happen later, and only for files whose size or modification time changed.
"""

from __future__ import annotations

import csv
import errno
import fnmatch
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import CaptionsFileError
from .images import IMAGE_EXTENSIONS
from .sidecars import DEFAULT_LANGUAGES, SidecarCaption, sidecar_captions

# Folders that hold thumbnails, system files or dependencies rather than a person's pictures.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "@eaDir",
    "#recycle",
    "$RECYCLE.BIN",
    "System Volume Information",
    "node_modules",
    "__pycache__",
)
# A picture's caption sidecar: text (one caption per line, or Tux Paint's per-language lines), else the
# JSON that img2dataset writes beside each picture.
SIDECAR_SUFFIXES = (".txt", ".TXT", ".json", ".JSON")
MAX_CAPTION_FILE_BYTES = 1 << 20
MAX_CAPTION_CHARS = 2000
# A --captions file above this is refused (not read): 256 MiB is well over a million rows of path and
# caption, and the whole text is held in memory while it is parsed.
MAX_CAPTIONS_FILE_BYTES = 256 << 20
# Files below this are hashed and decoded from the same bytes in memory; bigger ones are hashed and then
# decoded from disk, after which their size and modification time are checked again.
KEEP_BYTES_BELOW = 64 << 20


@dataclass(frozen=True, slots=True)
class FoundFile:
    """An image file seen on disk, with its caption sidecar if it has one.

    A crawl holds one of these per file, so it keeps strings and one shared root rather than Path
    objects: about 260 instead of 830 bytes a file, measured on a tree of 100,000 pictures.
    """

    relpath: str  # POSIX form, relative to the crawl root
    root: Path
    size: int
    mtime_ns: int
    sidecar_name: str | None = None  # the sidecar's file name, in the picture's folder
    sidecar_sig: str | None = None
    # Captions that came with the picture itself (a listing's caption column, a WebDataset's .txt):
    # they take the place of a sidecar, and `sidecar_sig` is then `inline_signature(captions)`.
    captions: tuple[str, ...] | None = None

    @property
    def path(self) -> Path:
        return self.root / self.relpath

    @property
    def sidecar(self) -> Path | None:
        return None if self.sidecar_name is None else self.path.with_name(self.sidecar_name)


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass
class WalkResult:
    files: list[FoundFile] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # subfolders left for others to walk (descend=False)


def walk(
    root: Path,
    start: Path | None = None,
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    descend: bool = True,
) -> WalkResult:
    """Image files under `start` (default: the whole root), skipping hidden and excluded names.

    Folder symlinks are not followed (no loops, no leaving the tree); file symlinks are. With `descend`
    false, only `start` itself is listed and its subfolders are returned, to be walked in parallel.
    """
    result = WalkResult()
    patterns = tuple(DEFAULT_EXCLUDES) + tuple(exclude)
    start = start or root
    if start.is_file():
        found = _found_file(root, start, _sidecars_beside(start))
        if isinstance(found, Skip):
            result.skipped.append(found)
        elif found is not None:
            result.files.append(found)
        return result
    stack = [start]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            result.skipped.append(Skip(display_path(folder), f"cannot list folder ({exc.strerror or exc})"))
            continue
        names = {entry.name for entry in entries}
        subfolders = []
        for entry in entries:
            relpath = _relpath(root, Path(entry.path))
            if _excluded(entry.name, relpath, patterns, include_hidden):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(Path(entry.path))
                continue
            if Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found = _found_file(root, Path(entry.path), _sidecar_for(folder, entry.name, names))
            if isinstance(found, Skip):
                result.skipped.append(found)
            elif found is not None:
                result.files.append(found)
        if descend:
            stack.extend(reversed(subfolders))
        else:
            result.folders.extend(subfolders)
    return result


def _found_file(root: Path, path: Path, sidecar: Path | None) -> FoundFile | Skip | None:
    if Path(path.name).suffix.lower() not in IMAGE_EXTENSIONS:
        return Skip(str(path), "not an image file extension")
    relpath = _relpath(root, path)
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return Skip(display_path(path), "file name is not valid UTF-8")
    try:
        info = path.stat()
    except OSError as exc:
        return Skip(str(path), f"cannot read file ({exc.strerror or exc})")
    if not stat.S_ISREG(info.st_mode):
        return None
    if info.st_size == 0:
        return Skip(str(path), "empty file")
    sidecar_sig = None
    if sidecar is not None:
        try:
            side = sidecar.stat()
            sidecar_sig = f"{side.st_size}:{side.st_mtime_ns}"
        except OSError:
            sidecar = None
    sidecar_name = sidecar.name if sidecar is not None else None
    return FoundFile(relpath, root, info.st_size, info.st_mtime_ns, sidecar_name, sidecar_sig)


def display_path(path: str | Path) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 show as U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _sidecar_for(folder: Path, image_name: str, names: set[str]) -> Path | None:
    stem = Path(image_name).stem
    for suffix in SIDECAR_SUFFIXES:
        if stem + suffix in names:
            return folder / (stem + suffix)
    return None


def _sidecars_beside(path: Path) -> Path | None:
    for suffix in SIDECAR_SUFFIXES:
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _relpath(root: Path, path: Path) -> str:
    return PurePosixPath(*path.relative_to(root).parts).as_posix() if path != root else ""


def _excluded(name: str, relpath: str, patterns: Sequence[str], include_hidden: bool) -> bool:
    if not include_hidden and name.startswith("."):
        return True
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(relpath, p) for p in patterns)


def read_sidecar(path: Path, languages: Sequence[str] = DEFAULT_LANGUAGES) -> tuple[list[SidecarCaption], str | None]:
    """Captions of a sidecar, read for its kind (see `sidecars`): (captions with the language the sidecar
    gave each, reason if it was refused)."""
    try:
        data = _read_bounded(path, MAX_CAPTION_FILE_BYTES)
    except _TooLarge as exc:
        return [], f"caption file too large ({exc.size} bytes > {MAX_CAPTION_FILE_BYTES})"
    except OSError as exc:
        return [], f"cannot read caption file ({exc.strerror or exc})"
    captions, reason = sidecar_captions(data, path.suffix, languages)
    return clean_sidecar_captions(captions), reason


def clean_sidecar_captions(captions: Sequence[SidecarCaption]) -> list[SidecarCaption]:
    """`clean_captions` for captions that carry their language: the first one of a text keeps its own."""
    language: dict[str, str | None] = {}
    for caption in captions:
        language.setdefault(" ".join(caption.text.split())[:MAX_CAPTION_CHARS], caption.language)
    return [SidecarCaption(text, language.get(text)) for text in clean_captions([c.text for c in captions])]


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def open_regular(path: Path, allow_pipe: bool = False) -> BinaryIO:
    """Open a file for reading, refusing (OSError) anything but a regular file, or a pipe when allowed.

    Opening does not block: a FIFO or device named like a picture or caption would otherwise hang the
    crawl on its first read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or (allow_pipe and stat.S_ISFIFO(mode))):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if stat.S_ISFIFO(mode):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bounded(path: Path, limit: int, allow_pipe: bool = False) -> bytes:
    """The whole file, or _TooLarge when it holds more than `limit` bytes (found without reading it all
    when the size is known, and without ever holding more than `limit` + 1 bytes when it is not)."""
    with open_regular(path, allow_pipe) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise _TooLarge(size)
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while we read it, or it is a pipe
        raise _TooLarge(len(data))
    return data


def clean_captions(lines: Sequence[str]) -> list[str]:
    """Stripped, non-empty, distinct captions in their original order, each of bounded length."""
    seen: set[str] = set()
    captions = []
    for line in lines:
        caption = " ".join(line.split())[:MAX_CAPTION_CHARS]
        if caption and caption not in seen and "\x00" not in caption:
            seen.add(caption)
            captions.append(caption)
    return captions


def read_captions_file(path: Path) -> dict[Path, list[str]]:
    """Captions from a CSV (path,caption) or JSONL ({"path": ..., "caption": ...}) file.

    Relative image paths are taken from the captions file's folder. Several rows may name one image.
    Raises CaptionsFileError for a file that is missing, unreadable, not UTF-8, too large or malformed.
    """
    captions, reason = read_captions_source(path)
    if reason:
        raise CaptionsFileError(f"{reason}: {path}")
    return captions


def read_captions_source(path: Path) -> tuple[dict[Path, list[str]], str | None]:
    """Like `read_captions_file`, but bad data is a reason instead of an error: (captions, reason).

    A file that cannot be read, is not UTF-8 or is absurdly large is refused with a reason, so that a
    crawl skips it and goes on. A missing file or a malformed row still raises CaptionsFileError: that
    is a mistake in the command or the file's syntax, which the user must see before anything changes.
    """
    try:
        data = _read_bounded(path, MAX_CAPTIONS_FILE_BYTES, allow_pipe=True)
    except FileNotFoundError as exc:
        raise CaptionsFileError(f"captions file not found: {path}") from exc
    except _TooLarge as exc:
        return {}, f"captions file too large ({exc.size} bytes > {MAX_CAPTIONS_FILE_BYTES})"
    except OSError as exc:
        return {}, f"cannot read captions file ({exc.strerror or exc})"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return {}, "captions file is not UTF-8 text"
    del data
    rows = _jsonl_rows(path, text) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_rows(path, text)
    captions: dict[Path, list[str]] = {}
    for image, caption in _checked_rows(path, rows):
        target = Path(image).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        captions.setdefault(Path(os.path.abspath(target)), []).append(caption)
    return {image: clean_captions(lines) for image, lines in captions.items()}, None


def _checked_rows(path: Path, rows: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    try:
        yield from rows
    except csv.Error as exc:
        raise CaptionsFileError(f"{path}: not a valid CSV file ({exc})") from exc


_PATH_KEYS = ("path", "image", "file", "filename", "filepath")
_CAPTION_KEYS = ("caption", "text", "title", "description")


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaptionsFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise CaptionsFileError(f"{path}:{number}: expected an object with path and caption")
        image = next((record[k] for k in _PATH_KEYS if k in record), None)
        caption = next((record[k] for k in _CAPTION_KEYS if k in record), None)
        if not isinstance(image, str) or not isinstance(caption, str):
            raise CaptionsFileError(f"{path}:{number}: needs string fields 'path' and 'caption'")
        yield image, caption


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text))
    first: list[str] | None = None  # the first row that is not blank: a header when it names both columns
    path_col, caption_col = 0, 1
    for number, row in enumerate(reader, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if first is None:
            first = [cell.strip().lower() for cell in row]
            if any(k in first for k in _PATH_KEYS) and any(k in first for k in _CAPTION_KEYS):
                path_col = next(first.index(k) for k in _PATH_KEYS if k in first)
                caption_col = next(first.index(k) for k in _CAPTION_KEYS if k in first)
                continue
        if len(row) <= max(path_col, caption_col):
            raise CaptionsFileError(f"{path}:{number}: expected two columns: path,caption")
        yield row[path_col].strip(), row[caption_col]


@dataclass(frozen=True)
class FileContent:
    """A file's hash with the size and modification time it had while it was read, and its bytes when
    small enough to decode from memory afterwards."""

    sha256: str
    data: bytes | None
    size: int
    mtime_ns: int
    stable: bool  # the same size and modification time before and after reading


def hash_file(path: Path) -> FileContent:
    """Hash a regular file (OSError for anything else), noticing whether it changed while being read."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        before = os.fstat(handle.fileno())
        data: bytes | None = handle.read(KEEP_BYTES_BELOW)
        digest.update(data or b"")
        if data is not None and len(data) >= KEEP_BYTES_BELOW:
            data = None
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        after = os.fstat(handle.fileno())
    stable = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
    return FileContent(digest.hexdigest(), data, after.st_size, after.st_mtime_ns, stable)


def file_sha256(path: Path) -> tuple[str, bytes | None]:
    """Content hash of a file, and its bytes when small enough to decode from memory afterwards."""
    content = hash_file(path)
    return content.sha256, content.data


def inline_signature(captions: Sequence[str]) -> str:
    """What a crawl records for captions that came with the picture, to notice when they change."""
    return "inline:" + text_hash("\n".join(captions))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
