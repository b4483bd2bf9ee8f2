"""Text queries without torch: the reading side of an exported text tower (text_export.py writes it).

An export is three files named in a small JSON meta (by the weights' fingerprint): a `tokenizers`
tokenizer that reproduces the model's own, an ONNX graph, and its weights beside it. The meta records
each file's size and SHA-256, and every one is checked before anything runs, so a partial, damaged or
foreign export is never used (the caller loads the full model instead). Only ONNX Runtime,
`tokenizers`, ftfy and regex are imported here: never torch.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import mmap
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, first_line
from .base import TEXT, ModelSpec, compute_threads, normalize_rows

FORMAT_VERSION = 1
DISABLE_ENV = "VECSEARCH_TEXT_ONNX"
CLIP_BPE = "clip-bpe"  # open_clip's SimpleTokenizer, rebuilt as a tokenizers BPE
HF = "hf"  # a Hugging Face fast tokenizer's own tokenizer.json
CLEAN_KINDS = ("lower", "whitespace")
FILE_ROLES = ("tokenizer", "graph", "weights")
QUERY_THREADS = 2  # a prompt or two: more threads cost more to wake than they save
log = logging.getLogger(__name__)


class TextExportError(ModelError):
    """A text export that cannot be made, or a cached one that cannot be trusted."""


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exports live: beside the image tower's ONNX exports, in a folder of their own."""
    from .inference import onnx_cache_folder

    return onnx_cache_folder(cache_dir) / "text"


def meta_path(folder: Path, fingerprint: str) -> Path:
    return folder / f"text-{fingerprint}.json"


# --- the tokenizer, without torch --------------------------------------------------------------


