"""Promises of the query parser and combiner that no other test pinned down: each test names one.

They were written against the mutants of `vecsearch/query.py` that survived `tests/test_query.py`,
`tests/test_bad_queries.py` and `tests/test_search.py` (see scripts/results/mutation-query-survivors.md):
each fails on a change to the code that breaks the promise it names. Downloads are tested against a
server on the loopback interface that this module runs itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from vecsearch import Query, QueryError, Term
from vecsearch.query import IMAGE, ITEM, MAX_ITEM_ID, MAX_URL_BYTES, TEXT, URL, combine, fetch_url, parse_term

DIM = 4
E = np.eye(DIM, dtype=np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def texts_from(table: dict[str, np.ndarray]) -> Callable[[Sequence[str]], np.ndarray]:
    """A text embedder backed by a table: what the model would give for each text."""
    return lambda texts: np.stack([table[t] for t in texts])


def no_images(images: Sequence[object]) -> np.ndarray:
    raise AssertionError("no image should be embedded")


def no_items(item_id: int) -> np.ndarray | None:
    raise AssertionError("no item should be looked up")


# --- tokens() parses back ---------------------------------------------------------------------


def test_a_url_term_prints_as_the_url_and_parses_back() -> None:
    """`query.tokens()` turns a query back into the terms that parse to it: URLs included."""
    term = Term(URL, "https://example.com/cat.jpg", -2.0)
    assert str(term) == "-2:https://example.com/cat.jpg"
    assert parse_term(str(term)) == term
    query = Query.parse(["cat", "https://example.com/cat.jpg"])
    assert Query.parse(query.tokens()) == query


@pytest.mark.parametrize("text", ["pics/scan", "pics\\scan"])
def test_text_with_a_slash_parses_back_as_text_even_where_such_a_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A path with a slash names an image file, so text with a slash (either kind) is printed with
    `text:`: otherwise the printed query would search for a picture instead of the words."""
    make_image(tmp_path / "pics" / "scan.png").rename(tmp_path / "pics" / "scan")
    make_image(tmp_path / "tmp.png").rename(tmp_path / "pics\\scan")
    monkeypatch.chdir(tmp_path)
    assert parse_term(text).kind == IMAGE  # the words, written bare, would name the picture
    term = Term(TEXT, text, 1.0)
    assert str(term) == f"+1:text:{text}"
    assert parse_term(str(term)) == term
    query = Query.parse([f"text:{text}", "cat"])
    assert Query.parse(query.tokens()) == query


# --- paths: what is a picture and what is text --------------------------------------------------


def test_a_path_with_a_backslash_to_an_existing_file_is_that_image(tmp_path: Path) -> None:
    """A path (a slash of either kind: `\\` is the separator on Windows) to an existing file is an image
    term, whatever its extension."""
    picture = make_image(tmp_path / "tmp.png").rename(tmp_path / "scans\\page")
    assert parse_term("scans\\page", base=tmp_path) == Term(IMAGE, str(picture.resolve()), 1.0)


