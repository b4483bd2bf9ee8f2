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
    ├── QueryError              empty query, malformed weight, missing query image
    │   ├── NotInIndexError         an item id or tag the index does not have
    │   └── CancelledQueryError     terms that cancel out: no direction is left to search in
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


class NotInIndexError(QueryError):
    """A query names an item or a tag this index does not have (a server answers 404)."""


class CancelledQueryError(QueryError):
    """The query's terms sum to nothing (`cat` and `-cat`): well formed, but it points nowhere."""


class ImageError(VecsearchError):
    pass


class CaptionsFileError(VecsearchError):
    pass


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an underlying library's error, short enough for a one-line message."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
