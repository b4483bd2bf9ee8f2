"""Mutation testing of the modules that keep the index's promises, each with the tests that cover it.

For each target, a copy of the checkout is made under build/mutation/<target>/, mutmut is configured
there (which files to mutate, which tests to run) and run; the scores and every surviving mutant (with
its diff) are written to scripts/results/mutation-<target>.json, and a summary of all targets run to
scripts/results/mutation.json (merged with the targets not run this time).

    .venv/bin/pip install -e ".[mutation]"
    .venv/bin/python scripts/mutation.py                 # every target
    .venv/bin/python scripts/mutation.py query store     # some
    .venv/bin/python scripts/mutation.py --list          # the targets and their tests

A killed mutant is a change to the code that a test noticed; a surviving one is a change no test noticed.
The score is killed / (killed + survived + no tests), timeouts counting as killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
WORK = ROOT / "build" / "mutation"


@dataclass(frozen=True)
class Target:
    files: tuple[str, ...]  # what is mutated
    tests: tuple[str, ...]  # what runs against each mutant (only the tests that reach the mutated function)
    promise: str


TARGETS: dict[str, Target] = {
    "crawl": Target(
        ("vecsearch/crawl.py",),
        ("tests/test_crawl.py", "tests/test_bad_files.py", "tests/test_promises_crawl.py"),
        "walking, hidden files and exclusions, sidecars and captions files, content hashes",
    ),
    "indexer": Target(
        ("vecsearch/indexer.py", "vecsearch/captions.py"),
        ("tests/test_indexing.py", "tests/test_interrupt.py", "tests/test_promises_indexer.py"),
        "incremental rules, renames, duplicates, deletions, captions",
    ),
    "chunks": Target(
        ("vecsearch/chunks.py", "vecsearch/pipeline.py"),
        (
            "tests/test_indexing.py",
            "tests/test_interrupt.py",
            "tests/test_bad_files.py",
            "tests/test_promises_indexer.py",
        ),
        "chunked commits and rollback, hashing and decoding on workers in bounded memory, bad input",
    ),
    "store": Target(
        ("vecsearch/store.py",),
        ("tests/test_indexing.py", "tests/test_check.py", "tests/test_promises_store.py"),
        "the database: files, items, vectors, generations, removals",
    ),
    "query": Target(
        ("vecsearch/query.py",),
        (
            "tests/test_query.py",
            "tests/test_bad_queries.py",
            "tests/test_search.py",
            "tests/test_promises_query.py",
        ),
        "prompt parsing, weights, arithmetic, refinement, hostile terms",
    ),
    "vectors": Target(
        ("vecsearch/vectors.py", "vecsearch/plan.py"),
        ("tests/test_plan.py", "tests/test_hostile.py", "tests/test_promises_vectors.py"),
        "FAISS index choice, tuning against exact search, atomic saves, refused files",
    ),
    "vector_file": Target(
        ("vecsearch/vector_file.py",),
        (
            "tests/test_plan.py",
            "tests/test_check.py",
            "tests/test_indexing.py",
            "tests/test_promises_vector_file.py",
        ),
        "the vector file in step with the database: replay, repair, re-plan, save",
    ),
}


def copy_checkout(target: Path) -> None:
    """The checkout's files (tracked and new, not ignored) copied to `target`, fresh."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if name.startswith("indexes/") or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)


def configure(folder: Path, target: Target) -> None:
    config = (
        "\n[tool.mutmut]\n"
        'source_paths = ["vecsearch"]\n'
        f"only_mutate = {json.dumps(list(target.files))}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(list(target.tests))}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        'also_copy = ["examples", "scripts"]\n'
        # A mutant that makes the tests hang is stopped at 4x the time its tests took unmutated (mutmut's
        # default, 15x, spent over two minutes on each of them here) and counted as killed.
        "timeout_multiplier = 4.0\n"
    )
    with open(folder / "pyproject.toml", "a", encoding="utf-8") as handle:
        handle.write(config)


def mutmut(folder: Path, *args: str, check: bool = True) -> str:
    # mutmut forks each mutant's worker from a process that has run the tests once; with thread pools
    # running in it (OpenMP under torch and FAISS), a forked worker can hang. One thread each: none.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [str(Path(sys.executable).with_name("mutmut")), *args]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed in {folder}:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return result.stdout


