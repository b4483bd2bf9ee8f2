"""`vecsearch serve`, `info`, `export`, `check`, `list` and `models`: the index and the models around the
searches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import Index, check_index, list_indexes, list_models
from ..home import default_home
from ..sizes import human_bytes
from .app import (
    EXIT_ERROR,
    EXIT_INDEX,
    EXIT_USAGE,
    Settings,
    call,
    dump,
    fail,
    main,
    quiet_option,
    size_callback,
)
from .output import measured_lines, search_settings, table


@main.command("serve")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback shares the index with your network.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--max-upload",
    callback=size_callback,
    default="20M",
    show_default=True,
    help="Largest picture a client may upload to search by (20M, 512K).",
)
@click.option("--device", help="Where the model runs (cpu, cuda, cuda:1, mps). Default: CUDA when present.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require the token on this file's first line (16+ characters); or set VECSEARCH_TOKEN.",
)
@click.option("--new-token", is_flag=True, help="Require a new random token, printed at start-up.")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address to anyone, without a token.")
@click.option(
    "--token-attempts",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Wrong tokens one address may send a minute before it is refused (429) for the rest of it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Server processes, each with its own model, answering at once. Default: one per core.",
)
@click.pass_obj
def serve_command(
    settings: Settings,
    index_ref: str,
    host: str,
    port: int,
    max_upload: int,
    device: str | None,
    token_file: Path | None,
    new_token: bool,
    no_auth: bool,
    token_attempts: int,
    workers: int | None,
) -> None:
    """Serve INDEX over HTTP: a web page at / and a JSON API under /api (schema at /openapi.json).

    The model and the vectors stay loaded, so queries take milliseconds; the index may be re-crawled
    while it is served. Beyond loopback it needs a token (--token-file, VECSEARCH_TOKEN, --new-token)
    or --no-auth.
    """
    import socket

    from ..serve import is_loopback  # FastAPI: only for this command

    token = _serve_token(token_file, new_token, no_auth)
    if token is None and not no_auth and not is_loopback(host):
        fail(
            f"listening on {host} shares the index with your network: require a token with --token-file FILE "
            "(or VECSEARCH_TOKEN, or --new-token), or pass --no-auth to let anyone who reaches it in",
            EXIT_USAGE,
        )

    try:  # a clear message, before the model loads, when the port is taken
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as exc:
        fail(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc})", EXIT_ERROR)

    def run() -> None:
        from ..serve import default_workers, serve  # uvicorn: only for this command

        processes = workers or default_workers()

        with Index.open(index_ref, home=settings.home, device=device) as index:
            if not settings.quiet:
                shown = f"[{host}]" if ":" in host else host
                click.echo(
                    f"serving {index.name} ({index.counts()['items']:,} items, {index.spec}) at "
                    f"http://{shown}:{port}/ with {processes} worker{'s' if processes > 1 else ''}  (Ctrl-C to stop)",
                    err=True,
                )
                if new_token:
                    click.echo(f"token: {token}", err=True)
                if token is not None:
                    click.echo("requests need the token (Authorization: Bearer, or sign in on the page)", err=True)
                elif not is_loopback(host):
                    click.echo(
                        f"warning: listening on {host}: anyone who can reach it can search this index and "
                        "see its pictures and paths",
                        err=True,
                    )
            serve(
                index,
                host,
                port,
                max_upload_bytes=max_upload,
                log_level="warning" if settings.quiet else "info",
                token=token,
                token_attempts=token_attempts,
                workers=processes,
                device=device,
            )

    call(run)


def _serve_token(token_file: Path | None, new_token: bool, no_auth: bool) -> str | None:
    """The token `serve` requires, from one source; a usage error for an unreadable, short or
    contradictory one."""
    try:
        return _token_of(token_file, new_token, no_auth)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
        return None


def _token_of(token_file: Path | None, new_token: bool, no_auth: bool) -> str | None:
    import os
    import secrets

    from ..serve.auth import check_token

    from_env = os.environ.get("VECSEARCH_TOKEN")
    if token_file is not None and new_token:
        raise ValueError("--token-file and --new-token: give one")
    if no_auth and (token_file is not None or new_token or from_env is not None):
        given = "--token-file" if token_file else "--new-token" if new_token else "VECSEARCH_TOKEN is set"
        raise ValueError(f"--no-auth, but {given}: drop one of them")
    if new_token:
        return secrets.token_urlsafe(24)
    if token_file is not None:
        source = f"the token file {token_file}"
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}") from exc
        token = lines[0].strip() if lines else ""
    elif from_env is not None:
        token, source = from_env.strip(), "VECSEARCH_TOKEN"
    else:
        return None
    try:
        return check_token(token)
    except ValueError as exc:
        raise ValueError(
            f"{source}: {exc} (make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        ) from exc


@main.command("info")
@click.argument("index_ref", metavar="INDEX")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def info_command(settings: Settings, index_ref: str, as_json: bool) -> None:
    """Show an index's model, vector file, counts and folders."""

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            return index.info()

    info = call(run)
    if as_json:
        dump(info)
        return
    counts = info["counts"]
    faiss_info = info["faiss"]
    lines = [
        ("index", info["path"]),
        ("model", info["model"]["spec"]),
        ("fingerprint", info["model"]["fingerprint"]),
        ("dimension", f"{info['dim']} ({info['metric']})"),
        (
            "vectors",
            f"{faiss_info['type']}{' on disk (memory-mapped)' if faiss_info.get('on_disk') else ''}, "
            f"{faiss_info['ntotal']} vectors, generation {faiss_info['generation']}",
        ),
        ("search", search_settings(faiss_info)),
        *measured_lines(faiss_info),
        ("items", f"{counts['items']} ({counts['images']} images, {counts['captions']} captions)"),
        ("files", str(counts["files"])),
        ("size", human_bytes(info["bytes"])),
        ("format", f"{info['format']} v{info['format_version']}"),
        ("created", info["created"]),
        ("updated", info["updated"]),
    ]
    lines += [("folder", root) for root in info["roots"]]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


