"""Zero-shot classification: image → the most likely of a few labels (classification as search).

Each label is embedded through several prompt templates ("a photo of a {}.") and the mean is taken,
as in the CLIP paper; probabilities are the softmax of the model's logit scale times the cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .encoders.base import Encoder, normalize_rows
from .errors import QueryError
from .results import LabelScore

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "an image of a {}.",
    "a clip art of a {}.",
    "an illustration of a {}.",
)


def parse_labels(labels: str | Sequence[str] | None = None, labels_file: str | Path | None = None) -> list[str]:
    """Labels from a comma-separated string or list, and/or a file with one label per line."""
    found: list[str] = []
    if isinstance(labels, str):
        found.extend(labels.split(","))
    elif labels:
        found.extend(labels)
    if labels_file:
        try:
            found.extend(Path(labels_file).read_text(encoding="utf-8-sig").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            raise QueryError(f"cannot read labels file {labels_file} ({exc})") from exc
    cleaned: list[str] = []
    for label in found:
        label = " ".join(label.split())
        if label and label not in cleaned:
            cleaned.append(label)
    if len(cleaned) < 2:
        raise QueryError("zero-shot classification needs at least two distinct labels")
    return cleaned


def check_templates(templates: Sequence[str]) -> list[str]:
    """Prompt templates with exactly one `{}` for the label; checked before any model loads, since
    '{x}' or '{} {}' would otherwise fail deep inside the embedding."""
    chosen = list(templates) or ["{}"]
    for template in chosen:
        try:
            template.format("label")
        except (KeyError, IndexError, ValueError) as exc:
            raise QueryError(f"prompt template must have one {{}} where the label goes: '{template}'") from exc
        if "{}" not in template:
            raise QueryError(f"prompt template must contain {{}} where the label goes: '{template}'")
    return chosen


def label_vectors(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """One unit vector per label: the mean embedding of the label in every template."""
    templates = check_templates(templates)
    prompts = [template.format(label) for label in labels for template in templates]
    vectors = prompt_vectors(encoder, prompts).reshape(len(labels), len(templates), -1).mean(axis=1)
    return normalize_rows(vectors)


def needs_text_tower(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> bool:
    """Must the model embed some of these labels' prompts (are they not all in the label cache)?"""
    from .label_cache import cached_prompt_vectors

    prompts = [template.format(label) for label in labels for template in check_templates(templates)]
    fingerprint = str(getattr(encoder, "fingerprint", ""))
    known = cached_prompt_vectors(fingerprint, encoder.dim, prompts, getattr(encoder, "cache_dir", None))
    return any(p not in known for p in prompts)


def prompt_vectors(encoder: Encoder, prompts: Sequence[str]) -> np.ndarray:
    """The prompts' text vectors: those embedded by an earlier command with these weights come from the
    label cache (`label_cache`), the rest from the model (one batch), and are kept for the next one."""
    from .label_cache import cached_prompt_vectors, remember_prompt_vectors

    fingerprint = str(getattr(encoder, "fingerprint", ""))
    cache_dir = getattr(encoder, "cache_dir", None)
    known = cached_prompt_vectors(fingerprint, encoder.dim, prompts, cache_dir)
    missing = list(dict.fromkeys(p for p in prompts if p not in known))
    if missing:
        fresh = np.asarray(encoder.embed_texts(missing), dtype=np.float32)
        remember_prompt_vectors(fingerprint, missing, fresh, cache_dir)
        known.update(zip(missing, fresh, strict=True))
    return np.stack([known[p] for p in prompts]) if prompts else np.zeros((0, encoder.dim), np.float32)


def classify_vector(
    image_vector: np.ndarray,
    labels: Sequence[str],
    label_matrix: np.ndarray,
    logit_scale: float,
) -> list[LabelScore]:
    """Rank labels for one embedded image, most likely first."""
    image_vector = normalize_rows(image_vector)[0]
    scores = label_matrix @ image_vector
    logits = logit_scale * scores
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    ranked = sorted(zip(labels, probabilities, scores, strict=True), key=lambda row: -row[1])
    return [LabelScore(label, float(p), float(s)) for label, p, s in ranked]


def classify(
    image_vector: np.ndarray,
    labels: Sequence[str],
    encoder: Encoder,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> list[LabelScore]:
    labels = parse_labels(labels)
    return classify_vector(image_vector, labels, label_vectors(encoder, labels, templates), encoder.logit_scale)


def classify_image(
    image: str | Path | Image.Image,
    labels: Sequence[str],
    encoder: Encoder | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> list[LabelScore]:
    """Zero-shot classify one image file or picture, with no index needed."""
    from PIL import Image

    from .encoders import IMAGE, load_query_encoder
    from .errors import ImageError, UnsupportedModalityError
    from .images import decode_size, load_image

    encoder = encoder or load_query_encoder(model, pretrained)
    start_loading = getattr(encoder, "start_loading", None)
    if start_loading is not None:  # exported towers load (and are checked) while the picture decodes
        start_loading(images=True, text=needs_text_tower(encoder, parse_labels(labels), templates))
    if IMAGE not in encoder.modalities:
        raise UnsupportedModalityError(f"{encoder.spec} embeds text only; classification needs a CLIP model")
    if isinstance(image, Image.Image):
        picture = image
    else:
        try:
            picture = load_image(Path(image), min_size=decode_size(encoder))  # decoded as a query decodes it
        except ImageError as exc:
            raise QueryError(f"cannot use image {image}: {exc}") from exc
    return classify(encoder.embed_images([picture]), labels, encoder, templates)
