"""The starter model's data: Debian's Tux Paint stamps and openclipart PNGs, captioned, grouped and split.

Used by train_starter.py and eval_starter.py. The split is a pure function of the file list and the seed,
so training and evaluation agree without passing files around, and the test split is never trained on.

Captions:
- Tux Paint stamps: the first (English) line of the stamp's .txt file.
- openclipart: the file name with the author's name (from the PNG's Author field), numbers and single
  letters removed, followed by the two innermost folder names for context, e.g.
  `animals/mammals/dogs/bored_dog_01.png` -> "bored dog (mammals, dogs)".

Groups keep variants of one drawing together (numbered siblings, `_bw` versions): the key is the folder
plus the file name with digits and black-and-white markers removed. Groups of more than
`MAX_HELDOUT_GROUP` files (generated series such as 1,378 star polygons) always go to the training split,
so that one series cannot fill the test split.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vecsearch.images import to_rgb, vips_thumbnail

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
TUXPAINT_DIR = Path("/usr/share/tuxpaint/stamps")
DEBIAN_PACKAGES = ("openclipart-png", "tuxpaint-stamps-default")
MAX_HELDOUT_GROUP = 20
TEST_FRACTION = 0.12
VAL_FRACTION = 0.05
# Above this many pixels a PNG is shrunk while it is decoded (libvips, streaming) instead of loaded whole.
STREAM_DECODE_PIXELS = 16_000_000

TUXPAINT = "tuxpaint"
OPENCLIPART = "openclipart"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One training picture: where it is, what it shows, which drawing it is a variant of."""

    path: str
    source: str
    caption: str
    group: str
    category: str  # top-level folder: Tux Paint's category (animals, food, ...), openclipart's section


def ensure_packages(install: bool = True) -> None:
    """Install the Debian packages that hold the data, if they are missing and we may."""
    if OPENCLIPART_DIR.is_dir() and TUXPAINT_DIR.is_dir():
        return
    if not install:
        raise SystemExit(f"missing data: install the Debian packages {' '.join(DEBIAN_PACKAGES)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and shutil.which("sudo") is None:
        raise SystemExit(f"run as root or install {' '.join(DEBIAN_PACKAGES)} with apt-get first")
    print(f"installing {' '.join(DEBIAN_PACKAGES)} with apt-get ...", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *DEBIAN_PACKAGES], check=True)


def collect(openclipart_dir: Path = OPENCLIPART_DIR, tuxpaint_dir: Path = TUXPAINT_DIR) -> list[Record]:
    """Every usable picture of both packages, in a stable order."""
    records = list(_tuxpaint_records(tuxpaint_dir)) + list(_openclipart_records(openclipart_dir))
    records.sort(key=lambda r: r.path)
    return records


def _tuxpaint_records(root: Path) -> Iterable[Record]:
    for png in sorted(root.rglob("*.png")):
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            continue
        caption = _first_line(txt)
        if not caption:
            continue
        relative = png.relative_to(root)
        yield Record(
            path=str(png),
            source=TUXPAINT,
            caption=caption,
            group=f"{TUXPAINT}:{relative.parent}/{_variant_key(png.stem)}",
            category=relative.parts[0],
        )


def tuxpaint_categories(root: Path = TUXPAINT_DIR) -> list[str]:
    """Tux Paint's top-level stamp folders: the labels of the zero-shot evaluation."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.png")))


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        line = handle.readline()
    return " ".join(line.split()).strip()


def _openclipart_records(root: Path) -> Iterable[Record]:
    for png in sorted(root.rglob("*.png")):
        relative = png.relative_to(root)
        author = _png_text(png, "Author")
        caption = openclipart_caption(relative, author)
        if not caption:
            continue
        yield Record(
            path=str(png),
            source=OPENCLIPART,
            caption=caption,
            group=f"{OPENCLIPART}:{relative.parent}/{_variant_key(_strip_author(_tokens(png.stem), author))}",
            category=relative.parts[0],
        )


def _header(path: str | Path) -> tuple[tuple[int, int], dict]:
    """A picture's size and text fields, read from its header only. PIL's decompression-bomb limit guards
    decoding, which never happens here, so it is lifted for this read alone (the largest PNG is 623 MP)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            return image.size, dict(image.info)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _png_text(path: Path, key: str) -> str:
    try:
        value = _header(path)[1].get(key, "")
    except OSError:
        return ""
    return value if isinstance(value, str) else ""


_NOISE_WORDS = {"theme", "flat", "lemon", "etiquette", "png", "svg", "clipart", "md"}


