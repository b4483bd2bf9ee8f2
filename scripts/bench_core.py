"""Benchmark of the core engine: crawl throughput against the plain open_clip loop, re-crawl cost, and
exact search latency, on this machine. Prints what it measured; nothing is assumed.

    .venv/bin/python scripts/bench_core.py [--images 64] [--vectors 100000]

The model is ViT-B-32 with random weights saved to a local checkpoint: it costs exactly what the real
weights cost, and needs no download. Images are synthetic 1024x768 JPEGs (smooth colour fields with
noise, so JPEG sizes are photo-like).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_jpegs(folder: Path, count: int, size: tuple[int, int] = (1024, 768), seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(count):
        a, b, c = rng.random(3)
        field = np.stack(
            [
                127 + 100 * np.sin(xs / (40 + 60 * a) + i),
                127 + 100 * np.cos(ys / (40 + 60 * b) - i),
                127 + 100 * np.sin((xs + ys) / (50 + 80 * c)),
            ],
            axis=-1,
        )
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype("uint8")
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def bench_crawl(work: Path, count: int) -> None:
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import vecsearch

    torch.manual_seed(0)
    checkpoint = work / "vit-b-32-random.safetensors"
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    del model
    images = make_jpegs(work / "photos", count)

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(checkpoint))
    model.eval()
    pixels = torch.stack([preprocess(Image.open(p)) for p in images[:32]])
    with torch.inference_mode():
        model.encode_image(pixels)  # warm-up: the first call pays one-off set-up costs
        start = time.perf_counter()
        for _ in range(2):
            model.encode_image(pixels)
        model_only = 64 / (time.perf_counter() - start)
    start = time.perf_counter()
    plain = []
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            batch = torch.stack([preprocess(Image.open(p)) for p in images[i : i + 32]])
            plain.append(torch.nn.functional.normalize(model.encode_image(batch), dim=-1).numpy())
    plain_seconds = time.perf_counter() - start
    plain_vectors = np.concatenate(plain)

    encoder = vecsearch.load_encoder("ViT-B-32", pretrained=str(checkpoint), device="cpu")
    encoder.embed_prepared_images([encoder.prepare_image(Image.open(p).convert("RGB")) for p in images[:32]])
    index = vecsearch.Index.create(work / "index", encoder=encoder)
    start = time.perf_counter()
    report = index.add(work / "photos")
    crawl_seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = index.add(work / "photos")
    recrawl_seconds = time.perf_counter() - start

    by_name = dict(
        index.store.conn.execute(
            "SELECT f.relpath, i.id FROM items i JOIN files f ON f.id = i.file_id WHERE i.kind = 'image'"
        ).fetchall()
    )
    cosines = [float(index.store.vector(by_name[p.name]) @ plain_vectors[i]) for i, p in enumerate(images)]
    print(f"crawl: {count} JPEGs of 1024x768, ViT-B-32 (random weights), CPU, batch 32, models warmed up")
    print(f"  model only (pre-decoded tensors)   {model_only:6.1f} images/s")
    print(f"  plain open_clip loop               {count / plain_seconds:6.1f} images/s")
    print(
        f"  vecsearch Index.add                {count / crawl_seconds:6.1f} images/s "
        f"({report.added} added, {report.embedded_images} embedded)"
    )
    print(
        f"  re-crawl, nothing changed          {recrawl_seconds * 1000:6.1f} ms "
        f"({again.unchanged} unchanged, {again.embedded_images} embedded)"
    )
    print(f"  cosine(vecsearch, plain loop)      min {min(cosines):.6f}, mean {statistics.mean(cosines):.6f}")
    index.close()


def bench_search(count: int, dim: int = 512, queries: int = 200) -> None:
    from vecsearch.vectors import VectorIndex

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(max(1, count // 1000), dim)).astype(np.float32)
    data = centres[rng.integers(0, len(centres), count)] + 0.4 * rng.normal(size=(count, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    ids = np.arange(1, count + 1, dtype=np.int64)
    start = time.perf_counter()
    index = VectorIndex.from_vectors(dim, ids, data)
    build = time.perf_counter() - start
    probe = data[rng.integers(0, count, queries)] + 0.1 * rng.normal(size=(queries, dim)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    latencies = []
    mismatches = 0
    for q in probe:
        start = time.perf_counter()
        _, found = index.search(q, 10)
        latencies.append((time.perf_counter() - start) * 1000)
        exact = ids[np.argsort(-(data @ q), kind="stable")[:10]]
        mismatches += int(not np.array_equal(found[0], exact))
    start = time.perf_counter()
    index.search(probe, 10)
    batch_qps = queries / (time.perf_counter() - start)
    latencies.sort()
    print(f"search: {count} vectors of dimension {dim} (clustered), exact IDMap2,Flat, top-10")
    print(
        f"  build {build:.2f} s; single query p50 {latencies[len(latencies) // 2]:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms; batch {batch_qps:.0f} queries/s"
    )
    print(f"  results different from numpy brute force: {mismatches} of {queries} queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--vectors", type=int, default=100_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory() as folder:
        bench_crawl(Path(folder), args.images)
    bench_search(args.vectors)


if __name__ == "__main__":
    main()
