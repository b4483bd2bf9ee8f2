#!/usr/bin/env python
"""Short training trials of the starter model, side by side: which data mix, captions, augmentation, width and
weight averaging carry best to the held-out validation source. One run of each, same seed, same short budget.

    .venv/bin/python scripts/starter_trials.py                    # all trials (about 12 minutes each on 2 cores)
    .venv/bin/python scripts/starter_trials.py --only mix,templates

Each trial is a train_starter.py run with a few options changed; its model card gives the figures. Written to
scripts/results/starter_trials.json and printed as a Markdown table. Trials are short, so they rank ideas, they
do not give the final figures: the full run (train_starter.py defaults) and eval_starter.py do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LARGER_DATA = Path.home() / ".cache" / "vecsearch" / "starter-data-v2-88"
SHORT = ["--epochs", "5", "--new-per-epoch", "10000", "--no-templates", "--no-strong-aug"]
TRIALS: dict[str, tuple[str, list[str]]] = {
    "clipart-only": ("openclipart and Tux Paint alone (the first model's data)", ["--no-new"]),
    "mix": ("+ new sources: glyph sets at half weight, 3 pictures per concept at full weight", []),
    "uniform": ("+ new sources, every picture alike (no concept cap, glyph sets at full weight)",
                ["--concept-cap", "100000", "--glyph-weight", "1"]),
    "colour-heavy": ("+ new sources, glyph sets at a tenth", ["--glyph-weight", "0.1"]),
    "templates": ("mix, new sources captioned 'an icon of ...'", ["--templates"]),
    "strong-aug": ("mix, stronger augmentation", ["--strong-aug"]),
    "ema": ("mix, weights averaged (EMA 0.998)", ["--ema", "0.998"]),
    "wider": ("mix, image tower width 40 (9.2M parameters)", ["--width", "40"]),
    "templates+strong-aug": ("mix, 'an icon of ...' captions and stronger augmentation",
                             ["--templates", "--strong-aug"]),
    # Needs the data built at 88 px first: build_starter_data.py --cache-size 88 --out <LARGER_DATA>
    "input-80": ("mix, 80 x 80 pictures instead of 64 x 64", ["--input-size", "80", "--data", str(LARGER_DATA)]),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated trial names")
    parser.add_argument("--data", default=None, help="built data folder (train_starter.py's default otherwise)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "starter_trials.json")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="also measure this weights file (the first starter model)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(TRIALS)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    work = Path(tempfile.mkdtemp(prefix="starter-trials-"))
    if args.baseline:
        sys.path.insert(0, str(HERE))
        import build_starter_data
        import train_starter
        from safetensors import safe_open

        measured = train_starter.measure_weights(args.baseline, Path(args.data or build_starter_data.DEFAULT_OUT))
        with safe_open(str(args.baseline), "pt") as handle:
            card = json.loads(handle.metadata()["card"])
        results["first-model"] = {
            "description": f"the first starter model (openclipart and Tux Paint, {card['epochs']} epochs)",
            "options": [],
            "heldout_val_r10": measured["heldout_text_to_image_r10"],
            "chosen_epoch": card["epochs"],
            "clipart_val_r10_last": measured["val_text_to_image_r10"],
            "test_new_r10_per_source": measured["test_new_text_to_image_r10_per_source"],
            "train_minutes": round(card["train_seconds"] / 60, 1),
            "parameters": card["image_tower_parameters"],
            "curve": [],
        }
        names = [n for n in args.only.split(",") if n]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name in names:
        description, options = TRIALS[name]
        weights = work / f"{name}.safetensors"
        command = [sys.executable, str(HERE / "train_starter.py"), *SHORT, *options, "--out", str(weights)]
        if args.data:
            command += ["--data", args.data]
        print(f"== {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        card = json.loads(weights.with_suffix(".card.json").read_text())
        last = card["val_curve"][-1]
        chosen = card["val_curve"][card["chosen_epoch"] - 1]
        results[name] = {
            "description": description,
            "options": options,
            "heldout_val_r10": chosen["heldout_text_to_image_r10"],
            "chosen_epoch": card["chosen_epoch"],
            "clipart_val_r10_last": last["val_text_to_image_r10"],
            "test_new_r10_per_source": card["test_new_text_to_image_r10_per_source"],
            "train_minutes": round(card["train_seconds"] / 60, 1),
            "parameters": card["image_tower_parameters"],
            "curve": card["val_curve"],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


def table(results: dict) -> str:
    sources = sorted({s for r in results.values() for s in r["test_new_r10_per_source"]})
    head = "| trial | held-out val R@10 (epoch) | clip-art val R@10 | new sources' test concepts R@10, mean | training minutes |"
    lines = [head, "|---|---|---|---|---|"]
    for name, r in results.items():
        per = r["test_new_r10_per_source"]
        mean = sum(per.values()) / len(per) if per else 0.0
        lines.append(
            f"| {name}: {r['description']} | {r['heldout_val_r10']:.3f} ({r['chosen_epoch']}) | "
            f"{r['clipart_val_r10_last']:.3f} | {mean:.3f} ({len(sources)} sources) | {r['train_minutes']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
