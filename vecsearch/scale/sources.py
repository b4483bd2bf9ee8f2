"""What a distributed crawl reads: folders, listing files (Parquet, CSV, JSONL), WebDataset tar shards
and remote folders, on a local disk or behind a URI (`s3://`, `gs://`, `file://`, ... through fsspec).

Each source lists into the crawler's own `FoundFile`s, so the crawler's rules apply to all of them. For
sources that are not folders on this machine's disk, a picture's captions come with it
(`FoundFile.captions`) and its bytes are read through `read_entry`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ..crawl import (
    DEFAULT_EXCLUDES,
    MAX_CAPTION_FILE_BYTES,
    SIDECAR_SUFFIXES,
    FoundFile,
    Skip,
    WalkResult,
    _excluded,
    clean_captions,
    inline_signature,
    open_regular,
)
from ..errors import VecsearchError
from ..images import IMAGE_EXTENSIONS, is_image_path
from ..roots import FOLDER, LISTING, REMOTE_FOLDER, WEBDATASET, root_kind
from ..sidecars import DEFAULT_LANGUAGES, sidecar_captions
from ..store import RootRow

LISTING_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")
PATH_COLUMNS = ("path", "image_path", "image", "file", "filename", "filepath", "key", "url")
CAPTION_COLUMNS = ("caption", "captions", "text", "title", "description")
STAT_THREADS = 32  # listed files are stat'ed in parallel: on network storage each stat is a round trip


@dataclass(frozen=True)
class Source:
    """One SOURCE argument: its kind (see `vecsearch.roots`) and where it is (absolute path or URI)."""

    kind: str
    location: str

    @property
    def remote(self) -> bool:
        return "://" in self.location


@dataclass
class Listed:
    """What listing one source found; for tar shards, where each member's bytes start."""

    walk: WalkResult
    offsets: dict[str, int] = field(default_factory=dict)


def parse_source(text: str) -> Source:
    """Recognise a SOURCE: a URI or a path; a folder, a listing file, a tar shard or a picture."""
    if "://" in text:
        name = text.rstrip("/").rsplit("/", 1)[-1].lower()
        if name.endswith(".tar"):
            return Source(WEBDATASET, text)
        if name.endswith(LISTING_SUFFIXES):
            return Source(LISTING, text)
        return Source(REMOTE_FOLDER, text.rstrip("/"))
    path = Path(os.path.abspath(Path(text).expanduser()))
    if not path.exists():
        raise VecsearchError(f"path not found: {text}")
    path = path.resolve()
    suffix = path.suffix.lower()
    if path.is_dir() or (path.is_file() and is_image_path(path)):
        return Source(FOLDER, str(path))
    if suffix == ".tar":
        return Source(WEBDATASET, str(path))
    if suffix in LISTING_SUFFIXES:
        return Source(LISTING, str(path))
    raise VecsearchError(f"not a folder, picture, listing (.parquet, .csv, .jsonl) or WebDataset shard (.tar): {text}")


