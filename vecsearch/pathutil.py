"""Two small path questions asked all over the crawl and the filters."""

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