@main.command("export")
@quiet_option
@click.argument("index_ref", metavar="INDEX")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "clip-retrieval"]),
    default="parquet",
    show_default=True,
    help="Parquet shards (the distributed crawl's columns) or clip-retrieval's img_emb/text_emb/metadata layout.",
)
@click.option(
    "--shard-size", type=click.IntRange(1, 100_000_000), default=100_000, show_default=True, help="Pictures a file."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def export_command(settings: Settings, index_ref: str, folder: Path, fmt: str, shard_size: int, as_json: bool) -> None:
    """Write every picture of an index with its captions and vectors to a new FOLDER.

    `vecsearch index --from-embeddings FOLDER` builds an index from it again without embedding;
    autofaiss and clip-retrieval's back end read the clip-retrieval layout.
    """

    def run() -> Any:
        with Index.open(index_ref, home=settings.home) as index:
            return index.export(folder, format=fmt, shard_size=shard_size, progress=not settings.quiet and not as_json)

    report = call(run)
    if as_json:
        dump(report.to_dict())
    elif not settings.quiet:
        click.echo(
            f"{report.folder}: {report.pictures} pictures and {report.captions} captions in {report.files} {fmt} files"
        )


@main.command("check")
@click.argument("index_ref", metavar="INDEX")
@click.option("--repair", is_flag=True, help="Rebuild what is damaged from what is intact, then check again.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def check_command(settings: Settings, index_ref: str, repair: bool, as_json: bool) -> None:
    """Verify an index's files and that its items and vectors agree (exit 3 if not)."""
    report = call(lambda: check_index(index_ref, home=settings.home, repair=repair))
    if as_json:
        dump(report.to_dict())
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
            f"{counts['files']} files"
            if counts
            else "contents unknown"
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
    summaries = list_indexes(settings.home)
    if as_json:
        dump([summary.to_dict() for summary in summaries])
        return
    if not summaries:
        if not settings.quiet:
            click.echo(f"no indexes in {default_home(settings.home)}", err=True)
        return
    table(
        ("name", "images", "captions", "model", "updated"),
        [
            (
                s.name,
                str(s.counts.get("images", "?")),
                str(s.counts.get("captions", "?")),
                s.model or f"error: {s.error}",
                s.updated or "",
            )
            for s in summaries
        ],
    )


@main.command("models")
@click.option("--all", "show_all", is_flag=True, help="Every open_clip architecture and pretrained tag.")
@click.option("--offline", is_flag=True, help="Only models that load without the network.")
@click.option(
    "--prepare",
    "prepare",
    metavar="MODEL",
    help="Load MODEL once and export its towers, so that queries and crawls run without torch.",
)
@click.option("--pretrained", help="With --prepare: the open_clip pretrained tag or checkpoint file.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_command(show_all: bool, offline: bool, prepare: str | None, pretrained: str | None, as_json: bool) -> None:
    """List models vecsearch can use, and which are already on this machine; or prepare one."""
    if prepare is not None:
        from ..encoders.prepare import prepare_exports

        done = call(lambda: prepare_exports(prepare, pretrained))
        if as_json:
            dump(done)
            return
        for note in done["exported_now"]:
            click.echo(note)
        ready = [name for name in ("text_tower", "image_tower") if done[name]]
        click.echo(
            f"{done['model']}: {' and '.join(n.replace('_', ' ') for n in ready) or 'nothing'} exported"
            + ("" if len(ready) == 2 else "; the rest runs with torch")
        )
        return
    if pretrained is not None:
        raise click.UsageError("--pretrained goes with --prepare")
    infos = call(lambda: list_models(all_open_clip=show_all))
    if offline:
        infos = [i for i in infos if i.available_offline]
    if as_json:
        dump(
            [
                {
                    **i.spec.to_dict(),
                    "spec": str(i.spec),
                    "available_offline": i.available_offline,
                    "default": i.default,
                    "note": i.note,
                }
                for i in infos
            ]
        )
        return
    rows = []
    for info in infos:
        model = info.spec.name if info.spec.family == "open_clip" else f"st:{info.spec.name}"
        rows.append(
            (
                model,
                info.spec.pretrained or "",
                "yes" if info.available_offline else "no",
                ("(default) " if info.default else "") + info.note,
            )
        )
    table(("--model", "--pretrained", "offline", "note"), rows)
