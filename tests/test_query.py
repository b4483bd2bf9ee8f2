"""Query parsing (terms, signs, weights, prefixes, feedback) and combining terms into one vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from vecsearch import Query, QueryError, Term
from vecsearch.query import IMAGE, ITEM, TEXT, URL, combine, parse_term

# --- parse_term: text, signs and weights ------------------------------------------------------


def test_plain_text_is_a_text_term_with_weight_one() -> None:
    assert parse_term("a red apple") == Term(TEXT, "a red apple", 1.0)


def test_surrounding_whitespace_is_stripped() -> None:
    assert parse_term("   a cat  ") == Term(TEXT, "a cat", 1.0)


def test_plus_and_minus_signs() -> None:
    assert parse_term("+hat") == Term(TEXT, "hat", 1.0)
    assert parse_term("-dog") == Term(TEXT, "dog", -1.0)
    assert parse_term("- dog") == Term(TEXT, "dog", -1.0)


def test_lone_sign_is_text() -> None:
    assert parse_term("+") == Term(TEXT, "+", 1.0)
    assert parse_term("-") == Term(TEXT, "-", 1.0)


@pytest.mark.parametrize(
    "token, weight",
    [
        ("2:cat", 2.0),
        ("0.5:cat", 0.5),
        (".5:cat", 0.5),
        ("-0.5:cat", -0.5),
        ("+3:cat", 3.0),
        ("1e-1:cat", 0.1),
        ("2E1:cat", 20.0),
        ("-2: cat", -2.0),
    ],
)
def test_weights(token: str, weight: float) -> None:
    term = parse_term(token)
    assert term.kind == TEXT
    assert term.value == "cat"
    assert term.weight == pytest.approx(weight)


def test_sign_argument_multiplies_weight_when_unsigned() -> None:
    # add/subtract lists pass the sign and turn off sign parsing: a leading '-' is then part of the text
    assert parse_term("2:cat", sign=-1.0, signed=False) == Term(TEXT, "cat", -2.0)
    assert parse_term("-dog", sign=1.0, signed=False) == Term(TEXT, "-dog", 1.0)


@pytest.mark.parametrize("token", ["0:cat", "-0:cat", "0.0:cat", "1e999:cat", "2e6:cat"])
def test_non_positive_or_huge_weight_raises(token: str) -> None:
    with pytest.raises(QueryError, match="weight must be a positive number") as info:
        parse_term(token)
    assert token in str(info.value)


@pytest.mark.parametrize("token", ["2.5.1:cat", "1e:cat", "-1.2.3:dog", "1..2:cat"])
def test_malformed_weight_raises(token: str) -> None:
    with pytest.raises(QueryError, match=r"malformed weight .*write it as 2:cat or 0.5:cat"):
        parse_term(token)


def test_weight_with_letters_is_plain_text() -> None:
    # '2x' is neither a weight nor something that looks like one: the whole token is text
    assert parse_term("2x:cat") == Term(TEXT, "2x:cat", 1.0)
    assert parse_term("note: cat") == Term(TEXT, "note: cat", 1.0)


@pytest.mark.parametrize("token", ["", "   ", "\t\n", "2:", "2:   ", "-2:"])
def test_empty_terms_raise(token: str) -> None:
    with pytest.raises(QueryError, match="empty query term"):
        parse_term(token)


def test_empty_text_prefix_raises() -> None:
    with pytest.raises(QueryError, match="empty text in 'text:  '"):
        parse_term("text:  ")


# --- prefixes: text:, image:, id:, URLs -------------------------------------------------------


def test_text_prefix_forces_text_even_for_image_names(tmp_path: Path) -> None:
    make_image(tmp_path / "foo.jpg")
    assert parse_term("text:foo.jpg", base=tmp_path) == Term(TEXT, "foo.jpg", 1.0)
    assert parse_term("TEXT:foo.jpg") == Term(TEXT, "foo.jpg", 1.0)
    assert parse_term("-2:text:foo.jpg") == Term(TEXT, "foo.jpg", -2.0)


def test_existing_image_path_becomes_image_with_absolute_resolved_path(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "pics" / "dog.jpg")
    term = parse_term(str(picture))
    assert term == Term(IMAGE, str(picture.resolve()), 1.0)
    relative = parse_term("-0.5:pics/../pics/dog.jpg", base=tmp_path)
    assert relative == Term(IMAGE, str(picture.resolve()), -0.5)
    assert Path(relative.value).is_absolute()


def test_relative_image_path_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picture = make_image(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    assert parse_term("cat.png") == Term(IMAGE, str(picture.resolve()), 1.0)
    assert parse_term("./cat.png") == Term(IMAGE, str(picture.resolve()), 1.0)


def test_image_extension_is_case_insensitive(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "SHOUT.JPG")
    assert parse_term(str(picture)).kind == IMAGE


def test_explicit_image_prefix_accepts_any_extension(tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    make_image(tmp_path / "tmp.png").rename(scan)
    assert parse_term(f"image:{scan}") == Term(IMAGE, str(scan.resolve()), 1.0)
    assert parse_term("2:image:scan", base=tmp_path) == Term(IMAGE, str(scan.resolve()), 2.0)


def test_explicit_image_prefix_requires_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(QueryError) as info:
        parse_term(f"image:{missing}")
    message = str(info.value)
    assert message == f"query image not found: {missing}"
    assert "text:" not in message


def test_missing_image_path_suggests_text_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError) as info:
        parse_term("x.jpg")
    assert str(info.value) == "query image not found: x.jpg (to search for the words, write text:x.jpg)"


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "album"
    folder.mkdir()
    with pytest.raises(QueryError, match="is a folder, not an image"):
        parse_term(f"image:{folder}")
    odd = tmp_path / "holiday.jpg"
    odd.mkdir()
    with pytest.raises(QueryError, match="'.*holiday.jpg' is a folder, not an image"):
        parse_term(str(odd))


def test_path_with_slash_to_non_image_file_is_an_image_term(tmp_path: Path) -> None:
    # a path (has a slash) to an existing file is taken as an image even without an image extension
    scan = tmp_path / "scan"
    make_image(tmp_path / "tmp.png").rename(scan)
    assert parse_term(str(scan)) == Term(IMAGE, str(scan.resolve()), 1.0)


def test_bare_word_stays_text_even_if_such_a_file_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image(tmp_path / "tmp.png").rename(tmp_path / "sunset")
    monkeypatch.chdir(tmp_path)
    assert parse_term("sunset") == Term(TEXT, "sunset", 1.0)


def test_text_with_slash_that_is_no_file_stays_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_term("AC/DC") == Term(TEXT, "AC/DC", 1.0)
    assert parse_term("-AC/DC") == Term(TEXT, "AC/DC", -1.0)
    assert parse_term("either/or") == Term(TEXT, "either/or", 1.0)


def test_multiline_text_is_text_even_with_image_suffix() -> None:
    assert parse_term("first line\nsecond.jpg") == Term(TEXT, "first line\nsecond.jpg", 1.0)


def test_item_terms() -> None:
    assert parse_term("id:42") == Term(ITEM, "42", 1.0)
    assert parse_term("ID: 007") == Term(ITEM, "7", 1.0)
    assert parse_term("-0.5:id:3") == Term(ITEM, "3", -0.5)
    assert parse_term("id:42").item_id == 42


@pytest.mark.parametrize("token", ["id:abc", "id:", "id:4.2", "id:-3"])
def test_item_id_must_be_a_whole_number(token: str) -> None:
    with pytest.raises(QueryError, match="item id must be a whole number"):
        parse_term(token)


def test_urls() -> None:
    assert parse_term("https://example.com/cat.jpg") == Term(URL, "https://example.com/cat.jpg", 1.0)
    assert parse_term("http://example.com/x.png") == Term(URL, "http://example.com/x.png", 1.0)
    assert parse_term("-2:https://example.com/dog.jpg") == Term(URL, "https://example.com/dog.jpg", -2.0)


def test_term_str_round_trip_form() -> None:
    assert str(Term(TEXT, "cat", 2.0)) == "+2:cat"
    assert str(Term(ITEM, "5", -0.5)) == "-0.5:id:5"
    assert str(Term(IMAGE, "/a/b.png", 1.0)) == "+1:image:/a/b.png"
    assert parse_term(str(Term(TEXT, "cat", -0.25))) == Term(TEXT, "cat", -0.25)


@pytest.mark.parametrize(
    "term",
    [
        Term(TEXT, "notes.jpg", 1.0),  # would be read as an image
        Term(TEXT, "id:5", 1.0),  # as an item
        Term(TEXT, "https://example.com", 1.0),  # as a URL
        Term(TEXT, "AC/DC", 1.0),  # as a path, if such a file existed
        Term(TEXT, "text:x", 1.0),
        Term(TEXT, "cat", 0.1234567),  # more digits than %g keeps
        Term(TEXT, "cat", -1e-05),
    ],
)
def test_term_str_parses_back_for_text_that_looks_like_something_else(term: Term) -> None:
    assert parse_term(str(term)) == term


def test_query_tokens_parse_back() -> None:
    query = Query.parse(["cat", "-0.3:text:dog.png", "id:4"], add=["2:hat"], like=["0.7:9"], unlike=[3])
    assert query.tokens() == ["+1:cat", "-0.3:text:dog.png", "+1:id:4", "+2:hat", "+0.7:id:9", "-0.5:id:3"]
    assert Query.parse(query.tokens()) == query


@pytest.mark.parametrize("token", ["inf:cat", "-nan:cat", "Infinity:cat", ":cat", "-:cat"])
def test_weight_words_and_empty_weights_are_malformed(token: str) -> None:
    with pytest.raises(QueryError, match="malformed weight"):
        parse_term(token)


@pytest.mark.parametrize("token", ["1e-7:cat", "2e6:cat"])
def test_weights_outside_the_range_raise(token: str) -> None:
    with pytest.raises(QueryError, match="weight must be a positive number from 1e-06 to 1e[+]06"):
        parse_term(token)


@pytest.mark.parametrize("token", ["id:9223372036854775808", "id:" + "9" * 5000])
def test_item_ids_beyond_sqlite_integers_raise(token: str) -> None:
    with pytest.raises(QueryError, match="item id too large"):
        parse_term(token)
    assert parse_term("id:9223372036854775807").item_id == 2**63 - 1


def test_file_system_refusals_are_query_errors() -> None:
    with pytest.raises(QueryError, match="cannot use query image"):
        parse_term("x" * 300 + ".jpg")  # longer than a file name may be
    with pytest.raises(QueryError, match="query image not found: ~no-such-user-here/a.jpg"):
        parse_term("~no-such-user-here/a.jpg")
    assert parse_term("a/" + "x" * 300) == Term(TEXT, "a/" + "x" * 300, 1.0)  # no such file: text


def test_error_messages_stay_on_one_line() -> None:
    with pytest.raises(QueryError) as info:
        parse_term("1.2.3:first\nsecond")
    assert str(info.value) == "malformed weight in '1.2.3:first\\nsecond' (write it as 2:cat or 0.5:cat)"


# --- Query.parse ------------------------------------------------------------------------------


def test_query_parse_string_and_list() -> None:
    assert Query.parse("cat").terms == (Term(TEXT, "cat", 1.0),)
    query = Query.parse(["cat", "+hat", "-dog", "2:ball"])
    assert query.terms == (
        Term(TEXT, "cat", 1.0),
        Term(TEXT, "hat", 1.0),
        Term(TEXT, "dog", -1.0),
        Term(TEXT, "ball", 2.0),
    )


def test_query_parse_add_and_subtract() -> None:
    query = Query.parse("cat", add=["hat", "-scarf"], subtract=["dog", "0.5:bird"])
    assert query.terms == (
        Term(TEXT, "cat", 1.0),
        Term(TEXT, "hat", 1.0),
        Term(TEXT, "-scarf", 1.0),
        Term(TEXT, "dog", -1.0),
        Term(TEXT, "bird", -0.5),
    )


def test_query_parse_resolves_images_against_base(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "q.png")
    query = Query.parse(["q.png", "cat"], base=tmp_path)
    assert query.terms == (Term(IMAGE, str(picture.resolve()), 1.0), Term(TEXT, "cat", 1.0))


@pytest.mark.parametrize("terms", [[], (), ""])
def test_empty_query_raises(terms) -> None:
    with pytest.raises(QueryError, match="empty query"):
        Query.parse(terms)


def test_whitespace_term_in_query_raises() -> None:
    with pytest.raises(QueryError, match="empty query term"):
        Query.parse(["cat", "   "])


@pytest.mark.parametrize("terms", [["-dog"], ["-dog", "-0.5:cat"], ["-id:4"]])
def test_only_negative_terms_raise(terms: list[str]) -> None:
    with pytest.raises(QueryError, match="only negative terms"):
        Query.parse(terms)


def test_only_subtract_raises() -> None:
    with pytest.raises(QueryError, match="only negative terms"):
        Query.parse(subtract=["dog"])


def test_validate_on_constructed_query() -> None:
    with pytest.raises(QueryError, match="empty query"):
        Query().validate()
    with pytest.raises(QueryError, match="only negative"):
        Query((Term(TEXT, "dog", -1.0),)).validate()
    Query((Term(TEXT, "dog", 1.0),)).validate()


def test_like_and_unlike_make_item_terms() -> None:
    query = Query.parse("cat", like=[17, "id:3"], unlike=["5"])
    assert query.terms == (
        Term(TEXT, "cat", 1.0),
        Term(ITEM, "17", 1.0),
        Term(ITEM, "3", 1.0),
        Term(ITEM, "5", -0.5),
    )
    assert query.item_ids == [17, 3, 5]


def test_like_alone_is_a_query() -> None:
    assert Query.parse(like=[8]).terms == (Term(ITEM, "8", 1.0),)


def test_unlike_alone_is_only_negative() -> None:
    with pytest.raises(QueryError, match="only negative terms"):
        Query.parse(unlike=[8])


def test_feedback_weights() -> None:
    query = Query.parse(like=["2:17"], unlike=["3:4", "0.25:id:6"])
    assert query.terms == (Term(ITEM, "17", 2.0), Term(ITEM, "4", -3.0), Term(ITEM, "6", -0.25))


@pytest.mark.parametrize("ref", ["abc", "cat", "", "-3", "1.5", "0:4", "id:x"])
def test_like_with_non_number_raises(ref: str) -> None:
    with pytest.raises(QueryError, match="like and unlike take item ids") as info:
        Query.parse("cat", like=[ref])
    assert f"(got '{ref}')" in str(info.value)


def test_unlike_with_non_number_raises() -> None:
    with pytest.raises(QueryError, match="like and unlike take item ids"):
        Query.parse("cat", unlike=["dog"])


def test_a_single_string_or_id_is_one_term() -> None:
    assert Query.parse("cat", add="hat", subtract="dog", like="17", unlike=5).terms == (
        Term(TEXT, "cat", 1.0),
        Term(TEXT, "hat", 1.0),
        Term(TEXT, "dog", -1.0),
        Term(ITEM, "17", 1.0),
        Term(ITEM, "5", -0.5),
    )


def test_with_terms_appends() -> None:
    query = Query.parse("cat").with_terms([Term(ITEM, "2", 1.0)])
    assert query.terms == (Term(TEXT, "cat", 1.0), Term(ITEM, "2", 1.0))
    assert query.item_ids == [2]


# --- combine ----------------------------------------------------------------------------------

DIM = 6
BASIS = np.eye(DIM, dtype=np.float32)
TEXTS = {"cat": BASIS[0], "hat": BASIS[1], "dog": BASIS[2], "big cat": 3.0 * BASIS[0]}


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class TextTable:
    """A text embedder backed by a fixed table of vectors; records the batches it is asked for."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def no_images(images):
    raise AssertionError("no image should be embedded")


