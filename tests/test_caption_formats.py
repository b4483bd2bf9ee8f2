"""Caption sidecars read for what they are, and captions embedded in pictures (XMP, IPTC, EXIF)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from vecsearch.embedded_captions import (
    EXIF_COMMENT,
    EXIF_DESCRIPTION,
    IPTC_CAPTION,
    IPTC_KEYWORDS,
    XMP_DESCRIPTION,
    XMP_SUBJECT,
    read_embedded,
)
from vecsearch.sidecars import SidecarCaption, parse_json, parse_languages, parse_text, speaks, wanted

TUXPAINT_CAT = """A black cat.
fr.utf8=Un chat noir.
pt_BR.utf8=Um gato preto.
ca@valencia.utf8=Un gat negre.
en_GB.utf8=A black cat.
"""


def test_tux_paint_lines_lose_their_prefix_and_keep_their_language():
    captions = parse_text(TUXPAINT_CAT)
    assert captions == [
        SidecarCaption("A black cat."),
        SidecarCaption("Un chat noir.", "fr"),
        SidecarCaption("Um gato preto.", "pt_BR"),
        SidecarCaption("Un gat negre.", "ca@valencia"),
        SidecarCaption("A black cat.", "en_GB"),
    ]
    assert [c.text for c in wanted(captions)] == ["A black cat.", "A black cat."]  # en takes en_GB
    assert [c.text for c in wanted(captions, ("fr",))] == ["A black cat.", "Un chat noir."]
    assert [c.language for c in wanted(captions, ("pt",))] == [None, "pt_BR"]
    assert [c.language for c in wanted(captions, ("pt_PT",))] == [None]
    assert [c.language for c in wanted(captions, ("ca",))] == [None, "ca@valencia"]


def test_plain_lines_that_look_like_prefixes_stay_captions():
    captions = parse_text("ratio 3.utf8=x\nhttp://example.org/a=b\nDE.UTF8=Eine Katze\n")
    assert captions[0] == SidecarCaption("ratio 3.utf8=x")
    assert captions[1] == SidecarCaption("http://example.org/a=b")
    assert captions[2] == SidecarCaption("Eine Katze", "DE")
    assert speaks("DE", ("de",))


def test_json_sidecars_as_img2dataset_writes_them():
    assert parse_json('{"caption": "a red apple", "url": "http://x", "key": "000001"}') == (
        [SidecarCaption("a red apple")],
        None,
    )
    assert parse_json('{"text": ["one", "two"]}') == ([SidecarCaption("one"), SidecarCaption("two")], None)
    assert parse_json("[1, 2]")[1] == "caption file is JSON but not an object"
    assert parse_json('{"url": "x", "caption": null}') == ([], None)  # metadata only: nothing, and no complaint
    assert "not valid JSON" in (parse_json("{caption:")[1] or "")


def test_language_lists_are_checked():
    assert parse_languages(None) == ("en",)
    assert parse_languages("en, fr,en") == ("en", "fr")
    with pytest.raises(ValueError, match="not a language code"):
        parse_languages("en,français")
    with pytest.raises(ValueError, match="no caption language"):
        parse_languages(" , ")


XMP = b"""<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">A heron by the lake</rdf:li>
<rdf:li xml:lang="fr-FR">Un h\xc3\xa9ron au bord du lac</rdf:li></rdf:Alt></dc:description>
<dc:subject><rdf:Bag><rdf:li>heron</rdf:li><rdf:li>lake</rdf:li><rdf:li>bird</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""


def _exif(description: str, comment: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010E] = description
    exif.get_ifd(0x8769)[0x9286] = comment
    return exif


