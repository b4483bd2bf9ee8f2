"""`vecsearch models --prepare`: a model's exports made ahead of its first crawl."""

from __future__ import annotations

from typing import Any

from . import hub, load_encoder
from .base import IMAGE, ModelSpec
from .image_onnx import read_info


def prepare_exports(
    model: str | ModelSpec | None = None, pretrained: str | None = None, cache_dir: str | None = None
) -> dict[str, Any]:
    """Load a model with torch once and export its text and image towers (what the first crawl of any
    folder does), so that queries and crawls run without torch from the start. Returns what exists now."""
    from .image_export import export_image_tower
    from .text_export import export_text_tower
    from .text_onnx import cache_folder as text_folder
    from .text_onnx import meta_path as text_meta

    encoder = load_encoder(model, pretrained, device="cpu", cache_dir=cache_dir)
    cache = hub.cache_dir(cache_dir)
    notes = [export_text_tower(encoder, cache)]
    if IMAGE in encoder.modalities:
        notes.append(export_image_tower(encoder, cache))
    return {
        "model": str(encoder.spec),
        "fingerprint": encoder.fingerprint,
        "text_tower": text_meta(text_folder(cache), encoder.fingerprint).is_file(),
        "image_tower": read_info(encoder.fingerprint, cache) is not None,
        "exported_now": [note for note in notes if note],
    }
