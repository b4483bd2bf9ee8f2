"""Benchmark of start-up and re-crawl: a cold `vecsearch search` on a 100k-item index, and re-crawling an
unchanged tree of 100,000 files.

    .venv/bin/python scripts/bench_cold_start.py [--items 100000] [--files 100000] [--runs 5] [--work DIR]

Cold query: the index holds `--items` clustered vectors (scripts/synthetic_vectors.py) under a ViT-B-32
with random weights saved to a local checkpoint (it loads exactly as real weights do). Each run is a new
process; the operating system's file cache is warm (as for any second query of the day). The breakdown
runs the same library calls as `vecsearch search` in a fresh process and times each step; the total is
the wall time of the real command. The query is measured both ways: with the text tower exported by a
crawl (ONNX Runtime + tokenizers, no torch) and with the full torch model (VECSEARCH_TEXT_ONNX=0). The
exports live in `--work`/cache (VECSEARCH_CACHE_DIR), made once when missing.

Re-crawl: `--files` tiny PNGs are crawled once with a tiny open_clip model, then `Index.add` runs again
over the unchanged tree and its time is printed (it must stat the files, not read or embed them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BREAKDOWN_TORCH = r"""
import json, sys, time
t0 = time.perf_counter()
from vecsearch.cli import main  # what the command imports before it parses its arguments
from vecsearch import Index
t1 = time.perf_counter()
import open_clip  # what loading the model imports first (torch, torchvision, transformers)
t1b = time.perf_counter()
index = Index.open(sys.argv[1])
encoder = index.encoder
t2 = time.perf_counter()
vector = encoder.embed_texts(["a red apple on a table"])
t3 = time.perf_counter()
hits = index.search("a red apple on a table", k=10)
t4 = time.perf_counter()
text = json.dumps([h.to_dict() for h in hits])
t5 = time.perf_counter()
print(json.dumps({"steps": {"import vecsearch": t1 - t0, "import torch + open_clip": t1b - t1,
                            "open index + load model": t2 - t1b, "encode": t3 - t2,
                            "search (vectors + FAISS + rows)": (t4 - t3) - (t3 - t2), "output": t5 - t4},
                  "torch imported": "torch" in sys.modules}))
"""

BREAKDOWN_ONNX = r"""
import json, sys, time
t0 = time.perf_counter()
from vecsearch.cli import main  # what the command imports before it parses its arguments
from vecsearch import Index
t1 = time.perf_counter()
import ftfy, onnxruntime, regex, tokenizers  # what the exported text tower runs on
t1b = time.perf_counter()
index = Index.open(sys.argv[1])
tower = index.model.text_tower()  # what a text query loads instead of the model (checked by hash)
assert tower is not None, "no text export for this index's model"
t2 = time.perf_counter()
vector = tower.embed_texts(["a red apple on a table"])
t3 = time.perf_counter()
hits = index.search("a red apple on a table", k=10)
t4 = time.perf_counter()
text = json.dumps([h.to_dict() for h in hits])
t5 = time.perf_counter()
print(json.dumps({"steps": {"import vecsearch": t1 - t0, "import onnxruntime + tokenizers": t1b - t1,
                            "open index + load text tower": t2 - t1b, "encode": t3 - t2,
                            "search (vectors + FAISS + rows)": (t4 - t3) - (t3 - t2), "output": t5 - t4},
                  "torch imported": any(m in sys.modules for m in ("torch", "torchvision", "open_clip", "transformers"))}))
