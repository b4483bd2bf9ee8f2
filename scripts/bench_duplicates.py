"""Benchmark of `Index.duplicates` (vecsearch duplicates): edited copies of real pictures found again, side by
side with imagededup's perceptual hashes (PHash, DHash) on the same pictures in the same run; and the time
the full library path takes on a 100,000-picture index.

    scripts/setup_imagededup.sh                       # once: imagededup in a venv of its own
    .venv/bin/python scripts/bench_duplicates.py [--openclipart 300] [--tuxpaint 150] [--per-folder 2] [--seeds 0,1,2] [--work DIR]
    .venv/bin/python scripts/bench_duplicates.py --scale 100000

Quality run. Originals are a seeded sample of Debian's openclipart-png (/usr/share/openclipart/png) and
tuxpaint-stamps-default (/usr/share/tuxpaint/stamps) pictures, distinct by content, each flattened onto white
(vecsearch letterboxes transparent pictures on white; imagededup would see their transparent pixels as black,
which is not what the comparison is about) and shrunk to at most 1024 pixels a side. Each original gets one
edited copy with one to three of: scale 50-90 %, crop to 80-95 % of each side, brightness or contrast moved
by 5-20 % either way, JPEG at quality 50-85 (otherwise PNG). Both go into one folder, which is indexed with
the bundled starter model (or --model/--pretrained, where its weights can be had) through the public API
(`Index.create`, `add`), and then:

- vecsearch: `Index.duplicates(threshold, method="exact")` at each threshold (pairs within its groups), and
  the pairs the range search itself links (`vecsearch.duplicates.pair_links` over the same stored vectors);
- imagededup (run with --imagededup-python, default .venv-imagededup/bin/python, or $IMAGEDEDUP_PYTHON):
  PHash and DHash of every picture, then its `find_duplicates` at each Hamming distance (its pairs, and
  the pairs within the groups they join into).

For each: recall of the (original, copy) pairs, and the share of false pairs (pairs found that are not an
original and its own copy, over all pairs found), with how many false pairs are two pictures of one source
folder (series and variants that look alike). One sample per seed (--seeds 0,1,2; the samples overlap, being
drawn from the same trees); the counts are also pooled over the samples. Written to
scripts/results/duplicates.json ("quality").

Scale run (--scale N): an index of N synthetic pictures (scripts/realistic_vectors.py, 384-d like the
starter model, with its families of near-duplicates) filled through the index's store (its FAISS index as
the planner chooses, or --index-type), then `Index.duplicates` timed end to end, exact and "ann" (a k-NN
search of the index's own FAISS index); then its stages alone (reading the pictures and vectors, the pair
search of each method) and the share of the exact pairs and groups the ann search finds. Written to the
same JSON ("scale").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
OPENCLIPART = Path("/usr/share/openclipart/png")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
RESULTS = ROOT / "scripts" / "results" / "duplicates.json"
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
DISTANCES = (0, 2, 4, 6, 8, 10, 12, 14, 16)
EDITS = ("scale", "crop", "brightness", "contrast", "jpeg")
MAX_SOURCE_PIXELS = 40_000_000  # openclipart has PNGs of hundreds of megapixels: not worth decoding here
LONGEST_SIDE = 1024

Pair = tuple[str, str]


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "note": "a shared 2-core development machine; other work ran at the same time",
    }


# --- the pictures ---------------------------------------------------------------------------------------


def sample_sources(rng: np.random.Generator, openclipart: int, tuxpaint: int, per_folder: int) -> list[Path]:
    """A seeded sample of distinct pictures (by content) from the two trees, at most `per_folder` from one
    folder: openclipart's generated series (1,378 star polygons in one folder, 119 gradients) would
    otherwise fill the sample with pictures that are near-copies of each other."""
    from PIL import Image

    chosen: list[Path] = []
    seen: set[str] = set()
    folders: dict[Path, int] = {}
    for tree, wanted in ((OPENCLIPART, openclipart), (TUXPAINT, tuxpaint)):
        files = sorted(tree.rglob("*.png"))
        taken = 0
        for number in rng.permutation(len(files)):
            if taken == wanted:
                break
            path = files[int(number)]
            if folders.get(path.parent, 0) >= per_folder:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            try:
                with Image.open(path) as image:
                    if image.width * image.height > MAX_SOURCE_PIXELS or min(image.size) < 16:
                        continue
            except OSError:
                continue
            seen.add(digest)
            folders[path.parent] = folders.get(path.parent, 0) + 1
            chosen.append(path)
            taken += 1
    return chosen


def flattened(path: Path) -> Any:
    """The picture on white, at most LONGEST_SIDE pixels a side, RGB."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        rgba = image.convert("RGBA")
    if max(rgba.size) > LONGEST_SIDE:
        rgba.thumbnail((LONGEST_SIDE, LONGEST_SIDE), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def edited(image: Any, rng: np.random.Generator) -> tuple[Any, list[str], dict[str, float]]:
    """A copy with one to three edits; returns it, the edits, and their amounts."""
    from PIL import Image, ImageEnhance

    kinds = sorted(rng.choice(len(EDITS), size=int(rng.integers(1, 4)), replace=False).tolist())
    edits = [EDITS[k] for k in kinds]
    amounts: dict[str, float] = {}
    copy = image
    if "crop" in edits:
        keep = float(rng.uniform(0.80, 0.95))
        width, height = max(1, round(copy.width * keep)), max(1, round(copy.height * keep))
        left = int(rng.integers(0, copy.width - width + 1))
        top = int(rng.integers(0, copy.height - height + 1))
        copy = copy.crop((left, top, left + width, top + height))
        amounts["crop"] = keep
    if "scale" in edits:
        factor = float(rng.uniform(0.50, 0.90))
        size = (max(1, round(copy.width * factor)), max(1, round(copy.height * factor)))
        copy = copy.resize(size, Image.Resampling.LANCZOS)
        amounts["scale"] = factor
    for kind, enhancer in (("brightness", ImageEnhance.Brightness), ("contrast", ImageEnhance.Contrast)):
        if kind in edits:
            factor = 1.0 + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.20))
            copy = enhancer(copy).enhance(factor)
            amounts[kind] = factor
    if "jpeg" in edits:
        amounts["jpeg"] = float(rng.integers(50, 86))
    return copy, edits, amounts


