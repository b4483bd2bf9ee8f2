"""Named points where the fault-injection tests stop a real process the way a crash or a full disk would.

Crash safety is only believable when it is tested by crashing: the tests run `vecsearch index` in a
subprocess with `VECSEARCH_FAULT=<point>[:<nth>][:<action>]` and check what survives. Actions are `kill`
(SIGKILL, the default: no cleanup code runs), `enospc` (the write fails as on a full disk),
`interrupt` (Ctrl-C) and `slow` (every hit from the nth on takes a quarter of a second more: a model
slow enough that a node can be lost while it works). Without the variable, a point costs one dictionary
lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "VECSEARCH_FAULT"
ACTIONS = ("kill", "enospc", "interrupt", "slow")
SLOW_SECONDS = 0.25

_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Fire the configured fault when the process reaches `name` for the nth time."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, nth, action = _parse(spec)
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if action == "slow":
        if _hits[name] >= nth:
            time.sleep(SLOW_SECONDS)
        return
    if _hits[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    raise KeyboardInterrupt


def _parse(spec: str) -> tuple[str, int, str]:
    parts = spec.split(":")
    nth = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    action = parts[2] if len(parts) > 2 else "kill"
    if action not in ACTIONS:
        raise ValueError(f"{ENV}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
    return parts[0], nth, action
