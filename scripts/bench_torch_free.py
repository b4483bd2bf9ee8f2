"""Benchmark of the torch-free hot paths against the torch ones, side by side in one run, as whole new
processes (what a user waits for):

    .venv/bin/python scripts/bench_torch_free.py [--items 100000] [--photos 128] [--runs 5] [--work DIR]

- cold `vecsearch search INDEX picture.jpg`, `describe`, `classify --index` and `classify --model` on a
  100k-item index (synthetic vectors, one in ten a caption) under ViT-B-32 with random weights saved to a
  local checkpoint (it loads and runs exactly as real weights do); the query picture is a 12 MP JPEG;
  `classify` both with labels met for the first time (the label cache emptied before every run) and with
  the same labels again (their prompt vectors in the label cache);
- the breakdown of a cold picture query (imports, session load, preprocess, model, search);
- `vecsearch serve`: from the command's start to the first answer to a picture query;
- `vecsearch index` of `--photos` 12 MP JPEGs into a new index: the plain open_clip loop, the torch path
  (VECSEARCH_IMAGE_ONNX=0) and the torch-free one (the model's exports made beforehand by a crawl of a
  few photos, as the first crawl of any folder makes them); for each, the time from the command's start
  to the first pictures embedded, the whole time, and the peak RSS;
- the same `vecsearch index FOLDER --index DIR` again over 256 unchanged photos, with and without
  `--model ViT-B-32 --pretrained CKPT`.

Torch path = VECSEARCH_IMAGE_ONNX=0, VECSEARCH_TEXT_ONNX=0 and VECSEARCH_LABEL_CACHE=0 (the full model
answers everything, as before these paths existed). Every figure is a
median of `--runs` new processes with a warm file cache. Prints what it measured; `--json` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

HEAVY = ("torch", "torchvision", "open_clip", "transformers")
TORCH_ENV = {"VECSEARCH_IMAGE_ONNX": "0", "VECSEARCH_TEXT_ONNX": "0", "VECSEARCH_LABEL_CACHE": "0"}
LABELS = "a dog,a cat,a car,a tree,a house,a person,a boat,a mountain"

# A command run as `vecsearch` runs it, that also reports when a crawl first embedded pictures (the
# indexer logs it), its peak memory and whether torch was imported.
WRAPPER = r"""
import json, logging, sys, time
first = []
class Mark(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("first ") and not first:
            first.append(record.created)
handler = Mark(level=logging.INFO)
logger = logging.getLogger("vecsearch.indexer")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
from vecsearch.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="vecsearch")
except SystemExit as exc:
    code = exc.code or 0
# The peak RSS of this process. Not getrusage's ru_maxrss: Linux keeps that across exec, so a child of a
# big parent would report the parent's peak.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"first_embedded_at": first[0] if first else None,
                  "max_rss_mib": peak / 1024,
                  "heavy": [m for m in ("torch", "torchvision", "open_clip", "transformers") if m in sys.modules]}),
      file=sys.stderr)
sys.exit(code)
"""

BREAKDOWN = r"""
import json, sys, time
t0 = time.perf_counter()
from vecsearch.cli import main  # what the command imports before it parses its arguments
from vecsearch import Index
t1 = time.perf_counter()
if sys.argv[3] == "torch":
    import open_clip  # torch, torchvision, open_clip (and transformers): what the full model needs
else:
    import onnxruntime  # what the exported towers run on
t2 = time.perf_counter()
index = Index.open(sys.argv[1])
encoder = index.model.torch_encoder() if sys.argv[3] == "torch" else index.model.query_encoder()
if sys.argv[3] != "torch":
    assert getattr(encoder, "torch_free", False), "no export for this index's model"
    encoder.warm()  # the fp32 graph's session, after its files' SHA-256 matched the meta
t3 = time.perf_counter()
from vecsearch.images import load_image
from vecsearch.images import decode_size
picture = load_image(sys.argv[2], min_size=decode_size(encoder))
prepared = encoder.prepare_image(picture)
t4 = time.perf_counter()
vector = encoder.embed_prepared_images([prepared])
t5 = time.perf_counter()
if sys.argv[3] == "torch":
    index.model._encoder = encoder  # the query below uses the model loaded above
