"""A Python client generated from the served schema (openapi-python-client) talks to a real `vecsearch serve`.

The schema is what a client author has: if it misdescribes an upload or an answer, the generated code
cannot send the request or cannot read the answer. Every answer is compared with the library's own.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_same_ranking, make_collection, make_image
from PIL import Image
from serve_process import free_port, served

from vecsearch import DEFAULT_TEMPLATES, Index, Query

PACKAGE = "vecsearch_api_client"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "night", "snow"]
    return make_collection(tmp_path_factory.mktemp("client-photos"), names, extra=4, extra_seed=40)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_encoder: Any) -> Path:
    path = tmp_path_factory.mktemp("client-index") / "index"
    with Index.create(path, encoder=tiny_encoder) as index:
        index.add(photos)
    return path


@pytest.fixture(scope="module")
def library(folder: Path, tiny_encoder: Any) -> Iterator[Index]:
    with Index.open(folder, encoder=tiny_encoder) as index:
        yield index


@pytest.fixture(scope="module")
def base_url(folder: Path) -> Iterator[str]:
    with served(folder, free_port(), "--workers", "1") as url:
        yield url


@pytest.fixture(scope="module")
def client_module(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The package openapi-python-client writes from the server's own /openapi.json, imported."""
    work = tmp_path_factory.mktemp("generated")
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as response:
        (work / "openapi.json").write_bytes(response.read())
    config = {
        "package_name_override": PACKAGE,
        "post_hooks": [],
        # the generator's own switch for binary answers of a type it does not know (thumbnails are JPEG)
        "content_type_overrides": {"image/jpeg": "application/octet-stream"},
    }
    (work / "config.json").write_text(json.dumps(config))
    generator = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(
        [
            str(generator) if generator.exists() else shutil.which("openapi-python-client") or "openapi-python-client",
            "generate",
            "--path",
            str(work / "openapi.json"),
            "--config",
            str(work / "config.json"),
            "--meta",
            "none",
            "--output-path",
            str(work / PACKAGE),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def api(client_module: Any, base_url: str) -> Any:
    return client_module.Client(base_url=base_url, raise_on_unexpected_status=True, timeout=30)


def operation(name: str, module: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{module}.{name}")


def picture_bytes(tmp_path: Path) -> bytes:
    make_image(tmp_path / "query.png", "orange", seed=99)
    return (tmp_path / "query.png").read_bytes()


def test_search(api: Any, library: Index) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    body = models.SearchRequest(terms=["a red apple", "-0.5:green"], k=5, kind=models.Kind.ANY)
    answer = operation("search", "search").sync(client=api, body=body)
    assert isinstance(answer, models.SearchResponse)
    want = library.search(Query.parse(["a red apple", "-0.5:green"], local=False), 5, kind="any")
    assert_same_ranking([(h.id, h.score) for h in answer.hits], [(h.id, h.score) for h in want])
    assert [h.relpath for h in answer.hits] == [h.relpath for h in want]
    linked = operation("search_get", "search").sync(client=api, q=["a red apple"], k=3)
    assert_same_ranking(
        [(h.id, h.score) for h in linked.hits], [(h.id, h.score) for h in library.search("a red apple", 3)]
    )


def test_upload_and_search_by_it(api: Any, library: Index, tmp_path: Path) -> None:
    types = importlib.import_module(f"{PACKAGE}.types")
    models = importlib.import_module(f"{PACKAGE}.models")
    data = picture_bytes(tmp_path)
    uploaded = operation("upload", "search").sync(
        client=api,
        body=models.BodyUpload(file=types.File(payload=io.BytesIO(data), file_name="query.png", mime_type="image/png")),
    )
    assert uploaded.upload.startswith("upload:") and uploaded.bytes_ == len(data)
    assert (uploaded.width, uploaded.height) == Image.open(io.BytesIO(data)).size
    answer = operation("search", "search").sync(client=api, body=models.SearchRequest(terms=[uploaded.upload], k=4))
    query = Query.parse([uploaded.upload], local=False)
    want = library.search(query, 4, pictures={uploaded.upload: data})
    assert_same_ranking([(h.id, h.score) for h in answer.hits], [(h.id, h.score) for h in want])
    at_once = operation("search_image", "search").sync(
        client=api,
        body=models.BodySearchImage(
            file=types.File(payload=io.BytesIO(data), file_name="q.png", mime_type="image/png")
        ),
        k=4,
    )
    assert_same_ranking([(h.id, h.score) for h in at_once.hits], [(h.id, h.score) for h in want])


def test_describe_and_classify(api: Any, library: Index, tmp_path: Path) -> None:
    types = importlib.import_module(f"{PACKAGE}.types")
    models = importlib.import_module(f"{PACKAGE}.models")
    item = library.search("a red apple", 1)[0].id
    described = operation("describe", "image").sync(client=api, body=models.DescribeRequest(image=f"id:{item}", k=3))
    want = library.describe(f"id:{item}", 3)
    assert_same_ranking([(h.id, h.score) for h in described.hits], [(h.id, h.score) for h in want])
    assert [h.caption for h in described.hits] == [h.caption for h in want]
    thumbnail = operation("thumbnail", "items").sync(client=api, item_id=item, size=64)
    assert thumbnail.payload.read()[:3] == b"\xff\xd8\xff"  # a JPEG

    data = picture_bytes(tmp_path)
    uploaded = operation("upload", "search").sync(
        client=api,
        body=models.BodyUpload(file=types.File(payload=io.BytesIO(data), file_name="q.png", mime_type="image/png")),
    )
    labels = ["an orange", "the sea", "a car"]
    classified = operation("classify", "image").sync(
        client=api, body=models.ClassifyRequest(image=uploaded.upload, labels=labels)
    )
    want_labels = library.classify(data, labels, list(DEFAULT_TEMPLATES))
    assert [s.label for s in classified.labels] == [s.label for s in want_labels]
    for got, expected in zip(classified.labels, want_labels, strict=True):
        assert got.probability == pytest.approx(expected.probability, abs=1e-4)


def test_errors_reach_the_client_as_their_status(client_module: Any, base_url: str) -> None:
    errors = importlib.import_module(f"{PACKAGE}.errors")
    models = importlib.import_module(f"{PACKAGE}.models")
    strict = client_module.Client(base_url=base_url, raise_on_unexpected_status=True, timeout=30)
    answer = operation("search", "search").sync_detailed(client=strict, body=models.SearchRequest(terms=["id:987654"]))
    assert answer.status_code == 404 and isinstance(answer.parsed, models.ErrorOut)
    assert "no item with id 987654" in answer.parsed.error
    assert issubclass(errors.UnexpectedStatus, Exception)
