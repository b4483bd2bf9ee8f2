"""sentence-transformers CLIP models (images and text) through the same Encoder interface and index,
with a tiny random CLIP saved as a local sentence-transformers folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vecsearch import Index, UnsupportedModalityError, load_encoder
from vecsearch.encoders import ModelSpec


@pytest.fixture(scope="module")
def st_clip(tiny_st_clip_dir: Path):
    return load_encoder(str(tiny_st_clip_dir), device="cpu")


def test_local_folder_loads_as_a_clip_model(st_clip, tiny_st_clip_dir: Path) -> None:
    assert st_clip.spec == ModelSpec("sentence-transformers", str(tiny_st_clip_dir.resolve()))
    assert st_clip.modalities == frozenset({"image", "text"})
    assert st_clip.dim == 16
    # A fresh CLIP's temperature is log(1/0.07); the encoder reports exp of it.
    assert st_clip.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


def test_vectors_equal_sentence_transformers_own(st_clip, tiny_st_clip_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    own = SentenceTransformer(str(tiny_st_clip_dir), device="cpu")
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray((rng.random((40 + 7 * i, 50, 3)) * 255).astype("uint8")) for i in range(3)]
    expected = own.encode(pictures, normalize_embeddings=True)
    got = st_clip.embed_images(pictures)
    assert got.dtype == np.float32 and got.shape == (3, 16)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
    texts = ["a cat", "a dog on a beach"]
    assert np.min(np.sum(st_clip.embed_texts(texts) * own.encode(texts, normalize_embeddings=True), axis=1)) >= 0.9999


def test_index_with_a_sentence_transformers_clip(tmp_path: Path, st_clip, make_images) -> None:
    make_images(tmp_path / "pics", 6)
    (tmp_path / "pics" / "img0.txt").write_text("a red square\n")
    with Index.create(tmp_path / "idx", encoder=st_clip) as index:
        report = index.add(tmp_path / "pics")
        assert (report.added, report.captions_added, report.embedded_images) == (6, 1, 6)
        hits = index.search(str(tmp_path / "pics" / "img1.png"), k=10)
        assert len(hits) == 5 and all(h.kind == "image" for h in hits)
        assert str(tmp_path / "pics" / "img1.png") not in [h.path for h in hits]
        assert [h.kind for h in index.describe(tmp_path / "pics" / "img1.png")] == ["caption"]
    reopened = Index.open(tmp_path / "idx")
    assert reopened.spec == st_clip.spec
    assert [h.id for h in reopened.search("a square", k=3)] == [
        h.id for h in Index.open(tmp_path / "idx", encoder=st_clip).search("a square", k=3)
    ]


def test_text_only_sentence_transformer_refuses_images(minilm_encoder) -> None:
    with pytest.raises(UnsupportedModalityError, match="embeds text only"):
        minilm_encoder.embed_images([Image.new("RGB", (8, 8))])