hits = index.search([sys.argv[2]], k=10)
t6 = time.perf_counter()
text = json.dumps([h.to_dict() for h in hits])
t7 = time.perf_counter()
print(json.dumps({"steps": {"import vecsearch": t1 - t0, "import the model's runtime": t2 - t1,
                            "open index + load model": t3 - t2, "decode + preprocess picture": t4 - t3,
                            "model": t5 - t4, "search (vectors + FAISS + rows)": (t6 - t5) - (t5 - t3),
                            "output": t7 - t6},
                  "heavy": [m for m in ("torch", "torchvision", "open_clip", "transformers") if m in sys.modules]}))
"""


def wrapped(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `vecsearch ARGS` in a new process: wall time, first-embedded time, peak RSS, heavy imports."""
    started_at = time.time()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"vecsearch {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    info = json.loads(done.stderr.strip().splitlines()[-1])
    first = info["first_embedded_at"]
    return {
        "seconds": seconds,
        "first_embedded_s": (first - started_at) if first else None,
        "max_rss_mib": info["max_rss_mib"],
        "torch_imported": bool(info["heavy"]),
        "stdout": done.stdout,
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def build_query_index(work: Path, checkpoint: Path, items: int) -> Path:
    from synthetic_vectors import ClusteredVectors, fill_index

    import vecsearch

    folder = work / f"index-{items}-captions"
    if (folder / "manifest.json").exists():
        return folder
    encoder = vecsearch.load_encoder("ViT-B-32", pretrained=str(checkpoint), device="cpu")
    index = vecsearch.Index.create(folder, encoder=encoder)
    fill_index(index, ClusteredVectors(dim=encoder.dim, seed=0).collection(items), caption_every=10)
    index.close()
    return folder


def make_checkpoint(work: Path) -> Path:
    checkpoint = work / "vit-b-32-random.safetensors"
    if not checkpoint.exists():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return checkpoint


def cold_queries(folder: Path, checkpoint: Path, picture: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    commands = {
        "search INDEX picture.jpg": ["search", str(folder), str(picture), "--json"],
        "describe INDEX picture.jpg": ["describe", str(folder), str(picture), "--json"],
        "classify picture.jpg --index INDEX (3 labels)": [
            "classify",
            str(picture),
            "--labels",
            ",".join(LABELS.split(",")[:3]),
            "--index",
            str(folder),
            "--json",
        ],
        "classify picture.jpg --index INDEX (8 labels)": [
            "classify",
            str(picture),
            "--labels",
            LABELS,
            "--index",
            str(folder),
            "--json",
        ],
        "classify picture.jpg --model ViT-B-32 --pretrained CKPT (8 labels)": [
            "classify",
            str(picture),
            "--labels",
            LABELS,
            "--model",
            "ViT-B-32",
            "--pretrained",
            str(checkpoint),
            "--json",
        ],
    }
    labels_cache = Path(env["VECSEARCH_CACHE_DIR"]) / "labels"
    results: dict[str, Any] = {}
    ways = [("torch-free", {}, False), ("torch-free, labels cached", {}, True), ("torch", TORCH_ENV, False)]
    for way, extra, cached in ways:
        for title, args in commands.items():
            if cached and not title.startswith("classify"):
                continue
            samples = []
            for _ in range(runs):
                if not cached:  # every run meets its labels for the first time
                    shutil.rmtree(labels_cache, ignore_errors=True)
                samples.append(wrapped(args, {**env, **extra}))
            results[f"{title} [{way}]"] = {
                "median_s": median([s["seconds"] for s in samples]),
                "min_s": min(s["seconds"] for s in samples),
                "max_s": max(s["seconds"] for s in samples),
                "torch_imported": any(s["torch_imported"] for s in samples),
            }
    return results


def breakdown(folder: Path, picture: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    results = {}
    for way, extra in (("torch-free", {}), ("torch", TORCH_ENV)):
        parts = []
        heavy = set()
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-c", BREAKDOWN, str(folder), str(picture), way],
                capture_output=True,
                text=True,
                env={**env, **extra},
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            parts.append(result["steps"])
            heavy.update(result["heavy"])
        steps = {key: median([p[key] for p in parts]) for key in parts[0]}
        results[way] = {"steps": steps, "sum": sum(steps.values()), "heavy": sorted(heavy)}
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_first_answer(folder: Path, picture: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    """From `vecsearch serve` starting to the first answer to a picture query (the client polls the
    health check every 10 ms, then uploads the picture)."""
    data = picture.read_bytes()
    boundary = "vecsearchbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    results = {}
    for way, extra in (("torch-free", {}), ("torch", TORCH_ENV)):
        samples = []
        for _ in range(runs):
            port = free_port()
            start = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "vecsearch", "serve", str(folder), "--port", str(port), "--quiet"],
                env={**env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                while True:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).read()
                        break
                    except OSError:
                        if process.poll() is not None:
                            raise SystemExit(
                                f"the server stopped: {process.stderr.read() if process.stderr else ''}"
                            ) from None
                        time.sleep(0.01)
                up = time.perf_counter() - start
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/v1/search/image?k=10",
                    data=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
                assert answer["hits"], answer
                samples.append((up, time.perf_counter() - start))
            finally:
                process.terminate()
                process.wait(timeout=30)
        results[way] = {
            "up_s": median([s[0] for s in samples]),
            "first_picture_answer_s": median([s[1] for s in samples]),
            "max_s": max(s[1] for s in samples),
        }
    return results


def crawls(work: Path, checkpoint: Path, photos: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    from bench_indexing import PLAIN_LOOP

    results: dict[str, Any] = {}
    plain = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", PLAIN_LOOP, str(checkpoint), str(photos), str(work / "plain.npy")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        plain.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    results["plain open_clip loop"] = {"seconds": median(plain), "all": plain}
    target = work / "crawl-index"
    command = ["index", str(photos), "--index", str(target), "--model", "ViT-B-32", "--pretrained", str(checkpoint)]
    for way, extra in (("torch", TORCH_ENV), ("torch-free", {})):
        samples = []
        for _ in range(runs):
            shutil.rmtree(target, ignore_errors=True)
            samples.append(wrapped([*command, "--json", "-q"], {**env, **extra}))
        report = json.loads(samples[-1]["stdout"])
        results[f"vecsearch index [{way}]"] = {
            "seconds": median([s["seconds"] for s in samples]),
            "first_embedded_s": median([s["first_embedded_s"] for s in samples]),
            "max_rss_mib": median([s["max_rss_mib"] for s in samples]),
            "torch_imported": any(s["torch_imported"] for s in samples),
            "all_seconds": [round(s["seconds"], 2) for s in samples],
            "inference": report.get("inference"),
        }
    return results


def recrawls(work: Path, checkpoint: Path, photos: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    from bench_indexing import make_photos

    tree = work / "recrawl-tree"
    if not tree.exists():
        tree.mkdir()
        for path in sorted(photos.glob("*.jpg")):
            os.link(path, tree / path.name)
        make_photos(tree / "more", 256 - len(list(tree.glob("*.jpg"))), size=(1600, 1200))
    target = work / "recrawl-index"
    flags = ["--model", "ViT-B-32", "--pretrained", str(checkpoint)]
    if not (target / "manifest.json").exists():
        wrapped(["index", str(tree), "--index", str(target), *flags, "-q"], env)
    results = {}
    for title, extra_args in (("with --model/--pretrained", flags), ("without model flags", [])):
        samples = [
            wrapped(["index", str(tree), "--index", str(target), *extra_args, "--json"], env) for _ in range(runs)
        ]
        report = json.loads(samples[-1]["stdout"])
        assert report["unchanged"] == 256 and report["added"] == 0, report
        results[title] = {
            "seconds": median([s["seconds"] for s in samples]),
            "torch_imported": any(s["torch_imported"] for s in samples),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--photos", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--crawl-runs", type=int, default=3)
    parser.add_argument(
        "--work", type=Path, help="Keep the indexes, photos and cache here (default: a temporary folder)."
    )
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VECSEARCH_CACHE_DIR": str(work / "cache")}
        os.environ["VECSEARCH_CACHE_DIR"] = env["VECSEARCH_CACHE_DIR"]
        results = run(work, env, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


def run(work: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    from bench_indexing import make_photos

    checkpoint = make_checkpoint(work)
    photos = work / "photos"
    make_photos(photos, args.photos)
    picture = sorted(photos.glob("*.jpg"))[0]
    # The model's one-off exports, made as the first crawl of any folder makes them: a crawl of a few photos.
    primer = work / "primer"
    if not primer.exists():
        primer.mkdir()
        for path in sorted(photos.glob("*.jpg"))[:4]:
            os.link(path, primer / path.name)
    shutil.rmtree(work / "primer-index", ignore_errors=True)
    first = wrapped(
        [
            "index",
            str(primer),
            "--index",
            str(work / "primer-index"),
            "--model",
            "ViT-B-32",
            "--pretrained",
            str(checkpoint),
        ],
        env,
    )
    folder = build_query_index(work, checkpoint, args.items)
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": str(date.today()),
        "first crawl of 4 photos (exports both towers)": round(first["seconds"], 2),
    }
    print(f"vecsearch torch-free hot paths; {date.today()}, {results['machine']}; medians of new processes")
    print(f"first crawl of 4 photos, which exports the model: {first['seconds']:.1f} s")
    print(first["stdout"].strip())

    results["cold"] = cold_queries(folder, checkpoint, picture, env, args.runs)
    print(f"\ncold commands, {args.items:,}-item index, ViT-B-32, query picture a 12 MP JPEG (median of {args.runs}):")
    for title, r in results["cold"].items():
        print(
            f"  {title:<74}{r['median_s'] * 1000:7.0f} ms (min {r['min_s'] * 1000:.0f}, max {r['max_s'] * 1000:.0f}){'  torch imported' if r['torch_imported'] else ''}"
        )

    results["breakdown"] = breakdown(folder, picture, env, args.runs)
    for way, r in results["breakdown"].items():
        print(f"\ncold picture query, step by step, {way} (median of {args.runs}):")
        for key, value in r["steps"].items():
            print(f"  {key:<36}{value * 1000:8.0f} ms")
        print(
            f"  {'sum of the steps':<36}{r['sum'] * 1000:8.0f} ms; heavy modules imported: {', '.join(r['heavy']) or 'none'}"
        )

    results["serve"] = serve_first_answer(folder, picture, env, args.runs)
    print(f"\nvecsearch serve, from the command's start (median of {args.runs}):")
    for way, r in results["serve"].items():
        print(
            f"  {way:<12} health check answers after {r['up_s']:.2f} s; first picture query answered after {r['first_picture_answer_s']:.2f} s (max {r['max_s']:.2f})"
        )

    results["crawl"] = crawls(work, checkpoint, photos, env, args.crawl_runs)
    plain = results["crawl"]["plain open_clip loop"]["seconds"]
    print(f"\nvecsearch index of {args.photos} JPEGs of 4000x3000 into a new index (median of {args.crawl_runs}):")
    print(f"  plain open_clip loop (fp32, full decoding)       {plain:6.1f} s")
    for title, r in results["crawl"].items():
        if title.startswith("plain"):
            continue
        print(
            f"  {title:<48}{r['seconds']:6.1f} s = {plain / r['seconds']:.2f}x the plain loop; first pictures embedded "
            f"after {r['first_embedded_s']:.2f} s; peak RSS {r['max_rss_mib']:.0f} MiB; mode {(r['inference'] or {}).get('mode')}"
            f"{' (remembered)' if (r['inference'] or {}).get('remembered') else ''}; runs {r['all_seconds']}"
        )

    results["recrawl"] = recrawls(work, checkpoint, photos, env, args.runs)
    print(f"\nthe same vecsearch index command again, 256 unchanged photos (median of {args.runs}):")
    for title, r in results["recrawl"].items():
        print(f"  {title:<30}{r['seconds'] * 1000:7.0f} ms{'  torch imported' if r['torch_imported'] else ''}")
    return results


if __name__ == "__main__":
    main()
