"""The starter model's data preparation and training script, on small trees built here (no apt data needed)."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_starter_data  # noqa: E402
import eval_starter  # noqa: E402
import starter_data  # noqa: E402
import starter_sources  # noqa: E402
import train_starter  # noqa: E402


def _png(path: Path, size=(40, 30), colour=(200, 30, 30, 255), author: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if author:
        info.add_text("Author", author)
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    inner = Image.new("RGBA", (max(1, size[0] // 2), max(1, size[1] // 2)), colour)
    image.paste(inner, (size[0] // 4, size[1] // 4))
    image.save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "relative, author, expected",
    [
        ("animals/mammals/dogs/bored_dog_01.png", "", "bored dog (mammals, dogs)"),
        ("animals/2_dead_frogs_lumen_desig_01.png", "Lumen Design Studio", "dead frogs (animals)"),
        (
            "animals/mammals/canguro_architetto_franc_01.png",
            "Architetto Francesco Rollandin",
            "canguro (animals, mammals)",
        ),
        ("shapes/stars/star_67pt11step.png", "", "star (shapes, stars)"),
        ("computer/icons/flat-theme/action/gg_away.png", "", "gg away (action)"),
        ("people/sm_005.png", "", "sm (people)"),
        ("computer/hardware/01.png", "", "computer, hardware"),
    ],
)
def test_openclipart_captions_come_from_names_without_authors_or_numbers(relative, author, expected):
    assert starter_data.openclipart_caption(Path(relative), author) == expected


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    clipart = tmp_path / "openclipart"
    for i in range(1, 4):
        _png(clipart / "food" / f"apple_red_{i:02d}.png", colour=(220, 20, 20, 255))
    _png(clipart / "food" / "apple_red_bw.png", colour=(90, 90, 90, 255))
    for i in range(30):  # a generated series: one group, bigger than MAX_HELDOUT_GROUP
        _png(clipart / "shapes" / "stars" / f"star_{i}pt{i}step.png", colour=(240, 200, 0, 255))
    for name in ("car", "bus", "tree", "house", "boat", "cat", "dog", "fish", "sun", "moon"):
        _png(clipart / "misc" / f"{name}_nicu_b_01.png", author="Nicu Buculei", colour=(20, 20, 200, 255))
    stamps = tmp_path / "tuxpaint"
    for category, name in (("animals", "cat"), ("food", "pear"), ("vehicles", "truck"), ("animals", "dog")):
        png = _png(stamps / category / f"{name}.png", colour=(20, 160, 20, 255))
        png.with_suffix(".txt").write_text(f"A {name}.\nfr.utf8=Un {name}.\n", encoding="utf-8")
    _png(stamps / "food" / "uncaptioned.png")
    return clipart, stamps


def test_collect_reads_both_sources_and_keeps_variants_in_one_group(tmp_path):
    clipart, stamps = _trees(tmp_path)
    records = starter_data.collect(clipart, stamps)
    by_name = {Path(r.path).name: r for r in records}
    assert "uncaptioned.png" not in by_name  # a stamp needs its caption
    assert by_name["cat.png"].caption == "A cat." and by_name["cat.png"].category == "animals"
    assert by_name["car_nicu_b_01.png"].caption == "car (misc)"
    apple_groups = {r.group for r in records if Path(r.path).name.startswith("apple")}
    assert len(apple_groups) == 1  # numbered siblings and the _bw version
    assert len({r.group for r in records if "star" in r.path}) == 1


def test_splits_are_seeded_whole_groups_and_big_series_train(tmp_path):
    clipart, stamps = _trees(tmp_path)
    records = starter_data.collect(clipart, stamps)
    first = starter_data.assign_splits(records, seed=0)
    assert first == starter_data.assign_splits(records, seed=0)
    assert set(first.values()) <= set(starter_data.SPLITS)
    for group in {r.group for r in records}:
        assert len({first[r.path] for r in records if r.group == group}) == 1
    assert {first[r.path] for r in records if "star" in r.path} == {"train"}
    seeds = [starter_data.assign_splits(records, seed=s) for s in range(6)]
    assert any(s != first for s in seeds)


def test_huge_png_is_shrunk_while_streaming_with_bounded_memory(tmp_path):
    pytest.importorskip("pyvips")
    huge = tmp_path / "huge.png"
    side = 6000  # 36 megapixels: RGBA in memory would be 144 MB
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (side // 2, side // 2), (0, 0, 255, 255)), (side // 4, side // 4))
    image.save(huge)
    del image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    thumb = starter_data.decode_thumbnail(huge, 64)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert thumb.size == (64, 64) and thumb.mode == "RGB"
    pixels = np.asarray(thumb)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent -> white
    assert pixels[32, 32, 2] > 200 and pixels[32, 32, 0] < 50
    assert grown_mb < 100
    # the one shared implementation: vecsearch's own streamed decoding, used by the crawler as well
    from vecsearch.images import vips_thumbnail

    assert np.array_equal(np.asarray(vips_thumbnail(huge, 64)), pixels)


def test_letterbox_centres_on_white():
    wide = Image.new("RGB", (80, 20), (0, 0, 0))
    box = starter_data.letterbox(wide, 40)
    assert box.shape == (40, 40, 3)
    assert (box[0] == 255).all() and (box[20] == 0).all()


def _write_rcc(path: Path, files: dict[str, tuple[bytes, bool]]) -> None:
    """A Qt binary resource (format 2), written from the layout Qt's rcc uses: a names table, a data table
    and a tree of 22-byte nodes, numbered breadth-first, whose directories list contiguous children."""
    import struct
    import zlib

    tree: dict = {}
    for name, entry in files.items():
        node = tree
        *folders, leaf = name.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = entry
    order: list[tuple[str, object]] = [("", tree)]  # breadth-first: a directory's children are contiguous
    first_child: dict[int, int] = {}
    index = 0
    while index < len(order):
        _, node = order[index]
        if isinstance(node, dict):
            first_child[index] = len(order)
            order.extend(sorted(node.items()))
        index += 1
    names, data, nodes = bytearray(), bytearray(), bytearray()
    for index, (name, node) in enumerate(order):
        name_offset = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        if isinstance(node, dict):
            nodes.extend(struct.pack(">IHII", name_offset, 2, len(node), first_child[index]) + bytes(8))
            continue
        blob, compressed = node
        stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if compressed else blob
        nodes.extend(struct.pack(">IHHHI", name_offset, 1 if compressed else 0, 0, 0, len(data)) + bytes(8))
        data.extend(struct.pack(">I", len(stored)) + stored)
    tree_at = 20
    data_at = tree_at + len(nodes)
    names_at = data_at + len(data)
    path.write_bytes(b"qres" + struct.pack(">IIII", 2, tree_at, data_at, names_at) + nodes + data + names)


def test_qt_resource_files_are_read_with_nested_folders_and_compression(tmp_path):
    rcc = tmp_path / "pictures.rcc"
    files = {
        "gcompris/src/activities/farm/resource/cow.svg": (b"<svg/>" * 40, True),
        "gcompris/src/activities/farm/resource/pig.webp": (b"RIFFxxxxWEBP", False),
        "gcompris/src/core/readme": (b"text", False),
    }
    _write_rcc(rcc, files)
    assert starter_sources.read_rcc(rcc) == {name: blob for name, (blob, _) in files.items()}
    (tmp_path / "not.rcc").write_bytes(b"nope" * 10)
    with pytest.raises(ValueError, match="not a Qt resource"):
        starter_sources.read_rcc(tmp_path / "not.rcc")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("health-potion", "health potion"),
        ("arrow-left-outline", "arrow left"),
        ("cameraRollFilled", "camera roll"),
        ("a-b-2", "a b"),
        ("wifi-off", "wifi off"),
    ],
)
def test_icon_names_become_captions_without_style_words(name, expected):
    assert starter_sources.caption_of(name) == expected


def test_concepts_fold_word_order_plurals_and_styles():
    concept = starter_sources.concept_of
    assert concept("arrow left") == concept("left arrows") == concept("arrow-left-bold")
    assert concept("apple") != concept("pineapple")


@pytest.mark.parametrize("name", ["emoticon-happy", "face-smile", "flag-fr", "mood-sad", "smiley", "happy-face"])
def test_faces_moods_and_flags_are_left_out(name):
    assert starter_sources.excluded_name(name)


ICON = '<path d="M2 2h12v12H2z"/>'


def _iconify(root: Path, prefix: str, icons: dict[str, str], licence: str = "MIT", **extra) -> None:
    folder = root / f"iconify-json-{prefix}" / "package"
    folder.mkdir(parents=True)
    body = {"prefix": prefix, "width": 16, "height": 16, "icons": {n: {"body": b} for n, b in icons.items()}}
    body.update(extra.get("icons_extra", {}))
    (folder / "icons.json").write_text(json.dumps(body))
    (folder / "info.json").write_text(
        json.dumps({"name": prefix, "license": {"title": licence, "spdx": licence}, "author": {"name": "Someone"}})
    )
    if "metadata" in extra:
        (folder / "metadata.json").write_text(json.dumps(extra["metadata"]))


def _packages(tmp_path: Path) -> Path:
    """One small package of each kind of source: SVG bodies in JSON, an Inkscape symbol file, an icon theme's
    PNGs, a Qt resource file, Wesnoth's units and items, and the held-out test set."""
    root = tmp_path / "packages"
    shapes = {
        "health-potion": '<circle cx="8" cy="8" r="6" fill="#c00"/>',
        "sword": '<path d="M2 14L14 2" stroke="#000" stroke-width="2"/>',
        "shield-outline": ICON,
        "shield": '<path fill="currentColor" d="M3 3h10v10H3z"/>',
        "face-happy": ICON,  # left out by name
        "grin": ICON,  # left out by its category
    }
    _iconify(root, "game-icons", shapes, licence="CC-BY-3.0", metadata={"categories": {"Emoji": ["grin"]}})
    _iconify(root, "flat-color-icons", {"camera": '<rect x="1" y="4" width="14" height="9" fill="#2a2"/>'})
    symbols = root / "inkscape" / "usr/share/inkscape/symbols"
    symbols.mkdir(parents=True)
    (symbols / "Signs.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><defs><symbol id="bus-stop"><title>Bus stop</title>'
        '<rect x="500" y="500" width="40" height="20" fill="#00f"/></symbol></defs></svg>'
    )
    (symbols / "emojione.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><symbol id="grin" viewBox="0 0 8 8"><title>grin</title>'
        '<rect width="8" height="8"/></symbol></svg>'
    )
    theme = root / "tango-icon-theme" / "usr/share/icons/Tango"
    for size in (32, 48):
        _png(theme / f"{size}x{size}" / "devices" / "camera-photo.png", size=(size, size), colour=(90, 90, 200, 255))
    _png(theme / "16x16" / "devices" / "printer.png", size=(16, 16))  # too small: redrawn designs
    _png(theme / "48x48" / "apps" / "web-browser.png", size=(48, 48))  # not a wanted folder
    rcc_dir = root / "gcompris-qt-data" / "usr/share/gcompris-qt/rcc"
    rcc_dir.mkdir(parents=True)
    import io

    cow = io.BytesIO()
    Image.new("RGB", (30, 20), (120, 80, 20)).save(cow, "WEBP")
    _write_rcc(
        rcc_dir / "farm.rcc",
        {
            "gcompris/src/activities/farm/resource/cow.webp": (cow.getvalue(), False),
            "gcompris/src/activities/farm/resource/pig.svg": (
                b'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
                b'<circle cx="10" cy="10" r="8" fill="pink"/></svg>',
                True,
            ),
            "gcompris/src/activities/farm/resource/background.svg": (b"<svg/>", False),
        },
    )
    core = root / "wesnoth-1.16-data" / "usr/share/games/wesnoth/1.16/data/core"
    (core / "units" / "elves").mkdir(parents=True)
    (core / "units" / "elves" / "Archer.cfg").write_text(
        '[unit_type]\n    id=Elvish Archer\n    name= _ "Elvish Archer"\n    image="units/elves/archer.png"\n'
        '    description= _ "Elves shoot well. They also hunt."\n[/unit_type]\n'
    )
    _png(core / "images" / "units" / "elves" / "archer.png", size=(72, 72), colour=(30, 140, 30, 255))
    _png(core / "images" / "items" / "anvil.png", size=(40, 40), colour=(60, 60, 60, 255))
    return root


