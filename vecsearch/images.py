"""Decode image files into the RGB pictures that encoders expect, refusing what would hurt.

One bad file must never stop a crawl, so every failure becomes an `ImageError` carrying a short reason
that the crawl report shows next to the path.

Pictures up to PIL's own size limit are decoded by PIL. Bigger ones (openclipart has 623-megapixel PNGs)
are shrunk by libvips while they stream in, straight to the size the caller needs, so memory stays
bounded whatever the picture's size; only pictures above a hard cap are refused.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, first_line

if TYPE_CHECKING:
    import pyvips

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# The hard cap: pictures claiming more pixels are refused before any decoding. Memory is bounded at any
# size (big pictures stream through libvips), so the cap bounds time: libvips decodes a PNG at roughly
# 120 MP per CPU-second (openclipart's 623 MP stop sign: 5 s), so 1,000 MP holds a crawl worker for about
# 8 s. That is above the largest real pictures we know (those 623 MP stop signs), while a claim of tens
# of gigapixels, which a file of a few kilobytes can make, is a decompression bomb.
DEFAULT_MAX_MEGAPIXELS = 1000.0

# PIL's own decompression-bomb limit (89.5 MP; it refuses to open twice that). Above it, PIL would hold
# the whole picture and its converted copies (RGBA at 89 MP is already 358 MB): libvips streams instead.
STREAM_ABOVE_MEGAPIXELS = 89_478_485 / 1e6

# A streamed picture is decoded to at most this many pixels (48 MB as RGB): enough for any model, and
# what is returned when the caller asks for no particular size.
STREAMED_MAX_MEGAPIXELS = 16.0

# libvips' loaders that decode row by row (or shrink while loading); a GIF or BMP above the PIL limit
# would be held whole in memory, so it is refused instead.
_STREAMING_LOADERS = ("pngload", "jpegload", "webpload", "tiffload")
_ONLY_STREAMED = f"above {STREAM_ABOVE_MEGAPIXELS:.0f} MP only PNG, JPEG, WebP and TIFF pictures are decoded"
_UNKNOWN_TO_VIPS = "cannot decode image (not a known image format)"

ImageSource = str | Path | bytes | BinaryIO


def is_image_path(path: str | Path) -> bool:
    """True when the name ends in one of the supported image extensions, in any letter case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    source: ImageSource,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    min_size: int | None = None,
    *,
    stream_above_megapixels: float = STREAM_ABOVE_MEGAPIXELS,
) -> Image.Image:
    """Open, orient and convert an image to RGB; transparent parts become white (clip art reads better).

    With `min_size`, a JPEG is decoded at the smallest of 1/8, 1/4, 1/2 or full scale whose sides are
    all at least that many pixels (libjpeg scales while it decodes): a 12 MP photo meant for a 224-pixel
    model decodes several times faster and in a fraction of the memory.

    Pictures above `stream_above_megapixels` go through libvips (see `load_streamed`): shrunk while they
    are read to a shorter side of `min_size`, and never to more than `STREAMED_MAX_MEGAPIXELS`.
    Pictures above `max_megapixels` are refused.
    """
    stream: str | Path | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    start = 0
    if not isinstance(stream, (str, Path)):
        try:
            start = stream.tell()
        except (AttributeError, OSError):  # a pipe: read it into memory, as PIL itself would
            stream = io.BytesIO(stream.read())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            bomb: Image.DecompressionBombError | None = None
            try:
                image = Image.open(stream)
            except Image.DecompressionBombError as exc:
                image, bomb = None, exc  # PIL will not even open it: libvips reads its size
            if image is None or image.width * image.height > stream_above_megapixels * 1e6:
                if image is not None:
                    if isinstance(stream, (str, Path)):
                        image.close()
                    _check_size(image.width, image.height, max_megapixels)
                if not isinstance(stream, (str, Path)):
                    stream.seek(start)
                try:
                    return load_streamed(stream, max_megapixels, min_size)
                except ImageError as exc:
                    if str(exc) != _UNKNOWN_TO_VIPS:
                        raise
                    # PIL knows the format (BMP, ...) but will not decode it at this size; libvips cannot
                    raise _too_large_for_pil(image, bomb, max_megapixels) from exc
            _check_size(image.width, image.height, max_megapixels)
            if min_size and image.format == "JPEG":
                image.draft(None, (min_size, min_size))
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not a readable image") from exc
    except FileNotFoundError as exc:
        raise ImageError("file not found") from exc
    except PermissionError as exc:
        raise ImageError("permission denied") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"cannot decode image ({first_line(exc)})") from exc


def _check_size(width: int, height: int, max_megapixels: float) -> None:
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageError(f"image too large ({width}x{height}, {megapixels:.0f} MP > limit {max_megapixels:g} MP)")


def _too_large_for_pil(image: Image.Image | None, bomb: Exception | None, max_megapixels: float) -> ImageError:
    if image is not None:
        return ImageError(f"image too large ({image.width}x{image.height}: {_ONLY_STREAMED})")
    claimed = re.search(r"\((\d+) pixels\)", str(bomb))
    megapixels = int(claimed.group(1)) / 1e6 if claimed else float("nan")
    if megapixels > max_megapixels:
        return ImageError(f"image too large ({megapixels:.0f} MP > limit {max_megapixels:g} MP)")
    return ImageError(f"image too large ({megapixels:.0f} MP: {_ONLY_STREAMED})")


