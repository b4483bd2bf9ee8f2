"""Where named indexes live, and how a name or a path becomes an index directory.

The home is, in order: the `home` argument (`--home`), `$VECSEARCH_HOME`, the `indexes/` folder of a
source checkout that vecsearch runs from, else `$XDG_DATA_HOME/vecsearch/indexes`
(default `~/.local/share/vecsearch/indexes`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IndexNotFoundError, VecsearchError
from .manifest import MANIFEST, read_manifest

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home:
        return Path(home).expanduser()
    env = os.environ.get("VECSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "indexes").is_dir():
        return checkout / "indexes"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "vecsearch" / "indexes"


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.startswith((".", "~")) or not is_valid_name(ref)


def locate(ref: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> Path:
    """The directory of an existing index given by name (in the home) or by path."""
    text = str(ref)
    if not text.strip():
        raise IndexNotFoundError("no index given")
    path = Path(text).expanduser()
    if (path / MANIFEST).is_file():
        return path
    if not looks_like_path(text):
        named = default_home(home) / text
        if (named / MANIFEST).is_file():
            return named
        raise IndexNotFoundError(
            f"unknown index '{text}': no index of that name in {default_home(home)} "
            "(`vecsearch list` shows them; give a path to use an index elsewhere)"
        )
    if path.is_dir():
        raise IndexNotFoundError(f"{path} is not a vecsearch index (no {MANIFEST})")
    raise IndexNotFoundError(f"no index at {path}")


def target(ref: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> Path:
    """Where an index named or pathed `ref` is, or would be created."""
    text = str(ref)
    if looks_like_path(text) or (Path(text).expanduser() / MANIFEST).is_file():
        return Path(text).expanduser()
    return default_home(home) / text


def is_index(folder: str | os.PathLike[str]) -> bool:
    """Does this folder hold an index (its manifest, which is written last)?"""
    return (Path(folder).expanduser() / MANIFEST).is_file()


@dataclass(frozen=True)
class IndexSummary:
    """A named index as its manifest describes it, read without opening the index; `error` says why a
    manifest could not be read (the other fields are then empty)."""

    name: str
    path: str
    model: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    updated: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"name": self.name, "path": self.path, "error": self.error}
        return {
            "name": self.name,
            "path": self.path,
            "model": self.model,
            "counts": self.counts,
            "updated": self.updated,
        }


def list_indexes(home: str | os.PathLike[str] | None = None) -> list[IndexSummary]:
    """The named indexes in the home folder, by name (`vecsearch list`)."""
    summaries = []
    for folder in named_indexes(home):
        try:
            manifest = read_manifest(folder)
        except VecsearchError as exc:
            summaries.append(IndexSummary(folder.name, str(folder), error=str(exc)))
            continue
        summaries.append(
            IndexSummary(
                folder.name,
                str(folder),
                model=manifest["model"].get("spec"),
                counts=manifest.get("counts", {}),
                updated=manifest.get("updated"),
            )
        )
    return summaries


def named_indexes(home: str | os.PathLike[str] | None = None) -> list[Path]:
    folder = default_home(home)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file())
