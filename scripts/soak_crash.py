"""Soak test of crash safety: crawl a changing tree again and again, killing `vecsearch index` at random
moments, and check after every kill that the index keeps its promises.

    .venv/bin/python scripts/soak_crash.py [--files 1500] [--rounds 30] [--seed 0]

Each round changes the tree (60 to 200 new pictures, an edit, a rename, a deletion, a caption), starts a
real `vecsearch index` process with the bundled starter model and stops it with SIGKILL (no cleanup runs)
or, one round in four, SIGINT (Ctrl-C): in three rounds out of ten after a random delay (start-up and
walking included), in the others a random fraction of a second after a random commit, so that the stop
lands mid-batch, mid-commit or mid-save. A round whose crawl ends before its stop counts as finished.
After each stop:
- `vecsearch check --json` must say the index is sound;
- the database must hold exactly what the process logged as its last commit (`-v` prints it), or the one
  commit after it when the stop fell between a commit and its log line;
- a search must return what an exact scan of the stored vectors returns.
At the end a last run finishes the job, and the index is compared, item by item and vector by vector, with
a fresh index of the final tree. The tests (tests/test_faults.py) do the same at fixed points in seconds;
this is the long, random version. It prints what it saw and writes scripts/results/soak_crash.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import make_jpegs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COMMITTED = re.compile(r"committed generation (\d+): (\d+) items")


def vecsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "vecsearch", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("VECSEARCH_FAULT", None)
    return env


def change_tree(tree: Path, rng: random.Random, round_no: int) -> str:
    """A day of changes: a few new pictures, an edit, a rename, a deletion, caption edits."""
    pictures = sorted(tree.rglob("*.jpg"))
    added = make_jpegs(tree / f"new{round_no:03d}", rng.randint(60, 200), size=(256, 192), seed=round_no)
    for path in added[::5]:
        path.with_suffix(".txt").write_text(f"picture {path.stem} of round {round_no}\n")
    done = [f"+{len(added)}"]
    if len(pictures) > 10:
        victim = rng.choice(pictures)
        victim.unlink()
        victim.with_suffix(".txt").unlink(missing_ok=True)
        pictures.remove(victim)
        moved = rng.choice(pictures)
        moved.rename(moved.with_name(f"moved{round_no:03d}-{moved.name}"))
        pictures.remove(moved)
        edited = rng.choice(pictures)
        make_jpegs(tree / ".scratch", 1, size=(256, 192), seed=10_000 + round_no)[0].replace(edited)
        later = time.time() + round_no
        os.utime(edited, (later, later))
        captioned = rng.choice(pictures)
        captioned.with_suffix(".txt").write_text(f"a caption written in round {round_no}\n")
        os.utime(captioned.with_suffix(".txt"), (later, later))
        done += ["-1", "~1 renamed", "~1 edited", "~1 caption"]
    return " ".join(done)


def default_ctrl_c() -> None:
    """Run in the child before it starts: a background job inherits SIGINT ignored, and Python then
    never turns SIGINT into KeyboardInterrupt; the stops must behave as Ctrl-C in a terminal does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_after(
    command: list[str], sig: int, *, delay: float | None = None, commits: int = 0, extra: float = 0.0
) -> tuple[int, str, float]:
    """Run, and send `sig` either `delay` seconds after the start or `extra` seconds after the process
    logged its `commits`-th commit (mid-crawl, mid-batch or while saving: wherever it then is).
    Returns (exit status, stderr, seconds it ran)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment(),
        text=True,
        preexec_fn=default_ctrl_c,
    )
    assert process.stderr is not None
    lines: list[str] = []
    timer = None
    if delay is not None:
        timer = threading.Timer(delay, lambda: process.poll() is None and process.send_signal(sig))
        timer.start()
    seen = 0
    for line in process.stderr:
        lines.append(line)
        if delay is None and COMMITTED.search(line):
            seen += 1
            if seen == commits:
                time.sleep(extra)
                if process.poll() is None:
                    process.send_signal(sig)
    process.wait(timeout=120)
    if timer is not None:
        timer.cancel()
    return process.returncode, "".join(lines), time.monotonic() - started


def index_state(index_dir: Path) -> tuple[int, int]:
    from vecsearch import Index

    with Index.open(index_dir) as index:
        return index.store.generation, index.counts()["items"]


def answers_like_exact_scan(index_dir: Path, prompt: str = "a picture") -> bool:
    """Does a search return what an exact scan of the stored vectors returns? (Scores are compared, so
    that equal pictures, whose order among themselves is arbitrary, cannot make a false alarm.)"""
    from vecsearch import Index, Query

    with Index.open(index_dir) as index:
        if index.counts()["items"] == 0:
            return True
        ids, vectors = index.store.vectors_of(index.store.vector_ids())
        query = index.query_vector(Query.parse(prompt))
        exact = np.sort(vectors @ query)[::-1][:10]
        found = np.array([h.score for h in index.search(prompt, k=10, kind="any")])
        return found.shape == exact.shape and bool(np.allclose(found, exact, atol=1e-5))


def contents(index_dir: Path) -> dict[tuple[str, str, str], np.ndarray]:
    from vecsearch import Index

    with Index.open(index_dir) as index:
        ids = index.store.item_ids()
        rows = index.store.items(ids)
        return {(rows[i].relpath, rows[i].kind, rows[i].text or ""): index.store.vector(i) for i in ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1500, help="pictures in the first tree")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=12.0, help="longest a process runs before its stop")
    parser.add_argument("--work", type=Path, help="folder for the tree and indexes (default: a temporary one)")
    parser.add_argument("--no-save", action="store_true", help="do not write scripts/results/")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        tree, index_dir = work / "tree", work / "index"
        make_jpegs(tree / "first", args.files, size=(256, 192))
        lines: list[str] = []

        def say(text: str) -> None:
            print(text, flush=True)
            lines.append(text)

        say(
            f"soak_crash: {args.files} pictures, {args.rounds} rounds, seed {args.seed}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{time.strftime('%Y-%m-%d')}"
        )
        say(
            f"{'round':>5}  {'signal':7} {'after s':>7}  {'exit':>4}  {'commits':>7}  {'items':>6}  "
            f"{'check':5}  {'exact':5}  changes"
        )
        rounds = []
        # fp32: every process embeds exactly alike, so the end result can be compared vector by vector
        command = vecsearch(
            "-v",
            "index",
            str(tree),
            "--index",
            str(index_dir),
            "--model",
            "starter",
            "--batch-size",
            "16",
            "--inference",
            "fp32",
        )
        for round_no in range(1, args.rounds + 1):
            changes = change_tree(tree, rng, round_no) if round_no > 1 else "first crawl"
            before = index_state(index_dir) if (index_dir / "manifest.json").exists() else (0, 0)
            sig = signal.SIGINT if rng.random() < 0.25 else signal.SIGKILL
            if rng.random() < 0.3:  # any moment, start-up and walking included
                status, stderr, ran = stop_after(command, sig, delay=rng.uniform(0.5, args.max_delay))
            else:  # in the thick of it: after some commits, at a random point of the next batch or save
                status, stderr, ran = stop_after(command, sig, commits=rng.randint(1, 12), extra=rng.uniform(0.0, 0.4))
            commits = [(int(g), int(n)) for g, n in COMMITTED.findall(stderr)]
            if not (index_dir / "manifest.json").exists():
                say(f"{round_no:>5}  {sig.name:7} {ran:7.1f}  {status:>4}  (stopped before the index existed)")
                rounds.append({"round": round_no, "signal": sig.name, "seconds": ran, "exit": status, "created": False})
                continue
            checked = subprocess.run(
                vecsearch("check", str(index_dir), "--json"), capture_output=True, text=True, env=environment()
            )
            report = json.loads(checked.stdout) if checked.stdout.strip() else {"ok": False}
            state = index_state(index_dir)
            # The log line follows the commit, so a stop between the two leaves the database one
            # generation ahead of the log: that commit is kept too, as it must be.
            logged = commits[-1] if commits else before
            matches_log = state == logged or state[0] == logged[0] + 1
            exact = answers_like_exact_scan(index_dir)
            ok = report.get("ok") and checked.returncode == 0 and matches_log and exact
            say(
                f"{round_no:>5}  {sig.name:7} {ran:7.1f}  {status:>4}  {len(commits):>7}  {state[1]:>6}  "
                f"{'ok' if report.get('ok') else 'BAD':5}  {'ok' if exact else 'BAD':5}  {changes}"
                + ("" if matches_log else f"  DATABASE {state} != LAST COMMIT {logged}")
            )
            rounds.append(
                {
                    "round": round_no,
                    "signal": sig.name,
                    "seconds": round(ran, 2),
                    "exit": status,
                    "commits": len(commits),
                    "items": state[1],
                    "check_ok": bool(report.get("ok")),
                    "matches_last_commit": matches_log,
                    "exact": exact,
                    "ok": bool(ok),
                }
            )

        finished = subprocess.run(command, capture_output=True, text=True, env=environment())
        fresh_dir = work / "fresh"
        fresh = subprocess.run(
            vecsearch(
                "index",
                str(tree),
                "--index",
                str(fresh_dir),
                "--model",
                "starter",
                "--batch-size",
                "16",
                "--inference",
                "fp32",
                "-q",
            ),
            capture_output=True,
            text=True,
            env=environment(),
        )
        got, want = contents(index_dir), contents(fresh_dir)
        same_items = got.keys() == want.keys()
        same_vectors = same_items and all(np.allclose(got[k], want[k], atol=1e-5) for k in want)
        bad = [r for r in rounds if r.get("created", True) and not r.get("ok")]
        say(
            f"final run exit {finished.returncode}; fresh index exit {fresh.returncode}; "
            f"{len(got)} items against {len(want)} in a fresh index of the same tree: "
            f"items {'equal' if same_items else 'DIFFER'}, vectors {'equal' if same_vectors else 'DIFFER'}"
        )
        say(
            f"{len(rounds)} stops ({sum(r['signal'] == 'SIGKILL' for r in rounds)} SIGKILL, "
            f"{sum(r['signal'] == 'SIGINT' for r in rounds)} SIGINT), {len(bad)} broke a promise"
        )
        if not args.no_save:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "soak_crash.txt").write_text("\n".join(lines) + "\n")
            (RESULTS / "soak_crash.json").write_text(
                json.dumps(
                    {
                        "date": time.strftime("%Y-%m-%d"),
                        "machine": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(),
                        "files": args.files,
                        "seed": args.seed,
                        "rounds": rounds,
                        "final_items": len(got),
                        "fresh_items": len(want),
                        "items_equal": same_items,
                        "vectors_equal": same_vectors,
                        "broken": len(bad),
                    },
                    indent=2,
                )
                + "\n"
            )
        sys.exit(0 if not bad and same_vectors else 1)


if __name__ == "__main__":
    main()