def _build(tmp_path: Path) -> Path:
    clipart, stamps = _trees(tmp_path)
    out = tmp_path / "data"
    code = build_starter_data.main(
        [
            "--packages", str(_packages(tmp_path)), "--out", str(out), "--openclipart-dir", str(clipart),
            "--tuxpaint-dir", str(stamps), "--workers", "1", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_data_build_renders_captions_and_splits_every_kind_of_source(tmp_path):
    out = _build(tmp_path)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    pixels = np.load(out / "pixels-72.npy")
    assert pixels.shape == (len(rows), 72, 72, 3)
    by_key = {row["key"]: row for row in rows}
    captions = {row["caption"] for row in rows}
    assert {
        "health potion",
        "sword",
        "shield",
        "camera",
        "bus stop",
        "camera photo",
        "elvish archer",
        "anvil",
    } <= captions
    assert "cow" in captions and "pig" in captions  # a WebP and a compressed SVG from the .rcc
    assert not any("face" in c or "grin" in c or "background" in c or "printer" in c for c in captions)
    assert "web browser" not in captions  # apps/ is not one of the theme folders used
    assert by_key["wesnoth:units/elves/archer.png"]["synonyms"] == ["elves shoot well."]
    assert {row["split"] for row in rows if row["source"] == "gcompris"} == {"heldout_val"}
    assert {row["split"] for row in rows if row["source"] == "flat-color-icons"} == {"heldout_test"}
    concepts: dict[str, set] = {}
    for row in rows:
        if row["source"] not in ("gcompris", "flat-color-icons", "openclipart", "tuxpaint"):
            concepts.setdefault(row["concept"], set()).add(row["split"])
    assert all(len(sides) == 1 for sides in concepts.values())  # "shield" and "shield-outline": one side
    assert concepts["shield"] <= {"train", "test_new"}
    # every picture was drawn: not blank, and the symbol without a viewBox was found and framed
    for row, picture in zip(rows, pixels, strict=True):
        assert (picture < 250).any(), row["key"]
    symbol = pixels[[row["key"] for row in rows].index("inkscape:Signs:bus-stop")]
    assert (symbol[36, 4:68, 2] > 200).all() and (symbol[36, 4:68, 0] < 60).all()  # the blue bar, edge to edge
    meta = json.loads((out / "sources.json").read_text())
    assert meta["sources"]["game-icons"]["licence"] == "CC-BY-3.0"
    assert "game-icons" in (out / "CREDITS.md").read_text().split("## Attribution")[1]
    exported = sorted(p.name for p in (out / "heldout-test").iterdir())
    assert exported == ["camera.png", "camera.txt"]
    # the clip-art splits are the ones starter_data gives, untouched by the new sources
    records = starter_data.collect(tmp_path / "openclipart", tmp_path / "tuxpaint")
    split_of = starter_data.assign_splits(records, seed=0)
    assert {r.path: split_of[r.path] for r in records} == {
        row["key"]: row["split"] for row in rows if row["source"] in ("openclipart", "tuxpaint")
    }


@pytest.mark.parametrize("options", [[], ["--ema", "0.9", "--strong-aug", "--templates"]], ids=["default", "variants"])
def test_training_runs_a_short_training_on_every_source_kind_and_writes_loadable_weights(tmp_path, options):
    from vecsearch.encoders import starter

    data = _build(tmp_path)
    out = tmp_path / "weights.safetensors"
    code = train_starter.main(
        [
            "--data", str(data), "--epochs", "1", "--batch-size", "8", "--new-per-epoch", "8", "--out", str(out),
            "--device", "cpu", "--quiet", *options,
        ]
    )  # fmt: skip
    assert code == 0 and out.is_file()
    from safetensors import safe_open

    with safe_open(str(out), "pt") as handle:
        card = json.loads(handle.metadata()["card"])
        assert all(key.startswith("visual.") or key == "logit_scale" for key in handle.keys())  # noqa: SIM118 (a safetensors file: no `in`)
    assert card["epochs"] == 1 and card["chosen_epoch"] == 1 and card["train_seconds"] >= 0
    assert set(card["train_pictures_per_source"]) >= {"openclipart", "tuxpaint", "game-icons", "tango", "wesnoth"}
    assert "gcompris" not in card["train_pictures_per_source"] and card["heldout_val_pictures"] == 2
    point = card["val_curve"][0]
    assert point["epoch"] == 1 and np.isfinite(point["loss"]) and 0 <= point["heldout_text_to_image_r10"] <= 1
    trained, _, _ = starter.build_model(weights=out)
    fresh, _, _ = starter.build_model(weights=None)
    changed = [
        name
        for name, tensor in trained.visual.state_dict().items()
        if tensor.is_floating_point() and not np.allclose(tensor.numpy(), fresh.visual.state_dict()[name].numpy())
    ]
    assert changed  # the step moved the weights, and they load back through the model's own loader


def test_the_test_split_is_the_frozen_one(tmp_path):
    if starter_data.OPENCLIPART_DIR.is_dir() and starter_data.TUXPAINT_DIR.is_dir():
        records = starter_data.collect()
        starter_data.check_test_split(records, starter_data.assign_splits(records, seed=0))
    clipart, stamps = _trees(tmp_path)
    records = starter_data.collect(clipart, stamps)
    split_of = starter_data.assign_splits(records, seed=0)
    listing = tmp_path / "frozen.txt"
    lines = starter_data.test_split_listing(records, split_of)
    listing.write_text("\n".join(lines) + "\n")
    starter_data.check_test_split(records, split_of, listing)
    listing.write_text("\n".join(lines[1:] + ["openclipart\tother/file.png\t10"]) + "\n")
    with pytest.raises(SystemExit, match="test split differs"):
        starter_data.check_test_split(records, split_of, listing)
    frozen = starter_data.TEST_SPLIT_LIST.read_text().splitlines()
    assert len(frozen) == 1068 and len({line.split("\t")[1] for line in frozen}) == 1068


@pytest.mark.parametrize("n, relevant, k", [(10, 1, 1), (10, 3, 2), (7, 2, 6), (5, 5, 1)])
def test_chance_level_matches_enumeration(n, relevant, k):
    from itertools import permutations

    orders = list(permutations(range(n))) if n <= 7 else None
    if orders is None:
        expected = 1 - np.prod([(n - relevant - i) / (n - i) for i in range(k)])
    else:
        expected = np.mean([any(x < relevant for x in order[:k]) for order in orders])
    assert eval_starter.random_recall(n, relevant, k) == pytest.approx(expected)