def no_items(item_id: int):
    raise AssertionError("no item should be looked up")


def test_combine_single_term_is_its_unit_vector() -> None:
    vector = combine(Query.parse("cat"), TextTable(TEXTS), no_images, no_items)
    assert vector.dtype == np.float32
    np.testing.assert_allclose(vector, BASIS[0], atol=1e-7)


def test_combine_weighted_sum_normalised() -> None:
    embed = TextTable(TEXTS)
    vector = combine(Query.parse(["cat", "+2:hat", "-0.5:dog"]), embed, no_images, no_items)
    expected = unit(BASIS[0] + 2 * BASIS[1] - 0.5 * BASIS[2])
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    assert embed.calls == [["cat", "hat", "dog"]]  # one batch, in query order


def test_combine_normalises_each_term_before_weighting() -> None:
    # 'big cat' embeds to 3*e0: it must count as much as 'cat', not three times as much
    vector = combine(Query.parse(["big cat", "hat"]), TextTable(TEXTS), no_images, no_items)
    np.testing.assert_allclose(vector, unit(BASIS[0] + BASIS[1]), atol=1e-6)


def test_combine_random_vectors_match_hand_computation() -> None:
    rng = np.random.default_rng(7)
    table = {name: unit(rng.normal(size=DIM)) for name in ("a", "b", "c", "d")}
    terms = ["a", "1.5:b", "-c", "-0.25:d"]
    vector = combine(Query.parse(terms), TextTable(table), no_images, no_items)
    expected = unit(table["a"] + 1.5 * table["b"] - table["c"] - 0.25 * table["d"])
    np.testing.assert_allclose(vector, expected, atol=1e-6)