def filesystem(location: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URI and the path within it (a missing protocol says how to install it)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise VecsearchError(f"cannot open {location}: {exc}") from exc
    return fs, path


# --- listing files -----------------------------------------------------------------------------------


def list_listing(source: Source, path_column: str | None = None, caption_columns: Sequence[str] = ()) -> Listed:
    """The pictures a Parquet, CSV or JSONL listing names, with their captions, stat'ed in parallel.

    Relative paths are taken from the listing's folder. A path listed twice is one picture with the
    captions of both rows. Missing and empty files are skipped with their reason, as the crawler does.
    """
    table = _read_table(source)
    names = [name.lower() for name in table.column_names]
    column = _pick(table.column_names, names, [path_column] if path_column else PATH_COLUMNS, source, "path")
    wanted = list(caption_columns) or [c for c in CAPTION_COLUMNS if c in names]
    captions_of = [table.column_names[names.index(c.lower())] for c in wanted if c.lower() in names]
    missing = [c for c in caption_columns if c.lower() not in names]
    if missing:
        raise VecsearchError(f"{source.location}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    base = source.location.rsplit("/", 1)[0] if source.remote else str(Path(source.location).parent)
    rows: dict[str, list[str]] = {}
    paths = table.column(column).to_pylist()
    caption_values = [table.column(c).to_pylist() for c in captions_of]
    for number, raw in enumerate(paths):
        if not isinstance(raw, str) or not raw.strip():
            continue
        target = _resolve(raw.strip(), base)
        lines = rows.setdefault(target, [])
        for values in caption_values:
            value = values[number]
            lines.extend(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
    root = Path(source.location)
    result = WalkResult()
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        for target, info in zip(rows, pool.map(_stat_entry, rows), strict=True):
            if isinstance(info, str):
                result.skipped.append(Skip(target, info))
                continue
            captions = tuple(clean_captions([str(line) for line in rows[target]]))
            result.files.append(FoundFile(target, root, info[0], info[1], None, inline_signature(captions), captions))
    return Listed(result)


def _read_table(source: Source) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    fs, path = filesystem(source.location) if source.remote else (None, source.location)
    suffix = PurePosixPath(path).suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path, filesystem=fs)
        with fs.open(path, "rb") if fs is not None else open(path, "rb") as handle:
            if suffix == ".csv":
                return pcsv.read_csv(handle)
            return pjson.read_json(handle)
    except (OSError, pa.ArrowInvalid) as exc:
        raise VecsearchError(f"cannot read listing {source.location}: {exc}") from exc


def _pick(columns: list[str], lowered: list[str], wanted: Sequence[str], source: Source, what: str) -> str:
    for name in wanted:
        if name.lower() in lowered:
            return columns[lowered.index(name.lower())]
    raise VecsearchError(
        f"{source.location}: no {what} column (looked for {', '.join(wanted)}; columns: {', '.join(columns)}); "
        "name it with --path-column"
    )


def _resolve(raw: str, base: str) -> str:
    if "://" in raw:
        return raw
    if "://" in base:
        return raw if raw.startswith("/") else f"{base}/{raw}"
    return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))


def _stat_entry(target: str) -> tuple[int, int] | str:
    """(size, mtime in ns) of a listed file, or why it cannot be indexed."""
    try:
        if "://" in target:
            fs, path = filesystem(target)
            info = fs.info(path)
            if info.get("type") == "directory":
                return "not a file"
            size, mtime = int(info.get("size") or 0), _mtime_ns(info)
        else:
            st = os.stat(target)
            if not stat.S_ISREG(st.st_mode):
                return "not a regular file"
            size, mtime = st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        return "file not found"
    except (OSError, VecsearchError) as exc:
        return f"cannot read file ({getattr(exc, 'strerror', None) or exc})"
    return "empty file" if size == 0 else (size, mtime)


def _mtime_ns(info: dict[str, Any]) -> int:
    """A modification time from whatever an fsspec filesystem reports (seconds, datetime, ISO text); an
    object store without one gives its ETag instead, which changes with the content just the same."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return int(value * 1_000_000_000)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1_000_000_000)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000_000)
            except ValueError:
                continue
    tag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "")
    return int.from_bytes(tag.encode()[:8].ljust(8, b"\0"), "little") & ((1 << 62) - 1)


# --- WebDataset shards -------------------------------------------------------------------------------


def list_tar(source: Source, languages: Sequence[str] = DEFAULT_LANGUAGES) -> Listed:
    """The pictures of a WebDataset shard (img2dataset's layout: `key.jpg` with `key.txt` and/or
    `key.json` holding its caption, lines in `languages` kept), with where each one's bytes start in the tar."""
    result, offsets = WalkResult(), {}
    captions: dict[str, list[str]] = {}
    pictures: list[tarfile.TarInfo] = []
    root = Path(source.location)
    try:
        with _open_binary(source.location) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, suffix = os.path.splitext(member.name)
                suffix = suffix.lower()
                if suffix in IMAGE_EXTENSIONS:
                    pictures.append(member)
                elif suffix in (".txt", ".json") and member.size <= MAX_CAPTION_FILE_BYTES:
                    extracted = tar.extractfile(member)
                    data = extracted.read() if extracted is not None else b""
                    captions.setdefault(stem, []).extend(_caption_lines(data, suffix, languages))
    except (OSError, tarfile.TarError, VecsearchError) as exc:
        result.skipped.append(Skip(source.location, f"cannot read tar shard ({exc})"))
        return Listed(result)
    for member in pictures:
        if member.size == 0:
            result.skipped.append(Skip(f"{source.location}/{member.name}", "empty file"))
            continue
        lines = tuple(clean_captions(captions.get(os.path.splitext(member.name)[0], [])))
        mtime = int(member.mtime * 1_000_000_000)
        result.files.append(FoundFile(member.name, root, member.size, mtime, None, inline_signature(lines), lines))
        offsets[member.name] = member.offset_data
    return Listed(result, offsets)


