"""The one interface every model meets, and the identity (spec + fingerprint) an index stores."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

OPEN_CLIP = "open_clip"
SENTENCE_TRANSFORMERS = "sentence-transformers"
FAMILIES = (OPEN_CLIP, SENTENCE_TRANSFORMERS)

IMAGE = "image"
TEXT = "text"


def compute_threads() -> int:
    """Threads a model may run on in this process: the cores it may use, or fewer where OMP_NUM_THREADS
    says so. Torch and FAISS read the same variable; the workers of `vecsearch serve` split the cores
    between them with it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores, int(limit))
    return max(1, cores)


@dataclass(frozen=True)
class ModelSpec:
    """Which model made an index's vectors: enough to load it again.

    `pretrained` is an open_clip tag or a checkpoint path (as in open_clip's own `pretrained=`);
    sentence-transformers models carry everything in `name` (hub id or local directory).
    """

    family: str
    name: str
    pretrained: str | None = None

    def __str__(self) -> str:
        text = f"{self.family}:{self.name}"
        return f"{text}@{self.pretrained}" if self.pretrained else text

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "pretrained": self.pretrained}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(family=data["family"], name=data["name"], pretrained=data.get("pretrained"))

    @property
    def names_local_files(self) -> bool:
        """Does it load weights from a local file or folder (whose content a name cannot tell)?"""
        if self.name.startswith("local-dir:") or Path(self.name).is_absolute():
            return True
        if not self.pretrained:
            return False
        return Path(self.pretrained).is_absolute() or Path(self.pretrained).exists()


@runtime_checkable
class Encoder(Protocol):
    """Turns images and texts into L2-normalised float32 vectors of one shared space.

    Image embedding is split in two so that a crawl can prepare pictures (resize, crop, normalise)
    on worker threads while the model runs: `prepare_image` must be thread-safe.
    """

    spec: ModelSpec
    dim: int
    fingerprint: str
    modalities: frozenset[str]
    logit_scale: float
    device: str

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def prepare_image(self, image: Image.Image) -> Any: ...

    def embed_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows; an all-zero row stays zero instead of turning into NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def fingerprint_tensors(named_tensors: Iterable[tuple[str, Any]], extra: str = "") -> str:
    """A short hash that changes whenever the weights do, without hashing every byte.

    Each tensor contributes its name, shape and up to 4096 evenly spaced values, so fine-tuned
    weights (which differ everywhere) get a new fingerprint while the same weights saved as .pt or
    .safetensors keep theirs. Costs milliseconds for a ViT-B-32.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(extra.encode())
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].float().cpu().numpy().astype("<f4")
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def pick_device(device: str | None = None) -> str:
    """The device to run on: the one asked for, else CUDA when present, else the CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
