"""Schemathesis hooks for the contract test: real pictures for the upload fields.

The schema says an upload is a non-empty binary of a picture type; whether its bytes decode as a picture
is more than a schema can state. Positive cases get small real pictures of each type (drawn sizes and
colours); negative cases keep schemathesis' own bytes, which the server must refuse with a 4xx.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP",
           "image/tiff": "TIFF"}  # fmt: skip


def pictures(fmt: str) -> st.SearchStrategy[bytes]:
    @st.composite
    def draw(draw: st.DrawFn) -> bytes:
        size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
        colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, fmt)
        return buffer.getvalue()

    return draw()


for media_type, fmt in FORMATS.items():
    schemathesis.openapi.media_type(media_type, pictures(fmt))
