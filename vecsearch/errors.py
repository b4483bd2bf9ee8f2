"""Every error vecsearch raises on purpose.

The library raises; the command line turns these into one line on stderr and an exit code. The tree:

    VecsearchError
    ├── IndexNotFoundError      no index at that name or path
    ├── IndexExistsError        create() over an existing index
    ├── IndexCorruptError       manifest, database or vector file unreadable or inconsistent
    ├── IndexLockedError        another process is writing to the index
    ├── ModelError
    │   ├── ModelNotFoundError      unknown model name, pretrained tag or checkpoint path
    │   ├── ModelUnavailableError   weights not cached and the hub cannot be reached
    │   ├── ModelMismatchError      the index was built with another model
    │   └── UnsupportedModalityError  e.g. embedding images with a text-only model
    ├── QueryError              empty query, malformed weight, unknown item id, missing query image
    ├── ImageError              an image that cannot be decoded (bulk jobs skip these instead)
    └── CaptionsFileError       a captions CSV/JSONL that cannot be parsed
"""

from __future__ import annotations


class VecsearchError(Exception):
    """Base of every error vecsearch raises on purpose."""


class IndexNotFoundError(VecsearchError):
    pass


class IndexExistsError(VecsearchError):
    pass


class IndexCorruptError(VecsearchError):
    pass


class IndexLockedError(VecsearchError):
    pass


class ModelError(VecsearchError):
    pass


class ModelNotFoundError(ModelError):
    pass


class ModelUnavailableError(ModelError):
    pass


class ModelMismatchError(ModelError):
    pass


class UnsupportedModalityError(ModelError):
    pass


class QueryError(VecsearchError):
    pass


class ImageError(VecsearchError):
    pass


class CaptionsFileError(VecsearchError):
    pass


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an underlying library's error, short enough for a one-line message."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
