"""The starter model's new sources: icon sets from npm and pictures from Debian packages, captioned.

Each `collect_*` function reads one downloaded package (a folder) and returns `Item`s: what to render, its
English caption, the set's own synonyms, and a normalised concept (the split and the per-concept cap use it).
`render(item, size)` turns an item into an RGB picture on white whose longer side is `size`. Fetching and
unpacking the packages is build_starter_data.py's job; nothing here touches the network.

Left out on purpose (the data rules of the starter model): every icon in an emoji or emotion category, every
icon whose name mentions a face, smile, emoticon, mood or flag; Inkscape's emojione.svg; icon themes'
`-symbolic` glyphs and every folder but actions, devices, places, status, categories and emblems.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image

from vecsearch.images import to_rgb

ICONIFY_SETS = (
    "game-icons", "mdi", "tabler", "material-symbols", "lucide", "ph", "carbon", "icon-park-outline",
    "healthicons", "guidance", "maki", "map", "flat-color-icons", "fa6-solid", "bi", "ri", "mingcute",
)  # fmt: skip
THEME_CONTEXTS = ("actions", "devices", "places", "status", "categories", "emblems")
EXCLUDED_NAME_WORDS = ("face", "smile", "emoticon", "mood", "flag")
EXCLUDED_CATEGORY_WORDS = ("emoji", "emotion")
# Words that name a drawing style, not what is drawn: dropped from captions and concepts.
STYLE_WORDS = {
    "outline", "outlined", "filled", "fill", "line", "bold", "duotone", "light", "thin", "regular", "rounded",
    "round", "sharp", "twotone", "solid", "alt", "variant", "sm", "lg", "stroke", "symbolic", "negative",
}  # fmt: skip
# File names that say nothing about the picture (GCompris backgrounds and buttons).
NOISE_NAMES = {
    "background", "bg", "button", "frame", "back", "top", "bottom", "left", "right", "icon", "point", "shadow",
    "highlight", "empty", "tile", "board", "help", "ok", "cancel", "next", "previous", "bar", "menu", "title",
}  # fmt: skip
# Words of symbol ids that are not names (Material Design's `ic_markunread_mailbox_24px`).
ID_NOISE = {"ic", "px", "svg", "icon", "symbol"}


@dataclass(frozen=True)
class Item:
    """One picture to render: where it comes from, what it shows, and how to draw it."""

    source: str  # e.g. "game-icons", "inkscape", "josm", "oxygen", "wesnoth", "gcompris"
    key: str  # unique within the whole data set
    caption: str
    concept: str
    kind: str  # iconify | svg | symbol | raster | rcc
    ref: str  # kind-specific: "icons.json#name", a file path, "file.svg#symbol-id", "file.rcc#inner/path"
    synonyms: tuple[str, ...] = field(default=())


def words_of(name: str) -> list[str]:
    """A name's words: split on separators and camelCase, lower-cased, numbers dropped."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-zA-Z]+", name.lower()) if w]


def caption_of(name: str, style_words: Iterable[str] = ()) -> str:
    style = STYLE_WORDS | set(style_words)
    words = [w for w in words_of(name) if w not in style]
    return " ".join(words)


def concept_of(caption: str) -> str:
    """The normalised concept: caption words without style words and plural s, sorted (arrow-left == left arrow)."""
    words = {_singular(w) for w in words_of(caption) if w not in STYLE_WORDS and len(w) > 1}
    return " ".join(sorted(words))


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def excluded_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in EXCLUDED_NAME_WORDS)


# ---------------------------------------------------------------- npm: @iconify-json/<set> and synonym metadata


