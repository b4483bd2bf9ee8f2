"""Property-based tests (hypothesis): the query parser and combiner, and incremental indexing.

The parser is checked against what its grammar promises: anything typed either parses or raises
QueryError; a term's printed form parses back to the same term; signs, weights and order survive.
Incremental indexing is checked against the simplest oracle there is: after any sequence of file
changes and crawls, the index must hold what a fresh index of the same tree holds.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_image
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from vecsearch import Index, Query, QueryError, Term
from vecsearch.index import brute_force_search
from vecsearch.query import (
    IMAGE,
    ITEM,
    MAX_WEIGHT,
    MIN_WEIGHT,
    TEXT,
    URL,
    combine,
    parse_term,
)

# No example database: the tests must not leave files in the checkout, and they are fast to rerun.
FAST = settings(max_examples=100, deadline=None, database=None)

# --- strategies for query terms ---------------------------------------------------------------

WORDS = st.from_regex(r"[a-z][a-z ]{0,15}[a-z]|[a-z]", fullmatch=True)
GOOD_WEIGHTS = st.floats(min_value=MIN_WEIGHT, max_value=MAX_WEIGHT, allow_nan=False, allow_infinity=False)
BAD_WEIGHT_TEXTS = st.sampled_from(
    ["", "inf", "nan", "Infinity", "-inf", "1.2.3", "1e", "1..2", "1e999", "0", "0.0", "1e-9", "2e6", "e5", "1e5e5"]
)


def weight_text(weight: float, style: int) -> str:
    """A weight written as people write them: 2, 0.5, 1e-05, 2.5E+03."""
    if style == 0:
        return repr(weight)
    if style == 1:
        return f"{weight:.17g}".replace("e+", "e")
    return f"{weight:.17E}"


@st.composite
def term_tokens(draw: Any) -> tuple[str, Term | None]:
    """A token built from the grammar's parts, with the term it must parse to (None: a QueryError)."""
    sign = draw(st.sampled_from(["", "+", "-", "- ", "+ "]))
    negative = sign.startswith("-")
    weight_part, weight, valid = "", 1.0, True
    choice = draw(st.integers(0, 3))
    if choice in (1, 2):
        weight = draw(GOOD_WEIGHTS)
        weight_part = weight_text(weight, draw(st.integers(0, 2))) + ":"
        if float(weight_part[:-1]) != weight:  # the written form is what counts
            weight = float(weight_part[:-1])
        valid = MIN_WEIGHT <= weight <= MAX_WEIGHT
    elif choice == 3:
        weight_part = draw(BAD_WEIGHT_TEXTS) + ":"
        valid = False
    kind = draw(st.sampled_from([TEXT, "text:", ITEM, URL]))
    if kind == TEXT:
        body = draw(WORDS)
        term = Term(TEXT, body, 1.0)
    elif kind == "text:":
        body_text = draw(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != ""))
        prefix = draw(st.sampled_from(["text:", "TEXT:", "Text: "]))
        body = prefix + body_text
        term = Term(TEXT, body_text.strip(), 1.0)
    elif kind == ITEM:
        number = draw(st.integers(0, 2**63 - 1))
        body = draw(st.sampled_from(["id:", "ID:", "id: "])) + str(number)
        term = Term(ITEM, str(number), 1.0)
    else:
        body = "https://example.com/" + draw(WORDS).replace(" ", "_") + ".jpg"
        term = Term(URL, body, 1.0)
    token = draw(st.sampled_from(["", " ", "\t"])) + sign + weight_part + body + draw(st.sampled_from(["", " "]))
    if not valid:
        return token, None
    return token, Term(term.kind, term.value, -weight if negative else weight)


# --- the parser -------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=40))
def test_any_text_parses_or_raises_query_error(token: str) -> None:
    try:
        term = parse_term(token)
    except QueryError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 400
        return
    assert term.kind in (TEXT, IMAGE, URL, ITEM)
    assert math.isfinite(term.weight) and MIN_WEIGHT <= abs(term.weight) <= MAX_WEIGHT
    assert term.value == term.value.strip() and term.value


