"""A sizing model for 100M and 1B vectors, fitted to what scripts/bench_scale.py measured.

    .venv/bin/python scripts/sizing_model.py scripts/results/bench_scale_*.json [--dim 512]

Why: nobody can measure a billion vectors on a 2-core machine, but the measured points say how memory,
disk, build time and latency grow. Each quantity is fitted over the measured rows (memory and disk as
a + b·n by least squares, build time and latency as c·n^α on log-log axes), the fit's error at each
measured point is printed, and the fit is carried to 100M and 1B. Rows of different index families are
fitted separately only when there are at least two of them; otherwise the model says it has too few points.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = (100_000_000, 1_000_000_000)
GIB = 1 << 30


def rows_of(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for row in json.loads(path.read_text()).get("rows", []):
            if "count" in row and "build_s" in row and row.get("generator") != "real":
                rows.append(row)
    return sorted(rows, key=lambda r: r["count"])


def linear(n: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """a + b·n, least squares (b only when there is one point)."""
    if len(n) == 1:
        return 0.0, float(y[0] / n[0])
    b, a = np.polyfit(n, y, 1)
    return float(a), float(b)


def power(n: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """c·n^α on log-log axes (α = 1 when there is one point)."""
    if len(n) == 1:
        return float(y[0] / n[0]), 1.0
    alpha, log_c = np.polyfit(np.log(n), np.log(y), 1)
    return float(math.exp(log_c)), float(alpha)


def fit(rows: list[dict[str, Any]], name: str, value: Any, kind: str) -> dict[str, Any]:
    n = np.array([r["count"] for r in rows], dtype=np.float64)
    y = np.array([value(r) for r in rows], dtype=np.float64)
    if kind == "linear":
        a, b = linear(n, y)
        predict = lambda x: a + b * x  # noqa: E731
        formula = f"{a:.4g} + {b:.4g}·n"
    else:
        c, alpha = power(n, y)
        predict = lambda x: c * x**alpha  # noqa: E731
        formula = f"{c:.4g}·n^{alpha:.3f}"
    errors = [float(predict(x) / v - 1) if v else 0.0 for x, v in zip(n, y, strict=True)]
    return {
        "quantity": name,
        "formula": formula,
        "measured": {int(x): float(v) for x, v in zip(n, y, strict=True)},
        "fit_error_at_points": {int(x): round(e, 4) for x, e in zip(n, errors, strict=True)},
        "predicted": {int(t): float(predict(t)) for t in TARGETS},
    }


def model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    quantities = [
        ("disk bytes", lambda r: r["disk_bytes"], "linear"),
        ("resident bytes (serving RSS)", lambda r: r["rss_search"]["VmHWM"], "linear"),
        ("anonymous resident bytes", lambda r: r["rss_search"]["RssAnon"], "linear"),
        ("build seconds on this machine", lambda r: r["build_excl_vectors_s"], "power"),
        ("text-like p50 ms at the tuned depth", lambda r: r["text"]["p50_ms"], "power"),
    ]
    return [fit(rows, name, value, kind) for name, value, kind in quantities]


def show(value: float, name: str) -> str:
    if "bytes" in name:
        return f"{value / GIB:,.1f} GiB"
    if "seconds" in name:
        return f"{value / 3600:,.1f} h ({value * 2 / 3600:,.1f} core-hours)"
    return f"{value:,.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = rows_of(args.results)
    if not rows:
        print("no measured rows")
        return 1
    print("fitted to: " + "; ".join(f"{r['count']:,} {r['factory']} ({r['storage']})" for r in rows))
    fits = model(rows)
    for item in fits:
        errors = ", ".join(f"{n:,}: {e:+.1%}" for n, e in item["fit_error_at_points"].items())
        predicted = ", ".join(f"{n:,}: {show(v, item['quantity'])}" for n, v in item["predicted"].items())
        print(f"{item['quantity']}: {item['formula']}; error at the measured points {errors}; {predicted}")
    if len(rows) < 3:
        print(f"only {len(rows)} measured sizes: the exponents are not checked by a third point")
    if args.json:
        args.json.write_text(json.dumps({"rows": [r["label"] for r in rows], "fits": fits}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