def test_a_relative_path_with_a_slash_resolves_against_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative image paths are read against `base` (the caller's folder), not the process's."""
    picture = make_image(tmp_path / "pics" / "tmp.png").rename(tmp_path / "pics" / "scan")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert parse_term("-0.5:pics/scan", base=tmp_path) == Term(IMAGE, str(picture.resolve()), -0.5)
    assert Query.parse(["pics/scan"], base=tmp_path).terms == (Term(IMAGE, str(picture.resolve()), 1.0),)


def test_a_long_prompt_with_a_slash_is_text() -> None:
    """Text with a slash that names no file stays text, even when the part before the slash is longer
    than the system allows a file name to be (a pasted sentence: `... and/or ...`)."""
    prompt = "a photo of " + "a very " * 50 + "big dog and/or cat"
    assert parse_term(prompt) == Term(TEXT, prompt, 1.0)
    assert Query.parse(["cat", prompt]).terms[1] == Term(TEXT, prompt, 1.0)


def test_text_may_begin_with_any_letter() -> None:
    """Only `+` and `-` are signs: a term that begins with another character keeps it."""
    assert parse_term("Xmas tree") == Term(TEXT, "Xmas tree", 1.0)
    assert parse_term("XXL shirt") == Term(TEXT, "XXL shirt", 1.0)
    assert parse_term("2:Xmas") == Term(TEXT, "Xmas", 2.0)


# --- --add and --subtract -----------------------------------------------------------------------


def test_subtracted_terms_always_pull_away() -> None:
    """`--subtract` subtracts what it is given: a leading `+` or `-` there is part of the text, never a
    sign that could turn the subtraction into an addition."""
    query = Query.parse("cat", subtract=["+dog", "-bird", "2:fish"])
    assert query.terms == (
        Term(TEXT, "cat", 1.0),
        Term(TEXT, "+dog", -1.0),
        Term(TEXT, "-bird", -1.0),
        Term(TEXT, "fish", -2.0),
    )


def test_added_and_subtracted_images_resolve_against_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--add` and `--subtract` take images (and URLs) as the query terms do, relative paths against `base`."""
    hat = make_image(tmp_path / "hat.png", "red")
    dog = make_image(tmp_path / "dog.png", "blue")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    query = Query.parse("cat", add=["hat.png", "https://example.com/x.jpg"], subtract=["0.5:dog.png"], base=tmp_path)
    assert query.terms == (
        Term(TEXT, "cat", 1.0),
        Term(IMAGE, str(hat.resolve()), 1.0),
        Term(URL, "https://example.com/x.jpg", 1.0),
        Term(IMAGE, str(dog.resolve()), -0.5),
    )


# --- terms from a request (local=False) ---------------------------------------------------------

UPLOAD = hashlib.sha256(b"a picture").hexdigest()


@pytest.mark.parametrize(
    "token",
    [
        "image:/etc/hosts",
        "IMAGE:/etc/hosts",
        "2:image:x.png",
        "http://example.com/cat.jpg",
        "HTTP://example.com/cat.jpg",
        "https://example.com/cat.jpg",
        "Https://example.com/cat.jpg",
        "0.5:https://example.com/cat.jpg",
    ],
)
def test_a_request_cannot_name_a_file_or_a_url(token: str) -> None:
    """Nothing in a request reaches the file system or the network: `image:` paths and URLs are
    refused with a QueryError that names the term, in the terms and in --add and --subtract alike."""
    for parse in (
        lambda: Query.parse([token], local=False),
        lambda: Query.parse("cat", add=[token], local=False),
        lambda: Query.parse("cat", subtract=[token], local=False),
    ):
        with pytest.raises(QueryError) as info:
            parse()
        assert str(info.value).startswith(f"'{token}': a query sent to the server cannot name a file or a URL")


def test_bare_terms_from_a_request_are_text_even_when_they_name_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bare terms in a request are always text (`../../etc/passwd.png` is searched as words), with
    their sign and weight."""
    make_image(tmp_path / "cat.png")
    make_image(tmp_path / "pics" / "tmp.png").rename(tmp_path / "pics" / "scan")
    monkeypatch.chdir(tmp_path)
    assert parse_term("cat.png", local=False) == Term(TEXT, "cat.png", 1.0)
    assert parse_term("-2:../../etc/passwd.png", local=False) == Term(TEXT, "../../etc/passwd.png", -2.0)
    query = Query.parse(["cat.png", "pics/scan"], add=["./cat.png"], subtract=["0.5:pics/scan"], local=False)
    assert query.terms == (
        Term(TEXT, "cat.png", 1.0),
        Term(TEXT, "pics/scan", 1.0),
        Term(TEXT, "./cat.png", 1.0),
        Term(TEXT, "pics/scan", -0.5),
    )


def test_an_upload_term_names_the_picture_by_its_sha256() -> None:
    """`upload:<sha256>` in a request is an image term for the picture sent earlier; the name is the
    server's (lower-case hex) whatever the letter case it was written in."""
    assert parse_term(f"upload:{UPLOAD}", local=False) == Term(IMAGE, f"upload:{UPLOAD}", 1.0)
    assert parse_term(f"-0.5:UPLOAD:{UPLOAD.upper()}", local=False) == Term(IMAGE, f"upload:{UPLOAD}", -0.5)
    query = Query.parse([f"upload:{UPLOAD}", "+hat"], unlike=[42], local=False)
    assert query.terms == (Term(IMAGE, f"upload:{UPLOAD}", 1.0), Term(TEXT, "hat", 1.0), Term(ITEM, "42", -0.5))


@pytest.mark.parametrize(
    "token", ["upload:", "upload:abc", "upload:" + "g" * 64, f"upload:{UPLOAD}0", "upload:../../etc/passwd"]
)
def test_a_malformed_upload_term_is_refused(token: str) -> None:
    """An upload is named by 64 hex digits and nothing else; anything else is a QueryError naming the term."""
    with pytest.raises(QueryError) as info:
        parse_term(token, local=False)
    assert str(info.value) == f"'{token}' is not an upload: term (upload: and 64 hex digits)"


# --- queries with nothing to search for ---------------------------------------------------------


def test_a_constructed_query_without_a_positive_weight_is_refused() -> None:
    """Constructed queries are validated too: with no term of positive weight (a zero weight is not
    one) there is nothing to search for, and the query is refused before any model runs."""
    query = Query((Term(TEXT, "cat", 0.0), Term(TEXT, "dog", -1.0)))
    with pytest.raises(QueryError, match="only negative terms"):
        query.validate()
    with pytest.raises(QueryError, match="only negative terms"):
        combine(query, texts_from({"cat": E[0], "dog": E[1]}), no_images, no_items)


# --- item ids and feedback ----------------------------------------------------------------------


def test_item_ids_with_leading_zeros_name_the_same_item() -> None:
    """`id:007` is item 7 however many zeros lead it, and `id:0` is item 0."""
    assert parse_term("id:" + "0" * 30 + "42") == Term(ITEM, "42", 1.0)
    assert parse_term("id:0") == Term(ITEM, "0", 1.0)
    assert parse_term("id:000") == Term(ITEM, "0", 1.0)
    assert Query.parse("cat", like=["0" * 25 + "7"]).item_ids == [7]


def test_feedback_weights_take_the_documented_range_inclusive() -> None:
    """Weights go from 1e-6 to 1e6, both ends included, for --like and --unlike as for terms."""
    query = Query.parse("cat", like=["1e-6:5"], unlike=["1e6:6"])
    assert query.terms == (Term(TEXT, "cat", 1.0), Term(ITEM, "5", 1e-6), Term(ITEM, "6", -1e6))


def test_the_largest_item_id_is_looked_up() -> None:
    """Ids go up to 2**63 - 1 (the error for a larger one says so): an item with that id can be a query."""
    vector = combine(Query.parse(f"id:{MAX_ITEM_ID}"), texts_from({}), no_images, {MAX_ITEM_ID: 2 * E[2]}.get)
    np.testing.assert_allclose(vector, E[2], atol=1e-7)


# --- combine --------------------------------------------------------------------------------------


def test_each_embedding_is_normalised_whatever_its_length() -> None:
    """The query is normalise(Σ sign·weight·normalise(embedding)): a short embedding counts as much as a
    unit one, and so does a long one (its length does not overflow: the sum is taken in float64)."""
    table = {"short": 0.25 * E[0], "long": np.float32(1e20) * E[1], "hat": E[2]}
    vector = combine(Query.parse(["short", "long", "-0.5:hat"]), texts_from(table), no_images, no_items)
    np.testing.assert_allclose(vector, unit(E[0] + E[1] - 0.5 * E[2]), atol=1e-6)
    assert vector.dtype == np.float32


def test_a_term_embedded_as_zeros_adds_nothing() -> None:
    """A term whose embedding is all zeros adds nothing to the sum (no division by zero): the other
    terms are the query, not a false 'the terms cancel out'."""
    table = {"cat": E[0], "void": np.zeros(DIM, dtype=np.float32)}
    vector = combine(Query.parse(["cat", "void"]), texts_from(table), no_images, no_items)
    np.testing.assert_allclose(vector, E[0], atol=1e-7)


def test_a_term_the_model_cannot_embed_is_a_query_error_naming_it() -> None:
    """A model that gives NaN for a term is reported as a QueryError that names the term."""
    table = {"cat": E[0], "glitch": np.full(DIM, np.nan, dtype=np.float32)}
    with pytest.raises(QueryError) as info:
        combine(Query.parse(["cat", "-0.5:glitch"]), texts_from(table), no_images, no_items)
    assert str(info.value) == "the model gave no usable vector for -0.5:glitch"


def test_combine_refuses_pictures_above_the_callers_pixel_cap(tmp_path: Path) -> None:
    """`max_megapixels` bounds the query pictures combine decodes: a larger one is a QueryError."""
    picture = make_image(tmp_path / "big.png", size=(100, 100))  # 0.01 MP
    with pytest.raises(QueryError, match=r"cannot use query image .*big.png: image too large"):
        combine(Query.parse(str(picture)), texts_from({}), no_images, no_items, max_megapixels=0.001)


# --- what error messages quote ------------------------------------------------------------------


def test_an_error_quotes_the_term_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message quotes the user's term as written (a backslash stays one backslash), so the hint it
    gives can be typed as it stands."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError) as info:
        parse_term("scans\\x.jpg")
    assert str(info.value) == "query image not found: scans\\x.jpg (to search for the words, write text:scans\\x.jpg)"


@pytest.mark.parametrize("token", ["1.2.3:" + "word " * 20_000, "x" * 5_000 + ".jpg"])
def test_an_error_quotes_only_the_start_of_a_pasted_document(token: str) -> None:
    """A bad query is refused in one short line: the error quotes the start of a long term, not all of
    it (the server sends the message back; a terminal shows it)."""
    with pytest.raises(QueryError) as info:
        parse_term(token)
    message = str(info.value)
    assert len(message) < 400, len(message)
    assert "..." in message
    assert "\n" not in message


# --- downloads: bounded in size and time --------------------------------------------------------


class LoopbackServer:
    """An HTTP server on 127.0.0.1 that answers each path in its own way, including not at all."""

    def __init__(self, picture: bytes) -> None:
        self.picture = picture
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(4096)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1].decode()
            if path == "/picture":
                self._send(connection, len(self.picture), self.picture)
            elif path == "/exactly-the-limit":
                self._send(connection, MAX_URL_BYTES, bytes(MAX_URL_BYTES))
            elif path == "/endless":  # claims far more than the limit, sends a little more than it, then waits
                self._send(connection, 4 * MAX_URL_BYTES, bytes(MAX_URL_BYTES + 4096))
            # "/silent": never answers. Each connection is held open until the client or the test closes it.
            while not self.stop.is_set() and connection.recv(4096):
                pass
        except OSError:
            pass
        finally:
            connection.close()

    @staticmethod
    def _send(connection: socket.socket, length: int, body: bytes) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n"
        connection.sendall(head.encode() + body)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    picture = make_image(tmp_path_factory.mktemp("served") / "u.png", size=(33, 22)).read_bytes()
    served = LoopbackServer(picture)
    yield served
    served.close()


