"""Encoders: vecsearch's vectors equal open_clip's own, model identity, spec parsing, offline behaviour,
sentence-transformers, and the model list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_CONFIG, make_image, write_tiny_model
from PIL import Image

from vecsearch import (
    DEFAULT_MODEL,
    STARTER_MODEL,
    Index,
    ModelNotFoundError,
    ModelSpec,
    ModelUnavailableError,
    UnsupportedModalityError,
    list_models,
    load_encoder,
)
from vecsearch.encoders import is_available_offline, resolve_spec

# --- a real built-in architecture: vecsearch's vectors are open_clip's vectors --------------------

# (file name, size): squares, wide, tall, tiny and odd sizes, PNG and JPEG.
REFERENCE_IMAGES = [
    ("square.png", (224, 224)),
    ("wide.png", (320, 120)),
    ("tall.jpg", (90, 300)),
    ("small.png", (37, 23)),
    ("big.jpg", (500, 410)),
]
REFERENCE_TEXTS = ["a photo of a red circle", "a blue square", "", "un chat sur un tapis " * 20]


@pytest.fixture(scope="module")
def vit_b32(tmp_path_factory: pytest.TempPathFactory):
    """A ViT-B-32 with seeded random weights saved as fp16 safetensors, loaded by vecsearch and by open_clip."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("vit-b-32")
    checkpoint = folder / "vit-b-32-random.safetensors"
    torch.manual_seed(1234)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    del model

    encoder = load_encoder("ViT-B-32", pretrained=str(checkpoint), device="cpu", batch_size=4)
    reference, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(checkpoint))
    reference.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")

    images = folder / "images"
    for i, (name, size) in enumerate(REFERENCE_IMAGES):
        make_image(
            images / name,
            ["red", "green", "blue", "yellow", "purple"][i],
            "circle" if i % 2 else "square",
            size=size,
            seed=10 + i,
        )
    return {
        "checkpoint": checkpoint,
        "encoder": encoder,
        "model": reference,
        "preprocess": preprocess,
        "tokenizer": tokenizer,
        "images": images,
    }


def _open_clip_image_vectors(vit_b32, paths: list[Path]) -> np.ndarray:
    import torch

    with torch.no_grad():
        pixels = torch.stack([vit_b32["preprocess"](Image.open(p)) for p in paths])
        vectors = vit_b32["model"].encode_image(pixels)
        vectors = vectors / vectors.norm(dim=-1, keepdim=True)
    return vectors.float().numpy()


