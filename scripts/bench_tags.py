#!/usr/bin/env python
"""Zero-shot tags for every picture (`Index.tag`): its cost at scale, and its answers against `classify`.

    .venv/bin/python scripts/bench_tags.py                          # 100,000 pictures × 1,000 labels + Tux Paint
    .venv/bin/python scripts/bench_tags.py --pictures 20000 --labels 200 --stamps test --skip-scale

Scale: an index of the bundled starter model is filled with synthetic image vectors (clustered like real
embeddings, scripts/synthetic_vectors.py; `fill_index` writes them through the index's own store, as a
crawl would, minus the model). 1,000 labels (adjective + noun, generated) are embedded by the starter
model's text tower in every default template. The tagging pass (every picture against every label, one
matrix product per batch of stored vectors) then runs in a process of its own, so that its time and its
peak memory are its own: the peak resident memory of that process while it tags (VmHWM after a reset),
and how much of it numpy and Python allocated (tracemalloc). Then 1,000 pictures more are added and
tagged (the incremental path of a later crawl).

Tux Paint: the stamps of Debian's tuxpaint-stamps-default (the starter model's held-out test stamps, and
all of them, most of which it was trained on) are exported as eval_starter.py exports them, indexed with the starter model, and
classified into Tux Paint's categories with eval_starter.py's labels and templates, three ways: tags
(`Index.tag`, top label), `classify` of each stored picture (`id:N`), and `classify` of each file (the
picture embedded again, as eval_starter.py measures). The tag path must give `classify`'s answers.
Results go to scripts/results/tags.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

import vecsearch  # noqa: E402

ADJECTIVES = (
    "red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "pink",
    "small", "big", "old", "young", "happy", "sad", "wooden", "metal", "glass", "paper",
    "striped", "spotted", "round", "square", "flying", "sleeping", "running", "broken", "shiny", "dark",
    "bright", "frozen", "wet", "dry", "tiny", "giant", "ancient", "modern", "plastic", "golden",
)  # fmt: skip
NOUNS = (
    "cat", "dog", "bird", "fish", "horse", "car", "boat", "plane", "train", "house",
    "tree", "flower", "apple", "cake", "chair", "table", "lamp", "book", "clock", "hat",
    "shoe", "ball", "guitar", "robot", "mountain",
)  # fmt: skip


def generated_labels(count: int) -> list[str]:
    labels = [f"{adjective} {noun}" for noun in NOUNS for adjective in ADJECTIVES]
    if count > len(labels):
        labels += [f"{label} {n}" for n in range(2, count // len(labels) + 2) for label in labels]
    return labels[:count]


def status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# --- scale ------------------------------------------------------------------------------------------------


def measure_scale(work: Path, pictures: int, label_count: int, top: int) -> dict[str, Any]:
    from synthetic_vectors import ClusteredVectors, fill_index

    os.environ["VECSEARCH_LABEL_CACHE"] = "0"  # the labels embedded by the model, not read back
    labels = generated_labels(label_count)
    started = time.perf_counter()
    index = vecsearch.Index.create(work / "scale", model="starter")
    model_seconds = time.perf_counter() - started
    # The tag set is recorded on the empty index (this embeds the labels); the pictures come after.
    empty = index.tag(labels, top=top)
    started = time.perf_counter()
    fill_index(index, ClusteredVectors(dim=index.dim).collection(pictures))
    fill_seconds = time.perf_counter() - started
    dim = index.dim
    index.close()
    (work / "labels.json").write_text(json.dumps(labels))
    passes = {"all": child(work, top)}
    reopened = vecsearch.Index.open(work / "scale")
    fill_index(reopened, ClusteredVectors(dim=dim, seed=1).collection(1000), root="later")
    reopened.close()
    passes["new 1,000"] = child(work, top)
    passes["nothing new"] = child(work, top)
    return {
        "pictures": pictures,
        "labels": label_count,
        "templates": len(vecsearch.DEFAULT_TEMPLATES),
        "top": top,
        "dim": dim,
        "vectors": "synthetic (scripts/synthetic_vectors.py ClusteredVectors)",
        "model_load_seconds": round(model_seconds, 1),
        "label_embedding_seconds": round(empty.label_seconds, 1),
        "fill_seconds": round(fill_seconds, 1),
        "passes": passes,
    }


def child(work: Path, top: int) -> dict[str, Any]:
    """One tagging pass in a process of its own; its own figures."""
    command = [sys.executable, __file__, "--child", str(work), "--top", str(top)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the tagging process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def child_pass(work: Path, top: int) -> None:
    labels = json.loads((work / "labels.json").read_text())
    with vecsearch.Index.open(work / "scale") as index:
        baseline_kb = status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: the pass's own peak
        tracemalloc.start()
        started = time.perf_counter()
        report = index.tag(labels, top=top)
        seconds = time.perf_counter() - started
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak_kb = status_kb("VmHWM")
        model_loaded = index.model.loaded is not None
    print(
        json.dumps(
            {
                "tagged": report.tagged,
                "retagged": report.retagged,
                "seconds": round(seconds, 2),
                "pictures_per_second": round(report.tagged / seconds) if report.tagged else None,
                "rss_before_mb": round(baseline_kb / 1024, 1),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "peak_rss_growth_mb": round((peak_kb - baseline_kb) / 1024, 1),
                "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
                "model_loaded": model_loaded,
            }
        )
    )


# --- Tux Paint ------------------------------------------------------------------------------------------


def stamps(which: str) -> list[tuple[Path, str]]:
    """(stamp, category) pairs: the starter model's held-out test stamps, or every stamp."""
    import starter_data

    root = starter_data.TUXPAINT_DIR
    if which == "test":
        listed = [line.split("\t") for line in starter_data.TEST_SPLIT_LIST.read_text().splitlines()]
        paths = [root / relative for source, relative, _ in listed if source == starter_data.TUXPAINT]
    else:
        paths = sorted(root.rglob("*.png"))
    return [(path, path.relative_to(root).parts[0]) for path in paths]