def collect_iconify(package: Path, prefix: str, synonyms: dict[str, list[str]] | None = None) -> list[Item]:
    """Every visible icon of one unpacked @iconify-json package (the folder holding icons.json)."""
    data = json.loads((package / "icons.json").read_text(encoding="utf-8"))
    metadata_path = package / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else {}
    style_words = {w for suffix in metadata.get("suffixes", {}) for w in words_of(suffix)}
    excluded: set[str] = set()
    for category, names in metadata.get("categories", {}).items():
        if any(word in category.lower() for word in EXCLUDED_CATEGORY_WORDS):
            excluded.update(names)
    aliases: dict[str, list[str]] = {}
    for alias, target in data.get("aliases", {}).items():
        if set(target) == {"parent"}:  # a plain second name, not a transformed copy
            aliases.setdefault(target["parent"], []).append(alias)
    synonyms = synonyms or {}
    items = []
    for name, icon in sorted(data["icons"].items()):
        if icon.get("hidden") or name in excluded or excluded_name(name):
            continue
        caption = caption_of(name, style_words)
        if not caption:
            continue
        extra = [caption_of(a, style_words) for a in aliases.get(name, []) if not excluded_name(a)]
        extra += synonyms.get(name, []) or synonyms.get(_unstyled(name, style_words), [])
        items.append(
            Item(
                source=prefix,
                key=f"{prefix}:{name}",
                caption=caption,
                concept=concept_of(caption),
                kind="iconify",
                ref=f"{package / 'icons.json'}#{name}",
                synonyms=_distinct(extra, caption),
            )
        )
    return items


def _unstyled(name: str, style_words: set[str]) -> str:
    parts = name.split("-")
    while parts and parts[-1] in STYLE_WORDS | style_words:
        parts.pop()
    return "-".join(parts)


def _distinct(texts: Iterable[str], caption: str) -> tuple[str, ...]:
    seen = {caption}
    out = []
    for text in texts:
        text = " ".join(text.split()).strip().lower()
        if text and text not in seen and not excluded_name(text):
            seen.add(text)
            out.append(text)
    return tuple(out[:8])


def tabler_synonyms(package: Path) -> dict[str, list[str]]:
    """@tabler/icons icons.json: name -> tags."""
    data = json.loads((package / "icons.json").read_text(encoding="utf-8"))
    return {name: [str(t) for t in entry.get("tags", [])] for name, entry in data.items()}


def lucide_synonyms(package: Path) -> dict[str, list[str]]:
    """lucide-static tags.json: name -> tags."""
    data = json.loads((package / "tags.json").read_text(encoding="utf-8"))
    return {name: [str(t) for t in tags] for name, tags in data.items()}


def mdi_synonyms(package: Path) -> dict[str, list[str]]:
    """@mdi/svg meta.json: name -> aliases (its tags are categories, not synonyms)."""
    data = json.loads((package / "meta.json").read_text(encoding="utf-8"))
    return {entry["name"]: [caption_of(a) for a in entry.get("aliases", [])] for entry in data}


def fontawesome_synonyms(package: Path) -> dict[str, list[str]]:
    """@fortawesome/fontawesome-free metadata/icon-families.json: name -> label and search terms."""
    data = json.loads((package / "metadata" / "icon-families.json").read_text(encoding="utf-8"))
    return {name: [entry.get("label", ""), *entry.get("search", {}).get("terms", [])] for name, entry in data.items()}


# ---------------------------------------------------------------- Debian: Inkscape symbol files


def collect_symbols(folder: Path, source: str, skip: Iterable[str] = ("emojione.svg",)) -> list[Item]:
    """Every <symbol> of every Inkscape symbol file in `folder`, captioned by its <title> or id."""
    items = []
    for path in sorted(folder.glob("*.svg")):
        if path.name in set(skip):
            continue
        root = ElementTree.parse(path).getroot()
        for symbol in root.iter("{http://www.w3.org/2000/svg}symbol"):
            ident = symbol.get("id")
            if not ident:
                continue
            title = symbol.find("{http://www.w3.org/2000/svg}title")
            text = title.text if title is not None and title.text else ident
            caption = " ".join(w for w in caption_of(text).split() if w not in ID_NOISE)
            if not caption or excluded_name(caption):
                continue
            items.append(
                Item(
                    source=source,
                    key=f"{source}:{path.stem}:{ident}",
                    caption=caption,
                    concept=concept_of(caption),
                    kind="symbol",
                    ref=f"{path}#{ident}",
                )
            )
    return items


