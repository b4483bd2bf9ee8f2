#!/usr/bin/env python
"""Measure the starter model on the test split (never trained on), through vecsearch's public API.

    .venv/bin/python scripts/eval_starter.py                  # full test split (installs the data if missing)
    .venv/bin/python scripts/eval_starter.py --folder examples/openclipart   # a folder of pictures + sidecars

The test pictures are exported once to a folder (shrunk to 256 px while decoding, so that PNGs of
hundreds of megapixels cost bounded memory), each with its caption in a sidecar .txt; then an index is
built with `Index.create(..., model="starter")` and `index.add(folder)`, and every measurement is a
query to that index:

- text -> image: each distinct test caption is a query (`index.search`, images only); a hit is any
  picture with that caption in the top k. Recall@1/5/10.
- image -> text: each picture asks `index.describe` for its nearest distinct captions; a hit is its own
  caption in the top k. Recall@1/5/10.
- zero-shot: each Tux Paint test stamp is classified (`index.classify`, prompt templates) into Tux Paint's
  top-level categories; accuracy against the majority-class rate.
- image -> image: each picture is transformed (scaled down, cropped, colour-jittered, re-encoded as
  JPEG, seeded) and searched for (`index.search` with the file as the query, images only); a hit is the
  original in first place. Recall@1 (and @5).

Every figure is printed with its chance level: the expected recall of a random ranking. Results are
written as JSON (--out) for the README and the quality test.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import starter_data  # noqa: E402

import vecsearch  # noqa: E402
from vecsearch.crawl import file_sha256, read_sidecar  # noqa: E402
from vecsearch.images import is_image_path, load_image  # noqa: E402
from vecsearch.query import TEXT  # noqa: E402

EXPORT_SIZE = 256
HELDOUT_DEFAULT = Path.home() / ".cache" / "vecsearch" / "starter-data-v2" / "heldout-test"
KS = (1, 5, 10)
CATEGORY_NAMES = {  # Tux Paint's folder names, as words a prompt can use
    "naturalforces": "natural forces",
    "town": "town and buildings",
    "seasonal": "seasonal things and holidays",
}


CLIP_ART_TEMPLATES = (
    "a drawing of {}.",
    "clip art of {}.",
    "a picture of {}.",
    "an icon of {}.",
    "{}",
)


@dataclass(frozen=True)
class Picture:
    path: Path  # the exported file that the index holds
    caption: str
    category: str | None  # Tux Paint category, for zero-shot; None for openclipart


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, help="evaluate this folder of pictures with .txt sidecars instead")
    parser.add_argument(
        "--heldout",
        type=Path,
        default=None,
        help="also evaluate this folder: the held-out test source that build_starter_data.py exports "
        "(default: its heldout-test folder when the data is built)",
    )
    parser.add_argument("--no-heldout", action="store_true", help="skip the held-out test source")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write the figures into the packaged model card (model_card.json) as well",
    )
    parser.add_argument("--work-dir", type=Path, help="where the exported test split and its index go")
    parser.add_argument("--seed", type=int, default=0, help="the split seed (as in training) and transform seed")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only this many pictures (quick runs)")
    parser.add_argument("--model", default="starter")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args(argv)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vecsearch-eval-"))
    if args.folder:
        pictures = folder_pictures(args.folder)
        source = str(args.folder)
    else:
        starter_data.ensure_packages(install=not args.no_install)
        pictures = export_test_split(work / "test-split", seed=args.seed)
        source = "test split"
    pictures = subset(pictures, args.limit, args.seed)
    results = evaluate(pictures, work, model=args.model, seed=args.seed)
    results["source"] = source + (f" (a seeded subset of {args.limit})" if args.limit else "")
    print_report(results)
    heldout = args.heldout or HELDOUT_DEFAULT
    if not args.folder and not args.no_heldout and heldout.is_dir():
        held = evaluate(folder_pictures(heldout), work / "heldout", model=args.model, seed=args.seed)
        meta = heldout.parent / "sources.json"
        name = json.loads(meta.read_text()).get("test_source", heldout.name) if meta.is_file() else heldout.name
        held["source"] = f"held-out test source ({name}, never trained on)"
        print_report(held)
        results["heldout_test"] = held
    results["limit"] = args.limit
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.update_card:
        from vecsearch.encoders import starter

        card = json.loads(starter.CARD_PATH.read_text())
        card["figures"] = {
            name: {key: part[key] for key in ("source", "pictures", "text_to_image", "image_to_text",
                                              "zero_shot", "image_to_image")}
            for name, part in (("test_split", results), ("heldout_test", results.get("heldout_test")))
            if part
        }  # fmt: skip
        starter.CARD_PATH.write_text(json.dumps(card, indent=2) + "\n")
    return 0


def subset(pictures: list[Picture], limit: int, seed: int = 0) -> list[Picture]:
    """A seeded sample of `limit` pictures (all of them when limit is 0), in path order."""
    if not limit or limit >= len(pictures):
        return pictures
    return sorted(random.Random(seed).sample(pictures, limit), key=lambda p: str(p.path))


def folder_pictures(folder: Path) -> list[Picture]:
    """Pictures under `folder` with a sidecar caption (its first line), read as the crawler reads them."""
    pictures = []
    for image in sorted(folder.rglob("*")):
        sidecar = image.with_suffix(".txt")
        if not is_image_path(image) or not sidecar.is_file():
            continue
        captions, _ = read_sidecar(sidecar)
        if captions:
            pictures.append(Picture(image.resolve(), captions[0].text, None))
    return pictures


def export_test_split(target: Path, seed: int = 0) -> list[Picture]:
    """Write each test picture once as a PNG of at most EXPORT_SIZE px with its caption beside it."""
    records = starter_data.collect()
    split_of = starter_data.assign_splits(records, seed=seed)
    pictures = []
    for record in records:
        if split_of[record.path] != "test":
            continue
        root = starter_data.TUXPAINT_DIR if record.source == starter_data.TUXPAINT else starter_data.OPENCLIPART_DIR
        relative = Path(record.path).relative_to(root)
        out = target / record.source / relative.with_suffix(".png")
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            starter_data.decode_thumbnail(record.path, EXPORT_SIZE).save(out)
            out.with_suffix(".txt").write_text(record.caption + "\n", encoding="utf-8")
        category = record.category if record.source == starter_data.TUXPAINT else None
        pictures.append(Picture(out.resolve(), record.caption, category))
    return pictures


def evaluate(pictures: list[Picture], work: Path, model: str = "starter", seed: int = 0) -> dict:
    """Index copies of `pictures` (numbered, each with its caption sidecar) and measure all four tasks."""
    started = time.perf_counter()
    folder = work / "indexed"
    for stale in (folder, work / "index", work / "transformed"):
        if stale.exists():
            shutil.rmtree(stale)
    folder.mkdir(parents=True)
    copies: list[Path] = []
    for i, picture in enumerate(pictures):
        copy = folder / f"{i:05d}{picture.path.suffix.lower()}"
        shutil.copyfile(picture.path, copy)
        copy.with_suffix(".txt").write_text(picture.caption + "\n", encoding="utf-8")
        copies.append(copy)
    index = vecsearch.Index.create(work / "index", model=model)
    report = index.add(folder)
    index_seconds = time.perf_counter() - started
    if report.skipped:
        raise SystemExit(f"{len(report.skipped)} pictures could not be indexed: {report.skipped[:3]}")

    results: dict = {
        "model": model,
        "pictures": len(pictures),
        "distinct_captions": len({p.caption for p in pictures}),
        "index_seconds": round(index_seconds, 1),
    }
    results["text_to_image"] = text_to_image(index, pictures, copies)
    results["image_to_text"] = image_to_text(index, pictures, copies)
    results["zero_shot"] = zero_shot(index, pictures, copies)
    results["image_to_image"] = image_to_image(index, copies, work / "transformed", seed)
    results["seconds"] = round(time.perf_counter() - started, 1)
    index.close()
    return results


def hit_key(path: str) -> str:
    return str(Path(path).absolute())


def text_to_image(index, pictures: list[Picture], copies: list[Path]) -> dict:
    caption_of = {hit_key(str(copy)): picture.caption for copy, picture in zip(copies, pictures, strict=True)}
    holders: dict[str, int] = Counter(p.caption for p in pictures)
    n = len(pictures)
    hits = {k: 0 for k in KS}
    chance = {k: 0.0 for k in KS}
    for caption, relevant in holders.items():
        found = index.search(vecsearch.Query((vecsearch.Term(TEXT, caption),)), k=max(KS), kind="image")
        ranks = [i for i, hit in enumerate(found) if caption_of[hit_key(hit.path)] == caption]
        for k in KS:
            hits[k] += bool(ranks and ranks[0] < k)
            chance[k] += random_recall(n, relevant, k)
    queries = len(holders)
    return {
        "queries": queries,
        **{f"recall@{k}": round(hits[k] / queries, 4) for k in KS},
        **{f"chance@{k}": round(chance[k] / queries, 4) for k in KS},
    }


def image_to_text(index, pictures: list[Picture], copies: list[Path]) -> dict:
    captions = len({p.caption for p in pictures})
    hits = {k: 0 for k in KS}
    for copy, picture in zip(copies, pictures, strict=True):
        found = index.describe(copy, k=max(KS))
        texts = [hit.caption for hit in found]
        for k in KS:
            hits[k] += picture.caption in texts[:k]
    n = len(pictures)
    return {
        "queries": n,
        "candidate_captions": captions,
        **{f"recall@{k}": round(hits[k] / n, 4) for k in KS},
        **{f"chance@{k}": round(min(1.0, k / captions), 4) for k in KS},
    }


def zero_shot(index, pictures: list[Picture], copies: list[Path]) -> dict:
    stamps = [(copy, p) for copy, p in zip(copies, pictures, strict=True) if p.category]
    if not stamps:
        return {"queries": 0}
    categories = sorted({p.category for _, p in stamps} | set(starter_data.tuxpaint_categories()))
    labels = [CATEGORY_NAMES.get(c, c) for c in categories]
    correct = 0
    confusion: dict[str, Counter] = defaultdict(Counter)
    for copy, picture in stamps:
        scores = index.classify(copy, labels, templates=CLIP_ART_TEMPLATES)
        predicted = categories[labels.index(scores[0].label)]
        correct += predicted == picture.category
        confusion[picture.category][predicted] += 1
    counts = Counter(p.category for _, p in stamps)
    majority_category, majority = counts.most_common(1)[0]
    return {
        "queries": len(stamps),
        "labels": len(labels),
        "accuracy": round(correct / len(stamps), 4),
        "majority_class": majority_category,
        "majority_rate": round(majority / len(stamps), 4),
        "chance": round(1 / len(labels), 4),
        "per_category": {c: f"{confusion[c][c]}/{counts[c]}" for c in sorted(counts)},
    }


def image_to_image(index, copies: list[Path], out: Path, seed: int) -> dict:
    """A hit is the original, or a byte-identical copy of it (the index keeps duplicates as twins)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    content = {hit_key(str(copy)): file_sha256(copy)[0] for copy in copies}
    hits1 = hits5 = 0
    for i, original in enumerate(copies):
        edited = out / f"{i:05d}.jpg"
        edited.write_bytes(transform(original, rng))
        found = index.search([str(edited)], k=5, kind="image")
        wanted = content[hit_key(str(original))]
        ranks = [r for r, hit in enumerate(found) if content[hit_key(hit.path)] == wanted]
        hits1 += bool(ranks and ranks[0] == 0)
        hits5 += bool(ranks)
    n = len(copies)
    return {
        "queries": n,
        "recall@1": round(hits1 / n, 4),
        "recall@5": round(hits5 / n, 4),
        "chance@1": round(1 / n, 4),
        "chance@5": round(min(1.0, 5 / n), 4),
        "transform": "scale 0.5-0.9, crop keeping 80-95% of each side, brightness/contrast/saturation "
        "0.8-1.2, JPEG quality 60-85",
    }


