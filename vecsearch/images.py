"""Decode image files into the RGB pictures that encoders expect, refusing what would hurt.

One bad file must never stop a crawl, so every failure becomes an `ImageError` carrying a short reason
that the crawl report shows next to the path.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, first_line

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)

# Bigger pictures are refused before decoding: a 180-megapixel RGB image already needs ~540 MB.
DEFAULT_MAX_MEGAPIXELS = 180.0

ImageSource = str | Path | bytes | BinaryIO


def is_image_path(path: str | Path) -> bool:
    """True when the name ends in one of the supported image extensions, in any letter case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(
    source: ImageSource, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_size: int | None = None
) -> Image.Image:
    """Open, orient and convert an image to RGB; transparent parts become white (clip art reads better).

    With `min_size`, a JPEG is decoded at the smallest of 1/8, 1/4, 1/2 or full scale whose sides are
    all at least that many pixels (libjpeg scales while it decodes): a 12 MP photo meant for a 224-pixel
    model decodes several times faster and in a fraction of the memory.
    """
    stream: str | Path | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            megapixels = width * height / 1e6
            if megapixels > max_megapixels:
                raise ImageError(
                    f"image too large ({width}x{height}, {megapixels:.0f} MP > limit {max_megapixels:g} MP)"
                )
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB, transparent parts on white: what every model here is shown."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
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