# ---------------------------------------------------------------- Debian: map presets and symbols


def collect_josm(jar: Path) -> list[Item]:
    """JOSM's preset icons (images/presets/<group>/<name>.svg inside josm.jar), captioned by their path."""
    import zipfile

    items = []
    with zipfile.ZipFile(jar) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if len(parts) < 3 or parts[:2] != ["images", "presets"] or not name.endswith((".svg", ".png")):
                continue
            caption = _preset_caption(parts[2:])
            if caption:
                items.append(
                    Item("josm", f"josm:{name}", caption, concept_of(caption.split("(")[0]), "jar", f"{jar}#{name}")
                )
    return _one_per_stem(items)


def collect_osm_carto(symbols: Path) -> list[Item]:
    """openstreetmap-carto's map symbols (symbols/<key>/<value>.svg), road shields and patterns left out."""
    items = []
    for path in sorted(symbols.rglob("*.svg")):
        relative = path.relative_to(symbols).parts
        if relative[0] in {"shields", "generating_patterns", "unpaved"}:
            continue
        caption = _preset_caption(list(relative))
        if caption:
            items.append(
                Item("osm-carto", f"osm-carto:{'/'.join(relative)}", caption, concept_of(caption.split("(")[0]),
                     "svg", str(path))
            )  # fmt: skip
    return items


def _preset_caption(parts: list[str]) -> str:
    """`shop/bakery.svg` -> "bakery (shop)"; a top-level file is its name alone."""
    name = caption_of(Path(parts[-1]).stem)
    groups = [caption_of(p) for p in parts[:-1] if caption_of(p)]
    if not name or excluded_name(name):
        return ""
    return f"{name} ({', '.join(groups)})" if groups else name


def _one_per_stem(items: list[Item]) -> list[Item]:
    """JOSM ships some presets as both SVG and PNG: keep the SVG."""
    best: dict[str, Item] = {}
    for item in items:
        stem = item.key.rsplit(".", 1)[0]
        if stem not in best or item.key.endswith(".svg"):
            best[stem] = item
    return [best[k] for k in sorted(best)]


# ---------------------------------------------------------------- Debian: colour icon themes

MIN_THEME_SIZE = 32  # smaller bitmaps are redrawn, simplified designs
_SIZE = re.compile(r"^(\d+)(?:x\d+)?(?:@(\d)x)?$")


def collect_theme(theme_dir: Path, source: str) -> list[Item]:
    """One picture per design of a freedesktop icon theme: per (context, name) the scalable SVG or the largest
    PNG, symlinked names folded into one design (their names become synonyms)."""
    candidates: dict[tuple[str, str], tuple[int, Path]] = {}
    for path in theme_dir.rglob("*"):
        if path.suffix not in (".png", ".svg") or "-symbolic" in path.name or path.name.endswith(".symbolic.png"):
            continue
        parts = path.relative_to(theme_dir).parts
        context = next((p for p in parts[:-1] if p in THEME_CONTEXTS), None)
        if context is None:
            continue
        size = _size_rank(parts[:-1])
        if size < MIN_THEME_SIZE:
            continue
        key = (context, path.stem)
        if key not in candidates or size > candidates[key][0]:
            candidates[key] = (size, path)
    designs: dict[str, list[tuple[str, str, Path]]] = {}
    for (context, name), (_, path) in candidates.items():
        if not path.exists():
            continue  # a dangling link
        designs.setdefault(str(path.resolve()), []).append((context, name, path))
    items = []
    for real, names in sorted(designs.items()):
        names.sort(key=lambda n: (n[2].is_symlink(), len(n[1]), n[1]))
        context, name, path = names[0]
        caption = caption_of(name)
        if not caption or excluded_name(name):
            continue
        items.append(
            Item(
                source=source,
                key=f"{source}:{context}/{name}",
                caption=caption,
                concept=concept_of(caption),
                kind="svg" if path.suffix == ".svg" else "raster",
                ref=real,
                synonyms=_distinct((caption_of(n) for _, n, _ in names[1:]), caption),
            )
        )
    return items


