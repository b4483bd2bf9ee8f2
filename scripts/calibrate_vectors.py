"""Compare benchmark vectors with a real collection: cosines, IVF list sizes and recall@10 against nprobe.

The real collection is a vecsearch index of two Debian packages of clip art crawled with the starter
model (see docs/benchmarks.md, "Benchmark vectors calibrated to a real collection"). Its vectors are read
once into an .npz file:

    .venv/bin/vecsearch index /usr/share/openclipart/png /usr/share/tuxpaint/stamps \
        --index /tmp/realcoll --model starter --quiet
    .venv/bin/python scripts/calibrate_vectors.py --extract /tmp/realcoll /tmp/realcoll_vectors.npz

and then compared with `realistic_vectors.RealisticVectors` (the calibrated generator) and
`synthetic_vectors.ClusteredVectors` (the easy case):

    .venv/bin/python scripts/calibrate_vectors.py /tmp/realcoll_vectors.npz

which writes scripts/results/calibration.json and calibration.txt. Every statistic uses faiss directly
(IndexFlatIP for exact answers, index_factory "IVF{n},Flat" with inner product for the lists).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HELD_OUT = 500  # queries of each kind, never part of the collection they are asked of
K = 10
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- the real collection


def extract(index_dir: Path, out: Path) -> None:
    """Image and caption vectors of a vecsearch index, and English captions embedded with its model.

    The index's captions come from sidecars only: Tux Paint's .txt files, one line per language, so
    most of them are translations ("fr.utf8=Une grenouille."). The English set is one caption per
    picture as the starter model's data defines it (Tux Paint's first line; openclipart's file and folder
    names), embedded with the starter text tower, with the picture's split (test = never trained on).
    """
    conn = sqlite3.connect(index_dir / "items.sqlite")
    roots = dict(conn.execute("SELECT id, path FROM roots"))
    rows = conn.execute(
        "SELECT i.kind, i.file_id, f.root_id, f.relpath, v.data FROM items i JOIN vectors v ON v.item_id = i.id "
        "JOIN files f ON f.id = i.file_id ORDER BY i.id"
    ).fetchall()
    dim = len(rows[0][4]) // 4
    images = [r for r in rows if r[0] == "image"]
    captions = [r for r in rows if r[0] == "caption"]
    image_vectors = np.stack([np.frombuffer(r[4], "<f4") for r in images]).astype(np.float32)
    caption_vectors = np.stack([np.frombuffer(r[4], "<f4") for r in captions]).astype(np.float32)
    image_paths = [str(Path(roots[r[2]]) / r[3]) for r in images]
    row_of_file = {r[1]: n for n, r in enumerate(images)}
    caption_image = np.array([row_of_file.get(r[1], -1) for r in captions])

    import starter_data

    from vecsearch.encoders import load_encoder

    records = {r.path: r for r in starter_data.collect()}
    splits = starter_data.assign_splits(list(records.values()))
    rows_en = [n for n, path in enumerate(image_paths) if path in records]
    texts = [records[image_paths[n]].caption for n in rows_en]
    known: dict[str, np.ndarray] = {}
    if out.exists():  # a previous extraction: keep the caption vectors it already embedded
        with np.load(out) as previous:
            known = dict(zip(previous["captions_en_text"].tolist(), previous["captions_en"], strict=True))
    missing = sorted({t for t in texts if t not in known})
    started = time.perf_counter()
    if missing:
        vectors = np.asarray(load_encoder("starter").embed_texts(missing), dtype=np.float32)
        known.update(zip(missing, vectors, strict=True))
    print(f"embedded {len(missing)} English captions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    english = np.stack([known[t] for t in texts]).astype(np.float32)
    np.savez(
        out,
        images=image_vectors,
        captions=caption_vectors,
        caption_image=caption_image,
        captions_en=english,
        captions_en_image=np.array(rows_en),
        captions_en_test=np.array([splits[image_paths[n]] == "test" for n in rows_en]),
        captions_en_text=np.array(texts),
        image_paths=np.array(image_paths),
        dim=dim,
    )
    print(f"{out}: {len(images)} images, {len(captions)} captions, {len(texts)} English captions, {dim}-d")


def real_sets(path: Path, seed: int = 0) -> dict[str, Any]:
    """The real collection split as the comparisons need it (held-out queries are never in the collection)."""
    data = np.load(path)
    images = data["images"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    held = np.sort(order[:HELD_OUT])
    keep = np.sort(order[HELD_OUT:])
    # caption queries: English captions of test-split pictures (the model never trained on them), whose
    # picture is in the collection: what a user would type to find a picture that is there
    in_collection = np.zeros(len(images), bool)
    in_collection[keep] = True
    candidates = np.flatnonzero(data["captions_en_test"] & in_collection[data["captions_en_image"]])
    text_rows = np.sort(rng.choice(candidates, size=min(HELD_OUT, len(candidates)), replace=False))
    # the whole index as crawled: images and (mostly translated) sidecar captions together
    captions = data["captions"]
    corder = rng.permutation(len(captions))
    return {
        "dim": int(data["dim"]),
        "collection": images[keep],
        "image_queries": images[held],
        "text_queries": data["captions_en"][text_rows],
        "index_collection": np.concatenate([images[keep], captions[np.sort(corder[HELD_OUT:])]]),
        "index_text_queries": captions[np.sort(corder[:HELD_OUT])],
        "counts": {
            "images": len(images),
            "captions": len(captions),
            "captions_en": len(data["captions_en"]),
            "captions_en_test": int(data["captions_en_test"].sum()),
        },
    }


# ---------------------------------------------------------------- statistics


def _percentiles(values: np.ndarray, points: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)) -> dict[str, float]:
    out = {f"p{p}": round(float(np.percentile(values, p)), 4) for p in points}
    out["mean"] = round(float(values.mean()), 4)
    out["std"] = round(float(values.std()), 4)
    return out


def random_pairs(vectors: np.ndarray, pairs: int = 200_000, seed: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(vectors), pairs)
    b = rng.integers(0, len(vectors), pairs)
    ok = a != b
    cos = np.einsum("ij,ij->i", vectors[a[ok]], vectors[b[ok]])
    return _percentiles(cos)


def spectrum(vectors: np.ndarray, sample: int = 20_000, seed: int = 2) -> dict[str, float]:
    """How the variance spreads over directions: components for 50/80/95 % and the length of the mean."""
    rng = np.random.default_rng(seed)
    x = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)].astype(np.float64)
    mean = x.mean(axis=0)
    eig = np.linalg.eigvalsh(np.cov(x - mean, rowvar=False))[::-1]
    share = np.cumsum(eig) / eig.sum()
    out: dict[str, float] = {
        f"components_{int(f * 100)}pct": int(np.searchsorted(share, f) + 1) for f in (0.5, 0.8, 0.95)
    }
    out["mean_length"] = round(float(np.linalg.norm(mean)), 4)
    out["participation_ratio"] = round(float(eig.sum() ** 2 / (eig**2).sum()), 1)
    return out


def exact(collection: np.ndarray, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    flat = faiss.IndexFlatIP(collection.shape[1])
    flat.add(collection)
    return flat.search(queries, k)


def gini(sizes: np.ndarray) -> float:
    s = np.sort(sizes.astype(np.float64))
    n = len(s)
    return float((2 * np.arange(1, n + 1) - n - 1) @ s / (n * s.sum()))


def ivf_stats(collection: np.ndarray, queries: dict[str, np.ndarray], lists: int) -> dict[str, Any]:
    """Train IVF{lists},Flat on the collection; its list sizes and recall@10 by nprobe for each query set."""
    import faiss

    dim = collection.shape[1]
    index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = 1234
    ivf.cp.max_points_per_centroid = 256
    index.train(collection)
    index.add(collection)
    invlists = ivf.invlists
    assert invlists is not None
    sizes = np.array([invlists.list_size(i) for i in range(lists)])
    mean = sizes.mean()
    out: dict[str, Any] = {
        "lists": lists,
        "list_sizes": {
            "mean": round(float(mean), 1),
            "max_over_mean": round(float(sizes.max() / mean), 2),
            "gini": round(gini(sizes), 3),
            "p10_over_mean": round(float(np.percentile(sizes, 10) / mean), 2),
            "p50_over_mean": round(float(np.percentile(sizes, 50) / mean), 2),
            "p90_over_mean": round(float(np.percentile(sizes, 90) / mean), 2),
            "p99_over_mean": round(float(np.percentile(sizes, 99) / mean), 2),
            "empty": int((sizes == 0).sum()),
            "top1pct_share": round(float(np.sort(sizes)[::-1][: max(1, lists // 100)].sum() / sizes.sum()), 3),
        },
        "recall": {},
    }
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p <= lists]
    for name, q in queries.items():
        _, truth = exact(collection, q)
        curve = {}
        for nprobe in probes:
            ivf.nprobe = nprobe
            _, found = index.search(q, K)
            hits = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist(), strict=True))
            curve[str(nprobe)] = round(hits / (K * len(q)), 4)
        out["recall"][name] = curve
    return out


def describe(collection: np.ndarray, image_q: np.ndarray, text_q: np.ndarray, lists: int) -> dict[str, Any]:
    """Every statistic of one collection with its image-like and text-like queries."""
    img_d, _ = exact(collection, image_q)
    txt_d, _ = exact(collection, text_q)
    return {
        "count": len(collection),
        "dim": collection.shape[1],
        "random_pair_cosine": random_pairs(collection),
        "image_query_text_query_cosine": round(float((image_q @ text_q.T).mean()), 4),
        "spectrum": spectrum(collection),
        "nn_cosine_image": _percentiles(img_d[:, 0]),
        "nn10_cosine_image": _percentiles(img_d[:, K - 1]),
        "nn_cosine_text": _percentiles(txt_d[:, 0]),
        "nn10_cosine_text": _percentiles(txt_d[:, K - 1]),
        "ivf": ivf_stats(collection, {"image": image_q, "text": text_q}, lists),
    }


def generated(kind: str, count: int, dim: int, text_in_collection: int = 0) -> tuple[np.ndarray, ...]:
    """(collection, image queries, text queries) of a generator; optionally text-like items in the collection."""
    if kind == "calibrated":
        from realistic_vectors import RealisticVectors

        gen = RealisticVectors(dim=dim, seed=0)
        collection = np.concatenate(list(gen.collection(count)))
        texts = gen.text_queries(HELD_OUT + text_in_collection)
        image_q = gen.image_queries(HELD_OUT)
    else:
        from synthetic_vectors import ClusteredVectors

        easy = ClusteredVectors(dim=dim, seed=0)
        collection = easy.chunk(0, count)
        image_q = easy.queries(HELD_OUT)
        texts = easy.queries(HELD_OUT + text_in_collection, text_like=True)
    if text_in_collection:
        collection = np.concatenate([collection, texts[HELD_OUT:]])
    return collection, image_q, texts[:HELD_OUT]


# ---------------------------------------------------------------- report


def table(title: str, columns: dict[str, dict[str, Any]], rows: list[tuple[str, Any]]) -> list[str]:
    """A side-by-side table: one row per statistic, one column per set."""
    names = list(columns)
    lines = [f"{title}", "| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, getter in rows:
        cells = []
        for name in names:
            try:
                cells.append(f"{getter(columns[name])}")
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def report(sets: dict[str, dict[str, Any]], title: str) -> list[str]:
    def pct(stat: str, p: str) -> Any:
        return lambda d: d[stat][p]

    lines = [f"## {title}", ""]
    first = next(iter(sets.values()))
    lines += table(
        "Cosines",
        sets,
        [("vectors / dim", lambda d: f"{d['count']:,} / {d['dim']}")]
        + [(f"random pair {p}", pct("random_pair_cosine", p)) for p in ("mean", "std", "p5", "p50", "p95", "p99")]
        + [(f"image → nearest {p}", pct("nn_cosine_image", p)) for p in ("p5", "p25", "p50", "p75")]
        + [(f"image → 10th nearest {p}", pct("nn10_cosine_image", p)) for p in ("p5", "p50", "p95")]
        + [(f"text → nearest image {p}", pct("nn_cosine_text", p)) for p in ("p5", "p50", "p95")]
        + [(f"text → 10th nearest {p}", pct("nn10_cosine_text", p)) for p in ("p5", "p50", "p95")]
        + [("image query · text query, mean", lambda d: d["image_query_text_query_cosine"])],
    )
    lines += table(
        "Spectrum (PCA of the collection)",
        sets,
        [(k, lambda d, k=k: d["spectrum"][k]) for k in first["spectrum"]],
    )
    lines += table(
        f"IVF{first['ivf']['lists']} list sizes (k-means on the collection)",
        sets,
        [(k, lambda d, k=k: d["ivf"]["list_sizes"][k]) for k in first["ivf"]["list_sizes"]],
    )
    for kind in ("image", "text"):
        lines += table(
            f"recall@10 of IVF{first['ivf']['lists']},Flat by nprobe, {kind} queries",
            sets,
            [
                (f"nprobe {p}", lambda d, p=p, kind=kind: d["ivf"]["recall"][kind][p])
                for p in first["ivf"]["recall"][kind]
            ],
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vectors", type=Path, nargs="?", default=Path("/tmp/realcoll_vectors.npz"))
    parser.add_argument("--extract", type=Path, metavar="INDEX_DIR", help="read an index's vectors into VECTORS")
    parser.add_argument("--lists", type=int, default=256, help="IVF lists of the image collection")
    parser.add_argument("--index-lists", type=int, default=1024, help="IVF lists of the whole index")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(2)
    if args.extract:
        extract(args.extract, args.vectors)
        return
    started = time.perf_counter()
    real = real_sets(args.vectors)
    dim, n = real["dim"], len(real["collection"])
    results: dict[str, Any] = {"real_counts": real["counts"], "held_out_queries": HELD_OUT, "k": K}

    images: dict[str, dict[str, Any]] = {
        "real": describe(real["collection"], real["image_queries"], real["text_queries"], args.lists)
    }
    for label, kind, d in (
        (f"calibrated {dim}-d", "calibrated", dim),
        ("calibrated 512-d", "calibrated", 512),
        ("easy case 512-d", "easy", 512),
    ):
        collection, image_q, text_q = generated(kind, n, d)
        images[label] = describe(collection, image_q, text_q, args.lists)
        print(f"images: {label} done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results["images"] = images

    n_images, n_text = n, len(real["index_collection"]) - n
    whole: dict[str, dict[str, Any]] = {
        "real": describe(real["index_collection"], real["image_queries"], real["index_text_queries"], args.index_lists)
    }
    for label, kind, d in ((f"calibrated {dim}-d", "calibrated", dim), ("easy case 512-d", "easy", 512)):
        collection, image_q, text_q = generated(kind, n_images, d, text_in_collection=n_text)
        whole[label] = describe(collection, image_q, text_q, args.index_lists)
        print(f"whole index: {label} done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results["whole_index"] = whole

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    counts = real["counts"]
    lines = [
        "# Real collection against generated benchmark vectors",
        "",
        f"Real: {counts['images']:,} pictures and {counts['captions']:,} sidecar captions of openclipart-png and "
        f"tuxpaint-stamps-default, starter model ({dim}-d). {HELD_OUT} held-out queries of each kind; "
        f"recall@10 = overlap of the top 10 with exact inner-product search.",
        "",
    ]
    lines += report(
        images,
        f"Images only: {n:,} picture vectors; image queries = held-out pictures, text queries = English "
        "captions of test-split pictures",
    )
    lines += report(
        whole,
        f"The whole index: {len(real['index_collection']):,} vectors (pictures and captions, mostly "
        "translations); text queries = held-out sidecar captions",
    )
    args.out.with_suffix(".txt").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
