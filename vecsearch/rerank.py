"""Re-ranking codes: every vector again, keyed by item id, in files that are memory-mapped.

PQ and SQ8 codes rank candidates only roughly. The candidates are re-scored on these better codes, which
live on disk beside the index and are paged in only for the candidates a query touches. By default they
are the vectors in half precision (scores within about 1e-4 of exact); 8-bit scalar codes (a quarter of the
float vectors' size) are the smaller choice, but their error (around 3e-4) is as large as the gap between
the 10th and 11th neighbours of a real collection's near-duplicates, so they cap recall@10 (measured in
docs/benchmarks.md). `.npy` files share a prefix: the sorted ids, the codes in the same order, and for
SQ8 each dimension's range (lowest value and step).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError

SUFFIXES = (".ids.npy", ".codes.npy", ".range.npy")
PRECISION = "fp16"  # or "sq8"


class RerankCodes:
    """Re-ranking codes of the vectors of an index (half precision or SQ8), by id, memory-mapped."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, scale: np.ndarray | None) -> None:
        self.ids = ids
        self.codes = codes
        self.scale = scale  # SQ8: (lowest value, step) per dimension; None for half precision
        self.mapping: mmap.mmap | None = None  # set when opened from disk: the codes' file mapping
        self.data_offset = 0  # where the codes start in that mapping (after the .npy header)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @staticmethod
    def train(sample: np.ndarray, precision: str = PRECISION) -> np.ndarray | None:
        """SQ8: each dimension's (lowest value, step) from a sample, widened a little for unseen vectors.
        Half precision needs no training (None)."""
        if precision == "fp16":
            return None
        low, high = sample.min(axis=0), sample.max(axis=0)
        margin = (high - low) * 0.05
        low, high = low - margin, high + margin
        return np.stack([low, np.maximum(high - low, 1e-6) / 255.0]).astype(np.float32)

    @staticmethod
    def encode(vectors: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        if scale is None:
            return vectors.astype(np.float16)
        return np.clip(np.rint((vectors - scale[0]) / scale[1]), 0, 255).astype(np.uint8)

    @classmethod
    def write(
        cls,
        prefix: Path,
        parts: Iterable[tuple[np.ndarray, np.ndarray]],
        count: int,
        dim: int,
        scale: np.ndarray | None,
    ) -> None:
        """Write `count` codes from (ids, codes) parts given in ascending id order, each file fsynced."""
        dtype = np.float16 if scale is None else np.uint8
        ids_out = np.lib.format.open_memmap(_tmp(prefix, ".ids.npy"), "w+", np.int64, (count,))
        codes_out = np.lib.format.open_memmap(_tmp(prefix, ".codes.npy"), "w+", dtype, (count, dim))
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
        suffixes = SUFFIXES if scale is not None else SUFFIXES[:2]
        if scale is not None:
            with open(_tmp(prefix, ".range.npy"), "wb") as handle:
                np.save(handle, scale)
        for suffix in suffixes:
            tmp = _tmp(prefix, suffix)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, Path(f"{prefix}{suffix}"))

    @classmethod
    def open(cls, prefix: Path) -> RerankCodes:
        """Map the files read-only (nothing is read until a query scores its candidates)."""
        try:
            ids = np.load(f"{prefix}.ids.npy", mmap_mode="r")
            codes, mapping, offset = _map_for_random_reads(Path(f"{prefix}.codes.npy"))
            scale = np.load(f"{prefix}.range.npy") if codes.dtype == np.uint8 else None
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"re-ranking codes unreadable at {prefix} ({exc})") from exc
        if codes.ndim != 2 or len(codes) != len(ids) or (scale is not None and scale.shape != (2, codes.shape[1])):
            raise IndexCorruptError(f"re-ranking codes at {prefix} do not match their ids")
        opened = cls(ids, codes, scale)
        opened.mapping, opened.data_offset = mapping, offset
        return opened

    def prefetch(self, where: np.ndarray) -> None:
        """Ask the kernel for the pages of these rows all at once, so that a cold query's reads overlap
        rather than waiting for each in turn (8–9 times faster cold, measured in docs/benchmarks.md)."""
        if self.mapping is None or not hasattr(mmap, "MADV_WILLNEED") or len(where) == 0:
            return
        row_bytes, page = self.codes.shape[1] * self.codes.itemsize, mmap.PAGESIZE
        starts = self.data_offset + np.unique(where) * row_bytes
        for first, end in zip(starts // page * page, starts + row_bytes, strict=True):
            self.mapping.madvise(mmap.MADV_WILLNEED, int(first), int(end - first))

    def scores(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Inner products of the query with the decoded vectors of `ids` (-inf where an id is unknown)."""
        ids = np.asarray(ids, dtype=np.int64)
        where = np.searchsorted(self.ids, ids)
        where = np.minimum(where, max(0, len(self.ids) - 1))
        known = (self.ids[where] == ids) if len(self.ids) else np.zeros(len(ids), dtype=bool)
        found = np.flatnonzero(known)
        self.prefetch(where[found])
        order = found[np.argsort(where[found], kind="stable")]  # ascending offsets read the file forwards
        rows = np.zeros((len(ids), self.codes.shape[1]), dtype=np.float32)
        rows[order] = self.codes[where[order]]
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        scale = self.scale
        scores = rows @ query if scale is None else rows @ (query * scale[1]) + float(scale[0] @ query)
        return np.where(known, scores, -np.inf).astype(np.float32)


def _map_for_random_reads(path: Path) -> tuple[np.ndarray, mmap.mmap, int]:
    """Map a .npy file read-only with the kernel's read-ahead off: a query reads a few hundred rows
    scattered over the file, and read-ahead would page in the device's read-ahead window around each
    (128 KiB by default; measured in docs/benchmarks.md: slower cold queries and a page cache many times
    the rows touched)."""
    with open(path, "rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"expected a 2-d C-ordered array, found shape {shape}")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS; elsewhere the default read-ahead stays
        mapped.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset), mapped, offset


def _tmp(prefix: Path, suffix: str) -> str:
    return f"{prefix.parent / ('.' + prefix.name)}{suffix}.{os.getpid()}.tmp"
