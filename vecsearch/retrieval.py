"""Query execution: from a query vector and its filters to the best hits.

Filters (a kind, a path glob, a folder) become the set of item ids they allow. The exact index searches
only those; an approximate one answers a narrow filter by an exact scan of the allowed items' stored
vectors, and a wide one by probing more lists. Candidates are fetched in growing rounds until k hits
survive the filters that are applied afterwards (a kind that is most of the index, distinct captions,
items removed meanwhile); then the score cut-offs apply.
"""

from __future__ import annotations

import fnmatch
import operator
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Protocol, SupportsIndex

import numpy as np

from .errors import QueryError
from .lookup import ItemLookup
from .pathutil import is_within
from .results import Hit
from .store import RootRow, Store
from .tags import tagged_files
from .vector_file import VectorFile
from .vectors import VectorIndex

KINDS = ("image", "caption", "any")
MAX_K = 10_000
MAX_BATCH = 10_000  # raw query vectors in one call
# An approximate index answers a narrow filter (a folder, a glob) by an exact scan of the allowed items'
# stored vectors up to this many: cheaper than probing lists that hold few of them, and exact.
EXACT_FILTER_MAX = 20_000
# A kind filter (images or captions) whose kind is at least this share of the items is applied to the
# results rather than given to FAISS as a list of every allowed id.
POST_FILTER_SHARE = 0.2


def check_settings(k: object, kind: str, min_score: float | None, within: float | None) -> int:
    """Refuse impossible search settings before anything is embedded; returns k as an int."""
    if isinstance(k, bool) or not isinstance(k, SupportsIndex):  # numpy integers are whole numbers too
        raise QueryError(f"k must be a whole number from 1 to {MAX_K} (got {k!r})")
    number = operator.index(k)
    if number < 1 or number > MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K} (got {number})")
    if kind not in KINDS:
        raise QueryError(f"kind must be one of {', '.join(KINDS)} (got {kind})")
    if within is not None and not (0 <= within <= 2):
        raise QueryError(f"within is a cosine margin from 0 to 2 (got {within})")
    if min_score is not None and not (-1 <= min_score <= 1):
        raise QueryError(f"min-score is a cosine from -1 to 1 (got {min_score})")
    return number


