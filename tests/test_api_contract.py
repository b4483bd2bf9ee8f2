"""The API's contract: what /openapi.json promises is what the server does.

schemathesis (every check it has) runs against a real `vecsearch serve` process with two workers, over
loopback, with a bounded number of examples per operation and a fixed seed; a schema-valid request must be
answered 2xx (404 for an id or tag the index does not have), an invalid one 4xx naming the field. The
term grammar the schema states is checked against the parser itself, and the answers schemathesis cannot
judge (cancelling terms, unknown ids, methods) are checked here by value.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_collection
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_process import free_port, served

from vecsearch import Index, Query
from vecsearch.query import PICTURE_REF_PATTERN, POSITIVE_TERM_PATTERN, REMOTE_TERM_PATTERN, parse_term
from vecsearch.serve import create_app
from vecsearch.serve.schemas import ecma

TESTS = Path(__file__).resolve().parent
# Examples per operation: CI runs a bounded number; set more for a deeper run (200 took about 3 minutes here).
EXAMPLES = int(os.environ.get("VECSEARCH_CONTRACT_EXAMPLES", "12"))
LABELS = ["red", "blue", "green", "yellow"]
TOKEN = "contract-test-token-0123456789"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    names = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "night", "snow"]
    photos = make_collection(tmp_path_factory.mktemp("contract-photos"), names, extra=4, extra_seed=20)
    path = tmp_path_factory.mktemp("contract-index") / "index"
    with Index.create(path, encoder=tiny_encoder) as index:
        index.add(photos)
        index.tag(LABELS)
    return path


@pytest.fixture(scope="module")
def client(folder: Path, tiny_encoder) -> Iterator[TestClient]:
    with Index.open(folder, encoder=tiny_encoder) as index:
        yield TestClient(create_app(index), base_url="http://127.0.0.1")


def test_schemathesis_finds_nothing_against_two_workers_behind_a_token(folder: Path, tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "schemathesis"
    command = str(binary) if binary.exists() else shutil.which("schemathesis")
    assert command, "schemathesis is a test dependency"
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    # schemathesis sends dozens of wrong tokens a minute on purpose (to see them refused with 401): the
    # rate limit (tested in test_serve_auth.py) is raised so that they are not answered 429 instead
    limit = ("--token-attempts", "100000")
    with served(folder, port, "--workers", "2", "--token-file", str(tmp_path / "token"), *limit):
        result = subprocess.run(
            [
                command,
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
                "--no-color",
                "--header",
                f"Authorization: Bearer {TOKEN}",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=300,
            cwd=TESTS,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks"},
        )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert re.search(r"(\d+) generated, \1 passed", summary), summary
    operations = sum(len(ops) for ops in protected_schema(folder)["paths"].values())
    assert f"Selected: {operations}/{operations}" in summary and f"Tested: {operations}" in summary, summary


def protected_schema(folder: Path) -> dict:
    with Index.open(folder) as index:
        return create_app(index, token=TOKEN).openapi()


def test_a_protected_schema_states_its_authentication(folder: Path) -> None:
    schema = protected_schema(folder)
    assert schema["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path == "/api/v1/health":
                assert "security" not in operation
            else:
                assert operation["security"] == [{"token": []}, {"session": []}], path
                assert {"401", "429"} <= set(operation["responses"]), path


# --- the term grammar the schema states is the parser's ------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.from_regex(REMOTE_TERM_PATTERN))
def test_every_term_the_schema_allows_parses(term: str) -> None:
    parsed = parse_term(term, local=False)
    assert (parsed.weight > 0) == bool(ecma(POSITIVE_TERM_PATTERN).search(term))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.from_regex(PICTURE_REF_PATTERN))
def test_every_picture_reference_the_schema_allows_parses(ref: str) -> None:
    assert len(Query.parse([ref.strip()], local=False).terms) == 1


@pytest.mark.parametrize(
    "term",
    ["image:/etc/passwd", "http://example.com/a.jpg", "0:cat", ":)", "-:cat", "upload:abc", "id:0", "text:  ", " "],
)
def test_terms_the_parser_refuses_are_outside_the_schema(term: str) -> None:
    assert not ecma(REMOTE_TERM_PATTERN).search(term)


# --- answers by value -----------------------------------------------------------------------------------


def test_methods_agree_with_the_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        documented = sorted(method.upper() for method in operations)
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in ("OPTIONS", "PUT", "PATCH", "DELETE", "POST", "GET"):
            if method in documented:
                continue
            response = client.request(method, concrete)
            assert response.status_code == 405, (method, path, response.text)
            assert sorted(m.strip() for m in response.headers["allow"].split(",")) == documented, (method, path)
            assert method in response.json()["error"]


def test_query_that_cancels_out_answers_no_hits_and_says_why(client: TestClient) -> None:
    answer = client.post("/api/v1/search", json={"terms": ["cat", "-cat"]})
    assert answer.status_code == 200
    assert answer.json()["hits"] == [] and "cancel out" in answer.json()["note"]
    assert client.get("/api/v1/search", params={"q": "red"}).json()["note"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "terms"),
        ({"terms": ["-red"]}, "terms"),
        ({"terms": ["image:/etc/hosts"]}, "terms.0"),
        ({"terms": ["red"], "path": "/home/*"}, "path"),
        ({"terms": ["red"], "k": True}, "k"),
        ({"terms": ["red"], "within": False}, "within"),
        ({"terms": ["red"], "k": "5"}, "k"),
        ({"terms": ["red"], "like": [0]}, "like.0"),
        ({"terms": ["red"], "like": [2**53]}, "like.0"),
    ],
)
def test_invalid_searches_are_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/api/v1/search", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"{field}:"), answer.json()


def test_integral_numbers_are_integers_as_json_schema_says(client: TestClient) -> None:
    assert len(client.post("/api/v1/search", json={"terms": ["red"], "k": 3.0}).json()["hits"]) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"terms": ["red"], "like": [987654]},
        {"terms": ["id:987654"]},
        {"terms": ["red"], "tag": "no such tag"},
        {"terms": ["upload:" + "ab" * 32]},
    ],
)
def test_what_the_index_does_not_have_is_404(client: TestClient, body: dict) -> None:
    answer = client.post("/api/v1/search", json=body)
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "id:1", "labels": ["cat"]}, "labels"),
        ({"image": "id:1", "labels": ["cat", "cat"]}, "labels"),
        ({"image": "id:1", "labels": ["cat", " dog"]}, "labels.1"),
        ({"image": "id:1", "labels": ["cat", "dog"], "templates": ["a {} and {}"]}, "templates.0"),
        ({"image": "/etc/hosts", "labels": ["cat", "dog"]}, "image"),
    ],
)
def test_invalid_classify_requests_are_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/api/v1/classify", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(field), answer.json()


def test_an_empty_upload_is_422_naming_the_file(client: TestClient) -> None:
    answer = client.post("/api/v1/uploads", files={"file": ("empty.png", b"", "image/png")})
    assert answer.status_code == 422 and answer.json()["error"].startswith("file:"), answer.text
    answer = client.post("/api/v1/uploads", files={"file": ("x.png", b"not a picture", "image/png")})
    assert answer.status_code == 415, answer.text


def test_uploads_are_binary_pictures_in_the_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    uploads = [
        (path, op)
        for path, ops in schema["paths"].items()
        for op in ops.values()
        if "multipart/form-data" in op.get("requestBody", {}).get("content", {})
    ]
    assert {path for path, _ in uploads} == {"/api/v1/uploads", "/api/v1/search/image"}
    for _, operation in uploads:
        form = operation["requestBody"]["content"]["multipart/form-data"]
        body = schema["components"]["schemas"][form["schema"]["$ref"].rsplit("/", 1)[-1]]
        assert body["properties"]["file"]["format"] == "binary"
        assert body["properties"]["file"]["minLength"] == 1
        assert "image/png" in form["encoding"]["file"]["contentType"]


def test_the_unversioned_api_points_to_v1(client: TestClient) -> None:
    answer = client.get("/api/search", params={"q": "red"})
    assert answer.status_code == 404 and "/api/v1/" in answer.json()["error"]


def test_errors_never_name_command_line_flags(client: TestClient) -> None:
    answers = [
        client.post("/api/v1/search", json={"terms": ["red"], "like": ["x"]}),
        client.post("/api/v1/search", json={"terms": ["red"], "tag": "nope"}),
        client.post("/api/v1/uploads", files={"file": ("x.png", b"", "image/png")}),
        client.post("/api/v1/describe", json={"image": "id:x"}),
    ]
    for answer in answers:
        assert answer.status_code >= 400
        assert not re.search(r"--[a-z]", answer.json()["error"]), answer.json()
    assert json.dumps(client.get("/openapi.json").json()).count("--") == 0
