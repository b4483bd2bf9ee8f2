"""Sizes in bytes as people write them (8G, 512M) and read them (1.5 GiB)."""

from __future__ import annotations

import re


def parse_size(text: str) -> int:
    """'8G', '512MiB', '2.5GB' or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match or not match.group(1):
        raise ValueError(f"not a size: {text!r} (examples: 8G, 512M, 2.5GB)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
