"""scripts/bench_crawl_memory.py still runs: its quick mode crawls a 50-file tree with the real command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_crawl_memory as bench  # noqa: E402 - from the scripts folder, put on the path just above


def test_quick_mode_measures_a_crawl_and_a_recrawl(tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = bench.main(["--quick", "--work", str(tmp_path / "work"), "--results-dir", str(results)])

    (row,) = result["rows"]
    tree = row["tree"]
    assert row["files"] == tree["images"] == 50
    assert tree["broken"] == 3 and tree["sidecars"] >= 1 and tree["others"] >= 1
    first, again = row["first"], row["recrawl"]
    assert first["report"]["added"] == 50 - tree["broken"]
    assert first["report"]["skipped"] == tree["broken"]
    assert first["report"]["captions_added"] == tree["captions"]
    assert again["report"]["unchanged"] == 50 - tree["broken"] and again["report"]["added"] == 0
    for run in (first, again):
        assert 10 * 2**20 < run["peak_rss_bytes"] < 8 * 2**30
        assert run["wall_seconds"] > 0
    assert result["dim"] > 0

    saved = json.loads((results / "bench_crawl_memory.json").read_text())
    assert saved["rows"][0]["first"]["peak_rss_bytes"] == first["peak_rss_bytes"]
    assert saved["machine"]["cores"] and saved["machine"]["python"]
    text = (results / "bench_crawl_memory.txt").read_text()
    assert "first crawl" in text and "re-crawl" in text

    # A kept tree is reused, not rebuilt.
    marker = tmp_path / "work" / "trees" / "files-50" / ".bench-tree.json"
    stamp = marker.stat().st_mtime_ns
    assert bench.build_tree(marker.parent, 50).images == 50
    assert marker.stat().st_mtime_ns == stamp