def _size_rank(parts: tuple[str, ...]) -> int:
    """scalable beats any bitmap size; a bitmap's rank is its pixel size times its scale."""
    rank = 0
    for part in parts:
        if part == "scalable":
            return 10_000
        match = _SIZE.match(part)
        if match:
            rank = max(rank, int(match.group(1)) * int(match.group(2) or 1))
    return rank


# ---------------------------------------------------------------- Debian: Wesnoth


def collect_wesnoth(core: Path) -> list[Item]:
    """Wesnoth's unit types (sprite and portrait, captioned by the unit's name, its description's first sentence
    as a synonym) and its item pictures (captioned by file name)."""
    images = core / "images"
    items = []
    for cfg in sorted((core / "units").rglob("*.cfg")):
        text = cfg.read_text(encoding="utf-8", errors="replace")
        for block in re.findall(r"\[unit_type\](.*?)\[/unit_type\]", text, flags=re.S):
            name = _cfg_value(block, "name").split("^")[-1]  # "female^Elvish Druid": a translation context
            if not name or excluded_name(name):
                continue
            description = _cfg_value(block, "description")
            first_sentence = re.split(r"(?<=[.!?])\s", description, maxsplit=1)[0] if description else ""
            for attribute in ("image", "profile"):
                value = _cfg_value(block, attribute)
                picture = images / value.split("~")[0] if value else None
                if picture is None or not picture.is_file():
                    continue
                items.append(
                    Item("wesnoth", f"wesnoth:{picture.relative_to(images)}", name.lower(), concept_of(name),
                         "raster", str(picture), _distinct([first_sentence], name.lower()))
                )  # fmt: skip
    for picture in sorted((images / "items").glob("*.png")):
        caption = caption_of(picture.stem)
        if caption and not excluded_name(caption):
            items.append(
                Item("wesnoth", f"wesnoth:items/{picture.name}", caption, concept_of(caption), "raster", str(picture))
            )
    return _first_per_key(items)


def _cfg_value(block: str, key: str) -> str:
    match = re.search(rf'^\s*{key}\s*=\s*(?:_\s*)?"((?:[^"]|"")*)"', block, flags=re.M)
    if match:
        return match.group(1).replace('""', '"').strip()
    match = re.search(rf"^\s*{key}\s*=\s*([^\s\"{{][^\n]*)$", block, flags=re.M)
    return match.group(1).strip() if match else ""


def _first_per_key(items: list[Item]) -> list[Item]:
    seen: dict[str, Item] = {}
    for item in items:
        seen.setdefault(item.key, item)
    return list(seen.values())


# ---------------------------------------------------------------- Debian: GCompris (Qt resource files)


