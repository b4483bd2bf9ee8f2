"""Pictures without torch: an open_clip image tower exported once to ONNX (fp32 for queries, the int8 form
crawls run), with the model's image transform recorded for image_preprocess.py.

When a crawl has the full model loaded anyway, `export_image_tower` writes the export unless a valid one
of these weights is cached. Nothing is written unless it is exact: the torch-free transform must give the
same pixels as the model's own preprocess on pictures of many shapes and modes, and the fp32 graph's
vectors must have a cosine of at least COSINE_BAR with torch's `encode_image` (as one batch and one picture
at a time). The int8 graph's cosine is recorded; whether a crawl uses it is decided per machine by the
inference-mode check. Files are made in a temporary folder and renamed into place, the meta last.
Set VECSEARCH_IMAGE_ONNX=0 to neither write nor use image exports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import first_line
from .image_onnx import (
    CHUNKED_ROLES,
    ImageExportError,
    ImageExportInfo,
    OnnxImageTower,
    cache_folder,
    chunk_hashes,
    disabled,
    meta_path,
    read_info,
)
from .image_preprocess import PreprocessConfig
from .text_onnx import ExportFile, sha256_file

COSINE_BAR = 0.99999
PIXEL_TOLERANCE = 1e-6  # the transform is reproduced operation for operation: its pixels are equal
log = logging.getLogger(__name__)


def export_image_tower(encoder: Any, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Export an open_clip model's image tower for torch-free picture queries and crawls, unless a valid
    export of these weights is cached. Returns a sentence for the crawl's report when it wrote one, None
    otherwise; never raises (a failed or inexact export is logged and nothing is written)."""
    if disabled():
        return None
    fingerprint = str(getattr(encoder, "fingerprint", ""))
    if not fingerprint or _loadable(fingerprint, cache_dir):
        return None
    started = time.perf_counter()
    what = getattr(encoder, "spec", "this model")
    folder = cache_folder(cache_dir)
    try:
        info = _copy_made(fingerprint, folder) or _export(encoder, folder, cache_dir)
    except ImageExportError as exc:
        log.info("no torch-free image tower for %s: %s", what, exc)
        return None
    except Exception as exc:  # torch.onnx, onnx and onnxruntime raise many types
        log.warning("exporting the image tower of %s failed: %s", what, first_line(exc))
        return None
    _made[fingerprint] = folder
    check = info.validation
    note = (
        f"image tower exported for torch-free picture queries and crawls in {time.perf_counter() - started:.1f} s "
        f"(pixels equal on {check['pictures']} pictures, min cosine {check['min_cosine']:.6f}; "
        f"int8 {check['int8_min_cosine']:.4f})"
    )
    log.info("%s", note)
    return note


# Exports this process made, by fingerprint: another cache folder gets a copy of the files instead of a new
# export (one process crawling into several caches, or a test suite with many).
_made: dict[str, Path] = {}


def _copy_made(fingerprint: str, folder: Path) -> ImageExportInfo | None:
    """Copy an export this process made of the same weights into `folder`; None if there is none."""
    source = _made.get(fingerprint)
    if source is None or source == folder:
        return None
    try:
        meta = json.loads(meta_path(source, fingerprint).read_text())
        info = ImageExportInfo.read(meta_path(source, fingerprint))
        with _staging(folder, fingerprint) as staging:
            for file in info.files.values():
                shutil.copyfile(source / file.name, staging / file.name)
                if (staging / file.name).stat().st_size != file.bytes:
                    return None
            _publish(staging, folder, info, meta)
    except (OSError, ValueError, ImageExportError):
        return None
    return info


