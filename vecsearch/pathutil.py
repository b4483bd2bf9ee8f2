"""Small path questions asked all over the crawl, the filters and the checks."""

from __future__ import annotations

from pathlib import Path


def is_within(path: Path, folder: Path) -> bool:
    """Is `path` the folder itself or somewhere below it? (No file system access.)"""
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def relative_posix(path: Path, base: Path) -> str:
    """`path` relative to `base`, with '/' separators; '' for the base itself."""
    rel = path.relative_to(base)
    return rel.as_posix() if rel.parts else ""


def is_safe_relpath(relpath: str) -> bool:
    """Does a path read from an index stay inside its crawl folder? (Relative, POSIX, no '..'.)

    An index may come from someone else: a row naming '../../etc/passwd' must never reach the disk.
    """
    if relpath.startswith("/") or "\\" in relpath or ":" in relpath or "\x00" in relpath:
        return False
    return ".." not in relpath.split("/")
