"""The command line: state built through the Python API, then checked through the CLI (exit codes,
exact output and error lines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SCORE_ATOL, assert_same_ranking, make_image

from vecsearch import Index, Query
from vecsearch.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def built(tmp_path: Path, photo_tree: Path, tiny_encoder) -> Path:
    folder = tmp_path / "idx"
    with Index.create(folder, encoder=tiny_encoder) as index:
        index.add(photo_tree)
    return folder


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_help_for_every_command(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("index", "search", "describe", "classify", "info", "list", "models"):
        assert command in result.output
        sub = invoke(runner, command, "--help")
        assert sub.exit_code == 0, command
        assert "Usage: main " + command in sub.output or f"Usage: vecsearch {command}" in sub.output


def test_python_dash_m_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "vecsearch", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == "vecsearch, version 0.1.0"


def test_index_command_creates_and_updates(
    runner: CliRunner, tmp_path: Path, photo_tree: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "made"
    result = invoke(runner, "index", str(photo_tree), "--index", str(folder), "--model", f"local-dir:{tiny_model_dir}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{folder}: 4 added, 0 updated, 0 renamed, 0 duplicates reused, 0 removed, 0 unchanged, 1 skipped"
    )
    assert lines[1] == "captions: 4 added, 0 removed"
    # the first crawl that loads the model exports its towers for torch-free queries and crawls
    assert lines[2].startswith("text tower exported for torch-free text queries in ")
    assert lines[3].startswith("image tower exported for torch-free picture queries and crawls in ")
    assert lines[4].startswith("index holds 4 images and 4 captions (4 files)")
    assert result.stderr.splitlines()[-1] == f"skipped {photo_tree / 'broken.jpg'}: not a readable image"

    again = invoke(runner, "index", "--index", str(folder), "--json")
    assert again.exit_code == 0
    report = json.loads(again.stdout)
    assert report["unchanged"] == 4 and report["added"] == 0 and report["embedded_images"] == 0
    assert report["counts"] == {"items": 8, "images": 4, "captions": 4, "files": 4}


def test_index_by_name_lands_in_home(
    runner: CliRunner, photo_tree: Path, tiny_model_dir: Path, monkeypatch, tmp_path: Path
) -> None:
    home = tmp_path / "myhome"
    result = invoke(
        runner,
        "--home",
        str(home),
        "index",
        str(photo_tree),
        "--name",
        "pics",
        "--model",
        f"local-dir:{tiny_model_dir}",
        "-q",
    )
    assert result.exit_code == 0
    assert result.stdout == ""
    assert (home / "pics" / "manifest.json").is_file()
    listed = invoke(runner, "--home", str(home), "list", "--json")
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["pics"]
    assert rows[0]["counts"]["images"] == 4
    assert rows[0].keys() == {"name", "path", "model", "counts", "updated"}

    # The table for people, with an index whose manifest cannot be read listed as such.
    (home / "broken").mkdir()
    (home / "broken" / "manifest.json").write_text("{not json")
    table = invoke(runner, "--home", str(home), "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "images", "captions", "model", "updated"]
    assert lines[1].startswith("broken") and "error: index manifest unreadable" in lines[1]
    assert lines[2].split()[:4] == ["pics", "4", "4", f"open_clip:local-dir:{tiny_model_dir}"]
    broken = json.loads(invoke(runner, "--home", str(home), "list", "--json").stdout)[0]
    assert broken.keys() == {"name", "path", "error"}


def test_search_outputs_match_the_api(runner: CliRunner, built: Path) -> None:
    with Index.open(built) as index:
        expected = index.search("a red apple", k=3)
    as_json = invoke(runner, "search", str(built), "a red apple", "-k", "3", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == [h.to_dict() for h in expected]

    paths = invoke(runner, "search", str(built), "a red apple", "-k3", "--paths")
    assert paths.stdout.splitlines() == list(dict.fromkeys(h.path for h in expected))

    table = invoke(runner, "search", str(built), "a red apple", "-k", "3")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["#", "score", "kind", "id", "path", "caption"]
    assert len(lines) == 4
    for line, hit in zip(lines[1:], expected, strict=True):
        cells = line.split()
        assert cells[:5] == [str(hit.rank), f"{hit.score:.4f}", hit.kind, str(hit.id), hit.path]


def test_negative_terms_and_options_mix(runner: CliRunner, built: Path) -> None:
    with Index.open(built) as index:
        expected = index.search(Query.parse(["a car", "-apple", "+2:sand"]), k=4, kind="any")
    result = invoke(runner, "search", str(built), "a car", "-apple", "--kind", "any", "+2:sand", "-k", "4", "--json")
    assert result.exit_code == 0, result.output
    assert [h["id"] for h in json.loads(result.stdout)] == [h.id for h in expected]
    subtract = invoke(
        runner,
        "search",
        str(built),
        "a car",
        "--subtract",
        "apple",
        "--add",
        "2:sand",
        "--kind",
        "any",
        "-k",
        "4",
        "--json",
    )
    assert [h["id"] for h in json.loads(subtract.stdout)] == [h.id for h in expected]


def test_like_refines_a_search(runner: CliRunner, built: Path) -> None:
    first = json.loads(invoke(runner, "search", str(built), "a beach", "--json").stdout)
    liked = first[1]["id"]
    again = invoke(runner, "search", str(built), "a beach", "--like", str(liked), "--json")
    assert again.exit_code == 0
    ids = [h["id"] for h in json.loads(again.stdout)]
    assert liked not in ids
    with Index.open(built) as index:
        assert ids == [h.id for h in index.search("a beach", like=[liked])]


def test_describe_and_classify(runner: CliRunner, built: Path, photo_tree: Path, tiny_model_dir: Path) -> None:
    described = invoke(runner, "describe", str(built), str(photo_tree / "car.jpg"), "--json")
    assert described.exit_code == 0
    hits = json.loads(described.stdout)
    assert hits and {h["kind"] for h in hits} == {"caption"}
    texts = [h["caption"] for h in hits]
    assert len(texts) == len(set(texts))

    labels = invoke(
        runner,
        "classify",
        str(photo_tree / "car.jpg"),
        "--labels",
        "car,apple,beach",
        "--model",
        f"local-dir:{tiny_model_dir}",
        "--json",
    )
    assert labels.exit_code == 0, labels.output
    scores = json.loads(labels.stdout)
    assert sorted(s["label"] for s in scores) == ["apple", "beach", "car"]
    assert abs(sum(s["probability"] for s in scores) - 1) < 1e-5
    with_index = invoke(
        runner, "classify", str(photo_tree / "car.jpg"), "--labels", "car,apple,beach", "--index", str(built), "--json"
    )
    # The same model (one of the two runs may use its exports, the other torch: equal to rounding).
    by_label = {s["label"]: s for s in scores}
    for score in json.loads(with_index.stdout):
        assert score["probability"] == pytest.approx(by_label[score["label"]]["probability"], abs=1e-5)
        assert score["score"] == pytest.approx(by_label[score["label"]]["score"], abs=SCORE_ATOL)


def test_info_and_models(runner: CliRunner, built: Path) -> None:
    info = invoke(runner, "info", str(built), "--json")
    data = json.loads(info.stdout)
    assert data["counts"] == {"items": 8, "images": 4, "captions": 4, "files": 4}
    assert data["faiss"]["type"] == "IDMap2,Flat" and data["faiss"]["ntotal"] == 8
    assert data["dim"] == 16 and data["format_version"] == 1
    text = invoke(runner, "info", str(built)).stdout
    assert "items        8 (4 images, 4 captions)" in text

    models = json.loads(invoke(runner, "models", "--json").stdout)
    default = [m for m in models if m["default"]]
    assert default[0]["spec"] == "open_clip:ViT-B-32@laion2b_s34b_b79k"
    assert default[0]["available_offline"] is False
    minilm = [m for m in models if m["name"] == "all-MiniLM-L6-v2"]
    assert minilm[0]["available_offline"] is True


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "nosuch", "cat"], 3, "Error: unknown index 'nosuch'"),
        (
            ["search", "{idx}", "missing.jpg"],
            1,
            "Error: query image not found: missing.jpg (to search for the words, write text:missing.jpg)",
        ),
        (["search", "{idx}"], 1, "Error: empty query: give text, an image, or an item id to search like"),
        (["search", "{idx}", "-dog"], 1, "Error: the query has only negative terms; add something to search for"),
        (["search", "{idx}", "2x:cat", "--like", "abc"], 1, "Error: like and unlike take item ids"),
        (["search", "{idx}", "id:99999"], 1, "Error: no item with id 99999 in this index"),
        (["search", "{idx}", "cat", "--json", "--paths"], 2, "Error: choose --json or --paths, not both"),
        (
            ["search", "{idx}", "cat", "--model", "ViT-B-32"],
            4,
            "Error: open_clip model ViT-B-32 (laion2b_s34b_b79k) is not downloaded yet",
        ),
        (["index", "/no/such/folder", "--index", "{tmp}/new"], 1, "Error: path not found: /no/such/folder"),
        (["index", "--index", "{tmp}/new"], 3, "Error: no index at"),
        (["index", "{tmp}/missing", "--index", "{idx}"], 1, "Error: path not found:"),
        (["classify", "{tree}/car.jpg", "--labels", "car"], 1, "Error: zero-shot classification needs at least two"),
        (["classify", "{tree}/car.jpg"], 2, "Error: give --labels or --labels-file"),
        (["info", "{tmp}"], 3, "is not a vecsearch index (no manifest.json)"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    runner, built: Path, photo_tree: Path, tmp_path: Path, args, code, message
) -> None:
    filled = [a.format(idx=built, tmp=tmp_path, tree=photo_tree) for a in args]
    result = invoke(runner, *filled)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    if code != 2:
        assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_model_is_refused_naming_both(runner: CliRunner, built: Path, tmp_path: Path) -> None:
    from conftest import write_tiny_model

    other = write_tiny_model(tmp_path / "other-model", seed=7)
    result = invoke(runner, "search", str(built), "cat", "--model", f"local-dir:{other}")
    assert result.exit_code == 4
    assert "was built with open_clip:local-dir:" in result.stderr
    assert f"not open_clip:local-dir:{other}" in result.stderr


def test_nothing_indexable_exits_non_zero(runner: CliRunner, tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"nope")
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = invoke(runner, "index", str(bad), "--index", str(tmp_path / "i"), "--model", f"local-dir:{tiny_model_dir}")
    assert result.exit_code == 1
    assert "Error: no image could be indexed (see the reasons above)" in result.stderr
    assert f"skipped {bad / 'a.jpg'}: not a readable image" in result.stderr


def test_query_image_from_the_command_line(runner: CliRunner, built: Path, photo_tree: Path, tmp_path: Path) -> None:
    outside = make_image(tmp_path / "query.png", "red", "circle", seed=1)
    result = invoke(runner, "search", str(built), str(outside), "--json")
    assert result.exit_code == 0
    hits = json.loads(result.stdout)
    # The query picture has the same content as apple.png, so that file is not its own hit.
    assert str(photo_tree / "apple.png") not in [h["path"] for h in hits]
    assert {h["kind"] for h in hits} == {"image"}


def test_query_image_by_url_from_a_local_server(runner: CliRunner, built: Path, photo_tree: Path) -> None:
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(photo_tree))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/car.jpg"
        by_url = invoke(runner, "search", str(built), url, "--json")
        by_path = invoke(runner, "search", str(built), str(photo_tree / "car.jpg"), "--json")
        missing = invoke(runner, "search", str(built), url.replace("car.jpg", "nope.jpg"))
    finally:
        server.shutdown()
        server.server_close()
    assert by_url.exit_code == 0, by_url.output
    # The first query loads the model with torch, the second runs its exports: equal to rounding.
    assert_same_ranking(
        [(h["id"], h["score"]) for h in json.loads(by_url.stdout)],
        [(h["id"], h["score"]) for h in json.loads(by_path.stdout)],
    )
    assert str(photo_tree / "car.jpg") not in [h["path"] for h in json.loads(by_url.stdout)]
    assert missing.exit_code == 1
    assert "Error: cannot download query image" in missing.stderr


def test_the_installed_command_prints_everything_and_keeps_its_exit_codes(
    tmp_path: Path, tiny_model_dir: Path, make_images
) -> None:
    """`python -m vecsearch` ends the process itself once torch is loaded: output and status must survive."""
    make_images(tmp_path / "pics", 5)
    index = tmp_path / "idx"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "vecsearch",
            "index",
            str(tmp_path / "pics"),
            "--index",
            str(index),
            "--model",
            str(tiny_model_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["added"] == 5
    found = subprocess.run(
        [sys.executable, "-m", "vecsearch", "search", str(index), "red circle", "-k", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3
    bad = subprocess.run(
        [sys.executable, "-m", "vecsearch", "search", str(index), "./no-such.jpg"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and "no-such.jpg" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "vecsearch", "info", str(tmp_path / "nothing")], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 3 and "no index at" in missing.stderr
