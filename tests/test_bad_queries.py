"""Bad queries get one clear line and the documented exit code, never a traceback.

Through the command line (click's CliRunner, exceptions caught so that a traceback would show up as
an unexpected exception) and through the Python API (a QueryError, a VecsearchError, never another
exception). Exit codes: 1 bad input, 2 bad usage, 3 no such index.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import make_image

from vecsearch import Index, Query, QueryError
from vecsearch.cli import EXIT_ERROR, EXIT_INDEX, EXIT_USAGE, main


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    """An index of a few captioned pictures, shared: no test here changes it."""
    base = tmp_path_factory.mktemp("bad-queries")
    root = base / "photos"
    make_image(root / "apple.png", "red", "circle", seed=1)
    (root / "apple.txt").write_text("a red apple\n")
    make_image(root / "car.png", "blue", "square", seed=2)
    (root / "car.txt").write_text("a blue car\n")
    with Index.create(base / "idx", encoder=tiny_encoder) as index:
        index.add(root)
    return base / "idx"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Query images good and bad."""
    folder = tmp_path_factory.mktemp("query-files")
    good = make_image(folder / "good.png", "green")
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "album.jpg").mkdir()
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "labels-empty.txt").write_text("\n  \n")
    return {p.name: p for p in folder.iterdir()} | {"missing.jpg": folder / "missing.jpg", "folder": folder}


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_fails(result: Result, code: int, *needles: str) -> str:
    """The exit code, no traceback, nothing on stdout, and the error on one line naming the problem."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    error = lines[-1]
    assert error.startswith("Error: "), result.stderr
    if code != EXIT_USAGE:  # click's usage errors add the usage line and a hint above theirs
        assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in error, (needle, error)
    return error


# --- search: empty and one-sided queries ------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "empty query: give text, an image, or an item id to search like"),
        (("   ",), "empty query term '   '"),
        (("cat", "\t"), "empty query term '\\t'"),
        (("2:",), "empty query term '2:'"),
        (("text:",), "empty text in 'text:'"),
        (("-dog",), "the query has only negative terms"),
        (("-dog", "-0.5:cat"), "the query has only negative terms"),
        (("--subtract", "dog"), "the query has only negative terms"),
        (("--unlike", "1"), "the query has only negative terms"),
    ],
)
def test_empty_and_negative_only_queries(built: Path, args: tuple[str, ...], needle: str) -> None:
    assert_fails(run("search", str(built), *args), EXIT_ERROR, needle)


# --- search: query images ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, needle",
    [
        ("missing.jpg", "query image not found: "),
        ("dangling.png", "query image not found: "),
        ("album.jpg", "is a folder, not an image"),
        ("corrupt.jpg", "not a readable image"),
        ("empty.png", "not a readable image"),
        ("truncated.png", "cannot use query image"),
    ],
)
def test_bad_query_images(built: Path, files: dict[str, Path], name: str, needle: str) -> None:
    error = assert_fails(run("search", str(built), str(files[name])), EXIT_ERROR, needle)
    assert name in error


def test_missing_image_suggests_the_text_prefix(built: Path, files: dict[str, Path]) -> None:
    assert_fails(
        run("search", str(built), "cat", f"-{files['missing.jpg']}"),
        EXIT_ERROR,
        f"query image not found: {files['missing.jpg']} (to search for the words, write text:",
    )
    assert_fails(run("search", str(built), f"image:{files['folder'] / 'nope'}"), EXIT_ERROR, "query image not found")
    assert_fails(run("search", str(built), "image:"), EXIT_ERROR, "empty image path in 'image:'")


def test_unreachable_image_url(built: Path) -> None:
    assert_fails(
        run("search", str(built), "http://127.0.0.1:9/cat.jpg"),
        EXIT_ERROR,
        "cannot download query image http://127.0.0.1:9/cat.jpg",
    )


def test_very_long_image_name(built: Path) -> None:
    assert_fails(run("search", str(built), "x" * 300 + ".jpg"), EXIT_ERROR, "cannot use query image x")


# --- search: items and feedback ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (("cat", "--like", "999999"), "no item with id 999999 in this index"),
        (("--like", "999999"), "no item with id 999999 in this index"),
        (("cat", "--unlike", "424242"), "no item with id 424242 in this index"),
        (("id:999999",), "no item with id 999999 in this index"),
        (("cat", "--like", "abc"), "like and unlike take item ids from search results (got 'abc')"),
        (("cat", "--like", "-3"), "(got '-3')"),
        (("cat", "--like", "1.5"), "(got '1.5')"),
        (("cat", "--like", "0:1"), "(got '0:1')"),
        (("cat", "--like", "9" * 30), "like and unlike take item ids"),
        (("id:" + "9" * 30,), "item id too large"),
        (("id:" + "9" * 5000,), "item id too large"),
        (("id:abc",), "item id must be a whole number in 'id:abc'"),
    ],
)
def test_bad_item_references(built: Path, args: tuple[str, ...], needle: str) -> None:
    assert_fails(run("search", str(built), *args), EXIT_ERROR, needle)


# --- search: weights and cancelling terms -----------------------------------------------------


@pytest.mark.parametrize(
    "term, needle",
    [
        ("inf:cat", "malformed weight in 'inf:cat'"),
        ("nan:cat", "malformed weight in 'nan:cat'"),
        ("-inf:cat", "malformed weight in '-inf:cat'"),
        (":cat", "malformed weight in ':cat'"),
        ("1.2.3:cat", "malformed weight in '1.2.3:cat'"),
        ("1e:cat", "malformed weight in '1e:cat'"),
        ("1e999:cat", "weight must be a positive number from 1e-06 to 1e+06 in '1e999:cat'"),
        ("0:cat", "weight must be a positive number"),
        ("1e-9:cat", "weight must be a positive number"),
        ("2e6:cat", "weight must be a positive number"),
    ],
)
def test_malformed_weights(built: Path, term: str, needle: str) -> None:
    error = assert_fails(run("search", str(built), "a red apple", term), EXIT_ERROR, needle)
    assert "write it as 2:cat" in error or "positive number" in error


def test_letters_before_a_colon_are_text_not_a_weight(built: Path) -> None:
    """'abc:cat' is not a weight: it is searched for as written (like 'note: cat')."""
    result = run("search", str(built), "abc:cat", "--json")
    assert result.exit_code == 0, result.output
    assert '"kind": "image"' in result.stdout


@pytest.mark.parametrize("terms", [("a cat", "-a cat"), ("2:cat", "-cat", "-cat"), ("0.1:cat", "0.2:cat", "-0.3:cat")])
def test_terms_that_cancel(built: Path, terms: tuple[str, ...]) -> None:
    assert_fails(
        run("search", str(built), *terms), EXIT_ERROR, "the query terms cancel out; nothing is left to search for"
    )


def test_liked_and_unliked_item_cancel(built: Path) -> None:
    assert_fails(run("search", str(built), "--like", "0.5:1", "--unlike", "1"), EXIT_ERROR, "cancel out")


# --- search: options --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", str(10**12), "abc", "1.5", ""])
def test_absurd_k(built: Path, value: str) -> None:
    assert_fails(run("search", str(built), "cat", "-k", value), EXIT_USAGE, "Invalid value for '-k' / '--top'")


@pytest.mark.parametrize(
    "option, value, code, needle",
    [
        ("--min-score", "5", EXIT_ERROR, "min-score is a cosine from -1 to 1 (got 5.0)"),
        ("--min-score", "-2", EXIT_ERROR, "min-score is a cosine from -1 to 1 (got -2.0)"),
        ("--min-score", "nan", EXIT_ERROR, "min-score is a cosine from -1 to 1 (got nan)"),
        ("--min-score", "inf", EXIT_ERROR, "min-score is a cosine from -1 to 1 (got inf)"),
        ("--min-score", "abc", EXIT_USAGE, "Invalid value for '--min-score'"),
        ("--within", "-1", EXIT_ERROR, "within is a cosine margin from 0 to 2 (got -1.0)"),
        ("--within", "nan", EXIT_ERROR, "within is a cosine margin from 0 to 2 (got nan)"),
        ("--kind", "picture", EXIT_USAGE, "Invalid value for '--kind': 'picture' is not one of"),
        ("--kind", "", EXIT_USAGE, "Invalid value for '--kind'"),
    ],
)
def test_bad_filter_options(built: Path, option: str, value: str, code: int, needle: str) -> None:
    assert_fails(run("search", str(built), "cat", option, value), code, needle)


def test_json_and_paths_together(built: Path) -> None:
    assert_fails(run("search", str(built), "cat", "--json", "--paths"), EXIT_USAGE, "choose --json or --paths")


def test_missing_index(tmp_path: Path) -> None:
    assert_fails(run("search", str(tmp_path / "nothing-here"), "cat"), EXIT_INDEX, "nothing-here")
    assert_fails(run("describe", "no-such-name", "id:1"), EXIT_INDEX, "no-such-name")


# --- describe ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, needle",
    [
        ("missing.jpg", "query image not found: "),
        ("corrupt.jpg", "not a readable image"),
        ("album.jpg", "is a folder, not an image"),
        ("", "empty image path"),
        ("id:abc", "item id must be a whole number"),
        ("id:999999", "no item with id 999999 in this index"),
        ("id:" + "9" * 40, "item id too large"),
    ],
)
def test_describe_bad_images(built: Path, files: dict[str, Path], image: str, needle: str) -> None:
    argument = str(files[image]) if image in files else image
    assert_fails(run("describe", str(built), argument), EXIT_ERROR, needle)


@pytest.mark.parametrize("value", ["0", "-5", "1001", "many"])
def test_describe_absurd_k(built: Path, files: dict[str, Path], value: str) -> None:
    assert_fails(run("describe", str(built), str(files["good.png"]), "-k", value), EXIT_USAGE, "Invalid value for '-k'")


# --- classify ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, code, needle",
    [
        ("", EXIT_USAGE, "give --labels or --labels-file"),
        (",", EXIT_ERROR, "zero-shot classification needs at least two distinct labels"),
        (" , ,", EXIT_ERROR, "needs at least two distinct labels"),
        ("cat", EXIT_ERROR, "needs at least two distinct labels"),
        ("cat, cat", EXIT_ERROR, "needs at least two distinct labels"),
    ],
)
def test_classify_empty_labels(built: Path, files: dict[str, Path], labels: str, code: int, needle: str) -> None:
    assert_fails(run("classify", str(files["good.png"]), "--labels", labels, "--index", str(built)), code, needle)


def test_classify_bad_labels_file(built: Path, files: dict[str, Path]) -> None:
    good = str(files["good.png"])
    assert_fails(
        run("classify", good, "--labels-file", str(files["labels-empty.txt"]), "--index", str(built)),
        EXIT_ERROR,
        "needs at least two distinct labels",
    )
    assert_fails(
        run("classify", good, "--labels-file", str(files["folder"] / "no-labels.txt"), "--index", str(built)),
        EXIT_ERROR,
        "cannot read labels file",
    )


@pytest.mark.parametrize("template", ["a photo", "a {x} photo of a {}", "a {} and a {}", "a {} {"])
def test_classify_bad_templates(built: Path, files: dict[str, Path], template: str) -> None:
    error = assert_fails(
        run("classify", str(files["good.png"]), "-l", "cat,dog", "--index", str(built), "-t", template),
        EXIT_ERROR,
        "prompt template must",
    )
    assert template in error


@pytest.mark.parametrize(
    "image, needle",
    [
        ("missing.jpg", "not found"),
        ("corrupt.jpg", "not a readable image"),
        ("album.jpg", "is a folder"),
        ("id:999999", "no item with id 999999"),
    ],
)
def test_classify_bad_images_with_an_index(built: Path, files: dict[str, Path], image: str, needle: str) -> None:
    argument = str(files[image]) if image in files else image
    assert_fails(run("classify", argument, "-l", "cat,dog", "--index", str(built)), EXIT_ERROR, needle)


@pytest.mark.parametrize(
    "image, needle",
    [
        ("missing.jpg", "image not found: "),
        ("album.jpg", "image not found: "),
        ("corrupt.jpg", "cannot use image"),
        ("id:3", "id:3 names an indexed item: give the index with --index"),
    ],
)
def test_classify_bad_images_without_an_index(
    files: dict[str, Path], tiny_model_dir: Path, image: str, needle: str
) -> None:
    argument = str(files[image]) if image in files else image
    assert_fails(
        run("classify", argument, "-l", "cat,dog", "--model", f"local-dir:{tiny_model_dir}"), EXIT_ERROR, needle
    )


def test_classify_missing_image_is_reported_before_the_model(files: dict[str, Path]) -> None:
    """The default model is not on this machine (offline): the missing picture is still the error named."""
    assert_fails(
        run("classify", str(files["missing.jpg"]), "-l", "cat,dog"),
        EXIT_ERROR,
        f"image not found: {files['missing.jpg']}",
    )


# --- the Python API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(built: Path):
    with Index.open(built) as opened:
        yield opened


@pytest.mark.parametrize(
    "query, needle",
    [
        ("", "empty query"),
        ([], "empty query"),
        (None, "empty query"),
        ("   ", "empty query term"),
        (["-dog"], "only negative terms"),
        (Query(()), "empty query"),
        (["cat", "-cat"], "cancel out"),
        (["inf:cat"], "malformed weight"),
        ([":cat"], "malformed weight"),
        (["1e999:cat"], "positive number"),
        (["id:" + "9" * 5000], "item id too large"),
    ],
)
def test_api_bad_queries(index: Index, query, needle: str) -> None:
    with pytest.raises(QueryError, match=needle):
        index.search(query)


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"k": 0}, "k must be a whole number"),
        ({"k": -3}, "k must be"),
        ({"k": 10**12}, "k must be"),
        ({"k": "5"}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"k": True}, "k must be"),
        ({"kind": "picture"}, "kind must be one of image, caption, any"),
        ({"min_score": math.nan}, "min-score"),
        ({"min_score": 5.0}, "min-score"),
        ({"within": -1.0}, "within"),
        ({"within": math.inf}, "within"),
        ({"like": ["abc"]}, "like and unlike take item ids"),
        ({"like": [10**30]}, "take item ids"),
        ({"like": [999999]}, "no item with id 999999"),
        ({"unlike": "999999"}, "no item with id 999999"),
    ],
)
def test_api_bad_options(index: Index, options: dict, needle: str) -> None:
    with pytest.raises(QueryError, match=needle):
        index.search("a red apple", **options)


def test_api_single_id_string_is_one_item(index: Index) -> None:
    """`like="12"` means item 12, not items 1 and 2."""
    assert Query.parse("cat", like="12").item_ids == [12]
    assert Query.parse("cat", add="hat").terms == Query.parse(["cat", "hat"]).terms
    with pytest.raises(QueryError, match="no item with id 12 in"):
        index.search("cat", like="12")


def test_api_describe_and_similar(index: Index, files: dict[str, Path]) -> None:
    for image, needle in [
        (files["missing.jpg"], "query image not found"),
        ("", "empty image path"),
        (files["corrupt.jpg"], "not a readable image"),
        ("id:999999", "no item with id"),
    ]:
        with pytest.raises(QueryError, match=needle):
            index.describe(image)
    with pytest.raises(QueryError, match="no item with id"):
        index.similar(10**30)
    with pytest.raises(QueryError, match="k must be"):
        index.describe(files["good.png"], k=0)


def test_api_numpy_k_is_a_whole_number(index: Index) -> None:
    assert len(index.search("a red apple", k=np.int64(2))) == 2


@pytest.mark.parametrize(
    "labels, templates, needle",
    [
        ([], ("a {}",), "at least two distinct labels"),
        (["cat"], ("a {}",), "at least two distinct labels"),
        (["cat", " cat "], ("a {}",), "at least two distinct labels"),
        (["cat", "dog"], ("a {x}",), "prompt template must have one {}"),
        (["cat", "dog"], ("{} and {}",), "prompt template must have one {}"),
        (["cat", "dog"], ("no label here",), "prompt template must contain {}"),
    ],
)
def test_api_classify_bad_labels_and_templates(
    index: Index, files: dict[str, Path], labels, templates, needle: str
) -> None:
    with pytest.raises(QueryError, match=re.escape(needle)):
        index.classify(files["good.png"], labels, templates)
