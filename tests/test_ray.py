"""The distributed crawl on a local Ray (one cluster for the module): every source format, bad files
inside shards, and the same index as the local crawler builds from the same pictures."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SIDECARS, make_collection, make_image

from vecsearch import Index, RayOptions, VecsearchError, check_index
from vecsearch.cli import main

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]
NAMES = ["apple", "sea", "leaf", "sun", "trips/car", "trips/tent", "trips/night", "more/snow"]
OPTIONS = RayOptions(shard_size=7)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    # "local": always a new Ray, whatever cluster a `ray start` on this machine recorded.
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 << 20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import write_tiny_model

    return f"local-dir:{write_tiny_model(tmp_path_factory.mktemp('tiny-clip'))}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_collection(tmp_path_factory.mktemp("pictures") / "tree", NAMES, 24)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "trips" / "copy-of-apple.png").write_bytes((root / "apple.png").read_bytes())
    return root


def new_index(path: Path, spec: str) -> Index:
    return Index.create(path, spec, device="cpu", batch_size=4, inference="fp32")


def contents(index: Index) -> dict[str, Any]:
    """Everything a user can see of an index: per path its captions and its image vector."""
    seen: dict[str, Any] = {}
    for item_id in index.store.item_ids("image"):
        item = index.item(item_id)
        assert item is not None
        seen[item.path] = (sorted(c.text for c in item.captions), index.store.vector(item_id))
    return seen


def assert_same_index(ray_index: Index, local_index: Index) -> None:
    got, wanted = contents(ray_index), contents(local_index)
    assert sorted(got) == sorted(wanted)
    for path, (captions, vector) in wanted.items():
        assert got[path][0] == captions, path
        assert float(np.dot(got[path][1], vector)) >= 0.9999, path
    assert ray_index.counts() == local_index.counts()
    queries = [
        f"a {c} {s}"
        for c in ("red", "blue", "green", "yellow", "purple")
        for s in ("apple", "sea", "car", "tent", "hill", "thing", "circle", "square", "photo", "night")
    ]
    assert len(queries) == 50
    for query in queries:
        ours = [(h.path, h.kind, h.text if hasattr(h, "text") else h.caption) for h in ray_index.search(query, k=10)]
        theirs = [(h.path, h.kind, h.caption) for h in local_index.search(query, k=10)]
        assert {p for p, _, _ in ours} == {p for p, _, _ in theirs}, query


def test_a_folder_crawled_on_ray_equals_the_local_crawl(tmp_path: Path, tree: Path, model_spec: str) -> None:
    captions = tmp_path / "captions.csv"
    captions.write_text(f"path,caption\n{tree / 'more' / 'm3.jpg'},a caption from a captions file\n")
    with new_index(tmp_path / "local", model_spec) as local:
        local_report = local.add(tree, captions=[captions])
        with new_index(tmp_path / "ray", model_spec) as distributed:
            report = distributed.add(tree, captions=[captions], engine="ray", ray=OPTIONS)
            hit = distributed.search("a caption from a captions file", k=1, kind="caption")[0]
            assert hit.path == str(tree / "more" / "m3.jpg") and hit.source == str(captions.resolve())
            assert_same_index(distributed, local)
    assert (report.added, report.reused, report.unchanged) == (local_report.added, local_report.reused, 0)
    assert sorted((s.path, s.reason) for s in report.skipped) == sorted(
        (s.path, s.reason) for s in local_report.skipped
    )
    assert {Path(s.path).name for s in report.skipped} == {"broken.jpg", "empty.png"}
    assert report.distributed is not None
    inputs = sum(1 for p in tree.rglob("*") if p.suffix in (".png", ".jpg")) - 1  # the empty file is never read
    assert report.distributed["inputs"] == inputs
    assert report.distributed["shards_written"] == -(-inputs // OPTIONS.shard_size)
    # Every picture was embedded on the cluster, none by this process; the copy of apple.png too (the
    # cluster cannot know it is a copy before hashing), and the broken file not at all.
    assert report.embedded_images == report.distributed["embedded_by_cluster"] == inputs - 1
    assert (
        report.captions_added
        == local_report.captions_added
        == sum(len(text.split("\n")) for name, text in SIDECARS.items()) + 1
    )
    assert not (tmp_path / "ray" / "jobs").exists(), "the shards go once they are committed"


def test_the_model_actors_choose_and_check_their_inference_mode_as_the_local_crawl_does(
    tmp_path: Path, tree: Path
) -> None:
    from conftest import write_tiny_model

    # Weights of its own: the actors (whose cache outlives a test) remember no decision for them yet.
    model_spec = f"local-dir:{write_tiny_model(tmp_path / 'model', seed=11)}"
    with Index.create(tmp_path / "ray", model_spec, device="cpu", batch_size=8) as index:  # inference auto
        report = index.add(tree, engine="ray", ray=OPTIONS)
        with Index.create(tmp_path / "local", model_spec, device="cpu", batch_size=8) as local:
            local_report = local.add(tree)
            ours, theirs = contents(index), contents(local)
    assert report.inference is not None and local_report.inference is not None
    assert report.inference["requested"] == "auto"
    if report.inference["remembered"]:  # a second actor took the decision the first one checked and recorded
        assert report.inference["mode"] in ("fp32", "onnx-int8", "bf16") and not report.inference["checks"]
        return
    assert report.inference["checks"]
    # The same check as the local crawl's, on the actor's first pictures; which mode wins is a matter of
    # timing (a tiny model takes under a millisecond in either, and a mode must also be faster than fp32),
    # so how many modes each tried may differ: only the rule is compared, the same order of trial and a
    # stop at the first mode that passes.
    ray_modes = [c["mode"] for c in report.inference["checks"]]
    local_modes = [c["mode"] for c in local_report.inference["checks"]]
    shorter, longer = sorted((ray_modes, local_modes), key=len)
    assert longer[0] == "fp32" and longer[: len(shorter)] == shorter
    for checks in (report.inference["checks"], local_report.inference["checks"]):
        assert not any(c["passed"] for c in checks[1:-1])
    settled = [c for c in report.inference["checks"] if c["mode"] == report.inference["mode"]]
    assert settled and settled[0]["passed"] and settled[0]["min_cosine"] >= 0.999
    for path, (_, vector) in theirs.items():
        assert float(np.dot(ours[path][1], vector)) >= 0.999


def test_a_second_run_embeds_only_what_changed(tmp_path: Path, tree: Path, model_spec: str) -> None:
    import shutil

    work = shutil.copytree(tree, tmp_path / "tree")
    with new_index(tmp_path / "ray", model_spec) as index:
        index.add(work, engine="ray", ray=OPTIONS)
        again = index.add(work, engine="ray", ray=OPTIONS)
        assert again.unchanged == len(index.store.item_ids("image")) and not again.changed
        assert again.distributed is not None and again.distributed["inputs"] == 1  # the broken file, tried again
        (work / "more" / "m0.jpg").rename(work / "moved.jpg")
        (work / "sun.png").unlink()
        make_image(work / "new" / "one.png", "white", seed=99)
        make_image(work / "leaf.png", "black", seed=98)  # changed in place
        report = index.add(work, engine="ray", ray=OPTIONS)
        with new_index(tmp_path / "local", model_spec) as local:
            local.add(work)
            assert_same_index(index, local)
    assert (report.added, report.updated, report.renamed, report.removed) == (1, 1, 1, 1)
    assert report.distributed is not None
    assert report.distributed["embedded_by_cluster"] == 2  # the new and the changed picture; the rename reuses


def write_tar(path: Path, pictures: dict[str, bytes], captions: dict[str, str], as_json: bool = False) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in pictures.items():
            members = {name: data}
            key = name.rsplit(".", 1)[0]
            if key in captions:
                text = json.dumps({"caption": captions[key], "url": "http://x"}) if as_json else captions[key]
                members[key + (".json" if as_json else ".txt")] = text.encode()
            for member, payload in members.items():
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(payload), 1_700_000_000
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two WebDataset shards in img2dataset's layout, one caption as .txt and one as .json, with a bad member."""
    folder = tmp_path_factory.mktemp("wds")
    colours = ["red", "blue", "green", "yellow", "purple", "orange"]
    pictures = {}
    for i, colour in enumerate(colours):
        buffer = io.BytesIO()
        make_image(folder / "tmp.png", colour, seed=i).replace(folder / "tmp.png")
        pictures[f"{i:09d}.jpg"] = _as_jpeg(folder / "tmp.png", buffer)
    pictures["000000099.jpg"] = b"\xff\xd8 broken"
    captions = {f"{i:09d}": f"a {c} shape" for i, c in enumerate(colours)}
    first = dict(list(pictures.items())[:3])
    second = dict(list(pictures.items())[3:])
    return [write_tar(folder / "00000.tar", first, captions), write_tar(folder / "00001.tar", second, captions, True)]


