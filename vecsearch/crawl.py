"""Walk folders into the image files and captions an index should hold.

Only `stat` happens here: a re-crawl of an unchanged tree reads no file contents. Hashing and decoding
happen later, and only for files whose size or modification time changed.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from .errors import CaptionsFileError
from .images import IMAGE_EXTENSIONS

# Folders that hold thumbnails, system files or dependencies rather than a person's pictures.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    "@eaDir",
    "#recycle",
    "$RECYCLE.BIN",
    "System Volume Information",
    "node_modules",
    "__pycache__",
)
SIDECAR_SUFFIXES = (".txt", ".TXT")
MAX_CAPTION_FILE_BYTES = 1 << 20
MAX_CAPTION_CHARS = 2000


@dataclass(frozen=True)
class FoundFile:
    """An image file seen on disk, with its caption sidecar if it has one."""

    relpath: str  # POSIX form, relative to the crawl root
    path: Path
    size: int
    mtime_ns: int
    sidecar: Path | None = None
    sidecar_sig: str | None = None


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass
class WalkResult:
    files: list[FoundFile] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def walk(
    root: Path,
    start: Path | None = None,
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
) -> WalkResult:
    """Image files under `start` (default: the whole root), skipping hidden and excluded names.

    Folder symlinks are not followed (no loops, no leaving the tree); file symlinks are.
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
            result.skipped.append(Skip(str(folder), f"cannot list folder ({exc.strerror or exc})"))
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
        stack.extend(reversed(subfolders))
    return result


def _found_file(root: Path, path: Path, sidecar: Path | None) -> FoundFile | Skip | None:
    if Path(path.name).suffix.lower() not in IMAGE_EXTENSIONS:
        return Skip(str(path), "not an image file extension")
    relpath = _relpath(root, path)
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return Skip(os.fsencode(path).decode("utf-8", "replace"), "file name is not valid UTF-8")
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
    return FoundFile(relpath, path, info.st_size, info.st_mtime_ns, sidecar, sidecar_sig)


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


def read_sidecar(path: Path) -> tuple[list[str], str | None]:
    """Captions of a sidecar: one per non-empty line. Returns (captions, reason if it was refused)."""
    try:
        size = path.stat().st_size
        if size > MAX_CAPTION_FILE_BYTES:
            return [], f"caption file too large ({size} bytes > {MAX_CAPTION_FILE_BYTES})"
        data = path.read_bytes()
    except OSError as exc:
        return [], f"cannot read caption file ({exc.strerror or exc})"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "caption file is not UTF-8 text"
    return clean_captions(text.splitlines()), None


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
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise CaptionsFileError(f"captions file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise CaptionsFileError(f"captions file is not UTF-8 text: {path}") from exc
    except OSError as exc:
        raise CaptionsFileError(f"cannot read captions file {path} ({exc.strerror or exc})") from exc
    rows = _jsonl_rows(path, text) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_rows(path, text)
    captions: dict[Path, list[str]] = {}
    for image, caption in _checked_rows(path, rows):
        target = Path(image).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        captions.setdefault(Path(os.path.abspath(target)), []).append(caption)
    return {image: clean_captions(lines) for image, lines in captions.items()}


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
    header: list[str] | None = None
    for number, row in enumerate(reader, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and header is None:
            lowered = [cell.strip().lower() for cell in row]
            if any(k in lowered for k in _PATH_KEYS) and any(k in lowered for k in _CAPTION_KEYS):
                header = lowered
                continue
        if header is not None:
            path_col = next(header.index(k) for k in _PATH_KEYS if k in header)
            caption_col = next(header.index(k) for k in _CAPTION_KEYS if k in header)
        else:
            path_col, caption_col = 0, 1
        if len(row) <= max(path_col, caption_col):
            raise CaptionsFileError(f"{path}:{number}: expected two columns: path,caption")
        yield row[path_col].strip(), row[caption_col]


def file_sha256(path: Path) -> tuple[str, bytes | None]:
    """Content hash of a file, and its bytes when small enough to decode from memory afterwards."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        data = handle.read(64 << 20)
        digest.update(data)
        if len(data) < 64 << 20:
            return digest.hexdigest(), data
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest(), None


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