@FAST
@given(
    st.lists(st.text(max_size=12), max_size=4),
    st.lists(st.text(max_size=12), max_size=2),
    st.lists(st.text(max_size=12), max_size=2),
    st.lists(st.text(max_size=8), max_size=2),
    st.lists(st.text(max_size=8), max_size=2),
)
def test_any_query_parses_or_raises_query_error(terms, add, subtract, like, unlike) -> None:
    try:
        query = Query.parse(terms, add=add, subtract=subtract, like=like, unlike=unlike)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert any(t.weight > 0 for t in query.terms)
    assert len(query.terms) == len(terms) + len(add) + len(subtract) + len(like) + len(unlike)


@pytest.mark.parametrize(
    "token",
    [
        "id:" + "9" * 5000,  # more digits than Python turns into an int
        "id:9223372036854775808",  # one past SQLite's largest integer
        "x" * 300 + ".jpg",  # a name the file system refuses
        "~no-such-user-here/cat.jpg",  # a home folder that cannot be found
        "image:",
        ":cat",
        "-:cat",
        "inf:cat",
        "-NaN:cat",
        "1e999:cat",
        "1e-9:cat",
        "1.2.3:first line\nsecond line",
    ],
)
def test_hostile_terms_raise_query_error_on_one_line(token: str) -> None:
    with pytest.raises(QueryError) as info:
        Query.parse([token])
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 400


@FAST
@given(term_tokens())
def test_structured_terms_parse_to_their_parts(case: tuple[str, Term | None]) -> None:
    token, expected = case
    if expected is None:
        with pytest.raises(QueryError):
            parse_term(token)
        return
    assert parse_term(token) == expected


@FAST
@given(term_tokens())
def test_printed_term_parses_back(case: tuple[str, Term | None]) -> None:
    token, _ = case
    try:
        term = parse_term(token)
    except QueryError:
        return
    assert parse_term(str(term)) == term


@FAST
@given(st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != ""), GOOD_WEIGHTS, st.booleans())
def test_any_text_term_prints_in_a_form_that_parses_back(text: str, weight: float, negative: bool) -> None:
    """Text that looks like an image, an id, a URL or a weight is printed with `text:`."""
    term = Term(TEXT, text.strip(), -weight if negative else weight)
    assert parse_term(str(term)) == term


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("query-pictures")
    make_image(folder / "pic.png")
    make_image(folder / "sub dir" / "other.JPG", "blue")
    (folder / "scan").write_bytes((folder / "pic.png").read_bytes())
    return folder


