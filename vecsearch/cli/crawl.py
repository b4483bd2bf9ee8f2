"""`vecsearch index`: crawling ⇒ indexing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import (
    INDEX_TYPES,
    STORAGES,
    Index,
    IndexingInterrupted,
    IndexNotFoundError,
    ListingColumns,
    ModelSpec,
    RayOptions,
    VecsearchError,
    embeddings_info,
    parse_source,
)
from ..home import is_index, is_valid_name, target
from ..sidecars import parse_languages
from .app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Settings,
    call,
    fail,
    main,
    model_options,
    quiet_option,
    size_callback,
    with_options,
)
from .output import print_report


def languages_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """Checked before any model loads or index is made."""
    try:
        return None if value is None else parse_languages(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command("index")
@quiet_option
@click.argument("paths", nargs=-1)
@click.option(
    "--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), help="Index folder to create or update."
)
@click.option("--name", "-n", help="Name of an index in the home folder (default: 'default').")
@with_options(model_options)
@click.option(
    "--captions",
    "-c",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV (path,caption) or JSONL file of captions; repeatable.",
)
@click.option(
    "--caption-languages",
    callback=languages_callback,
    metavar="LANGS",
    help="Sidecar lines to index by language, e.g. en,fr (default en; untagged lines always). Remembered.",
)
@click.option(
    "--embedded-captions/--no-embedded-captions",
    default=None,
    help="Read captions embedded in pictures (XMP, IPTC, EXIF); default on. Remembered.",
)
@click.option("--exclude", "-x", multiple=True, help="Glob of names or relative paths to skip; repeatable.")
@click.option("--include-hidden", is_flag=True, help="Also crawl files and folders whose names start with '.'.")
@click.option("--workers", type=click.IntRange(1, 64), help="Threads that read and decode images.")
@click.option(
    "--max-memory",
    callback=size_callback,
    help="Memory budget of the vector index (8G, 512M); picks a compressed index when needed. "
    "Default: half this machine's memory.",
)
@click.option(
    "--index-type",
    type=click.Choice(list(INDEX_TYPES)),
    help="FAISS index family (default auto: exact while small, then IVF within --max-memory and --max-latency).",
)
@click.option(
    "--max-latency",
    "max_latency_ms",
    type=click.FloatRange(0, min_open=True),
    help="Latency budget of one query in milliseconds: the planner and the tuning keep to it. Default: 10.",
)
@click.option(
    "--min-recall",
    type=click.FloatRange(0, 1, min_open=True),
    help="Recall@10 against exact search to tune for, on image-like and text-like queries. Default: 0.95.",
)
@click.option(
    "--storage",
    type=click.Choice(list(STORAGES)),
    help="Keep the vector index in memory or on disk, memory-mapped (default auto: on disk past --max-memory).",
)
@click.option(
    "--inference",
    type=click.Choice(["auto", "fp32", "bf16", "onnx-int8"]),
    default="auto",
    show_default=True,
    help="How the image model runs on the CPU: auto picks the fastest mode whose vectors match fp32 "
    "(cosine >= 0.999) on the first 16 pictures; fp32 is exact.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Who embeds: this process, or a Ray cluster (pip install 'vecsearch[ray]'), which also reads "
    "listing files, WebDataset shards and URIs.",
)
@click.option("--address", help="Ray cluster to join (auto, ray://host:10001); default: start Ray on this machine.")
@click.option("--actors", type=click.IntRange(1, 4096), help="Ray: model replicas (default: one per GPU).")
@click.option(
    "--actor-cpus",
    type=click.FloatRange(0.01, 256),
    help="Ray: CPUs each replica reserves (default 0.5, 1 with a GPU).",
)
@click.option(
    "--gpus-per-actor", type=click.FloatRange(0, 16), help="Ray: GPUs per replica (default 1 where there are GPUs)."
)
@click.option(
    "--shard-size", type=click.IntRange(1, 10_000_000), default=1000, show_default=True, help="Ray: inputs per shard."
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(1, 86400),
    default=900,
    show_default=True,
    help="Ray: stop (keeping finished shards) when no picture came back for this many seconds.",
)
@click.option("--path-column", help="Listing files: the column of paths (default: path, image, file, key, url...).")
@click.option("--caption-column", multiple=True, help="Listing files: a column of captions; repeatable.")
@click.option(
    "--from-embeddings",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Build from an embeddings folder (vecsearch export or shards, clip-retrieval output) without embedding.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def index_command(
    settings: Settings,
    paths: tuple[str, ...],
    index_dir: Path | None,
    name: str | None,
    model: str | None,
    pretrained: str | None,
    device: str | None,
    batch_size: int,
    captions: tuple[Path, ...],
    caption_languages: tuple[str, ...] | None,
    embedded_captions: bool | None,
    exclude: tuple[str, ...],
    include_hidden: bool,
    workers: int | None,
    max_memory: int | None,
    index_type: str | None,
    max_latency_ms: float | None,
    min_recall: float | None,
    storage: str | None,
    inference: str,
    engine: str,
    address: str | None,
    actors: int | None,
    actor_cpus: float | None,
    gpus_per_actor: float | None,
    shard_size: int,
    stall_timeout: float,
    path_column: str | None,
    caption_column: tuple[str, ...],
    from_embeddings: Path | None,
    as_json: bool,
) -> None:
    """Crawl folders of images (and their captions) into an index, or update it.

    Creates the index on first use. Later runs embed only new or changed files; renamed files keep
    their vectors; deleted files leave the index. With no PATHS, re-crawls the index's folders.
    Captions: a sidecar beside each image (cat.jpg + cat.txt, one caption per line, or cat.json),
    the captions embedded in the picture (XMP, IPTC, EXIF), and any --captions file.

    With --engine ray, SOURCES may also be listing files (.parquet, .csv, .jsonl), WebDataset shards
    (.tar) and URIs (s3://, gs://, file://); the pictures are embedded on a Ray cluster.
    """
    if index_dir is not None and name is not None:
        raise click.UsageError("give --index or --name, not both")
    if from_embeddings is not None and (caption_languages or embedded_captions is not None):
        raise click.UsageError("--caption-languages and --embedded-captions apply to crawls, not --from-embeddings")
    if name is not None and not is_valid_name(name):
        raise click.UsageError(f"invalid index name '{name}' (letters, digits, '.', '_' and '-')")
    folder = index_dir if index_dir is not None else target(name or "default", settings.home)

    if from_embeddings is not None and paths:
        raise click.UsageError("give SOURCES or --from-embeddings, not both")
    remote = [p for p in paths if "://" in p]
    if engine == "local" and remote:
        raise click.UsageError(f"{remote[0]}: URIs need --engine ray")
    ray_options = RayOptions(
        address, actors, actor_cpus, gpus_per_actor, shard_size=shard_size, stall_seconds=stall_timeout
    )
    if engine == "local" and (address or actors or actor_cpus or gpus_per_actor is not None):
        raise click.UsageError("--address, --actors, --actor-cpus and --gpus-per-actor need --engine ray")

    def run() -> Any:
        for path in paths:  # before any model loads or index is made
            if "://" not in path and not Path(path).expanduser().exists():
                raise VecsearchError(f"path not found: {path}")
            if engine == "ray":
                parse_source(path)
        if is_index(folder):
            index = Index.open(
                folder, model=model, pretrained=pretrained, device=device, batch_size=batch_size, inference=inference
            )
        else:
            if not paths and from_embeddings is None:
                raise IndexNotFoundError(f"no index at {folder} yet: give the folders to crawl into it")
            recorded = embeddings_info(from_embeddings).get("model") if from_embeddings is not None else None
            if from_embeddings is not None and model is None and recorded is None:
                raise VecsearchError(
                    f"{from_embeddings} does not say which model made its vectors: give it with --model"
                )
            index = Index.create(
                folder,
                model if model is not None or recorded is None else ModelSpec.from_dict(recorded),
                pretrained,
                device=device,
                batch_size=batch_size,
                max_memory=max_memory,
                index_type=index_type or "auto",
                inference=inference,
                max_latency_ms=max_latency_ms,
                min_recall=min_recall,
                storage=storage,
            )
        with index:
            if from_embeddings is not None:
                report = index.add_embeddings(from_embeddings, progress=not settings.quiet and not as_json)
                return report, index.counts()
            report = index.add(
                [p if "://" in p else Path(p) for p in paths],
                captions=list(captions),
                exclude=list(exclude),
                include_hidden=include_hidden,
                progress=not settings.quiet and not as_json,
                workers=workers,
                max_memory=max_memory,
                index_type=index_type,
                max_latency_ms=max_latency_ms,
                min_recall=min_recall,
                storage=storage,
                engine=engine,
                ray=ray_options,
                columns=ListingColumns(path_column, caption_column),
                caption_languages=caption_languages,
                embedded_captions=embedded_captions,
            )
            return report, index.counts()

    try:
        report, counts = call(run)
    except IndexingInterrupted as stop:
        print_report(stop.report, None, folder, settings.quiet, as_json)
        fail("interrupted; the work done so far is saved: run the same command to continue", EXIT_INTERRUPTED)
        return
    print_report(report, counts, folder, settings.quiet, as_json)
    if report.indexed_nothing:
        fail("no image could be indexed (see the reasons above)", EXIT_ERROR)
