#!/usr/bin/env python
"""Build the starter model's training data from the package registries: fetch, render, caption, de-duplicate,
split. Reproducible: package versions are pinned and their archives' SHA-256 recorded.

    .venv/bin/python scripts/build_starter_data.py            # writes ~/.cache/vecsearch/starter-data-v2/

Sources (see starter_sources.py for how each is read and captioned): the 17 `@iconify-json/<set>` npm
packages (and the synonym metadata that tabler, lucide, mdi and Font Awesome ship in their own packages),
Debian's Inkscape symbol files, JOSM presets, openstreetmap-carto symbols, six colour icon themes, Wesnoth and
GCompris, plus the openclipart and Tux Paint pictures of the first starter model (starter_data.py).

Splits (column `split` of manifest.jsonl):
- train / val / test: openclipart and Tux Paint, exactly as starter_data.assign_splits gave them before;
- train / test_new: every new source but two, by normalised concept (one concept in several sets is on one
  side), TEST_NEW_FRACTION of the concepts tested;
- heldout_val: all of VAL_SOURCE, never trained on, used to choose between runs and epochs;
- heldout_test: all of TEST_SOURCE, never trained on and never used to choose: the test of generalization.

Output folder: pixels-<size>.npy (uint8, letterboxed on white), manifest.jsonl (one row per picture, in the
order of the pixels), sources.json (package versions, archive hashes, licences, counts, timings), CREDITS.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import starter_data  # noqa: E402
import starter_sources as sources  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "vecsearch" / "starter-data-v2"
CACHE_SIZE = 72  # the model sees 64 x 64 crops of these; --cache-size builds others (input-size trials)
EXPORT_SIZE = 256  # the held-out test pictures as files, for evaluation through the public API
VAL_SOURCE = "gcompris"
TEST_SOURCE = "flat-color-icons"
TEST_NEW_FRACTION = 0.04
SPLIT_SEED = 0

NPM_PACKAGES = {  # package -> pinned version
    **{
        f"@iconify-json/{name}": version
        for name, version in {
            "game-icons": "1.2.4", "mdi": "1.2.3", "tabler": "1.2.41", "material-symbols": "1.2.98",
            "lucide": "1.2.137", "ph": "1.2.2", "carbon": "1.2.29", "icon-park-outline": "1.2.4",
            "healthicons": "1.2.13", "guidance": "1.2.2", "maki": "1.2.5", "map": "1.2.2",
            "flat-color-icons": "1.2.3", "fa6-solid": "1.2.4", "bi": "1.2.7", "ri": "1.2.10", "mingcute": "1.2.8",
        }.items()
    },
    "@tabler/icons": "3.52.0",
    "lucide-static": "1.62.0",
    "@mdi/svg": "7.4.47",
    "@fortawesome/fontawesome-free": "7.3.1",
}  # fmt: skip
DEBIAN_PACKAGES = {  # package -> version (Debian 12)
    "inkscape-open-symbols": "1.2.1-1",
    "inkscape": "1.2.2-2+deb12u1",
    "josm": "0.0.svn18646+dfsg-1",
    "openstreetmap-carto-common": "5.7.0-1",
    "oxygen-icon-theme": "5:5.103.0-1",
    "papirus-icon-theme": "20230104-2",
    "adwaita-icon-theme": "43-1",
    "tango-icon-theme": "0.8.90-11",
    "faenza-icon-theme": "1.3.1-3",
    "paper-icon-theme": "1.5.0+git20200312.aa3e8af-4",
    "wesnoth-1.16-data": "1:1.16.9-1",
    "gcompris-qt-data": "3.1-2",
}
THEMES = {  # source -> (package, theme folder under usr/share/icons)
    "oxygen": ("oxygen-icon-theme", "oxygen/base"),
    "papirus": ("papirus-icon-theme", "Papirus"),
    "adwaita": ("adwaita-icon-theme", "Adwaita"),
    "tango": ("tango-icon-theme", "Tango"),
    "faenza": ("faenza-icon-theme", "Faenza"),
    "paper": ("paper-icon-theme", "Paper"),
}
SYNONYM_PACKAGES = {
    "tabler": ("@tabler/icons", sources.tabler_synonyms),
    "lucide": ("lucide-static", sources.lucide_synonyms),
    "mdi": ("@mdi/svg", sources.mdi_synonyms),
    "fa6-solid": ("@fortawesome/fontawesome-free", sources.fontawesome_synonyms),
}
# Where a source's pictures come from, for sources.json and the credits.
SOURCE_PACKAGE = {
    **{name: f"@iconify-json/{name}" for name in sources.ICONIFY_SETS},
    "inkscape": "inkscape",
    "inkscape-open-symbols": "inkscape-open-symbols",
    "josm": "josm",
    "osm-carto": "openstreetmap-carto-common",
    **{source: package for source, (package, _) in THEMES.items()},
    "wesnoth": "wesnoth-1.16-data",
    "gcompris": "gcompris-qt-data",
    starter_data.OPENCLIPART: "openclipart-png",
    starter_data.TUXPAINT: "tuxpaint-stamps-default",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--downloads", type=Path, default=None, help="archive folder (default: OUT/downloads)")
    parser.add_argument("--no-install", action="store_true", help="never call apt-get for openclipart/Tux Paint")
    parser.add_argument(
        "--packages", type=Path, default=None, help="use these unpacked packages as they are: fetch nothing"
    )
    parser.add_argument("--openclipart-dir", type=Path, default=starter_data.OPENCLIPART_DIR)
    parser.add_argument("--tuxpaint-dir", type=Path, default=starter_data.TUXPAINT_DIR)
    parser.add_argument("--limit-per-source", type=int, default=0, help="at most this many pictures per source")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache-size", type=int, default=CACHE_SIZE, help="side of the letterboxed pictures")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    log = _logger(args.quiet)
    started = time.perf_counter()
    downloads = args.downloads or args.out / "downloads"
    packages = args.packages or args.out / "packages"
    fetched = {} if args.packages else fetch(downloads, packages, log)
    fetch_seconds = time.perf_counter() - started
    default_dirs = (args.openclipart_dir, args.tuxpaint_dir) == (
        starter_data.OPENCLIPART_DIR,
        starter_data.TUXPAINT_DIR,
    )
    if default_dirs:
        starter_data.ensure_packages(install=not args.no_install)

    t0 = time.perf_counter()
    old = starter_data.collect(args.openclipart_dir, args.tuxpaint_dir)
    old_split = starter_data.assign_splits(old, seed=SPLIT_SEED)
    if default_dirs:
        starter_data.check_test_split(old, old_split)
    new = collect_new(packages, limit_per_source=args.limit_per_source)
    log(f"{len(old)} openclipart/Tux Paint pictures, {len(new)} new ({len({i.concept for i in new})} concepts)")
    rows, pixels = render_all(old, old_split, new, args.workers, log, args.cache_size)
    export_heldout_test(new, rows, args.out / "heldout-test")
    build_seconds = time.perf_counter() - t0
    write(args.out, packages, rows, pixels, fetched, round(fetch_seconds, 1), round(build_seconds, 1))
    counts = Counter(row["split"] for row in rows)
    log(f"wrote {len(rows)} pictures to {args.out} in {build_seconds / 60:.1f} min: {dict(counts)}")
    return 0


def _logger(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------- fetch


def fetch(downloads: Path, packages: Path, log) -> dict[str, dict]:
    """Download every pinned archive that is missing (npm pack, apt-get download) and unpack it. Returns
    package -> {version, archive, sha256}."""
    (downloads / "npm").mkdir(parents=True, exist_ok=True)
    (downloads / "deb").mkdir(parents=True, exist_ok=True)
    fetched = {}
    for package, version in NPM_PACKAGES.items():
        archive = downloads / "npm" / (package.lstrip("@").replace("/", "-") + f"-{version}.tgz")
        if not archive.is_file():
            log(f"npm pack {package}@{version}")
            subprocess.run(
                ["npm", "pack", "--silent", f"{package}@{version}", "--pack-destination", str(archive.parent)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        target = packages / package.lstrip("@").replace("/", "-")
        if not (target / ".unpacked").is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            (target / ".unpacked").touch()
        fetched[package] = {"version": version, "archive": archive.name, "sha256": _sha256(archive)}
    for package, version in DEBIAN_PACKAGES.items():
        archive = next(iter(sorted((downloads / "deb").glob(f"{package}_*.deb"))), None)
        if archive is None:
            log(f"apt-get download {package}={version}")
            subprocess.run(["apt-get", "download", "-qq", f"{package}={version}"], check=True, cwd=downloads / "deb")
            archive = next(iter(sorted((downloads / "deb").glob(f"{package}_*.deb"))))
        target = packages / package
        if not (target / ".unpacked").is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(archive), str(target)], check=True)
            (target / ".unpacked").touch()
        fetched[package] = {"version": version, "archive": archive.name, "sha256": _sha256(archive)}
    return fetched


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- collect


def collect_new(packages: Path, limit_per_source: int = 0) -> list[sources.Item]:
    """Every item of every new source, in a stable order, keys unique."""
    items: list[sources.Item] = []
    synonyms = {
        prefix: read(packages / package.lstrip("@").replace("/", "-") / "package")
        for prefix, (package, read) in SYNONYM_PACKAGES.items()
        if (packages / package.lstrip("@").replace("/", "-") / "package").is_dir()
    }
    share = "usr/share"
    readers = [
        (packages / f"iconify-json-{name}" / "package", functools.partial(sources.collect_iconify, prefix=name,
                                                                           synonyms=synonyms.get(name)))
        for name in sources.ICONIFY_SETS
    ]  # fmt: skip
    readers += [
        (packages / "inkscape" / share / "inkscape/symbols", functools.partial(sources.collect_symbols, source="inkscape")),
        (
            packages / "inkscape-open-symbols" / share / "inkscape/symbols",
            functools.partial(sources.collect_symbols, source="inkscape-open-symbols"),
        ),
        (packages / "josm" / share / "josm/josm.jar", sources.collect_josm),
        (packages / "openstreetmap-carto-common" / share / "openstreetmap-carto-common/symbols", sources.collect_osm_carto),
        *(
            (packages / package / share / "icons" / folder, functools.partial(sources.collect_theme, source=source))
            for source, (package, folder) in THEMES.items()
        ),
        (packages / "wesnoth-1.16-data" / share / "games/wesnoth/1.16/data/core", sources.collect_wesnoth),
        (packages / "gcompris-qt-data" / share / "gcompris-qt/rcc", sources.collect_gcompris),
    ]  # fmt: skip
    for path, read in readers:
        if path.exists():  # fetch() makes sure all are there; a test's small tree holds some
            items += read(path)
    unique: dict[str, sources.Item] = {}
    for item in items:
        unique.setdefault(item.key, item)
    items = sorted(unique.values(), key=lambda i: i.key)
    if limit_per_source:
        kept: Counter[str] = Counter()
        limited = []
        for item in sorted(items, key=lambda i: _hash(i.key)):
            if kept[item.source] < limit_per_source:
                kept[item.source] += 1
                limited.append(item)
        items = sorted(limited, key=lambda i: i.key)
    return items


def _hash(text: str) -> str:
    return hashlib.sha256(f"{SPLIT_SEED}:{text}".encode()).hexdigest()


def new_split(source: str, concept: str) -> str:
    if source == VAL_SOURCE:
        return "heldout_val"
    if source == TEST_SOURCE:
        return "heldout_test"
    bucket = int(_hash(f"concept:{concept}")[:8], 16) / 0xFFFFFFFF
    return "test_new" if bucket < TEST_NEW_FRACTION else "train"


# ---------------------------------------------------------------- render


def render_all(old, old_split, new, workers: int, log, size: int = CACHE_SIZE) -> tuple[list[dict], np.ndarray]:
    """Decode or render every picture into the letterboxed cache; drop failures and exact duplicates (a new
    picture identical to one already kept, old pictures first)."""
    from tqdm import tqdm

    jobs = [("old", r.path, size) for r in old] + [("new", item, size) for item in new]
    pixels = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(jobs), dtype=bool)
    failures: Counter[str] = Counter()
    # Spawned, not forked: a fork of a process with threads can inherit a lock no thread will release.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(_render_job, jobs, chunksize=64)
        for i, array in enumerate(tqdm(results, total=len(jobs), desc="render", disable=not sys.stderr.isatty())):
            if array is None:
                failures[jobs[i][1].source if jobs[i][0] == "new" else "old"] += 1
                continue
            pixels[i] = array
            ok[i] = True
    if failures:
        log(f"could not render: {dict(failures)}")
    rows: list[dict] = []
    keep: list[int] = []
    seen: set[bytes] = set()
    duplicates: Counter[str] = Counter()
    for i, (kind, payload, _) in enumerate(jobs):
        if not ok[i]:
            continue
        digest = hashlib.blake2b(pixels[i].tobytes(), digest_size=16).digest()
        if kind == "old":
            record = old[i]
            seen.add(digest)
            rows.append(
                {
                    "source": record.source,
                    "key": record.path,
                    "caption": record.caption,
                    "synonyms": [],
                    "concept": sources.concept_of(record.caption.split("(")[0]),
                    "category": record.category,
                    "group": record.group,
                    "split": old_split[record.path],
                }
            )
            keep.append(i)
            continue
        if digest in seen:
            duplicates[payload.source] += 1
            continue
        seen.add(digest)
        row = asdict(payload)
        row.pop("ref")
        row.pop("kind")
        row.update(
            synonyms=list(payload.synonyms),
            category="",
            group=payload.concept,
            split=new_split(payload.source, payload.concept),
        )
        rows.append(row)
        keep.append(i)
    if duplicates:
        log(f"exact duplicates dropped: {dict(duplicates)}")
    return rows, pixels[np.asarray(keep, dtype=np.int64)]


def _render_job(job) -> np.ndarray | None:
    kind, payload, size = job
    try:
        if kind == "old":
            return starter_data.letterbox(starter_data.decode_thumbnail(payload, size * 2), size)
        return starter_data.letterbox(sources.render(payload, size * 2), size)
    except Exception:  # noqa: BLE001 (a picture that cannot be drawn is counted and left out, whatever the cause)
        return None


def export_heldout_test(new: list[sources.Item], rows: list[dict], folder: Path) -> int:
    """The held-out test source as files (PNG, longer side EXPORT_SIZE, caption in a .txt sidecar), so that
    eval_starter.py measures it through vecsearch's public API like any user folder."""
    kept = {row["key"] for row in rows if row["split"] == "heldout_test"}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = 0
    for item in new:
        if item.key not in kept:
            continue
        name = re.sub(r"[^a-z0-9]+", "-", item.key.split(":", 1)[1].lower()).strip("-")
        sources.render(item, EXPORT_SIZE).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(item.caption + "\n", encoding="utf-8")
        written += 1
    return written