@FAST
@given(
    st.lists(
        st.one_of(
            term_tokens().map(lambda case: case[0]),
            st.sampled_from(["pic.png", "-0.5:sub dir/other.JPG", "2:image:scan", "+./pic.png"]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, 10**6), max_size=2),
    st.lists(st.integers(0, 10**6), max_size=2),
)
def test_printed_query_parses_back(picture_folder: Path, tokens: list[str], like: list[int], unlike: list[int]) -> None:
    try:
        query = Query.parse(tokens, like=like, unlike=unlike, base=picture_folder)
    except QueryError:
        return
    assert Query.parse(query.tokens()) == query


@FAST
@given(
    st.lists(term_tokens(), max_size=5),
    st.lists(WORDS, max_size=3),
    st.lists(WORDS, max_size=3),
    st.lists(st.integers(0, 1000), max_size=3),
    st.lists(st.integers(0, 1000), max_size=3),
)
def test_terms_keep_their_order_and_sign(cases, add, subtract, like, unlike) -> None:
    tokens = [token for token, _ in cases]
    if any(expected is None for _, expected in cases):
        with pytest.raises(QueryError):
            Query.parse(tokens, add=add, subtract=subtract, like=like, unlike=unlike)
        return
    expected = [term for _, term in cases if term is not None]
    expected += [Term(TEXT, word, 1.0) for word in add]
    expected += [Term(TEXT, word, -1.0) for word in subtract]
    expected += [Term(ITEM, str(n), 1.0) for n in like] + [Term(ITEM, str(n), -0.5) for n in unlike]
    if not any(t.weight > 0 for t in expected):
        with pytest.raises(QueryError, match="empty query|only negative terms"):
            Query.parse(tokens, add=add, subtract=subtract, like=like, unlike=unlike)
        return
    query = Query.parse(tokens, add=add, subtract=subtract, like=like, unlike=unlike)
    assert list(query.terms) == expected
    assert query.item_ids == [t.item_id for t in expected if t.kind == ITEM]


# --- combining --------------------------------------------------------------------------------

DIM = 8
NAMES = ["a", "b", "c", "d"]


def table_for(seed: int) -> dict[str, np.ndarray]:
    """Random vectors of random lengths: combine must not care how long an embedding is."""
    rng = np.random.default_rng(seed)
    return {name: (rng.normal(size=DIM) * rng.uniform(0.1, 10)).astype(np.float32) for name in NAMES}


def embedder(table: dict[str, np.ndarray]):
    return lambda texts: np.stack([table[t] for t in texts])


def no_images(images):
    raise AssertionError("no image should be embedded")


def no_items(item_id: int):
    raise AssertionError("no item should be looked up")


WEIGHTED = st.tuples(st.sampled_from(NAMES), st.floats(0.01, 100), st.booleans())


@FAST
@given(st.integers(0, 2**32 - 1), st.lists(WEIGHTED, min_size=1, max_size=6))
def test_combine_is_unit_norm_and_the_weighted_sum_or_a_clear_error(seed: int, terms) -> None:
    table = table_for(seed)
    tokens = [f"{'-' if negative else ''}{weight!r}:{name}" for name, weight, negative in terms]
    assume(any(not negative for _, _, negative in terms))
    query = Query.parse(tokens)
    reference = sum(
        (-w if negative else w) * table[name].astype(np.float64) / np.linalg.norm(table[name].astype(np.float64))
        for name, w, negative in terms
    )
    scale = sum(w for _, w, _ in terms)
    try:
        vector = combine(query, embedder(table), no_images, no_items)
    except QueryError as exc:
        assert "cancel out" in str(exc)
        assert np.linalg.norm(reference) <= 1e-5 * scale  # only what really is (nearly) nothing
        return
    assert vector.dtype == np.float32 and vector.shape == (DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(vector, reference / np.linalg.norm(reference), atol=1e-5)


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.lists(WEIGHTED, min_size=1, max_size=5),
    st.randoms(use_true_random=False),
    st.floats(1e-3, 1e3),
)
def test_combine_ignores_order_and_overall_scale(seed: int, terms, rng, factor: float) -> None:
    table = table_for(seed)
    assume(any(not negative for _, _, negative in terms))
    tokens = [f"{'-' if negative else ''}{weight!r}:{name}" for name, weight, negative in terms]
    shuffled = list(tokens)
    rng.shuffle(shuffled)
    scaled = [f"{'-' if negative else ''}{weight * factor!r}:{name}" for name, weight, negative in terms]
    outcomes = []
    for variant in (tokens, shuffled, scaled):
        try:
            outcomes.append(combine(Query.parse(variant), embedder(table), no_images, no_items))
        except QueryError:
            outcomes.append(None)
    if outcomes[0] is None:
        return  # a cancelled query; how close to cancelled the variants are is rounding
    for other in outcomes[1:]:
        if other is not None:
            np.testing.assert_allclose(other, outcomes[0], atol=1e-5)


@FAST
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(NAMES),
    st.floats(MIN_WEIGHT, MAX_WEIGHT),
    st.lists(st.floats(MIN_WEIGHT, MAX_WEIGHT), max_size=3),
)
def test_terms_that_cancel_raise(seed: int, name: str, weight: float, parts: list[float]) -> None:
    """`w:x` minus the same weight of x, however it is split up, leaves nothing to search for."""
    table = table_for(seed)
    tokens = [f"{weight!r}:{name}", f"-{weight!r}:{name}"]
    tokens += [f"{p!r}:{name}" for p in parts] + [f"-{p!r}:{name}" for p in parts]
    with pytest.raises(QueryError, match="cancel out"):
        combine(Query.parse(tokens), embedder(table), no_images, no_items)


def test_combine_refuses_constructed_queries_with_nothing_positive() -> None:
    table = table_for(0)
    with pytest.raises(QueryError, match="empty query"):
        combine(Query(()), embedder(table), no_images, no_items)
    with pytest.raises(QueryError, match="only negative"):
        combine(Query((Term(TEXT, "a", -1.0),)), embedder(table), no_images, no_items)
    with pytest.raises(QueryError, match="no item with id"):
        combine(Query((Term(ITEM, str(2**70), 1.0),)), embedder(table), no_images, lambda item_id: None)