def clean_text(text: str, kind: str) -> str:
    """open_clip's text cleaning (`basic_clean` then `whitespace_clean`, lower-cased for CLIP's BPE),
    written out here because importing open_clip.tokenizer imports torch."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if kind == "lower" else text


def clip_split_pattern(special_tokens: Sequence[str]) -> Any:
    """open_clip's SimpleTokenizer pattern, special tokens first. It is matched here, with the same
    regex library, rather than inside `tokenizers`: there a special token is split off wherever it
    occurs, while open_clip only sees one where a match starts (";<end_of_text>" is ";<", "end", ...)."""
    import regex

    special = "|".join(special_tokens)
    return regex.compile(special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def token_ids(tokenizer: Any, texts: Sequence[str], clean: str, split: Any = None) -> list[list[int]]:
    """Token ids as the model's tokenizer gives them (padded and truncated as the tokenizer.json says).
    `split` is the CLIP BPE pattern: its matches are the words given to the tokenizer."""
    cleaned = [clean_text(t, clean) for t in texts]
    if split is None:
        encodings = tokenizer.encode_batch(cleaned)
    else:
        encodings = tokenizer.encode_batch([split.findall(t) for t in cleaned], is_pretokenized=True)
    return [encoding.ids for encoding in encodings]


# --- the meta ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFile:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportInfo:
    """An export's meta: what was exported, its files, and how it was checked."""

    fingerprint: str
    model: dict[str, Any]  # the ModelSpec, as an index's manifest records it
    tokenizer_kind: str
    clean: str
    special_tokens: tuple[str, ...]  # CLIP BPE: the special tokens that lead its split pattern
    context_length: int
    pad_id: int
    trim_padding: bool  # pad to the longest text (the tower masks padding), not to the context length
    dim: int
    files: dict[str, ExportFile]  # by role: tokenizer, graph, weights
    validation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ExportInfo:
        try:
            data = json.loads(path.read_text())
            if data.get("format_version") != FORMAT_VERSION:
                raise TextExportError(f"format version {data.get('format_version')}, not {FORMAT_VERSION}")
            tokenizer = data["tokenizer"]
            info = cls(
                fingerprint=str(data["fingerprint"]),
                model=dict(data["model"]),
                tokenizer_kind=str(tokenizer["kind"]),
                clean=str(tokenizer["clean"]),
                special_tokens=tuple(str(t) for t in tokenizer["special_tokens"]),
                context_length=int(data["context_length"]),
                pad_id=int(data["pad_id"]),
                trim_padding=bool(data["trim_padding"]),
                dim=int(data["dim"]),
                files={
                    role: ExportFile(str(f["name"]), int(f["bytes"]), str(f["sha256"]))
                    for role, f in data["files"].items()
                },
                validation=dict(data["validation"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TextExportError(f"unreadable meta {path.name}: {first_line(exc)}") from exc
        if info.tokenizer_kind not in (CLIP_BPE, HF) or info.clean not in CLEAN_KINDS:
            raise TextExportError(f"meta {path.name} names an unknown tokenizer {info.tokenizer_kind}/{info.clean}")
        if sorted(info.files) != sorted(FILE_ROLES):
            raise TextExportError(f"meta {path.name} lists the files {sorted(info.files)}")
        for file in info.files.values():
            if Path(file.name).name != file.name or not file.name.startswith(f"text-{info.fingerprint}-"):
                raise TextExportError(f"meta {path.name} names a file outside its export: {file.name!r}")
        return info

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "tokenizer": {
                "kind": self.tokenizer_kind,
                "clean": self.clean,
                "special_tokens": list(self.special_tokens),
            },
            "context_length": self.context_length,
            "pad_id": self.pad_id,
            "trim_padding": self.trim_padding,
            "dim": self.dim,
            "files": {role: {"name": f.name, "bytes": f.bytes, "sha256": f.sha256} for role, f in self.files.items()},
            "validation": self.validation,
        }


# --- using an export ---------------------------------------------------------------------------


class OnnxTextEncoder:
    """The text half of an open_clip model, from a cached export: ONNX Runtime on the CPU plus a
    `tokenizers` tokenizer. Embeds texts as `OpenClipEncoder.embed_texts` does (text_export checks the
    cosine before it writes an export).

    Every file's size and SHA-256 is checked against the meta before anything runs (the weights are
    hashed on a second thread while the tokenizer and the graph load); TextExportError if one differs.
    """

    modalities = frozenset({TEXT})
    torch_free = True
    device = "cpu"

    def __init__(self, folder: Path, info: ExportInfo, batch_size: int = 32) -> None:
        self.info = info
        self.fingerprint = info.fingerprint
        self.dim = info.dim
        self.batch_size = batch_size
        self.spec = ModelSpec.from_dict(info.model)
        paths = {role: folder / file.name for role, file in info.files.items()}
        for role, path in paths.items():
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise TextExportError(f"{path.name} is missing ({exc.strerror or exc})") from exc
            if size != info.files[role].bytes:
                raise TextExportError(
                    f"{path.name} holds {size} bytes, not the {info.files[role].bytes} its meta records"
                )
        weights = _HashInBackground(paths["weights"])
        try:
            data = {role: _read_checked(paths[role], info.files[role]) for role in ("tokenizer", "graph")}
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(data["tokenizer"].decode("utf-8"))
            self.split = clip_split_pattern(info.special_tokens) if info.tokenizer_kind == CLIP_BPE else None
            self.session = _session(paths["graph"])
        finally:
            digest = weights.result()
        if digest != info.files["weights"].sha256:
            raise TextExportError(f"{paths['weights'].name} does not match the SHA-256 its meta records")
        self.input_name = self.session.get_inputs()[0].name

    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        ids = token_ids(self.tokenizer, texts, self.info.clean, self.split)
        return np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.token_ids(texts[start : start + self.batch_size])
            (vectors,) = self.session.run(None, {self.input_name: tokens})
            chunks.append(normalize_rows(vectors))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def load_text_encoder(
    fingerprint: str, dim: int, cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 32
) -> OnnxTextEncoder | None:
    """The cached export for these weights, or None when there is none, it is for other weights, or it
    is damaged (then the caller loads the full model). Never raises for a bad cache entry."""
    if disabled():
        return None
    folder = cache_folder(cache_dir)
    path = meta_path(folder, fingerprint)
    if not path.is_file():
        log.debug("no text export for fingerprint %s in %s", fingerprint[:12], folder)
        return None
    started = time.perf_counter()
    try:
        info = ExportInfo.read(path)
        if info.fingerprint != fingerprint or info.dim != dim:
            raise TextExportError(
                f"meta is for fingerprint {info.fingerprint[:12]} ({info.dim}-d), not {fingerprint[:12]} ({dim}-d)"
            )
        encoder = OnnxTextEncoder(folder, info, batch_size=batch_size)
    except Exception as exc:  # ONNX Runtime and tokenizers raise their own types for damaged files
        log.info("text export %s not used (%s); loading the full model", path, first_line(exc))
        return None
    log.debug("text export %s loaded in %.3f s", path.name, time.perf_counter() - started)
    return encoder


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(QUERY_THREADS, compute_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads sleep rather than spin: a query process has other work between model calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The graph was optimised when it was exported. Repacking the weights for faster matrix products
    # costs more at start-up (0.2 s for ViT-B-32's text tower) than it saves on a query or two;
    # unpacked, they are read straight from the mapped file.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _read_checked(path: Path, expected: ExportFile) -> bytes:
    data = path.read_bytes()
    if len(data) != expected.bytes or hashlib.sha256(data).hexdigest() != expected.sha256:
        raise TextExportError(f"{path.name} does not match the size and SHA-256 its meta records")
    return data


class _HashInBackground:
    """SHA-256 of a file, computed on a thread (hashlib releases the GIL on large blocks)."""

    def __init__(self, path: Path) -> None:
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = sha256_file(path)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise TextExportError(f"cannot read the weights: {first_line(self._error)}") from self._error
        assert self._digest is not None
        return self._digest


def sha256_file(path: Path) -> str:
    """Hashed from a memory map in one call: hashlib then holds the GIL once, not once per block, so a
    thread hashing the weights is not stalled by the tokenizer loading on the main thread."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()
