"""The one place vecsearch reaches the network: fetching model files into a local cache.

Files are looked up in the cache first; only a miss goes to the network, and only after a quick check
that the hub can be reached at all, so an offline machine gets a clear error at once instead of a hang.

Where files go: `cache_dir` if given, else `$VECSEARCH_CACHE_DIR`, else the Hugging Face cache
(`$HF_HUB_CACHE`, or `$HF_HOME/hub`, default `~/.cache/huggingface/hub`), so weights that open_clip or
sentence-transformers already downloaded are reused. open_clip tags served by plain URL (OpenAI's
weights) go to `cache_dir` or `~/.cache/clip`, where open_clip itself keeps them.

What comes from the hub is checked before it is used: huggingface_hub checks only the length of what it
downloads, so every weights (LFS) file fresh from the network is compared with the sha256 the hub
announced for it, and a mismatch is deleted from the cache and reported (`verify_download`). A download
that fails part-way leaves nothing behind that a later run could take for the complete file.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ModelNotFoundError, ModelUnavailableError, first_line

OFFLINE_HINT = (
    "use a model that is already on this machine: the bundled one (--model starter), a local checkpoint "
    "(--model ARCH --pretrained /path/to/weights.safetensors), an open_clip directory "
    "(--model local-dir:/path), or a local sentence-transformers directory; "
    "`vecsearch models` lists what is available offline"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubFileMissingError(ModelUnavailableError):
    """The hub answered that the repository has no such file. Only this may send a caller on to another
    file name: after a failed or corrupt download of a file that does exist, trying a different file (a
    600 MB pickle instead of safetensors) would hide the real error behind a second download."""


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The download cache to use; None means the Hugging Face default."""
    if explicit:
        return str(explicit)
    return os.environ.get("VECSEARCH_CACHE_DIR") or None


def vecsearch_cache(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where vecsearch keeps what it derives from models (exports, remembered checks): the cache folder
    given, else $VECSEARCH_CACHE_DIR, else ~/.cache/vecsearch."""
    return Path(cache_dir(explicit) or Path.home() / ".cache" / "vecsearch")


def url_cache_dir(explicit: str | None = None) -> str:
    return cache_dir(explicit) or os.path.expanduser("~/.cache/clip")


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to this URL's host be opened within `timeout` seconds?"""
    if offline_mode():
        return False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hf_file(repo_id: str, filename: str, cache: str | None = None) -> str | None:
    """The local path of a hub file if it is already cached, else None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id=repo_id, filename=filename, cache_dir=cache)
    except ValueError as exc:  # HFValidationError: not a valid repository id
        raise ModelNotFoundError(f"'{repo_id}' is not a valid Hugging Face model id ({first_line(exc)})") from exc
    return found if isinstance(found, str) else None


def fetch_hf_file(repo_id: str, filename: str, what: str, cache: str | None = None) -> str:
    """A hub file's local path: from the cache, else downloaded once (with a progress bar)."""
    found = cached_hf_file(repo_id, filename, cache)
    if found:
        return found
    require_network(hub_endpoint(), what)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache)
    except EntryNotFoundError as exc:
        if isinstance(exc, LocalEntryNotFoundError):  # not cached and the hub could not be asked
            raise ModelUnavailableError(
                f"could not download {filename} for {what} from the Hugging Face hub ({first_line(exc)})"
            ) from exc
        raise HubFileMissingError(f"{repo_id} on the Hugging Face hub has no file {filename} ({what})") from exc
    except Exception as exc:  # the hub client raises many unrelated types
        raise ModelUnavailableError(
            f"could not download {filename} for {what} from the Hugging Face hub "
            f"({first_line(network_error(exc) or exc)})"
        ) from exc
    verify_download(path, repo_id, filename, what)
    return path


def network_error(exc: BaseException) -> BaseException | None:
    """The network error that started `exc`, if one did: the innermost of its chain of causes. Loaders
    report a download that broke off in their own words ("Can't load the model ... make sure you don't
    have a local directory with the same name"), and the hub client's retries add errors of their own."""
    found, seen = None, set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        package = type(current).__module__.split(".")[0].rstrip("0123456789")
        if package in ("httpx", "httpcore", "h11", "requests", "urllib3") or isinstance(
            current, (ConnectionError, TimeoutError)
        ):
            found = current
        current = current.__cause__ or current.__context__
    return found