def test_combine_terms_that_cancel_raise() -> None:
    with pytest.raises(QueryError, match="cancel out"):
        combine(Query.parse(["cat", "-cat"]), TextTable(TEXTS), no_images, no_items)
    with pytest.raises(QueryError, match="cancel out"):
        combine(Query.parse(["2:cat", "-big cat", "-cat"]), TextTable(TEXTS), no_images, no_items)


def test_combine_items_use_lookup() -> None:
    items = {5: BASIS[3], 9: 2.0 * BASIS[4]}
    looked_up: list[int] = []

    def lookup(item_id: int):
        looked_up.append(item_id)
        return items.get(item_id)

    query = Query.parse("cat", like=[5], unlike=[9])
    vector = combine(query, TextTable(TEXTS), no_images, lookup)
    np.testing.assert_allclose(vector, unit(BASIS[0] + BASIS[3] - 0.5 * BASIS[4]), atol=1e-6)
    assert looked_up == [5, 9]


def test_combine_cancellation_is_relative_to_the_weights() -> None:
    # 1e6 of cat minus 1e6 of cat leaves a millionth of hat: rounding-sized, so it cancels ...
    with pytest.raises(QueryError, match="cancel out"):
        combine(Query.parse(["1e6:cat", "-1e6:cat", "1e-6:hat"]), TextTable(TEXTS), no_images, no_items)
    # ... while a small term among small terms is a direction of its own
    vector = combine(Query.parse(["1e-6:cat", "1e-6:hat"]), TextTable(TEXTS), no_images, no_items)
    np.testing.assert_allclose(vector, unit(BASIS[0] + BASIS[1]), atol=1e-6)


