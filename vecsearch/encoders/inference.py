"""Faster CPU inference for image towers, each mode checked against exact fp32 before it is trusted.

Modes: `fp32` (PyTorch, exact), `bf16` (PyTorch autocast; only where the CPU computes bf16 natively) and
`onnx-int8` (the image tower exported to ONNX once per weights, cached, and run by ONNX Runtime with
dynamically quantised int8 weights). With `auto`, the first 16 pictures a crawl
embeds are run in fp32 and in each faster mode, fastest first; the first mode whose vectors all have a
cosine of at least 0.999 with fp32 on those very pictures, and that is faster, embeds the rest (the
checked pictures keep their exact fp32 vectors). Nothing passes: fp32. The check is reported, and remembered
per weights, CPU and runtime versions (mode_memory.py): later crawls take the same mode without checking.

Only matrix products are quantised (convolutions stay fp32: quantising them cost ResNet towers more than
the bar allows). Activations are quantised per batch, so a picture's int8 vector moves slightly with its
batch-mates; the check against fp32 covers that spread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import compute_threads, normalize_rows

MODES = ("auto", "fp32", "bf16", "onnx-int8")
COSINE_BAR = 0.999
CHECK_PICTURES = 16  # pictures of the first batch that every mode embeds for the check against fp32
SETTLE_BATCH = 8  # pictures needed to choose an inference mode: enough to trust the cosine check
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModeCheck:
    """How a mode compared with fp32 on the pictures of the first batch."""

    mode: str
    min_cosine: float
    images: int
    seconds: float
    passed: bool


def cpu_has_native_bf16() -> bool:
    """bf16 only pays where the CPU multiplies it natively (AVX-512 BF16 or AMX); elsewhere it is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def onnx_cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exported ONNX graphs are cached: `cache_dir`, else $VECSEARCH_CACHE_DIR, else
    ~/.cache/vecsearch; in its `onnx` folder."""
    from . import hub

    return hub.vecsearch_cache(cache_dir) / "onnx"


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class ModeChooser:
    """Runs an image tower in the chosen mode; `auto` settles on a mode at the first batch, or takes the
    decision remembered for these weights on this CPU with these runtimes (`mode_memory`)."""

    engine = ""  # what computes the vectors, part of the remembered decision's key
    runtimes: tuple[str, ...] = ()  # the packages whose versions are part of it too

    def __init__(self, fingerprint: str, mode: str, on_cpu: bool, cache_dir: str | os.PathLike[str] | None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r} (choose from {', '.join(MODES)})")
        self.fingerprint = fingerprint
        self.requested = mode
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.checks: list[ModeCheck] = []
        self.remembered = False
        self._runners: dict[str, Callable[[Any], np.ndarray]] = {"fp32": self.run_fp32}
        if mode == "auto":
            self.mode: str | None = None if on_cpu else "fp32"  # accelerators: exact fp32, already fast
        else:
            self.mode = mode

    def candidates(self) -> list[str]:
        raise NotImplementedError

    def run_fp32(self, pixels: Any) -> np.ndarray:
        raise NotImplementedError

    def make_runner(self, mode: str) -> Callable[[Any], np.ndarray]:
        raise NotImplementedError

    def _runner(self, mode: str) -> Callable[[Any], np.ndarray]:
        if mode not in self._runners:
            self._runners[mode] = self.make_runner(mode)
        return self._runners[mode]

    # --- running -------------------------------------------------------------------------------

    def run(self, pixels: Any) -> np.ndarray:
        """Unit vectors for a batch of preprocessed pictures. Before a mode is settled, a batch of fewer
        than SETTLE_BATCH pictures runs in fp32 (too few to check on), unless a decision is remembered."""
        if self.mode is None and not self._recall():
            if len(pixels) < SETTLE_BATCH:
                return self.run_fp32(pixels)
            return self._settle(pixels)
        assert self.mode is not None
        return self._runner(self.mode)(pixels)

    def decision_key(self) -> dict[str, Any]:
        from .mode_memory import decision_key, runtime_versions

        return decision_key(self.fingerprint, self.engine, runtime_versions(*self.runtimes))

    def recalled_mode(self) -> str | None:
        """The mode decided earlier for the same weights, CPU and runtimes, if it can run here."""
        from .mode_memory import recall

        entry = recall(self.decision_key(), self.cache_dir)
        if entry is None or (entry["mode"] != "fp32" and entry["mode"] not in self.candidates()):
            return None
        return str(entry["mode"])

    def _recall(self) -> bool:
        """Take the remembered decision, if there is one."""
        mode = self.recalled_mode()
        if mode is None:
            return False
        self.mode, self.remembered = mode, True
        log.info("inference mode %s, as checked by an earlier crawl on this machine", mode)
        return True

    def _settle(self, pixels: Any) -> np.ndarray:
        """Check the faster modes on the first CHECK_PICTURES pictures; embed the batch with the winner."""
        from .mode_memory import remember

        sample = pixels[:CHECK_PICTURES]
        self.run_fp32(sample[:1])  # warm-up, as every mode gets: compare speeds, not first-call set-up
        started = time.perf_counter()
        exact = self.run_fp32(sample)
        fp32_seconds = time.perf_counter() - started
        self.checks.append(ModeCheck("fp32", 1.0, len(exact), fp32_seconds, True))
        self.mode = "fp32"
        for mode in self.candidates():
            try:
                runner = self._runner(mode)
                runner(sample[:1])  # warm-up: one-off set-up must not count as its speed
                started = time.perf_counter()
                fast = runner(sample)
                seconds = time.perf_counter() - started
            except Exception as exc:  # a mode that cannot run here is skipped, never fatal
                log.info("inference mode %s unavailable: %s", mode, exc)
                self._runners.pop(mode, None)
                continue
            cosine = float(np.min(np.sum(fast * exact, axis=1)))
            passed = cosine >= COSINE_BAR and seconds < fp32_seconds
            self.checks.append(ModeCheck(mode, cosine, len(exact), seconds, passed))
            if passed:
                self.mode = mode
                break
            self._runners.pop(mode, None)  # not used: free its session
        remember(self.decision_key(), self.mode, [check.__dict__ for check in self.checks], self.cache_dir)
        if len(pixels) <= len(sample):
            return exact
        return np.concatenate([exact, self._runner(self.mode)(pixels[len(sample) :])])

    def describe(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "mode": self.mode,
            "engine": self.engine,
            "remembered": self.remembered,
            "checks": [check.__dict__ for check in self.checks],
        }


class ImageInference(ModeChooser):
    """An open_clip image tower in PyTorch: fp32, bf16, or the int8 ONNX graph exported from it."""

    engine = "torch"
    runtimes = ("torch", "onnxruntime")

    def __init__(
        self,
        model: Any,
        device: str,
        fingerprint: str,
        mode: str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        on_cpu = str(device).startswith("cpu")
        super().__init__(fingerprint, mode, on_cpu, cache_dir)
        self.model = model
        self.device = device
        if mode in ("bf16", "onnx-int8") and not on_cpu:
            raise ValueError(f"inference mode {mode} runs on the CPU; on {device} use fp32 (or auto)")

    def candidates(self) -> list[str]:
        """Faster modes worth trying here, fastest first (as measured by scripts/bench_indexing.py)."""
        found = []
        if onnxruntime_available():
            found.append("onnx-int8")
        if cpu_has_native_bf16():
            found.append("bf16")
        return found

    def run_fp32(self, pixels: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.encode_image(pixels.to(self.device), normalize=True).float().cpu().numpy()

    def _bf16(self, pixels: Any) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            vectors = self.model.encode_image(pixels, normalize=False).float()
        return normalize_rows(vectors.numpy())

    def make_runner(self, mode: str) -> Callable[[Any], np.ndarray]:
        if mode == "bf16":
            return self._bf16
        if mode == "onnx-int8":
            return OnnxImageTower(self.model, self.fingerprint, self.cache_dir).run
        raise ValueError(f"unknown inference mode {mode!r}")


class OnnxImageTower:
    """The image tower as an int8 ONNX Runtime session, exported once per weights and cached."""

    def __init__(self, model: Any, fingerprint: str, cache_dir: Path | None) -> None:
        import onnxruntime

        path = self.export_int8(model, fingerprint, cache_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = compute_threads()
        options.log_severity_level = 3
        # Idle threads sleep rather than spin: decoding runs on the same cores between model calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @staticmethod
    def export_int8(model: Any, fingerprint: str, cache_dir: Path | None) -> Path:
        """The int8 graph of these weights: exported and quantised once, then taken from the cache."""
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic

        folder = onnx_cache_folder(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.blake2b(f"{fingerprint}:{torch.__version__}".encode(), digest_size=8).hexdigest()
        target = folder / f"image-tower-{key}-int8.onnx"
        if target.is_file():
            return target
        size = model.visual.image_size
        height, width = size if isinstance(size, (tuple, list)) else (size, size)
        fp32_path = folder / f".{target.stem}.{os.getpid()}.fp32.onnx"
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            # Attention's fused inference kernel has no ONNX form: trace the plain operations instead.
            torch.backends.mha.set_fastpath_enabled(False)
            with torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
                warnings.simplefilter("ignore")  # tracer chatter about shapes that are fixed anyway
                torch.onnx.export(
                    _ImageTower(model).eval(),
                    (torch.zeros(1, 3, height, width),),
                    str(fp32_path),
                    input_names=["pixels"],
                    output_names=["vectors"],
                    dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}},
                    dynamo=False,
                )
                quantize_dynamic(
                    str(fp32_path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
                )
            os.replace(tmp, target)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
            for leftover in (fp32_path, tmp):
                leftover.unlink(missing_ok=True)
        return target

    def run(self, pixels: Any) -> np.ndarray:
        array = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        (vectors,) = self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})
        return normalize_rows(vectors)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice to the root logger; a user indexing photos needs none of it."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _ImageTower(model: Any) -> Any:  # noqa: N802 - a module class defined on use, so torch loads lazily
    """open_clip's `encode_image` as a module's forward: the graph that is exported."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: Any) -> Any:
            return self.model.encode_image(pixels, normalize=False)

    return ImageTower()
