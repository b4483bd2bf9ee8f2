"""Benchmark of the distributed crawl (`vecsearch index --engine ray`) against the local crawler.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_ray.py [--count 96] [--rounds 2] [--inference auto]
        [--work DIR] [--ray-args "--actor-cpus 1"]

The photos are synthetic 4000x3000 JPEGs (12 MP, made by scripts/bench_indexing.py's `make_photos`) and the
model is ViT-B-32 with seeded random weights, saved as a local open_clip model directory (real weights cost
exactly the same to run). Every process gets VECSEARCH_HOME and VECSEARCH_CACHE_DIR under the work folder,
and the Ray runs RAY_ADDRESS=local: without it, ray.init() joins any cluster that another job on this machine
recorded in /tmp/ray/ray_current_cluster (`ray start`, ray.cluster_utils) instead of starting one.

It measures, on this machine:

- a warm-up `vecsearch index` of 16 photos, so the model's one-off ONNX exports are cached before any timing
  (with 4, --inference auto never settles on a mode, since it needs a batch of 8, and the image tower's
  export would fall into the first timed run);
- the same crawl of all photos as whole new processes, side by side, the order alternating each round:
  the local crawler, and `--engine ray` with a Ray that the process starts itself. Per process: wall
  seconds, images/s (added / wall), and for Ray the report's phases (start-up, listing, embedding,
  commit) and its images/s without the start-up; then Ray's overhead in images/s against the local crawl,
  with and without start-up (the target: at most 15 %, start-up reported separately). Before each run it
  waits for the other jobs on the machine to leave the CPUs, and a run during which they used more than a
  quarter of a core is run again (twice at most); the CPU of the crawl's own processes is reported too;
- per-picture costs for sizing: reduced decoding (>= 672 px, as the crawl does) of one 12 MP JPEG on one
  core, the model's preprocess, the sha256 read, the JPEG's size, and the model alone on pre-decoded
  pictures (fp32 and onnx-int8, on all cores and on one);
- that both indexes hold the same pictures with the same vectors (cosine per path, min and mean);
- each engine's rate without its fixed costs: whole processes over half the photos and over all of them,
  the extra photos over the extra seconds (what remains of the wall time is the fixed cost).

Prints a table, and writes it to scripts/results/bench_ray.txt and every number to
scripts/results/bench_ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
RESULTS = SCRIPTS / "results"
ENGINES = ("local", "ray")
WARMUP_PHOTOS = 16  # vecsearch.encoders.inference.CHECK_PICTURES: `auto` settles (and exports) on these
DECODE_SIZE = 672  # what the crawl decodes a JPEG to for a 224-pixel model (vecsearch.pipeline.decode_size)
TARGET_OVERHEAD = 15.0  # per cent of the local crawl's images/s
MAX_OTHERS = 0.25  # cores other jobs may use during a timed run before it is run again
RETRIES = 2
RUN_TIMEOUT = 1200


@dataclass
class Run:
    """One `vecsearch index` process."""

    round: int
    engine: str
    wall_seconds: float
    added: int
    report_seconds: float
    inference: dict[str, Any] | None
    distributed: dict[str, Any] | None = None
    log: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)  # CpuWatch.result(): where the CPU went meanwhile

    @property
    def images_per_second(self) -> float:
        return self.added / self.wall_seconds

    @property
    def outside_seconds(self) -> float:
        """Wall time the report's own seconds leave out: Python start, imports, model load, exit."""
        return self.wall_seconds - self.report_seconds

    @property
    def in_crawl_images_per_second(self) -> float:
        """added / the report's seconds, less Ray's start-up: the rate without the per-process costs."""
        return self.added / (self.report_seconds - (self.startup_seconds or 0.0))

    @property
    def startup_seconds(self) -> float | None:
        return None if self.distributed is None else float(self.distributed["startup_seconds"])

    @property
    def images_per_second_ex_startup(self) -> float | None:
        startup = self.startup_seconds
        return None if startup is None else self.added / (self.wall_seconds - startup)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "images_per_second": self.images_per_second,
            "images_per_second_ex_startup": self.images_per_second_ex_startup,
            "outside_seconds": self.outside_seconds,
            "in_crawl_images_per_second": self.in_crawl_images_per_second,
        }


