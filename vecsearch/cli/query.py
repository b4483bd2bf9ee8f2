"""`vecsearch search`, `describe` and `classify`: searching ⇒ prompting."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from .. import Index, Query, QueryError, VecsearchError
from ..classify import DEFAULT_TEMPLATES, check_templates, classify_image, parse_labels
from ..encoders import load_query_encoder
from ..images import is_image_path
from ..terminal_preview import CHOICES as PREVIEW_CHOICES
from ..terminal_preview import Previewer, open_previewer
from .app import (
    Settings,
    call,
    dump,
    filter_options,
    main,
    model_options,
    output_options,
    quiet_option,
    with_options,
)
from .output import print_hits, table
from .terms import TermsCommand


@main.command("search", cls=TermsCommand)
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.argument("terms", nargs=-1, metavar="QUERY...")
@click.option("--add", "-a", multiple=True, help="A term to add (text or image path); repeatable.")
@click.option("--subtract", "-s", multiple=True, help="A term to subtract; repeatable.")
@click.option("--like", multiple=True, help="Move toward this item id from an earlier search (relevance feedback).")
@click.option("--unlike", multiple=True, help="Move away from this item id.")
@click.option("--tag", help="Only pictures carrying this tag (see `vecsearch tag`).")
@with_options(filter_options)
@with_options(output_options)
@click.option(
    "--preview",
    type=click.Choice(PREVIEW_CHOICES),
    is_flag=False,
    flag_value="auto",
    default=None,
    help="Show each hit's thumbnail in the terminal; alone it means auto (kitty, iTerm2 or sixel, as the "
    "terminal can). Never into a pipe or a file.",
)
@with_options(model_options)
@click.pass_obj
def search_command(
    settings: Settings,
    index_ref: str,
    terms: tuple[str, ...],
    add: tuple[str, ...],
    subtract: tuple[str, ...],
    like: tuple[str, ...],
    unlike: tuple[str, ...],
    tag: str | None,
    k: int,
    kind: str | None,
    path_glob: str | None,
    under: Path | None,
    min_score: float | None,
    within: float | None,
    as_json: bool,
    paths_only: bool,
    preview: str | None,
    model: str | None,
    pretrained: str | None,
    device: str | None,
    batch_size: int,
) -> None:
    """Search an index. Each QUERY term is text or an image path (or URL), optionally signed and
    weighted: "a red apple", ./cat.jpg, +hat, -dog, 2:sunset, -0.5:./dog.jpg, id:42, text:notes.png.

    The terms are embedded and summed into one query vector.
    """
    if as_json and paths_only:
        raise click.UsageError("choose --json or --paths, not both")
    previewer = None
    if preview and not as_json and not paths_only:  # machine-readable output never carries pictures
        previewer, note = open_previewer(preview)
        if note and not settings.quiet:
            click.echo(f"note: {note}", err=True)
    pictures: dict[int, bytes] = {}

    def run() -> Any:
        query = Query.parse(list(terms), add=add, subtract=subtract, like=like, unlike=unlike)
        with Index.open(
            index_ref, home=settings.home, model=model, pretrained=pretrained, device=device, batch_size=batch_size
        ) as index:
            found = index.search(
                query, k, kind=kind, path=path_glob, under=under, min_score=min_score, within=within, tag=tag
            )
            if previewer is not None:
                pictures.update(remote_pictures(index, found))
            return found

    hits = call(run)
    show = None if previewer is None else functools.partial(draw_hit, previewer, pictures)
    print_hits(hits, as_json, paths_only, settings.quiet, show)


def draw_hit(previewer: Previewer, pictures: dict[int, bytes], hit: Any) -> bytes | None:
    """A hit's thumbnail as escape sequences: from its file, or from its source's bytes read earlier."""
    return previewer.render(pictures.get(hit.id, hit.path), name=Path(hit.path).name)


def remote_pictures(index: Index, hits: list[Any]) -> dict[int, bytes]:
    """The pictures of hits that are not files on this disk (tar members, URIs), by hit id, read while
    the index is open; one that cannot be read is left out and its hit stays a text line."""
    found = {}
    for hit in hits:
        if not is_image_path(hit.path) or Path(hit.path).is_file():
            continue
        try:
            data = index.picture_data(hit.image if hit.image is not None else hit.id)
        except (VecsearchError, OSError):
            continue
        if data is not None:
            found[hit.id] = data
    return found


@main.command("describe")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.argument("image", metavar="IMAGE")
@click.option("-k", "--top", "k", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many captions.")
@with_options(output_options)
@click.pass_obj
def describe_command(settings: Settings, index_ref: str, image: str, k: int, as_json: bool, paths_only: bool) -> None:
    """Image -> text: the captions in INDEX nearest to IMAGE (a file, URL or id:N)."""

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            return index.describe(image, k)

    print_hits(call(run), as_json, paths_only, settings.quiet)


@main.command("classify")
@quiet_option
@click.argument("image", metavar="IMAGE")
@click.option("--labels", "-l", help="Comma-separated labels: 'cat,dog,car'.")
@click.option("--labels-file", type=click.Path(dir_okay=False, path_type=Path), help="One label per line.")
@click.option("--index", "index_ref", help="Use this index's model (and allow IMAGE to be id:N).")
@click.option(
    "--template",
    "-t",
    "templates",
    multiple=True,
    help="Prompt template with {} for the label; repeatable (default: a set of photo/drawing prompts).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@with_options(model_options)
@click.pass_obj
def classify_command(
    settings: Settings,
    image: str,
    labels: str | None,
    labels_file: Path | None,
    index_ref: str | None,
    templates: tuple[str, ...],
    as_json: bool,
    model: str | None,
    pretrained: str | None,
    device: str | None,
    batch_size: int,
) -> None:
    """Zero-shot classification: the probability of each label for IMAGE."""
    if not labels and not labels_file:
        raise click.UsageError("give --labels or --labels-file")

    def run() -> Any:
        names = parse_labels(labels, labels_file)
        chosen = check_templates(list(templates) or list(DEFAULT_TEMPLATES))
        if not index_ref:  # before a model loads: a missing picture is the error to report
            if image.lower().startswith("id:"):
                raise QueryError(f"{image} names an indexed item: give the index with --index")
            if not Path(image).is_file():
                raise QueryError(f"image not found: {image}")
        if index_ref:
            with Index.open(
                index_ref, home=settings.home, model=model, pretrained=pretrained, device=device, batch_size=batch_size
            ) as index:
                return index.classify(image, names, chosen)
        encoder = load_query_encoder(model, pretrained, device=device, batch_size=batch_size)
        return classify_image(Path(image), names, encoder, templates=chosen)

    scores = call(run)
    if as_json:
        dump([s.to_dict() for s in scores])
        return
    table(("label", "probability", "cosine"), [(s.label, f"{s.probability:.4f}", f"{s.score:.4f}") for s in scores])
