"""Small JPEG previews of indexed pictures, made on demand and kept in a bounded cache.

Pictures are decoded with the same safe loader as a crawl (reduced JPEG decoding, huge pictures streamed
through libvips, a cap on pixels), so a thumbnail of a 600-megapixel PNG costs seconds, not gigabytes.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from .images import load_image

# Requested sizes are rounded up to one of these, so a cache holds a few versions of a picture, not one
# per pixel size a client can ask for.
SIZES = (64, 128, 256, 512, 1024)
MAX_SIZE = SIZES[-1]
JPEG_QUALITY = 85


def snap_size(size: int) -> int:
    """The smallest standard size at least `size` (the largest, for anything bigger)."""
    return next((s for s in SIZES if s >= size), MAX_SIZE)


def render_thumbnail(path: str | Path | bytes, size: int) -> bytes:
    """A JPEG whose longer side is at most `size` pixels (smaller pictures are not enlarged).

    Raises ImageError when the file is not a picture that can be decoded.
    """
    image = load_image(path if isinstance(path, bytes) else Path(path), min_size=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


class ThumbnailCache:
    """A least-recently-used cache of rendered thumbnails, bounded in bytes; safe across threads."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes
