"""Searching an index: FAISS results against brute force, query arithmetic, relevance feedback,
filters, describe, classify and the fields of a hit. Real FAISS, SQLite and (tiny) open_clip."""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, assert_same_ranking, make_image

import vecsearch
from vecsearch import Index, Query, QueryError
from vecsearch.classify import DEFAULT_TEMPLATES, label_vectors, parse_labels
from vecsearch.images import load_image
from vecsearch.index import brute_force_search

WORDS = [
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "dog",
    "cat",
    "car",
    "tree",
    "a photo of",
    "noise",
    "bright",
    "dark",
    "small",
    "large",
    "sunset",
    "beach",
    "apple",
    "box",
    "purple",
    "orange",
]

# Distinct texts only: identical texts share one vector, and exact ties have no defined order.
SIDECARS = {
    "img0": "a red square on grey noise\na small red box",
    "img3": "a blue circle",
    "img6": "a white square\nsnow on a field\nsomething pale",
    "img9": "a green circle on a grey background",
    "img14": "an orange box",
    "sub/sub1": "a green circle in the sub folder",
    "sub/sub4": "a purple square, deep inside\nviolet",
}


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def pairs(hits) -> list[tuple[int, float]]:
    return [(h.id, h.score) for h in hits]


def assert_same_results(hits, expected: list[tuple[int, float]]) -> None:
    """The same ranking (near-ties aside), scores within rounding, ranks 1..n."""
    assert_same_ranking(pairs(hits), expected)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def item_ids_of_files(index: Index, keep: Callable[[str], bool], kind: str | None = None) -> list[int]:
    file_ids = [file_id for file_id, _, relpath in index.store.all_files() if keep(relpath)]
    return index.store.item_ids(kind, file_ids)


def image_item(index: Index, relpath: str) -> int:
    (root,) = index.store.roots()
    file_row = index.store.files_under(root.id)[relpath]
    item_id = index.store.image_item_of(file_row.id)
    assert item_id is not None
    return item_id


def reference(
    index: Index,
    query: Query,
    k: int,
    kind: str = "any",
    exclude: Iterable[int] = (),
    restrict: Iterable[int] | None = None,
) -> list[tuple[int, float]]:
    """Brute-force top-k for a query: only ids of the kind (and in `restrict`), minus `exclude`."""
    ids = set(index.store.item_ids(None if kind == "any" else kind))
    if restrict is not None:
        ids &= set(restrict)
    ids -= set(exclude)
    return brute_force_search(index, index.query_vector(query), k, sorted(ids))


def make_photos(root: Path) -> Path:
    """30 distinct pictures (20 at the top, 10 in sub/) and a few caption sidecars."""
    colours = list(COLOURS)
    for i in range(20):  # what the make_images fixture draws
        make_image(root / f"img{i}.png", colours[i % len(colours)], "circle" if i % 2 else "square", seed=i)
    for i in range(10):  # other seeds: no file in sub/ repeats one outside it
        make_image(root / "sub" / f"sub{i}.png", colours[i % 5], "square" if i % 2 else "circle", seed=50 + i)
    for stem, text in SIDECARS.items():
        (root / f"{stem}.txt").write_text(text + "\n")
    return root