def read_rcc(path: Path) -> dict[str, bytes]:
    """The files inside a Qt binary resource (.rcc, format versions 1-3), zlib-compressed ones inflated."""
    data = path.read_bytes()
    if data[:4] != b"qres":
        raise ValueError(f"{path.name} is not a Qt resource file")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 22 if version >= 2 else 14
    files: dict[str, bytes] = {}

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        base = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # a directory
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            stack.extend((child, f"{prefix}{name}/" if index else "") for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 1:  # zlib, behind a 4-byte uncompressed length
            blob = zlib.decompress(blob[4:])
        elif flags & 4:
            continue  # zstd: not used by Debian's GCompris
        files[prefix + name] = blob
    return files


# GCompris activities whose pictures no one could name from the picture alone: map shapes of countries and
# regions, and cut-out fragments of paintings named after the painting.
GCOMPRIS_SKIPPED = {"geo-country", "geography", "paintings", "details"}


def gcompris_caption(inner: str) -> str:
    """The caption of a picture inside GCompris's resources: its file name's words ("" when it says nothing)."""
    parts = inner.split("/")
    activity = parts[3] if len(parts) > 4 and parts[2] == "activities" else ""
    if activity in GCOMPRIS_SKIPPED:
        return ""
    stem = parts[-1].rsplit(".", 1)[0]
    words = [w for w in words_of(stem) if len(w) > 1 and w not in NOISE_NAMES]
    caption = " ".join(words)
    return "" if excluded_name(caption) else caption


def collect_gcompris(rcc_dir: Path) -> list[Item]:
    """GCompris's pictures (SVG, SVGZ, WebP photos) from its .rcc files, captioned by file name."""
    items = []
    for rcc in sorted(rcc_dir.glob("*.rcc")):
        for inner in sorted(read_rcc(rcc)):
            if inner.rsplit(".", 1)[-1].lower() not in ("svg", "svgz", "webp", "png", "jpg", "jpeg"):
                continue
            caption = gcompris_caption(inner)
            if caption:
                items.append(
                    Item("gcompris", f"gcompris:{inner}", caption, concept_of(caption), "rcc", f"{rcc}#{inner}")
                )
    return _first_per_key(items)


# ---------------------------------------------------------------- rendering


def render(item: Item, size: int) -> Image.Image:
    """The item as an RGB picture on white, its longer side `size` pixels."""
    if item.kind == "iconify":
        path, name = item.ref.rsplit("#", 1)
        return _render_svg(_iconify_svg(path, name), size)
    if item.kind == "svg":
        return _render_svg(_read_svg(Path(item.ref)), size)
    if item.kind == "symbol":
        path, ident = item.ref.rsplit("#", 1)
        return _render_symbol(path, ident, size)
    if item.kind == "jar":
        path, inner = item.ref.rsplit("#", 1)
        return _render_blob(inner, _jar_member(path, inner), size)
    if item.kind == "rcc":
        path, inner = item.ref.rsplit("#", 1)
        return _render_blob(inner, _rcc_files(path)[inner], size)
    with Image.open(item.ref) as opened:
        return _raster(opened, size)


def _render_blob(name: str, blob: bytes, size: int) -> Image.Image:
    if name.endswith(".svgz"):
        blob = zlib.decompress(blob, 16 + zlib.MAX_WBITS)
    if name.endswith((".svg", ".svgz")):
        return _render_svg(blob.decode("utf-8", errors="replace"), size)
    with Image.open(io.BytesIO(blob)) as opened:
        return _raster(opened, size)


def _raster(opened: Image.Image, size: int) -> Image.Image:
    opened.seek(0)
    image = opened.convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError("nothing drawn")
    image = image.crop(_pad(box, image.size))
    scale = size / max(image.size)  # small sprites and icons are scaled up too, so every picture fills its box
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return to_rgb(image.resize(target, Image.Resampling.LANCZOS))


@functools.lru_cache(maxsize=32)
def _iconify_set(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _iconify_svg(path: str, name: str) -> str:
    data = _iconify_set(path)
    icon = data["icons"][name]
    left, top = icon.get("left", data.get("left", 0)), icon.get("top", data.get("top", 0))
    width, height = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {width} {height}" width="{width}" height="{height}" color="#000">'
        f"{icon['body']}</svg>"
    )


@functools.lru_cache(maxsize=4)
def _rcc_files(path: str) -> dict[str, bytes]:
    return read_rcc(Path(path))


def _jar_member(path: str, inner: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.read(inner)


def _read_svg(path: Path) -> str:
    blob = path.read_bytes()
    if blob[:2] == b"\x1f\x8b":
        blob = zlib.decompress(blob, 16 + zlib.MAX_WBITS)
    return blob.decode("utf-8", errors="replace")


def _render_svg(svg: str, size: int) -> Image.Image:
    """Render fitting a `size` box, then crop to what was drawn (icons often sit inside a wide margin)."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size * 2, skip_system_fonts=False)
    with Image.open(io.BytesIO(bytes(png))) as opened:
        image = opened.convert("RGBA")
    return _crop_to_ink(image, size)


def _crop_to_ink(image: Image.Image, size: int) -> Image.Image:
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError("nothing drawn")
    image = image.crop(_pad(box, image.size))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return to_rgb(image)


def _pad(box: tuple[int, int, int, int], limit: tuple[int, int]) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    margin = max(1, round(0.04 * max(right - left, bottom - top)))
    return max(0, left - margin), max(0, top - margin), min(limit[0], right + margin), min(limit[1], bottom + margin)


@functools.lru_cache(maxsize=8)
def _symbol_file(path: str) -> tuple[str, str]:
    """The file's <defs> (gradients, shared paths) and the namespace declarations symbols may need."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    root_tag = re.search(r"<svg\b[^>]*>", text)
    namespaces = " ".join(re.findall(r'xmlns(?::\w+)?="[^"]*"', root_tag.group(0) if root_tag else ""))
    root = ElementTree.fromstring(text.encode("utf-8"))
    kept = [child for child in root if child.tag.rsplit("}", 1)[-1] in ("defs", "symbol", "style")]
    body = "".join(ElementTree.tostring(child, encoding="unicode") for child in kept)
    return body, namespaces


@functools.lru_cache(maxsize=8)
def _symbol_contents(path: str) -> dict[str, str]:
    """id -> the symbol's children as a <g>: a symbol without a viewBox is drawn inline, where it stands (through
    <use> it would be clipped to a viewport at the origin)."""
    root = ElementTree.parse(path).getroot()
    contents = {}
    for symbol in root.iter("{http://www.w3.org/2000/svg}symbol"):
        inner = "".join(ElementTree.tostring(child, encoding="unicode") for child in symbol)
        contents[symbol.get("id", "")] = f'<g xmlns="http://www.w3.org/2000/svg">{inner}</g>'
    return contents


def _render_symbol(path: str, ident: str, size: int) -> Image.Image:
    """A symbol drawn through <use>. Symbols without a viewBox are drawn on a huge canvas first, to find where
    their ink is, and then again framed to it."""
    body, namespaces = _symbol_file(path)
    if 'xmlns="' not in namespaces:
        namespaces += ' xmlns="http://www.w3.org/2000/svg"'
    if "xmlns:xlink" not in namespaces:
        namespaces += ' xmlns:xlink="http://www.w3.org/1999/xlink"'

    symbol_tag = re.search(rf'<(?:\w+:)?symbol\b[^>]*id="{re.escape(ident)}"[^>]*>', body)
    has_view_box = bool(symbol_tag and "viewBox" in symbol_tag.group(0))

    def document(view: tuple[float, float, float, float], pixels: int) -> str:
        x, y, w, h = view
        # With a viewBox the symbol is scaled into the <use> box; without one it is drawn inline.
        drawn = (
            f'<use xlink:href="#{ident}" x="{x}" y="{y}" width="{w}" height="{h}"/>'
            if has_view_box
            else _symbol_contents(path)[ident]
        )
        return (
            f'<svg {namespaces} viewBox="{x} {y} {w} {h}" width="{pixels}" height="{pixels * h / w:.0f}">{body}'
            f"{drawn}</svg>"
        )

    import resvg_py

    if has_view_box:
        view = (0.0, 0.0, 100.0, 100.0)
    else:
        span = 4000.0
        rough = _png_rgba(resvg_py.svg_to_bytes(svg_string=document((-span / 2, -span / 2, span, span), 2000)))
        box = rough.getchannel("A").getbbox()
        if box is None:
            raise ValueError("nothing drawn")
        unit = span / 2000
        left, top = -span / 2 + box[0] * unit - unit, -span / 2 + box[1] * unit - unit
        width, height = (box[2] - box[0] + 2) * unit, (box[3] - box[1] + 2) * unit
        side = max(width, height)
        view = (left - (side - width) / 2, top - (side - height) / 2, side, side)
    image = _png_rgba(resvg_py.svg_to_bytes(svg_string=document(view, size * 2)))
    return _crop_to_ink(image, size)


def _png_rgba(png: bytes | list[int]) -> Image.Image:
    with Image.open(io.BytesIO(bytes(png))) as opened:
        return opened.convert("RGBA")