def measure_tuxpaint(work: Path, which: str, limit: int) -> dict[str, Any]:
    import eval_starter
    import starter_data

    os.environ.pop("VECSEARCH_LABEL_CACHE", None)
    chosen = stamps(which)
    if limit and len(chosen) > limit:
        chosen = sorted(random.Random(0).sample(chosen, limit))
    folder = work / "stamps"
    copies: list[Path] = []
    for number, (path, _) in enumerate(chosen):  # exported as eval_starter.py exports its test pictures
        copy = folder / f"{number:05d}.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        starter_data.decode_thumbnail(path, eval_starter.EXPORT_SIZE).save(copy)
        copies.append(copy)
    categories = sorted({c for _, c in chosen} | set(starter_data.tuxpaint_categories()))
    labels = [eval_starter.CATEGORY_NAMES.get(c, c) for c in categories]
    templates = list(eval_starter.CLIP_ART_TEMPLATES)
    truth = [eval_starter.CATEGORY_NAMES.get(c, c) for _, c in chosen]

    started = time.perf_counter()
    index = vecsearch.Index.create(work / "tuxpaint", model="starter")
    report = index.add(folder)
    index_seconds = time.perf_counter() - started
    if report.skipped:
        raise SystemExit(f"{len(report.skipped)} stamps could not be indexed: {report.skipped[:3]}")
    item_of = {Path(row.path).resolve(): row.id for row in _image_hits(index, len(copies))}
    ids = [item_of[copy.resolve()] for copy in copies]

    started = time.perf_counter()
    tag_report = index.tag(labels, templates, top=1)
    tag_seconds = time.perf_counter() - started
    tags = index.tags_of(ids)
    by_tags = [tags[i][0].label for i in ids]

    started = time.perf_counter()
    stored = [index.classify(f"id:{i}", labels, templates) for i in ids]
    stored_seconds = time.perf_counter() - started
    started = time.perf_counter()
    files = [index.classify(copy, labels, templates) for copy in copies]
    file_seconds = time.perf_counter() - started
    by_stored = [scores[0].label for scores in stored]
    by_files = [scores[0].label for scores in files]
    # Why a file's classification can differ: the crawl's vector and the query's are two embeddings.
    again = [index.query_vector(vecsearch.Query((vecsearch.Term("image", str(copy)),))) for copy in copies]
    cosines = [float(index.store.vector(i) @ vector.reshape(-1)) for i, vector in zip(ids, again, strict=True)]
    probability_gap = max(
        abs(tag.probability - scores[0].probability)
        for tag, scores in zip((tags[i][0] for i in ids), stored, strict=True)
    )
    index.close()

    def accuracy(predicted: list[str]) -> float:
        return round(sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth), 4)

    return {
        "stamps": which,
        "pictures": len(chosen),
        "labels": len(labels),
        "templates": templates,
        "index_seconds": round(index_seconds, 1),
        "tags": {"accuracy": accuracy(by_tags), "seconds": round(tag_seconds, 2), "tagged": tag_report.tagged},
        "classify_stored": {"accuracy": accuracy(by_stored), "seconds": round(stored_seconds, 1)},
        "classify_files": {"accuracy": accuracy(by_files), "seconds": round(file_seconds, 1)},
        "tags_equal_classify_stored": by_tags == by_stored,
        "disagreements_with_classify_stored": sum(a != b for a, b in zip(by_tags, by_stored, strict=True)),
        "disagreements_with_classify_files": sum(a != b for a, b in zip(by_tags, by_files, strict=True)),
        "max_probability_difference_stored": probability_gap,
        "crawl_inference": (report.inference or {}).get("mode"),
        "stored_vs_file_vector_cosine": {"min": round(min(cosines), 5), "mean": round(sum(cosines) / len(cosines), 5)},
    }


def _image_hits(index: vecsearch.Index, count: int) -> list[vecsearch.Hit]:
    """Every image item of a small index, through the public API (an empty query's refinement is not
    possible, so a broad prompt with k = all)."""
    return index.search("a picture", k=max(count, 1), kind="image")


# --- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--top", type=int, default=1)
    parser.add_argument(
        "--stamps", nargs="+", choices=("test", "all"), default=["test", "all"], help="Tux Paint stamps to classify."
    )
    parser.add_argument("--stamp-limit", type=int, default=0, help="A seeded sample of this many stamps (0: all).")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-tuxpaint", action="store_true")
    parser.add_argument("--out", type=Path, default=SCRIPTS / "results" / "tags.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_pass(args.child, args.top)
        return 0
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}  # parts not re-run stay
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    results["when"] = time.strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory(prefix="bench-tags-") as tmp:
        work = Path(tmp)
        if not args.skip_scale:
            results["scale"] = measure_scale(work, args.pictures, args.labels, args.top)
            print(json.dumps(results["scale"], indent=2))
        if not args.skip_tuxpaint:
            results["tuxpaint"] = {}
            for which in args.stamps:
                results["tuxpaint"][which] = measure_tuxpaint(work / which, which, args.stamp_limit)
                print(json.dumps(results["tuxpaint"][which], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
