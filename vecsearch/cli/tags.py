"""`vecsearch tag` and `tags`: zero-shot tags for every picture of an index, and what they add up to."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from .. import Index
from ..classify import DEFAULT_TEMPLATES, check_templates, parse_labels
from .app import Settings, call, dump, main, quiet_option
from .output import table


@main.command("tag")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.option("--labels", "-l", help="Comma-separated labels: 'cat,dog,car'.")
@click.option("--labels-file", type=click.Path(dir_okay=False, path_type=Path), help="One label per line.")
@click.option(
    "--template",
    "-t",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label; repeatable (default: a set of photo/drawing prompts).",
)
@click.option("--top", type=click.IntRange(1, 1000), help="Labels kept per picture, most likely first (default: 1).")
@click.option("--clear", is_flag=True, help="Forget the index's tags; later crawls tag nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def tag_command(
    settings: Settings,
    index_ref: str,
    labels: str | None,
    labels_file: Path | None,
    templates: tuple[str, ...],
    top: int | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Tag every picture in INDEX with its most likely labels (zero-shot, scored as `classify` scores
    them) from the vectors already in the index. Crawls then tag the pictures they add; a new label
    list, other templates or another --top tag every picture again. Without --labels, the index's
    own labels are used (to catch up, or with new --template or --top)."""
    if clear and (labels or labels_file or templates or top):
        raise click.UsageError("--clear takes no labels, templates or --top")

    def run() -> Any:
        given = parse_labels(labels, labels_file) if (labels or labels_file) else None
        chosen = check_templates(templates) if templates else None
        with Index.open(index_ref, home=settings.home) as index:
            if clear:
                return index.name, index.untag()
            current = index.tag_set()
            if given is None and current is None:
                raise click.UsageError(f"index {index.name} has no tags yet: give --labels or --labels-file")
            if given is None:
                assert current is not None
                given, chosen, top_now = list(current.labels), chosen or list(current.templates), top or current.top
            else:
                top_now = top or 1
            report = index.tag(
                given, chosen or list(DEFAULT_TEMPLATES), top_now, progress=not settings.quiet and not as_json
            )
            return index.name, report

    name, report = call(run)
    if clear:
        if as_json:
            dump({"index": name, "cleared": report})
        elif not settings.quiet:
            click.echo(f"{name}: tags cleared" if report else f"{name}: had no tags")
        return
    if as_json:
        dump({"index": name, **report.to_dict()})
        return
    if settings.quiet:
        return
    why = f" ({report.reason}: every picture tagged again)" if report.reason not in (None, "new tag set") else ""
    click.echo(
        f"{name}: {report.tagged:,} pictures tagged with {report.labels:,} labels (top {report.top}) in "
        f"{report.seconds:.1f} s{why}; {report.pictures:,} pictures in the index"
    )
    click.echo(f"`vecsearch tags {name}` counts them; `vecsearch search {name} ... --tag LABEL` filters by one")


@main.command("tags")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.option("--json", "as_json", is_flag=True, help="Print the tag set and the counts per label as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Export one row per picture and tag: path,label,rank,...")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the --csv or --json export to this file instead of the screen.",
)
@click.pass_obj
def tags_command(settings: Settings, index_ref: str, as_json: bool, as_csv: bool, output: Path | None) -> None:
    """The tags of INDEX: pictures per label (a table, or --json), or every picture's tags (--csv)."""
    if as_json and as_csv:
        raise click.UsageError("choose --json or --csv, not both")
    if output is not None and not (as_json or as_csv):
        raise click.UsageError("--output writes the --csv or --json export: give one of them")

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            if as_csv:
                with _destination(output) as out:
                    written = _write_csv(index, out)
                return index.name, written
            tag_set = index.tag_set()
            counts = index.tag_counts()
            summary = {
                "index": index.name,
                "labels": list(tag_set.labels) if tag_set else [],
                "templates": list(tag_set.templates) if tag_set else [],
                "top": tag_set.top if tag_set else None,
                "pictures": index.counts()["images"],
                "tagged": index.tagged_count(),
                "counts": counts,
            }
            if as_json and output is not None:
                with _destination(output) as out:
                    out.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
            return index.name, summary

    name, result = call(run)
    if as_csv or output is not None:
        if output is not None and not settings.quiet:
            what = f"{result:,} tags" if as_csv else "the tag counts"
            click.echo(f"{name}: {what} written to {output}", err=True)
        return
    if as_json:
        dump(result)
        return
    if not result["labels"]:
        if not settings.quiet:
            click.echo(f"index {name} has no tags: `vecsearch tag {name} --labels a,b,c` tags its pictures", err=True)
        return
    pictures, tagged = result["pictures"], result["tagged"]
    ordered = sorted(result["counts"].items(), key=lambda row: -row[1])
    rows = [(label, f"{count:,}", f"{100 * count / max(tagged, 1):.1f}%") for label, count in ordered]
    table(("label", "pictures", "share"), rows, right=(1, 2))
    if not settings.quiet:
        click.echo(
            f"{tagged:,} of {pictures:,} pictures tagged with {len(result['labels']):,} labels, "
            f"the {result['top']} most likely kept per picture",
            err=True,
        )


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[IO[str]]:
    """The export's file (written whole under a temporary name, then renamed), or stdout."""
    if output is None:
        yield sys.stdout
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def _write_csv(index: Index, out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("path", "label", "rank", "probability", "score"))
    written = 0
    for row in index.tag_rows():
        writer.writerow((row.path, row.label, row.rank, f"{row.probability:.6f}", f"{row.score:.6f}"))
        written += 1
    return written
