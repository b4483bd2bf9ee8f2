"""Near-duplicate pictures across a whole index: image → image search with every picture as the query.

Pairs whose image vectors have a cosine at or above a threshold (a floor) are linked when the two are each
other's nearest neighbour, or when their cosine is at least `SURE`; linked pictures form a group (connected components, so a burst of shots that drift step by step is one group). Exact copies
(same content hash) are one group before any vector is compared. The pairs come from FAISS in batches
over all cores: an exact range search up to `EXACT_UP_TO` distinct pictures, and above that (where the
index's own FAISS index is an IVF one) each picture's k nearest neighbours from that index, filtered by
the threshold (approximate: a pair it misses is missed, and the report says which method ran). An exact
(flat) FAISS index gains nothing over the range search, which stays in use at any size. vecsearch never deletes or moves a file: it only says
which one of each group it would keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .encoders import STARTER_MODEL, ModelSpec
from .errors import QueryError
from .store import Store

if TYPE_CHECKING:
    from .vectors import VectorIndex

# Distinct pictures searched exactly; above, neighbours from the index's own IVF index. Measured
# (scripts/bench_duplicates.py --scale) on 2 cores, 100,000 realistic 384-d vectors at the starter's floor 0.90 in
# the planner's IVF1024,Flat index (nprobe 32): the exact search 31.5 s end to end, the index's 32-NN 39.8 s, with
# 100 % of the exact groups. The exact search grows with the square of the count, the k-NN search about linearly.
EXACT_UP_TO = 100_000
QUERY_BATCH = 4096
IN_LIST = 500  # ids in one SQL IN list
ANN_NEIGHBOURS = 32
IN_PAIRS = 1 << 20  # pairs whose cosine is computed at once
# Pairs at least this close are linked even when not each other's nearest neighbour (bursts of shots,
# the same picture at two sizes): see `mutual_nearest`.
SURE = 0.98
KEEP_RULES = ("largest", "newest", "oldest")
METHODS = ("auto", "exact", "ann")
# The cosine at or above which two pictures are near-duplicates, by model family. "starter" was chosen by
# scripts/bench_duplicates.py (docs/benchmarks.md#near-duplicates): edited copies of openclipart and Tux
# Paint pictures against imagededup's perceptual hashes. The CLIP families could not be measured where
# vecsearch is developed (their weights cannot be downloaded there): 0.95 is the value commonly suggested for
# CLIP ViT image embeddings, not a figure of ours.
DEFAULT_THRESHOLDS: dict[str, float] = {"starter": 0.90, "open_clip": 0.95, "sentence-transformers": 0.95}


@dataclass(frozen=True)
class Picture:
    item_id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class DuplicateGroup:
    members: list[Picture]  # the one to keep first
    similarity: list[float]  # each member's cosine to the kept one (1.0 for the kept one and exact copies)
    exact: list[bool] = field(default_factory=list)  # same content as the kept one

    @property
    def keep(self) -> Picture:
        return self.members[0]

    @property
    def reclaimable_bytes(self) -> int:
        """What deleting every member but the kept one would free."""
        return sum(p.size for p in self.members[1:])

    def to_dict(self) -> dict[str, Any]:
        members = [
            {**asdict(p), "similarity": s, "exact": e, "keep": n == 0}
            for n, (p, s, e) in enumerate(zip(self.members, self.similarity, self.exact, strict=True))
        ]
        return {"keep": self.keep.path, "reclaimable_bytes": self.reclaimable_bytes, "members": members}


@dataclass
class DuplicateReport:
    """Near-duplicate groups of an index's pictures, largest group first; nothing was deleted or moved."""

    groups: list[DuplicateGroup]
    pictures: int  # pictures searched (after the filters)
    threshold: float
    method: str  # "exact range search" or "32-NN search of the index's own FAISS index (…; approximate)"
    seconds: float = 0.0
    keep: str = "largest"

    @property
    def approximate(self) -> bool:
        """Did an approximate search find the pairs (so that a pair may have been missed)?"""
        return "approximate" in self.method

    @property
    def in_groups(self) -> int:
        return sum(len(g.members) for g in self.groups)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(g.reclaimable_bytes for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "keep": self.keep,
            "method": self.method,
            "approximate": self.approximate,
            "pictures": self.pictures,
            "groups_count": len(self.groups),
            "in_groups": self.in_groups,
            "reclaimable_bytes": self.reclaimable_bytes,
            "seconds": self.seconds,
            "groups": [g.to_dict() for g in self.groups],
        }


