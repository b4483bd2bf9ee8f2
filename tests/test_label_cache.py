"""The label cache: prompt vectors of zero-shot labels are remembered per model weights, so a later
`classify` with the same labels needs no text tower; they equal what the model computes; a damaged file,
another model or VECSEARCH_LABEL_CACHE=0 never changes an answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_image

from vecsearch import Index
from vecsearch.classify import DEFAULT_TEMPLATES, label_vectors, needs_text_tower, prompt_vectors
from vecsearch.label_cache import cache_path, cached_prompt_vectors

LABELS = ["red", "blue", "green"]


class Counting:
    """An encoder that counts the texts it embeds (the rest is the real tiny model)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.embedded: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_texts(self, texts: Any) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.embed_texts(texts)


def test_prompt_vectors_are_remembered_and_equal_the_models(tiny_encoder: Any) -> None:
    counting = Counting(tiny_encoder)
    assert needs_text_tower(counting, LABELS)
    first = label_vectors(counting, LABELS)
    assert len(counting.embedded) == len(LABELS) * len(DEFAULT_TEMPLATES)
    assert not needs_text_tower(counting, LABELS)
    again = label_vectors(counting, LABELS)
    assert len(counting.embedded) == len(LABELS) * len(DEFAULT_TEMPLATES)  # nothing embedded the second time
    np.testing.assert_array_equal(first, again)
    # A new label embeds only its own prompts; the cached ones equal a fresh embedding.
    label_vectors(counting, [*LABELS, "purple"])
    assert len(counting.embedded) == (len(LABELS) + 1) * len(DEFAULT_TEMPLATES)
    prompts = [t.format("blue") for t in DEFAULT_TEMPLATES]
    np.testing.assert_allclose(prompt_vectors(counting, prompts), tiny_encoder.embed_texts(prompts), atol=1e-6)


def test_a_damaged_cache_or_another_model_changes_nothing(tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    exact = label_vectors(tiny_encoder, LABELS)
    path = cache_path(tiny_encoder.fingerprint)
    assert path.is_file()
    path.write_bytes(b"this is not a database" * 100)
    counting = Counting(tiny_encoder)
    np.testing.assert_allclose(label_vectors(counting, LABELS), exact, atol=1e-6)
    assert counting.embedded  # the damaged file was ignored, the model answered
    assert cached_prompt_vectors("0" * 32, tiny_encoder.dim, ["a photo of a red."]) == {}
    monkeypatch.setenv("VECSEARCH_LABEL_CACHE", "0")
    path.unlink()
    label_vectors(tiny_encoder, LABELS)
    assert not path.exists()


def test_a_second_classify_loads_no_text_tower(tiny_encoder: Any, tmp_path: Path) -> None:
    picture = make_image(tmp_path / "pics" / "red.png", "red", "circle")
    make_image(tmp_path / "pics" / "blue.png", "blue", "square")
    with Index.create(tmp_path / "index", encoder=tiny_encoder) as index:
        index.add(tmp_path / "pics")
    with Index.open(tmp_path / "index") as index:
        first = index.classify(str(picture), LABELS)
    with Index.open(tmp_path / "index") as index:
        second = index.classify(str(picture), LABELS)
        encoder = index.model.query_encoder()
        assert getattr(encoder, "torch_free", False)
        assert encoder._text is None  # type: ignore[attr-defined]  # the text tower was never loaded
    assert [s.label for s in first] == [s.label for s in second]
    np.testing.assert_allclose([s.probability for s in first], [s.probability for s in second], atol=1e-6)
