"""Captions where people keep them, through the crawl: embedded fields become caption items with their
field as source, sidecar languages are chosen per index and recorded per caption, and an index built
before the readers changed reads its sidecars again once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image
from PIL import Image

from vecsearch import Index
from vecsearch.cli import main
from vecsearch.embedded_captions import EXIF_DESCRIPTION, IPTC_KEYWORDS, XMP_DESCRIPTION, XMP_SUBJECT

XMP = """<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>
<dc:subject><rdf:Bag><rdf:li>heron</rdf:li><rdf:li>lake</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""

STAMP = "A black cat.\nfr.utf8=Un chat noir.\nde.utf8=Eine schwarze Katze.\nen_GB.utf8=A black cat.\n"


def tagged_photo(path: Path, description: str, seed: int = 0) -> Path:
    """A JPEG carrying an XMP description and keywords and an EXIF description, as photo tools write."""
    make_image(path.with_suffix(".png"), seed=seed)
    with Image.open(path.with_suffix(".png")) as picture:
        exif = Image.Exif()
        exif[0x010E] = f"{description} (exif)"
        picture.convert("RGB").save(path, "JPEG", xmp=XMP.format(description=description).encode(), exif=exif)
    path.with_suffix(".png").unlink()
    return path


def captions(index: Index) -> dict[tuple[str, str], str | None]:
    """(text, source) -> language of every caption item, straight from SQLite."""
    rows = index.store.conn.execute("SELECT text, source, lang FROM items WHERE kind = 'caption'")
    return {(text, source): lang for text, source, lang in rows}


def bump(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 100_000_000_000))


def test_embedded_captions_are_items_with_their_field_follow_the_picture_and_go_when_turned_off(
    tmp_path: Path, tiny_encoder
) -> None:
    photos = tmp_path / "photos"
    tagged_photo(photos / "heron.jpg", "A heron by the lake")
    make_image(photos / "plain.png", seed=3)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        report = index.add(photos)
        assert report.skipped == []
        assert captions(index) == {
            ("A heron by the lake", XMP_DESCRIPTION): None,
            ("heron", XMP_SUBJECT): None,
            ("lake", XMP_SUBJECT): None,
            ("A heron by the lake (exif)", EXIF_DESCRIPTION): None,
        }
        hit = index.search("A heron by the lake", k=1, kind="caption")[0]
        assert (hit.path, hit.source, hit.caption) == (
            str(photos / "heron.jpg"),
            XMP_DESCRIPTION,
            "A heron by the lake",
        )
        assert {(c.text, c.source) for c in index.item(hit.id).captions} == set(captions(index))

        assert index.add().captions_added == 0  # nothing changed: nothing read again

        tagged_photo(photos / "heron.jpg", "A grey heron fishing", seed=1)  # retagged in a photo tool
        bump(photos / "heron.jpg")
        index.add()
        assert ("A grey heron fishing", XMP_DESCRIPTION) in captions(index)
        assert ("A heron by the lake", XMP_DESCRIPTION) not in captions(index)

        report = index.add(embedded_captions=False)  # the setting alone, no file changed
        assert captions(index) == {} and report.captions_removed == 4
        assert index.add().captions_added == 0  # remembered


def test_caption_languages_choose_the_lines_record_each_language_and_a_change_reads_them_again(
    tmp_path: Path, tiny_encoder
) -> None:
    stamps = tmp_path / "stamps"
    make_image(stamps / "cat.png")
    (stamps / "cat.txt").write_text(STAMP, encoding="utf-8")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(stamps)
        assert captions(index) == {("A black cat.", "sidecar"): None}
        index.add(caption_languages="en,fr")
        assert captions(index) == {("A black cat.", "sidecar"): None, ("Un chat noir.", "sidecar"): "fr"}
        hit = index.search("Un chat noir.", k=1, kind="caption")[0]
        assert (hit.caption, hit.language) == ("Un chat noir.", "fr")
        assert index.add().captions_added == 0  # the languages are remembered
        index.add(caption_languages=["de"])
        assert captions(index) == {("A black cat.", "sidecar"): None, ("Eine schwarze Katze.", "sidecar"): "de"}


def test_an_index_made_before_reads_its_sidecars_again_once_and_gains_the_language_column(
    tmp_path: Path, tiny_encoder
) -> None:
    stamps = tmp_path / "stamps"
    make_image(stamps / "cat.png")
    (stamps / "cat.txt").write_text(STAMP, encoding="utf-8")
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(stamps)
    # What an index of the first schema held: every line a caption, prefixes and all, and the sidecar's
    # signature in the old form (size:mtime).
    with sqlite3.connect(tmp_path / "idx" / "items.sqlite") as db:
        side = (stamps / "cat.txt").stat()
        db.execute("UPDATE files SET sidecar_sig = ?", (f"{side.st_size}:{side.st_mtime_ns}",))
        vector, file_id = db.execute(
            "SELECT v.data, i.file_id FROM items i JOIN vectors v ON v.item_id = i.id"
        ).fetchone()
        gen = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]) + 1
        cursor = db.execute(
            "INSERT INTO items(kind, file_id, text, source, position, added_gen) VALUES ('caption', ?, ?, 'sidecar', 1, ?)",
            (file_id, "fr.utf8=Un chat noir.", gen),
        )
        db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
        db.execute("INSERT INTO vectors(item_id, data) VALUES (?, ?)", (cursor.lastrowid, vector))
        db.execute("ALTER TABLE items DROP COLUMN lang")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as index:
        assert index.search("Un chat", k=5, kind="caption")  # searchable as soon as it opens
        report = index.add()
        assert report.captions_removed == 1 and report.added == 0 and report.skipped == []
        assert captions(index) == {("A black cat.", "sidecar"): None}
        assert index.add().captions_removed == 0  # once
        version = index.store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == "2"