class Retrieval:
    def __init__(
        self, store: Store, vector_file: VectorFile, lookup: ItemLookup, root_path: Callable[[RootRow], Path]
    ) -> None:
        self.store = store
        self.vector_file = vector_file
        self.lookup = lookup
        self.root_path = root_path

    def run(
        self,
        vector: np.ndarray,
        k: int,
        kind: str,
        *,
        path: str | None = None,
        under: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        within: float | None = None,
        distinct_text: bool = False,
        exclude: Iterable[int] = (),
        tag: str | None = None,
    ) -> list[Hit]:
        """The k best hits for a query vector among the items the filters allow, less `exclude` (the
        query's own items)."""
        batch = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        found = self.run_batch(
            batch,
            k,
            kind,
            path=path,
            under=under,
            min_score=min_score,
            within=within,
            distinct_text=distinct_text,
            exclude=exclude,
            tag=tag,
        )
        return found[0]

    def run_batch(
        self,
        batch: np.ndarray,
        k: int,
        kind: str,
        *,
        path: str | None = None,
        under: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
        within: float | None = None,
        distinct_text: bool = False,
        exclude: Iterable[int] = (),
        tag: str | None = None,
    ) -> list[list[Hit]]:
        """`run` for each row of a batch of query vectors: the filters are resolved once and the first
        round of candidates comes from one FAISS call for the whole batch."""
        vectors = self.vector_file.vectors
        post_kind = self._post_filter_kind(kind, path, under, tag)
        excluded = set(exclude)
        with self.store.snapshot():
            allowed = self.allowed_ids("any" if post_kind else kind, path, under, tag)
        if allowed is not None:
            allowed = np.setdiff1d(allowed, np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
            if len(allowed) == 0:
                return [[] for _ in batch]
        share = self._kind_share(post_kind) if post_kind else 1.0
        first_fetch = int(np.ceil(k * (4 if distinct_text else 1) / share)) + (len(excluded) if allowed is None else 0)
        available = vectors.ntotal if allowed is None else len(allowed)
        results = []
        for row, candidates in enumerate(self._candidates(vectors, batch, first_fetch, allowed)):
            fetch = first_fetch
            while True:
                pairs = [(i, s) for i, s in candidates if i not in excluded]
                exhausted = len(candidates) < fetch or fetch >= available
                hits = self.lookup.hits(pairs, distinct_text, post_kind, limit=k)
                if len(hits) >= k or exhausted:
                    break
                fetch = min(fetch * 4, available)
                candidates = self._candidates(vectors, batch[row : row + 1], fetch, allowed)[0]
            results.append(_cut(hits[:k], min_score, within))
        return results

    def _candidates(
        self, vectors: VectorIndex, batch: np.ndarray, fetch: int, allowed: np.ndarray | None
    ) -> list[list[tuple[int, float]]]:
        """Up to `fetch` (id, cosine) pairs nearest each query, best first, among the allowed ids."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not vectors.approximate:
            scores, ids = vectors.search(batch, fetch, allowed)
            return [
                [(int(i), float(s)) for i, s in zip(r_ids, r_scores, strict=True) if i >= 0]
                for r_ids, r_scores in zip(ids, scores, strict=True)
            ]
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX:
            with self.store.snapshot():
                ids, stored = self.store.vectors_of(allowed)
            if len(ids) == 0:
                return [[] for _ in batch]
            return [top(ids, row_scores, fetch) for row_scores in batch @ stored.T]
        available = vectors.ntotal if allowed is None else len(allowed)
        wanted = min(fetch * vectors.rerank, available)
        nprobe = vectors.nprobe
        if allowed is not None:  # fewer allowed items per list: probe proportionally more lists
            nprobe = min(vectors.nlist, nprobe * int(np.ceil(vectors.ntotal / max(1, len(allowed)))))
        scores, ids = vectors.search(batch, wanted, allowed, nprobe)
        found = []
        for row, vector in enumerate(batch):
            row_ids, row_scores, probes = ids[row], scores[row], nprobe
            while (row_ids >= 0).sum() < wanted and probes < vectors.nlist:
                probes = min(vectors.nlist, probes * 2)  # the probed lists held too few: widen the search
                row_scores, row_ids = (part[0] for part in vectors.search(vector, wanted, allowed, probes))
            keep = row_ids >= 0
            found.append(self._rescored(vectors, vector, row_ids[keep], row_scores[keep], fetch))
        return found

    def _rescored(
        self, vectors: VectorIndex, vector: np.ndarray, ids: np.ndarray, scores: np.ndarray, fetch: int
    ) -> list[tuple[int, float]]:
        """The candidates' best `fetch`, re-scored where the index's scores are rough (PQ codes): on the
        re-ranking codes of an on-disk index, else exactly on the stored vectors."""
        if vectors.rerank > 1 and vectors.refine is not None:
            scores = vectors.refine.scores(vector, ids)
            ids, scores = ids[np.isfinite(scores)], scores[np.isfinite(scores)]
        elif vectors.rerank > 1:
            with self.store.snapshot():
                ids, stored = self.store.vectors_of(ids)
            scores = stored @ vector if len(ids) else np.zeros(0, np.float32)
        return top(ids, scores, fetch)

    def _post_filter_kind(self, kind: str, path: str | None, under: object, tag: str | None = None) -> str | None:
        """The kind to filter results by, when handing FAISS every id of that kind would cost more."""
        if kind == "any" or path is not None or under is not None or tag is not None:
            return None
        return kind if self._kind_share(kind) >= POST_FILTER_SHARE else None

    def _kind_share(self, kind: str) -> float:
        """The share of items of a kind, from the counts of the last save (an estimate that only sets
        how many candidates to fetch first, never which results are right)."""
        counts = self.vector_file.manifest.get("counts") or {}
        total = int(counts.get("items") or 0)
        if total <= 0:
            return 1.0
        return max(int(counts.get(f"{kind}s") or 0) / total, 1e-6)

    def allowed_ids(
        self, kind: str, pattern: str | None, under: str | os.PathLike[str] | None, tag: str | None = None
    ) -> np.ndarray | None:
        """Ids a filter lets through, or None when nothing is filtered out. A tag allows the items of the
        pictures that carry it (`tags.py`)."""
        kind_filter = None if kind == "any" else kind
        if pattern is None and under is None and tag is None:
            if kind_filter is None or not self.store.has_other_kinds(kind_filter):
                return None
            return np.array(self.store.item_ids(kind_filter), dtype=np.int64)
        tagged = tagged_files(self.store, tag, self.lookup.folder.name) if tag is not None else None
        if pattern is None and under is None:
            return np.array(self.store.item_ids(kind_filter, tagged), dtype=np.int64)
        roots = {root.id: self.root_path(root) for root in self.store.roots()}
        folders: list[Path] = []
        if under is not None:
            folder = Path(os.path.abspath(Path(under).expanduser()))
            folders = [folder, folder.resolve()]  # roots are recorded resolved; the user may use a symlink
        patterns = with_resolved_prefix(pattern) if pattern is not None else []
        file_ids = []
        keep = set(tagged) if tagged is not None else None
        for file_id, root_id, relpath in self.store.all_files():
            if keep is not None and file_id not in keep:
                continue
            absolute = roots[root_id] / relpath
            if folders and not any(is_within(absolute, folder) for folder in folders):
                continue
            if patterns and not any(
                fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(absolute.as_posix(), p) for p in patterns
            ):
                continue
            file_ids.append(file_id)
        return np.array(self.store.item_ids(kind_filter, file_ids), dtype=np.int64)


def brute_force_search(
    index: _HasStore, vector: np.ndarray, k: int, item_ids: Iterable[int] | None = None
) -> list[tuple[int, float]]:
    """Exact cosine top-k straight from the stored vectors: the reference the FAISS path must match."""
    ids, vectors = index.store.vectors_since(-1)
    if item_ids is not None:
        keep = np.isin(ids, np.fromiter(item_ids, dtype=np.int64))
        ids, vectors = ids[keep], vectors[keep]
    if len(ids) == 0:
        return []
    scores = vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


class _HasStore(Protocol):
    store: Store


def with_resolved_prefix(pattern: str) -> list[str]:
    """A path glob, plus the same glob with its literal folder part resolved (symlinks followed)."""
    patterns = [pattern]
    expanded = os.path.expanduser(pattern)
    if os.path.isabs(expanded):
        parts = Path(expanded).parts
        literal = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
        head = Path(*parts[:literal])
        if literal and head.exists():
            rest = parts[literal:]
            patterns.append(Path(head.resolve(), *rest).as_posix() if rest else head.resolve().as_posix())
        if expanded != pattern:
            patterns.append(expanded)
    return patterns


def _cut(hits: list[Hit], min_score: float | None, within: float | None) -> list[Hit]:
    """The score cut-offs, then ranks from 1."""
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    if within is not None and hits:
        best = hits[0].score
        hits = [h for h in hits if h.score >= best - within]
    return [h if h.rank == rank else replace(h, rank=rank) for rank, h in enumerate(hits, start=1)]


def check_query_vectors(vectors: object, dim: int) -> tuple[np.ndarray, bool]:
    """Raw query vectors as unit float32 rows, and whether one vector (not a batch) was given; refuses
    what cannot be a query of this index, saying why."""
    try:
        array = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"query vectors must be a NumPy array of numbers ({exc})") from exc
    if array.dtype.kind not in "f":
        raise QueryError(f"query vectors must be floating point (got dtype {array.dtype})")
    single = array.ndim == 1
    if array.ndim not in (1, 2) or array.shape[-1] != dim or array.size == 0:
        raise QueryError(f"query vectors must have shape ({dim},) or (n, {dim}) for this index (got {array.shape})")
    if len(array.reshape(-1, dim)) > MAX_BATCH:
        raise QueryError(f"at most {MAX_BATCH:,} query vectors at a time (got {len(array)})")
    batch = array.reshape(-1, dim).astype(np.float32)
    if not np.isfinite(batch).all():
        raise QueryError("query vectors must be finite (found NaN or infinity)")
    norms = np.linalg.norm(batch, axis=1, keepdims=True)
    if (norms < 1e-6).any():
        raise QueryError("a query vector of length zero has no direction to search in")
    return np.ascontiguousarray(batch / norms), single


def top(ids: np.ndarray, scores: np.ndarray, count: int) -> list[tuple[int, float]]:
    order = np.argsort(-scores, kind="stable")[:count]
    return [(int(ids[i]), float(scores[i])) for i in order]
