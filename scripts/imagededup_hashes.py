"""imagededup's perceptual hashes over one folder of pictures, for scripts/bench_duplicates.py.

Benchmark-only: it runs inside .venv-imagededup (made by scripts/setup_imagededup.sh), never in the project's
.venv, and it does not import vecsearch; the benchmark talks to it through the JSON it writes.

    .venv-imagededup/bin/python scripts/imagededup_hashes.py --images DIR --methods phash,dhash \\
        --distances 0,2,4,6,8,10,12 --workers 2 --json out.json

For each method: the hashes of every picture in DIR (not recursive; encode_seconds), then imagededup's own
search (find_duplicates with the hashes, brute force) at each Hamming distance: the pairs it reports (file
names, each pair once, sorted) and search_seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib.metadata import version
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--methods", default="phash,dhash")
    parser.add_argument("--distances", default="0,2,4,6,8,10,12")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # imagededup logs every step at INFO and warns on each odd picture

    from imagededup.methods import AHash, DHash, PHash, WHash

    classes = {"phash": PHash, "dhash": DHash, "ahash": AHash, "whash": WHash}
    distances = [int(d) for d in args.distances.split(",")]
    out: dict = {
        "imagededup": version("imagededup"),
        "python": sys.version.split()[0],
        "workers": args.workers,
        "methods": {},
    }
    for name in args.methods.split(","):
        hasher = classes[name](verbose=False)
        started = time.perf_counter()
        encodings = hasher.encode_images(image_dir=str(args.images), num_enc_workers=args.workers)
        encode_seconds = time.perf_counter() - started
        runs = []
        for distance in distances:
            started = time.perf_counter()
            found = hasher.find_duplicates(
                encoding_map=encodings,
                max_distance_threshold=distance,
                search_method="brute_force_cython",
                num_dist_workers=args.workers,
            )
            seconds = time.perf_counter() - started
            pairs = sorted({tuple(sorted((a, b))) for a, dups in found.items() for b in dups if a != b})
            runs.append({"distance": distance, "pairs": pairs, "search_seconds": seconds})
        out["methods"][name] = {"hashed": len(encodings), "encode_seconds": encode_seconds, "runs": runs}
    args.json.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
