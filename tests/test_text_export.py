"""Torch-free text queries: the text tower exported at crawl time (ONNX + a `tokenizers` tokenizer) gives
the same tokens, vectors and rankings as the full model, a cold search process never imports torch, and
a missing, damaged or foreign export falls back to the full model."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_same_ranking, make_image

from vecsearch import Index, Query, load_encoder
from vecsearch.encoders import text_export, text_onnx
from vecsearch.encoders.text_export import TOKEN_CORPUS, export_text_tower
from vecsearch.encoders.text_onnx import cache_folder, load_text_encoder, meta_path

HEAVY = ("torch", "torchvision", "open_clip", "transformers")
PROMPTS = ["a red apple", "a blue car", "sunny beach with sand", "café 🍎 &amp;", "", "green " * 50]


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    """Seeded random texts mixing scripts, emoji, entities, special-token spellings and odd spaces."""
    rng = random.Random(seed)
    pieces = [
        "apple",
        "Café",
        "naïve",
        "ÉCOLE",
        "日本",
        "Привет",
        "🍎",
        "👩‍👧",
        "&amp;",
        "&#39;",
        "â€™",
        " ",
        "  ",
        "\t",
        "\u00a0",
        "\u200b",
        "'s",
        "'LL",
        "x²",
        "ﬁ",
        "Ａ",
        ";",
        "<end_of_text>",
        "<start_of_text>",
        "[SEP]",
        "[PAD]",
        "42",
        "3.5",
        "-",
        "!?",
        "İ",
        "ſ",
    ]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def padded(ids: np.ndarray, length: int, pad: int) -> np.ndarray:
    return np.pad(ids, ((0, 0), (0, length - ids.shape[1])), constant_values=pad)


def text_files(cache: Path) -> list[Path]:
    folder = cache_folder(cache)
    return sorted(folder.iterdir()) if folder.is_dir() else []


def build_tree(root: Path) -> Path:
    make_image(root / "apple.png", "red", "circle", seed=1)
    (root / "apple.txt").write_text("a red apple\n")
    make_image(root / "car.jpg", "blue", "square", seed=2)
    (root / "car.txt").write_text("a blue car\n")
    make_image(root / "beach.png", "yellow", "square", seed=3)
    (root / "beach.txt").write_text("a sunny beach with sand\n")
    for i, colour in enumerate(["green", "purple", "orange", "black", "white"]):
        make_image(root / "more" / f"{colour}.png", colour, "circle" if i % 2 else "square", seed=10 + i)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Any, cache: Path) -> Iterator[Path]:
    """An index crawled with the tiny open_clip model; the crawl exports its text tower into `cache`."""
    root = build_tree(tmp_path_factory.mktemp("tree") / "photos")
    folder = tmp_path_factory.mktemp("tiny") / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECSEARCH_CACHE_DIR", str(cache))
        with Index.create(folder, encoder=tiny_encoder) as index:
            report = index.add(root)
    assert report.added == 8
    assert meta_path(cache_folder(cache), tiny_encoder.fingerprint).is_file()
    yield folder


@pytest.fixture(scope="module")
def starter_encoder() -> Any:
    return load_encoder("starter", inference="fp32")


def torch_hits(folder: Path, encoder: Any, query: str | list[str], k: int = 8) -> list[tuple[int, float]]:
    with Index.open(folder, encoder=encoder) as index:
        return [(h.id, h.score) for h in index.search(query, k=k, kind="any")]


# --- tokens ------------------------------------------------------------------------------------


def test_clip_bpe_tokens_equal_open_clip(tiny_encoder: Any, tmp_path: Path) -> None:
    assert export_text_tower(tiny_encoder, tmp_path) is not None
    tower = load_text_encoder(tiny_encoder.fingerprint, tiny_encoder.dim, tmp_path)
    assert tower is not None and tower.info.tokenizer_kind == "clip-bpe"
    texts = [*TOKEN_CORPUS, *fuzz_texts(400)]
    ours = tower.token_ids(texts)
    expected = tiny_encoder.tokenizer(texts).numpy()
    assert np.array_equal(padded(ours, expected.shape[1], 0), expected)
    # Truncation keeps the end token last, as open_clip's does.
    long = tower.token_ids(["word " * 100])[0]
    assert long[-1] == tiny_encoder.tokenizer.eot_token_id and len(long) == tiny_encoder.tokenizer.context_length


def test_causal_clip_tower_runs_without_the_padding(tiny_encoder: Any, tmp_path: Path) -> None:
    """A causal CLIP text tower is exported over as many positions as a batch's longest prompt needs
    (open_clip's encode_text always runs all of them); its vectors equal torch's, batched and alone."""
    assert export_text_tower(tiny_encoder, tmp_path) is not None
    tower = load_text_encoder(tiny_encoder.fingerprint, tiny_encoder.dim, tmp_path)
    assert tower is not None and tower.info.trim_padding
    assert tower.token_ids(["a red apple"]).shape == (1, 5)  # start, three words, end
    prompts = ["a red apple", "a dog", "word " * 100, "", "café 🍎 under a long and winding road"]
    exact = tiny_encoder.embed_texts(prompts)
    assert np.min(np.sum(tower.embed_texts(prompts) * exact, axis=1)) >= 0.99999
    for i, prompt in enumerate(prompts):
        assert float(np.sum(tower.embed_texts([prompt])[0] * exact[i])) >= 0.99999


def test_hf_tokens_equal_the_starter_tokenizer(starter_encoder: Any, tmp_path: Path) -> None:
    assert export_text_tower(starter_encoder, tmp_path) is not None
    tower = load_text_encoder(starter_encoder.fingerprint, starter_encoder.dim, tmp_path)
    assert tower is not None and tower.info.tokenizer_kind == "hf"
    texts = [*TOKEN_CORPUS, *fuzz_texts(400, seed=1)]
    expected = starter_encoder.tokenizer(texts).numpy()
    ours = tower.token_ids(texts)  # padded to the longest text: the tower masks padding
    assert np.array_equal(padded(ours, expected.shape[1], tower.info.pad_id), expected)
    # Vectors of the ONNX tower against torch's encode_text, batched and alone.
    exact = starter_encoder.embed_texts(PROMPTS)
    assert np.min(np.sum(tower.embed_texts(PROMPTS) * exact, axis=1)) >= 0.99999
    assert np.min(np.sum(tower.embed_texts(PROMPTS[:1]) * exact[:1], axis=1)) >= 0.99999


# --- searching through the Index ---------------------------------------------------------------


def test_text_search_uses_the_export_and_matches_torch(
    tiny_index: Path, tiny_encoder: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(cache))
    with Index.open(tiny_index) as index:
        for prompt in [p for p in PROMPTS if p]:
            fast = index.query_vector(Query.parse(prompt))
            assert float(fast @ tiny_encoder.embed_texts([prompt])[0]) >= 0.99999
        for query in ["a red apple", ["a blue car", "-sunny beach"], ["2:car", "id:1"]]:
            assert_same_ranking(
                [(h.id, h.score) for h in index.search(query, k=8, kind="any")],
                torch_hits(tiny_index, tiny_encoder, query),
            )
        assert index.model.loaded is None  # the full model was never loaded
        # An image term needs the image tower: the crawl exported it too, and it gives torch's answer.
        picture = str(index.roots()[0] / "apple.png")
        assert_same_ranking(
            [(h.id, h.score) for h in index.search([picture], k=8, kind="any")],
            torch_hits(tiny_index, tiny_encoder, [picture]),
        )
        assert index.model.loaded is None
        assert getattr(index.model.query_encoder(), "torch_free", False)


def test_starter_index_text_search_matches_torch(
    starter_encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    root = build_tree(tmp_path / "photos")
    with Index.create(tmp_path / "index", encoder=starter_encoder) as index:
        index.add(root)
    with Index.open(tmp_path / "index") as index:
        for query in ["a red apple", "a sunny beach with sand", "blue -red"]:
            assert_same_ranking(
                [(h.id, h.score) for h in index.search(query, k=8, kind="any")],
                torch_hits(tmp_path / "index", starter_encoder, query),
            )
        assert index.model.loaded is None


# --- a cold process ----------------------------------------------------------------------------

LIBRARY_SEARCH = r"""
import json, sys
from vecsearch import Index
with Index.open(sys.argv[1]) as index:
    hits = index.search(sys.argv[2], k=8, kind="any")
print(json.dumps({"hits": [[h.id, h.score] for h in hits], "modules": sorted(sys.modules)}))
"""


def run(args: list[str], cache: Path) -> str:
    env = {**os.environ, "VECSEARCH_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cold_text_search_never_imports_torch(tiny_index: Path, tiny_encoder: Any, cache: Path) -> None:
    cli = json.loads(
        run(["-m", "vecsearch", "search", str(tiny_index), "a red apple", "--json", "--kind", "any", "-k", "8"], cache)
    )
    assert_same_ranking([(h["id"], h["score"]) for h in cli], torch_hits(tiny_index, tiny_encoder, "a red apple"))
    library = json.loads(run(["-c", LIBRARY_SEARCH, str(tiny_index), "a red apple"], cache))
    assert_same_ranking([tuple(h) for h in library["hits"]], torch_hits(tiny_index, tiny_encoder, "a red apple"))
    imported = set(library["modules"])
    assert not [name for name in HEAVY if name in imported]
    assert "onnxruntime" in imported and "tokenizers" in imported


def test_cold_image_search_without_an_image_export_loads_the_full_model(
    tiny_index: Path, tiny_encoder: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_IMAGE_ONNX", "0")
    with Index.open(tiny_index) as index:
        picture = str(index.roots()[0] / "car.jpg")
    cli = json.loads(
        run(["-m", "vecsearch", "search", str(tiny_index), picture, "--json", "--kind", "any", "-k", "8"], cache)
    )
    assert_same_ranking([(h["id"], h["score"]) for h in cli], torch_hits(tiny_index, tiny_encoder, [picture]))


# --- falling back to the full model ------------------------------------------------------------


def damage(cache: Path, fingerprint: str, how: str) -> None:
    folder = cache_folder(cache)
    meta = json.loads(meta_path(folder, fingerprint).read_text())
    if how == "no entry":
        for path in folder.iterdir():
            path.unlink()
    elif how == "other fingerprint":
        meta["fingerprint"] = "0" * 32
        meta_path(folder, fingerprint).write_text(json.dumps(meta))
    elif how == "truncated meta":
        meta_path(folder, fingerprint).write_text(json.dumps(meta)[:50])
    else:  # one byte changed in the middle of a file: same size, different content
        path = folder / meta["files"][how]["name"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["no entry", "other fingerprint", "truncated meta", "weights", "graph", "tokenizer"])
def test_missing_damaged_or_foreign_export_falls_back(
    tiny_index: Path, tiny_encoder: Any, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    own = tmp_path / "cache"
    export_text_tower(tiny_encoder, own)
    assert load_text_encoder(tiny_encoder.fingerprint, tiny_encoder.dim, own) is not None
    damage(own, tiny_encoder.fingerprint, how)
    assert load_text_encoder(tiny_encoder.fingerprint, tiny_encoder.dim, own) is None
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(own))
    with Index.open(tiny_index) as index:
        hits = [(h.id, h.score) for h in index.search("a red apple", k=8, kind="any")]
        assert index.model.loaded is not None  # the full model answered
    assert_same_ranking(hits, torch_hits(tiny_index, tiny_encoder, "a red apple"))
    # The next crawl that loads the model puts a good export back.
    assert export_text_tower(tiny_encoder, own) is not None
    assert load_text_encoder(tiny_encoder.fingerprint, tiny_encoder.dim, own) is not None


def test_inexact_export_writes_nothing(tiny_encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_export, "_made", {})  # no copy of an earlier export: make a new one
    monkeypatch.setattr(text_export, "COSINE_BAR", 1.001)  # no vectors can pass
    assert export_text_tower(tiny_encoder, tmp_path) is None
    assert text_files(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(text_export, "_made", {})
    monkeypatch.setattr(text_onnx, "clean_text", lambda text, kind: text)  # tokens would differ
    assert export_text_tower(tiny_encoder, tmp_path) is None
    assert text_files(tmp_path) == []


def test_other_encoders_get_no_export(tmp_path: Path) -> None:
    class Custom:  # an Encoder that is not an open_clip model
        fingerprint = "f" * 32
        dim = 4

    assert export_text_tower(Custom(), tmp_path) is None
    assert text_files(tmp_path) == []


def test_unchanged_crawl_neither_loads_the_model_nor_exports(
    tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    with Index.open(tiny_index) as index:
        report = index.add()
        assert report.unchanged == 8 and not report.changed
        assert index.model.loaded is None
    assert text_files(tmp_path / "cache") == []


def test_disabled_by_environment(
    tiny_index: Path, tiny_encoder: Any, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("VECSEARCH_TEXT_ONNX", "0")
    with Index.open(tiny_index) as index:
        index.search("a red apple", kind="any")
        assert index.model.loaded is not None