# --- incremental indexing against a fresh index -----------------------------------------------

IMAGE_NAMES = ["a.png", "a.jpg", "b.png", "B.PNG", "sub/c.png", "sub/a.png", "sub/deep/d.png"]
CAPTIONS = ["a red thing", "blue\nsecond line", "a red thing\n\n  another  \n", "", "   \n", "café ☕"]
QUERIES = ["a red thing", "blue"]


def sidecar_of(name: str) -> str:
    path = Path(name)
    return str(path.with_name(path.stem + ".txt"))


def index_contents(index: Index) -> tuple[Counter, dict[tuple[str, str, str | None], np.ndarray]]:
    """(relpath, kind, caption text) of every item, counted, and the vector of each."""
    rows = index.store.conn.execute(
        "SELECT f.relpath, i.kind, i.text, v.data FROM items i JOIN files f ON f.id = i.file_id"
        " LEFT JOIN vectors v ON v.item_id = i.id"
    ).fetchall()
    keys: Counter = Counter()
    vectors: dict[tuple[str, str, str | None], np.ndarray] = {}
    for relpath, kind, text, data in rows:
        key = (relpath, kind, text)
        keys[key] += 1
        assert data is not None, f"item without a vector: {key}"
        vector = np.frombuffer(data, dtype=np.float32)
        if key in vectors:  # the same caption twice in one file: the same text, the same vector
            np.testing.assert_allclose(vector, vectors[key], atol=1e-6)
        vectors[key] = vector
    return keys, vectors


def assert_search_is_exact(index: Index) -> None:
    """The FAISS path ranks every item as brute force over the stored vectors does (ties aside)."""
    total = index.counts()["items"]
    assert index.vectors.ntotal == total
    if total == 0:
        return
    for text in QUERIES:
        query = Query.parse(text)
        hits = index.search(query, k=1000, kind="any")
        expected = brute_force_search(index, index.query_vector(query), 1000)
        assert sorted(h.id for h in hits) == sorted(i for i, _ in expected)
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)
        by_id = dict(expected)
        for hit in hits:
            assert hit.score == pytest.approx(by_id[hit.id], abs=1e-5)