def run_target(name: str, target: Target, workers: int, folder: Path, only: list[str] | None = None) -> dict[str, Any]:
    copy_checkout(folder)
    configure(folder, target)
    started = time.monotonic()
    mutmut(folder, "run", "--max-children", str(workers), *(only or []), check=False)
    seconds = time.monotonic() - started
    mutmut(folder, "export-cicd-stats")
    stats = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())
    survivors = []
    for line in mutmut(folder, "results").splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if mutant:
            survivors.append({"mutant": mutant, "status": status, "diff": mutmut(folder, "show", mutant).strip()})
    counted = stats["killed"] + stats["timeout"] + stats["survived"] + stats["no_tests"]
    return {
        "target": name,
        "files": list(target.files),
        "tests": list(target.tests),
        "promise": target.promise,
        "stats": stats,
        "score": round((stats["killed"] + stats["timeout"]) / counted, 4) if counted else None,
        "seconds": round(seconds, 1),
        "workers": workers,
        "survivors": survivors,
    }


def _combined(recorded: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """A survivors-only rerun's result as a whole run's: the mutants killed before, plus those killed now."""
    before, now = recorded["stats"], rerun["stats"]
    left = [s for s in rerun["survivors"] if s["status"] == "survived"]
    killed_now = before["survived"] - len(left)
    stats = dict(before, killed=before["killed"] + killed_now, survived=len(left))
    counted = stats["killed"] + stats["timeout"] + stats["survived"] + stats["no_tests"]
    if now["total"] != before["total"]:
        raise SystemExit(
            f"{rerun['target']}: the code changed since the recorded run ({before['total']} mutants, now {now['total']})"
        )
    return dict(
        rerun,
        stats=stats,
        score=round((stats["killed"] + stats["timeout"]) / counted, 4),
        survivors=left,
        rerun_of=recorded.get("label") or "recorded run",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--label", default="", help="a name for this run in the summary (e.g. before, after)")
    parser.add_argument("--list", action="store_true", help="print the targets and their tests, and stop")
    parser.add_argument("--extra-tests", nargs="+", default=[], help="more test files to run against the mutants")
    parser.add_argument(
        "--tests",
        nargs="+",
        default=[],
        help="run these test files instead of the target's (e.g. a run before new tests)",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="work in build/mutation/scratch/<target> and write the results to result.json there, not to "
        "scripts/results/ (for trying new tests while other runs go on)",
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="test only the mutants that survived the run recorded in scripts/results/mutation-<target>.json "
        "(the code must be unchanged since; the others were killed then and stay killed as tests are added)",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name}: {', '.join(target.files)}\n    tests: {', '.join(target.tests)}\n    {target.promise}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        parser.error('mutmut is not installed in this environment: pip install -e ".[mutation]"')
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary_path = RESULTS / "mutation.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name in args.targets or list(TARGETS):
        target = TARGETS[name]
        if args.tests:
            target = Target(target.files, tuple(args.tests), target.promise)
        if args.extra_tests:
            target = Target(target.files, target.tests + tuple(args.extra_tests), target.promise)
        folder = WORK / ("scratch" if args.scratch else "") / name
        only = None
        if args.survivors:
            recorded = json.loads((RESULTS / f"mutation-{name}.json").read_text())
            only = [s["mutant"] for s in recorded["survivors"] if s["status"] == "survived"]
        result = run_target(name, target, args.workers, folder, only)
        if args.survivors:
            result = _combined(recorded, result)
        result["label"] = args.label
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        if args.scratch:
            (folder / "result.json").write_text(text)
        else:
            (RESULTS / f"mutation-{name}.json").write_text(text)
        stats = result["stats"]
        print(
            f"{name:12s} score {result['score']:.3f}: {stats['killed']} killed, {stats['timeout']} timed out, "
            f"{stats['survived']} survived, {stats['no_tests']} with no test, of {stats['total']} "
            f"({result['seconds']:.0f} s, {args.workers} workers)",
            flush=True,
        )
        if args.scratch:
            continue
        entry = {k: v for k, v in result.items() if k != "survivors"}
        entry["survived"] = [s["mutant"] for s in result["survivors"] if s["status"] == "survived"]
        summary.setdefault(name, {})[args.label or "latest"] = entry
        summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
