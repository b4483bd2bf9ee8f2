"""The one place vecsearch reaches the network: fetching model files into a local cache.

Files are looked up in the cache first; only a miss goes to the network, and only after a quick check
that the hub can be reached at all, so an offline machine gets a clear error at once instead of a hang.

Where files go: `cache_dir` if given, else `$VECSEARCH_CACHE_DIR`, else the Hugging Face cache
(`$HF_HUB_CACHE`, or `$HF_HOME/hub`, default `~/.cache/huggingface/hub`), so weights that open_clip or
sentence-transformers already downloaded are reused. open_clip tags served by plain URL (OpenAI's
weights) go to `cache_dir` or `~/.cache/clip`, where open_clip itself keeps them.
"""

from __future__ import annotations

import os
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


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The download cache to use; None means the Hugging Face default."""
    if explicit:
        return str(explicit)
    return os.environ.get("VECSEARCH_CACHE_DIR") or None


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

    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache)
    except Exception as exc:  # the hub client raises many unrelated types
        raise ModelUnavailableError(
            f"could not download {filename} for {what} from the Hugging Face hub ({first_line(exc)})"
        ) from exc


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
        return snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns)
    except Exception as exc:
        raise ModelUnavailableError(f"could not download {repo_id} for {what} ({first_line(exc)})") from exc


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