def test_bad_caption_languages_stop_before_an_index_is_made(tmp_path: Path, tiny_model_dir: Path) -> None:
    make_image(tmp_path / "pics" / "a.png")
    result = CliRunner().invoke(
        main,
        ["index", str(tmp_path / "pics"), "--index", str(tmp_path / "idx"), "--caption-languages", "en,english!"],
    )
    assert result.exit_code == 2 and "not a language code: 'english!'" in result.output
    assert not (tmp_path / "idx").exists()


def test_cli_remembers_languages_and_json_hits_show_source_and_language(tmp_path: Path, tiny_model_dir: Path) -> None:
    stamps = tmp_path / "stamps"
    make_image(stamps / "cat.png")
    (stamps / "cat.txt").write_text(STAMP, encoding="utf-8")
    model = ["--model", f"local-dir:{tiny_model_dir}"]
    runner = CliRunner()
    created = runner.invoke(
        main, ["-q", "index", str(stamps), "--index", str(tmp_path / "idx"), *model, "--caption-languages", "fr"]
    )
    assert created.exit_code == 0, created.output
    found = runner.invoke(main, ["search", str(tmp_path / "idx"), "Un chat noir.", "--kind", "caption", "--json"])
    assert found.exit_code == 0, found.output
    hits = {hit["caption"]: hit for hit in json.loads(found.stdout)}
    assert hits["Un chat noir."]["language"] == "fr" and hits["Un chat noir."]["source"] == str(stamps / "cat.txt")
    assert hits["A black cat."]["language"] is None


@pytest.mark.skipif(not Path("/usr/share/tuxpaint/stamps").is_dir(), reason="Debian's tuxpaint-stamps not installed")
def test_debian_tux_paint_stamps_give_one_caption_each_in_english_and_their_translations_on_request(
    tmp_path: Path, tiny_encoder
) -> None:
    source = Path("/usr/share/tuxpaint/stamps/symbols/money/us/coins")
    if not source.is_dir():
        pytest.skip("this Tux Paint release has no US coins folder")
    stamps = tmp_path / "coins"
    stamps.mkdir()
    for path in sorted(source.iterdir()):
        if path.suffix in (".png", ".txt"):
            shutil.copy(path, stamps / path.name)
    pictures = sorted(stamps.glob("*.png"))
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        report = index.add(stamps)
        assert report.skipped == [] and report.added == len(pictures)
        english = captions(index)  # the untagged line of each stamp, and British or Australian wording
        assert sum(lang is None for lang in english.values()) == len(pictures)
        assert all(
            ".utf8=" not in text and lang in (None, "en_GB", "en_AU", "en_CA", "en_ZA")
            for (text, _), lang in english.items()
        )
        index.add(caption_languages="en,fr")
        french = {text: lang for (text, _), lang in captions(index).items() if lang == "fr"}
        assert len(french) == len(pictures)
        assert all(".utf8=" not in text for text in french)


def test_a_photo_tagged_by_exiftool_is_found_by_its_caption_and_keywords(tmp_path: Path, tiny_model_dir: Path) -> None:
    if shutil.which("exiftool") is None:
        if os.environ.get("VECSEARCH_REQUIRE_EXIFTOOL"):
            pytest.fail("exiftool is required here (Debian: libimage-exiftool-perl)")
        pytest.skip("exiftool (Debian: libimage-exiftool-perl) not installed")
    photo = make_image(tmp_path / "photos" / "field.png").with_suffix(".jpg")
    with Image.open(photo.with_suffix(".png")) as picture:
        picture.convert("RGB").save(photo, "JPEG")
    photo.with_suffix(".png").unlink()
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-codedcharacterset=utf8", "-XMP-dc:Description=A green field",
         "-IPTC:Keywords=meadow", str(photo)],
        check=True,
    )  # fmt: skip
    runner, idx = CliRunner(), str(tmp_path / "idx")
    built = runner.invoke(
        main, ["-q", "index", str(photo.parent), "--index", idx, "--model", f"local-dir:{tiny_model_dir}"]
    )
    assert built.exit_code == 0, built.output
    found = runner.invoke(main, ["search", idx, "meadow", "--kind", "caption", "-k", "5", "--json"])
    assert found.exit_code == 0, found.output
    assert {(h["caption"], h["source"], h["path"]) for h in json.loads(found.stdout)} == {
        ("A green field", XMP_DESCRIPTION, str(photo)),
        ("meadow", IPTC_KEYWORDS, str(photo)),
    }


def test_shards_and_remote_folders_keep_the_caption_languages_asked_for(tmp_path: Path) -> None:
    """The distributed crawl lists WebDataset shards and remote folders itself: their sidecars follow the
    index's languages too."""
    import tarfile

    from vecsearch.scale.sources import list_remote_folder, list_tar, parse_source

    folder = tmp_path / "stamps"
    make_image(folder / "cat.png")
    (folder / "cat.txt").write_text(STAMP, encoding="utf-8")
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(folder / "cat.png", "000001.png")
        tar.add(folder / "cat.txt", "000001.txt")
    for languages, expected in [
        (("en",), ("A black cat.",)),
        (("en", "fr"), ("A black cat.", "Un chat noir.")),
    ]:
        (listed,) = list_tar(parse_source(str(shard)), languages).walk.files
        assert listed.captions == expected
        (remote,) = list_remote_folder(parse_source(f"file://{folder}"), languages=languages).walk.files
        assert remote.captions == expected
