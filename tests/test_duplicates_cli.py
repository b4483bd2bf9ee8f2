"""`Index.duplicates` and `vecsearch duplicates` on real pictures (openclipart examples) with copies made
here: resized, re-compressed and byte-for-byte. The groups are those of a brute-force search over the stored
vectors; filters, keep rules, output formats and bad thresholds as a user meets them."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vecsearch
from vecsearch import DUPLICATE_THRESHOLDS, Index, QueryError
from vecsearch.cli import main
from vecsearch.duplicates import SURE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "openclipart"


def flat(path: Path) -> Image.Image:
    """The picture on white, as RGB."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight distinct pictures; the first three also as a 75 % copy (PNG) and a JPEG at quality 60 in
    edits/ (a0's JPEG the oldest file, its 75 % copy the newest), and the fourth byte for byte in backup/."""
    root = tmp_path_factory.mktemp("dups") / "photos"
    sources = sorted(EXAMPLES.rglob("*.png"))[5::37][:8]
    assert len(sources) == 8
    for number, source in enumerate(sources):
        picture = flat(source)
        (root / "art").mkdir(parents=True, exist_ok=True)
        picture.save(root / "art" / f"a{number}.png")
        if number < 3:
            (root / "edits").mkdir(exist_ok=True)
            small = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4), Image.Resampling.LANCZOS)
            small.save(root / "edits" / f"a{number}-small.png")
            picture.save(root / "edits" / f"a{number}-q60.jpg", quality=60)
    (root / "backup").mkdir()
    shutil.copy(root / "art" / "a3.png", root / "backup" / "a3.png")
    os.utime(root / "edits" / "a0-q60.jpg", ns=(1, 1))
    os.utime(root / "edits" / "a0-small.png", ns=(4_000_000_000_000_000_000,) * 2)
    return root