@dataclass
class Costs:
    """Per-picture costs, measured in this process on pictures already in the page cache."""

    jpeg_bytes_mean: float = 0.0
    decode_ms: float = 0.0  # load_image(min_size=672), wall ms of one thread, median
    decode_cpu_ms: float = 0.0  # the same, CPU ms of that thread
    decoded_size: tuple[int, int] = (0, 0)
    preprocess_ms: float = 0.0  # the model's resize, crop and normalise of the decoded picture
    to_row_ms: float = 0.0  # what a Ray read task adds: the decoded picture to bytes for its Arrow row
    sha256_ms: float = 0.0  # hash_file: read and hash one JPEG
    model: dict[str, float] = field(default_factory=dict)  # "<mode>, <n> cores" -> images/s on pre-decoded input
    others_cores: float = 0.0  # cores other processes used while these were measured


class CpuWatch:
    """Samples /proc while a process runs: the CPU seconds of its process tree (the crawl, and for Ray its
    raylet, workers and actors) per process, with its title and most threads, and the CPU seconds of every
    other process on the machine (other people's jobs on these cores skew the timing)."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = root, interval
        self.me = os.getpid()
        self.seen = {pid: cpu for pid, (_, cpu, _) in proc_table().items()}  # before the run: not counted
        self.seen.pop(root, None)
        self.ours: dict[int, float] = {}
        self.titles: dict[int, str] = {}
        self.threads: dict[int, int] = {}
        self.foreign = 0.0
        self.foreign_by_title: dict[str, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.perf_counter()
        self.thread.start()

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.thread.join()
        seconds = time.perf_counter() - self.started
        by_title: dict[str, list[float]] = {}  # title -> [CPU seconds, processes, most threads]
        for pid, cpu in self.ours.items():
            entry = by_title.setdefault(self.titles.get(pid, "?"), [0.0, 0, 0])
            entry[0] += cpu
            entry[1] += 1
            entry[2] = max(entry[2], self.threads.get(pid, 0))
        ranked = sorted(by_title.items(), key=lambda kv: -kv[1][0])
        foreign = sorted(self.foreign_by_title.items(), key=lambda kv: -kv[1])[:5]
        return {
            "seconds": seconds,
            "ours_cpu_seconds": sum(self.ours.values()),
            "ours_by_title": {t: {"cpu_seconds": round(c, 2), "processes": n, "threads": m} for t, (c, n, m) in ranked},
            "foreign_cpu_seconds": self.foreign,
            "foreign_cores": self.foreign / seconds if seconds else 0.0,
            "foreign_top": {k: round(v, 2) for k, v in foreign},
        }

    def _loop(self) -> None:
        while True:
            self._sample()
            if self.done.wait(self.interval):
                self._sample()
                return

    def _sample(self) -> None:
        table = proc_table()
        for pid, (_, cpu, threads) in table.items():
            spent = cpu - self.seen.get(pid, 0.0)
            self.seen[pid] = cpu
            if spent <= 0:
                continue
            title = process_title(pid)
            if self._is_ours(pid, table):
                self.ours[pid] = self.ours.get(pid, 0.0) + spent
                self.threads[pid] = max(self.threads.get(pid, 0), threads)
                if title not in ("ray::IDLE", "?") or pid not in self.titles:  # a worker keeps its work's name
                    self.titles[pid] = title
            elif pid != self.me:
                self.foreign += spent
                self.foreign_by_title[title] = self.foreign_by_title.get(title, 0.0) + spent

    def _is_ours(self, pid: int, table: dict[int, tuple[int, float, int]]) -> bool:
        for _ in range(64):
            if pid == self.root:
                return True
            if pid not in table or pid <= 1:
                return False
            pid = table[pid][0]
        return False


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, float, int]]:
    """Every process: pid -> (parent pid, CPU seconds used, threads)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()  # fields from the third (state) on
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[17]))
    return table


def process_title(pid: int) -> str:
    try:
        parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [p.decode(errors="replace") for p in parts if p][:4]
    if words and words[0].startswith("ray::"):
        return words[0].split(").", 1)[0] + (")" if ")." in words[0] else "")  # without the method called
    return " ".join(Path(w).name if i == 0 else w for i, w in enumerate(words))[:60] or "?"


