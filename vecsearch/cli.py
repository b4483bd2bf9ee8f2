"""The `vecsearch` command: a thin layer that parses arguments, calls the library, prints the result.

Exit codes: 0 ok; 1 bad input or nothing could be done; 2 bad usage; 3 the index is missing, damaged
or busy; 4 the model cannot be used (unknown, not downloadable offline, or not the index's model);
130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from . import __version__
from .errors import (
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    ModelError,
    VecsearchError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INDEX = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (IndexNotFoundError, IndexCorruptError, IndexLockedError, IndexExistsError)):
        return EXIT_INDEX
    if isinstance(exc, ModelError):
        return EXIT_MODEL
    return EXIT_ERROR


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class Settings:
    def __init__(self, home: str | None, quiet: bool) -> None:
        self.home = home
        self.quiet = quiet


class TermsCommand(click.Command):
    """A command whose query terms may start with '-' (`-dog` subtracts dog), like rclip's.

    Tokens that look like options but are not this command's options are moved behind `--`, where
    click reads them as arguments; their order does not matter to a query.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            before, after = args[:split], args[split + 1 :]
        else:
            before, after = list(args), []
        takes_value: dict[str, click.Option] = {}
        flags: set[str] = set()
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in [*param.opts, *param.secondary_opts]:
                    if param.is_flag or param.count:
                        flags.add(name)
                    else:
                        takes_value[name] = param
        kept: list[str] = []
        moved: list[str] = []
        expect_value = False
        for token in before:
            if expect_value:
                kept.append(token)
                expect_value = False
                continue
            if not token.startswith("-") or len(token) == 1:
                kept.append(token)
                continue
            name = token.split("=", 1)[0] if token.startswith("--") else token
            if name in flags or (token.startswith("--") and "=" in token and name in takes_value):
                kept.append(token)
            elif name in takes_value:
                kept.append(token)
                expect_value = True
            elif token[:2] in takes_value and _parses(takes_value[token[:2]], token[2:]):
                kept.append(token)
            else:
                moved.append(token)
        if moved or after:
            return super().parse_args(ctx, kept + ["--"] + moved + after)
        return super().parse_args(ctx, kept)


def _parses(option: click.Option, text: str) -> bool:
    """Is `text` an attached value of a short numeric option (`-k5`)? `-apple` is a term, not `-a pple`."""
    if not isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType, click.IntRange)):
        return False
    try:
        option.type.convert(text, None, None)  # type: ignore[arg-type]
        return True
    except click.BadParameter:
        return False


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """Process set-up belongs here, not in the library: quiet third-party chatter unless asked."""
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)
    # Environment variables, not imports: importing transformers here would add a second to every command.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # hub downloads and transformers alike


def _quiet_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        settings = ctx.find_object(Settings)
        if settings is not None:
            settings.quiet = True
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet_callback,
    help="No progress bars or reports; results and errors only.",
)


def _run(action: Callable[[], Any]) -> Any:
    """Call into the library; turn its errors into one line on stderr and an exit code."""
    from .indexer import IndexingInterrupted

    try:
        return action()
    except IndexingInterrupted:
        raise
    except VecsearchError as exc:
        fail(str(exc), _exit_code(exc))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", EXIT_ERROR)
    except sqlite3.Error as exc:  # the library maps the expected ones; anything else is a damaged index
        if isinstance(exc, sqlite3.OperationalError) and ("disk" in str(exc) or "full" in str(exc)):
            fail(f"cannot write the index database ({exc}): is the disk full? What was committed before is "
                 "kept; run the same command again when there is room", EXIT_ERROR)
        fail(f"index database error: {exc}", EXIT_INDEX)


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _size_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    from .sizes import parse_size

    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if size <= 0:
        raise click.BadParameter("must be more than 0 bytes")
    return size