def default_threshold(spec: ModelSpec) -> float:
    """The documented default cosine for an index's model (`DEFAULT_THRESHOLDS`)."""
    if spec == STARTER_MODEL:
        return DEFAULT_THRESHOLDS["starter"]
    return DEFAULT_THRESHOLDS.get(spec.family, DEFAULT_THRESHOLDS["open_clip"])


def check_request(threshold: float, keep: str, method: str) -> float:
    """The threshold as a float, or a QueryError that says what is wrong before anything is read."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QueryError(f"threshold must be a number, not {threshold!r}") from None
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise QueryError(f"threshold must be a cosine above 0 and at most 1, not {threshold!r}")
    if keep not in KEEP_RULES:
        raise QueryError(f"unknown keep rule {keep!r}: {', '.join(KEEP_RULES)}")
    if method not in METHODS:
        raise QueryError(f"unknown method {method!r}: {', '.join(METHODS)}")
    return value


def indexed_pictures(
    store: Store, item_ids: np.ndarray | None, locate: Callable[[int, str], str]
) -> tuple[list[Picture], np.ndarray]:
    """The image items (all, or those of `item_ids`) with their files and vectors, read in bulk; call inside
    a snapshot. `locate(root_id, relpath)` gives a file's path."""
    sql = (
        "SELECT i.id, f.root_id, f.relpath, f.size, f.mtime_ns, f.sha256, v.data FROM items i"
        " JOIN files f ON f.id = i.file_id JOIN vectors v ON v.item_id = i.id WHERE i.kind = 'image'"
    )
    if item_ids is None:
        rows = store.conn.execute(sql + " ORDER BY i.id").fetchall()
    else:
        wanted = np.unique(np.asarray(item_ids, dtype=np.int64)).tolist()
        rows = []
        for start in range(0, len(wanted), IN_LIST):
            chunk = wanted[start : start + IN_LIST]
            rows += store.conn.execute(sql + f" AND i.id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        rows.sort(key=lambda r: int(r[0]))
    pictures = [Picture(int(r[0]), locate(int(r[1]), r[2]), int(r[3]), int(r[4]), r[5]) for r in rows]
    if not rows:
        return pictures, np.zeros((0, 0), dtype=np.float32)
    vectors = np.frombuffer(b"".join(bytes(r[6]) for r in rows), dtype="<f4").reshape(len(rows), -1)
    return pictures, vectors.astype(np.float32)


def pair_links(
    vectors: np.ndarray,
    threshold: float,
    method: str = "auto",
    progress: bool = False,
    index: VectorIndex | None = None,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(i, j) index pairs, i < j, whose cosine is at least `threshold`, and the method that found them.

    `vectors` are unit rows. 'exact' is FAISS's range search over a flat inner-product index; 'ann' is a
    k-NN search of every row in `index`, the index's own FAISS index, whose item ids `ids[i]` are the
    rows' ('auto': that above `EXACT_UP_TO` rows when the index is approximate, else the range search)."""
    first, second, _, label = scored_pair_links(vectors, threshold, method, progress, index, ids)
    return first, second, label


def scored_pair_links(
    vectors: np.ndarray,
    threshold: float,
    method: str = "auto",
    progress: bool = False,
    index: VectorIndex | None = None,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """`pair_links` with each pair's cosine, as the search computed it (never gathered again: at 100,000
    pictures there are millions of pairs)."""
    count = len(vectors)
    if count < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), "exact range search"
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: auto, exact or ann")
    if method == "auto":
        method = "ann" if count > EXACT_UP_TO and index is not None and index.approximate else "exact"
    if method == "ann":
        if index is None or ids is None:
            raise ValueError("the ann method searches an index's own FAISS index: give it and the rows' item ids")
        first, second, cosines, label = _index_neighbours(
            vectors, threshold, index, np.asarray(ids, np.int64), progress
        )
    else:
        first, second, cosines, label = _range_search(vectors, threshold, progress)
    distinct = first != second
    first, second, cosines = first[distinct], second[distinct], cosines[distinct]
    low, high = np.minimum(first, second), np.maximum(first, second)
    pairs, where = np.unique(low * count + high, return_index=True)  # each pair once, in order
    return pairs // count, pairs % count, cosines[where], label


def _range_search(
    vectors: np.ndarray, threshold: float, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Every pair at or above the threshold, exactly. A pair is found once, from its first row's batch:
    each batch is searched against itself and the rows after it only (a flat index of that tail), which
    halves the work of a full search."""
    import faiss
    from tqdm import tqdm

    count = len(vectors)
    firsts, seconds, scores = [], [], []
    with tqdm(total=count, desc="comparing pictures", unit="pic", leave=False, disable=not progress, delay=1) as bar:
        for start in range(0, count, QUERY_BATCH):
            tail = faiss.IndexFlatIP(vectors.shape[1])
            tail.add(vectors[start:])
            lims, cosines, found = tail.range_search(vectors[start : start + QUERY_BATCH], float(threshold))
            del tail
            lims = lims.astype(np.int64)
            firsts.append(np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims)))
            seconds.append(found.astype(np.int64) + start)
            scores.append(cosines.astype(np.float32))
            bar.update(len(lims) - 1)
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(scores), "exact range search"


def _index_neighbours(
    vectors: np.ndarray, threshold: float, index: VectorIndex, ids: np.ndarray, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Each row's `ANN_NEIGHBOURS` nearest pictures in the index's own FAISS index, one batched search per
    `QUERY_BATCH` rows, with its tuned nprobe (more where the rows are a small share of its items, as a
    filtered search probes). Only the rows' own ids may be found (captions, filtered-out pictures and
    repeated contents are skipped by FAISS while it scans); candidates from compressed codes are re-scored
    on the rows' vectors, so a pair's cosine is always exact and pairs under the threshold are dropped."""
    from tqdm import tqdm

    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    allowed = sorted_ids if len(ids) < index.ntotal else None
    neighbours = min(ANN_NEIGHBOURS, len(ids))
    fetch = neighbours * max(1, index.rerank)  # compressed codes rank roughly: fetch more, re-score exactly
    exact_codes = index.kind.endswith("Flat") and index.rerank <= 1  # full vectors: FAISS's scores are exact
    nprobe = None
    if index.approximate:
        nprobe = min(index.nlist, index.nprobe * int(np.ceil(index.ntotal / max(1, len(ids)))))
    firsts, seconds, scores = [], [], []
    with tqdm(total=len(ids), desc="comparing pictures", unit="pic", leave=False, disable=not progress, delay=1) as bar:
        for start in range(0, len(ids), QUERY_BATCH):
            batch = vectors[start : start + QUERY_BATCH]
            found_scores, found = index.search(batch, fetch, allowed, nprobe)
            place = np.minimum(np.searchsorted(sorted_ids, found), len(ids) - 1)
            known = (found >= 0) & (sorted_ids[place] == found)
            if exact_codes:  # the index's scores are the cosines: keep only pairs at the threshold, gather nothing
                known &= found_scores >= threshold
            rows = np.broadcast_to(np.arange(start, start + len(batch))[:, None], found.shape)[known]
            others = order[place[known]]
            cosines = found_scores[known] if exact_codes else np.einsum("ij,ij->i", vectors[rows], vectors[others])
            near = cosines >= threshold
            firsts.append(rows[near])
            seconds.append(others[near])
            scores.append(cosines[near].astype(np.float32))
            bar.update(len(batch))
    kind = f"{index.kind}, nprobe {nprobe}" if index.approximate else "exact"
    label = f"{neighbours}-NN search of the index's own FAISS index ({kind}; approximate)"
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(scores), label


def mutual_nearest(
    vectors: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    sure: float = SURE,
    cosines: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (from `pair_links`: all at or above the threshold) that the rule links: the two are each
    other's nearest neighbour (the higher cosine, then the lower row, wins a tie), or their cosine is at
    least `sure`. An original whose nearest picture is someone else's copy stays apart; a burst of
    near-identical shots stays one group. Measured against a bare threshold in docs/benchmarks.md.
    `cosines` are the pairs' own, when the search gave them."""
    count = len(vectors)
    if len(first) == 0:
        return first, second
    if cosines is None:
        cosines = np.concatenate(
            [
                np.einsum("ij,ij->i", vectors[first[at : at + IN_PAIRS]], vectors[second[at : at + IN_PAIRS]])
                for at in range(0, len(first), IN_PAIRS)
            ]
        )
    nodes, others = np.concatenate([first, second]), np.concatenate([second, first])
    both = np.concatenate([cosines, cosines])
    order = np.lexsort((others, -both, nodes))  # per node: best cosine first, then the lower row
    nearest = np.full(count, -1, dtype=np.int64)
    heads, first_of_run = np.unique(nodes[order], return_index=True)
    nearest[heads] = others[order][first_of_run]
    keep = ((nearest[first] == second) & (nearest[second] == first)) | (cosines >= sure)
    return first[keep], second[keep]


def components(count: int, first: np.ndarray, second: np.ndarray) -> list[list[int]]:
    """Groups of two or more indices joined by the pairs, each in ascending order, ordered by their first.

    Connected components with whole-array steps (millions of pairs at 100,000 pictures): every node points
    at the smallest node of its component found so far; each round hooks the larger of two linked roots
    under the smaller, then follows pointers until each points at its root, until no pair joins two roots."""
    label = np.arange(count, dtype=np.int64)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    while True:
        a, b = label[first], label[second]
        apart = a != b
        if not apart.any():
            break
        a, b = a[apart], b[apart]
        np.minimum.at(label, np.maximum(a, b), np.minimum(a, b))
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
    order = np.argsort(label, kind="stable")
    starts = np.flatnonzero(np.diff(label[order], prepend=-1))
    sizes = np.diff(np.append(starts, count))
    return [order[start : start + size].tolist() for start, size in zip(starts, sizes, strict=True) if size > 1]


def keep_key(rule: str):  # type: ignore[no-untyped-def]
    """Sort key that puts the picture to keep first: by size, or modification time; ties by path."""
    if rule == "largest":
        return lambda p: (-p.size, p.path)
    if rule == "newest":
        return lambda p: (-p.mtime_ns, p.path)
    if rule == "oldest":
        return lambda p: (p.mtime_ns, p.path)
    raise ValueError(f"unknown keep rule {rule!r}: {', '.join(KEEP_RULES)}")


def group_duplicates(
    pictures: Sequence[Picture],
    vectors: np.ndarray,
    threshold: float,
    keep: str = "largest",
    method: str = "auto",
    progress: bool = False,
    index: VectorIndex | None = None,
) -> tuple[list[DuplicateGroup], str]:
    """Groups of near-duplicate and exact-copy pictures; `vectors[i]` is the unit vector of `pictures[i]`,
    and `index` the FAISS index holding them by item id (needed by the 'ann' method)."""
    key = keep_key(keep)
    first_of: dict[str, int] = {}
    for number, picture in enumerate(pictures):
        first_of.setdefault(picture.sha256, number)
    distinct = np.array(list(first_of.values()), dtype=np.int64)
    ids = np.array([pictures[n].item_id for n in distinct.tolist()], dtype=np.int64)
    first, second, cosines, label = scored_pair_links(vectors[distinct], threshold, method, progress, index, ids)
    first, second = mutual_nearest(vectors[distinct], first, second, max(threshold, SURE), cosines)
    # Exact copies join through their content's first picture; near pairs through their contents' firsts.
    copies = np.array([first_of[p.sha256] for p in pictures], dtype=np.int64)
    joined_first = np.concatenate([distinct[first], np.arange(len(pictures), dtype=np.int64)])
    joined_second = np.concatenate([distinct[second], copies])
    groups = []
    for members in components(len(pictures), joined_first, joined_second):
        members.sort(key=lambda m: key(pictures[m]))
        kept = members[0]
        cosines = vectors[members] @ vectors[kept]
        exact = [pictures[m].sha256 == pictures[kept].sha256 for m in members]
        similarity = [1.0 if same else float(c) for same, c in zip(exact, cosines, strict=True)]
        groups.append(DuplicateGroup([pictures[m] for m in members], similarity, exact))
    groups.sort(key=lambda g: (-len(g.members), g.keep.path))
    return groups, label
