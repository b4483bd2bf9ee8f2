"""Captions that photo tools write into the pictures themselves: XMP `dc:description` and `dc:subject`,
IPTC Caption-Abstract and Keywords, EXIF ImageDescription and UserComment (digiKam, Lightroom,
darktable, phone galleries).

Read with Pillow from the file's header alone (no pixels are decoded); the XMP packet is parsed with
defusedxml, since it is untrusted XML. Each caption keeps the field it came from, so a search hit can say
where its text was found.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, IptcImagePlugin

from .sidecars import DEFAULT_LANGUAGES, speaks

XMP_DESCRIPTION = "xmp:dc:description"
XMP_SUBJECT = "xmp:dc:subject"
IPTC_CAPTION = "iptc:caption"
IPTC_KEYWORDS = "iptc:keywords"
EXIF_DESCRIPTION = "exif:ImageDescription"
EXIF_COMMENT = "exif:UserComment"
FIELDS = (XMP_DESCRIPTION, XMP_SUBJECT, IPTC_CAPTION, IPTC_KEYWORDS, EXIF_DESCRIPTION, EXIF_COMMENT)

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_MAX_XMP_BYTES = 1 << 20
# Cameras fill ImageDescription with their maker's name or blanks: these say nothing about the picture.
_PLACEHOLDERS = frozenset({"", "default", "image", "picture", "photo", "olympus digital camera", "sony dsc",
                           "digital camera", "exif_jpeg_pictures", "samsung", "ldr", "hdr"})  # fmt: skip
_USER_COMMENT_CODES = {b"ASCII\0\0\0": "ascii", b"UNICODE\0": "utf-16", b"JIS\0\0\0\0\0": "shift_jis"}


@dataclass(frozen=True)
class EmbeddedCaption:
    text: str
    field: str  # one of FIELDS
    language: str | None = None


def read_embedded(source: str | Path | bytes, languages: Sequence[str] = DEFAULT_LANGUAGES) -> list[EmbeddedCaption]:
    """Captions embedded in a picture, in the order of FIELDS; [] for a file with none or that PIL cannot
    open (the crawl reports unreadable pictures on its own)."""
    try:
        with _open_header(source) as image:
            found = [*_xmp(image), *_iptc(image), *_exif(image)]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return []
    seen: set[tuple[str, str]] = set()
    captions = []
    for caption in found:
        text = " ".join(caption.text.split())
        key = (caption.field, text)
        if text and key not in seen and speaks(caption.language, languages):
            seen.add(key)
            captions.append(EmbeddedCaption(text, caption.field, caption.language))
    return captions


def _open_header(source: str | Path | bytes) -> Image.Image:
    """The picture opened for its header. Above PIL's size limit `Image.open` refuses it to guard the
    memory that decoding would take; nothing is decoded here, so a panorama's captions are read as well: the
    format's own opener is called as `Image.open` would, without the size check (the limit itself is
    global, and the crawl's decoders rely on it at the same time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Image.DecompressionBombError:
            pass
    if isinstance(source, bytes):
        prefix = source[:16]
    else:
        with open(source, "rb") as head:
            prefix = head.read(16)
    Image.init()
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        if accept is None or accept(prefix):
            target = io.BytesIO(source) if isinstance(source, bytes) else str(source)
            try:  # a path is opened (and closed with the picture) by PIL itself
                return factory(target, "")  # type: ignore[arg-type]  # ImageFile takes paths too
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise OSError("not a picture PIL can open")


def _xmp(image: Image.Image) -> list[EmbeddedCaption]:
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    if not isinstance(packet, bytes) or not packet or len(packet) > _MAX_XMP_BYTES:
        return []
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(packet.rstrip(b"\0 \n\r\t"))
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return []
    captions = []
    for element in root.iter(f"{_DC}description"):
        for item in element.iter(f"{_RDF}li"):
            language = item.get(_XML_LANG)
            captions.append(EmbeddedCaption(item.text or "", XMP_DESCRIPTION, _xmp_language(language)))
        if element.text and element.text.strip():  # written without rdf:Alt by some tools
            captions.append(EmbeddedCaption(element.text, XMP_DESCRIPTION))
    for element in root.iter(f"{_DC}subject"):
        captions.extend(EmbeddedCaption(item.text or "", XMP_SUBJECT) for item in element.iter(f"{_RDF}li"))
    return captions


def _xmp_language(language: str | None) -> str | None:
    if not language or language.lower() == "x-default":
        return None
    return language.replace("-", "_")


def _iptc(image: Image.Image) -> list[EmbeddedCaption]:
    try:
        info = IptcImagePlugin.getiptcinfo(image)  # type: ignore[arg-type]
    except (OSError, SyntaxError, ValueError, IndexError):
        return []
    if not info:
        return []
    utf8 = info.get((1, 90)) in (b"\x1b%G", [b"\x1b%G"])

    def texts(key: tuple[int, int]) -> list[str]:
        value = info.get(key)
        values = value if isinstance(value, list) else [value] if value is not None else []
        return [_decode_iptc(v, utf8) for v in values if isinstance(v, bytes)]

    return [
        *(EmbeddedCaption(t, IPTC_CAPTION) for t in texts((2, 120))),
        *(EmbeddedCaption(t, IPTC_KEYWORDS) for t in texts((2, 25))),
    ]


def _decode_iptc(value: bytes, utf8: bool) -> str:
    """IPTC text is Latin-1 unless the record says UTF-8; most writers use UTF-8 without saying so."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "" if utf8 else value.decode("latin-1")


def _exif(image: Image.Image) -> list[EmbeddedCaption]:
    try:
        exif = image.getexif()
        description = exif.get(ExifTags.Base.ImageDescription)
        comment = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return []
    captions = []
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    if isinstance(description, str) and description.strip().lower() not in _PLACEHOLDERS:
        captions.append(EmbeddedCaption(description.rstrip("\0"), EXIF_DESCRIPTION))
    text = _user_comment(comment)
    if text and text.strip().lower() not in _PLACEHOLDERS:
        captions.append(EmbeddedCaption(text, EXIF_COMMENT))
    return captions


def _user_comment(value: object) -> str | None:
    """UserComment starts with 8 bytes naming its character code (EXIF 2.3, 4.6.5); an undefined code is
    read as UTF-8, as phones write it."""
    if isinstance(value, str):
        return value.rstrip("\0")
    if not isinstance(value, bytes) or len(value) <= 8:
        return None
    code, body = value[:8], value[8:]
    encoding = _USER_COMMENT_CODES.get(code, "utf-8")
    if encoding == "utf-16":
        encoding = "utf-16-be" if body[:1] == b"\0" else "utf-16-le"
    return body.decode(encoding, "replace").rstrip("\0").strip()
