#!/usr/bin/env python
"""Build examples/openclipart: a few hundred public-domain openclipart pictures from the starter model's
test split (never trained on), small PNGs with caption sidecars, kept in the repository for the demo and
for the quality test.

    .venv/bin/python scripts/make_example_folder.py [--count 300] [--size 128] [--out examples/openclipart]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import starter_data  # noqa: E402

README = """\
# openclipart examples

{count} pictures from the Debian package openclipart-png (public domain, https://openclipart.org),
drawn at random (seed {seed}) from the test split of the starter model, so it never saw them in
training. Each is shrunk to at most {size} px on a white background; the .txt beside it holds the
caption made from the original file and folder names. Rebuild with scripts/make_example_folder.py.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("examples/openclipart"))
    args = parser.parse_args(argv)

    starter_data.ensure_packages()
    records = starter_data.collect()
    split_of = starter_data.assign_splits(records, seed=args.seed)
    test = [r for r in records if split_of[r.path] == "test" and r.source == starter_data.OPENCLIPART]
    chosen = sorted(random.Random(args.seed).sample(test, min(args.count, len(test))), key=lambda r: r.path)
    if args.out.exists():
        shutil.rmtree(args.out)
    for record in chosen:
        relative = Path(record.path).relative_to(starter_data.OPENCLIPART_DIR)
        target = args.out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image = starter_data.decode_thumbnail(record.path, args.size)
        image.quantize(colors=256, method=2, dither=0).save(target, optimize=True)
        target.with_suffix(".txt").write_text(record.caption + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(README.format(count=len(chosen), seed=args.seed, size=args.size))
    print(f"wrote {len(chosen)} pictures to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
