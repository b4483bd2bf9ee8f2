"""Benchmark of memory while crawling: peak RSS and wall time of `vecsearch index` over trees of 1k, 10k
and 100k files, first crawl and re-crawl of the unchanged tree.

    .venv/bin/python scripts/bench_crawl_memory.py [--files 100000] [--sizes 1000 10000 100000]
        [--tree DIR] [--work DIR] [--results-dir scripts/results] [--quick]

Each size gets its own seeded tree (built once; `--tree DIR` keeps the trees for later runs): small
pictures in nested folders (64x48 JPEGs from bench_core.make_jpegs, a third of them re-saved as PNGs of
other sizes, some with upper-case extensions), caption sidecars (`.txt`) beside some of them, a few files
that are not pictures (some hidden, some with other extensions), and a few broken pictures (truncated,
empty, text under a picture's name). The pictures are tiny so that the run measures the crawler, not
the model.

Every crawl is the real command as a new process, `python -m vecsearch index TREE --index IDX --model
starter --json -q` (the bundled starter model, offline). Its peak RSS is what the kernel reports for that
one process when it is reaped (`ru_maxrss`, read by a small launcher process: see LAUNCHER); a thread
also samples `/proc/PID/status` to tell when the peak came. Before the sizes, a crawl of a small tree fills the model cache (the exported ONNX
model), so that no measured run pays for it. Per-file growth is the difference of peak RSS between two
sizes over the difference of files; it is set beside what the in-memory FAISS index of the items
necessarily costs (dimension x 4 bytes per vector, plus its ids).

Prints a table and writes what it printed to RESULTS_DIR/bench_crawl_memory.txt and the numbers (with the
machine, date and versions) to RESULTS_DIR/bench_crawl_memory.json. `--quick` crawls one tree of 50
files with `--inference fp32` (no ONNX export), skips the warm-up and writes results only where
`--results-dir` says.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import make_jpegs  # noqa: E402 - the scripts folder is put on the path just above

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
TREE_FORMAT = 2  # bump when the tree recipe changes, so that kept trees are rebuilt
FILES_PER_FOLDER = 100
FORCED = {7: 0.001, 13: 0.0025, 21: 0.0032, 30: 0.005}  # picture number -> roll: truncated, text, empty, other
ADJECTIVES = ["red", "small", "old", "bright", "wet", "wooden", "striped", "golden", "broken", "quiet"]
SUBJECTS = [
    "apple",
    "dog",
    "bicycle",
    "lighthouse",
    "kitchen",
    "mountain",
    "cat",
    "bridge",
    "boat",
    "garden",
    "tree",
    "car",
    "window",
    "cup",
    "beach",
    "street",
    "horse",
    "clock",
    "book",
    "lamp",
]
PLACES = [
    "on a table",
    "in the rain",
    "at sunset",
    "in the snow",
    "by the sea",
    "in a city",
    "at night",
    "in a field",
    "under a tree",
    "on a shelf",
]


# --- the tree --------------------------------------------------------------------------------------


@dataclass
class TreeStats:
    images: int = 0  # files with a picture extension, broken ones included
    png: int = 0
    jpeg: int = 0
    broken: int = 0
    sidecars: int = 0
    captions: int = 0
    others: int = 0  # files that are not pictures (hidden ones included)
    folders: int = 0
    bytes: int = 0


def folder_of(i: int) -> str:
    """The folder of the i-th picture: mostly year/month/event, some deeper, some shallow."""
    j = i // FILES_PER_FOLDER
    if j % 11 == 5:
        return f"inbox-{j:04d}"
    base = f"{2010 + j % 15}/{(j // 15) % 12 + 1:02d}/event-{j:04d}"
    return base + "/raw/selects" if j % 7 == 3 else base


def build_tree(tree: Path, files: int, seed: int = 0) -> TreeStats:
    """A seeded tree of `files` picture files (see the module's docstring); reused when already built."""
    from PIL import Image

    marker = tree / ".bench-tree.json"
    recipe = {"format": TREE_FORMAT, "files": files, "seed": seed}
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("recipe") == recipe:
            return TreeStats(**saved["stats"])
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    stats = TreeStats()
    pool = make_jpegs(tree / ".pool", files, size=(64, 48))  # distinct pictures: each has its own noise
    folders: set[str] = set()
    for i, source in enumerate(pool):
        folder = tree / folder_of(i)
        if folder_of(i) not in folders:
            folders.add(folder_of(i))
            folder.mkdir(parents=True, exist_ok=True)
        stem = f"IMG_{i:06d}"
        roll = rng.random()
        roll = FORCED.get(i, roll)  # every tree, however small, has one broken picture of each kind
        if roll < 0.002:  # broken: truncated
            data = source.read_bytes()
            target = folder / f"{stem}.jpg"
            target.write_bytes(data[: len(data) // 3])
            source.unlink()
            stats.broken += 1
        elif roll < 0.003:  # broken: text under a picture's name
            target = folder / f"{stem}.png"
            target.write_text("not a picture\n")
            source.unlink()
            stats.broken += 1
        elif roll < 0.0035:  # broken: empty
            target = folder / f"{stem}.jpg"
            target.touch()
            source.unlink()
            stats.broken += 1
        elif roll < 0.35:  # PNG of another size
            side = int(rng.integers(32, 129))
            target = folder / f"{stem}.png"
            with Image.open(source) as picture:
                picture.resize((side, side * 3 // 4)).save(target)
            source.unlink()
            stats.png += 1
        else:
            target = folder / (f"{stem}.JPG" if roll > 0.97 else f"{stem}.jpg")
            source.rename(target)
            stats.jpeg += 1
        stats.images += 1
        if rng.random() < 0.05 or i == 1:  # a caption sidecar with one or two lines
            lines = [
                f"a {ADJECTIVES[rng.integers(len(ADJECTIVES))]} {SUBJECTS[rng.integers(len(SUBJECTS))]} "
                f"{PLACES[rng.integers(len(PLACES))]}"
                for _ in range(int(rng.integers(1, 3)))
            ]
            (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            stats.sidecars += 1
            stats.captions += len(set(lines))
        if rng.random() < 0.01 or FORCED.get(i) == 0.005:  # something that is not a picture
            kind = int(rng.integers(4))
            name = ["notes.md", f"{stem}.mp4", ".DS_Store", "Thumbs.db"][kind]
            if not (folder / name).exists():
                (folder / name).write_bytes(rng.bytes(int(rng.integers(100, 4000))))
                stats.others += 1
    shutil.rmtree(tree / ".pool")
    for path in tree.rglob("*"):
        if path.is_dir():
            stats.folders += 1
        elif path.name != marker.name:
            stats.bytes += path.stat().st_size
    marker.write_text(json.dumps({"recipe": recipe, "stats": stats.__dict__}))
    return stats


# --- one measured run --------------------------------------------------------------------------------


@dataclass
class Run:
    peak_rss: int  # bytes, from the kernel at exit
    seconds: float
    peak_at: float  # seconds after the start when the sampled RSS first reached its highest value
    report: dict[str, Any]
    samples: list[tuple[float, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        keys = (
            "added",
            "unchanged",
            "reused",
            "skipped",
            "captions_added",
            "embedded_images",
            "embedded_captions",
            "vector_index",
            "inference",
            "seconds",
        )
        report = {k: self.report.get(k) for k in keys if k in self.report}
        if isinstance(report.get("skipped"), list):
            report["skipped"] = len(report["skipped"])
        if isinstance(report.get("inference"), dict):
            report["inference"] = report["inference"].get("mode")
        step = max(1, len(self.samples) // 40)
        return {
            "peak_rss_bytes": self.peak_rss,
            "wall_seconds": round(self.seconds, 3),
            "peak_sampled_at_seconds": round(self.peak_at, 2),
            "report": report,
            "counts": self.report.get("counts"),
            "rss_timeline": [[round(t, 2), rss] for t, rss in self.samples[::step]],
        }


# The measured process is started by this small launcher, not by the benchmark itself: on Linux a child's
# ru_maxrss starts from the RSS of the process it was forked from, and the launcher is a fresh, small
# Python (~10 MB), while the benchmark holds numpy and PIL. The launcher reports the child's pid, its wall
# time and, once reaped, its peak RSS (RUSAGE_CHILDREN: the launcher has no other child).
LAUNCHER = r"""
import json, os, resource, subprocess, sys, time
report = sys.argv[1]
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
with open(report + ".pid", "w") as handle:
    handle.write(str(child.pid))
code = child.wait()
seconds = time.perf_counter() - start
with open(report, "w") as handle:
    json.dump({"code": code, "seconds": seconds,
               "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, handle)
sys.exit(code)
"""


def crawl(tree: Path, index: Path, env: dict[str, str], inference: str | None = None) -> Run:
    """`vecsearch index` as a new process: its own peak RSS and wall time."""
    command = [
        sys.executable,
        "-m",
        "vecsearch",
        "index",
        str(tree),
        "--index",
        str(index),
        "--model",
        "starter",
        "--json",
        "-q",
    ] + (["--inference", inference] if inference else [])
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "launcher.json"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            start = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(report), *command], stdout=out, stderr=err, env=env
            )
            done = threading.Event()
            sampler = threading.Thread(target=_sample, args=(report, start, samples, done), daemon=True)
            sampler.start()
            code = process.wait()
            done.set()
            sampler.join()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        if code != 0 or not report.exists():
            raise SystemExit(f"vecsearch index {tree} failed ({code}): {stderr.strip()[-2000:]}")
        measured = json.loads(report.read_text())
    peak_at = max(samples, key=lambda s: s[1])[0] if samples else measured["seconds"]
    return Run(measured["maxrss_kib"] * 1024, measured["seconds"], peak_at, json.loads(stdout), samples)


def _sample(report: Path, start: float, samples: list[tuple[float, int]], done: threading.Event) -> None:
    """The measured process's RSS every 50 ms (to tell when the peak came; the peak itself is the kernel's)."""
    pid_file = report.with_name(report.name + ".pid")
    while not pid_file.exists() or not pid_file.read_text():
        if done.wait(0.01):
            return
    pid = int(pid_file.read_text())
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        samples.append((time.perf_counter() - start, int(line.split()[1]) * 1024))
                        break
        except (OSError, ValueError):
            return
        done.wait(0.05)


# --- the benchmark -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where and with what this ran (versions from the installed packages: the benchmark itself imports
    neither torch nor FAISS)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str | None:
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "system": platform.platform(),
        "python": platform.python_version(),
        "torch": installed("torch"),
        "faiss": installed("faiss-cpu", "faiss-gpu", "faiss"),
        "open_clip": installed("open_clip_torch"),
        "onnxruntime": installed("onnxruntime"),
        "vecsearch": installed("vecsearch"),
        "load_average_at_start": list(os.getloadavg()),
    }


def default_sizes(files: int) -> list[int]:
    sizes = [n for n in (1_000, 10_000, 100_000, 1_000_000) if n < files]
    return sizes + [files]


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="The largest tree (picture files).")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="Tree sizes to crawl (default: 1k, 10k, ... up to --files)."
    )
    parser.add_argument("--tree", type=Path, help="Keep the trees here for later runs (default: in --work).")
    parser.add_argument("--work", type=Path, help="Indexes and caches go here (default: a temporary folder).")
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="Write bench_crawl_memory.txt/.json here (default: scripts/results; with --quick: nowhere).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inference",
        help="Pass --inference MODE to vecsearch index (default: the command's "
        "own default, auto; with --quick: fp32, which skips exporting the ONNX model).",
    )
    parser.add_argument("--quick", action="store_true", help="One tree of 50 files, no warm-up: a smoke run.")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([50] if args.quick else default_sizes(args.files))
    results_dir = args.results_dir or (None if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="bench-crawl-memory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inference = args.inference or ("fp32" if args.quick else None)
        return run(
            work, args.tree or work / "trees", sorted(set(sizes)), args.seed, not args.quick, results_dir, inference
        )


def run(
    work: Path,
    trees: Path,
    sizes: list[int],
    seed: int,
    warm_up: bool,
    results_dir: Path | None,
    inference: str | None = None,
) -> dict[str, Any]:
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VECSEARCH_HOME": str(work / "home"),
        "VECSEARCH_CACHE_DIR": str(work / "cache"),
    }
    info = machine()
    say(
        f"machine: {info['cpu']}, {info['cores']} cores, {mb(info['memory_bytes'] or 0)} memory, "
        f"python {info['python']}, torch {info['torch']}, faiss {info['faiss']}, {time.strftime('%Y-%m-%d')}"
    )
    say(
        f"load average at start: {' '.join(f'{v:.2f}' for v in info['load_average_at_start'])} "
        "(the machine may be shared: times drift between runs)"
    )
    extra = f" --inference {inference}" if inference else ""
    say(
        f"command: python -m vecsearch index TREE --index IDX --model starter --json -q{extra} (a new process "
        "each run; peak RSS is the kernel's ru_maxrss of that process)"
    )

    if warm_up:
        tree = trees / "warm-up"
        build_tree(tree, 64, seed + 1)
        first = crawl(tree, work / "index-warm-up", env, inference)
        say(
            f"warm-up (fills the model cache, not counted): 64 files, {first.seconds:.1f} s, "
            f"peak RSS {mb(first.peak_rss)}"
        )

    rows: list[dict[str, Any]] = []
    dim = 0
    for size in sizes:
        tree = trees / f"files-{size}"
        start = time.perf_counter()
        stats = build_tree(tree, size, seed)
        built = time.perf_counter() - start
        index = work / f"index-{size}"
        shutil.rmtree(index, ignore_errors=True)
        first = crawl(tree, index, env, inference)
        again = crawl(tree, index, env, inference)
        counts = first.report.get("counts") or {}
        manifest = json.loads((index / "manifest.json").read_text())
        dim = int(manifest["dim"])
        row = {
            "files": size,
            "tree": stats.__dict__,
            "tree_seconds": round(built, 1),
            "items": counts.get("items"),
            "vector_index": manifest["faiss"].get("type"),
            "first": first.to_dict(),
            "recrawl": again.to_dict(),
            "index_bytes": sum(p.stat().st_size for p in index.iterdir() if p.is_file()),
        }
        rows.append(row)
        say(
            f"  {size:>7,} files: tree ready in {built:.0f} s; first crawl {first.seconds:.1f} s, peak "
            f"{mb(first.peak_rss)} (at {first.peak_at:.1f} s); re-crawl {again.seconds:.1f} s, peak "
            f"{mb(again.peak_rss)}; {counts.get('items')} items"
        )
        shutil.rmtree(index, ignore_errors=True)

    say()
    say(
        f"{'files':>8} {'items':>8} | {'first crawl':>11} {'peak RSS':>10} {'peak at':>8} | "
        f"{'re-crawl':>9} {'peak RSS':>10} | added  skipped  captions  unchanged"
    )
    for row in rows:
        first, again = row["first"], row["recrawl"]
        rep = first["report"]
        say(
            f"{row['files']:>8,} {row['items'] or 0:>8,} | {first['wall_seconds']:>9.1f} s {mb(first['peak_rss_bytes']):>10} "
            f"{first['peak_sampled_at_seconds']:>6.1f} s | {again['wall_seconds']:>7.1f} s "
            f"{mb(again['peak_rss_bytes']):>10} | {rep.get('added', 0):>5} {rep.get('skipped', 0):>8} "
            f"{rep.get('captions_added', 0):>9} {again['report'].get('unchanged', 0):>10}"
        )
    notes = sorted(
        {str(r["first"]["report"].get("vector_index")) for r in rows if r["first"]["report"].get("vector_index")}
    )
    for note in notes:
        say(f"  vector index: {note}")

    # Growth per file between sizes, beside the FAISS index's own share (vectors + ids, exact index).
    growth: list[dict[str, Any]] = []
    if len(rows) > 1:
        say()
        say(
            f"growth of peak RSS between sizes (the starter model's vectors have {dim} dimensions: an exact "
            f"FAISS index holds {dim * 4 + 8} bytes an item, the vector and its id, plus the id map)"
        )
    for lower, upper in itertools.pairwise(rows):
        files = upper["files"] - lower["files"]
        items = (upper["items"] or 0) - (lower["items"] or 0)
        entry = {"from": lower["files"], "to": upper["files"]}
        for key in ("first", "recrawl"):
            delta = upper[key]["peak_rss_bytes"] - lower[key]["peak_rss_bytes"]
            entry[key] = {
                "peak_rss_delta_bytes": delta,
                "bytes_per_file": round(delta / files, 1),
                "bytes_per_item": round(delta / items, 1) if items else None,
            }
        growth.append(entry)
        say(
            f"  {lower['files']:>7,} -> {upper['files']:>7,} files (+{items:,} items): first crawl "
            f"{entry['first']['peak_rss_delta_bytes'] / 2**20:+,.0f} MB = {entry['first']['bytes_per_file']:,.0f} "
            f"bytes a file; re-crawl {entry['recrawl']['peak_rss_delta_bytes'] / 2**20:+,.0f} MB = "
            f"{entry['recrawl']['bytes_per_file']:,.0f} bytes a file; FAISS vectors alone "
            f"{items * (dim * 4 + 8) / 2**20:,.0f} MB = {items * (dim * 4 + 8) / files:,.0f} bytes a file"
        )

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": info,
        "command": f"python -m vecsearch index TREE --index IDX --model starter --json -q{extra}",
        "dim": dim,
        "sizes": sizes,
        "seed": seed,
        "rows": rows,
        "growth": growth,
    }
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "bench_crawl_memory.txt").write_text("\n".join(lines) + "\n")
        (results_dir / "bench_crawl_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
