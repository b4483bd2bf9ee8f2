"""How results, reports and settings are printed for people (`--json` prints the library's own dicts)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from ..sizes import human_bytes
from .app import dump


def print_report(report: Any, counts: dict[str, int] | None, folder: Path, quiet: bool, as_json: bool) -> None:
    if as_json:
        data = report.to_dict()
        data["index"] = str(folder)
        if counts is not None:
            data["counts"] = counts
        dump(data)
        return
    if quiet:
        return
    for skip in report.skipped:
        click.echo(f"skipped {skip.path}: {skip.reason}", err=True)
    click.echo(
        f"{folder}: {report.added} added, {report.updated} updated, {report.renamed} renamed, "
        f"{report.reused} duplicates reused, {report.removed} removed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped"
    )
    click.echo(f"captions: {report.captions_added} added, {report.captions_removed} removed")
    if report.distributed and "shards_written" in report.distributed:
        d = report.distributed
        click.echo(
            f"ray: {d['inputs']} inputs in {d['shards_written']} new shards ({d['shards_reused']} finished shards "
            f"reused), {d['embedded_by_cluster']} pictures embedded on the cluster; start-up {d['startup_seconds']:.1f} s"
        )
    if report.vector_index:
        click.echo(report.vector_index)
    if report.inference:
        click.echo(inference_line(report.inference))
    if report.text_export:
        click.echo(report.text_export)
    if report.tagged:
        click.echo(f"tags: {report.tagged} new pictures tagged")
    if counts is not None:
        click.echo(
            f"index holds {counts['images']} images and {counts['captions']} captions "
            f"({counts['files']} files) - {report.seconds:.1f} s"
        )


def print_hits(
    hits: Sequence[Any],
    as_json: bool,
    paths_only: bool,
    quiet: bool,
    preview: Callable[[Any], bytes | None] | None = None,
) -> None:
    """The hits as a table; with `preview`, each row is followed by what it returns for that hit (a
    thumbnail's escape sequence), drawn as the rows are printed."""
    if as_json:
        dump([h.to_dict() for h in hits])
        return
    if paths_only:
        seen: set[str] = set()
        for hit in hits:
            if hit.path not in seen:
                seen.add(hit.path)
                click.echo(hit.path)
        return
    if not hits:
        if not quiet:
            click.echo("no results", err=True)
        return
    rows: list[tuple[str, ...]] = [
        (str(h.rank), f"{h.score:.4f}", h.kind, str(h.id), h.path, clip_text(h.caption or "", 60)) for h in hits
    ]
    after = (lambda number: preview(hits[number])) if preview is not None else None
    header: tuple[str, ...] = ("#", "score", "kind", "id", "path", "caption")
    if any(h.tags for h in hits):  # a tagged index: each picture's tags too
        rows = [(*row, ", ".join(t.label for t in h.tags)) for row, h in zip(rows, hits, strict=True)]
        header = (*header, "tags")
    table(header, rows, after)


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    after: Callable[[int], bytes | None] | None = None,
    right: Collection[int] = (0, 1, 3),
) -> None:
    """Aligned columns, numbers (the columns in `right`) to the right; `after(n)` may give bytes to write below
    row n (0 is the first row under the header)."""
    rows = [tuple(header), *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        click.echo("  ".join(cells).rstrip())
        extra = after(number - 1) if after is not None and number else None
        if extra:
            click.echo(extra)


def clip_text(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def inference_line(inference: dict[str, Any]) -> str:
    checks = inference.get("checks") or []
    fp32 = next((c for c in checks if c["mode"] == "fp32"), None)
    tried = [
        f"{c['mode']} cosine {c['min_cosine']:.4f}"
        + (f", {fp32['seconds'] / c['seconds']:.1f}x fp32's speed" if fp32 and c["seconds"] else "")
        for c in checks
        if c["mode"] != "fp32"
    ]
    detail = f" (checked on {checks[0]['images']} pictures: {'; '.join(tried)})" if tried and checks else ""
    if inference.get("remembered"):
        detail = " (as checked by an earlier crawl on this machine)"
    engine = ", exported, without torch" if inference.get("engine") == "onnxruntime" else ""
    return f"image model ran in {inference.get('mode')}{engine}{detail}"


def search_settings(faiss_info: dict[str, Any]) -> str:
    budget = faiss_info.get("max_memory")
    text = f"{faiss_info.get('requested') or 'auto'} index type, memory budget "
    text += human_bytes(budget) if budget else "half of this machine's memory"
    if faiss_info.get("nprobe"):
        text += f"; nprobe {faiss_info['nprobe']}"
        if int(faiss_info.get("rerank") or 1) > 1:
            text += f", re-rank depth {faiss_info['rerank']}"
        text += f", recall@10 {faiss_info.get('recall@10')} against exact search"
    return text


def measured_lines(faiss_info: dict[str, Any]) -> list[tuple[str, str]]:
    """What tuning measured, per kind of query: recall@10 against exact search and one query's latency."""
    tuning = faiss_info.get("tuning")
    if not tuning:
        return []
    lines = []
    for kind, label in (("text", "text-like"), ("image", "image-like")):
        m = tuning[kind]
        source = f" ({m['queries']})" if m.get("queries") else ""
        lines.append(
            (
                f"{label} queries",
                f"recall@10 {m['recall@10']:.3f}, p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms{source}",
            )
        )
    goal = f"recall@10 ≥ {tuning['min_recall']:g} within {tuning['max_latency_ms']:g} ms"
    lines.append(("budgets", f"{goal}: {'met' if tuning['met'] else 'not met: ' + tuning['note']}"))
    return lines
