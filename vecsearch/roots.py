"""Crawl roots: which recorded folder a crawled path belongs to, and how recorded folders combine.

A root is a folder the index remembers, with its options (exclude patterns, hidden files). File paths are
stored relative to their root. The rules:
- a folder inside a recorded folder is crawled as a subtree of that root;
- a folder that contains recorded folders becomes a root and takes their files in (their patterns are
  rewritten to keep meaning the same files);
- a single image file joins the root that contains it, or makes its folder a "listed files only" root,
  whose later re-crawls look only at the files given; a folder crawled inside such a root becomes a root
  of its own and takes the listed files below it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VecsearchError
from .images import is_image_path
from .pathutil import is_within, relative_posix
from .store import RootRow, Store

FOLDER = "folder"
# Roots that are not a folder walked on this machine: made by the distributed crawl (vecsearch.scale).
LISTING, WEBDATASET, REMOTE_FOLDER = "listing", "webdataset", "remote-folder"
SOURCE_KINDS = (FOLDER, LISTING, WEBDATASET, REMOTE_FOLDER)


def root_kind(root: RootRow) -> str:
    """What a root is: a folder (the local crawler's), a listing file, a WebDataset tar or a remote folder."""
    return str(root.options.get("source", FOLDER))


def item_location(root: RootRow, where: Path, relpath: str) -> str:
    """Where an indexed file is, as a user names it: a path on disk, a listed path or URI, a member of
    a tar shard (`shard.tar/key.jpg`) or a file under a remote folder's URI."""
    kind = root_kind(root)
    if kind == FOLDER:
        return str(where / relpath)
    if kind == LISTING:
        return relpath  # recorded as listed: an absolute path or a URI
    return root.path.rstrip("/") + "/" + relpath


def locate_root(index_path: Path, location: str | None, root: RootRow) -> Path:
    """Where a crawl root is now: its recorded path, or the same place relative to the index when the
    index was moved (or copied) together with the tree (`location` is where the index was saved)."""
    absolute = Path(root.path)
    relative = Path(os.path.normpath(index_path.resolve() / root.relpath))
    moved = location != str(index_path.resolve())
    for candidate in (relative, absolute) if moved else (absolute, relative):
        if candidate.is_dir():
            return candidate
    return absolute


@dataclass
class Scope:
    """What to crawl in one root: the whole of it, subfolders, or single files."""

    root: RootRow
    folder: Path
    starts: list[Path] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    @property
    def exclude(self) -> list[str]:
        return list(self.root.options.get("exclude", []))

    @property
    def include_hidden(self) -> bool:
        return bool(self.root.options.get("include_hidden", False))


class RootPlanner:
    """Decides roots and scopes for a crawl; writes root rows (the caller holds the transaction)."""

    def __init__(self, store: Store, index_path: Path, root_path: Callable[[RootRow], Path]) -> None:
        self.store = store
        self.index_path = index_path
        self.root_path = root_path  # where a root is now (see `locate_root`)

    def location(self, root: RootRow) -> Path:
        where = self.root_path(root)
        return where.resolve() if where.exists() else where

    def refresh_locations(self) -> None:
        """Record where each root is now (after the index moved together with its trees)."""
        for root in self.store.roots():
            if root_kind(root) != FOLDER:
                continue
            where = self.location(root)
            if where.exists() and str(where) != root.path:
                self._record(root.id, where, root.options)

    def scopes_for_all(self, skip: Callable[[str, str], None], kinds: Sequence[str] = (FOLDER,)) -> list[Scope]:
        """Every recorded root of the given kinds, for a re-crawl with no paths; missing folders are
        reported and kept, and so are roots of other kinds (the distributed crawl made them)."""
        roots = self.store.roots()
        if not roots:
            raise VecsearchError(f"index {self.index_path.name} has no folders yet: give the folders to crawl")
        scopes = []
        for root in roots:
            kind = root_kind(root)
            if kind not in kinds:
                skip(root.path, f"a {kind} source: its items are kept; update it with `--engine ray`")
                continue
            if kind != FOLDER:
                scopes.append(Scope(root, Path(root.path), [], [""]))
                continue
            folder = self.location(root)
            if not folder.is_dir():
                skip(str(folder), "folder not found (a disk not mounted?); its items are kept")
                continue
            if root.options.get("files_only"):
                files = sorted(self.store.files_under(root.id))
                scopes.append(Scope(root, folder, [folder / rel for rel in files], files))
            else:
                scopes.append(Scope(root, folder, [folder], [""]))
        return scopes

    def scopes_for_paths(self, paths: Sequence[Path], exclude: Sequence[str], include_hidden: bool) -> list[Scope]:
        targets = [_checked(path) for path in paths]
        for target in sorted(targets, key=lambda p: len(p.parts)):  # parents first
            self._assign(target, list(exclude), include_hidden)
        scopes: dict[int, Scope] = {}
        for target in targets:
            root, folder = self._container(target)
            assert root is not None
            scope = scopes.setdefault(root.id, Scope(root, folder))
            scope.starts.append(target)
            scope.prefixes.append(relative_posix(target, folder))
        return list(scopes.values())

    def scope_for_source(self, location: str, kind: str) -> Scope:
        """The root of a listing file, a WebDataset shard or a remote folder: made on first use, and
        crawled whole (what it no longer holds leaves the index)."""
        root = next((r for r in self.store.roots() if r.path == location), None)
        if root is None:
            self.store.add_root(location, location, {"source": kind})
            root = next(r for r in self.store.roots() if r.path == location)
        elif root_kind(root) != kind:
            raise VecsearchError(f"{location} is already in this index as a {root_kind(root)}, not a {kind}")
        return Scope(root, Path(location), [], [""])

    # --- rules ---------------------------------------------------------------------------------

    def _assign(self, path: Path, exclude: list[str], include_hidden: bool) -> None:
        container, where = self._container(path)
        if path.is_file():
            if container is None:
                self.store.add_root(
                    str(path.parent),
                    self._relpath(path.parent),
                    _options({"files_only": True}, exclude, include_hidden),
                )
            return
        if container is not None and not container.options.get("files_only"):
            prefix = relative_posix(path, where)  # a subtree: its patterns are relative to it
            patterns = _prefixed(exclude, prefix) if prefix else exclude
            self._record(container.id, where, _options(container.options, patterns, include_hidden))
            return
        if container is not None and where == path:
            options = _options(container.options, exclude, include_hidden)
            options["files_only"] = False
            self._record(container.id, where, options)
            return
        new_id = self.store.add_root(
            str(path), self._relpath(path), _options({"files_only": False}, exclude, include_hidden)
        )
        if container is not None:  # a listed-files root above: its files below `path` move here
            self.store.split_root(container.id, new_id, relative_posix(path, where))
        for root in self.store.roots():
            if root_kind(root) != FOLDER:
                continue
            inner = self.location(root)
            if root.id != new_id and inner != path and is_within(inner, path):
                prefix = relative_posix(inner, path)
                self.store.merge_root(root.id, new_id, prefix)
                current = next(r for r in self.store.roots() if r.id == new_id)
                options = _options(
                    current.options,
                    _prefixed(root.options.get("exclude", []), prefix),
                    bool(root.options.get("include_hidden", False)),
                )
                self._record(new_id, path, options)

    def _container(self, path: Path) -> tuple[RootRow | None, Path]:
        """The deepest recorded root whose folder holds `path`."""
        best: tuple[RootRow | None, Path] = (None, path)
        depth = -1
        for root in self.store.roots():
            if root_kind(root) != FOLDER:
                continue
            where = self.location(root)
            if is_within(path, where) and len(where.parts) > depth:
                best, depth = (root, where), len(where.parts)
        return best

    def _record(self, root_id: int, where: Path, options: dict[str, Any]) -> None:
        self.store.update_root(root_id, str(where), self._relpath(where), options)

    def _relpath(self, where: Path) -> str:
        return os.path.relpath(where, self.index_path.resolve())


def _checked(raw: Path) -> Path:
    path = Path(os.path.abspath(raw.expanduser()))
    if not path.exists():
        raise VecsearchError(f"path not found: {raw}")
    path = path.resolve()
    if path.is_file() and not is_image_path(path):
        raise VecsearchError(f"not an image file: {raw} (crawl its folder, or give images)")
    if not path.is_dir() and not path.is_file():
        raise VecsearchError(f"not a folder or file: {raw}")
    return path


def _options(options: dict[str, Any], exclude: Sequence[str], include_hidden: bool) -> dict[str, Any]:
    merged = dict(options)
    patterns = list(merged.get("exclude", []))
    for pattern in exclude:
        if pattern not in patterns:
            patterns.append(pattern)
    merged["exclude"] = patterns
    merged["include_hidden"] = bool(merged.get("include_hidden", False) or include_hidden)
    merged.setdefault("files_only", False)
    return merged


def _prefixed(patterns: Sequence[str], prefix: str) -> list[str]:
    """Rewrite a folded-in root's patterns so they still mean the same files under the new root."""
    rewritten: list[str] = []
    for pattern in patterns:
        if "/" in pattern:
            rewritten.append(f"{prefix}/{pattern}")
        else:  # a name anywhere below the old root: directly in it, or deeper ('*' crosses '/')
            rewritten.extend([f"{prefix}/{pattern}", f"{prefix}/*/{pattern}"])
    return rewritten