def _open_clip_text_vectors(vit_b32, texts: list[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        vectors = vit_b32["model"].encode_text(vit_b32["tokenizer"](texts))
        vectors = vectors / vectors.norm(dim=-1, keepdim=True)
    return vectors.float().numpy()


def _assert_same_vectors(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert (cosines >= 0.9999).all(), cosines


def test_vit_b32_spec_and_shape(vit_b32) -> None:
    encoder = vit_b32["encoder"]

    assert encoder.spec == ModelSpec("open_clip", "ViT-B-32", str(vit_b32["checkpoint"].resolve()))
    assert encoder.dim == 512
    assert encoder.modalities == frozenset({"image", "text"})
    assert encoder.logit_scale == pytest.approx(float(vit_b32["model"].logit_scale.detach().exp()), rel=1e-3)


def test_stored_image_vectors_equal_open_clip_encode_image(vit_b32, tmp_path: Path, monkeypatch) -> None:
    # What is compared is the crawl's vectors with open_clip's: the inference modes and the towers' exports,
    # which would take most of this test's time on a ViT-B-32, have tests of their own.
    monkeypatch.setenv("VECSEARCH_TEXT_ONNX", "0")
    monkeypatch.setenv("VECSEARCH_IMAGE_ONNX", "0")
    index = Index.create(tmp_path / "idx", encoder=vit_b32["encoder"], inference="fp32")
    report = index.add(vit_b32["images"])
    assert report.added == len(REFERENCE_IMAGES)
    assert report.skipped == []

    image_ids = index.store.item_ids(kind="image")
    rows = index.store.items(image_ids)
    assert sorted(row.relpath for row in rows.values()) == sorted(name for name, _ in REFERENCE_IMAGES)

    paths = [vit_b32["images"] / rows[item_id].relpath for item_id in image_ids]
    stored = np.stack([index.store.vector(item_id) for item_id in image_ids])
    expected = _open_clip_image_vectors(vit_b32, paths)

    _assert_same_vectors(stored, expected)
    # different pictures really give different vectors (the check above is not trivially true)
    off_diagonal = (expected @ expected.T)[~np.eye(len(paths), dtype=bool)]
    assert (off_diagonal < 0.9999).all()
    index.close()


def test_embed_images_equals_open_clip_encode_image(vit_b32) -> None:
    paths = [vit_b32["images"] / name for name, _ in REFERENCE_IMAGES]

    ours = vit_b32["encoder"].embed_images([Image.open(p) for p in paths])

    _assert_same_vectors(ours, _open_clip_image_vectors(vit_b32, paths))


def test_embed_texts_equals_open_clip_encode_text(vit_b32) -> None:
    ours = vit_b32["encoder"].embed_texts(REFERENCE_TEXTS)

    _assert_same_vectors(ours, _open_clip_text_vectors(vit_b32, REFERENCE_TEXTS))


def test_search_scores_are_open_clip_cosines(vit_b32, tmp_path: Path) -> None:
    index = Index.create(tmp_path / "idx", encoder=vit_b32["encoder"])
    index.add(vit_b32["images"])

    hits = index.search("a photo of a red circle", k=len(REFERENCE_IMAGES))

    text = _open_clip_text_vectors(vit_b32, ["a photo of a red circle"])[0]
    paths = [vit_b32["images"] / name for name, _ in REFERENCE_IMAGES]
    expected = dict(zip((p.name for p in paths), _open_clip_image_vectors(vit_b32, paths) @ text, strict=True))
    assert len(hits) == len(REFERENCE_IMAGES)
    for hit in hits:
        assert hit.score == pytest.approx(float(expected[hit.relpath]), abs=1e-4)
    assert [h.relpath for h in hits] == sorted(expected, key=lambda name: -expected[name])
    index.close()


# --- the tiny model: identity and shapes ---------------------------------------------------------


def test_tiny_encoder_basics(tiny_encoder, tiny_model_dir: Path) -> None:
    assert tiny_encoder.dim == 16
    assert tiny_encoder.modalities == frozenset({"image", "text"})
    assert tiny_encoder.spec == ModelSpec("open_clip", f"local-dir:{tiny_model_dir.resolve()}")
    assert str(tiny_encoder.spec) == f"open_clip:local-dir:{tiny_model_dir.resolve()}"
    assert Path(str(tiny_encoder.spec).split("local-dir:", 1)[1]).is_absolute()
    assert tiny_encoder.device == "cpu"


def test_tiny_encoder_vectors_are_unit_float32(tiny_encoder, tmp_path: Path) -> None:
    texts = tiny_encoder.embed_texts(["a red apple", "a blue car", "a sunny beach"])
    images = tiny_encoder.embed_images(
        [Image.open(make_image(tmp_path / f"{i}.png", colour, seed=i)) for i, colour in enumerate(["red", "blue"])]
    )

    for vectors, rows in ((texts, 3), (images, 2)):
        assert vectors.dtype == np.float32
        assert vectors.shape == (rows, 16)
        assert vectors.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_nothing_gives_empty_matrix(tiny_encoder) -> None:
    texts = tiny_encoder.embed_texts([])
    images = tiny_encoder.embed_images([])

    assert texts.shape == (0, 16) and texts.dtype == np.float32
    assert images.shape == (0, 16) and images.dtype == np.float32


def test_batching_does_not_change_vectors(tiny_model_dir: Path, tiny_encoder) -> None:
    texts = [f"caption number {i}" for i in range(11)]
    one_at_a_time = load_encoder(f"local-dir:{tiny_model_dir}", device="cpu", batch_size=1)

    np.testing.assert_allclose(one_at_a_time.embed_texts(texts), tiny_encoder.embed_texts(texts), atol=1e-5)


def test_fingerprint_is_stable_across_loads(tiny_model_dir: Path, tiny_encoder) -> None:
    again = load_encoder(f"local-dir:{tiny_model_dir}", device="cpu")

    assert again.fingerprint == tiny_encoder.fingerprint
    assert isinstance(again.fingerprint, str) and len(again.fingerprint) == 32


def test_fingerprint_changes_with_the_weights(tmp_path: Path, tiny_encoder) -> None:
    other_dir = write_tiny_model(tmp_path / "other-seed", seed=1)

    other = load_encoder(f"local-dir:{other_dir}", device="cpu")

    assert other.dim == tiny_encoder.dim
    assert other.fingerprint != tiny_encoder.fingerprint


def _copy_config(model_dir: Path, folder: Path) -> dict[str, Any]:
    """A model folder with the tiny model's config only, and the tiny model's weights to change and save there."""
    from safetensors.torch import load_file

    folder.mkdir()
    shutil.copy(model_dir / "open_clip_config.json", folder)
    return load_file(str(model_dir / "open_clip_model.safetensors"))


def test_fingerprint_changes_with_one_fine_tuned_tensor(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "tuned"
    weights = _copy_config(tiny_model_dir, folder)
    weights["text_projection"] = weights["text_projection"] * 1.01
    save_file(weights, str(folder / "open_clip_model.safetensors"))

    tuned = load_encoder(f"local-dir:{folder}", device="cpu")

    assert tuned.fingerprint != tiny_encoder.fingerprint


def test_fingerprint_same_for_pt_and_safetensors(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    import torch

    folder = tmp_path / "as-pt"
    state_dict = _copy_config(tiny_model_dir, folder)
    torch.save(state_dict, folder / "open_clip_pytorch_model.bin")
    assert not (folder / "open_clip_model.safetensors").exists()

    as_pt = load_encoder(f"local-dir:{folder}", device="cpu")

    assert as_pt.fingerprint == tiny_encoder.fingerprint
    texts = ["same weights", "same vectors"]
    np.testing.assert_allclose(as_pt.embed_texts(texts), tiny_encoder.embed_texts(texts), atol=1e-6)


def test_fingerprint_depends_on_preprocess_config(tmp_path: Path, tiny_model_dir: Path, tiny_encoder) -> None:
    folder = tmp_path / "other-preprocess"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_model.safetensors", folder)
    config = json.loads(json.dumps(TINY_CONFIG))
    config["preprocess_cfg"] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    (folder / "open_clip_config.json").write_text(json.dumps(config))

    other = load_encoder(f"local-dir:{folder}", device="cpu")

    assert other.fingerprint != tiny_encoder.fingerprint
    np.testing.assert_allclose(other.embed_texts(["x"]), tiny_encoder.embed_texts(["x"]), atol=1e-6)


# --- resolve_spec: what users type ---------------------------------------------------------------


@pytest.mark.parametrize(
    "model, pretrained, expected",
    [
        (None, None, ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
        ("", None, ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
        ("  ", None, ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
        (None, "openai", ModelSpec("open_clip", "ViT-B-32", "openai")),
        ("ViT-B-32", None, ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
        ("ViT-B-32", "openai", ModelSpec("open_clip", "ViT-B-32", "openai")),
        ("ViT-B-16", "laion2b_s34b_b88k", ModelSpec("open_clip", "ViT-B-16", "laion2b_s34b_b88k")),
        ("open_clip:ViT-B-32@openai", None, ModelSpec("open_clip", "ViT-B-32", "openai")),
        ("open_clip:ViT-B-32", "openai", ModelSpec("open_clip", "ViT-B-32", "openai")),
        ("openclip:ViT-L-14@laion2b_s32b_b82k", None, ModelSpec("open_clip", "ViT-L-14", "laion2b_s32b_b82k")),
        ("st:clip-ViT-B-32", None, ModelSpec("sentence-transformers", "clip-ViT-B-32")),
        ("sentence-transformers:all-MiniLM-L6-v2", None, ModelSpec("sentence-transformers", "all-MiniLM-L6-v2")),
        ("all-MiniLM-L6-v2", None, ModelSpec("sentence-transformers", "all-MiniLM-L6-v2")),
        ("hf-hub:org/repo", None, ModelSpec("open_clip", "hf-hub:org/repo")),
        ("open_clip:hf-hub:org/repo", None, ModelSpec("open_clip", "hf-hub:org/repo")),
    ],
)
def test_resolve_spec(model, pretrained, expected: ModelSpec) -> None:
    assert resolve_spec(model, pretrained) == expected


def test_default_model_constant() -> None:
    assert ModelSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k") == DEFAULT_MODEL
    assert str(DEFAULT_MODEL) == "open_clip:ViT-B-32@laion2b_s34b_b79k"
    assert resolve_spec(DEFAULT_MODEL) is DEFAULT_MODEL


def test_spec_round_trips_through_dict() -> None:
    spec = ModelSpec("open_clip", "ViT-B-32", "openai")

    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == {"family": "open_clip", "name": "ViT-B-32", "pretrained": "openai"}


def test_local_dir_becomes_absolute(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    expected = ModelSpec("open_clip", f"local-dir:{tiny_model_dir.resolve()}")

    assert resolve_spec(f"local-dir:{tiny_model_dir.name}") == expected
    assert resolve_spec(f"local-dir:{tiny_model_dir}") == expected
    assert resolve_spec(f"open_clip:local-dir:{tiny_model_dir.name}") == expected
    # a bare directory holding open_clip_config.json is an open_clip model directory too
    assert resolve_spec(tiny_model_dir.name) == expected
    assert resolve_spec(str(tiny_model_dir)) == expected


def test_missing_local_dir_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="open_clip model directory not found"):
        resolve_spec(f"local-dir:{tmp_path / 'absent'}")


def test_local_dir_and_hf_hub_refuse_pretrained(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="--pretrained"):
        resolve_spec(f"local-dir:{tiny_model_dir}", "openai")
    with pytest.raises(ModelNotFoundError, match="--pretrained"):
        resolve_spec("hf-hub:org/repo", "openai")


def test_sentence_transformers_directory_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-st-model"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    monkeypatch.chdir(tmp_path)

    assert resolve_spec("my-st-model") == ModelSpec("sentence-transformers", str(folder.resolve()))
    assert resolve_spec("./my-st-model") == ModelSpec("sentence-transformers", str(folder.resolve()))
    assert resolve_spec("st:my-st-model") == ModelSpec("sentence-transformers", str(folder.resolve()))


def test_directory_without_a_model_is_not_found(tmp_path: Path) -> None:
    folder = tmp_path / "just-photos"
    folder.mkdir()

    with pytest.raises(ModelNotFoundError, match="holds no open_clip_config.json"):
        resolve_spec(str(folder))


def test_checkpoint_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"not loaded by resolve_spec")
    monkeypatch.chdir(tmp_path)

    spec = resolve_spec("ViT-B-32", "weights.safetensors")

    assert spec == ModelSpec("open_clip", "ViT-B-32", str((tmp_path / "weights.safetensors").resolve()))
    assert Path(spec.pretrained).is_absolute()


def test_unknown_name_with_pretrained_is_not_found() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown open_clip model 'NoSuchModel'"):
        resolve_spec("NoSuchModel", "openai")


def test_sentence_transformers_refuses_pretrained() -> None:
    with pytest.raises(ModelNotFoundError, match="--pretrained applies to open_clip"):
        resolve_spec("st:clip-ViT-B-32", "openai")


# --- offline and missing models ------------------------------------------------------------------


def test_default_model_offline_is_unavailable_with_advice() -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        load_encoder(device="cpu")

    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message
    assert "--pretrained" in message
    assert "local-dir:" in message
    assert "ViT-B-32" in message


def test_default_model_unreachable_hub_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")

    with pytest.raises(ModelUnavailableError) as caught:
        load_encoder(device="cpu")

    message = str(caught.value)
    assert "127.0.0.1 cannot be reached" in message
    assert "--pretrained" in message and "local-dir:" in message


def test_uncached_sentence_transformer_offline_is_unavailable() -> None:
    with pytest.raises(ModelUnavailableError, match="sentence-transformers/clip-ViT-B-32"):
        load_encoder("st:clip-ViT-B-32", device="cpu")


def test_unknown_pretrained_tag_lists_the_tags() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        load_encoder("ViT-B-32", pretrained="no_such_tag", device="cpu")

    message = str(caught.value)
    assert "unknown pretrained tag 'no_such_tag'" in message
    assert "laion2b_s34b_b79k" in message
    assert "openai" in message


def test_missing_checkpoint_file_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"

    with pytest.raises(ModelNotFoundError, match="checkpoint file not found"):
        load_encoder("ViT-B-32", pretrained=str(missing), device="cpu")


def test_unknown_open_clip_name_is_not_found() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown open_clip model 'NoSuchModel'"):
        load_encoder("open_clip:NoSuchModel", device="cpu")


def test_missing_sentence_transformers_directory_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelNotFoundError, match="nope-model"):
        load_encoder("./nope-model", device="cpu")
    with pytest.raises(ModelNotFoundError, match="nope-model"):
        load_encoder("st:./nope-model", device="cpu")


def test_local_dir_without_config_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_encoder(ModelSpec("open_clip", f"local-dir:{tmp_path}"), device="cpu")


# --- sentence-transformers: the real MiniLM ------------------------------------------------------


def test_minilm_identity(minilm_encoder) -> None:
    assert minilm_encoder.spec == ModelSpec("sentence-transformers", "all-MiniLM-L6-v2")
    assert minilm_encoder.spec.family == "sentence-transformers"
    assert minilm_encoder.dim == 384
    assert minilm_encoder.modalities == frozenset({"text"})
    assert minilm_encoder.logit_scale == 100.0


def test_minilm_vectors_are_unit_float32(minilm_encoder) -> None:
    vectors = minilm_encoder.embed_texts(["a cat", "a dog", "a bicycle"])

    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm_encoder.embed_texts([]).shape == (0, 384)


def test_minilm_semantics(minilm_encoder) -> None:
    cat, kitten, market = minilm_encoder.embed_texts(
        ["a cat sitting on a mat", "a kitten resting on a rug", "stock market report"]
    )

    assert float(cat @ kitten) > float(cat @ market) + 0.2


def test_minilm_refuses_images(minilm_encoder) -> None:
    picture = Image.new("RGB", (8, 8), (255, 0, 0))

    with pytest.raises(UnsupportedModalityError, match="embeds text only"):
        minilm_encoder.embed_images([picture])
    with pytest.raises(UnsupportedModalityError):
        minilm_encoder.prepare_image(picture)


def test_minilm_fingerprint_is_stable(minilm_encoder) -> None:
    again = load_encoder("st:all-MiniLM-L6-v2", device="cpu")

    assert again.fingerprint == minilm_encoder.fingerprint


def test_is_available_offline() -> None:
    assert is_available_offline(ModelSpec("sentence-transformers", "all-MiniLM-L6-v2")) is True
    assert is_available_offline(ModelSpec("sentence-transformers", "clip-ViT-B-32")) is False
    assert is_available_offline(DEFAULT_MODEL) is False


def test_is_available_offline_for_local_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(b"x")

    assert is_available_offline(ModelSpec("open_clip", f"local-dir:{tiny_model_dir}")) is True
    assert is_available_offline(ModelSpec("open_clip", f"local-dir:{tmp_path / 'absent'}")) is False
    assert is_available_offline(ModelSpec("open_clip", "ViT-B-32", str(checkpoint))) is True
    assert is_available_offline(ModelSpec("open_clip", "hf-hub:org/repo")) is False


# --- list_models ---------------------------------------------------------------------------------


def test_list_models_marks_the_default() -> None:
    infos = list_models()

    defaults = [info for info in infos if info.default]
    assert len(defaults) == 1
    assert defaults[0].spec == DEFAULT_MODEL
    assert defaults[0].available_offline is False
    assert infos[0].spec == STARTER_MODEL and infos[0].available_offline  # the bundled model comes first
    assert infos[1].spec == DEFAULT_MODEL
    by_spec = {info.spec: info for info in infos}
    assert by_spec[ModelSpec("sentence-transformers", "all-MiniLM-L6-v2")].available_offline is True
    assert by_spec[ModelSpec("sentence-transformers", "clip-ViT-B-32")].available_offline is False
    assert len(by_spec) == len(infos), "no model listed twice"


def test_list_models_all_adds_every_open_clip_pair() -> None:
    import open_clip

    short = list_models()
    everything = list_models(all_open_clip=True)

    pairs = set(open_clip.list_pretrained())
    st_count = sum(1 for info in short if info.spec.family == "sentence-transformers")
    assert len(everything) == len(pairs) + st_count + 1  # + the bundled starter model
    assert len(everything) > len(short) + 100
    open_clip_pairs = {(i.spec.name, i.spec.pretrained) for i in everything if i.spec.family == "open_clip"}
    assert open_clip_pairs == pairs | {("starter", None)}
    assert [i.spec for i in everything[: len(short)]] == [i.spec for i in short]
    assert sum(info.default for info in everything) == 1
    offline = [info.spec for info in everything if info.spec.family == "open_clip" and info.available_offline]
    assert offline == [STARTER_MODEL]


def test_checkpoints_load_without_random_initialisation_and_equal_open_clips_own_load(vit_b32) -> None:
    """The fast path (modules on the meta device, tensors assigned) gives open_clip's exact model."""
    import torch

    from vecsearch.encoders.open_clip_encoder import _create_without_random_init

    built = _create_without_random_init("ViT-B-32", {"pretrained": str(vit_b32["checkpoint"])}, "cpu")
    assert built is not None
    model, _, preprocess = built
    reference = vit_b32["model"].state_dict()
    ours = model.state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    assert torch.equal(model.attn_mask, vit_b32["model"].attn_mask)
    assert str(preprocess) == str(vit_b32["preprocess"])
    assert (
        vit_b32["encoder"].fingerprint
        == load_encoder("ViT-B-32", pretrained=str(vit_b32["checkpoint"]), device="cpu").fingerprint
    )
    # Not a plain CLIP checkpoint: the usual path.
    assert _create_without_random_init("ViT-B-32", {}, "cpu") is None


def test_causal_clip_text_without_padding_equals_open_clip(tiny_encoder) -> None:
    """Short prompts skip the padding positions (a causal tower never looks at them): the vectors equal
    open_clip's own encode_text over all `context_length` positions, batched and alone."""
    import torch

    prompts = ["a red apple", "a dog", "word " * 100, "", "!", "café 🍎 under a long and winding road"]
    assert tiny_encoder._causal_text
    with torch.inference_mode():
        tokens = tiny_encoder.tokenizer(prompts)
        reference = tiny_encoder.model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(tiny_encoder.embed_texts(prompts), reference, atol=2e-6)
    for i, prompt in enumerate(prompts):
        np.testing.assert_allclose(tiny_encoder.embed_texts([prompt])[0], reference[i], atol=2e-6)