def fetch_hf_snapshot(
    repo_id: str, what: str, patterns: list[str], cache: str | None = None, hint: str = OFFLINE_HINT
) -> str:
    """A local folder with a hub repository's files matching `patterns`: cached, else downloaded."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns, local_files_only=True)
    except ValueError as exc:
        if "repo" in str(exc).lower() and "id" in str(exc).lower():
            raise ModelNotFoundError(f"'{repo_id}' is not a valid Hugging Face model id") from exc
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        pass
    require_network(hub_endpoint(), f"{what} ({repo_id})", hint)
    try:
        folder = snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns)
    except Exception as exc:
        raise ModelUnavailableError(f"could not download {repo_id} for {what} ({first_line(exc)})") from exc
    verify_snapshot(repo_id, f"{what} ({repo_id})", cache, folder)
    return folder


def verify_download(path: str, repo_id: str, filename: str, what: str) -> None:
    """Refuse a hub file fresh from the network whose bytes are not the ones the hub announced.

    huggingface_hub compares only the length of a download with what the hub announced, so a proxy, a
    broken mirror or a bad disk can hand it other bytes of the same length, which it then files as the
    real thing and serves from the cache on every later run. Weights are LFS files, announced by their
    sha256 (their cached blob is named after it): a mismatch deletes the blob and its snapshot entry, so
    that the next run downloads the file again, and raises ModelUnavailableError. Regular git files,
    announced by a git blob id, are small and parsed by their loaders; they are not hashed here.
    """
    expected = _announced_sha256(path, repo_id, filename)
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    if digest.hexdigest() == expected:
        return
    blob = Path(os.path.realpath(path))
    for stale in {Path(path), blob}:
        stale.unlink(missing_ok=True)
    raise ModelUnavailableError(
        f"the download of {filename} for {what} was corrupt: its sha256 is {digest.hexdigest()}, not "
        f"{expected} as the Hugging Face hub announced; it was deleted from the cache, run the command again "
        "to download it afresh"
    )


def verify_snapshot(repo_id: str, what: str, cache: str | None = None, folder: str | None = None) -> None:
    """`verify_download` for every file of a repository's cached snapshot (by default the one its `main`
    ref points at), for loaders that download on their own, such as sentence-transformers."""
    snapshot = Path(folder) if folder else _main_snapshot(repo_id, cache)
    if snapshot is None or not snapshot.is_dir():
        return
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():
            verify_download(str(path), repo_id, path.relative_to(snapshot).as_posix(), what)


def _main_snapshot(repo_id: str, cache: str | None) -> Path | None:
    from huggingface_hub import constants

    storage = Path(cache or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = storage / "refs" / "main"
    return storage / "snapshots" / ref.read_text().strip() if ref.is_file() else None


def _announced_sha256(path: str, repo_id: str, filename: str) -> str | None:
    """The sha256 the hub announced for a cached file, None for a regular (non-LFS) file.

    The cache names a blob after the hub's ETag for it, which for LFS files is their sha256. Where the
    cache holds copies instead of links (no symlinks, as on Windows without developer mode), the hub is
    asked again for the file at the snapshot's commit.
    """
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs":
        return blob.name if _SHA256.match(blob.name) else None
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    commit = Path(path)
    for _ in filename.split("/"):
        commit = commit.parent
    try:
        metadata = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=commit.name))
    except Exception:  # the hub cannot be asked now: nothing to compare with
        return None
    etag = (metadata.etag or "").lower()
    return etag if _SHA256.match(etag) else None


def fetch_url(url: str, what: str, cache: str | None = None) -> str:
    """A file served by plain URL, cached under its own name as open_clip does."""
    target = Path(url_cache_dir(cache)) / os.path.basename(urlparse(url).path)
    if target.is_file():
        return str(target)
    require_network(url, what)
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return download_pretrained_from_url(url, cache_dir=str(target.parent))
    except Exception as exc:
        raise ModelUnavailableError(f"could not download {what} from {url} ({first_line(exc)})") from exc


def require_network(url: str, what: str, hint: str = OFFLINE_HINT) -> None:
    if offline_mode():
        raise ModelUnavailableError(f"{what} is not downloaded yet and HF_HUB_OFFLINE is set; {hint}")
    if not reachable(url):
        host = urlparse(url).hostname
        raise ModelUnavailableError(
            f"{what} is not downloaded yet and {host} cannot be reached from this machine; {hint}"
        )
