"""Rank-aware rules for linking near-duplicate pictures, measured by scripts/bench_duplicates.py beside the
plain cosine threshold. Brute force over a small set's similarity matrix: these are the rules' definitions,
for measuring which one is worth building, not an implementation for large collections.

Each rule returns the (i, j) row pairs, i < j, it links; the benchmark joins them into groups as
`Index.duplicates` does. `d` below is a cosine distance, 1 - cosine.

- threshold(t): cosine >= t (what `Index.duplicates` does).
- mutual(k, floor): each of the two is among the other's k nearest neighbours, and cosine >= floor.
- ratio(r, floor): a picture links to its m nearest neighbours where m is the first rank (up to `MAX_RANK`)
  whose neighbour is within the floor and clearly nearer than the next one: d_m <= r * d_(m+1) (the ratio test
  of descriptor matching, generalised to a burst of several shots); a pair is linked when either picture
  links it.
- density(a, k, floor): cosine >= floor and, for both pictures, d <= a * (the distance to their k-th nearest
  neighbour): the threshold tightens where the collection is dense (many pictures that look alike).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

MAX_RANK = 8
RULES: dict[str, list[dict[str, Any]]] = {
    "mutual": [{"k": k, "floor": f} for k in (1, 2) for f in (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94)],
    "ratio": [{"r": r, "floor": f} for r in (0.3, 0.4, 0.5, 0.6) for f in (0.80, 0.85, 0.88, 0.90, 0.92)],
    "density": [{"a": a, "k": 10, "floor": f} for a in (0.3, 0.4, 0.5, 0.6) for f in (0.85, 0.88, 0.90, 0.92)],
}


def similarity(vectors: np.ndarray) -> np.ndarray:
    """Cosines of every two rows, each row's own set to -inf (never its own neighbour)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def as_pairs(linked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A boolean link matrix (either direction) as (i, j) pairs, i < j."""
    either = np.triu(linked | linked.T, 1)
    first, second = np.nonzero(either)
    return first.astype(np.int64), second.astype(np.int64)


def threshold(sims: np.ndarray, t: float) -> np.ndarray:
    return sims >= t


def mutual(sims: np.ndarray, k: int, floor: float) -> np.ndarray:
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    near = np.zeros(sims.shape, dtype=bool)
    np.put_along_axis(near, order, True, axis=1)
    return near & near.T & (sims >= floor)


def ratio(sims: np.ndarray, r: float, floor: float) -> np.ndarray:
    ranks = min(MAX_RANK, sims.shape[0] - 2)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : ranks + 1]
    dist = 1.0 - np.take_along_axis(sims, order, axis=1)
    clear = (dist[:, :-1] <= r * dist[:, 1:]) & (dist[:, :-1] <= 1.0 - floor)
    cut = np.where(clear.any(axis=1), clear.argmax(axis=1) + 1, 0)  # neighbours linked per picture
    linked = np.zeros(sims.shape, dtype=bool)
    rank = np.arange(order.shape[1])[None, :] < cut[:, None]
    rows = np.repeat(np.arange(len(sims))[:, None], order.shape[1], axis=1)
    linked[rows[rank], order[rank]] = True
    return linked


def density(sims: np.ndarray, a: float, k: int, floor: float) -> np.ndarray:
    kth = 1.0 - np.sort(sims, axis=1)[:, -k]  # distance to the k-th nearest
    dist = 1.0 - sims
    return (sims >= floor) & (dist <= a * kth[:, None]) & (dist <= a * kth[None, :])


def runs(vectors: np.ndarray) -> Iterator[tuple[str, dict[str, Any], tuple[np.ndarray, np.ndarray]]]:
    """Every rule at every setting of `RULES`: (rule, setting, pairs)."""
    sims = similarity(np.asarray(vectors, dtype=np.float64))
    functions = {"mutual": mutual, "ratio": ratio, "density": density}
    for name, settings in RULES.items():
        for setting in settings:
            yield name, setting, as_pairs(functions[name](sims, **setting))
