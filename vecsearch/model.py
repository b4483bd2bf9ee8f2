"""An index's model: loaded on first use, checked against the fingerprint the index recorded, and run from
the exports an earlier crawl made (no torch) where they exist: the text tower for text queries, and the
image and text towers for picture queries, `describe`, `classify` and crawls on the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoders import IMAGE, TEXT, Encoder, ModelSpec, load_encoder, load_exported_encoder, resolve_spec
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
        """The model from its exports where a crawl made them (no torch; see `load_exported_encoder`),
        else the full model."""
        exported = load_exported_encoder(
            resolve_spec(model, pretrained),
            device=self.device,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
            inference=self.inference,
        )
        return exported or self.load_full(model, pretrained)

    def load_full(self, model: str | ModelSpec | None, pretrained: str | None = None) -> Encoder:
        """The full model, with torch."""
        return load_encoder(
            model,
            pretrained,
            device=self.device,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
            inference=self.inference,
        )


def same_weights(folder: Path, manifest: dict[str, Any], wanted: ModelSpec, settings: LoadSettings) -> bool:
    """Is `wanted` (a model named on the command line) the model the index was built with? True when it
    is known to be, from its spec and the cheap fingerprint of its files (`weights_id`), or it is the same
    spec (checked when the model loads); ModelMismatchError when it is known not to be; False when only
    loading it can tell."""
    from .encoders import hub
    from .encoders.weights_id import has_record, known_fingerprint

    recorded = ModelSpec.from_dict(manifest["model"])
    built = f"index {folder.name} was built with {recorded}"
    if wanted != recorded and not (wanted.names_local_files or recorded.names_local_files):
        # Two different published models: no need to download one to know they differ.
        raise ModelMismatchError(
            f"{built}, not {wanted}; leave out --model to use the index's own model, or build a separate "
            "index for the other model"
        )
    built += f" (fingerprint {str(manifest['model']['fingerprint'])[:12]})"
    if not (wanted.names_local_files or recorded.names_local_files):
        return True  # the same published weights
    cache = hub.cache_dir(settings.cache_dir)
    fingerprint = known_fingerprint(wanted, cache)
    if fingerprint is None:
        # Never loaded here: the same spec is taken on trust until the model loads (and is checked then).
        # Files changed since they were loaded, or another spec: load it now to compare.
        return wanted == recorded and not has_record(wanted, cache)
    if fingerprint != manifest["model"]["fingerprint"]:
        raise ModelMismatchError(
            f"{built}, but {wanted} now holds other weights (fingerprint {fingerprint[:12]}); the checkpoint "
            "changed since the index was built: rebuild the index or restore the weights"
        )
    return True


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
        self._query_encoder: Any = None  # the exported model for queries once looked for; False when none
        self.load_as: ModelSpec | None = None  # the spec to load the same weights by, if the user named one
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
        """The model for crawls: its exports (no torch) on the CPU when an earlier crawl made them, else
        the full model; loaded on first use and checked against the recorded fingerprint."""
        if self._encoder is None:
            from .encoders.exported import accelerator_visible

            on_cpu = self.settings.device == "cpu" or (self.settings.device is None and not accelerator_visible())
            encoder = self._exported() if on_cpu else None
            if encoder is None:
                encoder = self.torch_encoder()
            self.check(encoder)
            self._encoder = encoder
        return self._encoder

    def torch_encoder(self) -> Encoder:
        """The full model (torch), loaded now and checked."""
        encoder = self.settings.load_full(self.load_as or self.spec)
        self.check(encoder)
        return encoder

    def query_encoder(self) -> Encoder:
        """The model for queries: the one a crawl loaded, else the exports on the CPU (even where a GPU is:
        one picture costs less than starting torch), else the full model."""
        if self._encoder is not None:
            return self._encoder
        if self._query_encoder is None:
            wants_cpu = self.settings.device in (None, "cpu")
            self._query_encoder = (self._exported() if wants_cpu else None) or False
        return self._query_encoder or self.encoder

    def warm_pictures(self, wait: bool = True) -> None:
        """Load the picture path of the exported model now (a server's first picture query is then quick),
        or with `wait=False` start loading it; nothing when the model has no exports (loading torch is
        left to the first picture query)."""
        encoder = self.query_encoder() if self._encoder is None and self.has_picture_exports() else None
        warm = getattr(encoder, "warm" if wait else "start_loading", None)
        if warm is not None:
            warm()

    def has_picture_exports(self) -> bool:
        """Does an earlier crawl's export let pictures be embedded here without torch?"""
        from .encoders.image_onnx import cache_folder, meta_path

        return IMAGE in self.modalities and meta_path(cache_folder(self.settings.cache_dir), self.fingerprint).is_file()

    def _exported(self) -> Encoder | None:
        """The exports of the index's weights, unless the model's own files no longer hold those weights
        (a checkpoint changed under the index: then the full model loads, and is refused)."""
        if IMAGE not in self.modalities:
            return None
        from .encoders import hub
        from .encoders.exported import load_exported
        from .encoders.weights_id import known_fingerprint

        spec = self.load_as or self.spec
        if (
            spec.names_local_files
            and known_fingerprint(spec, hub.cache_dir(self.settings.cache_dir)) != self.fingerprint
        ):
            return None

        return load_exported(
            self.fingerprint,
            self.dim,
            self.torch_encoder,
            cache_dir=self.settings.cache_dir,
            batch_size=self.settings.batch_size,
            inference=self.settings.inference,
        )

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

    def export_towers(self) -> str | None:
        """With the full model loaded by a crawl, export its text and image towers (once per weights) so
        that later queries and crawls need no torch; when no torch model was loaded, export nothing.
        Returns sentences saying what was exported (also logged), or None."""
        encoder = getattr(self._encoder, "fallback_encoder", self._encoder)
        if encoder is None or getattr(encoder, "torch_free", False):
            return None
        from .encoders import hub
        from .encoders.image_export import export_image_tower
        from .encoders.text_export import export_text_tower
        from .encoders.weights_id import remember

        notes = [export_text_tower(encoder, self.settings.cache_dir)]
        if IMAGE in self.modalities:
            notes.append(export_image_tower(encoder, self.settings.cache_dir))
        # The exports are used only while the model's files hold the weights they came from: record those
        # files beside them (a model loaded with another cache folder was recorded there, not here).
        remember(
            encoder.spec,
            getattr(encoder, "weight_files", []),
            encoder.fingerprint,
            hub.cache_dir(self.settings.cache_dir),
        )
        return "\n".join(note for note in notes if note) or None