@pytest.fixture(scope="module")
def index(tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tree indexed with the starter model, once for the module (its crawl exports the model's towers:
    into a cache folder of the module's own, as the per-test environment is not set up yet)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("VECSEARCH_HOME", str(tmp_path_factory.mktemp("home")))
        env.setenv("VECSEARCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        encoder = vecsearch.load_encoder("starter", device="cpu", inference="fp32")
        with Index.create(tmp_path_factory.mktemp("idx") / "dups", encoder=encoder) as index:
            report = index.add(tree)
            assert report.added + report.reused == 15 and not report.skipped
            yield index


def stored(index: Index) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every image with its path and content hash, and its stored vector, through the public API."""
    ids, vectors = index.store.vectors_since(-1)
    items = [index.item(int(i)) for i in ids]
    rows = [{"path": it.path, "sha256": it.sha256, "size": it.bytes} for it in items if it and it.kind == "image"]
    return rows, vectors


def brute_force(rows: list[dict[str, Any]], vectors: np.ndarray, threshold: float) -> set[frozenset[str]]:
    """Connected components of 'same content, or cosine ≥ threshold and each other's nearest other content
    (or cosine ≥ SURE)', with Python loops."""
    count = len(rows)
    cosines = vectors @ vectors.T
    firsts = [n for n in range(count) if all(rows[m]["sha256"] != rows[n]["sha256"] for m in range(n))]
    nearest = {}
    for a in firsts:
        others = [b for b in firsts if b != a]
        nearest[a] = max(others, key=lambda b: (cosines[a, b], -b)) if others else -1
    linked = np.zeros((count, count), dtype=bool)
    for a in firsts:
        for b in firsts:
            mutual = nearest[a] == b and nearest[b] == a
            linked[a, b] = a != b and cosines[a, b] >= threshold and (mutual or cosines[a, b] >= max(threshold, SURE))
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    for a in range(count):
        for b in range(a + 1, count):
            if linked[a, b] or rows[a]["sha256"] == rows[b]["sha256"]:
                parent[root(b)] = root(a)
    groups: dict[int, set[str]] = {}
    for node in range(count):
        groups.setdefault(root(node), set()).add(rows[node]["path"])
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def clear_of_ties(vectors: np.ndarray, threshold: float, margin: float = 1e-4) -> float:
    """The threshold moved off any cosine within `margin` (FAISS and NumPy may round such a pair apart)."""
    cosines = (vectors @ vectors.T)[np.triu_indices(len(vectors), 1)]
    while np.any(np.abs(cosines - threshold) < margin):
        threshold += 2 * margin
    return threshold


def groups_of(report: vecsearch.DuplicateReport) -> set[frozenset[str]]:
    return {frozenset(p.path for p in g.members) for g in report.groups}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, None])
def test_library_and_command_give_the_brute_force_groups(index: Index, threshold: float | None) -> None:
    rows, vectors = stored(index)
    chosen = clear_of_ties(vectors, DUPLICATE_THRESHOLDS["starter"] if threshold is None else threshold)
    want = brute_force(rows, vectors, chosen)
    report = index.duplicates(chosen if threshold is not None or chosen != DUPLICATE_THRESHOLDS["starter"] else None)
    assert report.method == "exact range search" and not report.approximate
    assert report.pictures == 15 and math.isclose(report.threshold, chosen)
    assert groups_of(report) == want
    shown = json.loads(invoke("duplicates", str(index.path), "--threshold", repr(chosen), "--json").stdout)
    assert {frozenset(m["path"] for m in g["members"]) for g in shown["groups"]} == want
    # each member's similarity is its cosine to the kept one (1.0 for an exact copy)
    by_path = {row["path"]: vectors[n] for n, row in enumerate(rows)}
    for group in report.groups:
        kept = by_path[group.keep.path]
        for member, similarity, exact in zip(group.members, group.similarity, group.exact, strict=True):
            want_similarity = 1.0 if exact else float(by_path[member.path] @ kept)
            assert similarity == pytest.approx(want_similarity, abs=1e-5)


def test_resized_and_recompressed_copies_group_with_their_originals_at_the_default(index: Index, tree: Path) -> None:
    report = index.duplicates()
    assert report.threshold == DUPLICATE_THRESHOLDS["starter"]
    groups = {frozenset(Path(p.path).relative_to(tree).as_posix() for p in g.members) for g in report.groups}
    for number in range(3):
        assert any(
            {f"art/a{number}.png", f"edits/a{number}-small.png", f"edits/a{number}-q60.jpg"} <= g for g in groups
        )
    assert any({"art/a3.png", "backup/a3.png"} <= g for g in groups)
    assert report.in_groups == sum(len(g.members) for g in report.groups)
    assert report.reclaimable_bytes == sum(sum(p.size for p in g.members[1:]) for g in report.groups)


def test_exact_copies_group_even_at_the_highest_threshold(index: Index, tree: Path) -> None:
    report = index.duplicates(1.0)
    assert [[Path(p.path).relative_to(tree).as_posix() for p in g.members] for g in report.groups] == [
        ["art/a3.png", "backup/a3.png"]  # same size: the path decides
    ]
    assert report.groups[0].exact == [True, True] and report.groups[0].similarity == [1.0, 1.0]


def test_under_and_path_filter_the_pictures_compared(index: Index, tree: Path) -> None:
    rows, vectors = stored(index)
    threshold = clear_of_ties(vectors, 0.8)
    for option, value, keep in [
        ("--under", str(tree / "edits"), lambda p: "/edits/" in p),
        ("--path", "*.png", lambda p: p.endswith(".png")),
        ("--path", "art/*", lambda p: "/art/" in p),
    ]:
        chosen = [n for n, row in enumerate(rows) if keep(row["path"])]
        want = brute_force([rows[n] for n in chosen], vectors[chosen], threshold)
        kwargs = {"under": value} if option == "--under" else {"path": value}
        report = index.duplicates(threshold, **kwargs)
        assert report.pictures == len(chosen)
        assert groups_of(report) == want
        shown = invoke("duplicates", str(index.path), "--threshold", repr(threshold), option, value, "--paths")
        assert shown.exit_code == 0
        assert {frozenset(line.split("\t")) for line in shown.stdout.splitlines()} == want
    assert index.duplicates(under=tree / "nowhere").groups == []


def test_keep_rules_put_the_kept_picture_first_in_every_format(index: Index, tree: Path) -> None:
    for keep, expected in [("largest", "art/a0.png"), ("newest", "edits/a0-small.png"), ("oldest", "edits/a0-q60.jpg")]:
        report = index.duplicates(keep=keep)
        group = next(g for g in report.groups if any(p.path.endswith("a0.png") for p in g.members))
        assert Path(group.keep.path).relative_to(tree).as_posix() == expected
        if keep == "largest":
            assert [p.size for p in group.members] == sorted((p.size for p in group.members), reverse=True)
        paths = invoke("duplicates", str(index.path), "--keep", keep, "--paths").stdout.splitlines()
        assert [line.split("\t") for line in paths] == [[p.path for p in g.members] for g in report.groups]
        data = json.loads(invoke("duplicates", str(index.path), "--keep", keep, "--json").stdout)
        assert [g["keep"] for g in data["groups"]] == [g.keep.path for g in report.groups]
        assert all(g["members"][0]["keep"] and not any(m["keep"] for m in g["members"][1:]) for g in data["groups"])


def test_json_shape_and_human_output(index: Index, tree: Path) -> None:
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    data = json.loads(invoke("duplicates", str(index.path), "--json").stdout)
    assert set(data) == {
        "index", "threshold", "keep", "method", "approximate", "pictures", "groups_count", "in_groups",
        "reclaimable_bytes", "seconds", "groups",
    }  # fmt: skip
    assert data["groups_count"] == len(data["groups"]) > 0 and data["approximate"] is False
    assert set(data["groups"][0]) == {"keep", "reclaimable_bytes", "members"}
    assert set(data["groups"][0]["members"][0]) == {
        "item_id", "path", "size", "mtime_ns", "sha256", "similarity", "exact", "keep",
    }  # fmt: skip
    human = invoke("duplicates", str(index.path))
    assert human.exit_code == 0
    assert f"{data['groups_count']} groups, {data['in_groups']} of 15 pictures in them" in human.stdout
    assert "nothing was deleted or moved" in human.stdout
    first = human.stdout.splitlines()[1].split()
    assert first[0] == "keep" and first[-1] == data["groups"][0]["keep"]
    quiet = invoke("-q", "duplicates", str(index.path))
    assert "nothing was deleted" not in quiet.stdout and quiet.stdout.startswith("group 1:")
    none = invoke("duplicates", str(index.path), "--under", str(tree / "art"), "--threshold", "0.999")
    assert none.exit_code == 0 and none.stdout == ""
    assert none.stderr.startswith("no duplicates among 8 pictures (cosine ≥ 0.999, exact range search")
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before  # nothing deleted or moved


def test_the_index_s_own_ann_search_finds_the_same_groups_and_says_so(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vecsearch.duplicates.EXACT_UP_TO", 4)
    exact = index.duplicates(0.9)  # an exact (flat) FAISS index: the range search, at any size
    assert not exact.approximate and exact.method == "exact range search"
    ann = index.duplicates(0.9, method="ann")
    assert ann.approximate and "index's own FAISS index" in ann.method
    assert [[p.path for p in g.members] for g in ann.groups] == [[p.path for p in g.members] for g in exact.groups]
    shown = invoke("duplicates", str(index.path), "--threshold", "0.9", "--method", "ann")
    assert shown.exit_code == 0 and "approximate" in shown.stdout


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.01", "nan", "inf"])
def test_a_bad_threshold_is_a_clear_error(index: Index, bad: str) -> None:
    with pytest.raises(QueryError, match="threshold must be a cosine above 0 and at most 1"):
        index.duplicates(float(bad))
    result = invoke("duplicates", str(index.path), "--threshold", bad)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: threshold must be a cosine above 0 and at most 1")
    assert invoke("duplicates", str(index.path), "--threshold", "high").exit_code == 2  # not a number
    with pytest.raises(QueryError, match="unknown keep rule"):
        index.duplicates(keep="smallest")
