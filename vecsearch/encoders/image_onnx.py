"""Pictures without torch: the reading side of an exported image tower (image_export.py writes it).

An export is an fp32 ONNX graph with its weights in a file beside it (for queries, and for crawls that
ask for fp32), the int8 graph that crawls run, and a JSON meta that records the model's image transform
(reproduced by image_preprocess.py), its dimension and temperature, and each file's size and SHA-256.
A file is hashed before its graph runs, so a partial, damaged or foreign export is never used (the caller
loads the full model instead). Only ONNX Runtime, NumPy and PIL are imported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, first_line
from .base import compute_threads, normalize_rows
from .image_preprocess import PreprocessConfig
from .inference import ModeChooser
from .text_onnx import ExportFile, _read_checked

FORMAT_VERSION = 1
DISABLE_ENV = "VECSEARCH_IMAGE_ONNX"
FILE_ROLES = ("graph", "weights", "int8")
CHUNKED_ROLES = ("weights", "int8")  # large files: hashed in blocks, on every core at once
CHUNK_BYTES = 16 << 20
log = logging.getLogger(__name__)


class ImageExportError(ModelError):
    """An image export that cannot be made, or a cached one that cannot be trusted."""


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    from .inference import onnx_cache_folder

    return onnx_cache_folder(cache_dir) / "image"


def meta_path(folder: Path, fingerprint: str) -> Path:
    return folder / f"image-{fingerprint}.json"


@dataclass(frozen=True)
class ImageExportInfo:
    """An image export's meta."""

    fingerprint: str
    model: dict[str, Any]
    dim: int
    logit_scale: float
    input_size: int  # the model's input side, for reduced JPEG decoding
    preprocess: dict[str, Any]  # PreprocessConfig.to_dict()
    files: dict[str, ExportFile]  # by role: graph, weights (fp32) and int8
    chunks: dict[str, list[str]]  # by role (CHUNKED_ROLES): the SHA-256 of each CHUNK_BYTES block
    validation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ImageExportInfo:
        try:
            data = json.loads(path.read_text())
            if data.get("format_version") != FORMAT_VERSION:
                raise ImageExportError(f"format version {data.get('format_version')}, not {FORMAT_VERSION}")
            info = cls(
                fingerprint=str(data["fingerprint"]),
                model=dict(data["model"]),
                dim=int(data["dim"]),
                logit_scale=float(data["logit_scale"]),
                input_size=int(data["input_size"]),
                preprocess=dict(data["preprocess"]),
                files={
                    role: ExportFile(str(f["name"]), int(f["bytes"]), str(f["sha256"]))
                    for role, f in data["files"].items()
                },
                chunks={role: [str(h) for h in data["files"][role]["chunks"]] for role in CHUNKED_ROLES},
                validation=dict(data.get("validation", {})),
            )
            PreprocessConfig.from_dict(info.preprocess)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ImageExportError(f"unreadable meta {path.name}: {first_line(exc)}") from exc
        if sorted(info.files) != sorted(FILE_ROLES):
            raise ImageExportError(f"meta {path.name} lists the files {sorted(info.files)}")
        for file in info.files.values():
            if Path(file.name).name != file.name or not file.name.startswith(f"image-{info.fingerprint}-"):
                raise ImageExportError(f"meta {path.name} names a file outside its export: {file.name!r}")
        return info

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "dim": self.dim,
            "logit_scale": self.logit_scale,
            "input_size": self.input_size,
            "preprocess": self.preprocess,
            "files": {
                role: {"name": f.name, "bytes": f.bytes, "sha256": f.sha256}
                | ({"chunks": self.chunks[role]} if role in self.chunks else {})
                for role, f in self.files.items()
            },
            "validation": self.validation,
        }


def read_info(fingerprint: str, cache_dir: str | os.PathLike[str] | None = None) -> ImageExportInfo | None:
    """The meta of the export of these weights, if there is a readable one whose files have the sizes it
    records (their hashes are checked when a graph loads)."""
    if disabled():
        return None
    folder = cache_folder(cache_dir)
    path = meta_path(folder, fingerprint)
    if not path.is_file():
        return None
    try:
        info = ImageExportInfo.read(path)
        if info.fingerprint != fingerprint:
            raise ImageExportError(f"meta is for fingerprint {info.fingerprint[:12]}, not {fingerprint[:12]}")
        for file in info.files.values():
            size = (folder / file.name).stat().st_size
            if size != file.bytes:
                raise ImageExportError(f"{file.name} holds {size} bytes, not the {file.bytes} its meta records")
    except (ImageExportError, OSError) as exc:
        log.warning("image export %s not used (%s); loading the full model", path.name, first_line(exc))
        return None
    return info


