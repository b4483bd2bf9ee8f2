"""An index's model: loaded on first use, checked against the fingerprint the index recorded, and for
text queries the torch-free text tower an earlier crawl exported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoders import IMAGE, TEXT, Encoder, ModelSpec, load_encoder
from .errors import IndexCorruptError, ModelMismatchError
from .manifest import MANIFEST


@dataclass(frozen=True)
class LoadSettings:
    """How a model is loaded and run: where (`device`), how many inputs a call, where downloads are
    cached, and the image tower's CPU inference mode (see `vecsearch.encoders.inference`)."""

    device: str | None = None
    batch_size: int = 32
    cache_dir: str | None = None
    inference: str = "auto"

    def load(self, model: str | ModelSpec | None, pretrained: str | None = None) -> Encoder:
        return load_encoder(
            model,
            pretrained,
            device=self.device,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
            inference=self.inference,
        )


class IndexModel:
    """The model an index was built with (`record` is the manifest's "model" part, `dim` its dimension).

    Loading is lazy: opening an index costs nothing, a text query may never load the full model, and a
    crawl that meets only known files never loads it.
    """

    def __init__(
        self, folder: Path, record: dict[str, Any], dim: int, encoder: Encoder | None, settings: LoadSettings
    ) -> None:
        self.folder = folder
        self.record = record
        self.dim = dim
        self.settings = settings
        self._encoder = encoder
        self._text_tower: Any = None  # the exported text tower once looked for; False when there is none
        if encoder is not None:
            self.check(encoder)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.record)

    @property
    def fingerprint(self) -> str:
        return str(self.record["fingerprint"])

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(self.record.get("modalities", [IMAGE, TEXT]))

    @property
    def batch_size(self) -> int:
        return int(getattr(self._encoder, "batch_size", self.settings.batch_size))

    @property
    def loaded(self) -> Encoder | None:
        """The full model if it is loaded, without loading it."""
        return self._encoder

    @property
    def encoder(self) -> Encoder:
        """The full model, loaded on first use and checked against the recorded fingerprint."""
        if self._encoder is None:
            encoder = self.settings.load(self.spec)
            self.check(encoder)
            self._encoder = encoder
        return self._encoder

    def check(self, encoder: Encoder) -> None:
        """Refuse a model whose vectors would not be comparable with the index's."""
        if encoder.fingerprint == self.fingerprint and encoder.dim == self.dim:
            return
        if encoder.fingerprint == self.fingerprint:
            raise IndexCorruptError(
                f"index manifest {self.folder / MANIFEST} says dimension {self.dim}, but its model makes "
                f"{encoder.dim}-dimensional vectors"
            )
        recorded = f"{self.spec} (fingerprint {self.fingerprint[:12]})"
        given = f"{encoder.spec} (fingerprint {encoder.fingerprint[:12]})"
        if encoder.spec == self.spec:
            raise ModelMismatchError(
                f"index {self.folder.name} was built with {recorded}, but those weights now load as {given}; "
                "the checkpoint changed since the index was built: rebuild the index or restore the weights"
            )
        raise ModelMismatchError(
            f"index {self.folder.name} was built with {recorded}, not {given}; leave out --model to use the "
            "index's own model, or build a separate index for the other model"
        )

    def text_tower(self) -> Any:
        """For a query of text (and items) while the full model is not loaded: the text tower exported
        by an earlier crawl of these weights, which embeds text without importing torch or loading the
        image tower. None when there is no valid export (the caller then loads the full model)."""
        if self._encoder is not None:
            return None
        if self._text_tower is None:
            from .encoders.text_onnx import load_text_encoder

            tower = load_text_encoder(self.fingerprint, self.dim, self.settings.cache_dir, self.settings.batch_size)
            self._text_tower = tower if tower is not None else False
        return self._text_tower or None

    def export_text_tower(self) -> str | None:
        """With the full model loaded by a crawl, export its text tower (once per weights) so that later
        text queries need no torch; when no model was loaded, export nothing. Returns a sentence saying
        what was exported (also logged), or None."""
        if self._encoder is None:
            return None
        from .encoders.text_export import export_text_tower

        return export_text_tower(self._encoder, self.settings.cache_dir)