def test_a_downloaded_picture_is_its_bytes(server: LoopbackServer) -> None:
    """An image URL's picture is downloaded as it is."""
    assert fetch_url(server.url("/picture"), timeout=5) == server.picture


def test_a_download_of_exactly_the_limit_is_accepted(server: LoopbackServer) -> None:
    """Query images from URLs may be as large as the limit (50 MB), not one byte less."""
    assert len(fetch_url(server.url("/exactly-the-limit"), timeout=10)) == MAX_URL_BYTES


def test_a_download_past_the_limit_is_refused_once_the_limit_is_read(server: LoopbackServer) -> None:
    """A download stops as soon as it passes the limit, whatever the server claims or keeps sending,
    and is refused with a QueryError that names the URL and the limit."""
    url = server.url("/endless")
    with pytest.raises(QueryError) as info:
        fetch_url(url, timeout=2)
    assert str(info.value) == f"query image {url} is larger than 50 MB"


def test_a_server_that_never_answers_is_a_query_error_after_the_timeout(server: LoopbackServer) -> None:
    """Downloads are bounded in time: a server that accepts and never answers ends in a QueryError
    once the timeout has passed, not in a wait without end or another exception."""
    url = server.url("/silent")
    outcome: list[BaseException | bytes] = []

    def download() -> None:
        try:
            outcome.append(fetch_url(url, timeout=0.5))
        except BaseException as exc:  # what was raised is what the test looks at
            outcome.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the download did not time out"
    assert len(outcome) == 1 and isinstance(outcome[0], QueryError), outcome
    assert str(outcome[0]).startswith(f"cannot download query image {url} (")
