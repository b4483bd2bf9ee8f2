"""Memory of the distributed crawl's two kinds of worker, for sizing a cluster (docs/scale.md).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_ray_memory.py --model-dir DIR --photos DIR

Each measurement runs in a fresh process and reports its peak resident memory (ru_maxrss):
- a model actor: Python with vecsearch, the index's model (an open_clip checkpoint folder, e.g. the random
  ViT-B-32 that scripts/bench_ray.py saves) loaded the way an actor loads it, the inference mode settled
  (`auto` on the CPU: fp32 and the exported int8 tower), and 64 pictures embedded in batches of 32;
- a read task: decoding 32 of the 12 MP photos at the reduced size the crawl uses, one batch's rows of
  pixels held as the task holds them until it returns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ACTOR = """
import resource, sys, numpy as np
from pathlib import Path
from PIL import Image
from vecsearch import load_encoder
encoder = load_encoder("local-dir:" + sys.argv[1], device="cpu", batch_size=32, inference="auto")
pictures = [Image.fromarray((np.random.default_rng(i).random((224, 224, 3)) * 255).astype("uint8")) for i in range(64)]
for start in (0, 32):
    encoder.embed_prepared_images([encoder.prepare_image(p) for p in pictures[start:start + 32]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, encoder.inference.mode)
"""

READER = """
import resource, sys
from pathlib import Path
import numpy as np
from vecsearch.images import load_image
photos = sorted(Path(sys.argv[1]).glob("*.jpg"))[:32]
rows = [np.asarray(load_image(p, min_size=672), dtype=np.uint8).tobytes() for p in photos]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, sum(len(r) for r in rows))
"""


def measure(code: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    actor_rss, mode = measure(ACTOR, str(args.model_dir))
    reader_rss, pixel_bytes = measure(READER, str(args.photos))
    data = {
        "model_actor_peak_rss_bytes": int(actor_rss),
        "model_actor_mode": mode,
        "read_task_peak_rss_bytes": int(reader_rss),
        "read_task_pixels_of_32_photos_bytes": int(pixel_bytes),
    }
    text = (
        f"model actor (ViT-B-32, inference auto -> {mode}, 64 pictures embedded): peak RSS "
        f"{int(actor_rss) / 2**20:.0f} MiB\n"
        f"read task (32 photos of 12 MP decoded at reduced size, rows held): peak RSS "
        f"{int(reader_rss) / 2**20:.0f} MiB, of which pixels {int(pixel_bytes) / 2**20:.0f} MiB\n"
    )
    print(text, end="")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bench_ray_memory.txt").write_text(text)
    (args.results / "bench_ray_memory.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
