"""The `vecsearch` command group, its shared options, and how library errors become exit codes.

Exit codes: 0 ok; 1 bad input or nothing could be done; 2 bad usage; 3 the index is missing, damaged
or busy; 4 the model cannot be used (unknown, not downloadable offline, or not the index's model);
130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from .. import (
    IndexCorruptError,
    IndexExistsError,
    IndexingInterrupted,
    IndexLockedError,
    IndexNotFoundError,
    ModelError,
    VecsearchError,
    __version__,
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
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    callback=_quiet_callback,
    help="No progress bars or reports; results and errors only.",
)


def call(action: Callable[[], Any]) -> Any:
    """Call into the library; turn its errors into one line on stderr and an exit code."""
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
            fail(
                f"cannot write the index database ({exc}): is the disk full? What was committed before is "
                "kept; run the same command again when there is room",
                EXIT_ERROR,
            )
        fail(f"index database error: {exc}", EXIT_INDEX)


def dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def size_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    from ..sizes import parse_size

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
    click.option(
        "--model",
        "-m",
        help="Model: starter (bundled, offline), open_clip name (ViT-B-32), "
        "hf-hub:ORG/REPO, local-dir:DIR, st:NAME for sentence-transformers, or a model folder.",
    ),
    click.option("--pretrained", help="open_clip pretrained tag (laion2b_s34b_b79k) or checkpoint file."),
    click.option("--device", help="Where the model runs (cpu, cuda, cuda:1, mps). Default: CUDA when present."),
    click.option(
        "--batch-size",
        type=click.IntRange(1, 4096),
        default=32,
        show_default=True,
        help="Images or texts per model call.",
    ),
]


def with_options(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vecsearch")
@click.option(
    "--home",
    envvar="VECSEARCH_HOME",
    type=click.Path(file_okay=False),
    help="Folder of named indexes (default: ./indexes in a checkout, else ~/.local/share/vecsearch/indexes).",
)
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


filter_options = [
    click.option(
        "-k", "--top", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="How many results."
    ),
    click.option(
        "--kind",
        type=click.Choice(["image", "caption", "any"]),
        help="What comes back: images, captions or both (default: images; captions in a text-only index).",
    ),
    click.option("--path", "path_glob", help="Only files whose path matches this glob ('2024/*', '*.png')."),
    click.option("--under", type=click.Path(path_type=Path), help="Only files inside this folder."),
    click.option("--min-score", type=float, help="Drop hits with a cosine below this (scores depend on the model)."),
    click.option("--within", type=float, help="Keep only hits within this cosine margin of the best hit (e.g. 0.05)."),
]
output_options = [
    click.option("--json", "as_json", is_flag=True, help="Print results as JSON."),
    click.option("--paths", "paths_only", is_flag=True, help="Print only image paths, one per line."),
]


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
        with contextlib.suppress(OSError, ValueError):
            print(code, file=sys.stderr, flush=True)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # output lost (a full disk, a closed pipe): never report success
    os._exit(code or 0)