def make_pictures(
    folder: Path, sources: list[Path], rng: np.random.Generator, distractors: int = 0
) -> list[dict[str, Any]]:
    """o{n}.png (the flattened original) and c{n}.jpg or .png (its edited copy) for each source, except
    `distractors` of them, drawn at random, that are d{n}.png alone (an original without a copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    alone = set(rng.choice(len(sources), size=min(distractors, len(sources)), replace=False).tolist())
    families = []
    for number, source in enumerate(sources):
        original = flattened(source)
        if number in alone:
            original.save(folder / f"d{number:04d}.png")
            families.append({"original": f"d{number:04d}.png", "copy": None, "source": str(source), "edits": []})
            continue
        original.save(folder / f"o{number:04d}.png")
        copy, edits, amounts = edited(original, rng)
        if "jpeg" in edits:
            buffer = io.BytesIO()
            copy.save(buffer, "JPEG", quality=int(amounts["jpeg"]))
            name = f"c{number:04d}.jpg"
            (folder / name).write_bytes(buffer.getvalue())
        else:
            name = f"c{number:04d}.png"
            copy.save(folder / name)
        families.append(
            {
                "original": f"o{number:04d}.png",
                "copy": name,
                "source": str(source),
                "edits": edits,
                "amounts": amounts,
            }
        )
    return families


# --- scoring --------------------------------------------------------------------------------------------


def family_of(name: str) -> int:
    return int(Path(name).stem[1:])


def score(pairs: Iterable[Pair], families: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall of (original, copy) pairs, and false pairs (two pictures of different families) over all."""
    found = {tuple(sorted(p)) for p in pairs}
    true = {tuple(sorted((f["original"], f["copy"]))) for f in families if f["copy"]}
    hits = found & true
    false = [(a, b) for a, b in found if family_of(a) != family_of(b)]
    folder = [str(Path(f["source"]).parent) for f in families]
    same_folder = sum(1 for a, b in false if folder[family_of(a)] == folder[family_of(b)])
    by_edit, edit_hits = {}, {}
    for edit in EDITS:
        with_edit = {tuple(sorted((f["original"], f["copy"]))) for f in families if edit in f["edits"]}
        by_edit[edit] = round(len(with_edit & hits) / len(with_edit), 4) if with_edit else None
        edit_hits[edit] = [len(with_edit & hits), len(with_edit)]
    return {
        "pairs_found": len(found),
        "true_found": len(hits),
        "false_pairs": len(false),
        "false_pairs_same_folder": same_folder,
        "recall": round(len(hits) / len(true), 4),
        "false_share": round(len(false) / len(found), 4) if found else 0.0,
        "recall_by_edit": by_edit,
        "edit_hits": edit_hits,
    }


