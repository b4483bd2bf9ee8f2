"""What reading every picture's captions again costs: the one-time pass after an upgrade of the caption
readers (or a change of --caption-languages / --embedded-captions), against a crawl where nothing changed.

Crawls Debian's Tux Paint stamps (sidecars with ~80 language lines each) and openclipart PNGs with the
bundled starter model, then times, in one run: an unchanged re-crawl; the re-crawl of an index whose
files carry the first schema's sidecar signatures; a change of languages; embedded captions turned off.

    .venv/bin/python scripts/bench_caption_reread.py [--openclipart 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import vecsearch

TUX = Path("/usr/share/tuxpaint/stamps")
OPENCLIPART = Path("/usr/share/openclipart/png")


def copy_tree(target: Path, openclipart: int, seed: int) -> int:
    count = 0
    for picture in sorted(TUX.rglob("*.png")):
        relative = picture.relative_to(TUX)
        (target / "tux" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(picture, target / "tux" / relative)
        if picture.with_suffix(".txt").is_file():
            shutil.copy(picture.with_suffix(".txt"), (target / "tux" / relative).with_suffix(".txt"))
        count += 1
    clipart = sorted(OPENCLIPART.rglob("*.png"))
    for number, picture in enumerate(random.Random(seed).sample(clipart, min(openclipart, len(clipart)))):
        (target / "clipart").mkdir(parents=True, exist_ok=True)
        shutil.copy(picture, target / "clipart" / f"{number:05d}-{picture.name}")
        count += 1
    return count


def timed(index: vecsearch.Index, **options: object) -> dict[str, float | int]:
    started = time.perf_counter()
    report = index.add(**options)  # type: ignore[arg-type]
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "captions_added": report.captions_added,
        "captions_removed": report.captions_removed,
        "embedded_images": report.embedded_images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openclipart", type=int, default=2000, help="openclipart pictures besides Tux Paint's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not TUX.is_dir() or not OPENCLIPART.is_dir():
        raise SystemExit("needs Debian's tuxpaint-stamps-default and openclipart-png")
    with tempfile.TemporaryDirectory() as work:
        tree, folder = Path(work) / "tree", Path(work) / "idx"
        pictures = copy_tree(tree, args.openclipart, args.seed)
        results: dict[str, object] = {"pictures": pictures}
        with vecsearch.Index.create(folder, model="starter") as index:
            results["first crawl"] = timed(index, paths=tree)
            results["unchanged re-crawl"] = timed(index)
        with sqlite3.connect(folder / "items.sqlite") as db:  # the first schema's signatures: size:mtime
            db.execute("UPDATE files SET sidecar_sig = substr(sidecar_sig, instr(sidecar_sig, '|') + 1)")
            db.execute("UPDATE files SET sidecar_sig = NULLIF(substr(sidecar_sig, 1, instr(sidecar_sig, '|') - 1), '')")
        with vecsearch.Index.open(folder) as index:
            results["re-crawl after the upgrade (every picture's captions read once)"] = timed(index)
            results["unchanged re-crawl, again"] = timed(index)
            results["languages changed to en,fr"] = timed(index, caption_languages="en,fr")
            results["embedded captions turned off"] = timed(index, embedded_captions=False)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
