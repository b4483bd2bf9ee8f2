"""Pictures sent to the server, kept on disk so that every worker process can use what one received.

An upload answered by one worker may be named (`upload:<sha256>`) in a search that another worker
serves, so uploads live in a folder the workers share: a private temporary folder, one file per picture
named by the SHA-256 of its bytes, written atomically (a temporary name, then a rename), bounded in total
bytes, least recently used first out. A file's modification time is its last use. Workers add and evict
without a lock between them: a rename never shows half a file, and a picture evicted while another
worker reads it is either read whole or reported gone (the client uploads it again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
import weakref
from pathlib import Path

_NAME = re.compile(r"[0-9a-f]{64}")


class Uploads:
    """Uploaded pictures by the SHA-256 of their bytes, in `folder`, at most `max_bytes` in all (the
    newest picture is kept even when it alone is larger).

    Without a folder the store makes a private temporary one and removes it when the store is
    collected or the process exits; a folder given is left to whoever made it.
    """

    def __init__(self, max_bytes: int, folder: str | os.PathLike[str] | None = None) -> None:
        self.max_bytes = max_bytes
        if folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="vecsearch-uploads-"))
            self._cleanup: weakref.finalize | None = weakref.finalize(self, shutil.rmtree, self.folder, True)
        else:
            self.folder = Path(folder)
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._cleanup = None

    def add(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.folder / digest
        if path.is_file() and self._touch(path):
            return digest
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._evict(keep=digest)
        return digest

    def get(self, digest: str) -> bytes | None:
        if not _NAME.fullmatch(digest):
            return None  # never a path of the client's choosing
        path = self.folder / digest
        try:
            data = path.read_bytes()
        except OSError:
            return None
        self._touch(path)
        return data

    def close(self) -> None:
        """Remove the folder now if this store made it."""
        if self._cleanup is not None:
            self._cleanup()

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark a picture used now; False if it was evicted meanwhile."""
        try:
            os.utime(path, ns=(time.time_ns(), time.time_ns()))
        except OSError:
            return False
        return True

    def _evict(self, keep: str) -> None:
        """Remove the least recently used pictures until the rest fit (another worker may be doing the
        same: what it removed first is simply gone)."""
        entries = []
        total = 0
        with os.scandir(self.folder) as found:
            for entry in found:
                if not _NAME.fullmatch(entry.name):
                    continue
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                total += stat.st_size
                entries.append((stat.st_mtime_ns, entry.name, stat.st_size))
        if total <= self.max_bytes:
            return
        for _, name, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)
            total -= size