def openclipart_caption(relative: Path, author: str = "") -> str:
    """A caption from an openclipart file's name and folders (see the module docstring)."""
    words = [w for w in _strip_author(_tokens(relative.stem), author) if _is_word(w)]
    name = " ".join(words)
    context_words: list[str] = []
    for folder in relative.parent.parts[-2:]:
        cleaned = " ".join(w for w in _tokens(folder) if _is_word(w) and w not in _NOISE_WORDS)
        if cleaned and cleaned not in context_words:
            context_words.append(cleaned)
    context = ", ".join(context_words)
    if not name:
        return context
    return f"{name} ({context})" if context else name


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s_\-.+,()]+", text.lower()) if t]


def _is_word(token: str) -> bool:
    return len(token) > 1 and not any(ch.isdigit() for ch in token) and token not in _NOISE_WORDS


def _strip_author(tokens: list[str], author: str) -> list[str]:
    """File names end in the author's name, often cut short: drop from the first author word on."""
    author_words = [w for w in _tokens(author) if len(w) > 1]
    if not author_words:
        return tokens
    for index, token in enumerate(tokens):
        if index == 0 or len(token) < 2:
            continue
        if any(word == token or (len(token) >= 3 and word.startswith(token)) for word in author_words):
            return tokens[:index]
    return tokens


def _variant_key(name: str | list[str]) -> str:
    text = "_".join(name) if isinstance(name, list) else name.lower()
    text = re.sub(r"[\d]+", "", text)
    text = re.sub(r"(^|[_\-\s])(bw|b&w|gray|grey|mono)($|[_\-\s])", r"\1\3", text)
    return re.sub(r"[_\-\s]+", "_", text).strip("_")


def assign_splits(records: Sequence[Record], seed: int = 0) -> dict[str, str]:
    """Map each path to train / val / test. Whole groups move together; the order is a seeded hash."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.group, []).append(record)
    total = len(records)
    quotas = {"test": TEST_FRACTION * total, "val": VAL_FRACTION * total}
    filled = {"test": 0, "val": 0}
    split_of: dict[str, str] = {}

    def order(key: str) -> str:
        return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    for key in sorted(groups, key=order):
        members = groups[key]
        split = "train"
        if len(members) <= MAX_HELDOUT_GROUP:
            for candidate in ("test", "val"):
                if filled[candidate] + len(members) <= quotas[candidate]:
                    split = candidate
                    filled[candidate] += len(members)
                    break
        for record in members:
            split_of[record.path] = split
    return split_of


def decode_thumbnail(path: str | Path, size: int) -> Image.Image:
    """The picture as RGB on white, its longer side `size`, decoded with bounded memory: huge PNGs are
    shrunk by libvips while they stream in (vecsearch.images.vips_thumbnail), never held at full size."""
    (width, height), _ = _header(path)
    if width * height > STREAM_DECODE_PIXELS:
        return vips_thumbnail(path, size)
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return to_rgb(image)


def letterbox(image: Image.Image, size: int) -> np.ndarray:
    """A square uint8 array: the picture scaled to fit, centred on white."""
    scaled = image.copy()
    scaled.thumbnail((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(scaled, ((size - scaled.width) // 2, (size - scaled.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


# The test split of the first starter model, frozen: every later model is measured on exactly these files.
TEST_SPLIT_LIST = Path(__file__).resolve().with_name("starter_test_split.txt")


def test_split_listing(records: Sequence[Record], split_of: dict[str, str]) -> list[str]:
    """The test split as `source<TAB>path under its package<TAB>bytes` lines, sorted."""
    lines = []
    for record in records:
        if split_of[record.path] != "test":
            continue
        path = Path(record.path)
        root = next((p for p in path.parents if p.name in ("png", "stamps")), path.parent)
        lines.append(f"{record.source}\t{path.relative_to(root)}\t{path.stat().st_size}")
    return sorted(lines)


def check_test_split(records: Sequence[Record], split_of: dict[str, str], listing: Path = TEST_SPLIT_LIST) -> None:
    """Refuse to go on if the test split is not the frozen one (other package versions, a changed rule)."""
    frozen = listing.read_text(encoding="utf-8").splitlines()
    current = test_split_listing(records, split_of)
    if current != frozen:
        missing = sorted(set(frozen) - set(current))[:3]
        extra = sorted(set(current) - set(frozen))[:3]
        raise SystemExit(
            f"the test split differs from {listing.name} ({len(current)} files against {len(frozen)}; "
            f"missing {missing}, unexpected {extra}): figures would not compare with earlier models"
        )