"""


def build_query_index(work: Path, items: int) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file
    from synthetic_vectors import ClusteredVectors, fill_index

    import vecsearch

    folder = work / f"index-{items}"
    if (folder / "manifest.json").exists():
        return folder
    checkpoint = work / "vit-b-32-random.safetensors"
    if not checkpoint.exists():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    encoder = vecsearch.load_encoder("ViT-B-32", pretrained=str(checkpoint), device="cpu")
    index = vecsearch.Index.create(folder, encoder=encoder)
    start = time.perf_counter()
    fill_index(index, ClusteredVectors(dim=encoder.dim, seed=0).collection(items))
    print(
        f"built a {items:,}-item index in {time.perf_counter() - start:.0f} s: {index.manifest['faiss']['type']}, "
        f"nprobe {index.manifest['faiss'].get('nprobe')}, recall@10 {index.manifest['faiss'].get('recall@10')}"
    )
    index.close()
    return folder


def ensure_text_export(folder: Path) -> None:
    """The text-tower export a crawl would have made (the index is filled with synthetic vectors, so no
    crawl ran): made here once, from the index's own model, when the cache lacks it."""
    import vecsearch
    from vecsearch.encoders.text_export import export_text_tower
    from vecsearch.encoders.text_onnx import load_text_encoder

    with vecsearch.Index.open(folder) as index:
        if load_text_encoder(index.fingerprint, index.dim) is not None:
            return
        print(export_text_tower(index.encoder) or "the text tower could not be exported (see the log)")


def cold_query(work: Path, items: int, runs: int) -> None:
    folder = build_query_index(work, items)
    ensure_text_export(folder)
    ways = [
        ("exported text tower (ONNX Runtime, no torch)", BREAKDOWN_ONNX, {}),
        ("full torch model (VECSEARCH_TEXT_ONNX=0)", BREAKDOWN_TORCH, {"VECSEARCH_TEXT_ONNX": "0"}),
    ]
    for title, script, extra in ways:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
        parts: list[dict[str, float]] = []
        totals = []
        heavy = set()
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env, check=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            parts.append(result["steps"])
            heavy.add(result["torch imported"])
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "vecsearch", "search", str(folder), "a red apple on a table", "--json"],
                capture_output=True,
                env=env,
                check=True,
            )
            totals.append(time.perf_counter() - start)
        print(f"\ncold text query, {items:,}-item index, ViT-B-32, {title}, median of {runs} new processes:")
        for key in parts[0]:
            print(f"  {key:<34}{statistics.median(p[key] for p in parts) * 1000:8.0f} ms")
        print(f"  {'sum of the steps':<34}{statistics.median(sum(p.values()) for p in parts) * 1000:8.0f} ms")
        print(
            f"  {'vecsearch search (whole command)':<34}{statistics.median(totals) * 1000:8.0f} ms "
            f"(min {min(totals) * 1000:.0f}, max {max(totals) * 1000:.0f})"
        )
        print(f"  torch, torchvision, open_clip or transformers imported: {'yes' if True in heavy else 'no'}")
    print("\n  rclip, published: 3.7 s a query (65 % model loading); 1.9 s once it loaded only its text tower")


def recrawl(work: Path, files: int) -> None:
    import numpy as np
    from PIL import Image

    import vecsearch

    # The test suite's tiny open_clip model, saved the same way.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_tiny_model

    model_dir = work / "tiny-model"
    if not model_dir.exists():
        write_tiny_model(model_dir)
    tree = work / f"tree-{files}"
    if not tree.exists():
        rng = np.random.default_rng(0)
        for i in range(files):
            folder = tree / f"{i // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    folder = work / f"crawl-index-{files}"
    if not (folder / "manifest.json").exists():
        index = vecsearch.Index.create(folder, model=f"local-dir:{model_dir}")
        start = time.perf_counter()
        report = index.add(tree, progress=False)
        print(f"\nfirst crawl of {files:,} files: {time.perf_counter() - start:.0f} s ({report.added} added)")
        index.close()
    times = []
    for _ in range(3):
        with vecsearch.Index.open(folder) as index:
            start = time.perf_counter()
            report = index.add(progress=False)
            times.append(time.perf_counter() - start)
    print(
        f"re-crawl of the unchanged tree of {files:,} files: median {statistics.median(times):.2f} s "
        f"over 3 runs ({report.unchanged} unchanged, {report.embedded_images} embedded)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="Keep the indexes and files here (default: a temporary folder).")
    parser.add_argument("--skip-recrawl", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("VECSEARCH_CACHE_DIR", str(work / "cache"))  # the text-tower export goes here
        cold_query(work, args.items, args.runs)
        if not args.skip_recrawl:
            recrawl(work, args.files)


if __name__ == "__main__":
    main()