@contextmanager
def isolated(factory: pytest.TempPathFactory) -> Iterator[None]:
    """The clean environment of conftest, for fixtures built once per module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("VECSEARCH_HOME", str(factory.mktemp("home")))
        patch.setenv("VECSEARCH_CACHE_DIR", str(factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("search") / "photos")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder) -> Iterator[Index]:
    """Built once per module: every test below only reads it."""
    with isolated(tmp_path_factory):
        idx = Index.create(tmp_path_factory.mktemp("search-index") / "index", encoder=tiny_encoder)
        report = idx.add(photos)
    assert report.added == 30
    assert report.reused == 0
    assert not report.skipped
    caption_count = sum(len(text.splitlines()) for text in SIDECARS.values())
    assert idx.counts() == {"items": 30 + caption_count, "images": 30, "captions": caption_count, "files": 30}
    yield idx
    idx.close()


def random_text_queries(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)) for _ in range(count)]


@pytest.fixture(scope="module")
def query_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("queries")
    colours = ["red", "green", "blue", "yellow", "black", "white"]
    return [
        make_image(
            folder / f"q{i}.png",
            colours[i % len(colours)],
            "circle" if i % 3 else "square",
            size=(40 + 4 * i, 40),
            seed=100 + i,
        )
        for i in range(6)
    ]


# --- exactness against brute force ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["any", "image", "caption"])
def test_text_queries_equal_brute_force(index: Index, kind: str) -> None:
    total = index.counts()["items"]
    for n, text in enumerate(random_text_queries(15, seed=len(kind))):
        k = [1, 3, 7, 15, total][n % 5]
        hits = index.search(text, k, kind=kind)
        expected = reference(index, Query.parse(text), k, kind)
        assert_same_results(hits, expected)
        assert len(hits) == min(k, len(index.store.item_ids(None if kind == "any" else kind)))
        if kind != "any":
            assert {h.kind for h in hits} == {kind}


@pytest.mark.parametrize("kind", ["any", "image", "caption"])
def test_outside_image_queries_equal_brute_force(index: Index, query_images: list[Path], kind: str) -> None:
    for n, picture in enumerate(query_images):
        k = [2, 5, 11][n % 3]
        hits = index.search(str(picture), k, kind=kind)
        assert_same_results(hits, reference(index, Query.parse(str(picture)), k, kind))


def test_mixed_text_and_image_queries_equal_brute_force(index: Index, query_images: list[Path]) -> None:
    rng = np.random.default_rng(3)
    for picture, text in zip(query_images, random_text_queries(len(query_images), seed=9), strict=True):
        weight = float(rng.choice([0.5, 1.0, 2.0]))
        terms = [text, f"{weight}:{picture}", "-0.3:dog"]
        hits = index.search(terms, 8, kind="any")
        assert_same_results(hits, reference(index, Query.parse(terms), 8))


def test_indexed_image_queries_equal_brute_force_without_themselves(index: Index, photos: Path) -> None:
    for relpath in ["img0.png", "img7.png", "img13.png", "sub/sub2.png", "sub/sub9.png"]:
        own = image_item(index, relpath)
        query = Query.parse(str(photos / relpath))
        for kind in ("any", "image"):
            hits = index.search(query, 9, kind=kind)
            assert own not in [h.id for h in hits]
            assert_same_results(hits, reference(index, query, 9, kind, exclude=[own]))


@pytest.mark.parametrize("pattern", ["sub/*", "*.png", "img1*", "*/sub3.png", "*photos/img[0-4].png"])
def test_path_glob_filter_equals_brute_force(index: Index, pattern: str) -> None:
    allowed_files = []
    for _, _root_id, relpath in index.store.all_files():
        absolute = (Path(index.store.roots()[0].path) / relpath).as_posix()
        if fnmatch.fnmatchcase(relpath, pattern) or fnmatch.fnmatchcase(absolute, pattern):
            allowed_files.append(relpath)
    assert allowed_files, pattern
    for kind in ("any", "image", "caption"):
        restrict = item_ids_of_files(index, lambda rel: rel in allowed_files, None if kind == "any" else kind)
        for text in random_text_queries(4, seed=11):
            hits = index.search(text, 6, kind=kind, path=pattern)
            assert_same_results(hits, reference(index, Query.parse(text), 6, kind, restrict=restrict))
            assert all(h.relpath in allowed_files for h in hits)


def test_k_larger_than_index_returns_everything(index: Index) -> None:
    total = index.counts()["items"]
    hits = index.search("a red square", 1000, kind="any")
    assert len(hits) == total
    assert len({h.id for h in hits}) == total
    assert_same_results(hits, reference(index, Query.parse("a red square"), 1000))
    images = index.search("a red square", 1000, kind="image")
    assert len(images) == 30


def test_default_kind_is_image_for_clip_index(index: Index) -> None:
    hits = index.search("a blue circle", 50)
    assert len(hits) == 30
    assert {h.kind for h in hits} == {"image"}


# --- images never find themselves -------------------------------------------------------------


def test_query_image_never_returns_itself_and_image_search_returns_other_images(index: Index, photos: Path) -> None:
    for relpath in ["img2.png", "img11.png", "sub/sub5.png"]:
        own = image_item(index, relpath)
        hits = index.search(str(photos / relpath), 100, kind="image")
        assert len(hits) == 29
        assert own not in [h.id for h in hits]
        assert {h.kind for h in hits} == {"image"}
        assert relpath not in {h.relpath for h in hits}


def test_identical_copies_are_excluded_too(tmp_path: Path, make_images, tiny_encoder) -> None:
    root = tmp_path / "photos"
    originals = make_images(root, 6)
    shutil.copyfile(originals[2], root / "copy_of_img2.png")
    outside = tmp_path / "elsewhere" / "again.png"
    outside.parent.mkdir()
    shutil.copyfile(originals[2], outside)
    with Index.create(tmp_path / "index", encoder=tiny_encoder) as idx:
        idx.add(root)
        assert idx.counts()["images"] == 7
        twins = {image_item(idx, "img2.png"), image_item(idx, "copy_of_img2.png")}
        for query in (originals[2], root / "copy_of_img2.png", outside):
            hits = idx.search(str(query), 10, kind="image")
            assert [h.id for h in hits if h.id in twins] == []
            assert sorted(h.relpath for h in hits) == sorted(f"img{i}.png" for i in range(6) if i != 2)
            assert_same_results(hits, reference(idx, Query.parse(str(query)), 10, "image", exclude=twins))


# --- query arithmetic -------------------------------------------------------------------------


def test_query_arithmetic_equals_hand_computed_vector(index: Index, tiny_encoder) -> None:
    cat, hat, dog = tiny_encoder.embed_texts(["cat", "hat", "dog"])
    expected_vector = unit(cat + hat - dog)
    query = Query.parse(["cat", "+hat", "-dog"])
    np.testing.assert_allclose(index.query_vector(query), expected_vector, atol=1e-5)
    hits = index.search(["cat", "+hat", "-dog"], 12, kind="any")
    assert_same_results(hits, brute_force_search(index, expected_vector, 12))
    plain = index.search("cat", 12, kind="any")
    assert pairs(plain) != pairs(hits)


def test_weighted_terms_equal_hand_computed_vector(index: Index, tiny_encoder) -> None:
    cat, hat = tiny_encoder.embed_texts(["cat", "hat"])
    expected_vector = unit(2 * cat + hat)
    np.testing.assert_allclose(index.query_vector(Query.parse(["2:cat", "hat"])), expected_vector, atol=1e-5)
    hits = index.search(["2:cat", "hat"], 10, kind="any")
    assert_same_results(hits, brute_force_search(index, expected_vector, 10))
    half = unit(0.5 * cat + hat)
    assert_same_results(index.search(["0.5:cat", "hat"], 10, kind="any"), brute_force_search(index, half, 10))


def test_add_and_subtract_arguments_match_signed_terms(index: Index) -> None:
    signed = index.query_vector(Query.parse(["cat", "+hat", "-dog"]))
    split = index.query_vector(Query.parse("cat", add=["hat"], subtract=["dog"]))
    np.testing.assert_allclose(signed, split, atol=1e-6)


def test_terms_that_cancel_raise(index: Index) -> None:
    with pytest.raises(QueryError, match="cancel out"):
        index.search(["cat", "-cat"], 5, kind="any")


# --- relevance feedback -----------------------------------------------------------------------


def test_like_moves_results_and_excludes_the_liked_item(index: Index, tiny_encoder) -> None:
    text = "a red square"
    plain = index.search(text, 10, kind="any")
    liked = plain[0].id
    (q,) = tiny_encoder.embed_texts([text])
    expected_vector = unit(q + index.store.vector(liked))
    np.testing.assert_allclose(index.query_vector(Query.parse(text, like=[liked])), expected_vector, atol=1e-5)
    hits = index.search(text, 10, kind="any", like=[liked])
    assert liked not in [h.id for h in hits]
    assert hits[0].id != plain[0].id
    assert_same_results(hits, reference(index, Query.parse(text, like=[liked]), 10, exclude=[liked]))
    assert_same_results(
        hits,
        brute_force_search(index, expected_vector, 10, [i for i in index.store.item_ids() if i != liked]),
    )


def test_like_works_with_a_query_object(index: Index) -> None:
    liked = index.search("blue", 1, kind="any")[0].id
    from_query = index.search(Query.parse("blue"), 8, kind="any", like=[liked])
    from_text = index.search("blue", 8, kind="any", like=[liked])
    assert pairs(from_query) == pairs(from_text)
    assert liked not in [h.id for h in from_query]


def test_unlike_subtracts_half_the_item(index: Index, tiny_encoder) -> None:
    text = "a green circle"
    disliked = index.search(text, 1, kind="image")[0].id
    (q,) = tiny_encoder.embed_texts([text])
    expected_vector = unit(q - 0.5 * index.store.vector(disliked))
    query = Query.parse(text, unlike=[disliked])
    np.testing.assert_allclose(index.query_vector(query), expected_vector, atol=1e-5)
    hits = index.search(text, 10, kind="image", unlike=[disliked])
    assert disliked not in [h.id for h in hits]
    assert_same_results(
        hits,
        brute_force_search(index, expected_vector, 10, [i for i in index.store.item_ids("image") if i != disliked]),
    )


def test_weighted_like(index: Index, tiny_encoder) -> None:
    liked = image_item(index, "img5.png")
    (q,) = tiny_encoder.embed_texts(["tree"])
    expected_vector = unit(q + 2 * index.store.vector(liked))
    np.testing.assert_allclose(index.query_vector(Query.parse("tree", like=[f"2:{liked}"])), expected_vector, atol=1e-5)


def test_like_unknown_item_raises(index: Index) -> None:
    with pytest.raises(QueryError, match="no item with id 99999 in this index"):
        index.search("cat", 5, like=[99999])


def test_similar_never_returns_the_item(index: Index) -> None:
    for item_id in index.store.item_ids():
        hits = index.similar(item_id, 6, kind="any")
        assert item_id not in [h.id for h in hits]
        expected = brute_force_search(
            index, index.store.vector(item_id), 6, [i for i in index.store.item_ids() if i != item_id]
        )
        assert_same_results(hits, expected)


def test_similar_default_kind_is_image(index: Index) -> None:
    item_id = image_item(index, "img4.png")
    hits = index.similar(item_id, 100)
    assert len(hits) == 29
    assert {h.kind for h in hits} == {"image"}


# --- filters ----------------------------------------------------------------------------------


def test_min_score_drops_hits_below(index: Index) -> None:
    unfiltered = index.search("a yellow circle", 20, kind="any")
    threshold = unfiltered[7].score
    hits = index.search("a yellow circle", 20, kind="any", min_score=threshold)
    assert [h.id for h in hits] == [h.id for h in unfiltered if h.score >= threshold]
    assert len(hits) >= 8
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert index.search("a yellow circle", 20, kind="any", min_score=1.0) == []


def test_within_keeps_hits_close_to_the_best(index: Index) -> None:
    unfiltered = index.search("a dark square", 25, kind="any")
    best = unfiltered[0].score
    for margin in (0.0, 0.01, 0.05, 0.2, 2.0):
        hits = index.search("a dark square", 25, kind="any", within=margin)
        assert [h.id for h in hits] == [h.id for h in unfiltered if h.score >= best - margin]
        assert hits[0].id == unfiltered[0].id
    assert len(index.search("a dark square", 25, kind="any", within=2.0)) == 25


def test_under_keeps_only_paths_inside_the_folder(index: Index, photos: Path) -> None:
    sub = photos / "sub"
    full = index.search("a green circle", 1000, kind="any")
    for kind in ("any", "image", "caption"):
        hits = index.search("a green circle", 7, kind=kind, under=sub)
        assert hits
        assert all(Path(h.path).is_relative_to(sub) for h in hits)
        expected = [h for h in full if h.relpath.startswith("sub/") and (kind == "any" or h.kind == kind)][:7]
        assert_same_results(hits, pairs(expected))
    assert len(index.search("a green circle", 1000, kind="image", under=str(sub))) == 10


def test_under_and_path_together(index: Index, photos: Path) -> None:
    hits = index.search("red", 100, kind="image", under=photos / "sub", path="*sub[0-2].png")
    assert sorted(h.relpath for h in hits) == ["sub/sub0.png", "sub/sub1.png", "sub/sub2.png"]


def test_filters_that_allow_nothing_return_empty(index: Index, photos: Path, tmp_path: Path) -> None:
    assert index.search("cat", 5, kind="any", path="no-such-file-*") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert index.search("cat", 5, kind="any", under=empty) == []
    # sub/sub2.png has no captions
    assert index.search("cat", 5, kind="caption", path="sub/sub2.png") == []
    # the only item the filter allows is the query image itself
    assert index.search(str(photos / "sub" / "sub2.png"), 5, kind="image", path="sub/sub2.png") == []


@pytest.mark.parametrize("k", [0, -1, 10_001, 2.5, True])
def test_bad_k_raises(index: Index, k) -> None:
    with pytest.raises(QueryError, match="k must be a whole number from 1 to 10000"):
        index.search("cat", k)


def test_bad_kind_and_ranges_raise(index: Index) -> None:
    with pytest.raises(QueryError, match=r"kind must be one of image, caption, any \(got bogus\)"):
        index.search("cat", 5, kind="bogus")
    with pytest.raises(QueryError, match="within is a cosine margin from 0 to 2"):
        index.search("cat", 5, within=-0.1)
    with pytest.raises(QueryError, match="min-score is a cosine from -1 to 1"):
        index.search("cat", 5, min_score=1.5)


# --- describe ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory, tiny_encoder):
    """Images with captions, some texts repeated across images and within the tree."""
    tmp_path = tmp_path_factory.mktemp("captioned")
    root = tmp_path / "captioned"
    colours = list(COLOURS)
    for i in range(8):
        make_image(root / f"img{i}.png", colours[i], "circle" if i % 2 else "square", seed=i)
    texts = {
        0: "a red square\na box\nsomething red",
        1: "a green circle\na box",
        2: "a blue square\na red square",
        3: "a yellow circle",
        4: "a box\na dark thing",
        5: "a white square\nsomething red",
    }
    for i, text in texts.items():
        (root / f"img{i}.txt").write_text(text + "\n")
    with isolated(tmp_path_factory):
        idx = Index.create(tmp_path / "captioned-index", encoder=tiny_encoder)
        idx.add(root)
    yield idx, root
    idx.close()


def distinct_caption_reference(index: Index, vector: np.ndarray) -> list[tuple[str, float]]:
    caption_ids = index.store.item_ids("caption")
    texts = {i: row.text for i, row in index.store.items(caption_ids).items()}
    seen: set[str] = set()
    ranked = []
    for item_id, score in brute_force_search(index, vector, len(caption_ids), caption_ids):
        if texts[item_id] not in seen:
            seen.add(texts[item_id])
            ranked.append((texts[item_id], score))
    return ranked


def test_describe_returns_distinct_caption_texts_in_brute_force_order(captioned, query_images) -> None:
    index, root = captioned
    distinct_texts = {row.text for row in index.store.items(index.store.item_ids("caption")).values()}
    assert len(distinct_texts) == 8
    assert index.counts()["captions"] == 12
    for picture in [root / "img0.png", root / "img7.png", *query_images[:3]]:
        expected = distinct_caption_reference(index, index.query_vector(Query.parse(f"image:{picture}")))
        for k in (1, 3, 8, 20):
            hits = index.describe(picture, k)
            assert {h.kind for h in hits} == {"caption"}
            texts = [h.caption for h in hits]
            assert len(texts) == len(set(texts))
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            assert texts == [t for t, _ in expected[:k]]
            np.testing.assert_allclose(scores, [s for _, s in expected[:k]], atol=1e-5)
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_describe_by_item_id_matches_describe_by_path(captioned) -> None:
    index, root = captioned
    item_id = image_item(index, "img3.png")
    by_path = index.describe(root / "img3.png", 5)
    by_id = index.describe(f"id:{item_id}", 5)
    assert [h.caption for h in by_id] == [h.caption for h in by_path]
    np.testing.assert_allclose([h.score for h in by_id], [h.score for h in by_path], atol=1e-5)


def test_describe_missing_image_raises(captioned, tmp_path: Path) -> None:
    index, _ = captioned
    with pytest.raises(QueryError, match="query image not found"):
        index.describe(tmp_path / "missing.png")


# --- classify ---------------------------------------------------------------------------------

LABELS = ["a red shape", "a green shape", "a blue shape", "a dog"]


def hand_classify(encoder, picture: Path, labels, templates=DEFAULT_TEMPLATES) -> dict[str, tuple[float, float]]:
    prompts = [template.format(label) for label in labels for template in templates]
    embedded = encoder.embed_texts(prompts).astype(np.float64).reshape(len(labels), len(templates), -1)
    label_matrix = embedded.mean(axis=1)
    label_matrix /= np.linalg.norm(label_matrix, axis=1, keepdims=True)
    image = unit(encoder.embed_images([load_image(picture)])[0]).astype(np.float64)
    cosines = label_matrix @ image
    logits = encoder.logit_scale * cosines
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return {label: (float(p), float(c)) for label, p, c in zip(labels, probabilities, cosines, strict=True)}


def test_label_vectors_are_unit_template_means(tiny_encoder) -> None:
    matrix = label_vectors(tiny_encoder, LABELS)
    assert matrix.shape == (len(LABELS), tiny_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    prompts = [t.format("a dog") for t in DEFAULT_TEMPLATES]
    np.testing.assert_allclose(matrix[3], unit(tiny_encoder.embed_texts(prompts).mean(axis=0)), atol=1e-5)


def test_classify_equals_softmax_of_scaled_cosines(index: Index, photos: Path, tiny_encoder) -> None:
    for relpath in ["img0.png", "img5.png", "sub/sub3.png"]:
        picture = photos / relpath
        result = index.classify(picture, LABELS)
        assert sorted(r.label for r in result) == sorted(LABELS)
        probabilities = [r.probability for r in result]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert probabilities == sorted(probabilities, reverse=True)
        expected = hand_classify(tiny_encoder, picture, LABELS)
        for row in result:
            assert row.probability == pytest.approx(expected[row.label][0], abs=1e-5)
            assert row.score == pytest.approx(expected[row.label][1], abs=1e-5)


def test_top_level_classify_matches_index_classify(index: Index, photos: Path, query_images, tiny_encoder) -> None:
    for picture in [photos / "img2.png", query_images[0]]:
        from_index = index.classify(picture, LABELS)
        standalone = vecsearch.classify(picture, LABELS, encoder=tiny_encoder)
        assert [r.label for r in standalone] == [r.label for r in from_index]
        np.testing.assert_allclose([r.probability for r in standalone], [r.probability for r in from_index], atol=1e-6)
        np.testing.assert_allclose([r.score for r in standalone], [r.score for r in from_index], atol=1e-6)


def test_classify_by_item_id_matches_path(index: Index, photos: Path) -> None:
    item_id = image_item(index, "img8.png")
    by_path = index.classify(photos / "img8.png", LABELS)
    by_id = index.classify(f"id:{item_id}", LABELS)
    assert [r.label for r in by_id] == [r.label for r in by_path]
    np.testing.assert_allclose([r.probability for r in by_id], [r.probability for r in by_path], atol=1e-5)


def test_classify_custom_templates(index: Index, photos: Path, tiny_encoder) -> None:
    templates = ["{}", "art of {}"]
    result = index.classify(photos / "img1.png", LABELS[:2], templates=templates)
    expected = hand_classify(tiny_encoder, photos / "img1.png", LABELS[:2], templates)
    assert {r.label: round(r.probability, 5) for r in result} == {
        label: round(p, 5) for label, (p, _) in expected.items()
    }
    assert result[0].to_dict().keys() == {"label", "probability", "score"}


def test_template_without_placeholder_raises(index: Index, photos: Path) -> None:
    with pytest.raises(QueryError, match="prompt template must contain {} where the label goes: 'a photo'"):
        index.classify(photos / "img1.png", LABELS, templates=["a photo of a {}.", "a photo"])


def test_parse_labels() -> None:
    assert parse_labels("cat, dog ,  big   bird,cat") == ["cat", "dog", "big bird"]
    assert parse_labels(["cat", "dog"]) == ["cat", "dog"]
    for bad in ("cat", "cat, cat", ["dog", " dog "], "", [], None, " , "):
        with pytest.raises(QueryError, match="at least two distinct labels"):
            parse_labels(bad)


def test_parse_labels_file(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("cat\n\ndog\n  fish  \n")
    assert parse_labels("bird", labels_file) == ["bird", "cat", "dog", "fish"]
    with pytest.raises(QueryError, match="cannot read labels file"):
        parse_labels("a,b", tmp_path / "missing.txt")


# --- hits -------------------------------------------------------------------------------------


def test_ids_that_cannot_exist_are_no_item_rather_than_an_error(index: Index) -> None:
    for never in (0, -1, 2**63, 2**64):  # SQLite's row ids are positive 64-bit integers
        assert index.item(never) is None and index.picture_data(never) is None


def test_hit_fields(index: Index, photos: Path) -> None:
    hits = index.search("a red square", 1000, kind="any")
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    keys = {"id", "rank", "score", "kind", "path", "relpath", "caption", "image", "source", "language", "tags"}
    by_relpath_image = {}
    for hit in hits:
        data = hit.to_dict()
        assert data.keys() == keys
        assert data["id"] == hit.id and data["score"] == hit.score
        assert Path(hit.path) == photos / hit.relpath
        if hit.kind == "image":
            by_relpath_image[hit.relpath] = hit
            assert hit.image == hit.id
            assert hit.source is None
    first_lines = {f"{stem}.png": text.splitlines()[0] for stem, text in SIDECARS.items()}
    for relpath, hit in by_relpath_image.items():
        assert hit.caption == first_lines.get(relpath)
    caption_hits = [h for h in hits if h.kind == "caption"]
    assert len(caption_hits) == index.counts()["captions"]
    for hit in caption_hits:
        stem = hit.relpath[: -len(".png")]
        assert hit.caption in SIDECARS[stem].splitlines()
        assert hit.image == by_relpath_image[hit.relpath].id
        assert hit.source == str(photos / f"{stem}.txt")


# --- a real text model ------------------------------------------------------------------------

TEXT_CAPTIONS = {
    "cat": "a cat sleeping on a sofa",
    "dog": "a dog running in the park",
    "car": "a red sports car on the road",
    "bus": "a yellow school bus at the stop",
    "pasta": "a bowl of pasta with tomato sauce",
    "pizza": "a slice of pepperoni pizza",
    "plane": "an airplane taking off from the runway",
    "horse": "a horse grazing in a field",
}


@pytest.fixture(scope="module")
def text_index(tmp_path_factory: pytest.TempPathFactory, minilm_encoder):
    tmp_path = tmp_path_factory.mktemp("text")
    root = tmp_path / "library"
    for n, (stem, caption) in enumerate(TEXT_CAPTIONS.items()):
        make_image(root / f"{stem}.png", seed=n)
        (root / f"{stem}.txt").write_text(caption + "\n")
    with isolated(tmp_path_factory):
        idx = Index.create(tmp_path / "text-index", encoder=minilm_encoder)
        idx.add(root)
    assert idx.counts() == {"items": 8, "images": 0, "captions": 8, "files": 8}
    yield idx
    idx.close()


def test_text_only_index_semantic_search(text_index: Index) -> None:
    for query, stem in [
        ("a kitten", "cat"),
        ("a puppy playing", "dog"),
        ("spaghetti dinner", "pasta"),
        ("a jet at the airport", "plane"),
    ]:
        hits = text_index.search(query, 3)
        assert hits[0].caption == TEXT_CAPTIONS[stem], query
        assert hits[0].relpath == f"{stem}.png"
        assert hits[0].kind == "caption"
        assert hits[0].image is None


def test_text_only_index_equals_brute_force(text_index: Index) -> None:
    for query in ["a kitten", "vehicles", "something to eat", "an animal outdoors"]:
        for k in (3, 50):
            hits = text_index.search(query, k)
            assert {h.kind for h in hits} == {"caption"}
            assert_same_results(hits, reference(text_index, Query.parse(query), k, "caption"))
    mixed = ["a kitten", "+a puppy", "-0.5:sofa"]
    assert_same_results(text_index.search(mixed, 8), reference(text_index, Query.parse(mixed), 8, "caption"))