model_options = [
    click.option("--model", "-m", help="Model: starter (bundled, offline), open_clip name (ViT-B-32), "
                 "hf-hub:ORG/REPO, local-dir:DIR, st:NAME for sentence-transformers, or a model folder."),
    click.option("--pretrained", help="open_clip pretrained tag (laion2b_s34b_b79k) or checkpoint file."),
    click.option("--device", help="Where the model runs (cpu, cuda, cuda:1, mps). Default: CUDA when present."),
    click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
                 help="Images or texts per model call."),
]


def with_options(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vecsearch")
@click.option("--home", envvar="VECSEARCH_HOME", type=click.Path(file_okay=False),
              help="Folder of named indexes (default: ./indexes in a checkout, else ~/.local/share/vecsearch/indexes).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or reports; results and errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the libraries underneath are doing.")
@click.pass_context
def main(ctx: click.Context, home: str | None, quiet: bool, verbose: bool) -> None:
    """Search your images by text, by image, or both: a prompt is a search query.

    \b
      vecsearch index ~/Pictures --name photos      crawl a folder into an index
      vecsearch search photos "a red apple"          text -> image
      vecsearch search photos ./cat.jpg +hat -dog    image arithmetic
      vecsearch describe photos ./cat.jpg            image -> text (nearest captions)
      vecsearch classify ./cat.jpg --labels cat,dog  zero-shot labels
    """
    _setup_logging(quiet, verbose)
    ctx.obj = Settings(home, quiet)


# --- index ----------------------------------------------------------------------------------------


@main.command("index")
@quiet_option
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Index folder to create or update.")
@click.option("--name", "-n", help="Name of an index in the home folder (default: 'default').")
@with_options(model_options)
@click.option("--captions", "-c", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV (path,caption) or JSONL file of captions; repeatable.")
@click.option("--exclude", "-x", multiple=True, help="Glob of names or relative paths to skip; repeatable.")
@click.option("--include-hidden", is_flag=True, help="Also crawl files and folders whose names start with '.'.")
@click.option("--workers", type=click.IntRange(1, 64), help="Threads that read and decode images.")
@click.option("--max-memory", callback=_size_callback,
              help="Memory budget of the vector index (8G, 512M); picks a compressed index when needed. "
                   "Default: half this machine's memory.")
@click.option("--index-type", type=click.Choice(["auto", "exact", "ivf-flat", "ivf-sq8", "ivf-pq"]),
              help="FAISS index family (default auto: exact while small, then IVF within --max-memory).")
@click.option("--inference", type=click.Choice(["auto", "fp32", "bf16", "onnx-int8"]), default="auto",
              show_default=True,
              help="How the image model runs on the CPU: auto picks the fastest mode whose vectors match fp32 "
                   "(cosine >= 0.999) on the first 16 pictures; fp32 is exact.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def index_command(
    settings: Settings,
    paths: tuple[Path, ...],
    index_dir: Path | None,
    name: str | None,
    model: str | None,
    pretrained: str | None,
    device: str | None,
    batch_size: int,
    captions: tuple[Path, ...],
    exclude: tuple[str, ...],
    include_hidden: bool,
    workers: int | None,
    max_memory: int | None,
    index_type: str | None,
    inference: str,
    as_json: bool,
) -> None:
    """Crawl folders of images (and their captions) into an index, or update it.

    Creates the index on first use. Later runs embed only new or changed files; renamed files keep
    their vectors; deleted files leave the index. With no PATHS, re-crawls the index's folders.
    Captions: a sidecar text file beside each image (cat.jpg + cat.txt, one caption per line) and
    any --captions file.
    """
    from .home import is_valid_name, target
    from .index import Index
    from .indexer import IndexingInterrupted

    if index_dir is not None and name is not None:
        raise click.UsageError("give --index or --name, not both")
    if name is not None and not is_valid_name(name):
        raise click.UsageError(f"invalid index name '{name}' (letters, digits, '.', '_' and '-')")
    folder = index_dir if index_dir is not None else target(name or "default", settings.home)

    def run() -> Any:
        from .manifest import MANIFEST

        for path in paths:  # before any model loads or index is made
            if not path.expanduser().exists():
                raise VecsearchError(f"path not found: {path}")
        if (folder / MANIFEST).is_file():
            index = Index.open(
                folder, model=model, pretrained=pretrained, device=device, batch_size=batch_size, inference=inference
            )
        else:
            if not paths:
                raise IndexNotFoundError(f"no index at {folder} yet: give the folders to crawl into it")
            index = Index.create(
                folder, model, pretrained, device=device, batch_size=batch_size, max_memory=max_memory,
                index_type=index_type or "auto", inference=inference,
            )
        with index:
            report = index.add(
                list(paths), captions=list(captions), exclude=list(exclude), include_hidden=include_hidden,
                progress=not settings.quiet and not as_json, workers=workers, max_memory=max_memory,
                index_type=index_type,
            )
            return report, index.counts()

    try:
        report, counts = _run(run)
    except IndexingInterrupted as stop:
        _print_report(stop.report, None, folder, settings.quiet, as_json)
        fail("interrupted; the work done so far is saved: run the same command to continue", EXIT_INTERRUPTED)
        return
    _print_report(report, counts, folder, settings.quiet, as_json)
    if report.indexed_nothing:
        fail("no image could be indexed (see the reasons above)", EXIT_ERROR)


def _print_report(report: Any, counts: dict[str, int] | None, folder: Path, quiet: bool, as_json: bool) -> None:
    if as_json:
        data = report.to_dict()
        data["index"] = str(folder)
        if counts is not None:
            data["counts"] = counts
        _dump(data)
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
    if report.vector_index:
        click.echo(report.vector_index)
    if report.inference:
        click.echo(_inference_line(report.inference))
    if report.text_export:
        click.echo(report.text_export)
    if counts is not None:
        click.echo(
            f"index holds {counts['images']} images and {counts['captions']} captions "
            f"({counts['files']} files) - {report.seconds:.1f} s"
        )


# --- search ---------------------------------------------------------------------------------------

filter_options = [
    click.option("-k", "--top", "k", type=click.IntRange(1, 10_000), default=10, show_default=True,
                 help="How many results."),
    click.option("--kind", type=click.Choice(["image", "caption", "any"]),
                 help="What comes back: images, captions or both (default: images; captions in a text-only index)."),
    click.option("--path", "path_glob", help="Only files whose path matches this glob ('2024/*', '*.png')."),
    click.option("--under", type=click.Path(path_type=Path), help="Only files inside this folder."),
    click.option("--min-score", type=float, help="Drop hits with a cosine below this (scores depend on the model)."),
    click.option("--within", type=float,
                 help="Keep only hits within this cosine margin of the best hit (e.g. 0.05)."),
]
output_options = [
    click.option("--json", "as_json", is_flag=True, help="Print results as JSON."),
    click.option("--paths", "paths_only", is_flag=True, help="Print only image paths, one per line."),
]


@main.command("search", cls=TermsCommand)
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.argument("terms", nargs=-1, metavar="QUERY...")
@click.option("--add", "-a", multiple=True, help="A term to add (text or image path); repeatable.")
@click.option("--subtract", "-s", multiple=True, help="A term to subtract; repeatable.")
@click.option("--like", multiple=True, help="Move toward this item id from an earlier search (relevance feedback).")
@click.option("--unlike", multiple=True, help="Move away from this item id.")
@with_options(filter_options)
@with_options(output_options)
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
    k: int,
    kind: str | None,
    path_glob: str | None,
    under: Path | None,
    min_score: float | None,
    within: float | None,
    as_json: bool,
    paths_only: bool,
    model: str | None,
    pretrained: str | None,
    device: str | None,
    batch_size: int,
) -> None:
    """Search an index. Each QUERY term is text or an image path (or URL), optionally signed and
    weighted: "a red apple", ./cat.jpg, +hat, -dog, 2:sunset, -0.5:./dog.jpg, id:42, text:notes.png.

    The terms are embedded and summed into one query vector.
    """
    from .index import Index
    from .query import Query

    if as_json and paths_only:
        raise click.UsageError("choose --json or --paths, not both")

    def run() -> Any:
        query = Query.parse(list(terms), add=add, subtract=subtract, like=like, unlike=unlike)
        with Index.open(index_ref, home=settings.home, model=model, pretrained=pretrained,
                        device=device, batch_size=batch_size) as index:
            return index.search(
                query, k, kind=kind, path=path_glob, under=under, min_score=min_score, within=within
            )

    hits = _run(run)
    _print_hits(hits, as_json, paths_only, settings.quiet)


def _print_hits(hits: Sequence[Any], as_json: bool, paths_only: bool, quiet: bool) -> None:
    if as_json:
        _dump([h.to_dict() for h in hits])
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
    rows = [
        (str(h.rank), f"{h.score:.4f}", h.kind, str(h.id), h.path, _clip(h.caption or "", 60)) for h in hits
    ]
    _table(("#", "score", "kind", "id", "path", "caption"), rows)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [tuple(header), *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {0, 1, 3}
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        click.echo("  ".join(cells).rstrip())


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- describe and classify ------------------------------------------------------------------------


@main.command("describe")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.argument("image", metavar="IMAGE")
@click.option("-k", "--top", "k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many captions.")
@with_options(output_options)
@click.pass_obj
def describe_command(settings: Settings, index_ref: str, image: str, k: int, as_json: bool, paths_only: bool) -> None:
    """Image -> text: the captions in INDEX nearest to IMAGE (a file, URL or id:N)."""
    from .index import Index

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            return index.describe(image, k)

    _print_hits(_run(run), as_json, paths_only, settings.quiet)


@main.command("classify")
@quiet_option
@click.argument("image", metavar="IMAGE")
@click.option("--labels", "-l", help="Comma-separated labels: 'cat,dog,car'.")
@click.option("--labels-file", type=click.Path(dir_okay=False, path_type=Path), help="One label per line.")
@click.option("--index", "index_ref", help="Use this index's model (and allow IMAGE to be id:N).")
@click.option("--template", "-t", "templates", multiple=True,
              help="Prompt template with {} for the label; repeatable (default: a set of photo/drawing prompts).")
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
    from .classify import (
        DEFAULT_TEMPLATES,
        check_templates,
        classify_image,
        parse_labels,
    )
    from .encoders import load_encoder
    from .index import Index

    if not labels and not labels_file:
        raise click.UsageError("give --labels or --labels-file")

    def run() -> Any:
        from .errors import QueryError

        names = parse_labels(labels, labels_file)
        chosen = check_templates(list(templates) or list(DEFAULT_TEMPLATES))
        if not index_ref:  # before a model loads: a missing picture is the error to report
            if image.lower().startswith("id:"):
                raise QueryError(f"{image} names an indexed item: give the index with --index")
            if not Path(image).is_file():
                raise QueryError(f"image not found: {image}")
        if index_ref:
            with Index.open(index_ref, home=settings.home, model=model, pretrained=pretrained,
                            device=device, batch_size=batch_size) as index:
                return index.classify(image, names, chosen)
        encoder = load_encoder(model, pretrained, device=device, batch_size=batch_size)
        return classify_image(Path(image), names, encoder, templates=chosen)

    scores = _run(run)
    if as_json:
        _dump([s.to_dict() for s in scores])
        return
    _table(("label", "probability", "cosine"),
           [(s.label, f"{s.probability:.4f}", f"{s.score:.4f}") for s in scores])


# --- serve ----------------------------------------------------------------------------------------


@main.command("serve")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback shares the index with your network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-upload", callback=_size_callback, default="20M", show_default=True,
              help="Largest picture a client may upload to search by (20M, 512K).")
@click.option("--device", help="Where the model runs (cpu, cuda, cuda:1, mps). Default: CUDA when present.")
@click.pass_obj
def serve_command(settings: Settings, index_ref: str, host: str, port: int, max_upload: int, device: str | None) -> None:
    """Serve INDEX over HTTP: a web page at / and a JSON API under /api (schema at /openapi.json).

    The model and the vectors stay loaded, so queries take milliseconds; the index may be re-crawled
    while it is served.
    """
    import socket

    from .index import Index

    try:  # a clear message, before the model loads, when the port is taken
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as exc:
        fail(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc})", EXIT_ERROR)

    def run() -> None:
        from .serve import is_loopback, serve

        with Index.open(index_ref, home=settings.home, device=device) as index:
            if not settings.quiet:
                shown = f"[{host}]" if ":" in host else host
                click.echo(f"serving {index.name} ({index.counts()['items']:,} items, {index.spec}) at "
                           f"http://{shown}:{port}/  (Ctrl-C to stop)", err=True)
                if not is_loopback(host):
                    click.echo(f"warning: listening on {host}: anyone who can reach it can search this index and "
                               "see its pictures and paths", err=True)
            serve(index, host, port, max_upload_bytes=max_upload,
                  log_level="warning" if settings.quiet else "info")

    _run(run)


