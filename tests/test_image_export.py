"""Torch-free pictures: the image transform reproduced with PIL and NumPy equals open_clip's on real
pictures of many shapes and modes; the exported image tower gives torch's vectors and rankings; cold
picture searches, `describe`, `classify`, crawls and the server import no torch; a damaged or foreign
export falls back to torch with a warning; the inference-mode decision is remembered and checked again
when the CPU or a runtime changes; a model named on the command line is checked without loading it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import COLOURS, assert_same_ranking, make_image, write_tiny_model
from PIL import Image

from vecsearch import Index, load_encoder
from vecsearch.encoders import image_export, mode_memory
from vecsearch.encoders.image_export import export_image_tower
from vecsearch.encoders.image_onnx import cache_folder, meta_path, read_info
from vecsearch.encoders.image_preprocess import PreprocessConfig
from vecsearch.images import load_image

HEAVY = ("torch", "torchvision", "open_clip", "transformers")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "openclipart"
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


# --- pictures of many shapes and modes, made from real clip art --------------------------------


def real_pictures(folder: Path) -> dict[str, Path]:
    """Real openclipart pictures (palette PNGs) and files derived from them: RGB, tall, wide, tiny,
    16-bit grey, grey with alpha, RGBA, CMYK JPEG, and JPEGs with EXIF orientations 3, 6 and 8."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(EXAMPLES.rglob("*.png"))[::37][:6]
    assert len(sources) == 6
    made: dict[str, Path] = {f"palette-{i}": p for i, p in enumerate(sources[:3])}
    art = Image.open(sources[3]).convert("RGB")
    width, height = art.size

    def save(name: str, image: Image.Image, suffix: str = ".png", **options: Any) -> None:
        path = folder / f"{name}{suffix}"
        image.save(path, **options)
        made[name] = path

    save("rgb", art, ".jpg", quality=90)
    save("tall", art.crop((width // 3, 0, width // 3 + max(8, width // 9), height)))
    save("wide", art.crop((0, height // 3, width, height // 3 + max(8, height // 11))))
    save("tiny", art.resize((5, 3)))
    save("one-pixel", art.resize((1, 1)))
    grey16 = (np.asarray(art.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("grey-16-bit", Image.fromarray(grey16))
    save("grey-alpha", Image.open(sources[4]).convert("LA"))
    save("rgba", Image.open(sources[5]).convert("RGBA"))
    save("cmyk", art.convert("CMYK"), ".jpg")
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"exif-{orientation}", art.crop((0, 0, width, height * 2 // 3)), ".jpg", exif=exif)
    return made


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_pictures(tmp_path_factory.mktemp("pictures"))


TRANSFORMS = [
    {"size": 224, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    {"size": 256, "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear", "resize_mode": "shortest"},
    {"size": (224, 160), "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    {"size": 224, "mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_mode": "longest", "fill_color": 128},
    {"size": (160, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "resize_mode": "longest", "interpolation": "bilinear"},
    {"size": (200, 240), "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "squash"},
]


@pytest.mark.parametrize("cfg", TRANSFORMS, ids=lambda c: f"{c['resize_mode']}-{c['size']}-{c.get('interpolation')}")
def test_transform_equals_open_clips_on_real_pictures(cfg: dict[str, Any], pictures: dict[str, Path]) -> None:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = PreprocessConfig.from_dict(cfg)
    for name, path in pictures.items():
        # As a crawl and a query read them (oriented, RGB, transparency on white), and as PIL opens them
        # (any mode, for users who hand the Python API their own pictures).
        for picture in (load_image(path), Image.open(path)):
            expected = theirs(picture).numpy()
            got = ours(picture)
            assert got.shape == expected.shape and got.dtype == np.float32, name
            assert np.array_equal(got, expected), (name, picture.mode, float(np.max(np.abs(got - expected))))


@pytest.fixture(scope="module")
def starter() -> Any:
    return load_encoder("starter", device="cpu", inference="fp32")


def test_starter_vectors_through_the_same_tower_and_through_the_export(
    starter: Any, pictures: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    from vecsearch.encoders.text_export import export_text_tower

    assert export_image_tower(starter, tmp_path) is not None
    assert export_text_tower(starter, tmp_path) is not None
    ours = PreprocessConfig.from_dict(read_info(starter.fingerprint, tmp_path).preprocess)  # type: ignore[union-attr]
    loaded = [load_image(p) for p in pictures.values()]
    with torch.inference_mode():
        exact = starter.model.encode_image(torch.stack([starter.preprocess(p) for p in loaded]), normalize=True)
        same_tower = starter.model.encode_image(torch.from_numpy(np.stack([ours(p) for p in loaded])), normalize=True)
    exact_np = exact.numpy()
    assert np.min(np.sum(same_tower.numpy() * exact_np, axis=1)) >= 0.9999
    from vecsearch.encoders.exported import load_exported

    exported = load_exported(starter.fingerprint, starter.dim, lambda: starter, cache_dir=tmp_path)
    assert exported is not None
    assert np.min(np.sum(exported.embed_images(loaded) * exact_np, axis=1)) >= 0.9999
    assert exported.fallback_encoder is None  # the export itself answered
    # The text tower was exported too (the query encoder needs both), and labels embed the same way.
    assert (
        np.min(
            np.sum(
                exported.embed_texts(["a red apple", "a tree"]) * starter.embed_texts(["a red apple", "a tree"]), axis=1
            )
        )
        >= 0.99999
    )


# --- an index crawled with the tiny model ----------------------------------------------------------


def build_tree(root: Path, count: int = 12, seed: int = 0) -> Path:
    colours = list(COLOURS)
    for i in range(count):
        colour = colours[(i + seed) % len(colours)]
        make_image(root / f"{colour}-{seed}-{i}.png", colour, "circle" if i % 2 else "square", seed=seed * 100 + i)
    (root / f"{colours[seed % len(colours)]}-{seed}-0.txt").write_text(f"a {colours[seed % len(colours)]} square\n")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-export-cache")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model"), seed=3)


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, cache: Path) -> Iterator[Path]:
    """An index crawled by name (`local-dir:`) with the full model, which exports both towers."""
    root = build_tree(tmp_path_factory.mktemp("tree") / "photos")
    folder = tmp_path_factory.mktemp("index") / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECSEARCH_CACHE_DIR", str(cache))
        with Index.create(folder, model=f"local-dir:{model_dir}", inference="fp32") as index:
            report = index.add(root)
    assert report.added == 12 and report.text_export and "image tower exported" in report.text_export
    assert read_info(index.fingerprint, cache) is not None
    yield folder


@pytest.fixture(scope="module")
def torch_model(model_dir: Path) -> Any:
    return load_encoder(f"local-dir:{model_dir}", device="cpu", inference="fp32")


def torch_hits(folder: Path, encoder: Any, query: Any, k: int = 6, kind: str = "any") -> list[tuple[int, float]]:
    with Index.open(folder, encoder=encoder) as index:
        return [(h.id, h.score) for h in index.search(query, k=k, kind=kind)]


def a_picture(folder: Path) -> str:
    with Index.open(folder) as index:
        return str(sorted(index.roots()[0].glob("*.png"))[1])


def run(args: list[str], cache: Path, **env: str) -> tuple[Any, list[str]]:
    """A command in a new process: its output (JSON when it printed JSON) and the heavy modules it imported."""
    code = (
        "import sys, json\n"
        "from vecsearch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], prog_name='vecsearch')\n"
        "finally:\n"
        f"    print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n"
    )
    environment = {**os.environ, "VECSEARCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment, timeout=300
    )
    assert done.returncode == 0, done.stderr
    heavy = json.loads(done.stderr.strip().splitlines()[-1])
    try:
        return json.loads(done.stdout), heavy
    except ValueError:
        return done.stdout, heavy


def test_picture_search_describe_and_classify_use_the_export(
    crawled: Path, torch_model: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(cache))
    picture = a_picture(crawled)
    with Index.open(crawled) as index:
        hits = [(h.id, h.score) for h in index.search([picture, "+0.5:a red square"], k=6, kind="any")]
        described = [(h.id, h.score) for h in index.describe(picture, k=3)]
        labels = index.classify(picture, ["red", "blue", "green"])
        assert index.model.loaded is None and getattr(index.model.query_encoder(), "torch_free", False)
    assert_same_ranking(hits, torch_hits(crawled, torch_model, [picture, "+0.5:a red square"]))
    with Index.open(crawled, encoder=torch_model) as index:
        assert_same_ranking(described, [(h.id, h.score) for h in index.describe(picture, k=3)])
        expected = index.classify(picture, ["red", "blue", "green"])
    np.testing.assert_allclose([s.probability for s in labels], [s.probability for s in expected], atol=1e-4)


@pytest.mark.parametrize("command", ["search", "describe", "classify", "classify-by-model"])
def test_cold_picture_commands_import_no_torch(
    command: str, crawled: Path, torch_model: Any, cache: Path, model_dir: Path
) -> None:
    picture = a_picture(crawled)
    if command == "search":
        out, heavy = run(["search", str(crawled), picture, "--json", "--kind", "any", "-k", "6"], cache)
        assert_same_ranking([(h["id"], h["score"]) for h in out], torch_hits(crawled, torch_model, picture))
    elif command == "describe":
        out, heavy = run(["describe", str(crawled), picture, "--json", "-k", "3"], cache)
        assert len(out) == 1 and out[0]["kind"] == "caption"
    else:
        where = ["--index", str(crawled)] if command == "classify" else ["--model", f"local-dir:{model_dir}"]
        out, heavy = run(["classify", picture, "--labels", "red,blue,green", "--json", *where], cache)
        with Index.open(crawled, encoder=torch_model) as index:
            expected = {s.label: s.probability for s in index.classify(picture, ["red", "blue", "green"])}
        assert {s["label"] for s in out} == set(expected)
        for score in out:
            assert abs(score["probability"] - expected[score["label"]]) <= 1e-4
    assert heavy == []


def test_cold_crawl_of_new_pictures_imports_no_torch_and_matches_torch(
    crawled: Path, torch_model: Any, cache: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "index"
    import shutil

    shutil.copytree(crawled, copy)
    new = build_tree(tmp_path / "new", count=10, seed=5)
    out, heavy = run(["index", str(new), "--index", str(copy), "--json", "--inference", "fp32"], cache)
    assert heavy == [] and out["added"] == 10
    assert out["inference"]["mode"] == "fp32"
    paths = sorted(new.glob("*.png"))
    with Index.open(copy) as index:
        root = next(r for r in index.store.roots() if Path(r.path).name == "new")
        rows = index.store.files_under(root.id)
        stored = np.stack([index.store.vector(index.store.image_item_of(rows[p.name].id)) for p in paths])  # type: ignore[arg-type, misc]
    exact = torch_model.embed_images([load_image(p) for p in paths])
    assert np.min(np.sum(stored * exact, axis=1)) >= 0.99999  # fp32 from the export: torch's vectors


def test_server_answers_a_picture_query_without_torch(crawled: Path, torch_model: Any, cache: Path) -> None:
    picture = a_picture(crawled)
    code = (
        "import sys, json\n"
        "from fastapi.testclient import TestClient\n"
        "from vecsearch import Index\n"
        "from vecsearch.serve import create_app\n"
        "index = Index.open(sys.argv[1])\n"
        "app = create_app(index)\n"
        "app.state.service.warm()\n"
        "client = TestClient(app, base_url='http://127.0.0.1')\n"
        "with open(sys.argv[2], 'rb') as f:\n"
        "    body = client.post('/api/v1/search/image', files={'file': ('q.png', f, 'image/png')}, params={'k': 6, 'kind': 'any'}).json()\n"
        f"print(json.dumps({{'hits': [[h['id'], h['score']] for h in body['hits']], 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    environment = {**os.environ, "VECSEARCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(crawled), picture],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert_same_ranking([tuple(h) for h in result["hits"]], torch_hits(crawled, torch_model, picture))


# --- damaged, foreign and inexact exports ------------------------------------------------------------


def damage(cache: Path, fingerprint: str, how: str) -> None:
    folder = cache_folder(cache)
    meta = json.loads(meta_path(folder, fingerprint).read_text())
    if how == "other fingerprint":
        meta["fingerprint"] = "0" * 32
        meta_path(folder, fingerprint).write_text(json.dumps(meta))
    elif how == "truncated meta":
        meta_path(folder, fingerprint).write_text(json.dumps(meta)[:60])
    elif how == "missing weights":
        (folder / meta["files"]["weights"]["name"]).unlink()
    else:  # one byte changed in the middle of a file: same size, different content
        path = folder / meta["files"][how]["name"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["weights", "graph", "other fingerprint", "truncated meta", "missing weights"])
def test_a_damaged_or_foreign_export_falls_back_to_torch_with_a_warning(
    how: str,
    crawled: Path,
    torch_model: Any,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    own = tmp_path / "cache"
    shutil.copytree(cache, own)  # the crawl's exports, and its record of the model's files
    assert read_info(torch_model.fingerprint, own) is not None
    damage(own, torch_model.fingerprint, how)
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(own))
    picture = a_picture(crawled)
    with caplog.at_level(logging.WARNING, logger="vecsearch"), Index.open(crawled) as index:
        hits = [(h.id, h.score) for h in index.search([picture], k=6, kind="any")]
    assert_same_ranking(hits, torch_hits(crawled, torch_model, picture))  # correct vectors, from torch
    assert any("loading the full model" in r.getMessage() for r in caplog.records), caplog.text
    # The next crawl that loads the model puts a good export back.
    assert export_image_tower(torch_model, own) is not None
    assert read_info(torch_model.fingerprint, own) is not None


def test_a_damaged_int8_graph_falls_back_during_a_crawl(
    crawled: Path,
    torch_model: Any,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    own = tmp_path / "cache"
    shutil.copytree(cache, own)  # the crawl's exports, and its record of the model's files
    damage(own, torch_model.fingerprint, "int8")
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(own))
    copy = tmp_path / "index"
    shutil.copytree(crawled, copy)
    new = build_tree(tmp_path / "new", count=10, seed=7)
    with caplog.at_level(logging.WARNING, logger="vecsearch"), Index.open(copy, inference="onnx-int8") as index:
        report = index.add(new)
        assert report.added == 10
        fallback = index.model.loaded.fallback_encoder  # type: ignore[union-attr]
        assert fallback is not None and not getattr(fallback, "torch_free", False)
    assert any("loading the full model" in r.getMessage() for r in caplog.records)


def test_an_inexact_export_writes_nothing(torch_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_export, "_made", {})  # no copy of an earlier export: make a new one
    monkeypatch.setattr(image_export, "COSINE_BAR", 1.001)  # no vectors can pass
    assert export_image_tower(torch_model, tmp_path) is None
    assert not list(cache_folder(tmp_path).glob("image-*"))
    monkeypatch.undo()
    monkeypatch.setattr(image_export, "_made", {})
    from vecsearch.encoders import image_preprocess

    # A transform one grey level off in one channel: the pixel check refuses it.
    monkeypatch.setattr(
        image_preprocess, "to_pixels", lambda image, mean, std: np.zeros((3, *image.size[::-1]), np.float32)
    )
    assert export_image_tower(torch_model, tmp_path) is None
    assert not list(cache_folder(tmp_path).glob("image-*"))


def test_other_encoders_get_no_image_export(tmp_path: Path) -> None:
    class Custom:  # an Encoder that is not an open_clip model
        fingerprint = "f" * 32
        dim = 4

    assert export_image_tower(Custom(), tmp_path) is None
    assert not list(cache_folder(tmp_path).glob("image-*"))


# --- the inference-mode decision, remembered ----------------------------------------------------------


def test_the_mode_decision_is_remembered_and_checked_again_when_cpu_or_runtime_change(
    crawled: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(cache, tmp_path / "cache")  # the exports, without any remembered decision
    (tmp_path / "cache" / mode_memory.FILE_NAME).unlink(missing_ok=True)
    copy = tmp_path / "index"
    shutil.copytree(crawled, copy)

    def crawl(seed: int) -> dict[str, Any]:
        with Index.open(copy) as index:
            report = index.add(build_tree(tmp_path / f"new-{seed}", count=20, seed=seed))
            assert report.added == 20 and getattr(index.model.loaded, "torch_free", False)
        assert report.inference is not None and report.inference["engine"] == "onnxruntime"
        return report.inference

    first = crawl(1)
    assert not first["remembered"] and [c["mode"] for c in first["checks"]][:2] == ["fp32", "onnx-int8"]
    second = crawl(2)
    assert second["remembered"] and second["checks"] == [] and second["mode"] == first["mode"]
    # Another CPU: checked again.
    monkeypatch.setattr(mode_memory, "cpu_identity", lambda: "Another CPU [x86_64, flags 000000]")
    third = crawl(3)
    assert not third["remembered"] and third["checks"]
    assert crawl(4)["remembered"]
    # Another ONNX Runtime: checked again.
    real_versions = mode_memory.runtime_versions
    monkeypatch.setattr(mode_memory, "runtime_versions", lambda *m: {**real_versions(*m), "onnxruntime": "0.0.1"})
    fifth = crawl(5)
    assert not fifth["remembered"] and fifth["checks"]
    # A damaged memory file is ignored (checked again), never an error.
    mode_memory.memory_path(tmp_path / "cache").write_text("{not json")
    assert not crawl(6)["remembered"]


# --- a model named on the command line, checked without loading it ------------------------------------


def test_the_same_index_command_again_loads_no_model(
    crawled: Path, model_dir: Path, cache: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(crawled, copy)
    with Index.open(copy) as index:
        tree = index.roots()[0]
    command = ["index", str(tree), "--index", str(copy), "--model", f"local-dir:{model_dir}", "--json"]
    out, heavy = run(command, cache)
    assert out["unchanged"] == 12 and heavy == []
    # The checkpoint touched (same bytes, new mtime): its hash says it is the same weights.
    weights = model_dir / "open_clip_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    out, heavy = run(command, cache)
    assert out["unchanged"] == 12 and heavy == []


def test_a_changed_checkpoint_is_caught_before_the_crawl(crawled: Path, cache: Path, tmp_path: Path) -> None:
    import shutil

    model = write_tiny_model(tmp_path / "model", seed=3)  # the same weights as the index's, at another path
    copy = tmp_path / "index"
    shutil.copytree(crawled, copy)
    with Index.open(copy) as index:
        tree = index.roots()[0]
    command = [
        sys.executable,
        "-m",
        "vecsearch",
        "index",
        str(tree),
        "--index",
        str(copy),
        "--model",
        f"local-dir:{model}",
    ]
    environment = {**os.environ, "VECSEARCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300).returncode == 0
    write_tiny_model(model, seed=4)  # other weights, same file names and sizes
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode != 0 and "fingerprint" in done.stderr, done.stderr
    with Index.open(copy) as index:
        assert index.counts()["images"] == 12  # nothing indexed was lost


# --- the starter model ----------------------------------------------------------------------------------


def test_the_starter_demo_runs_without_torch_after_its_first_crawl(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    tree = tmp_path / "art"
    for path in sorted(EXAMPLES.rglob("*.png"))[:12]:
        shutil_copy(path, tree / path.name)
    index = tmp_path / "index"
    environment = {**os.environ, "VECSEARCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(
        [sys.executable, "-m", "vecsearch", "index", str(tree), "--index", str(index), "--model", "starter"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    picture = str(sorted(tree.iterdir())[0])
    for command in (["search", str(index), picture, "--json"], ["search", str(index), "a tree", "--json"]):
        out, heavy = run(command, cache)
        assert heavy == [] and out
    out, heavy = run(["classify", picture, "--labels", "animal,building,plant", "--json", "--model", "starter"], cache)
    assert heavy == [] and len(out) == 3


def shutil_copy(source: Path, target: Path) -> None:
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def test_models_prepare_exports_without_a_crawl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from vecsearch.cli import main

    model = write_tiny_model(tmp_path / "model", seed=9)
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["models", "--prepare", f"local-dir:{model}", "--json"])
    assert result.exit_code == 0, result.output
    done = json.loads(result.output)
    assert done["text_tower"] and done["image_tower"] and len(done["exported_now"]) == 2
    again = CliRunner().invoke(main, ["models", "--prepare", f"local-dir:{model}"])
    assert again.exit_code == 0 and "text tower and image tower exported" in again.output
    assert CliRunner().invoke(main, ["models", "--pretrained", "x"]).exit_code == 2
    # A picture classified by that model now runs from the exports, in a process without torch.
    picture = make_image(tmp_path / "red.png", "red", "circle")
    out, heavy = run(
        ["classify", str(picture), "--labels", "red,blue", "--model", f"local-dir:{model}", "--json"],
        tmp_path / "cache",
    )
    assert heavy == [] and {s["label"] for s in out} == {"red", "blue"}


def test_a_distributed_crawls_resize_in_read_tasks_changes_no_pixel(pictures: dict[str, Path]) -> None:
    from vecsearch.scale.geometry import preprocess_geometry, shrink

    ours = PreprocessConfig.from_dict(TRANSFORMS[0])
    geometry = preprocess_geometry(ours)
    assert geometry == (224, int(Image.Resampling.BICUBIC), 224, 224)
    for path in pictures.values():
        picture = load_image(path)
        assert np.array_equal(ours(shrink(picture, geometry)), ours(picture))
    assert preprocess_geometry(PreprocessConfig.from_dict(TRANSFORMS[3])) is None  # longest side: not this shape


def test_a_process_copies_its_export_into_another_cache(torch_model: Any, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert export_image_tower(torch_model, first) is not None
    assert export_image_tower(torch_model, second) is not None  # copied, then loadable there
    info = read_info(torch_model.fingerprint, second)
    assert info is not None and info == read_info(torch_model.fingerprint, first)
    from vecsearch.encoders.image_onnx import OnnxImageTower

    pixels = np.stack(
        [PreprocessConfig.from_dict(info.preprocess)(load_image(p)) for p in sorted(EXAMPLES.rglob("*.png"))[:3]]
    )
    np.testing.assert_allclose(
        OnnxImageTower(cache_folder(second), info).run(pixels), OnnxImageTower(cache_folder(first), info).run(pixels)
    )
