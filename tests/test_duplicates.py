"""Near-duplicate groups against brute force: the same groups, whatever the method's batching."""

from __future__ import annotations

import numpy as np
import pytest

from vecsearch.duplicates import SURE, Picture, components, group_duplicates, pair_links
from vecsearch.vectors import VectorIndex


def clustered(count: int, families: int, dim: int = 32, spread: float = 0.08, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(families, dim))
    rows = centres[rng.integers(0, families, count)] + spread * rng.normal(size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_force_groups(vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    similar = vectors @ vectors.T >= threshold
    seen, groups = set(), set()
    for start in range(len(vectors)):
        if start in seen:
            continue
        stack, members = [start], {start}
        while stack:
            node = stack.pop()
            for other in np.flatnonzero(similar[node]).tolist():
                if other not in members:
                    members.add(other)
                    stack.append(other)
        seen |= members
        if len(members) > 1:
            groups.add(frozenset(members))
    return groups


@pytest.mark.parametrize("threshold", [0.9, 0.97, 0.995])
def test_exact_range_search_finds_the_brute_force_groups(threshold, monkeypatch):
    vectors = clustered(1500, 300)
    monkeypatch.setattr("vecsearch.duplicates.QUERY_BATCH", 256)  # several batches
    first, second = pair_links(vectors, threshold, "exact")[:2]
    found = {frozenset(g) for g in components(len(vectors), first, second)}
    assert found == brute_force_groups(vectors, threshold)


def own_index(vectors: np.ndarray, ids: np.ndarray, kind: str, captions: int = 0) -> VectorIndex:
    """A FAISS index like an index's own: the pictures by item id, and caption-like items beside them."""
    index = VectorIndex.create(vectors.shape[1], kind)
    extra = clustered(captions, 50, vectors.shape[1], seed=9) if captions else np.zeros((0, vectors.shape[1]))
    if index.approximate:
        index.train(np.concatenate([vectors, extra]).astype(np.float32))
        index.nprobe = 4
    index.add(ids, vectors)
    index.add(np.arange(captions, dtype=np.int64) + 10**6, extra)
    return index


@pytest.mark.parametrize("kind", ["IDMap2,Flat", "IVF32,Flat", "IVF32,SQ8"])
def test_the_index_s_own_neighbours_find_nearly_every_pair_and_say_they_are_approximate(kind, monkeypatch):
    vectors = clustered(3000, 600)
    ids = np.arange(len(vectors), dtype=np.int64) * 3 + 7  # item ids are not row numbers
    index = own_index(vectors, ids, kind, captions=500)
    if kind.endswith("SQ8"):
        index.rerank = 4
    monkeypatch.setattr("vecsearch.duplicates.QUERY_BATCH", 1024)  # several batches
    exact_pairs = set(zip(*[a.tolist() for a in pair_links(vectors, 0.95, "exact")[:2]], strict=True))
    first, second, label = pair_links(vectors, 0.95, "ann", index=index, ids=ids)
    ann_pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert "approximate" in label and "index's own FAISS index" in label
    assert ann_pairs <= exact_pairs  # every pair it reports is real (re-scored on the exact vectors)
    assert len(ann_pairs) >= 0.98 * len(exact_pairs)
    exact_groups = {frozenset(g) for g in components(len(vectors), *pair_links(vectors, 0.95, "exact")[:2])}
    assert {frozenset(g) for g in components(len(vectors), first, second)} == exact_groups


def test_auto_takes_the_index_s_own_search_only_above_the_limit_and_when_it_is_approximate(monkeypatch):
    vectors = clustered(600, 200)
    ids = np.arange(len(vectors), dtype=np.int64)
    monkeypatch.setattr("vecsearch.duplicates.EXACT_UP_TO", 100)
    assert pair_links(vectors, 0.95, "auto", index=own_index(vectors, ids, "IDMap2,Flat"), ids=ids)[2] == (
        "exact range search"
    )
    assert "approximate" in pair_links(vectors, 0.95, "auto", index=own_index(vectors, ids, "IVF8,Flat"), ids=ids)[2]
    assert pair_links(vectors, 0.95, "auto")[2] == "exact range search"  # no index given
    with pytest.raises(ValueError, match="own FAISS index"):
        pair_links(vectors, 0.95, "ann")


def brute_force_rule(vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """The groups of the default rule, by its definition: cosine ≥ threshold and each other's nearest
    neighbour (higher cosine, then lower row), or cosine ≥ max(threshold, SURE)."""
    cosines = vectors @ vectors.T
    np.fill_diagonal(cosines, -np.inf)
    nearest = [max(range(len(vectors)), key=lambda b: (cosines[a, b], -b)) for a in range(len(vectors))]
    sure = max(threshold, SURE)
    linked = [
        [
            b
            for b in range(len(vectors))
            if cosines[a, b] >= threshold and (nearest[a] == b and nearest[b] == a or cosines[a, b] >= sure)
        ]
        for a in range(len(vectors))
    ]
    seen, groups = set(), set()
    for start in range(len(vectors)):
        stack, members = [start], {start}
        while stack:
            for other in linked[stack.pop()]:
                if other not in members:
                    members.add(other)
                    stack.append(other)
        if start not in seen and len(members) > 1:
            groups.add(frozenset(members))
        seen |= members
    return groups


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97])
@pytest.mark.parametrize("method", ["exact", "ann"])
def test_grouping_follows_the_mutual_nearest_rule_as_brute_force_does(threshold, method, monkeypatch):
    vectors = clustered(400, 100, spread=0.25, seed=4)  # loose families: the rule splits some
    ids = np.arange(len(vectors), dtype=np.int64) + 1
    pictures = [Picture(int(i), f"/p/{i:04d}.jpg", 1, 1, f"h{i}") for i in ids]
    monkeypatch.setattr("vecsearch.duplicates.QUERY_BATCH", 64)
    index = own_index(vectors, ids, "IDMap2,Flat", captions=50)
    groups, _ = group_duplicates(pictures, vectors, threshold, method=method, index=index)
    assert {frozenset(p.item_id - 1 for p in g.members) for g in groups} == brute_force_rule(vectors, threshold)
    assert threshold > 0.95 or brute_force_rule(vectors, threshold) != brute_force_groups(vectors, threshold)


def test_exact_copies_group_by_content_and_the_kept_one_comes_first():
    rows = np.random.default_rng(3).normal(size=(6, 64))  # six unrelated pictures
    vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    vectors[4] = vectors[0]  # a copy: same content, same vector
    pictures = [
        Picture(1, "/p/a.jpg", 100, 5, "h0"),
        Picture(2, "/p/b.jpg", 900, 1, "h1"),
        Picture(3, "/p/c.jpg", 50, 9, "h2"),
        Picture(4, "/p/d.jpg", 10, 2, "h3"),
        Picture(5, "/p/copy-of-a.jpg", 100, 7, "h0"),
        Picture(6, "/p/f.jpg", 10, 3, "h5"),
    ]
    near = vectors[1] + 0.05 * vectors[2]
    vectors[2] = near / np.linalg.norm(near)  # c is a near copy of b
    groups, label = group_duplicates(pictures, vectors, 0.95, keep="largest")
    assert label == "exact range search"
    assert [[p.path for p in g.members] for g in groups] == [["/p/a.jpg", "/p/copy-of-a.jpg"], ["/p/b.jpg", "/p/c.jpg"]]
    assert groups[0].exact == [True, True] and groups[0].similarity == [1.0, 1.0]
    assert groups[1].exact == [True, False] and 0.95 <= groups[1].similarity[1] < 1.0
    newest, _ = group_duplicates(pictures, vectors, 0.95, keep="newest")
    assert [g.keep.path for g in newest] == ["/p/c.jpg", "/p/copy-of-a.jpg"]
    oldest, _ = group_duplicates(pictures, vectors, 0.95, keep="oldest")
    assert [g.keep.path for g in oldest] == ["/p/a.jpg", "/p/b.jpg"]
    with pytest.raises(ValueError, match="unknown keep rule"):
        group_duplicates(pictures, vectors, 0.95, keep="smallest")


def test_components_of_chains_and_random_graphs_equal_a_graph_search():
    rng = np.random.default_rng(5)
    count = 400
    # a long chain whose labels run down and up (the worst case for hooking roots), plus random pairs
    chain = rng.permutation(count)[:120]
    first = np.concatenate([chain[:-1], rng.integers(0, count, 150)])
    second = np.concatenate([chain[1:], rng.integers(0, count, 150)])
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    seen: set[int] = set()
    want = set()
    for start in range(count):
        if start in seen or start not in neighbours:
            continue
        stack, members = [start], {start}
        while stack:
            for other in neighbours[stack.pop()] - members:
                members.add(other)
                stack.append(other)
        seen |= members
        if len(members) > 1:
            want.add(frozenset(members))
    got = components(count, first, second)
    assert {frozenset(g) for g in got} == want
    assert all(g == sorted(g) for g in got) and [g[0] for g in got] == sorted(g[0] for g in got)
    assert components(3, np.zeros(0, np.int64), np.zeros(0, np.int64)) == []
