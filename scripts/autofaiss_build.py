"""Build a FAISS index with autofaiss (criteo), for a side-by-side benchmark against vecsearch's own index.

This script is benchmark-only: it runs inside .venv-autofaiss (made by scripts/setup_autofaiss.sh), never in
the project's .venv, and it must not import vecsearch. autofaiss pins numpy<2 and brings pandas/pyarrow, so it
is kept out of vecsearch's dependencies; the benchmark talks to it only through files (the vectors as .npy,
the index file, and the JSON this script writes).

    .venv-autofaiss/bin/python scripts/autofaiss_build.py --embeddings DIR --index-out knn.index \\
        --max-memory 1G [--available-memory 2G] [--max-latency-ms 10] [--threads N] [--metric ip] \\
        [--max-train-vectors N] --json build.json

DIR is autofaiss's numpy format: a folder of .npy files, each an (n, d) float32 or float16 array, read in
file-name order (ids are row numbers across the files in that order). Then search with
scripts/autofaiss_search.py, which applies the search parameters autofaiss chose.

The JSON holds: index_key (what autofaiss chose), index_param (its search-parameter string, e.g.
"nprobe=..,efSearch=..,ht=.."), search_parameters (those values read back from the built index: nprobe,
quantizer_efSearch, polysemous_ht, efSearch, ...), train_vectors (how many vectors autofaiss trained on),
build_seconds (wall time of autofaiss.build_index, incl. its own tuning and saving), peak_rss_bytes (of this
process), index_bytes (the index file), the options used, autofaiss_infos (autofaiss's own metrics file) and
the autofaiss/faiss/numpy versions.

What is patched in this process only (autofaiss's installed code is never edited):
- faiss>=1.15 rejects autofaiss's `faiss.OPQMatrix(d, M=.., d2=..)` (keyword arguments); faiss.OPQMatrix is
  replaced by a subclass that passes the same values positionally. Without it, any OPQ+IVF-PQ build fails.
- --opq-niter / --opq-niter-pq0 (off by default) set that OPQMatrix's training iterations. When the memory
  budget forces quantization, autofaiss picks the largest PQ that fits, e.g. OPQ256_768,IVF16384_HNSW32,PQ256x8
  for 1M x 512-d under 1G, and faiss's OPQ training (50 iterations, each training 256 sub-quantizers on 65,536
  vectors; mostly one core) then dominates the build: over an hour on 2 cores. Its sample is fixed by faiss
  (OPQMatrix.max_train_points), not by autofaiss.
- --max-train-vectors (off by default) caps the IVF training sample. autofaiss has no option for the sample size
  itself: it takes 100 vectors per IVF cluster (so all vectors when n <= 100 * clusters, e.g. 1M vectors ->
  IVF16384 -> all 1M with its 32G default), lowered towards 31 per cluster when --available-memory
  (current_memory_available) is small. That is autofaiss's real knob, and this script's default for it is the
  least autofaiss accepts for the build (so 31-40 vectors per cluster); --max-train-vectors is ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import faiss
import numpy as np


def patch_opq_matrix(niter: int | None = None, niter_pq_0: int | None = None) -> bool:
    """Make `faiss.OPQMatrix(d, M=.., d2=..)` work again (faiss 1.15 takes no keyword arguments), and optionally
    set the OPQ training iterations (faiss's defaults: niter=50, niter_pq_0=40). Returns whether the constructor
    needed the positional patch."""
    original = faiss.OPQMatrix
    try:
        original(8, M=2, d2=8)
        needed = False
    except TypeError:
        needed = True
    if not needed and niter is None and niter_pq_0 is None:
        return False

    class OPQMatrix(original):  # type: ignore[misc, valid-type]
        def __init__(self, d: int = 0, M: int = 1, d2: int = -1, M_in: int | None = None) -> None:  # noqa: N803
            super().__init__(d, M if M_in is None else M_in, d2)
            if niter is not None:
                self.niter = niter
            if niter_pq_0 is not None:
                self.niter_pq_0 = niter_pq_0

    faiss.OPQMatrix = OPQMatrix
    return needed


def patch_train_size(max_train_vectors: int | None, record: dict[str, Any]) -> None:
    """Record (and, with a cap, limit) the training-sample size autofaiss picks."""
    import autofaiss.indices.training as training

    original = training.get_optimal_train_size

    def get_optimal_train_size(nb_vectors: int, index_key: str, current_memory_available: Any, vec_dim: Any) -> int:
        size = original(nb_vectors, index_key, current_memory_available, vec_dim)
        record["autofaiss_train_vectors"] = int(size)
        if max_train_vectors is not None and size > max_train_vectors:
            size = max_train_vectors
        record["train_vectors"] = int(size)
        return int(size)

    training.get_optimal_train_size = get_optimal_train_size


def search_parameters(index: Any) -> dict[str, Any]:
    """The search-time parameters set on a built (or loaded) index."""
    out: dict[str, Any] = {"index_class": type(faiss.downcast_index(index)).__name__}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        out["ivf_class"] = type(ivf).__name__
        out["nlist"] = int(ivf.nlist)
        out["nprobe"] = int(ivf.nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        out["quantizer_class"] = type(quantizer).__name__
        if hasattr(quantizer, "hnsw"):
            out["quantizer_efSearch"] = int(quantizer.hnsw.efSearch)
        if hasattr(ivf, "polysemous_ht"):
            out["polysemous_ht"] = int(ivf.polysemous_ht)  # 0: polysemous filtering off
        if hasattr(ivf, "pq"):
            out["pq_M"] = int(ivf.pq.M)
            out["pq_nbits"] = int(ivf.pq.nbits)
    else:
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        inner = faiss.downcast_index(inner)
        if hasattr(inner, "hnsw"):
            out["efSearch"] = int(inner.hnsw.efSearch)
            out["efConstruction"] = int(inner.hnsw.efConstruction)
    return out


def smallest_accepted_memory(
    nb_vectors: int, dim: int, index_key: str | None, max_memory: str, make_direct_map: bool
) -> str:
    """The least current_memory_available that autofaiss.build_index accepts for this build: at least
    max_index_memory_usage / 0.9, and at least autofaiss's own estimate of the memory that creating the index
    needs; rounded up to 0.1 GiB. Passing it makes autofaiss train on its smallest sample (down to 31 vectors per
    IVF cluster) instead of 100 vectors per cluster, which with its 32G default is every vector up to 1.6M."""
    from autofaiss.external.build import estimate_memory_required_for_index_creation
    from autofaiss.utils.cast import cast_memory_to_bytes

    needed, _ = estimate_memory_required_for_index_creation(nb_vectors, dim, index_key, max_memory, make_direct_map, 1)
    least = max(cast_memory_to_bytes(max_memory) / 0.9, needed) * 1.01
    return f"{math.ceil(least / 1024**3 * 10) / 10:.1f}G"


def count_vectors(folder: Path) -> tuple[int, int, list[str]]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npy")
    if not files:
        raise SystemExit(f"no .npy files in {folder}")
    total, dim, dtypes = 0, None, set()
    for path in files:
        array = np.load(path, mmap_mode="r")
        if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
            raise SystemExit(f"{path}: shape {array.shape}, expected (n, {dim or 'd'})")
        if array.dtype not in (np.float32, np.float16):
            raise SystemExit(f"{path}: dtype {array.dtype}, expected float32 or float16")
        total, dim = total + array.shape[0], array.shape[1]
        dtypes.add(str(array.dtype))
    return total, int(dim or 0), sorted(dtypes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True, type=Path, help="folder of .npy float32/float16 (n, d)")
    parser.add_argument("--index-out", required=True, type=Path, help="where the index file is written")
    parser.add_argument("--infos-out", type=Path, help="autofaiss's own metrics file (default INDEX.infos.json)")
    parser.add_argument("--json", type=Path, help="write what was built and measured here")
    parser.add_argument("--max-memory", default="8G", help="max_index_memory_usage (default 8G)")
    parser.add_argument(
        "--available-memory",
        help="current_memory_available (autofaiss default 32G). Must be >= max-memory/0.9. Smaller values "
        "shrink the training sample (down to 31 vectors per IVF cluster) and the add batches. "
        "Default: the least autofaiss accepts (max-memory/0.9, or its estimate of what building needs)",
    )
    parser.add_argument("--max-latency-ms", type=float, default=10.0, help="max_index_query_time_ms (default 10)")
    parser.add_argument("--min-neighbors", type=int, default=20, help="min_nearest_neighbors_to_retrieve (20)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="faiss threads / nb_cores")
    parser.add_argument("--metric", choices=["ip", "l2"], default="ip")
    parser.add_argument("--index-key", help="force this index factory key instead of autofaiss's choice")
    parser.add_argument("--index-param", help="force these search parameters instead of autofaiss's tuning")
    parser.add_argument("--make-direct-map", action="store_true", help="make_direct_map (IVF reconstruction)")
    parser.add_argument(
        "--should-be-memory-mappable", action="store_true", help="only choose indices that can be mmapped"
    )
    parser.add_argument(
        "--max-train-vectors",
        type=int,
        help="cap autofaiss's training sample (not an autofaiss option: patched in this process). Off by default",
    )
    parser.add_argument(
        "--opq-niter",
        type=int,
        help="OPQ training iterations (faiss default 50, which autofaiss keeps; patched in this process)",
    )
    parser.add_argument(
        "--opq-niter-pq0",
        type=int,
        help="PQ k-means iterations in OPQ's first iteration (faiss default 40; later ones use 4)",
    )
    parser.add_argument("--quiet", action="store_true", help="autofaiss logs warnings only")
    args = parser.parse_args(argv)

    from autofaiss import build_index
    from autofaiss.utils.cast import cast_bytes_to_memory_string

    patched_opq = patch_opq_matrix(args.opq_niter, args.opq_niter_pq0)
    train: dict[str, Any] = {}
    patch_train_size(args.max_train_vectors, train)

    nb_vectors, dim, dtypes = count_vectors(args.embeddings)
    if args.available_memory is None:
        args.available_memory = smallest_accepted_memory(
            nb_vectors, dim, args.index_key, args.max_memory, args.make_direct_map
        )
    args.index_out.parent.mkdir(parents=True, exist_ok=True)
    infos_out = args.infos_out or args.index_out.with_name(args.index_out.name + ".infos.json")

    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    index, infos = build_index(
        embeddings=str(args.embeddings),
        index_path=str(args.index_out),
        index_infos_path=str(infos_out),
        file_format="npy",
        index_key=args.index_key,
        index_param=args.index_param,
        max_index_query_time_ms=args.max_latency_ms,
        max_index_memory_usage=args.max_memory,
        min_nearest_neighbors_to_retrieve=args.min_neighbors,
        current_memory_available=args.available_memory,
        metric_type=args.metric,
        nb_cores=args.threads,
        make_direct_map=args.make_direct_map,
        should_be_memory_mappable=args.should_be_memory_mappable,
        verbose=logging.WARNING if args.quiet else logging.INFO,
    )
    build_seconds = time.perf_counter() - start
    if index is None or infos is None:
        print("autofaiss did not build an index (see its log above)", file=sys.stderr)
        return 1

    result: dict[str, Any] = {
        "tool": "autofaiss",
        "index_key": infos.get("index_key"),
        "index_param": infos.get("index_param"),
        "search_parameters": search_parameters(index),
        "nb_vectors": nb_vectors,
        "dim": dim,
        "input_dtypes": dtypes,
        "train_vectors": train.get("train_vectors"),
        "autofaiss_train_vectors": train.get("autofaiss_train_vectors"),
        "build_seconds": round(build_seconds, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "index_bytes": args.index_out.stat().st_size,
        "index_path": str(args.index_out),
        "infos_path": str(infos_out),
        "options": {
            "metric": args.metric,
            "max_index_memory_usage": args.max_memory,
            "current_memory_available": args.available_memory,
            "max_index_query_time_ms": args.max_latency_ms,
            "min_nearest_neighbors_to_retrieve": args.min_neighbors,
            "nb_cores": args.threads,
            "make_direct_map": args.make_direct_map,
            "should_be_memory_mappable": args.should_be_memory_mappable,
            "forced_index_key": args.index_key,
            "forced_index_param": args.index_param,
            "max_train_vectors": args.max_train_vectors,
            "opq_niter": args.opq_niter,
            "opq_niter_pq0": args.opq_niter_pq0,
            "opq_matrix_patched": patched_opq,
        },
        "autofaiss_infos": infos,
        "versions": {
            "autofaiss": version("autofaiss"),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(
        f"autofaiss chose {result['index_key']} [{result['index_param']}] in {build_seconds:.1f}s, "
        f"trained on {result['train_vectors']}, peak RSS {cast_bytes_to_memory_string(result['peak_rss_bytes'])}, "
        f"index {cast_bytes_to_memory_string(result['index_bytes'])}",
        file=sys.stderr,
    )
    if not args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