def transform(path: Path, rng: random.Random) -> bytes:
    """A seeded edit of the picture: smaller, cropped, recoloured and saved as JPEG."""
    from PIL import ImageEnhance

    image = load_image(path)
    scale = rng.uniform(0.5, 0.9)
    image = image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))))
    keep_w, keep_h = rng.uniform(0.8, 0.95), rng.uniform(0.8, 0.95)
    width, height = round(image.width * keep_w), round(image.height * keep_h)
    left = rng.randint(0, image.width - width)
    top = rng.randint(0, image.height - height)
    image = image.crop((left, top, left + width, top + height))
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.8, 1.2))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=rng.randint(60, 85))
    return buffer.getvalue()


def random_recall(n: int, relevant: int, k: int) -> float:
    """Chance that a random ranking of n items puts one of `relevant` in its first k."""
    if relevant <= 0:
        return 0.0
    if k >= n or relevant > n - k:
        return 1.0
    return 1.0 - math.comb(n - relevant, k) / math.comb(n, k)


def print_report(results: dict) -> None:
    print(
        f"starter model on {results['source']}: {results['pictures']} pictures, "
        f"{results['distinct_captions']} distinct captions (indexed in {results['index_seconds']} s)"
    )
    t2i, i2t, zs, i2i = (results[k] for k in ("text_to_image", "image_to_text", "zero_shot", "image_to_image"))
    print("task            " + "".join(f"  R@{k:<3} (chance)  " for k in KS))
    for name, row in (("text -> image", t2i), ("image -> text", i2t)):
        print(f"{name:<16}" + "".join(f"  {row[f'recall@{k}']:.3f} ({row[f'chance@{k}']:.3f}) " for k in KS))
    print(
        f"image -> image    R@1 {i2i['recall@1']:.3f} (chance {i2i['chance@1']:.4f}), "
        f"R@5 {i2i['recall@5']:.3f}  [{i2i['transform']}]"
    )
    if zs.get("queries"):
        print(
            f"zero-shot         {zs['queries']} Tux Paint stamps into {zs['labels']} categories: accuracy "
            f"{zs['accuracy']:.3f} (majority class '{zs['majority_class']}' {zs['majority_rate']:.3f}, "
            f"chance {zs['chance']:.3f})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