def streamed_size(width: int, height: int, min_size: int | None) -> int:
    """The longer side a streamed picture is shrunk to: its shorter side `min_size` (never enlarged),
    and at most `STREAMED_MAX_MEGAPIXELS` in all."""
    scale = 1.0 if not min_size else min(1.0, min_size / min(width, height))
    scale = min(scale, math.sqrt(STREAMED_MAX_MEGAPIXELS * 1e6 / (width * height)))
    return max(1, math.ceil(max(width, height) * scale - 1e-6))  # 671.9999999 is 672


def load_streamed(
    source: ImageSource, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_size: int | None = None
) -> Image.Image:
    """Decode a picture of any size with bounded memory: libvips shrinks it while it streams in.

    Its size is read from the header first and checked against `max_megapixels`; transparency becomes
    white and the EXIF orientation is applied, as on the PIL path.
    """
    import pyvips

    try:
        with _vips_source(source) as src:
            header = pyvips.Image.new_from_source(src, "", access="sequential", fail_on="error")
            width, height = header.width, header.height
            _check_size(width, height, max_megapixels)
            loader = str(header.get("vips-loader")) if "vips-loader" in header.get_fields() else ""
            if not loader.startswith(_STREAMING_LOADERS):
                raise ImageError(f"image too large ({width}x{height}: {_ONLY_STREAMED})")
            size = streamed_size(width, height, min_size)
            if header.bands == 1 and header.format != "uchar":
                return _high_depth_thumbnail(header, size)
            return vips_thumbnail(src, size)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError("file not found") from exc
    except PermissionError as exc:
        raise ImageError("permission denied") from exc
    except OSError as exc:
        raise ImageError(f"cannot decode image ({first_line(exc)})") from exc
    except pyvips.Error as exc:
        raise ImageError(f"cannot decode image ({_vips_reason(exc)})") from exc


def vips_thumbnail(source: Any, size: int) -> Image.Image:
    """Shrink a picture with libvips while it streams in, to fit a `size`×`size` box (never enlarged),
    as RGB on white with its EXIF orientation applied.

    `source` is a path or a `pyvips.Source`. Reading from a source we opened, never by file name, keeps
    libvips' operation cache from handing back a thumbnail of a file's old content.
    """
    import pyvips

    if isinstance(source, (str, Path)):
        with _vips_source(source) as src:
            return vips_thumbnail(src, size)
    # fail_on given as a loader option as well: on its own, thumbnail_source lets a truncated file through
    thumb = pyvips.Image.thumbnail_source(
        source, size, height=size, size="down", fail_on="error", option_string="fail_on=error"
    )
    return vips_to_pil(thumb)


def _high_depth_thumbnail(image: pyvips.Image, size: int) -> Image.Image:
    """16-bit or float greyscale, shrunk while it streams and then scaled by its own range, as the PIL
    path does (libvips' thumbnail would first cut it to 8 bits, flattening a narrow range to a few greys)."""
    scale = size / max(image.width, image.height)
    if scale < 1:
        image = image.resize(scale)
    return vips_to_pil(image.copy_memory().autorot())


def vips_to_pil(image: pyvips.Image) -> Image.Image:
    """A libvips image as an 8-bit RGB PIL picture: CMYK and 16-bit colour converted, 16-bit and float
    greyscale scaled by its own range (as `to_rgb` does), transparent parts on white."""
    if image.interpretation == "cmyk":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        if image.interpretation == "rgb16":
            image = image.colourspace("srgb")
        elif image.interpretation == "grey16" and image.bands == 2:
            image = image.colourspace("b-w")
        if image.format != "uchar":
            image = _range_to_uchar(image)
    if image.bands > 4:
        image = image.extract_band(0, n=4)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.bands]
    pixels = np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))
    return to_rgb(Image.fromarray(pixels.squeeze(-1) if image.bands == 1 else pixels, mode))


def _range_to_uchar(image: pyvips.Image) -> pyvips.Image:
    low, high = image.min(), image.max()
    if high <= low:
        return (image * 0).cast("uchar")
    return ((image - low) * (255.0 / (high - low))).cast("uchar")


class _vips_source:
    """A `pyvips.Source` over a path (opened here: a FIFO or device is refused, not waited on), bytes or
    a binary stream, closed on exit."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._fd: int | None = None

    def __enter__(self) -> Any:
        import pyvips

        source = self._source
        if isinstance(source, (str, Path)):
            self._fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                os.close(self._fd)
                raise ImageError("not a regular file")
            return pyvips.Source.new_from_descriptor(self._fd)
        data = source if isinstance(source, bytes) else source.read()
        return pyvips.Source.new_from_memory(data)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # libvips holds its own duplicate for as long as it needs one


def _vips_reason(exc: Exception) -> str:
    detail = str(getattr(exc, "detail", "") or "")
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    if any("not in a known format" in line for line in lines):
        return "not a known image format"
    return (lines[0] if lines else first_line(exc))[:300]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB, transparent parts on white: what every model here is shown."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float greyscale to 8 bits by its own range; PIL's convert would clip it white."""
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
    return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")


DECODE_OVERSAMPLE = 3


def decode_size(encoder: Any) -> int | None:
    """The smallest side a picture must keep when decoded for this encoder (None: decode at full size).

    Three times the model's input: reduced JPEG decoding then leaves the model's own resize enough
    pixels to filter, so the vectors match full decoding (at twice, a fine-textured test picture fell to
    cosine 0.998; tests/test_inference.py and scripts/bench_indexing.py measure it).
    """
    size = getattr(encoder, "input_size", None)
    return DECODE_OVERSAMPLE * int(size) if size else None
