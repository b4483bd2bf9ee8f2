"""Browsing the collection (`Index.browse`, GET /api/v1/pictures): pages that cover every picture once, a
shuffle fixed by its seed, the other orders, and the endpoint's answers and limits against the library's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import index_of, make_collection
from fastapi.testclient import TestClient

from vecsearch import MAX_K, Index, PicturePage, QueryError
from vecsearch.browse import shuffle_key
from vecsearch.manifest import DATABASE
from vecsearch.serve import create_app


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
    return make_collection(tmp_path_factory.mktemp("browse-photos"), names, extra=5, extra_seed=50)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder) -> Path:
    return index_of(tmp_path_factory.mktemp("browse-index") / "index", photos, tiny_encoder)


@pytest.fixture(scope="module")
def client(folder: Path, tiny_encoder) -> Iterator[TestClient]:
    with Index.open(folder, encoder=tiny_encoder) as index:
        yield TestClient(create_app(index), base_url="http://127.0.0.1")


def every_page(library: Index, size: int, **how: object) -> list[int]:
    ids: list[int] = []
    offset = 0
    while True:
        page = library.browse(size, offset, **how)  # type: ignore[arg-type]
        assert isinstance(page, PicturePage) and page.offset == offset
        ids += [item.id for item in page.items]
        if len(page.items) < size:
            return ids
        offset += size


def test_pages_show_every_picture_once(library: Index) -> None:
    pictures = library.counts()["images"]
    assert pictures == 13
    with sqlite3.connect(library.path / DATABASE) as db:
        everything = {i for (i,) in db.execute("SELECT id FROM items WHERE kind = 'image'")}
    orders = set()
    for seed in (0, 1, 2**32 - 1):
        for size in (1, 4, 13, 50):
            ids = every_page(library, size, seed=seed)
            assert len(ids) == pictures and set(ids) == everything
            if size == 4:
                orders.add(tuple(ids))
        assert every_page(library, 5, seed=seed) == every_page(library, 5, seed=seed)  # fixed by the seed
    assert len(orders) == 3  # each seed its own shuffle
    assert library.browse(5, 13).items == () and library.browse(5, 13).total == pictures


def test_pages_are_items_of_pictures(library: Index) -> None:
    page = library.browse(13, seed=7)
    assert page.total == 13 and (page.order, page.seed, page.offset) == ("random", 7, 0)
    for item in page.items:
        assert item == library.item(item.id)  # the same Item, captions and file included
    assert {item.kind for item in page.items} == {"image"}
    assert any(item.captions for item in page.items)
    assert page.to_dict()["items"][0] == page.items[0].to_dict()


def test_newest_and_path_orders(library: Index) -> None:
    items = [library.item(i) for i in every_page(library, 13, seed=3)]
    newest = every_page(library, 3, order="newest")
    assert newest == [i.id for i in sorted(items, key=lambda i: (i.mtime_ns, i.id), reverse=True)]
    by_path = every_page(library, 3, order="path")
    assert by_path == [i.id for i in sorted(items, key=lambda i: (i.path, i.id))]
    assert library.browse(2, 1, order="path").items[0].id == by_path[1]


@pytest.mark.parametrize(
    "args",
    [
        {"limit": 0},
        {"limit": MAX_K + 1},
        {"limit": True},
        {"offset": -1},
        {"order": "oldest"},
        {"seed": -1},
        {"seed": 2**32},
        {"seed": 1.5},
    ],
)
def test_bad_arguments_are_query_errors(library: Index, args: dict) -> None:
    with pytest.raises(QueryError):
        library.browse(**args)


def test_the_shuffle_is_a_permutation_of_any_ids() -> None:
    """The SQL mix is bijective on 32 bits (checked on ids around the edges of that range too), and the
    order breaks its ties by id, so ids 2**32 apart still come once each."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    ids = [*range(1, 100_001), *range(2**32 - 50_000, 2**32 + 50_000), 2**63 - 1]
    conn.executemany("INSERT INTO t VALUES (?)", ((i,) for i in ids))
    for seed in (0, 12345, 2**32 - 1):
        keys = conn.execute(f"SELECT {shuffle_key('id')} FROM t WHERE id < 4294967296", {"seed": seed}).fetchall()
        assert len({k for (k,) in keys}) == len(keys) and all(isinstance(k, int) and 0 <= k < 2**32 for (k,) in keys)
        order = [i for (i,) in conn.execute(f"SELECT id FROM t ORDER BY {shuffle_key('id')}, id", {"seed": seed})]
        assert sorted(order) == sorted(ids)
        assert order[:50] != sorted(order[:50])  # shuffled, not in id order
    sql = f"SELECT id FROM t WHERE id <= 100000 ORDER BY {shuffle_key('id')}, id LIMIT 200"
    first = [i for (i,) in conn.execute(sql, {"seed": 1})]
    steps = {b - a for a, b in zip(first, first[1:], strict=False)}
    assert len(steps) > 190  # no stride: neighbours in the order are not evenly spaced ids