def _caption_lines(data: bytes, suffix: str, languages: Sequence[str]) -> list[str]:
    return [caption.text for caption in sidecar_captions(data, suffix, languages)[0]]


def _open_binary(location: str) -> Any:
    if "://" in location:
        fs, path = filesystem(location)
        return fs.open(path, "rb")
    return open_regular(Path(location))


# --- remote folders ----------------------------------------------------------------------------------


def list_remote_folder(
    source: Source,
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
) -> Listed:
    """The pictures under a folder URI, with the local crawler's rules for hidden and excluded names
    and sidecar captions (`cat.jpg` + `cat.txt`)."""
    fs, base = filesystem(source.location)
    try:
        found = fs.find(base, detail=True)
    except OSError as exc:
        raise VecsearchError(f"cannot list {source.location}: {exc}") from exc
    patterns = tuple(DEFAULT_EXCLUDES) + tuple(exclude)
    base = base.rstrip("/")
    infos = {path[len(base) + 1 :]: info for path, info in found.items() if path.startswith(base + "/")}
    result = WalkResult()
    for relpath in sorted(infos):
        parts = relpath.split("/")
        if any(_excluded(name, "/".join(parts[: i + 1]), patterns, include_hidden) for i, name in enumerate(parts)):
            continue
        if os.path.splitext(relpath)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        info = infos[relpath]
        size = int(info.get("size") or 0)
        if size == 0:
            result.skipped.append(Skip(f"{source.location}/{relpath}", "empty file"))
            continue
        captions: tuple[str, ...] = ()
        stem = os.path.splitext(relpath)[0]
        for suffix in SIDECAR_SUFFIXES:
            sidecar = stem + suffix
            if sidecar in infos and int(infos[sidecar].get("size") or 0) <= MAX_CAPTION_FILE_BYTES:
                captions = tuple(clean_captions(_caption_lines(fs.cat_file(f"{base}/{sidecar}"), suffix, languages)))
                break
        mtime = _mtime_ns(info)
        result.files.append(
            FoundFile(relpath, Path(source.location), size, mtime, None, inline_signature(captions), captions)
        )
    return Listed(result)


# --- reading ------------------------------------------------------------------------------------------


def read_entry(kind: str, location: str, key: str, offset: int = -1, size: int = 0) -> bytes:
    """The bytes of a picture that is not a file in a local folder (OSError when they cannot be read)."""
    try:
        if kind == WEBDATASET:
            with _open_binary(location) as handle:
                handle.seek(offset)
                data: bytes = handle.read(size)
            if len(data) != size:
                raise OSError(f"tar shard ends inside {key}")
            return data
        target = key if kind == LISTING else location.rstrip("/") + "/" + key
        if "://" in target:
            fs, path = filesystem(target)
            return bytes(fs.cat_file(path))
        with open_regular(Path(target)) as handle:
            return handle.read()
    except VecsearchError as exc:
        raise OSError(str(exc)) from exc


def read_indexed(kind: str, location: str, key: str) -> bytes:
    """The bytes of an indexed picture that is not a file in a local folder, found by its root and key
    (a tar member is looked up by name: the index keeps no offsets). OSError when it cannot be read."""
    if kind != WEBDATASET:
        return read_entry(kind, location, key)
    try:
        with _open_binary(location) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            member = tar.extractfile(tar.getmember(key))
            if member is None:
                raise OSError(f"{key} is not a file in {location}")
            return member.read()
    except (KeyError, tarfile.TarError, VecsearchError) as exc:
        raise OSError(f"cannot read {key} from {location}: {exc}") from exc


def picture_of(root: RootRow, relpath: str, sha256: str) -> bytes | None:
    """The indexed picture at `relpath` of a root that is not a local folder, read from its source; None
    for a local folder's file (open its path), and when the source no longer holds the indexed content."""
    if root_kind(root) == FOLDER:
        return None
    try:
        data = read_indexed(root_kind(root), root.path, relpath)
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None