def pairs_within(groups: Iterable[Iterable[str]]) -> set[Pair]:
    pairs: set[Pair] = set()
    for group in groups:
        members = sorted(group)
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    return pairs


def grouped(pairs: list[Pair]) -> list[list[str]]:
    """Connected components of the pairs: the groups a user would be shown."""
    from vecsearch.duplicates import components

    names = sorted({n for p in pairs for n in p})
    number = {n: i for i, n in enumerate(names)}
    first = np.array([number[a] for a, _ in pairs], dtype=np.int64)
    second = np.array([number[b] for _, b in pairs], dtype=np.int64)
    return [[names[i] for i in members] for members in components(len(names), first, second)]


# --- the runs -------------------------------------------------------------------------------------------


def run_vecsearch(
    folder: Path, index_path: Path, families: list[dict[str, Any]], thresholds: list[float], model: list[str | None]
) -> Any:
    import duplicate_rules

    import vecsearch
    from vecsearch.duplicates import indexed_pictures, pair_links

    started = time.perf_counter()
    encoder = vecsearch.load_encoder(model[0], pretrained=model[1])
    load_seconds = time.perf_counter() - started
    with vecsearch.Index.create(index_path, encoder=encoder) as index:
        started = time.perf_counter()
        report = index.add(folder)
        crawl_seconds = time.perf_counter() - started
        with index.store.snapshot():
            pictures, vectors = indexed_pictures(index.store, None, lambda _root, relpath: relpath)
        names = [p.path for p in pictures]
        runs = []
        for threshold in thresholds:
            result = index.duplicates(threshold, method="exact")
            first, second, _ = pair_links(vectors, threshold, "exact")
            links = [(names[a], names[b]) for a, b in zip(first.tolist(), second.tolist(), strict=True)]
            groups = [[Path(p.path).name for p in g.members] for g in result.groups]
            runs.append(
                {
                    "threshold": threshold,
                    "seconds": round(result.seconds, 3),
                    "groups": len(result.groups),
                    "in_groups": result.in_groups,
                    "pairs": score(links, families),
                    "groups_pairs": score(pairs_within(groups), families),
                    # a bare threshold, as users of other tools know it: its links joined into groups
                    "threshold_groups_pairs": score(
                        pairs_within(grouped([(Path(a).name, Path(b).name) for a, b in links])), families
                    ),
                }
            )
            shown = runs[-1]["groups_pairs"]
            print(f"  vecsearch {threshold:.2f}: recall {shown['recall']}, false {shown['false_share']}", flush=True)
    rules = []
    short = [Path(n).name for n in names]
    for rule, setting, (first, second) in duplicate_rules.runs(vectors):
        links = [(short[a], short[b]) for a, b in zip(first.tolist(), second.tolist(), strict=True)]
        rules.append({"rule": rule, "setting": setting, "groups_pairs": score(pairs_within(grouped(links)), families)})
    return {
        "model": str(encoder.spec),
        "indexed": report.added,
        "skipped": len(report.skipped),
        "model_load_seconds": round(load_seconds, 2),
        "crawl_seconds": round(crawl_seconds, 2),
        "runs": runs,
        "rules": rules,
    }