class CrawlMachine(RuleBasedStateMachine):
    """Random file operations on a real folder, crawled now and then; checked at the end."""

    encoder: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.base = Path(self._tmp.name)
        self.root = self.base / "tree"
        self.root.mkdir()
        self.index = Index.create(self.base / "idx", encoder=self.encoder)
        self.clock = 1_700_000_000 * 10**9
        self.crawled = False
        self.contents = CONTENTS

    # --- helpers

    def tick(self, path: Path) -> None:
        """A new, later mtime for every write: a change must never hide behind an equal size and mtime."""
        self.clock += 7 * 10**9
        os.utime(path, ns=(self.clock, self.clock))

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.tick(path)

    # --- file operations

    @rule(name=st.sampled_from(IMAGE_NAMES), content=st.integers(0, 3))
    def write_image(self, name: str, content: int) -> None:
        """Add a picture, or change one (possibly to the same content, or to one that is no image)."""
        self.write(name, self.contents[content])

    @rule(name=st.sampled_from(IMAGE_NAMES), caption=st.sampled_from(CAPTIONS))
    def write_caption(self, name: str, caption: str) -> None:
        """Add or edit a sidecar (also of a picture that is not there)."""
        self.write(sidecar_of(name), caption.encode())

    @rule(name=st.sampled_from(IMAGE_NAMES + [sidecar_of(n) for n in IMAGE_NAMES]))
    def delete(self, name: str) -> None:
        path = self.root / name
        if path.is_file():
            path.unlink()

    @rule(name=st.sampled_from(IMAGE_NAMES))
    def touch(self, name: str) -> None:
        """A new mtime, the same content: hashed again, embedded again never."""
        if (self.root / name).is_file():
            self.tick(self.root / name)

    @rule(source=st.sampled_from(IMAGE_NAMES), dest=st.sampled_from(IMAGE_NAMES), with_caption=st.booleans())
    def rename(self, source: str, dest: str, with_caption: bool) -> None:
        """Move a picture (the mtime goes with it), over another one or not, with its sidecar or not."""
        src, dst = self.root / source, self.root / dest
        if not src.is_file() or source == dest:
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        caption = self.root / sidecar_of(source)
        if with_caption and caption.is_file() and sidecar_of(source) != sidecar_of(dest):
            os.replace(caption, self.root / sidecar_of(dest))

    @rule(source=st.sampled_from(IMAGE_NAMES), dest=st.sampled_from(IMAGE_NAMES), keep_mtime=st.booleans())
    def duplicate(self, source: str, dest: str, keep_mtime: bool) -> None:
        src, dst = self.root / source, self.root / dest
        if not src.is_file() or source == dest:
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        if keep_mtime:
            shutil.copy2(src, dst)
        else:
            shutil.copyfile(src, dst)
            self.tick(dst)

    @rule(dest=st.sampled_from(["sub", "moved", "sub/deep"]))
    def move_folder(self, dest: str) -> None:
        """Move a whole folder: every file in it is renamed at once."""
        source = next(
            (
                self.root / s
                for s in ("sub", "moved", "sub/deep")
                if (self.root / s).is_dir() and s != dest and not dest.startswith(s + "/")
            ),
            None,
        )
        if source is None or (self.root / dest).exists():
            return
        (self.root / dest).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, self.root / dest)

    # --- crawling

    @rule(by_root=st.booleans())
    def crawl(self, by_root: bool) -> None:
        """`index.add()` re-crawls the recorded folder; `index.add(root)` names it."""
        if by_root or not self.crawled:
            self.index.add(self.root)
        else:
            self.index.add()
        self.crawled = True

    @invariant()
    def vectors_match_rows(self) -> None:
        if self.crawled:
            assert self.index.vectors.ntotal == self.index.counts()["items"]

    def teardown(self) -> None:
        try:
            self.index.add(self.root)
            fresh = Index.create(self.base / "fresh", encoder=self.encoder)
            fresh.add(self.root)
            keys, vectors = index_contents(self.index)
            fresh_keys, fresh_vectors = index_contents(fresh)
            assert keys == fresh_keys
            for key, vector in fresh_vectors.items():
                np.testing.assert_allclose(vectors[key], vector, atol=1e-5, err_msg=str(key))
            assert_search_is_exact(self.index)
            fresh.close()
            self.index.close()
            with Index.open(self.base / "idx") as reopened:  # what was saved is what was held
                assert reopened.vectors.ntotal == reopened.counts()["items"] == sum(keys.values())
                assert_search_is_exact(reopened)
        finally:
            self.index.close()
            self._tmp.cleanup()


def picture_bytes(colour: str, seed: int, suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return make_image(Path(folder) / f"p{suffix}", colour, size=(40, 30), seed=seed).read_bytes()


# Three pictures and a file that is no picture. The first two are BMPs of one size: the same number of
# bytes, other pixels, so only the hash can tell them apart. The file names say .png; decoders go by content.
CONTENTS: list[bytes] = []
NOT_A_PICTURE = b"this is not an image"


def test_incremental_index_equals_fresh_index(tiny_encoder) -> None:
    if not CONTENTS:
        CONTENTS.extend(
            [
                picture_bytes("red", 1, ".bmp"),
                picture_bytes("blue", 2, ".bmp"),
                picture_bytes("green", 3, ".png"),
                NOT_A_PICTURE,
            ]
        )
        assert len(CONTENTS[0]) == len(CONTENTS[1]) and CONTENTS[0] != CONTENTS[1]
    CrawlMachine.encoder = tiny_encoder
    # 25 sequences keep the suite quick; CRAWL_EXAMPLES=300 hunts harder (a few minutes).
    examples = int(os.environ.get("CRAWL_EXAMPLES", "25"))
    run_state_machine_as_test(
        CrawlMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=10,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_picture_replaced_by_a_non_picture_leaves_the_index(tmp_path: Path, tiny_encoder) -> None:
    root = tmp_path / "tree"
    make_image(root / "a.png")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(root)
        (root / "a.png").write_bytes(NOT_A_PICTURE)
        info = (root / "a.png").stat()
        os.utime(root / "a.png", ns=(info.st_atime_ns, info.st_mtime_ns + 100 * 10**9))
        report = index.add(root)
        assert [s.reason for s in report.skipped] == ["not a readable image"]
        # a fresh index of this tree holds nothing; neither should this one
        assert index.counts()["items"] == 0 and report.removed == 1
