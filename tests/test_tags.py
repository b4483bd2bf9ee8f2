"""Zero-shot tags for every picture (`Index.tag`, `vecsearch tag`/`tags`, `search --tag`): the tags are
`classify`'s own answers, kept in step with later crawls, and the tag filter keeps exactly the pictures
that carry the tag."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SCORE_ATOL, assert_same_ranking, index_of, make_collection, make_image

from vecsearch import DEFAULT_TEMPLATES, Index, QueryError
from vecsearch.cli import main
from vecsearch.query import Query

LABELS = ["apple", "sea", "leaf", "sun", "car", "tent", "night", "snow", "dog", "house"]
PROMPT = "a red apple"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
    return make_collection(tmp_path_factory.mktemp("tag-photos"), names, extra=6, extra_seed=40)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder) -> Path:
    return index_of(tmp_path_factory.mktemp("tag-index") / "idx", photos, tiny_encoder)


@pytest.fixture
def index(tmp_path: Path, built: Path, tiny_encoder):
    """A copy of the built index of its own, for each test to tag, crawl and filter."""
    shutil.copytree(built, tmp_path / "idx")
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as opened:
        yield opened


def labels_of(hit) -> list[str]:
    return [tag.label for tag in hit.tags]


def image_ids(index: Index) -> list[int]:
    return index.store.item_ids("image")


def a_partial_tag(index: Index) -> str:
    """A label that some pictures carry and some do not: the filter then has something to leave out."""
    counts, pictures = index.tag_counts(), index.counts()["images"]
    partial = [label for label, count in counts.items() if 0 < count < pictures]
    assert partial, counts
    return partial[0]


def test_tags_are_classifys_top_labels(index: Index) -> None:
    report = index.tag(LABELS, top=3)
    assert (report.tagged, report.pictures, report.labels, report.top) == (14, 14, 10, 3)
    assert report.retagged and report.reason == "new tag set"
    tags = index.tags_of(image_ids(index))
    assert set(tags) == set(image_ids(index))
    for item_id, kept in tags.items():
        expected = index.classify(f"id:{item_id}", LABELS)[:3]
        assert [t.label for t in kept] == [e.label for e in expected]
        np.testing.assert_allclose([t.probability for t in kept], [e.probability for e in expected], atol=SCORE_ATOL)
        np.testing.assert_allclose([t.score for t in kept], [e.score for e in expected], atol=SCORE_ATOL)
    counts = index.tag_counts()
    assert list(counts) == LABELS and sum(counts.values()) == 14 * 3
    tag_set = index.tag_set()
    assert tag_set is not None
    assert tag_set.labels == tuple(LABELS) and tag_set.templates == DEFAULT_TEMPLATES and tag_set.top == 3


@pytest.mark.parametrize("top", [1, 3, 7])
def test_one_matrix_product_gives_classify_vectors_numbers(top: int) -> None:
    """The batch arithmetic against `classify_vector`, picture by picture, on random unit vectors."""
    from vecsearch.classify import classify_vector
    from vecsearch.tags import top_labels

    rng = np.random.default_rng(top)
    pictures = rng.standard_normal((50, 24)).astype(np.float32)
    labels = rng.standard_normal((7, 24)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    names = [f"label {i}" for i in range(7)]
    best, probabilities, scores = top_labels(pictures, labels, 100.0, top)
    assert best.shape == probabilities.shape == scores.shape == (50, top)
    for row, picture in enumerate(pictures):
        expected = classify_vector(picture[None, :], names, labels, 100.0)[:top]
        assert [names[i] for i in best[row]] == [e.label for e in expected]
        np.testing.assert_allclose(probabilities[row], [e.probability for e in expected], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(scores[row], [e.score for e in expected], atol=SCORE_ATOL)


def test_templates_are_classifys_too(index: Index) -> None:
    templates = ["a drawing of {}", "{}"]
    index.tag(LABELS[:4], templates, top=1)
    for item_id, kept in index.tags_of(image_ids(index)).items():
        best = index.classify(f"id:{item_id}", LABELS[:4], templates)[0]
        assert kept[0].label == best.label and abs(kept[0].probability - best.probability) <= SCORE_ATOL


def test_later_crawls_tag_what_they_add_and_removed_pictures_leave(index: Index, photos: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    make_image(extra / "new.png", "orange", seed=77)
    index.tag(LABELS, top=2)
    report = index.add(extra)
    assert report.added == 1 and report.tagged == 1
    new_id = max(image_ids(index))
    best = [s.label for s in index.classify(f"id:{new_id}", LABELS)[:2]]
    assert [t.label for t in index.tags_of([new_id])[new_id]] == best
    assert index.tagged_count() == 15 and sum(index.tag_counts().values()) == 30

    (extra / "new.png").unlink()
    report = index.add(extra)
    assert report.removed == 1 and report.tagged == 0
    assert index.tagged_count() == 14 and sum(index.tag_counts().values()) == 28
    assert index.tags_of([new_id]) == {}
    (gone,) = index.store.conn.execute("SELECT COUNT(*) FROM item_tags WHERE item_id = ?", (new_id,)).fetchone()
    assert gone == 0

    # Unchanged settings only catch up: nothing is embedded or tagged again.
    again = index.tag(LABELS, top=2)
    assert (again.tagged, again.retagged, again.label_seconds) == (0, False, 0.0)


def test_a_new_label_list_retags_everything(index: Index) -> None:
    index.tag(LABELS, top=2)
    before = index.tags_of(image_ids(index))
    for labels, top, reason in (
        (["cat", "dog", "bird"], 2, "labels changed"),
        (["cat", "dog", "bird"], 1, "top changed"),
    ):
        report = index.tag(labels, top=top)
        assert (report.tagged, report.retagged, report.reason) == (14, True, reason)
        assert list(index.tag_counts()) == labels and sum(index.tag_counts().values()) == 14 * top
    report = index.tag(["cat", "dog", "bird"], ["a photo of {}"], top=1)
    assert report.reason == "templates changed"
    assert all(t[0].label in ("cat", "dog", "bird") for t in index.tags_of(image_ids(index)).values())
    assert before != index.tags_of(image_ids(index))

    assert index.untag() and index.tag_set() is None and index.tag_counts() == {}
    assert not index.untag()
    assert index.add().tagged == 0  # an untagged index tags nothing on a crawl
    assert all(not h.tags for h in index.search(PROMPT, k=5))


@pytest.mark.parametrize(
    "filters", [{}, {"kind": "caption"}, {"kind": "any"}, {"path": "trips/*"}, {"under": "more"}, {"min_score": 0.1}]
)
def test_tag_filter_equals_filtering_the_unfiltered_results(index: Index, photos: Path, filters: dict) -> None:
    index.tag(LABELS, top=3)
    label = a_partial_tag(index)
    if "under" in filters:
        filters = {**filters, "under": photos / filters["under"]}
    everything = index.search(PROMPT, k=1000, **filters)
    wanted = [h for h in everything if label in labels_of(h)]
    got = index.search(PROMPT, k=1000, tag=label, **filters)
    assert [(h.id, h.tags) for h in got] == [(h.id, h.tags) for h in wanted]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in wanted], atol=SCORE_ATOL)
    assert [h.rank for h in got] == list(range(1, len(got) + 1))
    if len(wanted) > 2:  # k still counts: the best two that carry the tag
        assert [h.id for h in index.search(PROMPT, k=2, tag=label, **filters)] == [h.id for h in wanted[:2]]
    query = index.query_vector(Query.parse([PROMPT]))  # raw vectors take the same filter
    assert [h.id for h in index.search_vectors(query, k=1000, tag=label, **filters)] == [h.id for h in wanted]


def test_hits_carry_their_pictures_tags(index: Index) -> None:
    index.tag(LABELS, top=2)
    for hit in index.search("fruit", k=20, kind="any"):
        picture = hit.id if hit.kind == "image" else hit.image
        assert hit.tags == index.tags_of([picture])[picture]
        assert hit.to_dict()["tags"][0].keys() == {"label", "probability", "score"}


def test_refused_tags_and_settings(index: Index) -> None:
    with pytest.raises(QueryError, match="has no tags to filter by"):
        index.search(PROMPT, tag="apple")
    index.tag(LABELS)
    with pytest.raises(QueryError, match="no tag 'apples' in index idx; its tags are apple, sea"):
        index.search(PROMPT, tag="apples")
    assert index.search(PROMPT, k=3, tag="  APPLE ") == index.search(PROMPT, k=3, tag="apple")
    with pytest.raises(QueryError, match="top must be a whole number from 1 to the number of labels, 2"):
        index.tag(["cat", "dog"], top=3)
    with pytest.raises(QueryError, match="at least two distinct labels"):
        index.tag("cat")
    with pytest.raises(QueryError, match="prompt template must"):
        index.tag(["cat", "dog"], ["no slot"])
    assert index.tag_set() is not None and index.tag_set().labels == tuple(LABELS)  # refused: nothing changed


# --- the command line ----------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_tag_and_tags_commands(index: Index, tmp_path: Path) -> None:
    folder = str(index.path)
    assert invoke("tag", folder).exit_code == 2  # no labels, and none recorded
    empty = invoke("tags", folder)
    assert empty.exit_code == 0 and empty.stdout == "" and "has no tags" in empty.stderr

    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(LABELS[:5]) + "\n")
    made = invoke("tag", folder, "--labels-file", str(labels_file), "--labels", "dog,house", "--top", "2")
    assert made.exit_code == 0, made.output
    assert made.stdout.startswith("idx: 14 pictures tagged with 7 labels (top 2) in ")
    assert "every picture tagged again" not in made.stdout
    labels = ["dog", "house", *LABELS[:5]]
    assert index.tag_set().labels == tuple(labels)

    again = json.loads(invoke("tag", folder, "--json").stdout)  # no labels: the recorded ones, to catch up
    assert {key: again[key] for key in ("index", "tagged", "retagged", "labels", "top")} == {
        "index": "idx",
        "tagged": 0,
        "retagged": False,
        "labels": 7,
        "top": 2,
    }

    counts = index.tag_counts()
    table = invoke("tags", folder).stdout.splitlines()
    assert table[0].split() == ["label", "pictures", "share"]
    shown = {line.split()[0]: int(line.split()[1]) for line in table[1:]}
    assert shown == counts
    assert [int(line.split()[1]) for line in table[1:]] == sorted(counts.values(), reverse=True)

    summary = json.loads(invoke("tags", folder, "--json").stdout)
    assert summary["counts"] == counts and summary["labels"] == labels and summary["top"] == 2
    assert (summary["pictures"], summary["tagged"]) == (14, 14)

    rows = list(csv.DictReader(io.StringIO(invoke("tags", folder, "--csv").stdout)))
    assert len(rows) == 28 and list(rows[0]) == ["path", "label", "rank", "probability", "score"]
    exported = [(r["path"], r["label"], int(r["rank"])) for r in rows]
    expected = [(row.path, row.label, row.rank) for row in index.tag_rows()]
    assert exported == expected
    by_path = {index.item(i).path: tags for i, tags in index.tags_of(image_ids(index)).items()}
    for r in rows:
        tag = by_path[r["path"]][int(r["rank"]) - 1]
        assert tag.label == r["label"] and abs(float(r["probability"]) - tag.probability) < 1e-6

    out = tmp_path / "tags.csv"
    written = invoke("tags", folder, "--csv", "--output", str(out))
    assert written.exit_code == 0 and written.stdout == "" and "28 tags written to" in written.stderr
    assert out.read_text() == invoke("tags", folder, "--csv").stdout
    assert invoke("tags", folder, "--output", str(out)).exit_code == 2
    assert invoke("tags", folder, "--csv", "--json").exit_code == 2

    cleared = invoke("tag", folder, "--clear")
    assert cleared.exit_code == 0 and cleared.stdout == "idx: tags cleared\n"
    assert index.tag_set() is None


def test_search_tag_option(index: Index) -> None:
    index.tag(LABELS, top=3)
    label = a_partial_tag(index)
    result = invoke("search", str(index.path), PROMPT, "-k", "50", "--tag", label, "--json")
    assert result.exit_code == 0, result.output
    shown, expected = json.loads(result.stdout), index.search(PROMPT, k=50, tag=label)
    assert_same_ranking([(h["id"], h["score"]) for h in shown], [(h.id, h.score) for h in expected])
    assert all(label in [t["label"] for t in h["tags"]] for h in shown) and len(shown) < index.counts()["images"]
    table = invoke("search", str(index.path), PROMPT, "-k", "3").stdout.splitlines()
    assert table[0].split() == ["#", "score", "kind", "id", "path", "caption", "tags"]
    unknown = invoke("search", str(index.path), PROMPT, "--tag", "zebra")
    assert unknown.exit_code == 1 and "Error: no tag 'zebra' in index idx" in unknown.stderr
    bad_top = invoke("tag", str(index.path), "--labels", "cat,dog", "--top", "3")
    assert bad_top.exit_code == 1 and "top must be" in bad_top.stderr
