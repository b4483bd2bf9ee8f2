"""Near-duplicate groups against brute force: the same groups, whatever the method's batching."""

from __future__ import annotations

import numpy as np
import pytest

from vecsearch.duplicates import Picture, components, group_duplicates, pair_links


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


def test_hnsw_neighbours_find_nearly_every_pair_and_say_they_are_approximate():
    vectors = clustered(3000, 600)
    exact_pairs = set(zip(*[a.tolist() for a in pair_links(vectors, 0.95, "exact")[:2]], strict=True))
    first, second, label = pair_links(vectors, 0.95, "ann")
    ann_pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert "approximate" in label
    assert ann_pairs <= exact_pairs  # every pair it reports is real
    assert len(ann_pairs) >= 0.98 * len(exact_pairs)


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