def wait_for_quiet(limit: float, cores: float = 0.25, window: float = 3.0) -> float:
    """Wait (at most `limit` seconds) until other processes use less than `cores` over `window` seconds;
    returns the cores they used in the last window."""
    deadline = time.monotonic() + limit
    while True:
        before = sum(cpu for pid, (_, cpu, _) in proc_table().items() if pid != os.getpid())
        time.sleep(window)
        after = sum(cpu for pid, (_, cpu, _) in proc_table().items() if pid != os.getpid())
        busy = max(0.0, after - before) / window
        if busy < cores or time.monotonic() > deadline:
            return busy
        say(f"other processes use {busy:.2f} cores; waiting for a quiet machine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=96, help="photos to make and index")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (local, ray), the order alternating")
    parser.add_argument("--inference", default="auto", choices=["auto", "fp32", "bf16", "onnx-int8"])
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one)")
    parser.add_argument("--ray-args", default="", help="extra arguments for the Ray runs, e.g. '--actor-cpus 1'")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where bench_ray.txt and .json go")
    parser.add_argument(
        "--quiet-wait", type=float, default=180, help="seconds to wait, at most, for other jobs to leave the CPUs"
    )
    args = parser.parse_args()
    if args.count < WARMUP_PHOTOS:
        parser.error(f"--count must be at least {WARMUP_PHOTOS}")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        run(work, args.count, args.rounds, args.inference, shlex.split(args.ray_args), args.results, args.quiet_wait)


def run(
    work: Path, count: int, rounds: int, inference: str, ray_args: list[str], results: Path, quiet_wait: float
) -> None:
    sys.path.insert(0, str(SCRIPTS))
    from bench_indexing import make_photos

    work.mkdir(parents=True, exist_ok=True)
    say(f"work folder {work}; making {count} photos and the model")
    photos = make_photos(work / "photos", count)
    model_dir = make_model_dir(work / "vit-b-32-random")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VECSEARCH_HOME": str(work / "home"),
        "VECSEARCH_CACHE_DIR": str(work / "cache"),
    }
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "VECSEARCH_HOME", "VECSEARCH_CACHE_DIR")})
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    # --- warm-up: the one-off ONNX export goes into the cache --------------------------------------
    warm = work / "warmup-photos"
    warm.mkdir(exist_ok=True)
    for photo in photos[:WARMUP_PHOTOS]:
        if not (warm / photo.name).exists():
            os.link(photo, warm / photo.name)
    shutil.rmtree(work / "warmup-index", ignore_errors=True)
    warmup = index_process(0, "local", warm, work / "warmup-index", model_dir, inference, [], env, logs)
    exported = sorted(p.name for p in (work / "cache" / "onnx").glob("image-tower-*.onnx"))
    say(f"warm-up: {warmup.added} photos in {warmup.wall_seconds:.1f} s; image tower exports cached: {exported}")
    if inference in ("auto", "onnx-int8") and not exported:
        say("warning: no ONNX image tower in the cache after the warm-up; the first timed run may export it")

    # --- the crawls, side by side --------------------------------------------------------------------
    runs: list[Run] = []
    discarded: list[Run] = []
    for number in range(1, rounds + 1):
        order = ENGINES if number % 2 else ENGINES[::-1]
        for engine in order:
            target = work / f"index-{engine}"
            for attempt in range(1 + RETRIES):
                shutil.rmtree(target, ignore_errors=True)
                wait_for_quiet(quiet_wait)
                done = index_process(
                    number,
                    engine,
                    work / "photos",
                    target,
                    model_dir,
                    inference,
                    ray_args if engine == "ray" else [],
                    env,
                    logs,
                )
                if done.added != count:
                    raise SystemExit(f"{engine} crawl added {done.added} of {count} photos; see {done.log}")
                if done.cpu["foreign_cores"] <= MAX_OTHERS or attempt == RETRIES:
                    break
                say(f"round {number}, {engine}: other jobs used {done.cpu['foreign_cores']:.2f} cores; run again")
                discarded.append(done)
            say(f"round {number}, {engine}: {done.wall_seconds:.1f} s, {done.images_per_second:.2f} images/s")
            runs.append(done)

    agreement = compare_indexes(work / "index-local", work / "index-ray")
    marginal = marginal_rates(work, photos, model_dir, inference, ray_args, env, logs, rounds, quiet_wait)
    wait_for_quiet(quiet_wait)
    say("measuring per-picture costs")
    watch = CpuWatch(os.getpid())
    costs = measure_costs(photos, model_dir, work / "cache")
    costs.others_cores = watch.stop()["foreign_cores"]
    summary = summarise(runs)
    text = render(count, inference, ray_args, warmup, runs, summary, costs, agreement)
    text += render_marginal(marginal)
    if discarded:
        text += (
            f"({len(discarded)} runs during which other jobs used more than {MAX_OTHERS} cores were run again; "
            "they are in the JSON)\n"
        )
    print(text)
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_ray.txt").write_text(text)
    data = {
        "machine": machine(),
        "photos": {"count": count, "size": [4000, 3000], "jpeg_bytes_mean": costs.jpeg_bytes_mean},
        "model": "ViT-B-32, random weights (local-dir)",
        "inference_requested": inference,
        "ray_args": ray_args,
        "warmup": warmup.to_dict(),
        "warmup_image_tower_exports": exported,
        "runs": [r.to_dict() for r in runs],
        "discarded_runs": [r.to_dict() for r in discarded],
        "summary": summary,
        "costs": asdict(costs),
        "agreement": agreement,
        "marginal": marginal,
    }
    (results / "bench_ray.json").write_text(json.dumps(data, indent=2) + "\n")


