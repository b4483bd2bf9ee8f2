"""Re-ranking codes: every vector as 8-bit scalar codes keyed by item id, in files that are memory-mapped.

Fast-scan and PQ codes rank candidates only roughly. The candidates are re-scored on these better codes
(a quarter of the float vectors' size, cosine error around 1e-3), which live on disk beside the index and
are paged in only for the candidates a query touches. Three `.npy` files share a prefix: the sorted ids,
the codes in the same order, and each dimension's range (lowest value and step).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError

SUFFIXES = (".ids.npy", ".codes.npy", ".range.npy")


class RerankCodes:
    """SQ8 codes of the vectors of an index, by id, read from memory-mapped files."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, low: np.ndarray, step: np.ndarray) -> None:
        self.ids = ids
        self.codes = codes
        self.low = low
        self.step = step

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @staticmethod
    def train(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each dimension's (lowest value, step) from a sample, widened a little for unseen vectors."""
        low, high = sample.min(axis=0), sample.max(axis=0)
        margin = (high - low) * 0.05
        low, high = low - margin, high + margin
        step = np.maximum(high - low, 1e-6) / 255.0
        return low.astype(np.float32), step.astype(np.float32)

    @staticmethod
    def encode(vectors: np.ndarray, low: np.ndarray, step: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((vectors - low) / step), 0, 255).astype(np.uint8)

    @classmethod
    def write(
        cls, prefix: Path, parts: Iterable[tuple[np.ndarray, np.ndarray]], count: int, low: np.ndarray, step: np.ndarray
    ) -> None:
        """Write `count` codes from (ids, codes) parts given in ascending id order, each file fsynced."""
        dim = len(low)
        ids_out = np.lib.format.open_memmap(_tmp(prefix, ".ids.npy"), "w+", np.int64, (count,))
        codes_out = np.lib.format.open_memmap(_tmp(prefix, ".codes.npy"), "w+", np.uint8, (count, dim))
        position, last = 0, -1
        for ids, codes in parts:
            if len(ids) == 0:
                continue
            if ids[0] <= last or np.any(np.diff(ids) <= 0):
                raise ValueError("re-ranking codes must be written in ascending id order")
            ids_out[position : position + len(ids)] = ids
            codes_out[position : position + len(ids)] = codes
            position, last = position + len(ids), int(ids[-1])
        if position != count:
            raise ValueError(f"re-ranking codes: {position} written, {count} expected")
        ids_out.flush()
        codes_out.flush()
        del ids_out, codes_out
        with open(_tmp(prefix, ".range.npy"), "wb") as handle:
            np.save(handle, np.stack([low, step]))
        for suffix in SUFFIXES:
            tmp = _tmp(prefix, suffix)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, Path(f"{prefix}{suffix}"))

    @classmethod
    def open(cls, prefix: Path) -> RerankCodes:
        """Map the files read-only (nothing is read until a query scores its candidates)."""
        try:
            ids = np.load(f"{prefix}.ids.npy", mmap_mode="r")
            codes = np.load(f"{prefix}.codes.npy", mmap_mode="r")
            low, step = np.load(f"{prefix}.range.npy")
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"re-ranking codes unreadable at {prefix} ({exc})") from exc
        if codes.shape != (len(ids), len(low)):
            raise IndexCorruptError(f"re-ranking codes at {prefix} do not match their ids")
        return cls(ids, codes, low, step)

    def scores(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Inner products of the query with the decoded vectors of `ids` (-inf where an id is unknown)."""
        ids = np.asarray(ids, dtype=np.int64)
        where = np.searchsorted(self.ids, ids)
        where = np.minimum(where, max(0, len(self.ids) - 1))
        known = (self.ids[where] == ids) if len(self.ids) else np.zeros(len(ids), dtype=bool)
        order = np.argsort(where, kind="stable")  # ascending offsets read the mapped file forwards
        rows = np.empty((len(ids), len(self.low)), dtype=np.float32)
        rows[order] = self.codes[where[order]]
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        scores = rows @ (query * self.step) + float(self.low @ query)
        return np.where(known, scores, -np.inf).astype(np.float32)

    def files(self, prefix: Path) -> list[Path]:
        return [Path(f"{prefix}{suffix}") for suffix in SUFFIXES]


def _tmp(prefix: Path, suffix: str) -> str:
    return f"{prefix.parent / ('.' + prefix.name)}{suffix}.{os.getpid()}.tmp"