def _iptc_app13(records: list[tuple[int, int, bytes]]) -> bytes:
    """A Photoshop APP13 segment holding IPTC IIM records (resource 0x0404), as photo tools write it."""
    iim = b"".join(b"\x1c" + bytes([r, d]) + struct.pack(">H", len(v)) + v for r, d, v in records)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iim)) + iim
    if len(iim) % 2:
        resource += b"\0"
    body = b"Photoshop 3.0\0" + resource
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def _with_segment(jpeg: bytes, segment: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + segment + jpeg[2:]


def test_jpeg_with_xmp_iptc_and_exif_gives_every_caption_with_its_field():
    buffer = io.BytesIO()
    picture = Image.new("RGB", (32, 24), (200, 30, 30))
    picture.save(buffer, "JPEG", xmp=XMP, exif=_exif("Heron at dawn", b"ASCII\0\0\0Shot from the boat"))
    iptc = _iptc_app13([(1, 90, b"\x1b%G"), (2, 120, "Héron cendré".encode()), (2, 25, b"wildlife"), (2, 25, b"bird")])
    data = _with_segment(buffer.getvalue(), iptc)
    found = [(c.field, c.text) for c in read_embedded(data)]
    assert found == [
        (XMP_DESCRIPTION, "A heron by the lake"),
        (XMP_SUBJECT, "heron"),
        (XMP_SUBJECT, "lake"),
        (XMP_SUBJECT, "bird"),
        (IPTC_CAPTION, "Héron cendré"),
        (IPTC_KEYWORDS, "wildlife"),
        (IPTC_KEYWORDS, "bird"),
        (EXIF_DESCRIPTION, "Heron at dawn"),
        (EXIF_COMMENT, "Shot from the boat"),
    ]
    french = [c for c in read_embedded(data, ("fr",)) if c.field == XMP_DESCRIPTION]
    assert [(c.text, c.language) for c in french] == [
        ("A heron by the lake", None),
        ("Un héron au bord du lac", "fr_FR"),
    ]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_carry_xmp_and_exif(fmt, tmp_path):
    path = tmp_path / f"p.{fmt.lower()}"
    picture = Image.new("RGB", (16, 16), "white")
    extra = {"exif": _exif("A white square", b"UNICODE\0" + "plain white".encode("utf-16-be"))}
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode("utf-8"))
        picture.save(path, fmt, pnginfo=info, **extra)
    else:
        picture.save(path, fmt, xmp=XMP, **extra)
    fields = {(c.field, c.text) for c in read_embedded(path)}
    assert (XMP_DESCRIPTION, "A heron by the lake") in fields
    assert (XMP_SUBJECT, "bird") in fields
    assert (EXIF_DESCRIPTION, "A white square") in fields
    assert (EXIF_COMMENT, "plain white") in fields


def test_camera_placeholders_broken_xmp_and_non_pictures_give_nothing(tmp_path):
    buffer = io.BytesIO()
    broken = b"<x:xmpmeta><rdf:RDF><unclosed>"
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", xmp=broken, exif=_exif("OLYMPUS DIGITAL CAMERA", b"\0" * 8))
    assert read_embedded(buffer.getvalue()) == []
    bomb = (
        b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    )
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", xmp=bomb)
    assert read_embedded(buffer.getvalue()) == []  # entities are refused, never expanded
    text = tmp_path / "not.jpg"
    text.write_text("hello")
    assert read_embedded(text) == []


def test_pictures_tagged_by_exiftool(tmp_path):
    if shutil.which("exiftool") is None:
        if os.environ.get("VECSEARCH_REQUIRE_EXIFTOOL"):
            pytest.fail("exiftool is required here (Debian: libimage-exiftool-perl)")
        pytest.skip("exiftool (Debian: libimage-exiftool-perl) not installed")
    path = tmp_path / "tagged.jpg"
    Image.new("RGB", (32, 32), (10, 120, 10)).save(path, "JPEG")
    subprocess.run(
        [
            "exiftool", "-q", "-overwrite_original", "-codedcharacterset=utf8",
            "-XMP-dc:Description=A green field", "-XMP-dc:Subject=grass", "-XMP-dc:Subject=field",
            "-IPTC:Caption-Abstract=Grüne Wiese", "-IPTC:Keywords=meadow",
            "-EXIF:ImageDescription=Field in May", "-EXIF:UserComment=taken by a phone", str(path),
        ],
        check=True,
    )  # fmt: skip
    found = {(c.field, c.text) for c in read_embedded(path)}
    assert found == {
        (XMP_DESCRIPTION, "A green field"),
        (XMP_SUBJECT, "grass"),
        (XMP_SUBJECT, "field"),
        (IPTC_CAPTION, "Grüne Wiese"),
        (IPTC_KEYWORDS, "meadow"),
        (EXIF_DESCRIPTION, "Field in May"),
        (EXIF_COMMENT, "taken by a phone"),
    }


def test_real_tux_paint_stamp_sidecars_when_installed():
    stamps = Path("/usr/share/tuxpaint/stamps")
    files = sorted(stamps.rglob("*.txt"))[:200] if stamps.is_dir() else []
    if not files:
        pytest.skip("tuxpaint-stamps-default not installed")
    prefixed = 0
    for path in files:
        captions = parse_text(path.read_text(encoding="utf-8", errors="replace"))
        kept = wanted(captions)
        assert kept and not any(".utf8=" in c.text for c in kept), path
        prefixed += sum(c.language is not None for c in captions)
    assert prefixed > len(files)  # the stamps really carry translations, and none slipped through


def test_pictures_above_pils_size_limit_still_give_their_captions(tmp_path, monkeypatch):
    """PIL refuses to open a picture of more than twice its pixel limit (a panorama); only the header is
    read here, so its captions are read all the same, and the limit stays in force for decoding."""
    path = tmp_path / "panorama.jpg"
    Image.new("RGB", (64, 48), (90, 140, 200)).save(path, "JPEG", xmp=XMP, exif=_exif("Bay at noon", b""))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3,072 pixels: more than twice the limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    for source in (path, path.read_bytes()):
        found = {(c.field, c.text) for c in read_embedded(source)}
        assert (XMP_DESCRIPTION, "A heron by the lake") in found and (EXIF_DESCRIPTION, "Bay at noon") in found