def run_imagededup(python: str, folder: Path, families: list[dict[str, Any]], distances: list[int]) -> Any:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "imagededup.json"
        command = [
            python,
            str(ROOT / "scripts" / "imagededup_hashes.py"),
            "--images",
            str(folder),
            "--methods",
            "phash,dhash",
            "--distances",
            ",".join(str(d) for d in distances),
            "--workers",
            str(os.cpu_count() or 1),
            "--json",
            str(out),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started
        raw = json.loads(out.read_text())
    methods = {}
    for name, found in raw["methods"].items():
        runs = []
        for run in found["runs"]:
            pairs = [tuple(p) for p in run["pairs"]]
            runs.append(
                {
                    "distance": run["distance"],
                    "search_seconds": round(run["search_seconds"], 3),
                    "pairs": score(pairs, families),
                    "groups_pairs": score(pairs_within(grouped(pairs)), families),
                }
            )
            shown = runs[-1]["groups_pairs"]
            print(f"  {name} {run['distance']:2d}: recall {shown['recall']}, false {shown['false_share']}", flush=True)
        methods[name] = {"hashed": found["hashed"], "encode_seconds": round(found["encode_seconds"], 2), "runs": runs}
    return {
        "imagededup": raw["imagededup"],
        "python": raw["python"],
        "workers": raw["workers"],
        "process_seconds": round(wall, 2),
        "methods": methods,
    }


def one_sample(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    folder = work / "pictures"
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: give a new --work folder")
    started = time.perf_counter()
    share = 1.0 + args.distractors
    sources = sample_sources(rng, round(args.openclipart * share), round(args.tuxpaint * share), args.per_folder)
    families = make_pictures(folder, sources, rng, len(sources) - round(len(sources) / share))
    copied = sum(1 for f in families if f["copy"])
    print(
        f"seed {seed}: {copied} originals with their copies and {len(families) - copied} without in {folder}"
        f" ({time.perf_counter() - started:.1f} s)"
    )
    thresholds = [float(t) for t in args.thresholds.split(",")]
    distances = [int(d) for d in args.distances.split(",")]
    return {
        "seed": seed,
        "originals": copied,
        "distractors": len(families) - copied,
        "edit_counts": {e: sum(e in f["edits"] for f in families) for e in EDITS},
        "vecsearch": run_vecsearch(folder, work / "index", families, thresholds, [args.model, args.pretrained]),
        "imagededup": run_imagededup(args.imagededup_python, folder, families, distances),
    }


def pooled(scores: list[dict[str, Any]], originals: int) -> dict[str, Any]:
    """Counts summed over the samples: recall over all their copy pairs, false pairs over all pairs found."""
    found = sum(s["pairs_found"] for s in scores)
    false = sum(s["false_pairs"] for s in scores)
    true = sum(s["true_found"] for s in scores)
    return {
        "pairs_found": found,
        "true_found": true,
        "false_pairs": false,
        "false_pairs_same_folder": sum(s["false_pairs_same_folder"] for s in scores),
        "recall": round(true / originals, 4),
        "false_share": round(false / found, 4) if found else 0.0,
        "recall_by_edit": {
            edit: round(sum(s["edit_hits"][edit][0] for s in scores) / total, 4)
            for edit in EDITS
            if (total := sum(s["edit_hits"][edit][1] for s in scores))
        },
    }


def quality(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-duplicates-"))
    samples = [one_sample(args, seed, work / f"seed-{seed}") for seed in (int(x) for x in args.seeds.split(","))]
    originals = sum(s["originals"] for s in samples)
    summary: dict[str, Any] = {"vecsearch": [], "phash": [], "dhash": []}
    for number, run in enumerate(samples[0]["vecsearch"]["runs"]):
        runs = [s["vecsearch"]["runs"][number] for s in samples]
        summary["vecsearch"].append(
            {
                "threshold": run["threshold"],
                "groups_pairs": pooled([r["groups_pairs"] for r in runs], originals),
                "threshold_groups_pairs": pooled([r["threshold_groups_pairs"] for r in runs], originals),
                "pairs": pooled([r["pairs"] for r in runs], originals),
                "seconds": [r["seconds"] for r in runs],
            }
        )
    summary["rules"] = []
    for number, run in enumerate(samples[0]["vecsearch"]["rules"]):
        runs = [s["vecsearch"]["rules"][number] for s in samples]
        summary["rules"].append(
            {
                "rule": run["rule"],
                "setting": run["setting"],
                "groups_pairs": pooled([r["groups_pairs"] for r in runs], originals),
            }
        )
    for method in ("phash", "dhash"):
        for number, run in enumerate(samples[0]["imagededup"]["methods"][method]["runs"]):
            runs = [s["imagededup"]["methods"][method]["runs"][number] for s in samples]
            summary[method].append(
                {
                    "distance": run["distance"],
                    "groups_pairs": pooled([r["groups_pairs"] for r in runs], originals),
                    "pairs": pooled([r["pairs"] for r in runs], originals),
                    "search_seconds": [r["search_seconds"] for r in runs],
                }
            )
    print("pooled over the samples: recall / false share of the pairs within groups (of the pairs linked)")
    for name, rows in summary.items():
        for row in rows:
            setting = row.get("threshold", row.get("distance", row.get("setting")))
            g, p = row["groups_pairs"], row.get("pairs", row["groups_pairs"])
            print(
                f"  {row.get('rule', name):9} {setting!s:>5}  {g['recall']:.3f} / {g['false_share']:.3f}  "
                f"({p['recall']:.3f} / {p['false_share']:.3f})"
            )
    return {
        "machine": machine(),
        "originals": {
            "openclipart": args.openclipart,
            "tuxpaint": args.tuxpaint,
            "per_folder": args.per_folder,
            "seeds": args.seeds,
            "total": originals,
            "distractors": sum(s["distractors"] for s in samples),
        },
        "pooled": summary,
        "samples": samples,
    }


def scale(args: argparse.Namespace) -> dict[str, Any]:
    from realistic_vectors import RealisticVectors
    from synthetic_vectors import fill_index

    import vecsearch

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-duplicates-scale-"))
    encoder = vecsearch.load_encoder("starter")
    started = time.perf_counter()
    with vecsearch.Index.create(work / "index", encoder=encoder, index_type=args.index_type) as index:
        fill_index(index, RealisticVectors(dim=encoder.dim, seed=args.seed).collection(args.scale))
    build = time.perf_counter() - started
    runs = []
    with vecsearch.Index.open(work / "index", encoder=encoder) as index:
        own = index.vector_file.vectors
        faiss_index = {"kind": own.kind, "nprobe": own.nprobe, "rerank": own.rerank, "nlist": own.nlist}
        print(f"  FAISS index {faiss_index} (built in {build:.1f} s)")
        for method in ("exact", "ann"):
            report = index.duplicates(method=method, progress=not args.quiet)  # the model's default threshold
            threshold = report.threshold
            runs.append(
                {
                    "method": report.method,
                    "seconds": round(report.seconds, 2),
                    "groups": len(report.groups),
                    "in_groups": report.in_groups,
                    "group_sets": {frozenset(p.item_id for p in g.members) for g in report.groups},
                }
            )
            print(f"  {report.method}: {report.seconds:.1f} s, {len(report.groups)} groups, {report.in_groups} in them")
    exact, ann = runs[0].pop("group_sets"), runs[1].pop("group_sets")
    # The stages of one call, and the pairs each method links (the groups hide a pair missed inside a group).
    from vecsearch.duplicates import indexed_pictures, pair_links

    with vecsearch.Index.open(work / "index", encoder=encoder) as index:
        started = time.perf_counter()
        with index.store.snapshot():
            pictures, vectors = indexed_pictures(index.store, None, lambda _root, relpath: relpath)
        read = time.perf_counter() - started
        ids = np.array([p.item_id for p in pictures], dtype=np.int64)
        pairs, seconds = {}, {}
        for method in ("exact", "ann"):
            started = time.perf_counter()
            first, second, _ = pair_links(vectors, threshold, method, index=index.vector_file.vectors, ids=ids)
            seconds[method] = round(time.perf_counter() - started, 2)
            pairs[method] = set((first * len(vectors) + second).tolist())
    return {
        "machine": machine(),
        "pictures": args.scale,
        "threshold": threshold,
        "vectors": f"scripts/realistic_vectors.py, {encoder.dim}-d, seed {args.seed}",
        "build_seconds": round(build, 1),
        "faiss_index": faiss_index,
        "runs": runs,
        "ann_groups_equal_to_exact": round(len(exact & ann) / len(exact), 4) if exact else None,
        "read_seconds": round(read, 2),
        "pair_links_seconds": seconds,
        "pairs": {method: len(found) for method, found in pairs.items()},
        "ann_pair_recall": round(len(pairs["ann"] & pairs["exact"]) / len(pairs["exact"]), 4)
        if pairs["exact"]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openclipart", type=int, default=300, help="originals from openclipart-png")
    parser.add_argument("--tuxpaint", type=int, default=150, help="originals from tuxpaint-stamps-default")
    parser.add_argument("--per-folder", type=int, default=2, help="most originals from one source folder")
    parser.add_argument(
        "--distractors", type=float, default=1.0, help="originals without a copy, per original with one"
    )
    parser.add_argument("--seeds", default="0,1,2", help="one sample of originals (and edits) per seed")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic vectors (--scale)")
    parser.add_argument("--work", help="folder for the pictures and the index (default: a new temporary one)")
    parser.add_argument("--thresholds", default=",".join(f"{t:.2f}" for t in THRESHOLDS))
    parser.add_argument("--distances", default=",".join(str(d) for d in DISTANCES), help="Hamming distances")
    parser.add_argument(
        "--imagededup-python",
        default=os.environ.get("IMAGEDEDUP_PYTHON", str(ROOT / ".venv-imagededup" / "bin" / "python")),
        help="the python of imagededup's venv (scripts/setup_imagededup.sh)",
    )
    parser.add_argument("--model", default="starter", help="the model to index with (as `vecsearch index --model`)")
    parser.add_argument("--pretrained", help="its open_clip pretrained tag")
    parser.add_argument("--scale", type=int, help="time Index.duplicates on an index of this many synthetic pictures")
    parser.add_argument("--index-type", default="auto", help="the scale run's FAISS index (as Index.create's)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    if args.scale:
        results["scale"] = scale(args)
    else:
        results["quality"] = quality(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