def marginal_rates(
    work: Path,
    photos: list[Path],
    model_dir: Path,
    inference: str,
    ray_args: list[str],
    env: dict[str, str],
    logs: Path,
    rounds: int,
    quiet_wait: float,
) -> dict[str, Any]:
    """Each engine's rate with every fixed cost taken out: whole processes over the first half of the
    photos and over all of them; the extra photos over the extra seconds. What is left of the wall time
    at that rate is the engine's fixed cost (process start, imports, model loads, Ray's start-up and
    shut-down, the inference-mode check)."""
    half = work / "photos-half"
    half.mkdir(exist_ok=True)
    first = photos[: len(photos) // 2]
    for photo in first:
        if not (half / photo.name).exists():
            os.link(photo, half / photo.name)
    walls: dict[str, dict[str, list[float]]] = {e: {"half": [], "all": []} for e in ENGINES}
    for number in range(1, rounds + 1):
        order = ENGINES if number % 2 else ENGINES[::-1]
        for engine in order:
            for part, folder in (("half", half), ("all", work / "photos")):
                target = work / f"marginal-{engine}-{part}"
                shutil.rmtree(target, ignore_errors=True)
                wait_for_quiet(quiet_wait)
                done = index_process(
                    number, engine, folder, target, model_dir, inference, ray_args if engine == "ray" else [], env, logs
                )
                walls[engine][part].append(done.wall_seconds)
                say(f"marginal round {number}, {engine}, {done.added} photos: {done.wall_seconds:.1f} s")
    extra = len(photos) - len(first)
    rates, fixed = {}, {}
    for engine in ENGINES:
        half_s, all_s = statistics.median(walls[engine]["half"]), statistics.median(walls[engine]["all"])
        rates[engine] = extra / (all_s - half_s)
        fixed[engine] = half_s - len(first) / rates[engine]
    return {
        "photos": [len(first), len(photos)],
        "walls": walls,
        "images_per_second": rates,
        "fixed_seconds": fixed,
        "overhead_percent": 100 * (1 - rates["ray"] / rates["local"]),
    }


def render_marginal(marginal: dict[str, Any]) -> str:
    rates, fixed = marginal["images_per_second"], marginal["fixed_seconds"]
    low, high = marginal["photos"]
    verdict = "met" if marginal["overhead_percent"] <= TARGET_OVERHEAD else "NOT met"
    lines = [
        "",
        f"rate without fixed costs (whole processes over {low} and over {high} photos, medians of the rounds; "
        f"{high - low} more photos over the extra seconds):",
        *(
            f"  {engine:<6} {rates[engine]:6.2f} images/s; fixed cost {fixed[engine]:5.1f} s "
            f"(walls {marginal['walls'][engine]['half']} / {marginal['walls'][engine]['all']})"
            for engine in ENGINES
        ),
        f"  ray overhead in images/s without its fixed costs: {marginal['overhead_percent']:.1f} % "
        f"(target <= {TARGET_OVERHEAD:.0f} %: {verdict}); its fixed cost over the local crawler's: "
        f"{fixed['ray'] - fixed['local']:.1f} s",
    ]
    return "\n".join(lines) + "\n"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_model_dir(folder: Path) -> Path:
    """ViT-B-32 with seeded random weights as an open_clip model directory, made as
    scripts/bench_indexing.py makes its checkpoint."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    weights = folder / "open_clip_model.safetensors"
    if weights.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return folder


def index_process(
    number: int,
    engine: str,
    photos: Path,
    target: Path,
    model_dir: Path,
    inference: str,
    extra: Sequence[str],
    env: dict[str, str],
    logs: Path,
) -> Run:
    """`vecsearch index` as a whole new process; its wall time, from fork to exit."""
    command = [
        sys.executable,
        "-m",
        "vecsearch",
        "index",
        str(photos),
        "--index",
        str(target),
        "--model",
        f"local-dir:{model_dir}",
        "--inference",
        inference,
        "--engine",
        engine,
        *extra,
        "--json",
        "-q",
    ]
    if engine == "ray":
        # Start a Ray of its own: with no address, ray.init() joins the newest cluster recorded in
        # /tmp/ray/ray_current_cluster (`ray start`, ray.cluster_utils) if another job left one running.
        env = {**env, "RAY_ADDRESS": "local"}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watch = CpuWatch(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
        wall = time.perf_counter() - start
        cpu = watch.stop()
    log = logs / f"round{number}-{engine}.log"
    log.write_text(f"$ {shlex.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    if process.returncode != 0:
        raise SystemExit(f"{engine} crawl failed ({process.returncode}); see {log}:\n{stderr[-3000:]}")
    report = json.loads(stdout)
    return Run(
        number,
        engine,
        wall,
        int(report["added"]),
        float(report["seconds"]),
        report.get("inference"),
        report.get("distributed"),
        str(log),
        cpu,
    )


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Medians per engine, and Ray's overhead in images/s against the local crawl (positive: slower)."""

    def median(engine: str, value: Callable[[Run], float | None]) -> float:
        return statistics.median(float(v) for r in runs if r.engine == engine and (v := value(r)) is not None)

    local = median("local", lambda r: r.images_per_second)
    ray = median("ray", lambda r: r.images_per_second)
    ray_ex = median("ray", lambda r: r.images_per_second_ex_startup)

    def phase(name: str) -> Callable[[Run], float | None]:
        return lambda r: (r.distributed or {}).get(name)

    phases = ("startup_seconds", "listing_seconds", "embedding_seconds", "commit_seconds", "first_row_seconds")
    return {
        "local_images_per_second": local,
        "ray_images_per_second": ray,
        "ray_images_per_second_ex_startup": ray_ex,
        "local_wall_seconds": median("local", lambda r: r.wall_seconds),
        "ray_wall_seconds": median("ray", lambda r: r.wall_seconds),
        "ray_phases": {p: median("ray", phase(p)) for p in phases},
        "local_in_crawl_images_per_second": median("local", lambda r: r.in_crawl_images_per_second),
        "ray_in_crawl_images_per_second": median("ray", lambda r: r.in_crawl_images_per_second),
        "overhead_percent": 100 * (1 - ray / local),
        "overhead_percent_ex_startup": 100 * (1 - ray_ex / local),
        "target_percent": TARGET_OVERHEAD,
    }


def compare_indexes(local_path: Path, ray_path: Path) -> dict[str, Any]:
    import vecsearch

    def vectors(path: Path) -> dict[str, np.ndarray]:
        with vecsearch.Index.open(path) as index:
            found: dict[str, np.ndarray] = {}
            for item_id in index.store.item_ids("image"):
                item, vector = index.item(item_id), index.store.vector(item_id)
                if item is not None and vector is not None:
                    found[str(item.path)] = np.asarray(vector, dtype=np.float32)
            return found

    local, ray = vectors(local_path), vectors(ray_path)
    shared = sorted(set(local) & set(ray))
    cosine = np.array([float(local[p] @ ray[p] / np.linalg.norm(local[p]) / np.linalg.norm(ray[p])) for p in shared])
    return {
        "local_images": len(local),
        "ray_images": len(ray),
        "same_paths": set(local) == set(ray),
        "cosine_min": float(cosine.min()) if len(cosine) else None,
        "cosine_mean": float(cosine.mean()) if len(cosine) else None,
    }


def measure_costs(photos: list[Path], model_dir: Path, cache: Path) -> Costs:
    import torch

    import vecsearch
    from vecsearch.crawl import hash_file
    from vecsearch.encoders.inference import ImageInference
    from vecsearch.images import load_image

    costs = Costs(jpeg_bytes_mean=float(np.mean([p.stat().st_size for p in photos])))
    sample = photos[:8]
    encoder = vecsearch.load_encoder(f"local-dir:{model_dir}", device="cpu", inference="fp32", cache_dir=str(cache))
    decode_wall, decode_cpu, prepare, to_row, hashing = [], [], [], [], []
    for path in sample:
        wall, cpu = time.perf_counter(), time.thread_time()
        picture = load_image(path, min_size=DECODE_SIZE)
        decode_wall.append(time.perf_counter() - wall)
        decode_cpu.append(time.thread_time() - cpu)
        costs.decoded_size = picture.size
        start = time.perf_counter()
        encoder.prepare_image(picture)
        prepare.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asarray(picture.convert("RGB"), dtype=np.uint8).tobytes()
        to_row.append(time.perf_counter() - start)
        start = time.perf_counter()
        hash_file(path)
        hashing.append(time.perf_counter() - start)
    costs.decode_ms = 1000 * statistics.median(decode_wall)
    costs.decode_cpu_ms = 1000 * statistics.median(decode_cpu)
    costs.preprocess_ms = 1000 * statistics.median(prepare)
    costs.to_row_ms = 1000 * statistics.median(to_row)
    costs.sha256_ms = 1000 * statistics.median(hashing)

    # The model alone on pre-decoded pictures, as scripts/bench_indexing.py measures it; on all cores,
    # then on one (the affinity limits onnxruntime's threads, set_num_threads torch's).
    pixels = torch.stack([encoder.prepare_image(load_image(p, min_size=DECODE_SIZE)) for p in photos[:32]])
    model = encoder.model  # type: ignore[attr-defined]
    all_cores = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    for cores in sorted({len(all_cores), 1}, reverse=True):
        os.sched_setaffinity(0, sorted(all_cores)[:cores])
        torch.set_num_threads(threads if cores == len(all_cores) else 1)
        try:
            for mode in ("fp32", "onnx-int8"):
                try:
                    runner = ImageInference(model, "cpu", encoder.fingerprint, mode, cache_dir=cache)
                    runner.run(pixels[:2])  # warm-up (the ONNX graph comes from the cache)
                    best = float("inf")
                    for _ in range(3):  # the best of three: other jobs on these cores only ever slow it down
                        start = time.perf_counter()
                        runner.run(pixels)
                        best = min(best, time.perf_counter() - start)
                    costs.model[f"{mode}, {cores} core{'s' * (cores > 1)}"] = len(pixels) / best
                except Exception as exc:  # noqa: BLE001 - report a mode that cannot run here, go on
                    say(f"model only, {mode}: unavailable ({exc})")
        finally:
            os.sched_setaffinity(0, all_cores)
            torch.set_num_threads(threads)
    return costs


def machine() -> dict[str, Any]:
    import onnxruntime
    import ray
    import torch

    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "ray": ray.__version__,
    }