def test_combine_unknown_item_raises() -> None:
    with pytest.raises(QueryError, match="no item with id 99 in this index"):
        combine(Query.parse("cat", like=[99]), TextTable(TEXTS), no_images, lambda item_id: None)


def test_combine_images_are_loaded_and_embedded(tmp_path: Path) -> None:
    red = make_image(tmp_path / "red.png", "red", size=(40, 30))
    blue = make_image(tmp_path / "blue.png", "blue", size=(20, 50))
    vectors_by_size = {(40, 30): BASIS[1], (20, 50): BASIS[2]}
    seen: list[tuple[str, tuple[int, int]]] = []

    def embed_images(images):
        for picture in images:
            assert isinstance(picture, Image.Image)
            seen.append((picture.mode, picture.size))
        return np.stack([vectors_by_size[p.size] for p in images])

    query = Query.parse(["cat", str(red), f"-0.5:{blue}"])
    vector = combine(query, TextTable(TEXTS), embed_images, no_items)
    np.testing.assert_allclose(vector, unit(BASIS[0] + BASIS[1] - 0.5 * BASIS[2]), atol=1e-6)
    assert seen == [("RGB", (40, 30)), ("RGB", (20, 50))]


def test_combine_unreadable_image_raises_query_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(QueryError, match="cannot use query image .*bad.png: not a readable image"):
        combine(Query.parse(str(bad)), TextTable(TEXTS), lambda images: BASIS[:1], no_items)


def test_combine_url_without_fetcher_raises() -> None:
    with pytest.raises(QueryError, match="image URLs need the network"):
        combine(Query.parse("https://example.com/cat.jpg"), TextTable(TEXTS), no_images, no_items)


def test_combine_url_with_picture_reader(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "u.png", size=(33, 22))
    fetched: list[str] = []

    def fetch(term) -> bytes:
        fetched.append(term.value)
        return picture.read_bytes()

    def embed_images(images):
        assert [p.size for p in images] == [(33, 22)]
        return BASIS[5:6]

    vector = combine(
        Query.parse("https://example.com/u.png"), TextTable(TEXTS), embed_images, no_items, read_picture=fetch
    )
    np.testing.assert_allclose(vector, BASIS[5], atol=1e-7)
    assert fetched == ["https://example.com/u.png"]
