"""An open_clip model run from its exports, without torch: the image tower (image_onnx.py), the text tower
(text_onnx.py) and the image transform (image_preprocess.py), behind the Encoder interface.

Picture queries run the fp32 graph; crawls run the inference mode checked (or remembered) for this
machine. If an export turns out damaged when a graph loads (its hash differs), the encoder says so in a
warning and hands the work to the full torch model (`fallback`), whose vectors are the reference.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import first_line
from .base import IMAGE, TEXT, Encoder, ModelSpec, batched
from .image_onnx import ImageExportInfo, OnnxImageTower, OnnxInference, cache_folder, read_info
from .image_preprocess import PreprocessConfig

log = logging.getLogger(__name__)
TORCH_FREE_MODES = ("auto", "fp32", "onnx-int8")


class ExportedEncoder:
    """The Encoder of an exported open_clip model."""

    modalities = frozenset({IMAGE, TEXT})
    device = "cpu"
    torch_free = True

    def __init__(
        self,
        info: ImageExportInfo,
        fallback: Callable[[], Encoder],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        inference: str = "auto",
    ) -> None:
        self.info = info
        self.spec = ModelSpec.from_dict(info.model)
        self.fingerprint = info.fingerprint
        self.dim = info.dim
        self.logit_scale = info.logit_scale
        self.input_size = info.input_size
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.transform = PreprocessConfig.from_dict(info.preprocess)
        self.preprocess = self.transform  # as open_clip's encoders name their transform
        self.tower = OnnxImageTower(cache_folder(cache_dir), info)
        self.inference = OnnxInference(self.tower, inference, cache_dir)
        self._fallback_loader = fallback
        self._fallback: Encoder | None = None
        self._text: Any = None  # the exported text tower once loaded; False when it cannot be used
        self._text_loading: threading.Thread | None = None

    # --- falling back ----------------------------------------------------------------------------

    @property
    def fallback_encoder(self) -> Encoder | None:
        """The torch model, if a damaged export made this encoder load it."""
        return self._fallback

    def _fall_back(self, what: str, exc: BaseException) -> Encoder:
        if self._fallback is None:
            log.warning(
                "the exported %s of %s cannot be used (%s); loading the full model", what, self.spec, first_line(exc)
            )
            self._fallback = self._fallback_loader()
        return self._fallback

    def warm(self) -> None:
        """Load (and check) the query graph now, so that the first picture query is quick."""
        try:
            self.tower.session("fp32")
        except Exception as exc:  # a damaged export: the torch model answers instead
            self._fall_back("image tower", exc)

    def start_loading(self, images: bool = True, text: bool = False, crawl: bool = False) -> None:
        """Begin loading (and checking) the towers that a query (or with `crawl`, a crawl) will need on
        other threads, so that their files are hashed while pictures decode. Errors surface at first use."""
        if images and self._fallback is None:
            modes = [self.inference.mode or self.inference.recalled_mode() or "auto"] if crawl else ["fp32"]
            if modes == ["auto"]:
                modes = ["fp32", *self.inference.candidates()]  # the mode check runs them all
            threading.Thread(target=self._load_quietly, args=(modes,), daemon=True, name="vecsearch-tower").start()
        if text and self._text is None and self._text_loading is None:
            self._text_loading = threading.Thread(target=self._load_text, daemon=True, name="vecsearch-text-tower")
            self._text_loading.start()

    def _load_quietly(self, modes: list[str]) -> None:
        for mode in modes:
            with contextlib.suppress(Exception):  # reported when the session is asked for again
                self.tower.session(mode)

    def _load_text(self) -> None:
        from .text_onnx import load_text_encoder

        self._text = load_text_encoder(self.fingerprint, self.dim, self.cache_dir, self.batch_size) or False

    # --- text ------------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._fallback is not None:
            return self._fallback.embed_texts(texts)
        if self._text_loading is not None:
            self._text_loading.join()
            self._text_loading = None
        if self._text is None:
            self._load_text()
        if self._text is False:
            return self._fall_back("text tower", RuntimeError("its files are missing or damaged")).embed_texts(texts)
        return np.asarray(self._text.embed_texts(texts), dtype=np.float32)

    # --- pictures --------------------------------------------------------------------------------

    def prepare_image(self, image: Image.Image) -> Any:
        return self.transform(image)

    def embed_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray:
        """Unit vectors of prepared pictures, in the inference mode chosen for crawls on this machine."""
        return self._embed(prepared, self.inference.run)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit vectors of pictures, from the fp32 graph (queries ask for one or two pictures)."""
        return self._embed([self.prepare_image(image) for image in images], self.inference.run_fp32)

    def _embed(self, prepared: Sequence[Any], run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        items = list(prepared)
        if self._fallback is None:
            try:
                chunks = [run(np.stack(chunk)) for chunk in batched(items, self.batch_size)]
                if not chunks:
                    return np.zeros((0, self.dim), dtype=np.float32)
                return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
            except Exception as exc:  # noqa: BLE001 - a graph that fails to load or run: torch answers
                self._fall_back("image tower", exc)
        assert self._fallback is not None
        return self._fallback.embed_prepared_images(items)


def load_exported(
    fingerprint: str,
    dim: int | None,
    fallback: Callable[[], Encoder],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    inference: str = "auto",
) -> ExportedEncoder | None:
    """The torch-free encoder for these weights, or None when they have no (image and text) export, it
    is for another dimension (`dim`, when given), or the inference mode asked for needs torch (bf16)."""
    from .text_onnx import cache_folder as text_folder
    from .text_onnx import disabled as text_disabled
    from .text_onnx import meta_path as text_meta

    if inference not in TORCH_FREE_MODES or text_disabled():
        return None
    if not text_meta(text_folder(cache_dir), fingerprint).is_file():
        return None
    info = read_info(fingerprint, cache_dir)
    if info is None or (dim is not None and info.dim != dim):
        return None
    return ExportedEncoder(info, fallback, cache_dir=cache_dir, batch_size=batch_size, inference=inference)


def accelerator_visible() -> bool:
    """Would torch find a GPU here? Judged from the device files (NVIDIA, AMD), without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