def render(
    count: int,
    inference: str,
    ray_args: list[str],
    warmup: Run,
    runs: list[Run],
    summary: dict[str, Any],
    costs: Costs,
    agreement: dict[str, Any],
) -> str:
    info = machine()

    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def mode(run: Run) -> str:
        return str((run.inference or {}).get("mode") or "not reported")

    lines = [
        f"vecsearch index: local crawler against --engine ray {' '.join(ray_args)}".rstrip(),
        f"{count} synthetic JPEGs 4000x3000 (12 MP, {costs.jpeg_bytes_mean / 1e6:.2f} MB each), ViT-B-32 "
        f"(random weights), --inference {inference}",
        f"machine: {info['processor']}, {info['cores']} cores; torch {info['torch']}, onnxruntime "
        f"{info['onnxruntime']}, ray {info['ray']}",
        f"warm-up (ONNX exports, {warmup.added} photos, local): {warmup.wall_seconds:.1f} s, mode {mode(warmup)}",
        "",
        f"{'round':>5}  {'engine':<6} {'wall s':>7} {'outside':>7} {'added':>5} {'img/s':>6} {'start s':>7} {'list s':>6} "
        f"{'embed s':>7} {'commit s':>8} {'img/s ex-start':>14} {'cpu s':>6} {'others':>6}  mode",
    ]
    for r in runs:
        d = r.distributed or {}
        lines.append(
            f"{r.round:>5}  {r.engine:<6} {r.wall_seconds:>7.1f} {r.outside_seconds:>7.1f} {r.added:>5} {r.images_per_second:>6.2f} "
            f"{num(d.get('startup_seconds')):>7} {num(d.get('listing_seconds')):>6} "
            f"{num(d.get('embedding_seconds')):>7} {num(d.get('commit_seconds')):>8} "
            f"{num(r.images_per_second_ex_startup, 2):>14} {num(r.cpu.get('ours_cpu_seconds')):>6} "
            f"{num(r.cpu.get('foreign_cores'), 2):>6}  {mode(r)}"
        )
    lines.append(
        "  (outside: wall minus the report's seconds = Python start, imports, model load, Ray shut-down, exit;\n"
        "   cpu s: CPU seconds of the crawl's process tree; others: cores used by other processes meanwhile)"
    )
    s = summary
    verdict = "met" if s["overhead_percent_ex_startup"] <= TARGET_OVERHEAD else "NOT met"
    phases = s["ray_phases"]
    lines += [
        "",
        f"median local: {s['local_images_per_second']:.2f} images/s ({s['local_wall_seconds']:.1f} s)",
        f"median ray:   {s['ray_images_per_second']:.2f} images/s ({s['ray_wall_seconds']:.1f} s); without its "
        f"start-up ({phases['startup_seconds']:.1f} s) {s['ray_images_per_second_ex_startup']:.2f} images/s",
        f"  ray phases: start-up {phases['startup_seconds']:.1f} s, listing {phases['listing_seconds']:.1f} s, "
        f"embedding {phases['embedding_seconds']:.1f} s, commit {phases['commit_seconds']:.1f} s",
        f"ray overhead in images/s against local: {s['overhead_percent']:.1f} % with start-up, "
        f"{s['overhead_percent_ex_startup']:.1f} % without (target <= {TARGET_OVERHEAD:.0f} % without: {verdict})",
        f"  the model actors returned their first batch {phases['first_row_seconds']:.1f} s into the embedding "
        "(actors started, model loaded, mode checked; on 2 cores the read tasks decode meanwhile, so the rate "
        "after it says little)",
        f"  in the crawl alone (report's seconds, less Ray's start-up; no process start or model load in the "
        f"driver): local {s['local_in_crawl_images_per_second']:.2f}, ray {s['ray_in_crawl_images_per_second']:.2f} "
        f"images/s = {100 * (1 - s['ray_in_crawl_images_per_second'] / s['local_in_crawl_images_per_second']):.1f} %",
        *ray_breakdown(runs),
        "",
        f"per picture (one 12 MP JPEG, page cache warm, one thread; other processes used {costs.others_cores:.2f} "
        "cores meanwhile):",
        f"  decode, reduced to >= {DECODE_SIZE} px ({costs.decoded_size[0]}x{costs.decoded_size[1]}): "
        f"{costs.decode_ms:.1f} ms wall, {costs.decode_cpu_ms:.1f} ms CPU (median of 8)",
        f"  model preprocess of the decoded picture: {costs.preprocess_ms:.1f} ms; to an Arrow row's bytes "
        f"(Ray only): {costs.to_row_ms:.2f} ms",
        f"  sha256 read (hash_file): {costs.sha256_ms:.1f} ms",
        f"  JPEG size: {costs.jpeg_bytes_mean / 1e6:.2f} MB on average",
        "  model alone on pre-decoded pictures (best of 3 batches of 32): "
        + ", ".join(f"{name} {rate:.1f} images/s" for name, rate in costs.model.items()),
        "",
        f"indexes agree: {agreement['local_images']} images local, {agreement['ray_images']} ray, same paths "
        f"{agreement['same_paths']}; cosine per path min {num(agreement['cosine_min'], 6)}, mean "
        f"{num(agreement['cosine_mean'], 6)}",
    ]
    return "\n".join(lines) + "\n"


def ray_breakdown(runs: list[Run]) -> list[str]:
    """Where the last Ray run's CPU went, by process title, with threads and OMP_NUM_THREADS."""
    last = next((r for r in reversed(runs) if r.engine == "ray" and r.cpu), None)
    if last is None:
        return []
    lines = ["", f"CPU of the last ray run (round {last.round}, {last.wall_seconds:.1f} s wall), by process:"]
    for title, entry in list(last.cpu["ours_by_title"].items())[:8]:
        lines.append(
            f"  {entry['cpu_seconds']:6.1f} s  {title:<60} {entry['processes']:>2} process(es), "
            f"up to {entry['threads']} threads"
        )
    return lines


if __name__ == "__main__":
    main()