class OnnxImageTower:
    """The exported image tower: an fp32 and an int8 ONNX Runtime session, each made on first use after
    its files were checked against the meta (the weights are hashed on a thread while the graph loads)."""

    def __init__(self, folder: Path, info: ImageExportInfo) -> None:
        self.folder = folder
        self.info = info
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def session(self, mode: str) -> Any:
        with self._lock:
            if mode not in self._sessions:
                self._sessions[mode] = self._load(mode)
            return self._sessions[mode]

    def _load(self, mode: str) -> Any:
        role = {"fp32": "weights", "onnx-int8": "int8"}.get(mode)
        if role is None:
            raise ValueError(f"the exported image tower runs fp32 or onnx-int8, not {mode}")
        checked = _ChunksInBackground(self.folder / self.info.files[role].name)
        try:
            if mode == "fp32":
                graph = self.info.files["graph"]
                _read_checked(self.folder / graph.name, graph)
                session = _session(self.folder / graph.name, query=True)
        finally:
            hashes = checked.result()
        if hashes != self.info.chunks[role]:
            raise ImageExportError(f"{self.info.files[role].name} does not match the SHA-256 its meta records")
        # The int8 graph is checked before ONNX Runtime reads it; the fp32 weights are mapped, and checked
        # while the graph loaded.
        return session if mode == "fp32" else _session(self.folder / self.info.files[role].name, query=False)

    def run(self, pixels: np.ndarray, mode: str = "fp32") -> np.ndarray:
        session = self.session(mode)
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(pixels, dtype=np.float32)}
        (vectors,) = session.run(None, feed)
        return normalize_rows(vectors)


class OnnxInference(ModeChooser):
    """The crawl's mode choice over the exported graphs: fp32, or int8 where it matches fp32."""

    engine = "onnxruntime"
    runtimes = ("onnxruntime",)

    def __init__(self, tower: OnnxImageTower, mode: str, cache_dir: str | os.PathLike[str] | None) -> None:
        if mode not in ("auto", "fp32", "onnx-int8"):
            raise ValueError(f"the exported image tower runs fp32 or onnx-int8, not {mode}")
        super().__init__(tower.info.fingerprint, mode, True, cache_dir)
        self.tower = tower

    def candidates(self) -> list[str]:
        return ["onnx-int8"]

    def run_fp32(self, pixels: Any) -> np.ndarray:
        return self.tower.run(pixels, "fp32")

    def make_runner(self, mode: str) -> Callable[[Any], np.ndarray]:
        if mode != "onnx-int8":
            raise ValueError(f"unknown inference mode {mode!r}")
        self.tower.session(mode)  # load (and check) it now: a damaged file fails here, not mid-batch
        return lambda pixels: self.tower.run(pixels, mode)


def _session(graph: Path, query: bool) -> Any:
    """A session for a checked graph. The fp32 graph was optimised when it was exported and its weights
    are mapped from their file: loaded as it is, it starts in tens of milliseconds. The int8 graph is
    optimised here (a crawl runs it for minutes, start-up matters less)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = compute_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads sleep rather than spin: decoding runs on the same cores between model calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if query:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def chunk_hashes(path: Path, chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """The SHA-256 of each block of a file, hashed on every core at once (hashlib lets go of the GIL on
    large blocks): a 350 MB tower in half the time of one hash over the whole file on two cores."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return []
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)

            def digest(start: int) -> str:
                with view[start : start + chunk_bytes] as block:
                    return hashlib.sha256(block).hexdigest()

            try:
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
                with ThreadPoolExecutor(max_workers=max(1, cores), thread_name_prefix="vecsearch-hash") as pool:
                    return list(pool.map(digest, range(0, size, chunk_bytes)))
            finally:
                view.release()


class _ChunksInBackground:
    """`chunk_hashes` of a file, computed while the caller does other work."""

    def __init__(self, path: Path) -> None:
        self._hashes: list[str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._hashes = chunk_hashes(path)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def result(self) -> list[str]:
        self._thread.join()
        if self._error is not None:
            raise ImageExportError(f"cannot read the export: {first_line(self._error)}") from self._error
        assert self._hashes is not None
        return self._hashes