def _loadable(fingerprint: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    info = read_info(fingerprint, cache_dir)
    if info is None:
        return False
    try:
        OnnxImageTower(cache_folder(cache_dir), info).session("fp32")
    except Exception:  # a damaged file or a graph this ONNX Runtime cannot load: export again
        return False
    return True


def check_pictures() -> list[Image.Image]:
    """Pictures of the shapes and modes a transform can get wrong: wide, tall, tiny, square, odd sizes,
    palette, 16-bit, grey, with alpha. Gradients with noise, so that every resampling tap counts."""
    rng = np.random.default_rng(7)
    pictures = []
    for width, height in [(640, 480), (480, 640), (1000, 120), (90, 700), (17, 13), (224, 224), (225, 223)]:
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
        noisy = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        pictures.append(Image.fromarray(noisy, "RGB"))
    grey = rng.integers(0, 256, (200, 300), dtype=np.uint8)
    pictures.append(Image.fromarray(grey, "L").convert("P", palette=Image.Palette.ADAPTIVE))
    pictures.append(Image.fromarray(grey, "L"))
    pictures.append(Image.fromarray(rng.integers(0, 65536, (200, 300), dtype=np.uint16)))
    pictures.append(Image.fromarray(rng.integers(0, 256, (256, 200, 4), dtype=np.uint8), "RGBA"))
    return pictures


def _export(encoder: Any, folder: Path, cache_dir: str | os.PathLike[str] | None) -> ImageExportInfo:
    import onnxruntime
    import torch

    from .inference import OnnxImageTower as TorchInt8Tower
    from .inference import _ImageTower, _quiet_root_logger
    from .open_clip_encoder import OpenClipEncoder, _preprocess_cfg
    from .text_export import _optimize

    if not isinstance(encoder, OpenClipEncoder):
        raise ImageExportError("only open_clip models are exported")
    model = encoder.model
    if next(model.parameters()).device.type != "cpu":
        raise ImageExportError("the model runs on an accelerator; exports are made from CPU crawls")
    try:
        transform = PreprocessConfig.from_dict(_preprocess_cfg(model))
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageExportError(f"its image transform is not reproduced: {exc}") from exc
    pictures = check_pictures()
    pixels = np.stack([transform(p) for p in pictures])
    for picture, ours in zip(pictures, pixels, strict=True):
        difference = float(np.max(np.abs(encoder.preprocess(picture).numpy() - ours)))
        if not difference <= PIXEL_TOLERANCE:
            raise ImageExportError(
                f"the torch-free transform differs from the model's on a {picture.mode} {picture.size} picture "
                f"(by {difference:.2g})"
            )
    with torch.inference_mode():
        exact = model.encode_image(torch.from_numpy(pixels), normalize=True).float().numpy()
    fingerprint = str(encoder.fingerprint)
    height, width = transform.size
    with _staging(folder, fingerprint) as staging:
        inline = staging / "inline.onnx"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            # Attention's fused inference kernel has no ONNX form: trace the plain operations instead.
            torch.backends.mha.set_fastpath_enabled(False)
            with torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
                warnings.simplefilter("ignore")  # tracer chatter about shapes that are fixed anyway
                torch.onnx.export(
                    _ImageTower(model).eval(),
                    (torch.zeros(1, 3, height, width),),
                    str(inline),
                    input_names=["pixels"],
                    output_names=["vectors"],
                    dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}},
                    dynamo=False,
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        # Named by content, so that two crawls exporting the same weights at once write the same files.
        stem = f"image-{fingerprint}-{sha256_file(inline)[:16]}"
        graph, weights = f"{stem}.onnx", f"{stem}.weights"
        _optimize(inline, staging / graph, weights)
        inline.unlink()
        # The int8 graph the torch path runs (made once per weights), with ONNX Runtime's portable graph
        # optimisations done now and saved: a crawl's session then starts in half the time.
        int8_source = TorchInt8Tower.export_int8(model, fingerprint, Path(cache_dir) if cache_dir else None)
        int8 = f"image-{fingerprint}-{sha256_file(int8_source)[:16]}.int8.onnx"
        _optimize_inline(int8_source, staging / int8)
        files = {
            role: ExportFile(name, (staging / name).stat().st_size, sha256_file(staging / name))
            for role, name in (("graph", graph), ("weights", weights), ("int8", int8))
        }
        info = ImageExportInfo(
            chunks={role: chunk_hashes(staging / files[role].name) for role in CHUNKED_ROLES},
            fingerprint=fingerprint,
            model=encoder.spec.to_dict(),
            dim=int(encoder.dim),
            logit_scale=float(encoder.logit_scale),
            input_size=int(encoder.input_size or max(height, width)),
            preprocess=transform.to_dict(),
            files=files,
        )
        tower = OnnxImageTower(staging, info)
        cosines = [np.sum(tower.run(pixels) * exact, axis=1)]
        cosines += [np.sum(tower.run(pixels[i : i + 1]) * exact[i], axis=1) for i in range(len(pixels))]
        min_cosine = float(np.min(np.concatenate(cosines)))
        if not min_cosine >= COSINE_BAR:
            raise ImageExportError(f"its ONNX vectors differ from torch's (min cosine {min_cosine:.6f} < {COSINE_BAR})")
        int8_cosine = float(np.min(np.sum(tower.run(pixels, "onnx-int8") * exact, axis=1)))
        del tower  # its sessions map the staged files
        info = replace(
            info,
            validation={
                "pictures": len(pictures),
                "pixels_equal": True,
                "min_cosine": round(min_cosine, 7),
                "bar": COSINE_BAR,
                "int8_min_cosine": round(int8_cosine, 5),
            },
        )
        meta = info.to_dict()
        meta.update(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            versions={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        )
        _publish(staging, folder, info, meta)
    return info


def _optimize_inline(source: Path, target: Path) -> None:
    """ONNX Runtime's hardware-independent optimisations (up to the extended level), saved in one file."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    if not target.is_file():
        raise ImageExportError("ONNX Runtime did not save the optimised int8 graph")


@contextlib.contextmanager
def _staging(folder: Path, fingerprint: str) -> Iterator[Path]:
    """A temporary folder beside the cache entries (renames into place are atomic), removed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".image-{fingerprint}.{os.getpid()}.{threading.get_ident()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path, info: ImageExportInfo, meta: dict[str, Any]) -> None:
    """Move the files into place, then the meta (which makes them an export), then drop the files of
    the export it replaced."""
    previous = meta_path(folder, info.fingerprint)
    try:
        replaced = {f.name for f in ImageExportInfo.read(previous).files.values()} if previous.is_file() else set()
    except ImageExportError:
        replaced = set()
    for file in info.files.values():
        os.replace(staging / file.name, folder / file.name)
    (staging / previous.name).write_text(json.dumps(meta, indent=2))
    os.replace(staging / previous.name, previous)
    for name in replaced - {f.name for f in info.files.values()}:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