# ---------------------------------------------------------------- write


def write(
    out: Path, packages: Path, rows: list[dict], pixels: np.ndarray, fetched: dict, fetch_s: float, build_s: float
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    size = pixels.shape[1]
    temporary = out / f"pixels-{size}.tmp.npy"
    np.save(temporary, pixels)
    with open(out / "manifest.tmp.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, out / f"pixels-{size}.npy")
    os.replace(out / "manifest.tmp.jsonl", out / "manifest.jsonl")
    per_source: dict[str, dict] = {}
    for row in rows:
        entry = per_source.setdefault(row["source"], {"pictures": 0, "splits": Counter(), "concepts": set()})
        entry["pictures"] += 1
        entry["splits"][row["split"]] += 1
        entry["concepts"].add(row["concept"])
    summary = {}
    for source, entry in sorted(per_source.items()):
        package = SOURCE_PACKAGE.get(source, source)
        summary[source] = {
            "package": package,
            **fetched.get(package, {}),
            **licence_of(package, packages),
            "pictures": entry["pictures"],
            "concepts": len(entry["concepts"]),
            "splits": dict(entry["splits"]),
        }
    meta = {
        "cache_size": size,
        "val_source": VAL_SOURCE,
        "test_source": TEST_SOURCE,
        "test_new_fraction": TEST_NEW_FRACTION,
        "pictures": len(rows),
        "concepts": len({row["concept"] for row in rows}),
        "fetch_seconds": fetch_s,
        "build_seconds": build_s,
        "sources": summary,
    }
    (out / "sources.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "CREDITS.md").write_text(credits(summary))


LICENCE_PHRASES = (  # for copyright files that are not machine-readable, first match wins
    (r"Public Domain Dedication", "public-domain"),
    (
        r"GNU General Public License,? (?:as published by the Free Software Foundation; either )?version 2\b"
        r"(?: of the License)?,?\s+or",
        "GPL-2+",
    ),
    (
        r"GNU General Public License,? (?:as published by the Free Software Foundation; either )?version 3\b"
        r"(?: of the License)?,?\s+or",
        "GPL-3+",
    ),
    (r"GNU General Public License", "GPL"),
)


def licence_of(package: str, packages: Path) -> dict:
    """The licence as the package states it: iconify's info.json, or the Debian copyright file's License lines."""
    info = packages / package.lstrip("@").replace("/", "-") / "package" / "info.json"
    if info.is_file():
        data = json.loads(info.read_text(encoding="utf-8"))
        return {
            "licence": data["license"].get("spdx") or data["license"]["title"],
            "author": data.get("author", {}).get("name", ""),
            "url": data.get("author", {}).get("url", ""),
        }
    copyright_file = packages / package / "usr/share/doc" / package / "copyright"
    if not copyright_file.is_file():
        copyright_file = Path("/usr/share/doc") / package / "copyright"
    if not copyright_file.is_file():
        return {"licence": "unknown", "author": "", "url": ""}
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    licences = sorted(
        {m.strip() for m in re.findall(r"^License:[ \t]*(\S.*)$", text, flags=re.M) if "Copyright" not in m}
    )
    if not licences:  # an old free-form copyright file: read what it says
        licences = [label for pattern, label in LICENCE_PHRASES if re.search(pattern, text, flags=re.I | re.S)][:1]
    holders = re.findall(r"^Copyright:\s*(.+)$", text, flags=re.M)
    return {
        "licence": " / ".join(licences) or "see copyright file",
        "author": "; ".join(h.strip() for h in holders[:3] if h.strip()),
        "url": f"https://packages.debian.org/bookworm/{package}",
    }


def credits(summary: dict) -> str:
    lines = [
        "# Credits: the pictures the vecsearch starter model was trained on",
        "",
        "The starter model's image tower was trained on the pictures below. Its weights contain no picture, but",
        "the sets under Creative Commons Attribution (CC BY, CC BY-SA) ask for credit, given here; every other",
        "source and its licence is listed too.",
        "",
        "| source | package | licence | author | pictures |",
        "|---|---|---|---|---|",
    ]
    for source, entry in summary.items():
        lines.append(
            f"| {source} | {entry['package']} {entry.get('version', '')} | {entry['licence']} | "
            f"{entry['author'] or '-'} | {entry['pictures']} |"
        )
    attribution = [s for s, e in summary.items() if "CC-BY" in e["licence"].upper().replace(" ", "-")]
    lines += ["", "## Attribution (CC BY)", ""]
    for source in attribution:
        entry = summary[source]
        lines.append(
            f"- {source}: pictures by {entry['author'] or 'the authors named in the package'} "
            f"({entry['url'] or entry['package']}), licensed {entry['licence']}."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
