"""`vecsearch duplicates`: groups of near-duplicate pictures in an index, and which one of each to keep.
It only reports: vecsearch never deletes or moves a file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .. import DuplicateGroup, DuplicateReport, Index
from ..sizes import human_bytes
from .app import Settings, call, dump, main, quiet_option

KEEP_RULES = ("largest", "newest", "oldest")


@main.command("duplicates")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.option(
    "--threshold",
    type=float,
    help="Cosine floor: two pictures at or above it are near-duplicates when each is the other's nearest "
    "picture (or at cosine 0.98 and up); above 0 and at most 1 (default: the model's, e.g. 0.9; higher finds fewer).",
)
@click.option("--under", type=click.Path(path_type=Path), help="Only pictures inside this folder.")
@click.option("--path", "path_glob", help="Only pictures whose path matches this glob ('2024/*', '*.jpg').")
@click.option(
    "--keep",
    type=click.Choice(KEEP_RULES),
    default="largest",
    show_default=True,
    help="Which picture of a group to keep (shown first).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "exact", "ann"]),
    default="auto",
    show_default=True,
    help="exact: FAISS range search; ann: nearest neighbours from the index's own FAISS index (approximate); "
    "auto: exact up to 100,000 pictures or where that index is exact.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@click.option("--paths", "paths_only", is_flag=True, help="One group per line: tab-separated paths, kept one first.")
@click.pass_obj
def duplicates_command(
    settings: Settings,
    index_ref: str,
    threshold: float | None,
    under: Path | None,
    path_glob: str | None,
    keep: str,
    method: str,
    as_json: bool,
    paths_only: bool,
) -> None:
    """Groups of near-duplicate pictures in INDEX (resized, re-compressed, a little cropped or recoloured,
    burst shots) and exact copies, found from the vectors already in the index; the picture to keep
    comes first. Nothing is deleted or moved: feed `--paths` to your own tools for that."""
    if as_json and paths_only:
        raise click.UsageError("choose --json or --paths, not both")

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            progress = not settings.quiet and not as_json and not paths_only
            report = index.duplicates(
                threshold, under=under, path=path_glob, keep=keep, method=method, progress=progress
            )
            return index.name, report

    name, report = call(run)
    if as_json:
        dump({"index": name, **report.to_dict()})
    elif paths_only:
        for group in report.groups:
            click.echo("\t".join(p.path for p in group.members))
    else:
        print_groups(name, report, settings.quiet)


def print_groups(name: str, report: DuplicateReport, quiet: bool) -> None:
    for number, group in enumerate(report.groups, 1):
        print_group(number, group)
    if quiet:
        return
    how = f"cosine ≥ {report.threshold:g}, {report.method}, {report.seconds:.1f} s"
    approximate = (
        "approximate: each picture was compared with its nearest neighbours only, so a pair may be missed; "
        "--method exact compares every pair (slower)"
    )
    if not report.groups:
        click.echo(f"no duplicates among {report.pictures:,} pictures ({how})", err=True)
        if report.approximate:
            click.echo(approximate, err=True)
        return
    click.echo(
        f"{name}: {_count(len(report.groups), 'group')}, {report.in_groups:,} of {report.pictures:,} pictures in "
        f"them; {human_bytes(report.reclaimable_bytes)} in the pictures not kept (keep: {report.keep})"
    )
    click.echo(f"{how}; nothing was deleted or moved")
    if report.approximate:
        click.echo(approximate)


def print_group(number: int, group: DuplicateGroup) -> None:
    total = sum(p.size for p in group.members)
    click.echo(
        f"group {number}: {len(group.members)} pictures, {human_bytes(total)} "
        f"({human_bytes(group.reclaimable_bytes)} in the ones not kept)"
    )
    for place, (picture, similarity, exact) in enumerate(
        zip(group.members, group.similarity, group.exact, strict=True)
    ):
        role = "keep" if place == 0 else ("copy" if exact else f"{similarity:.4f}")
        try:
            modified = time.strftime("%Y-%m-%d %H:%M", time.localtime(picture.mtime_ns / 1e9))
        except (OverflowError, OSError, ValueError):  # a time no calendar here can show
            modified = "?".ljust(16)
        click.echo(f"  {role:>6}  {human_bytes(picture.size):>10}  {modified}  {picture.path}")
    click.echo("")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"
