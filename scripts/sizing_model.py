"""A sizing model for 100M and 1B vectors, fitted to what scripts/bench_scale.py measured.

    .venv/bin/python scripts/sizing_model.py scripts/results/bench_scale_*.json [--json OUT]

Why: a billion vectors cannot be measured on a 2-core machine, but the measured rows say what each part
costs. The model is structural, with constants fitted to the rows (least squares) and its error at each
measured row printed:
- disk = n · (code bytes + 8-byte id [+ 2·dim half-precision re-ranking codes + 8-byte id, on disk]) + the
  centroids, graph and rotation;
- resident memory = the process's own memory (fitted to the on-disk rows' anonymous RSS while serving) +
  the centroids, graph and rotation, plus the codes and ids when the index is in memory (on disk, the page
  cache holds what queries touch, and the kernel gives it back under pressure);
- build time = a + b·n on this machine (the lists' training is the fixed part; adding is per vector);
- latency (p50 of text-like queries at the tuned depth, from tuning, which runs alone) = c1 · codes scanned
  + c2 · candidates re-ranked, where codes scanned = nprobe · n / nlist and candidates = 10 · depth.
Predictions assume what vecsearch plans past 10M: 65,536 lists (its cap), OPQ+PQ64 codes on disk with
half-precision re-ranking codes, and the search depth tuned at 10M (recall at that depth falls as the
lists grow; the model does not predict recall).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = (100_000_000, 1_000_000_000)
GIB = 1 << 30
NLIST, HNSW_LINKS = 65536, 32


def rows_of(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for row in json.loads(path.read_text()).get("rows", []):
            if row.get("generator") not in (None, "real") and "build_s" in row and row.get("nlist"):
                rows.append(row)
    return sorted(rows, key=lambda r: (r["count"], r["storage"]))


def code_bytes(factory: str) -> float:
    codes = factory.rsplit(",", 1)[-1]
    if codes == "Flat":
        return 4 * 512
    if codes == "SQ8":
        return 512
    m = re.fullmatch(r"PQ(\d+)(x4fs)?", codes)
    assert m, factory
    return int(m.group(1)) / (2 if m.group(2) else 1)


def fixed_bytes(row: dict[str, Any]) -> float:
    dim, nlist = row["dim"], row["nlist"]
    graph = nlist * HNSW_LINKS * 2 * 4 if "_HNSW" in row["factory"] else 0
    rotation = dim * dim * 4 if row["factory"].startswith("OPQ") else 0
    return nlist * dim * 4 + graph + rotation


def disk_model(row: dict[str, Any]) -> float:
    per = code_bytes(row["factory"]) + 8
    if row["storage"] == "disk":
        per += 2 * row["dim"] + 8
    return row["count"] * per + fixed_bytes(row)


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) == 1:
        return 0.0, float(y[0] / x[0])
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def errors(predicted: np.ndarray, measured: np.ndarray) -> list[float]:
    return [round(float(p / m - 1), 4) if m else 0.0 for p, m in zip(predicted, measured, strict=True)]


def model(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = np.array([r["count"] for r in rows], dtype=np.float64)
    disk_measured = np.array([r["disk_bytes"] for r in rows], dtype=np.float64)
    disk_predicted = np.array([disk_model(r) for r in rows])
    build = np.array([r["build_excl_vectors_s"] for r in rows], dtype=np.float64)
    a, b = fit_linear(n, build)
    scanned = np.array([r["nprobe"] * r["count"] / r["nlist"] for r in rows], dtype=np.float64)
    candidates = np.array([10 * r["depth"] for r in rows], dtype=np.float64)
    p50 = np.array([r["tuning"]["text"]["p50_ms"] for r in rows], dtype=np.float64)
    (c1, c2), *_ = np.linalg.lstsq(np.stack([scanned, candidates], axis=1), p50, rcond=None)
    # The process's own memory besides the centroids, graph and rotation (Python, NumPy, FAISS, buffers),
    # from the on-disk rows' anonymous RSS while serving: what an on-disk index keeps out of the page cache.
    on_disk = [r for r in rows if r["storage"] == "disk" and "rss_search" in r]
    anon = np.array([r["rss_search"]["RssAnon"] for r in on_disk], dtype=np.float64)
    base = float(np.mean(anon - np.array([fixed_bytes(r) for r in on_disk]))) if on_disk else 0.0
    deepest = max(rows, key=lambda r: r["count"])
    nprobe, depth = deepest["nprobe"], deepest["depth"]
    target_row = {"dim": deepest["dim"], "nlist": NLIST, "factory": f"OPQ64_{deepest['dim']},IVF{NLIST}_HNSW32,PQ64"}
    out: dict[str, Any] = {
        "rows": [f"{r['count']:,} {r['factory']} ({r['storage']})" for r in rows],
        "disk": {"error_at_rows": errors(disk_predicted, disk_measured)},
        "build_s": {"a": a, "b": b, "error_at_rows": errors(a + b * n, build)},
        "p50_ms": {
            "per_code": float(c1),
            "per_candidate": float(c2),
            "error_at_rows": errors(c1 * scanned + c2 * candidates, p50),
        },
        "resident": {
            "base_bytes": base,
            "rows": [f"{r['count']:,} (disk)" for r in on_disk],
            "error_at_rows": errors(base + np.array([fixed_bytes(r) for r in on_disk]), anon) if on_disk else [],
        },
        "predicted": {},
    }
    for count in TARGETS:
        on_disk = {**target_row, "count": count, "storage": "disk"}
        codes = nprobe * count / NLIST
        out["predicted"][count] = {
            "disk_bytes": disk_model(on_disk),
            "resident_bytes": base + fixed_bytes(on_disk),
            "in_memory_bytes": base + fixed_bytes(on_disk) + count * (code_bytes(on_disk["factory"]) + 8),
            "build_s": a + b * count,
            "p50_ms": float(c1 * codes + c2 * 10 * depth),
            "nprobe": nprobe,
            "depth": depth,
            "codes_scanned": codes,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = rows_of(args.results)
    if not rows:
        print("no measured rows")
        return 1
    fitted = model(rows)
    print("fitted to: " + "; ".join(fitted["rows"]))
    for name in ("disk", "build_s", "p50_ms"):
        print(f"{name} error at the measured rows: " + ", ".join(f"{e:+.1%}" for e in fitted[name]["error_at_rows"]))
    resident = fitted["resident"]
    if resident["rows"]:
        print(
            f"resident (anonymous, serving on disk) = {resident['base_bytes'] / GIB:.2f} GiB + centroids, graph and "
            "rotation; error at "
            + ", ".join(f"{r} {e:+.1%}" for r, e in zip(resident["rows"], resident["error_at_rows"], strict=True))
        )
    print(f"build seconds = {fitted['build_s']['a']:.1f} + {fitted['build_s']['b'] * 1e6:.2f} µs · n")
    per_code, per_candidate = fitted["p50_ms"]["per_code"] * 1e6, fitted["p50_ms"]["per_candidate"] * 1e3
    print(f"p50 ms = {per_code:.1f} ns · codes scanned + {per_candidate:.2f} µs · candidates re-ranked")
    for count, p in fitted["predicted"].items():
        print(
            f"{count:,}: disk {p['disk_bytes'] / GIB:,.0f} GiB, resident {p['resident_bytes'] / GIB:.2f} GiB on disk "
            f"({p['in_memory_bytes'] / GIB:,.1f} GiB in memory), build {p['build_s'] / 3600:,.1f} h on 2 cores "
            f"({p['build_s'] * 2 / 3600:,.1f} core-hours), p50 {p['p50_ms']:,.0f} ms at nprobe {p['nprobe']} "
            f"({p['codes_scanned']:,.0f} codes), depth {p['depth']}"
        )
    if args.json:
        args.json.write_text(json.dumps(fitted, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