# --- info, list, models ---------------------------------------------------------------------------


@main.command("info")
@click.argument("index_ref", metavar="INDEX")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def info_command(settings: Settings, index_ref: str, as_json: bool) -> None:
    """Show an index's model, vector file, counts and folders."""
    from .index import Index

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            return index.info()

    info = _run(run)
    if as_json:
        _dump(info)
        return
    counts = info["counts"]
    faiss_info = info["faiss"]
    lines = [
        ("index", info["path"]),
        ("model", info["model"]["spec"]),
        ("fingerprint", info["model"]["fingerprint"]),
        ("dimension", f"{info['dim']} ({info['metric']})"),
        ("vectors", f"{faiss_info['type']}, {faiss_info['ntotal']} vectors, generation {faiss_info['generation']}"),
        ("search", _search_settings(faiss_info)),
        ("items", f"{counts['items']} ({counts['images']} images, {counts['captions']} captions)"),
        ("files", str(counts["files"])),
        ("size", _human_bytes(info["bytes"])),
        ("format", f"{info['format']} v{info['format_version']}"),
        ("created", info["created"]),
        ("updated", info["updated"]),
    ]
    lines += [("folder", root) for root in info["roots"]]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


@main.command("check")
@click.argument("index_ref", metavar="INDEX")
@click.option("--repair", is_flag=True, help="Rebuild what is damaged from what is intact, then check again.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def check_command(settings: Settings, index_ref: str, repair: bool, as_json: bool) -> None:
    """Verify an index's files and that its items and vectors agree (exit 3 if not)."""
    from .check import check_index

    report = _run(lambda: check_index(index_ref, home=settings.home, repair=repair))
    if as_json:
        _dump(report.to_dict())
    else:
        for finding in report.findings:
            if finding.repaired:
                click.echo(f"repaired [{finding.area}] {finding.problem}: {finding.repair}")
            else:
                hint = f" (--repair would {finding.repair})" if finding.repair and not repair else ""
                click.echo(f"problem  [{finding.area}] {finding.problem}{hint}")
        for note in report.notes:
            click.echo(f"note     {note}")
        counts = report.counts
        summary = (
            f"{counts['items']} items ({counts['images']} images, {counts['captions']} captions), "
            f"{counts['files']} files" if counts else "contents unknown"
        )
        state = "ok" if report.ok else "damaged"
        click.echo(f"{state}: {report.path}: {summary} ({report.seconds:.2f} s)")
    if not report.ok:
        sys.exit(EXIT_INDEX)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def list_command(settings: Settings, as_json: bool) -> None:
    """List the named indexes in the home folder."""
    from .home import default_home, named_indexes
    from .manifest import read_manifest

    rows: list[dict[str, Any]] = []
    for folder in named_indexes(settings.home):
        try:
            manifest = read_manifest(folder)
        except VecsearchError as exc:
            rows.append({"name": folder.name, "path": str(folder), "error": str(exc)})
            continue
        rows.append({
            "name": folder.name,
            "path": str(folder),
            "model": manifest["model"].get("spec"),
            "counts": manifest.get("counts", {}),
            "updated": manifest.get("updated"),
        })
    if as_json:
        _dump(rows)
        return
    if not rows:
        if not settings.quiet:
            click.echo(f"no indexes in {default_home(settings.home)}", err=True)
        return
    table = []
    for row in rows:
        counts = row.get("counts") or {}
        table.append((
            row["name"], str(counts.get("images", "?")), str(counts.get("captions", "?")),
            row.get("model") or f"error: {row.get('error')}", str(row.get("updated") or ""),
        ))
    _table(("name", "images", "captions", "model", "updated"), table)


@main.command("models")
@click.option("--all", "show_all", is_flag=True, help="Every open_clip architecture and pretrained tag.")
@click.option("--offline", is_flag=True, help="Only models that load without the network.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_command(show_all: bool, offline: bool, as_json: bool) -> None:
    """List models vecsearch can use, and which are already on this machine."""
    from .encoders import list_models

    infos = _run(lambda: list_models(all_open_clip=show_all))
    if offline:
        infos = [i for i in infos if i.available_offline]
    if as_json:
        _dump([
            {**i.spec.to_dict(), "spec": str(i.spec), "available_offline": i.available_offline,
             "default": i.default, "note": i.note}
            for i in infos
        ])
        return
    rows = []
    for info in infos:
        model = info.spec.name if info.spec.family == "open_clip" else f"st:{info.spec.name}"
        rows.append((
            model, info.spec.pretrained or "", "yes" if info.available_offline else "no",
            ("(default) " if info.default else "") + info.note,
        ))
    _table(("--model", "--pretrained", "offline", "note"), rows)


def _inference_line(inference: dict[str, Any]) -> str:
    checks = inference.get("checks") or []
    fp32 = next((c for c in checks if c["mode"] == "fp32"), None)
    tried = [
        f"{c['mode']} cosine {c['min_cosine']:.4f}"
        + (f", {fp32['seconds'] / c['seconds']:.1f}x fp32's speed" if fp32 and c["seconds"] else "")
        for c in checks if c["mode"] != "fp32"
    ]
    detail = f" (checked on {checks[0]['images']} pictures: {'; '.join(tried)})" if tried and checks else ""
    return f"image model ran in {inference.get('mode')}{detail}"


def _search_settings(faiss_info: dict[str, Any]) -> str:
    budget = faiss_info.get("max_memory")
    text = f"{faiss_info.get('requested') or 'auto'} index type, memory budget "
    text += _human_bytes(budget) if budget else "half of this machine's memory"
    if faiss_info.get("nprobe"):
        text += f"; nprobe {faiss_info['nprobe']}"
        if int(faiss_info.get("rerank") or 1) > 1:
            text += f", re-rank depth {faiss_info['rerank']}"
        text += f", recall@10 {faiss_info.get('recall@10')} against exact search"
    return text


def _human_bytes(size: int) -> str:
    from .sizes import human_bytes

    return human_bytes(size)


if __name__ == "__main__":
    main()


def run() -> None:
    """The `vecsearch` command: `main`, then a prompt exit.

    Once torch is imported, the interpreter's own teardown (unloading torch, transformers and their
    threads) takes over a second on a small machine, after the results are already printed. The
    command has closed its index and flushed its output by then, so it ends the process directly.
    """
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if "torch" not in sys.modules:
        raise SystemExit(code)
    logging.shutdown()
    if code is not None and not isinstance(code, int):  # SystemExit("message"): the message, status 1
        try:
            print(code, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # output lost (a full disk, a closed pipe): never report success
    os._exit(code or 0)