def _member(shard: Path, name: str) -> bytes:
    with tarfile.open(shard) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def _as_jpeg(path: Path, buffer: io.BytesIO) -> bytes:
    from PIL import Image

    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_webdataset_shards_index_with_captions_and_bad_members(
    tmp_path: Path, shards: list[Path], model_spec: str
) -> None:
    with new_index(tmp_path / "wds", model_spec) as index:
        report = index.add([str(s) for s in shards], engine="ray", ray=OPTIONS)
        assert report.added == 6 and report.captions_added == 6
        assert [(Path(s.path).name, s.reason) for s in report.skipped] == [("000000099.jpg", "not a readable image")]
        top = index.search("a blue shape", k=1, kind="caption")[0]
        assert top.path == f"{shards[0]}/000000001.jpg" and top.caption == "a blue shape"
        assert index.item(top.image).captions[0].text == "a blue shape"
        # A local re-crawl of every root keeps what it cannot walk, and says so.
        kept = index.add()
        assert kept.removed == 0 and len(index.store.item_ids("image")) == 6
        assert any("update it with `--engine ray`" in s.reason for s in kept.skipped)
        # A distributed re-crawl of every root reads nothing it holds (the broken member is tried again).
        again = index.add(engine="ray", ray=OPTIONS)
        assert again.unchanged == 6 and not again.changed and again.distributed["inputs"] == 1
        # The server shows the member's picture, read from the shard.
        from fastapi.testclient import TestClient

        from vecsearch.serve import create_app

        client = TestClient(create_app(index), base_url="http://127.0.0.1")
        found = client.post("/api/v1/search", json={"terms": ["a blue shape"], "k": 3}).json()
        thumbnail = client.get(found["hits"][0]["thumbnail"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert index.picture_data(top.image) == _member(shards[0], "000000001.jpg")
    report = check_index(tmp_path / "wds")
    assert report.ok and not report.notes, report.notes


def test_listing_files_in_parquet_csv_and_jsonl(tmp_path: Path, tree: Path, model_spec: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["apple.png", "sea.png", "trips/car.png", "missing.png"]
    captions = [SIDECARS.get(n[:-4], "").split("\n")[0] for n in names]
    pq.write_table(
        pa.table({"image_path": [str(tree / n) for n in names], "caption": captions}), tmp_path / "list.parquet"
    )
    (tmp_path / "list.csv").write_text(
        "file,text\n" + "".join(f"{tree / n},{c}\n" for n, c in zip(names, captions, strict=True))
    )
    (tmp_path / "list.jsonl").write_text(
        "".join(json.dumps({"path": str(tree / n), "caption": c}) + "\n" for n, c in zip(names, captions, strict=True))
    )
    for listing in ("list.parquet", "list.csv", "list.jsonl"):
        with new_index(tmp_path / listing.replace(".", "-"), model_spec) as index:
            report = index.add(tmp_path / listing, engine="ray", ray=OPTIONS)
            assert report.added == 3, listing
            assert [(s.path, s.reason) for s in report.skipped] == [(str(tree / "missing.png"), "file not found")]
            hit = index.search("a purple car on the road", k=1, kind="caption")[0]
            assert hit.path == str(tree / "trips" / "car.png")


def test_file_uris_go_through_the_filesystem_layer(
    tmp_path: Path, tree: Path, shards: list[Path], model_spec: str
) -> None:
    with new_index(tmp_path / "local", model_spec) as local:
        local.add(tree / "trips")
        with new_index(tmp_path / "uri", model_spec) as index:
            report = index.add([f"file://{tree / 'trips'}", f"file://{shards[1]}"], engine="ray", ray=OPTIONS)
            assert report.added == 4 + 3
            remote = {
                Path(p).name: v for p, (_, v) in contents(index).items() if p.startswith("file://") and "/trips/" in p
            }
            for path, (_, vector) in contents(local).items():
                assert float(np.dot(remote[Path(path).name], vector)) >= 0.9999
            assert (
                index.search("a purple car on the road", k=1, kind="caption")[0].path == f"file://{tree}/trips/car.png"
            )


def test_the_cli_runs_on_ray_and_reports_json(tmp_path: Path, tree: Path, model_spec: str) -> None:
    args = ["index", str(tree / "trips"), "--index", str(tmp_path / "i"), "--model", model_spec, "--inference", "fp32"]
    result = CliRunner().invoke(main, [*args, "--engine", "ray", "--shard-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 4 and report["distributed"]["shards_written"] == 2
    bad = CliRunner().invoke(main, [*args, "--address", "auto"])
    assert bad.exit_code == 2 and "--engine ray" in bad.output
    uri = CliRunner().invoke(main, ["index", "file:///nowhere", "--index", str(tmp_path / "j")])
    assert uri.exit_code == 2 and "URIs need --engine ray" in uri.output


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from vecsearch.scale.ray_pipeline import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(VecsearchError, match=r"pip install 'vecsearch\[ray\]'"):
        import_ray()


def test_sources_that_are_none_of_the_known_kinds_are_refused(tmp_path: Path) -> None:
    from vecsearch import parse_source

    (tmp_path / "notes.docx").write_bytes(b"x")
    with pytest.raises(VecsearchError, match="not a folder, picture, listing"):
        parse_source(str(tmp_path / "notes.docx"))
    with pytest.raises(VecsearchError, match="path not found"):
        parse_source(str(tmp_path / "nothing"))


def test_a_large_index_built_by_shards_in_ray_tasks_equals_the_threaded_build(tmp_path: Path) -> None:
    from vecsearch.scale.faiss_shards import ray_shard_runner
    from vecsearch.shard_build import build_sharded, thread_runner

    rng = np.random.default_rng(0)
    data = rng.standard_normal((9000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)

    class Source:
        count = len(data)

        def sample(self, positions: np.ndarray) -> np.ndarray:
            return data[positions]

        def shard(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            return np.arange(start, stop) * 2 + 1, data[start:stop]

    built = {}
    for name, runner in [("ray", ray_shard_runner(OPTIONS)), ("threads", thread_runner(2))]:
        vectors, report = build_sharded(
            tmp_path / name / "work", tmp_path / name / "index.faiss", "IVF64,SQ8", 32, Source(),
            np.arange(0, 9000, 2), on_disk=True, rerank=False, runner=runner, shard_size=3000,
        )  # fmt: skip
        assert report.shards == 3 and vectors.on_disk and vectors.ntotal == 9000
        vectors.nprobe = 8
        built[name] = vectors.search(data[:50], 10)
    assert ray.is_initialized()  # the runner used the Ray it found and left it running
    np.testing.assert_array_equal(built["ray"][1], built["threads"][1])
    np.testing.assert_allclose(built["ray"][0], built["threads"][0], atol=1e-6)
