"""The `vecsearch` command: a thin layer that parses arguments, calls the library, prints the result.

Exit codes: 0 ok; 1 bad input or nothing could be done; 2 bad usage; 3 the index is missing, damaged
or busy; 4 the model cannot be used (unknown, not downloadable offline, or not the index's model);
130 interrupted.

The parts: `app` (the command group, shared options, errors to exit codes), `terms` (query terms that
start with '-'), `output` (what people read), and the commands by job: `crawl` (index), `query`
(search, describe, classify), `tags` (tag, tags), `duplicates` and `manage` (serve, info, check, list,
models).
"""

from __future__ import annotations

from . import crawl, duplicates, manage, query, tags  # noqa: F401  (each registers its commands on `main`)
from .app import (
    EXIT_ERROR,
    EXIT_INDEX,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_USAGE,
    main,
    run,
)
from .crawl import index_command

__all__ = [
    "EXIT_ERROR",
    "EXIT_INDEX",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_USAGE",
    "index_command",
    "main",
    "run",
]
