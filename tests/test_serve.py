"""`vecsearch serve`: the JSON API through FastAPI's test client, against the library's own answers.

The server gets its own `Index` over a real index (tiny open_clip model, real FAISS and SQLite); every
search it answers is compared with the same search made through the library on another `Index`.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_ranking, echoed_query, index_of, make_collection, make_image
from fastapi.testclient import TestClient
from PIL import Image

from vecsearch import Index
from vecsearch.manifest import DATABASE
from vecsearch.serve import create_app


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "night", "snow"]
    return make_collection(tmp_path_factory.mktemp("serve-photos"), names, extra=8, extra_seed=20)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder) -> Path:
    return index_of(tmp_path_factory.mktemp("serve-index") / "index", photos, tiny_encoder)


@pytest.fixture(scope="module")
def client(folder: Path, tiny_encoder) -> Iterator[TestClient]:
    with Index.open(folder, encoder=tiny_encoder) as index:
        yield TestClient(create_app(index), base_url="http://127.0.0.1")


def ids_scores(hits: list[dict]) -> list[tuple[int, float]]:
    return [(h["id"], h["score"]) for h in hits]


def assert_same(api_hits: list[dict], library_hits) -> None:
    assert_same_ranking([(h["id"], h["score"]) for h in api_hits], [(h.id, h.score) for h in library_hits])
    assert [h["rank"] for h in api_hits] == list(range(1, len(api_hits) + 1))


def upload(client: TestClient, data: bytes, name: str = "query.png") -> dict:
    response = client.post("/api/v1/uploads", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 201, response.text
    return response.json()


def png_bytes(colour: str = "red", seed: int = 99, tmp: Path | None = None) -> bytes:
    image = Image.new("RGB", (80, 60), {"red": (220, 30, 30), "blue": (30, 60, 220)}[colour])
    image.putpixel((seed % 80, 0), (seed % 256, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --- the index and its health ----------------------------------------------------------------------


def test_health_and_info(client: TestClient, library: Index) -> None:
    health = client.get("/api/v1/health").json()
    assert health == {
        "status": "ok",
        "generation": library.store.generation,
        "items": library.counts()["items"],
        "worker": os.getpid(),  # the test client runs the application in this process
    }
    info = client.get("/api/v1/info").json()
    assert info["name"] == library.name
    assert info["counts"] == library.counts()
    assert info["dim"] == library.dim
    assert info["model"] == str(library.spec)
    assert info["kinds"] == ["image", "caption", "any"]
    assert info["max_upload_bytes"] == 20 << 20


def test_openapi_schema_lists_every_endpoint(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/v1/health",
        "/api/v1/info",
        "/api/v1/tags",
        "/api/v1/search",
        "/api/v1/search/image",
        "/api/v1/uploads",
        "/api/v1/describe",
        "/api/v1/classify",
        "/api/v1/items/{item_id}",
        "/api/v1/items/{item_id}/thumbnail",
        "/api/v1/pictures",
        "/api/v1/uploads/{sha256}/thumbnail",
    }
    assert set(schema["paths"]["/api/v1/search"]) == {"get", "post"}
    assert "SearchRequest" in schema["components"]["schemas"]


def test_page_and_static_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("app.js", "app.css"):
        assert f"/static/{asset}" in page.text
        assert client.get(f"/static/{asset}").status_code == 200


# --- searches equal the library's --------------------------------------------------------------------


def test_text_search_equals_the_library(client: TestClient, library: Index) -> None:
    response = client.post("/api/v1/search", json={"terms": ["a red apple"], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert_same(body["hits"], library.search("a red apple", k=5))
    assert body["query"] == echoed_query(["a red apple"], 5)
    assert body["generation"] == library.store.generation and body["took_ms"] >= 0
    first = body["hits"][0]
    assert set(first) == {
        *("rank", "id", "score", "kind", "path", "relpath", "caption", "image", "source", "language", "tags"),
        "thumbnail",
    }
    assert first["thumbnail"] == f"/api/v1/items/{first['id']}/thumbnail"


def test_the_query_echo_runs_the_same_search_again(client: TestClient) -> None:
    """The page shows `query` for copying into scripts: posting it back gives the same answer."""
    first = client.post("/api/v1/search", json={"terms": ["sea", "-0.5:sun"], "k": 4, "like": [2]}).json()
    again = client.post("/api/v1/search", json=first["query"]).json()
    assert ids_scores(again["hits"]) == ids_scores(first["hits"])


def test_get_search_equals_post(client: TestClient, library: Index) -> None:
    got = client.get("/api/v1/search", params={"q": ["a green leaf", "-0.5:yellow"], "k": 3, "like": [1]}).json()
    posted = client.post("/api/v1/search", json={"terms": ["a green leaf", "-0.5:yellow"], "k": 3, "like": [1]}).json()
    assert ids_scores(got["hits"]) == ids_scores(posted["hits"])
    assert_same(got["hits"], library.search(["a green leaf", "-0.5:yellow"], k=3, like=[1]))


def test_mixed_weighted_query_with_refinement(client: TestClient, library: Index) -> None:
    terms = ["2:a blue sea", "-0.5:a yellow sun", "0.5:id:3"]
    body = {"terms": terms, "k": 6, "like": [5], "unlike": [6]}
    response = client.post("/api/v1/search", json=body).json()
    expected = library.search(terms, k=6, like=[5], unlike=[6])
    assert_same(response["hits"], expected)
    assert {3, 5, 6}.isdisjoint(h["id"] for h in response["hits"])  # query items are not results


def test_refinement_alone(client: TestClient, library: Index) -> None:
    response = client.post("/api/v1/search", json={"like": [4], "k": 3}).json()
    assert_same(response["hits"], library.search([], k=3, like=[4]))


@pytest.mark.parametrize(
    "filters",
    [
        {"kind": "caption"},
        {"kind": "any", "k": 20},
        {"path": "trips/*"},
        {"path": "*/more/m[0-3].jpg"},
        {"min_score": 0.2},
        {"within": 0.05, "k": 16},
    ],
)
def test_filters_equal_the_library(client: TestClient, library: Index, filters: dict) -> None:
    body = {"terms": ["a purple car"], "k": 5, **filters}
    response = client.post("/api/v1/search", json=body)
    assert response.status_code == 200, response.text
    expected = library.search("a purple car", **{"k": 5, **filters})
    assert_same(response.json()["hits"], expected)


def test_caption_hits_carry_their_pictures_thumbnail(client: TestClient) -> None:
    hits = client.post("/api/v1/search", json={"terms": ["fruit"], "kind": "caption", "k": 3}).json()["hits"]
    assert hits and all(h["kind"] == "caption" for h in hits)
    for hit in hits:
        assert hit["thumbnail"] == f"/api/v1/items/{hit['image']}/thumbnail"
        assert client.get(hit["thumbnail"]).headers["content-type"] == "image/jpeg"


# --- pictures sent by the client ---------------------------------------------------------------------


def test_uploaded_picture_searches_like_the_file(client: TestClient, library: Index, photos: Path) -> None:
    path = photos / "sea.png"
    info = upload(client, path.read_bytes(), "sea.png")
    assert info["upload"].startswith("upload:") and len(info["sha256"]) == 64
    assert (info["width"], info["height"], info["bytes"]) == (96, 72, path.stat().st_size)
    sea_item = next(h.id for h in library.search("x", k=16, path="sea.png"))
    assert info["items"] == [sea_item]  # the same picture is in the index
    response = client.post("/api/v1/search", json={"terms": [info["upload"]], "k": 5}).json()
    assert_same(response["hits"], library.search([str(path)], k=5))
    assert sea_item not in [h["id"] for h in response["hits"]]  # a query never finds itself


def test_uploaded_picture_mixed_with_text(client: TestClient, library: Index, photos: Path) -> None:
    path = photos / "more" / "m2.jpg"
    token = upload(client, path.read_bytes(), "m2.jpg")["upload"]
    response = client.post("/api/v1/search", json={"terms": [token, "-0.5:a green leaf"], "k": 4}).json()
    assert_same(response["hits"], library.search([str(path), "-0.5:a green leaf"], k=4))


def test_search_by_image_in_one_request(client: TestClient, library: Index, photos: Path) -> None:
    path = photos / "leaf.png"
    response = client.post(
        "/api/v1/search/image",
        params={"k": 3, "kind": "any"},
        files={"file": ("leaf.png", path.read_bytes(), "image/png")},
    )
    assert response.status_code == 200, response.text
    assert_same(response.json()["hits"], library.search([str(path)], k=3, kind="any"))


def test_describe_and_classify_equal_the_library(client: TestClient, library: Index, photos: Path) -> None:
    described = client.post("/api/v1/describe", json={"image": "id:1", "k": 3}).json()
    assert_same(described["hits"], library.describe("id:1", k=3))
    assert all(h["kind"] == "caption" for h in described["hits"])
    token = upload(client, (photos / "sun.png").read_bytes())["upload"]
    by_upload = client.post("/api/v1/describe", json={"image": token, "k": 2}).json()
    assert_same(by_upload["hits"], library.describe(photos / "sun.png", k=2))

    labels = ["red", "blue", "green"]
    classified = client.post("/api/v1/classify", json={"image": token, "labels": labels}).json()
    expected = library.classify(photos / "sun.png", labels)
    assert [x["label"] for x in classified["labels"]] == [x.label for x in expected]
    np.testing.assert_allclose(
        [x["probability"] for x in classified["labels"]], [x.probability for x in expected], atol=1e-6
    )
    templated = client.post(
        "/api/v1/classify", json={"image": "id:2", "labels": labels, "templates": ["a drawing of {}"]}
    ).json()
    expected = library.classify("id:2", labels, ["a drawing of {}"])
    assert [x["label"] for x in templated["labels"]] == [x.label for x in expected]


# --- items and thumbnails -----------------------------------------------------------------------------


def test_item_metadata(client: TestClient, library: Index, photos: Path) -> None:
    hit = library.search("x", k=1, path="apple.png")[0]
    item = client.get(f"/api/v1/items/{hit.id}").json()
    assert item["kind"] == "image" and item["relpath"] == "apple.png" and item["image"] == hit.id
    assert [c["text"] for c in item["captions"]] == ["a red apple on a table", "fruit"]
    assert item["bytes"] == (photos / "apple.png").stat().st_size
    assert item["thumbnail"] == f"/api/v1/items/{hit.id}/thumbnail"
    caption = client.get(f"/api/v1/items/{item['captions'][1]['id']}").json()
    assert caption["kind"] == "caption" and caption["text"] == "fruit" and caption["image"] == hit.id
    assert client.get("/api/v1/items/99999").status_code == 404
    assert client.get("/api/v1/items/abc").status_code == 422
    for outside in (-1, 0, 2**53, 2**63, 2**64):  # never an id: refused as the schema says, never a server error
        for url in (f"/api/v1/items/{outside}", f"/api/v1/items/{outside}/thumbnail"):
            answer = client.get(url)
            assert answer.status_code == 422 and answer.json()["error"].startswith("item_id: "), (url, answer.text)
    assert (
        client.app.openapi()["paths"]["/api/v1/items/{item_id}"]["get"]["parameters"][0]["schema"]["maximum"]
        == 2**53 - 1
    )


def test_thumbnails_are_bounded_cached_and_revalidated(client: TestClient, library: Index) -> None:
    item_id = library.search("x", k=1, path="apple.png")[0].id
    cache = client.app.state.service.thumbnails
    before = len(cache)
    response = client.get(f"/api/v1/items/{item_id}/thumbnail", params={"size": 50})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "JPEG" and max(picture.size) == 64  # 50 is rounded up to 64
    assert picture.size == (64, 48)  # the 96 x 72 picture keeps its shape
    assert len(cache) == before + 1
    again = client.get(f"/api/v1/items/{item_id}/thumbnail", params={"size": 60})  # also 64: from the cache
    assert again.content == response.content and len(cache) == before + 1
    etag = response.headers["etag"]
    assert (
        client.get(
            f"/api/v1/items/{item_id}/thumbnail", params={"size": 64}, headers={"If-None-Match": etag}
        ).status_code
        == 304
    )
    big = Image.open(io.BytesIO(client.get(f"/api/v1/items/{item_id}/thumbnail?size=1024").content))
    assert big.size == (96, 72)  # never enlarged
    assert client.get(f"/api/v1/items/{item_id}/thumbnail?size=5000").status_code == 422


def test_thumbnail_of_a_picture_gone_from_disk(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "p" / "a.png", "red", seed=1)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tmp_path / "p")
        (tmp_path / "p" / "a.png").unlink()
        client = TestClient(create_app(index), base_url="http://127.0.0.1")
        response = client.get("/api/v1/items/1/thumbnail")
    assert response.status_code == 404 and "gone from disk" in response.json()["error"]


# --- nothing from a request reaches the file system ------------------------------------------------


@pytest.mark.parametrize(
    "term",
    [
        "image:/etc/passwd",
        "image:../../etc/hosts.png",
        "-0.5:image:/etc/passwd",
        "http://example.com/a.jpg",
        "https://127.0.0.1:8000/api/v1/health",
    ],
)
def test_terms_naming_files_or_urls_are_refused(client: TestClient, term: str) -> None:
    response = client.post("/api/v1/search", json={"terms": [term]})
    assert response.status_code == 422  # outside the term grammar the schema states
    assert response.json()["error"].startswith("terms.0: ") and "paths and URLs are refused" in response.json()["error"]


@pytest.mark.parametrize("text", ["/etc/passwd", "../../etc/hosts.png", "photo.jpg", "~/secret.png"])
def test_path_like_text_is_only_text(client: TestClient, library: Index, text: str) -> None:
    """A bare term that looks like a path is searched as words: no file is looked up or read."""
    response = client.post("/api/v1/search", json={"terms": [text], "k": 3})
    assert response.status_code == 200
    assert_same(response.json()["hits"], library.search([f"text:{text}"], k=3))


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/items/..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/v1/items/1%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/static/..%2Fserve.py",
        "/static/../serve.py",
        "/static/%2e%2e/serve.py",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_in_urls(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content and b"def create_app" not in response.content


@pytest.mark.parametrize("pattern", ["/etc/*", "~/*", "\\\\server\\share\\*", "C:/Users/*"])
def test_path_filter_is_a_glob_over_indexed_paths_only(client: TestClient, pattern: str) -> None:
    response = client.post("/api/v1/search", json={"terms": ["x"], "path": pattern})
    assert response.status_code == 422 and "not an absolute path" in response.json()["error"]


def test_database_row_pointing_outside_is_never_read(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "p" / "a.png", "red", seed=1)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tmp_path / "p")
    conn = sqlite3.connect(tmp_path / "idx" / DATABASE)
    conn.execute("UPDATE files SET relpath = '../../../etc/passwd.png'")
    conn.commit()
    conn.close()
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as index:
        client = TestClient(create_app(index), base_url="http://127.0.0.1")
        response = client.get("/api/v1/items/1/thumbnail")
        assert response.status_code == 503
        assert "outside its folder" in response.json()["error"]


# --- bad requests get a 4xx and a clear message --------------------------------------------------------


def test_upload_limits_and_undecodable_pictures(folder: Path, tiny_encoder, photos: Path) -> None:
    with Index.open(folder, encoder=tiny_encoder) as index:
        client = TestClient(create_app(index, max_upload_bytes=4000), base_url="http://127.0.0.1")
        small = Image.new("RGB", (8, 8), (1, 2, 3))
        out = io.BytesIO()
        small.save(out, format="PNG")
        assert client.post("/api/v1/uploads", files={"file": ("s.png", out.getvalue())}).status_code == 201
        too_big = client.post("/api/v1/uploads", files={"file": ("sea.png", (photos / "sea.png").read_bytes())})
        assert too_big.status_code == 413 and "4,000 bytes" in too_big.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while the body arrives
            boundary = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            yield boundary
            for _ in range(100):
                yield b"\0" * 1000
            yield b"\r\n--xyz--\r\n"

        streamed = client.post(
            "/api/v1/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        assert streamed.status_code == 413, streamed.text
        not_image = client.post("/api/v1/uploads", files={"file": ("notes.png", b"just some text")})
        assert not_image.status_code == 415 and "not a readable image" in not_image.json()["error"]
        empty = client.post("/api/v1/uploads", files={"file": ("e.png", b"")})
        assert empty.status_code == 422 and empty.json()["error"] == "file: the upload is empty"
        truncated = (photos / "sea.png").read_bytes()[:300]
        assert client.post("/api/v1/uploads", files={"file": ("t.png", truncated)}).status_code == 415
        # a PNG header claiming 100,000 x 100,000 pixels: refused before anything is decoded
        ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
        bomb = bytearray(out.getvalue())  # the 8 x 8 PNG above, with a header that lies
        bomb[16:29] = ihdr
        bomb[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        refused = client.post("/api/v1/uploads", files={"file": ("bomb.png", bytes(bomb))})
        assert refused.status_code == 415 and "too large" in refused.json()["error"]
        assert client.post("/api/v1/uploads").status_code == 422  # no file at all


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"terms": []}, 422, "terms: nothing to search for"),
        ({"terms": ["-cat"]}, 422, "terms: nothing to search for"),
        ({"terms": ["inf:cat"]}, 422, "terms.0: not a query term"),
        ({"terms": ["id:123456"]}, 404, "no item with id 123456"),
        ({"terms": ["upload:" + "0" * 64]}, 404, "upload it again"),
        ({"terms": ["upload:xyz"]}, 422, "terms.0: not a query term"),
        ({"terms": ["cat"], "k": 0}, 422, "k:"),
        ({"terms": ["cat"], "k": "ten"}, 422, "k:"),
        ({"terms": ["cat"], "kind": "video"}, 422, "kind:"),
        ({"terms": ["cat"], "min_score": 3}, 422, "min_score:"),
        ({"terms": "cat"}, 422, "terms:"),
        ({"terms": ["cat"], "like": ["x"]}, 422, "like."),
    ],
)
def test_bad_searches(client: TestClient, body: dict, status: int, words: str) -> None:
    response = client.post("/api/v1/search", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert "Traceback" not in response.text


def test_malformed_json_and_bad_picture_references(client: TestClient) -> None:
    response = client.post("/api/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]
    for body in ({"image": "cat"}, {"image": "image:/etc/passwd"}):
        response = client.post("/api/v1/describe", json=body)
        assert response.status_code == 422 and response.json()["error"].startswith("image: names no picture"), (
            response.text
        )
    assert client.post("/api/v1/describe", json={"image": "id:99999"}).status_code == 404
    assert client.post("/api/v1/classify", json={"image": "id:1", "labels": []}).status_code == 422
    assert client.post("/api/v1/classify", json={"image": "id:1", "labels": ["a", "a"]}).status_code == 422


def test_other_host_names_are_refused(folder: Path, tiny_encoder) -> None:
    """A web page elsewhere cannot reach the API through DNS rebinding: only loopback names answer."""
    with Index.open(folder, encoder=tiny_encoder) as index:
        client = TestClient(create_app(index), base_url="http://127.0.0.1")
        assert client.get("/api/v1/health").status_code == 200
        assert client.get("/api/v1/health", headers={"host": "localhost:8000"}).status_code == 200
        assert client.get("/api/v1/health", headers={"host": "attacker.example"}).status_code == 400
        shared = TestClient(create_app(index, allowed_hosts=["*"]), base_url="http://photos.lan")
        assert shared.get("/api/v1/health").status_code == 200


# --- zero-shot tags -------------------------------------------------------------------------------------


def test_tags_listed_filtered_and_shown_on_hits(tmp_path: Path, folder: Path, tiny_encoder) -> None:
    """A copy of the module's index, tagged while served: GET /api/v1/tags counts, the tag filter (POST and
    GET) equals the library's, and every hit carries its picture's tags."""
    import shutil

    shutil.copytree(folder, tmp_path / "idx")
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as served:
        client = TestClient(create_app(served), base_url="http://127.0.0.1")
        assert client.get("/api/v1/tags").json() == {
            "labels": [],
            "templates": [],
            "top": None,
            "tagged": 0,
            "pictures": served.counts()["images"],
        }
        refused = client.post("/api/v1/search", json={"terms": ["sea"], "tag": "red"})
        assert refused.status_code == 404 and "has no tags to filter by" in refused.json()["error"]

        labels = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
        with Index.open(tmp_path / "idx", encoder=tiny_encoder) as writer:
            writer.tag(labels, top=2)
            counts = writer.tag_counts()
            pictures = writer.counts()["images"]
            label = max(counts, key=lambda name: (counts[name] < pictures, counts[name]))
            expected = writer.search("a purple car", k=50, tag=label)
        listed = client.get("/api/v1/tags").json()
        assert listed["labels"] == [{"label": name, "pictures": counts[name]} for name in labels]
        assert (listed["top"], listed["tagged"], listed["pictures"]) == (2, pictures, pictures)

        posted = client.post("/api/v1/search", json={"terms": ["a purple car"], "k": 50, "tag": label}).json()
        assert posted["query"]["tag"] == label
        assert_same(posted["hits"], expected)
        assert posted["hits"] and all(label in [t["label"] for t in h["tags"]] for h in posted["hits"])
        got = client.get("/api/v1/search", params={"q": "a purple car", "k": 50, "tag": label}).json()
        assert ids_scores(got["hits"]) == ids_scores(posted["hits"])
        for hit, want in zip(posted["hits"], expected, strict=True):
            assert [t["label"] for t in hit["tags"]] == [t.label for t in want.tags]
        unknown = client.get("/api/v1/search", params={"q": "sea", "tag": "zebra"})
        assert unknown.status_code == 404 and "no tag 'zebra'" in unknown.json()["error"]


# --- a crawl while the server runs ----------------------------------------------------------------------


def test_server_picks_up_a_recrawl(tmp_path: Path, tiny_encoder) -> None:
    tree = tmp_path / "p"
    for i in range(3):
        make_image(tree / f"a{i}.png", "red", seed=i)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as writer:
        writer.add(tree)
        with Index.open(tmp_path / "idx", encoder=tiny_encoder) as served:
            client = TestClient(create_app(served), base_url="http://127.0.0.1")
            before = client.get("/api/v1/health").json()
            assert before["items"] == 3
            assert len(client.post("/api/v1/search", json={"terms": ["x"], "k": 10}).json()["hits"]) == 3
            make_image(tree / "new.png", "blue", seed=7)
            (tree / "a0.png").unlink()
            writer.add()  # the re-crawl commits while the server holds its index open
            after = client.get("/api/v1/health").json()
            assert after["items"] == 3 and after["generation"] > before["generation"]
            hits = client.post("/api/v1/search", json={"terms": ["x"], "k": 10}).json()["hits"]
            assert sorted(h["relpath"] for h in hits) == ["a1.png", "a2.png", "new.png"]
            assert_same(hits, writer.search("x", k=10))


# --- the command ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_answers_and_stops_on_ctrl_c(folder: Path) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vecsearch", "serve", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as response:
                    health = json.load(response)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["status"] == "ok" and health["items"] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/search?q=red&k=2", timeout=10) as response:
            assert len(json.load(response)["hits"]) == 2
    finally:
        process.send_signal(2)
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, 130), err
    assert f"at http://127.0.0.1:{port}/" in err


def test_serve_command_errors(folder: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vecsearch.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 3 and "Error" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["serve", str(folder), "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    result = runner.invoke(main, ["serve", str(folder), "--max-upload", "lots"])
    assert result.exit_code == 2


def test_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for asset in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/docs").status_code == 404  # FastAPI's page would load its scripts from a CDN


# --- the library parts the server stands on ------------------------------------------------------------


def test_pictures_as_bytes_equal_the_files(library: Index, photos: Path) -> None:
    from vecsearch import Query, Term

    path = photos / "sun.png"
    data = path.read_bytes()
    by_bytes = library.search(Query((Term("image", "upload:1"),)), k=4, pictures={"upload:1": data})
    by_path = library.search([str(path)], k=4)
    assert_same_ranking([(h.id, h.score) for h in by_bytes], [(h.id, h.score) for h in by_path])
    assert [h.id for h in library.describe(data, k=2)] == [h.id for h in library.describe(path, k=2)]
    assert [x.label for x in library.classify(data, ["a", "b"])] == [
        x.label for x in library.classify(path, ["a", "b"])
    ]


def test_refresh_is_cheap_and_sees_commits(tmp_path: Path, tiny_encoder) -> None:
    make_image(tmp_path / "p" / "a.png", "red", seed=1)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as writer:
        writer.add(tmp_path / "p")
        with Index.open(tmp_path / "idx", encoder=tiny_encoder) as reader:
            assert len(reader.search("x", k=5)) == 1
            assert reader.refresh() is False  # nothing committed: the loaded vectors stay
            make_image(tmp_path / "p" / "b.png", "blue", seed=2)
            writer.add()
            assert reader.refresh() is True and reader.refresh() is False
            assert len(reader.search("x", k=5)) == 2
            assert reader.counts()["images"] == 2


def test_an_upload_has_a_thumbnail_while_the_server_holds_it(client: TestClient, photos: Path) -> None:
    data = (photos / "sea.png").read_bytes()
    sha = upload(client, data)["sha256"]
    answer = client.get(f"/api/v1/uploads/{sha.upper()}/thumbnail", params={"size": 40})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(answer.content)).size) == 64  # rounded up to 64
    again = client.get(f"/api/v1/uploads/{sha}/thumbnail?size=64", headers={"if-none-match": answer.headers["etag"]})
    assert again.status_code == 304
    gone = client.get(f"/api/v1/uploads/{'0' * 64}/thumbnail")
    assert gone.status_code == 404 and "upload it again" in gone.json()["error"]
    assert client.get("/api/v1/uploads/../../etc/passwd/thumbnail").status_code == 404
    assert client.get(f"/api/v1/uploads/{'z' * 64}/thumbnail").json()["error"].startswith("sha256:")