def test_endpoint_answers_as_the_library(client: TestClient, library: Index) -> None:
    answer = client.get("/api/v1/pictures", params={"limit": 5, "offset": 5, "seed": 42})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    page = library.browse(5, 5, seed=42)
    assert [p["id"] for p in data["pictures"]] == [item.id for item in page.items]
    assert (data["total"], data["offset"], data["limit"], data["order"], data["seed"]) == (13, 5, 5, "random", 42)
    assert data["next_offset"] == 10 and data["generation"] == library.generation
    first = data["pictures"][0]
    assert first["thumbnail"] == f"/api/v1/items/{first['id']}/thumbnail"
    assert {k: v for k, v in first.items() if k not in ("thumbnail", "tags")} == page.items[0].to_dict() | {
        "captions": [c.__dict__ for c in page.items[0].captions]
    }
    assert client.get(first["thumbnail"]).headers["content-type"] == "image/jpeg"
    last = client.get("/api/v1/pictures", params={"limit": 5, "offset": 10, "seed": 42}).json()
    assert len(last["pictures"]) == 3 and last["next_offset"] is None
    default = client.get("/api/v1/pictures").json()  # 24, seed 0
    assert [p["id"] for p in default["pictures"]] == [item.id for item in library.browse(24, seed=0).items]
    newest = client.get("/api/v1/pictures", params={"order": "newest", "limit": 13}).json()
    assert [p["id"] for p in newest["pictures"]] == [item.id for item in library.browse(13, order="newest").items]


def test_endpoint_shows_tags(client: TestClient, library: Index) -> None:
    library.tag(["red", "blue", "green"], top=2)
    try:
        data = client.get("/api/v1/pictures", params={"limit": 13}).json()
        tags = library.tags_of(p["id"] for p in data["pictures"])
        assert [[t["label"] for t in p["tags"]] for p in data["pictures"]] == [
            [t.label for t in tags[p["id"]]] for p in data["pictures"]
        ]
    finally:
        library.untag()


@pytest.mark.parametrize(
    "query",
    ["limit=0", f"limit={MAX_K + 1}", "offset=-1", "offset=99999999999999999999", "order=oldest", "seed=-1",
     f"seed={2**32}", "limit=two"],
)  # fmt: skip
def test_endpoint_refuses_what_its_schema_refuses(client: TestClient, query: str) -> None:
    answer = client.get(f"/api/v1/pictures?{query}")
    assert answer.status_code == 422
    assert query.split("=")[0] in answer.json()["error"]


def test_schema_states_the_limits(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/pictures"]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert (parameters["limit"]["minimum"], parameters["limit"]["maximum"]) == (1, MAX_K)
    assert parameters["offset"]["minimum"] == 0
    assert (parameters["seed"]["minimum"], parameters["seed"]["maximum"]) == (0, 2**32 - 1)
    assert parameters["order"]["enum"] == ["random", "newest", "path"]
